//! The county's management of its nodes (DESIGN.md §10): the users of each enrolled node's
//! directory (`crate::user_dir`), enrolment tokens (`crate::enrol`) and revocation. One
//! implementation for the CLI (`yiciban user … --for-node`, `yiciban token`, `yiciban revoke`,
//! the county stopped) and the console (`/admin/…`, the county running: every write goes
//! through the store's writer, so the directory's change replicates to its node on the next
//! sync).
//!
//! A directory holds the staff of a village or town: clerks, reviewers and approvers
//! ([`DIRECTORY_ROLES`]); the admin roles exist at the county only. A node's role and division
//! come from the token the county issued for it (the used one first), never from the request.

use std::collections::BTreeSet;
use std::time::Duration;

use yiciban_transport::identity::NodeIdentity;

use crate::catalog::Tier;
use crate::enrol::{EnrolError, TlsDir, TokenRecord};
use crate::message::Msg;
use crate::node::{Actor, Node, NodeError};
use crate::store::Store;
use crate::user_dir::Directory;
use crate::users::{self, Role, User};

/// The roles a node's directory may give.
pub const DIRECTORY_ROLES: [Role; 3] = [Role::Clerk, Role::Reviewer, Role::Approver];
/// The longest display name, in characters.
const MAX_DISPLAY_CHARS: usize = 40;
/// The longest a token may stay valid, in days.
pub const MAX_TOKEN_DAYS: u64 = 90;

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn county_only(here: Tier) -> Result<(), NodeError> {
    if here == Tier::County {
        Ok(())
    } else {
        Err(NodeError::Forbidden(Msg::new(
            "用户目录、注册令牌和吊销只在县级节点管理",
            "user directories, enrolment tokens and revocation are managed at the county",
        )))
    }
}

/// A new user of a node's directory, as typed.
#[derive(Debug, Clone, Default)]
pub struct NewDirectoryUser {
    pub username: String,
    /// The username when empty.
    pub display_name: String,
    pub role: String,
    pub password: String,
}

/// A change to one user of a directory.
#[derive(Debug, Clone)]
pub enum DirectoryChange {
    /// A new password (checked and hashed here).
    Password(String),
    /// Disabled (`true`) or enabled again (`false`).
    Disabled(bool),
}

/// The role and division of `node` from the tokens issued here (the used one first).
pub fn node_identity(store: &Store, node: &str) -> Result<(Tier, String), NodeError> {
    let tokens = store.tokens()?;
    let Some(record) = tokens
        .iter()
        .filter(|t| t.node_id == node)
        .max_by_key(|t| t.used_ms.is_some())
    else {
        return Err(NodeError::NotFound(Msg::new(
            format!("本县未给节点 {node} 签发过注册令牌"),
            format!("no enrolment token was issued here for node {node:?}"),
        )));
    };
    let role = Tier::parse(&record.role)
        .filter(|r| *r != Tier::County)
        .ok_or_else(|| {
            NodeError::BadRequest(Msg::new(
                format!("节点 {node} 的令牌层级无效：{}", record.role),
                format!("the token of {node} has an unknown role {:?}", record.role),
            ))
        })?;
    Ok((role, record.division.clone()))
}

fn parse_directory_role(role: &str) -> Result<Role, NodeError> {
    Role::parse(role)
        .filter(|r| DIRECTORY_ROLES.contains(r))
        .ok_or_else(|| {
            NodeError::BadRequest(Msg::new(
                "角色应为受理员、审核员或审批员",
                format!("role {role:?}: a node's user is a clerk, reviewer or approver"),
            ))
        })
}

fn hash(password: &str) -> Result<String, NodeError> {
    users::hash_password(password).map_err(|e| {
        NodeError::BadRequest(Msg::new(
            format!("密码不符合要求：至少{}位", users::MIN_PASSWORD_CHARS),
            e.to_string(),
        ))
    })
}

/// At the county (`here`): adds a user to the directory of `node` on behalf of `by`; refused
/// when the directory already has that username.
pub async fn add_directory_user(
    store: &Store,
    here: Tier,
    node: &str,
    new: &NewDirectoryUser,
    by: &str,
) -> Result<User, NodeError> {
    county_only(here)?;
    let (tier, division) = node_identity(store, node)?;
    if !users::valid_username(&new.username) {
        return Err(NodeError::BadRequest(Msg::new(
            "用户名应为2到32位字母、数字、点、下划线或连字符",
            "username must be 2-32 ASCII letters, digits, '.', '_' or '-'",
        )));
    }
    let role = parse_directory_role(&new.role)?;
    let display = new.display_name.trim();
    if display.chars().count() > MAX_DISPLAY_CHARS {
        return Err(NodeError::BadRequest(Msg::new(
            format!("姓名最多{MAX_DISPLAY_CHARS}个字"),
            format!("the display name has at most {MAX_DISPLAY_CHARS} characters"),
        )));
    }
    let held = store.user_dir(node)?;
    if held
        .iter()
        .flat_map(|d| &d.users)
        .any(|u| u.username == new.username)
    {
        return Err(NodeError::Conflict(Msg::new(
            format!("节点 {node} 的用户目录中已有用户 {}", new.username),
            format!("the directory of {node} already has user {}", new.username),
        )));
    }
    let user = User {
        username: new.username.clone(),
        display_name: if display.is_empty() {
            new.username.clone()
        } else {
            display.to_string()
        },
        role,
        password_hash: hash(&new.password)?,
        disabled: false,
    };
    store
        .put_directory_user(node, tier, &division, user.clone(), by)
        .await?;
    Ok(user)
}

/// At the county (`here`): changes one user of `node`'s directory on behalf of `by`.
pub async fn change_directory_user(
    store: &Store,
    here: Tier,
    node: &str,
    username: &str,
    change: DirectoryChange,
    by: &str,
) -> Result<User, NodeError> {
    county_only(here)?;
    let (tier, division) = node_identity(store, node)?;
    let Some(mut user) = store
        .user_dir(node)?
        .and_then(|d| d.users.into_iter().find(|u| u.username == username))
    else {
        return Err(NodeError::NotFound(Msg::new(
            format!("节点 {node} 的用户目录中没有用户 {username}"),
            format!("the directory of {node} has no user {username:?}"),
        )));
    };
    match change {
        DirectoryChange::Password(p) => user.password_hash = hash(&p)?,
        DirectoryChange::Disabled(d) => user.disabled = d,
    }
    store
        .put_directory_user(node, tier, &division, user.clone(), by)
        .await?;
    Ok(user)
}

/// At the county (`here`): a one-time enrolment token for a `role` node (village or town)
/// `node_id` of `division`, valid `days` days, issued by `by`; returns `ID.SECRET`.
pub async fn issue_token(
    store: &Store,
    here: Tier,
    node_id: &str,
    role: &str,
    division: &str,
    days: u64,
    by: &str,
) -> Result<String, NodeError> {
    county_only(here)?;
    if !matches!(role, "village" | "town") {
        return Err(NodeError::BadRequest(Msg::new(
            "令牌只发给村级或镇级节点",
            format!("a token is for a village or a town node, not {role:?}"),
        )));
    }
    if !(1..=MAX_TOKEN_DAYS).contains(&days) {
        return Err(NodeError::BadRequest(Msg::new(
            format!("有效期应为1到{MAX_TOKEN_DAYS}天"),
            format!("a token is valid for 1 to {MAX_TOKEN_DAYS} days"),
        )));
    }
    let identity = NodeIdentity::new(node_id, role, division).map_err(|e| {
        NodeError::BadRequest(Msg::new(
            format!("节点标识或区划代码无效：{e}"),
            format!("node id or division: {e}"),
        ))
    })?;
    let valid = Duration::from_secs(days.saturating_mul(24 * 3600));
    crate::enrol::create_token_by(store, &identity, valid, by)
        .await
        .map_err(|e| match e {
            EnrolError::Store(e) => NodeError::Store(e),
            other => NodeError::BadRequest(Msg::new(
                format!("令牌无法签发：{other}"),
                other.to_string(),
            )),
        })
}

/// Where a token stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenState {
    /// Not used yet and still valid.
    Pending,
    /// A node enrolled with it.
    Used,
    /// Not used in time.
    Expired,
}

/// A token as the console lists it: never its secret.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenView {
    pub node_id: String,
    pub role: String,
    pub division: String,
    pub expires_ms: u64,
    pub used_ms: Option<u64>,
    pub state: TokenState,
    /// Whether the node's certificates were revoked.
    pub revoked: bool,
}

/// Every token issued here, the newest first (by expiry), with its state.
pub fn tokens(store: &Store, revoked: &BTreeSet<String>) -> Result<Vec<TokenView>, NodeError> {
    let now = unix_ms();
    let mut out: Vec<TokenView> = store
        .tokens()?
        .into_iter()
        .map(|t: TokenRecord| TokenView {
            state: match t.used_ms {
                Some(_) => TokenState::Used,
                None if t.expires_ms <= now => TokenState::Expired,
                None => TokenState::Pending,
            },
            revoked: revoked.contains(&t.node_id),
            node_id: t.node_id,
            role: t.role,
            division: t.division,
            expires_ms: t.expires_ms,
            used_ms: t.used_ms,
        })
        .collect();
    out.sort_by_key(|t| std::cmp::Reverse(t.expires_ms));
    Ok(out)
}

fn enrol_error(e: EnrolError) -> NodeError {
    match e {
        EnrolError::Store(e) => NodeError::Store(e),
        EnrolError::Refused(why) => NodeError::NotFound(Msg::new(
            format!("无法吊销：{why}"),
            format!("cannot revoke: {why}"),
        )),
        other => NodeError::BadRequest(Msg::new(
            format!("证书文件出错：{other}"),
            other.to_string(),
        )),
    }
}

/// The county's console and API on a running county node.
impl Node {
    /// The directory of `node` as the county holds it (`None`: no user yet); an unknown node
    /// (no token issued here) is not found.
    pub fn directory(&self, node: &str) -> Result<(Tier, String, Option<Directory>), NodeError> {
        county_only(self.tier())?;
        let (tier, division) = node_identity(&self.store, node)?;
        Ok((tier, division, self.store.user_dir(node)?))
    }

    /// Adds a user to `node`'s directory; it replicates to that node on its next sync.
    pub async fn add_directory_user(
        &self,
        node: &str,
        new: &NewDirectoryUser,
        actor: &Actor,
    ) -> Result<User, NodeError> {
        add_directory_user(&self.store, self.tier(), node, new, &actor.username).await
    }

    /// Resets a password, disables or enables a user of `node`'s directory.
    pub async fn change_directory_user(
        &self,
        node: &str,
        username: &str,
        change: DirectoryChange,
        actor: &Actor,
    ) -> Result<User, NodeError> {
        change_directory_user(
            &self.store,
            self.tier(),
            node,
            username,
            change,
            &actor.username,
        )
        .await
    }

    /// Issues a one-time enrolment token (shown once: only its HMAC key is kept).
    pub async fn issue_token(
        &self,
        node_id: &str,
        role: &str,
        division: &str,
        days: u64,
        actor: &Actor,
    ) -> Result<String, NodeError> {
        issue_token(
            &self.store,
            self.tier(),
            node_id,
            role,
            division,
            days,
            &actor.username,
        )
        .await
    }

    /// Every token issued here, with its state and whether its node is revoked.
    pub fn tokens(&self) -> Result<Vec<TokenView>, NodeError> {
        county_only(self.tier())?;
        tokens(&self.store, &self.revoked_nodes())
    }

    /// The nodes whose certificates this county revoked (empty elsewhere, or when unreadable).
    pub fn revoked_nodes(&self) -> BTreeSet<String> {
        if self.tier() != Tier::County {
            return BTreeSet::new();
        }
        TlsDir::new(self.config.tls_dir())
            .revoked_nodes()
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "revoked.tsv unreadable");
                BTreeSet::new()
            })
    }

    /// Revokes every certificate issued to `node_id`, as `yiciban revoke` does: `crl.der`
    /// is rewritten and the running county refuses the node's next handshake within a second
    /// or two (`crate::sync_engine::watch_revocations`). Written to the audit trail. Returns
    /// how many certificates were revoked now (0: all were already).
    pub async fn revoke_node(&self, node_id: &str, actor: &Actor) -> Result<usize, NodeError> {
        county_only(self.tier())?;
        let n = TlsDir::new(self.config.tls_dir())
            .revoke(node_id)
            .map_err(enrol_error)?;
        self.store
            .audit_note(
                &actor.username,
                "node.revoked",
                &format!("{node_id}: {n} certificate(s)"),
            )
            .await?;
        tracing::warn!(node = %node_id, certificates = n, by = %actor.username, "node revoked");
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_user(name: &str, role: &str) -> NewDirectoryUser {
        NewDirectoryUser {
            username: name.into(),
            display_name: String::new(),
            role: role.into(),
            password: "password-1".into(),
        }
    }

    #[tokio::test]
    async fn directory_users_need_a_known_node_a_staff_role_and_a_new_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("c.redb"), 8, 1 << 20)
            .unwrap()
            .for_node("county");
        let c = Tier::County;
        let li = new_user("li", "clerk");
        assert!(matches!(
            add_directory_user(&store, c, "v1", &li, "sec").await,
            Err(NodeError::NotFound(_))
        ));
        issue_token(&store, c, "v1", "village", "430181101001", 7, "sec")
            .await
            .unwrap();
        assert!(matches!(
            issue_token(&store, c, "v2", "county", "430181101001", 7, "sec").await,
            Err(NodeError::BadRequest(_))
        ));
        assert!(matches!(
            add_directory_user(&store, Tier::Town, "v1", &li, "sec").await,
            Err(NodeError::Forbidden(_))
        ));
        assert!(matches!(
            add_directory_user(&store, c, "v1", &new_user("x", "security_admin"), "sec").await,
            Err(NodeError::BadRequest(_))
        ));
        let user = add_directory_user(&store, c, "v1", &li, "sec")
            .await
            .unwrap();
        assert_eq!(user.display_name, "li");
        assert!(matches!(
            add_directory_user(&store, c, "v1", &li, "sec").await,
            Err(NodeError::Conflict(_))
        ));
        change_directory_user(
            &store,
            c,
            "v1",
            "li",
            DirectoryChange::Disabled(true),
            "sec",
        )
        .await
        .unwrap();
        let held = store.user_dir("v1").unwrap().unwrap();
        assert!(held.users[0].disabled);
        assert_eq!(held.division, "430181101001");
        assert!(matches!(
            change_directory_user(
                &store,
                c,
                "v1",
                "wang",
                DirectoryChange::Disabled(true),
                "s"
            )
            .await,
            Err(NodeError::NotFound(_))
        ));
        let listed = tokens(&store, &BTreeSet::new()).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].state, TokenState::Pending);
    }
}
