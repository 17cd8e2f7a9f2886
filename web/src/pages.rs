//! The clerk's pages: server-rendered HTML (askama, auto-escaped), zh-CN.

use std::collections::BTreeMap;

use crate::extract::Form;
use crate::extract::Query;
use askama::Template;
use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use yiciban_core::application::{self, MaterialStatus};
use yiciban_core::case_doc::Case;
use yiciban_core::catalog::{FieldType, ItemKind, ServiceItem, Tier};
use yiciban_core::event::{Event, EventKind};
use yiciban_core::fold::{CaseState, Status};
use yiciban_core::idcard;
use yiciban_core::message::Msg;
use yiciban_core::node::NodeError;
use yiciban_core::rating;
use yiciban_core::seal::ResultSummary;
use yiciban_core::store::CaseQuery;
use yiciban_core::summary::CaseSummary;

use crate::AppState;
use crate::authz::{self, Action};
use crate::error::AppError;
use crate::forms::Submitted;
use crate::session::{self, Auth};
use crate::views::{self, LinkState};

mod admin;
mod bundle;
mod calendar;
mod nodes;
mod quarantine;
mod stats;
pub use admin::{
    admin_add_user, admin_enrol_page, admin_issue_token, admin_node_page, admin_revoke,
    admin_set_disabled, admin_set_password,
};
pub use bundle::{apply_bundle_form, apply_bundle_submit, bundle_issue, bundle_page, case_counter};
pub use calendar::{calendar_json, calendar_page, calendar_publish, calendar_put};
pub use nodes::{NodesParams, nodes_page, rows as node_rows};
pub use quarantine::{quarantine_json, quarantine_page};
pub use stats::{gather as gather_stats, stats_csv, stats_page};

/// A page failed: render it as a page, not as JSON.
#[derive(Debug)]
pub struct PageError(AppError);

impl<E: Into<AppError>> From<E> for PageError {
    fn from(e: E) -> Self {
        PageError(e.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        if matches!(self.0, AppError::LoginRequired) {
            return Redirect::to("/login").into_response();
        }
        let (status, _) = self.0.status_and_code();
        let page = ErrorTpl {
            chrome: Chrome::anonymous("出错了"),
            status: status.as_u16(),
            message: self.0.message().zh,
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => (status, self.0.message().both()).into_response(),
        }
    }
}

type PageResult = Result<Response, PageError>;

/// What every page shows around its content: who is logged in, the node, the link state.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub title: String,
    pub user: Option<String>,
    pub role: String,
    pub csrf: String,
    pub node_name: String,
    pub link: LinkState,
    /// Whether the nav shows 用户与节点 (the security admin at the county).
    pub admin: bool,
    /// What the county admin is asked to do about the working-day calendar (the county
    /// admin at the county only), else empty.
    pub calendar_reminder: String,
}

impl Chrome {
    fn new(state: &AppState, auth: Option<&Auth>, title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            user: auth.map(|a| a.0.display_name.clone()),
            role: auth.map(|a| a.0.role.zh().to_string()).unwrap_or_default(),
            csrf: auth.map(|a| a.0.csrf.clone()).unwrap_or_default(),
            node_name: state.node.config.node.name.clone(),
            link: views::link_state(&state.node),
            admin: state.node.tier() == Tier::County
                && auth.is_some_and(|a| authz::allowed(a.0.role, Action::ManageUsers)),
            calendar_reminder: if state.node.tier() == Tier::County
                && auth.is_some_and(|a| authz::allowed(a.0.role, Action::PublishCalendar))
            {
                state.node.calendar_status().reminder.unwrap_or_default()
            } else {
                String::new()
            },
        }
    }

    fn anonymous(title: &str) -> Self {
        Self {
            title: title.into(),
            user: None,
            role: String::new(),
            csrf: String::new(),
            node_name: String::new(),
            link: LinkState {
                online: false,
                text: String::new(),
            },
            admin: false,
            calendar_reminder: String::new(),
        }
    }
}

fn page(t: &impl Template) -> PageResult {
    Ok(Html(t.render()?).into_response())
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorTpl {
    chrome: Chrome,
    status: u16,
    message: String,
}

pub async fn not_found() -> PageError {
    PageError(AppError::NotFound)
}

pub async fn home() -> Redirect {
    Redirect::to("/cases")
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginTpl {
    chrome: Chrome,
    username: String,
    error: Option<String>,
}

pub async fn login_page(State(state): State<AppState>) -> PageResult {
    page(&LoginTpl {
        chrome: Chrome::new(&state, None, "登录"),
        username: String::new(),
        error: None,
    })
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
}

pub async fn login_submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> PageResult {
    let node = state.node.clone();
    let username = f.username.trim().to_string();
    let name = username.clone();
    let result = tokio::task::spawn_blocking(move || node.login(&name, &f.password))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?;
    match result {
        Ok(user) => {
            let old = session::cookie_value(&headers);
            let session = state.sessions.start(&user, old.as_deref());
            Ok((
                [(header::SET_COOKIE, session::set_cookie(&session))],
                Redirect::to("/cases"),
            )
                .into_response())
        }
        Err(e) => {
            let err = AppError::Login(e);
            let (status, _) = err.status_and_code();
            let tpl = LoginTpl {
                chrome: Chrome::new(&state, None, "登录"),
                username,
                error: Some(err.message().zh),
            };
            Ok((status, Html(tpl.render()?)).into_response())
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

pub async fn logout(
    State(state): State<AppState>,
    auth: Auth,
    Form(f): Form<CsrfForm>,
) -> PageResult {
    auth.check_csrf(f.csrf.as_deref())?;
    state.sessions.end(&auth.0.id);
    Ok((
        [(header::SET_COOKIE, session::clear_cookie())],
        Redirect::to("/login"),
    )
        .into_response())
}

#[derive(Template)]
#[template(path = "catalog.html")]
struct CatalogTpl<'a> {
    chrome: Chrome,
    items: &'a [ServiceItem],
    /// 一件事 bundles with their items' names.
    bundles: Vec<(&'a yiciban_core::catalog::Bundle, String)>,
    can_apply: bool,
}

pub async fn catalog(State(state): State<AppState>, auth: Auth) -> PageResult {
    auth.require(Action::ViewCatalog)?;
    page(&CatalogTpl {
        chrome: Chrome::new(&state, Some(&auth), "事项目录"),
        items: state.node.catalog.items(),
        bundles: bundle::catalog_rows(&state.node.catalog),
        can_apply: authz::allowed(auth.0.role, Action::FileApplication),
    })
}

#[derive(Template)]
#[template(path = "guide.html")]
struct GuideTpl<'a> {
    chrome: Chrome,
    item: &'a ServiceItem,
    can_apply: bool,
}

pub async fn guide(
    State(state): State<AppState>,
    auth: Auth,
    Path(code): Path<String>,
) -> PageResult {
    auth.require(Action::ViewCatalog)?;
    let item = state.node.catalog.get(&code).ok_or(AppError::NotFound)?;
    page(&GuideTpl {
        chrome: Chrome::new(&state, Some(&auth), format!("办事指南：{}", item.name)),
        item,
        can_apply: authz::allowed(auth.0.role, Action::FileApplication),
    })
}

/// One input of the generated form.
#[derive(Debug, Clone)]
struct InputView {
    name: String,
    label: String,
    /// `text`, `tel`, `number`, `date`, `textarea` or `select`.
    kind: &'static str,
    required: bool,
    value: String,
    options: Vec<String>,
    error: String,
    hint: String,
}

#[derive(Debug, Clone)]
struct MaterialView {
    key: String,
    name: String,
    form_zh: &'static str,
    count: u32,
    required: bool,
    waivable: bool,
    note: String,
    status: String,
    error: String,
}

#[derive(Template)]
#[template(path = "apply.html")]
struct ApplyTpl {
    chrome: Chrome,
    /// Where the form posts: `/apply/{code}` or `/apply-bundle/{code}`.
    action: String,
    /// The item's code, for the guide link (empty for a bundle).
    item_code: String,
    item_name: String,
    /// A bundle's items and its guide text (empty for one item).
    bundle_items: Vec<String>,
    bundle_guide: String,
    applicant: Vec<InputView>,
    proxy_enabled: bool,
    proxy: Vec<InputView>,
    fields: Vec<InputView>,
    materials: Vec<MaterialView>,
    error_count: usize,
    photos_dropped: bool,
}

fn person_inputs(
    prefix: &str,
    s: &Submitted,
    errors: &BTreeMap<String, Msg>,
    required: bool,
) -> Vec<InputView> {
    let mut rows = vec![
        ("name", "姓名", "text", "生僻字可直接输入或粘贴"),
        ("id_number", "身份证号码", "text", "18位，末位X可小写"),
        ("phone", "手机号码", "tel", "11位手机号"),
    ];
    if prefix == "proxy" {
        rows.push((
            "relation",
            "与申请人关系",
            "text",
            "如：子女、配偶、村代办员",
        ));
    }
    rows.into_iter()
        .map(|(key, label, kind, hint)| {
            let name = format!("{prefix}.{key}");
            InputView {
                error: errors.get(&name).map(|m| m.zh.clone()).unwrap_or_default(),
                value: s.get(&name),
                name,
                label: label.into(),
                kind,
                required,
                options: Vec::new(),
                hint: hint.into(),
            }
        })
        .collect()
}

fn apply_view(
    state: &AppState,
    auth: &Auth,
    item: &ServiceItem,
    s: &Submitted,
    errors: &BTreeMap<String, Msg>,
) -> ApplyTpl {
    let mut tpl = form_view(state, auth, &item.fields, &item.materials, s, errors);
    tpl.chrome.title = format!("受理：{}", item.name);
    tpl.action = format!("/apply/{}", item.code);
    tpl.item_code = item.code.clone();
    tpl.item_name = item.name.clone();
    tpl
}

/// The application form for `fields` and `materials`, filled with what was submitted and
/// marked with `errors`; the caller sets the title, the action and what is applied for.
fn form_view(
    state: &AppState,
    auth: &Auth,
    fields: &[yiciban_core::catalog::Field],
    materials: &[yiciban_core::catalog::Material],
    s: &Submitted,
    errors: &BTreeMap<String, Msg>,
) -> ApplyTpl {
    let fields = fields
        .iter()
        .map(|f| {
            let name = format!("form.{}", f.key);
            InputView {
                error: errors.get(&name).map(|m| m.zh.clone()).unwrap_or_default(),
                value: s.get(&name),
                name,
                label: f.label.clone(),
                kind: match f.field_type {
                    FieldType::Text | FieldType::IdNumber => "text",
                    FieldType::Textarea => "textarea",
                    FieldType::Number => "number",
                    FieldType::Date => "date",
                    FieldType::Select => "select",
                    FieldType::Phone => "tel",
                },
                required: f.required,
                options: f.options.clone(),
                hint: match f.field_type {
                    FieldType::IdNumber => "18位身份证号码".into(),
                    _ => f
                        .max_len
                        .map(|n| format!("不超过{n}字"))
                        .unwrap_or_default(),
                },
            }
        })
        .collect();
    let materials = materials
        .iter()
        .map(|m| MaterialView {
            key: m.key.clone(),
            name: m.name.clone(),
            form_zh: m.form.zh(),
            count: m.count,
            required: m.required,
            waivable: m.waivable,
            note: m.note.clone().unwrap_or_default(),
            status: s.get(&format!("material.{}", m.key)),
            error: errors
                .get(&format!("materials.{}", m.key))
                .map(|e| e.zh.clone())
                .unwrap_or_default(),
        })
        .collect();
    ApplyTpl {
        chrome: Chrome::new(state, Some(auth), "受理"),
        action: String::new(),
        item_code: String::new(),
        item_name: String::new(),
        bundle_items: Vec::new(),
        bundle_guide: String::new(),
        applicant: person_inputs("applicant", s, errors, true),
        proxy_enabled: s.get("proxy.enabled") == "on",
        proxy: person_inputs("proxy", s, errors, false),
        fields,
        materials,
        error_count: errors.len(),
        photos_dropped: !errors.is_empty() && !s.photos.is_empty(),
    }
}

pub async fn apply_form(
    State(state): State<AppState>,
    auth: Auth,
    Path(code): Path<String>,
) -> PageResult {
    auth.require(Action::FileApplication)?;
    let item = state.node.catalog.get(&code).ok_or(AppError::NotFound)?;
    page(&apply_view(
        &state,
        &auth,
        item,
        &Submitted::default(),
        &BTreeMap::new(),
    ))
}

pub async fn apply_submit(
    State(state): State<AppState>,
    auth: Auth,
    Path(code): Path<String>,
    multipart: Multipart,
) -> PageResult {
    auth.require(Action::FileApplication)?;
    let item = state.node.catalog.get(&code).ok_or(AppError::NotFound)?;
    let submitted = Submitted::read(multipart, state.node.store.blob_max_bytes()).await?;
    auth.check_csrf(submitted.values.get("csrf").map(String::as_str))?;

    // Photos are checked first; a bad one is reported on its material like any other problem.
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
    let mut submitted = submitted;
    for key in hashes.keys() {
        // A photo attached without a status means the material was photographed.
        let status = submitted
            .values
            .entry(format!("material.{key}"))
            .or_default();
        if status.is_empty() {
            *status = MaterialStatus::Photo.as_str().into();
        }
    }
    let input = submitted.to_input(&code, &hashes);
    let result = if photo_errors.is_empty() {
        state
            .node
            .file_application(&input, photos, &auth.actor())
            .await
    } else {
        // Do not file; collect the other problems too, so the clerk sees them all at once.
        let exists = |h: &str| hashes.values().any(|x| x == h) || state.node.store.blob_exists(h);
        let today = state.node.today();
        let mut errors = application::validate(&state.node.catalog, &input, today, &exists)
            .err()
            .unwrap_or_default();
        errors.extend(photo_errors);
        Err(NodeError::Invalid(errors))
    };
    match result {
        Ok(filed) => Ok(Redirect::to(&format!("/cases/{}/receipt", filed.case.id)).into_response()),
        Err(NodeError::Invalid(errors)) => {
            let tpl = apply_view(&state, &auth, item, &submitted, &errors);
            Ok((StatusCode::UNPROCESSABLE_ENTITY, Html(tpl.render()?)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Clone)]
struct CaseRow {
    id: String,
    receipt_no: String,
    item_name: String,
    applicant_name: String,
    id_number_masked: String,
    status: &'static str,
    status_zh: &'static str,
    step: String,
    village: String,
    accepted: String,
    /// The most pressing due date (the step's or the case's), `-` for none.
    due: String,
    /// The date rests on a year the county has not published (预估).
    provisional: bool,
    /// `none`, `yellow` or `red`: the row's colour.
    warning: &'static str,
    warning_zh: &'static str,
}

fn case_row(state: &AppState, s: CaseSummary) -> CaseRow {
    let time = state.node.legal_time(&s.item_code, &s.marks);
    timed_row(state, views::TimedCase { summary: s, time })
}

/// A row whose legal time is already counted (queue, supervision).
fn timed_row(state: &AppState, t: views::TimedCase) -> CaseRow {
    let views::TimedCase { summary: s, time } = t;
    let due = match (time.step_due, time.due) {
        (Some(a), Some(b)) if s.marks.decided_at.is_none() => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    CaseRow {
        due: due.map_or("-".into(), |d| d.to_string()),
        provisional: time.provisional,
        warning: time.worst().as_str(),
        warning_zh: time.worst().zh(),
        accepted: views::local_time(&state.node, s.accepted_at),
        step: s
            .step
            .as_deref()
            .map(|step| views::step_zh(&state.node, &s.item_code, step))
            .unwrap_or_default(),
        id: s.id,
        receipt_no: s.receipt_no,
        item_name: s.item_name,
        applicant_name: s.applicant_name,
        id_number_masked: s.id_number_masked,
        status: s.status.as_str(),
        status_zh: s.status.zh(),
        village: s.village,
    }
}

#[derive(Template)]
#[template(path = "cases.html")]
struct CasesTpl {
    chrome: Chrome,
    q: String,
    status: String,
    statuses: Vec<(&'static str, &'static str)>,
    rows: Vec<CaseRow>,
    total: u64,
}

#[derive(Debug, Deserialize)]
pub struct CasesParams {
    q: Option<String>,
    status: Option<String>,
}

pub async fn cases(
    State(state): State<AppState>,
    auth: Auth,
    Query(p): Query<CasesParams>,
) -> PageResult {
    auth.require(Action::ViewCases)?;
    let status = p.status.as_deref().and_then(Status::parse);
    let query = CaseQuery {
        q: p.q.clone(),
        status,
        limit: 100,
    };
    let rows = state
        .node
        .store
        .list_cases(&query)?
        .into_iter()
        .map(|s| case_row(&state, s))
        .collect();
    page(&CasesTpl {
        chrome: Chrome::new(&state, Some(&auth), "办件列表"),
        q: p.q.unwrap_or_default(),
        status: status.map(|s| s.as_str().to_string()).unwrap_or_default(),
        statuses: Status::ALL
            .iter()
            .filter(|s| **s != Status::New)
            .map(|s| (s.as_str(), s.zh()))
            .collect(),
        rows,
        total: state.node.store.case_count()?,
    })
}

/// Rows per page of the review queue, supervision and the follow-ups.
const PAGE_ROWS: usize = 50;

/// Where one page of a long list stands, for the pager under it (`_pager.html`).
#[derive(Debug, Clone)]
struct Pager {
    /// The list's own path, which takes `?page=N`.
    path: &'static str,
    /// This page (from 1) of `pages`, and the positions (from 1) of its first and last rows.
    page: usize,
    pages: usize,
    first: usize,
    last: usize,
    total: u64,
    prev: Option<usize>,
    next: Option<usize>,
}

/// The `?page=N` of a list.
#[derive(Debug, Deserialize)]
pub struct PageParams {
    page: Option<usize>,
    /// After 催办 on supervision: the receipt number urged.
    urged: Option<String>,
}

/// Reads page `want` of a list through `fetch(offset)` (which also says how many rows the
/// list holds); past the end, the last page.
async fn paged<T, F, Fut>(
    path: &'static str,
    want: Option<usize>,
    mut fetch: F,
) -> Result<(T, Pager), PageError>
where
    T: HasLen,
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(T, u64), PageError>>,
{
    let want = want.unwrap_or(1).max(1);
    let at = |n: usize| (n - 1).saturating_mul(PAGE_ROWS);
    let (mut rows, total) = fetch(at(want)).await?;
    let pages = usize::try_from(total)
        .unwrap_or(usize::MAX)
        .div_ceil(PAGE_ROWS)
        .max(1);
    let n = want.min(pages);
    if n != want {
        rows = fetch(at(n)).await?.0;
    }
    let offset = at(n);
    let pager = Pager {
        path,
        page: n,
        pages,
        first: offset + 1,
        last: offset + rows.len(),
        total,
        prev: (n > 1).then(|| n - 1),
        next: (n < pages).then(|| n + 1),
    };
    Ok((rows, pager))
}

/// What [`paged`] counts on a page.
trait HasLen {
    fn len(&self) -> usize;
}

impl<T> HasLen for Vec<T> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
}

impl<T, U> HasLen for (Vec<T>, U) {
    fn len(&self) -> usize {
        self.0.len()
    }
}

#[derive(Template)]
#[template(path = "queue.html")]
struct QueueTpl {
    chrome: Chrome,
    tier_zh: String,
    rows: Vec<CaseRow>,
    pager: Pager,
}

/// `GET /queue?page=N`: the cases waiting for this node's tier, the most pressing deadline
/// first, [`PAGE_ROWS`] a page.
pub async fn queue(
    State(state): State<AppState>,
    auth: Auth,
    Query(p): Query<PageParams>,
) -> PageResult {
    auth.require(Action::ViewCases)?;
    let (items, pager) = paged("/queue", p.page, |offset| {
        let node = state.node.clone();
        async move { Ok(views::queue(&node, offset, PAGE_ROWS).await?) }
    })
    .await?;
    let rows: Vec<CaseRow> = items.into_iter().map(|t| timed_row(&state, t)).collect();
    page(&QueueTpl {
        chrome: Chrome::new(&state, Some(&auth), "待办队列"),
        tier_zh: views::tier_zh(state.node.tier()),
        rows,
        pager,
    })
}

#[derive(Template)]
#[template(path = "supervision.html")]
struct SupervisionTpl {
    chrome: Chrome,
    rows: Vec<CaseRow>,
    red: u64,
    yellow: u64,
    /// (step name, red, yellow): where the late cases wait.
    by_step: Vec<(String, u64, u64)>,
    /// (tier, division, red, yellow): who holds them.
    by_holder: Vec<(String, String, u64, u64)>,
    can_urge: bool,
    flash: String,
    pager: Pager,
}

/// `GET /supervision?page=N` (电子监察): open cases that are late or due within a working day,
/// red first, [`PAGE_ROWS`] a page, counted (all of them) by step and by the division
/// holding the baton, which is the one to act; at the county a county admin or approver
/// urges (催办) from here.
pub async fn supervision(
    State(state): State<AppState>,
    auth: Auth,
    Query(p): Query<PageParams>,
) -> PageResult {
    auth.require(Action::ViewCases)?;
    let ((items, board), pager) = paged("/supervision", p.page, |offset| {
        let node = state.node.clone();
        async move {
            let (items, board) = views::supervision(&node, offset, PAGE_ROWS).await?;
            let total = board.total();
            Ok(((items, board), total))
        }
    })
    .await?;
    let mut by_step: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for ((item, step), m) in &board.by_step {
        let slot = by_step
            .entry(views::step_zh(&state.node, item, step))
            .or_default();
        slot.0 += m.red;
        slot.1 += m.yellow;
    }
    let by_holder = board
        .by_holder
        .iter()
        .map(|((tier, division), m)| {
            (
                tier.map(views::tier_zh).unwrap_or_default(),
                division.clone(),
                m.red,
                m.yellow,
            )
        })
        .collect();
    let rows = items.into_iter().map(|t| timed_row(&state, t)).collect();
    page(&SupervisionTpl {
        chrome: Chrome::new(&state, Some(&auth), "电子监察"),
        rows,
        red: board.red,
        yellow: board.yellow,
        by_step: by_step.into_iter().map(|(k, (r, y))| (k, r, y)).collect(),
        by_holder,
        can_urge: state.node.tier() == Tier::County && authz::allowed(auth.0.role, Action::Urge),
        flash: p
            .urged
            .map(|r| format!("已催办：{r}（催办记录随同步送达办理层级）"))
            .unwrap_or_default(),
        pager,
    })
}

#[derive(Debug, Deserialize)]
pub struct UrgeForm {
    csrf: Option<String>,
    case_id: String,
    #[serde(default)]
    note: String,
}

/// `POST /supervision/urge`: 催办 one case; back to the list with a note of it.
pub async fn urge(
    State(state): State<AppState>,
    auth: Auth,
    Form(f): Form<UrgeForm>,
) -> PageResult {
    auth.check_csrf(f.csrf.as_deref())?;
    auth.require(Action::Urge)?;
    let filed = state.node.urge(&f.case_id, &f.note, &auth.actor()).await?;
    let receipt: String = filed
        .case
        .receipt_no
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    Ok(Redirect::to(&format!("/supervision?urged={receipt}")).into_response())
}

#[derive(Debug, Clone)]
struct TimelineRow {
    at: String,
    kind_zh: String,
    kind: String,
    who: String,
    text: String,
    superseded: String,
}

/// One material of the case, with its photo if it has one.
#[derive(Debug, Clone)]
struct MaterialRow {
    name: String,
    status_zh: &'static str,
    blob: String,
    /// Whether the photo is on this node yet (photos follow their case over sync).
    blob_here: bool,
}

/// One textarea of an action form.
#[derive(Debug, Clone)]
struct FieldView {
    name: &'static str,
    label: &'static str,
    required: bool,
    rows: u8,
    placeholder: &'static str,
    value: String,
}

/// One action form on the case page.
#[derive(Debug, Clone)]
struct ActionView {
    kind: String,
    title: &'static str,
    button: &'static str,
    danger: bool,
    confirm: &'static str,
    /// A rating's levels (`value`, label) for a select; empty for other kinds.
    levels: Vec<(String, String)>,
    /// The level typed before a refusal.
    level: String,
    fields: Vec<FieldView>,
}

/// What the user typed into an action form; kept when the action is refused.
#[derive(Debug, Default, Deserialize)]
pub struct EventForm {
    csrf: Option<String>,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    materials: String,
    #[serde(default)]
    note: String,
    /// A paper rating's level (1–5) and comment.
    #[serde(default)]
    level: String,
    #[serde(default)]
    comment: String,
}

impl EventForm {
    fn value(&self, name: &str) -> &str {
        match name {
            "text" => &self.text,
            "reason" => &self.reason,
            "materials" => &self.materials,
            "note" => &self.note,
            "comment" => &self.comment,
            _ => "",
        }
    }

    /// The payload the core reads: `text` (comment), `reason` (rejected, withdrawn; the
    /// withdrawal form once sent it as `text`), `materials` (one per line), `note`, `level`
    /// and `comment` (a paper rating; the source is `paper`).
    fn payload(&self) -> serde_json::Value {
        let reason = if self.reason.trim().is_empty() {
            &self.text
        } else {
            &self.reason
        };
        serde_json::json!({
            "text": self.text,
            "reason": reason,
            "materials": self.materials,
            "note": self.note,
            "level": self.level,
            "comment": self.comment,
        })
    }

    /// Everything typed, as one text (shown when its form is no longer offered).
    fn typed(&self) -> String {
        [
            &self.text,
            &self.reason,
            &self.materials,
            &self.note,
            &self.comment,
        ]
        .into_iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
    }
}

fn field(name: &'static str, label: &'static str, required: bool, rows: u8) -> FieldView {
    FieldView {
        name,
        label,
        required,
        rows,
        placeholder: "",
        value: String::new(),
    }
}

/// The form for `kind`, filled with what was typed if it was this kind's form.
fn action_view(kind: &EventKind, typed: Option<&EventForm>) -> ActionView {
    let note = || field("note", "意见（可选）", false, 2);
    let (title, button, danger, confirm, mut fields) = match kind {
        EventKind::ReviewPassed => ("审核通过", "审核通过", false, "", vec![note()]),
        EventKind::Approved => ("审批通过", "审批通过", false, "", vec![note()]),
        EventKind::SupplementRequested => (
            "一次性告知补正",
            "发出补正告知",
            false,
            "",
            vec![
                FieldView {
                    placeholder: "每行一项，一次列全，例如：\n户口簿原件\n银行卡复印件",
                    ..field("materials", "所缺材料（每行一项）", true, 4)
                },
                field("note", "补正说明（可选）", false, 2),
            ],
        ),
        EventKind::Rejected => (
            "不予许可",
            "作出不予许可决定",
            true,
            "确认作出不予许可决定？",
            vec![field("reason", "不予许可理由", true, 3)],
        ),
        EventKind::SupplementProvided => (
            "补正材料已收齐",
            "登记补正材料已收齐",
            false,
            "",
            vec![field("note", "说明（可选）", false, 2)],
        ),
        EventKind::Issued => (
            "出件",
            "登记出件",
            false,
            "",
            vec![field("note", "说明（可选）", false, 2)],
        ),
        EventKind::PickedUp => (
            "申请人领取",
            "登记已领取",
            false,
            "",
            vec![field("note", "说明（可选，如代领人）", false, 2)],
        ),
        EventKind::Withdrawn => (
            "申请人撤回",
            "登记撤回",
            true,
            "确认申请人撤回此申请？",
            vec![FieldView {
                placeholder: "申请人主动撤回",
                ..field("reason", "撤回原因", false, 2)
            }],
        ),
        EventKind::Rated => (
            "录入纸质评价",
            "登记评价",
            false,
            "",
            vec![field("comment", "评价意见（可选，200字以内）", false, 2)],
        ),
        _ => (
            "备注",
            "添加备注",
            false,
            "",
            vec![field("text", "备注", true, 2)],
        ),
    };
    let mut level = String::new();
    if let Some(t) = typed.filter(|t| t.kind == kind.as_str()) {
        for f in &mut fields {
            f.value = t.value(f.name).to_string();
        }
        level = t.level.trim().to_string();
    }
    ActionView {
        kind: kind.as_str().to_string(),
        title,
        button,
        danger,
        confirm,
        levels: if *kind == EventKind::Rated {
            level_options()
        } else {
            Vec::new()
        },
        level,
        fields,
    }
}

/// The five rating levels as select options: (`5`, `非常满意（5）`), best first.
fn level_options() -> Vec<(String, String)> {
    rating::LEVELS
        .iter()
        .map(|(l, name)| (l.to_string(), format!("{name}（{l}）")))
        .collect()
}

/// The decision a result rests on: the last effective review, approval or rejection; for an
/// item with no review (即办件), the acceptance itself.
struct Decision {
    label: String,
    granted: bool,
    reason: String,
    who: String,
    at: String,
}

fn decision(state: &AppState, case: &Case, st: &CaseState) -> Option<Decision> {
    let superseded: Vec<&str> = st.superseded.iter().map(|s| s.event_id.as_str()).collect();
    let effective: Vec<&Event> = case
        .timeline()
        .into_iter()
        .filter(|e| !superseded.contains(&e.id.as_str()))
        .collect();
    let who = |e: &Event| format!("{}（{} {}）", e.user, views::tier_zh(e.tier), e.node);
    let last = effective.iter().rev().find(|e| {
        matches!(
            e.kind,
            EventKind::ReviewPassed | EventKind::Approved | EventKind::Rejected
        )
    });
    if let Some(e) = last {
        return Some(Decision {
            label: e.kind.zh().to_string(),
            granted: e.kind != EventKind::Rejected,
            reason: e.payload_str("reason").to_string(),
            who: who(e),
            at: views::local_time(&state.node, e.at),
        });
    }
    let accepted = effective.iter().find(|e| e.kind == EventKind::Accepted)?;
    Some(Decision {
        label: "准予办理（即办件，当场办结）".into(),
        granted: true,
        reason: String::new(),
        who: who(accepted),
        at: views::local_time(&state.node, accepted.at),
    })
}

/// Statuses that have a result to print.
fn has_result(status: Status) -> bool {
    matches!(
        status,
        Status::ReadyToIssue | Status::Issued | Status::Completed | Status::Rejected
    )
}

#[derive(Template)]
#[template(path = "case.html")]
struct CaseTpl {
    chrome: Chrome,
    id: String,
    receipt_no: String,
    item_name: String,
    applicant_name: String,
    id_number_masked: String,
    /// Offer the audited "show the full ID number" action.
    offer_full_id: bool,
    phone: String,
    proxy: Option<(String, String)>,
    form: Vec<(String, String)>,
    materials: Vec<MaterialRow>,
    status: &'static str,
    status_zh: &'static str,
    step: String,
    step_name: String,
    baton: String,
    baton_here: bool,
    missing: Vec<String>,
    missing_note: String,
    conflict: String,
    /// Due dates and the supervision mark (`none`, `yellow`, `red`).
    time_line: String,
    warning: &'static str,
    timeline: Vec<TimelineRow>,
    /// Events kept but not counted (伪造/无效), with the reason.
    forged: Vec<TimelineRow>,
    actions: Vec<ActionView>,
    unsent: String,
    show_result: bool,
    flash: String,
    /// The 一件事 bundle of a sub-case: its id and name.
    bundle: Option<(String, String)>,
    /// Offer 当场办结 (an immediate item issued and picked up in one step).
    counter: bool,
}

fn render_case(
    state: &AppState,
    auth: &Auth,
    id: &str,
    flash: String,
    typed: Option<&EventForm>,
) -> Result<CaseTpl, PageError> {
    let case = state.node.store.case(id)?.ok_or(AppError::NotFound)?;
    let st = case.state();
    let item = state.node.catalog.get(&case.item_code);
    let label = |key: &str| {
        item.and_then(|i| i.field(key))
            .map_or(key.to_string(), |f| f.label.clone())
    };
    let material_name = |key: &str| {
        item.and_then(|i| i.material(key))
            .map_or(key.to_string(), |m| m.name.clone())
    };
    let superseded: BTreeMap<&str, &str> = st
        .superseded
        .iter()
        .map(|s| (s.event_id.as_str(), s.reason.as_str()))
        .collect();
    let timeline = case
        .timeline()
        .into_iter()
        .map(|e| TimelineRow {
            at: views::local_time(&state.node, e.at),
            kind_zh: e.kind.zh().to_string(),
            kind: e.kind.as_str().to_string(),
            who: format!("{}（{}）", e.user, e.node),
            text: event_text(e),
            superseded: superseded
                .get(e.id.as_str())
                .map(|r| r.to_string())
                .unwrap_or_default(),
        })
        .collect();
    let forged = case
        .forged
        .iter()
        .map(|f| TimelineRow {
            at: views::local_time(&state.node, f.event.at),
            kind_zh: f.event.kind.zh().to_string(),
            kind: f.event.kind.as_str().to_string(),
            who: format!("{}（自称 {}）", f.event.user, f.event.node),
            text: event_text(&f.event),
            superseded: f.reason.clone(),
        })
        .collect();
    let here = state.node.tier();
    let baton_here = st.tier == Some(here);
    let baton = match st.tier {
        Some(t) if t == here => format!("由本节点（{}）办理", views::tier_zh(t)),
        Some(t) => format!("等待{}办理", views::tier_zh(t)),
        None => String::new(),
    };
    // The note of the supplement request in force (its materials are in the state).
    let missing_note = if st.status == Status::SupplementRequested {
        case.timeline()
            .into_iter()
            .rev()
            .find(|e| {
                e.kind == EventKind::SupplementRequested && !superseded.contains_key(e.id.as_str())
            })
            .map(|e| e.payload_str("note").to_string())
            .unwrap_or_default()
    } else {
        String::new()
    };
    let time = state
        .node
        .legal_time(&case.item_code, &yiciban_core::deadline::Marks::of(&st));
    let mut kinds = authz::actions_now(auth.0.role, here, &st);
    if case.bundle.is_some() {
        // A sub-case is handed out with its bundle, once, on the bundle's page.
        kinds.retain(|k| *k != EventKind::Issued);
    }
    let counter = case.bundle.is_none()
        && item.is_some_and(|i| i.kind == ItemKind::Immediate)
        && kinds.contains(&EventKind::Issued)
        && authz::may_hand_out(auth.0.role);
    let actions: Vec<ActionView> = kinds.iter().map(|k| action_view(k, typed)).collect();
    // What was typed into a form this page no longer offers: shown so nothing is lost.
    let unsent = typed
        .filter(|t| !actions.iter().any(|a| a.kind == t.kind))
        .map(EventForm::typed)
        .unwrap_or_default();
    Ok(CaseTpl {
        chrome: Chrome::new(state, Some(auth), format!("办件 {}", case.receipt_no)),
        id: case.id.clone(),
        receipt_no: case.receipt_no.clone(),
        item_name: case.item_name.clone(),
        applicant_name: case.applicant.name.clone(),
        id_number_masked: idcard::mask(&case.applicant.id_number),
        offer_full_id: authz::allowed(auth.0.role, Action::ViewPersonalData),
        phone: case.applicant.phone.clone(),
        proxy: case
            .proxy
            .as_ref()
            .map(|p| (p.name.clone(), p.relation.clone().unwrap_or_default())),
        form: case
            .form
            .iter()
            .map(|(k, v)| (label(k), v.clone()))
            .collect(),
        materials: case
            .materials
            .iter()
            .map(|m| {
                let blob = m.blob.clone().unwrap_or_default();
                MaterialRow {
                    name: material_name(&m.key),
                    status_zh: m.status.zh(),
                    blob_here: !blob.is_empty() && state.node.store.blob_exists(&blob),
                    blob,
                }
            })
            .collect(),
        status: st.status.as_str(),
        status_zh: st.status.zh(),
        step: st.step.clone().unwrap_or_default(),
        step_name: st
            .step
            .as_deref()
            .map(|s| views::step_zh(&state.node, &case.item_code, s))
            .unwrap_or_default(),
        baton,
        baton_here,
        missing: if st.status == Status::SupplementRequested {
            st.missing_materials.clone()
        } else {
            Vec::new()
        },
        missing_note,
        conflict: st.conflict.clone().unwrap_or_default(),
        time_line: views::time_line(&time),
        warning: time.worst().as_str(),
        timeline,
        forged,
        actions,
        unsent,
        show_result: has_result(st.status),
        flash,
        bundle: case.bundle.as_ref().map(|b| (b.id.clone(), b.name.clone())),
        counter,
    })
}

/// What an event says, for the timeline: text, reason, missing materials, note; a rating's
/// level, comment and source; that a comment closed a follow-up.
fn event_text(e: &Event) -> String {
    if e.kind == EventKind::Rated {
        let level = e
            .payload
            .get("level")
            .and_then(|v| v.as_u64())
            .and_then(|l| u8::try_from(l).ok())
            .unwrap_or(0);
        let mut parts = vec![format!(
            "{}（{level}）{}",
            rating::level_zh(level).unwrap_or("?"),
            if rating::is_bad(level) { " 差评" } else { "" }
        )];
        let comment = e.payload_str("comment");
        if !comment.is_empty() {
            parts.push(comment.to_string());
        }
        parts.push(rating::source_zh(e.payload_str("source")).to_string());
        return parts.join("；");
    }
    let mut parts: Vec<String> = [e.payload_str("text"), e.payload_str("reason")]
        .into_iter()
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if let Some(list) = e.payload.get("materials").and_then(|m| m.as_array()) {
        let names: Vec<&str> = list.iter().filter_map(|v| v.as_str()).collect();
        if !names.is_empty() {
            parts.push(format!("所缺材料：{}", names.join("、")));
        }
    }
    let note = e.payload_str("note");
    if !note.is_empty() && e.kind != EventKind::Accepted {
        parts.push(note.to_string());
    }
    if !e.payload_str("follow_up").is_empty() {
        parts.insert(0, "差评回访整改办结".into());
    }
    parts.join("；")
}

pub async fn case_detail(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> PageResult {
    auth.require(Action::ViewCases)?;
    page(&render_case(&state, &auth, &id, String::new(), None)?)
}

/// `POST /cases/{id}/events`: one action form. A refusal shows the case page again with the
/// message and what was typed.
pub async fn case_event(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Form(f): Form<EventForm>,
) -> PageResult {
    auth.check_csrf(f.csrf.as_deref())?;
    auth.require(Action::RecordEvent)?;
    let refused = |err: AppError, f: &EventForm| -> PageResult {
        let (status, _) = err.status_and_code();
        let tpl = render_case(&state, &auth, &id, err.message().zh, Some(f))?;
        Ok((status, Html(tpl.render()?)).into_response())
    };
    let kind = match views::parse_kind(&f.kind) {
        Ok(kind) => kind,
        Err(m) => return refused(AppError::BadRequest(m), &f),
    };
    if !authz::may_record_event(auth.0.role, &kind) {
        let m = Msg::new(
            format!("{}不能办理“{}”", auth.0.role.zh(), kind.zh()),
            format!(
                "the role {} does not record {}",
                auth.0.role.as_str(),
                kind.as_str()
            ),
        );
        return refused(AppError::ForbiddenBecause(m), &f);
    }
    match state
        .node
        .record_event(&id, kind, f.payload(), &auth.actor())
        .await
    {
        Ok(_) => Ok(Redirect::to(&format!("/cases/{id}")).into_response()),
        Err(e @ (NodeError::Conflict(_) | NodeError::BadRequest(_) | NodeError::Forbidden(_))) => {
            refused(e.into(), &f)
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /cases/{id}/personal-data`: the case page with the applicant's full ID number. The
/// view is written to the audit chain before the page is rendered.
pub async fn case_personal_data(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> PageResult {
    auth.check_csrf(f.csrf.as_deref())?;
    auth.require(Action::ViewPersonalData)?;
    let case = state.node.view_personal_data(&id, &auth.actor()).await?;
    let mut tpl = render_case(&state, &auth, &id, String::new(), None)?;
    tpl.id_number_masked = case.applicant.id_number;
    tpl.offer_full_id = false;
    page(&tpl)
}

#[derive(Template)]
#[template(path = "result.html")]
struct ResultTpl {
    chrome: Chrome,
    id: String,
    receipt_no: String,
    item_name: String,
    applicant_name: String,
    id_number_masked: String,
    proxy: String,
    accepted: String,
    status_zh: &'static str,
    granted: bool,
    decision: String,
    reason: String,
    decided_by: String,
    decided_at: String,
    result_name: String,
    issued_at: String,
    picked_up_at: String,
    enquiry_phone: String,
    complaint_phone: String,
    printed_on: String,
    /// The QR of the sealed result code; empty when the decision is unsigned.
    qr_svg: String,
    /// The node that sealed the decision.
    signed_by: String,
}

/// `GET /cases/{id}/result`: the printable 办理结果通知书, once there is a result.
pub async fn result(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> PageResult {
    auth.require(Action::ViewCases)?;
    let case = state.node.store.case(&id)?.ok_or(AppError::NotFound)?;
    let st = case.state();
    let not_yet = || {
        AppError::Conflict(Msg::new(
            format!("此办件尚未作出办理结果（当前状态：{}）", st.status.zh()),
            format!("the case has no result yet ({})", st.status.as_str()),
        ))
    };
    if !has_result(st.status) {
        return Err(not_yet().into());
    }
    let d = decision(&state, &case, &st).ok_or_else(not_yet)?;
    let item = state.node.catalog.get(&case.item_code);
    let time_of = |kind: EventKind| {
        case.timeline()
            .into_iter()
            .rev()
            .find(|e| e.kind == kind && !st.superseded.iter().any(|s| s.event_id == e.id))
            .map(|e| views::local_time(&state.node, e.at))
            .unwrap_or_default()
    };
    let accepted = time_of(EventKind::Accepted);
    let issued_at = time_of(EventKind::Issued);
    let picked_up_at = time_of(EventKind::PickedUp);
    let seal = yiciban_core::seal::case_seal(&case, &st);
    page(&ResultTpl {
        chrome: Chrome::new(
            &state,
            Some(&auth),
            format!("办理结果通知书 {}", case.receipt_no),
        ),
        id: case.id.clone(),
        receipt_no: case.receipt_no.clone(),
        item_name: case.item_name.clone(),
        applicant_name: case.applicant.name.clone(),
        id_number_masked: idcard::mask(&case.applicant.id_number),
        proxy: case
            .proxy
            .as_ref()
            .map(|p| p.name.clone())
            .unwrap_or_default(),
        accepted,
        status_zh: st.status.zh(),
        granted: d.granted,
        decision: d.label,
        reason: d.reason,
        decided_by: d.who,
        decided_at: d.at,
        result_name: item.map(|i| i.result_name.clone()).unwrap_or_default(),
        issued_at,
        picked_up_at,
        enquiry_phone: item.map(|i| i.enquiry_phone.clone()).unwrap_or_default(),
        complaint_phone: item.map(|i| i.complaint_phone.clone()).unwrap_or_default(),
        printed_on: state.node.today().format("%Y年%m月%d日").to_string(),
        qr_svg: seal
            .as_ref()
            .map(|s| crate::qr::svg_min(&s.payload, 260))
            .unwrap_or_default(),
        signed_by: seal.map(|s| s.node).unwrap_or_default(),
    })
}

#[derive(Template)]
#[template(path = "verify.html")]
struct VerifyTpl {
    chrome: Chrome,
    payload: String,
    checked: bool,
    summary: Option<ResultSummary>,
    signer_role: String,
    reason_zh: String,
    /// A valid seal of a node revoked later: says so.
    note: String,
}

#[derive(Debug, Deserialize)]
pub struct VerifyParams {
    p: Option<String>,
}

/// `GET /verify?p=CODE`: public (no login), changes nothing. Checks a result code against
/// this node's county CA certificate, offline, and shows what it says or why it fails.
pub async fn verify(State(state): State<AppState>, Query(q): Query<VerifyParams>) -> PageResult {
    let payload = q.p.unwrap_or_default().trim().to_string();
    let mut tpl = VerifyTpl {
        chrome: Chrome::new(&state, None, "核验办理结果"),
        payload: String::new(),
        checked: !payload.is_empty(),
        summary: None,
        signer_role: String::new(),
        reason_zh: String::new(),
        note: String::new(),
    };
    if tpl.checked {
        match state.node.verify_result(&payload) {
            Ok(v) => {
                tpl.note = v.note_zh();
                tpl.signer_role = Tier::parse(&v.signer.role)
                    .map_or_else(|| v.signer.role.clone(), views::tier_zh);
                tpl.summary = Some(v.summary);
            }
            Err(e) => {
                tpl.reason_zh = e.msg().zh;
            }
        }
    }
    // Echo back only what fits a code, so the page never carries a huge query.
    if payload.len() <= yiciban_core::seal::MAX_PAYLOAD_CHARS {
        tpl.payload = payload;
    }
    page(&tpl)
}

#[derive(Template)]
#[template(path = "receipt.html")]
struct ReceiptTpl {
    chrome: Chrome,
    id: String,
    receipt_no: String,
    qr_svg: String,
    item_name: String,
    applicant_name: String,
    id_number_masked: String,
    proxy: String,
    accepted: String,
    kind_text: String,
    result_name: String,
    materials: Vec<(String, &'static str)>,
    office_hours: String,
    enquiry_phone: String,
    complaint_phone: String,
    clerk: String,
}

pub async fn receipt(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> PageResult {
    auth.require(Action::ViewCases)?;
    let case = state.node.store.case(&id)?.ok_or(AppError::NotFound)?;
    let item = state.node.catalog.get(&case.item_code);
    let accepted = case
        .timeline()
        .into_iter()
        .find(|e| e.kind == EventKind::Accepted);
    page(&ReceiptTpl {
        chrome: Chrome::new(&state, Some(&auth), format!("受理回执 {}", case.receipt_no)),
        qr_svg: crate::qr::svg(&case.receipt_no),
        id: case.id.clone(),
        receipt_no: case.receipt_no.clone(),
        item_name: case.item_name.clone(),
        applicant_name: case.applicant.name.clone(),
        id_number_masked: idcard::mask(&case.applicant.id_number),
        proxy: case
            .proxy
            .as_ref()
            .map(|p| p.name.clone())
            .unwrap_or_default(),
        accepted: accepted
            .map(|e| views::local_time(&state.node, e.at))
            .unwrap_or_default(),
        kind_text: match item {
            Some(i) if i.kind == ItemKind::Immediate => "即办件：当场办结".into(),
            Some(i) => format!(
                "承诺件：自受理次日起{}个工作日内办结（法定时限{}个工作日）",
                i.promised_days, i.statutory_days
            ),
            None => String::new(),
        },
        result_name: item.map(|i| i.result_name.clone()).unwrap_or_default(),
        materials: case
            .materials
            .iter()
            .map(|m| {
                (
                    item.and_then(|i| i.material(&m.key))
                        .map_or(m.key.clone(), |d| d.name.clone()),
                    m.status.zh(),
                )
            })
            .collect(),
        office_hours: item.map(|i| i.office_hours.clone()).unwrap_or_default(),
        enquiry_phone: item.map(|i| i.enquiry_phone.clone()).unwrap_or_default(),
        complaint_phone: item.map(|i| i.complaint_phone.clone()).unwrap_or_default(),
        clerk: accepted.map(|e| e.user.clone()).unwrap_or_default(),
    })
}

pub async fn blob(
    State(state): State<AppState>,
    auth: Auth,
    Path(hash): Path<String>,
) -> PageResult {
    auth.require(Action::ViewCases)?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AppError::NotFound.into());
    }
    let bytes = state.node.store.blob(&hash)?.ok_or(AppError::NotFound)?;
    let mime = if bytes.starts_with(b"\x89PNG") {
        "image/png"
    } else if bytes.starts_with(b"GIF") {
        "image/gif"
    } else if bytes.starts_with(b"RIFF") {
        "image/webp"
    } else {
        "image/jpeg"
    };
    Ok((
        [
            (header::CONTENT_TYPE, mime),
            (header::CACHE_CONTROL, "private, max-age=86400"),
        ],
        bytes,
    )
        .into_response())
}

/// The cookie of the kiosk form's double-submit token.
const RATE_COOKIE: &str = "yiciban_rate";

#[derive(Template)]
#[template(path = "rate.html")]
struct RateTpl {
    chrome: Chrome,
    /// The double-submit token: the same value as the `yiciban_rate` cookie.
    token: String,
    receipt_no: String,
    level: String,
    comment: String,
    levels: Vec<(String, String)>,
    max_comment: usize,
    error: String,
    /// The rating was recorded: say thanks instead of the form.
    done: bool,
    done_item: String,
    done_level: String,
    /// A bad rating: the county will follow it up.
    done_bad: bool,
    follow_up_days: u32,
}

impl RateTpl {
    fn new(state: &AppState, token: String) -> Self {
        Self {
            chrome: Chrome::new(state, None, "办事评价（好差评）"),
            token,
            receipt_no: String::new(),
            level: String::new(),
            comment: String::new(),
            levels: level_options(),
            max_comment: rating::MAX_COMMENT_CHARS,
            error: String::new(),
            done: false,
            done_item: String::new(),
            done_level: String::new(),
            done_bad: false,
            follow_up_days: rating::FOLLOW_UP_DAYS,
        }
    }
}

/// The kiosk token a request carries in its cookie, if it looks like one we issued.
fn rate_cookie(headers: &HeaderMap) -> Option<String> {
    session::cookie_named(headers, RATE_COOKIE)
        .filter(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The page with the token's cookie set (kept for the form's path only).
fn rate_page(status: StatusCode, tpl: &RateTpl) -> PageResult {
    let cookie = format!(
        "{RATE_COOKIE}={}; Path=/rate; HttpOnly; SameSite=Strict",
        tpl.token
    );
    Ok((status, [(header::SET_COOKIE, cookie)], Html(tpl.render()?)).into_response())
}

/// `GET /rate`: public (no login), the citizen's rating on a kiosk or at the counter. The
/// form asks for the receipt number and the last 4 digits of the applicant's phone.
pub async fn rate_form(State(state): State<AppState>, headers: HeaderMap) -> PageResult {
    let token = rate_cookie(&headers).unwrap_or_else(session::random_token);
    rate_page(StatusCode::OK, &RateTpl::new(&state, token))
}

#[derive(Debug, Deserialize)]
pub struct RateForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    receipt_no: String,
    #[serde(default)]
    phone_tail: String,
    #[serde(default)]
    level: String,
    #[serde(default)]
    comment: String,
}

/// Whether a request's `Origin`, when it sends one, names this host.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| !host.is_empty() && rest == host)
}

/// `POST /rate`: the form has no session, so no session CSRF token. It is guarded by a
/// double-submit token: `GET /rate` sets a random value both in a `SameSite=Strict` cookie
/// and in a hidden field, and the two must match here; a page of another site can neither
/// read the value nor make the browser send the cookie. A request whose `Origin` names
/// another host is refused too. Wrong receipt number or phone digits write nothing, keep what
/// was typed (not the phone digits) and count against the receipt number (the core locks it
/// after a few).
pub async fn rate_submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<RateForm>,
) -> PageResult {
    let cookie = rate_cookie(&headers);
    let mut tpl = RateTpl::new(&state, cookie.clone().unwrap_or_else(session::random_token));
    tpl.receipt_no = f.receipt_no.trim().chars().take(64).collect();
    tpl.level = f.level.trim().chars().take(2).collect();
    tpl.comment = f
        .comment
        .chars()
        .take(rating::MAX_COMMENT_CHARS * 2)
        .collect();
    let token_ok =
        cookie.is_some_and(|c| session::constant_time_eq(c.as_bytes(), f.token.as_bytes()));
    if !token_ok || !same_origin(&headers) {
        tpl.error = "页面已过期，请重新提交".into();
        return rate_page(StatusCode::FORBIDDEN, &tpl);
    }
    let Some(level) = tpl
        .level
        .parse::<u8>()
        .ok()
        .filter(|l| rating::level_zh(*l).is_some())
    else {
        tpl.error = "请选择评价等级".into();
        return rate_page(StatusCode::BAD_REQUEST, &tpl);
    };
    match state
        .node
        .rate_at_kiosk(&f.receipt_no, &f.phone_tail, level, &f.comment)
        .await
    {
        Ok(filed) => {
            tpl.done = true;
            tpl.done_item = filed.case.item_name;
            tpl.done_level = rating::level_zh(level).unwrap_or_default().to_string();
            tpl.done_bad = rating::is_bad(level);
            tpl.receipt_no.clear();
            tpl.level.clear();
            tpl.comment.clear();
            rate_page(StatusCode::OK, &tpl)
        }
        Err(
            e @ (NodeError::NotFound(_)
            | NodeError::Conflict(_)
            | NodeError::BadRequest(_)
            | NodeError::Locked(_)),
        ) => {
            let err = AppError::from(e);
            let (status, _) = err.status_and_code();
            tpl.error = err.message().zh;
            rate_page(status, &tpl)
        }
        Err(e) => Err(e.into()),
    }
}

/// One open follow-up on the follow-up page.
#[derive(Debug, Clone)]
struct FollowUpRow {
    case_id: String,
    receipt_no: String,
    item_name: String,
    applicant_name: String,
    village: String,
    rating_id: String,
    level: String,
    comment: String,
    source_zh: &'static str,
    rated_on: String,
    due: String,
    provisional: bool,
    warning: &'static str,
    warning_zh: &'static str,
    /// What was typed into its close form before a refusal.
    text: String,
}

#[derive(Template)]
#[template(path = "followups.html")]
struct FollowUpsTpl {
    chrome: Chrome,
    rows: Vec<FollowUpRow>,
    red: u64,
    yellow: u64,
    total: u64,
    days: u32,
    /// This user at this node may close follow-ups (county staff).
    can_close: bool,
    flash: String,
    pager: Pager,
}

async fn render_follow_ups(
    state: &AppState,
    auth: &Auth,
    flash: String,
    typed: Option<&CloseFollowUpForm>,
    want: Option<usize>,
) -> Result<FollowUpsTpl, PageError> {
    let ((items, counts), pager) = paged("/followups", want, |offset| {
        let node = state.node.clone();
        async move {
            let (items, counts) = views::follow_ups(&node, offset, PAGE_ROWS)?;
            let total = counts.total;
            Ok(((items, counts), total))
        }
    })
    .await?;
    let (red, yellow, total) = (counts.red, counts.yellow, counts.total);
    let rows = items
        .into_iter()
        .map(|i| {
            let f = i.follow_up;
            FollowUpRow {
                text: typed
                    .filter(|t| t.rating == f.rating_event_id)
                    .map(|t| t.text.clone())
                    .unwrap_or_default(),
                case_id: i.case_id,
                receipt_no: i.receipt_no,
                item_name: i.item_name,
                applicant_name: i.applicant_name,
                village: i.village,
                level: format!("{}（{}）", f.level_zh, f.level),
                comment: f.comment,
                source_zh: rating::source_zh(&f.source),
                rated_on: f.rated_on.to_string(),
                provisional: f.provisional,
                due: f.due.map_or_else(
                    || format!("无法计算：{}", f.error.unwrap_or_default()),
                    |d| d.to_string(),
                ),
                warning: f.warning.as_str(),
                warning_zh: f.warning.zh(),
                rating_id: f.rating_event_id,
            }
        })
        .collect();
    Ok(FollowUpsTpl {
        chrome: Chrome::new(state, Some(auth), "差评回访整改"),
        rows,
        red,
        yellow,
        total,
        days: rating::FOLLOW_UP_DAYS,
        can_close: state.node.tier() == Tier::County
            && authz::allowed(auth.0.role, Action::CloseFollowUp),
        flash,
        pager,
    })
}

/// `GET /followups` (回访整改): the open follow-ups of bad ratings, red first, then the
/// earliest due; at the county, each with its close form.
pub async fn follow_ups(
    State(state): State<AppState>,
    auth: Auth,
    Query(p): Query<PageParams>,
) -> PageResult {
    auth.require(Action::ViewFollowUps)?;
    page(&render_follow_ups(&state, &auth, String::new(), None, p.page).await?)
}

#[derive(Debug, Deserialize)]
pub struct CloseFollowUpForm {
    csrf: Option<String>,
    #[serde(default)]
    case_id: String,
    #[serde(default)]
    rating: String,
    #[serde(default)]
    text: String,
}

/// `POST /followups/close`: closes a follow-up with a comment naming the rating. A refusal
/// shows the list again with the message and what was typed.
pub async fn close_follow_up(
    State(state): State<AppState>,
    auth: Auth,
    Form(f): Form<CloseFollowUpForm>,
) -> PageResult {
    auth.check_csrf(f.csrf.as_deref())?;
    auth.require(Action::CloseFollowUp)?;
    let payload = serde_json::json!({ "text": f.text, "follow_up": f.rating });
    match state
        .node
        .record_event(&f.case_id, EventKind::Comment, payload, &auth.actor())
        .await
    {
        Ok(_) => Ok(Redirect::to("/followups").into_response()),
        Err(
            e @ (NodeError::Conflict(_)
            | NodeError::BadRequest(_)
            | NodeError::Forbidden(_)
            | NodeError::NotFound(_)),
        ) => {
            let err = AppError::from(e);
            let (status, _) = err.status_and_code();
            let tpl = render_follow_ups(&state, &auth, err.message().zh, Some(&f), None).await?;
            Ok((status, Html(tpl.render()?)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}
