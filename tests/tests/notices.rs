//! SMS notices reach a real local HTTP receiver (standing in for the SMS gateway) exactly
//! once. The village has no uplink of its own and hands its notices to the county through
//! sync; the county sends. The village's link drops in the instant between the gateway's
//! answer and the village hearing of it, the county is killed and restarted, and the gateway
//! refuses one notice once: still one delivery per notice.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;
use yiciban_core::catalog::Catalog;
use yiciban_tests::cluster::{
    COUNTY_ID, VILLAGE_ID, add_user, enroll, folder, free_udp_port, init_county, node_toml, token,
};
use yiciban_tests::relay::{Relay, Shape};
use yiciban_tests::workload::{BENCH_ITEM, Workload};
use yiciban_tests::{Api, DEMO_PASSWORD, NodeProcess, free_base_port, village_toml};

#[derive(Default)]
struct Gateway {
    /// Accepted notices: idempotency key → how many times accepted.
    accepted: Mutex<BTreeMap<String, usize>>,
    refused: AtomicUsize,
    /// Cut the village's link before answering the first notice.
    cut_before_answer: AtomicBool,
    /// Refuse (503) the first try of the next notice after the cut.
    refuse_next: AtomicBool,
    relay: Mutex<Option<Arc<Relay>>>,
}

async fn sms(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> StatusCode {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert_eq!(body["id"], key.as_str(), "the key is the notice id");
    assert!(body["text"].as_str().unwrap().contains("受理编号"));
    if gw.refuse_next.swap(false, Ordering::SeqCst) {
        gw.refused.fetch_add(1, Ordering::SeqCst);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    if gw.cut_before_answer.swap(false, Ordering::SeqCst)
        && let Some(relay) = gw.relay.lock().unwrap().as_ref()
    {
        relay.set_blackout(true);
    }
    *gw.accepted.lock().unwrap().entry(key).or_default() += 1;
    StatusCode::OK
}

async fn events_of(api: &Api, id: &str) -> Vec<Value> {
    match api.get(&format!("/api/v1/applications/{id}")).await {
        Ok((200, body)) => body["events"].as_array().cloned().unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn sent_notices(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["kind"] == "notice_sent")
        .map(|e| {
            e["payload"]["notice"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

async fn until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_notice_reaches_the_gateway_exactly_once() {
    let gw = Arc::new(Gateway::default());
    gw.cut_before_answer.store(true, Ordering::SeqCst);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw_addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/sms", post(sms))
        .with_state(gw.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let root = tempfile::tempdir().unwrap();
    let base = free_base_port().unwrap();
    let county_quic = free_udp_port().unwrap();
    let link = Arc::new(Relay::start(county_quic, Shape::CLEAN, 7).unwrap());
    *gw.relay.lock().unwrap() = Some(link.clone());
    let county_cfg = folder(
        root.path(),
        "county",
        &node_toml(
            COUNTY_ID,
            "county",
            "430181000000",
            base,
            &format!(
                "listen = \"{county_quic}\"\n\n[notices]\nsend = true\nwebhook = \"http://{gw_addr}/sms\"\npoll_ms = 200\ntimeout_secs = 5"
            ),
        ),
    )
    .unwrap();
    let village_cfg = folder(
        root.path(),
        "village",
        &village_toml(base + 2, Some(link.addr())),
    )
    .unwrap();
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
    let catalog = Catalog::parse(yiciban_core::DEMO_CATALOG, Path::new("catalog.toml")).unwrap();
    let mut work = Workload::new(11);
    let mut file = async || -> String {
        let (status, body) = clerk
            .post(
                "/api/v1/applications",
                &work.application(catalog.get(BENCH_ITEM).unwrap()),
            )
            .await
            .unwrap();
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_string()
    };

    // A: the county sends; the gateway cuts the village's link before it answers.
    let a = file().await;
    until(
        "A's notice at the gateway",
        Duration::from_secs(60),
        async || gw.accepted.lock().unwrap().len() == 1,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        sent_notices(&events_of(&clerk, &a).await).is_empty(),
        "the village has not heard that A's notice went"
    );

    // B: filed while the link is dark, so only the village holds its notice. The county is
    // killed and restarted meanwhile; it must not send A's notice again.
    let b = file().await;
    county.kill9().unwrap();
    gw.refuse_next.store(true, Ordering::SeqCst);
    let _county = NodeProcess::serve(&county_cfg, base).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        gw.accepted.lock().unwrap().len(),
        1,
        "nothing new while dark"
    );
    link.set_blackout(false);

    until(
        "B's notice accepted after one refusal",
        Duration::from_secs(60),
        async || gw.accepted.lock().unwrap().len() == 2,
    )
    .await;
    until(
        "the village hears of both",
        Duration::from_secs(60),
        async || {
            sent_notices(&events_of(&clerk, &a).await).len() == 1
                && sent_notices(&events_of(&clerk, &b).await).len() == 1
        },
    )
    .await;
    // Give a duplicate every chance to show.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let accepted = gw.accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), 2, "{accepted:?}");
    assert!(
        accepted.values().all(|n| *n == 1),
        "exactly once: {accepted:?}"
    );
    assert_eq!(
        gw.refused.load(Ordering::SeqCst),
        1,
        "B was refused once, then sent"
    );
    let want_a = sent_notices(&events_of(&clerk, &a).await);
    assert!(
        accepted.contains_key(&want_a[0]),
        "{want_a:?} vs {accepted:?}"
    );
    assert!(want_a[0].ends_with("/accepted"));
}
