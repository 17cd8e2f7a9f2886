//! The sync engine: one [`Session`] of `yiciban/1` over one QUIC connection, against the store.
//!
//! The session decides; this shell moves bytes and performs its effects: merging changes
//! through the store's writer, saving cursors after what they cover is durable, assembling
//! blob chunks and storing a blob only once its hash checks out. The peer's node id comes
//! from its verified certificate, and its `Hello` must name the same node.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

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
    #[error("peer closed the stream")]
    Closed,
    #[error("peer silent while work was outstanding")]
    Stalled,
}

/// Runs one session until the connection ends or fails. `initiator` opens the stream.
pub async fn run_connection(
    store: &Store,
    node_id: &str,
    conn: &quinn::Connection,
    initiator: bool,
) -> Result<(), EngineError> {
    let peer = connection_identity(conn)?;
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
            self.store.put_peer_blob(&hex::encode(hash), whole).await?;
        }
        Ok(())
    }
}
