//! Issue 22 (priority scheduling) end to end: the top-level keys `interval`, `recheck_secs`
//! and `max_staleness`, their flags (flag beats file), and bad values (one line, exit 78 for
//! the file, 64 for a flag), with the built binary against the Subtotal simulator.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use connhealth_testkit::SubtotalSim;

mod common;

use common::{start_server, BIN};

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

fn write_config(dir: &Path, top: &str, sim: &SubtotalSim) -> String {
    let p = dir.join("connhealth.toml");
    let ids: Vec<String> = sim
        .customer_ids()
        .iter()
        .map(|c| format!("{c:?}"))
        .collect();
    std::fs::write(
        &p,
        format!(
            "{top}\n[[provider]]\nkind = \"subtotal\"\nbase_url = \"{}\"\napi_key_env = \"T_SUBTOTAL_KEY\"\ncustomers = [{}]\n",
            sim.base_url(),
            ids.join(", ")
        ),
    )
    .unwrap();
    p.to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedule_values_are_one_line_78_in_the_file_and_64_as_a_flag() {
    let sim = SubtotalSim::start_generated(2, 3).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let envs = [("T_SUBTOTAL_KEY", sim.api_key())];
    for (top, key) in [
        (
            "recheck_secs = 0",
            "recheck_secs: must be a positive whole number",
        ),
        (
            "max_staleness = \"a while\"",
            "max_staleness: \"a while\": ",
        ),
        (
            "interval = \"5ms\"",
            "interval: \"5ms\": must be at least 1s",
        ),
    ] {
        let cfg = write_config(dir.path(), top, &sim);
        let out = run(&["watch", "--config", &cfg, "--once"], &envs).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{top}: {err}");
        assert_eq!(err.lines().count(), 1, "{top}: {err}");
        assert!(err.contains(key), "{top}: {err}");
    }
    let cfg = write_config(dir.path(), "", &sim);
    for flags in [
        ["--recheck-secs", "0"],
        ["--max-staleness", "soon"],
        ["--interval", "0s"],
    ] {
        let mut args = vec!["watch", "--config", &cfg, "--once"];
        args.extend(flags);
        let out = run(&args, &envs).await;
        assert_eq!(
            out.status.code(),
            Some(64),
            "{flags:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Good values run.
    let cfg = write_config(
        dir.path(),
        "interval = \"2m\"\nrecheck_secs = 30\nmax_staleness = \"6h\"",
        &sim,
    );
    let out = run(
        &["watch", "--config", &cfg, "--once", "--recheck-secs", "15"],
        &envs,
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `/readyz` of a `serve` with this config and these flags, once it has polled three times.
async fn readyz(cfg: &str, flags: &[&str], envs: &[(&str, &str)]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let mut args = vec![
        "serve",
        "--config",
        cfg,
        "--listen",
        "127.0.0.1:0",
        "--state",
        state.to_str().unwrap(),
    ];
    args.extend(flags);
    let (mut child, url, _, _rest) = start_server(&args, envs).await;
    let http = reqwest::Client::new();
    let mut body = serde_json::Value::Null;
    for _ in 0..300 {
        let metrics = http
            .get(format!("{url}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let polls: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("connhealth_polls_total "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        // `interval = "1s"` from the file: three polls come within seconds.
        if polls >= 3 {
            body = http
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
    child.start_kill().unwrap();
    let _ = child.wait().await;
    assert_eq!(body["status"], "ready", "did not poll three times: {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_takes_the_keys_from_the_file_and_a_flag_beats_the_file() {
    let sim = SubtotalSim::start_generated(3, 4).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let envs = [("T_SUBTOTAL_KEY", sim.api_key())];
    // Sweeps every second cannot keep a customer within one second: the budget warns.
    let cfg = write_config(
        dir.path(),
        "interval = \"1s\"\nmax_staleness = \"1s\"",
        &sim,
    );
    let body = readyz(&cfg, &[], &envs).await;
    let codes: Vec<&str> = body["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["code"].as_str())
        .collect();
    assert_eq!(codes, ["staleness_budget"], "{body}");
    assert!(
        body["warnings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("more than max_staleness 1 s"),
        "{body}"
    );
    // The flag wins over the file: no warning.
    let body = readyz(&cfg, &["--max-staleness", "24h"], &envs).await;
    assert_eq!(body["warnings"], serde_json::json!([]), "{body}");
}
