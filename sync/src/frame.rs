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
    /// One `yiciban/1` message compressed as a single zstd frame that states its content
    /// size ([`message_frame`] picks it when that saves bytes).
    Zstd = 8,
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
            8 => Self::Zstd,
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
    #[error("a {0:?} frame does not carry a message")]
    NotAMessage(FrameKind),
    #[error("compressed message: {0}")]
    Compressed(&'static str),
}

/// Message payloads from this length on are compressed when that saves bytes; shorter ones
/// (acks, feed ends, small offers) are not worth the zstd frame header.
pub const COMPRESS_FROM: usize = 200;
/// zstd level 1: a 1% catch-up's offer (100 comments and an audit segment, 58 KB) took
/// ~0.45 ms to compress at the library default of 3, on the path of every catch-up.
const ZSTD_LEVEL: i32 = 1;

/// The frame for an encoded message: `Zstd` when that is smaller, else `Message`.
pub fn message_frame(payload: Vec<u8>) -> Result<Frame, FrameError> {
    if payload.len() >= COMPRESS_FROM
        && let Ok(packed) = zstd::bulk::compress(&payload, ZSTD_LEVEL)
        && packed.len() < payload.len()
    {
        return Frame::new(FrameKind::Zstd, packed);
    }
    Frame::new(FrameKind::Message, payload)
}

/// The encoded message a `Message` or `Zstd` frame carries. A compressed payload must state
/// its size, which is checked against [`MAX_FRAME_LEN`] before anything is allocated.
pub fn message_payload(frame: Frame) -> Result<Vec<u8>, FrameError> {
    match frame.kind {
        FrameKind::Message => Ok(frame.payload),
        FrameKind::Zstd => {
            let size = zstd::zstd_safe::get_frame_content_size(&frame.payload)
                .map_err(|_| FrameError::Compressed("not a zstd frame"))?
                .ok_or(FrameError::Compressed("content size not stated"))?;
            let size = usize::try_from(size)
                .ok()
                .filter(|&s| s <= MAX_FRAME_LEN)
                .ok_or(FrameError::Compressed("content larger than a frame"))?;
            let out = zstd::bulk::decompress(&frame.payload, size)
                .map_err(|_| FrameError::Compressed("corrupt zstd data"))?;
            if out.len() != size {
                return Err(FrameError::Compressed("content size does not match"));
            }
            Ok(out)
        }
        other => Err(FrameError::NotAMessage(other)),
    }
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

    #[test]
    fn long_messages_travel_compressed_and_come_back_whole() {
        let long: Vec<u8> = (0..5000u32).flat_map(|i| (i % 7).to_be_bytes()).collect();
        let frame = message_frame(long.clone()).unwrap();
        assert_eq!(frame.kind, FrameKind::Zstd);
        assert!(frame.payload.len() < long.len() / 4);
        assert_eq!(message_payload(frame).unwrap(), long);
        let short = message_frame(vec![1, 2, 3]).unwrap();
        assert_eq!(short.kind, FrameKind::Message);
        assert_eq!(message_payload(short).unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn compressed_frames_that_lie_about_their_size_are_refused() {
        let frame = message_frame(vec![0; 4096]).unwrap();
        // Without a stated size.
        let mut c = zstd::bulk::Compressor::new(3).unwrap();
        c.include_contentsize(false).unwrap();
        let unsized_ = Frame::new(FrameKind::Zstd, c.compress(&[0u8; 4096]).unwrap()).unwrap();
        assert_eq!(
            message_payload(unsized_),
            Err(FrameError::Compressed("content size not stated"))
        );
        // Cut short.
        let mut cut = frame.clone();
        cut.payload.truncate(cut.payload.len() - 2);
        assert!(message_payload(cut).is_err());
        // Not a message at all.
        let blob = Frame::new(FrameKind::BlobChunk, vec![1]).unwrap();
        assert_eq!(
            message_payload(blob),
            Err(FrameError::NotAMessage(FrameKind::BlobChunk))
        );
    }

    proptest! {
        // Fuzz: no compressed payload makes the decompressor panic or allocate past the
        // frame limit.
        #[test]
        fn zstd_payloads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let frame = Frame::new(FrameKind::Zstd, bytes).unwrap();
            if let Ok(out) = message_payload(frame) {
                prop_assert!(out.len() <= MAX_FRAME_LEN);
            }
        }

        // Fuzz: a valid zstd header with any body is refused cleanly.
        #[test]
        fn mangled_zstd_frames_never_panic(
            data in proptest::collection::vec(any::<u8>(), 200..600),
            at in 0usize..64,
            byte in any::<u8>(),
        ) {
            let mut frame = message_frame(data.repeat(2)).unwrap();
            if let Some(b) = frame.payload.get_mut(at) {
                *b ^= byte;
            }
            let _ = message_payload(frame);
        }
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
        fn roundtrip(kind in 1u8..=8, payload in proptest::collection::vec(any::<u8>(), 0..512)) {
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
