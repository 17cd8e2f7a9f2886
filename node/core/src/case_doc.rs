//! The Automerge schema of a case document (schema 1).
//!
//! ```text
//! ROOT { schema: 1, kind: "case", id, receipt_no, item_code, item_name, node,
//!        route: JSON text [step], division: JSON text {village, town, county},
//!        application: JSON text {applicant, proxy, form, materials, bundle?},
//!        events: [JSON text {id, at, node, tier, user, role, kind, payload}] }
//! ```
//!
//! What a case was filed with never changes after acceptance, and an event never changes
//! once written: everything that happens later is a new event (a supplement, a decision).
//! So the immutable records are single JSON text values, and the one thing Automerge merges
//! is the event list, where concurrent appends from several nodes all survive. Building a
//! case this way takes about a dozen operations instead of sixty: the profile of the ingest
//! benchmark showed per-operation cost inside automerge's column store dominating the node's
//! CPU time per filing (0.65 ms for the sixty-op form).
//!
//! Status is never stored: it is [`crate::fold::fold`] of the events.

use automerge::transaction::Transactable;
use std::borrow::Cow;

use automerge::iter::MapRangeItem;
use automerge::{
    ActorId, AutoCommit, ObjId, ObjType, ROOT, ReadDoc, ScalarValueRef, Value, ValueRef,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::application::{MaterialRecord, Person};
use crate::event::Event;
use crate::fold::{CaseState, fold};

/// The case document schema this build writes and reads.
pub const CASE_SCHEMA: i64 = 1;

/// Longest JSON text a case document field may hold; longer is a malformed document.
const MAX_FIELD_BYTES: usize = 1024 * 1024;

/// Division codes (GB/T 2260, 12 digits) of the village, town and county a case belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Divisions {
    pub village: String,
    pub town: String,
    pub county: String,
}

/// A case as read from its document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    pub id: String,
    pub receipt_no: String,
    pub item_code: String,
    pub item_name: String,
    /// The node that accepted it.
    pub node: String,
    pub route: Vec<String>,
    pub division: Divisions,
    pub applicant: Person,
    pub proxy: Option<Person>,
    pub form: std::collections::BTreeMap<String, String>,
    pub materials: Vec<MaterialRecord>,
    /// The 一件事 bundle this case was filed in, if any.
    #[serde(default)]
    pub bundle: Option<BundleRef>,
    /// The events that count ([`crate::authorship::screen`] moves the others out).
    pub events: Vec<Event>,
    /// Events the document holds that do not count, with the reason (伪造/无效).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forged: Vec<crate::authorship::Forged>,
}

/// The 一件事 bundle a sub-case was filed in: the same in the filing of every sub-case, so
/// any one of them finds the others. The bundle's id is its first sub-case's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRef {
    pub id: String,
    pub code: String,
    pub name: String,
    pub case_ids: Vec<String>,
}

/// The part of a case fixed at acceptance, stored as one JSON text.
#[derive(Debug, Serialize, Deserialize)]
struct Filing {
    applicant: Person,
    proxy: Option<Person>,
    form: std::collections::BTreeMap<String, String>,
    materials: Vec<MaterialRecord>,
    /// Absent in a case filed alone (and in documents written before bundles existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bundle: Option<BundleRef>,
}

impl Case {
    pub fn state(&self) -> CaseState {
        fold(&self.route, &self.events)
    }

    /// Events in fold order.
    pub fn timeline(&self) -> Vec<&Event> {
        let mut events: Vec<&Event> = self.events.iter().collect();
        events.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
        events.dedup_by(|a, b| a.id == b.id);
        events
    }
}

/// Why bytes are not a readable case document.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DocError {
    #[error("automerge: {0}")]
    Automerge(#[from] automerge::AutomergeError),
    #[error("case document is missing {0}")]
    Missing(String),
    #[error("case document has schema {0}, this build reads {CASE_SCHEMA}")]
    Schema(i64),
    #[error("case document field {field} is malformed: {reason}")]
    Malformed { field: String, reason: String },
    #[error("case document field {field} is longer than {max} bytes")]
    TooLong { field: String, max: usize },
}

/// The Automerge actor of a node: 16 bytes derived from its id, so one node writes as one actor.
pub fn node_actor(node_id: &str) -> ActorId {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(node_id.as_bytes());
    ActorId::from(&digest[..16])
}

fn to_json<T: Serialize>(field: &str, value: &T) -> Result<String, DocError> {
    serde_json::to_string(value).map_err(|e| malformed(field, &e.to_string()))
}

/// Builds the document of a new case; `case.events` holds its `accepted` event.
///
/// The root map is written in one batch (`init_root_from_hydrate`: two op-set splices),
/// not a `put` per key: in automerge 0.12 each `put` on a fresh document splices the
/// op columns and costs 8–10 µs, so the dozen keys cost ~110 µs a case against ~30 µs
/// batched; perf of the 32-client ingest burst had `build` at a quarter of the request
/// workers' time. The document (keys, values, one change) is the same either way.
pub fn build(case: &Case, actor: ActorId) -> Result<AutoCommit, DocError> {
    use automerge::hydrate::{Map, Value};
    let filing = Filing {
        applicant: case.applicant.clone(),
        proxy: case.proxy.clone(),
        form: case.form.clone(),
        materials: case.materials.clone(),
        bundle: case.bundle.clone(),
    };
    let texts = [
        ("route", to_json("route", &case.route)?),
        ("division", to_json("division", &case.division)?),
        ("application", to_json("application", &filing)?),
    ];
    let events = case
        .events
        .iter()
        .map(|event| to_json("events", event).map(|text| Value::scalar(text.as_str())))
        .collect::<Result<Vec<_>, _>>()?;
    let mut root = std::collections::HashMap::<&str, Value>::new();
    root.insert("schema", Value::scalar(CASE_SCHEMA));
    root.insert("kind", Value::scalar("case"));
    for (key, value) in [
        ("id", &case.id),
        ("receipt_no", &case.receipt_no),
        ("item_code", &case.item_code),
        ("item_name", &case.item_name),
        ("node", &case.node),
    ] {
        root.insert(key, Value::scalar(value.as_str()));
    }
    for (key, text) in &texts {
        root.insert(key, Value::scalar(text.as_str()));
    }
    root.insert("events", Value::from(events));
    let mut doc = AutoCommit::new().with_actor(actor);
    doc.init_root_from_hydrate(&Map::from(root))?;
    doc.commit();
    Ok(doc)
}

/// Appends one event to the log.
pub fn append_event(doc: &mut AutoCommit, event: &Event) -> Result<(), DocError> {
    let events = obj(doc, &ROOT, "events")?;
    let index = doc.length(&events);
    doc.insert(&events, index, to_json("events", event)?)?;
    Ok(())
}

/// Reads a case from its document, with the Automerge actor that wrote each event (by event
/// id), from which [`crate::authorship::screen`] tells whether an unsigned event is its
/// node's own. Every event is in [`Case::events`]: nothing is screened yet.
pub fn read_with_writers(
    doc: &AutoCommit,
) -> Result<(Case, std::collections::HashMap<String, ActorId>), DocError> {
    read_inner(doc, true)
}

/// Reads a case from its document, every event in [`Case::events`] (see
/// [`read_with_writers`]).
pub fn read(doc: &AutoCommit) -> Result<Case, DocError> {
    Ok(read_inner(doc, false)?.0)
}

/// Reads a case from its document.
///
/// One pass over the root map and one over the event list: automerge 0.12 seeks from the
/// start of the object's columns for every `get`, so reading the dozen root keys one `get`
/// at a time cost more than loading the document (perf, county during sync-new 10,000:
/// `case_doc::read` 14% of the node's samples, nearly all in `seek_ops_by_map_key`).
fn read_inner(
    doc: &AutoCommit,
    writers: bool,
) -> Result<(Case, std::collections::HashMap<String, ActorId>), DocError> {
    let mut root = RootFields::default();
    for item in doc.map_range(ROOT, ..) {
        let events_id = (item.key == "events").then(|| item.id());
        let MapRangeItem { key, value, .. } = item;
        match (key.as_ref(), value) {
            ("events", ValueRef::Object(ObjType::List)) => root.events = events_id,
            ("schema", value @ ValueRef::Scalar(_)) => {
                root.schema = Some(value.into_value().as_i64());
            }
            (key, ValueRef::Scalar(ScalarValueRef::Str(text))) => {
                if let Some(slot) = root.text_slot(key) {
                    *slot = Some(text);
                }
            }
            _ => {}
        }
    }
    match root.schema {
        Some(Some(CASE_SCHEMA)) => {}
        Some(Some(other)) => return Err(DocError::Schema(other)),
        Some(None) => return Err(malformed("schema", "not an integer")),
        None => return Err(DocError::Missing("schema".into())),
    }
    let filing: Filing = parse_json("application", required(&root.application, "application")?)?;
    let events_obj = root
        .events
        .ok_or_else(|| DocError::Missing("events".into()))?;
    let mut by = std::collections::HashMap::new();
    let mut events = Vec::new();
    for item in doc.list_range(&events_obj, ..) {
        let event: Event = match &item.value {
            ValueRef::Scalar(ScalarValueRef::Str(text)) => parse_json("events", text)?,
            _ => return Err(malformed("events", "entry is not text")),
        };
        if writers && let automerge::ObjId::Id(_, actor, _) = item.id() {
            by.insert(event.id.clone(), actor);
        }
        events.push(event);
    }
    let case = Case {
        id: required(&root.id, "id")?.to_string(),
        receipt_no: required(&root.receipt_no, "receipt_no")?.to_string(),
        item_code: required(&root.item_code, "item_code")?.to_string(),
        item_name: required(&root.item_name, "item_name")?.to_string(),
        node: required(&root.node, "node")?.to_string(),
        route: parse_json("route", required(&root.route, "route")?)?,
        division: parse_json("division", required(&root.division, "division")?)?,
        applicant: filing.applicant,
        proxy: filing.proxy,
        form: filing.form,
        materials: filing.materials,
        bundle: filing.bundle,
        events,
        forged: Vec::new(),
    };
    Ok((case, by))
}

/// The root keys of a case document as one pass over the root map finds them (text values
/// borrowed from the document).
#[derive(Default)]
struct RootFields<'a> {
    schema: Option<Option<i64>>,
    id: Option<Cow<'a, str>>,
    receipt_no: Option<Cow<'a, str>>,
    item_code: Option<Cow<'a, str>>,
    item_name: Option<Cow<'a, str>>,
    node: Option<Cow<'a, str>>,
    route: Option<Cow<'a, str>>,
    division: Option<Cow<'a, str>>,
    application: Option<Cow<'a, str>>,
    events: Option<ObjId>,
}

impl<'a> RootFields<'a> {
    fn text_slot(&mut self, key: &str) -> Option<&mut Option<Cow<'a, str>>> {
        Some(match key {
            "id" => &mut self.id,
            "receipt_no" => &mut self.receipt_no,
            "item_code" => &mut self.item_code,
            "item_name" => &mut self.item_name,
            "node" => &mut self.node,
            "route" => &mut self.route,
            "division" => &mut self.division,
            "application" => &mut self.application,
            _ => return None,
        })
    }
}

fn required<'s>(slot: &'s Option<Cow<'_, str>>, key: &str) -> Result<&'s str, DocError> {
    slot.as_deref().ok_or_else(|| DocError::Missing(key.into()))
}

fn obj(doc: &AutoCommit, parent: &ObjId, key: &str) -> Result<ObjId, DocError> {
    match doc.get(parent, key)? {
        Some((Value::Object(_), id)) => Ok(id),
        _ => Err(DocError::Missing(key.into())),
    }
}

#[cfg(test)]
fn scalar_str<P: Into<automerge::Prop>>(
    doc: &AutoCommit,
    parent: &ObjId,
    prop: P,
) -> Option<String> {
    match doc.get(parent, prop) {
        Ok(Some((Value::Scalar(s), _))) => s.as_str().map(str::to_string),
        _ => None,
    }
}

#[cfg(test)]
fn text(doc: &AutoCommit, parent: &ObjId, key: &str) -> Result<String, DocError> {
    scalar_str(doc, parent, key).ok_or_else(|| DocError::Missing(key.into()))
}

fn parse_json<T: serde::de::DeserializeOwned>(field: &str, text: &str) -> Result<T, DocError> {
    if text.len() > MAX_FIELD_BYTES {
        return Err(DocError::TooLong {
            field: field.to_string(),
            max: MAX_FIELD_BYTES,
        });
    }
    serde_json::from_str(text).map_err(|e| malformed(field, &e.to_string()))
}

fn malformed(field: &str, reason: &str) -> DocError {
    DocError::Malformed {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Sample data for tests, here and in other crates (feature `test-utils`).
#[cfg(any(test, feature = "test-utils"))]
pub mod test_support {
    use super::*;
    use crate::application::MaterialStatus;
    use crate::catalog::Tier;
    use crate::event::EventKind;
    use crate::hlc::Hlc;

    /// A village case with a proxy, a photographed material and its `accepted` event; its
    /// applicant's name has characters outside the Basic Multilingual Plane.
    pub fn sample_case() -> Case {
        Case {
            id: "c1".into(),
            receipt_no: "430181101001-20261122-0001".into(),
            item_code: "MZ003".into(),
            item_name: "高龄津贴申领".into(),
            node: "village-1".into(),
            route: ["village:accept", "town:review", "village:issue"]
                .map(String::from)
                .to_vec(),
            division: Divisions {
                village: "430181101001".into(),
                town: "430181101000".into(),
                county: "430181000000".into(),
            },
            applicant: Person {
                name: "𪚥王𠈌".into(),
                id_number: "11010519491231002X".into(),
                phone: "13800138000".into(),
                relation: None,
            },
            proxy: Some(Person {
                name: "李四".into(),
                id_number: "11010519491231002X".into(),
                phone: "13900139000".into(),
                relation: Some("子女".into()),
            }),
            form: [("address".to_string(), "浏阳市 某村 3 组".to_string())].into(),
            materials: vec![MaterialRecord {
                key: "id_card".into(),
                status: MaterialStatus::Photo,
                blob: Some("ab".repeat(32)),
            }],
            bundle: None,
            events: vec![Event {
                id: "e1".into(),
                at: Hlc {
                    wall_ms: 1_763_780_000_000,
                    counter: 0,
                },
                node: "village-1".into(),
                tier: Tier::Village,
                user: "clerk".into(),
                role: "clerk".into(),
                kind: EventKind::Accepted,
                payload: serde_json::json!({"note": "x"}),
                sig: None,
            }],
            forged: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::sample_case;
    use super::*;
    use crate::event::EventKind;

    #[test]
    fn a_case_survives_save_and_load_intact() {
        let case = sample_case();
        let mut doc = build(&case, node_actor("village-1")).unwrap();
        let bytes = doc.save();
        let loaded = AutoCommit::load(&bytes).unwrap();
        assert_eq!(read(&loaded).unwrap(), case);
    }

    /// The batched `build` writes the same root map and event list as one `put` per key,
    /// in one change, every value a scalar (no key an object but `events`).
    #[test]
    fn the_batched_build_writes_what_a_put_per_key_writes() {
        let mut case = sample_case();
        let mut second = case.events[0].clone();
        second.id = "second".into();
        case.events.push(second);
        let mut by_put = AutoCommit::new().with_actor(node_actor("v"));
        by_put.put(ROOT, "schema", CASE_SCHEMA).unwrap();
        by_put.put(ROOT, "kind", "case").unwrap();
        for (key, value) in [
            ("id", &case.id),
            ("receipt_no", &case.receipt_no),
            ("item_code", &case.item_code),
            ("item_name", &case.item_name),
            ("node", &case.node),
        ] {
            by_put.put(ROOT, key, value.as_str()).unwrap();
        }
        by_put
            .put(ROOT, "route", to_json("route", &case.route).unwrap())
            .unwrap();
        by_put
            .put(
                ROOT,
                "division",
                to_json("division", &case.division).unwrap(),
            )
            .unwrap();
        let filing = Filing {
            applicant: case.applicant.clone(),
            proxy: case.proxy.clone(),
            form: case.form.clone(),
            materials: case.materials.clone(),
            bundle: case.bundle.clone(),
        };
        by_put
            .put(
                ROOT,
                "application",
                to_json("application", &filing).unwrap(),
            )
            .unwrap();
        by_put.put_object(ROOT, "events", ObjType::List).unwrap();
        for event in &case.events {
            append_event(&mut by_put, event).unwrap();
        }
        by_put.commit();
        let mut batched = build(&case, node_actor("v")).unwrap();
        assert_eq!(
            batched.hydrate(ROOT, None).unwrap(),
            by_put.hydrate(ROOT, None).unwrap()
        );
        assert_eq!(read(&batched).unwrap(), case);
        assert_eq!(batched.get_changes(&[]).len(), 1);
        let loaded = AutoCommit::load(&batched.save_nocompress()).unwrap();
        assert_eq!(read(&loaded).unwrap(), case);
    }

    #[test]
    fn a_sub_case_keeps_its_bundle_and_a_lone_case_writes_none() {
        let mut case = sample_case();
        let lone = build(&case, node_actor("v")).unwrap();
        assert!(
            !text(&lone, &ROOT, "application")
                .unwrap()
                .contains("bundle")
        );
        case.bundle = Some(BundleRef {
            id: "c1".into(),
            code: "YJS-LNR".into(),
            name: "老年人一件事".into(),
            case_ids: vec!["c1".into(), "c2".into()],
        });
        let mut doc = build(&case, node_actor("v")).unwrap();
        let loaded = AutoCommit::load(&doc.save()).unwrap();
        assert_eq!(read(&loaded).unwrap(), case);
    }

    #[test]
    fn appended_events_fold_into_the_state() {
        let case = sample_case();
        let mut doc = build(&case, node_actor("village-1")).unwrap();
        let mut withdraw = case.events[0].clone();
        withdraw.id = "e2".into();
        withdraw.at.counter = 1;
        withdraw.kind = EventKind::Withdrawn;
        append_event(&mut doc, &withdraw).unwrap();
        let back = read(&doc).unwrap();
        assert_eq!(back.events.len(), 2);
        assert_eq!(back.state().status, crate::fold::Status::Withdrawn);
    }

    #[test]
    fn concurrent_edits_read_as_get_reads_them() {
        // `read` walks the root map and the event list once; a conflicting root key must
        // resolve to the value `get` picks, and concurrent appends must all be read, in the
        // list's order.
        let case = sample_case();
        let mut a = build(&case, node_actor("village-1")).unwrap();
        let mut b = a.fork().with_actor(node_actor("town-1"));
        a.put(ROOT, "item_name", "甲").unwrap();
        b.put(ROOT, "item_name", "乙").unwrap();
        let mut e2 = case.events[0].clone();
        e2.id = "e2".into();
        let mut e3 = case.events[0].clone();
        e3.id = "e3".into();
        append_event(&mut a, &e2).unwrap();
        append_event(&mut b, &e3).unwrap();
        a.merge(&mut b).unwrap();
        let back = read(&a).unwrap();
        assert_eq!(back.item_name, text(&a, &ROOT, "item_name").unwrap());
        let events = obj(&a, &ROOT, "events").unwrap();
        let by_get: Vec<String> = (0..a.length(&events))
            .map(|i| {
                parse_json::<Event>("events", &scalar_str(&a, &events, i).unwrap())
                    .unwrap()
                    .id
            })
            .collect();
        let read_ids: Vec<String> = back.events.iter().map(|e| e.id.clone()).collect();
        assert_eq!(read_ids, by_get);
        assert_eq!(read_ids.len(), 3);
    }

    #[test]
    fn garbage_and_foreign_documents_are_errors() {
        assert!(AutoCommit::load(b"not automerge").is_err());
        let mut other = AutoCommit::new();
        other.put(ROOT, "schema", 99i64).unwrap();
        assert!(matches!(read(&other), Err(DocError::Schema(99))));
        assert!(matches!(
            read(&AutoCommit::new()),
            Err(DocError::Missing(_))
        ));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        // Fuzz property: a saved document with bytes changed, cut or extended is an error
        // or a readable case, never a panic.
        #[test]
        fn damaged_documents_never_panic(
            flips in proptest::collection::vec((0usize..4096, proptest::prelude::any::<u8>()), 0..8),
            cut in 0usize..4096,
        ) {
            let mut doc = build(&sample_case(), node_actor("v")).unwrap();
            let mut bytes = doc.save();
            for (at, value) in flips {
                let n = bytes.len();
                bytes[at % n] = value;
            }
            bytes.truncate(cut.max(1));
            if let Ok(loaded) = AutoCommit::load(&bytes) {
                let _ = read(&loaded);
            }
        }
    }
}
