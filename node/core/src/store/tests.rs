use super::*;
use crate::case_doc::test_support::sample_case;
use crate::summary::CaseSummary;

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(&dir.path().join("node.redb"), 64, 1024).unwrap()
}

async fn put(store: &Store, id: &str, receipt_seq: u64) -> Case {
    put_with(store, id, receipt_seq, |_| {}).await
}

/// [`put`] of the sample case changed by `edit` first.
async fn put_with(store: &Store, id: &str, receipt_seq: u64, edit: impl FnOnce(&mut Case)) -> Case {
    let mut case = sample_case();
    case.id = id.into();
    case.receipt_no = format!("430181101001-20261122-{receipt_seq:04}");
    edit(&mut case);
    let mut doc = case_doc::build(&case, case_doc::node_actor("v")).unwrap();
    let summary = CaseSummary::of(&case, &case.state());
    store
        .put_new_case(
            &case,
            SavedDoc::of(&mut doc),
            summary,
            ("20261122".into(), receipt_seq),
            vec![],
        )
        .await
        .unwrap();
    case
}

/// Appends a comment (one event after the case's first) to `case`.
async fn comment_on(store: &Store, case: &Case) -> Case {
    comment_as(store, case, "comment", 1, "v").await
}

/// Appends comment `id`, stamped `later` counts after the case's first event, as node `by`.
async fn comment_as(store: &Store, case: &Case, id: &str, later: u32, by: &str) -> Case {
    let mut c = case.events[0].clone();
    c.id = id.into();
    c.at.counter += later;
    c.kind = crate::event::EventKind::Comment;
    store
        .append_event(&case.id, c, case_doc::node_actor(by))
        .await
        .unwrap()
}

#[tokio::test]
async fn cases_and_receipt_sequence_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(&dir);
        assert_eq!(store.reserve_receipt_seq("20261122").unwrap(), 1);
        let case = put(&store, "c1", 1).await;
        assert_eq!(store.case("c1").unwrap().unwrap(), case);
    }
    // The writer thread holds the database until its channel closes: `reopen` waits for it.
    let store = reopen(&dir);
    assert_eq!(store.case_count().unwrap(), 1);
    assert_eq!(store.reserve_receipt_seq("20261122").unwrap(), 2);
    assert_eq!(store.reserve_receipt_seq("20261123").unwrap(), 1);
}

/// Opens the store in `dir` once the writer of an earlier handle has let it go.
fn reopen(dir: &tempfile::TempDir) -> Store {
    loop {
        match Store::open(&dir.path().join("node.redb"), 64, 1024) {
            Ok(s) => break s,
            Err(StoreError::InUse(_)) => std::thread::sleep(std::time::Duration::from_millis(10)),
            Err(e) => panic!("{e}"),
        }
    }
}

/// A store of schema 16 (feed positions in `feed_pos-1`, heads in `doc_heads-1`) opened by
/// this build: every position and every readable heads row land in `doc_pos-1`, a heads row
/// of a bad length becomes "not known" (the document is loaded), and the old tables go.
#[tokio::test]
async fn migration_17_moves_feed_positions_and_heads_into_one_row() {
    use yiciban_sync::store::ReplicaStore;
    let dir = tempfile::tempdir().unwrap();
    let (held, positions) = {
        let store = open(&dir);
        for (n, id) in ["c1", "c2", "c3"].into_iter().enumerate() {
            put(&store, id, n as u64 + 1).await;
        }
        let held: Vec<Vec<[u8; 32]>> = ["c1", "c2", "c3"]
            .iter()
            .map(|id| loaded_heads(&store, id))
            .collect();
        // Back to schema 16's layout: c1 with its heads, c2 with a damaged heads row, c3
        // without one (a document the writer had not loaded).
        let txn = store.db.begin_write().unwrap();
        let mut positions = Vec::new();
        {
            let mut pos = txn.open_table(FEED_POS).unwrap();
            let mut heads = txn.open_table(DOC_HEADS).unwrap();
            let new = txn.open_table(DOC_POS).unwrap();
            for (id, h) in ["c1", "c2", "c3"].iter().zip(&held) {
                let row = doc_pos::decode(new.get(*id).unwrap().unwrap().value()).unwrap();
                pos.insert(*id, row.seq).unwrap();
                positions.push(row.seq);
                match *id {
                    "c1" => heads.insert(*id, h.concat().as_slice()).unwrap(),
                    "c2" => heads.insert(*id, [1u8; 31].as_slice()).unwrap(),
                    _ => None,
                };
            }
        }
        txn.delete_table(DOC_POS).unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("schema_version", 16u64.to_be_bytes().as_slice())
            .unwrap();
        txn.commit().unwrap();
        (held, positions)
    };
    let store = reopen(&dir);
    let txn = store.db.begin_read().unwrap();
    let rows = txn.open_table(DOC_POS).unwrap();
    for ((id, h), seq) in ["c1", "c2", "c3"].iter().zip(&held).zip(&positions) {
        let row = doc_pos::decode(rows.get(*id).unwrap().unwrap().value()).unwrap();
        assert_eq!(row.seq, *seq, "{id} keeps its feed position");
        let expect = (*id == "c1").then(|| h.clone());
        assert_eq!(row.heads, expect, "{id}: heads known only from a good row");
        assert_eq!(store.feed_pos(id).unwrap(), Some(*seq));
        assert_eq!(store.doc_heads(id).unwrap().as_ref(), Some(h));
    }
    assert!(txn.open_table(FEED_POS).is_err(), "feed_pos-1 is gone");
    assert!(txn.open_table(DOC_HEADS).is_err(), "doc_heads-1 is gone");
    assert_eq!(store.case_count().unwrap(), 3);
}

/// A store of schema 17 (case documents in `case_docs-1` by id) opened by this build: each
/// document lands in `case_log-1` at its feed position, and `case_docs-1` goes.
#[tokio::test]
async fn migration_18_moves_case_documents_to_their_feed_positions() {
    let dir = tempfile::tempdir().unwrap();
    let held = {
        let store = open(&dir);
        let c1 = put(&store, "c1", 1).await;
        put(&store, "c2", 2).await;
        comment_on(&store, &c1).await;
        let held: Vec<Vec<u8>> = ["c1", "c2"]
            .iter()
            .map(|id| store.case_doc_bytes(id).unwrap().unwrap())
            .collect();
        // Back to schema 17's layout.
        let txn = store.db.begin_write().unwrap();
        {
            let mut docs = txn.open_table(CASE_DOCS).unwrap();
            for (id, bytes) in ["c1", "c2"].iter().zip(&held) {
                docs.insert(*id, bytes.as_slice()).unwrap();
            }
        }
        txn.delete_table(CASE_LOG).unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("schema_version", 17u64.to_be_bytes().as_slice())
            .unwrap();
        txn.commit().unwrap();
        held
    };
    let store = reopen(&dir);
    for (id, bytes) in ["c1", "c2"].iter().zip(&held) {
        assert_eq!(store.case_doc_bytes(id).unwrap().as_ref(), Some(bytes));
        let seq = store.feed_pos(id).unwrap().unwrap();
        let txn = store.db.begin_read().unwrap();
        let log = txn.open_table(CASE_LOG).unwrap();
        assert_eq!(log.get(seq).unwrap().unwrap().value(), bytes.as_slice());
    }
    assert_eq!(store.case("c1").unwrap().unwrap().events.len(), 2);
    let txn = store.db.begin_read().unwrap();
    assert!(txn.open_table(CASE_DOCS).is_err(), "case_docs-1 is gone");
    assert_eq!(txn.open_table(CASE_LOG).unwrap().len().unwrap(), 2);
}

/// Cases of `status`, as `status_counts` says.
fn count_of(store: &Store, status: Status) -> u64 {
    let counts = store.status_counts().unwrap();
    counts.into_iter().find(|(s, _)| *s == status).unwrap().1
}

/// Cases per status counted from the status index, row by row.
fn scanned_counts(store: &Store) -> Vec<(Status, u64)> {
    let txn = store.db.begin_read().unwrap();
    let index = txn.open_table(CASE_BY_STATUS).unwrap();
    Status::ALL
        .into_iter()
        .map(|status| {
            let prefix = format!("{}{SEP}", status.as_str());
            (status, prefix_range(&index, &prefix).unwrap().len() as u64)
        })
        .collect()
}

/// The counts per status follow filing and status changes, and a store from before them
/// (schema 18) gets them counted from its index.
#[tokio::test]
async fn status_counts_follow_the_index_and_migration_19_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(&dir);
        let c1 = put(&store, "c1", 1).await;
        put(&store, "c2", 2).await;
        put(&store, "c3", 3).await;
        let filed = c1.state().status;
        assert_eq!(count_of(&store, filed), 3);
        let mut w = c1.events[0].clone();
        w.id = "w".into();
        w.at.counter += 1;
        w.kind = crate::event::EventKind::Withdrawn;
        store
            .append_event("c1", w, case_doc::node_actor("v"))
            .await
            .unwrap();
        assert_eq!(count_of(&store, filed), 2);
        assert_eq!(count_of(&store, Status::Withdrawn), 1);
        assert_eq!(store.status_counts().unwrap(), scanned_counts(&store));
        // Back to schema 18's layout.
        let txn = store.db.begin_write().unwrap();
        txn.delete_table(CASE_STATUS_COUNTS).unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("schema_version", 18u64.to_be_bytes().as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let store = reopen(&dir);
    assert_eq!(count_of(&store, Status::Withdrawn), 1);
    assert_eq!(store.status_counts().unwrap(), scanned_counts(&store));
    assert_eq!(
        store
            .status_counts()
            .unwrap()
            .iter()
            .map(|(_, n)| n)
            .sum::<u64>(),
        3
    );
}

#[tokio::test]
async fn projections_find_by_receipt_name_and_id_tail() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    put(&store, "c1", 1).await;
    put(&store, "c2", 2).await;
    let q = |q: &str| {
        store
            .list_cases(&CaseQuery {
                q: Some(q.into()),
                status: None,
                limit: 10,
            })
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(q("430181101001-20261122-0002"), ["c2"]);
    assert_eq!(q("𪚥王").len(), 2, "prefix of a name with rare characters");
    assert_eq!(q("002x").len(), 2, "last four of the ID, lower-case x");
    assert!(q("张三").is_empty());
    let all = store
        .list_cases(&CaseQuery {
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(all.len(), 2);
    assert!(
        all.iter()
            .all(|s| s.id_number_masked == "1101**********002X")
    );
}

#[tokio::test]
async fn duplicate_receipt_is_refused_and_its_neighbours_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    put(&store, "c1", 1).await;
    let mut dup = sample_case();
    dup.id = "c-dup".into();
    dup.receipt_no = "430181101001-20261122-0001".into();
    let mut doc = case_doc::build(&dup, case_doc::node_actor("v")).unwrap();
    let s = CaseSummary::of(&dup, &dup.state());
    let (a, b) = tokio::join!(
        store.put_new_case(
            &dup,
            SavedDoc::from_bytes(doc.save()),
            s,
            ("20261122".into(), 1),
            vec![]
        ),
        put(&store, "c3", 3)
    );
    assert!(matches!(a, Err(StoreError::Exists(_))), "{a:?}");
    assert_eq!(b.id, "c3");
    assert_eq!(store.case_count().unwrap(), 2);
}

#[tokio::test]
async fn illegal_event_is_refused_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let case = put(&store, "c1", 1).await;
    let mut withdraw = case.events[0].clone();
    withdraw.id = "w1".into();
    withdraw.at.counter += 1;
    withdraw.kind = crate::event::EventKind::Withdrawn;
    let after = store
        .append_event("c1", withdraw.clone(), case_doc::node_actor("v"))
        .await
        .unwrap();
    assert_eq!(after.state().status, Status::Withdrawn);
    withdraw.id = "w2".into();
    withdraw.at.counter += 1;
    let again = store
        .append_event("c1", withdraw, case_doc::node_actor("v"))
        .await;
    assert!(
        matches!(again, Err(StoreError::NotLegal { .. })),
        "{again:?}"
    );
    assert_eq!(store.case("c1").unwrap().unwrap().events.len(), 2);
    let withdrawn = store
        .list_cases(&CaseQuery {
            status: Some(Status::Withdrawn),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(withdrawn.len(), 1);
    let under_review = store
        .list_cases(&CaseQuery {
            status: Some(Status::UnderReview),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert!(
        under_review.is_empty(),
        "the old status row was removed in the same commit"
    );
}

#[tokio::test]
async fn oversized_and_non_image_blobs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend([0u8; 100]);
    let hash = store.put_blob(png.clone(), "clerk").await.unwrap();
    assert_eq!(store.blob(&hash).unwrap().unwrap(), png);
    png.extend([0u8; 1024]);
    assert!(matches!(
        store.put_blob(png, "clerk").await,
        Err(StoreError::BlobTooLarge { .. })
    ));
    assert!(matches!(
        store.put_blob(b"hello".to_vec(), "clerk").await,
        Err(StoreError::NotAnImage)
    ));
}

#[tokio::test]
async fn change_feed_keeps_one_entry_per_document() {
    use yiciban_sync::store::ReplicaStore;
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let case = put(&store, "c1", 1).await;
    put(&store, "c2", 2).await;
    comment_on(&store, &case).await;
    let feed = store.feed_since(0, 10).unwrap();
    let ids: Vec<_> = feed.iter().map(|e| e.doc_id.as_str()).collect();
    assert_eq!(ids, ["c2", "c1"]);
    assert_eq!(store.feed_head().unwrap(), 3);
    assert!(store.feed_since(3, 10).unwrap().is_empty());
    let heads = store.doc_heads("c1").unwrap().unwrap();
    assert!(store.changes_after("c1", &heads).unwrap().is_empty());
    // A peer holding nothing gets the saved document: one item that loads to the same heads.
    let saved = store.changes_after("c1", &[]).unwrap();
    assert_eq!(saved.len(), 1);
    assert_eq!(
        AutoCommit::load(&saved[0]).unwrap().get_heads().len(),
        heads.len()
    );
    let first: Vec<[u8; 32]> = AutoCommit::load(&saved[0])
        .unwrap()
        .get_changes(&[])
        .iter()
        .take(1)
        .map(|c| c.hash().0)
        .collect();
    assert_eq!(store.changes_after("c1", &first).unwrap().len(), 1);
}

#[tokio::test]
async fn replica_view_knows_past_heads_and_serves_blob_chunks() {
    use yiciban_sync::store::ReplicaStore;
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let case = put(&store, "c1", 1).await;
    let first_heads = store.doc_heads("c1").unwrap().unwrap();
    comment_on(&store, &case).await;
    assert_ne!(store.doc_heads("c1").unwrap().unwrap(), first_heads);
    assert!(
        store.has_heads("c1", &first_heads).unwrap(),
        "older heads are still held"
    );
    assert!(!store.has_heads("c1", &[[7u8; 32]]).unwrap());
    assert!(!store.has_heads("nope", &first_heads).unwrap());

    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(0u8..200);
    let hash = store.put_blob(png.clone(), "clerk").await.unwrap();
    let raw: [u8; 32] = hex::decode(&hash).unwrap().try_into().unwrap();
    assert_eq!(store.blob_len(&raw).unwrap(), Some(png.len() as u64));
    assert_eq!(
        store.blob_chunk(&raw, 100, 50).unwrap().unwrap(),
        png[100..150]
    );
    assert_eq!(
        store.blob_chunk(&raw, 200, 50).unwrap().unwrap(),
        png[200..]
    );
    assert_eq!(store.blob_chunk(&[0u8; 32], 0, 50).unwrap(), None);
}

#[tokio::test]
async fn a_peers_changes_merge_into_the_case_and_its_projections() {
    merge_moves_projections(false).await;
}

/// The same with the receiver's summary row damaged before the later event: the merge reads
/// the old summary from the document instead, and the status index still moves.
#[tokio::test]
async fn a_merge_onto_a_damaged_summary_row_moves_the_projections_from_the_document() {
    merge_moves_projections(true).await;
}

async fn merge_moves_projections(damage_summary: bool) {
    use yiciban_sync::store::ReplicaStore;
    let here = tempfile::tempdir().unwrap();
    let there = tempfile::tempdir().unwrap();
    let (a, b) = (open(&here), open(&there));
    let case = put(&a, "c1", 1).await;
    let all = a.changes_after("c1", &[]).unwrap();
    // A new case arrives whole; the receiver's lists and feed see it.
    let got = b.apply_changes("c1", all.clone()).await.unwrap();
    assert_eq!(got, case);
    assert_eq!(b.doc_heads("c1").unwrap(), a.doc_heads("c1").unwrap());
    assert_eq!(
        b.list_cases(&CaseQuery {
            limit: 5,
            ..Default::default()
        })
        .unwrap()
        .len(),
        1
    );
    assert_eq!(b.feed_head().unwrap(), 1);
    // Applying the same changes again changes nothing but the feed position.
    b.apply_changes("c1", all).await.unwrap();
    assert_eq!(b.case_count().unwrap(), 1);
    // A later event travels as only the missing change and moves the status index.
    let heads = b.doc_heads("c1").unwrap().unwrap();
    let mut w = case.events[0].clone();
    w.id = "w".into();
    w.at.counter += 1;
    w.kind = crate::event::EventKind::Withdrawn;
    a.append_event("c1", w, case_doc::node_actor("v"))
        .await
        .unwrap();
    let missing = a.changes_after("c1", &heads).unwrap();
    assert_eq!(missing.len(), 1);
    if damage_summary {
        let txn = b.db.begin_write().unwrap();
        txn.open_table(CASE_SUMMARIES)
            .unwrap()
            .insert("c1", b"{not json".as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    b.apply_changes("c1", missing).await.unwrap();
    let listed = |status| {
        b.list_cases(&CaseQuery {
            status: Some(status),
            limit: 5,
            ..Default::default()
        })
        .unwrap()
        .len()
    };
    assert_eq!(listed(Status::Withdrawn), 1);
    assert_eq!(listed(case.state().status), 0, "the old status row is gone");
    assert_eq!(count_of(&b, Status::Withdrawn), 1);
    assert_eq!(
        count_of(&b, case.state().status),
        0,
        "the count moved with the row"
    );
}

/// The read-ahead at start reads each document of the feed's tail once: none in an empty
/// store, and a case edited after it was filed counts once (its old feed entry is stale).
#[tokio::test]
async fn the_feed_tail_read_ahead_reads_each_document_of_the_tail_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    assert_eq!(store.warm_feed_tail().unwrap(), 0);
    let first = put(&store, "c1", 1).await;
    put(&store, "c2", 2).await;
    put(&store, "c3", 3).await;
    comment_on(&store, &first).await;
    assert_eq!(store.warm_feed_tail().unwrap(), 3);
}

/// An offer's rows read in one transaction say what `doc_heads` and `tip` say one by one: a
/// case with a tip, one without, one not held, one whose heads in `doc_pos-1` are damaged, and
/// the same with tips not asked for.
#[tokio::test]
async fn offer_rows_read_at_once_match_heads_and_tips_read_one_by_one() {
    use yiciban_sync::store::{OfferRow, ReplicaStore};
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let tipped = put(&store, "c1", 1).await;
    comment_on(&store, &tipped).await;
    put(&store, "c2", 2).await;
    let damaged = put(&store, "c3", 3).await;
    comment_on(&store, &damaged).await;
    // Its position stands, its heads are cut short: they are read by loading the document.
    let txn = store.db.begin_write().unwrap();
    {
        let mut rows = txn.open_table(DOC_POS).unwrap();
        let mut row = rows.get("c3").unwrap().unwrap().value().to_vec();
        row.pop();
        rows.insert("c3", row.as_slice()).unwrap();
    }
    txn.commit().unwrap();
    let ids = ["c1", "c2", "nope", "c3"];
    for with_tips in [true, false] {
        let one_by_one: Vec<OfferRow> = ids
            .iter()
            .map(|id| {
                let heads = store.doc_heads(id).unwrap();
                let tip = match &heads {
                    Some(h) if with_tips => store.tip(id, h).unwrap(),
                    _ => None,
                };
                OfferRow { heads, tip }
            })
            .collect();
        let at_once = store.offer_rows(&ids, with_tips).unwrap();
        assert_eq!(at_once, one_by_one, "with_tips {with_tips}");
        assert_eq!(at_once[0].tip.is_some(), with_tips, "c1 has a tip");
        // c2, just filed, has its first change as its tip.
        assert_eq!(at_once[1].tip.is_some(), with_tips, "c2 has a tip");
        assert!(at_once[1].heads.is_some());
        assert_eq!(at_once[2], OfferRow::default());
        assert!(at_once[3].heads.is_some(), "c3 loaded for its heads");
    }
}

/// Marks `id`'s heads "not known" in `doc_pos-1`, keeping its feed position: as a store from
/// before migration 013 left them, so readers load the document.
fn forget_heads(store: &Store, id: &str) {
    let seq = store.feed_pos(id).unwrap().unwrap();
    let txn = store.db.begin_write().unwrap();
    txn.open_table(DOC_POS)
        .unwrap()
        .insert(id, doc_pos::encode(seq, None).as_slice())
        .unwrap();
    txn.commit().unwrap();
}

/// Heads checked at once say what `has_heads` says one by one: current heads, a head the
/// document has moved past (found by loading it), a hash it never had, a document not held,
/// and one whose heads `doc_pos-1` does not know.
#[tokio::test]
async fn has_heads_many_answers_as_has_heads_one_by_one() {
    use yiciban_sync::store::ReplicaStore;
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let c1 = put(&store, "c1", 1).await;
    let filed = store.doc_heads("c1").unwrap().unwrap();
    comment_on(&store, &c1).await;
    let now = store.doc_heads("c1").unwrap().unwrap();
    put(&store, "c2", 2).await;
    let c2 = store.doc_heads("c2").unwrap().unwrap();
    forget_heads(&store, "c2");
    let never = [[9u8; 32]];
    let asks: Vec<(&str, &[[u8; 32]])> = vec![
        ("c1", &now),
        ("c1", &filed),
        ("c1", &never),
        ("nope", &[]),
        ("nope", &never),
        ("c2", &c2),
        ("c2", &never),
    ];
    let one_by_one: Vec<bool> = asks
        .iter()
        .map(|(id, h)| store.has_heads(id, h).unwrap())
        .collect();
    assert_eq!(one_by_one, [true, true, false, true, false, true, false]);
    assert_eq!(store.has_heads_many(&asks).unwrap(), one_by_one);
}

/// A merge that leaves the summary as it was does not write the row again, unless the row is
/// damaged: then it is written from the merged case.
#[tokio::test]
async fn a_comment_merged_onto_a_damaged_summary_row_repairs_it() {
    use yiciban_sync::store::ReplicaStore;
    let here = tempfile::tempdir().unwrap();
    let there = tempfile::tempdir().unwrap();
    let (a, b) = (open(&here), open(&there));
    let case = put(&a, "c1", 1).await;
    b.apply_changes("c1", a.changes_after("c1", &[]).unwrap())
        .await
        .unwrap();
    let row = |s: &Store| {
        let txn = s.db.begin_read().unwrap();
        let t = txn.open_table(CASE_SUMMARIES).unwrap();
        t.get("c1").unwrap().map(|v| v.value().to_vec())
    };
    let good = row(&b).unwrap();
    let heads = b.doc_heads("c1").unwrap().unwrap();
    comment_on(&a, &case).await;
    let txn = b.db.begin_write().unwrap();
    txn.open_table(CASE_SUMMARIES)
        .unwrap()
        .insert("c1", b"{not json".as_slice())
        .unwrap();
    txn.commit().unwrap();
    let merged = b
        .apply_changes("c1", a.changes_after("c1", &heads).unwrap())
        .await
        .unwrap();
    assert_eq!(merged.events.len(), 2);
    assert_eq!(row(&b).unwrap(), good, "a comment changes no summary field");
}

/// A run whose every merge fails sends the writer nothing to commit, and the writer goes on.
#[tokio::test]
async fn a_run_whose_every_merge_fails_leaves_the_writer_free() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for mode in [RunMode::Streamed, RunMode::Whole] {
        let run = (0..3)
            .map(|n| (format!("c{n}"), vec![b"not a change".to_vec()]))
            .collect();
        let merged = store
            .apply_changes_many("village", run, vec![], None, mode)
            .await;
        assert!(
            merged
                .iter()
                .all(|m| matches!(m, Err(StoreError::Refused(_))))
        );
    }
    put(&store, "c9", 1).await;
    assert_eq!(store.case_count().unwrap(), 1);
    assert_eq!(store.verify_audit().unwrap().unwrap().count, 1);
}

#[tokio::test]
async fn hostile_or_incomplete_changes_are_refused_and_nothing_is_written() {
    use yiciban_sync::store::ReplicaStore;
    let here = tempfile::tempdir().unwrap();
    let there = tempfile::tempdir().unwrap();
    let (a, b) = (open(&here), open(&there));
    let case = put(&a, "c1", 1).await;
    let first = a.doc_heads("c1").unwrap().unwrap();
    comment_on(&a, &case).await;
    let later_only = a.changes_after("c1", &first).unwrap();
    assert!(matches!(
        b.apply_changes("c1", later_only).await,
        Err(StoreError::Refused(_))
    ));
    assert!(
        b.apply_changes("c1", vec![b"garbage".to_vec()])
            .await
            .is_err()
    );
    let all = a.changes_after("c1", &[]).unwrap();
    assert!(matches!(
        b.apply_changes("other-id", all).await,
        Err(StoreError::Rejected(_))
    ));
    assert_eq!(b.case_count().unwrap(), 0);
    assert_eq!(b.feed_head().unwrap(), 0);
    assert_ne!(
        a.epoch().unwrap(),
        b.epoch().unwrap(),
        "each store draws its own epoch"
    );
}

/// Rewrites `audit-1` directly, as someone with the file would.
fn tamper(store: &Store, f: impl FnOnce(&mut redb::Table<u64, &[u8]>)) {
    let txn = store.db.begin_write().unwrap();
    {
        let mut table = txn.open_table(AUDIT).unwrap();
        f(&mut table);
    }
    txn.commit().unwrap();
}

fn audit_value(store: &Store, seq: u64) -> Vec<u8> {
    let txn = store.db.begin_read().unwrap();
    let table = txn.open_table(AUDIT).unwrap();
    table.get(seq).unwrap().unwrap().value().to_vec()
}

#[tokio::test]
async fn every_change_is_chained_in_the_audit_trail_and_damage_is_named() {
    use crate::audit::ChainProblem;
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).for_node("v");
    let case = put(&store, "c1", 1).await;
    comment_on(&store, &case).await;
    store
        .audit_view("clerk", "c1", "applicant ID number")
        .await
        .unwrap();
    // A refused write and a cursor leave no entry; a write that changes nothing neither.
    let mut bad = case.events[0].clone();
    bad.id = "x".into();
    bad.kind = crate::event::EventKind::Approved;
    assert!(
        store
            .append_event("c1", bad, case_doc::node_actor("v"))
            .await
            .is_err()
    );
    store.save_cursor("peer", 1, 2).await.unwrap();
    let png = b"\x89PNG\r\n\x1a\n0000".to_vec();
    store.put_blob(png.clone(), "clerk").await.unwrap();
    store.put_blob(png, "clerk").await.unwrap();

    let report = store.verify_audit().unwrap().unwrap();
    assert_eq!(report.count, 4);
    let entries = store.audit_tail(10).unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "case.filed",
            "event.recorded",
            "personal_data.viewed",
            "blob.stored"
        ]
    );
    assert_eq!(entries[0].case_id.as_deref(), Some("c1"));
    assert_eq!(entries[0].node, "v");
    assert_eq!(report.head, entries[3].hash);

    // One byte of entry 2 changed.
    let original = audit_value(&store, 2);
    let mut altered = original.clone();
    // The last byte of its detail (the value ends with prev and hash, 32 bytes each).
    let at = altered.len() - 65;
    altered[at] ^= 0x01;
    tamper(&store, |t| {
        t.insert(2, altered.as_slice()).unwrap();
    });
    assert_eq!(
        store.verify_audit().unwrap(),
        Err(ChainProblem::Altered { seq: 2 })
    );
    let message = ChainProblem::Altered { seq: 2 }.to_string();
    assert!(message.contains("entry 2 was altered"), "{message}");
    tamper(&store, |t| {
        t.insert(2, original.as_slice()).unwrap();
    });
    assert!(store.verify_audit().unwrap().is_ok());

    // Entries 2 and 3 swapped.
    let third = audit_value(&store, 3);
    tamper(&store, |t| {
        t.insert(2, third.as_slice()).unwrap();
        t.insert(3, original.as_slice()).unwrap();
    });
    assert_eq!(
        store.verify_audit().unwrap(),
        Err(ChainProblem::Moved { key: 2, claims: 3 })
    );
    tamper(&store, |t| {
        t.insert(2, original.as_slice()).unwrap();
        t.insert(3, third.as_slice()).unwrap();
    });

    // Entry 3 deleted; then the last one too.
    tamper(&store, |t| {
        t.remove(3).unwrap();
    });
    assert_eq!(
        store.verify_audit().unwrap(),
        Err(ChainProblem::Missing { seq: 3 })
    );
    tamper(&store, |t| {
        t.insert(3, third.as_slice()).unwrap();
        t.remove(4).unwrap();
    });
    assert_eq!(
        store.verify_audit().unwrap(),
        Err(ChainProblem::Missing { seq: 4 })
    );
}

#[tokio::test]
async fn a_failed_group_member_leaves_the_chain_serial() {
    // Two filings of the same case in one group: the group fails, each is retried alone,
    // and only the one that was written has an entry.
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let (a, b) = tokio::join!(put_try(&store, 1), put_try(&store, 2));
    assert!(a ^ b, "exactly one of the two filings succeeds");
    put(&store, "c2", 3).await;
    let report = store.verify_audit().unwrap().unwrap();
    assert_eq!(report.count, 2);
}

async fn put_try(store: &Store, receipt_seq: u64) -> bool {
    let mut case = sample_case();
    case.id = "dup".into();
    case.receipt_no = format!("430181101001-20261122-{receipt_seq:04}");
    let mut doc = case_doc::build(&case, case_doc::node_actor("v")).unwrap();
    let summary = CaseSummary::of(&case, &case.state());
    store
        .put_new_case(
            &case,
            SavedDoc::from_bytes(doc.save()),
            summary,
            ("20261122".into(), receipt_seq),
            vec![],
        )
        .await
        .is_ok()
}

#[tokio::test]
async fn the_audit_trail_is_exported_in_segments_and_only_the_county_takes_it() {
    use crate::scope::{Scope, ScopedStore};
    use yiciban_sync::store::ReplicaStore;
    let (vdir, cdir, odir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let village = open(&vdir).for_node("v");
    let county = open(&cdir).for_node("county");
    let town = open(&odir).for_node("t");
    let case = put(&village, "c1", 1).await;
    comment_on(&village, &case).await;
    let id = crate::audit_doc::segment_id("v", 0);
    assert_eq!(village.export_audit(1).await.unwrap(), 1);
    let first = village.doc_heads(&id).unwrap().unwrap();
    assert_eq!(
        village.tip(&id, &first).unwrap(),
        None,
        "a new segment has no tip"
    );
    assert_eq!(village.export_audit(100).await.unwrap(), 1);
    // Exporting writes no entry of its own, and nothing is left to export.
    assert_eq!(village.export_audit(100).await.unwrap(), 0);
    assert_eq!(village.verify_audit().unwrap().unwrap().count, 2);

    // In the global feed (the county's view) only: no village or town scope sees it.
    let all = ScopedStore {
        store: &village,
        scope: &Scope::All,
    };
    // The second export's change is the segment's tip: offered with it, made on the heads
    // of the first, and what a holder of those lacks.
    let now = all.doc_heads(&id).unwrap().unwrap();
    let (base, change) = all.tip(&id, &now).unwrap().expect("the append is the tip");
    assert_eq!(base, first);
    // What the change says of itself is those heads: the offer sends it without them.
    let (hash, mut deps) = all.change_id(&change).expect("an Automerge change");
    deps.sort_unstable();
    assert_eq!((vec![hash], deps), (now.clone(), first.clone()));
    assert_eq!(all.change_id(b"no change"), None);
    assert_eq!(all.changes_after(&id, &first).unwrap(), vec![change]);
    assert!(
        all.feed_since(0, 100)
            .unwrap()
            .iter()
            .any(|e| e.doc_id == id)
    );
    for scope in [
        Scope::Village(case.division.village.clone()),
        Scope::Town(case.division.town.clone()),
    ] {
        let view = ScopedStore {
            store: &village,
            scope: &scope,
        };
        assert!(
            view.feed_since(0, 100)
                .unwrap()
                .iter()
                .all(|e| e.doc_id != id)
        );
        assert_eq!(view.doc_heads(&id).unwrap(), None);
        assert_eq!(view.tip(&id, &now).unwrap(), None, "no tip out of scope");
        assert!(view.changes_after(&id, &[]).unwrap().is_empty());
        // Still, what the store holds of it is what it asks the sender for more than.
        assert_eq!(
            view.held_heads(&id).unwrap(),
            all.doc_heads(&id).unwrap(),
            "a want for the segment names the heads held"
        );
        let held = view.held_heads(&id).unwrap().unwrap();
        assert!(all.changes_after(&id, &held).unwrap().is_empty());
    }
    // A peer holding nothing of the segment is sent its saved form.
    let saved = all.changes_after(&id, &[]).unwrap();
    assert_eq!(saved, vec![village.audit_doc_bytes(&id).unwrap().unwrap()]);
    let changes: Vec<Vec<u8>> = AutoCommit::load(&saved[0])
        .unwrap()
        .get_changes(&[])
        .into_iter()
        .map(|c| c.raw_bytes().to_vec())
        .collect();
    assert_eq!(changes.len(), 2, "one change per export");

    // Refused: at a town, from another peer, the county's own id; nothing written.
    let refused = [
        town.apply_audit_changes("v", false, &id, changes.clone())
            .await,
        county
            .apply_audit_changes("w", true, &id, changes.clone())
            .await,
    ];
    assert!(refused.iter().all(Result::is_err), "{refused:?}");
    let own = crate::audit_doc::segment_id("county", 0);
    assert!(
        county
            .apply_audit_changes("county", true, &own, changes.clone())
            .await
            .is_err()
    );
    assert_eq!(county.verify_audit_replica("v").unwrap(), None);
    assert_eq!(town.audit_doc_bytes(&id).unwrap(), None);

    // The first change alone, then the saved segment: the county's copy follows, verifies.
    assert_eq!(
        county
            .apply_audit_changes("v", true, &id, changes[..1].to_vec())
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        county
            .apply_audit_changes("v", true, &id, saved.clone())
            .await
            .unwrap(),
        2
    );
    let copy = county.verify_audit_replica("v").unwrap().unwrap().unwrap();
    assert_eq!(copy, village.verify_audit().unwrap().unwrap());
    // Each receipt that changed something is in the county's own chain.
    assert_eq!(county.verify_audit().unwrap().unwrap().count, 2);
    assert_eq!(county.audit_doc_nodes().unwrap(), ["v"]);

    // A segment whose entry was altered (rebuilt by hand with another actor) is refused.
    let mut entries = crate::audit_doc::load(&village.audit_doc_bytes(&id).unwrap().unwrap())
        .unwrap()
        .entries;
    entries[1][20] ^= 1;
    for actor in ["x", "v"] {
        let forged =
            crate::audit_doc::append(None, "v", 0, &entries, case_doc::node_actor(actor)).unwrap();
        let mut forged = AutoCommit::load(&forged).unwrap();
        let forged_changes: Vec<Vec<u8>> = forged
            .get_changes(&[])
            .into_iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect();
        let result = county
            .apply_audit_changes("v", true, &id, forged_changes)
            .await;
        assert!(result.is_err(), "forged by {actor}: {result:?}");
        // The same forgery as a saved document is refused too.
        let result = county
            .apply_audit_changes("v", true, &id, vec![forged.save()])
            .await;
        assert!(result.is_err(), "forged by {actor}, saved: {result:?}");
    }
    assert!(county.verify_audit_replica("v").unwrap().unwrap().is_ok());
}

/// An audit segment's merge is worked out before the writer takes it; if the stored segment
/// moved meanwhile, the writer merges again on what is stored, so no entry is lost.
#[tokio::test]
async fn an_audit_merge_prepared_on_a_segment_that_moved_is_merged_again() {
    let (vdir, cdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let village = open(&vdir).for_node("v");
    let county = open(&cdir).for_node("county");
    let case = put(&village, "c1", 1).await;
    assert_eq!(village.export_audit(1).await.unwrap(), 1);
    comment_on(&village, &case).await;
    assert_eq!(village.export_audit(100).await.unwrap(), 1);
    let id = crate::audit_doc::segment_id("v", 0);
    let changes: Vec<Vec<u8>> = AutoCommit::load(&village.audit_doc_bytes(&id).unwrap().unwrap())
        .unwrap()
        .get_changes(&[])
        .into_iter()
        .map(|c| c.raw_bytes().to_vec())
        .collect();
    assert_eq!(changes.len(), 2);
    // Prepared while the county held nothing of the segment; then it takes both changes.
    let stale = writer::prepare_audit(None, &id, &changes[..1], "v", 0).unwrap();
    assert_eq!(
        county
            .apply_audit_changes("v", true, &id, changes.clone())
            .await
            .unwrap(),
        2
    );
    let got = county
        .write(
            WriteOp::ApplyAuditDoc {
                doc_id: id.clone(),
                changes: changes[..1].to_vec(),
                peer: "v".into(),
                at_county: true,
                own: "county".into(),
                prepared: Some(Box::new(stale)),
            },
            None,
        )
        .await
        .unwrap();
    // The stale merge would have stored the one-entry segment over the two-entry one.
    assert!(matches!(got, WriteOutcome::Count(2)), "{got:?}");
    let copy = county.verify_audit_replica("v").unwrap().unwrap().unwrap();
    assert_eq!(copy, village.verify_audit().unwrap().unwrap());
}

/// `n` chained audit entries of node `v`, entry `seq` stamped `base + seq`.
fn audit_chain(n: u64, base: u64) -> Vec<Vec<u8>> {
    let mut prev = [0u8; 32];
    (1..=n)
        .map(|seq| {
            let rec = AuditRecord::new("v", "clerk", "case.filed", Some("c1"), "x");
            let e = AuditEntry::seal(seq, base + seq, &rec, prev);
            prev = e.hash;
            e.encode()
        })
        .collect()
}

#[tokio::test]
async fn the_next_segment_links_to_the_full_one_before_it_with_or_without_its_tail_row() {
    use crate::audit_doc::{SEGMENT_ENTRIES, append, segment_id};
    let dir = tempfile::tempdir().unwrap();
    let county = open(&dir).for_node("county");
    let full = SEGMENT_ENTRIES as usize;
    let genuine = audit_chain(SEGMENT_ENTRIES + 3, 1_700_000_000_000);
    // Entries 513.. of another chain: each one sound, but 513 does not follow 512 here.
    let other = audit_chain(SEGMENT_ENTRIES + 3, 1_700_000_500_000);
    let actor = case_doc::node_actor("v");
    let seg = |k: u64, entries: &[Vec<u8>]| append(None, "v", k, entries, actor.clone()).unwrap();
    let tail_row = |store: &Store| {
        let txn = store.db.begin_read().unwrap();
        let t = txn.open_table(AUDIT_TAILS).unwrap();
        t.get(segment_id("v", 0).as_str())
            .unwrap()
            .map(|v| v.value().to_vec())
    };
    county
        .apply_audit_changes(
            "v",
            true,
            &segment_id("v", 0),
            vec![seg(0, &genuine[..full])],
        )
        .await
        .unwrap();
    let last = AuditEntry::decode(&genuine[full - 1]).unwrap().hash;
    assert_eq!(
        tail_row(&county),
        Some(last.to_vec()),
        "the full segment's tail"
    );

    let (forged, sound) = (seg(1, &other[full..]), seg(1, &genuine[full..]));
    let id1 = segment_id("v", 1);
    for round in ["with the row", "without the row"] {
        let refused = county
            .apply_audit_changes("v", true, &id1, vec![forged.clone()])
            .await;
        assert!(refused.is_err(), "{round}: {refused:?}");
        assert_eq!(county.audit_doc_bytes(&id1).unwrap(), None, "{round}");
        // A store from before the table: no row, the segment itself is read (and gets one).
        let txn = county.db.begin_write().unwrap();
        txn.open_table(AUDIT_TAILS)
            .unwrap()
            .remove(segment_id("v", 0).as_str())
            .unwrap();
        txn.commit().unwrap();
    }
    assert_eq!(
        county
            .apply_audit_changes("v", true, &id1, vec![sound])
            .await
            .unwrap(),
        SEGMENT_ENTRIES + 3
    );
    assert_eq!(
        tail_row(&county),
        Some(last.to_vec()),
        "the row, filled again"
    );
    let report = county.verify_audit_replica("v").unwrap().unwrap().unwrap();
    assert_eq!(report.count, SEGMENT_ENTRIES + 3);
}

#[tokio::test]
async fn health_documents_of_old_days_are_dropped_with_their_feed_entries() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).for_node("village-1");
    let day_ms = 86_400_000;
    let mut report = crate::health::HealthReport {
        node: "village-1".into(),
        role: crate::catalog::Tier::Village,
        division: "430181101001".into(),
        town: "430181101000".into(),
        version: "0".into(),
        at_ms: 1_790_000_000_000,
        uptime_s: 1,
        peers: vec![],
        store_bytes: 1,
        free_disk_bytes: None,
        clock_offset_ms: None,
        cert_expires_ms: None,
        errors_24h: 0,
        cases_by_status: Default::default(),
    };
    store.record_health(&report).await.unwrap();
    report.at_ms += 10 * day_ms;
    store.record_health(&report).await.unwrap();
    store.record_health(&report).await.unwrap();
    let ids: Vec<String> = yiciban_sync::store::ReplicaStore::feed_since(&store, 0, 10)
        .unwrap()
        .into_iter()
        .map(|e| e.doc_id)
        .collect();
    assert_eq!(ids.len(), 2, "one document a day: {ids:?}");
    let latest = store.latest_health().unwrap();
    let recent = &latest["village-1"];
    assert_eq!(recent.backlog.len(), 2, "one report per stamp, across days");
    assert!(recent.backlog[0].0 < recent.backlog[1].0, "oldest first");
    assert_eq!(recent.latest.at_ms, recent.backlog[1].0);
    let newest_day = crate::health::parse_id(&ids[1]).unwrap().1.to_string();
    assert_eq!(store.prune_health(&newest_day).await.unwrap(), 1);
    let left: Vec<String> = yiciban_sync::store::ReplicaStore::feed_since(&store, 0, 10)
        .unwrap()
        .into_iter()
        .map(|e| e.doc_id)
        .collect();
    assert_eq!(left, ids[1..]);
    assert!(store.health_doc_bytes(&ids[0]).unwrap().is_none());
}

/// The heads `doc_pos-1` hands out, checked against the document itself.
fn loaded_heads(store: &Store, id: &str) -> Vec<[u8; 32]> {
    let bytes = store.case_doc_bytes(id).unwrap().unwrap();
    let doc = automerge::Automerge::load(&bytes).unwrap();
    doc.get_heads().into_iter().map(|h| h.0).collect()
}

#[tokio::test]
async fn doc_heads_rows_follow_every_write_of_a_case() {
    use yiciban_sync::store::ReplicaStore;
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let case = put(&store, "c1", 1).await;
    let row = |s: &Store| {
        let txn = s.db.begin_read().unwrap();
        let t = txn.open_table(DOC_POS).unwrap();
        t.get("c1")
            .unwrap()
            .map(|v| doc_pos::decode(v.value()).unwrap())
    };
    // Filed: the row holds the heads the document has, and its feed position.
    let filed = row(&store).unwrap();
    assert_eq!(filed.heads.as_ref().map(Vec::len), Some(1));
    assert_eq!(Some(filed.seq), store.feed_pos("c1").unwrap());
    assert_eq!(
        store.doc_heads("c1").unwrap().unwrap(),
        loaded_heads(&store, "c1")
    );
    // An event moves them, and the row with them.
    comment_on(&store, &case).await;
    assert_eq!(
        store.doc_heads("c1").unwrap().unwrap(),
        loaded_heads(&store, "c1")
    );
    assert!(store.has_heads("c1", &loaded_heads(&store, "c1")).unwrap());
    // An older head is still held (found by loading, not in the row).
    let first = automerge::Automerge::load(&store.case_doc_bytes("c1").unwrap().unwrap())
        .unwrap()
        .get_changes(&[])
        .first()
        .map(|c| c.hash().0)
        .unwrap();
    assert!(!store.doc_heads("c1").unwrap().unwrap().contains(&first));
    assert!(store.has_heads("c1", &[first]).unwrap());
    assert!(!store.has_heads("c1", &[[7u8; 32]]).unwrap());
    assert!(
        row(&store).unwrap().seq > filed.seq,
        "the event moved it up the feed"
    );
    // With heads not known (a store from before migration 013), the document is loaded.
    forget_heads(&store, "c1");
    assert_eq!(
        store.doc_heads("c1").unwrap().unwrap(),
        loaded_heads(&store, "c1")
    );
    assert_eq!(store.doc_heads("nope").unwrap(), None);
}

#[tokio::test]
async fn a_merge_prepared_on_a_document_that_moved_is_merged_again() {
    merge_prepared_on_a_moved_document(false).await;
}

/// The writer sees the move by the bytes where `doc_pos-1` does not know the heads.
#[tokio::test]
async fn a_merge_prepared_on_a_document_that_moved_is_merged_again_without_known_heads() {
    merge_prepared_on_a_moved_document(true).await;
}

async fn merge_prepared_on_a_moved_document(heads_not_known: bool) {
    use yiciban_sync::store::ReplicaStore;
    let here = tempfile::tempdir().unwrap();
    let there = tempfile::tempdir().unwrap();
    let (a, b) = (open(&here), open(&there));
    let case = put(&a, "c1", 1).await;
    let all = a.changes_after("c1", &[]).unwrap();
    b.apply_changes("c1", all).await.unwrap();
    // Prepared on the first state of c1 at b; then b gets a comment of its own.
    let first = comment_on(&a, &case).await;
    let have = b.doc_heads("c1").unwrap().unwrap();
    let later = a.changes_after("c1", &have).unwrap();
    let check = std::sync::Arc::new(b.merge_check(None));
    let stale =
        writer::prepare_case(b.held_case("c1").unwrap(), "c1", &later, &check, false).unwrap();
    comment_as(&b, &case, "own", 5, "b").await;
    if heads_not_known {
        forget_heads(&b, "c1");
    }
    let got = b
        .write(
            WriteOp::ApplyChanges {
                doc_id: "c1".into(),
                changes: later,
                scopes: Vec::new(),
                prepared: Some(Box::new(stale)),
                check,
                peer: String::new(),
            },
            None,
        )
        .await
        .unwrap();
    // Both comments are kept: the stale merge would have dropped b's own.
    let WriteOutcome::Case(got) = got else {
        panic!("no case back")
    };
    assert_eq!(got.events.len(), first.events.len() + 1);
    assert_eq!(b.case("c1").unwrap().unwrap().events.len(), 3);
    assert_eq!(b.doc_heads("c1").unwrap().unwrap(), loaded_heads(&b, "c1"));
}

#[tokio::test]
async fn waiting_bytes_are_exact_up_to_the_sized_count_and_scaled_beyond() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let n = WAITING_SIZED as u64 + 44;
    for i in 0..n {
        put(&store, &format!("c{i:04}"), i + 1).await;
    }
    let exact = |after: u64| -> u64 {
        (after..n)
            .map(|i| {
                store
                    .case_doc_bytes(&format!("c{i:04}"))
                    .unwrap()
                    .unwrap()
                    .len() as u64
            })
            .sum()
    };
    // 256 waiting after position 44: every one measured.
    assert_eq!(
        store.waiting(&Scope::All, 44, 100_000).unwrap(),
        (256, exact(44))
    );
    // 300 waiting: the count exact, the size scaled from the first 256 (cases of one size).
    let (count, bytes) = store.waiting(&Scope::All, 0, 100_000).unwrap();
    assert_eq!(count, n);
    let all = exact(0);
    assert!(bytes.abs_diff(all) * 100 < all, "{bytes} against {all}");
    assert_eq!(store.waiting(&Scope::All, n, 100_000).unwrap(), (0, 0));
}

#[tokio::test]
async fn a_whole_new_case_is_stored_as_sent_and_a_damaged_one_as_it_loads() {
    use yiciban_sync::store::ReplicaStore;
    let here = tempfile::tempdir().unwrap();
    let (there, third) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b, c) = (open(&here), open(&there), open(&third));
    put(&a, "c1", 1).await;
    let sent = a.changes_after("c1", &[]).unwrap();
    assert_eq!(
        sent.len(),
        1,
        "a case the peer holds nothing of travels whole"
    );
    b.apply_changes("c1", sent.clone()).await.unwrap();
    assert_eq!(b.case_doc_bytes("c1").unwrap().unwrap(), sent[0]);
    assert_eq!(b.doc_heads("c1").unwrap().unwrap(), loaded_heads(&b, "c1"));
    // A whole document with a torn chunk after it: what loads is taken and saved again,
    // so the stored bytes load strictly; they are not the bytes sent.
    let mut torn = sent[0].clone();
    torn.extend_from_slice(&sent[0][..40]);
    c.apply_changes("c1", vec![torn.clone()]).await.unwrap();
    let stored = c.case_doc_bytes("c1").unwrap().unwrap();
    assert_ne!(stored, torn);
    assert_eq!(loaded_heads(&c, "c1"), loaded_heads(&a, "c1"));
    // A document that claims another id is refused whole, and nothing is written.
    assert!(b.apply_changes("c2", sent).await.is_err());
    assert_eq!(b.case_doc_bytes("c2").unwrap(), None);
}

#[tokio::test]
async fn a_filed_case_is_stored_with_the_heads_of_its_saved_bytes() {
    use yiciban_sync::store::ReplicaStore;
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut case = sample_case();
    case.id = "c-heads".into();
    let mut doc = case_doc::build(&case, case_doc::node_actor("v")).unwrap();
    let saved = SavedDoc::of(&mut doc);
    assert_eq!(saved.heads, SavedDoc::from_bytes(saved.bytes.clone()).heads);
    let summary = CaseSummary::of(&case, &case.state());
    store
        .put_new_case(&case, saved, summary, ("20261122".into(), 1), vec![])
        .await
        .unwrap();
    assert_eq!(
        store.doc_heads("c-heads").unwrap().unwrap(),
        loaded_heads(&store, "c-heads")
    );
}

/// Runs one session between `a` and `b` (each sees all of the other's cases) until neither
/// has anything left to send; returns the sessions and the `WantMany` entries each sent.
async fn sync_pair(a: &Store, b: &Store) -> ([yiciban_sync::session::Session; 2], [usize; 2]) {
    use crate::scope::{Scope, ScopedStore};
    use yiciban_sync::proto::Message;
    use yiciban_sync::session::{Effect, NodeInfo, Output, Session};
    let stores = [a, b];
    let names = ["a", "b"];
    let mut sessions = [0, 1].map(|i| {
        Session::new(
            NodeInfo {
                node_id: names[i].into(),
                store_epoch: stores[i].epoch().unwrap(),
            },
            None,
        )
    });
    let mut inbox: [std::collections::VecDeque<Message>; 2] = Default::default();
    let mut wanted = [0usize; 2];
    for i in 0..2 {
        let view = ScopedStore {
            store: stores[i],
            scope: &Scope::All,
        };
        inbox[1 - i].extend(sessions[i].start(&view, 0).unwrap());
    }
    while let Some(i) = (0..2).find(|&i| !inbox[i].is_empty()) {
        let Some(msg) = inbox[i].pop_front() else {
            break;
        };
        let view = ScopedStore {
            store: stores[i],
            scope: &Scope::All,
        };
        let mut outs = vec![sessions[i].handle(&view, 0, msg).unwrap()];
        while let Some(Output { send, effects }) = outs.pop() {
            for m in send {
                if let Message::WantMany { wants } = &m {
                    wanted[i] += wants.len();
                }
                inbox[1 - i].push_back(m);
            }
            for effect in effects {
                if let Effect::Apply { doc_id, changes } = effect {
                    let merged = stores[i]
                        .apply_changes_many(
                            names[1 - i],
                            vec![(doc_id.clone(), changes)],
                            vec![],
                            None,
                            RunMode::Streamed,
                        )
                        .await;
                    assert!(merged.iter().all(Result::is_ok), "{merged:?}");
                    outs.push(sessions[i].applied_all(&view, [doc_id.as_str()]).unwrap());
                }
            }
        }
    }
    (sessions, wanted)
}

#[tokio::test]
async fn an_offer_of_heads_held_but_moved_past_settles_after_one_want() {
    use yiciban_sync::store::ReplicaStore;
    let here = tempfile::tempdir().unwrap();
    let there = tempfile::tempdir().unwrap();
    let (a, b) = (open(&here), open(&there));
    let case = put(&a, "c1", 1).await;
    b.apply_changes("c1", a.changes_after("c1", &[]).unwrap())
        .await
        .unwrap();
    // b moves past what a holds: a offers heads b holds but no longer lists.
    comment_as(&b, &case, "own", 5, "b").await;
    let a_heads = a.doc_heads("c1").unwrap().unwrap();
    assert!(!b.heads_cover("c1", &a_heads).unwrap());
    assert!(b.has_heads("c1", &a_heads).unwrap());
    let b_heads = b.doc_heads("c1").unwrap().unwrap();

    let (sessions, wanted) = sync_pair(&a, &b).await;
    // b wanted c1 once (the cheap check cannot tell); a took b's comment from the tip on
    // b's offer, with no want (a peer with no cursor is offered the feed from its start, tips
    // and all); the exact check after the merge settled b's entry, with nothing written.
    assert_eq!(wanted, [0, 1]);
    assert!(sessions.iter().all(|s| s.is_caught_up()));
    assert_eq!(b.doc_heads("c1").unwrap().unwrap(), b_heads);
    assert_eq!(a.doc_heads("c1").unwrap().unwrap(), b_heads);
    assert_eq!(a.case("c1").unwrap().unwrap().events.len(), 2);
}

/// New cases cross with their offer: each one's first change rides as a derived tip, and a
/// store holding nothing of them applies it without a want.
#[tokio::test]
async fn filed_cases_cross_as_their_first_change_with_no_want() {
    use yiciban_sync::store::ReplicaStore;
    let here = tempfile::tempdir().unwrap();
    let there = tempfile::tempdir().unwrap();
    let (a, b) = (open(&here), open(&there));
    put(&a, "c1", 1).await;
    put(&a, "c2", 2).await;
    let (sessions, wanted) = sync_pair(&a, &b).await;
    assert_eq!(wanted, [0, 0]);
    assert!(sessions.iter().all(|s| s.is_caught_up()));
    for id in ["c1", "c2"] {
        assert_eq!(b.doc_heads(id).unwrap(), a.doc_heads(id).unwrap());
        assert_eq!(b.case(id).unwrap().unwrap(), a.case(id).unwrap().unwrap());
    }
}

#[tokio::test]
async fn many_wants_are_answered_in_order_as_one_by_one_and_hidden_cases_are_left_out() {
    use crate::scope::{Scope, ScopedStore};
    use yiciban_sync::store::ReplicaStore;
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut ids = Vec::new();
    for n in 0..40u64 {
        // Every third case belongs to another village, hidden from this village's view.
        let case = put_with(&store, &format!("c{n:02}"), n, |c| {
            if n % 3 == 0 {
                c.division.village = "430181101002".into();
            }
        })
        .await;
        if n % 2 == 0 {
            comment_on(&store, &case).await;
        }
        ids.push(case.id);
    }
    ids.push("missing".into());
    let scope = Scope::Village("430181101001".into());
    let view = ScopedStore {
        store: &store,
        scope: &scope,
    };
    // Half the wants name the first heads of their case (a holder of those lacks the
    // comment, if any), half nothing.
    let first: Vec<Vec<[u8; 32]>> = ids
        .iter()
        .enumerate()
        .map(
            |(n, id)| match (n % 4, store.changes_after(id, &[]).unwrap().first()) {
                (0 | 1, Some(saved)) => {
                    let mut doc = AutoCommit::load(saved).unwrap();
                    let change = doc.get_changes(&[]).first().map(|c| c.hash().0);
                    change.into_iter().collect()
                }
                _ => Vec::new(),
            },
        )
        .collect();
    let wants: Vec<(&str, &[[u8; 32]])> = ids
        .iter()
        .zip(&first)
        .map(|(id, have)| (id.as_str(), have.as_slice()))
        .collect();
    let many = view.changes_after_many(&wants).unwrap();
    let one_by_one: Vec<Option<Vec<Vec<u8>>>> = wants
        .iter()
        .map(|&(id, have)| {
            view.doc_heads(id)
                .unwrap()
                .map(|_| view.changes_after(id, have).unwrap())
        })
        .collect();
    assert_eq!(many, one_by_one);
    assert_eq!(many.len(), ids.len());
    // The hidden and the missing are left out, every other case answered.
    for (n, answer) in many.iter().enumerate() {
        assert_eq!(answer.is_none(), n % 3 == 0 || n == 40, "want {n}");
    }
}

/// A sync run's shape at the county: many stored cases, one new comment each, merged as one
/// run. Also the harness for profiling a run's merges and commit (`perf record` over
/// `cargo test --release -p yiciban-core --lib a_run_of_merges`; docs/bench.md).
#[tokio::test]
async fn a_run_of_merges_lands_every_comment_and_moves_the_feed_once_per_case() {
    use yiciban_sync::store::ReplicaStore;
    const CASES: u64 = 100;
    let here = tempfile::tempdir().unwrap();
    let there = tempfile::tempdir().unwrap();
    let (village, county) = (open(&here), open(&there));
    let mut comments = Vec::new();
    let mut whole = Vec::new();
    for n in 0..CASES {
        let case = put_with(&village, &format!("c{n:03}"), n, |c| {
            // About the size of the benchmark's forms (~1 KB).
            for f in 0..12 {
                c.form
                    .insert(format!("field{f}"), format!("村民填写的内容 {n} {f} ……"));
            }
        })
        .await;
        whole.push((
            case.id.clone(),
            village.changes_after(&case.id, &[]).unwrap(),
        ));
        comments.push(case);
    }
    let merged = county
        .apply_changes_many("village", whole, vec![], None, RunMode::Whole)
        .await;
    assert!(merged.iter().all(Result::is_ok));
    let mut run = Vec::new();
    for case in &comments {
        let have = county.doc_heads(&case.id).unwrap().unwrap();
        comment_on(&village, case).await;
        run.push((
            case.id.clone(),
            village.changes_after(&case.id, &have).unwrap(),
        ));
    }
    let head = county.feed_head().unwrap();
    let merged = county
        .apply_changes_many("village", run, vec![], None, RunMode::Streamed)
        .await;
    for (case, got) in comments.iter().zip(&merged) {
        let got = got.as_ref().unwrap();
        assert_eq!((got.id.as_str(), got.events.len()), (case.id.as_str(), 2));
        assert_eq!(county.case(&case.id).unwrap().unwrap().events.len(), 2);
    }
    assert_eq!(county.feed_head().unwrap(), head + CASES);
}

#[tokio::test]
async fn a_local_events_change_is_answered_from_its_tip_until_another_write() {
    use yiciban_sync::store::ReplicaStore;
    let here = tempfile::tempdir().unwrap();
    let there = tempfile::tempdir().unwrap();
    let (a, b) = (open(&here), open(&there));
    let tip_row = |s: &Store| {
        let txn = s.db.begin_read().unwrap();
        let t = txn.open_table(DOC_TIPS).unwrap();
        t.get("c1").unwrap().map(|v| v.value().to_vec())
    };
    // What loading the document answers: the reference for every answer below.
    let loaded = |s: &Store, have: &[[u8; 32]]| {
        let mut doc = AutoCommit::load(&s.case_doc_bytes("c1").unwrap().unwrap()).unwrap();
        let have: Vec<automerge::ChangeHash> =
            have.iter().map(|h| automerge::ChangeHash(*h)).collect();
        doc.get_changes(&have)
            .into_iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect::<Vec<_>>()
    };
    let case = put(&a, "c1", 1).await;
    let filed = a.doc_heads("c1").unwrap().unwrap();
    let filed_bytes = a.case_doc_bytes("c1").unwrap().unwrap();
    // A filed case's one change is its tip, on no heads: offered with it, derived.
    let first = tip::decode(&tip_row(&a).expect("a filed case keeps its first change"))
        .unwrap()
        .change
        .to_vec();
    assert_eq!(a.tip("c1", &filed).unwrap(), Some((vec![], first.clone())));
    assert_eq!(a.change_id(&first), Some((filed[0], vec![])));
    assert_eq!(loaded(&a, &[]), vec![first.clone()]);
    comment_on(&a, &case).await;
    let row = tip_row(&a).expect("the comment's change is the tip");
    let tip = tip::decode(&row).unwrap();
    assert_eq!(tip.base, filed, "kept with the heads before it");
    let tip = tip.change.to_vec();
    assert_eq!(a.tip_after("c1", &filed).unwrap(), Some(tip.clone()));
    assert_eq!(a.changes_after("c1", &filed).unwrap(), vec![tip.clone()]);
    assert_eq!(loaded(&a, &filed), vec![tip.clone()]);
    // The pusher's view: offered with the current heads, the tip comes with its base; with
    // any other heads it does not.
    let now = a.doc_heads("c1").unwrap().unwrap();
    assert_eq!(
        a.tip("c1", &now).unwrap(),
        Some((filed.clone(), tip.clone()))
    );
    assert_eq!(a.tip("c1", &filed).unwrap(), None);
    assert_eq!(
        a.tip("c2", &now).unwrap(),
        None,
        "no tip for a case not held"
    );
    // A holder of the base gets exactly the offered heads from the tip alone.
    let other = tempfile::tempdir().unwrap();
    let c = open(&other);
    c.apply_changes("c1", vec![filed_bytes]).await.unwrap();
    assert_eq!(c.doc_heads("c1").unwrap().unwrap(), filed);
    c.apply_changes("c1", vec![tip.clone()]).await.unwrap();
    assert_eq!(c.doc_heads("c1").unwrap().unwrap(), now);
    // A holder of nothing, or of other heads, is answered from the document.
    assert_eq!(a.changes_after("c1", &[]).unwrap().len(), 1);
    assert_eq!(
        a.changes_after("c1", &[[9u8; 32]]).unwrap(),
        loaded(&a, &[[9u8; 32]])
    );
    // A damaged row is not trusted: the answer comes from the document.
    let txn = a.db.begin_write().unwrap();
    txn.open_table(DOC_TIPS)
        .unwrap()
        .insert("c1", b"not a change".as_slice())
        .unwrap();
    txn.commit().unwrap();
    assert_eq!(a.tip_after("c1", &filed).unwrap(), None);
    assert_eq!(
        a.tip("c1", &now).unwrap(),
        None,
        "a damaged row is not offered"
    );
    assert_eq!(a.changes_after("c1", &filed).unwrap(), loaded(&a, &filed));

    // Another write of the document (a peer's change merged) leaves the row, unused: its
    // change is no longer the one head.
    b.apply_changes("c1", a.changes_after("c1", &[]).unwrap())
        .await
        .unwrap();
    comment_as(&b, &case, "own", 5, "b").await;
    let b_heads = b.doc_heads("c1").unwrap().unwrap();
    a.apply_changes(
        "c1",
        b.changes_after("c1", &a.doc_heads("c1").unwrap().unwrap())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(a.doc_heads("c1").unwrap().unwrap(), b_heads);
    assert!(tip_row(&a).is_some(), "left for the idle sweep");
    assert_eq!(a.tip("c1", &b_heads).unwrap(), None, "no tip after a merge");
    assert_eq!(a.tip_after("c1", &filed).unwrap(), None);
    assert_eq!(a.changes_after("c1", &filed).unwrap(), loaded(&a, &filed));
    assert_eq!(loaded(&a, &filed).len(), 2);
    // a's next event depends on b's change and on a's own last one (Automerge lists both):
    // the tip is keyed by the heads before it, which is what b holds.
    comment_as(&a, &case, "again", 9, "v").await;
    let answer = a
        .tip_after("c1", &b_heads)
        .unwrap()
        .expect("answered from the tip");
    assert_eq!(loaded(&a, &b_heads), vec![answer]);
}

/// The idle sweep removes a tip a later write left behind with the document's old feed
/// entry, and keeps a tip that is still its document's one head.
#[tokio::test]
async fn the_idle_sweep_removes_tips_left_behind_and_keeps_current_ones() {
    use yiciban_sync::store::ReplicaStore;
    let here = tempfile::tempdir().unwrap();
    let there = tempfile::tempdir().unwrap();
    let (a, b) = (open(&here), open(&there));
    let tip_row = |s: &Store, id: &str| {
        let txn = s.db.begin_read().unwrap();
        let t = txn.open_table(DOC_TIPS).unwrap();
        t.get(id).unwrap().is_some()
    };
    let stale = |s: &Store| {
        let txn = s.db.begin_read().unwrap();
        txn.open_table(FEED_STALE).unwrap().len().unwrap()
    };
    let c1 = put(&a, "c1", 1).await;
    let c2 = put(&a, "c2", 2).await;
    let c2_filed = a.doc_heads("c2").unwrap().unwrap();
    comment_on(&a, &c1).await;
    comment_on(&a, &c2).await;
    // c1 moves on with a peer's change; c2's comment stays its one head.
    let held = a.doc_heads("c1").unwrap().unwrap();
    b.apply_changes("c1", a.changes_after("c1", &[]).unwrap())
        .await
        .unwrap();
    comment_as(&b, &c1, "peer", 5, "b").await;
    a.apply_changes("c1", b.changes_after("c1", &held).unwrap())
        .await
        .unwrap();
    assert!(tip_row(&a, "c1") && tip_row(&a, "c2"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while stale(&a) > 0 {
        assert!(std::time::Instant::now() < deadline, "never swept");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!tip_row(&a, "c1"), "left behind: swept");
    assert!(tip_row(&a, "c2"), "still the one head: kept");
    let c2_tip = a
        .tip_after("c2", &c2_filed)
        .unwrap()
        .expect("answered from the tip");
    assert_eq!(a.changes_after("c2", &c2_filed).unwrap(), vec![c2_tip]);
}

/// A run of `cases` new cases filed at `village` (village 430181101001), case `out` of them
/// in another village.
async fn run_with_one_out_of_scope(
    village: &Store,
    cases: u64,
    out: u64,
) -> Vec<(String, Vec<Vec<u8>>)> {
    use yiciban_sync::store::ReplicaStore;
    let mut run = Vec::new();
    for n in 0..cases {
        let case = put_with(village, &format!("c{n:02}"), n, |c| {
            if n == out {
                c.division.village = "430181101002".into();
            }
        })
        .await;
        run.push((
            case.id.clone(),
            village.changes_after(&case.id, &[]).unwrap(),
        ));
    }
    run
}

#[tokio::test]
async fn a_run_with_a_case_out_of_scope_stores_the_others_and_refuses_that_one() {
    use crate::scope::Scope;
    use yiciban_sync::store::ReplicaStore;
    let here = tempfile::tempdir().unwrap();
    let there = tempfile::tempdir().unwrap();
    let (village, county) = (open(&here), open(&there));
    let run = run_with_one_out_of_scope(&village, 12, 7).await;
    // The scope is checked by the writer, inside the run's group: the group fails, and each
    // request is retried alone.
    let scopes = vec![Scope::Village("430181101001".into())];
    let merged = county
        .apply_changes_many("village", run, scopes, None, RunMode::Whole)
        .await;
    for (n, got) in merged.iter().enumerate() {
        assert_eq!(got.is_err(), n == 7, "case {n}: {got:?}");
    }
    assert!(matches!(merged[7], Err(StoreError::Rejected(_))));
    assert_eq!(county.case_count().unwrap(), 11);
    assert_eq!(county.case("c07").unwrap(), None);
    assert_eq!(county.feed_head().unwrap(), 11);
    assert_eq!(
        county.verify_audit().unwrap().unwrap().count,
        11,
        "one entry a stored case"
    );
}

/// Writes sent while a run's merges are still arriving are all kept, whether they joined the
/// run's transaction or came after it; when a case of the run is refused, every request of
/// its group is retried alone and only the refused one fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_sent_during_a_run_are_kept_and_a_refused_case_fails_alone() {
    use crate::scope::Scope;
    use yiciban_sync::store::ReplicaStore;
    let here = tempfile::tempdir().unwrap();
    let there = tempfile::tempdir().unwrap();
    let (village, county) = (open(&here), open(&there));
    let run = run_with_one_out_of_scope(&village, 40, 29).await;
    let scopes = vec![Scope::Village("430181101001".into())];
    let (merged, local) = tokio::join!(
        county.apply_changes_many("village", run, scopes, None, RunMode::Streamed),
        async {
            let mut filed = Vec::new();
            for n in 0..5u64 {
                filed.push(put(&county, &format!("k{n}"), 100 + n).await);
            }
            filed
        }
    );
    for (n, got) in merged.iter().enumerate() {
        assert_eq!(got.is_err(), n == 29, "case {n}: {got:?}");
    }
    assert_eq!(local.len(), 5);
    assert_eq!(county.case_count().unwrap(), 39 + 5);
    assert_eq!(county.feed_head().unwrap(), 39 + 5);
    assert_eq!(county.verify_audit().unwrap().unwrap().count, 39 + 5);
}

/// A write that moves a document up the feed lists its old entries in `feed_stale-1`
/// instead of removing them; readers skip them, and the writer sweeps them when idle, also
/// after a restart that left them behind. A case's bytes at an old position in `case_log-1`
/// go with its old feed entry.
#[tokio::test]
async fn old_feed_entries_are_skipped_by_readers_and_swept_when_the_writer_is_idle() {
    use crate::scope::Scope;
    use yiciban_sync::store::ReplicaStore;
    let dir = tempfile::tempdir().unwrap();
    let village = "430181101001";
    let scope = Scope::Village(village.into());
    let raw = |s: &Store| {
        let txn = s.db.begin_read().unwrap();
        let keys = |t: redb::ReadOnlyTable<u64, &str>| -> Vec<u64> {
            t.iter().unwrap().map(|r| r.unwrap().0.value()).collect()
        };
        let feed = keys(txn.open_table(FEED).unwrap());
        let scoped = txn.open_table(FEED_SCOPED).unwrap().len().unwrap();
        let stale = txn.open_table(FEED_STALE).unwrap().len().unwrap();
        let log: Vec<u64> = txn
            .open_table(CASE_LOG)
            .unwrap()
            .iter()
            .unwrap()
            .map(|r| r.unwrap().0.value())
            .collect();
        assert_eq!(feed, log, "a case's bytes at each of its feed entries");
        (feed, scoped, stale)
    };
    let live = |s: &Store, limit| -> Vec<(u64, String)> {
        let all = s.feed_since(0, limit).unwrap();
        let scoped = s.scope_feed_since(&scope, 0, limit).unwrap();
        let seqs = |v: Vec<yiciban_sync::store::FeedEntry>| {
            v.into_iter().map(|e| (e.seq, e.doc_id)).collect::<Vec<_>>()
        };
        let all = seqs(all);
        assert_eq!(all, seqs(scoped), "the village's feed holds the same cases");
        all
    };
    let expect = |ids: &[(u64, &str)]| -> Vec<(u64, String)> {
        ids.iter().map(|(n, id)| (*n, id.to_string())).collect()
    };
    {
        let store = open(&dir);
        let c1 = put(&store, "c1", 1).await;
        let c2 = put(&store, "c2", 2).await;
        put(&store, "c3", 3).await;
        comment_on(&store, &c1).await;
        comment_on(&store, &c2).await;
        // Two old entries, each in the feed and the village's and the town's feeds.
        assert_eq!(raw(&store), (vec![1, 2, 3, 4, 5], 10, 6));
        assert_eq!(
            live(&store, 100),
            expect(&[(3, "c3"), (4, "c1"), (5, "c2")])
        );
        // A limit counts the entries given, not the ones skipped.
        assert_eq!(live(&store, 2), expect(&[(3, "c3"), (4, "c1")]));
        assert_eq!(store.feed_head().unwrap(), 5);
    }
    // Closed before its idle sweep: the list survives the restart and is swept then.
    let store = reopen(&dir);
    assert_eq!(raw(&store).2, 6);
    assert_eq!(
        live(&store, 100),
        expect(&[(3, "c3"), (4, "c1"), (5, "c2")])
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while raw(&store).2 > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "never swept: {:?}",
            raw(&store)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(raw(&store), (vec![3, 4, 5], 6, 0));
    assert_eq!(
        live(&store, 100),
        expect(&[(3, "c3"), (4, "c1"), (5, "c2")])
    );
    // Each case reads at its live position.
    for id in ["c1", "c2", "c3"] {
        assert_eq!(store.case(id).unwrap().unwrap().id, id);
    }
    assert_eq!(store.case("c1").unwrap().unwrap().events.len(), 2);
    // New entries still go above every old one.
    put(&store, "c4", 4).await;
    assert_eq!(live(&store, 100).last(), Some(&(6, "c4".to_string())));
}

#[tokio::test]
async fn the_acknowledged_position_is_saved_with_the_cursor_and_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    assert_eq!(store.acked("county").unwrap(), None);
    let record = AckedRecord {
        own_epoch: 7,
        peer_epoch: 9,
        seq: 42,
        scope: format!("v{SEP}430181101001{SEP}"),
    };
    store
        .save_link("county", Some((9, 5)), Some(record.clone()))
        .await
        .unwrap();
    assert_eq!(store.acked("county").unwrap(), Some(record.clone()));
    assert_eq!(store.cursor("county").unwrap(), Some((9, 5)));
    // A cursor alone leaves the acknowledgement as it was.
    store.save_link("county", Some((9, 6)), None).await.unwrap();
    assert_eq!(store.acked("county").unwrap(), Some(record));
    assert_eq!(store.cursor("county").unwrap(), Some((9, 6)));
    store.forget_acked("county").await.unwrap();
    assert_eq!(store.acked("county").unwrap(), None);
    assert_eq!(store.cursor("county").unwrap(), Some((9, 6)));
}

proptest::proptest! {
    /// A damaged row is refused, never a panic or an allocation beyond it; a whole one
    /// reads back as written.
    #[test]
    fn acknowledged_rows_decode_bounded(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
        own in proptest::prelude::any::<u64>(),
        seq in proptest::prelude::any::<u64>(),
        scope in "[a-z0-9\u{1f}]{0,40}",
    ) {
        if let Some(r) = AckedRecord::decode(&bytes) {
            proptest::prop_assert!(bytes.len() >= 24 && r.scope.len() <= AckedRecord::MAX_SCOPE);
        }
        let r = AckedRecord { own_epoch: own, peer_epoch: !own, seq, scope };
        proptest::prop_assert_eq!(AckedRecord::decode(&r.encode()), Some(r));
    }
}
