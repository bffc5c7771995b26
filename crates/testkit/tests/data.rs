//! Generator determinism and coverage, and the Fleet.

use std::collections::HashSet;

use connhealth_testkit::data::{self, VIOLET_CHECK_STATUSES, VIOLET_SECTIONS};
use connhealth_testkit::Fleet;
use serde_json::Value;

#[test]
fn same_seed_same_bytes_different_seed_different_data() {
    let a = serde_json::to_string(&data::channel3_customers(80, 11)).expect("ser");
    let b = serde_json::to_string(&data::channel3_customers(80, 11)).expect("ser");
    let c = serde_json::to_string(&data::channel3_customers(80, 12)).expect("ser");
    assert_eq!(a, b);
    assert_ne!(a, c);

    let a = serde_json::to_string(&data::violet_merchants(80, 11)).expect("ser");
    let b = serde_json::to_string(&data::violet_merchants(80, 11)).expect("ser");
    let c = serde_json::to_string(&data::violet_merchants(80, 12)).expect("ser");
    assert_eq!(a, b);
    assert_ne!(a, c);

    let a = serde_json::to_string(&data::subtotal_customers(80, 11)).expect("ser");
    let b = serde_json::to_string(&data::subtotal_customers(80, 11)).expect("ser");
    let c = serde_json::to_string(&data::subtotal_customers(80, 12)).expect("ser");
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn ten_thousand_customers_generate() {
    let c3 = data::channel3_customers(10_000, 1);
    assert_eq!(c3.customers.len(), 10_000);
    let ids: HashSet<_> = c3
        .customers
        .iter()
        .map(|c| c.customer_id.as_str())
        .collect();
    assert_eq!(ids.len(), 10_000);
    let v = data::violet_merchants(10_000, 1);
    assert_eq!(v.merchants.len(), 10_000);
    let ids: HashSet<_> = v
        .merchants
        .iter()
        .filter_map(|m| m["merchant_id"].as_i64())
        .collect();
    assert_eq!(ids.len(), 10_000);
    let s = data::subtotal_customers(10_000, 1);
    assert_eq!(s.customer_ids().len(), 10_000);
    let conn_ids: HashSet<_> = s
        .connections
        .iter()
        .map(|c| c.connection_id.as_str())
        .collect();
    assert_eq!(conn_ids.len(), s.connections.len());
}

#[test]
fn channel3_covers_every_status() {
    let d = data::channel3_customers(200, 3);
    assert_eq!(d.customers[0].customer_id, data::CHANNEL3_DOC_EXAMPLE_ID);
    assert_eq!(d.customers[0].connections.len(), 3);
    let rows: Vec<_> = d
        .customers
        .iter()
        .flat_map(|c| c.connections.iter())
        .collect();
    let statuses: HashSet<_> = rows.iter().map(|r| r.status.as_str()).collect();
    assert_eq!(
        statuses,
        HashSet::from(["not_connected", "action_required", "active"])
    );
    let states: HashSet<_> = rows
        .iter()
        .filter_map(|r| r.sync.as_ref().map(|s| s.state.as_str()))
        .collect();
    assert_eq!(states, HashSet::from(["pending", "syncing", "live"]));
    let partial = rows.iter().any(|r| {
        r.sync
            .as_ref()
            .is_some_and(|s| s.state == "live" && s.synced_products < s.total_products)
    });
    assert!(partial, "live with synced < total");
    let no_sync = rows
        .iter()
        .any(|r| r.category == "distribution" && r.status == "active" && r.sync.is_none());
    assert!(no_sync, "active distribution without sync");
    let action_ingestion = rows
        .iter()
        .any(|r| r.category == "ingestion" && r.status == "action_required");
    assert!(action_ingestion);
    for p in ["shopify", "woocommerce", "web_crawl"] {
        assert!(
            rows.iter().any(|r| r.platform == p && r.status == "active"),
            "{p}"
        );
    }
    // Every generated customer lists the 15 platforms with the right category.
    for c in &d.customers[1..] {
        assert_eq!(c.connections.len(), 15);
        for (row, (p, cat, _)) in c.connections.iter().zip(data::CHANNEL3_PLATFORMS) {
            assert_eq!((row.platform.as_str(), row.category.as_str()), (p, cat));
        }
    }
    // Odd ids only on request.
    assert!(d.customers.iter().all(|c| !c.customer_id.contains('/')));
}

#[test]
fn violet_covers_every_status() {
    let d = data::violet_merchants(200, 3);
    let ms = &d.merchants;
    assert_eq!(ms[0], data::violet_doc_example());
    let merchant_statuses: HashSet<_> = ms
        .iter()
        .filter_map(|m| m["merchant_status"].as_str())
        .collect();
    for s in data::VIOLET_MERCHANT_STATUSES {
        assert!(merchant_statuses.contains(s), "merchant_status {s}");
    }
    for section in VIOLET_SECTIONS {
        let seen: HashSet<_> = ms
            .iter()
            .filter_map(|m| m[section]["status"].as_str())
            .collect();
        for status in VIOLET_CHECK_STATUSES {
            assert!(seen.contains(status), "{section} {status}");
        }
    }
    let sync: HashSet<_> = ms
        .iter()
        .filter_map(|m| m["sync_status"]["results"]["status"].as_str())
        .collect();
    for s in data::VIOLET_SYNC_STATUSES {
        assert!(sync.contains(s), "sync {s}");
    }
    let any = |f: &dyn Fn(&Value) -> bool| ms.iter().skip(1).any(f);
    assert!(any(&|m| m["connection"]["results"]["isConnected"] == false));
    assert!(any(&|m| m["connection"]["results"]["storeScopes"]
        ["missingScopes"]
        .as_array()
        .is_some_and(|a| !a.is_empty())));
    assert!(any(&|m| m["scope_validation"]["results"]["missing_scopes"]
        .as_array()
        .is_some_and(|a| !a.is_empty())));
    assert!(any(&|m| m["connection"]["results"]
        ["hasActivePlatformPlan"]
        == false));
    assert!(any(
        &|m| m["invalid_products"]["results"]["count"].as_i64() > Some(0)
    ));
    assert!(any(&|m| m["payout_account"]["status"] == "NEEDS_ATTENTION"
        && m["payout_account"]["results"].is_null()));
    assert!(any(&|m| m["payout_account"]["results"]["errors"]
        .as_array()
        .is_some_and(|a| !a.is_empty())));
    assert!(any(&|m| m["migration"]["results"] == "MIGRATION_REQUIRED"));
    assert!(any(&|m| m["distribution_type"] == "PUBLIC"));
    let platforms: HashSet<_> = ms.iter().filter_map(|m| m["platform"].as_str()).collect();
    for p in [
        "SHOPIFY",
        "WOOCOMMERCE",
        "CHORD",
        "SQUARE",
        "AMAZON",
        "BIGCARTEL",
    ] {
        assert!(platforms.contains(p), "platform {p}");
    }
    // Mostly healthy.
    let healthy = ms
        .iter()
        .filter(|m| {
            m["merchant_status"] == "ACTIVE"
                && VIOLET_SECTIONS.iter().all(|s| {
                    matches!(
                        m[*s]["status"].as_str(),
                        Some("COMPLETE" | "NOT_APPLICABLE")
                    )
                })
        })
        .count();
    assert!(healthy > ms.len() / 2, "{healthy} healthy of {}", ms.len());
}

#[test]
fn subtotal_covers_every_status() {
    let d = data::subtotal_customers(200, 3);
    let doc = &d.connections[0];
    assert_eq!(doc, &data::subtotal_doc_example());
    let statuses: HashSet<_> = d.connections.iter().map(|c| c.status.as_str()).collect();
    assert_eq!(statuses, HashSet::from(data::SUBTOTAL_STATUSES));
    assert!(d.connections.iter().any(|c| c.is_simulated == Some(true)));
    let active = d
        .connections
        .iter()
        .filter(|c| c.status == "active")
        .count();
    assert!(active > d.connections.len() / 2);
    const CROCKFORD: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    for c in &d.connections {
        assert_eq!(c.connection_id.len(), 26);
        assert!(c.connection_id.chars().all(|ch| CROCKFORD.contains(ch)));
    }
    let retailers: HashSet<_> = d
        .connections
        .iter()
        .map(|c| c.retailer_id.as_str())
        .collect();
    assert!(retailers.contains("walmart") && retailers.iter().any(|r| r.len() == 26));
    for customer in d.customer_ids() {
        let n = d
            .connections
            .iter()
            .filter(|c| c.customer_id == customer)
            .count();
        assert!((1..=4).contains(&n));
    }
}

#[tokio::test]
async fn fleet_starts_all_three() {
    let fleet = Fleet::start(10, 4).await.expect("fleet");
    let c = reqwest::Client::new();
    let r = c
        .get(format!(
            "{}/v0/partner/merchants",
            fleet.channel3.base_url()
        ))
        .header("x-api-key", fleet.channel3.api_key())
        .send()
        .await
        .expect("channel3");
    assert_eq!(r.json::<Value>().await.expect("json")["total"], 10);
    let r = c
        .get(format!("{}/retailers", fleet.subtotal.base_url()))
        .header("x-api-key", fleet.subtotal.api_key())
        .send()
        .await
        .expect("subtotal");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(fleet.violet.merchant_ids().len(), 10);
    assert_eq!(fleet.subtotal.customer_ids().len(), 10);
    let ports: HashSet<_> = [
        fleet.channel3.addr(),
        fleet.violet.addr(),
        fleet.subtotal.addr(),
    ]
    .iter()
    .map(|a| a.port())
    .collect();
    assert_eq!(ports.len(), 3);
    fleet.fault_all(connhealth_testkit::Fault::status(500));
    let r = c
        .get(format!("{}/retailers", fleet.subtotal.base_url()))
        .header("x-api-key", fleet.subtotal.api_key())
        .send()
        .await
        .expect("subtotal");
    assert_eq!(r.status().as_u16(), 500);
    fleet.clear_faults();
    fleet.shutdown().await;
}
