//! A legal clock that never goes dark: on 7 December 2026 (libfaketime) the county has
//! published only 2026, yet a 20-working-day case filed at the village gets a due date in
//! January 2027, counted on the holidays by rule and marked 预估 at the village, the town and
//! the county. The county admin, reminded on every page, publishes 2027 with a 调休 working
//! day inside the window; the due date moves on all three nodes and the mark goes.

use std::time::{Duration, Instant};

use serde_json::Value;
use yiciban_core::catalog::Catalog;
use yiciban_tests::cluster::{
    COUNTY_ID, TOWN_ID, VILLAGE_ID, add_user, enroll, folder, free_udp_port, init_county,
    node_toml, token,
};
use yiciban_tests::workload::Workload;
use yiciban_tests::{Api, DEMO_PASSWORD, NodeProcess, fake_time, free_base_port, village_toml};

/// 10:00 in China on Monday 7 December 2026.
const NOW_UTC: &str = "2026-12-07 02:00:00";

async fn until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn state(api: &Api, id: &str) -> Option<Value> {
    match api.get(&format!("/api/v1/applications/{id}")).await {
        Ok((200, body)) => Some(body["state"].clone()),
        _ => None,
    }
}

/// Whether `api` shows case `id` due on `due`, marked provisional or not.
async fn shows(api: &Api, id: &str, due: &str, provisional: bool) -> bool {
    state(api, id)
        .await
        .is_some_and(|s| s["due"] == due && s["provisional"] == provisional)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_date_in_an_unpublished_year_is_provisional_until_the_county_publishes_it() {
    fake_time(NOW_UTC).unwrap();
    let root = tempfile::tempdir().unwrap();
    let base = free_base_port().unwrap();
    let quic = free_udp_port().unwrap();
    let county_cfg = folder(
        root.path(),
        "county",
        &(node_toml(
            COUNTY_ID,
            "county",
            "430181000000",
            base,
            &format!("listen = \"{quic}\""),
        ) + "\n[calendar]\npath = \"county-calendar.toml\"\n"),
    )
    .unwrap();
    // The county has published 2026 only (the built-in calendar).
    let calendar_path = county_cfg.parent().unwrap().join("county-calendar.toml");
    std::fs::write(&calendar_path, yiciban_core::DEMO_CALENDAR).unwrap();
    let town_cfg = folder(
        root.path(),
        "town",
        &node_toml(
            TOWN_ID,
            "town",
            "430181101000",
            base + 1,
            &format!("county = \"{quic}\"\nbackoff_max_secs = 2"),
        ),
    )
    .unwrap();
    let village_cfg = folder(root.path(), "village", &village_toml(base + 2, Some(quic))).unwrap();
    init_county(&county_cfg).unwrap();
    add_user(&county_cfg, "admin", "county_admin").unwrap();
    add_user(&town_cfg, "reviewer", "reviewer").unwrap();
    add_user(&village_cfg, "clerk", "clerk").unwrap();
    let town_token = token(&county_cfg, TOWN_ID, "town", "430181101000").unwrap();
    let village_token = token(&county_cfg, VILLAGE_ID, "village", "430181101001").unwrap();
    let _county = NodeProcess::serve(&county_cfg, base).unwrap();
    enroll(&town_cfg, &format!("127.0.0.1:{base}"), &town_token).unwrap();
    enroll(&village_cfg, &format!("127.0.0.1:{base}"), &village_token).unwrap();
    let _town = NodeProcess::serve(&town_cfg, base + 1).unwrap();
    let _village = NodeProcess::serve(&village_cfg, base + 2).unwrap();
    let url = |port: u16| format!("http://127.0.0.1:{port}");
    let admin = Api::login(&url(base), "admin", DEMO_PASSWORD)
        .await
        .unwrap();
    let reviewer = Api::login(&url(base + 1), "reviewer", DEMO_PASSWORD)
        .await
        .unwrap();
    let clerk = Api::login(&url(base + 2), "clerk", DEMO_PASSWORD)
        .await
        .unwrap();

    // The nodes run on the fake day.
    let (_, health) = clerk.get("/api/v1/health").await.unwrap();
    assert_eq!(
        health["calendar"]["provisional_years"],
        serde_json::json!([2027]),
        "{health}"
    );
    until(
        "the village holds the county's calendar",
        Duration::from_secs(60),
        async || {
            let (_, h) = clerk.get("/api/v1/health").await.unwrap_or_default();
            h["calendar"]["source"] == "county"
        },
    )
    .await;

    // MZ001, 20 working days from Tuesday 8 December: 18 in December (published), then
    // 2027 by rule: Friday 1 January rests (元旦), Monday 4 (19), Tuesday 5 (20).
    let catalog = Catalog::parse(
        yiciban_core::DEMO_CATALOG,
        std::path::Path::new("catalog.toml"),
    )
    .unwrap();
    let body = Workload::new(7).application(catalog.get("MZ001").unwrap());
    let (status, filed) = clerk.post("/api/v1/applications", &body).await.unwrap();
    assert_eq!(status, 201, "{filed}");
    let id = filed["id"].as_str().unwrap().to_string();
    let village_state = state(&clerk, &id).await.unwrap();
    assert_eq!(village_state["due"], "2027-01-05", "{village_state}");
    assert_eq!(village_state["provisional"], true);
    assert!(village_state["time_error"].is_null(), "{village_state}");
    let (_, page) = clerk.get_text(&format!("/cases/{id}")).await;
    assert!(
        page.contains("2027-01-05") && page.contains("预估"),
        "{page}"
    );
    for (name, api) in [("town", &reviewer), ("county", &admin)] {
        until(
            &format!("the {name} shows the provisional due date"),
            Duration::from_secs(60),
            async || shows(api, &id, "2027-01-05", true).await,
        )
        .await;
    }
    let (_, queue) = reviewer.get_text("/queue").await;
    assert!(queue.contains("预估"), "the town's queue marks it: {queue}");
    // The county admin is reminded on every page.
    let (_, page) = admin.get_text("/cases").await;
    assert!(page.contains("id=\"calendar-reminder\""), "{page}");
    let (_, page) = admin.get_text("/calendar").await;
    assert!(page.contains("id=\"provisional-2027\""), "{page}");

    // A bad calendar is refused with a Chinese reason and changes nothing.
    let (status, refused) = admin
        .put_text(
            "/api/v1/calendar",
            "schema = 1\nyears = [2027]\n[[holidays]]\n",
        )
        .await
        .unwrap();
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["error"].is_string() || refused["message"].is_string(),
        "{refused}"
    );

    // 2027 published with Saturday 2 January a working day (调休): the 19th working day is
    // Saturday 2, the 20th Monday 4.
    let published = yiciban_core::DEMO_CALENDAR.replace("years = [2026]", "years = [2026, 2027]")
        + "\n[[holidays]]\nname = \"元旦\"\nfrom = \"2027-01-01\"\nto = \"2027-01-01\"\n\
           \n[[workdays]]\nname = \"元旦调休\"\ndate = \"2027-01-02\"\n";
    let (status, answer) = admin
        .put_text("/api/v1/calendar", &published)
        .await
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["published"], true);
    for (name, api) in [("county", &admin), ("town", &reviewer), ("village", &clerk)] {
        until(
            &format!("the {name} counts on the published 2027"),
            Duration::from_secs(60),
            async || shows(api, &id, "2027-01-04", false).await,
        )
        .await;
    }
    let (_, page) = clerk.get_text(&format!("/cases/{id}")).await;
    assert!(
        page.contains("2027-01-04") && !page.contains("预估"),
        "{page}"
    );
    let (_, page) = admin.get_text("/cases").await;
    assert!(!page.contains("id=\"calendar-reminder\""), "{page}");
    assert!(
        std::fs::read_to_string(&calendar_path)
            .unwrap()
            .contains("元旦调休"),
        "kept as the county's calendar"
    );
}
