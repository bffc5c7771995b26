//! The rate control of `HttpClient` against wiremock on loopback, on tokio's paused clock (the
//! budget, the pacing and the pause all run on tokio's time).

use std::time::Duration;

use connhealth_core::http::{HttpClient, HttpConfig, RateLimit, RetryPolicy};
use connhealth_core::Error;
use reqwest::Method;
use tokio::time::Instant;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn client(server: &MockServer, rate_limit: Option<&str>) -> HttpClient {
    let mut cfg = HttpConfig::new(server.uri()).without_timers();
    cfg.retry = RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
        max_total: Duration::from_secs(60),
        max_retry_after: Duration::from_secs(30),
    };
    cfg.rate_limit = rate_limit.map(|r| r.parse::<RateLimit>().unwrap());
    HttpClient::new("testprov", &cfg).unwrap()
}

async fn get(c: &HttpClient, p: &str) -> Result<serde_json::Value, Error> {
    let url = c.url(&[p]).unwrap();
    c.send_json(c.request(Method::GET, format!("GET /{p}"), url))
        .await
}

fn ok() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(serde_json::json!({"ok": true}))
}

/// The budget applies to every attempt, retries included: 3 requests whose first attempts
/// fail with 500 are 6 attempts, and at 2/s (burst 2) 6 attempts need at least 2 s.
#[tokio::test(start_paused = true)]
async fn the_budget_paces_every_attempt_retries_included() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(3)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ok())
        .mount(&server)
        .await;
    let c = client(&server, Some("2/s"));
    assert_eq!(c.configured_rate(), Some(2.0));
    assert_eq!(
        c.rate_limit().map(|r| r.to_string()).as_deref(),
        Some("2/s")
    );
    let start = Instant::now();
    for i in 0..3 {
        get(&c, &format!("r{i}")).await.unwrap();
    }
    assert_eq!(c.stats().requests(), 6);
    assert_eq!(c.stats().retries(), 3);
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    // Clones share the budget: 4 more attempts from a clone and the original, at 2/s.
    let clone = c.clone();
    let start = Instant::now();
    let (a, b) = tokio::join!(
        async {
            for i in 0..2 {
                get(&clone, &format!("a{i}")).await.unwrap();
            }
        },
        async {
            for i in 0..2 {
                get(&c, &format!("b{i}")).await.unwrap();
            }
        }
    );
    let ((), ()) = (a, b);
    assert!(
        start.elapsed() >= Duration::from_millis(1990),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(c.current_limit(), Some(2.0));
}

/// One 429 with `Retry-After: 3` pauses the whole provider: a caller that was never told
/// (its request is started after the 429 arrived) waits for the pause too, and the pause is
/// counted once.
#[tokio::test(start_paused = true)]
async fn retry_after_pauses_every_caller_of_that_provider() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/first"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "3"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ok())
        .mount(&server)
        .await;
    let c = client(&server, None);
    assert_eq!(c.current_limit(), None);
    let start = Instant::now();
    let first = {
        let c = c.clone();
        tokio::spawn(async move { get(&c, "first").await.map(|_| Instant::now()) })
    };
    // Wait (without letting tokio's clock move) until the 429 has been seen.
    while c.stats().rate_limited() == 0 {
        tokio::task::yield_now().await;
    }
    let told = start.elapsed();
    assert!(told < Duration::from_secs(1), "{told:?}");
    get(&c, "second").await.unwrap();
    let second_done = start.elapsed();
    assert!(
        second_done >= Duration::from_secs(3),
        "the second caller did not wait for the pause: {second_done:?}"
    );
    let first_done = first.await.unwrap().unwrap() - start;
    assert!(first_done >= Duration::from_secs(3), "{first_done:?}");
    // The second caller's request was sent once (no 429, no retry); the first one retried.
    assert_eq!(c.stats().retries(), 1);
    assert_eq!(c.stats().rate_limited(), 1);
    assert_eq!(c.stats().paused(), Duration::from_secs(3));
    // Nothing had been accepted yet: no rate to learn, so no pacing limit, only the pause.
    assert_eq!(c.current_limit(), None);
}

/// A 503 with `Retry-After` pauses too, and is counted apart from 429s.
#[tokio::test(start_paused = true)]
async fn a_503_pauses_and_is_counted_apart() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503).insert_header("Retry-After", "2"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ok())
        .mount(&server)
        .await;
    let c = client(&server, None);
    let start = Instant::now();
    get(&c, "x").await.unwrap();
    assert!(start.elapsed() >= Duration::from_secs(2));
    assert_eq!((c.stats().unavailable(), c.stats().rate_limited()), (1, 0));
    // 503 is "overloaded", not "too fast": no pacing rate.
    assert_eq!(c.current_limit(), None);
}
