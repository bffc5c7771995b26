//! `connhealth act` end to end: the real binary against a real `connhealth serve` (its own
//! SQLite store) over the Subtotal simulator: the action done, its event of source `action`
//! and audit row; a refused and a failing action exit 1; provider text is escaped; a wrong or
//! missing admin token is a usage error.

use std::process::Output;
use std::time::Duration;

use connhealth_testkit::subtotal::UPDATE_CONNECTION;
use connhealth_testkit::{Fault, FaultRule, SubtotalSim};
use serde_json::Value;

mod common;

use common::BIN;

const ADMIN: &str = "admin-token-for-cli-act-3f81c2";

async fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .env_remove("CONNHEALTH_LOG")
        .env_remove("CONNHEALTH_ADMIN_TOKEN")
        .env("NO_COLOR", "1");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().await.expect("the binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn act_disconnects_through_serve_and_exits_1_when_not_done() {
    let sim = SubtotalSim::start_generated(2, 91).await.unwrap();
    let customers = sim.customer_ids();
    let ids: Vec<String> = customers
        .iter()
        .flat_map(|c| sim.connections_of(c))
        .map(|c| c.connection_id)
        .collect();
    assert!(ids.len() >= 2);
    for id in &ids {
        sim.set_status(id, "active");
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("connhealth.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[provider]]\nkind = \"subtotal\"\nbase_url = \"{}\"\napi_key_env = \"T_SUBTOTAL_KEY\"\ncustomers = {:?}\nlink_url = \"https://link.subtotal.example/x\"\n",
            sim.base_url(),
            customers
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap().to_owned();
    let env = [
        ("T_SUBTOTAL_KEY", sim.api_key()),
        ("CONNHEALTH_ADMIN_TOKEN", ADMIN),
    ];
    let (mut child, base, _, _) = common::start_server(
        &[
            "serve",
            "--config",
            &cfg,
            "--listen",
            "127.0.0.1:0",
            "--interval",
            "1h",
        ],
        &env,
    )
    .await;
    wait_for(
        async || {
            get(&format!("{base}/v1/events?after=0&limit=1000")).await["items"]
                .as_array()
                .unwrap()
                .len()
                >= ids.len()
        },
        "the first poll stored",
    )
    .await;

    let target = format!("subtotal:{}", ids[0]);
    let admin = [("CONNHEALTH_ADMIN_TOKEN", ADMIN)];
    let out = run(&["act", &target, "disconnect", "--url", &base], &admin).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(&format!("ok: disconnect {target}: ")),
        "{stdout}"
    );
    assert!(stdout.contains("status now: disconnected"), "{stdout}");
    assert_eq!(sim.connection(&ids[0]).unwrap().status, "disconnected");
    let history = get(&format!("{base}/v1/connections/{target}/history")).await;
    assert!(
        history["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["source"] == "action" && e["event"] == "status_changed"),
        "{history}"
    );

    // Done already: not supported now, exit 1 (JSON output as sent).
    let out = run(
        &[
            "act",
            &target,
            "disconnect",
            "--url",
            &base,
            "--format",
            "json",
        ],
        &admin,
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(v["ok"], false);

    // The provider fails with a message carrying a terminal escape: exit 1, escaped.
    sim.faults().push(
        FaultRule::new(Fault::Status {
            status: 500,
            retry_after: None,
            body: Some("{\"detail\":\"boom \\u001b[31mred\"}".into()),
        })
        .route(UPDATE_CONNECTION),
    );
    let other = format!("subtotal:{}", ids[1]);
    let out = run(&["act", &other, "disconnect", "--url", &base], &admin).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(&format!("failed: disconnect {other}: ")),
        "{stdout}"
    );
    assert!(
        stdout.contains("PATCH /connections/{connection_id}"),
        "{stdout}"
    );
    assert!(!stdout.contains('\u{1b}'), "escaped: {stdout:?}");
    sim.faults().clear();

    // Missing or wrong admin token: usage errors (64), nothing done.
    let out = run(&["act", &other, "disconnect", "--url", &base], &[]).await;
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains("admin token"),
        "{}",
        text(&out.stderr)
    );
    let out = run(
        &["act", &other, "disconnect", "--url", &base],
        &[("CONNHEALTH_ADMIN_TOKEN", "wrong-admin-token-000000")],
    )
    .await;
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains("HTTP 401"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(sim.connection(&ids[1]).unwrap().status, "active");

    let audit = get(&format!("{base}/v1/audit")).await;
    let outcomes: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["failed", "unsupported", "done"]);

    // Nobody listening: unavailable (69).
    let _ = child.start_kill();
    let _ = child.wait().await;
    let out = run(&["act", &other, "disconnect", "--url", &base], &admin).await;
    assert_eq!(out.status.code(), Some(69), "{}", text(&out.stderr));
}
