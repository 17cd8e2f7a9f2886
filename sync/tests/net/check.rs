//! What the simulation asserts: the same documents and heads everywhere, and the blobs.

use std::collections::BTreeSet;

use yiciban_sync::mem::MemStore;
use yiciban_sync::store::BlobHash;

use super::Sim;

impl Sim {
    /// Every node holds the same documents with the same heads, and every referenced blob
    /// that still exists somewhere.
    pub fn check_converged(&self) -> Result<(), String> {
        // A quarantined document stays where it was written: it is not compared.
        let quarantined = self.quarantined();
        let without = |mut s: std::collections::BTreeMap<String, _>| {
            s.retain(|k, _| !quarantined.contains(k));
            s
        };
        let first = without(self.nodes[0].store.summary());
        for n in &self.nodes {
            let summary = without(n.store.summary());
            if summary != first {
                let diff: Vec<_> = summary
                    .iter()
                    .filter(|(k, v)| first.get(*k) != Some(v))
                    .map(|(k, _)| k.clone())
                    .chain(first.keys().filter(|k| !summary.contains_key(*k)).cloned())
                    .take(5)
                    .collect();
                return Err(format!(
                    "{} has {} docs, {} has {}; differing: {diff:?}",
                    n.id,
                    summary.len(),
                    self.nodes[0].id,
                    first.len()
                ));
            }
        }
        match self.missing_blobs() {
            Some((node, missing)) => Err(format!("{node} misses {missing} blobs")),
            None => Ok(()),
        }
    }

    /// The first node that lacks referenced blobs another node holds. A blob that exists
    /// nowhere (written after a backup that was then restored, before any peer fetched it)
    /// is lost with the store, not by the protocol.
    pub(super) fn missing_blobs(&self) -> Option<(&str, usize)> {
        self.nodes.iter().find_map(|n| {
            let missing = n
                .referenced
                .difference(&n.store.blob_hashes())
                .filter(|h| self.nodes.iter().any(|o| o.store.blob(h).is_some()))
                .count();
            (missing > 0).then_some((n.id.as_str(), missing))
        })
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn parse_blob_ref(change: &[u8]) -> Option<BlobHash> {
    let text = std::str::from_utf8(change).ok()?;
    let hex_part = text.split("|blob:").nth(1)?;
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex_part.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(hash)
}

pub(super) fn referenced_blobs(store: &MemStore) -> BTreeSet<BlobHash> {
    store
        .summary()
        .keys()
        .flat_map(|id| store.changes(id))
        .filter_map(|c| parse_blob_ref(&c))
        .collect()
}
