//! The store's behaviour suite, run against BOTH backends: a real SQLite file and a real
//! PostgreSQL database on a cluster the tests start themselves.

mod common;

use chrono::Duration;
use common::*;
use connhealth_core::diff::{Change, ChangeKind};
use connhealth_core::watch::{Tracked, WatchState};
use connhealth_core::Status;
use connhealth_store::*;

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let f = crate::common::sqlite().await;
                    super::$name(f).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(f) = crate::common::postgres().await else { return };
                    super::$name(f).await;
                }
            )*
        }
    };
}

suite!(
    restart_keeps_state_since_and_providers,
    events_have_increasing_ids_and_the_watch_shape,
    history_is_newest_first_and_pages,
    connections_worst_first_filters_cursor_total,
    connections_grouped_by_customer_timelines_and_last_webhooks,
    uptime_from_hourly_rollups,
    a_failure_mid_poll_leaves_nothing_half_written,
    a_newer_schema_is_refused,
    webhook_dedupe_and_queued_work,
    webhook_seen_and_overview,
    webhook_group_commit_is_one_transaction,
    outbox_rows_are_written_with_their_events,
    update_deliveries_is_one_transaction,
    audit_log_pages_newest_first,
    a_version_2_store_gains_the_audit_message,
    leader_lease,
    a_fenced_commit_needs_the_lease,
    a_relayed_items_result_is_read_once,
    mutes_and_disabled_sinks_are_durable,
    prune_keeps_what_retention_says,
    integrity_check_passes,
    a_poll_larger_than_a_write_chunk_commits_whole_and_in_order,
    grouped_pages_follow_the_inputs_through_changes_moves_and_filters,
);

/// The `appeared` event of each, at minute 0.
fn appeared<'a>(items: impl IntoIterator<Item = &'a Tracked>) -> Vec<Change> {
    items
        .into_iter()
        .map(|t| {
            Change::about(
                &t.connection,
                ChangeKind::Appeared {
                    status: t.connection.status,
                },
                at(0),
                None,
            )
        })
        .collect()
}

/// A first poll of three connections, the second of which turned degraded later.
fn first_poll() -> (PollRecord, WatchState) {
    let a = tracked(
        conn("channel3", "m1", "shopify", Status::Healthy, at(0)),
        at(0),
    );
    let b = tracked(
        conn("channel3", "m2", "amazon", Status::ActionRequired, at(0)),
        at(0),
    );
    let c = tracked(
        conn("violet", "7", "shopify", Status::Healthy, at(0)),
        at(0),
    );
    let next = state_of(&[a.clone(), b.clone(), c.clone()]);
    let mut next_with_p = next.clone();
    next_with_p
        .providers
        .insert("channel3".into(), provider_state(true, at(0)));
    next_with_p
        .providers
        .insert("violet".into(), provider_state(true, at(0)));
    let changes = appeared([&a, &b, &c]);
    (
        PollRecord::between(
            at(0),
            &WatchState::default(),
            &next_with_p,
            vec![],
            changes,
            Source::Poll,
        ),
        next_with_p,
    )
}

async fn restart_keeps_state_since_and_providers(mut f: Fixture) {
    let (rec, mut state) = first_poll();
    f.store().commit_poll(rec).await.unwrap();
    // A later poll: m2 recovers at +10 min (its since moves), the others only get observed again.
    let mut next = state.clone();
    for t in next.connections.values_mut() {
        std::sync::Arc::make_mut(&mut t.connection).observed_at = at(10).into();
    }
    let m2 = next.connections.get_mut("channel3:m2:amazon").unwrap();
    m2.connection = conn("channel3", "m2", "amazon", Status::Healthy, at(10)).into();
    m2.since = at(10);
    let ch = Change::about(
        &m2.connection,
        ChangeKind::StatusChanged {
            from: Status::ActionRequired,
            to: Status::Healthy,
        },
        at(10),
        Some(at(0)),
    );
    let rec = PollRecord::between(at(10), &state, &next, vec![], vec![ch], Source::Poll);
    assert_eq!(
        rec.upserts.len(),
        1,
        "only the materially changed connection is written"
    );
    f.store().commit_poll(rec).await.unwrap();
    state = next;

    f.reopen().await;
    let loaded = f.store().load_state().await.unwrap();
    assert_eq!(loaded.providers, state.providers);
    assert_eq!(loaded.connections.len(), 3);
    assert_eq!(
        loaded.connections["channel3:m2:amazon"],
        state.connections["channel3:m2:amazon"]
    );
    assert_eq!(loaded.connections["channel3:m1:shopify"].since, at(0));
    assert_eq!(
        loaded.connections["channel3:m1:shopify"].connection.status,
        Status::Healthy
    );
    let page = f
        .store()
        .connections(&ConnectionFilter::default(), None, 10)
        .await
        .unwrap();
    let m2 = page
        .items
        .iter()
        .find(|i| i.connection.id == "channel3:m2:amazon")
        .unwrap();
    assert_eq!(m2.since, at(10));
}

async fn events_have_increasing_ids_and_the_watch_shape(f: Fixture) {
    let (rec, _) = first_poll();
    let changes: Vec<Change> = rec.events.iter().map(|e| e.change.clone()).collect();
    let ids = f.store().commit_poll(rec).await.unwrap();
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let mut more = PollRecord {
        at: at(5),
        ..PollRecord::default()
    };
    more.events.push(NewEvent::new(
        Change::provider("violet", ChangeKind::ProviderRecovered, at(5), Some(at(1))),
        Source::Refresh,
    ));
    let ids2 = f.store().commit_poll(more).await.unwrap();
    assert!(ids2[0] > ids[2]);

    let page = f.store().events_after(0, 2).await.unwrap();
    assert_eq!(
        page.items.iter().map(|e| e.id).collect::<Vec<_>>(),
        ids[..2].to_vec()
    );
    assert_eq!(page.next, Some(ids[1]));
    let rest = f
        .store()
        .events_after(page.next.unwrap(), 10)
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 2);
    assert_eq!(rest.items[1].source, Source::Refresh);
    let end = f.store().events_after(ids2[0], 10).await.unwrap();
    assert!(end.items.is_empty());
    assert_eq!(end.next, Some(ids2[0]));

    // Exactly what `watch` prints today (the change's JSON) plus `id` and `source`.
    let first = &page.items[0];
    let mut expected = serde_json::to_value(&changes[0]).unwrap();
    expected["id"] = ids[0].into();
    expected["source"] = "poll".into();
    assert_eq!(serde_json::to_value(first).unwrap(), expected);
    let text = serde_json::to_string(first).unwrap();
    assert!(
        text.starts_with(&format!(
            "{{\"id\":{},\"event\":\"appeared\",\"source\":\"poll\"",
            ids[0]
        )),
        "{text}"
    );
    let back: StoredEvent = serde_json::from_str(&text).unwrap();
    assert_eq!(&back, first);
}

async fn history_is_newest_first_and_pages(f: Fixture) {
    let (rec, _) = first_poll();
    f.store().commit_poll(rec).await.unwrap();
    let c = conn("channel3", "m1", "shopify", Status::Degraded, at(0));
    for i in 1..=5 {
        let (from, to) = if i % 2 == 1 {
            (Status::Healthy, Status::Degraded)
        } else {
            (Status::Degraded, Status::Healthy)
        };
        let mut r = PollRecord {
            at: at(i),
            ..PollRecord::default()
        };
        r.events.push(NewEvent::new(
            Change::about(
                &c,
                ChangeKind::StatusChanged { from, to },
                at(i),
                Some(at(i - 1)),
            ),
            Source::Poll,
        ));
        f.store().commit_poll(r).await.unwrap();
    }
    let h = f
        .store()
        .history("channel3:m1:shopify", None, 4)
        .await
        .unwrap();
    assert_eq!(h.items.len(), 4);
    assert!(h.items.windows(2).all(|w| w[0].id > w[1].id));
    assert_eq!(h.items[0].change.at, at(5));
    let next = h.next.expect("more");
    let h2 = f
        .store()
        .history("channel3:m1:shopify", Some(next), 4)
        .await
        .unwrap();
    assert_eq!(
        h2.items.len(),
        2,
        "4 status changes + 1 appeared = 6 in all"
    );
    assert_eq!(
        h2.items[1].change.kind,
        ChangeKind::Appeared {
            status: Status::Healthy
        }
    );
    assert_eq!(h2.next, None);
    assert!(f
        .store()
        .history("nope", None, 10)
        .await
        .unwrap()
        .items
        .is_empty());
}

async fn connections_worst_first_filters_cursor_total(f: Fixture) {
    let mut items = Vec::new();
    let statuses = [
        Status::Healthy,
        Status::Degraded,
        Status::ActionRequired,
        Status::Unknown,
        Status::Pending,
    ];
    for i in 0..25 {
        let p = if i % 2 == 0 { "channel3" } else { "subtotal" };
        let s = statuses[i % statuses.len()];
        items.push(tracked(
            conn(
                p,
                &format!("c{:02}", i % 7),
                &format!("plat{i:02}"),
                s,
                at(0),
            ),
            at(0),
        ));
    }
    let next = state_of(&items);
    f.store()
        .commit_poll(PollRecord::between(
            at(0),
            &WatchState::default(),
            &next,
            vec![],
            vec![],
            Source::Poll,
        ))
        .await
        .unwrap();
    // Every page, worst first then id, no duplicate, no gap.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = f
            .store()
            .connections(&ConnectionFilter::default(), cursor.as_deref(), 7)
            .await
            .unwrap();
        assert_eq!(page.total, 25);
        seen.extend(
            page.items
                .iter()
                .map(|i| (i.connection.status.severity(), i.connection.id.clone())),
        );
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let mut expected: Vec<(u8, String)> = items
        .iter()
        .map(|t| (t.connection.status.severity(), t.connection.id.clone()))
        .collect();
    expected.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    assert_eq!(seen, expected);

    let filter = ConnectionFilter {
        status: vec![Status::Degraded, Status::ActionRequired],
        provider: vec!["channel3".into()],
        ..Default::default()
    };
    let page = f.store().connections(&filter, None, 100).await.unwrap();
    let want = items
        .iter()
        .filter(|t| {
            t.connection.provider == "channel3"
                && matches!(
                    t.connection.status,
                    Status::Degraded | Status::ActionRequired
                )
        })
        .count();
    assert_eq!(page.total as usize, want);
    assert_eq!(page.items.len(), want);
    assert!(page
        .items
        .iter()
        .all(|i| i.connection.provider == "channel3"));

    // q: case-insensitive substring of the id, the customer's id or name, platform, problem codes.
    let q = |s: &str| ConnectionFilter {
        q: Some(s.into()),
        ..Default::default()
    };
    assert_eq!(
        f.store()
            .connections(&q("PLAT07"), None, 100)
            .await
            .unwrap()
            .total,
        1
    );
    assert_eq!(
        f.store()
            .connections(&q("customer c03"), None, 100)
            .await
            .unwrap()
            .total,
        items
            .iter()
            .filter(|t| t.connection.customer.id == "c03")
            .count() as u64
    );
    assert_eq!(
        f.store()
            .connections(&q("action_required_problem"), None, 100)
            .await
            .unwrap()
            .total,
        5
    );
    assert_eq!(
        f.store()
            .connections(&q("%"), None, 100)
            .await
            .unwrap()
            .total,
        0,
        "LIKE wildcards are escaped"
    );
    let by_customer = ConnectionFilter {
        customer: vec!["subtotal:c01".into()],
        ..Default::default()
    };
    let page = f
        .store()
        .connections(&by_customer, None, 100)
        .await
        .unwrap();
    assert!(
        page.total > 0
            && page
                .items
                .iter()
                .all(|i| i.connection.provider == "subtotal" && i.connection.customer.id == "c01")
    );

    let bad = f
        .store()
        .connections(&ConnectionFilter::default(), Some("garbage"), 10)
        .await
        .unwrap_err();
    assert!(matches!(bad, StoreError::Invalid(_)), "{bad}");
}

async fn uptime_from_hourly_rollups(f: Fixture) {
    let s = f.store();
    // 10:00 both appear healthy; 10:30 a goes degraded; 11:00 a unknown; 11:15 a healthy again.
    // b stays healthy, but violet (b's provider) is unavailable 12:00–12:30.
    let a0 = tracked(
        conn("channel3", "m1", "shopify", Status::Healthy, at(0)),
        at(0),
    );
    let b0 = tracked(
        conn("violet", "7", "shopify", Status::Healthy, at(0)),
        at(0),
    );
    let s0 = state_of(&[a0.clone(), b0.clone()]);
    s.commit_poll(PollRecord::between(
        at(0),
        &WatchState::default(),
        &s0,
        vec![],
        vec![],
        Source::Poll,
    ))
    .await
    .unwrap();
    let step = |prev: &WatchState, status: Status, m: i64| {
        let mut next = prev.clone();
        let t = next.connections.get_mut("channel3:m1:shopify").unwrap();
        t.connection = conn("channel3", "m1", "shopify", status, at(m)).into();
        t.since = at(m);
        (
            PollRecord::between(at(m), prev, &next, vec![], vec![], Source::Poll),
            next,
        )
    };
    let (r, s1) = step(&s0, Status::Degraded, 30);
    s.commit_poll(r).await.unwrap();
    let (r, s2) = step(&s1, Status::Unknown, 60);
    s.commit_poll(r).await.unwrap();
    let (r, s3) = step(&s2, Status::Healthy, 75);
    s.commit_poll(r).await.unwrap();
    let mut s4 = s3.clone();
    s4.providers
        .insert("violet".into(), provider_state(false, at(120)));
    s.commit_poll(PollRecord::between(
        at(120),
        &s3,
        &s4,
        vec![],
        vec![],
        Source::Poll,
    ))
    .await
    .unwrap();
    let mut s5 = s4.clone();
    s5.providers
        .insert("violet".into(), provider_state(true, at(150)));
    s.commit_poll(PollRecord::between(
        at(150),
        &s4,
        &s5,
        vec![],
        vec![],
        Source::Poll,
    ))
    .await
    .unwrap();
    // A poll at 14:05 rolls up 10:00–14:00.
    s.commit_poll(PollRecord {
        at: at(245),
        ..PollRecord::default()
    })
    .await
    .unwrap();

    let q = |by| UptimeQuery {
        window: Window::Day,
        by,
        provider: vec![],
        customer: vec![],
    };
    let r = s.uptime(&q(GroupBy::Provider)).await.unwrap();
    assert_eq!(r.to, at(240));
    assert_eq!(r.from, at(240) - Duration::hours(24));
    assert_eq!(r.items.len(), 2);
    let c3 = &r.items[0];
    assert_eq!(c3.key, "channel3");
    assert_eq!(
        (c3.good_seconds, c3.bad_seconds, c3.unknown_seconds),
        (195 * 60, 30 * 60, 15 * 60)
    );
    assert_eq!(c3.incidents, 1);
    assert_eq!(
        c3.mttr_seconds,
        Some(45.0 * 60.0),
        "degraded 10:30 → (unknown) → healthy 11:15"
    );
    assert_eq!(c3.uptime, Some(195.0 / 225.0));
    let v = &r.items[1];
    assert_eq!(v.key, "violet");
    assert_eq!(
        (v.good_seconds, v.bad_seconds, v.unknown_seconds),
        (210 * 60, 0, 30 * 60)
    );
    assert_eq!(
        (v.incidents, v.mttr_seconds, v.uptime),
        (0, None, Some(1.0))
    );

    let by_conn = s.uptime(&q(GroupBy::Connection)).await.unwrap();
    let a = by_conn
        .items
        .iter()
        .find(|i| i.key == "channel3:m1:shopify")
        .unwrap();
    assert_eq!(
        (
            a.good_seconds,
            a.bad_seconds,
            a.unknown_seconds,
            a.incidents
        ),
        (195 * 60, 30 * 60, 15 * 60, 1)
    );
    let by_customer = s.uptime(&q(GroupBy::Customer)).await.unwrap();
    let keys: Vec<&str> = by_customer.items.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["channel3:m1", "violet:7"]);
    assert_eq!(by_customer.items[1].unknown_seconds, 30 * 60);
    assert_eq!(by_customer.items[1].good_seconds, 210 * 60);
    let only = s
        .uptime(&UptimeQuery {
            window: Window::Week,
            by: GroupBy::Provider,
            provider: vec!["violet".into()],
            customer: vec![],
        })
        .await
        .unwrap();
    assert_eq!(only.items.len(), 1);
    assert_eq!(only.items[0].key, "violet");
    let filtered = s
        .uptime(&UptimeQuery {
            window: Window::Day,
            by: GroupBy::Provider,
            provider: vec![],
            customer: vec!["channel3:m1".into()],
        })
        .await
        .unwrap();
    assert_eq!(filtered.items.len(), 1);
    assert_eq!(filtered.items[0].bad_seconds, 30 * 60);
}

async fn a_failure_mid_poll_leaves_nothing_half_written(f: Fixture) {
    let (rec, _) = first_poll();
    f.store().commit_poll(rec).await.unwrap();
    // A trigger makes the events insert fail: the connections, outcomes and providers of that
    // poll were written before it in the same transaction.
    match &f.kind {
        Kind::Sqlite(_) => f.raw(
            "CREATE TRIGGER boom BEFORE INSERT ON events WHEN NEW.event = 'problem_cleared' \
             BEGIN SELECT RAISE(ABORT, 'boom'); END;",
        ),
        Kind::Postgres { .. } => f.raw(
            "CREATE FUNCTION boom() RETURNS trigger AS $$ BEGIN \
             IF NEW.event = 'problem_cleared' THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; END $$ \
             LANGUAGE plpgsql; \
             CREATE TRIGGER boom BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION boom();",
        ),
    }
    let before_state = f.store().load_state().await.unwrap();
    let before_events = f.store().events_after(0, 100).await.unwrap().items;
    let mut next = before_state.clone();
    let t = next.connections.get_mut("channel3:m2:amazon").unwrap();
    t.connection = conn("channel3", "m2", "amazon", Status::Healthy, at(20)).into();
    t.since = at(20);
    let c = t.connection.clone();
    next.providers
        .insert("subtotal".into(), provider_state(false, at(20)));
    let changes = vec![
        Change::about(
            &c,
            ChangeKind::StatusChanged {
                from: Status::ActionRequired,
                to: Status::Healthy,
            },
            at(20),
            Some(at(0)),
        ),
        Change::about(
            &c,
            ChangeKind::ProblemCleared {
                code: "action_required_problem".into(),
            },
            at(20),
            Some(at(0)),
        ),
    ];
    let mut rec = PollRecord::between(at(20), &before_state, &next, vec![], changes, Source::Poll);
    assert!(rec.events.set_notify(0, vec!["ops".into()]));
    let err = f.store().commit_poll(rec.clone()).await.unwrap_err();
    assert!(err.to_string().contains("boom"), "{err}");
    assert_eq!(f.store().load_state().await.unwrap(), before_state);
    assert_eq!(
        f.store().events_after(0, 100).await.unwrap().items,
        before_events
    );
    assert!(f
        .store()
        .deliveries(None, None, 10)
        .await
        .unwrap()
        .is_empty());
    // Once the cause is gone the same poll commits whole.
    match &f.kind {
        Kind::Sqlite(_) => f.raw("DROP TRIGGER boom"),
        Kind::Postgres { .. } => f.raw("DROP TRIGGER boom ON events"),
    }
    let ids = f.store().commit_poll(rec).await.unwrap();
    assert_eq!(ids.len(), 2);
    assert_eq!(f.store().load_state().await.unwrap(), next);
    assert_eq!(
        f.store()
            .deliveries(Some("ops"), None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn a_newer_schema_is_refused(mut f: Fixture) {
    f.raw("UPDATE meta SET value = '99' WHERE key = 'schema_version'");
    f.store = None;
    let err = open(&f.url, OpenOptions::default()).await.unwrap_err();
    assert!(
        matches!(err, StoreError::TooNew { found: 99, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("schema version 99") && msg.contains("upgrade connhealth"),
        "{msg}"
    );
}

async fn webhook_dedupe_and_queued_work(f: Fixture) {
    let s = f.store();
    let work = NewWork {
        kind: "refresh".into(),
        provider: "violet".into(),
        payload: serde_json::json!({"merchant_id": "7"}),
    };
    let first = s
        .accept_webhook("violet", "evt-1", Some(work.clone()), at(0))
        .await
        .unwrap();
    let WebhookAccept::Accepted { work_id: Some(w1) } = first else {
        panic!("{first:?}")
    };
    assert_eq!(
        s.accept_webhook("violet", "evt-1", Some(work.clone()), at(1))
            .await
            .unwrap(),
        WebhookAccept::Duplicate
    );
    // The same id from another provider is another event.
    assert!(matches!(
        s.accept_webhook("subtotal", "evt-1", None, at(1))
            .await
            .unwrap(),
        WebhookAccept::Accepted { work_id: None }
    ));
    let w2 = s
        .enqueue_work(
            NewWork {
                kind: "action".into(),
                provider: "subtotal".into(),
                payload: serde_json::json!({}),
            },
            at(2),
        )
        .await
        .unwrap();

    let lease = Duration::seconds(60);
    let claimed = s.claim_work("leader-a", 10, at(3), lease).await.unwrap();
    assert_eq!(
        claimed.iter().map(|w| w.id).collect::<Vec<_>>(),
        vec![w1, w2]
    );
    assert_eq!(claimed[0].work, work);
    assert_eq!(claimed[0].attempts, 1);
    assert!(
        s.claim_work("leader-b", 10, at(3), lease)
            .await
            .unwrap()
            .is_empty(),
        "claimed items are held"
    );
    s.finish_work(w1, None, at(3)).await.unwrap();
    s.finish_work(w2, Some("provider said 503".into()), at(3))
        .await
        .unwrap();
    let again = s.claim_work("leader-b", 10, at(4), lease).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        (
            again[0].id,
            again[0].attempts,
            again[0].last_error.as_deref()
        ),
        (w2, 2, Some("provider said 503"))
    );
    // A claim whose holder died expires.
    assert!(s
        .claim_work("leader-c", 10, at(4), lease)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        s.claim_work("leader-c", 10, at(6), lease)
            .await
            .unwrap()
            .len(),
        1
    );
}

/// `accept_webhooks` (the server's group commit): every accept of a batch durable after a
/// restart, duplicates (earlier, or twice in the batch) recorded once, and a failure anywhere
/// in the batch records none of it; `finish_works` finishes a claimed batch at once.
async fn webhook_group_commit_is_one_transaction(mut f: Fixture) {
    let work = |id: &str| NewWork {
        kind: "refresh".into(),
        provider: "violet".into(),
        payload: serde_json::json!({ "customer_id": id }),
    };
    let hook = |event_id: &str, work: Option<NewWork>| NewWebhook {
        provider: "violet".into(),
        event_id: event_id.into(),
        work,
    };
    let s = f.store();
    s.accept_webhook("violet", "evt-0", None, at(0))
        .await
        .unwrap();
    let answers = s
        .accept_webhooks(
            vec![
                hook("evt-1", Some(work("1"))),
                hook("evt-0", Some(work("0"))),
                hook("evt-2", None),
                hook("evt-1", Some(work("1"))),
                hook("evt-3", Some(work("3"))),
            ],
            at(1),
        )
        .await
        .unwrap();
    assert_eq!(answers.len(), 5);
    assert!(matches!(
        answers[0],
        WebhookAccept::Accepted { work_id: Some(_) }
    ));
    assert_eq!(answers[1], WebhookAccept::Duplicate, "seen before");
    assert_eq!(answers[2], WebhookAccept::Accepted { work_id: None });
    assert_eq!(answers[3], WebhookAccept::Duplicate, "twice in one batch");
    assert!(matches!(
        answers[4],
        WebhookAccept::Accepted { work_id: Some(_) }
    ));
    drop(s);
    f.reopen().await;
    let s = f.store();
    for id in ["evt-0", "evt-1", "evt-2", "evt-3"] {
        assert!(s.webhook_seen("violet", id).await.unwrap(), "{id} durable");
    }
    assert_eq!(s.webhook_overview().await.unwrap().pending_work, 2);

    // A failure on the batch's last row: none of the batch is recorded.
    match &f.kind {
        Kind::Sqlite(_) => f.raw(
            "CREATE TRIGGER boom BEFORE INSERT ON webhooks WHEN NEW.event_id = 'evt-bad' \
             BEGIN SELECT RAISE(ABORT, 'boom'); END;",
        ),
        Kind::Postgres { .. } => f.raw(
            "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF NEW.event_id = 'evt-bad' THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; END $$; \
             CREATE TRIGGER boom BEFORE INSERT ON webhooks FOR EACH ROW EXECUTE FUNCTION boom();",
        ),
    }
    let failed = s
        .accept_webhooks(
            vec![hook("evt-4", Some(work("4"))), hook("evt-bad", None)],
            at(2),
        )
        .await;
    assert!(failed.is_err(), "{failed:?}");
    assert!(!s.webhook_seen("violet", "evt-4").await.unwrap());
    assert_eq!(s.webhook_overview().await.unwrap().pending_work, 2);

    let claimed = s
        .claim_work("me", 10, at(3), Duration::seconds(60))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    s.finish_works(
        vec![
            (claimed[0].id, None),
            (claimed[1].id, Some("provider said 503".into())),
        ],
        at(4),
    )
    .await
    .unwrap();
    assert_eq!(s.webhook_overview().await.unwrap().pending_work, 1);
    let again = s
        .claim_work("me", 10, at(4), Duration::seconds(60))
        .await
        .unwrap();
    assert_eq!(
        (again.len(), again[0].id, again[0].last_error.as_deref()),
        (1, claimed[1].id, Some("provider said 503"))
    );
}

async fn webhook_seen_and_overview(f: Fixture) {
    let s = f.store();
    assert_eq!(
        s.webhook_overview().await.unwrap(),
        WebhookOverview::default()
    );
    assert!(!s.webhook_seen("violet", "evt-1").await.unwrap());
    let work = NewWork {
        kind: "refresh".into(),
        provider: "violet".into(),
        payload: serde_json::json!({"customer_id": "7"}),
    };
    s.accept_webhook("violet", "evt-1", Some(work.clone()), at(0))
        .await
        .unwrap();
    s.accept_webhook("violet", "evt-2", Some(work), at(5))
        .await
        .unwrap();
    s.accept_webhook("subtotal", "evt-9", None, at(2))
        .await
        .unwrap();
    // A duplicate changes neither the count nor the time.
    s.accept_webhook("violet", "evt-1", None, at(9))
        .await
        .unwrap();
    assert!(s.webhook_seen("violet", "evt-1").await.unwrap());
    assert!(!s.webhook_seen("subtotal", "evt-1").await.unwrap());
    let o = s.webhook_overview().await.unwrap();
    assert_eq!(o.pending_work, 2);
    assert_eq!(
        o.last_received.into_iter().collect::<Vec<_>>(),
        vec![("subtotal".to_owned(), at(2)), ("violet".to_owned(), at(5))]
    );
    // Claimed is still pending; finished is not.
    let claimed = s
        .claim_work("me", 1, at(10), Duration::seconds(60))
        .await
        .unwrap();
    assert_eq!(s.webhook_overview().await.unwrap().pending_work, 2);
    s.finish_work(claimed[0].id, None, at(11)).await.unwrap();
    assert_eq!(s.webhook_overview().await.unwrap().pending_work, 1);
}

async fn outbox_rows_are_written_with_their_events(f: Fixture) {
    let s = f.store();
    let (mut rec, _) = first_poll();
    assert!(rec.events.set_notify(1, vec!["ops".into(), "slack".into()]));
    let ids = s.commit_poll(rec).await.unwrap();
    let all = s.deliveries(None, None, 10).await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(all
        .iter()
        .all(|d| d.event_id == ids[1] && d.state == DeliveryState::Pending && d.attempts == 0));
    let due = s.due_deliveries(at(0), 10).await.unwrap();
    assert_eq!(due.len(), 2);
    assert_eq!(due[0].1.id, ids[1]);
    assert_eq!(
        due[0].1.change.connection_id.as_deref(),
        Some("channel3:m2:amazon")
    );
    let ops = due.iter().find(|d| d.0.sink == "ops").unwrap().0.clone();
    let retry = at(5);
    s.update_delivery(
        ops.id,
        DeliveryUpdate {
            state: DeliveryState::Pending,
            next_attempt_at: retry,
            last_error: Some("HTTP 503".into()),
        },
        at(0),
    )
    .await
    .unwrap();
    let due = s.due_deliveries(at(1), 10).await.unwrap();
    assert_eq!(due.len(), 1, "ops waits for its retry");
    assert_eq!(due[0].0.sink, "slack");
    let later = s.due_deliveries(retry, 10).await.unwrap();
    let ops2 = later.iter().find(|d| d.0.sink == "ops").unwrap().0.clone();
    assert_eq!(
        (ops2.attempts, ops2.last_error.as_deref()),
        (1, Some("HTTP 503"))
    );
    assert_eq!(
        ops2.message_id, ops.message_id,
        "the webhook-id is stable across retries"
    );
    s.update_delivery(
        ops.id,
        DeliveryUpdate {
            state: DeliveryState::Delivered,
            next_attempt_at: retry,
            last_error: None,
        },
        retry,
    )
    .await
    .unwrap();
    assert_eq!(
        s.deliveries(Some("ops"), Some(DeliveryState::Delivered), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(s
        .deliveries(Some("ops"), Some(DeliveryState::Pending), 10)
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        s.update_delivery(
            9999,
            DeliveryUpdate {
                state: DeliveryState::Failed,
                next_attempt_at: retry,
                last_error: None
            },
            retry
        )
        .await,
        Err(StoreError::Invalid(_))
    ));
}

async fn update_deliveries_is_one_transaction(f: Fixture) {
    let s = f.store();
    let (mut rec, _) = first_poll();
    rec.events.route(|_| vec!["ops".into()]);
    s.commit_poll(rec).await.unwrap();
    let all = s.deliveries(Some("ops"), None, 10).await.unwrap();
    assert!(all.len() >= 2);
    let ids: Vec<i64> = all.iter().map(|d| d.id).collect();
    let update = DeliveryUpdate {
        state: DeliveryState::Delivered,
        next_attempt_at: at(1),
        last_error: None,
    };
    // An unknown id among them: nothing changes.
    let mut bad = ids.clone();
    bad.push(9999);
    assert!(matches!(
        s.update_deliveries(bad, update.clone(), at(1)).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(
        s.deliveries(Some("ops"), Some(DeliveryState::Pending), 10)
            .await
            .unwrap()
            .len(),
        ids.len()
    );
    s.update_deliveries(ids.clone(), update, at(1))
        .await
        .unwrap();
    let done = s
        .deliveries(Some("ops"), Some(DeliveryState::Delivered), 10)
        .await
        .unwrap();
    assert_eq!(done.len(), ids.len());
    assert!(done.iter().all(|d| d.attempts == 1));
    assert!(s.due_deliveries(at(2), 10).await.unwrap().is_empty());
}

async fn audit_log_pages_newest_first(f: Fixture) {
    let s = f.store();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            s.append_audit(AuditRecord {
                at: at(i),
                actor: "admin".into(),
                action: "disconnect".into(),
                connection_id: format!("subtotal:c{i}"),
                ok: i % 2 == 0,
                outcome: format!("outcome {i}"),
                message: format!("message {i}"),
            })
            .await
            .unwrap(),
        );
    }
    let p = s.audit(None, 3).await.unwrap();
    assert_eq!(
        p.items.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![ids[4], ids[3], ids[2]]
    );
    assert_eq!(p.items[1].record.outcome, "outcome 3");
    assert_eq!(p.items[1].record.message, "message 3");
    assert!(!p.items[1].record.ok);
    let p2 = s.audit(p.next_before, 3).await.unwrap();
    assert_eq!(
        p2.items.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![ids[1], ids[0]]
    );
    assert_eq!(p2.next_before, None);
}

/// Migration 3 on a store written by version 2 (no `message` column yet): old rows read
/// with an empty message, new rows keep theirs.
async fn a_version_2_store_gains_the_audit_message(mut f: Fixture) {
    let record = |i: i64, message: &str| AuditRecord {
        at: at(i),
        actor: "admin".into(),
        action: "refresh".into(),
        connection_id: "violet:7".into(),
        ok: true,
        outcome: "done".into(),
        message: message.into(),
    };
    f.store().append_audit(record(0, "")).await.unwrap();
    f.raw(
        "ALTER TABLE audit DROP COLUMN message; ALTER TABLE work DROP COLUMN result; \
         DROP TABLE customers; DROP INDEX connections_status_group; DROP INDEX connections_group; \
         UPDATE meta SET value = '2' WHERE key = 'schema_version'",
    );
    f.reopen().await;
    let s = f.store();
    s.append_audit(record(1, "recomputed")).await.unwrap();
    let page = s.audit(None, 10).await.unwrap();
    let messages: Vec<&str> = page
        .items
        .iter()
        .map(|e| e.record.message.as_str())
        .collect();
    assert_eq!(messages, ["recomputed", ""]);
}

/// Fencing: a leader whose lease ran out (paused, partitioned) and was taken over cannot
/// commit: its poll is refused whole (no event, no state change), through the journal too,
/// and the new leader's commit goes in.
async fn a_fenced_commit_needs_the_lease(f: Fixture) {
    let s = f.store();
    let ttl = Duration::seconds(15);
    let a = Fence {
        lease: "leader".into(),
        holder: "a".into(),
    };
    let b = Fence {
        lease: "leader".into(),
        holder: "b".into(),
    };
    // Nobody holds it yet: refused.
    let (rec, state) = first_poll();
    let err = s
        .commit_poll_fenced(rec.clone(), &a, at(0))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");
    assert_eq!(err.code(), "store_lease_lost");
    assert!(s.events_after(0, 10).await.unwrap().items.is_empty());

    assert_eq!(s.last_event_id().await.unwrap(), 0);
    assert!(s.try_lease("leader", "a", ttl, at(0)).await.unwrap());
    let ids = s.commit_poll_fenced(rec, &a, at(0)).await.unwrap();
    assert_eq!(ids.len(), 3);
    assert_eq!(s.last_event_id().await.unwrap(), ids[2]);

    // a pauses past its TTL; b takes over and starts from what a committed.
    let later = at(0) + Duration::seconds(16);
    assert!(s.try_lease("leader", "b", ttl, later).await.unwrap());
    let taken_over = s.load_state().await.unwrap();
    assert_eq!(taken_over.connections.len(), 3);

    // a wakes up and commits the change it saw: refused, nothing written.
    let mut next = state.clone();
    let m1 = next.connections.get_mut("channel3:m1:shopify").unwrap();
    m1.connection = conn("channel3", "m1", "shopify", Status::Disconnected, later).into();
    m1.since = later;
    let change = Change::about(
        &m1.connection,
        ChangeKind::StatusChanged {
            from: Status::Healthy,
            to: Status::Disconnected,
        },
        later,
        Some(at(0)),
    );
    let stale = PollRecord::between(
        later,
        &state,
        &next,
        vec![],
        vec![change.clone()],
        Source::Poll,
    );
    let err = s
        .commit_poll_fenced(stale.clone(), &a, later)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::LeaseLost { ref holder, .. } if holder == "a"),
        "{err}"
    );
    assert!(err.to_string().contains("\"leader\""), "{err}");
    assert_eq!(s.events_after(ids[2], 10).await.unwrap().items.len(), 0);
    assert_eq!(
        s.load_state().await.unwrap().connections,
        taken_over.connections
    );

    // The same through a fenced journal: kept pending, nothing written.
    let (mut journal, loaded) = Journal::load(s.clone(), JournalOptions::default())
        .await
        .unwrap();
    journal.set_fence(Some(a.clone()));
    let w = journal
        .record(later, &next, vec![], vec![change.clone()], Source::Poll)
        .await;
    assert!(
        matches!(w.error, Some(StoreError::LeaseLost { .. })),
        "{:?}",
        w.error
    );
    assert!(w.events.is_empty());
    assert_eq!(w.pending_polls, 1);
    assert_eq!(s.events_after(ids[2], 10).await.unwrap().items.len(), 0);
    // Reloading (what a replica does when it leads again) drops the refused term's poll.
    let reloaded = journal.reload().await.unwrap();
    assert_eq!(reloaded.connections, loaded.connections);
    assert_eq!(journal.pending_polls(), 0);

    // b, the holder, commits (b's clock may be anywhere inside its lease).
    let ids_b = s
        .commit_poll_fenced(stale, &b, later + Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(ids_b.len(), 1);
    assert_eq!(
        s.load_state().await.unwrap().connections["channel3:m1:shopify"]
            .connection
            .status,
        Status::Disconnected
    );
}

/// A follower's relayed request: pending until the leader finishes it, then its result once
/// (cleared by the read: it may hold a secret link).
async fn a_relayed_items_result_is_read_once(f: Fixture) {
    let s = f.store();
    assert_eq!(s.take_work_result(12345).await.unwrap(), WorkState::Unknown);
    let id = s
        .enqueue_work(
            NewWork {
                kind: "action".into(),
                provider: "subtotal".into(),
                payload: serde_json::json!({"connection_id": "subtotal:1", "kind": "reauth_link"}),
            },
            at(0),
        )
        .await
        .unwrap();
    assert_eq!(
        s.take_work_result(id).await.unwrap(),
        WorkState::Pending { last_error: None }
    );
    let claimed = s
        .claim_work("leader", 10, at(0), Duration::seconds(60))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(s
        .set_work_result(id, r#"{"status":200}"#.into())
        .await
        .unwrap());
    assert!(!s.set_work_result(id + 1000, "{}".into()).await.unwrap());
    // Set but not finished: still pending.
    assert!(matches!(
        s.take_work_result(id).await.unwrap(),
        WorkState::Pending { .. }
    ));
    s.finish_work(id, None, at(1)).await.unwrap();
    assert_eq!(
        s.take_work_result(id).await.unwrap(),
        WorkState::Done {
            result: Some(r#"{"status":200}"#.into())
        }
    );
    assert_eq!(
        s.take_work_result(id).await.unwrap(),
        WorkState::Done { result: None }
    );
    // An answer nobody read is cleared by the prune an hour after the item was done.
    let unread = s
        .enqueue_work(
            NewWork {
                kind: "action".into(),
                provider: "subtotal".into(),
                payload: serde_json::json!({"connection_id": "subtotal:2", "kind": "reauth_link"}),
            },
            at(2),
        )
        .await
        .unwrap();
    s.set_work_result(unread, r#"{"status":200}"#.into())
        .await
        .unwrap();
    s.finish_work(unread, None, at(3)).await.unwrap();
    s.prune(Retention::default(), at(30)).await.unwrap();
    assert!(matches!(
        s.take_work_result(unread).await.unwrap(),
        WorkState::Done { result: Some(_) }
    ));
    let unread = s
        .enqueue_work(
            NewWork {
                kind: "action".into(),
                provider: "subtotal".into(),
                payload: serde_json::json!({"connection_id": "subtotal:3", "kind": "reauth_link"}),
            },
            at(2),
        )
        .await
        .unwrap();
    s.set_work_result(unread, r#"{"status":200}"#.into())
        .await
        .unwrap();
    s.finish_work(unread, None, at(3)).await.unwrap();
    s.prune(Retention::default(), at(3 + 61)).await.unwrap();
    assert_eq!(
        s.take_work_result(unread).await.unwrap(),
        WorkState::Done { result: None }
    );
}

async fn leader_lease(f: Fixture) {
    let s = f.store();
    let ttl = Duration::seconds(30);
    assert!(s.try_lease("leader", "a", ttl, at(0)).await.unwrap());
    assert!(!s.try_lease("leader", "b", ttl, at(0)).await.unwrap());
    assert!(
        s.try_lease("leader", "a", ttl, at(0) + Duration::seconds(20))
            .await
            .unwrap(),
        "renewal"
    );
    assert_eq!(
        s.lease_holder("leader", at(0) + Duration::seconds(40))
            .await
            .unwrap()
            .as_deref(),
        Some("a")
    );
    assert!(!s
        .try_lease("leader", "b", ttl, at(0) + Duration::seconds(49))
        .await
        .unwrap());
    // a died: its lease ran out.
    assert!(s
        .try_lease("leader", "b", ttl, at(0) + Duration::seconds(51))
        .await
        .unwrap());
    assert_eq!(
        s.lease_holder("leader", at(1)).await.unwrap().as_deref(),
        Some("b")
    );
    assert!(!s.release_lease("leader", "a").await.unwrap());
    assert!(s.release_lease("leader", "b").await.unwrap());
    assert_eq!(s.lease_holder("leader", at(1)).await.unwrap(), None);
}

async fn mutes_and_disabled_sinks_are_durable(mut f: Fixture) {
    let s = f.store();
    let m = NewMute {
        provider: Some("violet".into()),
        customer: None,
        connection: Some("violet:7".into()),
        until: at(2),
        reason: "maintenance".into(),
    };
    let id = s.add_mute(m.clone(), at(0)).await.unwrap();
    let expired = s
        .add_mute(
            NewMute {
                until: at(1),
                ..m.clone()
            },
            at(0),
        )
        .await
        .unwrap();
    assert_ne!(id, expired);
    s.disable_sink(DisabledSink {
        sink: "ops".into(),
        fingerprint: "f1".into(),
        disabled_at: at(0),
        reason: "410 Gone".into(),
    })
    .await
    .unwrap();
    // A new handle (a restart) sees both.
    drop(s);
    f.reopen().await;
    let s = f.store();
    let live = s.mutes(at(1)).await.unwrap();
    assert_eq!(live.len(), 1, "the expired mute is not in force: {live:?}");
    assert_eq!(live[0].id, id);
    assert_eq!(live[0].mute, m);
    assert_eq!(live[0].created_at, at(0));
    assert_eq!(s.mutes(at(0)).await.unwrap().len(), 2);
    let d = s.disabled_sinks().await.unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(
        (
            d[0].sink.as_str(),
            d[0].fingerprint.as_str(),
            d[0].disabled_at
        ),
        ("ops", "f1", at(0))
    );
    assert!(s.delete_mute(id).await.unwrap());
    assert!(!s.delete_mute(id).await.unwrap());
    assert!(s.mutes(at(1)).await.unwrap().is_empty());
    assert!(s.enable_sink("ops").await.unwrap());
    assert!(!s.enable_sink("ops").await.unwrap());
    assert!(s.disabled_sinks().await.unwrap().is_empty());
    // Reminder marks: written, replaced, per sink.
    let mark = |sent| ReminderMark {
        connection_id: "violet:7".into(),
        since: at(0),
        sent,
        next_at: at(3),
    };
    s.set_reminder_marks("ops", vec![mark(1)]).await.unwrap();
    s.set_reminder_marks("ops", vec![mark(2)]).await.unwrap();
    assert_eq!(s.reminder_marks("ops").await.unwrap(), vec![mark(2)]);
    assert!(s.reminder_marks("chat").await.unwrap().is_empty());
}

async fn prune_keeps_what_retention_says(f: Fixture) {
    let s = f.store();
    let (rec, _) = first_poll();
    s.commit_poll(rec).await.unwrap();
    s.accept_webhook("violet", "old", None, at(0))
        .await
        .unwrap();
    let later = at(0) + Duration::days(100);
    let mut r = PollRecord {
        at: later,
        ..PollRecord::default()
    };
    r.events.push(NewEvent::new(
        Change::provider("violet", ChangeKind::ProviderRecovered, later, None),
        Source::Poll,
    ));
    s.commit_poll(r).await.unwrap();
    let stats = s.prune(Retention::default(), later).await.unwrap();
    assert_eq!(stats.removed["events"], 3);
    assert_eq!(stats.removed["webhooks"], 1);
    let left = s.events_after(0, 10).await.unwrap();
    assert_eq!(left.items.len(), 1);
    // The 100 days of hourly roll-ups are younger than 400 days: kept.
    assert_eq!(stats.removed["rollups"], 0);
    let up = s
        .uptime(&UptimeQuery {
            window: Window::Quarter,
            by: GroupBy::Provider,
            provider: vec![],
            customer: vec![],
        })
        .await
        .unwrap();
    assert!(up
        .items
        .iter()
        .any(|i| i.key == "channel3" && i.good_seconds > 0));
    let stats = s
        .prune(Retention::default(), later + Duration::days(400))
        .await
        .unwrap();
    assert!(stats.removed["rollups"] > 0);
    // A dedupe id that was pruned is accepted again (it is past retention).
    assert!(matches!(
        s.accept_webhook("violet", "old", None, later)
            .await
            .unwrap(),
        WebhookAccept::Accepted { .. }
    ));
}

async fn integrity_check_passes(f: Fixture) {
    let (rec, _) = first_poll();
    f.store().commit_poll(rec).await.unwrap();
    f.store().integrity_check().await.unwrap();
}

async fn connections_grouped_by_customer_timelines_and_last_webhooks(f: Fixture) {
    let s = f.store();
    // Customers c0..c5 of two providers, 2–3 connections each, statuses spread so that
    // customers' worst statuses differ from their connections' order in the flat listing.
    let statuses = [
        Status::Healthy,
        Status::Degraded,
        Status::Healthy,
        Status::ActionRequired,
        Status::Pending,
        Status::NotConnected,
        Status::Unknown,
    ];
    let mut items = Vec::new();
    for i in 0..16usize {
        let p = if i % 3 == 0 { "violet" } else { "channel3" };
        items.push(tracked(
            conn(
                p,
                &format!("c{}", i % 6),
                &format!("plat{i:02}"),
                statuses[i % statuses.len()],
                at(0),
            ),
            at(0),
        ));
    }
    s.commit_poll(PollRecord::between(
        at(0),
        &WatchState::default(),
        &state_of(&items),
        vec![],
        vec![],
        Source::Poll,
    ))
    .await
    .unwrap();

    // The expected order, worked out here from the inputs.
    let expected = expected_grouped(&items, &ConnectionFilter::default());
    let (total, seen) = grouped_all(&*s, &ConnectionFilter::default(), 5).await;
    assert_eq!(total, 16);
    assert_eq!(seen, expected);
    // Filters apply before grouping: a customer's worst is over its matching connections.
    let healthy = ConnectionFilter {
        status: vec![Status::Healthy],
        ..Default::default()
    };
    let page = s
        .connections_by_customer(&healthy, None, 100)
        .await
        .unwrap();
    assert!(page
        .items
        .iter()
        .all(|i| i.customer_status == Some(Status::Healthy)));
    // A flat cursor is not a grouped one, and the other way round.
    let flat = s
        .connections(&ConnectionFilter::default(), None, 3)
        .await
        .unwrap();
    assert!(matches!(
        s.connections_by_customer(&ConnectionFilter::default(), flat.next_cursor.as_deref(), 3)
            .await,
        Err(StoreError::Invalid(_))
    ));
    let grouped = s
        .connections_by_customer(&ConnectionFilter::default(), None, 3)
        .await
        .unwrap();
    assert!(matches!(
        s.connections(
            &ConnectionFilter::default(),
            grouped.next_cursor.as_deref(),
            3
        )
        .await,
        Err(StoreError::Invalid(_))
    ));

    // Timelines: the status changes of the asked connections within the window.
    let c = items[0].connection.clone();
    let other = items[1].connection.clone();
    let mut r = PollRecord {
        at: at(10),
        ..PollRecord::default()
    };
    for (i, (from, to)) in [
        (Status::Healthy, Status::Degraded),
        (Status::Degraded, Status::ActionRequired),
    ]
    .into_iter()
    .enumerate()
    {
        let when = at(10 + i as i64);
        r.events.push(NewEvent::new(
            Change::about(&c, ChangeKind::StatusChanged { from, to }, when, None),
            Source::Poll,
        ));
    }
    r.events.push(NewEvent::new(
        Change::about(&c, ChangeKind::Appeared { status: c.status }, at(2), None),
        Source::Poll,
    ));
    r.events.push(NewEvent::new(
        Change::about(
            &other,
            ChangeKind::ProblemCleared { code: "x".into() },
            at(10),
            None,
        ),
        Source::Poll,
    ));
    s.commit_poll(r).await.unwrap();
    let t = s
        .timelines(&[c.id.clone(), other.id.clone()], at(5))
        .await
        .unwrap();
    assert_eq!(t.len(), 1, "other has no status change: {t:?}");
    let points = &t[&c.id];
    assert_eq!(
        points,
        &vec![
            TimelinePoint {
                at: at(10),
                from: Some(Status::Healthy),
                to: Status::Degraded
            },
            TimelinePoint {
                at: at(11),
                from: Some(Status::Degraded),
                to: Status::ActionRequired
            },
        ]
    );
    let all = s
        .timelines(std::slice::from_ref(&c.id), at(0))
        .await
        .unwrap();
    assert_eq!(all[&c.id].len(), 3);
    assert_eq!(all[&c.id][2].from, None, "appeared has no `from`");
    assert!(s.timelines(&[], at(0)).await.unwrap().is_empty());

    // The last accepted webhook per provider.
    assert!(s.last_webhooks().await.unwrap().is_empty());
    s.accept_webhook("violet", "e1", None, at(1)).await.unwrap();
    s.accept_webhook("violet", "e2", None, at(7)).await.unwrap();
    s.accept_webhook("subtotal", "e1", None, at(3))
        .await
        .unwrap();
    let last = s.last_webhooks().await.unwrap();
    assert_eq!(last.len(), 2);
    assert_eq!(last["violet"], at(7));
    assert_eq!(last["subtotal"], at(3));
}

/// A first poll of 1,203 connections (a store writes a poll's rows some hundreds at a time):
/// committed through [`Store::commit_shared`] it is all there, each connection with its span,
/// each event with its id in the record's order and its outbox rows, and the record the
/// caller kept is unchanged.
async fn a_poll_larger_than_a_write_chunk_commits_whole_and_in_order(f: Fixture) {
    let s = f.store();
    let n = 1203;
    let items: Vec<_> = (0..n)
        .map(|i| {
            let status = if i % 3 == 0 {
                Status::ActionRequired
            } else {
                Status::Healthy
            };
            tracked(
                conn("channel3", &format!("m{i:05}"), "shopify", status, at(0)),
                at(0),
            )
        })
        .collect();
    let next = state_of(&items);
    let changes = appeared(&items);
    let mut rec = PollRecord::between(
        at(0),
        &WatchState::default(),
        &next,
        vec![],
        changes,
        Source::Poll,
    );
    for i in (0..rec.events.len()).step_by(2) {
        assert!(rec.events.set_notify(i, vec!["ops".into()]));
    }
    let rec = std::sync::Arc::new(rec);
    let ids = s.commit_shared(rec.clone(), None, at(0)).await.unwrap();
    assert_eq!(ids.len(), n);
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids increase in record order"
    );
    assert_eq!(
        rec.events.len(),
        n,
        "the kept record is the caller's, unchanged"
    );

    let stored = s.load_state().await.unwrap();
    assert_eq!(stored.connections.len(), n);
    for (id, t) in &next.connections {
        let got = &stored.connections[id];
        assert_eq!(got.connection.status, t.connection.status, "{id}");
        assert_eq!(got.since, t.since, "{id}");
    }
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page = s.events_after(after, 500).await.unwrap();
        if page.items.is_empty() {
            break;
        }
        after = page.next.unwrap();
        events.extend(page.items);
    }
    assert_eq!(events.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    let order: Vec<_> = events
        .iter()
        .map(|e| e.change.connection_id.clone().unwrap())
        .collect();
    let want: Vec<_> = rec
        .events
        .iter()
        .map(|e| e.change.connection_id.clone().unwrap())
        .collect();
    assert_eq!(order, want);
    let deliveries = s.deliveries(Some("ops"), None, 5000).await.unwrap();
    assert_eq!(deliveries.len(), n.div_ceil(2));
    let mut delivered: Vec<_> = deliveries.iter().map(|d| d.event_id).collect();
    delivered.sort_unstable();
    let every_other: Vec<_> = ids.iter().copied().step_by(2).collect();
    assert_eq!(delivered, every_other);
    let page = s
        .connections(&ConnectionFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(page.total, n as u64);
    let bad = s
        .connections(
            &ConnectionFilter {
                status: vec![Status::ActionRequired],
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(bad.total, n.div_ceil(3) as u64);
}

/// The grouped order, worked out here from the inputs: the matching connections, each
/// customer ranked by its worst matching status, then worst first within it.
fn expected_grouped(
    items: &[Tracked],
    f: &ConnectionFilter,
) -> Vec<(Status, String, String, u8, String)> {
    let matches = |c: &connhealth_core::Connection| {
        let search = format!(
            "{}\n{}\n{}\n{}\n{}",
            c.id,
            c.customer.id,
            c.customer.name.clone().unwrap_or_default(),
            c.platform,
            c.problems
                .iter()
                .map(|p| p.code.clone())
                .collect::<Vec<_>>()
                .join("\n")
        )
        .to_lowercase();
        (f.status.is_empty() || f.status.contains(&c.status))
            && (f.provider.is_empty() || f.provider.contains(&c.provider))
            && (f.customer.is_empty()
                || f.customer.iter().any(|k| {
                    *k == c.customer.id || *k == format!("{}:{}", c.provider, c.customer.id)
                }))
            && f.q
                .as_ref()
                .is_none_or(|q| search.contains(&q.to_lowercase()))
    };
    let hits: Vec<&connhealth_core::Connection> = items
        .iter()
        .map(|t| &*t.connection)
        .filter(|c| matches(c))
        .collect();
    let worst = |p: &str, k: &str| {
        hits.iter()
            .filter(|c| c.provider == p && c.customer.id == k)
            .map(|c| c.status)
            .max()
            .unwrap()
    };
    let mut out: Vec<_> = hits
        .iter()
        .map(|c| {
            (
                worst(&c.provider, &c.customer.id),
                c.provider.clone(),
                c.customer.id.clone(),
                c.status.severity(),
                c.id.clone(),
            )
        })
        .collect();
    out.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then(a.1.cmp(&b.1))
            .then(a.2.cmp(&b.2))
            .then(b.3.cmp(&a.3))
            .then(a.4.cmp(&b.4))
    });
    out
}

/// Every grouped page of `f`, `limit` at a time, as (customer status, provider, customer,
/// severity, id).
async fn grouped_all(
    s: &dyn Store,
    f: &ConnectionFilter,
    limit: usize,
) -> (u64, Vec<(Status, String, String, u8, String)>) {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = s
            .connections_by_customer(f, cursor.as_deref(), limit)
            .await
            .unwrap();
        assert!(page.items.len() <= limit);
        for i in &page.items {
            let c = &i.connection;
            seen.push((
                i.customer_status
                    .expect("grouped items carry customer_status"),
                c.provider.clone(),
                c.customer.id.clone(),
                c.status.severity(),
                c.id.clone(),
            ));
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return (page.total, seen),
        }
    }
}

/// The grouped order is kept up by every write (`customers.worst`, schema 5) and read three
/// ways by filter (kept rank, one status, window); after new, changed, removed and
/// re-homed connections, and after a version 4 store is migrated, every way gives the order
/// worked out from the inputs, page by page.
async fn grouped_pages_follow_the_inputs_through_changes_moves_and_filters(mut f: Fixture) {
    let statuses = Status::ALL;
    // A small deterministic generator (the same fleet every run).
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: usize| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((seed >> 33) as usize) % n
    };
    let providers = ["channel3", "subtotal", "violet"];
    let mut items: Vec<Tracked> = Vec::new();
    for p in providers {
        for k in 0..7 {
            for j in 0..(1 + next(4)) {
                let st = statuses[next(statuses.len())];
                items.push(tracked(
                    conn(p, &format!("c{k}"), &format!("plat{j}{k}"), st, at(0)),
                    at(0),
                ));
            }
        }
    }
    let filters = |round: usize| {
        vec![
            ConnectionFilter::default(),
            ConnectionFilter {
                provider: vec!["violet".into()],
                ..Default::default()
            },
            ConnectionFilter {
                customer: vec!["c3".into()],
                ..Default::default()
            },
            ConnectionFilter {
                customer: vec!["subtotal:c2".into(), "c5".into()],
                ..Default::default()
            },
            ConnectionFilter {
                status: vec![statuses[round % 8]],
                ..Default::default()
            },
            ConnectionFilter {
                status: vec![Status::Degraded, Status::Degraded],
                ..Default::default()
            },
            ConnectionFilter {
                status: vec![Status::Healthy],
                provider: vec!["channel3".into(), "violet".into()],
                ..Default::default()
            },
            ConnectionFilter {
                status: vec![Status::Healthy, Status::ActionRequired],
                ..Default::default()
            },
            ConnectionFilter {
                q: Some("PLAT1".into()),
                ..Default::default()
            },
        ]
    };
    let mut prev = WatchState::default();
    // The customer (provider, id) of the connection rounds 5 and 6 re-home.
    let mut homed: Option<(String, String)> = None;
    for round in 0..7usize {
        match round {
            0 => {}
            1..=4 => {
                // Change about a third, remove one, add one, and re-home one.
                for t in items.iter_mut() {
                    if next(3) == 0 {
                        std::sync::Arc::make_mut(&mut t.connection).status =
                            statuses[next(statuses.len())];
                    }
                }
                items.remove(next(items.len()));
                let p = providers[next(3)];
                items.push(tracked(
                    conn(
                        p,
                        &format!("c{}", next(9)),
                        &format!("new{round}"),
                        statuses[next(8)],
                        at(round as i64),
                    ),
                    at(round as i64),
                ));
                let i = next(items.len());
                std::sync::Arc::make_mut(&mut items[i].connection)
                    .customer
                    .id = format!("c{}", next(9));
            }
            5 => {
                // One customer of two or more connections: its first is its only worst one.
                let key_of = |t: &Tracked| {
                    (
                        t.connection.provider.clone(),
                        t.connection.customer.id.clone(),
                    )
                };
                let first = (0..items.len())
                    .find(|&i| {
                        items
                            .iter()
                            .filter(|t| key_of(t) == key_of(&items[i]))
                            .count()
                            > 1
                    })
                    .expect("a customer with two connections");
                items.swap(0, first);
                let key = key_of(&items[0]);
                for (i, t) in items.iter_mut().enumerate() {
                    let c = std::sync::Arc::make_mut(&mut t.connection);
                    if (c.provider.as_str(), c.customer.id.as_str()) == (&key.0, &key.1) {
                        c.status = if i == 0 {
                            Status::ActionRequired
                        } else {
                            Status::Healthy
                        };
                    }
                }
                homed = Some(key);
            }
            _ => {
                // Only that connection moves, to a customer of its own: the customer it left
                // is no longer ranked by it, though nothing else of it changed.
                std::sync::Arc::make_mut(&mut items[0].connection)
                    .customer
                    .id = "moved".into();
            }
        }
        let now = state_of(&items);
        f.store()
            .commit_poll(PollRecord::between(
                at(round as i64),
                &prev,
                &now,
                vec![],
                vec![],
                Source::Poll,
            ))
            .await
            .unwrap();
        prev = now;
        if round == 2 {
            // A version 4 store (no kept ranks yet) counts them when it is opened.
            f.raw(
                "DROP TABLE customers; DROP INDEX connections_status_group; \
                 DROP INDEX connections_group; \
                 UPDATE meta SET value = '4' WHERE key = 'schema_version'",
            );
            f.reopen().await;
        }
        for filter in filters(round) {
            let want = expected_grouped(&items, &filter);
            for limit in [1, 4, 100] {
                let (total, got) = grouped_all(&*f.store(), &filter, limit).await;
                assert_eq!(total as usize, want.len(), "round {round}, {filter:?}");
                assert_eq!(got, want, "round {round}, limit {limit}, {filter:?}");
            }
        }
    }
    let (p, k) = homed.expect("round 5 ran");
    let left = ConnectionFilter {
        customer: vec![format!("{p}:{k}")],
        ..Default::default()
    };
    let page = f
        .store()
        .connections_by_customer(&left, None, 100)
        .await
        .unwrap();
    assert!(
        !page.items.is_empty()
            && page
                .items
                .iter()
                .all(|i| i.customer_status == Some(Status::Healthy)),
        "the customer a connection left is ranked by what it has now"
    );
    f.store().integrity_check().await.unwrap();
}
