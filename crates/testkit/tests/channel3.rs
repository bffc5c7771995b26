//! Channel3 simulator over real HTTP on loopback.

use std::collections::HashSet;

use connhealth_testkit::data::{self, GenOptions, CHANNEL3_ODD_IDS};
use connhealth_testkit::{channel3, Channel3Sim};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use serde_json::{json, Value};

/// Characters that must be encoded inside one path segment.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/')
    .add(b'%');

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn get_json(sim: &Channel3Sim, path: &str) -> (u16, Value) {
    let resp = client()
        .get(format!("{}{}", sim.base_url(), path))
        .header("x-api-key", sim.api_key())
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn rejects_missing_and_wrong_api_key() {
    let sim = Channel3Sim::start_generated(3, 1).await.expect("start");
    let url = format!("{}/v0/partner/merchants", sim.base_url());
    let resp = client().get(&url).send().await.expect("request");
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(
        resp.json::<Value>().await.expect("json"),
        json!({"detail": "Missing API key"})
    );
    let resp = client()
        .get(&url)
        .header("x-api-key", "c3_sk_wrong")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 403);
    assert_eq!(
        resp.json::<Value>().await.expect("json"),
        json!({"detail": "Invalid API key"})
    );
    // Rejected requests are counted too.
    assert_eq!(sim.stats().requests(channel3::LIST_MERCHANTS), 2);
}

#[tokio::test]
async fn pagination_covers_every_customer_once_and_caps_size() {
    let sim = Channel3Sim::start_generated(250, 7).await.expect("start");
    let mut seen = Vec::new();
    let mut page = 1;
    loop {
        let (status, body) =
            get_json(&sim, &format!("/v0/partner/merchants?page={page}&size=100")).await;
        assert_eq!(status, 200);
        assert_eq!(body["total"], 250);
        assert_eq!(body["pages"], 3);
        assert_eq!(body["size"], 100);
        for item in body["items"].as_array().expect("items") {
            seen.push(item["customer_id"].as_str().expect("id").to_string());
            assert!(item.get("name").is_some() && item.get("logo_url").is_some());
        }
        if page >= body["pages"].as_u64().expect("pages") {
            break;
        }
        page += 1;
    }
    assert_eq!(page, 3);
    assert_eq!(seen.len(), 250);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 250);
    assert_eq!(seen, sim.customer_ids());

    // size is capped at 100; default 50; a page past the end is empty.
    let (_, body) = get_json(&sim, "/v0/partner/merchants?size=1000").await;
    assert_eq!(body["size"], channel3::MAX_PAGE_SIZE);
    assert_eq!(body["items"].as_array().map(Vec::len), Some(100));
    assert_eq!(body["pages"], 3);
    let (_, body) = get_json(&sim, "/v0/partner/merchants").await;
    assert_eq!(body["size"], 50);
    assert_eq!(body["page"], 1);
    assert_eq!(body["pages"], 5);
    let (_, body) = get_json(&sim, "/v0/partner/merchants?page=9&size=100").await;
    assert_eq!(body["items"], json!([]));
    let (status, body) = get_json(&sim, "/v0/partner/merchants?page=0").await;
    assert_eq!(status, 422);
    assert_eq!(body["detail"][0]["loc"], json!(["query", "page"]));
    let (status, _) = get_json(&sim, "/v0/partner/merchants?size=abc").await;
    assert_eq!(status, 422);
}

#[tokio::test]
async fn doc_example_customer_is_verbatim() {
    let sim = Channel3Sim::start_generated(3, 1).await.expect("start");
    let (status, body) = get_json(&sim, "/v0/partner/merchants/cus_doc_example/connections").await;
    assert_eq!(status, 200);
    let expected: Value = serde_json::from_str(
        r#"{"connections":[
        {"platform":"channel3","category":"distribution","status":"not_connected","display_name":"Channel3 Main Account","id":null,"connected_at":null,"accounts":null,"sync":null},
        {"platform":"google","category":"distribution","status":"active","display_name":"Acme Corp Google Store","id":"conn-1234-google","connected_at":"2024-01-15T09:30:00Z",
         "accounts":[{"id":"acct-5678","name":"Acme Corp Main Account","store_url":"https://store.google.com/acmecorp"}],
         "sync":{"state":"live","last_synced_at":"2024-04-20T14:45:00Z","total_products":150,"synced_products":150}},
        {"platform":"shopify","category":"ingestion","status":"action_required","display_name":"Acme Shopify Store","id":"conn-7890-shopify","connected_at":"2024-02-10T11:00:00Z","accounts":null,"sync":null}]}"#,
    )
    .expect("expected json");
    assert_eq!(body, expected);
}

#[tokio::test]
async fn generated_customer_lists_all_fifteen_platforms() {
    let sim = Channel3Sim::start_generated(5, 3).await.expect("start");
    let id = sim.customer_ids()[1].clone();
    let (status, body) = get_json(&sim, &format!("/v0/partner/merchants/{id}/connections")).await;
    assert_eq!(status, 200);
    let rows = body["connections"].as_array().expect("connections");
    assert_eq!(rows.len(), 15);
    for row in rows {
        for key in [
            "platform",
            "category",
            "status",
            "display_name",
            "id",
            "connected_at",
            "accounts",
            "sync",
        ] {
            assert!(row.get(key).is_some(), "missing {key} in {row}");
        }
        let category = data::CHANNEL3_PLATFORMS
            .iter()
            .find(|(p, _, _)| Some(*p) == row["platform"].as_str())
            .map(|(_, c, _)| *c);
        assert_eq!(row["category"].as_str(), category);
        if row["status"] == "not_connected" {
            assert!(row["id"].is_null() && row["connected_at"].is_null() && row["sync"].is_null());
        }
    }
}

#[tokio::test]
async fn unknown_and_foreign_customers() {
    let data = data::channel3_customers_with(
        3,
        1,
        &GenOptions {
            foreign: true,
            ..GenOptions::default()
        },
    );
    let sim = Channel3Sim::start(data).await.expect("start");
    let (status, body) = get_json(&sim, "/v0/partner/merchants/cus_nope/connections").await;
    assert_eq!(
        (status, body),
        (404, json!({"detail": "Merchant not found"}))
    );
    let (status, body) = get_json(
        &sim,
        &format!(
            "/v0/partner/merchants/{}/connections",
            data::CHANNEL3_FOREIGN_ID
        ),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            403,
            json!({"detail": "Merchant does not belong to this partner"})
        )
    );
    // Foreign merchants are not listed.
    let (_, body) = get_json(&sim, "/v0/partner/merchants").await;
    assert_eq!(body["total"], 3);
}

#[tokio::test]
async fn odd_ids_are_one_percent_encoded_segment() {
    let data = data::channel3_customers_with(
        2,
        1,
        &GenOptions {
            odd_ids: true,
            ..GenOptions::default()
        },
    );
    let sim = Channel3Sim::start(data).await.expect("start");
    let (status, body) = get_json(&sim, "/v0/partner/merchants/cus%2Fslash/connections").await;
    assert_eq!(status, 200);
    let expected =
        serde_json::to_value(sim.connections("cus/slash").expect("cus/slash")).expect("to_value");
    assert_eq!(body["connections"], expected);
    assert_eq!(
        sim.stats().raw_paths().last().map(String::as_str),
        Some("/v0/partner/merchants/cus%2Fslash/connections")
    );

    for id in CHANNEL3_ODD_IDS {
        let enc = utf8_percent_encode(id, SEGMENT).to_string();
        let (status, body) =
            get_json(&sim, &format!("/v0/partner/merchants/{enc}/connections")).await;
        assert_eq!(status, 200, "id {id:?} encoded {enc}");
        let expected = serde_json::to_value(sim.connections(id).expect("known")).expect("to_value");
        assert_eq!(body["connections"], expected, "id {id:?}");
        assert!(sim
            .stats()
            .raw_paths()
            .last()
            .is_some_and(|p| p.contains(&enc)));
    }
    assert_eq!(sim.stats().requests(channel3::LIST_CONNECTIONS), 7);

    // Any id can be added later.
    let mut c = data::Channel3Customer::new("weird id/with?everything#%", "Weird");
    c.connections.truncate(1);
    sim.add_customer(c);
    let enc = utf8_percent_encode("weird id/with?everything#%", SEGMENT).to_string();
    let (status, body) = get_json(&sim, &format!("/v0/partner/merchants/{enc}/connections")).await;
    assert_eq!(status, 200);
    assert_eq!(body["connections"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn create_merchant_is_idempotent_on_domain() {
    let sim = Channel3Sim::start_generated(2, 1).await.expect("start");
    let url = format!("{}/v0/partner/merchants", sim.base_url());
    let post = |body: Value| {
        client()
            .post(&url)
            .header("x-api-key", sim.api_key())
            .json(&body)
            .send()
    };
    let first: Value = post(json!({"domain": "new-shop.com"}))
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_eq!(first["created"], true);
    assert_eq!(first["name"], "New Shop");
    let second: Value = post(json!({"domain": "https://www.NEW-SHOP.com/", "name": "Other"}))
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_eq!(second["created"], false);
    assert_eq!(second["customer_id"], first["customer_id"]);

    let id = first["customer_id"].as_str().expect("id");
    let conns = sim.connections(id).expect("created");
    let web = conns
        .iter()
        .find(|c| c.platform == "web_crawl")
        .expect("web_crawl");
    assert_eq!(
        (web.category.as_str(), web.status.as_str()),
        ("ingestion", "active")
    );
    let openai = conns
        .iter()
        .find(|c| c.platform == "openai")
        .expect("openai");
    assert_eq!(openai.status, "active");
    assert_eq!(
        openai.sync.as_ref().map(|s| s.state.as_str()),
        Some("pending")
    );
    assert_eq!(sim.customer_ids().len(), 3);

    let resp = post(json!({"name": "No domain"})).await.expect("post");
    assert_eq!(resp.status().as_u16(), 422);
    assert_eq!(
        resp.json::<Value>().await.expect("json"),
        json!({"detail":[{"loc":["body","domain"],"msg":"Field required","type":"missing"}]})
    );
    // Not JSON at all: 422, no panic.
    let resp = client()
        .post(&url)
        .header("x-api-key", sim.api_key())
        .body("{not json")
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 422);
}

#[tokio::test]
async fn connect_sessions() {
    let sim = Channel3Sim::start_generated(2, 1).await.expect("start");
    let url = format!(
        "{}/v0/partner/merchants/cus_doc_example/connections/sessions",
        sim.base_url()
    );
    let resp = client()
        .post(&url)
        .header("x-api-key", sim.api_key())
        .json(&json!({"redirect_uri": "https://app.example.com/callback", "platform": "shopify"}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.expect("json");
    assert!(body["token"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(body["url"]
        .as_str()
        .is_some_and(|u| u.contains(body["token"].as_str().unwrap_or("?"))));
    let expires =
        chrono::DateTime::parse_from_rfc3339(body["expires_at"].as_str().expect("expires_at"))
            .expect("rfc3339");
    let minutes = (expires.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_minutes();
    assert!((28..=30).contains(&minutes), "expires in {minutes} min");
    assert_eq!(sim.sessions().len(), 1);

    let resp = client()
        .post(&url)
        .header("x-api-key", sim.api_key())
        .json(&json!({"redirect_uri": "https://evil.example.org/cb"}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 422);
    assert_eq!(
        resp.json::<Value>().await.expect("json"),
        json!({"detail": "redirect_uri not in allowlist"})
    );
    sim.set_redirect_allowlist(vec!["https://evil.example.org/".into()]);
    let resp = client()
        .post(&url)
        .header("x-api-key", sim.api_key())
        .json(&json!({"redirect_uri": "https://evil.example.org/cb"}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 200);
}

#[tokio::test]
async fn state_can_be_changed_from_a_test() {
    let sim = Channel3Sim::start_generated(3, 1).await.expect("start");
    assert!(sim.set_connection_status("cus_doc_example", "shopify", "active"));
    assert!(sim.set_connection_status("cus_doc_example", "openai", "active"));
    assert!(sim.set_sync(
        "cus_doc_example",
        "openai",
        Some(data::Channel3Sync {
            state: "syncing".into(),
            last_synced_at: None,
            total_products: Some(10),
            synced_products: Some(3),
        })
    ));
    assert!(!sim.set_connection_status("cus_missing", "shopify", "active"));
    let (_, body) = get_json(&sim, "/v0/partner/merchants/cus_doc_example/connections").await;
    let rows = body["connections"].as_array().expect("rows");
    let shopify = rows
        .iter()
        .find(|r| r["platform"] == "shopify")
        .expect("shopify");
    assert_eq!(shopify["status"], "active");
    let openai = rows
        .iter()
        .find(|r| r["platform"] == "openai")
        .expect("openai");
    assert_eq!(openai["status"], "active");
    assert!(openai["id"].is_string());
    assert_eq!(openai["sync"]["state"], "syncing");
    assert!(sim.set_connection_status("cus_doc_example", "google", "not_connected"));
    let google = sim
        .connections("cus_doc_example")
        .and_then(|c| c.into_iter().find(|r| r.platform == "google"))
        .expect("google");
    assert!(google.id.is_none() && google.sync.is_none() && google.accounts.is_none());
    assert!(sim.remove_customer("cus_doc_example"));
    let (status, _) = get_json(&sim, "/v0/partner/merchants/cus_doc_example/connections").await;
    assert_eq!(status, 404);
}
