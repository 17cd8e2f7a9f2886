//! Two real stores replicate over real QUIC with mutual TLS: a village files, the county
//! receives; the county comments, the village receives; a restart resumes from the saved
//! cursor.

use std::time::Duration;

use yiciban_core::case_doc::test_support::sample_case;
use yiciban_core::case_doc::{self, Case};
use yiciban_core::catalog::Tier;
use yiciban_core::event::EventKind;
use yiciban_core::store::Store;
use yiciban_core::summary::CaseSummary;
use yiciban_core::sync_engine::{DialConfig, LinkStatus, dial_forever, run_connection};
use yiciban_sync::store::ReplicaStore;
use yiciban_transport::identity::{CountyCa, NodeIdentity, NodeKey, SERVER_NAME};
use yiciban_transport::tls::TlsMaterial;

fn material(ca: &CountyCa, id: &NodeIdentity) -> TlsMaterial {
    let key = NodeKey::generate().unwrap();
    let issued = ca.issue(&key.csr_pem().unwrap(), id, 30).unwrap();
    TlsMaterial {
        ca_cert_pem: ca.cert_pem().into(),
        cert_pem: issued.cert_pem,
        key_pem: key.pem(),
        crls_der: vec![],
    }
}

/// The sample case under another id and receipt number, accepted at the village.
fn case(id: &str, seq: u64) -> Case {
    let mut c = sample_case();
    c.id = id.into();
    c.receipt_no = format!("430181101001-20261122-{seq:04}");
    c.node = "village-430181101001".into();
    c.events[0].id = format!("{id}-accepted");
    c.events[0].node = c.node.clone();
    c.events[0].at.wall_ms += seq;
    c
}

async fn file(store: &Store, c: &Case, seq: u64) {
    let mut doc = case_doc::build(c, case_doc::node_actor(&c.node)).unwrap();
    let summary = CaseSummary::of(c, &c.state());
    store
        .put_new_case(c, doc.save(), summary, ("20261122".into(), seq), vec![])
        .await
        .unwrap();
}

async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..200 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Starts the county listening and the village dialling; returns both tasks.
fn connect(
    ca: &CountyCa,
    county: &Store,
    village: &Store,
) -> (tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>) {
    let county_id = NodeIdentity::new("county-430181000000", "county", "430181000000").unwrap();
    let village_id = NodeIdentity::new("village-430181101001", "village", "430181101001").unwrap();
    let server = quinn::Endpoint::server(
        material(ca, &county_id).quinn_server().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let addr = server.local_addr().unwrap();
    let county = county.clone();
    let county_task = tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        let _ = run_connection(
            &county,
            "county-430181000000",
            &conn,
            false,
            &LinkStatus::default(),
        )
        .await;
    });
    let client_cfg = material(ca, &village_id).quinn_client().unwrap();
    let village = village.clone();
    let village_task = tokio::spawn(async move {
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(client_cfg);
        let conn = endpoint.connect(addr, SERVER_NAME).unwrap().await.unwrap();
        let _ = run_connection(
            &village,
            "village-430181101001",
            &conn,
            true,
            &LinkStatus::default(),
        )
        .await;
    });
    (county_task, village_task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn village_and_county_converge_both_ways_and_resume_after_a_cut() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let village = Store::open(&dirs.0.path().join("v.redb"), 64, 1 << 20).unwrap();
    let county = Store::open(&dirs.1.path().join("c.redb"), 64, 1 << 20).unwrap();
    let ca = CountyCa::create("430181000000").unwrap();
    let first = case("case-1", 1);
    file(&village, &first, 1).await;

    let (a, b) = connect(&ca, &county, &village);
    until("the county to hold the village's case", || {
        county.case_count().unwrap() == 1
    })
    .await;
    assert_eq!(county.case("case-1").unwrap().unwrap(), first);
    // The county comments; the village receives it over the same link.
    let mut comment = first.events[0].clone();
    comment.id = "c-comment".into();
    comment.at.counter += 1;
    comment.node = "county-430181000000".into();
    comment.tier = Tier::County;
    comment.kind = EventKind::Comment;
    county
        .append_event(
            "case-1",
            comment,
            case_doc::node_actor("county-430181000000"),
        )
        .await
        .unwrap();
    until("the village to hold the county's comment", || {
        village.case("case-1").unwrap().unwrap().events.len() == 2
    })
    .await;
    until("equal heads", || {
        village.doc_heads("case-1").unwrap() == county.doc_heads("case-1").unwrap()
    })
    .await;
    until("the county's cursor for the village", || {
        county.cursor("village-430181101001").unwrap().is_some()
    })
    .await;
    a.abort();
    b.abort();

    // While cut off, the village files another case; after reconnecting it arrives.
    let second = case("case-2", 2);
    file(&village, &second, 2).await;
    let (a, b) = connect(&ca, &county, &village);
    until("the second case after the cut", || {
        county.case_count().unwrap() == 2
    })
    .await;
    assert_eq!(county.case("case-2").unwrap().unwrap(), second);
    a.abort();
    b.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_village_keeps_dialling_until_the_county_comes_up() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let village = Store::open(&dirs.0.path().join("v.redb"), 64, 1 << 20).unwrap();
    let county = Store::open(&dirs.1.path().join("c.redb"), 64, 1 << 20).unwrap();
    let ca = CountyCa::create("430181000000").unwrap();
    file(&village, &case("case-1", 1), 1).await;
    // Reserve a port for the county, then start the village dialling it while it is down.
    let county_id = NodeIdentity::new("county-430181000000", "county", "430181000000").unwrap();
    let village_id = NodeIdentity::new("village-430181101001", "village", "430181101001").unwrap();
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(material(&ca, &village_id).quinn_client().unwrap());
    let status = std::sync::Arc::new(LinkStatus::default());
    let dial = DialConfig {
        connect_timeout: Duration::from_millis(500),
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_millis(400),
    };
    let dialler = tokio::spawn(dial_forever(
        village.clone(),
        "village-430181101001".into(),
        endpoint,
        addr,
        dial,
        status.clone(),
    ));
    until("a failed attempt", || status.snapshot().attempts >= 2).await;
    assert!(!status.snapshot().connected);
    assert!(status.snapshot().last_error.is_some());
    // The county comes up on that address; the village's next attempt gets through.
    let server =
        quinn::Endpoint::server(material(&ca, &county_id).quinn_server().unwrap(), addr).unwrap();
    let c = county.clone();
    let acceptor = tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            if let Ok(conn) = incoming.await {
                let _ = run_connection(
                    &c,
                    "county-430181000000",
                    &conn,
                    false,
                    &LinkStatus::default(),
                )
                .await;
            }
        }
    });
    until("the case at the county", || {
        county.case_count().unwrap() == 1
    })
    .await;
    until("the village to report a sync", || {
        status.snapshot().last_sync_ms.is_some()
    })
    .await;
    assert!(status.snapshot().connected);
    assert_eq!(
        status.snapshot().peer.as_deref(),
        Some("county-430181000000")
    );
    dialler.abort();
    acceptor.abort();
}
