//! Notifications out, end to end: the real `connhealth` binary (serve, watch, notifications,
//! notify test) against the Subtotal simulator, a real SQLite store and a loopback Standard
//! Webhooks receiver (axum) that verifies every signature; serve killed with SIGKILL while
//! retries are pending.

use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use connhealth_core::Secret;
use connhealth_notify::Signer;
use connhealth_testkit::SubtotalSim;
use serde_json::Value;

mod common;

use common::BIN;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const DOC_CONNECTION: &str = "01J51S0JYV6N7K1030CV1ZKSCA";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Got {
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
    answered: u16,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Clone, Default)]
struct Rx {
    got: Arc<Mutex<Vec<Got>>>,
    status: Arc<AtomicU16>,
}

async fn hook(State(rx): State<Rx>, headers: HeaderMap, body: axum::body::Bytes) -> StatusCode {
    let h = |k: &str| {
        headers
            .get(k)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let answered = rx.status.load(Ordering::SeqCst);
    let got = Got {
        id: h("webhook-id"),
        timestamp: h("webhook-timestamp"),
        signature: h("webhook-signature"),
        body: body.to_vec(),
        answered,
    };
    let signer = Signer::new(&Secret::new(SECRET)).unwrap();
    assert!(
        signer.verify(
            &got.id,
            got.timestamp.parse().unwrap(),
            &got.body,
            &got.signature
        ),
        "the Standard Webhooks signature verifies"
    );
    rx.got.lock().unwrap().push(got);
    StatusCode::from_u16(answered).unwrap()
}

impl Rx {
    /// A receiver on loopback answering `status` (changeable), on its own runtime thread so
    /// it outlives nothing but the test.
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
    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }
    fn set(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }
}

async fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .env_remove("CONNHEALTH_LOG")
        .env_remove("T_NOTIFY_SECRET")
        .env("NO_COLOR", "1");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().await.expect("the binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn config(dir: &Path, sim: &SubtotalSim, notify: &str) -> String {
    let p = dir.join("connhealth.toml");
    std::fs::write(
        &p,
        format!(
            "store = \"sqlite://ch.db\"\n{notify}\n[[provider]]\nkind = \"subtotal\"\nbase_url = \"{}\"\napi_key_env = \"T_SUBTOTAL_KEY\"\ncustomers = {:?}\n",
            sim.base_url(),
            sim.customer_ids()
        ),
    )
    .unwrap();
    p.to_str().unwrap().to_owned()
}

fn sink(url: &str, extra: &str) -> String {
    format!(
        "[[notify]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret_env = \"T_NOTIFY_SECRET\"\n{extra}\n"
    )
}

async fn get(url: &str) -> Value {
    let resp = reqwest::get(url).await.unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    resp.json().await.unwrap()
}

/// Polls `ok` every 50 ms, at most `tries` times.
async fn wait_for(tries: usize, mut ok: impl AsyncFnMut() -> bool, what: &str) {
    for _ in 0..tries {
        if ok().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen after {tries} checks");
}

async fn events(base: &str) -> Vec<Value> {
    get(&format!("{base}/v1/events?after=0&limit=1000")).await["items"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_notify_table_stops_serve_in_one_line_at_start() {
    let sim = SubtotalSim::start_generated(1, 1).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = ("T_SUBTOTAL_KEY", sim.api_key());
    type Env<'a> = Vec<(&'a str, &'a str)>;
    let cases: Vec<(String, Env<'_>, &str)> = vec![
        (
            sink("https://hooks.example.com/x", ""),
            vec![key],
            "notify \"ops\": secret_env: environment variable T_NOTIFY_SECRET is not set",
        ),
        (
            sink("https://hooks.example.com/x", ""),
            vec![key, ("T_NOTIFY_SECRET", "whsec_not base64!")],
            "notify \"ops\": secret_env T_NOTIFY_SECRET: the secret after whsec_ is not base64",
        ),
        (
            sink("http://hooks.example.com/x", ""),
            vec![key, ("T_NOTIFY_SECRET", SECRET)],
            "notify \"ops\": url must be https:// (http:// only on loopback)",
        ),
        (
            sink("https://hooks.example.com/x", "retry_schedule = [\"soon\"]"),
            vec![key, ("T_NOTIFY_SECRET", SECRET)],
            "notify \"ops\": retry_schedule \"soon\"",
        ),
        (
            "[[mute]]\nmatch = {}\nuntil = 2030-01-01T00:00:00Z\n".into(),
            vec![key],
            "mute: match needs at least one of provider, customer, connection",
        ),
        (
            "[[mute]]\nmatch = { provider = \"subtotal\" }\nuntil = \"tomorrow\"\n".into(),
            vec![key],
            "mute[0].until: ",
        ),
    ];
    for (notify, env, want) in cases {
        let cfg = config(dir.path(), &sim, &notify);
        let out = run(
            &["serve", "--config", &cfg, "--listen", "127.0.0.1:0"],
            &env,
        )
        .await;
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{notify}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(
            err.starts_with(&format!("connhealth: {cfg}: {want}")),
            "{notify}\n got: {err}\nwant: {want}"
        );
        assert!(!err.contains("MfKQ9r8"), "no secret: {err}");
    }
    // A valid table (a bare TOML date-time in a mute is fine) passes `config validate`.
    let cfg = config(
        dir.path(),
        &sim,
        &format!(
            "{}[[mute]]\nmatch = {{ provider = \"subtotal\" }}\nuntil = 2030-01-01T00:00:00Z\n",
            sink("https://hooks.example.com/x", "")
        ),
    );
    let out = run(
        &["config", "validate", "--config", &cfg],
        &[key, ("T_NOTIFY_SECRET", SECRET)],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_delivers_one_signed_event_when_a_connection_breaks_and_one_for_an_outage() {
    let sim = SubtotalSim::start_generated(3, 1).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (rx, url) = Rx::start(200).await;
    let cfg = config(
        dir.path(),
        &sim,
        &sink(
            &url,
            "events = [\"status_changed\", \"provider_unavailable\"]\nretry_schedule = [\"1s\"]",
        ),
    );
    let env = [
        ("T_SUBTOTAL_KEY", sim.api_key()),
        ("T_NOTIFY_SECRET", SECRET),
        ("CONNHEALTH_LOG", "connhealth_notify=debug,info"),
    ];
    let args = [
        "serve",
        "--config",
        cfg.as_str(),
        "--listen",
        "127.0.0.1:0",
        "--interval",
        "1s",
    ];
    let (mut child, base, first_lines, rest) = common::start_server(&args, &env).await;
    assert!(
        first_lines
            .iter()
            .any(|l| l.contains("connhealth: notifying ops")),
        "{first_lines:?}"
    );
    wait_for(
        300,
        async || !events(&base).await.is_empty(),
        "the first poll stored",
    )
    .await;
    // The first poll's `appeared` events are not status changes: nothing is sent.
    assert!(rx.got().is_empty(), "{:?}", rx.got());

    assert!(sim.set_status(DOC_CONNECTION, "unauthenticated"));
    wait_for(300, async || !rx.got().is_empty(), "the delivery").await;
    // Two more polls: still exactly one delivery.
    let polls = sim.stats().total_requests();
    wait_for(
        300,
        async || sim.stats().total_requests() > polls + 4,
        "two more polls",
    )
    .await;
    let got = rx.got();
    assert_eq!(got.len(), 1, "{got:?}");
    let body = got[0].json();
    assert_eq!(body["type"], "connhealth.status_changed");
    let id = format!("subtotal:{DOC_CONNECTION}");
    assert_eq!(body["data"]["connection_id"], id.as_str());
    assert_eq!(body["data"]["to"], "action_required");
    assert_eq!(body["data"]["source"], "poll");
    let stored = events(&base).await;
    let event = stored
        .iter()
        .find(|e| e["event"] == "status_changed")
        .unwrap();
    assert_eq!(body["data"], *event, "data is the stored change event");

    // The outbox, over HTTP and from the CLI beside the running serve.
    let n = get(&format!("{base}/v1/notifications?sink=ops")).await;
    let items = n["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{n}");
    assert_eq!(items[0]["state"], "delivered");
    assert_eq!(items[0]["attempts"], 1);
    assert_eq!(items[0]["message_id"], got[0].id.as_str());
    assert_eq!(n["sinks"][0]["disabled"], false);
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .contains("connhealth_notify_deliveries_total{sink=\"ops\",outcome=\"delivered\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("connhealth_notify_requests_total{sink=\"ops\"} 1\n"));
    let out = run(
        &["notifications", "--config", &cfg, "--format", "json"],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cli["items"], n["items"]);
    let out = run(
        &[
            "notifications",
            "--config",
            &cfg,
            "--state",
            "delivered",
            "--sink",
            "ops",
        ],
        &[],
    )
    .await;
    let table = text(&out.stdout);
    assert!(
        table.starts_with("ID") && table.contains("delivered"),
        "{table}"
    );
    let out = run(
        &["notifications", "--config", &cfg, "--state", "failed"],
        &[],
    )
    .await;
    assert_eq!(text(&out.stdout), "no notifications stored\n");

    // The README's Python receiver verifies a real delivery (and refuses a changed body).
    check_readme_snippet(&got[0]);

    // A provider outage (every connection goes unknown): ONE provider_unavailable message.
    sim.faults().on_all(connhealth_testkit::Fault::Status {
        status: 401,
        retry_after: None,
        body: None,
    });
    wait_for(300, async || rx.got().len() >= 2, "the outage notification").await;
    let polls = sim.stats().total_requests();
    wait_for(
        300,
        async || sim.stats().total_requests() > polls + 2,
        "more polls",
    )
    .await;
    let got = rx.got();
    assert_eq!(got.len(), 2, "one message for the outage: {got:?}");
    assert_eq!(got[1].json()["type"], "connhealth.provider_unavailable");
    // The outbox agrees: two rows, both delivered, nothing pending per connection.
    let n = get(&format!("{base}/v1/notifications?limit=1000")).await;
    let states: Vec<&str> = n["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["delivered", "delivered"], "{n}");
    sim.faults().clear();

    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let logs = rest.await.unwrap().join("\n");
    assert!(!logs.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), "{logs}");
    assert!(!logs.contains(sim.api_key()), "{logs}");
}

/// Runs the README's `verify` (Python, stdlib only) on a real delivery, if python3 is here.
fn check_readme_snippet(got: &Got) {
    let Ok(v) = std::process::Command::new("python3")
        .arg("--version")
        .output()
    else {
        eprintln!("python3 is not installed: the README snippet is not run");
        return;
    };
    if !v.status.success() {
        return;
    }
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let start = readme.find("```python\n").expect("a python block") + "```python\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let snippet = &readme[start..end];
    assert!(snippet.contains("def verify("));
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("check.py");
    std::fs::write(
        &script,
        format!(
            "{snippet}\nimport json, sys\nd = json.load(sys.stdin)\nbody = base64.b64decode(d['body'])\nh = d['headers']\nprint(verify(d['secret'], h, body), verify(d['secret'], h, body + b' '))\n"
        ),
    )
    .unwrap();
    use base64::Engine;
    let input = serde_json::json!({
        "secret": SECRET,
        "headers": {"webhook-id": got.id, "webhook-timestamp": got.timestamp, "webhook-signature": got.signature},
        "body": base64::engine::general_purpose::STANDARD.encode(&got.body),
    });
    let mut child = std::process::Command::new("python3")
        .arg(&script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        text(&out.stdout).trim(),
        "True False",
        "the README's verify"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_test_sends_one_signed_event_and_says_how_it_went() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SubtotalSim::start_generated(1, 1).await.unwrap();
    let (rx, url) = Rx::start(200).await;
    let cfg = config(dir.path(), &sim, &sink(&url, "timeout = \"5s\""));
    // No provider variable is needed: only [[notify]] is read.
    let env = [("T_NOTIFY_SECRET", SECRET)];
    let out = run(&["notify", "test", "--sink", "ops", "--config", &cfg], &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "sink ops: delivered (HTTP 200)\n");
    let got = rx.got();
    assert_eq!(got.len(), 1);
    let body = got[0].json();
    assert_eq!(body["type"], "connhealth.test");
    assert_eq!(body["data"]["sink"], "ops");

    rx.set(503);
    let out = run(&["notify", "test", "--sink", "ops", "--config", &cfg], &env).await;
    assert_eq!(out.status.code(), Some(69));
    assert_eq!(text(&out.stdout), "sink ops: not delivered: HTTP 503\n");
    rx.set(400);
    let out = run(&["notify", "test", "--sink", "ops", "--config", &cfg], &env).await;
    assert_eq!(out.status.code(), Some(69));
    assert_eq!(text(&out.stdout), "sink ops: refused: HTTP 400\n");
    assert_eq!(rx.got().len(), 3);

    let out = run(
        &["notify", "test", "--sink", "nope", "--config", &cfg],
        &env,
    )
    .await;
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("no [[notify]] sink named \"nope\""));
    // Nothing listens on the port: a connection error, not a panic; the URL is not printed.
    drop(rx);
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let cfg = config(
        dir.path(),
        &sim,
        &sink(&format!("http://127.0.0.1:{port}/hook"), ""),
    );
    let out = run(&["notify", "test", "--sink", "ops", "--config", &cfg], &env).await;
    assert_eq!(out.status.code(), Some(69));
    let said = text(&out.stdout);
    assert!(
        said.starts_with("sink ops: not delivered: connection error"),
        "{said}"
    );
    assert!(!said.contains(&port.to_string()), "{said}");
}

/// The issue's reliability test: the sink is down for the whole incident, serve is killed
/// with SIGKILL while retries are pending, the sink comes back, serve restarts on the same
/// store: every event is delivered once, with the `webhook-id` of its first attempt; none for
/// the muted connection; no secret in any payload or log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_retry_then_restart_delivers_every_event_once_with_its_first_id() {
    let sim = SubtotalSim::start_generated(3, 7).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (rx, url) = Rx::start(503).await;
    let ids = sim.connection_ids();
    let healthy: Vec<String> = ids
        .iter()
        .filter(|i| sim.connection(i).is_some_and(|c| c.status == "active"))
        .cloned()
        .collect();
    assert!(healthy.len() >= 3, "{ids:?}");
    let (a, b, muted) = (&healthy[0], &healthy[1], &healthy[2]);
    let cfg = config(
        dir.path(),
        &sim,
        &format!(
            "{}[[mute]]\nmatch = {{ connection = \"subtotal:{muted}\" }}\nuntil = \"2099-01-01T00:00:00Z\"\nreason = \"planned migration\"\n",
            sink(&url, "events = [\"status_changed\"]\nretry_schedule = [\"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\"]"),
        ),
    );
    let env = [
        ("T_SUBTOTAL_KEY", sim.api_key()),
        ("T_NOTIFY_SECRET", SECRET),
        ("CONNHEALTH_LOG", "debug"),
    ];
    let args = [
        "serve",
        "--config",
        cfg.as_str(),
        "--listen",
        "127.0.0.1:0",
        "--interval",
        "1s",
    ];
    let (mut child, base, _, rest) = common::start_server(&args, &env).await;
    wait_for(
        300,
        async || !events(&base).await.is_empty(),
        "the first poll stored",
    )
    .await;
    for c in [a, b, muted] {
        assert!(sim.set_status(c, "unauthenticated"));
    }
    // Retries pending: both events attempted at least twice, all answered 503.
    let attempts_of = |got: &[Got], id: &str| got.iter().filter(|g| g.id == id).count();
    wait_for(
        600,
        async || {
            let got = rx.got();
            let mut ids: Vec<&str> = got.iter().map(|g| g.id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            ids.len() == 2 && ids.iter().all(|i| attempts_of(&got, i) >= 2)
        },
        "two events retried",
    )
    .await;
    let first_run = rx.got();
    assert!(first_run.iter().all(|g| g.answered == 503));
    let mut first_ids: Vec<String> = first_run.iter().map(|g| g.id.clone()).collect();
    first_ids.sort();
    first_ids.dedup();
    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();
    let mut logs = rest.await.unwrap();

    rx.set(200);
    let (mut child, base, _, rest) = common::start_server(&args, &env).await;
    wait_for(
        600,
        async || rx.got().iter().filter(|g| g.answered == 200).count() >= 2,
        "both delivered after the restart",
    )
    .await;
    let polls = sim.stats().total_requests();
    wait_for(
        300,
        async || sim.stats().total_requests() > polls + 4,
        "two more polls",
    )
    .await;
    let got = rx.got();
    let delivered: Vec<&Got> = got.iter().filter(|g| g.answered == 200).collect();
    assert_eq!(delivered.len(), 2, "each event delivered once: {got:?}");
    let mut delivered_ids: Vec<String> = delivered.iter().map(|g| g.id.clone()).collect();
    delivered_ids.sort();
    assert_eq!(
        delivered_ids, first_ids,
        "the webhook-id of the first attempt"
    );
    let mut connections: Vec<String> = delivered
        .iter()
        .map(|g| {
            g.json()["data"]["connection_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    connections.sort();
    let mut want = vec![format!("subtotal:{a}"), format!("subtotal:{b}")];
    want.sort();
    assert_eq!(connections, want);
    for g in &got {
        let body = text(&g.body);
        assert!(
            !body.contains(muted.as_str()),
            "a muted connection was sent: {body}"
        );
        assert!(
            !body.contains("MfKQ9r8") && !body.contains(sim.api_key()),
            "{body}"
        );
    }
    let n = get(&format!("{base}/v1/notifications")).await;
    let states: Vec<&str> = n["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["state"].as_str().unwrap())
        .collect();
    let mut sorted = states.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["delivered", "delivered", "muted"], "{n}");
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    logs.extend(rest.await.unwrap());
    let logs = logs.join("\n");
    assert!(
        logs.contains("notify: delivery failed, will retry"),
        "the logs say it"
    );
    assert!(
        !logs.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        "no secret in logs"
    );
    assert!(!logs.contains(sim.api_key()), "no API key in logs");
}
