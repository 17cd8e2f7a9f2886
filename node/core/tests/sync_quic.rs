//! Two real stores replicate over real QUIC with mutual TLS: a village files, the county
//! receives; the county comments, the village receives; a restart resumes from the saved
//! cursor.

use std::time::Duration;

use std::sync::Arc;
use yiciban_core::case_doc::test_support::sample_case;
use yiciban_core::case_doc::{self, Case};
use yiciban_core::catalog::Tier;
use yiciban_core::event::EventKind;
use yiciban_core::store::{SavedDoc, Store};
use yiciban_core::summary::CaseSummary;

use yiciban_core::scope::{Scope, ScopedStore};
use yiciban_core::sync_engine::{DialConfig, SyncContext, dial_forever, run_connection};
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
        .put_new_case(
            c,
            SavedDoc::from_bytes(doc.save()),
            summary,
            ("20261122".into(), seq),
            vec![],
        )
        .await
        .unwrap();
}

fn ctx(store: &Store, node_id: &str, scope: Scope) -> SyncContext {
    SyncContext {
        store: store.clone(),
        node_id: node_id.into(),
        scope,
        links: Arc::default(),
    }
}

fn county_ctx(store: &Store) -> SyncContext {
    ctx(store, "county-430181000000", Scope::All)
}

fn village_ctx(store: &Store) -> SyncContext {
    ctx(
        store,
        "village-430181101001",
        Scope::Village("430181101001".into()),
    )
}

/// A village store and a county store, each in a temporary folder (kept while the returned
/// folders live), and the county's CA.
fn stores() -> (
    (tempfile::TempDir, tempfile::TempDir),
    Store,
    Store,
    CountyCa,
) {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let village = Store::open(&dirs.0.path().join("v.redb"), 64, 1 << 20).unwrap();
    let county = Store::open(&dirs.1.path().join("c.redb"), 64, 1 << 20).unwrap();
    let ca = CountyCa::create("430181000000").unwrap();
    (dirs, village, county, ca)
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
        let _ = run_connection(&county_ctx(&county), &conn, false, "peer").await;
    });
    let client_cfg = material(ca, &village_id).quinn_client().unwrap();
    let village = village.clone();
    let village_task = tokio::spawn(async move {
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(client_cfg);
        let conn = endpoint.connect(addr, SERVER_NAME).unwrap().await.unwrap();
        let _ = run_connection(&village_ctx(&village), &conn, true, "county").await;
    });
    (county_task, village_task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn village_and_county_converge_both_ways_and_resume_after_a_cut() {
    let (_dirs, village, county, ca) = stores();
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
    let (_dirs, village, county, ca) = stores();
    file(&village, &case("case-1", 1), 1).await;
    // Reserve a port for the county, then start the village dialling it while it is down.
    let county_id = NodeIdentity::new("county-430181000000", "county", "430181000000").unwrap();
    let village_id = NodeIdentity::new("village-430181101001", "village", "430181101001").unwrap();
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(material(&ca, &village_id).quinn_client().unwrap());
    let vctx = village_ctx(&village);
    let links = vctx.links.clone();
    let status = || links.get("county").unwrap_or_default();
    let dial = DialConfig {
        connect_timeout: Duration::from_millis(500),
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_millis(400),
    };
    let dialler = tokio::spawn(dial_forever(vctx, endpoint, "county".into(), addr, dial));
    until("a failed attempt", || status().attempts >= 2).await;
    assert!(!status().connected);
    assert!(status().last_error.is_some());
    // The county comes up on that address; the village's next attempt gets through.
    let server =
        quinn::Endpoint::server(material(&ca, &county_id).quinn_server().unwrap(), addr).unwrap();
    let c = county.clone();
    let acceptor = tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            if let Ok(conn) = incoming.await {
                let _ = run_connection(&county_ctx(&c), &conn, false, "peer").await;
            }
        }
    });
    until("the case at the county", || {
        county.case_count().unwrap() == 1
    })
    .await;
    until("the village to report a sync", || {
        status().last_sync_ms.is_some()
    })
    .await;
    assert!(status().connected);
    assert_eq!(status().peer.as_deref(), Some("county-430181000000"));
    dialler.abort();
    acceptor.abort();
}

/// The sample case filed at another village of the same town.
fn other_village_case(id: &str, seq: u64) -> Case {
    let mut c = case(id, seq);
    c.node = "village-430181101002".into();
    c.division.village = "430181101002".into();
    c.receipt_no = format!("430181101002-20261122-{seq:04}");
    c.events[0].node = c.node.clone();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_village_never_receives_another_villages_case() {
    let (_dirs, village, county, ca) = stores();
    let mine = case("mine", 1);
    let theirs = other_village_case("theirs", 2);
    file(&county, &mine, 1).await;
    file(&county, &theirs, 2).await;

    // The scoped view the county's session reads for this village: the other case is not in
    // its feed, has no heads, yields no changes, however it is asked for.
    let scope = Scope::Village("430181101001".into());
    let view = ScopedStore {
        store: &county,
        scope: &scope,
    };
    let feed: Vec<String> = view
        .feed_since(0, 100)
        .unwrap()
        .into_iter()
        .map(|e| e.doc_id)
        .collect();
    assert_eq!(feed, ["mine"]);
    assert_eq!(view.doc_heads("theirs").unwrap(), None);
    assert!(view.changes_after("theirs", &[]).unwrap().is_empty());
    assert!(view.doc_heads("mine").unwrap().is_some());
    // The town sees both of its villages.
    let town = Scope::Town("430181101000".into());
    let tview = ScopedStore {
        store: &county,
        scope: &town,
    };
    assert_eq!(tview.feed_since(0, 100).unwrap().len(), 2);
    assert_eq!(tview.feed_head().unwrap(), county.feed_head().unwrap());

    // Over real QUIC: the village gets its own case and never the other one.
    let (a, b) = connect(&ca, &county, &village);
    until("the village's own case", || {
        village.case_count().unwrap() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(village.case("theirs").unwrap().is_none());
    assert_eq!(village.case_count().unwrap(), 1);
    a.abort();
    b.abort();

    // And a village that sends a case of another village is refused by the receiver.
    let forged = other_village_case("forged", 3);
    let mut doc = case_doc::build(&forged, case_doc::node_actor(&forged.node)).unwrap();
    let changes: Vec<Vec<u8>> = doc
        .get_changes(&[])
        .into_iter()
        .map(|c| c.raw_bytes().to_vec())
        .collect();
    let refused = county
        .apply_changes_in("forged", changes, vec![scope.clone(), Scope::All])
        .await;
    assert!(refused.is_err(), "{refused:?}");
    assert!(county.case("forged").unwrap().is_none());
}

/// Cursor saves run beside the session (one at a time, the newest next), no longer awaited
/// in its loop: after a catch-up of several runs the county's cursor still reaches the
/// village's feed head while the link stays up. (It fails if the saves are never started.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cursor_reaches_the_feed_head_after_a_catch_up_of_many_runs() {
    let (_dirs, village, county, ca) = stores();
    // More than a run (128 entries) several times over, so several saves overlap.
    for seq in 1..=700 {
        file(&village, &case(&format!("case-{seq}"), seq), seq).await;
    }
    let (a, b) = connect(&ca, &county, &village);
    until("the county to hold every case", || {
        county.case_count().unwrap() == 700
    })
    .await;
    let head = (village.epoch().unwrap(), village.feed_head().unwrap());
    until("the county's cursor at the village's feed head", || {
        county.cursor("village-430181101001").unwrap() == Some(head)
    })
    .await;
    a.abort();
    b.abort();
}

/// The village remembers how far the county acknowledged its feed, and on reconnection
/// offers from there behind its hello. A county whose store is not the one that
/// acknowledged (a new store, another epoch) makes that session end; the village forgets
/// the position and the next session starts from the county's cursor, as without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnection_offers_from_the_acknowledged_position_and_a_new_county_store_starts_over() {
    const COUNTY: &str = "county-430181000000";
    let (dirs, village, county, ca) = stores();
    for seq in 1..=3 {
        file(&village, &case(&format!("case-{seq}"), seq), seq).await;
    }
    // Acknowledged up to the village's feed head: its cases, and what the county sent it
    // (the registry of nodes, which lists the village when it connects).
    let acked_at = |county: &Store, cases: u64| {
        let village = village.clone();
        let county = county.clone();
        move || {
            let head = yiciban_sync::store::ReplicaStore::feed_head(&village).unwrap();
            village.acked(COUNTY).unwrap().is_some_and(|a| {
                a.seq == head
                    && a.seq >= cases
                    && a.peer_epoch == county.epoch().unwrap()
                    && a.own_epoch == village.epoch().unwrap()
                    && a.scope.is_empty()
            })
        }
    };
    let (a, b) = connect(&ca, &county, &village);
    until("the county to hold the cases", || {
        county.case_count().unwrap() == 3
    })
    .await;
    until("the acknowledgement saved", acked_at(&county, 3)).await;
    a.abort();
    b.abort();

    // Reconnected with a new case: offered early, taken, acknowledged further.
    file(&village, &case("case-4", 4), 4).await;
    let (a, b) = connect(&ca, &county, &village);
    until("the new case at the county", || {
        county.case_count().unwrap() == 4
    })
    .await;
    until("the acknowledgement moved", acked_at(&county, 4)).await;
    a.abort();
    b.abort();

    // A new county store: the early offer is refused and forgotten, then all goes over.
    let fresh = Store::open(&dirs.1.path().join("c2.redb"), 64, 1 << 20).unwrap();
    let (a, b) = connect(&ca, &fresh, &village);
    until("the stale acknowledgement forgotten", || {
        village.acked(COUNTY).unwrap().is_none()
    })
    .await;
    assert_eq!(fresh.case_count().unwrap(), 0);
    a.abort();
    b.abort();
    let (a, b) = connect(&ca, &fresh, &village);
    until("every case at the new county", || {
        fresh.case_count().unwrap() == 4
    })
    .await;
    until("acknowledged by the new county", acked_at(&fresh, 4)).await;
    a.abort();
    b.abort();
}
