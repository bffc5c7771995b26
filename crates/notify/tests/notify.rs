//! The notification worker over real HTTP (an axum receiver on loopback in the test's own
//! runtime) and a real SQLite store in a temp dir, on tokio's paused clock.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use connhealth_core::{Change, Secret, Status};
use connhealth_notify::*;
use connhealth_store::DeliveryState;
use serde_json::{json, Value};

// ---------- signing and config ----------

#[test]
fn signer_matches_the_standard_webhooks_test_vector() {
    // From the specification's test suite (svix-webhooks, TestWebhookSign).
    let s = Signer::new(&Secret::new(SECRET)).unwrap();
    let body = br#"{"test": 2432232314}"#;
    let sig = s.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
    assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    assert!(s.verify(
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        body,
        "v1,bm9wZQ== v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    ));
    assert!(!s.verify(
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        br#"{"test": 2432232315}"#,
        &sig
    ));
    assert_eq!(format!("{s:?}"), "Signer([redacted])");
}

type Env = Box<dyn Fn(&str) -> Option<String>>;

#[test]
fn bad_config_is_one_line_at_start() {
    let cases: Vec<(Value, Env, &str)> = vec![
        (json!({"name": "ops", "kind": "webhook", "url": "https://h.example.com/x", "secret_env": "S"}),
         Box::new(|_| None), "notify \"ops\": secret_env: environment variable S is not set"),
        (json!({"name": "ops", "kind": "webhook", "url": "https://h.example.com/x", "secret_env": "S"}),
         Box::new(|_| Some("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into())), "notify \"ops\": secret_env S: the secret must start with whsec_"),
        (json!({"name": "ops", "kind": "webhook", "url": "https://h.example.com/x", "secret_env": "S"}),
         Box::new(|_| Some("whsec_not base64!!".into())), "notify \"ops\": secret_env S: the secret after whsec_ is not base64"),
        (json!({"name": "ops", "kind": "webhook", "url": "http://h.example.com/x", "secret_env": "S"}),
         Box::new(|_| Some(SECRET.into())), "notify \"ops\": url must be https:// (http:// only on loopback)"),
        (json!({"name": "ops", "kind": "webhook", "url": "https://10.1.2.3/x", "secret_env": "S"}),
         Box::new(|_| Some(SECRET.into())), "notify \"ops\": url is an address in a private range (set allow_private = true to allow it)"),
        (json!({"name": "ops", "kind": "webhook", "url": "https://h.example.com/x"}),
         Box::new(|_| Some(SECRET.into())), "notify \"ops\": secret_env is required"),
        (json!({"name": "s", "kind": "slack", "url_env": "SLACK"}),
         Box::new(|_| None), "notify \"s\": url_env: environment variable SLACK is not set"),
        (json!({"name": "ops", "kind": "webhook", "url": "https://h.example.com/x", "secret_env": "S", "events": ["exploded"]}),
         Box::new(|_| Some(SECRET.into())), "notify \"ops\": events: unknown event \"exploded\""),
        (json!({"name": "ops", "kind": "webhook", "url": "https://h.example.com/x", "secret_env": "S", "retry_schedule": ["5 parsecs"]}),
         Box::new(|_| Some(SECRET.into())), "notify \"ops\": retry_schedule \"5 parsecs\""),
    ];
    for (cfg, env, want) in cases {
        let c: SinkConfig = serde_json::from_value(cfg).unwrap();
        let e = c.validate_with(env).unwrap_err().to_string();
        assert!(e.starts_with(want), "{e:?} should start with {want:?}");
        assert!(!e.contains('\n'), "one line: {e:?}");
        assert!(
            !e.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            "no secret in {e:?}"
        );
    }
    // Loopback may be http; a private literal may be allowed; unknown keys are refused.
    webhook("l", "http://127.0.0.1:9/x", json!({}));
    webhook("l6", "http://[::1]:9/x", json!({}));
    webhook("p", "https://10.1.2.3/x", json!({"allow_private": true}));
    let unknown = serde_json::from_value::<SinkConfig>(
        json!({"name": "x", "kind": "webhook", "url": "https://h/x", "secret": "whsec_x"}),
    );
    assert!(unknown.is_err());
    // Names are unique; a mute must match something.
    let a = webhook_cfg("a", "https://h.example.com/", json!({}));
    let e = validate_all(&[a.clone(), a], &[], env)
        .unwrap_err()
        .to_string();
    assert_eq!(e, "notify \"a\": the name is used twice");
    let mute: Mute =
        serde_json::from_value(json!({"match": {}, "until": t0(), "reason": ""})).unwrap();
    assert!(validate_all(&[], &[mute], env).is_err());
    // The durations of the contract parse; the schedule overrides the default.
    let s = webhook(
        "d",
        "https://h.example.com/",
        json!({"retry_schedule": ["1s", "2m"], "timeout": "3s", "remind_after": "24h", "digest_secs": 30}),
    );
    assert_eq!(
        s.retry_schedule,
        vec![Duration::from_secs(1), Duration::from_secs(120)]
    );
    assert_eq!(s.timeout, Duration::from_secs(3));
    assert_eq!(s.remind_after, Some(Duration::from_secs(86400)));
    assert_eq!(
        webhook("e", "https://h.example.com/", json!({})).retry_schedule,
        DEFAULT_RETRY_SCHEDULE.to_vec()
    );
    // Debug shows neither URL nor secret.
    let dbg = format!("{s:?}");
    assert!(
        !dbg.contains("h.example.com") && !dbg.contains("MfKQ"),
        "{dbg}"
    );
}

#[test]
fn filters_and_mutes() {
    let s = webhook(
        "ops",
        "https://h.example.com/",
        json!({"min_severity": "degraded", "providers": ["violet"], "customers": ["c1", "violet:c2"]}),
    );
    let f = &s.filter;
    assert!(f.matches(&change("c1", Status::Healthy, Status::Degraded)));
    assert!(
        f.matches(&change("c2", Status::ActionRequired, Status::Healthy)),
        "a recovery"
    );
    assert!(
        !f.matches(&change("c1", Status::Healthy, Status::Unknown)),
        "unknown < degraded"
    );
    assert!(
        !f.matches(&change("c3", Status::Healthy, Status::Degraded)),
        "another customer"
    );
    assert!(
        f.matches(&outage("violet")),
        "outages pass severity and customers"
    );
    assert!(!f.matches(&outage("channel3")), "not another provider's");
    let e = webhook(
        "e",
        "https://h.example.com/",
        json!({"events": ["provider_unavailable"]}),
    );
    assert!(!e
        .filter
        .matches(&change("c1", Status::Healthy, Status::Degraded)));
    assert_eq!(route([&s, &e], &outage("violet")), vec!["ops", "e"]);

    let m: Mute = serde_json::from_value(
        json!({"match": {"customer": "violet:c1"}, "until": t0() + chrono::Duration::hours(1), "reason": "maintenance"}),
    )
    .unwrap();
    assert!(m.silences(&change("c1", Status::Healthy, Status::Degraded), t0()));
    assert!(!m.silences(&change("c2", Status::Healthy, Status::Degraded), t0()));
    assert!(
        !m.silences(
            &change("c1", Status::Healthy, Status::Degraded),
            t0() + chrono::Duration::hours(2)
        ),
        "expired"
    );
}

#[test]
fn slack_text_is_escaped() {
    let evil = "Hi <!channel> & <@U123> see <https://evil.example|click> > now";
    let got = message::slack_escape(evil);
    assert_eq!(
        got,
        "Hi &lt;!channel&gt; &amp; &lt;@U123&gt; see &lt;https://evil.example|click&gt; &gt; now"
    );
    assert!(!got.contains('<') && !got.contains('>'));
}

// ---------- over HTTP ----------

#[tokio::test(start_paused = true)]
async fn delivers_a_signed_event_the_receiver_verifies() {
    let (_dir, store, rx, n) = setup(
        |rx| vec![webhook("ops", &rx.url("/hook"), json!({}))],
        vec![],
    )
    .await;
    let ids = commit(
        &store,
        vec![change("c1", Status::Healthy, Status::ActionRequired)],
        &["ops"],
    )
    .await;
    let r = n.tick().await.unwrap();
    assert_eq!((r.requests, r.delivered), (1, 1));
    let got = rx.got();
    assert_eq!(got.len(), 1);
    let (id, body) = verify(&got[0]);
    let row = &rows(&store, "ops").await[0];
    assert_eq!(id, row.message_id);
    assert_eq!(row.state, DeliveryState::Delivered);
    assert_eq!(
        got[0].headers["webhook-timestamp"],
        t0().timestamp().to_string().as_str()
    );
    assert_eq!(body["type"], "connhealth.status_changed");
    assert_eq!(body["data"]["id"], ids[0]);
    assert_eq!(body["data"]["event"], "status_changed");
    assert_eq!(body["data"]["source"], "poll");
    assert_eq!(body["data"]["to"], "action_required");
    assert_eq!(body["data"]["connection_id"], "violet:c1:shopify");
    assert!(body["timestamp"]
        .as_str()
        .unwrap()
        .starts_with("2026-03-01T10:00:00"));
    // Nothing more is due.
    assert_eq!(n.tick().await.unwrap(), TickReport::default());
    assert_eq!(n.metrics().get("ops", MetricOutcome::Delivered), 1);
    assert!(n
        .metrics()
        .render_prometheus()
        .contains("connhealth_notify_deliveries_total{sink=\"ops\",outcome=\"delivered\"} 1"));
}

#[tokio::test(start_paused = true)]
async fn a_hanging_sink_times_out_and_is_retried() {
    let (_dir, store, rx, n) = setup(
        |rx| vec![webhook("ops", &rx.url("/"), json!({"timeout": "2s"}))],
        vec![],
    )
    .await;
    rx.set(Behaviour::Hang);
    commit(
        &store,
        vec![change("c1", Status::Healthy, Status::Degraded)],
        &["ops"],
    )
    .await;
    let started = tokio::time::Instant::now();
    let r = n.tick().await.unwrap();
    assert_eq!(r.retried, 1);
    assert!(tokio::time::Instant::now() - started >= Duration::from_secs(2));
    let row = &rows(&store, "ops").await[0];
    assert_eq!(row.state, DeliveryState::Pending);
    assert_eq!(row.attempts, 1);
    assert_eq!(row.last_error.as_deref(), Some("timed out after 2s"));
    assert!(row.next_attempt_at >= t0() + chrono::Duration::seconds(7));
}

#[tokio::test(start_paused = true)]
async fn huge_and_garbage_bodies_are_read_capped_and_ignored() {
    let (_dir, store, rx, n) =
        setup(|rx| vec![webhook("ops", &rx.url("/"), json!({}))], vec![]).await;
    rx.set(Behaviour::HugeBody(500));
    commit(
        &store,
        vec![change("c1", Status::Healthy, Status::Degraded)],
        &["ops"],
    )
    .await;
    n.tick().await.unwrap();
    let row = &rows(&store, "ops").await[0];
    assert_eq!(
        (row.state, row.last_error.as_deref()),
        (DeliveryState::Pending, Some("HTTP 500"))
    );
    rx.set(Behaviour::Garbage);
    tokio::time::advance(Duration::from_secs(5)).await;
    let r = n.tick().await.unwrap();
    assert_eq!(r.delivered, 1);
    rx.set(Behaviour::HugeBody(200));
    commit(
        &store,
        vec![change("c2", Status::Healthy, Status::Degraded)],
        &["ops"],
    )
    .await;
    assert_eq!(n.tick().await.unwrap().delivered, 1);
}

#[tokio::test(start_paused = true)]
async fn a_429_with_a_huge_retry_after_is_capped_and_said() {
    let (_dir, store, rx, n) =
        setup(|rx| vec![webhook("ops", &rx.url("/"), json!({}))], vec![]).await;
    rx.set(Behaviour::RetryAfter(429, "999999"));
    commit(
        &store,
        vec![change("c1", Status::Healthy, Status::Degraded)],
        &["ops"],
    )
    .await;
    n.tick().await.unwrap();
    let row = &rows(&store, "ops").await[0];
    assert_eq!(row.state, DeliveryState::Pending);
    assert_eq!(row.next_attempt_at, t0() + chrono::Duration::seconds(5));
    assert_eq!(
        row.last_error.as_deref(),
        Some("HTTP 429 (Retry-After 999999s capped at 5s, the next step)")
    );
    // A short Retry-After is honoured as given.
    rx.set(Behaviour::RetryAfter(503, "2"));
    tokio::time::advance(Duration::from_secs(5)).await;
    n.tick().await.unwrap();
    let row = &rows(&store, "ops").await[0];
    assert_eq!(row.next_attempt_at, t0() + chrono::Duration::seconds(7));
    assert_eq!(row.last_error.as_deref(), Some("HTTP 503 (Retry-After 2s)"));
}

#[tokio::test(start_paused = true)]
async fn a_redirect_is_a_failure_and_not_followed() {
    let (_dir, store, rx, n) = setup(
        |rx| vec![webhook("ops", &rx.url("/hook"), json!({}))],
        vec![],
    )
    .await;
    rx.set(Behaviour::Redirect);
    commit(
        &store,
        vec![change("c1", Status::Healthy, Status::Degraded)],
        &["ops"],
    )
    .await;
    n.tick().await.unwrap();
    let got = rx.got();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/hook");
    assert!(
        got.iter().all(|r| r.path != "/elsewhere"),
        "the redirect was not followed"
    );
    let row = &rows(&store, "ops").await[0];
    assert_eq!(row.state, DeliveryState::Pending);
    assert_eq!(
        row.last_error.as_deref(),
        Some("HTTP 302: a redirect (not followed)")
    );
}

#[tokio::test(start_paused = true)]
async fn other_4xx_fails_at_once_and_410_disables_the_sink() {
    let (_dir, store, rx, n) =
        setup(|rx| vec![webhook("ops", &rx.url("/"), json!({}))], vec![]).await;
    rx.set(Behaviour::Status(400));
    commit(
        &store,
        vec![change("c1", Status::Healthy, Status::Degraded)],
        &["ops"],
    )
    .await;
    n.tick().await.unwrap();
    let row = &rows(&store, "ops").await[0];
    assert_eq!(
        (row.state, row.attempts, row.last_error.as_deref()),
        (DeliveryState::Failed, 1, Some("HTTP 400"))
    );

    // A retry waiting, then a 410: the sink is disabled and its pending rows say so.
    rx.set(Behaviour::Status(503));
    commit(
        &store,
        vec![change("c2", Status::Healthy, Status::Degraded)],
        &["ops"],
    )
    .await;
    n.tick().await.unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    rx.set(Behaviour::Status(410));
    commit(
        &store,
        vec![change("c3", Status::Healthy, Status::Degraded)],
        &["ops"],
    )
    .await;
    n.tick().await.unwrap();
    assert!(n.is_disabled("ops"));
    let all = rows(&store, "ops").await;
    let states: Vec<_> = all.iter().map(|d| d.state).collect();
    assert_eq!(
        states,
        vec![
            DeliveryState::SinkDisabled,
            DeliveryState::SinkDisabled,
            DeliveryState::Failed
        ]
    );
    let before = rx.got().len();
    commit(
        &store,
        vec![change("c4", Status::Healthy, Status::Degraded)],
        &["ops"],
    )
    .await;
    tokio::time::advance(Duration::from_secs(10)).await;
    let r = n.tick().await.unwrap();
    assert_eq!((r.requests, r.sink_disabled), (0, 1));
    assert_eq!(rx.got().len(), before, "a disabled sink gets nothing");
}

/// Answers every name with one address.
#[derive(Debug, Clone)]
struct FixedResolver(SocketAddr);

impl reqwest::dns::Resolve for FixedResolver {
    fn resolve(&self, _: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let a = self.0;
        Box::pin(async move { Ok(Box::new(std::iter::once(a)) as reqwest::dns::Addrs) })
    }
}

#[tokio::test(start_paused = true)]
async fn a_private_address_is_refused_before_any_connection() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path()).await;
    // A listener that counts connections: the resolver points the sink's name at it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let url = format!("https://hooks.example.test:{}/x", addr.port());
    for (allow, name) in [(false, "guarded"), (true, "open")] {
        let sink = webhook(name, &url, json!({"allow_private": allow, "timeout": "1s"}));
        let opts = NotifierOptions {
            clock: Arc::new(TokioClock::starting_at(t0())),
            resolver: Arc::new(FixedResolver(addr)),
            ..NotifierOptions::default()
        };
        let n = Notifier::new(store.clone(), vec![sink], vec![], opts).unwrap();
        commit(
            &store,
            vec![change(name, Status::Healthy, Status::Degraded)],
            &[name],
        )
        .await;
        n.tick().await.unwrap();
        let row = &rows(&store, name).await[0];
        let accepted = listener.accept().is_ok();
        if allow {
            // The control: the same setup with allow_private does connect (TLS then fails).
            assert!(accepted, "allow_private connects");
            assert_eq!(row.state, DeliveryState::Pending);
        } else {
            assert!(!accepted, "no connection was attempted");
            assert_eq!(row.state, DeliveryState::Failed);
            assert_eq!(
                row.last_error.as_deref(),
                Some("refused: the host resolves to an address in a private range (allow_private is off)")
            );
        }
    }
    // A 10/8 answer is refused the same way (and never dialled).
    let sink = webhook("ten", "https://hooks.example.test/x", json!({}));
    let opts = NotifierOptions {
        clock: Arc::new(TokioClock::starting_at(t0())),
        resolver: Arc::new(FixedResolver("10.0.0.7:443".parse().unwrap())),
        ..NotifierOptions::default()
    };
    let n = Notifier::new(store.clone(), vec![sink], vec![], opts).unwrap();
    commit(
        &store,
        vec![change("t", Status::Healthy, Status::Degraded)],
        &["ten"],
    )
    .await;
    n.tick().await.unwrap();
    assert_eq!(rows(&store, "ten").await[0].state, DeliveryState::Failed);
    for ip in [
        "10.1.1.1",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "127.0.0.1",
        "::1",
        "fc00::1",
        "fe80::1",
        "::ffff:10.0.0.1",
    ] {
        assert!(is_private(ip.parse().unwrap()), "{ip}");
    }
    for ip in ["8.8.8.8", "172.32.0.1", "100.128.0.1", "2606:4700::1111"] {
        assert!(!is_private(ip.parse().unwrap()), "{ip}");
    }
}

#[tokio::test(start_paused = true)]
async fn slack_gets_a_readable_escaped_message() {
    let (_dir, store, rx, n) = setup(
        |rx| vec![slack("chat", &rx.url(&format!("/services/{SLACK_TOKEN}")))],
        vec![],
    )
    .await;
    commit(
        &store,
        vec![problem(
            "c1",
            "Token <!channel> expired & <https://evil.example|click here>",
            "https://app.example.com/reauth?a=1&b=<2>",
        )],
        &["chat"],
    )
    .await;
    assert_eq!(n.tick().await.unwrap().delivered, 1);
    let got = rx.got();
    assert!(got[0].headers.get("webhook-signature").is_none());
    let body: Value = serde_json::from_slice(&got[0].body).unwrap();
    let text = body["text"].as_str().unwrap();
    assert!(text.contains("*violet* · customer c1 · shopify"), "{text}");
    assert!(
        text.contains(
            "Token &lt;!channel&gt; expired &amp; &lt;https://evil.example|click here&gt;"
        ),
        "{text}"
    );
    assert!(
        !text.contains("<!channel>") && !text.contains("<https://evil"),
        "{text}"
    );
    assert!(
        text.contains("<https://app.example.com/reauth?a=1&amp;b=%3C2%3E|Reauthenticate>"),
        "{text}"
    );
    assert_eq!(body["blocks"][0]["text"]["text"], text);
}

#[tokio::test(start_paused = true)]
async fn sink_down_for_the_incident_then_back_after_a_restart_delivers_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start().await;
    rx.set(Behaviour::Status(503));
    let sinks = || vec![webhook("ops", &rx.url("/"), json!({}))];
    let first_ids: Vec<String>;
    {
        let store = store_in(dir.path()).await;
        let n = notifier(store.clone(), sinks(), vec![]);
        commit(
            &store,
            vec![
                change("c1", Status::Healthy, Status::Disconnected),
                change("c2", Status::Healthy, Status::ActionRequired),
                change("c3", Status::Healthy, Status::Degraded),
            ],
            &["ops"],
        )
        .await;
        // Three attempts, on the schedule (5 s, 5 min).
        n.tick().await.unwrap();
        tokio::time::advance(Duration::from_secs(5)).await;
        n.tick().await.unwrap();
        tokio::time::advance(Duration::from_secs(299)).await;
        assert_eq!(n.tick().await.unwrap().requests, 0, "not due before 5 min");
        tokio::time::advance(Duration::from_secs(1)).await;
        n.tick().await.unwrap();
        first_ids = rows(&store, "ops")
            .await
            .iter()
            .map(|d| d.message_id.clone())
            .collect();
        assert!(rows(&store, "ops")
            .await
            .iter()
            .all(|d| d.attempts == 3 && d.state == DeliveryState::Pending));
        // The process dies here: the worker and the store handle go away.
    }
    assert_eq!(rx.got().len(), 9);
    rx.set(Behaviour::Ok);
    let store = store_in(dir.path()).await;
    // The new process's clock starts where the old one was.
    let opts = NotifierOptions {
        clock: Arc::new(TokioClock::starting_at(
            t0() + chrono::Duration::seconds(305),
        )),
        ..NotifierOptions::default()
    };
    let n = Notifier::new(store.clone(), sinks(), vec![], opts).unwrap();
    assert_eq!(
        n.tick().await.unwrap().requests,
        0,
        "the next retry is at 35 min"
    );
    tokio::time::advance(Duration::from_secs(30 * 60)).await;
    assert_eq!(n.tick().await.unwrap().delivered, 3);
    tokio::time::advance(Duration::from_secs(24 * 3600)).await;
    assert_eq!(n.tick().await.unwrap(), TickReport::default());
    let got = rx.got();
    let mut by_id: BTreeMap<String, Vec<u16>> = BTreeMap::new();
    for r in &got {
        let (id, _) = verify(r);
        by_id.entry(id).or_default().push(r.answered);
    }
    assert_eq!(
        by_id.len(),
        3,
        "one webhook-id per event, across retries and the restart"
    );
    for (id, answers) in &by_id {
        assert!(first_ids.contains(id));
        assert_eq!(
            answers,
            &vec![503, 503, 503, 200],
            "{id}: delivered once, after its failures"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn muted_connections_are_never_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path()).await;
    let rx = Receiver::start().await;
    let mute: Mute = serde_json::from_value(json!({
        "match": {"connection": "violet:c1:shopify"},
        "until": t0() + chrono::Duration::hours(1), "reason": "planned migration",
    }))
    .unwrap();
    let n = notifier(
        store.clone(),
        vec![webhook("ops", &rx.url("/"), json!({}))],
        vec![mute],
    );
    commit(
        &store,
        vec![
            change("c1", Status::Healthy, Status::Disconnected),
            change("c2", Status::Healthy, Status::Disconnected),
        ],
        &["ops"],
    )
    .await;
    let r = n.tick().await.unwrap();
    assert_eq!((r.muted, r.delivered), (1, 1));
    let all = rows(&store, "ops").await;
    let muted: Vec<_> = all
        .iter()
        .filter(|d| d.state == DeliveryState::Muted)
        .collect();
    assert_eq!(muted.len(), 1);
    assert!(muted[0]
        .last_error
        .as_deref()
        .unwrap()
        .ends_with("planned migration"));
    tokio::time::advance(Duration::from_secs(7200)).await;
    n.tick().await.unwrap();
    for r in rx.got() {
        let (_, body) = verify(&r);
        assert_ne!(body["data"]["connection_id"], "violet:c1:shopify");
    }
    assert_eq!(rx.got().len(), 1);
    assert_eq!(n.metrics().get("ops", MetricOutcome::Muted), 1);
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_connections_going_unknown_is_at_most_two_deliveries_per_sink() {
    let (_dir, store, rx, n) = setup(
        |rx| {
            vec![
                webhook("ops", &rx.url("/ops"), json!({})),
                slack("chat", &rx.url("/chat")),
            ]
        },
        vec![],
    )
    .await;
    // (a) one poll: the provider answers, every connection is unknown.
    let changes: Vec<Change> = (0..10_000)
        .map(|i| change(&format!("m{i:05}"), Status::Healthy, Status::Unknown))
        .collect();
    commit(&store, changes, &["ops", "chat"]).await;
    let r = n.tick().await.unwrap();
    assert_eq!(r.requests, 2, "one digest per sink");
    assert_eq!(r.delivered, 20_000);
    let got = rx.got();
    let ops: Vec<_> = got.iter().filter(|r| r.path == "/ops").collect();
    assert_eq!(ops.len(), 1);
    let (id, body) = verify(ops[0]);
    assert!(id.starts_with("msg_digest_"));
    assert_eq!(body["type"], "connhealth.digest");
    assert_eq!(body["data"]["count"], 10_000);
    assert_eq!(body["data"]["events"].as_array().unwrap().len(), 50);
    assert_eq!(body["data"]["from"], json!(t0()));
    let chat: Vec<_> = got.iter().filter(|r| r.path == "/chat").collect();
    let text: Value = serde_json::from_slice(&chat[0].body).unwrap();
    assert!(text["text"]
        .as_str()
        .unwrap()
        .starts_with("*connhealth: 10000 changes*"));

    // (b) an outage: one provider_unavailable, its connections' moves to unknown folded in.
    let mut changes = vec![outage("violet")];
    changes.extend(
        (0..10_000).map(|i| change(&format!("m{i:05}"), Status::Degraded, Status::Unknown)),
    );
    commit(&store, changes, &["ops", "chat"]).await;
    let before = rx.got().len();
    let r = n.tick().await.unwrap();
    assert_eq!(r.requests, 2, "one outage message per sink");
    let got = rx.got();
    let (_, body) = verify(got[before..].iter().find(|r| r.path == "/ops").unwrap());
    assert_eq!(body["type"], "connhealth.provider_unavailable");
    assert!(rows(&store, "ops")
        .await
        .iter()
        .all(|d| d.state == DeliveryState::Delivered));
}

#[tokio::test(start_paused = true)]
async fn the_digest_window_holds_then_groups() {
    let (_dir, store, rx, n) = setup(
        |rx| vec![webhook("ops", &rx.url("/"), json!({"digest_secs": 30}))],
        vec![],
    )
    .await;
    commit(
        &store,
        (0..6)
            .map(|i| change(&format!("a{i}"), Status::Healthy, Status::Degraded))
            .collect(),
        &["ops"],
    )
    .await;
    let r = n.tick().await.unwrap();
    assert_eq!((r.requests, r.held), (0, 6), "held for the window");
    tokio::time::advance(Duration::from_secs(10)).await;
    commit(
        &store,
        (0..6)
            .map(|i| change(&format!("b{i}"), Status::Healthy, Status::Degraded))
            .collect(),
        &["ops"],
    )
    .await;
    let r = n.tick().await.unwrap();
    assert_eq!(
        (r.requests, r.delivered),
        (1, 12),
        "12 > 10 within 30 s: one digest"
    );
    let (_, body) = verify(&rx.got()[0]);
    assert_eq!(body["type"], "connhealth.digest");
    assert_eq!(body["data"]["count"], 12);
    // Three alone: sent once the window has passed, one by one.
    commit(
        &store,
        (0..3)
            .map(|i| change(&format!("c{i}"), Status::Healthy, Status::Degraded))
            .collect(),
        &["ops"],
    )
    .await;
    assert_eq!(n.tick().await.unwrap().requests, 0);
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(n.tick().await.unwrap().requests, 3);
}

#[tokio::test(start_paused = true)]
async fn a_first_poll_into_an_empty_store_is_one_digest() {
    let (_dir, store, rx, n) =
        setup(|rx| vec![webhook("ops", &rx.url("/"), json!({}))], vec![]).await;
    let changes: Vec<Change> = (0..500)
        .map(|i| {
            serde_json::from_value(json!({
                "event": "appeared", "status": "degraded",
                "connection_id": format!("violet:m{i}:shopify"), "provider": "violet",
                "customer_id": format!("m{i}"), "platform": "shopify", "at": t0(), "since": null,
            }))
            .unwrap()
        })
        .collect();
    commit(&store, changes, &["ops"]).await;
    assert_eq!(n.tick().await.unwrap().requests, 1);
    let (_, body) = verify(&rx.got()[0]);
    assert_eq!(body["data"]["count"], 500);
}

#[tokio::test(start_paused = true)]
async fn send_test_sends_one_signed_event() {
    let (_dir, store, rx, n) =
        setup(|rx| vec![webhook("ops", &rx.url("/"), json!({}))], vec![]).await;
    assert_eq!(n.send_test("ops").await.unwrap(), Attempt::Delivered(200));
    let (id, body) = verify(&rx.got()[0]);
    assert!(id.starts_with("msg_test_"));
    assert_eq!(body["type"], "connhealth.test");
    assert!(n.send_test("nope").await.is_err());
    assert!(rows(&store, "ops").await.is_empty(), "outside the outbox");
}

#[test]
fn the_readme_config_parses_and_validates() {
    #[derive(serde::Deserialize)]
    struct File {
        notify: Vec<SinkConfig>,
        #[serde(default)]
        mute: Vec<Mute>,
    }
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = &readme[readme.find("### Notifications out").unwrap()..];
    let start = section.find("```toml\n").unwrap() + "```toml\n".len();
    let text = &section[start..start + section[start..].find("```").unwrap()];
    let file: File = toml::from_str(text).unwrap();
    let env = |k: &str| match k {
        "CONNHEALTH_NOTIFY_SECRET" => Some(SECRET.to_owned()),
        "SLACK_WEBHOOK_URL" => Some("https://hooks.slack.com/services/T0/B0/x".to_owned()),
        _ => None,
    };
    let sinks = validate_all(&file.notify, &file.mute, env).unwrap();
    assert_eq!(sinks.len(), 2);
    assert_eq!(sinks[0].filter.min_severity, Some(Status::Degraded));
    assert_eq!(sinks[0].digest, Some(Duration::from_secs(30)));
    assert_eq!(sinks[1].kind, SinkKind::Slack);
    assert_eq!(
        file.mute[0].matches.customer.as_deref(),
        Some("violet:10042")
    );
}

#[tokio::test(start_paused = true)]
async fn a_410_disables_the_sink_across_restarts_until_its_config_changes() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start().await;
    rx.set(Behaviour::Status(410));
    {
        let store = store_in(dir.path()).await;
        let n = notifier(
            store.clone(),
            vec![webhook("ops", &rx.url("/"), json!({}))],
            vec![],
        );
        commit(
            &store,
            vec![change("c1", Status::Healthy, Status::Degraded)],
            &["ops"],
        )
        .await;
        n.tick().await.unwrap();
        assert!(n.is_disabled("ops"));
        assert!(n
            .render_prometheus()
            .contains("connhealth_notify_sink_disabled{sink=\"ops\"} 1\n"));
    }
    rx.set(Behaviour::Ok);
    // Restarted with the same config: still disabled, nothing is sent.
    let store = store_in(dir.path()).await;
    let n = notifier(
        store.clone(),
        vec![webhook("ops", &rx.url("/"), json!({}))],
        vec![],
    );
    assert_eq!(n.restore().await.unwrap(), vec!["ops".to_owned()]);
    assert!(n.is_disabled("ops"));
    commit(
        &store,
        vec![change("c2", Status::Healthy, Status::Degraded)],
        &["ops"],
    )
    .await;
    let r = n.tick().await.unwrap();
    assert_eq!((r.requests, r.sink_disabled), (0, 1));
    assert_eq!(rx.got().len(), 1, "only the first 410 attempt");
    drop(n);
    // The URL changed (a new endpoint): enabled again, and the store forgets the 410.
    let n = notifier(
        store.clone(),
        vec![webhook("ops", &rx.url("/v2"), json!({}))],
        vec![],
    );
    assert!(n.restore().await.unwrap().is_empty());
    assert!(!n.is_disabled("ops"));
    assert!(store.disabled_sinks().await.unwrap().is_empty());
    assert!(n
        .render_prometheus()
        .contains("connhealth_notify_sink_disabled{sink=\"ops\"} 0\n"));
    commit(
        &store,
        vec![change("c3", Status::Healthy, Status::Degraded)],
        &["ops"],
    )
    .await;
    assert_eq!(n.tick().await.unwrap().delivered, 1);
}

#[tokio::test(start_paused = true)]
async fn mutes_in_the_store_apply_at_the_next_tick() {
    let (_dir, store, rx, n) =
        setup(|rx| vec![webhook("ops", &rx.url("/"), json!({}))], vec![]).await;
    store
        .add_mute(
            connhealth_store::NewMute {
                provider: None,
                customer: Some("violet:c1".into()),
                connection: None,
                until: t0() + chrono::Duration::hours(1),
                reason: "api mute".into(),
            },
            t0(),
        )
        .await
        .unwrap();
    commit(
        &store,
        vec![
            change("c1", Status::Healthy, Status::Disconnected),
            change("c2", Status::Healthy, Status::Disconnected),
        ],
        &["ops"],
    )
    .await;
    let r = n.tick().await.unwrap();
    assert_eq!((r.muted, r.delivered), (1, 1));
    let got = rx.got();
    assert_eq!(got.len(), 1);
    assert_eq!(verify(&got[0]).1["data"]["customer_id"], "c2");
}

#[tokio::test(start_paused = true)]
async fn only_the_lease_holder_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path()).await;
    let rx = Receiver::start().await;
    let sinks = || vec![webhook("ops", &rx.url("/"), json!({}))];
    // Another replica holds the lease.
    assert!(store
        .try_lease(LEASE, "replica-b", chrono::Duration::seconds(30), t0())
        .await
        .unwrap());
    let n = Arc::new(notifier(store.clone(), sinks(), vec![]));
    commit(
        &store,
        vec![change("c1", Status::Healthy, Status::Degraded)],
        &["ops"],
    )
    .await;
    let task = n.clone().spawn_leased(
        Duration::from_secs(1),
        "replica-a".into(),
        Duration::from_secs(30),
    );
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(rx.got().is_empty(), "the follower sends nothing");
    // replica-b died: its lease runs out and replica-a takes over.
    let mut rounds = 0;
    while rx.got().is_empty() && rounds < 60 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rounds += 1;
    }
    assert_eq!(rx.got().len(), 1);
    assert_eq!(
        store
            .lease_holder(LEASE, t0() + chrono::Duration::seconds(45))
            .await
            .unwrap()
            .as_deref(),
        Some("replica-a")
    );
    task.abort();
}

fn stored_conn(
    customer: &str,
    status: Status,
    since: chrono::DateTime<chrono::Utc>,
) -> connhealth_core::watch::Tracked {
    let connection: connhealth_core::Connection = serde_json::from_value(json!({
        "id": format!("violet:{customer}:shopify"), "provider": "violet",
        "provider_connection_id": null,
        "customer": {"id": customer, "name": "Customer", "email": "owner@example.com"},
        "platform": "shopify", "role": "source", "status": status,
        "provider_status": status.as_str(), "connected_at": null, "sync": null, "checks": [],
        "problems": [], "accounts": [], "observed_at": since, "data_as_of": null,
    }))
    .unwrap();
    connhealth_core::watch::Tracked {
        connection: connection.into(),
        since,
        streak: 0,
        worsening: false,
    }
}

async fn upsert(store: &Arc<dyn connhealth_store::Store>, t: Vec<connhealth_core::watch::Tracked>) {
    store
        .commit_poll(connhealth_store::PollRecord {
            at: t0(),
            upserts: t,
            ..connhealth_store::PollRecord::default()
        })
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn remind_after_renotifies_a_still_bad_connection_once_per_interval_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path()).await;
    let rx = Receiver::start().await;
    let mute: Mute = serde_json::from_value(json!({
        "match": {"customer": "violet:c2"}, "until": t0() + chrono::Duration::days(30),
    }))
    .unwrap();
    let sinks = || {
        vec![webhook(
            "ops",
            &rx.url("/"),
            json!({"remind_after": "1h", "retry_schedule": ["10m"]}),
        )]
    };
    upsert(
        &store,
        vec![
            stored_conn("c1", Status::Disconnected, t0()),
            stored_conn("c2", Status::Disconnected, t0()),
            stored_conn("c3", Status::Healthy, t0()),
        ],
    )
    .await;
    let n = notifier(store.clone(), sinks(), vec![mute.clone()]);
    let step = |m: u64| tokio::time::advance(Duration::from_secs(m * 60));
    assert_eq!(n.tick().await.unwrap().requests, 0);
    step(59).await;
    assert_eq!(n.tick().await.unwrap().requests, 0, "not before 1 h");
    step(1).await;
    let r = n.tick().await.unwrap();
    assert_eq!((r.requests, r.reminded), (1, 1));
    let got = rx.got();
    let (id, body) = verify(&got[0]);
    assert!(id.starts_with("msg_remind_"), "{id}");
    assert_eq!(body["type"], "connhealth.reminder");
    assert_eq!(body["data"]["count"], 1);
    let c = &body["data"]["connections"][0];
    assert_eq!(c["connection_id"], "violet:c1:shopify");
    assert_eq!(c["status"], "disconnected");
    assert_eq!(c["bad_for_seconds"], 3600);
    assert!(
        !got[0].body.windows(9).any(|w| w == b"example.c"),
        "no e-mail in a reminder"
    );
    step(30).await;
    assert_eq!(n.tick().await.unwrap().requests, 0, "once per interval");
    drop(n);

    // A restart at 1 h 30: nothing again until 2 h.
    let opts = || NotifierOptions {
        clock: Arc::new(TokioClock::starting_at(
            t0() + chrono::Duration::minutes(90),
        )),
        ..NotifierOptions::default()
    };
    let n = Notifier::new(store.clone(), sinks(), vec![mute.clone()], opts()).unwrap();
    assert_eq!(n.tick().await.unwrap().requests, 0);
    step(30).await;
    assert_eq!(
        n.tick().await.unwrap().reminded,
        1,
        "the second reminder at 2 h"
    );
    // A sink down at 3 h: tried, then again after the schedule's first step (10 min).
    rx.set(Behaviour::Status(503));
    step(60).await;
    assert_eq!(n.tick().await.unwrap().requests, 1);
    assert_eq!(n.tick().await.unwrap().requests, 0, "not hammered");
    rx.set(Behaviour::Ok);
    step(10).await;
    assert_eq!(n.tick().await.unwrap().reminded, 1);
    assert_eq!(n.metrics().get("ops", MetricOutcome::Reminded), 2);
    // Recovered: no more reminders.
    upsert(&store, vec![stored_conn("c1", Status::Healthy, t0())]).await;
    step(600).await;
    assert_eq!(n.tick().await.unwrap().requests, 0);
    let got = rx.got();
    assert_eq!(got.len(), 4);
    for g in &got {
        let (_, b) = verify(g);
        assert_ne!(b["data"]["connections"][0]["customer_id"], "c2", "muted");
    }
}
