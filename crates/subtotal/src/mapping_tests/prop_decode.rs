//! Property tests: arbitrary bytes, arbitrary JSON and mutations of the documented example and
//! of generated simulator answers, fed to every public Subtotal decoder (`wire`) and to the
//! mapping (`map::map_connection`). Never a panic; always connections that keep the model's
//! promises, or a typed `decode` error.

use std::collections::HashMap;

use crate::map::{link_for, map_connection, platform_slug, MapContext};
use crate::wire::{GetRetailersResponse, ListConnectionsResponse};
use crate::ConnectionResponse;
use chrono::{DateTime, Utc};
use connhealth_core::http::decode_json;
use connhealth_core::{Connection, ErrorKind, Remediation, Role};
use connhealth_testkit::assert_well_formed;
use connhealth_testkit::fuzz::{self, Vocabulary};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Value};
use url::Url;

const LINK: &str =
    "https://link.subtotal.com/abc123?redirect_url=https%3A%2F%2Fapp.example.com%2Fdone";

fn now() -> DateTime<Utc> {
    "2024-05-01T12:00:00Z".parse().unwrap()
}

// ---- JSON generation and mutation -------------------------------------------------------

const KEYS: &[&str] = &[
    "connections",
    "retailers",
    "connection_id",
    "customer_id",
    "retailer_id",
    "status",
    "email",
    "mobile",
    "is_simulated",
    "id",
    "name",
    "display_name",
    "enabled",
];

const WORDS: &[&str] = &[
    "",
    " ",
    "active",
    "ACTIVE",
    "initialized",
    "unauthenticated",
    "disconnected",
    "paused",
    "walmart",
    "Walmart",
    "Sam's Club",
    "Bed Bath & Beyond",
    "01J51S0JYV6N7K1030CV1ZKSCA",
    "8a46e581-48ba-498a-9ad0-2ee72582e1af",
    "alice@example.com",
    "+1234567890",
    "true",
    "FALSE",
    "../x",
    "a?b=c&connection_id=evil",
    "h#f",
    "p%2Fq",
    "sp ace",
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

fn seeds() -> Vec<Value> {
    let data = connhealth_testkit::data::subtotal_customers(12, 17);
    let mut by_customer: HashMap<String, Vec<Value>> = HashMap::new();
    for c in &data.connections {
        by_customer
            .entry(c.customer_id.clone())
            .or_default()
            .push(serde_json::to_value(c).unwrap());
    }
    let mut out = vec![json!({
        "connections": [serde_json::to_value(connhealth_testkit::data::subtotal_doc_example()).unwrap()]
    })];
    let mut customers: Vec<_> = by_customer.into_iter().collect();
    customers.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, conns) in customers.into_iter().take(10) {
        out.push(json!({ "connections": conns }));
    }
    out.push(json!({ "retailers": data.retailers }));
    out
}

fn arb_seed() -> impl Strategy<Value = Value> {
    select(seeds())
}

// ---- checks ---------------------------------------------------------------------------

fn names() -> HashMap<String, String> {
    connhealth_testkit::data::subtotal_retailers()
        .into_iter()
        .map(|r| (r.retailer_id, r.name))
        .collect()
}

fn check_connection(item: &ConnectionResponse, c: &Connection) -> Result<(), TestCaseError> {
    let pid = c.provider_connection_id.as_deref().unwrap_or_default();
    prop_assert!(!pid.is_empty());
    prop_assert_eq!(Some(pid), item.connection_id.as_deref().map(str::trim));
    prop_assert_eq!(&c.id, &format!("subtotal:{pid}"));
    prop_assert_eq!(&c.provider, "subtotal");
    prop_assert_eq!(c.role, Role::Account);
    prop_assert!(
        c.customer.email.is_none(),
        "no personal data without the opt-in"
    );
    prop_assert_eq!(c.observed_at.get(), now());
    assert_well_formed(c);
    for p in &c.problems {
        // The mobile number never reaches a report.
        let elsewhere = |m: &str| {
            [&item.connection_id, &item.customer_id, &item.retailer_id]
                .into_iter()
                .flatten()
                .chain(item.status.as_ref().map(|s| s.as_str().to_owned()).as_ref())
                .any(|v| v.contains(m))
        };
        if let Some(m) = item
            .mobile
            .as_deref()
            .filter(|m| m.len() >= 6 && !elsewhere(m))
        {
            prop_assert!(!p.message.contains(m));
        }
        // A re-authentication / reconnect link carries the connection id as one query value,
        // whatever characters it holds, and keeps the configured parameters.
        let url = match &p.remediation {
            Some(Remediation::Reauthenticate { url }) | Some(Remediation::Reconnect { url }) => {
                url.clone()
            }
            _ => None,
        };
        if let Some(url) = url {
            let u = Url::parse(&url).unwrap();
            let ids: Vec<String> = u
                .query_pairs()
                .filter(|(k, _)| k == "connection_id")
                .map(|(_, v)| v.into_owned())
                .collect();
            prop_assert_eq!(ids, vec![pid.to_owned()]);
            prop_assert!(u.query_pairs().any(|(k, _)| k == "redirect_url"));
            prop_assert_eq!(u.host_str(), Some("link.subtotal.com"));
            prop_assert_eq!(u.path(), "/abc123");
        }
    }
    let json = serde_json::to_string(c).unwrap();
    let back: Connection = serde_json::from_str(&json).unwrap();
    prop_assert_eq!(&back, c);
    Ok(())
}

fn check_item(item: &ConnectionResponse, customer: Option<&str>) -> Result<(), TestCaseError> {
    let link = Url::parse(LINK).unwrap();
    let names = names();
    for (link_url, retailer_names) in [(Some(&link), Some(&names)), (None, None)] {
        let ctx = MapContext {
            provider: "subtotal",
            observed_at: now(),
            link_url,
            include_personal_data: false,
            retailer_names,
        };
        match map_connection(item, customer, &ctx) {
            Some(c) => check_connection(item, &c)?,
            None => prop_assert!(item
                .connection_id
                .as_deref()
                .is_none_or(|s| s.trim().is_empty())),
        }
    }
    // `Debug` never shows personal data.
    let shown = format!("{item:?}");
    for pd in [&item.email, &item.mobile].into_iter().flatten() {
        if pd.len() >= 4 && !shown.contains("[redacted]") {
            prop_assert!(!shown.contains(pd.as_str()), "{}", shown);
        }
    }
    Ok(())
}

fn check_all(body: &[u8]) -> Result<(), TestCaseError> {
    let typed = decode_json::<ListConnectionsResponse>("subtotal", "GET /connections", body);
    let plain = serde_json::from_slice::<ListConnectionsResponse>(body);
    prop_assert_eq!(typed.is_ok(), plain.is_ok());
    match typed {
        Ok(list) => {
            for item in &list.connections {
                check_item(item, Some("cus-prop"))?;
            }
        }
        Err(e) => {
            prop_assert_eq!(e.kind(), ErrorKind::Decode);
            prop_assert_eq!(e.provider(), "subtotal");
        }
    }
    if let Ok(r) = decode_json::<GetRetailersResponse>("subtotal", "GET /retailers", body) {
        for x in &r.retailers {
            let _ = (x.key(), x.label().map(platform_slug));
        }
    }
    if let Ok(item) = serde_json::from_slice::<ConnectionResponse>(body) {
        check_item(&item, None)?;
    }
    Ok(())
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

    #[test]
    fn links_and_slugs_take_any_string(id in any::<String>(), name in any::<String>()) {
        let link = Url::parse(LINK).unwrap();
        let url = Url::parse(&link_for(&link, &id)).unwrap();
        let ids: Vec<String> = url
            .query_pairs()
            .filter(|(k, _)| k == "connection_id")
            .map(|(_, v)| v.into_owned())
            .collect();
        prop_assert_eq!(ids, vec![id]);
        let slug = platform_slug(&name);
        prop_assert!(!slug.starts_with('_') && !slug.ends_with('_'));
        prop_assert!(slug.chars().all(|c| c == '_' || c.is_alphanumeric()));
    }
}

#[test]
fn the_seeds_decode() {
    for seed in seeds() {
        let body = seed.to_string();
        if seed.get("connections").is_some() {
            let list: ListConnectionsResponse = serde_json::from_str(&body).unwrap();
            assert!(!list.connections.is_empty());
            assert!(list.skipped.is_empty());
        }
        check_all(body.as_bytes()).unwrap();
    }
}
