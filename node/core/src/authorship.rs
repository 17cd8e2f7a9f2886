//! Who wrote an event, and whether that node may have: the check every node makes before an
//! event counts in the fold.
//!
//! An enrolled node signs every event it records with its node key (Ed25519): the signature
//! covers the case id and the event (every field but the signature, in canonical JSON), so
//! an event cannot be moved to another case or changed. The signature of the `accepted`
//! event also covers the digest of the filing ([`filing_digest`]: the case's id, receipt
//! number, item, filing node, route, divisions and application), so the case's scope is the
//! one its village signed. The digest is not stored: every checker computes it from the
//! case as it reads it.
//!
//! [`screen`] takes a case as read from its document and moves every event that does not
//! count into [`Case::forged`] with the reason, so the fold, the projections and every page
//! see only the rest. An event counts when, against the county's registry of nodes
//! ([`crate::registry`]):
//!
//! - it is signed by the key of the node it names, and that node was not revoked before the
//!   event's time; or, unsigned, it was written by that node's own Automerge actor before the
//!   county listed the node (events of older builds and of nodes not enrolled yet);
//! - it claims the tier the node is certified with, and the node's division is the case's
//!   at that tier (a town acts only on its own villages' cases);
//! - its kind is one that tier records (a village never passes a review; only the county
//!   urges); an `accepted` event is the filing village's and names the filing as it is.
//!
//! A node the registry does not list yet makes its signed events wait as not counted; they
//! count once the registry lists it. A node holding no registry at all (running alone, or
//! before its first link brought one) has nothing to judge by and counts every event: what
//! reaches it came from the county, which checked it at the first hop.

use std::collections::HashMap;
use std::sync::Mutex;

use automerge::ActorId;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::case_doc::{Case, node_actor};
use crate::catalog::Tier;
use crate::event::{Event, EventKind};
use crate::message::Msg;
use crate::registry::Registry;

/// The signature scheme events carry today; a field, so SM2 can follow.
pub const ED25519: &str = "ed25519";

/// What a signed message starts with, so an event signature is never anything else's.
const CONTEXT: &[u8] = b"yiciban-event-1\0";

/// An event's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventSig {
    pub scheme: String,
    /// The serial (hex) of the certificate whose key signed.
    pub key: String,
    /// The signature, base64.
    pub value: String,
}

/// An event that does not count, kept with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forged {
    pub event: Event,
    /// Why, in Chinese.
    pub reason: String,
    pub reason_en: String,
}

/// Writes `value` as JSON with every object's keys sorted, at every depth: the same bytes
/// for the same value whatever order the fields were written in.
fn write_canonical(value: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    // Writing into a `Vec` cannot fail, so the writers' results carry nothing.
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let _ = serde_json::to_writer(&mut *out, key);
                out.push(b':');
                write_canonical(item, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

/// The bytes an event's signature covers: the context, the case id, the event without its
/// signature and, for the `accepted` event, `filing`: the case's [`filing_digest`].
pub fn signed_bytes(case_id: &str, filing: Option<&str>, event: &Event) -> Vec<u8> {
    let mut value = serde_json::to_value(event).unwrap_or_default();
    if let serde_json::Value::Object(map) = &mut value {
        map.remove("sig");
    }
    let mut msg = Vec::with_capacity(CONTEXT.len() + case_id.len() + 512);
    msg.extend_from_slice(CONTEXT);
    msg.extend_from_slice(case_id.as_bytes());
    msg.push(0);
    write_canonical(&value, &mut msg);
    if let Some(filing) = filing {
        msg.push(0);
        msg.extend_from_slice(filing.as_bytes());
    }
    msg
}

/// The digest (hex) of what a case was filed with: what its `accepted` event signs.
pub fn filing_digest(case: &Case) -> String {
    let filing = serde_json::json!({
        "id": case.id,
        "receipt_no": case.receipt_no,
        "item_code": case.item_code,
        "item_name": case.item_name,
        "node": case.node,
        "route": case.route,
        "division": case.division,
        "applicant": case.applicant,
        "proxy": case.proxy,
        "form": case.form,
        "materials": case.materials,
        "bundle": case.bundle,
    });
    let mut text = Vec::with_capacity(2048);
    write_canonical(&filing, &mut text);
    hex::encode(Sha256::digest(&text))
}

/// Signs `event` of case `case_id` with `signer`'s key; `filing` is the case's
/// [`filing_digest`] when the event is its `accepted` event.
pub fn sign(
    case_id: &str,
    filing: Option<&str>,
    event: &mut Event,
    signer: &crate::seal::Signer,
) -> Result<(), crate::seal::SealError> {
    event.sig = None;
    let msg = signed_bytes(case_id, filing, event);
    let value = signer.sign_raw(&msg)?;
    // This node reads what it just signed (its projections, the case page) without
    // verifying its own signature again.
    remember_verified(&verified_digest(signer.public_key(), &msg, &value));
    event.sig = Some(EventSig {
        scheme: ED25519.into(),
        key: hex::encode(signer.serial()),
        value: base64::engine::general_purpose::STANDARD.encode(value),
    });
    Ok(())
}

/// Verified signatures, so a case read again costs no cryptography: the digest of the key,
/// message and signature that verified. Bounded; cleared when full.
static VERIFIED: Mutex<Option<std::collections::HashSet<[u8; 32]>>> = Mutex::new(None);
const VERIFIED_MAX: usize = 200_000;

fn verified_digest(public_key: &[u8], msg: &[u8], signature: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(public_key);
    h.update(msg);
    h.update(signature);
    h.finalize().into()
}

fn remember_verified(digest: &[u8; 32]) {
    let mut guard = VERIFIED.lock().unwrap_or_else(|e| e.into_inner());
    let set = guard.get_or_insert_with(Default::default);
    if set.len() >= VERIFIED_MAX {
        set.clear();
    }
    set.insert(*digest);
}

fn known_verified(digest: &[u8; 32]) -> bool {
    VERIFIED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .is_some_and(|s| s.contains(digest))
}

/// Signatures [`screen_deferring`] counted as valid before checking them, to be checked
/// together ([`verify_deferred`]): a batch costs about a third of checking its signatures
/// one by one. Whoever defers must screen again, one by one, whatever fails.
#[derive(Debug, Default)]
pub struct Deferred(Vec<DeferredSig>);

#[derive(Debug)]
struct DeferredSig {
    public_key: Vec<u8>,
    msg: Vec<u8>,
    signature: Vec<u8>,
    digest: [u8; 32],
}

impl Deferred {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// Whether every signature deferred in `sets` verifies; when they all do, they are
/// remembered as verified, so a screening of the same events counts them at no cost.
pub fn verify_deferred(sets: &[&Deferred]) -> bool {
    let checks: Vec<yiciban_transport::identity::Ed25519Check<'_>> = sets
        .iter()
        .flat_map(|d| d.0.iter())
        .map(|d| yiciban_transport::identity::Ed25519Check {
            public_key: &d.public_key,
            msg: &d.msg,
            signature: &d.signature,
        })
        .collect();
    if checks.is_empty() {
        return true;
    }
    if !yiciban_transport::identity::ed25519_verify_all(&checks) {
        return false;
    }
    for d in sets.iter().flat_map(|d| d.0.iter()) {
        remember_verified(&d.digest);
    }
    true
}

/// Whether the signature verifies: at once, or (with `deferred`) counted as valid and left
/// in it for [`verify_deferred`], unless it verified before.
fn verify(
    public_key: &[u8],
    msg: Vec<u8>,
    signature: Vec<u8>,
    deferred: Option<&mut Deferred>,
) -> bool {
    let digest = verified_digest(public_key, &msg, &signature);
    if known_verified(&digest) {
        return true;
    }
    if let Some(deferred) = deferred {
        deferred.0.push(DeferredSig {
            public_key: public_key.to_vec(),
            msg,
            signature,
            digest,
        });
        return true;
    }
    let ok = yiciban_transport::identity::ed25519_verify(public_key, &msg, &signature);
    if ok {
        remember_verified(&digest);
    }
    ok
}

/// Why an event does not count.
fn why(zh: impl Into<String>, en: impl Into<String>) -> Msg {
    Msg::new(zh, en)
}

/// The tiers that record each kind of event.
fn tiers_of(kind: &EventKind) -> &'static [Tier] {
    use EventKind as K;
    match kind {
        K::Accepted | K::Withdrawn | K::SupplementProvided | K::Issued | K::PickedUp => {
            &[Tier::Village]
        }
        K::ReviewPassed | K::Approved | K::Rejected | K::SupplementRequested => {
            &[Tier::Town, Tier::County]
        }
        K::Urged => &[Tier::County],
        K::Rated | K::Comment | K::NoticeSent | K::Other(_) => {
            &[Tier::Village, Tier::Town, Tier::County]
        }
    }
}

/// The case's division at `tier`.
fn division_at(case: &Case, tier: Tier) -> &str {
    match tier {
        Tier::Village => &case.division.village,
        Tier::Town => &case.division.town,
        Tier::County => &case.division.county,
    }
}

/// Whether `event` of `case`, written by Automerge actor `writer`, counts; the reason if not.
pub fn check(
    case: &Case,
    event: &Event,
    writer: Option<&ActorId>,
    registry: &Registry,
) -> Result<(), Msg> {
    check_deferring(case, event, writer, registry, None)
}

/// [`check`], leaving the signature in `deferred` when there is one.
fn check_deferring(
    case: &Case,
    event: &Event,
    writer: Option<&ActorId>,
    registry: &Registry,
    deferred: Option<&mut Deferred>,
) -> Result<(), Msg> {
    // No registry yet (a node running alone, or one whose first link has not brought it):
    // nothing to judge by, and whatever came came from the county, which judged it.
    if registry.is_empty() {
        return Ok(());
    }
    let by_own_actor = writer.is_some_and(|a| *a == node_actor(&event.node));
    let Some(node) = registry.get(&event.node) else {
        return match &event.sig {
            None if by_own_actor => Ok(()),
            None => Err(why(
                "未签名，且不是由其所称节点写入",
                "unsigned and not written by the node it names",
            )),
            // Signed by a node this node does not know yet: it counts once the county's
            // registry lists it.
            Some(_) => Err(why(
                format!("签名节点 {} 不在县级节点目录中", event.node),
                format!(
                    "signed by {}, which the county's registry does not list",
                    event.node
                ),
            )),
        };
    };
    match &event.sig {
        Some(sig) => {
            let key = (sig.scheme == ED25519)
                .then(|| node.key(&sig.key))
                .flatten()
                .ok_or_else(|| {
                    why(
                        "签名所用的证书不属于该节点",
                        "signed with a key the node was not certified with",
                    )
                })?;
            let value = base64::engine::general_purpose::STANDARD
                .decode(&sig.value)
                .unwrap_or_default();
            let filing = (event.kind == EventKind::Accepted).then(|| filing_digest(case));
            let msg = signed_bytes(&case.id, filing.as_deref(), event);
            if !verify(&key, msg, value, deferred) {
                return Err(why(
                    "签名无效：事件内容与签名不符",
                    "the signature does not verify",
                ));
            }
        }
        None if by_own_actor && event.at.wall_ms < node.listed_ms => {}
        None => {
            return Err(why(
                "缺少节点签名",
                "not signed, and written after the node was listed",
            ));
        }
    }
    if let Some(revoked) = node.revoked_ms
        && event.at.wall_ms >= revoked
    {
        return Err(why(
            "签名节点的证书已被县级吊销，吊销后的事件无效",
            "made after the node's certificate was revoked",
        ));
    }
    if event.tier != node.role {
        return Err(why(
            format!(
                "事件自称{}级，签名节点为{}级",
                event.tier.zh(),
                node.role.zh()
            ),
            format!(
                "claims tier {}, signed by a {} node",
                event.tier.as_str(),
                node.role.as_str()
            ),
        ));
    }
    if node.division != division_at(case, node.role) {
        return Err(why(
            format!(
                "{}级节点 {} 无权办理不属于本辖区的办件",
                node.role.zh(),
                node.id
            ),
            format!("{} acts on a case outside its division", node.id),
        ));
    }
    if !tiers_of(&event.kind).contains(&node.role) {
        return Err(why(
            format!("{}级节点不能办理“{}”", node.role.zh(), event.kind.zh()),
            format!(
                "a {} node does not record {}",
                node.role.as_str(),
                event.kind.as_str()
            ),
        ));
    }
    if event.kind == EventKind::Accepted && event.node != case.node {
        return Err(why(
            "受理事件不是由受理节点签发",
            "accepted by another node than the filing one",
        ));
    }
    Ok(())
}

/// Moves every event of `case` that does not count into [`Case::forged`]; `writers` names the
/// Automerge actor that wrote each event (by event id), as [`crate::case_doc::read`] found.
pub fn screen(case: &mut Case, writers: &HashMap<String, ActorId>, registry: &Registry) {
    screen_inner(case, writers, registry, None);
}

/// [`screen`], counting every signature not verified before as valid and leaving it in
/// `deferred`: the caller verifies them ([`verify_deferred`]) and screens the case again if
/// any fails.
pub fn screen_deferring(
    case: &mut Case,
    writers: &HashMap<String, ActorId>,
    registry: &Registry,
    deferred: &mut Deferred,
) {
    screen_inner(case, writers, registry, Some(deferred));
}

fn screen_inner(
    case: &mut Case,
    writers: &HashMap<String, ActorId>,
    registry: &Registry,
    mut deferred: Option<&mut Deferred>,
) {
    if case.events.is_empty() {
        return;
    }
    let events = std::mem::take(&mut case.events);
    let mut kept = Vec::with_capacity(events.len());
    for event in events {
        let writer = writers.get(&event.id);
        match check_deferring(case, &event, writer, registry, deferred.as_deref_mut()) {
            Ok(()) => kept.push(event),
            Err(m) => case.forged.push(Forged {
                event,
                reason: m.zh,
                reason_en: m.en,
            }),
        }
    }
    case.events = kept;
}

#[cfg(test)]
mod tests {
    use super::*;
    use yiciban_transport::identity::{CountyCa, NodeIdentity, NodeKey};

    #[test]
    fn canonical_json_sorts_keys_at_every_depth_and_escapes_as_serde_json() {
        let value = serde_json::json!({
            "b": 1,
            "a": [{"d": "x\"\n中", "c": null}, 2.5, true],
        });
        let mut out = Vec::new();
        write_canonical(&value, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":[{"c":null,"d":"x\"\n中"},2.5,true],"b":1}"#
        );
    }

    fn signer() -> crate::seal::Signer {
        let ca = CountyCa::create("430181000000").unwrap();
        let key = NodeKey::generate().unwrap();
        let id = NodeIdentity::new("village-1", "village", "430181101001").unwrap();
        let issued = ca.issue(&key.csr_pem().unwrap(), &id, 30).unwrap();
        crate::seal::Signer::from_pem(&key.pem(), &issued.cert_pem).unwrap()
    }

    #[test]
    fn deferred_signatures_count_only_once_verified_together() {
        let signer = signer();
        let public = signer.public_key().to_vec();
        let good: Vec<(Vec<u8>, Vec<u8>)> = (0..3u8)
            .map(|i| {
                let msg = format!("deferred test {i}").into_bytes();
                let sig = signer.sign_raw(&msg).unwrap();
                (msg, sig)
            })
            .collect();
        let mut first = Deferred::default();
        for (msg, sig) in &good {
            assert!(verify(&public, msg.clone(), sig.clone(), Some(&mut first)));
        }
        assert_eq!(first.len(), 3, "nothing verified before: all deferred");
        let mut forged = Deferred::default();
        let (msg, _) = &good[0];
        let other = signer.sign_raw(b"something else").unwrap();
        assert!(
            verify(&public, msg.clone(), other.clone(), Some(&mut forged)),
            "deferred, it counts for now"
        );
        assert!(
            !verify_deferred(&[&first, &forged]),
            "one bad fails the batch"
        );
        assert!(
            !verify(&public, msg.clone(), other, None),
            "alone, it fails"
        );
        // Nothing of a failed batch is remembered: the good ones are still deferred.
        let mut again = Deferred::default();
        assert!(verify(
            &public,
            msg.clone(),
            good[0].1.clone(),
            Some(&mut again)
        ));
        assert_eq!(again.len(), 1);
        assert!(verify_deferred(&[&first]));
        let mut after = Deferred::default();
        for (msg, sig) in &good {
            assert!(verify(&public, msg.clone(), sig.clone(), Some(&mut after)));
        }
        assert!(after.is_empty(), "a batch that verified is remembered");
        assert!(verify_deferred(&[]));
    }
}
