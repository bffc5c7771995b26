//! The server over real HTTP on loopback, against the testkit simulators through the real
//! adapters (and a scripted provider where a test needs to hold a poll back or pick ids).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use connhealth_core::watch::{WatchConfig, Watcher};
use connhealth_core::{HealthReport, Secret, Status};
use connhealth_server::{Server, ServerConfig, ServerError};
use connhealth_testkit::{Fault, Fleet};
use serde_json::Value;

const SLOW: Duration = Duration::from_secs(60);
const FAST: Duration = Duration::from_millis(200);

fn content_type(resp: &reqwest::Response) -> String {
    resp.headers()["content-type"].to_str().unwrap().to_owned()
}

async fn json_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    assert_eq!(content_type(&resp), "application/json; charset=utf-8");
    (status, resp.json().await.unwrap())
}

async fn report_of(resp: reqwest::Response) -> HealthReport {
    let (status, body) = json_of(resp).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_value(body).expect("the body is a HealthReport")
}

fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
}

#[tokio::test]
async fn report_shape_etag_and_filters() {
    let fleet = Fleet::start(3, 21).await.unwrap();
    let w = fleet_watcher(&fleet, SLOW);
    let server = Running::start(w, Options::default()).await;
    server.ready(false).await;

    let resp = server.get("/v1/report").await;
    let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"));
    let report = report_of(resp).await;
    let names: Vec<&str> = report
        .providers
        .iter()
        .map(|p| p.provider.as_str())
        .collect();
    assert_eq!(names, ["channel3", "violet", "subtotal"]);
    assert_eq!(report.summary.total, report.connections.len());
    assert!(report.connections.windows(2).all(|w| w[0].id < w[1].id));
    assert!(report.connections.len() > 10);
    // The raw JSON keeps every key (nulls included): the contract of ARCHITECTURE.md.
    let raw: Value = server.get("/v1/report").await.json().await.unwrap();
    let first = raw["connections"][0].as_object().unwrap();
    for key in [
        "id",
        "provider",
        "provider_connection_id",
        "customer",
        "platform",
        "role",
        "status",
        "provider_status",
        "connected_at",
        "sync",
        "checks",
        "problems",
        "accounts",
        "observed_at",
        "data_as_of",
    ] {
        assert!(first.contains_key(key), "{key}");
    }

    // Conditional requests.
    for tag in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"nope\", {etag}"),
        "*".into(),
    ] {
        let resp = server
            .client
            .get(server.url("/v1/report"))
            .header("If-None-Match", &tag)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 304, "{tag}");
        assert_eq!(resp.headers()["etag"], etag.as_str());
        assert!(resp.bytes().await.unwrap().is_empty());
    }
    let resp = server
        .client
        .get(server.url("/v1/report"))
        .header("If-None-Match", "\"something-else\"")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // HEAD: same headers, no body.
    let resp = server
        .client
        .head(server.url("/v1/report"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["etag"], etag.as_str());
    assert!(resp.bytes().await.unwrap().is_empty());

    // provider
    let resp = server.get("/v1/report?provider=subtotal").await;
    let filtered_etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(filtered_etag, etag);
    let sub = report_of(resp).await;
    assert!(!sub.connections.is_empty());
    assert!(sub.connections.iter().all(|c| c.provider == "subtotal"));
    assert_eq!(
        sub.connections.len(),
        report.connections_of("subtotal").count()
    );
    assert_eq!(sub.summary.total, sub.connections.len());
    assert_eq!(sub.providers, report.providers, "providers are kept whole");
    assert_eq!(
        sub.overall,
        HealthReport::roll_up(&report.providers[2..], &sub.connections)
    );
    let resp = server
        .client
        .get(server.url("/v1/report?provider=subtotal"))
        .header("If-None-Match", &filtered_etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 304);

    // status: comma-separated and repeated are the same thing.
    let wanted = [Status::Healthy, Status::ActionRequired];
    let a = report_of(
        server
            .get("/v1/report?status=healthy,action_required")
            .await,
    )
    .await;
    let b = report_of(
        server
            .get("/v1/report?status=healthy&status=action_required")
            .await,
    )
    .await;
    assert_eq!(a.connections, b.connections);
    assert!(a.connections.iter().all(|c| wanted.contains(&c.status)));
    let expected = report
        .connections
        .iter()
        .filter(|c| wanted.contains(&c.status))
        .count();
    assert_eq!(a.connections.len(), expected);
    assert!(expected > 0 && expected < report.connections.len());
    assert_eq!(a.summary.total, expected);
    assert_eq!(
        a.summary.healthy + a.summary.action_required,
        expected,
        "{:?}",
        a.summary
    );
    assert_eq!(a.summary.degraded, 0);

    // customer
    let customer = report.connections[0].customer.id.clone();
    let c = report_of(
        server
            .client
            .get(server.url("/v1/report"))
            .query(&[("customer", customer.as_str())])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(!c.connections.is_empty());
    assert!(c.connections.iter().all(|x| x.customer.id == customer));
    assert_eq!(
        c.connections.len(),
        report
            .connections
            .iter()
            .filter(|x| x.customer.id == customer)
            .count()
    );

    // All three at once (AND), with one matching nothing.
    let none = report_of(
        server
            .get("/v1/report?provider=violet&status=healthy&customer=no-such-customer")
            .await,
    )
    .await;
    assert!(none.connections.is_empty());
    assert_eq!(none.summary.total, 0);

    // Bad filters.
    let (status, body) = json_of(server.get("/v1/report?status=fine").await).await;
    assert_eq!(status, 400);
    assert_error(&body, "bad_request");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("action_required"));
    let (status, body) = json_of(server.get("/v1/report?colour=red").await).await;
    assert_eq!(status, 400);
    assert_error(&body, "bad_request");

    server.stop().await.unwrap();
}

#[tokio::test]
async fn connections_by_id_with_colons_and_encoded_slashes() {
    let fleet = Fleet::start(2, 22).await.unwrap();
    let mut w = fleet_watcher(&fleet, SLOW);
    let scripted = Scripted::open(
        "scripted",
        vec![
            conn("scripted", "a/b", "cus_1", Status::Degraded),
            conn("scripted", "x:y z", "cus_2", Status::Healthy),
        ],
    );
    w.add(std::sync::Arc::new(scripted), None);
    let server = Running::start(w, Options::default()).await;
    server.ready(false).await;

    let id = format!("subtotal:{DOC_CONNECTION}");
    for path in [
        format!("/v1/connections/{id}"),
        format!("/v1/connections/subtotal%3A{DOC_CONNECTION}"),
        format!("/v1/connections/subtotal%3a{DOC_CONNECTION}"),
    ] {
        let resp = server.get(&path).await;
        let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
        let (status, body) = json_of(resp).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["id"], id.as_str());
        assert_eq!(body["status"], "healthy");
        let again = server
            .client
            .get(server.url(&path))
            .header("If-None-Match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304);
    }

    let (status, body) = json_of(server.get("/v1/connections/scripted%3Aa%2Fb").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], "scripted:a/b");
    assert_eq!(body["status"], "degraded");
    let (status, body) = json_of(server.get("/v1/connections/scripted:x:y%20z").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], "scripted:x:y z");

    // An unencoded slash is another path: not found.
    let (status, body) = json_of(server.get("/v1/connections/scripted:a/b").await).await;
    assert_eq!(status, 404);
    assert_error(&body, "not_found");
    let (status, body) = json_of(server.get("/v1/connections/subtotal%3Anope").await).await;
    assert_eq!(status, 404);
    assert_error(&body, "not_found");
    assert!(body["message"].as_str().unwrap().contains("subtotal:nope"));
    let (status, body) = json_of(server.get("/no/such/route").await).await;
    assert_eq!(status, 404);
    assert_error(&body, "not_found");

    server.stop().await.unwrap();
}

#[tokio::test]
async fn not_ready_until_the_first_poll_finishes() {
    let (gated, open) =
        Scripted::gated("gated", vec![conn("gated", "1", "cus_1", Status::Pending)]);
    let mut w = Watcher::new(WatchConfig {
        interval: SLOW,
        jitter: 0.0,
        ..WatchConfig::default()
    });
    w.add(std::sync::Arc::new(gated), None);
    let server = Running::start(w, Options::default()).await;

    // Give the poller time to be well inside its (blocked) first poll.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for path in ["/v1/report", "/v1/connections/gated:1", "/readyz"] {
        let (status, body) = json_of(server.get(path).await).await;
        assert_eq!(status, 503, "{path}");
        assert_error(&body, "not_ready");
    }
    let (status, body) = json_of(server.get("/healthz").await).await;
    assert_eq!((status, body), (200, serde_json::json!({"status": "ok"})));
    let metrics = server.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("connhealth_ready 0\n"), "{metrics}");
    assert!(!metrics.contains("connhealth_connections{"));

    open.send(true).unwrap();
    server.ready(false).await;
    let (status, body) = json_of(server.get("/readyz").await).await;
    assert_eq!(
        (status, body),
        (200, serde_json::json!({"status": "ready", "warnings": []}))
    );
    let report = report_of(server.get("/v1/report").await).await;
    assert_eq!(report.connections.len(), 1);
    assert_eq!(report.overall, Status::Pending);
    let metrics = server.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("connhealth_ready 1\n"));
    assert!(metrics.contains("connhealth_connections{provider=\"gated\",status=\"pending\"} 1\n"));

    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_token_guards_every_route_but_healthz() {
    let fleet = Fleet::start(2, 23).await.unwrap();
    let w = fleet_watcher(&fleet, SLOW);
    let server = Running::start(
        w,
        Options {
            token: Some(TOKEN),
            ..Options::default()
        },
    )
    .await;
    server.ready(true).await;

    let guarded = [
        "/",
        "/v1/report",
        &format!("/v1/connections/subtotal:{DOC_CONNECTION}"),
        "/v1/events",
        "/metrics",
        "/readyz",
        "/openapi.json",
        "/no/such/route",
    ];
    for path in guarded {
        for auth in [
            None,
            Some("Bearer wrong-token"),
            Some(&*format!("Basic {TOKEN}")),
            Some("Bearer "),
        ] {
            let mut req = server.client.get(server.url(path));
            if let Some(a) = auth {
                req = req.header("Authorization", a);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(
                resp.headers()["www-authenticate"],
                "Bearer realm=\"connhealth\""
            );
            let (status, body) = json_of(resp).await;
            assert_eq!(status, 401, "{path} with {auth:?}");
            assert_error(&body, "unauthorized");
        }
    }
    for path in ["/", "/v1/report", "/metrics", "/readyz", "/openapi.json"] {
        assert_eq!(server.get_auth(path).await.status(), 200, "{path}");
        // The scheme name is case-insensitive.
        let resp = server
            .client
            .get(server.url(path))
            .header("Authorization", format!("bearer {TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    assert_eq!(server.get("/healthz").await.status(), 200);

    // The query token works only where a browser cannot set a header.
    assert_eq!(server.get(&format!("/?token={TOKEN}")).await.status(), 200);
    assert_eq!(
        server
            .get(&format!("/?access_token={TOKEN}"))
            .await
            .status(),
        200
    );
    let events = server
        .get(&format!("/v1/events?access_token={TOKEN}"))
        .await;
    assert_eq!(events.status(), 200);
    drop(events);
    assert_eq!(
        server.get("/v1/events?access_token=wrong").await.status(),
        401
    );
    for path in ["/v1/report", "/metrics", "/readyz"] {
        let resp = server.get(&format!("{path}?access_token={TOKEN}")).await;
        assert_eq!(resp.status(), 401, "{path}");
    }

    server.stop().await.unwrap();
}

#[test]
fn an_address_off_loopback_needs_a_token() {
    let w = || Watcher::new(WatchConfig::default());
    for addr in [
        "0.0.0.0:0",
        "[::]:8080",
        "192.0.2.10:80",
        "[2001:db8::1]:80",
    ] {
        let config = ServerConfig::new(addr.parse().unwrap());
        let err = Server::new(config, w()).unwrap_err();
        assert!(
            matches!(err, ServerError::TokenRequired { .. }),
            "{addr}: {err}"
        );
        assert!(err.to_string().contains("token"), "{err}");
        // Off loopback a token needs at least 16 bytes (issue 16).
        let mut config = ServerConfig::new(addr.parse().unwrap());
        config.token = Some(Secret::new("t0ken"));
        let err = Server::new(config, w()).unwrap_err();
        assert!(matches!(err, ServerError::TokenTooShort), "{addr}: {err}");
        let mut config = ServerConfig::new(addr.parse().unwrap());
        config.token = Some(Secret::new("sixteen-bytes-ok"));
        assert!(Server::new(config, w()).is_ok(), "{addr}");
    }
    for addr in [
        "127.0.0.1:0",
        "127.1.2.3:0",
        "[::1]:0",
        "[::ffff:127.0.0.1]:0",
    ] {
        assert!(
            Server::new(ServerConfig::new(addr.parse().unwrap()), w()).is_ok(),
            "{addr}"
        );
    }
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap());
    config.token = Some(Secret::new("  "));
    assert!(matches!(
        Server::new(config, w()),
        Err(ServerError::EmptyToken)
    ));
}

#[tokio::test]
async fn read_only_no_bodies_closed_cors_and_security_headers() {
    let server = Running::start(Watcher::new(WatchConfig::default()), Options::default()).await;
    server.ready(false).await;
    let c = &server.client;

    for (method, path) in [
        (reqwest::Method::POST, "/v1/report"),
        (reqwest::Method::PUT, "/"),
        (reqwest::Method::DELETE, "/v1/connections/x:y"),
        (reqwest::Method::PATCH, "/no/such/route"),
        (reqwest::Method::OPTIONS, "/v1/report"),
    ] {
        let resp = c
            .request(method.clone(), server.url(path))
            .header("Origin", "https://evil.example")
            .header("Access-Control-Request-Method", "GET")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["allow"], "GET, HEAD", "{method} {path}");
        assert!(resp.headers().get("access-control-allow-origin").is_none());
        let (status, body) = json_of(resp).await;
        assert_eq!(status, 405, "{method} {path}");
        assert_error(&body, "method_not_allowed");
    }

    let resp = c
        .get(server.url("/v1/report"))
        .body("{\"please\": \"ignore\"}")
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(resp).await;
    assert_eq!(status, 413);
    assert_error(&body, "body_not_accepted");

    for path in [
        "/",
        "/v1/report",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/nope",
    ] {
        let resp = c
            .get(server.url(path))
            .header("Origin", "https://evil.example")
            .send()
            .await
            .unwrap();
        let h = resp.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["cache-control"], "no-store", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert!(h.get("access-control-allow-origin").is_none(), "{path}");
        assert!(h.contains_key("content-security-policy"), "{path}");
    }

    let page = c.get(server.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(content_type(&page), "text/html; charset=utf-8");
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("script-src 'sha256-"), "{csp}");
    assert!(csp.contains("style-src 'sha256-"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    let html = page.text().await.unwrap();
    for id in Status::ALL.map(|s| format!("id=\"tile-{s}\"")) {
        assert!(html.contains(&id), "{id}");
    }

    let api = c.get(server.url("/v1/report")).send().await.unwrap();
    assert_eq!(
        api.headers()["content-security-policy"],
        "default-src 'none'; frame-ancestors 'none'"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn no_provider_secret_or_token_is_ever_served() {
    let fleet = Fleet::start(3, 24).await.unwrap();
    let w = fleet_watcher(&fleet, SLOW);
    let server = Running::start(
        w,
        Options {
            token: Some(TOKEN),
            ..Options::default()
        },
    )
    .await;
    server.ready(true).await;
    let report = report_of(server.get_auth("/v1/report").await).await;

    let secrets = [
        fleet.channel3.api_key().to_owned(),
        fleet.violet.app_secret().to_owned(),
        fleet.violet.password().to_owned(),
        fleet.subtotal.api_key().to_owned(),
        TOKEN.to_owned(),
    ];
    for s in &secrets {
        assert!(s.len() >= 6, "a meaningful needle: {s:?}");
    }
    let mut served = String::new();
    let mut paths: Vec<String> = [
        "/",
        "/v1/report",
        "/v1/report?provider=violet",
        "/metrics",
        "/healthz",
        "/readyz",
        "/openapi.json",
        "/nope",
    ]
    .map(String::from)
    .to_vec();
    paths.extend(
        report
            .connections
            .iter()
            .map(|c| format!("/v1/connections/{}", c.id)),
    );
    for path in &paths {
        let resp = server.get_auth(path).await;
        served.push_str(&format!("{:?}", resp.headers()));
        served.push_str(&resp.text().await.unwrap());
    }
    // The event stream: replay everything the first poll announced.
    let mut first = SseReader::new(
        server
            .client
            .get(server.url("/v1/events"))
            .bearer_auth(TOKEN)
            .header("Last-Event-ID", "0")
            .send()
            .await
            .unwrap(),
    );
    let reset = first.expect(Duration::from_secs(2)).await;
    assert_eq!(reset.event, "reset");
    let latest = reset.id.unwrap();
    let mut replay = SseReader::new(
        server
            .client
            .get(server.url("/v1/events"))
            .bearer_auth(TOKEN)
            .header(
                "Last-Event-ID",
                (latest - report.connections.len() as u64).to_string(),
            )
            .send()
            .await
            .unwrap(),
    );
    for _ in 0..report.connections.len() {
        served.push_str(&replay.expect(Duration::from_secs(2)).await.data);
    }
    assert!(served.len() > 10_000);
    for s in &secrets {
        assert!(!served.contains(s.as_str()), "a secret was served");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_cover_every_provider_and_status() {
    let fleet = Fleet::start(3, 25).await.unwrap();
    // No `with_http_stats`: the counters reach the server through `Provider::http_stats`.
    let w = fleet_watcher(&fleet, FAST);
    let server = Running::start(w, Options::default()).await;
    server.ready(false).await;

    // A provider failing on the next polls shows up as down, with counted errors.
    fleet.channel3.faults().on_all(Fault::status(500));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let (text, report) = loop {
        let resp = server.get("/metrics").await;
        assert_eq!(
            content_type(&resp),
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let text = resp.text().await.unwrap();
        let report = report_of(server.get("/v1/report").await).await;
        if text.contains("connhealth_provider_up{provider=\"channel3\"} 0")
            && report.providers[0].outcome != connhealth_core::Outcome::Ok
        {
            // Same snapshot for both? Re-read the metrics for the report we hold.
            let again = server.get("/metrics").await.text().await.unwrap();
            let again_report = report_of(server.get("/v1/report").await).await;
            if again_report.generated_at == report.generated_at {
                break (again, report);
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "channel3 never went down:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    for p in &report.providers {
        for status in Status::ALL {
            let n = report
                .connections
                .iter()
                .filter(|c| c.provider == p.provider && c.status == status)
                .count();
            let line = format!(
                "connhealth_connections{{provider=\"{}\",status=\"{status}\"}} {n}\n",
                p.provider
            );
            assert!(text.contains(&line), "{line} missing:\n{text}");
        }
    }
    assert!(text.contains("connhealth_provider_up{provider=\"violet\"} 1\n"));
    assert!(text.contains("connhealth_provider_up{provider=\"subtotal\"} 1\n"));
    assert!(text.contains("connhealth_provider_up{provider=\"channel3\"} 0\n"));
    assert!(
        text.contains("connhealth_poll_errors_total{provider=\"channel3\",kind=\"server_error\"} ")
    );
    assert!(text.contains("# TYPE connhealth_poll_errors_total counter\n"));
    assert!(
        text.contains("connhealth_events_total{event=\"provider_unavailable\"} 1\n"),
        "{text}"
    );
    let appeared = format!(
        "connhealth_events_total{{event=\"appeared\"}} {}\n",
        report.connections.len()
    );
    assert!(text.contains(&appeared), "{appeared} missing:\n{text}");
    // Retries: the 500s were retried by the channel3 client.
    let retries = text
        .lines()
        .find(|l| l.starts_with("connhealth_http_retries_total{provider=\"channel3\"}"))
        .expect("retries of channel3");
    let n: u64 = retries.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n > 0, "{retries}");
    assert!(text.contains("connhealth_http_retries_total{provider=\"subtotal\"} 0\n"));
    assert!(text.contains("connhealth_http_retries_total{provider=\"violet\"} 0\n"));
    assert_eq!(
        text.matches("connhealth_http_retries_total{").count(),
        3,
        "{text}"
    );
    // The rate control's series, one per provider (issue 22): nothing configured and no 429,
    // so no limit is in force.
    for name in [
        "connhealth_provider_rate_limit",
        "connhealth_provider_request_rate",
        "connhealth_provider_rate_limited_total",
        "connhealth_provider_unavailable_total",
        "connhealth_provider_paused_seconds_total",
    ] {
        assert_eq!(
            text.matches(&format!("{name}{{provider=")).count(),
            3,
            "{name}\n{text}"
        );
    }
    assert!(text.contains("connhealth_provider_rate_limit{provider=\"violet\"} +Inf\n"));
    assert!(text.contains("connhealth_provider_rate_limited_total{provider=\"subtotal\"} 0\n"));
    assert!(!text.contains("connhealth_provider_rate_budget{"));
    for gauge in [
        "connhealth_last_poll_duration_seconds ",
        "connhealth_last_poll_timestamp_seconds ",
    ] {
        let line = text.lines().find(|l| l.starts_with(gauge)).expect(gauge);
        let v: f64 = line[gauge.len()..].parse().unwrap();
        assert!(v > 0.0, "{line}");
    }
    // The exposition's syntax: HELP and TYPE once per family, samples `name{labels} value`.
    let mut families = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            assert!(
                families.insert(rest.split(' ').next().unwrap().to_owned()),
                "{line}"
            );
        } else if !line.starts_with("# HELP ") {
            let (_, value) = line.rsplit_once(' ').unwrap();
            value.parse::<f64>().unwrap_or_else(|_| panic!("{line}"));
        }
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn events_stream_changes_and_resumes_after_last_event_id() {
    let fleet = Fleet::start(3, 26).await.unwrap();
    let w = fleet_watcher(&fleet, FAST);
    let server = Running::start(w, Options::default()).await;
    server.ready(false).await;
    let id = format!("subtotal:{DOC_CONNECTION}");
    let wait = Duration::from_secs(5);

    let mut live = SseReader::connect(&server, None).await;
    assert!(fleet.subtotal.set_status(DOC_CONNECTION, "unauthenticated"));
    let changed = live
        .until(wait, |e| {
            e.event == "status_changed" && e.json()["connection_id"] == id.as_str()
        })
        .await;
    let body = changed.json();
    assert_eq!(body["event"], "status_changed");
    assert_eq!(body["from"], "healthy");
    assert_eq!(body["to"], "action_required");
    assert_eq!(body["provider"], "subtotal");
    let changed_id = changed.id.expect("events carry ids");
    // The same poll raised a problem: it follows, with the next id.
    let raised = live.expect(wait).await;
    assert_eq!(raised.event, "problem_raised");
    assert_eq!(raised.id, Some(changed_id + 1));
    assert_eq!(
        raised.json()["problem"]["code"],
        "reauthentication_required"
    );

    // Resume after the status change: the buffered problem_raised first, then only newer events.
    let mut resumed = SseReader::connect(&server, Some(changed_id)).await;
    let replayed = resumed.expect(wait).await;
    assert_eq!(replayed.event, "problem_raised");
    assert_eq!(replayed.id, Some(changed_id + 1));
    assert!(fleet.subtotal.set_status(DOC_CONNECTION, "active"));
    let back = resumed
        .until(wait, |e| {
            e.event == "status_changed" && e.json()["connection_id"] == id.as_str()
        })
        .await;
    assert!(back.id.unwrap() > changed_id + 1);
    assert_eq!(back.json()["to"], "healthy");
    let cleared = resumed.expect(wait).await;
    assert_eq!(cleared.event, "problem_cleared");
    assert_eq!(cleared.id, Some(back.id.unwrap() + 1));
    // The first subscriber saw the same events with the same ids.
    let back_live = live.until(wait, |e| e.event == "status_changed").await;
    assert_eq!(back_live.id, back.id);
    assert_eq!(back_live.data, back.data);

    // The report agrees with the last event.
    let (_, c) = json_of(server.get(&format!("/v1/connections/{id}")).await).await;
    assert_eq!(c["status"], "healthy");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn events_reset_when_the_id_is_out_of_the_buffer() {
    let fleet = Fleet::start(3, 27).await.unwrap();
    let w = fleet_watcher(&fleet, SLOW);
    let server = Running::start(
        w,
        Options {
            event_buffer: 4,
            ..Options::default()
        },
    )
    .await;
    server.ready(false).await;
    let total = report_of(server.get("/v1/report").await)
        .await
        .connections
        .len() as u64;
    assert!(
        total > 4,
        "the first poll announces more than the buffer holds"
    );
    let wait = Duration::from_secs(2);

    let mut s = SseReader::connect(&server, Some(0)).await;
    let reset = s.expect(wait).await;
    assert_eq!(reset.event, "reset");
    let latest = reset.id.unwrap();
    let data = reset.json();
    assert_eq!(data["latest_event_id"], latest);
    assert_eq!(data["last_event_id"], 0);
    assert!(data["reason"]
        .as_str()
        .unwrap()
        .contains("no longer buffered"));
    assert!(matches!(
        s.next(Duration::from_millis(200)).await,
        Next::Timeout
    ));

    // Two behind: exactly those two.
    let mut s = SseReader::connect(&server, Some(latest - 2)).await;
    let a = s.expect(wait).await;
    let b = s.expect(wait).await;
    assert_eq!((a.id, b.id), (Some(latest - 1), Some(latest)));
    assert_eq!(
        (a.event.as_str(), b.event.as_str()),
        ("appeared", "appeared")
    );
    assert!(matches!(
        s.next(Duration::from_millis(200)).await,
        Next::Timeout
    ));

    // The whole buffer is still a complete resume; one more is not.
    let mut s = SseReader::connect(&server, Some(latest - 4)).await;
    assert_eq!(s.expect(wait).await.id, Some(latest - 3));
    let mut s = SseReader::connect(&server, Some(latest - 5)).await;
    assert_eq!(s.expect(wait).await.event, "reset");
    // An id this server never issued (a client of another server).
    let mut s = SseReader::connect(&server, Some(latest + 100)).await;
    let e = s.expect(wait).await;
    assert_eq!(e.event, "reset");
    assert!(e.json()["reason"].as_str().unwrap().contains("not issued"));
    // Up to date: nothing.
    let mut s = SseReader::connect(&server, Some(latest)).await;
    assert!(matches!(
        s.next(Duration::from_millis(200)).await,
        Next::Timeout
    ));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_ends_event_streams_and_the_poller() {
    let fleet = Fleet::start(2, 28).await.unwrap();
    let w = fleet_watcher(&fleet, Duration::from_millis(50));
    let server = Running::start(w, Options::default()).await;
    server.ready(false).await;
    let mut stream = SseReader::connect(&server, None).await;
    let requests = || {
        fleet.channel3.stats().total_requests()
            + fleet.violet.stats().total_requests()
            + fleet.subtotal.stats().total_requests()
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let before = requests();

    let started = std::time::Instant::now();
    server.stop().await.expect("a clean shutdown");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The open stream was ended by the server.
    let ended = loop {
        match stream.next(Duration::from_secs(2)).await {
            Next::Event(_) => continue,
            Next::End => break true,
            Next::Timeout => break false,
        }
    };
    assert!(ended, "the event stream did not end");
    assert!(before > 0);
    let after_stop = requests();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        requests(),
        after_stop,
        "the poller kept polling after shutdown"
    );
}

/// gzip and br for `/v1/report` and the JSON routes when asked; identity otherwise; the SSE
/// stream is never compressed (compression would buffer its events).
#[tokio::test]
async fn json_routes_are_compressed_when_asked_and_the_event_stream_is_not() {
    let fleet = Fleet::start(3, 24).await.unwrap();
    let server = Running::start(fleet_watcher(&fleet, SLOW), Options::default()).await;
    server.ready(false).await;
    // A client that neither asks for nor decodes anything by itself.
    let raw = reqwest::Client::builder()
        .no_proxy()
        .no_gzip()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let plain = raw.get(server.url("/v1/report")).send().await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    let plain: Value = plain.json().await.unwrap();

    for path in ["/v1/report", "/v1/summary", "/v1/report?status=healthy"] {
        for enc in ["gzip", "br"] {
            let resp = raw
                .get(server.url(path))
                .header("Accept-Encoding", enc)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{path}");
            assert_eq!(resp.headers()["content-encoding"], enc, "{path} {enc}");
            let bytes = resp.bytes().await.unwrap();
            assert!(
                serde_json::from_slice::<Value>(&bytes).is_err(),
                "{path} {enc}"
            );
        }
    }
    // Decoded (reqwest's gzip decoder), the gzip body is the same JSON.
    let decoding = reqwest::Client::builder()
        .no_proxy()
        .gzip(true)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let resp = decoding
        .get(server.url("/v1/report"))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    let unzipped: Value = resp.json().await.unwrap();
    assert_eq!(unzipped, plain);

    // The event stream: not compressed, even when every encoding is welcome.
    let resp = raw
        .get(server.url("/v1/events"))
        .header("Accept-Encoding", "gzip, br, deflate, zstd")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(content_type(&resp).starts_with("text/event-stream"));
    assert!(resp.headers().get("content-encoding").is_none());
    drop(resp);
    server.stop().await.unwrap();
}
