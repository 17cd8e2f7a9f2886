//! County-wide documents: what the county publishes for every node of the county, carried by
//! the same `yiciban/1` replication as cases. The first is the working-day calendar
//! (DESIGN.md §4): the county publishes it, every village and town receives it, and legal
//! time everywhere counts on the same days.
//!
//! A county-wide document has an id starting `county:`; it lives in `county_docs-1`, not among
//! the cases, and sits in every scope's feed (village, town, county). Only the county writes
//! one: a change sent by any other peer is refused, and so is a document that does not hold a
//! valid calendar.
//!
//! Automerge schema of `county:calendar`: root map `{kind: "calendar", schema: 1, toml: TEXT}`
//! where `TEXT` is the calendar file as the county published it (`crate::calendar`).

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ReadDoc, ScalarValue, Value};

use crate::calendar::Calendar;
use crate::case_doc::DocError;

/// The id of the published working-day calendar.
pub const CALENDAR_DOC: &str = "county:calendar";

/// Whether `doc_id` names a county-wide document rather than a case.
pub fn is_county_doc(doc_id: &str) -> bool {
    doc_id.starts_with("county:")
}

fn malformed(reason: &str) -> DocError {
    DocError::Malformed {
        field: "calendar".into(),
        reason: reason.into(),
    }
}

/// The calendar text a calendar document holds, checked.
pub fn read_calendar(doc: &AutoCommit) -> Result<(String, Calendar), DocError> {
    let text = |key: &str| -> Result<String, DocError> {
        match doc.get(automerge::ROOT, key)? {
            Some((Value::Scalar(s), _)) => match s.as_ref() {
                ScalarValue::Str(t) => Ok(t.to_string()),
                _ => Err(malformed(&format!("{key} is not text"))),
            },
            _ => Err(malformed(&format!("{key} is missing"))),
        }
    };
    if text("kind")? != "calendar" {
        return Err(malformed("not a calendar document"));
    }
    let toml = text("toml")?;
    let calendar = Calendar::parse(&toml).map_err(|e| malformed(&e.to_string()))?;
    Ok((toml, calendar))
}

/// The changes that make the calendar document (`existing`, its saved bytes, if any) hold
/// `toml`; `None` when it already does. `toml` must be a valid calendar.
pub fn publish_calendar(
    existing: Option<&[u8]>,
    toml: &str,
    actor: automerge::ActorId,
) -> Result<Option<Vec<Vec<u8>>>, DocError> {
    Calendar::parse(toml).map_err(|e| malformed(&e.to_string()))?;
    let mut doc = match existing {
        Some(bytes) => AutoCommit::load(bytes)?,
        None => AutoCommit::new(),
    }
    .with_actor(actor);
    if existing.is_some() && read_calendar(&doc).is_ok_and(|(held, _)| held == toml) {
        return Ok(None);
    }
    let before = doc.get_heads();
    doc.put(automerge::ROOT, "kind", "calendar")?;
    doc.put(automerge::ROOT, "schema", 1u64)?;
    doc.put(automerge::ROOT, "toml", toml)?;
    doc.commit();
    Ok(Some(
        doc.get_changes(&before)
            .into_iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "schema = 1\nyears = [2026]\n";
    const B: &str = "schema = 1\nyears = [2026, 2027]\n";

    fn apply(doc: &mut AutoCommit, changes: Vec<Vec<u8>>) {
        let parsed = changes
            .into_iter()
            .map(|c| automerge::Change::from_bytes(c).unwrap())
            .collect::<Vec<_>>();
        doc.apply_changes(parsed).unwrap();
    }

    #[test]
    fn publishing_writes_once_and_an_update_carries_only_the_new_text() {
        let actor = crate::case_doc::node_actor("county");
        let first = publish_calendar(None, A, actor.clone()).unwrap().unwrap();
        let mut replica = AutoCommit::new();
        apply(&mut replica, first);
        assert_eq!(read_calendar(&replica).unwrap().0, A);
        let saved = replica.save();
        assert!(
            publish_calendar(Some(&saved), A, actor.clone())
                .unwrap()
                .is_none()
        );
        let update = publish_calendar(Some(&saved), B, actor).unwrap().unwrap();
        assert_eq!(update.len(), 1);
        apply(&mut replica, update);
        let (text, cal) = read_calendar(&replica).unwrap();
        assert_eq!(text, B);
        assert!(
            cal.is_working_day(chrono::NaiveDate::from_ymd_opt(2027, 3, 3).unwrap())
                .unwrap()
        );
    }

    #[test]
    fn a_bad_calendar_is_neither_published_nor_read() {
        let actor = crate::case_doc::node_actor("county");
        assert!(publish_calendar(None, "schema = 1\nyears = []\nx = 1\n", actor).is_err());
        let mut doc = AutoCommit::new();
        doc.put(automerge::ROOT, "kind", "calendar").unwrap();
        doc.put(automerge::ROOT, "toml", "not toml [").unwrap();
        assert!(read_calendar(&doc).is_err());
        doc.put(automerge::ROOT, "kind", "case").unwrap();
        assert!(read_calendar(&doc).is_err());
    }
}
