//! The sync engine: one [`Session`] of `yiciban/1` over one QUIC connection, against the store.
//!
//! The session decides; this shell moves bytes and performs its effects: merging changes
//! through the store's writer, saving cursors after what they cover is durable, assembling
//! blob chunks and storing a blob only once its hash checks out. The peer's node id comes
//! from its verified certificate, and its `Hello` must name the same node.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use thiserror::Error;
use yiciban_sync::frame;
use yiciban_sync::proto::{self, Cursor, EarlyOffer, Message};
use yiciban_sync::session::{Effect, NodeInfo, Output, ProtoError, Session};
use yiciban_transport::tls::{TlsError, connection_identity};

use crate::case_doc::Case;
use crate::catalog::Tier;
use crate::message::Msg;
use crate::scope::{Scope, ScopedStore};
use crate::store::quarantine::Direction;
use crate::store::{AckedRecord, RunMode, Store, StoreError};

/// How often a link checks for a stall and refreshes its row in the link table.
const TICK: Duration = Duration::from_millis(100);
/// Bytes read from the stream at a time.
const READ_CHUNK: usize = 64 * 1024;
/// Blobs assembled at once from one peer; each is bounded by the store's blob limit.
const MAX_BLOBS_IN_FLIGHT: usize = 8;
/// Runs of case merges handed to the store and not yet told to the session. With more than
/// one, the next run's merges use the cores while the writer commits the one before; at the
/// limit the session stops reading, and QUIC's flow control holds the sender.
const MAX_RUNS_IN_FLIGHT: usize = 3;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("stream write: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("stream read: {0}")]
    Read(#[from] quinn::ReadError),
    #[error("frame: {0}")]
    Frame(#[from] frame::FrameError),
    #[error("protocol: {0}")]
    Proto(#[from] ProtoError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("peer's hello names {said}, its certificate {certified}")]
    IdentityMismatch { said: String, certified: String },
    #[error("dial: {0}")]
    Dial(String),
    #[error("peer closed the stream")]
    Closed,
    #[error("peer silent while work was outstanding")]
    Stalled,
}

/// How a node dials its peer. QUIC does not report a closed port, so a handshake that has not
/// finished within `connect_timeout` counts as a failed attempt.
#[derive(Debug, Clone, Copy)]
pub struct DialConfig {
    /// Long enough for a handshake over EDGE (about three 840 ms round trips).
    pub connect_timeout: Duration,
    /// First wait after a failure; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Default for DialConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// What the node shows about one link: connected or not, the last time it was caught up,
/// how far the peer holds this node's feed, bytes moved.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LinkSnapshot {
    /// The link's name: `county` for the uplink, the peer's node id for an accepted link.
    pub name: String,
    pub peer: Option<String>,
    pub peer_role: Option<String>,
    pub peer_division: Option<String>,
    pub connected: bool,
    /// Unix milliseconds of the last moment both feeds were caught up.
    pub last_sync_ms: Option<u64>,
    pub last_error: Option<String>,
    pub attempts: u64,
    /// The local feed position the peer holds (from its hello and acks).
    pub peer_position: Option<u64>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// At the county: the last entry of this peer's audit trail received over this link
    /// (`crate::audit_doc`).
    pub audit_held: Option<u64>,
    /// The current session: µs from its start (just after the QUIC handshake) until the
    /// peer's feed was first pulled and durably applied, and the stream bytes both ways by
    /// then. What the benchmarks read (`sync-new`, `sync-idle`, `sync-1pct`); µs, as a 1%
    /// resync of 1,000 cases takes a few ms.
    pub catch_up_us: Option<u64>,
    pub catch_up_bytes: Option<u64>,
    /// Unix µs when that catch-up was done. With the dialling side's `dialed_at_us`, on one
    /// machine, the wall time of a reconnection from its first packet, QUIC and TLS included
    /// (the benchmarks compare it with the peers' whole replications).
    pub caught_up_at_us: Option<u64>,
    /// Unix µs when the dial of this link's latest connection began (the dialling side).
    pub dialed_at_us: Option<u64>,
}

/// A handshake this node refused: who (the node id the presented certificate claims, else
/// the remote address), when, and why (revoked, another CA, …).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Refusal {
    pub node: String,
    pub at_ms: u64,
    pub reason: String,
}

/// Refusals kept for the console, newest last.
const MAX_REFUSALS: usize = 32;

/// Every link of this node, for pages, health and metrics.
#[derive(Debug, Default)]
pub struct Links {
    inner: Mutex<BTreeMap<String, LinkSnapshot>>,
    /// The county's clock minus this node's, in ms, from the last probe on the uplink.
    clock_offset: Mutex<Option<i64>>,
    /// Handshakes refused lately (`MAX_REFUSALS`).
    refused: Mutex<VecDeque<Refusal>>,
    /// Accepted connections by peer node id, so a revoked peer's can be closed.
    accepted: Mutex<HashMap<String, quinn::Connection>>,
}

impl Links {
    /// The handshakes refused lately, oldest first.
    pub fn refused(&self) -> Vec<Refusal> {
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Records a refused handshake.
    pub fn record_refusal(&self, node: &str, reason: &str) {
        let mut list = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        if list.len() >= MAX_REFUSALS {
            list.pop_front();
        }
        list.push_back(Refusal {
            node: node.to_string(),
            at_ms: unix_ms(),
            reason: reason.to_string(),
        });
    }

    fn accepted(&self) -> std::sync::MutexGuard<'_, HashMap<String, quinn::Connection>> {
        self.accepted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The county's clock minus this node's (ms), measured on the uplink; `None` before.
    pub fn clock_offset_ms(&self) -> Option<i64> {
        *self.clock_offset.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_clock_offset_ms(&self, offset: i64) {
        *self.clock_offset.lock().unwrap_or_else(|e| e.into_inner()) = Some(offset);
    }

    pub fn snapshot(&self) -> Vec<LinkSnapshot> {
        self.lock().values().cloned().collect()
    }

    pub fn get(&self, name: &str) -> Option<LinkSnapshot> {
        self.lock().get(name).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, LinkSnapshot>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut LinkSnapshot)) {
        let mut map = self.lock();
        let entry = map.entry(name.to_string()).or_insert_with(|| LinkSnapshot {
            name: name.to_string(),
            ..LinkSnapshot::default()
        });
        f(entry);
    }
}

/// This node's clock, Unix milliseconds, signed for offsets.
fn clock_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// How long a clock probe may take before it is given up.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Asks the peer for its clock on a stream of its own: 8 bytes out (our time), 8 bytes back
/// (the peer's); the offset assumes the answer was made halfway through the round trip.
async fn probe_clock(conn: quinn::Connection, links: Arc<Links>) {
    let probe = async {
        let (mut send, mut recv) = conn.open_bi().await.ok()?;
        let t0 = clock_ms();
        send.write_all(&t0.to_be_bytes()).await.ok()?;
        send.finish().ok()?;
        let mut answer = [0u8; 8];
        recv.read_exact(&mut answer).await.ok()?;
        let t1 = clock_ms();
        let theirs = i64::from_be_bytes(answer);
        Some(theirs - (t0 + (t1 - t0) / 2))
    };
    match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
        Ok(Some(offset)) => {
            links.set_clock_offset_ms(offset);
            tracing::debug!(offset_ms = offset, "clock offset measured");
        }
        _ => tracing::debug!("clock probe unanswered"),
    }
}

/// Answers every clock probe of the connection's later streams (exactly 8 bytes each).
async fn answer_clock_probes(conn: quinn::Connection) {
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        tokio::spawn(async move {
            let mut asked = [0u8; 8];
            let answered = async {
                recv.read_exact(&mut asked).await.ok()?;
                send.write_all(&clock_ms().to_be_bytes()).await.ok()?;
                send.finish().ok()
            };
            let _ = tokio::time::timeout(PROBE_TIMEOUT, answered).await;
        });
    }
}

/// What every connection of this node shares.
#[derive(Debug, Clone)]
pub struct SyncContext {
    pub store: Store,
    pub node_id: String,
    /// This node's own scope: a peer's changes outside it are refused.
    pub scope: Scope,
    pub links: Arc<Links>,
}

/// Whether a document is a case (not a county-wide, health, directory or audit document).
fn is_case_doc(doc_id: &str) -> bool {
    !crate::county_doc::is_county_doc(doc_id)
        && !crate::health::is_health_doc(doc_id)
        && !crate::user_dir::is_user_dir_doc(doc_id)
        && !crate::audit_doc::is_audit_doc(doc_id)
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Keeps the link named `name` to `addr` up for as long as the task runs: dial, run the
/// session, and after any failure wait with capped exponential backoff (reset once a
/// connection has synced).
pub async fn dial_forever(
    ctx: SyncContext,
    endpoint: quinn::Endpoint,
    name: String,
    addr: SocketAddr,
    dial: DialConfig,
) {
    let mut backoff = dial.backoff_min;
    loop {
        let dialed = unix_us();
        ctx.links.update(&name, |s| {
            s.attempts += 1;
            s.dialed_at_us = Some(dialed);
        });
        let result = async {
            let connecting = endpoint
                .connect(addr, yiciban_transport::identity::SERVER_NAME)
                .map_err(|e| EngineError::Dial(e.to_string()))?;
            let conn = tokio::time::timeout(dial.connect_timeout, connecting)
                .await
                .map_err(|_| {
                    EngineError::Dial(format!("no handshake within {:?}", dial.connect_timeout))
                })??;
            run_connection(&ctx, &conn, true, &name).await
        }
        .await;
        let synced = ctx
            .links
            .get(&name)
            .and_then(|s| s.last_sync_ms)
            .is_some_and(|t| unix_ms().saturating_sub(t) < 60_000);
        let why = result
            .err()
            .map_or_else(|| "closed".to_string(), |e| e.to_string());
        tracing::warn!(link = %name, %addr, error = %why, "sync link down; retrying");
        ctx.links.update(&name, |s| {
            s.connected = false;
            s.last_error = Some(why);
        });
        backoff = if synced {
            dial.backoff_min
        } else {
            (backoff * 2).min(dial.backoff_max)
        };
        tokio::time::sleep(backoff).await;
    }
}

/// Starts replication: accepts peers on `listen` (the county) and keeps a link to `county`
/// (villages and towns). Returns the endpoint; dropping every clone of it stops nothing, the
/// tasks own their own.
pub fn start(
    ctx: SyncContext,
    material: &yiciban_transport::tls::TlsMaterial,
    listen: Option<SocketAddr>,
    county: Option<SocketAddr>,
    dial: DialConfig,
) -> Result<quinn::Endpoint, EngineError> {
    let client = material.quinn_client()?;
    let (bind, server) = match listen {
        Some(addr) => (addr, Some(server_config(material, &ctx.links)?)),
        None => match county {
            Some(SocketAddr::V6(_)) => ((std::net::Ipv6Addr::UNSPECIFIED, 0).into(), None),
            _ => ((std::net::Ipv4Addr::UNSPECIFIED, 0).into(), None),
        },
    };
    let socket =
        bind_udp(bind).map_err(|e| EngineError::Dial(format!("cannot bind UDP on {bind}: {e}")))?;
    let mut endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|e| EngineError::Dial(format!("cannot listen on {bind}: {e}")))?;
    endpoint.set_default_client_config(client);
    if listen.is_some() {
        tokio::spawn(accept_forever(ctx.clone(), endpoint.clone()));
    }
    if let Some(addr) = county {
        tokio::spawn(dial_forever(
            ctx,
            endpoint.clone(),
            "county".to_string(),
            addr,
            dial,
        ));
    }
    Ok(endpoint)
}

/// Socket buffer asked of the kernel for each direction of the QUIC socket (it grants at most
/// `net.core.rmem_max` / `wmem_max`). The default (~208 KiB) overflowed when 500 villages
/// dialled the county at once: the fan-in benchmark counted 4,000–6,400 handshake datagrams
/// dropped (`/proc/net/snmp` `RcvbufErrors`), each costing a retransmission timeout.
const UDP_BUFFER_BYTES: usize = 8 << 20;

/// A UDP socket bound to `addr` with large receive and send buffers. A kernel that refuses
/// the size keeps its default; that is logged, not fatal.
fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(UDP_BUFFER_BYTES) {
        tracing::warn!(error = %e, "cannot enlarge the QUIC receive buffer");
    }
    if let Err(e) = socket.set_send_buffer_size(UDP_BUFFER_BYTES) {
        tracing::warn!(error = %e, "cannot enlarge the QUIC send buffer");
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The QUIC server side, recording each refused client certificate in `links`.
fn server_config(
    material: &yiciban_transport::tls::TlsMaterial,
    links: &Arc<Links>,
) -> Result<quinn::ServerConfig, EngineError> {
    let links = links.clone();
    let observer: yiciban_transport::tls::RefusalObserver =
        Arc::new(move |claimed, reason: String| {
            let node = claimed.map_or_else(|| "(no identity)".to_string(), |id| id.node_id);
            tracing::warn!(peer = %node, %reason, "client certificate refused");
            links.record_refusal(&node, &reason);
        });
    Ok(material.quinn_server_observed(Some(observer))?)
}

/// How often the county looks at `crl.der`.
const CRL_RECHECK: Duration = Duration::from_secs(1);

/// At the county: reloads the server's TLS configuration whenever `crl.der` in `tls`
/// changes (`yiciban revoke` wrote it), so the next handshake of a revoked node is refused,
/// and closes the connections such nodes still hold. Runs until the process ends.
pub async fn watch_revocations(
    endpoint: quinn::Endpoint,
    tls: crate::enrol::TlsDir,
    links: Arc<Links>,
    store: Store,
    county_id: String,
) {
    let stamp = |tls: &crate::enrol::TlsDir| {
        let meta = std::fs::metadata(tls.path("crl.der")).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    };
    let mut seen = stamp(&tls);
    loop {
        tokio::time::sleep(CRL_RECHECK).await;
        let now = stamp(&tls);
        if now == seen {
            continue;
        }
        let reloaded = tls
            .material()
            .map_err(|e| e.to_string())
            .and_then(|m| server_config(&m, &links).map_err(|e| e.to_string()));
        match reloaded {
            Ok(config) => {
                endpoint.set_server_config(Some(config));
                seen = now;
                tracing::info!("revocation list reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "revocation list changed but cannot be loaded");
                continue;
            }
        }
        mark_revocations(&store, &tls, &county_id).await;
        for node in tls.revoked_nodes().unwrap_or_default() {
            if let Some(conn) = links.accepted().remove(&node) {
                tracing::warn!(peer = %node, "closing the link of a revoked node");
                conn.close(2u32.into(), b"revoked");
                links.record_refusal(&node, "certificate revoked: link closed");
            }
        }
    }
}

/// Accepts peers for as long as the endpoint is open; one task per connection. A handshake
/// that fails (another CA, no certificate, revoked) is refused and logged.
pub async fn accept_forever(ctx: SyncContext, endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(%remote, error = %e, "sync peer refused at the handshake");
                    // A refused certificate is recorded under the node it names already.
                    let named = ctx
                        .links
                        .refused()
                        .last()
                        .is_some_and(|r| unix_ms().saturating_sub(r.at_ms) < 2_000);
                    if !named {
                        ctx.links
                            .record_refusal(&remote.to_string(), &e.to_string());
                    }
                    return;
                }
            };
            let name = match connection_identity(&conn) {
                Ok(id) => id.node_id,
                Err(e) => {
                    tracing::warn!(%remote, error = %e, "sync peer refused: no valid identity");
                    conn.close(1u32.into(), b"identity");
                    return;
                }
            };
            tracing::info!(%remote, peer = %name, "sync peer connected");
            ctx.links.accepted().insert(name.clone(), conn.clone());
            let result = run_connection(&ctx, &conn, false, &name).await;
            {
                let mut accepted = ctx.links.accepted();
                if accepted
                    .get(&name)
                    .is_some_and(|c| c.stable_id() == conn.stable_id())
                {
                    accepted.remove(&name);
                }
            }
            let why = result
                .err()
                .map_or_else(|| "closed".to_string(), |e| e.to_string());
            tracing::info!(peer = %name, reason = %why, "sync peer gone");
            ctx.links.update(&name, |s| {
                s.connected = false;
                s.last_error = Some(why);
            });
        });
    }
}

/// Why a store refused a document for good, for people; `None` when asking again may help
/// (the store was busy, changes it depends on are missing).
fn refusal_of(e: &StoreError) -> Option<Msg> {
    match e {
        StoreError::Rejected(m) => Some(m.clone()),
        StoreError::NotLegal { zh, en } => Some(Msg::new(zh.clone(), en.clone())),
        StoreError::Doc(d @ crate::case_doc::DocError::TooLong { field, max }) => Some(Msg::new(
            format!("办件文档的字段 {field} 超过长度上限（{max}字节）"),
            d.to_string(),
        )),
        StoreError::Doc(d) => Some(Msg::new(
            "办件文档格式不正确，无法读取",
            format!("the case document is malformed: {d}"),
        )),
        _ => None,
    }
}

/// At the county: marks every node `revoked.tsv` names revoked in the registry of nodes
/// ([`crate::registry`]), at the time it was revoked, so every node refuses what it signs
/// after. Called at start and whenever the revocation list changes.
pub async fn mark_revocations(store: &Store, tls: &crate::enrol::TlsDir, county_id: &str) {
    for (node, at_ms) in tls.revocations().unwrap_or_default() {
        if let Err(e) = crate::registry::mark_revoked(store, &node, at_ms, county_id).await {
            tracing::warn!(%node, error = %e, "revocation not written into the registry");
        }
    }
}

/// Runs one session until the connection ends or fails. `initiator` opens the stream.
pub async fn run_connection(
    ctx: &SyncContext,
    conn: &quinn::Connection,
    initiator: bool,
    link: &str,
) -> Result<(), EngineError> {
    let store = &ctx.store;
    let peer = connection_identity(conn)?;
    let peer_role = Tier::parse(&peer.role).ok_or_else(|| {
        EngineError::Dial(format!(
            "peer {} has an unknown role {}",
            peer.node_id, peer.role
        ))
    })?;
    let peer_scope = Scope::of(peer_role, &peer.division);
    // The county lists every node that connects with a certificate it verified, so what
    // that node signs can be checked everywhere (nodes enrolled by an older build included).
    if ctx.scope == Scope::All
        && peer_role != Tier::County
        && let Ok(cert) = yiciban_transport::tls::connection_cert(conn)
        && let Err(e) = crate::registry::list_cert(store, &cert, &ctx.node_id).await
    {
        tracing::warn!(peer = %peer.node_id, error = %e, "the peer is not listed in the registry");
    }
    let view = ScopedStore {
        store,
        scope: &peer_scope,
    };
    ctx.links.update(link, |s| {
        s.peer = Some(peer.node_id.clone());
        s.peer_role = Some(peer.role.clone());
        s.peer_division = Some(peer.division.clone());
        s.connected = true;
        s.catch_up_us = None;
        s.catch_up_bytes = None;
        s.caught_up_at_us = None;
    });
    let (mut send, mut recv) = if initiator {
        conn.open_bi().await?
    } else {
        conn.accept_bi().await?
    };
    // A second stream measures the clocks: the side that dialled asks, the other answers.
    if initiator {
        tokio::spawn(probe_clock(conn.clone(), ctx.links.clone()));
    } else {
        tokio::spawn(answer_clock_probes(conn.clone()));
    }
    let cursor = store
        .cursor(&peer.node_id)?
        .map(|(epoch, seq)| Cursor { epoch, seq });
    let local = NodeInfo {
        node_id: ctx.node_id.clone(),
        store_epoch: store.epoch()?,
    };
    // How far this peer acknowledged our feed last time, if this store and the peer's scope
    // are those it was saved with: our offers go out behind our hello (a damaged row only
    // costs that).
    let scope_tag = peer_scope.key_prefix().unwrap_or_default();
    let early = match store.acked(&peer.node_id) {
        Ok(acked) => acked
            .filter(|a| a.own_epoch == local.store_epoch && a.scope == scope_tag)
            .map(|a| EarlyOffer {
                peer_epoch: a.peer_epoch,
                after: a.seq,
            }),
        Err(e) => {
            tracing::warn!(peer = %peer.node_id, error = %e, "acknowledged position not read");
            None
        }
    };
    let own_epoch = local.store_epoch;
    let started = Instant::now();
    let now_ms = || u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut session = Session::new(local, cursor).with_early_offer(early);
    let mut shell = Shell {
        view,
        peer: peer.node_id.clone(),
        scopes: vec![peer_scope.clone(), ctx.scope.clone()],
        from_county: peer_scope == Scope::All,
        at_county: ctx.scope == Scope::All,
        first_hop: (ctx.scope == Scope::All && peer_scope != Scope::All)
            .then(|| peer_scope.clone()),
        blobs: HashMap::new(),
        in_flight: VecDeque::new(),
        cursor_next: None,
        acked_next: None,
        links: &ctx.links,
        link: link.to_string(),
    };
    let first = Output {
        send: session.start(&view, now_ms())?,
        effects: Vec::new(),
    };
    let mut session_bytes = shell.perform(&mut session, &mut send, first).await?;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut tick = tokio::time::interval(TICK);
    let mut feed_moved = store.watch_feed();
    // The cursor save the writer is committing. The session reads on meanwhile: awaited
    // inline, a save queued behind a run's commit held the whole session for that commit.
    let mut cursor_saving: Option<CursorSave> = None;
    // The feed moved while runs of merges were in flight: offered once the oldest finishes
    // (and any finished with it).
    // Most often the move is those merges' own commit, whose echo offer then went out before
    // their Ack (~1 ms of a 100-case catch-up, timeline in docs/bench.md).
    let mut tick_after_run = false;
    let outcome: Result<(), EngineError> = async {
        loop {
            if cursor_saving.is_none()
                && let Some(save) = shell.link_save(own_epoch, &scope_tag)
            {
                cursor_saving = Some(save_link_after(None, store, &peer.node_id, save));
            }
            tokio::select! {
                saved = async { cursor_saving.as_mut()?.await.ok() }, if cursor_saving.is_some() => {
                    cursor_saving = None;
                    match saved {
                        Some(result) => result?,
                        // The save's task panicked or was cancelled: the writer is gone.
                        None => return Err(StoreError::Closed.into()),
                    }
                }
                // The oldest run of merges finished: told to the session in the order they came.
                merged = async { shell.in_flight.front_mut().map(|run| &mut run.task)?.await.ok() },
                    if !shell.in_flight.is_empty() =>
                {
                    let (out, merged) = shell.finish_run(&mut session, merged)?;
                    session_bytes += shell.perform(&mut session, &mut send, out).await?;
                    note_catch_up(&session, &ctx.links, link, started, session_bytes);
                    // Freed once the Ack is out: dropping a run of 100 merged cases took
                    // 0.3 ms before it.
                    drop(merged);
                    // Runs that finished together are all told first: the audit segment's
                    // run, committed in the cases' group, waited ~1 ms behind the echo offer.
                    let next_done = shell.in_flight.front().is_some_and(|r| r.task.is_finished());
                    if tick_after_run && !next_done {
                        tick_after_run = false;
                        let out = session.tick(&view, now_ms())?;
                        session_bytes += shell.perform(&mut session, &mut send, out).await?;
                    }
                }
                read = recv.read(&mut chunk), if shell.in_flight.len() < MAX_RUNS_IN_FLIGHT => {
                    let n = read?.ok_or(EngineError::Closed)?;
                    ctx.links.update(link, |s| s.bytes_received += n as u64);
                    session_bytes += n as u64;
                    buf.extend_from_slice(&chunk[..n]);
                    // Every whole frame read so far is handled before any effect runs, so the
                    // changes of many documents are merged in one group commit.
                    let mut out = Output::default();
                    let mut used_total = 0;
                    while let Some((frame, used)) = frame::decode(&buf[used_total..])? {
                        used_total += used;
                        let payload = frame::message_payload(frame)?;
                        let msg = proto::decode(&payload).map_err(ProtoError::from)?;
                        if let Message::Hello(hello) = &msg
                            && hello.node_id != peer.node_id
                        {
                            return Err(EngineError::IdentityMismatch { said: hello.node_id.clone(), certified: peer.node_id.clone() });
                        }
                        // With "sync messages out" and the writer's "group committed": a
                        // session's timeline (docs/bench.md).
                        let label = msg_label(&msg);
                        let handling = Instant::now();
                        let more = session.handle(&view, now_ms(), msg)?;
                        tracing::debug!(
                            peer = %peer.node_id,
                            msg = %label,
                            handle_us = handling.elapsed().as_micros() as u64,
                            "sync message in"
                        );
                        out.send.extend(more.send);
                        out.effects.extend(more.effects);
                    }
                    buf.drain(..used_total);
                    session_bytes += shell.perform(&mut session, &mut send, out).await?;
                    note_catch_up(&session, &ctx.links, link, started, session_bytes);
                }
                changed = feed_moved.changed() => {
                    if changed.is_ok() && !shell.in_flight.is_empty() {
                        tick_after_run = true;
                    } else if changed.is_ok() {
                        let out = session.tick(&view, now_ms())?;
                        session_bytes += shell.perform(&mut session, &mut send, out).await?;
                    }
                }
                _ = tick.tick() => {
                    if session.is_stalled(now_ms()) {
                        return Err(EngineError::Stalled);
                    }
                    let position = session.peer_position();
                    let caught_up = session.is_caught_up();
                    ctx.links.update(link, |s| {
                        s.peer_position = position.or(s.peer_position);
                        if caught_up {
                            s.last_sync_ms = Some(unix_ms());
                            s.last_error = None;
                        }
                    });
                }
            }
        }
    }
    .await;
    // A link that ends keeps the last cursor the session reached: saved after the one under
    // way, so the older never lands last.
    if let Some(save) = shell.link_save(own_epoch, &scope_tag) {
        let last = save_link_after(cursor_saving, store, &peer.node_id, save);
        let peer = peer.node_id.clone();
        tokio::spawn(async move {
            if let Ok(Err(e)) = last.await {
                tracing::warn!(%peer, error = %e, "sync cursor not saved at the end of the link");
            }
        });
    }
    // Our early offer was made on a store the peer no longer has: the next session offers
    // from the peer's cursor, as without one.
    if let Err(EngineError::Proto(ProtoError::EarlyOfferStale { held, now })) = &outcome {
        tracing::info!(peer = %peer.node_id, held, now, "early offer refused: the peer's store changed epoch");
        if let Err(e) = store.forget_acked(&peer.node_id).await {
            tracing::warn!(peer = %peer.node_id, error = %e, "acknowledged position not forgotten");
        }
    }
    outcome
}

/// A pending cursor save: the writer's answer.
type CursorSave = tokio::task::JoinHandle<Result<(), StoreError>>;

/// What a link saves for its peer at once: the newest cursor and acknowledged position
/// the session reached since the last save, either or both.
struct LinkSave {
    cursor: Option<Cursor>,
    acked: Option<AckedRecord>,
}

/// Saves `save` for `peer` once `before` (the save under way, if any) is done, so an older
/// cursor never lands after a newer one; one commit for both parts.
fn save_link_after(
    before: Option<CursorSave>,
    store: &Store,
    peer: &str,
    save: LinkSave,
) -> CursorSave {
    let (store, peer) = (store.clone(), peer.to_string());
    tokio::spawn(async move {
        if let Some(before) = before {
            let _ = before.await;
        }
        let cursor = save.cursor.map(|c| (c.epoch, c.seq));
        store.save_link(&peer, cursor, save.acked).await
    })
}

/// Records the session's first catch-up on its link: time since the start and bytes.
fn note_catch_up(session: &Session, links: &Links, link: &str, started: Instant, bytes: u64) {
    if session.is_caught_up() {
        let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let at = unix_us();
        links.update(link, |s| {
            s.catch_up_us.get_or_insert(us);
            s.catch_up_bytes.get_or_insert(bytes);
            s.caught_up_at_us.get_or_insert(at);
        });
    }
}

/// Frames (compressing where it pays) and writes a run of messages in one stream write.
async fn write_all(send: &mut quinn::SendStream, msgs: &[Message]) -> Result<u64, EngineError> {
    let encoding = Instant::now();
    let mut bytes = Vec::new();
    for msg in msgs {
        bytes.extend_from_slice(&frame::message_frame(proto::encode(msg))?.encode());
    }
    if !bytes.is_empty() {
        tracing::debug!(
            msgs = %msgs.iter().map(msg_label).collect::<Vec<_>>().join(","),
            bytes = bytes.len(),
            encode_us = encoding.elapsed().as_micros() as u64,
            "sync messages out"
        );
        send.write_all(&bytes).await?;
    }
    Ok(bytes.len() as u64)
}

struct Shell<'a> {
    view: ScopedStore<'a>,
    peer: String,
    /// The scopes a merged case must fall in: the peer's and this node's.
    scopes: Vec<Scope>,
    /// The peer's certificate says county: it may publish county-wide documents.
    from_county: bool,
    /// This node is the county: it keeps its peers' audit trails.
    at_county: bool,
    /// At the county, a village's or a town's scope: its changes are checked at the first
    /// hop ([`crate::store::admit`]).
    first_hop: Option<Scope>,
    links: &'a Links,
    link: String,
    /// Blobs being assembled: hash → bytes so far.
    blobs: HashMap<[u8; 32], Vec<u8>>,
    /// Runs of case merges and audit segments handed to the store, oldest first.
    in_flight: VecDeque<Run>,
    /// The newest cursor the session asked to save and not yet handed to the writer; one
    /// save at a time, so saves coalesce and never pass each other.
    cursor_next: Option<Cursor>,
    /// How far the peer acknowledged our feed, to save with the next cursor save.
    acked_next: Option<EarlyOffer>,
}

/// Merges handed to the store ([`Shell::start_cases`], [`Shell::start_audit`]): they go on
/// while the session reads on, and are told to it in the order they started.
struct Run {
    ids: Vec<String>,
    task: tokio::task::JoinHandle<Merged>,
}

/// Each case's outcome of a run of merges, in the order of the run's ids.
type MergedCases = Vec<Result<Arc<Case>, StoreError>>;

/// What a [`Run`] came to.
enum Merged {
    /// Each case's outcome, in the order of the run's ids.
    Cases(MergedCases),
    /// An audit segment: the last entry of the peer's trail the county now holds.
    Audit(Result<u64, StoreError>),
}

impl Shell<'_> {
    /// The cursor and acknowledged position to save next, if either moved since the last
    /// save; `own_epoch` and `scope` are stored with the acknowledgement.
    fn link_save(&mut self, own_epoch: u64, scope: &str) -> Option<LinkSave> {
        let save = LinkSave {
            cursor: self.cursor_next.take(),
            acked: self.acked_next.take().map(|a| AckedRecord {
                own_epoch,
                peer_epoch: a.peer_epoch,
                seq: a.after,
                scope: scope.to_string(),
            }),
        };
        (save.cursor.is_some() || save.acked.is_some()).then_some(save)
    }

    /// Sends the messages and performs the effects of `out`, and of whatever they lead to;
    /// returns the bytes written.
    async fn perform(
        &mut self,
        session: &mut Session,
        send: &mut quinn::SendStream,
        out: Output,
    ) -> Result<u64, EngineError> {
        let mut queue = VecDeque::from([out]);
        let mut total = 0u64;
        while let Some(out) = queue.pop_front() {
            let sent = write_all(send, &out.send).await?;
            if sent > 0 {
                self.links.update(&self.link, |s| s.bytes_sent += sent);
            }
            total += sent;
            let mut effects = out.effects.into_iter().peekable();
            while let Some(effect) = effects.next() {
                // A run of case merges goes to the writer at once: one group commit.
                if matches!(&effect, Effect::Apply { doc_id, .. } if is_case_doc(doc_id))
                    && let Effect::Apply { doc_id, changes } = effect
                {
                    let mut run = vec![(doc_id, changes)];
                    while let Some(Effect::Apply { doc_id, .. }) = effects.peek()
                        && is_case_doc(doc_id)
                    {
                        if let Some(Effect::Apply { doc_id, changes }) = effects.next() {
                            run.push((doc_id, changes));
                        }
                    }
                    self.start_cases(run);
                } else if let Some(more) = self.effect(session, effect).await? {
                    queue.push_back(more);
                }
            }
        }
        Ok(total)
    }

    /// Hands the changes of many cases to the store, merged concurrently (the writer
    /// commits them as one group); [`Shell::finish_cases`] tells the session once they are
    /// durable.
    fn start_cases(&mut self, run: Vec<(String, Vec<Vec<u8>>)>) {
        let store = self.view.store.clone();
        tracing::debug!(
            peer = %self.peer,
            cases = run.len(),
            bytes = run.iter().flat_map(|(_, c)| c).map(Vec::len).sum::<usize>(),
            "sync apply cases"
        );
        let ids: Vec<String> = run.iter().map(|(d, _)| d.clone()).collect();
        let (peer, scopes, first_hop) = (
            self.peer.clone(),
            self.scopes.clone(),
            self.first_hop.clone(),
        );
        // A run alone streams to the writer; one behind others goes whole, so the writer
        // can take it with them (`RunMode`).
        let mode = if self.in_flight.iter().any(|r| !r.task.is_finished()) {
            RunMode::Whole
        } else {
            RunMode::Streamed
        };
        let task = tokio::spawn(async move {
            Merged::Cases(
                store
                    .apply_changes_many(&peer, run, scopes, first_hop, mode)
                    .await,
            )
        });
        self.in_flight.push_back(Run { ids, task });
    }

    /// Hands an audit segment to the store like a run of cases: a segment near full takes
    /// the writer a few milliseconds, which the merges of the cases beside it now overlap.
    fn start_audit(&mut self, doc_id: String, changes: Vec<Vec<u8>>) {
        let store = self.view.store.clone();
        let (peer, at_county) = (self.peer.clone(), self.at_county);
        let ids = vec![doc_id.clone()];
        let task = tokio::spawn(async move {
            Merged::Audit(
                store
                    .apply_audit_changes(&peer, at_county, &doc_id, changes)
                    .await,
            )
        });
        self.in_flight.push_back(Run { ids, task });
    }

    /// Tells the session about the oldest run, `merged` its outcome (`None` if its task
    /// failed: every document of it counts as not applied, and is asked for again), and asks
    /// for the photos the merged cases reference that are not held. The merged cases come
    /// back for the caller to drop once the session's answer is sent.
    fn finish_run(
        &mut self,
        session: &mut Session,
        merged: Option<Merged>,
    ) -> Result<(Output, MergedCases), EngineError> {
        let Some(Run { ids, .. }) = self.in_flight.pop_front() else {
            return Ok((Output::default(), Vec::new()));
        };
        let store = self.view.store;
        let cases = match merged {
            Some(Merged::Cases(cases)) => cases,
            Some(Merged::Audit(Ok(held))) => {
                self.links.update(&self.link, |s| {
                    s.audit_held = Some(s.audit_held.unwrap_or(0).max(held));
                });
                Vec::new()
            }
            Some(Merged::Audit(Err(e))) => {
                let doc = ids.first().map_or("", String::as_str);
                tracing::warn!(peer = %self.peer, doc = %doc, error = %e, "audit segment refused");
                if let StoreError::Refused(why) = &e {
                    let msg = Msg::new("节点审计记录不连续或被改动，已拒收", why.clone());
                    let refused = self.refuse(session, doc, msg);
                    let applied =
                        session.applied_all(&self.view, ids.iter().map(String::as_str))?;
                    let mut out = refused;
                    out.send.extend(applied.send);
                    out.effects.extend(applied.effects);
                    return Ok((out, Vec::new()));
                }
                Vec::new()
            }
            None => Vec::new(),
        };
        let mut results = cases.iter();
        let mut out = Output::default();
        for doc_id in &ids {
            match results.next() {
                Some(Ok(case)) => {
                    // Photos travel after the documents: ask for the ones not held.
                    for hash in case.materials.iter().filter_map(|m| m.blob.as_deref()) {
                        let Ok(raw) =
                            <[u8; 32]>::try_from(hex::decode(hash).unwrap_or_default().as_slice())
                        else {
                            continue;
                        };
                        if store.blob_exists(hash) {
                            continue;
                        }
                        let held = self.blobs.get(&raw).map_or(0, |b| b.len() as u64);
                        let more = session.want_blob(raw, held)?;
                        out.send.extend(more.send);
                        out.effects.extend(more.effects);
                    }
                }
                // Refused for good: quarantined here, the peer told, its entries settled, so
                // the session goes on with the rest and no backlog waits on it.
                Some(Err(e)) if refusal_of(e).is_some() => {
                    let msg = refusal_of(e).unwrap_or_else(|| Msg::new("", ""));
                    let refused = self.refuse(session, doc_id, msg);
                    out.send.extend(refused.send);
                    out.effects.extend(refused.effects);
                }
                // Otherwise the session asks again a bounded number of times, then ends.
                Some(Err(e)) => {
                    tracing::warn!(peer = %self.peer, doc = %doc_id, error = %e, "changes refused");
                }
                None => {}
            }
        }
        let applied = session.applied_all(&self.view, ids.iter().map(String::as_str))?;
        out.send.extend(applied.send);
        out.effects.extend(applied.effects);
        Ok((out, cases))
    }

    /// Refuses `doc_id` for good: quarantined here (recorded on its own task), the peer
    /// told, its entries settled, so the session goes on with the rest and no backlog
    /// waits on it.
    fn refuse(&self, session: &mut Session, doc_id: &str, msg: Msg) -> Output {
        tracing::warn!(peer = %self.peer, doc = %doc_id, reason = %msg.en, "document refused: quarantined");
        let (store, doc, peer, at_county) = (
            self.view.store.clone(),
            doc_id.to_string(),
            self.peer.clone(),
            self.at_county,
        );
        let zh = msg.zh.clone();
        tokio::spawn(async move {
            if let Err(e) = store
                .quarantine(&doc, &peer, Direction::Received, &msg, at_county)
                .await
            {
                tracing::error!(doc = %doc, error = %e, "quarantine not recorded");
            }
        });
        session.refused(doc_id, &zh)
    }

    async fn effect(
        &mut self,
        session: &mut Session,
        effect: Effect,
    ) -> Result<Option<Output>, EngineError> {
        if let Effect::Apply { doc_id, changes } = &effect {
            tracing::debug!(
                peer = %self.peer,
                doc = %doc_id,
                bytes = changes.iter().map(Vec::len).sum::<usize>(),
                "sync apply"
            );
        }
        match effect {
            Effect::Apply { doc_id, changes } if crate::county_doc::is_county_doc(&doc_id) => {
                let store = self.view.store;
                let result = store
                    .apply_county_changes(&self.peer, self.from_county, &doc_id, changes)
                    .await;
                if let Err(e) = result {
                    tracing::warn!(peer = %self.peer, doc = %doc_id, error = %e, "changes refused");
                    if let StoreError::Refused(why) = e {
                        let msg = Msg::new("县级文档只能由县级节点下发，已拒收", why);
                        let mut out = self.refuse(session, &doc_id, msg);
                        let applied = session.applied(&self.view, &doc_id)?;
                        out.send.extend(applied.send);
                        out.effects.extend(applied.effects);
                        return Ok(Some(out));
                    }
                }
                Ok(Some(session.applied(&self.view, &doc_id)?))
            }
            Effect::Apply { doc_id, changes } if crate::health::is_health_doc(&doc_id) => {
                let store = self.view.store;
                let result = store
                    .apply_health_changes(&self.peer, self.at_county, &doc_id, changes)
                    .await;
                if let Err(e) = result {
                    tracing::warn!(peer = %self.peer, doc = %doc_id, error = %e, "health report refused");
                    if let StoreError::Refused(why) = e {
                        let msg = Msg::new("健康报告只能由报告的节点发往县级，已拒收", why);
                        let mut out = self.refuse(session, &doc_id, msg);
                        let applied = session.applied(&self.view, &doc_id)?;
                        out.send.extend(applied.send);
                        out.effects.extend(applied.effects);
                        return Ok(Some(out));
                    }
                }
                Ok(Some(session.applied(&self.view, &doc_id)?))
            }
            Effect::Apply { doc_id, changes } if crate::user_dir::is_user_dir_doc(&doc_id) => {
                let store = self.view.store;
                let result = store
                    .apply_user_dir_changes(&self.peer, self.from_county, &doc_id, changes)
                    .await;
                if let Err(e) = result {
                    tracing::warn!(peer = %self.peer, doc = %doc_id, error = %e, "user directory refused");
                    if let StoreError::Refused(why) = e {
                        let msg = Msg::new("用户目录只能由县级节点下发，已拒收", why);
                        let mut out = self.refuse(session, &doc_id, msg);
                        let applied = session.applied(&self.view, &doc_id)?;
                        out.send.extend(applied.send);
                        out.effects.extend(applied.effects);
                        return Ok(Some(out));
                    }
                }
                Ok(Some(session.applied(&self.view, &doc_id)?))
            }
            Effect::Apply { doc_id, changes } if crate::audit_doc::is_audit_doc(&doc_id) => {
                self.start_audit(doc_id, changes);
                Ok(None)
            }
            Effect::Apply { doc_id, changes } => {
                self.start_cases(vec![(doc_id, changes)]);
                Ok(None)
            }
            Effect::SaveCursor { cursor, .. } => {
                self.cursor_next = Some(cursor);
                Ok(None)
            }
            Effect::SaveAcked { acked, .. } => {
                self.acked_next = Some(acked);
                Ok(None)
            }
            Effect::StoreBlobChunk {
                hash,
                offset,
                total_len,
                bytes,
            } => {
                self.blob_chunk(hash, offset, total_len, bytes).await?;
                Ok(None)
            }
            Effect::BlobMissing { hash } => {
                tracing::info!(peer = %self.peer, blob = %hex::encode(hash), "peer does not hold blob");
                Ok(None)
            }
            Effect::Refused { doc_id, reason } => {
                tracing::warn!(peer = %self.peer, doc = %doc_id, %reason, "the peer refused a document: quarantined");
                let msg = Msg::new(reason.clone(), reason);
                self.view
                    .store
                    .quarantine(&doc_id, &self.peer, Direction::Sent, &msg, false)
                    .await?;
                Ok(None)
            }
        }
    }

    async fn blob_chunk(
        &mut self,
        hash: [u8; 32],
        offset: u64,
        total_len: u64,
        bytes: Vec<u8>,
    ) -> Result<(), EngineError> {
        if !self.blobs.contains_key(&hash) && self.blobs.len() >= MAX_BLOBS_IN_FLIGHT {
            return Ok(()); // asked again later from the held offset
        }
        let max = self.view.store.blob_max_bytes() as u64;
        let held = self.blobs.entry(hash).or_default();
        if offset != held.len() as u64 || total_len > max {
            return Ok(());
        }
        held.extend_from_slice(&bytes);
        if held.len() as u64 >= total_len
            && let Some(whole) = self.blobs.remove(&hash)
        {
            // A blob that fails its hash is the peer's fault, not the link's: drop it and go
            // on; it is asked for again later.
            if let Err(e) = self
                .view
                .store
                .put_peer_blob(&self.peer, &hex::encode(hash), whole)
                .await
            {
                tracing::warn!(peer = %self.peer, blob = %hex::encode(hash), error = %e, "blob refused");
            }
        }
        Ok(())
    }
}

/// A message's kind and, for a batch, its entries: `Offer[100]`.
fn msg_label(m: &Message) -> String {
    match m {
        Message::Hello(_) => "Hello".into(),
        Message::Offer { entries, .. } => {
            let tips = entries.iter().filter(|e| e.tip.is_some()).count();
            let derived = entries
                .iter()
                .filter(|e| e.tip.as_ref().is_some_and(|t| t.derived))
                .count();
            match (tips, derived) {
                (0, _) => format!("Offer[{}]", entries.len()),
                (tips, 0) => format!("Offer[{}, {tips} with tips]", entries.len()),
                (tips, derived) => {
                    format!(
                        "Offer[{}, {tips} with tips, {derived} derived]",
                        entries.len()
                    )
                }
            }
        }
        Message::FeedEnd { .. } => "FeedEnd".into(),
        Message::Digest { entries, .. } => format!("Digest[{}]", entries.len()),
        Message::Want { .. } => "Want".into(),
        Message::Changes { .. } => "Changes".into(),
        Message::Ack { .. } => "Ack".into(),
        Message::BlobWant { .. } => "BlobWant".into(),
        Message::BlobChunk { .. } => "BlobChunk".into(),
        Message::BlobMissing { .. } => "BlobMissing".into(),
        Message::WantMany { wants } => format!("WantMany[{}]", wants.len()),
        Message::Docs { docs } => format!("Docs[{}]", docs.len()),
        Message::Refused { .. } => "Refused".into(),
    }
}
