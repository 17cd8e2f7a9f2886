//! The county's registry of nodes (`county:nodes`): every node the county certified, with its
//! role, division, public keys and revocation, so any node can tell who signed an event or a
//! seal and whether that node may have done it — offline, without asking the county.
//!
//! It is a county-wide document ([`crate::county_doc`]): in every scope's feed, written only
//! by the county. The county lists a node when it enrols it and whenever the node connects
//! with a certificate the TLS layer verified (so nodes enrolled by an older build are listed
//! at their next link), lists itself at start, and marks a node revoked with the time of the
//! revocation.
//!
//! Automerge schema: root map `{kind: "nodes", schema: 1, nodes: {NODE_ID: JSON text}}`, one
//! key a node, so listing a node or revoking one is a change of one entry.

use std::collections::BTreeMap;

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjType, ReadDoc, ScalarValueRef, ValueRef};
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::case_doc::DocError;
use crate::catalog::Tier;

/// The id of the registry document.
pub const REGISTRY_DOC: &str = "county:nodes";

/// Nodes a registry holds at most: a county's villages, towns and itself, with room.
const MAX_NODES: usize = 20_000;
/// Keys a node may have had (one an enrolment).
const MAX_KEYS: usize = 16;
/// Longest entry, in bytes.
const MAX_ENTRY_BYTES: usize = 8 * 1024;

/// One key a node was certified with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeKey {
    /// The certificate's serial number, hex.
    pub serial: String,
    /// The Ed25519 public key, base64.
    pub public_key: String,
    /// When the certificate expires (Unix ms).
    pub not_after_ms: u64,
}

/// One certified node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    pub id: String,
    pub role: Tier,
    pub division: String,
    pub keys: Vec<NodeKey>,
    /// When the county first listed the node (Unix ms): its events from then on must be
    /// signed; unsigned ones before count only as written by the node itself.
    pub listed_ms: u64,
    /// When the county revoked the node (Unix ms); nothing it signs after counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_ms: Option<u64>,
}

impl NodeEntry {
    /// The node's key with certificate serial `serial`, decoded.
    pub fn key(&self, serial: &str) -> Option<Vec<u8>> {
        let key = self.keys.iter().find(|k| k.serial == serial)?;
        base64::engine::general_purpose::STANDARD
            .decode(&key.public_key)
            .ok()
    }
}

/// Every node the county certified, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    nodes: BTreeMap<String, NodeEntry>,
}

fn malformed(reason: impl Into<String>) -> DocError {
    DocError::Malformed {
        field: "nodes".into(),
        reason: reason.into(),
    }
}

impl Registry {
    pub fn get(&self, id: &str) -> Option<&NodeEntry> {
        self.nodes.get(id)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn nodes(&self) -> impl Iterator<Item = &NodeEntry> {
        self.nodes.values()
    }

    /// The registry a document holds, checked: every entry under its own id, bounded.
    pub fn read(doc: &AutoCommit) -> Result<Self, DocError> {
        let kind = doc.get(automerge::ROOT, "kind")?;
        let is_registry = matches!(
            &kind,
            Some((automerge::Value::Scalar(s), _))
                if matches!(s.as_ref(), automerge::ScalarValue::Str(t) if t == "nodes")
        );
        if !is_registry {
            return Err(malformed("not a node registry"));
        }
        let Some((automerge::Value::Object(ObjType::Map), map)) =
            doc.get(automerge::ROOT, "nodes")?
        else {
            return Err(malformed("nodes is not a map"));
        };
        let mut nodes = BTreeMap::new();
        for item in doc.map_range(&map, ..) {
            if nodes.len() >= MAX_NODES {
                return Err(malformed("too many nodes"));
            }
            let ValueRef::Scalar(ScalarValueRef::Str(text)) = &item.value else {
                return Err(malformed(format!("entry {} is not text", item.key)));
            };
            if text.len() > MAX_ENTRY_BYTES {
                return Err(malformed(format!("entry {} is too long", item.key)));
            }
            let entry: NodeEntry =
                serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
            if entry.id != item.key || entry.keys.len() > MAX_KEYS {
                return Err(malformed(format!("entry {} is not its own", item.key)));
            }
            nodes.insert(entry.id.clone(), entry);
        }
        Ok(Self { nodes })
    }
}

/// The changes that make the registry document (`existing`, its saved bytes) hold `entry`;
/// `None` when it already does.
pub fn put_entry(
    existing: Option<&[u8]>,
    entry: &NodeEntry,
    actor: automerge::ActorId,
) -> Result<Option<Vec<Vec<u8>>>, DocError> {
    let mut doc = match existing {
        Some(bytes) => AutoCommit::load(bytes)?,
        None => AutoCommit::new(),
    }
    .with_actor(actor);
    let held = Registry::read(&doc).ok();
    if held.as_ref().and_then(|r| r.get(&entry.id)) == Some(entry) {
        return Ok(None);
    }
    let before = doc.get_heads();
    let map = match (held, doc.get(automerge::ROOT, "nodes")?) {
        (Some(_), Some((automerge::Value::Object(ObjType::Map), map))) => map,
        _ => {
            doc.put(automerge::ROOT, "kind", "nodes")?;
            doc.put(automerge::ROOT, "schema", 1u64)?;
            doc.put_object(automerge::ROOT, "nodes", ObjType::Map)?
        }
    };
    let text = serde_json::to_string(entry).map_err(|e| malformed(e.to_string()))?;
    doc.put(&map, entry.id.as_str(), text)?;
    doc.commit();
    Ok(Some(
        doc.get_changes(&before)
            .into_iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect(),
    ))
}

/// The entry for a node certificate the county issued or the TLS layer verified: `held`
/// (the node's entry so far, if any) with this certificate's key added.
pub fn entry_for_cert(
    held: Option<&NodeEntry>,
    cert_der: &[u8],
    now_ms: u64,
) -> Result<NodeEntry, String> {
    use yiciban_transport::identity;
    let who = identity::peer_identity(cert_der).map_err(|e| e.to_string())?;
    let role = Tier::parse(&who.role).ok_or_else(|| format!("unknown role {}", who.role))?;
    let key = NodeKey {
        serial: hex::encode(identity::cert_serial(cert_der).map_err(|e| e.to_string())?),
        public_key: base64::engine::general_purpose::STANDARD
            .encode(identity::cert_public_key(cert_der).map_err(|e| e.to_string())?),
        not_after_ms: identity::cert_not_after_ms(cert_der).map_err(|e| e.to_string())?,
    };
    let mut entry = held.cloned().unwrap_or(NodeEntry {
        id: who.node_id.clone(),
        role,
        division: who.division.clone(),
        keys: Vec::new(),
        listed_ms: now_ms,
        revoked_ms: None,
    });
    entry.role = role;
    entry.division = who.division;
    if !entry.keys.iter().any(|k| k.serial == key.serial) {
        entry.keys.push(key);
        let skip = entry.keys.len().saturating_sub(MAX_KEYS);
        entry.keys.drain(..skip);
    }
    Ok(entry)
}

/// Lists `entry` in the registry this node (the county, `county_id`) publishes; `false` when
/// it already held it.
pub async fn list(
    store: &crate::store::Store,
    entry: &NodeEntry,
    county_id: &str,
) -> Result<bool, crate::store::StoreError> {
    if store.registry().get(&entry.id) == Some(entry) {
        return Ok(false);
    }
    // Nodes enrolling or connecting together list themselves at once: the store publishes
    // one change at a time.
    store
        .publish_county_doc(REGISTRY_DOC, |existing| {
            Ok(put_entry(
                existing,
                entry,
                crate::case_doc::node_actor(county_id),
            )?)
        })
        .await
}

/// Lists the node a certificate the county issued or the TLS layer verified names.
pub async fn list_cert(
    store: &crate::store::Store,
    cert_der: &[u8],
    county_id: &str,
) -> Result<bool, crate::store::StoreError> {
    let now_ms = crate::store::quarantine::now_ms();
    let who = yiciban_transport::identity::peer_identity(cert_der)
        .map_err(|e| crate::store::StoreError::Refused(e.to_string()))?;
    let registry = store.registry();
    let entry = entry_for_cert(registry.get(&who.node_id), cert_der, now_ms)
        .map_err(crate::store::StoreError::Refused)?;
    list(store, &entry, county_id).await
}

/// Marks node `node_id` revoked at `at_ms` (it stays listed, so what it signed before
/// still verifies).
pub async fn mark_revoked(
    store: &crate::store::Store,
    node_id: &str,
    at_ms: u64,
    county_id: &str,
) -> Result<bool, crate::store::StoreError> {
    let registry = store.registry();
    let Some(held) = registry.get(node_id) else {
        return Ok(false);
    };
    if held.revoked_ms.is_some() {
        return Ok(false);
    }
    let mut entry = held.clone();
    entry.revoked_ms = Some(at_ms);
    list(store, &entry, county_id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> NodeEntry {
        NodeEntry {
            id: id.into(),
            role: Tier::Village,
            division: "430181101001".into(),
            keys: vec![NodeKey {
                serial: "01".into(),
                public_key: base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
                not_after_ms: 1,
            }],
            listed_ms: 5,
            revoked_ms: None,
        }
    }

    fn apply(doc: &mut AutoCommit, changes: Vec<Vec<u8>>) {
        let parsed = changes
            .into_iter()
            .map(|c| automerge::Change::from_bytes(c).unwrap())
            .collect::<Vec<_>>();
        doc.apply_changes(parsed).unwrap();
    }

    #[test]
    fn entries_are_added_one_key_at_a_time_and_read_back() {
        let actor = crate::case_doc::node_actor("county");
        let first = put_entry(None, &entry("v1"), actor.clone())
            .unwrap()
            .unwrap();
        let mut replica = AutoCommit::new();
        apply(&mut replica, first);
        let saved = replica.save();
        assert!(
            put_entry(Some(&saved), &entry("v1"), actor.clone())
                .unwrap()
                .is_none()
        );
        let mut revoked = entry("v1");
        revoked.revoked_ms = Some(9);
        apply(
            &mut replica,
            put_entry(Some(&saved), &revoked, actor.clone())
                .unwrap()
                .unwrap(),
        );
        let saved = replica.save();
        apply(
            &mut replica,
            put_entry(Some(&saved), &entry("v2"), actor)
                .unwrap()
                .unwrap(),
        );
        let registry = Registry::read(&replica).unwrap();
        assert_eq!(registry.len(), 2);
        assert_eq!(registry.get("v1").unwrap().revoked_ms, Some(9));
        assert_eq!(
            registry.get("v2").unwrap().key("01").unwrap(),
            vec![7u8; 32]
        );
    }

    #[test]
    fn an_entry_under_another_id_is_refused() {
        let mut doc = AutoCommit::new();
        doc.put(automerge::ROOT, "kind", "nodes").unwrap();
        let map = doc
            .put_object(automerge::ROOT, "nodes", ObjType::Map)
            .unwrap();
        doc.put(&map, "v1", serde_json::to_string(&entry("v2")).unwrap())
            .unwrap();
        assert!(Registry::read(&doc).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn nodes_listed_at_once_are_all_listed() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("node.redb"), 64, 1024).unwrap();
        let mut tasks = Vec::new();
        for i in 0..24 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                list(&store, &entry(&format!("v{i}")), "county").await
            }));
        }
        for t in tasks {
            assert!(t.await.unwrap().unwrap());
        }
        let registry = store.registry();
        for i in 0..24 {
            assert!(registry.get(&format!("v{i}")).is_some(), "v{i} is missing");
        }
        assert!(!list(&store, &entry("v3"), "county").await.unwrap());
    }
}
