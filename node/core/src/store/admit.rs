//! What a case merge from a peer must satisfy before anything of it is stored, beyond being
//! a readable document of the case it names: the rules of the trust model.
//!
//! - A held case changes only by new events: a merge that edits the filing (any root key)
//!   or an event already held is refused. So the case's scope is the one it was filed with.
//! - At the county, changes from a village or a town ([`MergeCheck::first_hop`]) touch only
//!   cases of the sender's scope as the county already holds them (never what the merged
//!   document says), a case new here is one the sender may hold and whose filing its
//!   village signed, and every new event is written by the sender's own Automerge actor or
//!   carries a valid signature of the node it names. Anything else is refused.
//! - Every case is within its length bounds ([`crate::bounds`]).
//! - Events that do not count ([`crate::authorship`]) are kept, screened out of the case;
//!   the new ones are reported, so the county raises the alert naming the sender.
//!
//! A refusal is a [`StoreError::Rejected`]: the document is refused for good, with a reason
//! for people; the sync shell quarantines it instead of asking again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use automerge::{ActorId, AutoCommit, ReadDoc};

use super::StoreError;
use crate::case_doc::{self, Case, node_actor};
use crate::catalog::Catalog;
use crate::message::Msg;
use crate::registry::Registry;
use crate::scope::Scope;

/// What a merge from a peer is checked against.
#[derive(Debug, Clone, Default)]
pub struct MergeCheck {
    /// The county's registry of nodes as this node holds it.
    pub registry: Arc<Registry>,
    /// Length bounds and the catalogue's fields; the default bounds without one.
    pub catalog: Option<Arc<Catalog>>,
    /// At the county, for a village's or a town's changes: the sender's node id and scope.
    pub first_hop: Option<(String, Scope)>,
}

fn rejected(zh: impl Into<String>, en: impl Into<String>) -> StoreError {
    StoreError::Rejected(Msg::new(zh, en))
}

/// Refused unless the held case `old` (its divisions as stored) is in the sender's scope.
pub(super) fn held_in_scope(
    check: &MergeCheck,
    old: &case_doc::Divisions,
    doc_id: &str,
) -> Result<(), StoreError> {
    if let Some((peer, scope)) = &check.first_hop
        && !scope.contains(old)
    {
        return Err(rejected(
            format!("该办件属于其他辖区（村 {}），{peer} 无权改动", old.village),
            format!(
                "case {doc_id} belongs to village {}, outside {peer}'s scope",
                old.village
            ),
        ));
    }
    Ok(())
}

/// The ids of the events a merge added to a held document, refused unless adding events is
/// all it did: `doc` is merged, `before` the heads it had.
pub(super) fn only_new_events(
    doc: &mut AutoCommit,
    before: &[automerge::ChangeHash],
) -> Result<Vec<String>, StoreError> {
    use automerge::PatchAction;
    let after = doc.get_heads();
    if after == before {
        return Ok(Vec::new());
    }
    let events = match doc.get(automerge::ROOT, "events") {
        Ok(Some((automerge::Value::Object(_), id))) => id,
        _ => {
            return Err(rejected(
                "办件文档缺少事件列表",
                "the case has no event list",
            ));
        }
    };
    let mut added = Vec::new();
    for patch in doc.diff(before, &after) {
        let on_events = patch.obj == events;
        match patch.action {
            PatchAction::Insert { values, .. } if on_events => {
                for (value, _, _) in values.iter() {
                    let text = value.as_str().unwrap_or_default();
                    let id = serde_json::from_str::<serde_json::Value>(text)
                        .ok()
                        .and_then(|v| v.get("id")?.as_str().map(String::from))
                        .unwrap_or_default();
                    added.push(id);
                }
            }
            _ => {
                return Err(rejected(
                    "改动了已受理的登记内容或已有的办理记录（只能追加新的办理事件）",
                    "the changes edit the filing or an event held: only new events may be added",
                ));
            }
        }
    }
    Ok(added)
}

/// Checks the events `new` (ids) of the screened `case` at the first hop: each written by
/// the sender's own actor, or a signed event of the node it names that counts.
fn new_events_authored(
    case: &Case,
    new: &HashSet<&str>,
    writers: &HashMap<String, ActorId>,
    check: &MergeCheck,
) -> Result<(), StoreError> {
    let Some((peer, _)) = &check.first_hop else {
        return Ok(());
    };
    let own = node_actor(peer);
    let counted = case.events.iter().map(|e| (e, true));
    let forged = case.forged.iter().map(|f| (&f.event, false));
    for (event, counts) in counted.chain(forged) {
        if !new.contains(event.id.as_str()) || writers.get(&event.id) == Some(&own) {
            continue;
        }
        // Another node's event, relayed: it must verify as that node's signed event.
        if !counts || event.sig.is_none() {
            return Err(rejected(
                format!(
                    "含有以其他节点（{}）名义写入、且无法核验签名的办理事件",
                    event.node
                ),
                format!(
                    "an event written in the name of {} that does not verify as its signed event",
                    event.node
                ),
            ));
        }
    }
    Ok(())
}

/// At the first hop, a case this node does not hold yet (screened): in the sender's scope,
/// and its `accepted` event, which signs the filing, counts.
fn new_case_admissible(case: &Case, check: &MergeCheck) -> Result<(), StoreError> {
    let Some((peer, scope)) = &check.first_hop else {
        return Ok(());
    };
    if !scope.contains(&case.division) {
        return Err(rejected(
            format!(
                "新办件属于其他辖区（村 {}），{peer} 无权提交",
                case.division.village
            ),
            format!(
                "new case of village {}, outside {peer}'s scope",
                case.division.village
            ),
        ));
    }
    let genuine = case
        .events
        .iter()
        .any(|e| e.kind == crate::event::EventKind::Accepted);
    if !genuine {
        return Err(rejected(
            "新办件的受理登记未经受理村签名，或与签名时不符",
            "the new case's filing is not the one its village signed",
        ));
    }
    Ok(())
}

/// The checks of a merged case `case` (`writers`: who wrote each event; `new`: the events
/// this merge added, all of them for a case new here), then its screening; returns the
/// case with its forged events moved aside and the new ones among them. With `deferred`,
/// signatures not verified before count for now and are left in it
/// ([`crate::authorship::screen_deferring`]).
pub(super) fn admit(
    mut case: Case,
    writers: &HashMap<String, ActorId>,
    (new, held): (&[String], bool),
    doc_bytes: usize,
    check: &MergeCheck,
    deferred: Option<&mut crate::authorship::Deferred>,
) -> Result<(Case, Vec<crate::authorship::Forged>), StoreError> {
    let new_ids: HashSet<&str> = new.iter().map(String::as_str).collect();
    // Each event is checked once; the rules below read the outcome.
    match deferred {
        Some(deferred) => {
            crate::authorship::screen_deferring(&mut case, writers, &check.registry, deferred)
        }
        None => crate::authorship::screen(&mut case, writers, &check.registry),
    }
    if !held {
        new_case_admissible(&case, check)?;
    }
    new_events_authored(&case, &new_ids, writers, check)?;
    let limits = check
        .catalog
        .as_deref()
        .map(Catalog::limits)
        .cloned()
        .unwrap_or_default();
    crate::bounds::check_case(&case, doc_bytes, &limits, check.catalog.as_deref())
        .map_err(StoreError::Rejected)?;
    let forged_new = case
        .forged
        .iter()
        .filter(|f| new_ids.contains(f.event.id.as_str()))
        .cloned()
        .collect();
    Ok((case, forged_new))
}
