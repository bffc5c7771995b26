//! Pure mapping tests: the documented example (snapshot) and the rule table.

use crate::map::{map_connection, map_connections};
use crate::wire::{PartnerConnection, PartnerConnectionsResponse, PlatformSlug};
use chrono::{DateTime, TimeZone, Utc};
use connhealth_core::{Connection, Customer, Remediation, Role, Status};
use serde_json::json;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
}

fn customer() -> Customer {
    Customer {
        id: "cus_acme".into(),
        name: Some("Acme Corp".into()),
        email: None,
    }
}

fn map_one(v: serde_json::Value) -> Connection {
    let wire: PartnerConnection = serde_json::from_value(v).unwrap();
    map_connection("channel3", &customer(), &wire, now()).expect("mapped")
}

fn codes(c: &Connection) -> Vec<&str> {
    let mut v: Vec<&str> = c.problems.iter().map(|p| p.code.as_str()).collect();
    v.sort_unstable();
    v
}

#[test]
fn doc_example_snapshot() {
    let body = include_str!("../../tests/fixtures/list_connections_doc_example.json");
    let resp: PartnerConnectionsResponse = serde_json::from_str(body).unwrap();
    let mapped = map_connections("channel3", &customer(), &resp, now());
    assert!(mapped.losses.skipped.is_empty());
    assert_eq!(mapped.connections.len(), 3);
    insta::with_settings!({ snapshot_path => "../../../../snapshots", prepend_module_to_snapshot => false }, {
        insta::assert_json_snapshot!("channel3__doc_example", mapped.connections, {
            ".observed_at" => "[observed_at]",
            "[].observed_at" => "[observed_at]"
        });
    });

    // The same facts, asserted directly (what the snapshot was checked against).
    let [c3, google, shopify] = &mapped.connections[..] else {
        unreachable!()
    };
    assert_eq!(c3.id, "channel3:cus_acme:channel3");
    assert_eq!(c3.provider_connection_id, None);
    assert_eq!(
        (c3.status, c3.role),
        (Status::NotConnected, Role::Destination)
    );
    assert!(c3.problems.is_empty() && c3.sync.is_none() && c3.accounts.is_empty());

    assert_eq!(google.id, "channel3:conn-1234-google");
    assert_eq!(
        (google.status, google.role),
        (Status::Healthy, Role::Destination)
    );
    assert_eq!(google.provider_status, "active");
    assert_eq!(
        google.connected_at,
        Some(Utc.with_ymd_and_hms(2024, 1, 15, 9, 30, 0).unwrap())
    );
    let sync = google.sync.as_ref().unwrap();
    assert_eq!((sync.total, sync.synced), (Some(150), Some(150)));
    assert_eq!(sync.state, connhealth_core::SyncState::Live);
    assert_eq!(
        google.data_as_of,
        Some(Utc.with_ymd_and_hms(2024, 4, 20, 14, 45, 0).unwrap())
    );
    assert_eq!(google.accounts.len(), 1);
    assert_eq!(
        google.accounts[0].store_url.as_deref(),
        Some("https://store.google.com/acmecorp")
    );

    assert_eq!(shopify.id, "channel3:conn-7890-shopify");
    assert_eq!(
        (shopify.status, shopify.role),
        (Status::ActionRequired, Role::Source)
    );
    assert_eq!(codes(shopify), ["action_required"]);
    let p = &shopify.problems[0];
    assert_eq!(p.severity, Status::ActionRequired);
    assert_eq!(p.remediation, Some(Remediation::Reconnect { url: None }));
    assert!(
        p.message.contains("shopify") && p.message.contains("Acme Shopify Store"),
        "{}",
        p.message
    );
    assert!(
        p.message
            .contains("/v0/partner/merchants/cus_acme/connections/sessions"),
        "{}",
        p.message
    );
}

const STATUSES: [&str; 4] = ["not_connected", "action_required", "active", "paused"];
const CATEGORIES: [&str; 3] = ["distribution", "ingestion", "marketplace"];
const SYNC_STATES: [Option<&str>; 5] = [
    None,
    Some("pending"),
    Some("syncing"),
    Some("live"),
    Some("stalled"),
];

/// The mapping rules (ARCHITECTURE.md, "Provider mapping"), written out independently of `map.rs`:
/// (status, role, sorted problem codes).
fn expected(status: &str, category: &str, sync: Option<&str>) -> (Status, Role, Vec<&'static str>) {
    let mut problems = Vec::new();
    let role = match category {
        "distribution" => Role::Destination,
        "ingestion" => Role::Source,
        _ => {
            problems.push("unrecognized_value");
            Role::Source
        }
    };
    if sync == Some("stalled") {
        problems.push("unrecognized_value");
    }
    let base = match status {
        "not_connected" => Status::NotConnected,
        "action_required" => {
            problems.push("action_required");
            Status::ActionRequired
        }
        "active" => match (category, sync) {
            ("ingestion", _) => Status::Healthy,
            ("distribution", None) => {
                problems.push("sync_status_missing");
                Status::Unknown
            }
            ("distribution", Some("pending")) => {
                problems.push("sync_pending");
                Status::Pending
            }
            ("distribution", Some("syncing")) => {
                problems.push("sync_in_progress");
                Status::Syncing
            }
            ("distribution", Some("live")) => Status::Healthy,
            _ => Status::Unknown,
        },
        _ => {
            problems.push("unrecognized_value");
            Status::Unknown
        }
    };
    let worst = if problems.contains(&"unrecognized_value") {
        base.max(Status::Unknown)
    } else {
        base
    };
    problems.sort_unstable();
    (worst, role, problems)
}

#[test]
fn every_status_category_sync_combination() {
    let mut rows = 0;
    for status in STATUSES {
        for category in CATEGORIES {
            for sync in SYNC_STATES {
                let mut item = json!({
                    "platform": "google",
                    "category": category,
                    "status": status,
                    "display_name": "Shop",
                    "id": "conn-1",
                });
                if let Some(state) = sync {
                    item["sync"] =
                        json!({"state": state, "total_products": 10, "synced_products": 10});
                }
                let c = map_one(item);
                let (st, role, problems) = expected(status, category, sync);
                let ctx = format!("{status} × {category} × {sync:?}");
                assert_eq!(c.status, st, "{ctx}");
                assert_eq!(c.role, role, "{ctx}");
                assert_eq!(codes(&c), problems, "{ctx}");
                assert_eq!(c.provider_status, status, "{ctx}");
                // Invariants: status is the worst of base and problems; non-ok carries a problem.
                assert!(c.problems.iter().all(|p| p.severity <= c.status), "{ctx}");
                assert!(c.status.is_ok() || !c.problems.is_empty(), "{ctx}");
                assert_eq!(c.sync.is_some(), sync.is_some(), "{ctx}");
                rows += 1;
            }
        }
    }
    assert_eq!(rows, 4 * 3 * 5);
}

#[test]
fn remediations_and_severities() {
    let c = map_one(
        json!({"platform":"openai","category":"distribution","status":"active","display_name":"OpenAI","sync":{"state":"pending"}}),
    );
    let p = &c.problems[0];
    assert_eq!(
        (p.code.as_str(), p.severity),
        ("sync_pending", Status::Pending)
    );
    assert_eq!(p.remediation, Some(Remediation::WaitForSync));

    let c = map_one(
        json!({"platform":"openai","category":"distribution","status":"active","display_name":"OpenAI","sync":{"state":"syncing","total_products":150,"synced_products":20}}),
    );
    let p = &c.problems[0];
    assert_eq!(
        (p.code.as_str(), p.severity),
        ("sync_in_progress", Status::Syncing)
    );
    assert_eq!(p.remediation, Some(Remediation::WaitForSync));

    let c = map_one(
        json!({"platform":"google","category":"distribution","status":"active","display_name":"G","sync":null}),
    );
    assert_eq!(c.status, Status::Unknown);
    assert_eq!(c.problems[0].severity, Status::Unknown);

    let c = map_one(
        json!({"platform":"google","category":"distribution","status":"reauth_needed","display_name":"G"}),
    );
    assert_eq!(
        c.problems[0].message,
        r#"unrecognized value "reauth_needed" for status"#
    );
    assert_eq!(c.provider_status, "reauth_needed");
    let c = map_one(
        json!({"platform":"google","category":"marketplace","status":"active","display_name":"G"}),
    );
    assert_eq!(
        c.problems[0].message,
        r#"unrecognized value "marketplace" for category"#
    );
    assert_eq!(c.role, Role::Source);
    let c = map_one(
        json!({"platform":"google","category":"distribution","status":"active","display_name":"G","sync":{"state":"paused"}}),
    );
    assert_eq!(
        c.problems[0].message,
        r#"unrecognized value "paused" for sync.state"#
    );
    assert_eq!(
        c.sync.as_ref().unwrap().state,
        connhealth_core::SyncState::Unknown
    );
}

fn live(total: serde_json::Value, synced: serde_json::Value) -> Connection {
    map_one(json!({
        "platform": "google", "category": "distribution", "status": "active",
        "display_name": "Acme Corp Google Store", "id": "conn-1",
        "sync": {"state": "live", "total_products": total, "synced_products": synced}
    }))
}

#[test]
fn partial_sync_rule() {
    let c = live(json!(150), json!(148));
    assert_eq!(c.status, Status::Degraded);
    assert_eq!(codes(&c), ["partial_sync"]);
    assert_eq!(c.problems[0].severity, Status::Degraded);
    assert!(
        c.problems[0].message.contains("148 of 150 products synced"),
        "{}",
        c.problems[0].message
    );

    assert_eq!(live(json!(150), json!(150)).status, Status::Healthy);
    assert_eq!(live(json!(150), json!(151)).status, Status::Healthy);
    assert_eq!(live(json!(0), json!(0)).status, Status::Healthy);
    // Null or missing counts: nothing to compare, live is healthy.
    for (t, s) in [
        (json!(null), json!(null)),
        (json!(150), json!(null)),
        (json!(null), json!(3)),
    ] {
        let c = live(t.clone(), s.clone());
        assert_eq!(c.status, Status::Healthy, "{t} {s}");
        assert!(c.problems.is_empty());
    }
    // Negative counts are tolerated and treated as unknown counts.
    let c = live(json!(-1), json!(5));
    assert_eq!(c.status, Status::Healthy);
    assert_eq!(c.sync.as_ref().unwrap().total, None);
    assert_eq!(c.sync.as_ref().unwrap().synced, Some(5));
    // Counts only matter when live: syncing with 20 of 150 stays syncing.
    let c = map_one(
        json!({"platform":"google","category":"distribution","status":"active","display_name":"G","sync":{"state":"syncing","total_products":150,"synced_products":20}}),
    );
    assert_eq!(c.status, Status::Syncing);
    // Ingestion rows with a sync keep it but it does not change their status.
    let c = map_one(
        json!({"platform":"shopify","category":"ingestion","status":"active","display_name":"S","sync":{"state":"live","total_products":150,"synced_products":1}}),
    );
    assert_eq!(c.status, Status::Healthy);
    assert_eq!(c.sync.as_ref().unwrap().synced, Some(1));
}

#[test]
fn every_platform_slug_round_trips() {
    let slugs = [
        "channel3",
        "google",
        "microsoft",
        "openai",
        "paypal",
        "perplexity",
        "stripe",
        "ucp",
        "shopify",
        "woocommerce",
        "bigcommerce",
        "magento",
        "salesforce_commerce",
        "akeneo",
        "web_crawl",
    ];
    assert_eq!(PlatformSlug::KNOWN.len(), slugs.len());
    for slug in slugs {
        let c = map_one(
            json!({"platform": slug, "category": "ingestion", "status": "active", "display_name": "x"}),
        );
        assert_eq!(c.platform, slug);
        assert_eq!(c.status, Status::Healthy, "{slug}");
        assert!(PlatformSlug::from(slug).is_known(), "{slug}");
        assert_eq!(c.id, format!("channel3:cus_acme:{slug}"));
    }
    // Unknown slugs are kept, lowercased, and are not a problem.
    let c = map_one(
        json!({"platform": "TikTok_Shop", "category": "distribution", "status": "active", "display_name": "x", "sync": {"state": "live"}}),
    );
    assert_eq!(c.platform, "tiktok_shop");
    assert_eq!(c.status, Status::Healthy);
    assert!(c.problems.is_empty());
}

#[test]
fn ids_dates_accounts_and_names() {
    let wire: PartnerConnection = serde_json::from_value(json!({
        "platform": "Google", "category": "distribution", "status": "not_connected", "display_name": "Google", "id": null
    }))
    .unwrap();
    let c = map_connection("channel3-eu", &Customer::new("cus/1"), &wire, now()).unwrap();
    assert_eq!(c.id, "channel3-eu:cus/1:google");
    assert_eq!(c.provider, "channel3-eu");
    assert_eq!(c.observed_at, now());
    assert_eq!(c.customer, Customer::new("cus/1"));

    let c = map_one(json!({
        "platform": "google", "category": "distribution", "status": "active", "display_name": "G",
        "id": "conn-9", "connected_at": "yesterday",
        "accounts": [{"id": "a1"}, {"name": "no id"}, {"id": "a2", "name": "Two", "store_url": null}],
        "sync": {"state": "live", "last_synced_at": "2024-04-20T14:45:00+02:00"}
    }));
    assert_eq!(c.id, "channel3:conn-9");
    assert_eq!(c.provider_connection_id.as_deref(), Some("conn-9"));
    assert_eq!(
        c.connected_at, None,
        "an unparsable date is None, not a failure"
    );
    assert_eq!(c.accounts.len(), 2);
    assert_eq!(c.accounts[1].name.as_deref(), Some("Two"));
    assert_eq!(
        c.data_as_of,
        Some(Utc.with_ymd_and_hms(2024, 4, 20, 12, 45, 0).unwrap())
    );
}

#[test]
fn bad_entries_are_skipped_not_fatal() {
    let resp: PartnerConnectionsResponse = serde_json::from_value(json!({"connections": [
        {"category": "distribution", "status": "active", "display_name": "no platform"},
        "not an object",
        {"platform": "shopify", "category": "ingestion", "status": "active", "display_name": "ok"},
        {"platform": "google", "status": "active"},
    ]}))
    .unwrap();
    let m = map_connections("channel3", &customer(), &resp, now());
    assert_eq!(m.connections.len(), 2);
    assert_eq!(m.losses.skipped.len(), 2);
    assert_eq!(m.connections[0].status, Status::Healthy);
    // Missing category / display_name: still mapped, unknown with a missing_value problem.
    assert_eq!(m.connections[1].status, Status::Unknown);
    assert_eq!(codes(&m.connections[1]), ["missing_value"]);

    let resp: PartnerConnectionsResponse =
        serde_json::from_str(r#"{"connections": null}"#).unwrap();
    assert!(map_connections("channel3", &customer(), &resp, now())
        .connections
        .is_empty());
}
