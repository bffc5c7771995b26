//! Property tests: arbitrary bytes, arbitrary JSON and mutations of the documented example
//! (and of generated simulator data) fed to every public Channel3 decoder and to the mapping.
//! Never a panic; always connections that keep the model's promises, or a typed `decode` error.

use crate::map::{map_connection, map_connections};
use crate::wire::{
    ConnectSessionResponse, CreateMerchantResponse, MerchantsEnvelope, PartnerConnection,
    PartnerConnectionsResponse,
};
use chrono::{DateTime, TimeZone, Utc};
use connhealth_core::http::decode_json;
use connhealth_core::{Connection, Customer, ErrorKind, Status};
use connhealth_testkit::assert_well_formed;
use connhealth_testkit::fuzz::{self, Vocabulary};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Value};

const DOC: &str = include_str!("../../tests/fixtures/list_connections_doc_example.json");
const ENDPOINT: &str = "GET /v0/partner/merchants/{customer_id}/connections";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
}

fn customer() -> Customer {
    Customer {
        id: "cus_prop".into(),
        name: Some("Prop Corp".into()),
        email: None,
    }
}

// ---- JSON generation and mutation -------------------------------------------------------

const KEYS: &[&str] = &[
    "connections",
    "platform",
    "category",
    "status",
    "display_name",
    "id",
    "connected_at",
    "accounts",
    "sync",
    "state",
    "last_synced_at",
    "total_products",
    "synced_products",
    "name",
    "store_url",
    "items",
    "merchants",
    "data",
    "results",
    "customer_id",
    "total",
    "pages",
    "page",
    "size",
    "has_more",
    "logo",
    "logo_url",
    "token",
    "url",
    "expires_at",
    "created",
];

const WORDS: &[&str] = &[
    "",
    " ",
    "active",
    "ACTIVE",
    "not_connected",
    "action_required",
    "distribution",
    "ingestion",
    "pending",
    "syncing",
    "live",
    "google",
    "shopify",
    "Google",
    "web_crawl",
    "2024-01-15T09:30:00Z",
    "2024-01-15T09:30:00",
    "2024-13-45T99:99:99Z",
    "not a date",
    "-1",
    "1e400",
    "../x",
    "a/b",
    "ünï",
    "\u{0}",
    "a\"b\\c",
    "🦀",
];

const VOCAB: Vocabulary = Vocabulary {
    keys: KEYS,
    words: WORDS,
};

fn arb_json() -> impl Strategy<Value = Value> {
    fuzz::arb_json(VOCAB)
}

fn arb_mutations() -> impl Strategy<Value = Vec<(usize, fuzz::Op)>> {
    fuzz::arb_mutations(VOCAB)
}

// ---- seeds ----------------------------------------------------------------------------

/// The documented example, plus generated customers' List connections answers.
fn seeds() -> Vec<Value> {
    let mut out = vec![serde_json::from_str::<Value>(DOC).unwrap()];
    let data = connhealth_testkit::data::channel3_customers(12, 99);
    for c in data.customers.iter().take(12) {
        out.push(json!({ "connections": c.connections }));
    }
    out.push(json!({
        "items": data.customers.iter().map(|c| json!({"customer_id": c.customer_id, "name": c.name, "logo_url": c.logo_url})).collect::<Vec<_>>(),
        "total": data.customers.len(), "page": 1, "size": 50, "pages": 1
    }));
    out.push(json!({"customer_id": "cus_1", "created": true, "name": "Acme"}));
    out.push(json!({"token": "tok_secret", "url": "https://connect.example/x", "expires_at": "2024-01-15T10:00:00Z"}));
    out
}

fn arb_seed() -> impl Strategy<Value = Value> {
    select(seeds())
}

// ---- the properties' checks --------------------------------------------------------------

/// What every mapped connection promises.
fn check_connection(c: &Connection) -> Result<(), TestCaseError> {
    prop_assert!(c.id.starts_with("channel3:"), "id {}", c.id);
    prop_assert_eq!(&c.provider, "channel3");
    prop_assert_eq!(&c.customer, &customer());
    prop_assert_eq!(c.observed_at.get(), now());
    assert_well_formed(c);
    if let Some(pid) = &c.provider_connection_id {
        prop_assert_eq!(&c.id, &format!("channel3:{pid}"));
    }
    let mut account_ids: Vec<&str> = c.accounts.iter().map(|a| a.id.as_str()).collect();
    account_ids.sort_unstable();
    let n = account_ids.len();
    account_ids.dedup();
    prop_assert_eq!(n, account_ids.len(), "duplicate account ids in {}", c.id);
    Ok(())
}

/// Decode a List connections body the way the client does and map it.
fn check_list_connections(body: &[u8]) -> Result<(), TestCaseError> {
    let fast = PartnerConnectionsResponse::from_slice(body);
    let typed = decode_json::<PartnerConnectionsResponse>("channel3", ENDPOINT, body);
    match (&fast, &typed) {
        (Ok(a), Ok(b)) => prop_assert_eq!(a, b, "the fast and the typed decode agree"),
        (Err(_), Err(e)) => {
            prop_assert_eq!(e.kind(), ErrorKind::Decode);
            prop_assert_eq!(e.provider(), "channel3");
            prop_assert!(e.to_string().contains(ENDPOINT));
        }
        _ => prop_assert!(
            false,
            "fast {:?} vs typed {:?}",
            fast.is_ok(),
            typed.is_ok()
        ),
    }
    if let Ok(resp) = fast {
        let mapped = map_connections("channel3", &customer(), &resp, now());
        prop_assert!(
            mapped.connections.len() + mapped.losses.skipped.len() + mapped.losses.duplicates.len()
                >= resp.connections.len()
        );
        let mut ids: Vec<&str> = mapped.connections.iter().map(|c| c.id.as_str()).collect();
        ids.sort_unstable();
        let n = ids.len();
        ids.dedup();
        prop_assert_eq!(n, ids.len(), "connection ids are unique");
        for c in &mapped.connections {
            check_connection(c)?;
        }
        for s in &mapped.losses.skipped {
            prop_assert!(!s.reason.is_empty());
        }
    }
    Ok(())
}

/// Every other public decoder: Ok or a typed decode error, never a panic.
fn check_other_decoders(body: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(env) = decode_json::<MerchantsEnvelope>("channel3", "GET /v0/partner/merchants", body)
    {
        prop_assert!(env.items.len() <= env.received);
        prop_assert_eq!(env.items.len() + env.skipped.len(), env.received);
        for m in &env.items {
            prop_assert!(!m.customer_id.is_empty());
        }
    }
    let _ = serde_json::from_slice::<CreateMerchantResponse>(body);
    if let Ok(s) = serde_json::from_slice::<ConnectSessionResponse>(body) {
        // The session token is a secret: its Debug never shows it.
        let shown = format!("{s:?}");
        prop_assert!(shown.contains("[redacted]"));
        if s.token.expose().len() >= 4 {
            prop_assert!(!shown.contains(s.token.expose()), "{}", shown);
        }
    }
    if let Ok(one) = serde_json::from_slice::<PartnerConnection>(body) {
        if let Some(c) = map_connection("channel3", &customer(), &one, now()) {
            check_connection(&c)?;
        }
    }
    Ok(())
}

fn check_all(body: &[u8]) -> Result<(), TestCaseError> {
    check_list_connections(body)?;
    check_other_decoders(body)
}

proptest! {
    #![proptest_config(fuzz::config())]

    #[test]
    fn arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        check_all(&body)?;
    }

    #[test]
    fn arbitrary_json(doc in arb_json()) {
        check_all(doc.to_string().as_bytes())?;
        check_all(json!({ "connections": [doc] }).to_string().as_bytes())?;
    }

    #[test]
    fn mutated_documented_and_generated_answers(mut doc in arb_seed(), muts in arb_mutations()) {
        for (pick, op) in &muts {
            fuzz::mutate(&mut doc, *pick, op);
        }
        check_all(doc.to_string().as_bytes())?;
    }

    #[test]
    fn truncated_answers(doc in arb_seed(), cut in any::<prop::sample::Index>()) {
        let body = doc.to_string().into_bytes();
        let at = cut.index(body.len() + 1);
        check_all(&body[..at])?;
    }
}

#[test]
fn the_documented_example_maps_without_skips() {
    let resp = PartnerConnectionsResponse::from_slice(DOC.as_bytes()).unwrap();
    let mapped = map_connections("channel3", &customer(), &resp, now());
    assert!(mapped.losses.skipped.is_empty());
    assert_eq!(mapped.connections.len(), 3);
    for c in &mapped.connections {
        check_connection(c).unwrap();
    }
    assert!(mapped
        .connections
        .iter()
        .any(|c| c.status == Status::ActionRequired));
}

/// Regression (found by the fault matrix's `DuplicateIds`): an account listed twice in one
/// entry used to appear twice in `Connection.accounts`.
#[test]
fn an_account_listed_twice_is_kept_once() {
    let entry: PartnerConnection = serde_json::from_value(json!({
        "platform": "google", "category": "distribution", "status": "active",
        "display_name": "G", "id": "conn-1",
        "accounts": [
            {"id": "acct-1", "name": "Main", "store_url": "https://a.example"},
            {"id": "acct-2", "name": "Second"},
            {"id": "acct-1", "name": "Main (again)"},
            {"id": "", "name": "no id"}
        ],
        "sync": {"state": "live", "total_products": 3, "synced_products": 3}
    }))
    .unwrap();
    let c = map_connection("channel3", &customer(), &entry, now()).unwrap();
    let ids: Vec<&str> = c.accounts.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["acct-1", "acct-2"]);
    assert_eq!(
        c.accounts[0].name.as_deref(),
        Some("Main"),
        "the first wins"
    );
    assert_eq!(c.status, Status::Healthy);
}
