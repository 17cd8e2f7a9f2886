//! Nodes and cases for the tests of the legal-time projections (queue, supervision,
//! statistics): a node of any tier on a weekends-only calendar, and seeded cases in every
//! state a case can be in.

use std::sync::Arc;

use crate::case_doc::{Case, Divisions};
use crate::catalog::{Catalog, Tier};
use crate::event::{Event, EventKind};
use crate::hlc::Hlc;
use crate::node::Node;
use crate::summary::CaseSummary;

/// A `role` node in `dir` counting on a weekends-only calendar.
pub(crate) fn node(dir: &std::path::Path, role: &str, division: &str) -> Arc<Node> {
    let years: Vec<String> = (2024..=2040).map(|y| y.to_string()).collect();
    std::fs::write(
        dir.join("cal.toml"),
        format!("schema = 1\nyears = [{}]\n", years.join(", ")),
    )
    .unwrap();
    std::fs::write(dir.join("catalog.toml"), crate::DEMO_CATALOG).unwrap();
    let toml = format!(
        r#"
[node]
id = "{role}-test"
role = "{role}"
name = "n"
division = "{division}"
town_division = "430181101000"
county_division = "430181000000"
[http]
listen = "127.0.0.1:0"
[store]
path = "node.redb"
[catalog]
path = "catalog.toml"
[calendar]
path = "cal.toml"
"#
    );
    std::fs::write(dir.join("node.toml"), toml).unwrap();
    let config = crate::config::Config::load(&dir.join("node.toml")).unwrap();
    let catalog = Catalog::load(&config.catalog_path()).unwrap();
    let store = crate::store::Store::open(&config.store_path(), 64, 1 << 20).unwrap();
    Node::new(config, catalog, store).unwrap()
}

pub(crate) const DAY: u64 = 86_400_000;

pub(crate) fn ev(case: usize, n: usize, at: u64, tier: Tier, kind: EventKind) -> Event {
    Event {
        id: format!("e{case}-{n}"),
        at: Hlc {
            wall_ms: at,
            counter: 0,
        },
        node: format!("{}-1", tier.as_str()),
        tier,
        user: "u".into(),
        role: "r".into(),
        kind,
        payload: serde_json::json!({"materials": ["户口簿"]}),
        sig: None,
    }
}

/// Case `i`: an item, one of three villages, an acceptance some days ago and one of several
/// histories, so the queue holds cases under review, awaiting or past a supplement, ready,
/// issued and closed, with and without limits; the handed-out ones are rated, some badly.
pub(crate) fn case(catalog: &Catalog, i: usize) -> Case {
    let items = ["MZ001", "MZ003", "LL001", "WJ001", "RS001", "YB001"];
    let item = catalog.get(items[i % items.len()]).unwrap();
    let now = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap();
    let at = now - (5 + (i * 7) as u64 % 40) * DAY - i as u64;
    let (v, t) = (Tier::Village, Tier::Town);
    let mut events = vec![ev(i, 0, at, v, EventKind::Accepted)];
    let script: &[(u64, Tier, EventKind)] = match (i / items.len()) % 7 {
        0 => &[],
        1 => &[(2, t, EventKind::SupplementRequested)],
        2 => &[
            (1, t, EventKind::SupplementRequested),
            (3, v, EventKind::SupplementProvided),
        ],
        3 => &[(2, t, EventKind::ReviewPassed)],
        4 => &[(2, t, EventKind::ReviewPassed), (3, v, EventKind::Issued)],
        5 => &[
            (1, t, EventKind::ReviewPassed),
            (2, v, EventKind::Issued),
            (3, v, EventKind::PickedUp),
        ],
        _ => &[(1, v, EventKind::Withdrawn)],
    };
    for (n, (days, tier, kind)) in script.iter().enumerate() {
        events.push(ev(i, n + 1, at + days * DAY, *tier, kind.clone()));
    }
    if matches!((i / items.len()) % 7, 4 | 5) {
        events.push(Event {
            payload: serde_json::json!({"level": 1 + i % 5, "source": "paper", "comment": ""}),
            ..ev(i, 9, at + 4 * DAY, v, EventKind::Rated)
        });
    }
    let mut c = crate::case_doc::test_support::sample_case();
    c.id = format!("case-{i:03}");
    c.receipt_no = format!("430181101001-20261122-{:04}", 1000 - i);
    c.item_code = item.code.clone();
    c.route = item.route_steps();
    c.division = Divisions {
        village: format!("43018110100{}", 1 + i % 3),
        town: "430181101000".into(),
        county: "430181000000".into(),
    };
    c.materials.clear();
    c.events = events;
    c
}

pub(crate) async fn fill(node: &Node, range: std::ops::Range<usize>) {
    for i in range {
        let c = case(&node.catalog, i);
        let doc = crate::case_doc::build(&c, crate::case_doc::node_actor("v"))
            .unwrap()
            .save();
        let summary = CaseSummary::of(&c, &c.state());
        node.store
            .put_new_case(
                &c,
                crate::store::SavedDoc::from_bytes(doc),
                summary,
                ("20261122".into(), i as u64),
                Vec::new(),
            )
            .await
            .unwrap();
    }
}
