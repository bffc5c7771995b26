//! The `connhealth-sim` binary prints one JSON line and serves until stopped.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::Value;

#[tokio::test]
async fn prints_endpoints_and_serves() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_connhealth-sim"))
        .args([
            "--customers",
            "4",
            "--seed",
            "9",
            "--fault",
            "subtotal:retailers:status:503",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn connhealth-sim");
    let stdout = child.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .expect("join")
    .expect("read line");
    let result = async move {
        let info: Value = serde_json::from_str(&line).expect("one JSON line");
        for key in ["channel3", "violet", "subtotal"] {
            assert!(info[key]["base_url"]
                .as_str()
                .is_some_and(|u| u.starts_with("http://127.0.0.1:")));
        }
        assert!(info["violet"]["base_url"]
            .as_str()
            .is_some_and(|u| u.ends_with("/v1")));
        assert!(info["violet"]["app_id"].is_u64());
        for key in ["app_secret", "username", "password"] {
            assert!(info["violet"][key].is_string(), "violet.{key}");
        }
        let c = reqwest::Client::new();
        let r = c
            .get(format!(
                "{}/v0/partner/merchants",
                info["channel3"]["base_url"].as_str().unwrap_or("")
            ))
            .header(
                "x-api-key",
                info["channel3"]["api_key"].as_str().unwrap_or(""),
            )
            .send()
            .await
            .expect("channel3");
        assert_eq!(r.json::<Value>().await.expect("json")["total"], 4);
        let r = c
            .get(format!(
                "{}/retailers",
                info["subtotal"]["base_url"].as_str().unwrap_or("")
            ))
            .header(
                "x-api-key",
                info["subtotal"]["api_key"].as_str().unwrap_or(""),
            )
            .send()
            .await
            .expect("subtotal");
        assert_eq!(r.status().as_u16(), 503);
        assert_eq!(
            r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
            Some("1")
        );
    };
    // Always stop the child, even if an assertion fails.
    let outcome = tokio::spawn(result).await;
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[test]
fn rejects_a_bad_fault_spec() {
    let out = Command::new(env!("CARGO_BIN_EXE_connhealth-sim"))
        .args(["--fault", "nowhere:x:hang"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown provider"));
}
