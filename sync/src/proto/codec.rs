//! The hand-rolled binary codec of [`Message`].
//!
//! Layout: version byte, tag byte, then the fields in declaration order. Integers are
//! big-endian `u64`; counts and lengths are big-endian `u32`. The decoder checks every count
//! and length against its limit *and* against the bytes left before it allocates, so a
//! hostile length can never make it reserve more than the input it was given.

use thiserror::Error;

use super::*;

/// Why bytes are not a message.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("message ends early")]
    Truncated,
    #[error("wire version {0} is not supported")]
    Version(u8),
    #[error("unknown message tag {0}")]
    UnknownTag(u8),
    #[error("{what} of {len} is over the limit of {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
    #[error("bad value for {0}")]
    BadValue(&'static str),
    #[error("{0} bytes left over after the message")]
    Trailing(usize),
}

/// The bytes of `msg`.
pub fn encode(msg: &Message) -> Vec<u8> {
    let mut w = Vec::with_capacity(64);
    w.push(WIRE_VERSION);
    match msg {
        Message::Hello(h) => {
            // Tag 14 only with an early offer, so a hello without is what it always was.
            w.push(if h.early.is_some() { 14 } else { 1 });
            put_str(&mut w, &h.protocol);
            put_str(&mut w, &h.node_id);
            put_u64(&mut w, h.store_epoch);
            match h.since {
                None => w.push(0),
                Some(c) => {
                    w.push(1);
                    put_u64(&mut w, c.epoch);
                    put_u64(&mut w, c.seq);
                }
            }
            if let Some(e) = h.early {
                put_u64(&mut w, e.peer_epoch);
                put_u64(&mut w, e.after);
            }
        }
        Message::Offer {
            after,
            upto,
            entries,
        } => {
            // Tag 13 only when a tip rides along, and 16 only when one is derived, so an
            // offer without any is byte for byte what it always was.
            let tips = entries.iter().any(|e| e.tip.is_some());
            let derived = entries
                .iter()
                .any(|e| e.tip.as_ref().is_some_and(|t| t.derived));
            w.push(match (derived, tips) {
                (true, _) => 16,
                (false, true) => 13,
                (false, false) => 2,
            });
            put_u64(&mut w, *after);
            put_u64(&mut w, *upto);
            put_len(&mut w, entries.len());
            for e in entries {
                put_str(&mut w, &e.doc_id);
                put_u64(&mut w, e.seq);
                if derived {
                    match &e.tip {
                        None => {
                            w.push(0);
                            put_heads(&mut w, &e.heads);
                        }
                        Some(t) if t.derived => {
                            w.push(2);
                            put_bytes(&mut w, &t.change);
                        }
                        Some(t) => {
                            w.push(1);
                            put_heads(&mut w, &e.heads);
                            put_heads(&mut w, &t.base);
                            put_bytes(&mut w, &t.change);
                        }
                    }
                    continue;
                }
                put_heads(&mut w, &e.heads);
                if tips {
                    match &e.tip {
                        None => w.push(0),
                        Some(t) => {
                            w.push(1);
                            put_heads(&mut w, &t.base);
                            put_bytes(&mut w, &t.change);
                        }
                    }
                }
            }
        }
        Message::FeedEnd { head_seq } => {
            w.push(3);
            put_u64(&mut w, *head_seq);
        }
        Message::Digest {
            after,
            upto,
            entries,
        } => {
            w.push(4);
            put_u64(&mut w, *after);
            put_u64(&mut w, *upto);
            put_len(&mut w, entries.len());
            for e in entries {
                put_str(&mut w, &e.doc_id);
                put_heads(&mut w, &e.heads);
            }
        }
        _ => encode_rest(&mut w, msg),
    }
    w
}

fn encode_rest(w: &mut Vec<u8>, msg: &Message) {
    match msg {
        Message::Want { doc_id, have } => {
            w.push(5);
            put_str(w, doc_id);
            put_heads(w, have);
        }
        Message::Changes { doc_id, changes } => {
            w.push(6);
            put_str(w, doc_id);
            put_len(w, changes.len());
            for c in changes {
                put_bytes(w, c);
            }
        }
        Message::Ack { seq } => {
            w.push(7);
            put_u64(w, *seq);
        }
        Message::BlobWant { hash, offset } => {
            w.push(8);
            w.extend_from_slice(hash);
            put_u64(w, *offset);
        }
        Message::BlobChunk {
            hash,
            offset,
            total_len,
            bytes,
        } => {
            w.push(9);
            w.extend_from_slice(hash);
            put_u64(w, *offset);
            put_u64(w, *total_len);
            put_bytes(w, bytes);
        }
        Message::BlobMissing { hash } => {
            w.push(10);
            w.extend_from_slice(hash);
        }
        Message::WantMany { wants } => {
            w.push(11);
            put_len(w, wants.len());
            for e in wants {
                put_str(w, &e.doc_id);
                put_heads(w, &e.have);
            }
        }
        Message::Refused { doc_id, reason } => {
            w.push(15);
            put_str(w, doc_id);
            put_str(w, reason);
        }
        Message::Docs { docs } => {
            w.push(12);
            put_len(w, docs.len());
            for d in docs {
                put_str(w, &d.doc_id);
                put_len(w, d.changes.len());
                for c in &d.changes {
                    put_bytes(w, c);
                }
            }
        }
        Message::Hello(_) | Message::Offer { .. } | Message::FeedEnd { .. } => {}
        Message::Digest { .. } => {}
    }
}

fn put_u64(w: &mut Vec<u8>, v: u64) {
    w.extend_from_slice(&v.to_be_bytes());
}

// Every length the session produces is bounded far below u32::MAX by the limits above.
fn put_len(w: &mut Vec<u8>, len: usize) {
    w.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
}

fn put_bytes(w: &mut Vec<u8>, b: &[u8]) {
    put_len(w, b.len());
    w.extend_from_slice(b);
}

fn put_str(w: &mut Vec<u8>, s: &str) {
    put_bytes(w, s.as_bytes());
}

fn put_heads(w: &mut Vec<u8>, heads: &[ChangeHash]) {
    put_len(w, heads.len());
    for h in heads {
        w.extend_from_slice(h);
    }
}

/// Decodes exactly one message from `buf`; trailing bytes are an error.
pub fn decode(buf: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader { buf };
    let version = r.u8()?;
    if version != WIRE_VERSION {
        return Err(DecodeError::Version(version));
    }
    let msg = match r.u8()? {
        tag @ (1 | 14) => decode_hello(&mut r, tag == 14)?,
        2 => decode_offer(&mut r, OfferForm::Plain)?,
        13 => decode_offer(&mut r, OfferForm::Tips)?,
        16 => decode_offer(&mut r, OfferForm::Derived)?,
        3 => Message::FeedEnd { head_seq: r.u64()? },
        4 => decode_digest(&mut r)?,
        tag => decode_rest(&mut r, tag)?,
    };
    if !r.buf.is_empty() {
        return Err(DecodeError::Trailing(r.buf.len()));
    }
    Ok(msg)
}

fn decode_hello(r: &mut Reader<'_>, with_early: bool) -> Result<Message, DecodeError> {
    let protocol = r.string("protocol")?;
    let node_id = r.string("node id")?;
    let store_epoch = r.u64()?;
    let since = match r.u8()? {
        0 => None,
        1 => Some(Cursor {
            epoch: r.u64()?,
            seq: r.u64()?,
        }),
        _ => return Err(DecodeError::BadValue("since flag")),
    };
    let early = if with_early {
        Some(EarlyOffer {
            peer_epoch: r.u64()?,
            after: r.u64()?,
        })
    } else {
        None
    };
    Ok(Message::Hello(Hello {
        protocol,
        node_id,
        store_epoch,
        since,
        early,
    }))
}

/// How an `Offer`'s entries are laid out, by its tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OfferForm {
    /// Tag 2: id, seq, heads.
    Plain,
    /// Tag 13: id, seq, heads, then a flag: 0, or 1 and a tip (base, change).
    Tips,
    /// Tag 16: id, seq, then a flag: 0 and heads; 1, heads and a tip (base, change); 2 and a
    /// derived tip's change alone.
    Derived,
}

fn decode_offer(r: &mut Reader<'_>, form: OfferForm) -> Result<Message, DecodeError> {
    let after = r.u64()?;
    let upto = r.u64()?;
    // Smallest entry: empty id (4), seq (8), then no heads (4) with the tips' flag (1), or
    // the flag and an empty change (4) derived.
    let least = if form == OfferForm::Plain { 16 } else { 17 };
    let n = r.count("offer batch", MAX_BATCH, least)?;
    let mut entries = Vec::with_capacity(n);
    let mut tip_bytes = 0usize;
    for _ in 0..n {
        let doc_id = r.string("doc id")?;
        let seq = r.u64()?;
        let (heads, tip) = match form {
            OfferForm::Plain => (r.heads()?, None),
            OfferForm::Tips => {
                let heads = r.heads()?;
                match r.u8()? {
                    0 => (heads, None),
                    1 => (heads, Some(read_full_tip(r, &mut tip_bytes)?)),
                    _ => return Err(DecodeError::BadValue("tip flag")),
                }
            }
            OfferForm::Derived => match r.u8()? {
                0 => (r.heads()?, None),
                1 => (r.heads()?, Some(read_full_tip(r, &mut tip_bytes)?)),
                2 => (
                    Vec::new(),
                    Some(read_tip(r, Vec::new(), true, &mut tip_bytes)?),
                ),
                _ => return Err(DecodeError::BadValue("tip flag")),
            },
        };
        entries.push(OfferEntry {
            doc_id,
            seq,
            heads,
            tip,
        });
    }
    // Canonical: tag 13 only with a tip, 16 only with a derived one.
    let mut tips = entries.iter().filter_map(|e| e.tip.as_ref());
    match form {
        OfferForm::Tips if entries.iter().all(|e| e.tip.is_none()) => {
            return Err(DecodeError::BadValue("offer with tips carries none"));
        }
        OfferForm::Derived if !tips.any(|t| t.derived) => {
            return Err(DecodeError::BadValue(
                "offer with derived tips carries none",
            ));
        }
        _ => {}
    }
    Ok(Message::Offer {
        after,
        upto,
        entries,
    })
}

/// A tip sent with its base: the base heads, then the change.
fn read_full_tip(r: &mut Reader<'_>, tip_bytes: &mut usize) -> Result<OfferTip, DecodeError> {
    let base = r.heads()?;
    read_tip(r, base, false, tip_bytes)
}

/// A tip's change after its `base` (empty when derived): bounded by what the offer's tips
/// may carry together, `tip_bytes` so far.
fn read_tip(
    r: &mut Reader<'_>,
    base: Vec<crate::store::ChangeHash>,
    derived: bool,
    tip_bytes: &mut usize,
) -> Result<OfferTip, DecodeError> {
    // A full tip on no base heads would apply to nothing.
    if !derived && base.is_empty() {
        return Err(DecodeError::BadValue("tip base"));
    }
    let left = MAX_OFFER_TIP_BYTES - *tip_bytes;
    let change = r.bytes("tip change", MAX_TIP_BYTES.min(left))?;
    *tip_bytes += change.len();
    Ok(OfferTip {
        base,
        change,
        derived,
    })
}

fn decode_digest(r: &mut Reader<'_>) -> Result<Message, DecodeError> {
    let after = r.u64()?;
    let upto = r.u64()?;
    let n = r.count("digest batch", MAX_BATCH, 8)?;
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        entries.push(DigestEntry {
            doc_id: r.string("doc id")?,
            heads: r.heads()?,
        });
    }
    Ok(Message::Digest {
        after,
        upto,
        entries,
    })
}

fn decode_rest(r: &mut Reader<'_>, tag: u8) -> Result<Message, DecodeError> {
    Ok(match tag {
        5 => Message::Want {
            doc_id: r.string("doc id")?,
            have: r.heads()?,
        },
        6 => {
            let doc_id = r.string("doc id")?;
            let n = r.count("changes", MAX_CHANGES, 4)?;
            let mut changes = Vec::with_capacity(n);
            for _ in 0..n {
                changes.push(r.bytes("change", crate::frame::MAX_FRAME_LEN)?);
            }
            Message::Changes { doc_id, changes }
        }
        7 => Message::Ack { seq: r.u64()? },
        8 => Message::BlobWant {
            hash: r.hash()?,
            offset: r.u64()?,
        },
        9 => Message::BlobChunk {
            hash: r.hash()?,
            offset: r.u64()?,
            total_len: r.u64()?,
            bytes: r.bytes("blob chunk", MAX_BLOB_CHUNK)?,
        },
        10 => Message::BlobMissing { hash: r.hash()? },
        11 => {
            // Smallest entry: empty id (4), no heads (4).
            let n = r.count("want batch", MAX_BATCH, 8)?;
            let mut wants = Vec::with_capacity(n);
            for _ in 0..n {
                wants.push(WantEntry {
                    doc_id: r.string("doc id")?,
                    have: r.heads()?,
                });
            }
            Message::WantMany { wants }
        }
        12 => decode_docs(r)?,
        15 => Message::Refused {
            doc_id: r.string("doc id")?,
            reason: {
                let b = r.bytes("reason", super::MAX_REASON_LEN)?;
                String::from_utf8(b).map_err(|_| DecodeError::NotUtf8("reason"))?
            },
        },
        tag => return Err(DecodeError::UnknownTag(tag)),
    })
}

fn decode_docs(r: &mut Reader<'_>) -> Result<Message, DecodeError> {
    // Smallest entry: empty id (4), no changes (4).
    let n = r.count("docs batch", MAX_BATCH, 8)?;
    let mut docs = Vec::with_capacity(n);
    let mut total = 0usize;
    for _ in 0..n {
        let doc_id = r.string("doc id")?;
        let m = r.count("changes", MAX_CHANGES.saturating_sub(total), 4)?;
        total += m;
        let mut changes = Vec::with_capacity(m);
        for _ in 0..m {
            changes.push(r.bytes("change", crate::frame::MAX_FRAME_LEN)?);
        }
        docs.push(DocChanges { doc_id, changes });
    }
    Ok(Message::Docs { docs })
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = self.take(1)?;
        b.first().copied().ok_or(DecodeError::Truncated)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }

    fn u32(&mut self) -> Result<usize, DecodeError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(a) as usize)
    }

    fn hash(&mut self) -> Result<[u8; 32], DecodeError> {
        let mut a = [0u8; 32];
        a.copy_from_slice(self.take(32)?);
        Ok(a)
    }

    /// A count, checked against `max` and against the bytes left (`min_each` per item).
    fn count(
        &mut self,
        what: &'static str,
        max: usize,
        min_each: usize,
    ) -> Result<usize, DecodeError> {
        let n = self.u32()?;
        if n > max {
            return Err(DecodeError::TooLong { what, len: n, max });
        }
        if n.saturating_mul(min_each) > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        Ok(n)
    }

    fn bytes(&mut self, what: &'static str, max: usize) -> Result<Vec<u8>, DecodeError> {
        let n = self.count(what, max, 1)?;
        Ok(self.take(n)?.to_vec())
    }

    fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let b = self.bytes(what, MAX_ID_LEN)?;
        String::from_utf8(b).map_err(|_| DecodeError::NotUtf8(what))
    }

    fn heads(&mut self) -> Result<Vec<ChangeHash>, DecodeError> {
        let n = self.count("heads", MAX_HEADS, 32)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.hash()?);
        }
        Ok(out)
    }
}
