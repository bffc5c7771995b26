//! Secrets never reach payloads, errors or logs (its own binary: it installs the global
//! `tracing` subscriber, which per-thread defaults in parallel tests cannot be trusted to see).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use connhealth_core::Status;
use serde_json::json;

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn secrets_never_reach_payloads_errors_or_logs() {
    let logs = Logs::default();
    let l = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || l.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path()).await;
    let rx = Receiver::start().await;
    // A Slack URL is a credential; the down one errors at connect.
    let n = notifier(
        store.clone(),
        vec![
            webhook("ops", &rx.url("/"), json!({})),
            slack("chat", &rx.url(&format!("/services/{SLACK_TOKEN}"))),
            slack(
                "down",
                &format!("http://127.0.0.1:1/services/{SLACK_TOKEN}"),
            ),
        ],
        vec![],
    );
    rx.set(Behaviour::Status(500));
    commit(
        &store,
        vec![change("c1", Status::Healthy, Status::Degraded)],
        &["ops", "chat", "down"],
    )
    .await;
    n.tick().await.unwrap();
    rx.set(Behaviour::Ok);
    tokio::time::advance(Duration::from_secs(5)).await;
    n.tick().await.unwrap();
    let mut seen = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        seen.contains("will retry"),
        "the failures were logged: {seen}"
    );
    for d in store.deliveries(None, None, 100).await.unwrap() {
        seen.push_str(&format!(
            "{:?} {}",
            d,
            d.last_error.clone().unwrap_or_default()
        ));
    }
    seen.push_str(&format!("{n:?}"));
    for r in rx.got() {
        seen.push_str(&String::from_utf8_lossy(&r.body));
        for (k, v) in r.headers.iter() {
            if k != "webhook-signature" {
                seen.push_str(v.to_str().unwrap_or(""));
            }
        }
    }
    for secret in [
        SECRET,
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        SLACK_TOKEN,
        "secretslacktoken",
    ] {
        assert!(!seen.contains(secret), "{secret} leaked");
    }
    let down = &rows(&store, "down").await[0];
    assert!(
        down.last_error
            .as_deref()
            .unwrap()
            .starts_with("connection error"),
        "{down:?}"
    );
}
