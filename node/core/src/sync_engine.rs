//! The sync engine: one [`Session`] of `yiciban/1` over one QUIC connection, against the store.
//!
//! The session decides; this shell moves bytes and performs its effects: merging changes
//! through the store's writer, saving cursors after what they cover is durable, assembling
//! blob chunks and storing a blob only once its hash checks out. The peer's node id comes
//! from its verified certificate, and its `Hello` must name the same node.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use thiserror::Error;
use yiciban_sync::frame::{self, Frame, FrameKind};
use yiciban_sync::proto::{self, Cursor, Message};
use yiciban_sync::session::{Effect, NodeInfo, Output, ProtoError, Session};
use yiciban_transport::tls::{TlsError, connection_identity};

use crate::store::{Store, StoreError};

/// How often the engine offers what the local feed gained.
const TICK: Duration = Duration::from_millis(100);
/// Bytes read from the stream at a time.
const READ_CHUNK: usize = 64 * 1024;
/// Blobs assembled at once from one peer; each is bounded by the store's blob limit.
const MAX_BLOBS_IN_FLIGHT: usize = 8;

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

/// What the node shows about one link: connected or not, the last time it was caught up.
#[derive(Debug, Default)]
pub struct LinkStatus {
    inner: Mutex<LinkSnapshot>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkSnapshot {
    pub peer: Option<String>,
    pub connected: bool,
    /// Unix milliseconds of the last moment both feeds were caught up.
    pub last_sync_ms: Option<u64>,
    pub last_error: Option<String>,
    pub attempts: u64,
}

impl LinkStatus {
    pub fn snapshot(&self) -> LinkSnapshot {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut LinkSnapshot)) {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Keeps a link to `addr` up for as long as the task runs: dial, run the session, and after
/// any failure wait with capped exponential backoff (reset once a connection has synced).
pub async fn dial_forever(
    store: Store,
    node_id: String,
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
    dial: DialConfig,
    status: std::sync::Arc<LinkStatus>,
) {
    let mut backoff = dial.backoff_min;
    loop {
        status.update(|s| s.attempts += 1);
        let result = async {
            let connecting = endpoint
                .connect(addr, yiciban_transport::identity::SERVER_NAME)
                .map_err(|e| EngineError::Dial(e.to_string()))?;
            let conn = tokio::time::timeout(dial.connect_timeout, connecting)
                .await
                .map_err(|_| {
                    EngineError::Dial(format!("no handshake within {:?}", dial.connect_timeout))
                })??;
            run_connection(&store, &node_id, &conn, true, &status).await
        }
        .await;
        let synced = status
            .snapshot()
            .last_sync_ms
            .is_some_and(|t| unix_ms().saturating_sub(t) < 60_000);
        let why = result
            .err()
            .map_or_else(|| "closed".to_string(), |e| e.to_string());
        tracing::warn!(%addr, error = %why, "sync link down; retrying");
        status.update(|s| {
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

/// Runs one session until the connection ends or fails. `initiator` opens the stream.
pub async fn run_connection(
    store: &Store,
    node_id: &str,
    conn: &quinn::Connection,
    initiator: bool,
    status: &LinkStatus,
) -> Result<(), EngineError> {
    let peer = connection_identity(conn)?;
    status.update(|s| {
        s.peer = Some(peer.node_id.clone());
        s.connected = true;
    });
    let (mut send, mut recv) = if initiator {
        conn.open_bi().await?
    } else {
        conn.accept_bi().await?
    };
    let cursor = store
        .cursor(&peer.node_id)?
        .map(|(epoch, seq)| Cursor { epoch, seq });
    let local = NodeInfo {
        node_id: node_id.to_string(),
        store_epoch: store.epoch()?,
    };
    let started = Instant::now();
    let now_ms = || u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut session = Session::new(local, cursor);
    let mut shell = Shell {
        store,
        peer: peer.node_id.clone(),
        blobs: HashMap::new(),
    };
    for msg in session.start(now_ms()) {
        write(&mut send, &msg).await?;
    }
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            read = recv.read(&mut chunk) => {
                let n = read?.ok_or(EngineError::Closed)?;
                buf.extend_from_slice(&chunk[..n]);
                while let Some((frame, used)) = frame::decode(&buf)? {
                    buf.drain(..used);
                    let msg = proto::decode(&frame.payload).map_err(ProtoError::from)?;
                    if let Message::Hello(hello) = &msg
                        && hello.node_id != peer.node_id
                    {
                        return Err(EngineError::IdentityMismatch { said: hello.node_id.clone(), certified: peer.node_id });
                    }
                    let out = session.handle(store, now_ms(), msg)?;
                    shell.perform(&mut session, &mut send, out).await?;
                }
            }
            _ = tick.tick() => {
                if session.is_stalled(now_ms()) {
                    return Err(EngineError::Stalled);
                }
                let out = session.tick(store, now_ms())?;
                shell.perform(&mut session, &mut send, out).await?;
                if session.is_caught_up() {
                    status.update(|s| s.last_sync_ms = Some(unix_ms()));
                }
            }
        }
    }
}

async fn write(send: &mut quinn::SendStream, msg: &Message) -> Result<(), EngineError> {
    let frame = Frame::new(FrameKind::Message, proto::encode(msg))?;
    send.write_all(&frame.encode()).await?;
    Ok(())
}

struct Shell<'a> {
    store: &'a Store,
    peer: String,
    /// Blobs being assembled: hash → bytes so far.
    blobs: HashMap<[u8; 32], Vec<u8>>,
}

impl Shell<'_> {
    /// Sends the messages and performs the effects of `out`, and of whatever they lead to.
    async fn perform(
        &mut self,
        session: &mut Session,
        send: &mut quinn::SendStream,
        out: Output,
    ) -> Result<(), EngineError> {
        let mut queue = VecDeque::from([out]);
        while let Some(out) = queue.pop_front() {
            for msg in &out.send {
                write(send, msg).await?;
            }
            for effect in out.effects {
                if let Some(more) = self.effect(session, effect).await? {
                    queue.push_back(more);
                }
            }
        }
        Ok(())
    }

    async fn effect(
        &mut self,
        session: &mut Session,
        effect: Effect,
    ) -> Result<Option<Output>, EngineError> {
        match effect {
            Effect::Apply { doc_id, changes } => {
                if let Err(e) = self.store.apply_changes(&doc_id, changes).await {
                    // The session asks again a bounded number of times, then ends: a refused
                    // document never blocks the cursor silently.
                    tracing::warn!(peer = %self.peer, doc = %doc_id, error = %e, "changes refused");
                }
                Ok(Some(session.applied(self.store, &doc_id)?))
            }
            Effect::SaveCursor { cursor, .. } => {
                self.store
                    .save_cursor(&self.peer, cursor.epoch, cursor.seq)
                    .await?;
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
        let max = self.store.blob_max_bytes() as u64;
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
            if let Err(e) = self.store.put_peer_blob(&hex::encode(hash), whole).await {
                tracing::warn!(peer = %self.peer, blob = %hex::encode(hash), error = %e, "blob refused");
            }
        }
        Ok(())
    }
}
