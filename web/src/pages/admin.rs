//! The security admin's console at the county (三员分立, see `crate::authz`):
//!
//! - `GET /admin/nodes/{id}`: the users of node `id`'s directory, a form to add one, and per
//!   user a password reset and disable/enable; the node's revocation. Every `POST` carries the
//!   CSRF token and writes through the store's writer while the county runs; the directory's
//!   change replicates to the node on its next sync.
//! - `GET /admin/enrol`: issue an enrolment token (shown once), the enrolled nodes (tokens
//!   used, and when), the pending and expired tokens, the handshakes refused lately.
//!
//! A refused form is shown again with the message and what was typed (never the passwords).

use crate::extract::Form;
use crate::extract::Query;
use askama::Template;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect};
use serde::Deserialize;
use yiciban_core::admin::{DIRECTORY_ROLES, DirectoryChange, NewDirectoryUser, TokenState};
use yiciban_core::catalog::Tier;
use yiciban_core::message::Msg;
use yiciban_core::node::NodeError;

use super::{Chrome, PageResult, page};
use crate::AppState;
use crate::authz::Action;
use crate::error::AppError;
use crate::session::Auth;
use crate::views;

/// Percent-encodes a path segment or query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn local_ms(state: &AppState, ms: u64) -> String {
    views::local_time_ms(ms, *state.node.local_now().offset())
}

/// A refused write: the page again, with the refusal's status and message.
fn refused(e: NodeError) -> Result<(StatusCode, String), AppError> {
    match e {
        e @ (NodeError::Conflict(_)
        | NodeError::BadRequest(_)
        | NodeError::Forbidden(_)
        | NodeError::NotFound(_)) => {
            let err = AppError::from(e);
            let (status, _) = err.status_and_code();
            Ok((status, err.message().zh))
        }
        other => Err(other.into()),
    }
}

fn tier_zh(role: &str) -> String {
    Tier::parse(role).map_or_else(|| role.to_string(), views::tier_zh)
}

struct UserRow {
    username: String,
    name: String,
    role: &'static str,
    disabled: bool,
}

#[derive(Debug, Default, Deserialize)]
pub struct AddUserForm {
    csrf: Option<String>,
    #[serde(default)]
    username: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password2: String,
}

#[derive(Template)]
#[template(path = "admin_node.html")]
struct NodeAdminTpl {
    chrome: Chrome,
    node: String,
    tier: String,
    division: String,
    enrolled: String,
    revoked: bool,
    users: Vec<UserRow>,
    roles: Vec<(&'static str, &'static str)>,
    flash: String,
    error: String,
    /// The user the error is about (its row's forms), else the add form.
    error_user: String,
    username: String,
    display_name: String,
    role: String,
    confirm: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct Done {
    done: Option<String>,
    u: Option<String>,
}

/// What a successful write says when the page is shown again.
fn done_text(d: &Done) -> String {
    let u = d.u.as_deref().unwrap_or("");
    match d.done.as_deref() {
        Some("added") => format!("已添加用户 {u}，下次同步时送达该节点"),
        Some("password") => format!("已重置 {u} 的密码，下次同步时送达该节点"),
        Some("disabled") => format!("已停用用户 {u}，下次同步时送达该节点"),
        Some("enabled") => format!("已启用用户 {u}，下次同步时送达该节点"),
        Some("revoked") => "已吊销该节点的证书：县级节点一两秒内拒绝它的下一次握手".into(),
        _ => String::new(),
    }
}

/// Renders `/admin/nodes/{id}`, with `error` (about `error_user`, or the add form) and the
/// typed add form `typed`.
fn node_page(
    state: &AppState,
    auth: &Auth,
    node: &str,
    flash: String,
    error: (String, String),
    typed: &AddUserForm,
    confirm: &str,
) -> Result<NodeAdminTpl, AppError> {
    let (tier, division, dir) = state.node.directory(node)?;
    let tokens = state.node.tokens()?;
    let enrolled = tokens
        .iter()
        .filter(|t| t.node_id == node)
        .filter_map(|t| t.used_ms)
        .max()
        .map_or_else(|| "尚未注册（令牌未使用）".into(), |ms| local_ms(state, ms));
    let mut users: Vec<UserRow> = dir
        .map(|d| d.users)
        .unwrap_or_default()
        .into_iter()
        .map(|u| UserRow {
            username: u.username,
            name: u.display_name,
            role: u.role.zh(),
            disabled: u.disabled,
        })
        .collect();
    users.sort_by(|a, b| a.username.cmp(&b.username));
    Ok(NodeAdminTpl {
        chrome: Chrome::new(state, Some(auth), format!("用户与节点 · {node}")),
        node: node.to_string(),
        tier: views::tier_zh(tier),
        division,
        enrolled,
        revoked: state.node.revoked_nodes().contains(node),
        users,
        roles: DIRECTORY_ROLES.map(|r| (r.as_str(), r.zh())).to_vec(),
        flash,
        error: error.1,
        error_user: error.0,
        username: typed.username.clone(),
        display_name: typed.display_name.clone(),
        role: typed.role.clone(),
        confirm: confirm.to_string(),
    })
}

/// `GET /admin/nodes/{id}`.
pub async fn admin_node_page(
    State(state): State<AppState>,
    auth: Auth,
    Path(node): Path<String>,
    Query(d): Query<Done>,
) -> PageResult {
    auth.require(Action::ManageUsers)?;
    let tpl = node_page(
        &state,
        &auth,
        &node,
        done_text(&d),
        Default::default(),
        &AddUserForm::default(),
        "",
    )?;
    page(&tpl)
}

fn back(node: &str, done: &str, user: &str) -> PageResult {
    Ok(Redirect::to(&format!(
        "/admin/nodes/{}?done={done}&u={}",
        enc(node),
        enc(user)
    ))
    .into_response())
}

/// Shows the node page again after a refused write.
fn again(
    state: &AppState,
    auth: &Auth,
    node: &str,
    e: NodeError,
    user: &str,
    typed: &AddUserForm,
    confirm: &str,
) -> PageResult {
    let (status, msg) = refused(e)?;
    let tpl = node_page(
        state,
        auth,
        node,
        String::new(),
        (user.to_string(), msg),
        typed,
        confirm,
    )?;
    Ok((status, Html(tpl.render().map_err(AppError::from)?)).into_response())
}

fn mismatch() -> NodeError {
    NodeError::BadRequest(Msg::new("两次输入的密码不一致", "the two passwords differ"))
}

/// `POST /admin/nodes/{id}/users`: adds a user to the node's directory.
pub async fn admin_add_user(
    State(state): State<AppState>,
    auth: Auth,
    Path(node): Path<String>,
    Form(f): Form<AddUserForm>,
) -> PageResult {
    auth.check_csrf(f.csrf.as_deref())?;
    auth.require(Action::ManageUsers)?;
    if f.password != f.password2 {
        return again(&state, &auth, &node, mismatch(), "", &f, "");
    }
    let new = NewDirectoryUser {
        username: f.username.trim().to_string(),
        display_name: f.display_name.clone(),
        role: f.role.clone(),
        password: f.password.clone(),
    };
    match state
        .node
        .add_directory_user(&node, &new, &auth.actor())
        .await
    {
        Ok(user) => back(&node, "added", &user.username),
        Err(e) => again(&state, &auth, &node, e, "", &f, ""),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct PasswordForm {
    csrf: Option<String>,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password2: String,
}

/// `POST /admin/nodes/{id}/users/{username}/password`: sets a new password.
pub async fn admin_set_password(
    State(state): State<AppState>,
    auth: Auth,
    Path((node, username)): Path<(String, String)>,
    Form(f): Form<PasswordForm>,
) -> PageResult {
    auth.check_csrf(f.csrf.as_deref())?;
    auth.require(Action::ManageUsers)?;
    let none = AddUserForm::default();
    if f.password != f.password2 {
        return again(&state, &auth, &node, mismatch(), &username, &none, "");
    }
    let change = DirectoryChange::Password(f.password);
    match state
        .node
        .change_directory_user(&node, &username, change, &auth.actor())
        .await
    {
        Ok(_) => back(&node, "password", &username),
        Err(e) => again(&state, &auth, &node, e, &username, &none, ""),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

async fn set_disabled(
    state: AppState,
    auth: Auth,
    node: String,
    username: String,
    f: CsrfForm,
    disabled: bool,
) -> PageResult {
    auth.check_csrf(f.csrf.as_deref())?;
    auth.require(Action::ManageUsers)?;
    let change = DirectoryChange::Disabled(disabled);
    match state
        .node
        .change_directory_user(&node, &username, change, &auth.actor())
        .await
    {
        Ok(_) => back(
            &node,
            if disabled { "disabled" } else { "enabled" },
            &username,
        ),
        Err(e) => again(
            &state,
            &auth,
            &node,
            e,
            &username,
            &AddUserForm::default(),
            "",
        ),
    }
}

/// `POST /admin/nodes/{id}/users/{username}/disable` and `…/enable`.
pub async fn admin_set_disabled(
    State(state): State<AppState>,
    auth: Auth,
    Path((node, username, verb)): Path<(String, String, String)>,
    Form(f): Form<CsrfForm>,
) -> PageResult {
    match verb.as_str() {
        "disable" => set_disabled(state, auth, node, username, f, true).await,
        "enable" => set_disabled(state, auth, node, username, f, false).await,
        _ => Err(AppError::NotFound.into()),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct RevokeForm {
    csrf: Option<String>,
    /// The node id typed again.
    #[serde(default)]
    confirm: String,
}

/// `POST /admin/nodes/{id}/revoke`: revokes the node's certificates once its id is typed
/// again; the running county refuses its next handshake within a second or two.
pub async fn admin_revoke(
    State(state): State<AppState>,
    auth: Auth,
    Path(node): Path<String>,
    Form(f): Form<RevokeForm>,
) -> PageResult {
    auth.check_csrf(f.csrf.as_deref())?;
    auth.require(Action::ManageEnrolment)?;
    let none = AddUserForm::default();
    if f.confirm.trim() != node {
        let e = NodeError::BadRequest(Msg::new(
            "请在确认框中输入该节点的标识",
            "type the node's id to confirm",
        ));
        return again(&state, &auth, &node, e, "(revoke)", &none, &f.confirm);
    }
    match state.node.revoke_node(&node, &auth.actor()).await {
        Ok(_) => back(&node, "revoked", ""),
        Err(e) => again(&state, &auth, &node, e, "(revoke)", &none, &f.confirm),
    }
}

struct TokenRow {
    node: String,
    role: String,
    division: String,
    when: String,
    state: &'static str,
    revoked: bool,
}

struct RefusalRow {
    node: String,
    at: String,
    reason: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct TokenForm {
    csrf: Option<String>,
    #[serde(default)]
    node_id: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    division: String,
    #[serde(default)]
    days: String,
}

#[derive(Template)]
#[template(path = "admin_enrol.html")]
struct EnrolTpl {
    chrome: Chrome,
    enrolled: Vec<TokenRow>,
    pending: Vec<TokenRow>,
    expired: Vec<TokenRow>,
    refused: Vec<RefusalRow>,
    /// The token just issued, shown this once.
    token: String,
    token_node: String,
    error: String,
    node_id: String,
    role: String,
    division: String,
    days: String,
}

fn enrol_page(
    state: &AppState,
    auth: &Auth,
    typed: &TokenForm,
    token: String,
    error: String,
) -> Result<EnrolTpl, AppError> {
    let (mut enrolled, mut pending, mut expired) = (Vec::new(), Vec::new(), Vec::new());
    for t in state.node.tokens()? {
        let row = TokenRow {
            role: tier_zh(&t.role),
            when: local_ms(state, t.used_ms.unwrap_or(t.expires_ms)),
            state: match t.state {
                TokenState::Used => "used",
                TokenState::Pending => "pending",
                TokenState::Expired => "expired",
            },
            revoked: t.revoked,
            node: t.node_id,
            division: t.division,
        };
        match t.state {
            TokenState::Used => enrolled.push(row),
            TokenState::Pending => pending.push(row),
            TokenState::Expired => expired.push(row),
        }
    }
    enrolled.sort_by(|a, b| a.node.cmp(&b.node));
    let refused = state
        .node
        .links
        .refused()
        .into_iter()
        .rev()
        .map(|r| RefusalRow {
            at: local_ms(state, r.at_ms),
            node: r.node,
            reason: yiciban_core::link_error::zh(&r.reason).to_string(),
        })
        .collect();
    Ok(EnrolTpl {
        chrome: Chrome::new(state, Some(auth), "用户与节点"),
        enrolled,
        pending,
        expired,
        refused,
        token_node: if token.is_empty() {
            String::new()
        } else {
            typed.node_id.trim().to_string()
        },
        token,
        error,
        node_id: typed.node_id.clone(),
        role: typed.role.clone(),
        division: typed.division.clone(),
        days: if typed.days.is_empty() {
            "7".into()
        } else {
            typed.days.clone()
        },
    })
}

/// `GET /admin/enrol`.
pub async fn admin_enrol_page(State(state): State<AppState>, auth: Auth) -> PageResult {
    auth.require(Action::ManageEnrolment)?;
    page(&enrol_page(
        &state,
        &auth,
        &TokenForm::default(),
        String::new(),
        String::new(),
    )?)
}

/// `POST /admin/enrol`: issues a token and shows it this once.
pub async fn admin_issue_token(
    State(state): State<AppState>,
    auth: Auth,
    Form(f): Form<TokenForm>,
) -> PageResult {
    auth.check_csrf(f.csrf.as_deref())?;
    auth.require(Action::ManageEnrolment)?;
    let issued = match f.days.trim().parse::<u64>() {
        Ok(days) => {
            state
                .node
                .issue_token(
                    f.node_id.trim(),
                    &f.role,
                    f.division.trim(),
                    days,
                    &auth.actor(),
                )
                .await
        }
        Err(_) => Err(NodeError::BadRequest(Msg::new(
            "有效期应为天数",
            "days must be a number",
        ))),
    };
    match issued {
        Ok(token) => {
            let tpl = enrol_page(&state, &auth, &f, token, String::new())?;
            // The secret is shown this once: no copy in any cache.
            Ok((
                [(header::CACHE_CONTROL, "no-store")],
                Html(tpl.render().map_err(AppError::from)?),
            )
                .into_response())
        }
        Err(e) => {
            let (status, msg) = refused(e)?;
            let tpl = enrol_page(&state, &auth, &f, String::new(), msg)?;
            Ok((status, Html(tpl.render().map_err(AppError::from)?)).into_response())
        }
    }
}
