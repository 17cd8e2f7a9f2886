//! The pages of 一件事 bundles (one form for all items, the bundle page with its one
//! hand-out) and 当场办结 of an immediate item at the counter.

use std::collections::BTreeMap;

use crate::extract::Form;
use askama::Template;
use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect};
use serde::Deserialize;
use yiciban_core::bundle::{self as core_bundle, BundleInput};
use yiciban_core::catalog::{Bundle, Catalog, Tier};
use yiciban_core::idcard;
use yiciban_core::message::Msg;
use yiciban_core::node::NodeError;

use super::{ApplyTpl, Chrome, PageError, PageResult, form_view, has_result, page, render_case};
use crate::AppState;
use crate::authz::{self, Action};
use crate::error::AppError;
use crate::forms::Submitted;
use crate::session::Auth;
use crate::views;

/// The catalogue page's bundle rows: each bundle with its items' names.
pub(super) fn catalog_rows(catalog: &Catalog) -> Vec<(&Bundle, String)> {
    catalog
        .bundles()
        .iter()
        .map(|b| {
            let names: Vec<&str> = catalog
                .bundle_items(b)
                .iter()
                .map(|i| i.name.as_str())
                .collect();
            (b, names.join("、"))
        })
        .collect()
}

fn bundle_form(
    state: &AppState,
    auth: &Auth,
    bundle: &Bundle,
    s: &Submitted,
    errors: &BTreeMap<String, Msg>,
) -> ApplyTpl {
    let items = state.node.catalog.bundle_items(bundle);
    let fields = core_bundle::fields(&items);
    let materials = core_bundle::materials(&items);
    let mut tpl = form_view(state, auth, &fields, &materials, s, errors);
    tpl.chrome.title = format!("受理一件事：{}", bundle.name);
    tpl.action = format!("/apply-bundle/{}", bundle.code);
    tpl.item_name = bundle.name.clone();
    tpl.bundle_items = items.iter().map(|i| i.name.clone()).collect();
    tpl.bundle_guide = bundle.guide.clone().unwrap_or_default();
    tpl
}

/// `GET /apply-bundle/{code}`: one form and one materials checklist for every item.
pub async fn apply_bundle_form(
    State(state): State<AppState>,
    auth: Auth,
    Path(code): Path<String>,
) -> PageResult {
    auth.require(Action::FileApplication)?;
    let bundle = state.node.catalog.bundle(&code).ok_or(AppError::NotFound)?;
    page(&bundle_form(
        &state,
        &auth,
        bundle,
        &Submitted::default(),
        &BTreeMap::new(),
    ))
}

/// `POST /apply-bundle/{code}`: files every sub-case, then shows the bundle; a problem in any
/// item's part shows the form again with every problem and what was typed.
pub async fn apply_bundle_submit(
    State(state): State<AppState>,
    auth: Auth,
    Path(code): Path<String>,
    multipart: Multipart,
) -> PageResult {
    auth.require(Action::FileApplication)?;
    let bundle = state.node.catalog.bundle(&code).ok_or(AppError::NotFound)?;
    let mut submitted = Submitted::read(multipart, state.node.store.blob_max_bytes()).await?;
    auth.check_csrf(submitted.values.get("csrf").map(String::as_str))?;

    let mut photo_errors = BTreeMap::new();
    let mut hashes = BTreeMap::new();
    let mut photos = Vec::new();
    for (key, bytes) in &submitted.photos {
        match state.node.store.check_blob(bytes) {
            Ok(hash) => {
                hashes.insert(key.clone(), hash);
                photos.push(bytes.clone());
            }
            Err(e) => {
                let msg = match yiciban_core::node::photo_error(&e) {
                    NodeError::BadRequest(m) => m,
                    _ => Msg::new("照片无法保存", e.to_string()),
                };
                photo_errors.insert(format!("materials.{key}"), msg);
            }
        }
    }
    for key in hashes.keys() {
        let status = submitted
            .values
            .entry(format!("material.{key}"))
            .or_default();
        if status.is_empty() {
            *status = "photo".into();
        }
    }
    let one = submitted.to_input(&code, &hashes);
    let input = BundleInput {
        bundle: code.clone(),
        applicant: one.applicant,
        proxy: one.proxy,
        form: one.form,
        materials: one.materials,
    };
    let result = if photo_errors.is_empty() {
        state.node.file_bundle(&input, photos, &auth.actor()).await
    } else {
        let exists = |h: &str| hashes.values().any(|x| x == h) || state.node.store.blob_exists(h);
        let mut errors =
            core_bundle::validate(&state.node.catalog, &input, state.node.today(), &exists)
                .err()
                .unwrap_or_default();
        errors.extend(photo_errors);
        Err(NodeError::Invalid(errors))
    };
    match result {
        Ok(filed) => Ok(Redirect::to(&format!("/bundles/{}", filed.bundle.id)).into_response()),
        Err(NodeError::Invalid(errors)) => {
            let tpl = bundle_form(&state, &auth, bundle, &submitted, &errors);
            Ok((StatusCode::UNPROCESSABLE_ENTITY, Html(tpl.render()?)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Clone)]
struct BundleRow {
    id: String,
    receipt_no: String,
    item_name: String,
    status: &'static str,
    status_zh: &'static str,
    step: String,
    show_result: bool,
}

#[derive(Template)]
#[template(path = "bundle.html")]
struct BundleTpl {
    chrome: Chrome,
    id: String,
    name: String,
    applicant_name: String,
    id_number_masked: String,
    rows: Vec<BundleRow>,
    /// Sub-cases not on this node yet.
    missing: usize,
    /// Offer the one hand-out.
    can_issue: bool,
    /// Why the hand-out is not offered yet (at the village, for a clerk).
    wait: String,
    flash: String,
    /// The note typed before a refusal.
    note: String,
}

fn render_bundle(
    state: &AppState,
    auth: &Auth,
    id: &str,
    flash: String,
    note: String,
) -> Result<BundleTpl, PageError> {
    let view = state.node.bundle_view(id)?;
    let hands_out = state.node.tier() == Tier::Village && authz::may_hand_out(auth.0.role);
    let check = view.hand_out_check();
    let first = view.cases.first().map(|f| &f.case);
    Ok(BundleTpl {
        chrome: Chrome::new(state, Some(auth), format!("一件事：{}", view.bundle.name)),
        id: view.bundle.id.clone(),
        name: view.bundle.name.clone(),
        applicant_name: first.map(|c| c.applicant.name.clone()).unwrap_or_default(),
        id_number_masked: first
            .map(|c| idcard::mask(&c.applicant.id_number))
            .unwrap_or_default(),
        rows: view
            .cases
            .iter()
            .map(|f| BundleRow {
                id: f.case.id.clone(),
                receipt_no: f.case.receipt_no.clone(),
                item_name: f.case.item_name.clone(),
                status: f.state.status.as_str(),
                status_zh: f.state.status.zh(),
                step: f
                    .state
                    .step
                    .as_deref()
                    .map(|s| views::step_zh(&state.node, &f.case.item_code, s))
                    .unwrap_or_default(),
                show_result: has_result(f.state.status),
            })
            .collect(),
        missing: view.missing.len(),
        can_issue: hands_out && check.is_ok(),
        wait: match check {
            Err(m) if hands_out => m.zh,
            _ => String::new(),
        },
        flash,
        note,
    })
}

/// `GET /bundles/{id}`: every sub-case with its state, and the one hand-out when all are done.
pub async fn bundle_page(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> PageResult {
    auth.require(Action::ViewCases)?;
    page(&render_bundle(
        &state,
        &auth,
        &id,
        String::new(),
        String::new(),
    )?)
}

#[derive(Debug, Deserialize)]
pub struct HandOutForm {
    csrf: Option<String>,
    #[serde(default)]
    note: String,
}

/// `POST /bundles/{id}/issue`: `issued` on every ready sub-case at once; a refusal shows the
/// bundle page again with the reason and the note typed.
pub async fn bundle_issue(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Form(f): Form<HandOutForm>,
) -> PageResult {
    auth.check_csrf(f.csrf.as_deref())?;
    auth.require(Action::RecordEvent)?;
    let result = if authz::may_hand_out(auth.0.role) {
        state
            .node
            .issue_bundle(&id, &f.note, &auth.actor())
            .await
            .map_err(AppError::from)
    } else {
        Err(AppError::Forbidden)
    };
    match result {
        Ok(filed) => Ok(Redirect::to(&format!("/bundles/{}", filed.bundle.id)).into_response()),
        Err(e @ (AppError::Conflict(_) | AppError::Forbidden | AppError::ForbiddenBecause(_))) => {
            let (status, _) = e.status_and_code();
            let tpl = render_bundle(&state, &auth, &id, e.message().zh, f.note)?;
            Ok((status, Html(tpl.render()?)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /cases/{id}/counter`: 当场办结 of an immediate item (issued and picked up in one
/// step), then its printable result; a refusal shows the case page with the reason.
pub async fn case_counter(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Form(f): Form<HandOutForm>,
) -> PageResult {
    auth.check_csrf(f.csrf.as_deref())?;
    auth.require(Action::RecordEvent)?;
    let result = if authz::may_hand_out(auth.0.role) {
        state
            .node
            .settle_at_counter(&id, &f.note, &auth.actor())
            .await
            .map_err(AppError::from)
    } else {
        Err(AppError::Forbidden)
    };
    match result {
        Ok(_) => Ok(Redirect::to(&format!("/cases/{id}/result")).into_response()),
        Err(e @ (AppError::Conflict(_) | AppError::Forbidden | AppError::ForbiddenBecause(_))) => {
            let (status, _) = e.status_and_code();
            let tpl = render_case(&state, &auth, &id, e.message().zh, None)?;
            Ok((status, Html(tpl.render()?)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}
