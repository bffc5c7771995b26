//! Three replicas (the real `connhealth serve` binary, three processes) on one real
//! PostgreSQL database the test starts, over the Subtotal simulator, with a `[[notify]]` sink
//! (a loopback receiver): the leader is killed with SIGKILL in the middle of a poll; another
//! replica leads within 30 s, `/v1/connections` answers 200 on the survivors throughout,
//! history holds no duplicated transition and every outbox row reaches the receiver.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use connhealth_testkit::faults::Fault;
use connhealth_testkit::SubtotalSim;
use serde_json::Value;

mod common;
/// The store crate's fixtures: the PostgreSQL cluster the tests start (initdb + pg_ctl in a
/// temp dir), used from there rather than copied.
#[path = "../../store/tests/common/mod.rs"]
mod pg;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// What the receiver got: `(webhook-id, answered status)`, in arrival order.
#[derive(Clone, Default)]
struct Rx {
    got: Arc<Mutex<Vec<(String, u16)>>>,
    status: Arc<AtomicU16>,
}

async fn hook(State(rx): State<Rx>, headers: HeaderMap) -> StatusCode {
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let answered = rx.status.load(Ordering::SeqCst);
    rx.got.lock().unwrap().push((id, answered));
    StatusCode::from_u16(answered).unwrap()
}

impl Rx {
    async fn start(status: u16) -> (Rx, String) {
        let rx = Rx::default();
        rx.status.store(status, Ordering::SeqCst);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(rx.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (rx, format!("http://{addr}/hook"))
    }
    fn delivered(&self) -> BTreeSet<String> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| *s == 200)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

async fn get(url: &str) -> Value {
    let resp = reqwest::get(url).await.unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    resp.json().await.unwrap()
}

async fn metrics(base: &str) -> String {
    match reqwest::get(format!("{base}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Which replica this one says leads (`None`: it does not know, or cannot be asked).
async fn leader_of(base: &str) -> Option<(String, bool)> {
    let m = metrics(base).await;
    let line = m.lines().find(|l| l.starts_with("connhealth_leader{"))?;
    let leader = line
        .split("leader=\"")
        .nth(1)?
        .split('"')
        .next()?
        .to_owned();
    Some((leader, line.ends_with(" 1")))
}

/// Waits until `ok` holds, checking every 50 ms; panics after `limit` (a guard against a
/// hang, not a timing assertion).
async fn wait_for(limit: Duration, mut ok: impl AsyncFnMut() -> bool, what: &str) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ok().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within {limit:?}");
}

async fn all_events(base: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = get(&format!("{base}/v1/events?after={after}&limit=1000")).await;
        let items = page["items"].as_array().unwrap().clone();
        if items.is_empty() {
            return out;
        }
        after = items.last().unwrap()["id"].as_i64().unwrap();
        out.extend(items);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_survive_a_sigkill_of_the_leader_mid_poll() {
    if pg::skip_postgres() {
        return;
    }
    let cluster = pg::shared_cluster();
    let db = cluster.create_db();
    let store = format!("postgres://postgres@127.0.0.1:{}/{db}", cluster.port);

    // Six customers, one request at a time, 300 ms each: a poll takes about 2 s, so the
    // leader can be killed while one is in flight.
    let sim = SubtotalSim::start_generated(6, 11).await.unwrap();
    let healthy: Vec<String> = sim
        .connection_ids()
        .into_iter()
        .filter(|i| sim.connection(i).is_some_and(|c| c.status == "active"))
        .collect();
    assert!(healthy.len() >= 3, "{healthy:?}");
    let (rx, hook_url) = Rx::start(503).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("connhealth.toml");
    std::fs::write(
        &cfg,
        format!(
            "store = \"{store}\"\nconcurrency = 1\n\
             [[notify]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"{hook_url}\"\nsecret_env = \"T_NOTIFY_SECRET\"\n\
             events = [\"status_changed\"]\nretry_schedule = [\"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\"]\n\
             [[provider]]\nkind = \"subtotal\"\nbase_url = \"{}\"\napi_key_env = \"T_SUBTOTAL_KEY\"\ncustomers = {:?}\n",
            sim.base_url(),
            sim.customer_ids()
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap().to_owned();
    let env = [
        ("T_SUBTOTAL_KEY", sim.api_key()),
        ("T_NOTIFY_SECRET", SECRET),
        ("PGPASSWORD", pg::PG_PASSWORD),
    ];
    let start = async |id: &str| {
        let args = [
            "serve",
            "--config",
            cfg.as_str(),
            "--listen",
            "127.0.0.1:0",
            "--interval",
            "1s",
            "--replica-id",
            id,
        ];
        common::start_server(&args, &env).await
    };

    // r1 first, so it leads (and holds the notify lease); then r2 and r3 follow.
    let mut replicas = BTreeMap::new();
    let (child, base, _, rest) = start("r1").await;
    wait_for(
        Duration::from_secs(30),
        async || leader_of(&base).await == Some(("r1".into(), true)),
        "r1 leads",
    )
    .await;
    wait_for(
        Duration::from_secs(30),
        async || !all_events(&base).await.is_empty(),
        "the first poll stored",
    )
    .await;
    replicas.insert("r1", (child, base, rest));
    for id in ["r2", "r3"] {
        let (child, base, _, rest) = start(id).await;
        wait_for(
            Duration::from_secs(30),
            async || leader_of(&base).await == Some(("r1".into(), false)),
            "a follower that knows r1 leads",
        )
        .await;
        replicas.insert(id, (child, base, rest));
    }
    let survivors: Vec<String> = ["r2", "r3"]
        .iter()
        .map(|id| replicas[id].1.clone())
        .collect();

    // Two connections break while the receiver answers 503: their notifications are pending
    // (retried every second) when the leader dies.
    for c in &healthy[..2] {
        assert!(sim.set_status(c, "unauthenticated"));
    }
    wait_for(
        Duration::from_secs(30),
        async || {
            let got = rx.got.lock().unwrap().clone();
            got.iter().map(|(id, _)| id).collect::<BTreeSet<_>>().len() >= 2
        },
        "two notifications attempted",
    )
    .await;

    // /v1/connections on the survivors, in a loop, from now until the end.
    let answers = Arc::new(Mutex::new(Vec::<(String, u16)>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let prober = {
        let (answers, done, survivors) = (answers.clone(), done.clone(), survivors.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            while !done.load(Ordering::SeqCst) {
                for base in &survivors {
                    let status = match client
                        .get(format!("{base}/v1/connections?limit=50"))
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await
                    {
                        Ok(r) => r.status().as_u16(),
                        Err(_) => 0,
                    };
                    answers.lock().unwrap().push((base.clone(), status));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // Kill -9 the leader while one of its poll's requests is in flight.
    sim.faults()
        .on_all(Fault::Latency(Duration::from_millis(300)));
    wait_for(
        Duration::from_secs(30),
        async || sim.stats().in_flight("list_connections") > 0,
        "the leader mid-poll",
    )
    .await;
    let (mut leader, _, leader_rest) = replicas.remove("r1").unwrap();
    leader.start_kill().unwrap(); // SIGKILL
    leader.wait().await.unwrap();
    let killed = Instant::now();
    drop(leader_rest);
    rx.status.store(200, Ordering::SeqCst);

    let mut new_leader = None;
    wait_for(
        Duration::from_secs(30),
        async || {
            for (id, (_, base, _)) in &replicas {
                if leader_of(base).await == Some(((*id).to_owned(), true)) {
                    new_leader = Some(*id);
                    return true;
                }
            }
            false
        },
        "another replica leads",
    )
    .await;
    let takeover = killed.elapsed();
    let new_leader = new_leader.unwrap();
    eprintln!(
        "takeover: {new_leader} leads {:.1} s after the SIGKILL ({:.2} of the 30 s bound)",
        takeover.as_secs_f64(),
        takeover.as_secs_f64() / 30.0
    );
    let base = replicas[new_leader].1.clone();

    // The new leader polls: a third connection breaks and is announced (and notified).
    assert!(sim.set_status(&healthy[2], "unauthenticated"));
    let third = format!("subtotal:{}", healthy[2]);
    wait_for(
        Duration::from_secs(30),
        async || {
            all_events(&base)
                .await
                .iter()
                .any(|e| e["connection_id"] == third.as_str() && e["event"] == "status_changed")
        },
        "the new leader's change stored",
    )
    .await;

    // Every outbox row reaches the receiver (the dead process's notify lease runs out first).
    let rows = async || -> BTreeSet<String> {
        get(&format!("{base}/v1/notifications?sink=ops&limit=200")).await["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| format!("msg_{}", n["id"].as_i64().unwrap()))
            .collect()
    };
    wait_for(
        Duration::from_secs(60),
        async || {
            let want = rows().await;
            want.len() >= 3 && want.is_subset(&rx.delivered())
        },
        "every notification delivered",
    )
    .await;
    done.store(true, Ordering::SeqCst);
    prober.await.unwrap();

    // Every probe answered 200, on both survivors, through the takeover.
    let answers = answers.lock().unwrap().clone();
    assert!(answers.len() > 20, "{answers:?}");
    assert!(
        answers.iter().all(|(_, s)| *s == 200),
        "{:?}",
        answers
            .iter()
            .filter(|(_, s)| *s != 200)
            .collect::<Vec<_>>()
    );
    for s in &survivors {
        assert!(answers.iter().any(|(b, _)| b == s));
    }

    // No duplicated transition: per connection, no two status changes in a row to the same
    // status (a takeover that re-announced would make one).
    let events = all_events(&base).await;
    let mut last_to: BTreeMap<String, String> = BTreeMap::new();
    for e in events.iter().filter(|e| e["event"] == "status_changed") {
        let id = e["connection_id"].as_str().unwrap().to_owned();
        let to = e["to"].as_str().unwrap().to_owned();
        assert_ne!(last_to.get(&id), Some(&to), "duplicated transition: {e}");
        last_to.insert(id, to);
    }
    for c in &healthy[..3] {
        let id = format!("subtotal:{c}");
        assert_eq!(
            last_to.get(&id).map(String::as_str),
            Some("action_required"),
            "{id}"
        );
    }
    // Event ids are unique and increasing (one writer at a time).
    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    for (_, (mut child, _, _)) in replicas {
        child.start_kill().unwrap();
        child.wait().await.unwrap();
    }
}
