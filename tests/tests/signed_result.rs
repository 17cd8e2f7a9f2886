//! Signed results you can trust offline (DESIGN.md §5), across real processes: the town's
//! decision is sealed with its node key, the seal replicates to the village with the event,
//! and `yiciban verify` (another process, no network) and the village's public `/verify` page
//! accept the village's `result.qr_payload` and refuse it with one character changed.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use yiciban_core::catalog::Catalog;
use yiciban_tests::workload::{BENCH_ITEM, Workload};
use yiciban_tests::{Api, DEMO_PASSWORD, NodeProcess, binary, cli, free_base_port};

/// Waits until `api` shows case `id` with `status`; returns the detail JSON.
async fn until_status(api: &Api, id: &str, status: &str, limit: Duration) -> Value {
    let start = Instant::now();
    loop {
        let (code, body) = api
            .get(&format!("/api/v1/applications/{id}"))
            .await
            .unwrap();
        if code == 200 && body["state"]["status"] == status {
            return body;
        }
        assert!(
            start.elapsed() < limit,
            "case {id} not {status} within {limit:?}: {}",
            body["state"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One character changed, staying in the base64url alphabet.
fn alter(code: &str, at: usize) -> String {
    let mut altered = code.to_string();
    let flip = if &code[at..=at] == "A" { "B" } else { "A" };
    altered.replace_range(at..=at, flip);
    altered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_decision_verifies_offline_and_one_altered_byte_fails() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_base_port().unwrap();
    let mut demo = NodeProcess::demo(dir.path(), base).unwrap();
    let url = |p: u16| format!("http://127.0.0.1:{p}");
    let clerk = Api::login(&url(base + 2), "clerk", DEMO_PASSWORD)
        .await
        .unwrap();
    let reviewer = Api::login(&url(base + 1), "reviewer", DEMO_PASSWORD)
        .await
        .unwrap();
    let catalog = Catalog::parse(yiciban_core::DEMO_CATALOG, Path::new("catalog.toml")).unwrap();
    let body = Workload::new(11).application(catalog.get(BENCH_ITEM).unwrap());
    let (status, filed) = clerk.post("/api/v1/applications", &body).await.unwrap();
    assert_eq!(status, 201, "{filed}");
    let id = filed["id"].as_str().unwrap().to_string();
    let receipt = filed["receipt_no"].as_str().unwrap().to_string();
    until_status(&reviewer, &id, "under_review", Duration::from_secs(60)).await;
    let (status, reply) = reviewer
        .post(
            &format!("/api/v1/applications/{id}/events"),
            &json!({"kind": "review_passed", "note": "材料齐全"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{reply}");
    let detail = until_status(&clerk, &id, "ready_to_issue", Duration::from_secs(60)).await;
    let code = detail["result"]["qr_payload"]
        .as_str()
        .unwrap_or_else(|| panic!("no sealed result at the village: {}", detail["result"]))
        .to_string();
    assert!(
        detail["result"]["signed_by"]
            .as_str()
            .unwrap()
            .starts_with("town-")
    );
    assert_eq!(detail["result"]["decision"], "review_passed");
    eprintln!("result code: {} characters", code.len());

    // `yiciban verify` with the county CA certificate only.
    let ca = dir.path().join("tls-county/ca.pem");
    let ca = ca.to_str().unwrap();
    let out = cli(&["verify", &code, "--ca", ca], None).unwrap();
    assert!(out.contains(&receipt), "{out}");
    assert!(out.contains("review_passed"), "{out}");
    // Or with a node's config (its TLS folder's ca.pem).
    let village_config = dir.path().join("village.toml");
    let out = cli(
        &[
            "verify",
            &code,
            "--config",
            village_config.to_str().unwrap(),
        ],
        None,
    )
    .unwrap();
    assert!(out.contains(&receipt), "{out}");

    // One character changed, anywhere: exit code 1 and the reason on stderr.
    for at in [5, code.len() / 3, code.len() / 2, code.len() - 2] {
        let altered = alter(&code, at);
        let run = Command::new(binary().unwrap())
            .args(["verify", &altered, "--ca", ca])
            .env("YICIBAN_LOG", "warn")
            .output()
            .unwrap();
        assert_eq!(run.status.code(), Some(1), "altered at {at} still verified");
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(stderr.contains("invalid"), "{stderr}");
        assert!(!String::from_utf8_lossy(&run.stdout).contains(&receipt));
    }
    let run = Command::new(binary().unwrap())
        .args(["verify", "not-a-code", "--ca", ca])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));

    // The village's public /verify page, no session.
    let http = reqwest::Client::new();
    let page = |p: String| {
        let http = http.clone();
        let base = url(base + 2);
        async move {
            let resp = http
                .get(format!("{base}/verify"))
                .query(&[("p", p)])
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            resp.text().await.unwrap()
        }
    };
    let valid = page(code.clone()).await;
    assert!(valid.contains("id=\"verify-valid\""), "{valid}");
    assert!(valid.contains(&receipt));
    let invalid = page(alter(&code, code.len() / 2)).await;
    assert!(invalid.contains("id=\"verify-invalid\""), "{invalid}");
    assert!(!invalid.contains("id=\"verify-valid\""));

    demo.terminate().unwrap();
}
