//! Length-prefixed frames: `u32` big-endian length of what follows, one kind byte, the payload.
//!
//! The decoder never trusts a length: it checks it against [`MAX_FRAME_LEN`] before it
//! allocates, and reports a frame that is not complete yet as `Ok(None)`.

use thiserror::Error;

/// The largest frame body (kind byte and payload) a peer may send: 16 MiB.
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// Bytes before the body: the big-endian `u32` length.
pub const HEADER_LEN: usize = 4;

/// What a frame carries. The byte values are part of the wire format: never reuse one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FrameKind {
    /// Handshake: protocol version and node identity.
    Hello = 1,
    /// Change-feed cursor: "send me what changed after this sequence number".
    Since = 2,
    /// Automerge changes of one document.
    Changes = 3,
    /// One chunk of a content-addressed blob.
    BlobChunk = 4,
    /// Acknowledgement of a cursor position.
    Ack = 5,
    /// A refusal or protocol error, with a reason.
    Error = 6,
    /// One `yiciban/1` protocol message ([`crate::proto::Message`], versioned inside).
    Message = 7,
}

impl FrameKind {
    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::Hello,
            2 => Self::Since,
            3 => Self::Changes,
            4 => Self::BlobChunk,
            5 => Self::Ack,
            6 => Self::Error,
            7 => Self::Message,
            _ => return None,
        })
    }
}

/// One frame: its kind and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub payload: Vec<u8>,
}

/// Why bytes are not a frame.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    #[error("frame of {len} bytes is larger than the limit of {MAX_FRAME_LEN} bytes")]
    TooLarge { len: usize },
    #[error("frame has an empty body (no kind byte)")]
    Empty,
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
}

impl Frame {
    /// A frame, refused if its payload would break the size limit.
    pub fn new(kind: FrameKind, payload: Vec<u8>) -> Result<Self, FrameError> {
        let len = payload.len() + 1;
        if len > MAX_FRAME_LEN {
            return Err(FrameError::TooLarge { len });
        }
        Ok(Self { kind, payload })
    }

    /// The frame's bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let body_len = self.payload.len() + 1;
        let mut out = Vec::with_capacity(HEADER_LEN + body_len);
        // `new` bounds the body to MAX_FRAME_LEN, which fits in a u32.
        out.extend_from_slice(&(body_len as u32).to_be_bytes());
        out.push(self.kind as u8);
        out.extend_from_slice(&self.payload);
        out
    }
}

/// Decodes one frame from the front of `buf`.
///
/// Returns `Ok(Some((frame, bytes_used)))`, `Ok(None)` when `buf` holds only part of a frame,
/// or an error when the bytes can never become a valid frame.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let mut len_bytes = [0u8; HEADER_LEN];
    len_bytes.copy_from_slice(header);
    let len = u32::from_be_bytes(len_bytes) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge { len });
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    let Some(body) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
        return Ok(None);
    };
    let kind = FrameKind::from_byte(body[0]).ok_or(FrameError::UnknownKind(body[0]))?;
    let frame = Frame {
        kind,
        payload: body[1..].to_vec(),
    };
    Ok(Some((frame, HEADER_LEN + len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn truncated_frame_is_incomplete_not_an_error() {
        let bytes = Frame::new(FrameKind::Changes, vec![7; 100])
            .unwrap()
            .encode();
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn oversized_length_is_refused_before_allocation() {
        let mut bytes = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes().to_vec();
        bytes.push(FrameKind::Hello as u8);
        assert_eq!(
            decode(&bytes),
            Err(FrameError::TooLarge {
                len: MAX_FRAME_LEN + 1
            })
        );
        assert!(Frame::new(FrameKind::Hello, vec![0; MAX_FRAME_LEN]).is_err());
    }

    #[test]
    fn unknown_kind_and_empty_body_are_errors() {
        assert_eq!(decode(&[0, 0, 0, 1, 99]), Err(FrameError::UnknownKind(99)));
        assert_eq!(decode(&[0, 0, 0, 0]), Err(FrameError::Empty));
    }

    proptest! {
        // The fuzz property: no input makes the decoder panic, and whatever it accepts
        // re-encodes to exactly the bytes it consumed.
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(Some((frame, used))) = decode(&bytes) {
                prop_assert_eq!(frame.encode(), bytes[..used].to_vec());
            }
        }

        #[test]
        fn roundtrip(kind in 1u8..=7, payload in proptest::collection::vec(any::<u8>(), 0..512)) {
            let kind = FrameKind::from_byte(kind).unwrap();
            let frame = Frame::new(kind, payload).unwrap();
            let mut bytes = frame.encode();
            bytes.extend_from_slice(b"next");
            let (back, used) = decode(&bytes).unwrap().unwrap();
            prop_assert_eq!(back, frame);
            prop_assert_eq!(&bytes[used..], b"next");
        }
    }
}
