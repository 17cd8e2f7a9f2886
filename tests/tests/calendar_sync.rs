//! The county publishes the working-day calendar and every node counts on it (DESIGN.md §4):
//! a village with no calendar of its own receives the county's over QUIC and its due dates
//! follow it; when the county publishes a new one, the village follows again.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{Days, NaiveDate};
use serde_json::Value;
use yiciban_core::catalog::Catalog;
use yiciban_tests::cluster::{
    COUNTY_ID, VILLAGE_ID, add_user, enroll, folder, free_udp_port, init_county, node_toml, token,
};
use yiciban_tests::workload::{BENCH_ITEM, Workload};
use yiciban_tests::{Api, DEMO_PASSWORD, NodeProcess, free_base_port, village_toml};

/// Weekends only, `years` covered, and one holiday from `from` to `to` if given.
fn calendar(years: &[i32], holiday: Option<(NaiveDate, NaiveDate)>) -> String {
    let years: Vec<String> = years.iter().map(|y| y.to_string()).collect();
    let mut text = format!("schema = 1\nyears = [{}]\n", years.join(", "));
    if let Some((from, to)) = holiday {
        text.push_str(&format!(
            "\n[[holidays]]\nname = \"测试假期\"\nfrom = \"{from}\"\nto = \"{to}\"\n"
        ));
    }
    text
}

async fn until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn health(api: &Api) -> Value {
    api.get("/api/v1/health")
        .await
        .map(|(_, b)| b)
        .unwrap_or_default()
}

async fn due(api: &Api, id: &str) -> Option<NaiveDate> {
    let (_, body) = api.get(&format!("/api/v1/applications/{id}")).await.ok()?;
    body["state"]["due"].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_village_counts_on_the_calendar_the_county_publishes() {
    let root = tempfile::tempdir().unwrap();
    let base = free_base_port().unwrap();
    let quic = free_udp_port().unwrap();
    // `node_toml` ends inside [sync]; the [calendar] table follows it.
    let county_toml = node_toml(
        COUNTY_ID,
        "county",
        "430181000000",
        base,
        &format!("listen = \"{quic}\""),
    ) + "\n[calendar]\npath = \"county-calendar.toml\"\n";
    let county_cfg = folder(root.path(), "county", &county_toml).unwrap();
    let today = chrono::Local::now().date_naive();
    let long_holiday = (today, today.checked_add_days(Days::new(30)).unwrap());
    let year: i32 = today.format("%Y").to_string().parse().unwrap();
    let years = [year, year + 1, 2031];
    let cal_path = county_cfg.parent().unwrap().join("county-calendar.toml");
    std::fs::write(&cal_path, calendar(&years, Some(long_holiday))).unwrap();
    let village_cfg = folder(root.path(), "village", &village_toml(base + 2, Some(quic))).unwrap();
    init_county(&county_cfg).unwrap();
    add_user(&village_cfg, "clerk", "clerk").unwrap();
    let village_token = token(&county_cfg, VILLAGE_ID, "village", "430181101001").unwrap();
    let mut county = NodeProcess::serve(&county_cfg, base).unwrap();
    enroll(&village_cfg, &format!("127.0.0.1:{base}"), &village_token).unwrap();
    let _village = NodeProcess::serve(&village_cfg, base + 2).unwrap();
    let clerk = Api::login(
        &format!("http://127.0.0.1:{}", base + 2),
        "clerk",
        DEMO_PASSWORD,
    )
    .await
    .unwrap();

    until(
        "the village holds the county's calendar",
        Duration::from_secs(60),
        async || {
            let h = health(&clerk).await;
            h["calendar"]["source"] == "county"
                && h["calendar"]["years"]
                    .as_array()
                    .is_some_and(|y| y.contains(&2031.into()))
        },
    )
    .await;
    let catalog = Catalog::parse(yiciban_core::DEMO_CATALOG, Path::new("catalog.toml")).unwrap();
    let body = Workload::new(3).application(catalog.get(BENCH_ITEM).unwrap());
    let (status, filed) = clerk.post("/api/v1/applications", &body).await.unwrap();
    assert_eq!(status, 201, "{filed}");
    let id = filed["id"].as_str().unwrap().to_string();
    let first = due(&clerk, &id).await.unwrap();
    assert!(
        first > long_holiday.1,
        "the county's 30-day holiday pushes the due date ({first}) past {}",
        long_holiday.1
    );

    // A new calendar from the county: no holiday. The village follows.
    county.kill9().unwrap();
    std::fs::write(&cal_path, calendar(&years, None)).unwrap();
    let _county = NodeProcess::serve(&county_cfg, base).unwrap();
    until(
        "the village counts on the new calendar",
        Duration::from_secs(60),
        async || due(&clerk, &id).await.is_some_and(|d| d < long_holiday.1),
    )
    .await;
}
