//! Length bounds of everything a case holds: checked when a clerk files (a 422 naming the
//! field) and when a case arrives from a peer (a document over its bounds is never written
//! here: it is quarantined, [`crate::store`]). The catalogue may set them (`[limits]`), and
//! each form field its own `max_len`; these are the defaults.

use serde::{Deserialize, Serialize};

use crate::case_doc::Case;
use crate::catalog::Catalog;
use crate::message::Msg;

/// The bounds in force, from the catalogue's `[limits]` (every key optional).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// A person's name (applicant, agent).
    pub name_chars: usize,
    /// The agent's relation to the applicant.
    pub relation_chars: usize,
    /// A one-line form field without its own `max_len`.
    pub text_chars: usize,
    /// A multi-line form field without its own `max_len`.
    pub textarea_chars: usize,
    /// A text an event carries (a reason, a comment, a note).
    pub event_text_chars: usize,
    /// Events one case holds.
    pub events_per_case: usize,
    /// Materials one case lists.
    pub materials_per_case: usize,
    /// The bytes of one case's saved document.
    pub case_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            name_chars: 30,
            relation_chars: 20,
            text_chars: 200,
            textarea_chars: 2000,
            event_text_chars: 1000,
            events_per_case: 500,
            materials_per_case: 60,
            case_bytes: 512 * 1024,
        }
    }
}

/// Identifiers and codes: ids, receipt numbers, item codes, tiers, kinds, user names.
const ID_CHARS: usize = 64;
/// ID numbers (18) and phones (11, or a landline with its area code).
const NUMBER_CHARS: usize = 20;

fn over(field: &str, max: usize) -> Msg {
    Msg::new(
        format!("{field}超过长度上限（{max}字）"),
        format!("{field} is longer than {max} characters"),
    )
}

fn within(value: &str, max: usize, field: &str) -> Result<(), Msg> {
    if value.chars().count() > max {
        return Err(over(field, max));
    }
    Ok(())
}

/// Checks a case (as read from a document) against `limits` and `catalog`'s fields; the first
/// field over its bound, named. `doc_bytes` is the size of its saved document.
pub fn check_case(
    case: &Case,
    doc_bytes: usize,
    limits: &Limits,
    catalog: Option<&Catalog>,
) -> Result<(), Msg> {
    if doc_bytes > limits.case_bytes {
        return Err(Msg::new(
            format!(
                "办件文档过大（{} KB，上限 {} KB）",
                doc_bytes / 1024,
                limits.case_bytes / 1024
            ),
            format!(
                "the case document is {doc_bytes} bytes, over {}",
                limits.case_bytes
            ),
        ));
    }
    for (value, field) in [
        (&case.id, "id"),
        (&case.receipt_no, "receipt_no"),
        (&case.item_code, "item_code"),
        (&case.node, "node"),
        (&case.division.village, "division"),
        (&case.division.town, "division"),
        (&case.division.county, "division"),
    ] {
        within(value, ID_CHARS, field)?;
    }
    within(&case.item_name, limits.text_chars, "item_name")?;
    if case.route.len() > 16 || case.route.iter().any(|s| s.chars().count() > ID_CHARS) {
        return Err(over("route", ID_CHARS));
    }
    for (person, prefix) in [
        (Some(&case.applicant), "applicant"),
        (case.proxy.as_ref(), "proxy"),
    ] {
        let Some(p) = person else { continue };
        within(&p.name, limits.name_chars, &format!("{prefix}.name"))?;
        within(&p.id_number, NUMBER_CHARS, &format!("{prefix}.id_number"))?;
        within(&p.phone, NUMBER_CHARS, &format!("{prefix}.phone"))?;
        if let Some(r) = &p.relation {
            within(r, limits.relation_chars, &format!("{prefix}.relation"))?;
        }
    }
    let item = catalog.and_then(|c| c.get(&case.item_code));
    for (key, value) in &case.form {
        within(key, ID_CHARS, "form")?;
        let max = item
            .and_then(|i| i.field(key))
            .and_then(|f| f.max_len)
            .unwrap_or(limits.textarea_chars);
        within(value, max, &format!("form.{key}"))?;
    }
    if case.materials.len() > limits.materials_per_case {
        return Err(over("materials", limits.materials_per_case));
    }
    for m in &case.materials {
        within(&m.key, ID_CHARS, "materials")?;
    }
    let events = case.events.len() + case.forged.len();
    if events > limits.events_per_case {
        return Err(Msg::new(
            format!("办件事件过多（{events}，上限 {}）", limits.events_per_case),
            format!("{events} events, more than {}", limits.events_per_case),
        ));
    }
    for e in case
        .events
        .iter()
        .chain(case.forged.iter().map(|f| &f.event))
    {
        for (value, field) in [
            (&e.id, "event.id"),
            (&e.node, "event.node"),
            (&e.user, "event.user"),
            (&e.role, "event.role"),
        ] {
            within(value, ID_CHARS, field)?;
        }
        within(e.kind.as_str(), ID_CHARS, "event.kind")?;
        let payload = e.payload.to_string();
        // A payload holds a few texts (a reason, materials listed, a seal): a bound a few
        // times an event text's.
        if payload.len() > limits.event_text_chars * 16 {
            return Err(over("event.payload", limits.event_text_chars * 16));
        }
        if let Some(map) = e.payload.as_object() {
            for (k, v) in map {
                if let Some(text) = v.as_str()
                    && k != "seal"
                {
                    within(text, limits.event_text_chars, &format!("event.{k}"))?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case_doc::test_support::sample_case;

    fn catalog() -> Catalog {
        Catalog::parse(crate::DEMO_CATALOG, std::path::Path::new("catalog.toml")).unwrap()
    }

    #[test]
    fn a_long_relation_or_comment_is_named_and_a_sample_case_passes() {
        let limits = Limits::default();
        let mut case = sample_case();
        assert_eq!(check_case(&case, 2000, &limits, Some(&catalog())), Ok(()));
        if let Some(p) = case.proxy.as_mut() {
            p.relation = Some("兄".repeat(400_000));
        }
        let e = check_case(&case, 2000, &limits, Some(&catalog())).unwrap_err();
        assert!(e.zh.contains("proxy.relation"), "{e:?}");
        let mut case = sample_case();
        case.events[0].payload = serde_json::json!({"text": "长".repeat(1001)});
        let e = check_case(&case, 2000, &limits, Some(&catalog())).unwrap_err();
        assert!(e.zh.contains("event.text"), "{e:?}");
        let e = check_case(&sample_case(), 600 * 1024, &limits, Some(&catalog())).unwrap_err();
        assert!(e.zh.contains("过大"), "{e:?}");
    }
}
