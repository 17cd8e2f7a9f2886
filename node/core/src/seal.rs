//! 电子印章: signed results anyone can check offline (DESIGN.md §5).
//!
//! When a town or county node records the decision that settles a case (the final
//! `review_passed` or `approved`, which makes it ready to issue, or `rejected`), it signs a
//! small [`ResultSummary`] with its node key (Ed25519, the key behind the certificate the
//! county CA issued) and puts the result code in the event's payload under `"seal"`. The event
//! replicates like any other, so the village prints the code as a QR on the result notice, and
//! `yiciban verify` or the `/verify` page of any node checks it against the county CA
//! certificate with no network. The fold never reads `"seal"`.
//!
//! The result code:
//!
//! ```text
//! YCB1.<base64url, no padding, of the envelope>
//!
//! envelope = u16 BE  n        length of the summary
//!            n bytes          the summary: compact JSON of ResultSummary, fields in fixed order
//!            64 bytes         Ed25519 signature over CONTEXT ‖ summary
//!            u16 BE  m        length of the signer's certificate
//!            m bytes          the signer's certificate (DER), issued by the county CA
//!            nothing after it
//! ```
//!
//! The signature covers the summary bytes exactly as carried, so a verifier never
//! re-serialises anything; the context string keeps a seal signature from meaning anything
//! else. A verifier checks, in order: the code is well formed (every length bounded before
//! anything is allocated, at most [`MAX_PAYLOAD_CHARS`] characters), the certificate chains
//! to the county CA and is valid now, it names a town or county node, the signature matches,
//! and the summary names that same node. Any altered byte fails one of these. Names and ID
//! numbers are masked (`张*三`, `4301**********1234`): the code is printed on paper.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use yiciban_transport::identity::{self, NodeIdentity, NodeKey, SignatureError};

use crate::case_doc::Case;
use crate::event::{Event, EventKind};
use crate::fold::{CaseState, Status};
use crate::message::Msg;

/// What every result code starts with; the digit is the envelope version.
pub const PREFIX: &str = "YCB1.";
/// Longest result code accepted (a QR at level M holds far more, 2,331 bytes).
pub const MAX_PAYLOAD_CHARS: usize = 2048;
/// The summary schema this build writes and reads.
pub const SUMMARY_VERSION: u32 = 1;
/// Put in front of the summary bytes before signing.
const CONTEXT: &[u8] = b"yiciban result seal v1\n";
const SIGNATURE_BYTES: usize = 64;

/// Why a result code was not accepted.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SealError {
    #[error("not a valid result code: {0}")]
    Malformed(String),
    #[error("unknown result code version {0}")]
    UnknownVersion(String),
    #[error("the signer's certificate was not issued by this county CA: {0}")]
    NotFromCa(String),
    #[error("the signer's certificate is expired or not yet valid")]
    Expired,
    #[error("the signature does not match: the result was altered")]
    BadSignature,
    #[error("the summary does not match its signer: {0}")]
    SignerMismatch(String),
    #[error("this node holds no county CA certificate and cannot verify")]
    NoCa,
    #[error("signing failed: {0}")]
    Sign(String),
    /// The signing node's certificates were revoked (Unix ms) before the seal was made.
    #[error("the signing node was revoked at {at_ms} (Unix ms), before this seal was made")]
    Revoked { at_ms: u64 },
}

impl SealError {
    /// The reason, for people, in Chinese and English.
    pub fn msg(&self) -> Msg {
        if let SealError::Revoked { at_ms } = self {
            return Msg::new(
                format!(
                    "签章节点的证书已于 {} 被县级吊销，此结果在吊销之后签发，无效",
                    date_of(*at_ms)
                ),
                self.to_string(),
            );
        }
        let zh = match self {
            SealError::Malformed(_) => "不是有效的办理结果码（格式错误）",
            SealError::UnknownVersion(_) => "无法识别的结果码版本",
            SealError::NotFromCa(_) => "签章证书不是本县证书机构签发的",
            SealError::Expired => "签章证书已过期或尚未生效",
            SealError::BadSignature => "签名不符：结果内容已被改动",
            SealError::SignerMismatch(_) => "结果内容与签章节点不符",
            SealError::NoCa => "本节点没有县级CA证书，无法核验",
            SealError::Sign(_) => "签章失败",
            SealError::Revoked { .. } => "签章节点的证书已被吊销",
        };
        Msg::new(zh, self.to_string())
    }
}

/// What a seal says about a result. Serialised as compact JSON in this field order; the
/// signed bytes are exactly those carried in the code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultSummary {
    /// [`SUMMARY_VERSION`].
    pub v: u32,
    pub case_id: String,
    pub receipt_no: String,
    pub item_code: String,
    pub item_name: String,
    /// The result the catalogue item gives (certificate, notice), `""` if unknown.
    pub result_name: String,
    /// Masked applicant name, `张*三`.
    pub applicant: String,
    /// Masked ID number, `4301**********1234`.
    pub id_number: String,
    /// `review_passed`, `approved` or `rejected`.
    pub decision: String,
    /// Local date of the decision, `yyyy-mm-dd`.
    pub decided_on: String,
    /// The deciding node and its division (as its certificate names them).
    pub node: String,
    pub division: String,
    /// The decision event.
    pub event_id: String,
    /// When the seal was made (Unix ms): a seal made after its node's revocation is
    /// refused. Seals made before this field existed have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_at_ms: Option<u64>,
}

impl ResultSummary {
    /// The summary of `case` decided by `event` at the node `signer`.
    pub fn of(
        case: &Case,
        event: &Event,
        result_name: &str,
        decided_on: &str,
        signer: &NodeIdentity,
    ) -> Self {
        Self {
            v: SUMMARY_VERSION,
            case_id: case.id.clone(),
            receipt_no: case.receipt_no.clone(),
            item_code: case.item_code.clone(),
            item_name: case.item_name.clone(),
            result_name: result_name.to_string(),
            applicant: mask_name(&case.applicant.name),
            id_number: crate::idcard::mask(&case.applicant.id_number),
            decision: event.kind.as_str().to_string(),
            decided_on: decided_on.to_string(),
            node: signer.node_id.clone(),
            division: signer.division.clone(),
            event_id: event.id.clone(),
            signed_at_ms: Some(event.at.wall_ms),
        }
    }

    /// Whether the decision grants what was asked.
    pub fn granted(&self) -> bool {
        self.decision != EventKind::Rejected.as_str()
    }

    /// The decision in Chinese.
    pub fn decision_zh(&self) -> String {
        EventKind::parse(&self.decision).zh().to_string()
    }
}

/// A name as printed on a public code: first and last character kept, `张*三`, `张*`.
pub fn mask_name(name: &str) -> String {
    let chars: Vec<char> = name.trim().chars().collect();
    match chars.len() {
        0 => String::new(),
        1 => "*".into(),
        2 => format!("{}*", chars[0]),
        n => format!("{}{}{}", chars[0], "*".repeat(n - 2), chars[n - 1]),
    }
}

/// A node's signing key with its certificate.
pub struct Signer {
    key: NodeKey,
    cert_der: Vec<u8>,
    identity: NodeIdentity,
    /// Read from the certificate once: every signed event names the serial.
    serial: Vec<u8>,
    public_key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// From the node key (PKCS#8 PEM) and certificate (PEM) in the node's TLS folder.
    pub fn from_pem(key_pem: &str, cert_pem: &str) -> Result<Self, SealError> {
        let key = NodeKey::from_pem(key_pem).map_err(|e| SealError::Sign(e.to_string()))?;
        let cert_der =
            identity::first_cert_der(cert_pem).map_err(|e| SealError::Sign(e.to_string()))?;
        let identity =
            identity::peer_identity(&cert_der).map_err(|e| SealError::Sign(e.to_string()))?;
        let serial =
            identity::cert_serial(&cert_der).map_err(|e| SealError::Sign(e.to_string()))?;
        let public_key =
            identity::cert_public_key(&cert_der).map_err(|e| SealError::Sign(e.to_string()))?;
        Ok(Self {
            key,
            cert_der,
            identity,
            serial,
            public_key,
        })
    }

    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// The serial number of this node's certificate.
    pub fn serial(&self) -> &[u8] {
        &self.serial
    }

    /// The Ed25519 public key of this node's certificate.
    pub fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    /// The node's certificate (DER).
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// An Ed25519 signature of `msg` with this node's key (the caller prefixes its context).
    pub fn sign_raw(&self, msg: &[u8]) -> Result<Vec<u8>, SealError> {
        self.key
            .sign(msg)
            .map_err(|e| SealError::Sign(e.to_string()))
    }

    /// The result code of `summary`, signed with this node's key.
    pub fn seal(&self, summary: &ResultSummary) -> Result<String, SealError> {
        let bytes = serde_json::to_vec(summary).map_err(|e| SealError::Sign(e.to_string()))?;
        let mut msg = Vec::with_capacity(CONTEXT.len() + bytes.len());
        msg.extend_from_slice(CONTEXT);
        msg.extend_from_slice(&bytes);
        let sig = self
            .key
            .sign(&msg)
            .map_err(|e| SealError::Sign(e.to_string()))?;
        let envelope = Envelope {
            summary: bytes,
            signature: sig,
            cert_der: self.cert_der.clone(),
        };
        let code = envelope.encode()?;
        if code.len() > MAX_PAYLOAD_CHARS {
            return Err(SealError::Sign(format!(
                "the result code would be {} characters, more than {MAX_PAYLOAD_CHARS}",
                code.len()
            )));
        }
        Ok(code)
    }
}

/// The decoded, not yet verified, content of a result code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub summary: Vec<u8>,
    pub signature: Vec<u8>,
    pub cert_der: Vec<u8>,
}

fn malformed(why: &str) -> SealError {
    SealError::Malformed(why.to_string())
}

impl Envelope {
    /// The binary envelope (see the module doc).
    pub fn to_bytes(&self) -> Result<Vec<u8>, SealError> {
        let summary_len =
            u16::try_from(self.summary.len()).map_err(|_| malformed("summary too long"))?;
        let cert_len =
            u16::try_from(self.cert_der.len()).map_err(|_| malformed("certificate too long"))?;
        let mut out = Vec::with_capacity(4 + self.summary.len() + 64 + self.cert_der.len());
        out.extend_from_slice(&summary_len.to_be_bytes());
        out.extend_from_slice(&self.summary);
        out.extend_from_slice(&self.signature);
        out.extend_from_slice(&cert_len.to_be_bytes());
        out.extend_from_slice(&self.cert_der);
        Ok(out)
    }

    /// The result code text.
    pub fn encode(&self) -> Result<String, SealError> {
        Ok(format!(
            "{PREFIX}{}",
            URL_SAFE_NO_PAD.encode(self.to_bytes()?)
        ))
    }

    /// Reads the binary envelope; every length is checked against what is left first.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        let mut rest = bytes;
        let mut take = |n: usize, what: &str| -> Result<&[u8], SealError> {
            if rest.len() < n {
                return Err(malformed(&format!("truncated {what}")));
            }
            let (head, tail) = rest.split_at(n);
            rest = tail;
            Ok(head)
        };
        let len = |b: &[u8]| usize::from(u16::from_be_bytes([b[0], b[1]]));
        let summary_len = len(take(2, "summary length")?);
        let summary = take(summary_len, "summary")?.to_vec();
        let signature = take(SIGNATURE_BYTES, "signature")?.to_vec();
        let cert_len = len(take(2, "certificate length")?);
        let cert_der = take(cert_len, "certificate")?.to_vec();
        if !rest.is_empty() {
            return Err(malformed("bytes after the certificate"));
        }
        Ok(Self {
            summary,
            signature,
            cert_der,
        })
    }

    /// Reads a result code text (surrounding whitespace ignored). Never panics.
    pub fn decode(payload: &str) -> Result<Self, SealError> {
        let payload = payload.trim();
        if payload.len() > MAX_PAYLOAD_CHARS {
            return Err(malformed(&format!(
                "longer than {MAX_PAYLOAD_CHARS} characters"
            )));
        }
        let Some(body) = payload.strip_prefix(PREFIX) else {
            // `YCB2.…` from a newer node is a version this build does not know.
            if let Some(rest) = payload.strip_prefix("YCB")
                && let Some((version, _)) = rest.split_once('.')
                && !version.is_empty()
                && version.len() <= 4
                && version.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(SealError::UnknownVersion(version.to_string()));
            }
            return Err(malformed("it does not start with YCB1."));
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| malformed("bad base64"))?;
        Self::from_bytes(&bytes)
    }

    /// The summary as carried, parsed (not verified).
    pub fn summary(&self) -> Result<ResultSummary, SealError> {
        let value: serde_json::Value =
            serde_json::from_slice(&self.summary).map_err(|_| malformed("summary is not JSON"))?;
        let version = value.get("v").and_then(serde_json::Value::as_u64);
        if version != Some(u64::from(SUMMARY_VERSION)) {
            return Err(SealError::UnknownVersion(format!("summary {version:?}")));
        }
        serde_json::from_value(value).map_err(|_| malformed("summary fields"))
    }
}

/// A result code that verified: what it says, and who signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub summary: ResultSummary,
    pub signer: NodeIdentity,
    /// The signing node was revoked later (Unix ms): the seal, made before, stays valid.
    pub revoked_later_ms: Option<u64>,
}

impl Verified {
    /// The note a valid seal of a node revoked later carries, in Chinese; empty otherwise.
    pub fn note_zh(&self) -> String {
        self.revoked_later_ms.map_or_else(String::new, |at| {
            format!(
                "签章节点的证书已于 {} 被吊销；此结果签发在吊销之前，仍然有效",
                date_of(at)
            )
        })
    }
}

/// Unix ms as a date in China (`2026-12-07`).
fn date_of(ms: u64) -> String {
    let offset = chrono::FixedOffset::east_opt(8 * 3600).unwrap_or_else(|| unreachable!());
    chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(0))
        .map(|t| t.with_timezone(&offset).format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// [`verify`], and against the revocations a node knows: `revoked(node)` is when the county
/// revoked that node (the registry of nodes, or `revoked.tsv` at the county). A seal made
/// after it is refused; one made before is valid, with a note.
pub fn verify_against(
    payload: &str,
    ca_pem: &str,
    now_unix_secs: u64,
    revoked: &dyn Fn(&str) -> Option<u64>,
) -> Result<Verified, SealError> {
    let mut v = verify(payload, ca_pem, now_unix_secs)?;
    if let Some(at_ms) = revoked(&v.signer.node_id) {
        // Without a signing time (an older seal), the day of the decision stands for it: a
        // decision on or after the day of the revocation is not shown to be before it.
        let made = v.summary.signed_at_ms.unwrap_or_else(|| {
            chrono::NaiveDate::parse_from_str(&v.summary.decided_on, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(23, 59, 59))
                .map_or(u64::MAX, |t| {
                    u64::try_from(t.and_utc().timestamp_millis() - 8 * 3_600_000).unwrap_or(0)
                })
        });
        if made >= at_ms {
            return Err(SealError::Revoked { at_ms });
        }
        v.revoked_later_ms = Some(at_ms);
    }
    Ok(v)
}

/// Verifies a result code against the county CA (`ca_pem`) at `now_unix_secs`, offline.
pub fn verify(payload: &str, ca_pem: &str, now_unix_secs: u64) -> Result<Verified, SealError> {
    let envelope = Envelope::decode(payload)?;
    let ca_der = identity::first_cert_der(ca_pem).map_err(|_| SealError::NoCa)?;
    let mut msg = Vec::with_capacity(CONTEXT.len() + envelope.summary.len());
    msg.extend_from_slice(CONTEXT);
    msg.extend_from_slice(&envelope.summary);
    let signer = identity::verify_signed(
        &ca_der,
        &envelope.cert_der,
        &msg,
        &envelope.signature,
        now_unix_secs,
    )
    .map_err(|e| match e {
        SignatureError::Expired => SealError::Expired,
        SignatureError::BadSignature => SealError::BadSignature,
        SignatureError::BadCa(_) => SealError::NoCa,
        other => SealError::NotFromCa(other.to_string()),
    })?;
    if signer.role != "town" && signer.role != "county" {
        return Err(SealError::SignerMismatch(format!(
            "a {} node does not decide cases",
            signer.role
        )));
    }
    let summary = envelope.summary()?;
    if summary.node != signer.node_id || summary.division != signer.division {
        return Err(SealError::SignerMismatch(format!(
            "the summary names {} ({}), the certificate {} ({})",
            summary.node, summary.division, signer.node_id, signer.division
        )));
    }
    if !matches!(
        EventKind::parse(&summary.decision),
        EventKind::ReviewPassed | EventKind::Approved | EventKind::Rejected
    ) {
        return Err(malformed("unknown decision"));
    }
    Ok(Verified {
        summary,
        signer,
        revoked_later_ms: None,
    })
}

/// Whether recording `event` (already folded into `after`) is the decision to seal: a
/// review, approval or rejection that leaves the case ready to issue or rejected.
pub fn is_sealing_decision(event: &Event, after: &CaseState) -> bool {
    matches!(
        event.kind,
        EventKind::ReviewPassed | EventKind::Approved | EventKind::Rejected
    ) && matches!(after.status, Status::ReadyToIssue | Status::Rejected)
        && !after.superseded.iter().any(|s| s.event_id == event.id)
}

/// The seal a case's result rests on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseSeal {
    /// The result code.
    pub payload: String,
    /// The node that decided.
    pub node: String,
    /// `review_passed`, `approved` or `rejected`.
    pub decision: String,
    pub event_id: String,
}

/// The seal of the last effective decision of `case`, if that decision was sealed.
pub fn case_seal(case: &Case, state: &CaseState) -> Option<CaseSeal> {
    let last = case.timeline().into_iter().rev().find(|e| {
        matches!(
            e.kind,
            EventKind::ReviewPassed | EventKind::Approved | EventKind::Rejected
        ) && !state.superseded.iter().any(|s| s.event_id == e.id)
    })?;
    let payload = last.payload_str("seal");
    if payload.is_empty() {
        return None;
    }
    Some(CaseSeal {
        payload: payload.to_string(),
        node: last.node.clone(),
        decision: last.kind.as_str().to_string(),
        event_id: last.id.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use yiciban_transport::identity::CountyCa;

    fn now() -> u64 {
        u64::try_from(chrono::Utc::now().timestamp()).unwrap()
    }

    fn summary(node: &NodeIdentity) -> ResultSummary {
        ResultSummary {
            v: SUMMARY_VERSION,
            case_id: "0197a0c2-0000-7000-8000-000000000001".into(),
            receipt_no: "430181101001-20261122-0007".into(),
            item_code: "elderly-card".into(),
            item_name: "老年人优待证办理".into(),
            result_name: "老年人优待证".into(),
            applicant: mask_name("张小三"),
            id_number: crate::idcard::mask("430181195001011234"),
            decision: "review_passed".into(),
            decided_on: "2026-11-23".into(),
            node: node.node_id.clone(),
            division: node.division.clone(),
            event_id: "0197a0c2-0000-7000-8000-000000000002".into(),
            signed_at_ms: None,
        }
    }

    /// A county CA and a signer of `role`.
    fn setup(role: &str) -> (CountyCa, Signer) {
        let ca = CountyCa::create("430181000000").unwrap();
        let key = NodeKey::generate().unwrap();
        let id = NodeIdentity::new(&format!("{role}-1"), role, "430181101000").unwrap();
        let issued = ca.issue(&key.csr_pem().unwrap(), &id, 30).unwrap();
        let signer = Signer::from_pem(&key.pem(), &issued.cert_pem).unwrap();
        (ca, signer)
    }

    #[test]
    fn names_are_masked() {
        assert_eq!(mask_name("张三"), "张*");
        assert_eq!(mask_name("张小三"), "张*三");
        assert_eq!(mask_name("欧阳小明"), "欧**明");
        assert_eq!(mask_name("李"), "*");
        assert_eq!(mask_name(""), "");
    }

    #[test]
    fn a_sealed_summary_verifies_and_fits_a_qr() {
        let (ca, signer) = setup("town");
        let s = summary(signer.identity());
        let code = signer.seal(&s).unwrap();
        assert!(code.starts_with(PREFIX));
        assert!(code.len() < 1600, "{} characters", code.len());
        let v = verify(&code, ca.cert_pem(), now()).unwrap();
        assert_eq!(v.summary, s);
        assert_eq!(v.signer.node_id, "town-1");
        assert_eq!(v.summary.decision_zh(), "审核通过");
        assert!(v.summary.granted());
        // Whitespace around a pasted code is ignored.
        assert!(verify(&format!(" {code}\n"), ca.cert_pem(), now()).is_ok());
    }

    #[test]
    fn every_single_altered_byte_fails() {
        let (ca, signer) = setup("county");
        let code = signer.seal(&summary(signer.identity())).unwrap();
        let bytes = Envelope::decode(&code).unwrap().to_bytes().unwrap();
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80] {
                let mut altered = bytes.clone();
                altered[i] ^= flip;
                let text = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(&altered));
                assert!(
                    verify(&text, ca.cert_pem(), now()).is_err(),
                    "byte {i} ^ {flip:#x} still verified"
                );
            }
        }
        // And every altered character of the text.
        for (i, c) in code.char_indices() {
            let other = if c == 'A' { 'B' } else { 'A' };
            let mut text = code.clone();
            text.replace_range(i..i + 1, &other.to_string());
            assert!(verify(&text, ca.cert_pem(), now()).is_err(), "char {i}");
        }
    }

    #[test]
    fn each_failure_has_its_reason() {
        let (ca, signer) = setup("town");
        let s = summary(signer.identity());
        let code = signer.seal(&s).unwrap();
        let pem = ca.cert_pem();
        assert!(matches!(
            verify("hello", pem, now()),
            Err(SealError::Malformed(_))
        ));
        assert!(matches!(
            verify("YCB2.AAAA", pem, now()),
            Err(SealError::UnknownVersion(_))
        ));
        assert!(matches!(
            verify("YCB1.!!!", pem, now()),
            Err(SealError::Malformed(_))
        ));
        let long = format!("{PREFIX}{}", "A".repeat(MAX_PAYLOAD_CHARS));
        assert!(matches!(
            verify(&long, pem, now()),
            Err(SealError::Malformed(_))
        ));
        // Another county's CA.
        let other = CountyCa::create("430182000000").unwrap();
        assert!(matches!(
            verify(&code, other.cert_pem(), now()),
            Err(SealError::NotFromCa(_))
        ));
        // Expired certificate.
        assert!(matches!(
            verify(&code, pem, now() + 60 * 86_400),
            Err(SealError::Expired)
        ));
        // No CA.
        assert!(matches!(verify(&code, "", now()), Err(SealError::NoCa)));
        // Another summary under the same signature.
        let mut env = Envelope::decode(&code).unwrap();
        let mut forged = s.clone();
        forged.decision = "rejected".into();
        env.summary = serde_json::to_vec(&forged).unwrap();
        assert!(matches!(
            verify(&env.encode().unwrap(), pem, now()),
            Err(SealError::BadSignature)
        ));
        // A properly signed summary naming another node.
        let mut lying = s.clone();
        lying.node = "county-9".into();
        assert!(matches!(
            verify(&signer.seal(&lying).unwrap(), pem, now()),
            Err(SealError::SignerMismatch(_))
        ));
        // A village node does not decide.
        let (vca, village) = setup("village");
        let vcode = village.seal(&summary(village.identity())).unwrap();
        assert!(matches!(
            verify(&vcode, vca.cert_pem(), now()),
            Err(SealError::SignerMismatch(_))
        ));
        // A newer summary version.
        let mut newer = s.clone();
        newer.v = 2;
        assert!(matches!(
            verify(&signer.seal(&newer).unwrap(), pem, now()),
            Err(SealError::UnknownVersion(_))
        ));
        assert!(!SealError::BadSignature.msg().zh.is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn random_text_never_panics(text in ".{0,3000}") {
            let _ = Envelope::decode(&text);
            let _ = Envelope::decode(&format!("{PREFIX}{text}"));
        }

        #[test]
        fn random_envelopes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
            let text = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(&bytes));
            if let Ok(env) = Envelope::decode(&text) {
                let _ = env.summary();
            }
            let _ = verify(&text, "", 0);
        }
    }

    #[test]
    fn mutated_codes_never_panic() {
        let (ca, signer) = setup("town");
        let code = signer.seal(&summary(signer.identity())).unwrap();
        let bytes = Envelope::decode(&code).unwrap().to_bytes().unwrap();
        proptest!(ProptestConfig::with_cases(500), |(
            cuts in proptest::collection::vec((0usize..2000, any::<u8>(), 0u8..3), 1..6)
        )| {
            let mut b = bytes.clone();
            for (pos, val, op) in cuts {
                let pos = pos % (b.len() + 1);
                match op {
                    0 if pos < b.len() => b[pos] = val,
                    1 => b.insert(pos, val),
                    _ => b.truncate(pos),
                }
            }
            let text = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(&b));
            if b != bytes {
                prop_assert!(verify(&text, ca.cert_pem(), now()).is_err());
            }
        });
    }
}
