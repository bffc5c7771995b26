//! The `connhealth-sim` binary prints one JSON line and serves until stopped.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::Value;

/// Start `connhealth-sim` with `args` and read the JSON line it prints first.
async fn spawn_sim(args: &[&str]) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_connhealth-sim"))
        .args(args)
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
    (child, line)
}

#[tokio::test]
async fn prints_endpoints_and_serves() {
    let (mut child, line) = spawn_sim(&[
        "--customers",
        "4",
        "--seed",
        "9",
        "--fault",
        "subtotal:retailers:status:503",
    ])
    .await;
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

/// What the actions need is served too: Channel3's connect session, Subtotal's token mint and
/// PATCH (here failing by a `--fault`, as the action tests inject).
#[tokio::test]
async fn serves_the_action_endpoints_with_faults() {
    let (mut child, line) = spawn_sim(&[
        "--customers",
        "2",
        "--fault",
        "subtotal:update_connection:status:502",
    ])
    .await;
    let result = async move {
        let info: Value = serde_json::from_str(&line).expect("one JSON line");
        let c = reqwest::Client::new();
        let c3 = info["channel3"]["base_url"].as_str().unwrap().to_owned();
        let c3_key = info["channel3"]["api_key"].as_str().unwrap().to_owned();
        let merchants: Value = c
            .get(format!("{c3}/v0/partner/merchants"))
            .header("x-api-key", &c3_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let customer = merchants["items"][0]["customer_id"]
            .as_str()
            .expect("a merchant")
            .to_owned();
        let r = c
            .post(format!(
                "{c3}/v0/partner/merchants/{customer}/connections/sessions"
            ))
            .header("x-api-key", &c3_key)
            .json(&serde_json::json!({
                "redirect_uri": format!("{}done", connhealth_testkit::data::CHANNEL3_REDIRECT_PREFIX),
                "platform": "shopify",
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let session: Value = r.json().await.unwrap();
        assert!(session["url"].is_string() && session["expires_at"].is_string());

        let st = info["subtotal"]["base_url"].as_str().unwrap().to_owned();
        let st_key = info["subtotal"]["api_key"].as_str().unwrap().to_owned();
        // Subtotal cannot list its customers: the line names them, each with connections.
        let customers = info["subtotal"]["customers"].as_array().expect("customers");
        assert_eq!(customers.len(), 2);
        for customer in customers {
            let list: Value = c
                .get(format!("{st}/connections"))
                .query(&[("customer_id", customer.as_str().expect("an id"))])
                .header("x-api-key", &st_key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let n = list["connections"].as_array().map_or(0, Vec::len);
            assert!(n > 0, "{customer} has connections: {list}");
        }
        let id = "01J51S0JYV6N7K1030CV1ZKSCA"; // the documented example connection
        let r = c
            .post(format!("{st}/connections/{id}/token"))
            .header("x-api-key", &st_key)
            .json(&serde_json::json!({"scope": "access"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        let token: Value = r.json().await.unwrap();
        let jwt = token["connection_token"]
            .as_str()
            .expect("a token")
            .to_owned();
        let r = c
            .patch(format!("{st}/connections/{id}"))
            .header("x-api-key", &st_key)
            .bearer_auth(jwt)
            .json(&serde_json::json!({"status": "disconnected"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 502, "the --fault answers");
    };
    let outcome = tokio::spawn(result).await;
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// `--rate-limit 1/min --rate-limit-burst 2`: two answers, then 429 with `Retry-After`.
#[tokio::test]
async fn rate_limit_flags_limit_every_key() {
    let (mut child, line) = spawn_sim(&[
        "--customers",
        "2",
        "--rate-limit",
        "1/min",
        "--rate-limit-burst",
        "2",
    ])
    .await;
    let result = async move {
        let info: Value = serde_json::from_str(&line).expect("one JSON line");
        let c = reqwest::Client::new();
        let url = format!(
            "{}/v0/partner/merchants",
            info["channel3"]["base_url"].as_str().unwrap_or("")
        );
        let key = info["channel3"]["api_key"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let mut statuses = Vec::new();
        let mut retry_after = None;
        for _ in 0..3 {
            let r = c.get(&url).header("x-api-key", &key).send().await.unwrap();
            statuses.push(r.status().as_u16());
            retry_after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        }
        assert_eq!(statuses, [200, 200, 429]);
        // One token a minute: the next one is nearly 60 s away.
        assert!(
            retry_after.is_some_and(|s| (55..=60).contains(&s)),
            "{retry_after:?}"
        );
    };
    let outcome = tokio::spawn(result).await;
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
    let out = Command::new(env!("CARGO_BIN_EXE_connhealth-sim"))
        .args(["--rate-limit", "lots"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid rate limit"));
}
