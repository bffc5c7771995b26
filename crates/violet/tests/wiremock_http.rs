//! Exact requests and error handling, against wiremock.

use std::time::Duration;

use connhealth_core::http::RetryPolicy;
use connhealth_core::{ErrorKind, Provider, Secret, Status};
use connhealth_violet::{Violet, VioletBuilder};
use serde_json::json;
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const DOC: &str = include_str!("fixtures/doc_example.json");

fn builder(server: &MockServer) -> VioletBuilder {
    Violet::builder()
        .base_url(format!("{}/v1", server.uri()))
        .app_id(77)
        .app_secret(Secret::new("app-secret-xyz"))
        .username("zelda.q@shop.example")
        .password(Secret::new("pw-secret-123"))
        .retry(RetryPolicy {
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            ..RetryPolicy::default()
        })
}

async fn mount_login(server: &MockServer, token: &str, times: u64) {
    Mock::given(method("POST"))
        .and(path("/v1/login"))
        .and(header("x-violet-app-id", "77"))
        .and(header("x-violet-app-secret", "app-secret-xyz"))
        .and(header("content-type", "application/json"))
        .and(body_json(
            json!({"username": "zelda.q@shop.example", "password": "pw-secret-123"}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": 1, "email": "zelda.q@shop.example", "type": "DEVELOPER", "status": "ACTIVE",
            "token": token, "refresh_token": "refresh-1"
        })))
        .expect(times)
        .mount(server)
        .await;
}

#[tokio::test]
async fn sends_the_documented_requests() {
    let server = MockServer::start().await;
    mount_login(&server, "opaque-token-1", 1).await;
    Mock::given(method("GET"))
        .and(path("/v1/operations/connection_health"))
        .and(query_param("app_id", "77"))
        .and(query_param("exclude_public", "false"))
        .and(header("x-violet-app-id", "77"))
        .and(header("x-violet-app-secret", "app-secret-xyz"))
        .and(header("x-violet-token", "opaque-token-1"))
        .respond_with(ResponseTemplate::new(200).set_body_string(DOC))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/operations/connection_health/123"))
        .and(query_param("refresh", "true"))
        .and(query_param("app_id", "77"))
        .and(header("x-violet-token", "opaque-token-1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::from_str::<serde_json::Value>(DOC).unwrap()[0].clone()),
        )
        .expect(1)
        .mount(&server)
        .await;
    let violet = builder(&server)
        .exclude_public(false)
        .name("violet-eu")
        .build()
        .unwrap();
    let fetched = violet.fetch().await;
    assert!(fetched.errors.is_empty(), "{:?}", fetched.errors);
    assert_eq!(fetched.connections.len(), 1);
    assert_eq!(fetched.connections[0].id, "violet-eu:123");
    let c = violet.client().refresh_merchant("123").await.unwrap();
    assert_eq!(c.id, "violet-eu:123");
    assert_eq!(c.status, Status::ActionRequired);
    assert_eq!(violet.client().auth_stats().logins, 1);
}

#[tokio::test(start_paused = true)]
async fn unreadable_token_expiry_assumes_24_hours() {
    let server = MockServer::start().await;
    mount_login(&server, "opaque-token-1", 1).await;
    Mock::given(method("GET"))
        .and(path("/v1/auth/token"))
        .and(header("x-violet-token", "refresh-1"))
        .and(header("x-violet-app-secret", "app-secret-xyz"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"token": "opaque-token-2"})))
        .expect(1)
        .mount(&server)
        .await;
    for (token, times) in [("opaque-token-1", 2), ("opaque-token-2", 1)] {
        Mock::given(method("GET"))
            .and(path("/v1/operations/connection_health"))
            .and(header("x-violet-token", token))
            .respond_with(ResponseTemplate::new(200).set_body_string("[]"))
            .expect(times)
            .mount(&server)
            .await;
    }
    let violet = builder(&server).without_timers().build().unwrap();
    let client = violet.client();
    client.connection_health().await.unwrap();
    tokio::time::advance(Duration::from_secs(24 * 3600 - 120)).await;
    client.connection_health().await.unwrap();
    tokio::time::advance(Duration::from_secs(90)).await;
    client.connection_health().await.unwrap();
    assert_eq!(client.auth_stats().refreshes, 1);
}

#[tokio::test]
async fn login_errors_never_carry_credentials() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/login"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "status": 401,
            "message": "Invalid credentials for zelda.q@shop.example (zelda.q) with password pw-secret-123",
            "error_code": 1002, "timestamp": 1700000000000i64
        })))
        .expect(1)
        .mount(&server)
        .await;
    let violet = builder(&server).build().unwrap();
    let e = violet.client().connection_health().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Authentication);
    assert_eq!(e.endpoint(), "POST /login");
    assert_eq!(e.provider_code(), Some(1002));
    let text = format!("{e} | {e:?} | {violet:?}");
    for secret in [
        "zelda.q@shop.example",
        "zelda",
        "pw-secret-123",
        "app-secret-xyz",
    ] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    assert!(text.contains("Invalid credentials"), "{text}");
}

#[tokio::test]
async fn forbidden_is_not_renewed_and_server_errors_are_retried() {
    let server = MockServer::start().await;
    mount_login(&server, "opaque-token-1", 1).await;
    Mock::given(method("GET"))
        .and(path("/v1/operations/connection_health"))
        .respond_with(ResponseTemplate::new(403).set_body_json(json!({
            "status": 403, "message": "app_id not accessible", "error_code": 1004})))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/operations/connection_health"))
        .respond_with(ResponseTemplate::new(503))
        .expect(4)
        .mount(&server)
        .await;
    let violet = builder(&server).build().unwrap();
    let e = violet.client().connection_health().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Forbidden);
    assert_eq!(e.message(), "app_id not accessible");
    let e = violet.client().connection_health().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ServerError);
    assert_eq!(
        violet.client().auth_stats(),
        connhealth_violet::AuthStats {
            logins: 1,
            refreshes: 0
        }
    );
}

#[tokio::test]
async fn a_login_answer_without_token_is_a_decode_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/login"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": 1})))
        .mount(&server)
        .await;
    let violet = builder(&server).build().unwrap();
    let e = violet.client().authenticate().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Decode);
    assert_eq!(e.endpoint(), "POST /login");
}

#[test]
fn build_validates_every_setting() {
    let ok = || {
        Violet::builder()
            .app_id(1)
            .app_secret(Secret::new("s"))
            .username("u@example.com")
            .password(Secret::new("p"))
    };
    assert!(ok().build().is_ok());
    assert_eq!(ok().build().unwrap().client().name(), "violet");
    let cases: Vec<(VioletBuilder, &str)> = vec![
        (
            Violet::builder()
                .app_secret(Secret::new("s"))
                .username("u")
                .password(Secret::new("p")),
            "app_id is required",
        ),
        (ok().app_id(0), "app_id must be a positive integer"),
        (
            Violet::builder()
                .app_id(1)
                .username("u")
                .password(Secret::new("p")),
            "app_secret is required",
        ),
        (ok().app_secret(Secret::new(" ")), "app_secret is empty"),
        (
            Violet::builder()
                .app_id(1)
                .app_secret(Secret::new("s"))
                .password(Secret::new("p")),
            "username is required",
        ),
        (ok().username(""), "username is empty"),
        (
            Violet::builder()
                .app_id(1)
                .app_secret(Secret::new("s"))
                .username("u"),
            "password is required",
        ),
        (ok().password(Secret::new("")), "password is empty"),
        (ok().name(" "), "name must not be empty"),
        (ok().concurrency(0), "concurrency must be at least 1"),
        (ok().base_url("http://api.example.com/v1"), "https"),
        (ok().base_url("not a url"), "not a URL"),
    ];
    for (b, want) in cases {
        let e = b.build().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config, "{want}");
        assert!(e.to_string().contains(want), "{e} does not say {want:?}");
        assert!(!e.to_string().contains("u@example.com"));
    }
    let live = ok().live().build().unwrap();
    assert!(format!("{live:?}").contains(Violet::LIVE_BASE_URL));
    let dbg = format!("{:?} {:?}", ok().build().unwrap(), ok());
    assert!(
        !dbg.contains("u@example.com") && dbg.contains("[redacted]"),
        "{dbg}"
    );
    assert!(format!("{:?}", ok().build().unwrap()).contains(Violet::SANDBOX_BASE_URL));
}

/// A report big enough to arrive in many chunks (~2.5 MB), decoded while it downloads: the
/// same connections as the same bytes decoded whole, in one request; and a report cut short
/// or followed by junk is a `decode` error naming the provider and the endpoint, with the
/// status, asked once (a 200 whose body is wrong is not retried).
#[tokio::test]
async fn a_large_report_is_decoded_as_it_arrives() {
    let one: serde_json::Value = serde_json::from_str::<Vec<serde_json::Value>>(DOC)
        .unwrap()
        .remove(0);
    let report: Vec<serde_json::Value> = (0..1200)
        .map(|i| {
            let mut m = one.clone();
            m["merchant_id"] = json!(5000 + i);
            m["merchant_name"] = json!(format!("Shop {i} \u{e9}\u{1f6d2}"));
            m
        })
        .collect();
    let body = serde_json::to_vec(&report).unwrap();
    assert!(body.len() > 2_000_000, "{}", body.len());

    let server = MockServer::start().await;
    mount_login(&server, "tok", 1).await;
    Mock::given(method("GET"))
        .and(path("/v1/operations/connection_health"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body.clone(), "application/json"))
        .expect(1)
        .mount(&server)
        .await;
    let violet = builder(&server).build().unwrap();
    let got = violet.client().connection_health().await.unwrap();
    let whole =
        connhealth_violet::decode_report("violet", &body, chrono::Utc::now(), false).unwrap();
    assert_eq!(got.len(), 1200);
    let strip = |cs: &[connhealth_core::Connection]| -> Vec<serde_json::Value> {
        cs.iter()
            .map(|c| {
                let mut v = serde_json::to_value(c).unwrap();
                v.as_object_mut().unwrap().remove("observed_at");
                v
            })
            .collect()
    };
    assert_eq!(strip(&got), strip(&whole));

    for (what, bad) in [
        ("cut short", body[..body.len() - 700].to_vec()),
        ("junk after it", [body.as_slice(), b" ]"].concat()),
    ] {
        let server = MockServer::start().await;
        mount_login(&server, "tok", 1).await;
        Mock::given(method("GET"))
            .and(path("/v1/operations/connection_health"))
            .respond_with(ResponseTemplate::new(200).set_body_raw(bad, "application/json"))
            .expect(1)
            .mount(&server)
            .await;
        let violet = builder(&server).name("violet-eu").build().unwrap();
        let e = violet.client().connection_health().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Decode, "{what}: {e}");
        assert_eq!(e.provider(), "violet-eu");
        assert_eq!(e.endpoint(), "GET /operations/connection_health");
        assert_eq!(e.http_status(), Some(200));
        assert!(
            !e.to_string().contains("Shop"),
            "{what}: a value quoted: {e}"
        );
    }
}
