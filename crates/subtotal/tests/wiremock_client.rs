//! The client's requests, checked byte by byte against wiremock over loopback HTTP.

use std::time::Duration;

use connhealth_core::http::RetryPolicy;
use connhealth_core::{ErrorKind, Provider, Secret, Status};
use connhealth_subtotal::{
    ConnectionStatus, CreateConnection, Subtotal, SubtotalBuilder, UpdateConnection,
};
use serde_json::{json, Value};
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const KEY: &str = "sk_test_wiremock_key";
const CONN: &str = "01J51S0JYV6N7K1030CV1ZKSCA";

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
        ..RetryPolicy::default()
    }
}

fn builder(server: &MockServer) -> SubtotalBuilder {
    Subtotal::builder()
        .base_url(server.uri())
        .api_key(Secret::new(KEY))
        .customers(vec![])
        .retry(fast_retry())
}

fn connection(status: &str) -> Value {
    json!({
        "connection_id": CONN,
        "customer_id": "8a46e581-48ba-498a-9ad0-2ee72582e1af",
        "retailer_id": "walmart",
        "status": status,
        "email": "alice@example.com",
        "mobile": "+1234567890"
    })
}

async fn mount_token(server: &MockServer, body: Value) {
    Mock::given(method("POST"))
        .and(path(format!("/connections/{CONN}/token")))
        .and(header("x-api-key", KEY))
        .and(body_json(json!({"scope": "access"})))
        .respond_with(ResponseTemplate::new(201).set_body_json(body))
        .mount(server)
        .await;
}

async fn requests(server: &MockServer, m: &str, p: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == m && r.url.path() == p)
        .collect()
}

fn b64url(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(A[((v >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn jwt(exp: i64) -> String {
    format!(
        "{}.{}.c2lnbmF0dXJl",
        b64url(br#"{"alg":"HS256","typ":"JWT"}"#),
        b64url(format!(r#"{{"sub":"{CONN}","scope":"access","exp":{exp}}}"#).as_bytes())
    )
}

#[tokio::test]
async fn patch_sends_bearer_token_api_key_and_only_the_set_fields() {
    let server = MockServer::start().await;
    mount_token(&server, json!({"connection_token": "tok-abc"})).await;
    Mock::given(method("PATCH"))
        .and(path(format!("/connections/{CONN}")))
        .and(header("authorization", "Bearer tok-abc"))
        .and(header("x-api-key", KEY))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({"email": "new@example.com"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(connection("active")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(format!("/connections/{CONN}")))
        .and(header("authorization", "Bearer tok-abc"))
        .and(header("x-api-key", KEY))
        .and(body_json(
            json!({"customer_id": "cus-2", "status": "disconnected"}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(connection("disconnected")))
        .expect(1)
        .mount(&server)
        .await;

    let p = builder(&server).build().unwrap();
    let updated = p
        .client()
        .update_connection(
            CONN,
            UpdateConnection {
                email: Some("new@example.com".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.status, Some(ConnectionStatus::Active));
    let updated = p
        .client()
        .update_connection(
            CONN,
            UpdateConnection {
                customer_id: Some("cus-2".into()),
                status: Some(ConnectionStatus::Disconnected),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.status, Some(ConnectionStatus::Disconnected));

    // The bodies hold exactly the fields that were set, nothing null.
    let patches = requests(&server, "PATCH", &format!("/connections/{CONN}")).await;
    let bodies: Vec<Value> = patches.iter().map(|r| r.body_json().unwrap()).collect();
    assert_eq!(
        bodies,
        vec![
            json!({"email": "new@example.com"}),
            json!({"customer_id": "cus-2", "status": "disconnected"})
        ]
    );
    // One token for both updates.
    let mints = requests(&server, "POST", &format!("/connections/{CONN}/token")).await;
    assert_eq!(mints.len(), 1);
    assert_eq!(
        mints[0].body_json::<Value>().unwrap(),
        json!({"scope": "access"})
    );
}

#[tokio::test]
async fn disconnect_sends_only_the_status() {
    let server = MockServer::start().await;
    mount_token(&server, json!({"connection_token": "tok"})).await;
    Mock::given(method("PATCH"))
        .and(path(format!("/connections/{CONN}")))
        .and(body_json(json!({"status": "disconnected"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(connection("disconnected")))
        .expect(1)
        .mount(&server)
        .await;
    let p = builder(&server).build().unwrap();
    let r = p.client().disconnect(CONN).await.unwrap();
    assert_eq!(r.status, Some(ConnectionStatus::Disconnected));
}

#[tokio::test]
async fn token_under_other_keys_is_accepted_and_a_missing_token_is_a_decode_error() {
    for (body, token) in [
        (json!({"token": "tok-1"}), "tok-1"),
        (
            json!({"access_token": "tok-2", "expires_in": 3600}),
            "tok-2",
        ),
    ] {
        let server = MockServer::start().await;
        mount_token(&server, body).await;
        Mock::given(method("PATCH"))
            .and(header("authorization", format!("Bearer {token}").as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_json(connection("active")))
            .expect(1)
            .mount(&server)
            .await;
        builder(&server)
            .build()
            .unwrap()
            .client()
            .disconnect(CONN)
            .await
            .unwrap();
    }

    let server = MockServer::start().await;
    mount_token(&server, json!({"scope": "access"})).await;
    let err = builder(&server)
        .build()
        .unwrap()
        .client()
        .disconnect(CONN)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode);
    assert!(err.to_string().contains(CONN), "{err}");
    assert!(requests(&server, "PATCH", &format!("/connections/{CONN}"))
        .await
        .is_empty());
}

#[tokio::test]
async fn a_refused_token_is_reminted_once_and_the_patch_repeated_once() {
    let server = MockServer::start().await;
    mount_token(&server, json!({"connection_token": "tok"})).await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"detail": "Invalid token"})))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(200).set_body_json(connection("disconnected")))
        .mount(&server)
        .await;
    let p = builder(&server).build().unwrap();
    p.client().disconnect(CONN).await.unwrap();
    let token_path = format!("/connections/{CONN}/token");
    let patch_path = format!("/connections/{CONN}");
    assert_eq!(requests(&server, "POST", &token_path).await.len(), 2);
    assert_eq!(requests(&server, "PATCH", &patch_path).await.len(), 2);

    // Refused twice: the error comes back, with no further attempts.
    let server = MockServer::start().await;
    mount_token(&server, json!({"connection_token": "tok"})).await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"detail": "Invalid token"})))
        .mount(&server)
        .await;
    let p = builder(&server).build().unwrap();
    let err = p.client().disconnect(CONN).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Authentication);
    assert_eq!(err.http_status(), Some(401));
    assert!(
        err.to_string().contains("Invalid token") && err.to_string().contains(CONN),
        "{err}"
    );
    assert!(!err.to_string().contains("tok\""), "{err}");
    assert_eq!(requests(&server, "POST", &token_path).await.len(), 2);
    assert_eq!(requests(&server, "PATCH", &patch_path).await.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_token_is_reused_until_its_jwt_exp_less_the_margin() {
    let server = MockServer::start().await;
    // Lives 600 s: cached for 540 s (60 s margin).
    mount_token(
        &server,
        json!({"connection_token": jwt(chrono::Utc::now().timestamp() + 600)}),
    )
    .await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(200).set_body_json(connection("active")))
        .mount(&server)
        .await;
    let p = builder(&server).without_timers().build().unwrap();
    let token_path = format!("/connections/{CONN}/token");
    for _ in 0..3 {
        p.client().disconnect(CONN).await.unwrap();
    }
    assert_eq!(requests(&server, "POST", &token_path).await.len(), 1);
    tokio::time::advance(Duration::from_secs(530)).await;
    p.client().disconnect(CONN).await.unwrap();
    assert_eq!(requests(&server, "POST", &token_path).await.len(), 1);
    tokio::time::advance(Duration::from_secs(20)).await;
    p.client().disconnect(CONN).await.unwrap();
    assert_eq!(requests(&server, "POST", &token_path).await.len(), 2);
    // Tokens are per connection.
    Mock::given(method("POST"))
        .and(path("/connections/other/token"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"connection_token": "t2"})))
        .expect(1)
        .mount(&server)
        .await;
    p.client().disconnect("other").await.unwrap();
    p.client().disconnect("other").await.unwrap();
}

#[tokio::test]
async fn concurrent_updates_of_one_connection_mint_one_token() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/connections/{CONN}/token")))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"connection_token": "tok"}))
                .set_delay(Duration::from_millis(50)),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(200).set_body_json(connection("disconnected")))
        .expect(5)
        .mount(&server)
        .await;
    let p = builder(&server).build().unwrap();
    let c = p.client();
    let results = futures::future::join_all((0..5).map(|_| c.disconnect(CONN))).await;
    assert!(results.iter().all(Result::is_ok));
}

#[tokio::test]
async fn patch_is_not_retried_after_a_500_unless_opted_in() {
    let server = MockServer::start().await;
    mount_token(&server, json!({"connection_token": "tok"})).await;
    Mock::given(method("PATCH"))
        .respond_with(
            ResponseTemplate::new(500).set_body_json(json!({"detail": "Internal Server Error"})),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(200).set_body_json(connection("disconnected")))
        .mount(&server)
        .await;
    let patch_path = format!("/connections/{CONN}");

    let p = builder(&server).build().unwrap();
    let err = p.client().disconnect(CONN).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ServerError);
    assert_eq!(requests(&server, "PATCH", &patch_path).await.len(), 1);

    // Opted in: the same failure is retried.
    server.reset().await;
    mount_token(&server, json!({"connection_token": "tok"})).await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(200).set_body_json(connection("disconnected")))
        .mount(&server)
        .await;
    let p = builder(&server).retry_patch(true).build().unwrap();
    p.client().disconnect(CONN).await.unwrap();
    assert_eq!(requests(&server, "PATCH", &patch_path).await.len(), 2);
    // The token mint is never retried blindly.
    server.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let err = p.client().disconnect("fresh").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ServerError);
    assert_eq!(
        requests(&server, "POST", "/connections/fresh/token")
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn validation_errors_name_the_field_not_the_value() {
    let server = MockServer::start().await;
    mount_token(&server, json!({"connection_token": "tok"})).await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({"detail": [{
            "loc": ["body", "email"],
            "msg": "value is not a valid email address",
            "type": "value_error",
            "input": "not-an-email@@",
            "ctx": {"reason": "bad"}
        }]})))
        .mount(&server)
        .await;
    let p = builder(&server).build().unwrap();
    let err = p
        .client()
        .update_connection(
            CONN,
            UpdateConnection {
                email: Some("not-an-email@@".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    assert_eq!(err.http_status(), Some(422));
    assert!(
        text.contains("body.email: value is not a valid email address"),
        "{text}"
    );
    assert!(text.contains(CONN), "{text}");
    assert!(!text.contains("not-an-email"), "{text}");
    assert!(!format!("{err:?}").contains("not-an-email"));
}

#[tokio::test]
async fn get_and_create_connection() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/connections/{CONN}")))
        .and(header("x-api-key", KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(connection("unauthenticated")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/connections"))
        .and(header("x-api-key", KEY))
        .and(body_json(
            json!({"customer_id": "cus-9", "retailer_id": "target", "mobile": "+1555"}),
        ))
        .respond_with(ResponseTemplate::new(201).set_body_json(connection("initialized")))
        .expect(1)
        .mount(&server)
        .await;
    let p = builder(&server).build().unwrap();
    let got = p.client().get_connection(CONN).await.unwrap();
    assert_eq!(got.status, Some(ConnectionStatus::Unauthenticated));
    let created = p
        .client()
        .create_connection(CreateConnection {
            customer_id: "cus-9".into(),
            retailer_id: "target".into(),
            email: None,
            mobile: Some("+1555".into()),
        })
        .await
        .unwrap();
    assert_eq!(created.status, Some(ConnectionStatus::Initialized));

    let err = p.client().get_connection("missing").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("\"missing\""), "{err}");
}

#[tokio::test]
async fn customer_ids_are_sent_as_one_query_value() {
    let odd = "a&b=c d/ü?#%";
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/connections"))
        .and(query_param("customer_id", odd))
        .and(header("x-api-key", KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"connections": [
            {"connection_id": "c1", "customer_id": odd, "retailer_id": "walmart", "status": "active"}
        ]})))
        .expect(1)
        .mount(&server)
        .await;
    let p = builder(&server)
        .customers(vec![odd.to_owned()])
        .resolve_retailer_names(false)
        .build()
        .unwrap();
    let fetched = p.fetch().await;
    assert!(fetched.errors.is_empty(), "{:?}", fetched.errors);
    assert_eq!(fetched.connections.len(), 1);
    assert_eq!(fetched.connections[0].customer.id, odd);
    let reqs = requests(&server, "GET", "/connections").await;
    assert_eq!(
        reqs[0].url.query(),
        Some("customer_id=a%26b%3Dc+d%2F%C3%BC%3F%23%25")
    );
}

#[tokio::test]
async fn retailer_names_become_platforms_and_their_failure_is_harmless() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/connections"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"connections": [
            {"connection_id": "c1", "customer_id": "cus", "retailer_id": "01J7SC0NN73R6F5VVSP3ZKPDA3", "status": "active"},
            {"connection_id": "c2", "customer_id": "cus", "retailer_id": "R2", "status": "active"},
            {"connection_id": "c3", "customer_id": "cus", "retailer_id": "R3", "status": "active"}
        ]})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/retailers"))
        .and(header("x-api-key", KEY))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"retailers": [
                {"retailer_id": "01J7SC0NN73R6F5VVSP3ZKPDA3", "name": "Best Buy", "enabled": true},
                {"id": "R2", "display_name": "Walmart"}
            ]})),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    let p = builder(&server)
        .customers(vec!["cus".into()])
        .build()
        .unwrap();
    let mut conns = p.fetch().await.connections;
    conns.sort_by(|a, b| a.id.cmp(&b.id));
    let platforms: Vec<&str> = conns.iter().map(|c| c.platform.as_str()).collect();
    assert_eq!(platforms, ["best_buy", "walmart", "r3"]);
    assert_eq!(requests(&server, "GET", "/retailers").await.len(), 1);

    // Now /retailers fails: the poll still answers, with retailer ids.
    Mock::given(method("GET"))
        .and(path("/retailers"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    let fetched = p.fetch().await;
    assert!(fetched.errors.is_empty());
    let mut platforms: Vec<String> = fetched
        .connections
        .into_iter()
        .map(|c| c.platform)
        .collect();
    platforms.sort();
    assert_eq!(platforms, ["01j7sc0nn73r6f5vvsp3zkpda3", "r2", "r3"]);

    // Switched off: no /retailers call at all.
    server.reset().await;
    Mock::given(method("GET"))
        .and(path("/connections"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"connections": []})))
        .mount(&server)
        .await;
    let p = builder(&server)
        .customers(vec!["cus".into()])
        .resolve_retailer_names(false)
        .build()
        .unwrap();
    p.fetch().await;
    assert!(requests(&server, "GET", "/retailers").await.is_empty());
}

#[tokio::test]
async fn a_failing_customer_is_one_error_batch_the_others_answer() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/connections"))
        .and(query_param("customer_id", "bad"))
        .respond_with(
            ResponseTemplate::new(403).set_body_json(json!({"detail": "Not your customer"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/connections"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"connections": [
                {"connection_id": "c1", "retailer_id": "walmart", "status": "unauthenticated"},
                {"retailer_id": "walmart", "status": "active"},
                {"connection_id": "c1", "retailer_id": "walmart", "status": "unauthenticated"}
            ]})),
        )
        .mount(&server)
        .await;
    let p = builder(&server)
        .customers(vec!["good".into(), "bad".into()])
        .resolve_retailer_names(false)
        .build()
        .unwrap();
    let fetched = p.fetch().await;
    assert_eq!(fetched.outcome(), connhealth_core::Outcome::Partial);
    assert_eq!(fetched.errors.len(), 2, "{:?}", fetched.errors);
    // The good customer's answer lost two entries, and says so (issue 16 item 4).
    let lost = fetched
        .errors
        .iter()
        .find(|e| e.kind() == ErrorKind::Decode)
        .expect("a decode error for the lost entries");
    assert_eq!(lost.customer_id(), Some("good"));
    assert!(lost.message().contains(": 1 (items #1)"), "{lost}");
    assert!(lost.message().contains(": 1 (ids subtotal:c1)"), "{lost}");
    let e = fetched
        .errors
        .iter()
        .find(|e| e.kind() == ErrorKind::Forbidden)
        .unwrap();
    assert_eq!(e.customer_id(), Some("bad"));
    assert!(e.to_string().contains("Not your customer"), "{e}");
    // The item without connection_id is skipped, the duplicate kept once; the customer id
    // comes from the query when the item has none.
    assert_eq!(fetched.connections.len(), 1);
    let c = &fetched.connections[0];
    assert_eq!(c.customer.id, "good");
    assert_eq!(c.status, Status::ActionRequired);
}

#[tokio::test]
async fn a_refused_api_key_ends_the_poll_after_one_error() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/connections"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"detail": "Missing API key"}))
                .set_delay(Duration::from_millis(5)),
        )
        .mount(&server)
        .await;
    let p = builder(&server)
        .customers((0..50).map(|i| format!("cus-{i}")).collect())
        .concurrency(4)
        .resolve_retailer_names(false)
        .build()
        .unwrap();
    let fetched = p.fetch().await;
    assert_eq!(fetched.outcome(), connhealth_core::Outcome::Failed);
    assert_eq!(fetched.errors.len(), 1);
    assert_eq!(fetched.errors[0].kind(), ErrorKind::Authentication);
    assert!(!fetched.errors[0].to_string().contains(KEY));
    let sent = requests(&server, "GET", "/connections").await.len();
    assert!(sent < 50, "{sent} requests");
}
