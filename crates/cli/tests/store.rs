//! End-to-end with a store: the real `connhealth` binary against the Subtotal simulator on a
//! real SQLite file — serve restarted on the same store, `history` and `uptime` beside a
//! running serve, `watch --store`, kill -9 of `watch --store` during polls, usage errors.

use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use connhealth_store::{OpenOptions, SqliteStore, Store};
use connhealth_testkit::SubtotalSim;
use serde_json::Value;

mod common;

use common::BIN;
const DOC_CUSTOMER: &str = "8a46e581-48ba-498a-9ad0-2ee72582e1af";
const DOC_CONNECTION: &str = "01J51S0JYV6N7K1030CV1ZKSCA";

async fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .env_remove("CONNHEALTH_LOG")
        .env("NO_COLOR", "1");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().await.expect("the binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn config(dir: &Path, sim: &SubtotalSim, customers: &[String], extra: &str) -> String {
    let p = dir.join("connhealth.toml");
    std::fs::write(
        &p,
        format!(
            "{extra}[[provider]]\nkind = \"subtotal\"\nbase_url = \"{}\"\napi_key_env = \"T_SUBTOTAL_KEY\"\ncustomers = {:?}\n",
            sim.base_url(),
            customers
        ),
    )
    .unwrap();
    p.to_str().unwrap().to_owned()
}

async fn get(url: &str) -> Value {
    let resp = reqwest::get(url).await.unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    resp.json().await.unwrap()
}

async fn wait_for(mut ok: impl AsyncFnMut() -> bool, what: &str) {
    for _ in 0..300 {
        if ok().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within 15 s");
}

async fn all_events(base: &str) -> Vec<Value> {
    get(&format!("{base}/v1/events?after=0&limit=1000")).await["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// Stop a child with SIGINT (Ctrl-C), as a user would.
async fn interrupt(child: &mut tokio::process::Child) {
    let pid = child.id().unwrap().to_string();
    let ok = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(ok.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_restarted_on_the_same_store_shows_the_same_since_history_and_uptime_and_announces_nothing_twice(
) {
    let sim = SubtotalSim::start_generated(3, 1).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The store from the config, relative to its folder.
    let cfg = config(
        dir.path(),
        &sim,
        &sim.customer_ids(),
        "store = \"sqlite://data/ch.db\"\n",
    );
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let env = [("T_SUBTOTAL_KEY", sim.api_key())];
    let args = [
        "serve",
        "--config",
        cfg.as_str(),
        "--listen",
        "127.0.0.1:0",
        "--interval",
        "1s",
    ];
    let (mut child, base, _, _) = common::start_server(&args, &env).await;
    wait_for(
        async || !all_events(&base).await.is_empty(),
        "the first poll stored",
    )
    .await;
    assert!(dir.path().join("data/ch.db").exists());

    let id = format!("subtotal:{DOC_CONNECTION}");
    assert!(sim.set_status(DOC_CONNECTION, "unauthenticated"));
    wait_for(
        async || {
            all_events(&base)
                .await
                .iter()
                .any(|e| e["event"] == "status_changed")
        },
        "the change stored",
    )
    .await;
    let events = all_events(&base).await;
    let conns = get(&format!("{base}/v1/connections?limit=1000")).await;
    let history = get(&format!("{base}/v1/connections/{id}/history")).await;
    let uptime = get(&format!("{base}/v1/uptime?by=connection")).await;

    // history and uptime read the store beside the running serve (read-only, unlocked).
    let store_url = format!("sqlite://{}", dir.path().join("data/ch.db").display());
    let out = run(
        &["history", &id, "--store", &store_url, "--format", "json"],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let cli_history: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cli_history["items"], history["items"]);
    let out = run(&["history", &id, "--config", &cfg], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains("status_changed") && table.contains("healthy -> action_required"),
        "{table}"
    );
    let out = run(
        &[
            "uptime", "--window", "24h", "--by", "provider", "--config", &cfg, "--format", "json",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let u: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(u["window"], "24h");
    let out = run(&["uptime", "--config", &cfg], &[]).await;
    assert!(text(&out.stdout).contains("KEY"), "{}", text(&out.stdout));

    interrupt(&mut child).await;

    let (mut child, base, _, _) = common::start_server(&args, &env).await;
    // Two polls later (1 s interval) nothing was announced again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let again = all_events(&base).await;
    assert_eq!(again, events, "the restart announced something twice");
    let mut seen = std::collections::HashSet::new();
    for e in &again {
        assert!(
            seen.insert((
                e["event"].to_string(),
                e["connection_id"].to_string(),
                e["at"].to_string()
            )),
            "a duplicated transition: {e}"
        );
    }
    let conns2 = get(&format!("{base}/v1/connections?limit=1000")).await;
    let key = |v: &Value| {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["id"].to_string(),
                    c["since"].to_string(),
                    c["status"].to_string(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(key(&conns2), key(&conns));
    assert_eq!(
        get(&format!("{base}/v1/connections/{id}/history")).await,
        history
    );
    assert_eq!(
        get(&format!("{base}/v1/uptime?by=connection")).await["items"],
        uptime["items"]
    );
    interrupt(&mut child).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_with_a_store_prints_stored_events_once_and_state_with_store_is_a_usage_error() {
    let sim = SubtotalSim::start_generated(3, 1).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &sim, &[DOC_CUSTOMER.to_owned()], "");
    let env = [("T_SUBTOTAL_KEY", sim.api_key())];
    let store = format!("sqlite://{}", dir.path().join("w.db").display());
    let args = [
        "watch",
        "--config",
        cfg.as_str(),
        "--once",
        "--store",
        store.as_str(),
    ];
    let lines = |o: &Output| -> Vec<Value> {
        text(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let out = run(&args, &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let first = lines(&out);
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(
        (first[0]["event"].as_str(), first[0]["source"].as_str()),
        (Some("appeared"), Some("poll"))
    );
    let id1 = first[0]["id"].as_i64().unwrap();

    let out = run(&args, &env).await;
    assert!(
        lines(&out).is_empty(),
        "re-announced: {}",
        text(&out.stdout)
    );

    assert!(sim.set_status(DOC_CONNECTION, "unauthenticated"));
    let out = run(&args, &env).await;
    let changed = lines(&out);
    assert_eq!(changed[0]["event"], "status_changed");
    assert_eq!(changed[0]["id"].as_i64().unwrap(), id1 + 1);

    // A held store: a second writer fails in one line (serve holds it).
    let (mut child, _, _, _) = common::start_server(
        &[
            "serve",
            "--config",
            cfg.as_str(),
            "--listen",
            "127.0.0.1:0",
            "--store",
            store.as_str(),
        ],
        &env,
    )
    .await;
    let out = run(&args, &env).await;
    assert_eq!(out.status.code(), Some(74));
    let err = text(&out.stderr);
    assert!(
        err.contains("in use by another process") && err.lines().count() == 1,
        "{err}"
    );
    interrupt(&mut child).await;

    let state = dir.path().join("s.json");
    for cmd in ["watch", "serve"] {
        let out = run(
            &[
                cmd,
                "--config",
                &cfg,
                "--state",
                state.to_str().unwrap(),
                "--store",
                &store,
            ],
            &env,
        )
        .await;
        assert_eq!(out.status.code(), Some(64), "{cmd}: {}", text(&out.stderr));
    }
    let out = run(&["history", "x", "--store", "mysql://nope"], &[]).await;
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    // Reading a store that does not exist says so, creating nothing.
    let missing = format!("sqlite://{}", dir.path().join("none.db").display());
    let out = run(&["history", "x", "--store", &missing], &[]).await;
    assert_ne!(out.status.code(), Some(0));
    assert!(!dir.path().join("none.db").exists());
}

/// Kill -9 `watch --store` at random moments while the simulator keeps changing; after each
/// kill the store opens, passes its integrity check, and the restarted watcher prints nothing
/// that was printed before (ids only increase across runs). `KILLS` (default 4) can be raised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_watch_with_a_store_loses_nothing_and_repeats_nothing() {
    let kills: usize = std::env::var("CONNHEALTH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let sim = Arc::new(SubtotalSim::start_generated(60, 9).await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &sim, &sim.customer_ids(), "");
    let path = dir.path().join("k.db");
    let store = format!("sqlite://{}", path.display());
    let ids = sim.connection_ids();
    // Churn: flip a few connections every 50 ms so every poll has changes to commit.
    let churn = {
        let sim = sim.clone();
        let ids = ids.clone();
        tokio::spawn(async move {
            let mut i = 0usize;
            loop {
                for k in 0..5 {
                    let id = &ids[(i * 7 + k * 13) % ids.len()];
                    let next = if (i + k) % 2 == 0 {
                        "unauthenticated"
                    } else {
                        "active"
                    };
                    sim.set_status(id, next);
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let mut printed: Vec<i64> = Vec::new();
    for round in 0..=kills {
        let mut child = tokio::process::Command::new(BIN)
            .args([
                "watch",
                "--config",
                &cfg,
                "--interval",
                "1s",
                "--store",
                &store,
            ])
            .env("T_SUBTOTAL_KEY", sim.api_key())
            .env_remove("CONNHEALTH_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let wait = 600 + fastrand::u64(0..1800);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        child.start_kill().unwrap(); // SIGKILL
        let out = child.wait_with_output().await.unwrap();
        for line in text(&out.stdout).lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue; // a line torn by the kill
            };
            printed.push(v["id"].as_i64().unwrap());
        }
        let s = SqliteStore::open(&path, &OpenOptions::default())
            .await
            .unwrap();
        s.integrity_check()
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        // No duplicate or missing transition: per connection, each status event starts
        // from the status the previous one left.
        let all = s.events_after(0, 1_000_000).await.unwrap().items;
        let mut last: std::collections::HashMap<String, String> = Default::default();
        for e in &all {
            let v = serde_json::to_value(e).unwrap();
            let cid = v["connection_id"].as_str().unwrap_or_default().to_owned();
            match v["event"].as_str().unwrap() {
                "appeared" => assert!(
                    last.insert(cid, v["status"].as_str().unwrap().to_owned())
                        .is_none(),
                    "appeared twice: {v}"
                ),
                "status_changed" => {
                    let prev = last.insert(cid, v["to"].as_str().unwrap().to_owned());
                    assert_eq!(
                        prev.as_deref(),
                        v["from"].as_str(),
                        "a missing or duplicated transition: {v}"
                    );
                }
                _ => {}
            }
        }
    }
    churn.abort();
    assert!(
        printed.len() > 60,
        "the watcher printed too little to test: {}",
        printed.len()
    );
    assert!(
        printed.windows(2).all(|w| w[0] < w[1]),
        "a restarted watcher printed an event again: {printed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_takes_the_webhook_queue_bound_from_its_flag_and_refuses_zero() {
    let sim = SubtotalSim::start_generated(2, 1).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &sim, &sim.customer_ids(), "");
    let env = [("T_SUBTOTAL_KEY", sim.api_key())];
    let out = run(
        &[
            "serve",
            "--config",
            cfg.as_str(),
            "--webhook-queue-bound",
            "0",
        ],
        &env,
    )
    .await;
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--webhook-queue-bound"));
    let args = [
        "serve",
        "--config",
        cfg.as_str(),
        "--listen",
        "127.0.0.1:0",
        "--webhook-queue-bound",
        "7",
    ];
    let (mut child, base, _, _) = common::start_server(&args, &env).await;
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("\nconnhealth_webhook_queue_bound 7\n"),
        "{metrics}"
    );
    assert!(metrics.contains("\nconnhealth_webhook_queue_depth 0\n"));
    interrupt(&mut child).await;
}
