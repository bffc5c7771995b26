//! Violet simulator over real HTTP on loopback.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use connhealth_testkit::violet::{CONNECTION_HEALTH, LOGIN, REFRESH};
use connhealth_testkit::VioletSim;
use serde_json::{json, Value};

struct Client<'a> {
    sim: &'a VioletSim,
    http: reqwest::Client,
}

impl<'a> Client<'a> {
    fn new(sim: &'a VioletSim) -> Self {
        Client {
            sim,
            http: reqwest::Client::new(),
        }
    }

    fn app(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        rb.header("X-Violet-App-Id", self.sim.app_id().to_string())
            .header("X-Violet-App-Secret", self.sim.app_secret())
    }

    async fn login(&self) -> Value {
        let r = self
            .app(self.http.post(format!("{}/login", self.sim.base_url())))
            .json(&json!({"username": self.sim.username(), "password": self.sim.password()}))
            .send()
            .await
            .expect("login");
        assert_eq!(r.status().as_u16(), 200);
        r.json().await.expect("json")
    }

    async fn get(&self, path_and_query: &str, token: &str) -> (u16, Value) {
        let r = self
            .app(
                self.http
                    .get(format!("{}{}", self.sim.base_url(), path_and_query)),
            )
            .header("X-Violet-Token", token)
            .send()
            .await
            .expect("get");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn report(&self, token: &str) -> (u16, Value) {
        self.get(
            &format!("/operations/connection_health?app_id={}", self.sim.app_id()),
            token,
        )
        .await
    }
}

fn jwt_payload(token: &str) -> Value {
    let mut parts = token.split('.');
    let header = parts.next().expect("header");
    let payload = parts.next().expect("payload");
    assert!(
        parts.next().is_some_and(|s| !s.is_empty()),
        "signature segment"
    );
    let h: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("b64")).expect("json");
    assert_eq!(h, json!({"alg": "HS256", "typ": "JWT"}));
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json")
}

#[tokio::test]
async fn login_token_report() {
    let sim = VioletSim::start_generated(30, 5).await.expect("start");
    assert!(sim.base_url().ends_with("/v1"));
    let c = Client::new(&sim);
    let user = c.login().await;
    assert_eq!(user["type"], "DEVELOPER");
    assert_eq!(user["status"], "ACTIVE");
    assert_eq!(user["email"], sim.username());
    let token = user["token"].as_str().expect("token");
    assert!(user["refresh_token"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    let claims = jwt_payload(token);
    let exp = claims["exp"].as_i64().expect("exp");
    let in_secs = exp - chrono::Utc::now().timestamp();
    assert!(
        (24 * 3600 - 60..=24 * 3600 + 60).contains(&in_secs),
        "{in_secs}"
    );
    assert!(claims["sub"].is_string());
    assert_eq!(sim.logins(), 1);

    let (status, report) = c.report(token).await;
    assert_eq!(status, 200);
    let list = report.as_array().expect("array");
    // exclude_public defaults to true.
    assert!(!list.is_empty());
    assert!(list.iter().all(|m| m["distribution_type"] == "PRIVATE"));
    let first = &list[0];
    for key in [
        "merchant_id",
        "merchant_name",
        "merchant_email",
        "merchant_status",
        "platform",
        "store_url",
        "distribution_type",
        "connection",
        "scope_validation",
        "sync_status",
        "invalid_products",
        "offers_published",
        "payout_account",
        "migration",
        "commission_rate",
    ] {
        assert!(first.get(key).is_some(), "missing {key}");
    }
    assert!(first["connection"]["results"].get("isConnected").is_some());
    assert!(first["migration"]["results"].is_string());

    // The documented example (PUBLIC) shows with exclude_public=false, verbatim.
    let (status, all) = c
        .get(
            &format!(
                "/operations/connection_health?app_id={}&exclude_public=false",
                sim.app_id()
            ),
            token,
        )
        .await;
    assert_eq!(status, 200);
    let all = all.as_array().expect("array");
    assert_eq!(all.len(), 30);
    let doc = all
        .iter()
        .find(|m| m["merchant_id"] == 123)
        .expect("merchant 123");
    assert_eq!(doc, &connhealth_testkit::data::violet_doc_example());
    assert_eq!(doc["migration"]["results"], "MIGRATION_REQUIRED");

    // One merchant; refresh=true is counted.
    let (status, one) = c
        .get("/operations/connection_health/123?refresh=true", token)
        .await;
    assert_eq!(status, 200);
    assert_eq!(one["merchant_id"], 123);
    assert_eq!(sim.health_refreshes(), 1);
    let (status, err) = c.get("/operations/connection_health/999999", token).await;
    assert_eq!(status, 404);
    assert_eq!(err["status"], 404);
    let (status, _) = c
        .get("/operations/connection_health/not-a-number", token)
        .await;
    assert_eq!(status, 400);

    // app_id missing → 400, another app → 403.
    let (status, err) = c.get("/operations/connection_health", token).await;
    assert_eq!(status, 400);
    assert!(err["timestamp"].is_i64());
    let (status, _) = c
        .get("/operations/connection_health?app_id=42", token)
        .await;
    assert_eq!(status, 403);
    assert_eq!(sim.stats().requests(CONNECTION_HEALTH), 4);
}

#[tokio::test]
async fn auth_failures() {
    let sim = VioletSim::start_generated(3, 5).await.expect("start");
    let c = Client::new(&sim);
    let url = format!("{}/login", sim.base_url());
    // Wrong password.
    let r = c
        .app(c.http.post(&url))
        .json(&json!({"username": sim.username(), "password": "wrong"}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 401);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["status"], 401);
    assert_eq!(body["message"], "Invalid credentials");
    assert_eq!(body["error_code"], 1002);
    assert!(body["timestamp"].is_i64());
    // Wrong app secret.
    let r = c
        .http
        .post(&url)
        .header("X-Violet-App-Id", sim.app_id().to_string())
        .header("X-Violet-App-Secret", "nope")
        .json(&json!({"username": sim.username(), "password": sim.password()}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(r.json::<Value>().await.expect("json")["error_code"], 1003);
    // Garbage body: 400, no panic.
    let r = c
        .app(c.http.post(&url))
        .body("{{{")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(sim.logins(), 0);
    assert_eq!(sim.stats().requests(LOGIN), 3);

    // Report without a token / with a bogus one.
    let r = c
        .app(c.http.get(format!(
            "{}/operations/connection_health?app_id={}",
            sim.base_url(),
            sim.app_id()
        )))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.json::<Value>().await.expect("json")["error_code"], 10);
    let (status, body) = c.report("not-a-token").await;
    assert_eq!((status, body["error_code"].clone()), (401, json!(10)));
    // A valid token without app headers.
    let token = c.login().await["token"]
        .as_str()
        .expect("token")
        .to_string();
    let r = c
        .http
        .get(format!(
            "{}/operations/connection_health?app_id={}",
            sim.base_url(),
            sim.app_id()
        ))
        .header("X-Violet-Token", &token)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 403);
}

#[tokio::test]
async fn expired_token_refresh_and_revocation() {
    let sim = VioletSim::start_generated(5, 5).await.expect("start");
    let c = Client::new(&sim);
    let user = c.login().await;
    let token = user["token"].as_str().expect("token").to_string();
    let refresh = user["refresh_token"].as_str().expect("refresh").to_string();
    assert_eq!(c.report(&token).await.0, 200);

    sim.expire_all_tokens();
    let (status, body) = c.report(&token).await;
    assert_eq!(status, 401);
    assert_eq!(body["status"], 401);
    assert_eq!(body["message"], "Token has expired");
    assert_eq!(body["error_code"], 11);
    assert!(body["timestamp"].is_i64());

    // Refresh with the refresh token.
    let (status, body) = c.get("/auth/token", &refresh).await;
    assert_eq!(status, 200);
    let fresh = body["token"].as_str().expect("token").to_string();
    assert!(jwt_payload(&fresh)["exp"].is_i64());
    assert_eq!(c.report(&fresh).await.0, 200);
    assert_eq!(sim.refreshes(), 1);
    // An access token is not a refresh token.
    assert_eq!(c.get("/auth/token", &fresh).await.0, 401);

    sim.revoke_refresh_tokens();
    let (status, body) = c.get("/auth/token", &refresh).await;
    assert_eq!(status, 401);
    assert_eq!(body["message"], "Invalid refresh token");
    assert_eq!(body["error_code"], 12);
    assert_eq!(sim.refreshes(), 1);
    assert_eq!(sim.stats().requests(REFRESH), 3);
    // A new login gives a working refresh token again.
    let refresh2 = c.login().await["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_string();
    assert_eq!(c.get("/auth/token", &refresh2).await.0, 200);
}

#[tokio::test(start_paused = true)]
async fn tokens_expire_on_the_paused_clock() {
    let sim = VioletSim::start_generated(5, 5).await.expect("start");
    sim.set_token_ttl(Duration::from_secs(60));
    let c = Client::new(&sim);
    let user = c.login().await;
    let token = user["token"].as_str().expect("token").to_string();
    let before = sim.now();
    assert_eq!(c.report(&token).await.0, 200);
    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(sim.now() - before >= chrono::TimeDelta::seconds(61));
    let (status, body) = c.report(&token).await;
    assert_eq!((status, body["error_code"].clone()), (401, json!(11)));
    // Default TTL is 24 h.
    sim.set_token_ttl(connhealth_testkit::violet::DEFAULT_TOKEN_TTL);
    let token = c.login().await["token"]
        .as_str()
        .expect("token")
        .to_string();
    tokio::time::advance(Duration::from_secs(23 * 3600)).await;
    assert_eq!(c.report(&token).await.0, 200);
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert_eq!(c.report(&token).await.0, 401);
}

#[tokio::test]
async fn camel_case_and_lower_case_switches() {
    let sim = VioletSim::start_generated(60, 5).await.expect("start");
    let c = Client::new(&sim);
    let token = c.login().await["token"]
        .as_str()
        .expect("token")
        .to_string();
    sim.set_camel_case(true);
    let (_, one) = c.get("/operations/connection_health/123", &token).await;
    for key in [
        "merchantId",
        "merchantName",
        "merchantEmail",
        "merchantStatus",
        "storeUrl",
        "distributionType",
        "scopeValidation",
        "syncStatus",
        "invalidProducts",
        "offersPublished",
        "payoutAccount",
        "commissionRate",
    ] {
        assert!(one.get(key).is_some(), "missing {key}");
    }
    assert!(one.get("merchant_id").is_none());
    assert!(one["scopeValidation"]["results"]
        .get("missingScopes")
        .is_some());
    let sync = &one["syncStatus"]["results"];
    for key in [
        "totalProducts",
        "totalProductsSynced",
        "dateLastSynced",
        "merchantId",
    ] {
        assert!(sync.get(key).is_some(), "missing {key}");
    }
    assert!(one["connection"]["results"].get("isConnected").is_some());
    assert!(one["commissionRate"].get("defaultRate").is_some());

    sim.set_lower_case_enums(true);
    let (_, list) = c.report(&token).await;
    let m = &list[0];
    assert_eq!(m["distributionType"], "private");
    assert!(m["merchantStatus"]
        .as_str()
        .is_some_and(|s| s == s.to_lowercase()));
    assert!(m["connection"]["status"]
        .as_str()
        .is_some_and(|s| s == s.to_lowercase()));

    sim.set_camel_case(false);
    sim.set_lower_case_enums(false);
    let (_, list) = c.report(&token).await;
    assert!(list[0].get("merchant_id").is_some());
}

#[tokio::test]
async fn state_changes_show_in_the_report() {
    let sim = VioletSim::start_generated(5, 5).await.expect("start");
    let c = Client::new(&sim);
    let token = c.login().await["token"]
        .as_str()
        .expect("token")
        .to_string();
    let id = sim.merchant_ids()[1];
    assert!(sim.set_check_status(id, "sync_status", "NEEDS_ATTENTION"));
    assert!(sim.set_merchant_status(id, "DISABLED"));
    assert!(!sim.set_merchant_status(987_654, "DISABLED"));
    let (_, one) = c
        .get(&format!("/operations/connection_health/{id}"), &token)
        .await;
    assert_eq!(one["sync_status"]["status"], "NEEDS_ATTENTION");
    assert_eq!(one["merchant_status"], "DISABLED");
    let mut extra = connhealth_testkit::data::violet_healthy_merchant(777, "Extra Shop", "SHOPIFY");
    extra["platform"] = json!("SOME_NEW_PLATFORM");
    assert!(sim.add_merchant(extra));
    let (status, one) = c.get("/operations/connection_health/777", &token).await;
    assert_eq!(status, 200);
    assert_eq!(one["platform"], "SOME_NEW_PLATFORM");
    assert!(sim.remove_merchant(777));
    assert_eq!(
        c.get("/operations/connection_health/777", &token).await.0,
        404
    );
}
