//! The user directory (DESIGN.md §10): the county keeps the users of each enrolled node in a
//! document `users:{node}`, and it replicates down to that node only, so its clerks log in
//! with no link at all.
//!
//! The county writes it (`yiciban user add --for-node`, `user reset-password`, `user
//! disable`); it goes into the scoped feed of the node's own village or town (the division
//! and tier the document names), never to another node, and is in the global feed only at the
//! node that receives it. A node takes changes to it only from a peer whose certificate says
//! county, only for its own id, and on merge upserts every user it holds into `users-1` in
//! the same write transaction: a directory user replaces a local user of the same name.
//!
//! Automerge schema: root map `{kind: "users", schema: 1, node, role, division, users: MAP}`
//! where `MAP` is username → the JSON of a [`crate::users::User`] (with its Argon2id hash).

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjType, ReadDoc, ScalarValue, Value};

use crate::case_doc::DocError;
use crate::catalog::Tier;
use crate::users::{User, valid_username};

const PREFIX: &str = "users:";
/// Users one directory may hold.
pub const MAX_USERS: usize = 1_000;
/// The longest user entry accepted, in bytes.
const MAX_USER_BYTES: usize = 4 * 1024;

/// Whether `doc_id` names a user directory.
pub fn is_user_dir_doc(doc_id: &str) -> bool {
    doc_id.starts_with(PREFIX)
}

/// The id of `node`'s directory.
pub fn doc_id(node: &str) -> String {
    format!("{PREFIX}{node}")
}

/// One node's directory as read from its document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directory {
    pub node: String,
    pub role: Tier,
    pub division: String,
    /// By username.
    pub users: Vec<User>,
}

impl Directory {
    /// The scope whose feed carries this directory: the node's own village or town.
    pub fn scope(&self) -> crate::scope::Scope {
        crate::scope::Scope::of(self.role, &self.division)
    }
}

fn malformed(reason: impl Into<String>) -> DocError {
    DocError::Malformed {
        field: "users".into(),
        reason: reason.into(),
    }
}

/// The directory a document holds, checked and bounded.
pub fn read(doc: &AutoCommit) -> Result<Directory, DocError> {
    let text = |key: &str| -> Result<String, DocError> {
        match doc.get(automerge::ROOT, key)? {
            Some((Value::Scalar(s), _)) => match s.as_ref() {
                ScalarValue::Str(t) => Ok(t.to_string()),
                _ => Err(malformed(format!("{key} is not text"))),
            },
            _ => Err(malformed(format!("{key} is missing"))),
        }
    };
    if text("kind")? != "users" {
        return Err(malformed("not a user directory"));
    }
    let node = text("node")?;
    let role = Tier::parse(&text("role")?).ok_or_else(|| malformed("unknown role"))?;
    let division = text("division")?;
    let Some((Value::Object(ObjType::Map), map)) = doc.get(automerge::ROOT, "users")? else {
        return Err(malformed("users is not a map"));
    };
    let keys: Vec<String> = doc.keys(&map).collect();
    if keys.len() > MAX_USERS {
        return Err(malformed(format!("more than {MAX_USERS} users")));
    }
    let mut users = Vec::with_capacity(keys.len());
    for name in keys {
        let Some((Value::Scalar(s), _)) = doc.get(&map, name.as_str())? else {
            return Err(malformed(format!("user {name} is not text")));
        };
        let ScalarValue::Str(json) = s.as_ref() else {
            return Err(malformed(format!("user {name} is not text")));
        };
        if json.len() > MAX_USER_BYTES {
            return Err(malformed(format!("user {name} is too long")));
        }
        let user: User =
            serde_json::from_str(json).map_err(|e| malformed(format!("user {name}: {e}")))?;
        if user.username != name || !valid_username(&name) {
            return Err(malformed(format!("user {name} names {}", user.username)));
        }
        users.push(user);
    }
    Ok(Directory {
        node,
        role,
        division,
        users,
    })
}

/// `existing` (saved bytes, if any; else a new directory of `node`, a `role` node of
/// `division`) with `user` added or replaced; the document saved again.
pub fn put_user(
    existing: Option<&[u8]>,
    node: &str,
    role: Tier,
    division: &str,
    user: &User,
    actor: automerge::ActorId,
) -> Result<Vec<u8>, DocError> {
    if !valid_username(&user.username) {
        return Err(malformed(format!("username {:?}", user.username)));
    }
    let json = serde_json::to_string(user).map_err(|e| malformed(e.to_string()))?;
    let mut doc = match existing {
        Some(bytes) => AutoCommit::load(bytes)?,
        None => {
            let mut doc = AutoCommit::new();
            doc.put(automerge::ROOT, "kind", "users")?;
            doc.put(automerge::ROOT, "schema", 1u64)?;
            doc.put(automerge::ROOT, "node", node)?;
            doc.put(automerge::ROOT, "role", role.as_str())?;
            doc.put(automerge::ROOT, "division", division)?;
            doc.put_object(automerge::ROOT, "users", ObjType::Map)?;
            doc
        }
    }
    .with_actor(actor);
    let held = read(&doc)?;
    if held.node != node {
        return Err(malformed(format!("the directory is {}'s", held.node)));
    }
    if held.users.len() >= MAX_USERS && !held.users.iter().any(|u| u.username == user.username) {
        return Err(malformed(format!("more than {MAX_USERS} users")));
    }
    let Some((Value::Object(ObjType::Map), map)) = doc.get(automerge::ROOT, "users")? else {
        return Err(malformed("users is not a map"));
    };
    doc.put(&map, user.username.as_str(), json)?;
    doc.commit();
    Ok(doc.save_nocompress())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::Role;

    fn user(name: &str, disabled: bool) -> User {
        User {
            username: name.into(),
            display_name: name.into(),
            role: Role::Clerk,
            password_hash: "$argon2id$x".into(),
            disabled,
        }
    }

    #[test]
    fn a_directory_round_trips_and_a_put_replaces() {
        let actor = crate::case_doc::node_actor("county");
        let id = "430181101001";
        let bytes = put_user(
            None,
            "village-1",
            Tier::Village,
            id,
            &user("li", false),
            actor.clone(),
        )
        .unwrap();
        let bytes = put_user(
            Some(&bytes),
            "village-1",
            Tier::Village,
            id,
            &user("li", true),
            actor.clone(),
        )
        .unwrap();
        let dir = read(&AutoCommit::load(&bytes).unwrap()).unwrap();
        assert_eq!(dir.node, "village-1");
        assert_eq!(dir.users, vec![user("li", true)]);
        assert_eq!(dir.scope(), crate::scope::Scope::Village(id.into()));
        // Another node's directory is not written into.
        assert!(
            put_user(
                Some(&bytes),
                "village-2",
                Tier::Village,
                id,
                &user("x1", false),
                actor.clone()
            )
            .is_err()
        );
        assert!(
            put_user(
                None,
                "v",
                Tier::Village,
                id,
                &user("bad name", false),
                actor
            )
            .is_err()
        );
    }

    fn all_changes(bytes: &[u8]) -> Vec<Vec<u8>> {
        AutoCommit::load(bytes)
            .unwrap()
            .get_changes(&[])
            .into_iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect()
    }

    #[tokio::test]
    async fn a_node_takes_its_own_directory_from_the_county_only_and_upserts_its_users() {
        use crate::scope::{Scope, ScopedStore};
        use yiciban_sync::store::ReplicaStore;
        let dir = tempfile::tempdir().unwrap();
        let open = |name: &str, node: &str| {
            crate::store::Store::open(&dir.path().join(name), 8, 1 << 20)
                .unwrap()
                .for_node(node)
        };
        let county = open("c.redb", "county");
        let village = open("v.redb", "village-1");
        let other = open("o.redb", "village-2");
        let div = "430181101001";
        county
            .put_directory_user("village-1", Tier::Village, div, user("li", false), "admin")
            .await
            .unwrap();
        let id = doc_id("village-1");
        let changes = all_changes(&county.user_doc_bytes(&id).unwrap().unwrap());

        // In the village's scoped feed, visible to it; not to another village or a town.
        let mine = Scope::Village(div.into());
        let view = ScopedStore {
            store: &county,
            scope: &mine,
        };
        assert!(
            view.feed_since(0, 10)
                .unwrap()
                .iter()
                .any(|e| e.doc_id == id)
        );
        assert!(view.doc_heads(&id).unwrap().is_some());
        for scope in [
            Scope::Village("430181101002".into()),
            Scope::Town(div.into()),
        ] {
            let view = ScopedStore {
                store: &county,
                scope: &scope,
            };
            assert!(
                view.feed_since(0, 10)
                    .unwrap()
                    .iter()
                    .all(|e| e.doc_id != id)
            );
            assert!(view.doc_heads(&id).unwrap().is_none());
        }

        // A local user of the same name is replaced by the directory's.
        let mut local = user("li", false);
        local.role = Role::Approver;
        village.put_user(local, false, "(console)").await.unwrap();
        // Not from the county, or not this node's own: refused, nothing written.
        assert!(
            village
                .apply_user_dir_changes("village-2", false, &id, changes.clone())
                .await
                .is_err()
        );
        assert!(
            other
                .apply_user_dir_changes("county", true, &id, changes.clone())
                .await
                .is_err()
        );
        assert!(other.user("li").unwrap().is_none());
        assert_eq!(village.user("li").unwrap().unwrap().role, Role::Approver);
        village
            .apply_user_dir_changes("county", true, &id, changes)
            .await
            .unwrap();
        assert_eq!(village.user("li").unwrap().unwrap(), user("li", false));

        // Disabled at the county: disabled at the village.
        county
            .put_directory_user("village-1", Tier::Village, div, user("li", true), "admin")
            .await
            .unwrap();
        let changes = all_changes(&county.user_doc_bytes(&id).unwrap().unwrap());
        village
            .apply_user_dir_changes("county", true, &id, changes)
            .await
            .unwrap();
        assert!(village.user("li").unwrap().unwrap().disabled);
        assert_eq!(
            village.user_dir("village-1").unwrap().unwrap().users.len(),
            1
        );
    }

    #[test]
    fn an_entry_under_another_name_is_refused() {
        let mut doc = AutoCommit::new();
        doc.put(automerge::ROOT, "kind", "users").unwrap();
        doc.put(automerge::ROOT, "node", "v").unwrap();
        doc.put(automerge::ROOT, "role", "village").unwrap();
        doc.put(automerge::ROOT, "division", "430181101001")
            .unwrap();
        let map = doc
            .put_object(automerge::ROOT, "users", ObjType::Map)
            .unwrap();
        doc.put(
            &map,
            "li",
            serde_json::to_string(&user("admin", false)).unwrap(),
        )
        .unwrap();
        assert!(read(&doc).is_err());
    }
}
