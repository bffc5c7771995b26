//! The shared HTTP plumbing against wiremock on loopback.

use std::time::Duration;

use connhealth_core::http::{HeaderName, HttpClient, HttpConfig, RetryPolicy};
use connhealth_core::{Error, ErrorKind, Secret};
use reqwest::Method;
use serde::Deserialize;
use tokio::time::Instant;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "c3_sk_super_secret_value";

#[derive(Debug, Deserialize, PartialEq)]
struct Thing {
    ok: bool,
}

/// A paused-clock friendly client: no client timers (auto-advance would fire them while the
/// runtime waits on wiremock's thread), fast backoff.
fn client(server: &MockServer, retry: RetryPolicy) -> HttpClient {
    let mut cfg = HttpConfig::new(server.uri()).without_timers();
    cfg.retry = retry;
    HttpClient::new("testprov", &cfg).unwrap()
}

fn retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
        max_total: Duration::from_secs(60),
        max_retry_after: Duration::from_secs(30),
    }
}

async fn get(c: &HttpClient, p: &str) -> Result<Thing, Error> {
    let url = c.url(&[p]).unwrap();
    let req = c
        .request(Method::GET, format!("GET /{p}"), url)
        .secret_header(HeaderName::from_static("x-api-key"), "", &Secret::new(KEY));
    c.send_json(req).await
}

async fn requests_to(server: &MockServer, p: &str) -> usize {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == p)
        .count()
}

#[tokio::test(start_paused = true)]
async fn retries_server_errors_then_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/flaky"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/flaky"))
        .and(header("x-api-key", KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"ok": true})))
        .mount(&server)
        .await;
    let c = client(&server, retry(4));
    assert_eq!(get(&c, "flaky").await.unwrap(), Thing { ok: true });
    assert_eq!(requests_to(&server, "/flaky").await, 3);
    assert_eq!(c.stats().retries(), 2);
}

#[tokio::test(start_paused = true)]
async fn gives_up_after_max_attempts_with_the_last_error() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(500)
                .set_body_json(serde_json::json!({"detail": "database on fire"})),
        )
        .mount(&server)
        .await;
    let c = client(&server, retry(3));
    let err = get(&c, "down").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ServerError);
    assert_eq!(err.http_status(), Some(500));
    assert_eq!(err.provider(), "testprov");
    assert_eq!(err.endpoint(), "GET /down");
    assert_eq!(err.message(), "database on fire");
    assert_eq!(
        err.to_string(),
        "testprov: GET /down: server_error (HTTP 500): database on fire"
    );
    assert_eq!(requests_to(&server, "/down").await, 3);
}

#[tokio::test(start_paused = true)]
async fn honours_retry_after_seconds_on_429() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "7"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"ok": true})))
        .mount(&server)
        .await;
    let c = client(&server, retry(3));
    let start = Instant::now();
    get(&c, "limited").await.unwrap();
    assert!(
        start.elapsed() >= Duration::from_secs(7),
        "waited only {:?}",
        start.elapsed()
    );
    assert_eq!(requests_to(&server, "/limited").await, 2);
}

#[tokio::test(start_paused = true)]
async fn honours_retry_after_http_date_on_503() {
    let server = MockServer::start().await;
    let when = (chrono::Utc::now() + chrono::Duration::seconds(20))
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503).insert_header("Retry-After", when.as_str()))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"ok": true})))
        .mount(&server)
        .await;
    let c = client(&server, retry(3));
    let start = Instant::now();
    get(&c, "busy").await.unwrap();
    assert!(
        start.elapsed() >= Duration::from_secs(15),
        "waited only {:?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_beyond_the_cap_is_returned_not_waited() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "3600"))
        .mount(&server)
        .await;
    let c = client(&server, retry(5));
    let err = get(&c, "x").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3600)));
    assert_eq!(requests_to(&server, "/x").await, 1);
}

#[tokio::test(start_paused = true)]
async fn total_retry_time_is_capped() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "20"))
        .mount(&server)
        .await;
    let mut policy = retry(10);
    policy.max_total = Duration::from_secs(50);
    let c = client(&server, policy);
    let start = Instant::now();
    let err = get(&c, "x").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    // 20 s + 20 s fit in 50 s; a third wait would not.
    assert_eq!(requests_to(&server, "/x").await, 3);
    assert!(start.elapsed() < Duration::from_secs(50));
}

#[tokio::test(start_paused = true)]
async fn client_errors_are_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(403).set_body_json(
            serde_json::json!({"detail": "Merchant does not belong to this partner"}),
        ))
        .mount(&server)
        .await;
    let c = client(&server, retry(4));
    let err = get(&c, "cus_1").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Forbidden);
    assert_eq!(err.message(), "Merchant does not belong to this partner");
    assert_eq!(requests_to(&server, "/cus_1").await, 1);
}

#[tokio::test(start_paused = true)]
async fn patch_is_never_retried_blindly() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    let c = client(&server, retry(4));
    let url = c.url(&["conn"]).unwrap();
    let err = c
        .send(
            c.request(Method::PATCH, "PATCH /conn", url.clone())
                .json(&serde_json::json!({"status": "disconnected"})),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ServerError);
    assert_eq!(requests_to(&server, "/conn").await, 1);
    // With the explicit opt-in it is.
    let _ = c
        .send(c.request(Method::PATCH, "PATCH /conn", url).retry_unsafe())
        .await
        .unwrap_err();
    assert_eq!(requests_to(&server, "/conn").await, 5);
}

#[tokio::test]
async fn a_connect_failure_is_a_connection_error() {
    // A port that was just free: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cfg = HttpConfig::new(format!("http://127.0.0.1:{port}"));
    cfg.retry = RetryPolicy {
        max_attempts: 2,
        initial_backoff: Duration::from_millis(1),
        ..RetryPolicy::default()
    };
    let c = HttpClient::new("testprov", &cfg).unwrap();
    let err = get(&c, "x").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection);
    assert!(!err.to_string().contains(KEY));
    assert_eq!(c.stats().requests(), 2);
}

#[tokio::test]
async fn bodies_over_the_cap_are_refused() {
    let server = MockServer::start().await;
    let big = format!("{{\"ok\":true,\"pad\":\"{}\"}}", "x".repeat(10_000));
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(big, "application/json"))
        .mount(&server)
        .await;
    let mut cfg = HttpConfig::new(server.uri());
    cfg.max_body_bytes = 1024;
    let c = HttpClient::new("testprov", &cfg).unwrap();
    let err = get(&c, "big").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    assert!(err.message().contains("1024"), "{}", err.message());
    cfg.max_body_bytes = 20_000;
    let c = HttpClient::new("testprov", &cfg).unwrap();
    assert!(get(&c, "big").await.unwrap().ok);
}

#[tokio::test]
async fn malformed_and_mismatched_json_are_decode_errors() {
    let server = MockServer::start().await;
    Mock::given(path("/garbage"))
        .respond_with(ResponseTemplate::new(200).set_body_raw("<html>not json</html>", "text/html"))
        .mount(&server)
        .await;
    Mock::given(path("/truncated"))
        .respond_with(ResponseTemplate::new(200).set_body_raw("{\"ok\": tr", "application/json"))
        .mount(&server)
        .await;
    Mock::given(path("/shape"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"ok": "alice@example.com"})),
        )
        .mount(&server)
        .await;
    let c = client(&server, retry(1));
    let e = get(&c, "garbage").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Decode);
    assert!(
        e.to_string()
            .starts_with("testprov: GET /garbage: decode (HTTP 200): body is not valid JSON"),
        "{e}"
    );
    let e = get(&c, "truncated").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Decode);
    assert!(e.message().contains("truncated"), "{e}");
    let e = get(&c, "shape").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Decode);
    assert!(e.message().contains("at ok"), "{e}");
    assert!(
        !e.to_string().contains("alice"),
        "personal data leaked into {e}"
    );
}

#[tokio::test]
async fn same_origin_redirects_are_followed_other_origins_refused() {
    let home = MockServer::start().await;
    let elsewhere = MockServer::start().await;
    Mock::given(path("/moved"))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("Location", format!("{}/here", home.uri()).as_str()),
        )
        .mount(&home)
        .await;
    Mock::given(path("/here"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"ok": true})))
        .mount(&home)
        .await;
    Mock::given(path("/away"))
        .respond_with(
            ResponseTemplate::new(307)
                .insert_header("Location", format!("{}/steal", elsewhere.uri()).as_str()),
        )
        .mount(&home)
        .await;
    Mock::given(path("/steal"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"ok": true})))
        .mount(&elsewhere)
        .await;
    let c = client(&home, retry(1));
    assert!(get(&c, "moved").await.unwrap().ok);
    let err = get(&c, "away").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.message().contains("redirect"), "{err}");
    assert!(
        elsewhere.received_requests().await.unwrap().is_empty(),
        "the key travelled to another origin"
    );
}

#[tokio::test]
async fn ids_stay_inside_their_path_segment() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"ok": true})))
        .mount(&server)
        .await;
    let c = client(&server, retry(1));
    for id in [
        "../admin", "a/b", "q?x=1", "h#frag", "p%2Fq", "sp ace", "ünï",
    ] {
        let url = c.url(&["v0", "merchants", id, "connections"]).unwrap();
        c.send(c.request(Method::GET, "GET", url)).await.unwrap();
    }
    let paths: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.url.path().to_owned())
        .collect();
    assert_eq!(
        paths,
        [
            "/v0/merchants/..%2Fadmin/connections",
            "/v0/merchants/a%2Fb/connections",
            "/v0/merchants/q%3Fx%3D1/connections",
            "/v0/merchants/h%23frag/connections",
            "/v0/merchants/p%252Fq/connections",
            "/v0/merchants/sp%20ace/connections",
            "/v0/merchants/%C3%BCn%C3%AF/connections",
        ]
    );
    assert_eq!(
        c.url(&["v0", ".."]).unwrap_err().kind(),
        ErrorKind::InvalidRequest
    );
}

#[test]
fn base_urls_must_be_https_unless_loopback() {
    let ok = [
        "https://partners.trychannel3.com",
        "http://127.0.0.1:8080",
        "http://localhost:1/v1",
        "http://[::1]:9/",
        "https://api.example.com/v1/",
    ];
    for u in ok {
        let c = HttpClient::new("p", &HttpConfig::new(u)).unwrap_or_else(|e| panic!("{u}: {e}"));
        assert!(
            !c.base_url().as_str().ends_with('/') || c.base_url().path() == "/",
            "{}",
            c.base_url()
        );
    }
    let bad = [
        "http://partners.trychannel3.com",
        "http://10.0.0.1",
        "ftp://example.com",
        "not a url",
        "https://user:pw@example.com",
        "https://example.com/?key=1",
    ];
    for u in bad {
        let e = HttpClient::new("p", &HttpConfig::new(u)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config, "{u}");
        assert!(!e.to_string().contains("pw@"), "credentials echoed: {e}");
    }
    let e = HttpClient::new("p", &HttpConfig::new("http://example.com")).unwrap_err();
    assert!(e.to_string().contains("https://"), "{e}");
}

#[tokio::test]
async fn secrets_never_show_in_debug_or_errors() {
    let server = MockServer::start().await;
    // A provider that echoes the key back in its error body.
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(serde_json::json!({"detail": format!("bad key {KEY}")})),
        )
        .mount(&server)
        .await;
    let c = client(&server, retry(1));
    let secret = Secret::new(KEY);
    let url = c.url(&["x"]).unwrap();
    let req = c
        .request(Method::GET, "GET /x", url)
        .secret_header(HeaderName::from_static("x-api-key"), "", &secret)
        .secret_header(HeaderName::from_static("authorization"), "Bearer ", &secret);
    let dbg = format!("{req:?} {c:?} {secret:?} {secret}");
    assert!(!dbg.contains(KEY), "{dbg}");
    let err = c.send(req).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Authentication);
    let shown = format!("{err} {err:?} {:?}", err.to_report());
    assert!(!shown.contains(KEY), "{shown}");
    assert!(shown.contains("[redacted]"));
}

/// `Request::header` takes a `HeaderName`: a name written in upper case (as in provider docs)
/// is normalized by `HeaderName::from_bytes` and sent, where the old `&'static str` form
/// panicked inside `HeaderName::from_static`. A value that cannot be sent is a `config` error.
#[tokio::test]
async fn header_names_are_typed_and_bad_values_are_config_errors() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/h"))
        .and(header("x-custom-thing", "v1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"ok": true})))
        .mount(&server)
        .await;
    let c = client(&server, retry(1));
    let name = HeaderName::from_bytes(b"X-Custom-Thing").unwrap();
    let req = c
        .request(Method::GET, "GET /h", c.url(&["h"]).unwrap())
        .header(name.clone(), "v1");
    assert_eq!(c.send_json::<Thing>(req).await.unwrap(), Thing { ok: true });

    let req = c
        .request(Method::GET, "GET /h", c.url(&["h"]).unwrap())
        .header(name, "line\nbreak");
    let e = c.send(req).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.to_string().contains("x-custom-thing"), "{e}");
}

/// Issue 16: a same-origin redirect loop ends at the hop limit, and says so (not "another
/// origin", which would send the reader after the wrong problem).
#[tokio::test]
async fn a_same_origin_redirect_loop_is_reported_as_the_hop_limit() {
    let server = MockServer::start().await;
    Mock::given(path("/loop"))
        .respond_with(ResponseTemplate::new(302).insert_header("Location", "/loop"))
        .mount(&server)
        .await;
    let c = client(&server, retry(1));
    let err = get(&c, "loop").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    let msg = err.message();
    assert!(msg.contains("too many redirects"), "{msg}");
    assert!(!msg.contains("another origin"), "{msg}");
    // The first request and five followed hops.
    assert_eq!(requests_to(&server, "/loop").await, 6);
}
