//! Failure behaviour at the store level: a held store, a full disk, a read-only handle, readers
//! beside the writer, PostgreSQL going down and coming back, and redaction of passwords.

mod common;

use common::*;
use connhealth_core::diff::{Change, ChangeKind};
use connhealth_core::watch::WatchState;
use connhealth_core::Status;
use connhealth_store::*;

fn big_poll(n: usize, minute: i64, prev: &WatchState) -> (PollRecord, WatchState) {
    let mut next = prev.clone();
    let mut changes = Vec::new();
    for i in 0..n {
        let c = conn(
            "channel3",
            &format!("m{minute}-{i}"),
            "shopify",
            Status::Degraded,
            at(minute),
        );
        changes.push(Change::about(
            &c,
            ChangeKind::Appeared { status: c.status },
            at(minute),
            None,
        ));
        next.connections
            .insert(c.id.clone(), tracked(c, at(minute)));
    }
    (
        PollRecord::between(at(minute), prev, &next, vec![], changes, Source::Poll),
        next,
    )
}

#[tokio::test]
async fn a_second_holder_of_an_sqlite_store_fails_in_one_line() {
    let f = sqlite().await;
    let err = open(&f.url, OpenOptions::default()).await.unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "{msg}");
    assert!(msg.contains("in use by another process"), "{msg}");
    // A read-only handle may sit beside the writer.
    let ro = open(
        &f.url,
        OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(ro.load_state().await.unwrap().connections.is_empty());
    // Once the holder is gone the store opens.
    let mut f = f;
    f.reopen().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_typed_error_and_writing_resumes_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.db");
    let store = SqliteStore::open(&path, &OpenOptions::default())
        .await
        .unwrap();
    let (rec, s1) = big_poll(50, 0, &WatchState::default());
    store.commit_poll(rec).await.unwrap();
    let before = store.load_state().await.unwrap();
    let events_before = store.events_after(0, 1000).await.unwrap().items.len();

    let (pages, _) = store.page_stats().await.unwrap();
    let cap = store.set_max_page_count(pages + 2).await.unwrap();
    assert!(cap >= pages);
    let (rec, s2) = big_poll(2_000, 5, &s1);
    let err = store.commit_poll(rec.clone()).await.unwrap_err();
    assert!(matches!(err, StoreError::Full { .. }), "{err:?}");
    assert!(err.is_transient());
    assert_eq!(err.code(), "store_full");
    // Still readable, nothing half-written.
    assert_eq!(store.load_state().await.unwrap(), before);
    assert_eq!(
        store.events_after(0, 10_000).await.unwrap().items.len(),
        events_before
    );
    // Space returns: the same poll commits whole.
    store.set_max_page_count(1 << 30).await.unwrap();
    let ids = store.commit_poll(rec).await.unwrap();
    assert_eq!(ids.len(), 2_000);
    assert_eq!(store.load_state().await.unwrap(), s2);
    store.integrity_check().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_handle_reads_and_refuses_writes() {
    let mut f = sqlite().await;
    let (rec, s1) = big_poll(3, 0, &WatchState::default());
    f.store().commit_poll(rec).await.unwrap();
    f.store = None;
    let ro = open(
        &f.url,
        OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(ro.load_state().await.unwrap(), s1);
    assert_eq!(ro.events_after(0, 10).await.unwrap().items.len(), 3);
    let (rec, _) = big_poll(3, 5, &s1);
    let err = ro.commit_poll(rec).await.unwrap_err();
    assert!(matches!(err, StoreError::ReadOnly { .. }), "{err:?}");
    assert!(err.is_transient());
    let err = ro
        .append_audit(AuditRecord {
            at: at(0),
            actor: "admin".into(),
            action: "refresh".into(),
            connection_id: "x".into(),
            ok: true,
            outcome: "".into(),
            message: "".into(),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ReadOnly { .. }), "{err:?}");
    assert_eq!(ro.load_state().await.unwrap(), s1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_do_not_block_the_writer() {
    let f = sqlite().await;
    let (rec, s1) = big_poll(10, 0, &WatchState::default());
    f.store().commit_poll(rec).await.unwrap();
    let Kind::Sqlite(path) = &f.kind else {
        unreachable!()
    };
    // A reader holding an open read transaction for the whole write.
    let reader = rusqlite::Connection::open(path).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let n: i64 = reader
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 10);
    // And store readers running all along.
    let s = f.store();
    let readers = tokio::spawn(async move {
        for _ in 0..50 {
            s.connections(&ConnectionFilter::default(), None, 100)
                .await
                .unwrap();
        }
    });
    let (rec, _) = big_poll(500, 5, &s1);
    let ids = f.store().commit_poll(rec).await.unwrap();
    assert_eq!(ids.len(), 500);
    // The old snapshot is still what the open reader sees; the store sees the new one.
    let n: i64 = reader
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 10);
    reader.execute_batch("COMMIT").unwrap();
    assert_eq!(
        f.store().events_after(0, 1000).await.unwrap().items.len(),
        510
    );
    readers.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_is_a_typed_error_and_writes_resume_after_restart() {
    if skip_postgres() {
        return;
    }
    let cluster = Cluster::start();
    let db = cluster.create_db();
    let store = open(&cluster.url(&db), OpenOptions::default())
        .await
        .unwrap();
    let (rec, s1) = big_poll(5, 0, &WatchState::default());
    store.commit_poll(rec).await.unwrap();

    cluster.pg_ctl_stop();
    let (rec, s2) = big_poll(5, 5, &s1);
    let err = store.commit_poll(rec.clone()).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(err.is_transient());
    let err = store.load_state().await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");

    cluster.pg_ctl_start();
    let ids = store.commit_poll(rec).await.unwrap();
    assert_eq!(ids.len(), 5);
    assert_eq!(store.load_state().await.unwrap(), s2);
    assert_eq!(store.events_after(0, 100).await.unwrap().items.len(), 10);
}

#[tokio::test]
async fn a_password_in_the_url_never_shows() {
    // Nothing listens on port 1: the connection fails.
    let url = StoreUrl::parse("postgres://ch:hunter2-secret@127.0.0.1:1/connhealth").unwrap();
    let err = open(&url, OpenOptions::default()).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    for shown in [
        err.to_string(),
        format!("{err:?}"),
        format!("{url:?}"),
        url.to_string(),
    ] {
        assert!(!shown.contains("hunter2"), "{shown}");
    }
    assert!(err.to_string().contains("127.0.0.1:1/connhealth"), "{err}");
    // Also a password given apart.
    let opts = OpenOptions {
        password: Some(connhealth_core::Secret::new("pw-from-env")),
        read_only: false,
    };
    assert!(!format!("{opts:?}").contains("pw-from-env"));
    let err = open(&url, opts).await.unwrap_err();
    assert!(!format!("{err} {err:?}").contains("pw-from-env"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passwords_come_from_the_url_or_the_options_and_never_show() {
    if skip_postgres() {
        return;
    }
    // The clusters check passwords on TCP (scram-sha-256): every suite test already opens with
    // the password inside its URL. Here: the wrong one, one given apart, and none.
    let c = shared_cluster();
    let db = c.create_db();
    let wrong = StoreUrl::parse(&format!(
        "postgres://postgres:wrong-hunter2@127.0.0.1:{}/{db}",
        c.port
    ))
    .unwrap();
    let err = open(&wrong, OpenOptions::default()).await.unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(
        shown.contains("28P01") || shown.to_lowercase().contains("password"),
        "{shown}"
    );
    let bare = StoreUrl::parse(&format!("postgres://postgres@127.0.0.1:{}/{db}", c.port)).unwrap();
    let opts = OpenOptions {
        password: Some(connhealth_core::Secret::new(PG_PASSWORD)),
        read_only: false,
    };
    let store = open(&bare, opts).await.unwrap();
    assert!(!format!("{store:?}").contains(PG_PASSWORD));
    store.integrity_check().await.unwrap();
    // The option wins over a (wrong) password inside the URL.
    let opts = OpenOptions {
        password: Some(connhealth_core::Secret::new(PG_PASSWORD)),
        read_only: false,
    };
    open(&wrong, opts).await.unwrap();
}
