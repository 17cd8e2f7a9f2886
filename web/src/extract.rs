//! axum's `Form` and `Query` with their refusals in Chinese. axum answers a body or a query
//! string it cannot read with plain English text ("Failed to deserialize form body…"); these
//! answer with the node's error page (pages) or its JSON error (API), in Chinese first.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use yiciban_core::message::Msg;

use crate::api::ApiError;
use crate::error::AppError;
use crate::pages::PageError;

/// A form body a page posted (`application/x-www-form-urlencoded`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Form<T>(pub T);

/// A page's query string.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

/// An API call's query string.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

fn unreadable_form(detail: impl std::fmt::Display) -> AppError {
    AppError::BadRequest(Msg::new(
        "提交的表单内容无法识别，请返回刷新页面后重新填写",
        format!("the form cannot be read: {detail}"),
    ))
}

fn unreadable_query(detail: impl std::fmt::Display) -> AppError {
    AppError::BadRequest(Msg::new(
        "网址中的参数无法识别，请从页面上的链接进入",
        format!("the query string cannot be read: {detail}"),
    ))
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Form<T> {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Form::<T>::from_request(req, state).await {
            Ok(axum::Form(value)) => Ok(Form(value)),
            Err(e) => Err(unreadable_form(e.body_text()).into()),
        }
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(e) => Err(unreadable_query(e.body_text()).into()),
        }
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(e) => Err(unreadable_query(e.body_text()).into()),
        }
    }
}
