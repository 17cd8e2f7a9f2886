//! # yiciban-sync
//!
//! The replication protocol of yiciban, kept free of IO, of cases and of redb. Documents are
//! opaque here: an id, heads (32-byte change hashes) and changes (bytes).
//!
//! - [`frame`]: the length-prefixed frame codec. Every length is checked against
//!   [`frame::MAX_FRAME_LEN`] before anything is allocated, and a truncated or hostile frame
//!   is an error, never a panic.
//! - [`proto`]: the `yiciban/1` messages (hello with feed cursors, offers, wants, changes,
//!   acks, the digest fallback, blob chunks) and their bounded binary codec.
//! - [`session`]: the IO-less state machine for one peer connection. It takes messages and
//!   the time and returns messages and effects; the QUIC shell around it is thin.
//! - [`store`]: the [`store::ReplicaStore`] trait a node's storage implements so the protocol
//!   can read its change feed, its documents' changes and its blobs.
//! - `mem` (feature `test-utils`): an in-memory store for tests and the simulation.
//!
//! ```
//! use yiciban_sync::frame::{Frame, FrameKind, decode};
//! use yiciban_sync::proto::{self, Message};
//! let msg = Message::FeedEnd { head_seq: 42 };
//! let frame = Frame::new(FrameKind::Message, proto::encode(&msg)).unwrap();
//! let bytes = frame.encode();
//! let (back, used) = decode(&bytes).unwrap().unwrap();
//! assert_eq!(used, bytes.len());
//! assert_eq!(proto::decode(&back.payload).unwrap(), msg);
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod frame;
#[cfg(feature = "test-utils")]
pub mod mem;
pub mod proto;
pub mod session;
pub mod store;

/// The ALPN and protocol name that every handshake states.
pub const PROTOCOL: &str = "yiciban/1";
