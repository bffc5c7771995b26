//! End-to-end: the built `connhealth` binary against the testkit simulators over loopback.

use std::path::Path;
use std::process::Output;

use connhealth_core::{HealthReport, Outcome, Status};
use connhealth_testkit::{Channel3Sim, Fleet, SubtotalSim};

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

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write_config(dir: &Path, text: &str) -> String {
    let p = dir.join("connhealth.toml");
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}

fn subtotal_config(sim: &SubtotalSim, customers: &[&str]) -> String {
    format!(
        "[[provider]]\nkind = \"subtotal\"\nbase_url = \"{}\"\napi_key_env = \"T_SUBTOTAL_KEY\"\ncustomers = {:?}\n",
        sim.base_url(),
        customers
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_shows_every_status() {
    let out = run(&["demo", "--customers", "60", "--format", "json"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: HealthReport =
        serde_json::from_str(&stdout(&out)).expect("demo json is a HealthReport");
    for s in Status::ALL {
        assert!(
            report.summary.count(s) > 0,
            "demo has no {s} connection: {:?}",
            report.summary
        );
    }
    assert!(
        report.providers.iter().all(|p| p.outcome == Outcome::Ok),
        "{:?}",
        report.providers
    );
    let names: Vec<&str> = report
        .providers
        .iter()
        .map(|p| p.provider.as_str())
        .collect();
    assert_eq!(names, ["channel3", "violet", "subtotal"]);

    let out = run(&["demo", "--customers", "60", "--all"], &[]).await;
    assert_eq!(out.status.code(), Some(0));
    let table = stdout(&out);
    for s in Status::ALL {
        assert!(table.contains(s.as_str()), "table lacks {s}");
    }
    assert!(table.contains("overall: action_required"), "{table}");
    assert!(!table.contains("\x1b["), "no colour when not a terminal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_json_matches_the_snapshot() {
    let fleet = Fleet::start(2, 7).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            r#"timeout_secs = 20
[[provider]]
kind = "channel3"
base_url = "{c3}"
api_key_env = "T_C3_KEY"

[[provider]]
kind = "violet"
base_url = "{v}"
app_id = {app}
app_secret_env = "T_V_SECRET"
username_env = "T_V_USER"
password_env = "T_V_PASS"

[[provider]]
kind = "subtotal"
base_url = "{s}"
api_key_env = "T_SUBTOTAL_KEY"
customers = {customers:?}
"#,
            c3 = fleet.channel3.base_url(),
            v = fleet.violet.base_url(),
            app = fleet.violet.app_id(),
            s = fleet.subtotal.base_url(),
            customers = fleet.subtotal.customer_ids(),
        ),
    );
    let envs = [
        ("T_C3_KEY", fleet.channel3.api_key()),
        ("T_V_SECRET", fleet.violet.app_secret()),
        ("T_V_USER", fleet.violet.username()),
        ("T_V_PASS", fleet.violet.password()),
        ("T_SUBTOTAL_KEY", fleet.subtotal.api_key()),
    ];
    let out = run(&["check", "--config", &cfg, "--format", "json"], &envs).await;
    let text = stdout(&out);
    let report: HealthReport =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text} {}", stderr(&out)));
    assert_eq!(
        out.status.code(),
        Some(2),
        "action_required somewhere in the generated data: {}",
        stderr(&out)
    );
    for (_, secret) in &envs {
        assert!(!text.contains(secret), "a credential reached the output");
    }
    insta::with_settings!({ snapshot_path => "../../../snapshots", prepend_module_to_snapshot => false }, {
        insta::assert_json_snapshot!("cli__check_json", report, {
            ".generated_at" => "[generated_at]",
            ".connections[].observed_at" => "[observed_at]",
            ".providers[].elapsed_ms" => "[elapsed_ms]",
        });
    });

    // ndjson: one connection per line, then the summary line.
    let out = run(&["check", "--config", &cfg, "--format", "ndjson"], &envs).await;
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), report.connections.len() + 1);
    assert!(lines[..lines.len() - 1]
        .iter()
        .all(|l| l.get("id").is_some() && l.get("status").is_some()));
    let last = lines.last().unwrap();
    assert_eq!(last["summary"]["total"], report.summary.total);
    assert_eq!(last["overall"], "action_required");

    // --provider narrows the run.
    let out = run(
        &[
            "check",
            "--config",
            &cfg,
            "--format",
            "json",
            "--provider",
            "subtotal",
        ],
        &envs,
    )
    .await;
    let only: HealthReport = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(only.providers.len(), 1);
    assert!(only.connections.iter().all(|c| c.provider == "subtotal"));
    let out = run(&["check", "--config", &cfg, "--provider", "nope"], &envs).await;
    assert_eq!(out.status.code(), Some(64));
    assert!(
        stderr(&out).contains("--provider \"nope\": no such provider"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_follow_the_worst_status() {
    let sim = SubtotalSim::start_generated(3, 1).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &subtotal_config(&sim, &[DOC_CUSTOMER]));
    let env = [("T_SUBTOTAL_KEY", sim.api_key())];
    let args = ["check", "--config", cfg.as_str()];
    let check = || run(&args, &env);

    // The documented example connection is active: healthy.
    let out = check().await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("overall: healthy"),
        "{}",
        stdout(&out)
    );

    assert!(sim.set_status(DOC_CONNECTION, "initialized"));
    assert_eq!(
        check().await.status.code(),
        Some(0),
        "pending is not a failure"
    );

    assert!(sim.set_status(DOC_CONNECTION, "unauthenticated"));
    let out = check().await;
    assert_eq!(out.status.code(), Some(2));
    let table = stdout(&out);
    assert!(table.contains("reauthentication_required"), "{table}");
    assert!(
        table.contains("re-authenticate"),
        "remediation shown: {table}"
    );

    assert!(sim.set_status(DOC_CONNECTION, "disconnected"));
    assert_eq!(check().await.status.code(), Some(2));

    assert!(sim.set_status(DOC_CONNECTION, "brand_new_state"));
    assert_eq!(check().await.status.code(), Some(1), "unknown");

    // A wrong key: the provider failed.
    let out = run(
        &["check", "--config", &cfg],
        &[("T_SUBTOTAL_KEY", "wrong-key")],
    )
    .await;
    assert_eq!(out.status.code(), Some(3));
    assert!(stdout(&out).contains("failed"), "{}", stdout(&out));
    assert!(!stdout(&out).contains("wrong-key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degraded_is_exit_one() {
    // The Channel3 documented example: google live 150/150, shopify action_required.
    let sim = Channel3Sim::start_generated(1, 1).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            "[[provider]]\nkind = \"channel3\"\nbase_url = \"{}\"\napi_key_env = \"T_C3\"\ncustomers = [\"cus_doc_example\"]\n",
            sim.base_url()
        ),
    );
    let env = [("T_C3", sim.api_key())];
    let out = run(&["check", "--config", &cfg], &env).await;
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    // Shopify fixed, google only partly synced: degraded.
    assert!(sim.set_connection_status("cus_doc_example", "shopify", "active"));
    assert!(sim.set_sync(
        "cus_doc_example",
        "google",
        Some(connhealth_testkit::data::Channel3Sync {
            state: "live".into(),
            last_synced_at: Some("2024-04-20T14:45:00Z".into()),
            total_products: Some(150),
            synced_products: Some(148),
        })
    ));
    let out = run(&["check", "--config", &cfg], &env).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("partial_sync"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("overall: degraded"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn usage_and_config_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(String, Vec<&str>, i32, &str)> = vec![
        ("".into(), vec!["check", "--config", "/nonexistent/x.toml"], 66, "connhealth: /nonexistent/x.toml: cannot read config file: no such file"),
        ("[[provider]]\nkind = \"channel3\"\napi_key = \"c3_sk_live\"\n".into(), vec![], 78, "provider[0] (channel3).api_key: unknown key `api_key`"),
        ("[[provider]]\nkind = \"channel3\"\napi_key_env = \"T_UNSET_VAR_XYZ\"\n".into(), vec![], 78, "provider[0] (channel3).api_key_env: environment variable T_UNSET_VAR_XYZ is not set"),
        ("concurrency = -3\n[[provider]]\nkind = \"channel3\"\napi_key_env = \"HOME\"\n".into(), vec![], 78, "line 1: concurrency: invalid value: integer `-3`, expected usize"),
        ("[[provider]]\nkind = \"channel3\"\nbase_url = \"http://partners.example.com\"\napi_key_env = \"HOME\"\n".into(), vec![], 78, "must use https://"),
        ("".into(), vec!["check", "--format", "yaml"], 64, "invalid value 'yaml'"),
        ("".into(), vec!["frobnicate"], 64, "unrecognized subcommand"),
    ];
    for (text, args, code, want) in cases {
        let args: Vec<String> = if args.is_empty() {
            let p = write_config(dir.path(), &text);
            vec!["check".into(), "--config".into(), p]
        } else {
            args.into_iter().map(String::from).collect()
        };
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&argv, &[]).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{argv:?}: {err}");
        assert!(err.contains(want), "{argv:?}\n got: {err}\nwant: {want}");
        if code != 64 {
            assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
            assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"));
            assert!(stdout(&out).is_empty());
        }
    }
}

#[tokio::test]
async fn config_example_is_valid() {
    let out = run(&["config", "example"], &[]).await;
    assert_eq!(out.status.code(), Some(0));
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &stdout(&out));
    let env = [
        ("CHANNEL3_API_KEY", "k"),
        ("VIOLET_APP_SECRET", "s"),
        ("VIOLET_USERNAME", "u@example.com"),
        ("VIOLET_PASSWORD", "p"),
        ("SUBTOTAL_API_KEY", "k"),
    ];
    let out = run(&["config", "validate", "--config", &cfg], &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("ok (channel3, violet, subtotal)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_once_reports_only_changes_since_the_state_file() {
    let sim = SubtotalSim::start_generated(3, 1).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &subtotal_config(&sim, &[DOC_CUSTOMER]));
    let state = dir.path().join("state.json");
    let state = state.to_str().unwrap();
    let env = [("T_SUBTOTAL_KEY", sim.api_key())];
    let args = [
        "watch",
        "--config",
        cfg.as_str(),
        "--once",
        "--state",
        state,
    ];
    let events = |o: &Output| -> Vec<serde_json::Value> {
        stdout(o)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };

    let out = run(&args, &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let first = events(&out);
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0]["event"], "appeared");
    assert_eq!(
        first[0]["connection_id"],
        format!("subtotal:{DOC_CONNECTION}")
    );
    assert_eq!(first[0]["status"], "healthy");

    let out = run(&args, &env).await;
    assert!(
        events(&out).is_empty(),
        "a restart re-announced: {}",
        stdout(&out)
    );

    assert!(sim.set_status(DOC_CONNECTION, "unauthenticated"));
    let out = run(&args, &env).await;
    let changed = events(&out);
    assert_eq!(changed[0]["event"], "status_changed");
    assert_eq!(changed[0]["from"], "healthy");
    assert_eq!(changed[0]["to"], "action_required");
    assert!(changed[0]["since"].is_string());
    assert_eq!(changed[1]["event"], "problem_raised");
    assert_eq!(changed[1]["problem"]["code"], "reauthentication_required");

    std::fs::write(state, "garbage").unwrap();
    let out = run(&args, &env).await;
    assert_eq!(out.status.code(), Some(74));
    assert!(
        stderr(&out).contains("not a connhealth state file"),
        "{}",
        stderr(&out)
    );

    let out = run(
        &["watch", "--config", cfg.as_str(), "--interval", "soon"],
        &env,
    )
    .await;
    assert_eq!(out.status.code(), Some(64));
}

/// Starts `connhealth` with `args`, waits for its "dashboard on http://ADDR/" line on stderr and
/// returns the child and the base URL.
async fn start_server(args: &[&str], envs: &[(&str, &str)]) -> (tokio::process::Child, String) {
    let (child, url, _, _) = common::start_server(args, envs).await;
    (child, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serve_serves_the_report_and_the_dashboard() {
    let (mut child, url) = start_server(
        &[
            "demo",
            "--serve",
            "--customers",
            "10",
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    )
    .await;
    let http = reqwest::Client::new();
    // Ready once the first poll is done.
    let mut ready = false;
    for _ in 0..100 {
        if http
            .get(format!("{url}/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            == 200
        {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ready, "never ready");
    let report: HealthReport = http
        .get(format!("{url}/v1/report"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(report.summary.total > 0);
    assert_eq!(report.providers.len(), 3);
    let page = http.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(
        page.contains("<html") && page.contains("tile-action_required"),
        "dashboard page"
    );
    let metrics = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("connhealth_provider_up{provider=\"subtotal\"} 1"),
        "{metrics}"
    );
    child.start_kill().unwrap();
    let _ = child.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serve_shows_the_simulators_pushes_as_webhook_events() {
    let (mut child, url) = start_server(
        &[
            "demo",
            "--serve",
            "--customers",
            "10",
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    )
    .await;
    let http = reqwest::Client::new();
    // The churn changes a simulated connection every 10 s and the simulator pushes a signed
    // webhook to this serve: a change with source "webhook" shows up (a failure guard of 600
    // reads, never a timing assertion).
    let mut pushed = None;
    for _ in 0..600 {
        if let Ok(r) = http
            .get(format!("{url}/v1/events?after=0&limit=1000"))
            .send()
            .await
        {
            if let Ok(page) = r.json::<serde_json::Value>().await {
                pushed = page["items"]
                    .as_array()
                    .and_then(|items| items.iter().find(|e| e["source"] == "webhook").cloned());
                if pushed.is_some() {
                    break;
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let pushed = pushed.expect("a webhook-sourced event");
    let id = pushed["connection_id"].as_str().unwrap();
    assert!(
        id.starts_with("subtotal:") || id.starts_with("violet:"),
        "{pushed}"
    );
    let metrics = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sum = |outcome: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("connhealth_webhooks_received_total{")
                    && l.contains(&format!("outcome=\"{outcome}\"}}"))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(sum("accepted") >= 1.0, "{metrics}");
    // The simulators sign with serve's own secrets.
    assert_eq!(sum("rejected_signature"), 0.0, "{metrics}");
    child.start_kill().unwrap();
    let _ = child.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serve_performs_a_channel3_connect_link_with_its_admin_token() {
    const ADMIN: &str = "demo-admin-token-cli-test-91f2";
    let (mut child, url) = start_server(
        &[
            "demo",
            "--serve",
            "--customers",
            "5",
            "--listen",
            "127.0.0.1:0",
            "--admin-token",
            ADMIN,
        ],
        &[],
    )
    .await;
    let http = reqwest::Client::new();
    // A Channel3 connection that offers connect_link (the demo sets a redirect URI).
    let mut target = None;
    for _ in 0..300 {
        if let Ok(r) = http
            .get(format!("{url}/v1/connections?provider=channel3&limit=1000"))
            .send()
            .await
        {
            if let Ok(page) = r.json::<serde_json::Value>().await {
                target = page["items"].as_array().and_then(|items| {
                    items
                        .iter()
                        .find(|i| {
                            i["actions"]
                                .as_array()
                                .is_some_and(|a| a.iter().any(|a| a["kind"] == "connect_link"))
                        })
                        .and_then(|i| i["id"].as_str().map(str::to_owned))
                });
                if target.is_some() {
                    break;
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let id = target.expect("a Channel3 connection offering connect_link");
    let path: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
    let act = format!("{url}/v1/connections/{path}/actions/connect_link");
    // Without the token: 401, nothing done.
    let r = http.post(&act).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http.post(&act).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (&body["kind"], &body["ok"]),
        (&serde_json::json!("connect_link"), &serde_json::json!(true)),
        "{body}"
    );
    assert!(
        body["url"].as_str().is_some_and(|u| u.starts_with("http")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("single-use"),
        "{body}"
    );
    let audit: serde_json::Value = http
        .get(format!("{url}/v1/audit"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(audit["items"][0]["action"], "connect_link", "{audit}");
    assert_eq!(audit["items"][0]["outcome"], "done", "{audit}");
    assert!(
        !audit.to_string().contains(body["url"].as_str().unwrap()),
        "{audit}"
    );
    child.start_kill().unwrap();
    let _ = child.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_requires_a_token_off_loopback_and_enforces_it() {
    let sim = SubtotalSim::start_generated(3, 1).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &subtotal_config(&sim, &[DOC_CUSTOMER]));
    let env = [("T_SUBTOTAL_KEY", sim.api_key())];
    let out = run(
        &["serve", "--config", cfg.as_str(), "--listen", "0.0.0.0:0"],
        &env,
    )
    .await;
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("without a token"), "{}", stderr(&out));

    let token = "s3cret-dashboard-token";
    let envs = [
        ("T_SUBTOTAL_KEY", sim.api_key()),
        ("CONNHEALTH_TOKEN", token),
    ];
    let (mut child, url) = start_server(
        &[
            "serve",
            "--config",
            cfg.as_str(),
            "--listen",
            "127.0.0.1:0",
            "--interval",
            "1h",
        ],
        &envs,
    )
    .await;
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(format!("{url}/v1/report"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        http.get(format!("{url}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let mut status = 0;
    for _ in 0..100 {
        status = http
            .get(format!("{url}/v1/report"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200);
    let body = http
        .get(format!("{url}/v1/report"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !body.contains(sim.api_key()),
        "a provider secret was served"
    );
    child.start_kill().unwrap();
    let _ = child.wait().await;
}

/// Issue 16: config mistakes that used to pass validation (and then panic), say the wrong
/// thing, or exit with the wrong code. Every one is one line and exits 78 (EX_CONFIG).
#[tokio::test]
async fn hardening_config_mistakes_are_caught_by_validate() {
    let dir = tempfile::tempdir().unwrap();
    let c3 = "[[provider]]\nkind = \"channel3\"\napi_key_env = \"HOME\"\n";
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // 2^61: passed `config validate`, then panicked in a semaphore.
        (
            format!("concurrency = 2305843009213693952\n{c3}").into_bytes(),
            "concurrency: must be a whole number from 1 to 10000, got 2305843009213693952",
        ),
        (
            format!("{c3}concurrency = 10001\n").into_bytes(),
            "provider[0] (channel3).concurrency: must be a whole number from 1 to 10000, got 10001",
        ),
        (
            b"[[provider]]\nkind = 3\napi_key_env = \"HOME\"\n".to_vec(),
            "provider[0].kind: must be a string, got integer `3`",
        ),
        (
            b"# caf\xe9\n[[provider]]\nkind = \"channel3\"\napi_key_env = \"HOME\"\n".to_vec(),
            "connhealth.toml: line 1: not valid UTF-8",
        ),
    ];
    for (text, want) in cases {
        let p = dir.path().join("connhealth.toml");
        std::fs::write(&p, &text).unwrap();
        let p = p.to_str().unwrap();
        for cmd in [
            &["config", "validate", "--config", p][..],
            &["check", "--config", p],
        ] {
            let out = run(cmd, &[]).await;
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(78), "{cmd:?}: {err}");
            assert!(err.contains(want), "{cmd:?}\n got: {err}\nwant: {want}");
            assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
            assert!(!err.contains("panicked"), "{err}");
        }
    }
    // A builder's refusal is named once, not `config: config:`.
    let p = write_config(
        dir.path(),
        "[[provider]]\nkind = \"channel3\"\nbase_url = \"http://partners.example.com\"\napi_key_env = \"HOME\"\n",
    );
    let out = run(&["config", "validate", "--config", &p], &[]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("must use https://"), "{err}");
    assert!(!err.contains("config: config:"), "doubled prefix: {err}");
}
