//! Issue 16 items 3 and 5 over real sockets: slow and idle connections are closed, the
//! connection cap keeps `/healthz` answering, state-save failures are a `/readyz` warning and a
//! metric. Timeouts run on tokio's paused clock (raw `TcpStream`s, no client timers).

mod common;

use std::time::Duration;

use common::*;
use connhealth_core::watch::{WatchConfig, Watcher};
use connhealth_server::{Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A server with no providers (its first poll finishes at once) on a free loopback port.
async fn start(config: impl FnOnce(&mut ServerConfig)) -> std::net::SocketAddr {
    let mut c = ServerConfig::new("127.0.0.1:0".parse().unwrap());
    config(&mut c);
    let w = Watcher::new(WatchConfig {
        interval: Duration::from_secs(3600),
        jitter: 0.0,
        ..WatchConfig::default()
    });
    let bound = Server::new(c, w).unwrap().bind().await.unwrap();
    let addr = bound.local_addr();
    tokio::spawn(bound.serve(std::future::pending()));
    addr
}

/// Half a request head: the slow-loris opening.
async fn slow_loris(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    s
}

/// Whether the peer closed the socket (EOF or reset) within `within` (virtual time).
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let read_until_eof = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read_until_eof).await.is_ok()
}

/// One request on a fresh connection (`Connection: close`); the status and body.
async fn request(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw))
        .await
        .expect("an answer")
        .expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

#[tokio::test(start_paused = true)]
async fn by_default_a_slow_loris_socket_is_closed() {
    let addr = start(|_| {}).await;
    let mut s = slow_loris(addr).await;
    assert!(
        closed_within(&mut s, Duration::from_secs(120)).await,
        "a half-sent request head kept its socket open for 2 minutes"
    );
}

#[tokio::test(start_paused = true)]
async fn the_header_read_timeout_is_configurable() {
    let addr = start(|c| c.header_read_timeout = Duration::from_secs(3)).await;
    let mut s = slow_loris(addr).await;
    assert!(
        !closed_within(&mut s, Duration::from_secs(2)).await,
        "closed before its timeout"
    );
    assert!(closed_within(&mut s, Duration::from_secs(2)).await);
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let addr = start(|c| {
        c.header_read_timeout = Duration::from_secs(60);
        c.idle_timeout = Duration::from_secs(5);
    })
    .await;
    // A connection that never sends a byte…
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // … and one that made a request and keeps the connection alive.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_secs(4)).await;
    for s in [&mut silent, &mut kept] {
        assert!(
            !closed_within(s, Duration::from_millis(1)).await,
            "closed too early"
        );
    }
    for s in [&mut silent, &mut kept] {
        assert!(closed_within(s, Duration::from_secs(3)).await, "kept idle");
    }
}

#[tokio::test(start_paused = true)]
async fn at_the_connection_cap_healthz_still_answers_and_the_excess_is_refused() {
    let addr = start(|c| {
        c.header_read_timeout = Duration::from_secs(600);
        c.idle_timeout = Duration::from_secs(600);
        c.max_connections = 4;
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(slow_loris(addr).await);
    }
    // Every slot taken by a slow client: /healthz still answers, other routes say busy.
    let (status, body) = request(addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    let (status, body) = request(addr, "/v1/report").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(r#""error":"busy""#), "{body}");

    // The overflow is bounded too: beyond it, a connection is closed at once.
    let overflow = connhealth_server::overflow_connections(4);
    for _ in 0..overflow {
        held.push(slow_loris(addr).await);
    }
    let mut refused = TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(&mut refused, Duration::from_secs(1)).await);

    // Slots freed: served normally again.
    held.clear();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, _) = request(addr, "/v1/report").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn state_save_failures_are_a_readyz_warning_and_a_metric() {
    let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = failing.clone();
    let w = Watcher::new(WatchConfig {
        interval: Duration::from_secs(1),
        jitter: 0.0,
        ..WatchConfig::default()
    });
    let server = Running::start_with(w, Options::default(), move |s| {
        s.persist(move |_state| {
            if flag.load(std::sync::atomic::Ordering::SeqCst) {
                Err("No space left on device".to_owned())
            } else {
                Ok(())
            }
        })
    })
    .await;
    server.ready(false).await;
    let resp = server.get("/readyz").await;
    assert_eq!(resp.status(), 200, "a warning is never a 503");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["warnings"][0]["code"], "state_save_failed", "{body}");
    assert!(
        body["warnings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("No space left on device"),
        "{body}"
    );
    let metrics = server.get("/metrics").await.text().await.unwrap();
    let failures: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("connhealth_state_save_failures_total "))
        .unwrap_or_else(|| panic!("no save-failure counter in {metrics}"))
        .parse()
        .unwrap();
    assert!(failures >= 1);
    assert!(
        metrics.contains("connhealth_state_save_failing 1\n"),
        "{metrics}"
    );

    // Saves work again: the warning goes away after the next poll.
    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let body: serde_json::Value = server.get("/readyz").await.json().await.unwrap();
        if body["warnings"] == serde_json::json!([]) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = server.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("connhealth_state_save_failing 0\n"),
        "{metrics}"
    );
    server.stop().await.unwrap();
}
