//! Keeps `/openapi.json` true: the document is structurally valid OpenAPI 3.1, and every
//! route's real responses (status, content type, body) are the ones it documents, bodies
//! validated against its schemas (JSON Schema 2020-12) with the `jsonschema` crate.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::*;
use connhealth_core::watch::{WatchConfig, Watcher};
use connhealth_core::{
    Change, ChangeKind, ErrorKind, Outcome, Problem, Remediation, ReportError, Status,
};
use connhealth_testkit::data::Channel3Sync;
use connhealth_testkit::{Fault, Fleet};
use serde_json::{json, Value};

struct Doc {
    doc: Value,
    /// (path template, status) pairs seen.
    seen: BTreeSet<(String, u16)>,
}

impl Doc {
    fn new(doc: Value) -> Doc {
        Doc {
            doc,
            seen: BTreeSet::new(),
        }
    }

    fn resolve<'a>(&'a self, v: &'a Value) -> &'a Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => self
                .doc
                .pointer(r.strip_prefix('#').expect("local $ref"))
                .unwrap_or_else(|| panic!("unresolved {r}")),
            None => v,
        }
    }

    /// A validator for `schema`, resolving `#/components/...` references in this document.
    fn validator(&self, schema: &Value) -> jsonschema::Validator {
        let mut root = schema.clone();
        root.as_object_mut()
            .expect("a schema object")
            .insert("components".into(), self.doc["components"].clone());
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&root)
            .unwrap_or_else(|e| panic!("schema does not compile: {e}\n{schema:#}"))
    }

    fn validate(&self, schema: &Value, instance: &Value, what: &str) {
        let v = self.validator(schema);
        let errors: Vec<String> = v
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{what}: the body does not match the documented schema:\n{}\nbody: {}",
            errors.join("\n"),
            truncate(instance)
        );
    }

    fn component(&self, name: &str) -> Value {
        json!({ "$ref": format!("#/components/schemas/{name}") })
    }

    /// Check one real response against the document; returns its status and body text.
    async fn check(&mut self, template: &str, resp: reqwest::Response) -> (u16, String) {
        self.check_op("get", template, resp).await
    }

    async fn check_op(
        &mut self,
        method: &str,
        template: &str,
        resp: reqwest::Response,
    ) -> (u16, String) {
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let what = format!("{} {template} → {status}", method.to_uppercase());
        let op = self.doc["paths"][template][method].clone();
        assert!(op.is_object(), "{template} is not in the document");
        let documented = op["responses"][status.to_string()].clone();
        assert!(documented.is_object(), "{what} is not documented");
        let documented = self.resolve(&documented).clone();
        // Documented headers are sent.
        if let Some(headers) = documented["headers"].as_object() {
            for name in headers.keys() {
                assert!(
                    resp.headers().contains_key(name.as_str()),
                    "{what}: no {name} header"
                );
            }
        }
        let body = resp.text().await.unwrap();
        self.seen.insert((template.to_owned(), status));
        let Some(content) = documented["content"].as_object() else {
            assert!(body.is_empty(), "{what}: a body where none is documented");
            return (status, body);
        };
        let ct = ct.unwrap_or_else(|| panic!("{what}: no content type"));
        let essence = ct.split(';').next().unwrap().trim();
        let (key, media) = content
            .iter()
            .find(|(k, _)| k.as_str() == ct || k.as_str() == essence)
            .unwrap_or_else(|| panic!("{what}: content type {ct} is not documented"));
        if key.starts_with("application/json") {
            assert_eq!(ct, "application/json; charset=utf-8", "{what}");
            let value: Value = serde_json::from_str(&body).expect("JSON body");
            self.validate(&media["schema"], &value, &what);
        } else if key == "text/event-stream" {
            // The body is endless; read separately.
        } else {
            self.validate(&media["schema"], &Value::String(body.clone()), &what);
        }
        (status, body)
    }
}

/// The store-backed routes on a server over a real SQLite store: 200s and 400s as documented.
async fn store_routes(doc: &mut Doc, fleet: &Fleet) {
    let dir = tempfile::tempdir().unwrap();
    let (server, _store) = start_stored(
        fleet,
        dir.path(),
        Duration::from_secs(300),
        Options::default(),
    )
    .await;
    server.ready(false).await;
    // The first poll's events are stored once it is ready? Wait for them.
    let mut page = json!(null);
    for _ in 0..100 {
        let (status, body) = doc
            .check(
                "/v1/events",
                server.get("/v1/events?after=0&limit=1000").await,
            )
            .await;
        assert_eq!(status, 200);
        page = serde_json::from_str(&body).unwrap();
        if !page["items"].as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stored = page["items"].as_array().unwrap().clone();
    assert!(!stored.is_empty());
    let resp = server
        .client
        .get(server.url("/v1/events"))
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    let (status, body) = doc.check("/v1/events", resp).await;
    assert_eq!(status, 200);
    let first: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        first["items"].as_array().unwrap().len(),
        stored.len().min(100)
    );
    // SSE resumes from the store: the same events, ids and bodies.
    let event_schema = doc.doc["paths"]["/v1/events"]["get"]["responses"]["200"]["content"]
        ["text/event-stream"]["x-event-data"]
        .clone();
    let mut sse = SseReader::connect(&server, Some(0)).await;
    for e in stored.iter().take(20) {
        let got = sse.expect(Duration::from_secs(5)).await;
        assert_eq!(got.id, e["id"].as_u64());
        doc.validate(
            &doc.component("StoredEvent"),
            &got.json(),
            "stored SSE event",
        );
        doc.validate(&event_schema, &got.json(), "stored SSE event");
        assert_eq!(&got.json(), e);
    }

    let (status, body) = doc
        .check(
            "/v1/connections",
            server.get("/v1/connections?limit=5").await,
        )
        .await;
    assert_eq!(status, 200);
    let p: Value = serde_json::from_str(&body).unwrap();
    let cursor = p["next_cursor"].as_str().unwrap().to_owned();
    let id = p["items"][0]["id"].as_str().unwrap().to_owned();
    let (status, _) = doc
        .check(
            "/v1/connections",
            server
                .get(&format!("/v1/connections?limit=5&cursor={cursor}&status=healthy,degraded&provider=violet&provider=subtotal&q=a"))
                .await,
        )
        .await;
    assert_eq!(status, 200);
    // Grouped by customer, with 30-day timelines: documented, items carry both extra fields.
    let (status, body) = doc
        .check(
            "/v1/connections",
            server
                .get("/v1/connections?limit=7&group=customer&timeline=30d")
                .await,
        )
        .await;
    assert_eq!(status, 200);
    let g: Value = serde_json::from_str(&body).unwrap();
    let first = &g["items"][0];
    assert!(first["customer_status"].is_string(), "{first}");
    let points = first["timeline"].as_array().unwrap();
    assert!(
        points.iter().any(|p| p["from"].is_null()),
        "the first poll's `appeared` is on the timeline: {points:?}"
    );
    let gcursor = g["next_cursor"].as_str().unwrap().to_owned();
    let (status, _) = doc
        .check(
            "/v1/connections",
            server
                .get(&format!(
                    "/v1/connections?limit=7&group=customer&cursor={}",
                    url_escape(&gcursor)
                ))
                .await,
        )
        .await;
    assert_eq!(status, 200);
    // Summary: served from the current view, with webhook freshness (none here).
    let (status, body) = doc
        .check("/v1/summary", server.get("/v1/summary").await)
        .await;
    assert_eq!(status, 200);
    let sum: Value = serde_json::from_str(&body).unwrap();
    assert!(sum["providers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["last_webhook_at"].is_null()));
    for bad in [
        "limit=0",
        "limit=1001",
        "limit=x",
        "cursor=bogus",
        "status=fine",
        "colour=red",
        "group=provider",
        "timeline=1y",
    ] {
        let (status, _) = doc
            .check(
                "/v1/connections",
                server.get(&format!("/v1/connections?{bad}")).await,
            )
            .await;
        assert_eq!(status, 400, "{bad}");
    }
    let (status, body) = doc
        .check(
            "/v1/connections/{id}",
            server.get(&format!("/v1/connections/{id}")).await,
        )
        .await;
    assert_eq!(status, 200);
    let one: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        one["since"], p["items"][0]["since"],
        "since comes from the store"
    );
    let (status, body) = doc
        .check(
            "/v1/connections/{id}/history",
            server
                .get(&format!("/v1/connections/{id}/history?limit=1"))
                .await,
        )
        .await;
    assert_eq!(status, 200);
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["items"][0]["connection_id"], id.as_str());
    for bad in ["before=x", "limit=0"] {
        let (status, _) = doc
            .check(
                "/v1/connections/{id}/history",
                server
                    .get(&format!("/v1/connections/{id}/history?{bad}"))
                    .await,
            )
            .await;
        assert_eq!(status, 400, "{bad}");
    }
    for q in [
        "",
        "?window=7d&by=customer&provider=violet",
        "?window=90d&by=connection",
    ] {
        let (status, _) = doc
            .check("/v1/uptime", server.get(&format!("/v1/uptime{q}")).await)
            .await;
        assert_eq!(status, 200, "{q}");
    }
    for bad in ["window=1y", "by=planet"] {
        let (status, _) = doc
            .check("/v1/uptime", server.get(&format!("/v1/uptime?{bad}")).await)
            .await;
        assert_eq!(status, 400, "{bad}");
    }
    let (status, _) = doc
        .check("/v1/events", server.get("/v1/events?after=-1").await)
        .await;
    assert_eq!(status, 400);
    server.stop().await.unwrap();
}

/// Validate one event's data and note its kind.
fn record(doc: &Doc, event_schema: &Value, kinds: &mut BTreeSet<String>, e: SseEvent) {
    let data = e.json();
    doc.validate(event_schema, &data, &format!("event {}", e.event));
    doc.validate(
        &doc.component("Change"),
        &data,
        &format!("event {}", e.event),
    );
    assert_eq!(data["event"], e.event.as_str());
    kinds.insert(e.event);
}

fn truncate(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 2000 {
        format!("{}…", &s[..2000])
    } else {
        s
    }
}

fn walk_refs(v: &Value, doc: &Value, at: &str) {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get("$ref") {
                let r = r.as_str().expect("string $ref");
                let ptr = r
                    .strip_prefix('#')
                    .unwrap_or_else(|| panic!("{at}: non-local {r}"));
                assert!(doc.pointer(ptr).is_some(), "{at}: {r} does not resolve");
            }
            for (k, x) in m {
                walk_refs(x, doc, &format!("{at}/{k}"));
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                walk_refs(x, doc, &format!("{at}/{i}"));
            }
        }
        _ => {}
    }
}

/// The document is OpenAPI 3.1 in structure: version, info, paths with operations and
/// responses, path parameters declared, every `$ref` resolving, every schema a valid 2020-12
/// schema.
fn check_structure(doc: &Value) {
    let version = doc["openapi"].as_str().expect("openapi");
    let parts: Vec<&str> = version.split('.').collect();
    assert!(
        parts.len() == 3 && parts[0] == "3" && parts[1] == "1" && parts[2].parse::<u32>().is_ok(),
        "{version}"
    );
    assert!(doc["info"]["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(doc["info"]["version"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    let paths = doc["paths"].as_object().expect("paths");
    assert!(!paths.is_empty());
    let methods = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    for (path, item) in paths {
        assert!(path.starts_with('/'), "{path}");
        let item = item.as_object().unwrap();
        let ops: Vec<_> = item
            .iter()
            .filter(|(k, _)| methods.contains(&k.as_str()))
            .collect();
        assert!(!ops.is_empty(), "{path}: no operation");
        for (method, op) in ops {
            let responses = op["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("{path} {method}: responses"));
            assert!(!responses.is_empty());
            for (code, r) in responses {
                assert!(
                    code == "default" || (code.len() == 3 && code.parse::<u16>().is_ok()),
                    "{path} {method} {code}"
                );
                assert!(
                    r.get("$ref").is_some() || r["description"].is_string(),
                    "{path} {method} {code}"
                );
            }
            // Every `{param}` of the template is a required path parameter.
            let declared: BTreeSet<&str> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .inspect(|p| assert_eq!(p["required"], true, "{path}: path params are required"))
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            let in_template: BTreeSet<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .collect();
            assert_eq!(declared, in_template, "{path}");
            for p in op["parameters"].as_array().into_iter().flatten() {
                assert!(["query", "header", "path", "cookie"].contains(&p["in"].as_str().unwrap()));
                assert!(p["schema"].is_object(), "{path}: parameter without schema");
            }
        }
    }
    walk_refs(doc, doc, "#");
    let schemas = doc["components"]["schemas"]
        .as_object()
        .expect("component schemas");
    for name in ["HealthReport", "Connection", "Change", "Error"] {
        assert!(schemas.contains_key(name), "{name}");
    }
    for (name, schema) in schemas {
        let mut s = schema.clone();
        s["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
        if let Err(e) = jsonschema::meta::validate(&s) {
            panic!("components.schemas.{name} is not a valid JSON Schema: {e}");
        }
    }
    if let Some(schemes) = doc["components"]["securitySchemes"].as_object() {
        for (name, s) in schemes {
            assert!(s["type"].is_string(), "{name}");
        }
    }
}

#[tokio::test]
async fn the_openapi_document_is_valid_and_every_route_answers_as_documented() {
    let fleet = Fleet::start(3, 41).await.unwrap();
    let w = fleet_watcher(&fleet, Duration::from_millis(200));
    let server = Running::start(w, Options::default()).await;
    server.ready(false).await;

    let resp = server.get("/openapi.json").await;
    let doc_value: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    check_structure(&doc_value);
    let mut doc = Doc::new(doc_value);
    doc.check("/openapi.json", server.get("/openapi.json").await)
        .await;

    // The report: plain, filtered, conditional, bad filter.
    let resp = server.get("/v1/report").await;
    let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    let (_, body) = doc.check("/v1/report", resp).await;
    let report: Value = serde_json::from_str(&body).unwrap();
    // The validator is not vacuous: broken copies of the real report are rejected.
    let report_schema = doc.component("HealthReport");
    let v = doc.validator(&report_schema);
    assert!(v.is_valid(&report));
    let mut broken = report.clone();
    broken["connections"][0]["status"] = json!("fine");
    assert!(!v.is_valid(&broken));
    let mut broken = report.clone();
    broken["connections"][0]
        .as_object_mut()
        .unwrap()
        .remove("data_as_of");
    assert!(!v.is_valid(&broken));
    let mut broken = report.clone();
    broken["summary"]["extra"] = json!(1);
    assert!(!v.is_valid(&broken));
    let mut broken = report.clone();
    broken["generated_at"] = json!("yesterday");
    assert!(!v.is_valid(&broken), "formats are validated");
    doc.check(
        "/v1/report",
        server
            .get("/v1/report?status=healthy,degraded&provider=violet")
            .await,
    )
    .await;
    let resp = server
        .client
        .get(server.url("/v1/report"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    // The poller may have produced a new report in between (200 ms interval): then it is a 200.
    doc.check("/v1/report", resp).await;
    let (status, _) = doc
        .check("/v1/report", server.get("/v1/report?status=nope").await)
        .await;
    assert_eq!(status, 400);

    // Every connection, and a missing one.
    for c in report["connections"].as_array().unwrap() {
        let id = c["id"].as_str().unwrap();
        let (status, _) = doc
            .check(
                "/v1/connections/{id}",
                server.get(&format!("/v1/connections/{id}")).await,
            )
            .await;
        assert_eq!(status, 200);
    }
    let (status, _) = doc
        .check(
            "/v1/connections/{id}",
            server.get("/v1/connections/nope:nope").await,
        )
        .await;
    assert_eq!(status, 404);
    let id = report["connections"][0]["id"].as_str().unwrap();
    // This server polls every 200 ms and every poll moves `observed_at`: a poll between the
    // two requests rightly changes the body (200). Try again until the pair falls in one poll.
    for _ in 0..20 {
        let resp = server.get(&format!("/v1/connections/{id}")).await;
        let tag = resp.headers()["etag"].to_str().unwrap().to_owned();
        let resp = server
            .client
            .get(server.url(&format!("/v1/connections/{id}")))
            .header("If-None-Match", &tag)
            .send()
            .await
            .unwrap();
        let (status, _) = doc.check("/v1/connections/{id}", resp).await;
        if status == 304 {
            break;
        }
    }

    for path in ["/healthz", "/readyz", "/metrics", "/"] {
        let (status, _) = doc.check(path, server.get(path).await).await;
        assert_eq!(status, 200, "{path}");
    }

    // Without a store the store-backed routes are a documented 503 (`no_store`).
    for (template, path) in [
        ("/v1/connections", "/v1/connections"),
        (
            "/v1/connections/{id}/history",
            "/v1/connections/a:b/history",
        ),
        ("/v1/uptime", "/v1/uptime"),
        ("/v1/events", "/v1/events?after=0"),
    ] {
        let (status, body) = doc.check(template, server.get(path).await).await;
        assert_eq!(status, 503, "{path}");
        assert!(body.contains("no_store"), "{body}");
    }

    // Events: every data line is a documented Change (or Reset), its `event` the SSE name.
    let event_schema = doc.doc["paths"]["/v1/events"]["get"]["responses"]["200"]["content"]
        ["text/event-stream"]["x-event-data"]
        .clone();
    let resp = server
        .client
        .get(server.url("/v1/events"))
        .header("Last-Event-ID", "0")
        .send()
        .await
        .unwrap();
    doc.seen
        .insert(("/v1/events".into(), resp.status().as_u16()));
    let mut first = SseReader::new(resp);
    let reset = first.expect(Duration::from_secs(2)).await;
    assert_eq!(reset.event, "reset");
    doc.validate(&event_schema, &reset.json(), "reset event");
    doc.validate(&doc.component("Reset"), &reset.json(), "reset event");
    let total = report["connections"].as_array().unwrap().len() as u64;
    let mut events = SseReader::connect(&server, Some(reset.id.unwrap() - total)).await;

    // Make every kind of change happen.
    let sync_target = report["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["provider"] == "channel3" && c["sync"]["total"].is_u64())
        .map(|c| {
            (
                c["customer"]["id"].as_str().unwrap().to_owned(),
                c["platform"].as_str().unwrap().to_owned(),
                c["sync"]["total"].as_u64().unwrap(),
            )
        });
    let mut kinds = BTreeSet::new();
    let wait = Duration::from_secs(5);
    for _ in 0..total {
        let e = events.expect(wait).await;
        record(&doc, &event_schema, &mut kinds, e);
    }
    type Step<'a> = (&'static str, Box<dyn Fn() + 'a>);
    let steps: Vec<Step<'_>> = vec![
        (
            "status_changed",
            Box::new(|| assert!(fleet.subtotal.set_status(DOC_CONNECTION, "unauthenticated"))),
        ),
        (
            "problem_cleared",
            Box::new(|| assert!(fleet.subtotal.set_status(DOC_CONNECTION, "active"))),
        ),
        (
            "disappeared",
            Box::new(|| assert!(fleet.subtotal.remove_connection(DOC_CONNECTION))),
        ),
        (
            "provider_unavailable",
            Box::new(|| fleet.violet.faults().on_all(Fault::status(401))),
        ),
        (
            "provider_recovered",
            Box::new(|| fleet.violet.faults().clear()),
        ),
    ];
    for (expect, act) in steps {
        act();
        loop {
            let e = events.expect(wait).await;
            let name = e.event.clone();
            record(&doc, &event_schema, &mut kinds, e);
            if name == expect {
                break;
            }
        }
    }
    if let Some((customer, platform, total)) = sync_target {
        let sync = Channel3Sync {
            state: "syncing".into(),
            last_synced_at: None,
            total_products: Some(total + 7),
            synced_products: Some(1),
        };
        assert!(fleet.channel3.set_sync(&customer, &platform, Some(sync)));
        loop {
            let e = events.expect(wait).await;
            let name = e.event.clone();
            record(&doc, &event_schema, &mut kinds, e);
            if name == "sync_progressed" {
                break;
            }
        }
    }
    for k in [
        "appeared",
        "status_changed",
        "problem_raised",
        "problem_cleared",
        "disappeared",
        "provider_unavailable",
        "provider_recovered",
    ] {
        assert!(kinds.contains(k), "no {k} event seen: {kinds:?}");
    }

    // Every kind of change, as the core serializes it, matches the schema too.
    let at = Utc::now();
    let some_conn = conn("p", "1", "cus", Status::Degraded);
    let all_kinds = vec![
        ChangeKind::Appeared {
            status: Status::Healthy,
        },
        ChangeKind::Disappeared {
            last_status: Status::Degraded,
        },
        ChangeKind::StatusChanged {
            from: Status::Healthy,
            to: Status::ActionRequired,
        },
        ChangeKind::ProblemRaised {
            problem: Box::new(
                Problem::new("missing_scopes", Status::ActionRequired, "scopes").with_remediation(
                    Remediation::GrantScopes {
                        missing: vec!["read_orders".into()],
                    },
                ),
            ),
        },
        ChangeKind::ProblemCleared {
            code: "partial_sync".into(),
        },
        ChangeKind::SyncProgressed {
            synced: Some(3),
            total: None,
        },
        ChangeKind::ProviderUnavailable {
            outcome: Outcome::TimedOut,
            errors: vec![ReportError {
                kind: ErrorKind::Timeout,
                message: "slow".into(),
                http_status: None,
                customer_id: Some("cus".into()),
            }],
        },
        ChangeKind::ProviderRecovered,
    ];
    for kind in all_kinds {
        let change = match kind {
            ChangeKind::ProviderUnavailable { .. } | ChangeKind::ProviderRecovered => {
                Change::provider("p", kind, at, Some(at))
            }
            k => Change::about(&some_conn, k, at, None),
        };
        let v = serde_json::to_value(&change).unwrap();
        doc.validate(&doc.component("Change"), &v, change.kind.name());
    }
    // Every remediation kind, inside a problem.
    for r in [
        Remediation::Reauthenticate {
            url: Some("https://x.example/auth".into()),
        },
        Remediation::Reauthenticate { url: None },
        Remediation::GrantScopes { missing: vec![] },
        Remediation::Reconnect { url: None },
        Remediation::CompleteSetup {
            step: "payout_account".into(),
        },
        Remediation::WaitForSync,
        Remediation::ContactProvider {
            detail: "call".into(),
        },
    ] {
        let p = Problem::new("x", Status::Unknown, "m").with_remediation(r);
        doc.validate(
            &doc.component("Problem"),
            &serde_json::to_value(&p).unwrap(),
            "problem",
        );
    }
    // 405 and 413 bodies are the documented error body.
    for req in [
        server.client.post(server.url("/v1/report")),
        server.client.get(server.url("/v1/report")).body("x"),
    ] {
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        doc.validate(&doc.component("Error"), &v, "405/413 body");
    }
    server.stop().await.unwrap();

    store_routes(&mut doc, &fleet).await;

    // 503s: a server whose first poll is held back.
    let (gated, open) = Scripted::gated("gated", vec![]);
    let mut w = Watcher::new(WatchConfig::default());
    w.add(Arc::new(gated), None);
    let server = Running::start(w, Options::default()).await;
    for path in ["/v1/report", "/v1/summary", "/readyz"] {
        let (status, _) = doc.check(path, server.get(path).await).await;
        assert_eq!(status, 503, "{path}");
    }
    let (status, _) = doc
        .check(
            "/v1/connections/{id}",
            server.get("/v1/connections/a:b").await,
        )
        .await;
    assert_eq!(status, 503);
    // Once it answered, with no further poll due for minutes, a conditional GET is a 304.
    open.send(true).unwrap();
    server.ready(false).await;
    let resp = server.get("/v1/report").await;
    let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    doc.check("/v1/report", resp).await;
    let resp = server
        .client
        .get(server.url("/v1/report"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    let (status, _) = doc.check("/v1/report", resp).await;
    assert_eq!(status, 304);
    server.stop().await.unwrap();

    post_routes(&mut doc, &fleet).await;
    notify_routes(&mut doc, &fleet).await;
    action_routes(&mut doc).await;

    // 401s: a server with a token.
    let server = Running::start(
        Watcher::new(WatchConfig::default()),
        Options {
            token: Some(TOKEN),
            ..Options::default()
        },
    )
    .await;
    let templates: Vec<String> = doc.doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    for template in &templates {
        if !doc.doc["paths"][template]["get"].is_object() {
            continue; // POST-only routes: see post_routes.
        }
        let path = template.replace("{id}", "a:b");
        let resp = server.get(&path).await;
        let (status, _) = doc.check(template, resp).await;
        let expected = if template == "/healthz" { 200 } else { 401 };
        assert_eq!(status, expected, "{template}");
    }
    server.stop().await.unwrap();

    // Every documented response was seen.
    let mut missing = Vec::new();
    for template in &templates {
        let item = doc.doc["paths"][template].as_object().unwrap().clone();
        let codes: Vec<String> = item
            .values()
            .filter_map(|op| op["responses"].as_object())
            .flat_map(|r| r.keys().cloned())
            .collect();
        for code in &codes {
            let code: u16 = code.parse().unwrap();
            if !doc.seen.contains(&(template.clone(), code)) {
                missing.push(format!("{template} {code}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "documented but never exercised: {missing:?}"
    );
}

/// The POST routes (`/v1/webhooks/{name}`, `/v1/refresh`): every documented status, for real.
async fn post_routes(doc: &mut Doc, fleet: &Fleet) {
    const SECRET: &str = "whsec-openapi-test-5a7c";
    const ADMIN: &str = "admin-token-openapi-test-3e9f";
    let watcher = || {
        let mut w = Watcher::new(WatchConfig {
            interval: Duration::from_secs(3600),
            jitter: 0.0,
            trip: 1,
            clear: 1,
            timeout: Duration::from_secs(10),
        });
        let subtotal = connhealth::simulators::subtotal(&fleet.subtotal)
            .webhook_secret(connhealth_core::Secret::new(SECRET))
            .build()
            .unwrap();
        w.add(Arc::new(subtotal), None);
        w
    };
    let sign = |body: &[u8]| {
        let ts = Utc::now().timestamp().to_string();
        let sig: String =
            connhealth_testkit::webhooks::hmac_sha256(SECRET, &[ts.as_bytes(), b".", body])
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
        (ts, format!("v1={sig}"))
    };
    let first = fleet.subtotal.connection_ids()[0].clone();
    let c = fleet.subtotal.connection(&first).unwrap();
    let event = |id: &str, kind: &str| {
        serde_json::to_vec(&json!({
            "type": kind, "id": id,
            "payload": {"connection": {
                "connection_id": c.connection_id, "customer_id": c.customer_id,
                "retailer_id": c.retailer_id, "status": "unauthenticated",
                "email": null, "mobile": null,
            }},
        }))
        .unwrap()
    };
    async fn webhook(
        server: &Running,
        name: &str,
        body: Vec<u8>,
        signed: Option<(String, String)>,
    ) -> reqwest::Response {
        let mut req = server
            .client
            .post(server.url(&format!("/v1/webhooks/{name}")))
            .header("content-type", "application/json")
            .body(body);
        if let Some((ts, sig)) = signed {
            req = req
                .header("X-Subtotal-Timestamp", ts)
                .header("X-Subtotal-Signature", sig);
        }
        req.send().await.unwrap()
    }
    async fn refresh(server: &Running, auth: Option<&str>, body: &str) -> reqwest::Response {
        let mut req = server
            .client
            .post(server.url("/v1/refresh"))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(a) = auth {
            req = req.bearer_auth(a);
        }
        req.send().await.unwrap()
    }
    let w_t = "/v1/webhooks/{name}";
    let r_t = "/v1/refresh";
    let good = json!({"provider": "subtotal", "customer_id": c.customer_id}).to_string();

    // No store: 503 for both (the admin token set).
    let bare = Running::start_with(watcher(), Options::default(), |s| {
        s.state()
            .set_admin_token(connhealth_core::Secret::new(ADMIN));
        s
    })
    .await;
    bare.ready(false).await;
    let body = event("01EVTOPENAPI0000000000000A", "connection.unauthenticated");
    let r = webhook(&bare, "subtotal", body.clone(), Some(sign(&body))).await;
    assert_eq!(doc.check_op("post", w_t, r).await.0, 503);
    let r = refresh(&bare, Some(ADMIN), &good).await;
    assert_eq!(doc.check_op("post", r_t, r).await.0, 503);
    bare.stop().await.unwrap();

    // No admin token configured: 403.
    let dir = tempfile::tempdir().unwrap();
    let url = connhealth_store::StoreUrl::parse_relative_to("sqlite://connhealth.db", dir.path())
        .unwrap();
    let store = connhealth_store::open(&url, Default::default())
        .await
        .unwrap();
    let (journal, loaded) = connhealth_store::Journal::load(store.clone(), Default::default())
        .await
        .unwrap();
    let closed = Running::start_with(watcher().with_state(loaded), Options::default(), |s| {
        s.with_store(journal, |_| {})
    })
    .await;
    closed.ready(false).await;
    let r = refresh(&closed, Some(ADMIN), &good).await;
    assert_eq!(doc.check_op("post", r_t, r).await.0, 403);
    closed.stop().await.unwrap();

    // A store, the admin token, a queue of 2, refreshes that hang (so the queue stays full).
    let (journal, loaded) = connhealth_store::Journal::load(store, Default::default())
        .await
        .unwrap();
    let server = Running::start_with(watcher().with_state(loaded), Options::default(), |s| {
        s.state()
            .set_admin_token(connhealth_core::Secret::new(ADMIN));
        s.with_queue_bound(2).with_store(journal, |_| {})
    })
    .await;
    server.ready(false).await;
    fleet.subtotal.faults().on_all(Fault::Hang);
    let expect = [
        (webhook(&server, "subtotal", body.clone(), None).await, 401),
        (
            webhook(&server, "nosuch", body.clone(), Some(sign(&body))).await,
            404,
        ),
        (
            {
                let huge = vec![b' '; 1024 * 1024 + 1];
                let s = sign(&huge);
                webhook(&server, "subtotal", huge, Some(s)).await
            },
            413,
        ),
        (
            webhook(
                &server,
                "subtotal",
                b"not json".to_vec(),
                Some(sign(b"not json")),
            )
            .await,
            400,
        ),
    ];
    for (r, code) in expect {
        assert_eq!(doc.check_op("post", w_t, r).await.0, code);
    }
    let unknown = event("01EVTOPENAPI0000000000000U", "connection.teleported");
    for code in [202, 200] {
        let r = webhook(&server, "subtotal", unknown.clone(), Some(sign(&unknown))).await;
        assert_eq!(doc.check_op("post", w_t, r).await.0, code);
    }
    for (auth, body, code) in [
        (None, good.as_str(), 401),
        (Some(ADMIN), "not json", 400),
        (
            Some(ADMIN),
            r#"{"provider":"nosuch","customer_id":"x"}"#,
            404,
        ),
        (Some(ADMIN), good.as_str(), 202),
    ] {
        let r = refresh(&server, auth, body).await;
        assert_eq!(doc.check_op("post", r_t, r).await.0, code, "{body}");
    }
    // The queue: the refresh above (hanging) and this webhook's fill it.
    let r = webhook(&server, "subtotal", body.clone(), Some(sign(&body))).await;
    assert_eq!(doc.check_op("post", w_t, r).await.0, 202);
    let next = event("01EVTOPENAPI0000000000000B", "connection.unauthenticated");
    let r = webhook(&server, "subtotal", next.clone(), Some(sign(&next))).await;
    assert_eq!(doc.check_op("post", w_t, r).await.0, 429);
    let r = refresh(&server, Some(ADMIN), &good).await;
    assert_eq!(doc.check_op("post", r_t, r).await.0, 429);
    fleet.subtotal.faults().clear();
    server.stop().await.unwrap();
}

/// `/v1/notifications` and `/v1/mutes`: every documented status, for real, over a real store
/// and a real notifier.
async fn notify_routes(doc: &mut Doc, fleet: &Fleet) {
    const ADMIN: &str = "admin-token-openapi-notify-77c1";
    let watcher = || fleet_watcher(fleet, Duration::from_secs(3600));
    async fn send(
        server: &Running,
        method: reqwest::Method,
        path: &str,
        auth: Option<&str>,
        body: Option<String>,
    ) -> reqwest::Response {
        let mut req = server.client.request(method, server.url(path));
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        if let Some(a) = auth {
            req = req.bearer_auth(a);
        }
        req.send().await.unwrap()
    }
    use reqwest::Method;
    let (n_t, m_t, d_t) = ("/v1/notifications", "/v1/mutes", "/v1/mutes/{id}");
    let until = (Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    let good = json!({"match": {"provider": "violet", "customer": "violet:c9"}, "until": until, "reason": "maintenance"}).to_string();

    // No store: 503 everywhere (the admin token set).
    let bare = Running::start_with(watcher(), Options::default(), |s| {
        s.state()
            .set_admin_token(connhealth_core::Secret::new(ADMIN));
        s
    })
    .await;
    for (method, template, path, body) in [
        (Method::GET, n_t, n_t, None),
        (Method::GET, m_t, m_t, None),
        (Method::POST, m_t, m_t, Some(good.clone())),
        (Method::DELETE, d_t, "/v1/mutes/1", None),
    ] {
        let op = method.as_str().to_lowercase();
        let r = send(&bare, method, path, Some(ADMIN), body).await;
        assert_eq!(doc.check_op(&op, template, r).await.0, 503, "{path}");
    }
    bare.stop().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let url = connhealth_store::StoreUrl::parse_relative_to("sqlite://connhealth.db", dir.path())
        .unwrap();
    let store = connhealth_store::open(&url, Default::default())
        .await
        .unwrap();
    // No admin token configured: 403 for the writes.
    let (journal, loaded) = connhealth_store::Journal::load(store.clone(), Default::default())
        .await
        .unwrap();
    let closed = Running::start_with(watcher().with_state(loaded), Options::default(), |s| {
        s.with_store(journal, |_| {})
    })
    .await;
    let r = send(&closed, Method::POST, m_t, Some(ADMIN), Some(good.clone())).await;
    assert_eq!(doc.check_op("post", m_t, r).await.0, 403);
    let r = send(&closed, Method::DELETE, "/v1/mutes/1", Some(ADMIN), None).await;
    assert_eq!(doc.check_op("delete", d_t, r).await.0, 403);
    closed.stop().await.unwrap();

    // A store, the admin token, a notifier with one sink (nothing listens there; a 410 of an
    // earlier run disabled it) and a config mute.
    let sink: connhealth_notify::SinkConfig = serde_json::from_value(json!({
        "name": "ops", "kind": "webhook", "url": "http://127.0.0.1:9/hook",
        "secret_env": "OPENAPI_NOTIFY_SECRET", "retry_schedule": ["1h"],
    }))
    .unwrap();
    let sink = sink
        .validate_with(|_| Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()))
        .unwrap();
    // A 410 seen by an earlier run: the store remembers it for this same config.
    store
        .disable_sink(connhealth_store::DisabledSink {
            sink: "ops".into(),
            fingerprint: sink.fingerprint().to_owned(),
            disabled_at: Utc::now(),
            reason: "the sink answered 410 Gone and is disabled".into(),
        })
        .await
        .unwrap();
    let config_mute: connhealth_notify::Mute = serde_json::from_value(json!({
        "match": {"connection": "violet:c1:shopify"}, "until": until, "reason": "from the file",
    }))
    .unwrap();
    let notifier = Arc::new(
        connhealth_notify::Notifier::new(
            store.clone(),
            vec![sink],
            vec![config_mute],
            Default::default(),
        )
        .unwrap(),
    );
    let change: Change = serde_json::from_value(json!({
        "event": "status_changed", "from": "healthy", "to": "disconnected",
        "connection_id": "violet:c2:shopify", "provider": "violet", "customer_id": "c2",
        "platform": "shopify", "at": Utc::now(), "since": null,
    }))
    .unwrap();
    store
        .commit_poll(connhealth_store::PollRecord {
            at: Utc::now(),
            events: vec![connhealth_store::NewEvent {
                change,
                source: connhealth_store::Source::Poll,
                notify: vec!["ops".into()],
            }]
            .into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (journal, loaded) = connhealth_store::Journal::load(store.clone(), Default::default())
        .await
        .unwrap();
    let server = Running::start_with(watcher().with_state(loaded), Options::default(), |s| {
        s.state()
            .set_admin_token(connhealth_core::Secret::new(ADMIN));
        s.with_store(journal, |_| {}).with_notifier(notifier)
    })
    .await;
    let r = send(&server, Method::GET, n_t, None, None).await;
    let (code, body) = doc.check(n_t, r).await;
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["sinks"][0]["name"], "ops");
    assert_eq!(
        v["sinks"][0]["disabled"], true,
        "restored from the store: {v}"
    );
    assert_eq!(
        v["sinks"][0]["disabled_reason"],
        "the sink answered 410 Gone and is disabled"
    );
    assert!(!body.contains("127.0.0.1:9"), "no sink URL: {body}");
    for q in ["?state=lost", "?limit=0", "?colour=red"] {
        let r = send(&server, Method::GET, &format!("{n_t}{q}"), None, None).await;
        assert_eq!(doc.check(n_t, r).await.0, 400, "{q}");
    }
    let r = send(
        &server,
        Method::GET,
        &format!("{n_t}?state=delivered&sink=ops"),
        None,
        None,
    )
    .await;
    let (_, body) = doc.check(n_t, r).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["items"],
        json!([])
    );

    for (auth, body, code) in [
        (None, good.clone(), 401),
        (Some("wrong-admin-token-xxxxxxxx"), good.clone(), 401),
        (Some(ADMIN), "not json".to_owned(), 400),
        (
            Some(ADMIN),
            json!({"match": {}, "until": until}).to_string(),
            400,
        ),
        (
            Some(ADMIN),
            json!({"match": {"provider": "violet"}, "until": "2001-01-01T00:00:00Z"}).to_string(),
            400,
        ),
        (
            Some(ADMIN),
            json!({"match": {"provider": "violet"}, "until": until, "colour": 1}).to_string(),
            400,
        ),
        (Some(ADMIN), good.clone(), 201),
    ] {
        let r = send(&server, Method::POST, m_t, auth, Some(body.clone())).await;
        assert_eq!(doc.check_op("post", m_t, r).await.0, code, "{body}");
    }
    let r = send(&server, Method::GET, m_t, None, None).await;
    let (code, body) = doc.check(m_t, r).await;
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{v}");
    assert_eq!(
        (items[0]["id"].clone(), items[0]["source"].clone()),
        (json!("config-1"), json!("config"))
    );
    assert_eq!(items[1]["source"], "api");
    assert_eq!(
        items[1]["match"],
        json!({"provider": "violet", "customer": "violet:c9"})
    );
    let api_id = items[1]["id"].as_i64().unwrap();

    for (auth, path, code) in [
        (None, format!("/v1/mutes/{api_id}"), 401),
        (Some(ADMIN), "/v1/mutes/config-1".to_owned(), 409),
        (Some(ADMIN), "/v1/mutes/999".to_owned(), 404),
        (Some(ADMIN), "/v1/mutes/nope".to_owned(), 404),
        (Some(ADMIN), format!("/v1/mutes/{api_id}"), 200),
        (Some(ADMIN), format!("/v1/mutes/{api_id}"), 404),
    ] {
        let r = send(&server, Method::DELETE, &path, auth, None).await;
        assert_eq!(doc.check_op("delete", d_t, r).await.0, code, "{path}");
    }
    let left = store.mutes(Utc::now()).await.unwrap();
    assert!(left.is_empty(), "{left:?}");
    // The counters are in /metrics.
    let metrics = server.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("connhealth_notify_sink_disabled{sink=\"ops\"} 1"),
        "{metrics}"
    );
    server.stop().await.unwrap();
}

/// `POST /v1/connections/{id}/actions/{kind}` and `GET /v1/audit`: every documented status,
/// for real (a fleet of its own, so the other routes' simulators are left as they were).
async fn action_routes(doc: &mut Doc) {
    const ADMIN: &str = "admin-token-openapi-actions-7c1d";
    let fleet = Fleet::start(2, 43).await.unwrap();
    let watcher = || {
        let mut w = Watcher::new(WatchConfig {
            interval: Duration::from_secs(3600),
            jitter: 0.0,
            trip: 1,
            clear: 1,
            timeout: Duration::from_secs(10),
        });
        let violet = connhealth::simulators::violet(&fleet.violet)
            .build()
            .unwrap();
        let subtotal = connhealth::simulators::subtotal(&fleet.subtotal)
            .build()
            .unwrap();
        w.add(Arc::new(violet), None);
        w.add(Arc::new(subtotal), None);
        w
    };
    async fn act(
        server: &Running,
        id: &str,
        kind: &str,
        auth: Option<&str>,
        body: &str,
    ) -> reqwest::Response {
        let id: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
        let mut req = server
            .client
            .post(server.url(&format!("/v1/connections/{id}/actions/{kind}")))
            .body(body.to_owned());
        if let Some(a) = auth {
            req = req.bearer_auth(a);
        }
        req.send().await.unwrap()
    }
    let t = "/v1/connections/{id}/actions/{kind}";
    let a_t = "/v1/audit";

    // No store: 503 (the admin token set).
    let bare = Running::start_with(watcher(), Options::default(), |s| {
        s.state()
            .set_admin_token(connhealth_core::Secret::new(ADMIN));
        s
    })
    .await;
    bare.ready(false).await;
    let r = act(&bare, "violet:1", "refresh", Some(ADMIN), "").await;
    assert_eq!(doc.check_op("post", t, r).await.0, 503);
    let r = bare.get(a_t).await;
    assert_eq!(doc.check(a_t, r).await.0, 503);
    bare.stop().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let url = connhealth_store::StoreUrl::parse_relative_to("sqlite://connhealth.db", dir.path())
        .unwrap();
    let store = connhealth_store::open(&url, Default::default())
        .await
        .unwrap();
    // No admin token configured: 403.
    let (journal, loaded) = connhealth_store::Journal::load(store.clone(), Default::default())
        .await
        .unwrap();
    let closed = Running::start_with(watcher().with_state(loaded), Options::default(), |s| {
        s.with_store(journal, |_| {})
    })
    .await;
    closed.ready(false).await;
    let r = act(&closed, "violet:1", "refresh", Some(ADMIN), "").await;
    assert_eq!(doc.check_op("post", t, r).await.0, 403);
    closed.stop().await.unwrap();

    let (journal, loaded) = connhealth_store::Journal::load(store, Default::default())
        .await
        .unwrap();
    let server = Running::start_with(watcher().with_state(loaded), Options::default(), |s| {
        s.state()
            .set_admin_token(connhealth_core::Secret::new(ADMIN));
        s.with_store(journal, |_| {})
    })
    .await;
    server.ready(false).await;
    let report: Value = server.get("/v1/report").await.json().await.unwrap();
    let of = |p: &str| {
        report["connections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["provider"] == p && c["provider_status"] != "disconnected")
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (v, s) = (of("violet"), of("subtotal"));
    fleet.subtotal.faults().push(
        connhealth_testkit::FaultRule::new(Fault::status(500))
            .route(connhealth_testkit::subtotal::UPDATE_CONNECTION),
    );
    for (id, kind, auth, body, code) in [
        (v.as_str(), "refresh", None, "", 401),
        (v.as_str(), "refresh", Some(ADMIN), "not json", 400),
        ("violet:nosuch", "refresh", Some(ADMIN), "", 404),
        (v.as_str(), "launch", Some(ADMIN), "", 404),
        (v.as_str(), "refresh", Some(ADMIN), "{}", 200),
        (v.as_str(), "refresh", Some(ADMIN), "", 429),
        (s.as_str(), "disconnect", Some(ADMIN), "", 502),
    ] {
        let r = act(&server, id, kind, auth, body).await;
        assert_eq!(doc.check_op("post", t, r).await.0, code, "{id} {kind}");
    }
    let (status, body) = doc.check(a_t, server.get("/v1/audit?limit=2").await).await;
    assert_eq!(status, 200);
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert!(page["next_before"].is_i64());
    let r = server.get("/v1/audit?limit=5000").await;
    assert_eq!(doc.check(a_t, r).await.0, 400);
    fleet.subtotal.faults().clear();
    server.stop().await.unwrap();
}

/// Percent-encode a query value (cursors hold JSON).
fn url_escape(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
}
