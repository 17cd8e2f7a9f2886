//! The simulated network: nodes with in-memory stores, links with sessions, a packet queue.
//!
//! Everything is driven by one seeded RNG and a simulated clock, so a seed replays exactly.
//! Messages cross the wire encoded, so the codec is exercised and bytes are counted.

mod rng;

use std::collections::{BTreeMap, BTreeSet};

use yiciban_sync::mem::MemStore;
use yiciban_sync::proto::{Cursor, EarlyOffer};
use yiciban_sync::session::Session;
use yiciban_sync::store::BlobHash;

pub use rng::Rng;

/// Simulated milliseconds per step.
const STEP_MS: u64 = 10;
/// Steps between a session's retries of missing blobs.
const BLOB_RETRY_STEPS: u64 = 50;

/// What the network does to messages.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    pub loss: f64,
    pub dup: f64,
    /// Chance that a message is held back by up to `reorder_ms` (and so overtaken).
    pub reorder: f64,
    pub reorder_ms: u64,
    pub delay_ms: u64,
    /// Chance that applying changes is followed by a crash before `applied` is called.
    pub crash: f64,
}

impl Faults {
    pub fn none() -> Self {
        Self {
            loss: 0.0,
            dup: 0.0,
            reorder: 0.0,
            reorder_ms: 0,
            delay_ms: 5,
            crash: 0.0,
        }
    }

    /// Faults drawn per seed, from a clean network to a very bad one.
    pub fn random(rng: &mut Rng) -> Self {
        let mut p = |max: f64| (rng.below(1001) as f64 / 1000.0) * max;
        Self {
            loss: p(0.03),
            dup: p(0.03),
            reorder: p(0.05),
            crash: p(0.02),
            reorder_ms: 10 + rng.below(200),
            delay_ms: 1 + rng.below(100),
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub messages: u64,
    pub bytes: u64,
    pub digests: u64,
    /// `Want` and `WantMany` messages sent.
    pub wants: u64,
    pub session_errors: u64,
    pub restores: u64,
    /// Sessions that offered their feed behind their hello (an acknowledged position known).
    pub early_offers: u64,
    /// Of those, the ones the peer's new store epoch refused.
    pub early_refused: u64,
    /// Documents the county refused (a rogue's poison or takeover), and the refusals the
    /// senders learnt of.
    pub refused: u64,
    pub refusals_heard: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.messages += o.messages;
        self.bytes += o.bytes;
        self.digests += o.digests;
        self.wants += o.wants;
        self.session_errors += o.session_errors;
        self.restores += o.restores;
        self.early_offers += o.early_offers;
        self.early_refused += o.early_refused;
        self.refused += o.refused;
        self.refusals_heard += o.refusals_heard;
    }
}

struct Node {
    id: String,
    store: MemStore,
    cursors: BTreeMap<String, Cursor>,
    /// Per peer: how far it acknowledged this node's feed, and this store's epoch then.
    acked: Acked,
    backup: Option<(MemStore, BTreeMap<String, Cursor>, Acked)>,
    referenced: BTreeSet<BlobHash>,
    writes: u64,
    blob_bytes: u64,
    /// Documents refused for good: by this node (received) or by its peer (sent).
    quarantined: BTreeSet<String>,
}

type Acked = BTreeMap<String, (u64, EarlyOffer)>;

struct Conn {
    id: u64,
    sessions: [Session; 2],
    started_step: u64,
}

struct Link {
    ends: [usize; 2],
    healed: bool,
    conn: Option<Conn>,
}

struct Packet {
    at: u64,
    order: u64,
    link: usize,
    conn: u64,
    to_side: usize,
    bytes: Vec<u8>,
}

pub struct Sim {
    rng: Rng,
    now_ms: u64,
    step_no: u64,
    nodes: Vec<Node>,
    links: Vec<Link>,
    queue: Vec<Packet>,
    next_id: u64,
    pub faults: Faults,
    pub stats: Stats,
    /// The first broken invariant seen while performing effects.
    violation: Option<String>,
}

impl Sim {
    /// Node 0 is the county hub; every other node links to it.
    pub fn star(seed: u64, nodes: usize) -> Self {
        let mut rng = Rng::new(seed);
        let names = ["county", "town", "village-a", "village-b"];
        let nodes: Vec<Node> = (0..nodes)
            .map(|i| Node {
                id: names.get(i).map_or(format!("node-{i}"), |n| n.to_string()),
                store: MemStore::new(rng.next()),
                cursors: BTreeMap::new(),
                acked: BTreeMap::new(),
                backup: None,
                referenced: BTreeSet::new(),
                writes: 0,
                blob_bytes: 0,
                quarantined: BTreeSet::new(),
            })
            .collect();
        let links = (1..nodes.len())
            .map(|i| Link {
                ends: [0, i],
                healed: true,
                conn: None,
            })
            .collect();
        Self {
            rng,
            now_ms: 0,
            step_no: 0,
            nodes,
            links,
            queue: Vec::new(),
            next_id: 1,
            faults: Faults::none(),
            stats: Stats::default(),
            violation: None,
        }
    }

    /// Draws this run's faults from the seed.
    pub fn random_faults(&mut self) {
        self.faults = Faults::random(&mut self.rng);
    }

    pub fn doc_count(&self, node: usize) -> usize {
        self.nodes[node].store.doc_count()
    }

    /// The ids of the documents `node` holds, in order.
    pub fn doc_ids(&self, node: usize) -> Vec<String> {
        self.nodes[node].store.summary().into_keys().collect()
    }

    pub fn blob_bytes_received(&self) -> u64 {
        self.nodes.iter().map(|n| n.blob_bytes).sum()
    }

    /// A local write on `node`: a new document, with a blob reference when `blob` is given.
    /// Returns the change's length.
    pub fn write(&mut self, node: usize, blob: Option<Vec<u8>>) -> usize {
        self.write_padded(node, blob, 0)
    }

    /// A new document whose change carries `pad` more bytes, like a real case's filing.
    pub fn write_padded(&mut self, node: usize, blob: Option<Vec<u8>>, pad: usize) -> usize {
        let n = &mut self.nodes[node];
        n.writes += 1;
        let doc_id = format!("{}-{}", n.id, n.writes);
        self.write_to(node, doc_id, blob, pad)
    }

    fn write_to(
        &mut self,
        node: usize,
        doc_id: String,
        blob: Option<Vec<u8>>,
        pad: usize,
    ) -> usize {
        let salt = self.rng.next();
        let n = &mut self.nodes[node];
        n.writes += 1;
        let mut change = format!("{}:{}:{salt:x}:{}", n.id, n.writes, "x".repeat(pad));
        if let Some(bytes) = blob {
            let hash = n.store.put_blob(bytes);
            n.referenced.insert(hash);
            change.push_str(&format!("|blob:{}", hex(&hash)));
        }
        let change = change.into_bytes();
        let len = change.len();
        // An edit of a held document is kept as its tip, as the node keeps a local event's.
        n.store.edit(&doc_id, change);
        len
    }

    /// A rogue's write on `node`: a new document the county refuses for good whatever it
    /// holds (`POISON` in its change stands for a field over its bound). Returns its id.
    pub fn write_poison(&mut self, node: usize) -> String {
        let n = &mut self.nodes[node];
        n.writes += 1;
        let doc_id = format!("{}-poison-{}", n.id, n.writes);
        let change = format!("{}:{}:POISON", n.id, n.writes).into_bytes();
        n.store.edit(&doc_id, change);
        doc_id
    }

    /// A rogue's takeover on `node`: a document under `doc_id`, another node's document,
    /// written by `node` (the county refuses changes a node makes to a document it does not
    /// own).
    pub fn write_takeover(&mut self, node: usize, doc_id: &str) {
        let n = &mut self.nodes[node];
        n.writes += 1;
        let change = format!("{}:{}:takeover", n.id, n.writes).into_bytes();
        n.store.edit(doc_id, change);
    }

    /// Whether the county (node 0) refuses `changes` of `doc_id`: a poison change, or a
    /// rogue's takeover of another node's document (in the real node, a change to a case
    /// of another scope; here the change says so, as every node edits every document).
    pub(super) fn county_refuses(&self, changes: &[Vec<u8>]) -> bool {
        changes.iter().any(|c| {
            let text = String::from_utf8_lossy(c);
            text.contains(":POISON") || text.ends_with(":takeover")
        })
    }

    /// Every document some node quarantined.
    pub fn quarantined(&self) -> BTreeSet<String> {
        self.nodes
            .iter()
            .flat_map(|n| n.quarantined.iter().cloned())
            .collect()
    }

    /// Whether `node` holds `doc_id`.
    pub fn holds(&self, node: usize, doc_id: &str) -> bool {
        self.nodes[node].store.summary().contains_key(doc_id)
    }

    /// A local edit of `doc_id` on `node` (a new document if it holds none).
    pub fn edit(&mut self, node: usize, doc_id: &str) -> usize {
        self.write_to(node, doc_id.to_string(), None, 0)
    }

    /// Random local writes: new documents, edits of any held document, sometimes a blob.
    pub fn random_writes(&mut self, p: f64) {
        for node in 0..self.nodes.len() {
            if !self.rng.chance(p) {
                continue;
            }
            let blob = self.rng.chance(0.1).then(|| {
                let len = self.rng.below(150_000) as usize;
                let salt = self.rng.next();
                (0..len).map(|i| (i as u64 ^ salt) as u8).collect()
            });
            let docs: Vec<String> = self.nodes[node].store.summary().into_keys().collect();
            if docs.is_empty() || self.rng.chance(0.5) {
                self.write(node, blob);
            } else {
                let doc = docs[self.rng.below(docs.len() as u64) as usize].clone();
                self.write_to(node, doc, blob, 0);
            }
        }
    }

    /// Cuts a healed link with chance `cut`, heals a cut one with chance `heal`.
    pub fn random_partitions(&mut self, cut: f64, heal: f64) {
        for l in 0..self.links.len() {
            if self.links[l].healed && self.rng.chance(cut) {
                self.links[l].healed = false;
                self.links[l].conn = None;
            } else if !self.links[l].healed && self.rng.chance(heal) {
                self.links[l].healed = true;
            }
        }
    }

    pub fn cut_all(&mut self) {
        for link in &mut self.links {
            link.healed = false;
            link.conn = None;
        }
    }

    pub fn heal_all(&mut self) {
        for link in &mut self.links {
            link.healed = true;
            link.conn = None; // a fresh session from the saved cursors
        }
    }

    pub fn reconnect_all(&mut self) {
        for link in &mut self.links {
            link.conn = None;
        }
    }

    pub fn backup(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        n.backup = Some((n.store.clone(), n.cursors.clone(), n.acked.clone()));
    }

    /// Restores the last backup with a fresh epoch and drops the node's connections.
    pub fn restore(&mut self, node: usize) {
        let epoch = self.rng.next();
        let n = &mut self.nodes[node];
        let Some((store, cursors, acked)) = n.backup.clone() else {
            return;
        };
        n.store = store.restored(epoch);
        n.cursors = cursors;
        n.acked = acked;
        n.referenced = referenced_blobs(&n.store);
        self.stats.restores += 1;
        self.drop_conns_of(node);
    }

    fn drop_conns_of(&mut self, node: usize) {
        for link in &mut self.links {
            if link.ends.contains(&node) {
                link.conn = None;
            }
        }
    }

    /// One step: connect, deliver due packets, tick every session.
    pub fn step(&mut self) -> Result<(), String> {
        self.step_no += 1;
        self.now_ms += STEP_MS;
        for l in 0..self.links.len() {
            if self.links[l].healed && self.links[l].conn.is_none() {
                self.connect(l);
            }
        }
        self.deliver_due();
        for l in 0..self.links.len() {
            for side in 0..2 {
                self.tick(l, side);
            }
        }
        match self.violation.take() {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }

    /// Steps until nothing is in flight, every session is caught up and no node lacks a blob
    /// that another node holds (the shells retry missing blobs every [`BLOB_RETRY_STEPS`]).
    pub fn run_until_quiescent(&mut self, max_steps: u64) -> Result<(), String> {
        for _ in 0..max_steps {
            self.step()?;
            if self.queue.is_empty() && self.all_caught_up() && self.missing_blobs().is_none() {
                return Ok(());
            }
        }
        let stuck: Vec<String> = self
            .links
            .iter()
            .filter_map(|l| l.conn.as_ref().map(|c| (l.ends, c)))
            .flat_map(|(ends, c)| {
                (0..2)
                    .filter(|&s| !c.sessions[s].is_caught_up())
                    .map(move |s| format!("{:?} side {s}: {:?}", ends, c.sessions[s]))
            })
            .map(|d| d.chars().take(1500).collect())
            .collect();
        Err(format!(
            "not quiescent after {max_steps} steps; {} in flight; stuck: {stuck:#?}",
            self.queue.len()
        ))
    }

    fn all_caught_up(&self) -> bool {
        self.links.iter().all(|l| match &l.conn {
            Some(c) => c.sessions.iter().all(Session::is_caught_up),
            None => !l.healed,
        })
    }
}

mod check;
mod drive;

use check::{hex, parse_blob_ref, referenced_blobs};
