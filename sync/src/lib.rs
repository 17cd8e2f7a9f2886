//! # yiciban-sync
//!
//! The replication protocol of yiciban, kept free of IO, of cases and of redb.
//!
//! For now it holds the two pieces everything else replicates through:
//!
//! - [`frame`]: the length-prefixed frame codec. Every length is checked against
//!   [`frame::MAX_FRAME_LEN`] before anything is allocated, and a truncated or hostile frame
//!   is an error, never a panic.
//! - [`store`]: the [`store::ReplicaStore`] trait a node's storage implements so the protocol
//!   can read its change feed and exchange Automerge changes as opaque bytes.
//!
//! ```
//! use yiciban_sync::frame::{Frame, FrameKind, decode};
//! let frame = Frame::new(FrameKind::Hello, b"yiciban/1".to_vec()).unwrap();
//! let bytes = frame.encode();
//! let (back, used) = decode(&bytes).unwrap().unwrap();
//! assert_eq!((back, used), (frame, bytes.len()));
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod frame;
pub mod store;

/// The ALPN and protocol name that every handshake states.
pub const PROTOCOL: &str = "yiciban/1";
