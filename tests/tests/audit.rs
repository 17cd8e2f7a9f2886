//! The audit trail of a real village node: filing, an event and a full view of personal data
//! are chained; `yiciban audit verify` finds an entry changed or deleted by hand in the file.

use std::path::Path;
use std::process::Command;

use serde_json::json;
use yiciban_core::catalog::Catalog;
use yiciban_tests::workload::{BENCH_ITEM, Workload};
use yiciban_tests::{Api, DEMO_PASSWORD, NodeProcess, binary, cli, free_base_port};

const AUDIT: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("audit-1");

/// `yiciban audit verify --config FILE`: exit code, stdout, stderr.
fn verify(config: &Path) -> (i32, String, String) {
    let out = Command::new(binary().unwrap())
        .args(["audit", "verify", "--config"])
        .arg(config)
        .env("YICIBAN_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

/// Runs `f` on the `audit-1` table of the stopped node's store file, and commits.
fn edit_audit(store: &Path, f: impl FnOnce(&mut redb::Table<u64, &[u8]>)) {
    let db = redb::Database::open(store).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(AUDIT).unwrap();
        f(&mut table);
    }
    txn.commit().unwrap();
}

fn audit_value(store: &Path, seq: u64) -> Vec<u8> {
    use redb::ReadableDatabase;
    let db = redb::Database::open(store).unwrap();
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(AUDIT).unwrap();
    table.get(seq).unwrap().unwrap().value().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_finds_an_entry_changed_or_deleted_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("village.toml");
    let store = dir.path().join("village.redb");
    // Three users added at the console: entries 1-3.
    let mut node = NodeProcess::village(dir.path(), free_base_port().unwrap()).unwrap();
    let clerk = Api::login(&node.base_url, "clerk", DEMO_PASSWORD)
        .await
        .unwrap();
    let catalog = Catalog::parse(
        yiciban_core::DEMO_CATALOG,
        std::path::Path::new("catalog.toml"),
    )
    .unwrap();
    let app = Workload::new(7).application(catalog.get(BENCH_ITEM).unwrap());
    let id_number = app["applicant"]["id_number"].as_str().unwrap().to_string();
    // Entry 4: the filing.
    let (status, filed) = clerk.post("/api/v1/applications", &app).await.unwrap();
    assert_eq!(status, 201, "{filed}");
    let id = filed["id"].as_str().unwrap().to_string();
    // Entry 5: an event.
    let (status, body) = clerk
        .post(
            &format!("/api/v1/applications/{id}/events"),
            &json!({"kind": "comment", "text": "已电话联系申请人"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    // Reading the case shows the ID number masked and writes nothing.
    let (status, detail) = clerk
        .get(&format!("/api/v1/applications/{id}"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let shown = detail["applicant"]["id_number"].as_str().unwrap();
    assert!(shown.contains("**********"), "{shown}");
    assert_ne!(shown, id_number);
    // Entry 6: the full view, a POST with the CSRF token.
    let (status, full) = clerk
        .post(
            &format!("/api/v1/applications/{id}/personal-data"),
            &json!({}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{full}");
    assert_eq!(full["applicant"]["id_number"], id_number.as_str());
    node.terminate().unwrap();

    let (code, out, err) = verify(&config);
    assert_eq!(code, 0, "{out} {err}");
    assert!(
        out.starts_with("audit trail intact: 6 entries, head "),
        "{out}"
    );
    let list = cli(
        &[
            "audit",
            "list",
            "--config",
            config.to_str().unwrap(),
            "--last",
            "3",
        ],
        None,
    )
    .unwrap();
    for action in ["case.filed", "event.recorded", "personal_data.viewed"] {
        assert!(list.contains(action), "{list}");
    }
    assert!(list.contains(&id), "{list}");
    assert!(
        !list.contains(&id_number),
        "the trail never shows the full ID number: {list}"
    );

    // One byte of entry 5 changed by hand: its timestamp.
    let original = audit_value(&store, 5);
    let mut altered = original.clone();
    altered[12] ^= 0x01;
    edit_audit(&store, |t| {
        t.insert(5, altered.as_slice()).unwrap();
    });
    let (code, out, err) = verify(&config);
    assert_eq!(code, 1, "{out} {err}");
    assert!(err.contains("entry 5 was altered"), "{err}");

    // Put back: intact again. Then entry 4 deleted.
    edit_audit(&store, |t| {
        t.insert(5, original.as_slice()).unwrap();
    });
    let (code, out, err) = verify(&config);
    assert_eq!(code, 0, "{out} {err}");
    edit_audit(&store, |t| {
        t.remove(4).unwrap();
    });
    let (code, out, err) = verify(&config);
    assert_eq!(code, 1, "{out} {err}");
    assert!(err.contains("entry 4 is missing"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_says_so_when_the_node_is_running() {
    let dir = tempfile::tempdir().unwrap();
    let _node = NodeProcess::village(dir.path(), free_base_port().unwrap()).unwrap();
    let (code, out, err) = verify(&dir.path().join("village.toml"));
    assert_eq!(code, 1, "{out} {err}");
    assert!(err.contains("locked by a running node"), "{err}");
}
