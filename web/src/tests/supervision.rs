//! 电子监察 at county scale: every late case is listed however many there are, the oldest
//! included, page by page.

use axum::http::StatusCode;
use yiciban_core::case_doc::{self, Case};
use yiciban_core::store::{NewCase, SavedDoc};
use yiciban_core::summary::CaseSummary;

use super::{Session, node_state, weekends_calendar};

/// Late cases filed straight into the county's store: more than any status scan used to read.
const LATE: usize = 30_001;

/// Late case `i` of WJ001 (town:review, one working day), accepted `i` minutes before a day
/// 60 days ago: the higher `i`, the older and the more overdue.
fn late_case(base: &Case, i: usize, now_ms: u64) -> Case {
    let mut case = base.clone();
    case.id = format!("late-{i:05}");
    case.receipt_no = format!("430181101001-20261001-{i:05}");
    let accepted = &mut case.events[0];
    accepted.id = format!("late-{i:05}-accepted");
    accepted.at.wall_ms = now_ms - 60 * 86_400_000 - i as u64 * 60_000;
    case
}

#[tokio::test]
async fn supervision_lists_the_oldest_of_thirty_thousand_late_cases() {
    let dir = tempfile::tempdir().unwrap();
    let county = node_state(&dir, "county", &weekends_calendar(&dir)).await;
    let approver = Session::new(&county, "approver").await;
    let mut base = yiciban_core::case_doc::test_support::sample_case();
    let item = county.node.catalog.get("WJ001").unwrap();
    base.item_code = item.code.clone();
    base.route = item.route_steps();
    base.materials.clear();
    base.events.truncate(1);
    let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap();
    let cases: Vec<Case> = (0..LATE).map(|i| late_case(&base, i, now_ms)).collect();
    for chunk in cases.chunks(1_000) {
        let batch = chunk
            .iter()
            .map(|c| NewCase {
                case: c,
                doc: SavedDoc::from_bytes(
                    case_doc::build(c, case_doc::node_actor("v"))
                        .unwrap()
                        .save(),
                ),
                summary: CaseSummary::of(c, &c.state()),
                receipt: ("20261001".into(), 0),
                blobs: Vec::new(),
            })
            .collect();
        county.node.store.put_new_cases(batch).await.unwrap();
    }

    let (status, first) = approver
        .get_json("/api/v1/supervision?limit=1&offset=0")
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["total"], LATE as u64);
    assert_eq!(first["red"], LATE as u64);
    let oldest = format!("late-{:05}", LATE - 1);
    assert_eq!(
        first["items"][0]["id"],
        oldest.as_str(),
        "the most overdue first"
    );
    let (_, last) = approver
        .get_json(&format!("/api/v1/supervision?limit=5&offset={}", LATE - 1))
        .await;
    assert_eq!(
        last["items"][0]["id"], "late-00000",
        "the newest late case last"
    );
    assert_eq!(last["count"], 1);

    // The page: 50 a page, the oldest on the first, the 30,000th-oldest reachable.
    let (status, page) = approver.get("/supervision").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(&format!("/cases/{oldest}")), "first page");
    assert!(
        page.contains(&format!("超期 {LATE} 件")),
        "every case counted"
    );
    let pages = LATE.div_ceil(50);
    let (_, page) = approver.get(&format!("/supervision?page={pages}")).await;
    assert!(page.contains("/cases/late-00000"), "last page");
    let (_, page) = approver
        .get(&format!("/supervision?page={}", pages - 1))
        .await;
    assert!(page.contains("/cases/late-00001") && page.contains("/cases/late-00050"));
}
