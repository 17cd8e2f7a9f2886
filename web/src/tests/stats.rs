//! 统计分析: `/api/v1/stats`, the `/stats` page with its SVG charts, and each CSV table.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{Session, node_state, ship, ship_backdated, weekends_calendar};
use crate::router;

/// `(key, cases)` of a breakdown in the JSON.
fn keyed(rows: &Value) -> Vec<(String, u64)> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_string(),
                r["cases"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// `GET /stats.csv?table=NAME`: status, content type and the body's bytes.
async fn csv_of(session: &Session, table: &str) -> (StatusCode, String, Vec<u8>) {
    let resp = router(session.state.clone())
        .oneshot(
            Request::get(format!("/stats.csv?table={table}"))
                .header(header::COOKIE, &session.cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, content_type, bytes.to_vec())
}

/// Parses a CSV table (after its byte-order mark) into its header and rows.
fn parse_csv(bytes: &[u8]) -> (Vec<String>, Vec<Vec<String>>) {
    let body = bytes
        .strip_prefix("\u{feff}".as_bytes())
        .expect("a UTF-8 byte-order mark first");
    let mut reader = csv::Reader::from_reader(body);
    let header = reader.headers().unwrap().iter().map(String::from).collect();
    let rows = reader
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    (header, rows)
}

#[tokio::test]
async fn counts_by_item_village_town_month_and_status_with_charts_and_csv_tables() {
    let dir = tempfile::tempdir().unwrap();
    let village = node_state(&dir, "village", "").await;
    let clerk = Session::new(&village, "clerk").await;
    clerk.file("MZ003").await;
    clerk.file("MZ003").await;
    clerk.file("YB001").await;

    let (status, s) = clerk.get_json("/api/v1/stats").await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(s["cases"], 3);
    assert_eq!(
        keyed(&s["by_item"]),
        [("MZ003".to_string(), 2), ("YB001".to_string(), 1)]
    );
    assert_eq!(s["by_item"][0]["name"], "高龄津贴申领");
    assert_eq!(keyed(&s["by_village"]), [("430181101001".to_string(), 3)]);
    assert_eq!(keyed(&s["by_town"]), [("430181101000".to_string(), 3)]);
    let month = village.node.today().format("%Y-%m").to_string();
    assert_eq!(keyed(&s["by_month"]), [(month, 3)]);
    assert_eq!(
        keyed(&s["by_status"]),
        [
            ("under_review".to_string(), 2),
            ("ready_to_issue".to_string(), 1)
        ]
    );
    assert_eq!(s["on_time"]["decided"], 0);
    assert!(s["on_time"]["rate"].is_null());
    assert_eq!(s["satisfaction"]["rated"], 0);
    assert_eq!(s["satisfaction"]["levels"].as_array().unwrap().len(), 5);

    let (status, page) = clerk.get("/stats").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("<svg") && page.contains("id=\"chart-by_item\""));
    let chart = &page[page.find("id=\"chart-by_item\"").unwrap()..];
    let chart = &chart[..chart.find("</svg>").unwrap()];
    assert!(chart.contains("高龄津贴申领") && chart.contains("城乡居民医保参保登记"));
    assert!(page.contains("href=\"/stats.csv?table=by_step\""));
    assert!(page.contains("href=\"/stats\""), "the nav links the page");
    assert!(!page.contains("<script src=\"http"), "no CDN");

    let expected: [(&str, &[&str], usize); 7] = [
        (
            "by_item",
            &[
                "事项编码",
                "事项名称",
                "办件数",
                "已办结",
                "按时办结",
                "超期办结",
                "按时办结率(%)",
            ],
            2,
        ),
        (
            "by_village",
            &[
                "村（社区）区划代码",
                "办件数",
                "已办结",
                "按时办结",
                "超期办结",
                "按时办结率(%)",
            ],
            1,
        ),
        (
            "by_town",
            &[
                "乡镇（街道）区划代码",
                "办件数",
                "已办结",
                "按时办结",
                "超期办结",
                "按时办结率(%)",
            ],
            1,
        ),
        (
            "by_month",
            &[
                "受理月份",
                "办件数",
                "已办结",
                "按时办结",
                "超期办结",
                "按时办结率(%)",
            ],
            1,
        ),
        ("by_status", &["状态", "状态名称", "办件数"], 2),
        (
            "by_step",
            &[
                "事项编码",
                "事项名称",
                "环节",
                "环节名称",
                "环节时限(工作日)",
                "办件数",
                "合计工作日",
                "平均工作日",
                "超环节时限",
            ],
            0,
        ),
        (
            "satisfaction",
            &["评价等级", "等级名称", "办件数", "占比(%)"],
            5,
        ),
    ];
    for (table, header, rows) in expected {
        let (status, content_type, bytes) = csv_of(&clerk, table).await;
        assert_eq!(status, StatusCode::OK, "{table}");
        assert_eq!(content_type, "text/csv; charset=utf-8");
        let (got_header, got_rows) = parse_csv(&bytes);
        assert_eq!(got_header, header, "{table}");
        assert_eq!(got_rows.len(), rows, "{table}: {got_rows:?}");
    }
    let (_, _, bytes) = csv_of(&clerk, "by_item").await;
    let (_, rows) = parse_csv(&bytes);
    assert_eq!(rows[0][..3], ["MZ003", "高龄津贴申领", "2"]);
    assert_eq!(rows[0][6], "", "no decided case: no rate");
    let (status, _, _) = csv_of(&clerk, "nonsense").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn decided_cases_give_the_on_time_rate_step_days_and_satisfaction() {
    let (vdir, tdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let village = node_state(&vdir, "village", &weekends_calendar(&vdir)).await;
    let town = node_state(&tdir, "town", &weekends_calendar(&tdir)).await;
    let clerk = Session::new(&village, "clerk").await;
    let reviewer = Session::new(&town, "reviewer").await;

    // One accepted now, one accepted 30 days ago (MZ003: 10 promised days, review 5).
    let (fresh, _) = clerk.file("MZ003").await;
    ship(&village, &town, &fresh).await;
    ship_backdated(&village, &town, &fresh, "case-late", "MZ003", 30).await;
    for id in [fresh.as_str(), "case-late"] {
        let (status, body) = reviewer.event(id, json!({"kind": "review_passed"})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    let (_, s) = reviewer.get_json("/api/v1/stats").await;
    assert_eq!(s["cases"], 2);
    let on_time = &s["on_time"];
    assert_eq!(
        (&on_time["decided"], &on_time["on_time"], &on_time["late"]),
        (&json!(2), &json!(1), &json!(1))
    );
    assert_eq!(on_time["rate"], 0.5);
    assert_eq!(s["by_item"][0]["on_time_rate"], 0.5);
    let steps = s["by_step"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{steps:?}");
    let review = &steps[0];
    assert_eq!(
        (&review["step"], &review["step_name"], &review["limit_days"]),
        (&json!("town:review"), &json!("镇审核"), &json!(5))
    );
    assert_eq!(review["cases"], 2);
    // The late case's review counts the working days of a weekends-only calendar in the 30
    // calendar days before today (20 to 22, by the weekday the test runs on); the fresh case
    // was reviewed the day it arrived.
    let today = town.node.today();
    let started = today - chrono::Days::new(30);
    let late_days = town
        .node
        .calendar()
        .unwrap()
        .working_days_between(started, today)
        .unwrap();
    assert!(
        (20..=22).contains(&late_days),
        "{started}..{today}: {late_days}"
    );
    assert_eq!(
        review["total_days"],
        u64::from(late_days),
        "{started}..{today}"
    );
    assert_eq!(review["over_limit"], 1);
    let (_, page) = reviewer.get("/stats").await;
    assert!(page.contains("id=\"on-time-rate\">50.0%"), "{page}");
    assert!(page.contains("高龄津贴申领·镇审核"));

    // Back at the village: issued and rated, one well and one badly.
    for (id, level) in [(fresh.as_str(), 5), ("case-late", 1)] {
        ship(&town, &village, id).await;
        let (status, body) = clerk.event(id, json!({"kind": "issued"})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, body) = clerk
            .event(id, json!({"kind": "rated", "level": level}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (_, s) = clerk.get_json("/api/v1/stats").await;
    let sat = &s["satisfaction"];
    assert_eq!(
        (&sat["rated"], &sat["satisfied"], &sat["bad"]),
        (&json!(2), &json!(1), &json!(1))
    );
    assert_eq!(sat["satisfied_rate"], 0.5);
    assert_eq!(sat["open_follow_ups"], 1);
    assert_eq!(sat["levels"][0]["level"], 5);
    assert_eq!(sat["levels"][0]["cases"], 1);
    let steps: Vec<&str> = s["by_step"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["town:review", "village:issue"]);

    let (_, _, bytes) = csv_of(&clerk, "satisfaction").await;
    let (_, rows) = parse_csv(&bytes);
    assert_eq!(rows[0], ["5", "非常满意", "1", "50.0"]);
    assert_eq!(rows[4], ["1", "非常不满意", "1", "50.0"]);
    let (_, _, bytes) = csv_of(&clerk, "by_step").await;
    let (_, rows) = parse_csv(&bytes);
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0][..4],
        ["MZ003", "高龄津贴申领", "town:review", "镇审核"]
    );
}
