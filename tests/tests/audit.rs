//! The audit trail of a real village node: filing, an event and a full view of personal data
//! are chained; `yiciban audit verify` finds an entry changed or deleted by hand in the file.
//! The trail replicates to the county over QUIC, where `yiciban audit verify --node` checks
//! the copy and finds a segment changed by hand.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use yiciban_core::catalog::Catalog;
use yiciban_tests::cluster::{
    COUNTY_ID, VILLAGE_ID, add_user, enroll, folder, free_udp_port, init_county, node_toml, token,
};
use yiciban_tests::workload::{BENCH_ITEM, Workload};
use yiciban_tests::{Api, DEMO_PASSWORD, NodeProcess, binary, cli, free_base_port, village_toml};

const AUDIT: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("audit-1");
const AUDIT_DOCS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("audit_docs-1");

/// `yiciban audit verify --config FILE`: exit code, stdout, stderr.
fn verify(config: &Path) -> (i32, String, String) {
    verify_with(config, &[])
}

/// `yiciban audit verify --config FILE EXTRA…`: exit code, stdout, stderr.
fn verify_with(config: &Path, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary().unwrap())
        .args(["audit", "verify", "--config"])
        .arg(config)
        .args(extra)
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

/// The last entry the stopped node's segment documents hold.
fn exported_upto(store: &Path) -> u64 {
    use redb::{ReadableDatabase, ReadableTable};
    let db = redb::Database::open(store).unwrap();
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(AUDIT_DOCS).unwrap();
    table
        .iter()
        .unwrap()
        .map(|row| {
            let (_, bytes) = row.unwrap();
            yiciban_core::audit_doc::load(bytes.value())
                .unwrap()
                .last_seq()
        })
        .max()
        .unwrap_or(0)
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
    // A clean stop exported the trail's last entries (the exporter's tick is every 2 s; the
    // full view was logged a moment before the stop): the segments end at entry 6.
    assert_eq!(
        exported_upto(&store),
        6,
        "the trail is in its segments at stop"
    );

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

/// The county's health as its `/api/v1/health` shows it (public).
async fn health(base: &str) -> Value {
    match reqwest::get(format!("{base}/api/v1/health")).await {
        Ok(resp) => resp.json().await.unwrap_or_default(),
        Err(_) => Value::Null,
    }
}

/// The last entry of `node`'s trail the county received over its link from `node`.
async fn audit_held(county: &str, node: &str) -> u64 {
    health(county).await["links"]
        .as_array()
        .and_then(|links| links.iter().find(|l| l["name"] == node))
        .and_then(|l| l["audit_held"].as_u64())
        .unwrap_or(0)
}

/// Runs `f` on the stored bytes of one audit segment in a stopped node's store, and commits.
fn edit_segment(store: &Path, id: &str, f: impl FnOnce(Vec<u8>) -> Vec<u8>) {
    use redb::ReadableTable;
    let db = redb::Database::open(store).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(AUDIT_DOCS).unwrap();
        let bytes = table.get(id).unwrap().unwrap().value().to_vec();
        let new = f(bytes);
        table.insert(id, new.as_slice()).unwrap();
    }
    txn.commit().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_village_trail_reaches_the_county_which_finds_a_segment_changed_by_hand() {
    let root = tempfile::tempdir().unwrap();
    let base = free_base_port().unwrap();
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
    let village_cfg = folder(root.path(), "village", &village_toml(base + 2, Some(quic))).unwrap();
    init_county(&county_cfg).unwrap();
    add_user(&village_cfg, "clerk", "clerk").unwrap();
    let village_token = token(&county_cfg, VILLAGE_ID, "village", "430181101001").unwrap();
    let mut county = NodeProcess::serve(&county_cfg, base).unwrap();
    enroll(&village_cfg, &format!("127.0.0.1:{base}"), &village_token).unwrap();
    let mut village = NodeProcess::serve(&village_cfg, base + 2).unwrap();
    let clerk = Api::login(&village.base_url, "clerk", DEMO_PASSWORD)
        .await
        .unwrap();

    // Entries: the clerk added, the county's calendar merged, the filing; then whatever the
    // county adds to the case (its SMS notice). Wait until the copy reaches the filing and
    // then stays put for a while.
    let start = Instant::now();
    while health(&village.base_url).await["calendar"]["source"] != "county" {
        assert!(start.elapsed() < Duration::from_secs(60), "no calendar");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let catalog = Catalog::parse(yiciban_core::DEMO_CATALOG, Path::new("catalog.toml")).unwrap();
    let app = Workload::new(11).application(catalog.get(BENCH_ITEM).unwrap());
    let (status, filed) = clerk.post("/api/v1/applications", &app).await.unwrap();
    assert_eq!(status, 201, "{filed}");
    let start = Instant::now();
    while audit_held(&county.base_url, VILLAGE_ID).await < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the county did not receive the village's audit trail within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut held = audit_held(&county.base_url, VILLAGE_ID).await;
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the trail never settled"
        );
        tokio::time::sleep(3 * yiciban_core::audit_doc::EXPORT_EVERY).await;
        let now = audit_held(&county.base_url, VILLAGE_ID).await;
        if now == held {
            break;
        }
        held = now;
    }
    // The county first, so the village takes no more changes from it.
    county.terminate().unwrap();
    village.terminate().unwrap();

    // The village's own chain and the county's copy: the same count and head.
    let (code, at_village, err) = verify(&village_cfg);
    assert_eq!(code, 0, "{at_village} {err}");
    let tail = at_village
        .strip_prefix("audit trail intact: ")
        .unwrap_or_else(|| panic!("{at_village}"));
    assert!(
        tail.starts_with(&format!("{held} entries, head ")),
        "{at_village}, the county holds {held}"
    );
    let (code, copy, err) = verify_with(&county_cfg, &["--node", VILLAGE_ID]);
    assert_eq!(code, 0, "{copy} {err}");
    assert_eq!(copy, format!("audit trail of {VILLAGE_ID} intact: {tail}"));
    let (code, all, err) = verify(&county_cfg);
    assert_eq!(code, 0, "{all} {err}");
    assert!(
        all.contains(&format!(
            "audit trail of {VILLAGE_ID} (copy held here): intact, {tail}"
        )),
        "{all}"
    );
    let (code, out, err) = verify_with(&county_cfg, &["--node", "village-430181101999"]);
    assert_eq!(code, 1, "{out} {err}");
    assert!(err.contains("holds no audit trail"), "{err}");

    // One byte of the filing's entry changed in the county's copy, segment rebuilt by hand.
    let store = county_cfg.parent().unwrap().join("node.redb");
    let id = yiciban_core::audit_doc::segment_id(VILLAGE_ID, 0);
    let mut original = Vec::new();
    edit_segment(&store, &id, |bytes| {
        original = bytes.clone();
        let mut entries = yiciban_core::audit_doc::load(&bytes).unwrap().entries;
        let n = entries[2].len();
        entries[2][n - 65] ^= 0x01;
        let actor = yiciban_core::case_doc::node_actor(VILLAGE_ID);
        yiciban_core::audit_doc::append(None, VILLAGE_ID, 0, &entries, actor).unwrap()
    });
    let (code, out, err) = verify_with(&county_cfg, &["--node", VILLAGE_ID]);
    assert_eq!(code, 1, "{out} {err}");
    assert!(err.contains("entry 3 was altered"), "{err}");
    let (code, out, err) = verify(&county_cfg);
    assert_eq!(code, 1, "{out} {err}");
    assert!(
        out.contains(&format!(
            "audit trail of {VILLAGE_ID} (copy held here): broken"
        )),
        "{out}"
    );

    // Put back: intact. Then one raw byte of the stored document flipped.
    edit_segment(&store, &id, |_| original.clone());
    let (code, out, err) = verify_with(&county_cfg, &["--node", VILLAGE_ID]);
    assert_eq!(code, 0, "{out} {err}");
    edit_segment(&store, &id, |mut bytes| {
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        bytes
    });
    let (code, out, err) = verify_with(&county_cfg, &["--node", VILLAGE_ID]);
    assert_eq!(code, 1, "{out} {err}");
    assert!(err.contains("was altered"), "{err}");
    // The village's own chain is untouched.
    assert_eq!(verify(&village_cfg).0, 0);
}
