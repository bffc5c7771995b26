//! Subtotal simulator over real HTTP on loopback.

use std::time::Duration;

use connhealth_testkit::data::{
    SUBTOTAL_DOC_CONNECTION_ID as DOC_CONN, SUBTOTAL_DOC_CUSTOMER_ID as DOC_CUST,
};
use connhealth_testkit::subtotal::{CREATE_TOKEN, UPDATE_CONNECTION};
use connhealth_testkit::SubtotalSim;
use serde_json::{json, Value};

async fn send(rb: reqwest::RequestBuilder) -> (u16, Value) {
    let r = rb.send().await.expect("send");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn mint(sim: &SubtotalSim, c: &reqwest::Client, id: &str, scope: &str) -> String {
    let (status, body) = send(
        c.post(format!("{}/connections/{id}/token", sim.base_url()))
            .header("x-api-key", sim.api_key())
            .json(&json!({ "scope": scope })),
    )
    .await;
    assert_eq!(status, 201);
    body["connection_token"]
        .as_str()
        .expect("token")
        .to_string()
}

#[tokio::test]
async fn api_key_is_required() {
    let sim = SubtotalSim::start_generated(3, 2).await.expect("start");
    let c = reqwest::Client::new();
    let url = format!("{}/connections?customer_id={DOC_CUST}", sim.base_url());
    assert_eq!(
        send(c.get(&url)).await,
        (401, json!({"detail": "Missing API key"}))
    );
    assert_eq!(
        send(c.get(&url).header("x-api-key", "wrong")).await,
        (403, json!({"detail": "Invalid API key"}))
    );
    // Header names are case-insensitive.
    let (status, _) = send(c.get(&url).header("X-API-KEY", sim.api_key())).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn list_and_get_connections() {
    let sim = SubtotalSim::start_generated(20, 2).await.expect("start");
    let c = reqwest::Client::new();
    let key = sim.api_key();
    let (status, body) = send(
        c.get(format!(
            "{}/connections?customer_id={DOC_CUST}",
            sim.base_url()
        ))
        .header("x-api-key", key),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"connections": [{
            "connection_id": "01J51S0JYV6N7K1030CV1ZKSCA",
            "customer_id": "8a46e581-48ba-498a-9ad0-2ee72582e1af",
            "retailer_id": "01J7SC0NN73R6F5VVSP3ZKPDA3",
            "status": "active",
            "email": "alice@example.com",
            "mobile": "+1234567890"
        }]})
    );
    let (status, body) = send(
        c.get(format!("{}/connections?customer_id=nobody", sim.base_url()))
            .header("x-api-key", key),
    )
    .await;
    assert_eq!((status, body), (200, json!({"connections": []})));
    let (status, body) = send(
        c.get(format!("{}/connections", sim.base_url()))
            .header("x-api-key", key),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(
        body,
        json!({"detail":[{"loc":["query","customer_id"],"msg":"Field required","type":"missing","input":null}]})
    );

    for customer in sim.customer_ids() {
        let (_, body) = send(
            c.get(format!("{}/connections", sim.base_url()))
                .query(&[("customer_id", &customer)])
                .header("x-api-key", key),
        )
        .await;
        let n = body["connections"].as_array().map(Vec::len).unwrap_or(0);
        assert!((1..=4).contains(&n));
    }
    let (status, one) = send(
        c.get(format!("{}/connections/{DOC_CONN}", sim.base_url()))
            .header("x-api-key", key),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(one["status"], "active");
    let (status, body) = send(
        c.get(format!("{}/connections/01NOPE", sim.base_url()))
            .header("x-api-key", key),
    )
    .await;
    assert_eq!(
        (status, body),
        (404, json!({"detail": "Connection not found"}))
    );

    let (status, body) = send(
        c.get(format!("{}/retailers", sim.base_url()))
            .header("x-api-key", key),
    )
    .await;
    assert_eq!(status, 200);
    let retailers = body["retailers"].as_array().expect("retailers");
    assert!(retailers.iter().any(|r| r["retailer_id"] == "walmart"));
    assert!(retailers
        .iter()
        .all(|r| r["name"].is_string() && r["enabled"].is_boolean()));
}

#[tokio::test]
async fn token_patch_disconnect_then_get_shows_it() {
    let sim = SubtotalSim::start_generated(3, 2).await.expect("start");
    let c = reqwest::Client::new();
    let token = mint(&sim, &c, DOC_CONN, "access").await;
    assert_eq!(token.split('.').count(), 3);
    assert_eq!(sim.tokens_minted(), 1);
    let url = format!("{}/connections/{DOC_CONN}", sim.base_url());
    let (status, body) = send(
        c.patch(&url)
            .header("x-api-key", sim.api_key())
            .bearer_auth(&token)
            .json(&json!({"status": "disconnected"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "disconnected");
    assert_eq!(body["connection_id"], DOC_CONN);
    let (_, now) = send(c.get(&url).header("x-api-key", sim.api_key())).await;
    assert_eq!(now["status"], "disconnected");
    assert_eq!(
        sim.connection(DOC_CONN).map(|c| c.status),
        Some("disconnected".into())
    );

    // Other fields; `Bearer:` form accepted too.
    let (status, body) = send(
        c.patch(&url)
            .header("x-api-key", sim.api_key())
            .header("Authorization", format!("Bearer: {token}"))
            .json(&json!({"email": "new@example.com", "mobile": null})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["email"], "new@example.com");
    assert_eq!(body["mobile"], "+1234567890");
    assert_eq!(sim.stats().requests(UPDATE_CONNECTION), 2);
    assert_eq!(sim.stats().requests(CREATE_TOKEN), 1);
}

#[tokio::test]
async fn patch_validation_and_token_errors() {
    let sim = SubtotalSim::start_generated(5, 2).await.expect("start");
    let c = reqwest::Client::new();
    let url = format!("{}/connections/{DOC_CONN}", sim.base_url());
    let invalid = json!({"detail": "Invalid or expired connection token"});
    let patch = |token: Option<&str>, body: Value| {
        let mut rb = c.patch(&url).header("x-api-key", sim.api_key()).json(&body);
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        send(rb)
    };

    // No token.
    assert_eq!(
        patch(None, json!({"status": "disconnected"})).await,
        (401, invalid.clone())
    );
    // Garbage token.
    assert_eq!(
        patch(Some("abc.def.ghi"), json!({"status": "disconnected"})).await,
        (401, invalid.clone())
    );
    // link scope.
    let link = mint(&sim, &c, DOC_CONN, "link").await;
    assert_eq!(
        patch(Some(&link), json!({"status": "disconnected"})).await,
        (401, invalid.clone())
    );
    // Token of another connection.
    let other = sim
        .connection_ids()
        .into_iter()
        .find(|id| id != DOC_CONN)
        .expect("another connection");
    let other_token = mint(&sim, &c, &other, "access").await;
    assert_eq!(
        patch(Some(&other_token), json!({"status": "disconnected"})).await,
        (401, invalid.clone())
    );

    let token = mint(&sim, &c, DOC_CONN, "access").await;
    // Bad email → 422 with loc.
    let (status, body) = patch(Some(&token), json!({"email": "not-an-email"})).await;
    assert_eq!(status, 422);
    assert_eq!(body["detail"][0]["loc"], json!(["body", "email"]));
    assert_eq!(
        body["detail"][0]["msg"],
        "value is not a valid email address: An email address must have an @-sign."
    );
    assert_eq!(body["detail"][0]["type"], "value_error");
    // Only `disconnected` is a valid status.
    let (status, body) = patch(Some(&token), json!({"status": "active"})).await;
    assert_eq!(status, 422);
    assert_eq!(body["detail"][0]["loc"], json!(["body", "status"]));
    // Not JSON.
    let (status, _) = send(
        c.patch(&url)
            .header("x-api-key", sim.api_key())
            .bearer_auth(&token)
            .body("{]"),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(
        sim.connection(DOC_CONN).map(|c| c.status),
        Some("active".into())
    );

    // Bad scope on mint.
    let (status, body) = send(
        c.post(format!("{}/connections/{DOC_CONN}/token", sim.base_url()))
            .header("x-api-key", sim.api_key())
            .json(&json!({"scope": "admin"})),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(body["detail"][0]["loc"], json!(["body", "scope"]));

    // Revoked and expired tokens.
    sim.revoke_tokens();
    assert_eq!(
        patch(Some(&token), json!({"status": "disconnected"})).await,
        (401, invalid.clone())
    );
    let token = mint(&sim, &c, DOC_CONN, "access").await;
    sim.expire_all_tokens();
    assert_eq!(
        patch(Some(&token), json!({"status": "disconnected"})).await,
        (401, invalid)
    );
}

#[tokio::test(start_paused = true)]
async fn connection_tokens_expire_on_the_paused_clock() {
    let sim = SubtotalSim::start_generated(3, 2).await.expect("start");
    sim.set_token_ttl(Duration::from_secs(30));
    let c = reqwest::Client::new();
    let token = mint(&sim, &c, DOC_CONN, "access").await;
    tokio::time::advance(Duration::from_secs(31)).await;
    let (status, _) = send(
        c.patch(format!("{}/connections/{DOC_CONN}", sim.base_url()))
            .header("x-api-key", sim.api_key())
            .bearer_auth(&token)
            .json(&json!({"status": "disconnected"})),
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn create_and_delete() {
    let sim = SubtotalSim::start_generated(2, 2).await.expect("start");
    let c = reqwest::Client::new();
    let (status, created) = send(
        c.post(format!("{}/connections", sim.base_url()))
            .header("x-api-key", sim.api_key())
            .json(&json!({"customer_id": "cust-1", "retailer_id": "walmart", "email": "x@example.com"})),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(created["status"], "initialized");
    let id = created["connection_id"].as_str().expect("id").to_string();
    assert_eq!(id.len(), 26);
    assert_eq!(sim.connections_of("cust-1").len(), 1);
    let (status, body) = send(
        c.post(format!("{}/connections", sim.base_url()))
            .header("x-api-key", sim.api_key())
            .json(&json!({"customer_id": "cust-1"})),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(body["detail"][0]["loc"], json!(["body", "retailer_id"]));

    let r = c
        .delete(format!("{}/connections/{id}", sim.base_url()))
        .header("x-api-key", sim.api_key())
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status().as_u16(), 204);
    assert!(sim.connection(&id).is_none());
    let (status, _) = send(
        c.get(format!("{}/connections/{id}", sim.base_url()))
            .header("x-api-key", sim.api_key()),
    )
    .await;
    assert_eq!(status, 404);
    let r = c
        .delete(format!("{}/connections/{id}", sim.base_url()))
        .header("x-api-key", sim.api_key())
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status().as_u16(), 404);
    assert!(sim.set_status(DOC_CONN, "unauthenticated"));
    assert!(!sim.set_status("nope", "active"));
}
