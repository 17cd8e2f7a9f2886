//! Documents refused for good, and the events a peer sent that do not count: what the node
//! keeps of them so people see it and nothing loops.
//!
//! - `quarantine-1`: a document this node refused from a peer (`received`), or that a peer
//!   refused from this node (`sent`), with the reason. A refused document's feed entries are
//!   settled on both sides (`yiciban_sync::Session::refused`), so it blocks no backlog and is
//!   not offered again unless it changes.
//! - `refusals-1` (at the county): every refused document and every event kept as not
//!   counting (伪造/无效), under the node that sent it: the console's alert names the node.

use serde::{Deserialize, Serialize};

use super::StoreError;
use super::tables::*;

/// Refusals kept per sending node (the newest).
pub(super) const REFUSALS_PER_PEER: usize = 200;

/// Which way a quarantined document went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// This node refused it from the peer.
    Received,
    /// The peer refused it from this node.
    Sent,
}

/// One quarantined document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    pub doc_id: String,
    /// The case's receipt number, when this node could read it.
    pub receipt_no: String,
    pub peer: String,
    pub direction: Direction,
    pub reason: String,
    pub reason_en: String,
    pub at_ms: u64,
}

/// A document or an event the county refused or kept as not counting, under its sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub peer: String,
    pub doc_id: String,
    pub receipt_no: String,
    /// The event kept as not counting; `None`: the whole document was refused.
    pub event_id: Option<String>,
    pub reason: String,
    pub reason_en: String,
    pub at_ms: u64,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The `refusals-1` key of `r`: its sender, when, and what.
pub(super) fn refusal_key(r: &Refusal) -> String {
    format!(
        "{}{SEP}{:020}{SEP}{}{SEP}{}",
        r.peer,
        r.at_ms,
        r.doc_id,
        r.event_id.as_deref().unwrap_or("")
    )
}

pub(super) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}
