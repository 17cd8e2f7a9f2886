//! The Automerge schema of a case document (schema 1).
//!
//! ```text
//! ROOT { schema: 1, kind: "case", id, receipt_no, item_code, item_name, node,
//!        route: [step], division: {village, town, county},
//!        applicant: {name, id_number, phone}, proxy?: {name, id_number, phone, relation},
//!        form: {key: text}, materials: {key: {status, blob?}},
//!        events: [{id, at, node, tier, user, role, kind, payload (JSON text)}] }
//! ```
//!
//! Events are only ever appended; status is never stored, it is [`crate::fold::fold`] of them.

use std::collections::BTreeMap;

use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, ObjId, ObjType, ROOT, ReadDoc, Value};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::application::{MaterialRecord, MaterialStatus, Person};
use crate::catalog::Tier;
use crate::event::{Event, EventKind};
use crate::fold::{CaseState, fold};
use crate::hlc::Hlc;

/// The case document schema this build writes and reads.
pub const CASE_SCHEMA: i64 = 1;

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
    pub form: BTreeMap<String, String>,
    pub materials: Vec<MaterialRecord>,
    pub events: Vec<Event>,
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
}

/// The Automerge actor of a node: 16 bytes derived from its id, so one node writes as one actor.
pub fn node_actor(node_id: &str) -> ActorId {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(node_id.as_bytes());
    ActorId::from(&digest[..16])
}

/// Builds the document of a new case; `case.events` holds its `accepted` event.
pub fn build(case: &Case, actor: ActorId) -> Result<AutoCommit, DocError> {
    let mut doc = AutoCommit::new().with_actor(actor);
    doc.put(ROOT, "schema", CASE_SCHEMA)?;
    doc.put(ROOT, "kind", "case")?;
    for (key, value) in [
        ("id", &case.id),
        ("receipt_no", &case.receipt_no),
        ("item_code", &case.item_code),
        ("item_name", &case.item_name),
        ("node", &case.node),
    ] {
        doc.put(ROOT, key, value.as_str())?;
    }
    let route = doc.put_object(ROOT, "route", ObjType::List)?;
    for (i, step) in case.route.iter().enumerate() {
        doc.insert(&route, i, step.as_str())?;
    }
    let division = doc.put_object(ROOT, "division", ObjType::Map)?;
    doc.put(&division, "village", case.division.village.as_str())?;
    doc.put(&division, "town", case.division.town.as_str())?;
    doc.put(&division, "county", case.division.county.as_str())?;
    put_person(&mut doc, "applicant", &case.applicant)?;
    if let Some(proxy) = &case.proxy {
        put_person(&mut doc, "proxy", proxy)?;
    }
    let form = doc.put_object(ROOT, "form", ObjType::Map)?;
    for (key, value) in &case.form {
        doc.put(&form, key.as_str(), value.as_str())?;
    }
    let materials = doc.put_object(ROOT, "materials", ObjType::Map)?;
    for m in &case.materials {
        let obj = doc.put_object(&materials, m.key.as_str(), ObjType::Map)?;
        doc.put(&obj, "status", m.status.as_str())?;
        if let Some(blob) = &m.blob {
            doc.put(&obj, "blob", blob.as_str())?;
        }
    }
    doc.put_object(ROOT, "events", ObjType::List)?;
    for event in &case.events {
        append_event(&mut doc, event)?;
    }
    doc.commit();
    Ok(doc)
}

fn put_person(doc: &mut AutoCommit, key: &str, p: &Person) -> Result<(), DocError> {
    let obj = doc.put_object(ROOT, key, ObjType::Map)?;
    doc.put(&obj, "name", p.name.as_str())?;
    doc.put(&obj, "id_number", p.id_number.as_str())?;
    doc.put(&obj, "phone", p.phone.as_str())?;
    if let Some(relation) = &p.relation {
        doc.put(&obj, "relation", relation.as_str())?;
    }
    Ok(())
}

/// Appends one event to the log.
pub fn append_event(doc: &mut AutoCommit, event: &Event) -> Result<(), DocError> {
    let events = obj(doc, &ROOT, "events")?;
    let index = doc.length(&events);
    let e = doc.insert_object(&events, index, ObjType::Map)?;
    doc.put(&e, "id", event.id.as_str())?;
    doc.put(&e, "at", event.at.to_string())?;
    doc.put(&e, "node", event.node.as_str())?;
    doc.put(&e, "tier", event.tier.as_str())?;
    doc.put(&e, "user", event.user.as_str())?;
    doc.put(&e, "role", event.role.as_str())?;
    doc.put(&e, "kind", event.kind.as_str())?;
    doc.put(&e, "payload", event.payload.to_string())?;
    Ok(())
}

/// Reads a case from its document.
pub fn read(doc: &AutoCommit) -> Result<Case, DocError> {
    match doc.get(ROOT, "schema")? {
        Some((Value::Scalar(s), _)) => match s.as_i64() {
            Some(CASE_SCHEMA) => {}
            Some(other) => return Err(DocError::Schema(other)),
            None => return Err(malformed("schema", "not an integer")),
        },
        _ => return Err(DocError::Missing("schema".into())),
    }
    let route_obj = obj(doc, &ROOT, "route")?;
    let route = (0..doc.length(&route_obj))
        .map(|i| {
            scalar_str(doc, &route_obj, i).ok_or_else(|| malformed("route", "step is not text"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let division = obj(doc, &ROOT, "division")?;
    let materials_obj = obj(doc, &ROOT, "materials")?;
    let mut materials = Vec::new();
    for key in doc.keys(&materials_obj).collect::<Vec<_>>() {
        let m = obj(doc, &materials_obj, &key)?;
        let status = text(doc, &m, "status")?;
        materials.push(MaterialRecord {
            status: MaterialStatus::parse(&status)
                .ok_or_else(|| malformed("materials", "unknown status"))?,
            blob: scalar_str(doc, &m, "blob"),
            key,
        });
    }
    let form_obj = obj(doc, &ROOT, "form")?;
    let mut form = BTreeMap::new();
    for key in doc.keys(&form_obj).collect::<Vec<_>>() {
        let value = text(doc, &form_obj, &key)?;
        form.insert(key, value);
    }
    let events_obj = obj(doc, &ROOT, "events")?;
    let events = (0..doc.length(&events_obj))
        .map(|i| read_event(doc, &events_obj, i))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Case {
        id: text(doc, &ROOT, "id")?,
        receipt_no: text(doc, &ROOT, "receipt_no")?,
        item_code: text(doc, &ROOT, "item_code")?,
        item_name: text(doc, &ROOT, "item_name")?,
        node: text(doc, &ROOT, "node")?,
        route,
        division: Divisions {
            village: text(doc, &division, "village")?,
            town: text(doc, &division, "town")?,
            county: text(doc, &division, "county")?,
        },
        applicant: read_person(doc, "applicant")?
            .ok_or_else(|| DocError::Missing("applicant".into()))?,
        proxy: read_person(doc, "proxy")?,
        form,
        materials,
        events,
    })
}

fn read_event(doc: &AutoCommit, events: &ObjId, index: usize) -> Result<Event, DocError> {
    let e = match doc.get(events, index)? {
        Some((Value::Object(ObjType::Map), id)) => id,
        _ => return Err(malformed("events", "entry is not a map")),
    };
    let at = text(doc, &e, "at")?;
    let tier = text(doc, &e, "tier")?;
    let payload = text(doc, &e, "payload")?;
    Ok(Event {
        id: text(doc, &e, "id")?,
        at: Hlc::parse(&at).ok_or_else(|| malformed("events.at", "not an HLC stamp"))?,
        node: text(doc, &e, "node")?,
        tier: Tier::parse(&tier).ok_or_else(|| malformed("events.tier", "unknown tier"))?,
        user: text(doc, &e, "user")?,
        role: text(doc, &e, "role")?,
        kind: EventKind::parse(&text(doc, &e, "kind")?),
        payload: serde_json::from_str(&payload)
            .map_err(|e| malformed("events.payload", &e.to_string()))?,
    })
}

fn read_person(doc: &AutoCommit, key: &str) -> Result<Option<Person>, DocError> {
    let p = match doc.get(ROOT, key)? {
        Some((Value::Object(ObjType::Map), id)) => id,
        None => return Ok(None),
        Some(_) => return Err(malformed(key, "not a map")),
    };
    Ok(Some(Person {
        name: text(doc, &p, "name")?,
        id_number: text(doc, &p, "id_number")?,
        phone: text(doc, &p, "phone")?,
        relation: scalar_str(doc, &p, "relation"),
    }))
}

fn obj(doc: &AutoCommit, parent: &ObjId, key: &str) -> Result<ObjId, DocError> {
    match doc.get(parent, key)? {
        Some((Value::Object(_), id)) => Ok(id),
        _ => Err(DocError::Missing(key.into())),
    }
}

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

fn text(doc: &AutoCommit, parent: &ObjId, key: &str) -> Result<String, DocError> {
    scalar_str(doc, parent, key).ok_or_else(|| DocError::Missing(key.into()))
}

fn malformed(field: &str, reason: &str) -> DocError {
    DocError::Malformed {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Sample data shared by the tests of this crate.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    pub(crate) fn sample_case() -> Case {
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
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::sample_case;
    use super::*;

    #[test]
    fn a_case_survives_save_and_load_intact() {
        let case = sample_case();
        let mut doc = build(&case, node_actor("village-1")).unwrap();
        let bytes = doc.save();
        let loaded = AutoCommit::load(&bytes).unwrap();
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
