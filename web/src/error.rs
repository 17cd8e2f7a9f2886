//! Errors to responses, in one place: JSON `{error, message}` for the API (Chinese and
//! English), a page or a redirect for the browser.

use std::collections::BTreeMap;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use yiciban_core::message::Msg;
use yiciban_core::node::{LoginError, NodeError};
use yiciban_core::store::StoreError;

#[derive(Debug)]
pub enum AppError {
    /// API call without a session.
    Unauthorized,
    /// Page visit without a session: go to the login page.
    LoginRequired,
    Forbidden,
    /// Forbidden, with the reason (which role may do what).
    ForbiddenBecause(Msg),
    Csrf,
    NotFound,
    /// Not found, with what was missing.
    NotFoundBecause(Msg),
    BadRequest(Msg),
    Conflict(Msg),
    Invalid(BTreeMap<String, Msg>),
    Login(LoginError),
    TooLarge(Msg),
    /// Too many failed tries; try again later.
    TooMany(Msg),
    Internal(String),
}

impl AppError {
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            AppError::Unauthorized | AppError::LoginRequired => {
                (StatusCode::UNAUTHORIZED, "unauthorized")
            }
            AppError::Forbidden | AppError::ForbiddenBecause(_) => {
                (StatusCode::FORBIDDEN, "forbidden")
            }
            AppError::Csrf => (StatusCode::FORBIDDEN, "csrf"),
            AppError::NotFound | AppError::NotFoundBecause(_) => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            AppError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            AppError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            AppError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            AppError::Login(LoginError::Locked(_)) => (StatusCode::TOO_MANY_REQUESTS, "locked"),
            AppError::Login(LoginError::BadCredentials) => {
                (StatusCode::UNAUTHORIZED, "bad_credentials")
            }
            AppError::Login(_) | AppError::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
            AppError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            AppError::TooMany(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts"),
        }
    }

    pub fn message(&self) -> Msg {
        match self {
            AppError::Unauthorized | AppError::LoginRequired => {
                Msg::new("请先登录", "log in first")
            }
            AppError::Forbidden => Msg::new("当前角色无权进行此操作", "your role may not do this"),
            AppError::Csrf => Msg::new("页面已过期，请刷新后重试", "missing or wrong CSRF token"),
            AppError::NotFound => Msg::new("未找到", "not found"),
            AppError::BadRequest(m)
            | AppError::Conflict(m)
            | AppError::TooLarge(m)
            | AppError::TooMany(m)
            | AppError::ForbiddenBecause(m)
            | AppError::NotFoundBecause(m) => m.clone(),
            AppError::Invalid(_) => Msg::new(
                "申请信息有误，请按提示修改",
                "the application has errors; see fields",
            ),
            AppError::Login(LoginError::Locked(left)) => Msg::new(
                format!(
                    "登录失败次数过多，账号已锁定，请{}分钟后再试",
                    left.as_secs() / 60 + 1
                ),
                format!(
                    "too many failed logins; locked for {} more minutes",
                    left.as_secs() / 60 + 1
                ),
            ),
            AppError::Login(LoginError::BadCredentials) => {
                Msg::new("用户名或密码错误", "wrong username or password")
            }
            AppError::Login(_) | AppError::Internal(_) => {
                Msg::new("系统内部错误，请联系管理员", "internal error")
            }
        }
    }

    /// The API form of the error.
    pub fn into_json(self) -> Response {
        let (status, code) = self.status_and_code();
        if let AppError::Internal(detail)
        | AppError::Login(LoginError::Store(yiciban_core::store::StoreError::Corrupt(
            detail,
        ))) = &self
        {
            tracing::error!(%detail, "internal error");
        }
        let mut body = serde_json::json!({ "error": code, "message": self.message().both() });
        if let AppError::Invalid(fields) = &self {
            let fields: BTreeMap<&String, String> =
                fields.iter().map(|(k, m)| (k, m.both())).collect();
            body["fields"] = serde_json::json!(fields);
        }
        (status, Json(body)).into_response()
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match self {
            AppError::LoginRequired => Redirect::to("/login").into_response(),
            other => other.into_json(),
        }
    }
}

impl From<NodeError> for AppError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::Invalid(fields) => AppError::Invalid(fields),
            NodeError::Forbidden(m) => AppError::ForbiddenBecause(m),
            NodeError::NotFound(m) => AppError::NotFoundBecause(m),
            NodeError::Conflict(m) => AppError::Conflict(m),
            NodeError::BadRequest(m) => AppError::BadRequest(m),
            NodeError::Locked(m) => AppError::TooMany(m),
            NodeError::Store(e) => e.into(),
            other => AppError::Internal(other.to_string()),
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => AppError::NotFound,
            StoreError::BlobTooLarge { .. } | StoreError::NotAnImage => {
                let m = match yiciban_core::node::photo_error(&e) {
                    NodeError::BadRequest(m) => m,
                    _ => Msg::new("照片无法保存", e.to_string()),
                };
                if matches!(e, StoreError::BlobTooLarge { .. }) {
                    AppError::TooLarge(m)
                } else {
                    AppError::BadRequest(m)
                }
            }
            other => AppError::Internal(other.to_string()),
        }
    }
}

impl From<askama::Error> for AppError {
    fn from(e: askama::Error) -> Self {
        AppError::Internal(format!("template: {e}"))
    }
}
