//! Issue 16 end to end: the built `connhealth` binary against the testkit simulators, fed
//! hostile text, sharing state files, writing into closed pipes.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use connhealth_core::HealthReport;
use connhealth_testkit::data::{
    Channel3Connection, Channel3Customer, Channel3Data, SubtotalConnection,
};
use connhealth_testkit::{Channel3Sim, SubtotalSim};

mod common;

use common::{start_server, BIN};
const DOC_CUSTOMER: &str = "8a46e581-48ba-498a-9ad0-2ee72582e1af";

async fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .env_remove("CONNHEALTH_LOG")
        .env_remove("CONNHEALTH_TOKEN")
        .env("NO_COLOR", "1")
        .kill_on_drop(true);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the command did not end within 60 s")
        .expect("the binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A TOML basic string for any text (control characters as `\uXXXX`).
fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn write_config(dir: &Path, text: &str) -> String {
    let p = dir.join("connhealth.toml");
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}

fn channel3_table(sim: &Channel3Sim) -> String {
    format!(
        "[[provider]]\nkind = \"channel3\"\nbase_url = \"{}\"\napi_key_env = \"T_C3_KEY\"\n",
        sim.base_url()
    )
}

fn subtotal_table(sim: &SubtotalSim, customers: &[&str]) -> String {
    let list: Vec<String> = customers.iter().map(|c| toml_str(c)).collect();
    format!(
        "[[provider]]\nkind = \"subtotal\"\nbase_url = \"{}\"\napi_key_env = \"T_SUBTOTAL_KEY\"\ncustomers = [{}]\n",
        sim.base_url(),
        list.join(", ")
    )
}

/// The characters no terminal output may carry raw: C0 except the newline that ends a line,
/// DEL, C1, and the bidi overrides and isolates.
fn forbidden(c: char) -> bool {
    (c.is_control() && c != '\n') || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn assert_clean(what: &str, s: &str) {
    let bad: Vec<(usize, char)> = s.char_indices().filter(|(_, c)| forbidden(*c)).collect();
    assert!(
        bad.is_empty(),
        "{what} carries raw control characters {bad:?}:\n{s}"
    );
}

const EVIL_NAME: &str = "Evil\r\n  healthy  channel3  fake-row-one\x07";
const EVIL_STATUS: &str = "active\x1b]0;pwned\x07\x1b[2J";
const EVIL_RETAILER: &str = "walmart\r  healthy  subtotal  fake-row-two";
const EVIL_SUB_STATUS: &str = "gone\u{202E}\u{2066}\x1b[31m\u{9b}1m";
const EVIL_CUSTOMER: &str = "cus_evil\x1b[2J\x7f\n  healthy  fake-row-three";

async fn hostile_sims() -> (Channel3Sim, SubtotalSim) {
    let c3 = Channel3Sim::start(Channel3Data::empty()).await.unwrap();
    let mut customer = Channel3Customer::new("cus\x1b[1;31mred\u{202D}", EVIL_NAME);
    let mut row = Channel3Connection::not_connected("shopify");
    row.status = EVIL_STATUS.into();
    row.display_name = "Shop\x1b[8m".into();
    customer.connections = vec![row];
    c3.add_customer(customer);

    let sub = SubtotalSim::start_generated(1, 1).await.unwrap();
    sub.add_connection(SubtotalConnection {
        connection_id: "01J51S0JYV6N7K1030CV1ZEVIL".into(),
        customer_id: EVIL_CUSTOMER.into(),
        retailer_id: EVIL_RETAILER.into(),
        status: EVIL_SUB_STATUS.into(),
        email: None,
        mobile: None,
        is_simulated: None,
    });
    (c3, sub)
}

/// Item 1: hostile ids, names, statuses, retailer ids and provider text reach the table and
/// the logs escaped, with no raw control character and no row drawn by the provider; JSON
/// stays exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_provider_text_is_escaped_in_the_table_and_the_logs() {
    let (c3, sub) = hostile_sims().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            "{}\n{}",
            channel3_table(&c3),
            subtotal_table(&sub, &[EVIL_CUSTOMER, "cus_missing\x1b[2J"])
        ),
    );
    let envs = [
        ("T_C3_KEY", c3.api_key()),
        ("T_SUBTOTAL_KEY", sub.api_key()),
        ("CONNHEALTH_LOG", "trace"),
    ];
    let out = run(&["check", "--config", &cfg, "--all"], &envs).await;
    let (table, logs) = (text(&out.stdout), text(&out.stderr));
    assert!(table.contains("Evil"), "{table}");
    assert!(table.contains("walmart"), "{table}");
    // The hostile text is there, visibly escaped, not dropped.
    for shown in [
        "Evil\\r\\n  healthy  channel3  fake-row-one\\u{7}",
        "\\u{1b}]0;pwned\\u{7}\\u{1b}[2J",
        "gone\\u{202e}\\u{2066}\\u{1b}[31m\\u{9b}1m",
        "cus_evil\\u{1b}[2J\\u{7f}\\n  healthy  fake-row-three",
    ] {
        assert!(table.contains(shown), "{shown} not in\n{table}");
    }
    assert_clean("the table", &table);
    assert_clean("the logs", &logs);
    // No fake row: the provider's text stays on the line of the row it belongs to.
    for (fake, owner) in [
        ("fake-row-one", "Evil"),
        ("fake-row-two", "walmart"),
        ("fake-row-three", "cus_evil"),
    ] {
        for line in table.lines().filter(|l| l.contains(fake)) {
            assert!(
                line.contains(owner),
                "a fake row was drawn: {line:?}\n{table}"
            );
        }
    }
    assert!(logs.contains("TRACE") || logs.contains("DEBUG"), "{logs}");
    assert!(!logs.contains("\x1b["), "colours in logs that go to a pipe");

    // JSON is exact.
    let out = run(&["check", "--config", &cfg, "--format", "json"], &envs[..2]).await;
    let report: HealthReport = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = report
        .connections
        .iter()
        .filter_map(|c| c.customer.name.as_deref())
        .collect();
    assert!(names.contains(&EVIL_NAME), "{names:?}");
    assert!(report
        .connections
        .iter()
        .any(|c| c.provider_status == EVIL_SUB_STATUS && c.customer.id == EVIL_CUSTOMER));
}

fn events(o: &Output) -> Vec<serde_json::Value> {
    text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Item 2: `watch --provider NAME` leaves the other providers' memory alone, and a state file
/// written for another config is said so on stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_provider_leaves_the_other_providers_alone() {
    let c3 = Channel3Sim::start_generated(2, 3).await.unwrap();
    let sub = SubtotalSim::start_generated(2, 3).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let both = write_config(
        dir.path(),
        &format!(
            "{}\n{}",
            channel3_table(&c3),
            subtotal_table(&sub, &[DOC_CUSTOMER])
        ),
    );
    let state = dir.path().join("state.json");
    let state = state.to_str().unwrap();
    let envs = [
        ("T_C3_KEY", c3.api_key()),
        ("T_SUBTOTAL_KEY", sub.api_key()),
    ];
    let base = [
        "watch",
        "--config",
        both.as_str(),
        "--once",
        "--state",
        state,
    ];

    let out = run(&base, &envs).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let first = events(&out);
    assert!(first.iter().any(|e| e["provider"] == "channel3"));
    assert!(first.iter().any(|e| e["provider"] == "subtotal"));

    let mut only = base.to_vec();
    only.extend(["--provider", "subtotal"]);
    let out = run(&only, &envs).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(events(&out).is_empty(), "{}", text(&out.stdout));
    assert!(text(&out.stderr).is_empty(), "{}", text(&out.stderr));

    let out = run(&base, &envs).await;
    assert!(
        events(&out).is_empty(),
        "the full run re-announced: {}",
        text(&out.stdout)
    );

    // The same state file under a config without channel3: said, not wiped.
    let sub_dir = tempfile::tempdir().unwrap();
    let other = write_config(sub_dir.path(), &subtotal_table(&sub, &[DOC_CUSTOMER]));
    let out = run(
        &["watch", "--config", &other, "--once", "--state", state],
        &envs,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("another config") && err.contains("channel3"),
        "{err}"
    );
    assert!(
        !text(&out.stdout).contains("disappeared"),
        "{}",
        text(&out.stdout)
    );
}

/// Smaller item: `watch --once | head` (stdout closed early) still saves its state, and ends
/// quietly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_once_into_a_closed_pipe_still_saves_its_state() {
    let sub = SubtotalSim::start_generated(3, 1).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &subtotal_table(&sub, &[DOC_CUSTOMER]));
    let state = dir.path().join("state.json");
    let mut child = tokio::process::Command::new(BIN)
        .args(["watch", "--config", &cfg, "--once", "--state"])
        .arg(&state)
        .env_remove("CONNHEALTH_LOG")
        .env("T_SUBTOTAL_KEY", sub.api_key())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader is gone before anything is written
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).is_empty(), "{}", text(&out.stderr));
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).expect("the state was saved")).unwrap();
    assert_eq!(
        saved["connections"].as_object().unwrap().len(),
        1,
        "{saved}"
    );
}

/// Items 8 and 9: a running `serve --state` holds the state file: stale temp files of that
/// file are gone, and a second watcher on it fails with one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_has_one_user_and_stale_temp_files_are_removed() {
    let sub = SubtotalSim::start_generated(3, 1).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &subtotal_table(&sub, &[DOC_CUSTOMER]));
    let state = dir.path().join("state.json");
    let stale = dir.path().join(".state.json.tmp.999999");
    std::fs::write(&stale, vec![b'x'; 4096]).unwrap();
    let state_s = state.to_str().unwrap();
    let envs = [("T_SUBTOTAL_KEY", sub.api_key())];
    let (mut child, _url, _, _) = start_server(
        &[
            "serve",
            "--config",
            &cfg,
            "--listen",
            "127.0.0.1:0",
            "--state",
            state_s,
        ],
        &envs,
    )
    .await;
    assert!(
        !stale.exists(),
        "a stale temp file of the state file was left"
    );

    let out = run(
        &["watch", "--config", &cfg, "--once", "--state", state_s],
        &envs,
    )
    .await;
    assert_eq!(out.status.code(), Some(74), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("in use"), "{err}");
    assert!(
        out.stdout.is_empty(),
        "the second watcher announced something"
    );

    child.start_kill().unwrap();
    let _ = child.wait().await;
    let out = run(
        &["watch", "--config", &cfg, "--once", "--state", state_s],
        &envs,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// Item 5: `serve --state` save failures are said on stderr once per failure streak, and shown
/// in /readyz and /metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_state_save_failures_are_visible() {
    let sub = SubtotalSim::start_generated(3, 1).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &subtotal_table(&sub, &[DOC_CUSTOMER]));
    let state_dir = dir.path().join("state");
    std::fs::create_dir(&state_dir).unwrap();
    let state = state_dir.join("state.json");
    let envs = [("T_SUBTOTAL_KEY", sub.api_key())];
    let (mut child, url, _, rest) = start_server(
        &[
            "serve",
            "--config",
            &cfg,
            "--listen",
            "127.0.0.1:0",
            "--interval",
            "1s",
            "--state",
            state.to_str().unwrap(),
        ],
        &envs,
    )
    .await;
    // The folder goes away: every save from now on fails.
    std::fs::remove_dir_all(&state_dir).unwrap();
    let http = reqwest::Client::new();
    let mut failures = 0u64;
    let mut readyz = serde_json::Value::Null;
    for _ in 0..300 {
        let metrics = http
            .get(format!("{url}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        failures = metrics
            .lines()
            .find_map(|l| l.strip_prefix("connhealth_state_save_failures_total "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if failures >= 3 {
            readyz = http
                .get(format!("{url}/readyz"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(failures >= 3, "saves did not fail three times");
    assert_eq!(readyz["status"], "ready", "{readyz}");
    assert_eq!(
        readyz["warnings"][0]["code"], "state_save_failed",
        "{readyz}"
    );
    child.start_kill().unwrap();
    let _ = child.wait().await;
    let lines = rest.await.unwrap();
    let said: Vec<&String> = lines.iter().filter(|l| l.contains("cannot save")).collect();
    assert_eq!(said.len(), 1, "once per failure streak: {lines:?}");
}

/// Smaller item: off loopback a token shorter than 16 bytes is refused; `--token` on the
/// command line is warned about (it is visible in `ps`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_wants_a_long_token_off_loopback_and_prefers_the_environment() {
    let sub = SubtotalSim::start_generated(1, 1).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &subtotal_table(&sub, &[DOC_CUSTOMER]));
    let envs = [("T_SUBTOTAL_KEY", sub.api_key())];
    let out = run(
        &[
            "serve",
            "--config",
            &cfg,
            "--listen",
            "0.0.0.0:0",
            "--token",
            "x",
        ],
        &envs,
    )
    .await;
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("16"), "{err}");
    assert!(!err.contains(" x "), "the token was echoed: {err}");

    let long = "a-sixteen-byte-plus-token";
    let (mut child, _, before, _) = start_server(
        &[
            "serve",
            "--config",
            &cfg,
            "--listen",
            "0.0.0.0:0",
            "--token",
            long,
        ],
        &envs,
    )
    .await;
    child.start_kill().unwrap();
    let _ = child.wait().await;
    assert!(
        before
            .iter()
            .any(|l| l.contains("CONNHEALTH_TOKEN") && l.contains("ps")),
        "{before:?}"
    );
    assert!(before.iter().all(|l| !l.contains(long)));

    let mut with_env = envs.to_vec();
    with_env.push(("CONNHEALTH_TOKEN", long));
    let (mut child, _, before, _) = start_server(
        &["serve", "--config", &cfg, "--listen", "0.0.0.0:0"],
        &with_env,
    )
    .await;
    child.start_kill().unwrap();
    let _ = child.wait().await;
    assert!(before.is_empty(), "{before:?}");
}

/// Item 3 through the CLI: `--max-connections` is the cap, `/healthz` answers past it, and
/// hitting it is one clear log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_at_its_connection_cap_says_so_and_keeps_healthz() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sub = SubtotalSim::start_generated(1, 1).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &subtotal_table(&sub, &[DOC_CUSTOMER]));
    let envs = [
        ("T_SUBTOTAL_KEY", sub.api_key()),
        ("CONNHEALTH_LOG", "connhealth_server=warn"),
    ];
    let (mut child, url, _, rest) = start_server(
        &[
            "serve",
            "--config",
            &cfg,
            "--listen",
            "127.0.0.1:0",
            "--max-connections",
            "2",
            "--header-read-timeout",
            "1h",
            "--idle-timeout",
            "1h",
        ],
        &envs,
    )
    .await;
    let addr = url.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        held.push(s);
    }
    // Past the cap: /healthz on a fresh connection still answers.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_string(&mut answer))
        .await
        .expect("/healthz answered past the cap")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(held);
    child.start_kill().unwrap();
    let _ = child.wait().await;
    let lines = rest.await.unwrap();
    let said: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("connection cap reached") && l.contains("max_connections=2"))
        .collect();
    assert_eq!(said.len(), 1, "{lines:?}");
}
