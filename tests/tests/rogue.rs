//! A compromised village (the rogue, `yiciban_tests::rogue`) against real nodes over QUIC:
//! county, town, an honest village and the rogue, each its own process. With only its own
//! certificate and store, the rogue writes into its store, while stopped, a case claiming
//! the honest village's case id, a case filed for the honest village, decisions in the
//! names of the town, the county and the honest village (unsigned, signed with its own key,
//! one of the town's signed decisions replayed from another case)
//! and a case with a 400,000-character field; then it syncs. Every attempt is refused or
//! kept as not counting, nothing reaches the honest village, both villages' links stay up
//! with their backlogs drained, and the county's console names the rogue. Then the county
//! revokes the town: a result the town seals after that is refused by `yiciban verify`,
//! naming the revocation; one sealed before stays valid, with a note.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use yiciban_core::catalog::{Catalog, Tier};
use yiciban_core::event::EventKind;
use yiciban_tests::cluster::{
    COUNTY_ID, TOWN_ID, VILLAGE_ID, add_user, enroll, folder, free_udp_port, init_county,
    node_toml, token,
};
use yiciban_tests::rogue::Rogue;
use yiciban_tests::workload::Workload;
use yiciban_tests::{Api, DEMO_PASSWORD, NodeProcess, binary, free_base_port, village_toml};

const ROGUE_ID: &str = "village-430181101002";
const ROGUE_DIVISION: &str = "430181101002";

async fn until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn case(api: &Api, id: &str) -> Option<Value> {
    match api.get(&format!("/api/v1/applications/{id}")).await {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

async fn status(api: &Api, id: &str) -> String {
    case(api, id)
        .await
        .map(|c| {
            c["state"]["status"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .unwrap_or_default()
}

async fn file(api: &Api, item: &str, seed: u64) -> String {
    let catalog = Catalog::parse(yiciban_core::DEMO_CATALOG, Path::new("catalog.toml")).unwrap();
    let body = Workload::new(seed).application(catalog.get(item).unwrap());
    let (status, filed) = api.post("/api/v1/applications", &body).await.unwrap();
    assert_eq!(status, 201, "{filed}");
    filed["id"].as_str().unwrap().to_string()
}

async fn pass(api: &Api, id: &str) -> Value {
    let (status, body) = api
        .post(
            &format!("/api/v1/applications/{id}/events"),
            &json!({"kind": "review_passed"}),
        )
        .await
        .unwrap();
    assert!(status == 200 || status == 201, "{status} {body}");
    body
}

/// The uplink of a village as its own health reports it.
async fn uplink(api: &Api) -> Value {
    let (_, h) = api.get("/api/v1/health").await.unwrap_or_default();
    h["links"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["name"] == "county").cloned())
        .unwrap_or_default()
}

/// `yiciban verify --config CONFIG CODE`: (exit success, stdout and stderr).
fn verify_cli(config: &Path, code: &str) -> (bool, String) {
    let out = Command::new(binary().unwrap())
        .args(["verify", code, "--config"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_village_can_neither_take_over_forge_nor_poison() {
    let root = tempfile::tempdir().unwrap();
    let base = free_base_port().unwrap();
    let rogue_port = free_base_port().unwrap();
    let quic = free_udp_port().unwrap();
    let county_cfg = folder(
        root.path(),
        "county",
        &node_toml(
            COUNTY_ID,
            "county",
            "430181000000",
            base,
            &format!("listen = \"{quic}\""),
        ),
    )
    .unwrap();
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
    let rogue_toml = village_toml(rogue_port, Some(quic))
        .replace(VILLAGE_ID, ROGUE_ID)
        .replace(
            "division = \"430181101001\"",
            &format!("division = \"{ROGUE_DIVISION}\""),
        );
    let rogue_cfg = folder(root.path(), "rogue", &rogue_toml).unwrap();
    init_county(&county_cfg).unwrap();
    add_user(&county_cfg, "admin", "county_admin").unwrap();
    add_user(&town_cfg, "reviewer", "reviewer").unwrap();
    add_user(&village_cfg, "clerk", "clerk").unwrap();
    add_user(&rogue_cfg, "clerk", "clerk").unwrap();
    let tokens = [
        (
            &town_cfg,
            token(&county_cfg, TOWN_ID, "town", "430181101000").unwrap(),
        ),
        (
            &village_cfg,
            token(&county_cfg, VILLAGE_ID, "village", "430181101001").unwrap(),
        ),
        (
            &rogue_cfg,
            token(&county_cfg, ROGUE_ID, "village", ROGUE_DIVISION).unwrap(),
        ),
    ];
    let mut county = NodeProcess::serve(&county_cfg, base).unwrap();
    for (cfg, t) in &tokens {
        enroll(cfg, &format!("127.0.0.1:{base}"), t).unwrap();
    }
    let _town = NodeProcess::serve(&town_cfg, base + 1).unwrap();
    let _village = NodeProcess::serve(&village_cfg, base + 2).unwrap();
    let mut rogue_node = NodeProcess::serve(&rogue_cfg, rogue_port).unwrap();
    let url = |p: u16| format!("http://127.0.0.1:{p}");
    let admin = Api::login(&url(base), "admin", DEMO_PASSWORD)
        .await
        .unwrap();
    let reviewer = Api::login(&url(base + 1), "reviewer", DEMO_PASSWORD)
        .await
        .unwrap();
    let clerk = Api::login(&url(base + 2), "clerk", DEMO_PASSWORD)
        .await
        .unwrap();
    let rogue_clerk = Api::login(&url(rogue_port), "clerk", DEMO_PASSWORD)
        .await
        .unwrap();

    // The honest flow: a case of the honest village, passed by the town; a case of the rogue
    // passed by the town too (its signed decision is what the rogue replays later); and a
    // case the town decides only after its revocation.
    let honest = file(&clerk, "MZ003", 1).await;
    let later = file(&clerk, "MZ003", 2).await;
    let rogue_own = file(&rogue_clerk, "MZ003", 3).await;
    for id in [&honest, &later, &rogue_own] {
        until(
            "the town holds the case",
            Duration::from_secs(60),
            async || status(&reviewer, id).await == "under_review",
        )
        .await;
    }
    pass(&reviewer, &honest).await;
    pass(&reviewer, &rogue_own).await;
    until(
        "the rogue holds the town's decision",
        Duration::from_secs(60),
        async || status(&rogue_clerk, &rogue_own).await == "ready_to_issue",
    )
    .await;
    until(
        "the honest village holds it",
        Duration::from_secs(60),
        async || status(&clerk, &honest).await == "ready_to_issue",
    )
    .await;
    let honest_before = case(&admin, &honest).await.unwrap();
    let sealed_before = honest_before["result"]["qr_payload"]
        .as_str()
        .unwrap()
        .to_string();

    // The rogue, stopped, writes its forgeries into its own store.
    rogue_node.kill9().unwrap();
    drop(rogue_node);
    let mut rogue = Rogue::open(&rogue_cfg).unwrap();
    rogue.claim_case(&honest).await.unwrap();
    let for_honest_village = rogue
        .file_for(yiciban_core::case_doc::Divisions {
            village: "430181101001".into(),
            town: "430181101000".into(),
            county: "430181000000".into(),
        })
        .await
        .unwrap();
    let target = rogue.own_case("MZ003").await.unwrap();
    let town_unsigned = rogue.decision(EventKind::ReviewPassed, TOWN_ID, Tier::Town);
    let own_key_as_town = rogue
        .signed_by_rogue(
            &target,
            rogue.decision(EventKind::ReviewPassed, ROGUE_ID, Tier::Town),
        )
        .unwrap();
    let town_key_claimed = rogue
        .signed_by_rogue(
            &target,
            rogue.decision(EventKind::ReviewPassed, TOWN_ID, Tier::Town),
        )
        .unwrap();
    let county_unsigned = rogue.decision(EventKind::Approved, COUNTY_ID, Tier::County);
    let village_issue = rogue
        .signed_by_rogue(
            &target,
            rogue.decision(EventKind::Issued, VILLAGE_ID, Tier::Village),
        )
        .unwrap();
    let replayed: yiciban_core::event::Event = serde_json::from_value(
        case(&admin, &rogue_own).await.unwrap()["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "review_passed")
            .unwrap()
            .clone(),
    )
    .unwrap();
    let forged = [
        town_unsigned,
        own_key_as_town,
        town_key_claimed,
        county_unsigned,
        village_issue,
        replayed,
    ];
    let forged_ids: Vec<String> = forged.iter().map(|e| e.id.clone()).collect();
    for event in forged {
        rogue.append(&target, event).await.unwrap();
    }
    let oversized = rogue.oversized(400_000).await.unwrap();
    drop(rogue);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _rogue_node = NodeProcess::serve(&rogue_cfg, rogue_port).unwrap();
    let rogue_clerk = Api::login(&url(rogue_port), "clerk", DEMO_PASSWORD)
        .await
        .unwrap();

    // The county refuses the takeover, the case for another village and the oversized case,
    // and keeps the six forged decisions as not counting; its console names the rogue.
    until(
        "the county records the rogue's attempts",
        Duration::from_secs(90),
        async || {
            let (_, q) = admin.get("/api/v1/quarantine").await.unwrap_or_default();
            let refused = q["refusals"][ROGUE_ID].as_array().map_or(0, Vec::len);
            refused >= 3 + forged_ids.len()
        },
    )
    .await;
    let (_, q) = admin.get("/api/v1/quarantine").await.unwrap();
    let refused_docs: Vec<&str> = q["quarantined"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["peer"] == ROGUE_ID && r["direction"] == "received")
        .map(|r| r["doc_id"].as_str().unwrap())
        .collect();
    for doc in [&honest, &for_honest_village, &oversized] {
        assert!(
            refused_docs.contains(&doc.as_str()),
            "{doc} not refused: {q}"
        );
    }
    let reasons = q.to_string();
    assert!(
        reasons.contains("其他辖区") && reasons.contains("超过长度上限"),
        "{reasons}"
    );
    let (_, nodes) = admin.get("/api/v1/nodes").await.unwrap();
    let rogue_row = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == ROGUE_ID)
        .unwrap()
        .clone();
    assert!(
        rogue_row["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "refused"),
        "{rogue_row}"
    );

    // The honest case is untouched at the county and at the honest village.
    let honest_after = case(&admin, &honest).await.unwrap();
    assert_eq!(honest_after["division"], honest_before["division"]);
    assert_eq!(honest_after["events"], honest_before["events"]);
    assert_eq!(honest_after["state"]["status"], "ready_to_issue");
    assert_eq!(status(&clerk, &honest).await, "ready_to_issue");
    assert!(case(&admin, &for_honest_village).await.is_none());
    assert!(case(&clerk, &for_honest_village).await.is_none());
    assert!(case(&admin, &oversized).await.is_none());

    // The forged decisions are kept but count nowhere: the rogue's case is still under review
    // at the county and the town, each forgery shown with its reason.
    until(
        "the town holds the rogue's case",
        Duration::from_secs(60),
        async || {
            case(&reviewer, &target)
                .await
                .is_some_and(|c| c["forged"].as_array().map_or(0, Vec::len) == forged_ids.len())
        },
    )
    .await;
    for api in [&admin, &reviewer] {
        let c = case(api, &target).await.unwrap();
        assert_eq!(c["state"]["status"], "under_review", "{c}");
        let forged: Vec<&str> = c["forged"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["event"]["id"].as_str().unwrap())
            .collect();
        for id in &forged_ids {
            assert!(forged.contains(&id.as_str()), "{id} not marked: {c}");
        }
    }
    let (_, page) = reviewer.get_text(&format!("/cases/{target}")).await;
    assert!(page.contains("伪造/无效"), "{page}");

    // Both villages' links are up with nothing waiting; the rogue sees what was refused.
    for (who, api) in [("honest", &clerk), ("rogue", &rogue_clerk)] {
        until(
            &format!("the {who} village's backlog drains"),
            Duration::from_secs(60),
            async || {
                let l = uplink(api).await;
                l["connected"] == true && l["waiting_changes"] == 0
            },
        )
        .await;
    }
    let (_, rq) = rogue_clerk.get("/api/v1/quarantine").await.unwrap();
    let sent = rq["quarantined"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["direction"] == "sent")
        .count();
    assert!(sent >= 3, "{rq}");

    // The county revokes the town. What the town seals after is refused by `yiciban
    // verify`, naming the revocation; the result sealed before is valid, with a note.
    yiciban_tests::cli(
        &[
            "revoke",
            "--config",
            &county_cfg.to_string_lossy(),
            "--node-id",
            TOWN_ID,
        ],
        None,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let decided = pass(&reviewer, &later).await;
    let _ = decided;
    let after = case(&reviewer, &later).await.unwrap();
    let sealed_after = after["result"]["qr_payload"].as_str().unwrap().to_string();
    let (ok, out) = verify_cli(&county_cfg, &sealed_after);
    assert!(!ok, "a seal made after the revocation verified: {out}");
    assert!(out.contains("吊销"), "{out}");
    let (ok, out) = verify_cli(&county_cfg, &sealed_before);
    assert!(ok, "the seal made before the revocation: {out}");
    assert!(out.contains("吊销"), "the note says so: {out}");

    // `yiciban quarantine list` at the stopped county names what the rogue sent.
    county.terminate().unwrap();
    let listed = yiciban_tests::cli(
        &[
            "quarantine",
            "list",
            "--config",
            &county_cfg.to_string_lossy(),
        ],
        None,
    )
    .unwrap();
    assert!(listed.contains(ROGUE_ID), "{listed}");
    assert!(
        listed.contains("超过长度上限") && listed.contains("其他辖区"),
        "{listed}"
    );
    assert!(listed.contains("伪造/无效"), "{listed}");
}
