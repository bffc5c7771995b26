//! List merchants envelope tolerance, error details and the control-plane calls, against
//! wiremock on loopback.

use std::collections::HashSet;
use std::time::Duration;

use connhealth_channel3::{Channel3, Merchant};
use connhealth_core::http::RetryPolicy;
use connhealth_core::{ErrorKind, Outcome, Provider, Secret};
use serde_json::{json, Value};
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "c3_sk_test_123";

fn provider(server: &MockServer, page_size: usize) -> Channel3 {
    Channel3::builder()
        .base_url(server.uri())
        .api_key(Secret::new(KEY))
        .page_size(page_size)
        .retry(RetryPolicy {
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            ..RetryPolicy::default()
        })
        .build()
        .unwrap()
}

fn merchants(ids: &[&str]) -> Value {
    Value::Array(
        ids.iter()
            .map(|id| json!({"customer_id": id, "name": format!("Shop {id}"), "logo_url": format!("https://cdn.example/{id}.png")}))
            .collect(),
    )
}

async fn page(server: &MockServer, n: u64, body: Value) {
    Mock::given(method("GET"))
        .and(path("/v0/partner/merchants"))
        .and(query_param("page", n.to_string()))
        .and(header("x-api-key", KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(server)
        .await;
}

async fn merchant_requests(server: &MockServer) -> Vec<(String, String)> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/v0/partner/merchants")
        .map(|r| {
            let q: std::collections::HashMap<_, _> = r.url.query_pairs().into_owned().collect();
            (q["page"].clone(), q["size"].clone())
        })
        .collect()
}

fn ids(ms: &[Merchant]) -> Vec<&str> {
    ms.iter().map(|m| m.customer_id.as_str()).collect()
}

#[tokio::test]
async fn bare_array_stops_at_empty_page() {
    let server = MockServer::start().await;
    page(&server, 1, merchants(&["a", "b", "c"])).await;
    page(&server, 2, merchants(&["d"])).await;
    page(&server, 3, json!([])).await;
    let p = provider(&server, 3);
    let all = p.client().list_all_merchants().await.unwrap();
    assert_eq!(ids(&all), ["a", "b", "c", "d"]);
    assert_eq!(all[0].name.as_deref(), Some("Shop a"));
    assert_eq!(all[0].logo.as_deref(), Some("https://cdn.example/a.png"));
    // No size reported by the server: a short page is not proof of the end; the empty one is.
    assert_eq!(
        merchant_requests(&server).await,
        [
            ("1".into(), "3".into()),
            ("2".into(), "3".into()),
            ("3".into(), "3".into())
        ]
    );
}

#[tokio::test]
async fn items_without_pages_or_total_stop_on_empty_page() {
    let server = MockServer::start().await;
    page(&server, 1, json!({"items": merchants(&["a", "b"])})).await;
    page(&server, 2, json!({"items": merchants(&["c", "d"])})).await;
    page(&server, 3, json!({"items": []})).await;
    let all = provider(&server, 2)
        .client()
        .list_all_merchants()
        .await
        .unwrap();
    assert_eq!(ids(&all), ["a", "b", "c", "d"]);
    assert_eq!(merchant_requests(&server).await.len(), 3);
}

#[tokio::test]
async fn short_page_with_reported_size_is_the_last() {
    let server = MockServer::start().await;
    page(
        &server,
        1,
        json!({"merchants": merchants(&["a", "b"]), "page": 1, "size": 2}),
    )
    .await;
    page(
        &server,
        2,
        json!({"merchants": merchants(&["c"]), "page": 2, "size": 2}),
    )
    .await;
    let all = provider(&server, 2)
        .client()
        .list_all_merchants()
        .await
        .unwrap();
    assert_eq!(ids(&all), ["a", "b", "c"]);
    assert_eq!(merchant_requests(&server).await.len(), 2);
}

#[tokio::test]
async fn server_capping_size_is_followed_by_total() {
    // We ask for 100 per page; the server caps at 10 and says so only through `size`/`total`.
    let server = MockServer::start().await;
    let all_ids: Vec<String> = (0..25).map(|i| format!("cus_{i:02}")).collect();
    for (n, chunk) in all_ids.chunks(10).enumerate() {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        page(
            &server,
            n as u64 + 1,
            json!({"items": merchants(&refs), "total": 25, "page": n + 1, "size": 10}),
        )
        .await;
    }
    let all = provider(&server, 100)
        .client()
        .list_all_merchants()
        .await
        .unwrap();
    assert_eq!(all.len(), 25);
    assert_eq!(
        ids(&all),
        all_ids.iter().map(String::as_str).collect::<Vec<_>>()
    );
    // Pages 1..=3 and not a 4th: 25 received = total.
    let reqs = merchant_requests(&server).await;
    assert_eq!(
        reqs.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        ["1", "2", "3"]
    );
    assert!(reqs.iter().all(|r| r.1 == "100"));
}

#[tokio::test]
async fn pages_field_is_followed_even_when_pages_are_full() {
    let server = MockServer::start().await;
    page(
        &server,
        1,
        json!({"data": merchants(&["a", "b"]), "pages": 2}),
    )
    .await;
    page(
        &server,
        2,
        json!({"data": merchants(&["c", "d"]), "pages": 2}),
    )
    .await;
    // A page 3 would be a bug: mount one that would add a customer.
    page(&server, 3, json!({"data": merchants(&["zzz"]), "pages": 2})).await;
    let all = provider(&server, 2)
        .client()
        .list_all_merchants()
        .await
        .unwrap();
    assert_eq!(ids(&all), ["a", "b", "c", "d"]);
    assert_eq!(merchant_requests(&server).await.len(), 2);
}

#[tokio::test]
async fn has_more_false_ends_and_items_without_customer_id_are_skipped() {
    let server = MockServer::start().await;
    page(
        &server,
        1,
        json!({"results": [{"customer_id": "a"}, {"name": "no id"}, {"customer_id": null}, 7], "has_more": true}),
    )
    .await;
    page(
        &server,
        2,
        json!({"results": [{"customer_id": "b", "logo": "l"}], "has_more": false}),
    )
    .await;
    let all = provider(&server, 4)
        .client()
        .list_all_merchants()
        .await
        .unwrap();
    assert_eq!(ids(&all), ["a", "b"]);
    assert_eq!(all[1].logo.as_deref(), Some("l"));
    let p1 = provider(&server, 4)
        .client()
        .list_merchants(1, 4)
        .await
        .unwrap();
    assert_eq!(
        (p1.received, p1.merchants.len(), p1.has_more),
        (4, 1, Some(true))
    );
}

#[tokio::test]
async fn repeated_customers_across_shifting_pages_are_fetched_once() {
    let server = MockServer::start().await;
    // A merchant was inserted between the two page reads: "b" shows up twice.
    page(
        &server,
        1,
        json!({"items": merchants(&["a", "b"]), "total": 5, "page": 1, "size": 2}),
    )
    .await;
    page(
        &server,
        2,
        json!({"items": merchants(&["b", "c"]), "total": 5, "page": 2, "size": 2}),
    )
    .await;
    page(
        &server,
        3,
        json!({"items": merchants(&["d"]), "total": 5, "page": 3, "size": 2}),
    )
    .await;
    for id in ["a", "b", "c", "d"] {
        Mock::given(method("GET"))
            .and(path(format!("/v0/partner/merchants/{id}/connections")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"connections": [
                {"platform": "web_crawl", "category": "ingestion", "status": "active", "display_name": id, "id": format!("wc-{id}")}
            ]})))
            .expect(1)
            .mount(&server)
            .await;
    }
    let p = provider(&server, 2);
    let fetched = p.fetch().await;
    assert_eq!(fetched.outcome(), Outcome::Ok, "{:?}", fetched.errors);
    let customers: HashSet<&str> = fetched
        .connections
        .iter()
        .map(|c| c.customer.id.as_str())
        .collect();
    assert_eq!(customers, HashSet::from(["a", "b", "c", "d"]));
    assert_eq!(fetched.connections.len(), 4);
    assert_eq!(fetched.ok_batches, 4);
    let b = fetched
        .connections
        .iter()
        .find(|c| c.customer.id == "b")
        .unwrap();
    assert_eq!(b.customer.name.as_deref(), Some("Shop b"));
    // 5 received = total after page 3.
    assert_eq!(merchant_requests(&server).await.len(), 3);
}

#[tokio::test]
async fn a_server_ignoring_page_does_not_loop() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v0/partner/merchants"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"items": merchants(&["a", "b"]), "has_more": true})),
        )
        .mount(&server)
        .await;
    let all = provider(&server, 2)
        .client()
        .list_all_merchants()
        .await
        .unwrap();
    assert_eq!(ids(&all), ["a", "b"]);
    assert_eq!(merchant_requests(&server).await.len(), 2);
}

#[tokio::test]
async fn discovery_failure_is_one_fatal_batch() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v0/partner/merchants"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"detail": "Invalid API key"})),
        )
        .mount(&server)
        .await;
    let p = provider(&server, 10);
    let fetched = p.fetch().await;
    assert_eq!(fetched.outcome(), Outcome::Failed);
    assert_eq!(fetched.errors.len(), 1);
    let e = &fetched.errors[0];
    assert_eq!(e.kind(), ErrorKind::Authentication);
    assert_eq!(e.endpoint(), "GET /v0/partner/merchants");
    assert_eq!(e.message(), "Invalid API key");
    assert!(!e.to_string().contains(KEY));
}

#[tokio::test]
async fn a_broken_page_later_keeps_the_earlier_customers() {
    let server = MockServer::start().await;
    page(&server, 1, json!({"items": merchants(&["a"]), "total": 3})).await;
    Mock::given(method("GET"))
        .and(path("/v0/partner/merchants"))
        .and(query_param("page", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"items\": [tru"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v0/partner/merchants/a/connections"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"connections": []})))
        .mount(&server)
        .await;
    let fetched = provider(&server, 1).fetch().await;
    assert_eq!(fetched.outcome(), Outcome::Partial);
    assert_eq!(fetched.errors[0].kind(), ErrorKind::Decode);
    assert_eq!(fetched.ok_batches, 1);
}

#[tokio::test]
async fn error_details_are_surfaced_with_the_customer() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v0/partner/merchants/cus_foreign/connections"))
        .respond_with(
            ResponseTemplate::new(403)
                .set_body_json(json!({"detail": "Merchant is not managed by this partner"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v0/partner/merchants/cus_bad/connections"))
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({"detail": [
            {"loc": ["path", "customer_id"], "msg": "invalid customer id", "type": "value_error"}
        ]})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v0/partner/merchants/cus_gone/connections"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"detail": "Not Found"})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v0/partner/merchants/cus_ok/connections"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"connections": null})))
        .mount(&server)
        .await;
    let p = Channel3::builder()
        .base_url(server.uri())
        .api_key(Secret::new(KEY))
        .customers([
            "cus_foreign",
            "cus_bad",
            "cus_gone",
            "cus_ok",
            "cus_foreign",
        ])
        .build()
        .unwrap();
    assert_eq!(p.customers().unwrap().len(), 4);
    let fetched = p.fetch().await;
    assert_eq!(fetched.outcome(), Outcome::Partial);
    assert_eq!(fetched.ok_batches, 1);
    let by = |c: &str| {
        fetched
            .errors
            .iter()
            .find(|e| e.customer_id() == Some(c))
            .unwrap()
    };
    let e = by("cus_foreign");
    assert_eq!(
        (e.kind(), e.http_status()),
        (ErrorKind::Forbidden, Some(403))
    );
    assert_eq!(e.message(), "Merchant is not managed by this partner");
    assert_eq!(
        e.endpoint(),
        "GET /v0/partner/merchants/{customer_id}/connections"
    );
    assert!(e.to_string().starts_with("channel3: "), "{e}");
    let e = by("cus_bad");
    assert_eq!(e.kind(), ErrorKind::InvalidRequest);
    assert_eq!(e.message(), "path.customer_id: invalid customer id");
    assert_eq!(by("cus_gone").kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn create_merchant_is_retried_as_idempotent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v0/partner/merchants"))
        .and(body_json(json!({"domain": "acme.example"})))
        .respond_with(ResponseTemplate::new(503).insert_header("retry-after", "0"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v0/partner/merchants"))
        .and(header("x-api-key", KEY))
        .and(body_json(json!({"domain": "acme.example"})))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"customer_id": "cus_new", "created": false, "name": "Acme"})),
        )
        .mount(&server)
        .await;
    let p = provider(&server, 10);
    let m = p
        .client()
        .create_merchant("acme.example", None)
        .await
        .unwrap();
    assert_eq!(m.customer_id, "cus_new");
    assert!(!m.created);
    assert_eq!(m.name.as_deref(), Some("Acme"));
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn connect_session_is_not_retried_and_hides_the_token() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v0/partner/merchants/cus%2F1/connections/sessions"))
        .and(body_json(
            json!({"redirect_uri": "https://app.example/cb", "platform": "google"}),
        ))
        .respond_with(ResponseTemplate::new(503).insert_header("retry-after", "0"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v0/partner/merchants/cus%2F1/connections/sessions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "token": "tok_secret_value", "url": "https://connect.example/s/1", "expires_at": "2024-05-01T12:30:00Z"
        })))
        .mount(&server)
        .await;
    let p = provider(&server, 10);
    let err = p
        .client()
        .create_connect_session("cus/1", "https://app.example/cb", Some("google"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ServerError);
    assert_eq!(err.customer_id(), Some("cus/1"));
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        1,
        "a POST minting a session is not retried"
    );

    let s = p
        .client()
        .create_connect_session("cus/1", "https://app.example/cb", None)
        .await
        .unwrap();
    assert_eq!(s.token.expose(), "tok_secret_value");
    assert_eq!(s.url, "https://connect.example/s/1");
    assert_eq!(s.expires_at_raw.as_deref(), Some("2024-05-01T12:30:00Z"));
    assert_eq!(
        s.expires_at.unwrap().to_rfc3339(),
        "2024-05-01T12:30:00+00:00"
    );
    assert!(!format!("{s:?}").contains("tok_secret_value"));
    let sent: Value =
        serde_json::from_slice(&server.received_requests().await.unwrap()[1].body).unwrap();
    assert_eq!(sent, json!({"redirect_uri": "https://app.example/cb"}));
}

#[test]
fn build_validates() {
    let kind = |b: connhealth_channel3::Channel3Builder| b.build().unwrap_err();
    let e = kind(Channel3::builder());
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.message().contains("api_key"), "{e}");
    let e = kind(Channel3::builder().api_key(Secret::new("  ")));
    assert!(e.message().contains("api_key"));
    let ok = || Channel3::builder().api_key(Secret::new(KEY));
    assert!(kind(ok().base_url("http://partners.trychannel3.com"))
        .message()
        .contains("https"));
    assert!(kind(ok().base_url("not a url"))
        .message()
        .contains("base_url"));
    assert!(kind(ok().page_size(0)).message().contains("page_size"));
    assert!(kind(ok().concurrency(0)).message().contains("concurrency"));
    assert!(kind(ok().customers(Vec::<String>::new()))
        .message()
        .contains("customers"));
    assert!(kind(ok().customers(["a", ".."]))
        .message()
        .contains("customers[1]"));
    assert!(kind(ok().name(" ")).message().contains("name"));
    let p = ok().name("channel3-eu").build().unwrap();
    assert_eq!(p.name(), "channel3-eu");
    assert_eq!(
        p.client().http().base_url().as_str(),
        "https://partners.trychannel3.com/"
    );
    let dbg = format!("{p:?} {:?}", ok());
    assert!(!dbg.contains(KEY), "{dbg}");
}

/// Issue 16 item 7: pages of nothing but undecodable entries, with no `total` or `pages`, do
/// not keep the walk going: a page that adds no new merchant is the last one.
#[tokio::test]
async fn pages_of_only_undecodable_entries_end_the_walk() {
    let server = MockServer::start().await;
    let junk = json!([{"name": "no id"}, {"customer_id": null}, 7, "x"]);
    page(
        &server,
        1,
        json!({"items": merchants(&["a", "b", "c", "d"])}),
    )
    .await;
    for n in 2..=5 {
        page(&server, n, json!({ "items": junk.clone() })).await;
    }
    let all = provider(&server, 4)
        .client()
        .list_all_merchants()
        .await
        .expect("the walk ends without an error");
    assert_eq!(ids(&all), ["a", "b", "c", "d"]);
    let asked: Vec<String> = merchant_requests(&server)
        .await
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(asked, ["1", "2"], "kept paging through undecodable pages");
}

/// A server that hands out a new merchant on every page and never says "last page" is
/// stopped at the documented bound, [`connhealth_channel3::MAX_PAGES`], with an error.
#[tokio::test]
async fn a_walk_that_never_ends_stops_at_the_page_bound() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v0/partner/merchants"))
        .respond_with(|req: &wiremock::Request| {
            let page = req
                .url
                .query_pairs()
                .find(|(k, _)| k == "page")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            ResponseTemplate::new(200)
                .set_body_json(json!({ "items": [{ "customer_id": format!("m{page}") }] }))
        })
        .mount(&server)
        .await;
    let err = provider(&server, 1)
        .client()
        .list_all_merchants()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode);
    assert!(
        err.message()
            .contains(&format!("{} pages", connhealth_channel3::MAX_PAGES)),
        "{err}"
    );
    let asked = merchant_requests(&server).await.len() as u64;
    assert_eq!(asked, connhealth_channel3::MAX_PAGES);
}

/// A page of only undecodable entries does not end a walk that `total` bounds: the merchants
/// after it are still found.
#[tokio::test]
async fn an_undecodable_page_inside_a_bounded_list_is_skipped_not_the_end() {
    let server = MockServer::start().await;
    page(
        &server,
        1,
        json!({"items": merchants(&["a", "b"]), "total": 6}),
    )
    .await;
    page(
        &server,
        2,
        json!({"items": [{"name": "no id"}, 7], "total": 6}),
    )
    .await;
    page(
        &server,
        3,
        json!({"items": merchants(&["c", "d"]), "total": 6}),
    )
    .await;
    let all = provider(&server, 2)
        .client()
        .list_all_merchants()
        .await
        .unwrap();
    assert_eq!(ids(&all), ["a", "b", "c", "d"]);
    assert_eq!(merchant_requests(&server).await.len(), 3);
}
