//! Case events: the only way a case's workflow state changes (DESIGN.md §3).

use serde::{Deserialize, Serialize};

use crate::catalog::Tier;
use crate::hlc::Hlc;

/// What happened. Serialised in `snake_case`; a kind this build does not know (from a newer
/// node) is kept as [`EventKind::Other`] and never dropped.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    Accepted,
    ReviewPassed,
    Approved,
    Rejected,
    SupplementRequested,
    SupplementProvided,
    Issued,
    PickedUp,
    Withdrawn,
    Rated,
    Comment,
    Urged,
    /// A notice went to the SMS gateway (payload `notice`: its id); recorded by the sending
    /// node, never by a person.
    NoticeSent,
    Other(String),
}

impl EventKind {
    const NAMES: [(EventKind, &'static str); 13] = [
        (EventKind::Accepted, "accepted"),
        (EventKind::ReviewPassed, "review_passed"),
        (EventKind::Approved, "approved"),
        (EventKind::Rejected, "rejected"),
        (EventKind::SupplementRequested, "supplement_requested"),
        (EventKind::SupplementProvided, "supplement_provided"),
        (EventKind::Issued, "issued"),
        (EventKind::PickedUp, "picked_up"),
        (EventKind::Withdrawn, "withdrawn"),
        (EventKind::Rated, "rated"),
        (EventKind::Comment, "comment"),
        (EventKind::Urged, "urged"),
        (EventKind::NoticeSent, "notice_sent"),
    ];

    pub fn as_str(&self) -> &str {
        match self {
            EventKind::Other(s) => s,
            known => Self::NAMES
                .iter()
                .find(|(k, _)| k == known)
                .map_or("other", |(_, n)| n),
        }
    }

    pub fn parse(s: &str) -> Self {
        Self::NAMES
            .iter()
            .find(|(_, n)| *n == s)
            .map_or_else(|| EventKind::Other(s.to_string()), |(k, _)| k.clone())
    }

    /// The Chinese name shown on timelines.
    pub fn zh(&self) -> &str {
        match self {
            EventKind::Accepted => "受理",
            EventKind::ReviewPassed => "审核通过",
            EventKind::Approved => "审批通过",
            EventKind::Rejected => "不予许可",
            EventKind::SupplementRequested => "一次性告知补正",
            EventKind::SupplementProvided => "补正材料已提交",
            EventKind::Issued => "出件",
            EventKind::PickedUp => "已领取",
            EventKind::Withdrawn => "撤回",
            EventKind::Rated => "好差评",
            EventKind::Comment => "备注",
            EventKind::Urged => "催办",
            EventKind::NoticeSent => "短信已发送",
            EventKind::Other(_) => "其他",
        }
    }
}

impl Serialize for EventKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(EventKind::parse(&String::deserialize(d)?))
    }
}

/// One event of a case's log. Immutable once written; the log only grows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id (a UUID), also the last tie-breaker of the fold order.
    pub id: String,
    pub at: Hlc,
    /// The node that recorded it.
    pub node: String,
    /// The tier of that node; the baton rule checks it.
    pub tier: Tier,
    pub user: String,
    pub role: String,
    pub kind: EventKind,
    /// Kind-specific data, for example `{"reason": "..."}` or `{"text": "..."}`.
    pub payload: serde_json::Value,
    /// The recording node's signature ([`crate::authorship`]); `None` from a node without a
    /// certificate, or from a build before signatures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<crate::authorship::EventSig>,
}

impl Event {
    /// The fold order: `(at, node, id)`.
    pub fn order_key(&self) -> (Hlc, &str, &str) {
        (self.at, &self.node, &self.id)
    }

    /// A text field of the payload, or `""`.
    pub fn payload_str(&self, key: &str) -> &str {
        self.payload.get(key).and_then(|v| v.as_str()).unwrap_or("")
    }
}
