//! A real village node process: filing over HTTP, kill -9, restart with `yiciban serve`.

use std::collections::HashSet;

use serde_json::json;
use yiciban_core::catalog::Catalog;
use yiciban_tests::workload::{BENCH_ITEM, Workload};
use yiciban_tests::{Api, DEMO_PASSWORD, NodeProcess, free_base_port};

fn catalog() -> Catalog {
    Catalog::parse(
        yiciban_core::DEMO_CATALOG,
        std::path::Path::new("catalog.toml"),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_after_201_keeps_the_case_and_the_receipt_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_base_port().unwrap();
    let mut node = NodeProcess::village(dir.path(), base).unwrap();
    let api = Api::login(&node.base_url, "clerk", DEMO_PASSWORD)
        .await
        .unwrap();
    let cat = catalog();
    let mut w = Workload::new(42);
    let (status, filed) = api
        .post(
            "/api/v1/applications",
            &w.application(cat.get(BENCH_ITEM).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{filed}");
    let first_receipt = filed["receipt_no"].as_str().unwrap().to_string();
    node.kill9().unwrap();

    let config = dir.path().join("village.toml");
    let node = NodeProcess::serve(&config, base + 2).unwrap();
    let api = Api::login(&node.base_url, "clerk", DEMO_PASSWORD)
        .await
        .unwrap();
    let (status, detail) = api
        .get(&format!(
            "/api/v1/applications/{}",
            filed["id"].as_str().unwrap()
        ))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(detail["receipt_no"], first_receipt.as_str());
    assert_eq!(detail["state"]["status"], "under_review");

    let (status, second) = api
        .post(
            "/api/v1/applications",
            &w.application(cat.get("MZ003").unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{second}");
    let seq = |r: &str| r.rsplit('-').next().unwrap().parse::<u32>().unwrap();
    let second_receipt = second["receipt_no"].as_str().unwrap();
    assert_eq!(
        seq(second_receipt),
        seq(&first_receipt) + 1,
        "{first_receipt} then {second_receipt}"
    );
    assert!(second_receipt.starts_with("430181101001-"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_id_number_is_422_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::village(dir.path(), free_base_port().unwrap()).unwrap();
    let api = Api::login(&node.base_url, "clerk", DEMO_PASSWORD)
        .await
        .unwrap();
    let before = api.case_count().await.unwrap();
    let mut app = Workload::new(3).application(catalog().get(BENCH_ITEM).unwrap());
    let id = app["applicant"]["id_number"].as_str().unwrap().to_string();
    let wrong = if id.ends_with('1') { "2" } else { "1" };
    app["applicant"]["id_number"] = json!(format!("{}{wrong}", &id[..17]));
    let (status, body) = api.post("/api/v1/applications", &app).await.unwrap();
    assert_eq!(status, 422, "{body}");
    assert!(
        body["fields"]["applicant.id_number"]
            .as_str()
            .unwrap()
            .contains("校验位"),
        "{body}"
    );
    assert!(
        body["fields"]["applicant.id_number"]
            .as_str()
            .unwrap()
            .contains("check digit"),
        "{body}"
    );
    assert_eq!(api.case_count().await.unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_concurrent_filings_get_thirty_two_receipts() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::village(dir.path(), free_base_port().unwrap()).unwrap();
    let cat = catalog();
    let item = cat.get(BENCH_ITEM).unwrap();
    let mut tasks = Vec::new();
    for i in 0..32u64 {
        let app = Workload::new(100 + i).application(item);
        let base = node.base_url.clone();
        tasks.push(tokio::spawn(async move {
            let api = Api::login(&base, "clerk", DEMO_PASSWORD).await.unwrap();
            api.post("/api/v1/applications", &app).await.unwrap()
        }));
    }
    let mut receipts = HashSet::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 201, "{body}");
        receipts.insert(body["receipt_no"].as_str().unwrap().to_string());
    }
    assert_eq!(receipts.len(), 32);
    let api = Api::login(&node.base_url, "clerk", DEMO_PASSWORD)
        .await
        .unwrap();
    assert_eq!(api.case_count().await.unwrap(), 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_csrf_and_roles_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::village(dir.path(), free_base_port().unwrap()).unwrap();
    let app = Workload::new(5).application(catalog().get("MZ003").unwrap());
    let reviewer = Api::login(&node.base_url, "reviewer", DEMO_PASSWORD)
        .await
        .unwrap();
    let (status, _) = reviewer.post("/api/v1/applications", &app).await.unwrap();
    assert_eq!(status, 403, "a town reviewer does not accept applications");
    let raw = reqwest::Client::new();
    let status = raw
        .post(format!("{}/api/v1/applications", node.base_url))
        .json(&app)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);
    assert!(
        Api::login(&node.base_url, "clerk", "wrong-password")
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_add_on_a_stopped_node_then_that_user_logs_in() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let base = free_base_port().unwrap();
    let mut node = NodeProcess::village(dir.path(), base).unwrap();
    node.kill9().unwrap();
    drop(node);
    let config = dir.path().join("village.toml");
    let add = |username: &str, role: &str, password: &str| {
        let mut child = Command::new(yiciban_tests::binary().unwrap())
            .args(["user", "add", "--config"])
            .arg(&config)
            .args(["--username", username, "--role", role])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{password}\n").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    assert!(add("zhang.san", "clerk", "new-password-1").status.success());
    let dup = add("zhang.san", "clerk", "new-password-1");
    assert!(!dup.status.success(), "an existing user is not overwritten");
    assert!(
        !add("li.si", "mayor", "new-password-1").status.success(),
        "unknown role"
    );
    let node = NodeProcess::serve(&config, base + 2).unwrap();
    Api::login(&node.base_url, "zhang.san", "new-password-1")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failed_logins_lock_the_account() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::village(dir.path(), free_base_port().unwrap()).unwrap();
    for _ in 0..5 {
        assert!(
            Api::login(&node.base_url, "clerk", "wrong-password")
                .await
                .is_err()
        );
    }
    let err = Api::login(&node.base_url, "clerk", DEMO_PASSWORD)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("429"),
        "locked even with the right password: {err}"
    );
}

#[test]
fn a_malformed_catalogue_stops_start_up_with_file_place_and_reason() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let base = free_base_port().unwrap();
    let mut node = NodeProcess::village(dir.path(), base).unwrap();
    node.kill9().unwrap();
    drop(node);
    let catalog = dir.path().join("catalog.toml");
    let text = std::fs::read_to_string(&catalog).unwrap();
    std::fs::write(
        &catalog,
        text.replacen("kind = \"promised\"", "kind = \"someday\"", 1),
    )
    .unwrap();
    let config = dir.path().join("village.toml");
    for command in ["serve", "check"] {
        let out = Command::new(yiciban_tests::binary().unwrap())
            .args([command, "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{command} must refuse the catalogue");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("catalog.toml"), "names the file: {stderr}");
        assert!(stderr.contains("line "), "names the place: {stderr}");
        assert!(stderr.contains("someday"), "gives the reason: {stderr}");
    }
}
