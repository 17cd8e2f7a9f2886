//! The user directory replicates down (DESIGN.md §10): a user the county creates for the
//! village logs in at the village with the county link cut. A revoked village's next
//! handshake is refused, and the county's console (`/api/v1/health`) shows the refusal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use yiciban_tests::cluster::{
    COUNTY_ID, VILLAGE_ID, add_user, enroll, folder, free_udp_port, init_county, node_toml, token,
};
use yiciban_tests::relay::{Relay, Shape};
use yiciban_tests::{Api, DEMO_PASSWORD, NodeProcess, cli, free_base_port, village_toml};

async fn until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn health(port: u16) -> Value {
    let url = format!("http://127.0.0.1:{port}/api/v1/health");
    match reqwest::get(&url).await {
        Ok(resp) => resp.json().await.unwrap_or_default(),
        Err(_) => Value::Null,
    }
}

const PASSWORD: &str = "county-made-1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_county_made_user_logs_in_offline_and_a_revoked_village_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let base = free_base_port().unwrap();
    let county_quic = free_udp_port().unwrap();
    let link = Arc::new(Relay::start(county_quic, Shape::CLEAN, 5).unwrap());
    let county_cfg = folder(
        root.path(),
        "county",
        &node_toml(
            COUNTY_ID,
            "county",
            "430181000000",
            base,
            &format!("listen = \"{county_quic}\""),
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
    add_user(&county_cfg, "admin", "county_admin").unwrap();
    let village_token = token(&county_cfg, VILLAGE_ID, "village", "430181101001").unwrap();
    let mut county = NodeProcess::serve(&county_cfg, base).unwrap();
    enroll(&village_cfg, &format!("127.0.0.1:{base}"), &village_token).unwrap();
    let _village = NodeProcess::serve(&village_cfg, base + 2).unwrap();
    let village_http = format!("http://127.0.0.1:{}", base + 2);

    // The county (stopped, like every store-writing command) adds a clerk for the village.
    county.kill9().unwrap();
    let config = county_cfg.to_string_lossy().to_string();
    cli(
        &[
            "user",
            "add",
            "--config",
            &config,
            "--for-node",
            VILLAGE_ID,
            "--username",
            "li.wei",
            "--role",
            "clerk",
            "--name",
            "李伟",
        ],
        Some(&format!("{PASSWORD}\n")),
    )
    .unwrap();
    let _county = NodeProcess::serve(&county_cfg, base).unwrap();
    until(
        "the county's user reaches the village",
        Duration::from_secs(60),
        async || health(base + 2).await["directory_users"] == 1,
    )
    .await;

    // The link is cut: the village's own clerk and the county's both log in there.
    link.set_blackout(true);
    let li = Api::login(&village_http, "li.wei", PASSWORD).await.unwrap();
    let (status, _) = li.get("/api/v1/catalog").await.unwrap();
    assert_eq!(status, 200);
    Api::login(&village_http, "clerk", DEMO_PASSWORD)
        .await
        .unwrap();
    assert!(
        Api::login(&village_http, "li.wei", DEMO_PASSWORD)
            .await
            .is_err()
    );

    // The village is revoked while the county runs; when the link is back, it is refused.
    let out = cli(
        &["revoke", "--config", &config, "--node-id", VILLAGE_ID],
        None,
    )
    .unwrap();
    assert!(out.contains("revoked 1"), "{out}");
    link.set_blackout(false);
    until(
        "the county's console shows the village's refused handshake",
        Duration::from_secs(90),
        async || {
            health(base).await["refused"]
                .as_array()
                .is_some_and(|list| {
                    list.iter().any(|r| {
                        r["node"] == VILLAGE_ID
                            && r["reason"]
                                .as_str()
                                .is_some_and(|why| why.contains("Revoked"))
                    })
                })
        },
    )
    .await;
    // The console's node table shows it too: the village marked revoked, the refusal listed.
    let admin = Api::login(&format!("http://127.0.0.1:{base}"), "admin", DEMO_PASSWORD)
        .await
        .unwrap();
    let (status, page) = admin.get_text("/nodes").await;
    assert_eq!(status, 200);
    let refused = page.split("id=\"refused\"").nth(1).unwrap_or_default();
    assert!(
        refused.contains(&format!("data-node=\"{VILLAGE_ID}\"")),
        "the refusal is listed on /nodes: {page}"
    );
    assert!(page.contains("data-revoked=\"true\""), "{page}");
    until(
        "the village's link shows the refusal",
        Duration::from_secs(30),
        async || {
            let h = health(base + 2).await;
            h["links"].as_array().is_some_and(|links| {
                links.iter().any(|l| {
                    l["name"] == "county" && l["connected"] == false && !l["last_error"].is_null()
                })
            })
        },
    )
    .await;
    // Refused for good: the village stays off the county's links.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let h = health(base).await;
    let connected = h["links"].as_array().is_some_and(|links| {
        links
            .iter()
            .any(|l| l["peer"] == VILLAGE_ID && l["connected"] == true)
    });
    assert!(!connected, "{h}");
}
