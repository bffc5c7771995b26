//! Property tests: arbitrary bytes, arbitrary JSON and mutations of the documented example
//! (snake_case and camelCase) and of generated simulator reports, fed to the public decoder
//! and mapping (`decode_report`). Never a panic; always connections that keep the model's
//! promises, or a typed `decode` error that quotes no document value.
//!
//! (The per-merchant decoder is not public; it is exercised through the simulator in
//! `tests/sim.rs`.)

use chrono::{DateTime, Utc};
use connhealth_core::{Connection, ErrorKind};
use connhealth_violet::decode_report;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Value};

const DOC: &str = include_str!("fixtures/doc_example.json");
const DOC_CAMEL: &str = include_str!("fixtures/doc_example_camel.json");
/// A value no error message may quote.
const MARKER: &str = "pii-marker-7d1f@example.com";

fn now() -> DateTime<Utc> {
    "2024-05-01T12:00:00Z".parse().unwrap()
}

/// 256 cases (CI); `PROPTEST_CASES=N` for a deeper run.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---- JSON generation and mutation -------------------------------------------------------

const KEYS: &[&str] = &[
    "merchant_id",
    "merchantId",
    "merchant_name",
    "merchant_email",
    "merchant_status",
    "merchantStatus",
    "platform",
    "store_url",
    "distribution_type",
    "connection",
    "scope_validation",
    "scopeValidation",
    "sync_status",
    "syncStatus",
    "invalid_products",
    "offers_published",
    "payout_account",
    "payoutAccount",
    "migration",
    "commission_rate",
    "channel_connection",
    "terms_of_service",
    "status",
    "error",
    "message",
    "results",
    "isConnected",
    "connected",
    "hasActivePlatformPlan",
    "storeScopes",
    "hasValidScopes",
    "missingScopes",
    "missing_scopes",
    "valid",
    "total_products",
    "total_products_synced",
    "date_last_synced",
    "count",
    "is_active",
    "isActive",
    "errors",
    "resolved",
    "error_message",
    "default_rate",
    "overrides",
];

const WORDS: &[&str] = &[
    "",
    " ",
    "ACTIVE",
    "active",
    "INACTIVE",
    "DISABLED",
    "NEW",
    "APPLICATION_DENIED",
    "COMPLETE",
    "complete",
    "INCOMPLETE",
    "NEEDS_ATTENTION",
    "NOT_APPLICABLE",
    "ERROR",
    "FAILED",
    "IN_PROGRESS",
    "NOT_STARTED",
    "COMPLETED",
    "MIGRATION_REQUIRED",
    "MIGRATION_IN_PROGRESS",
    "SHOPIFY",
    "Shopify",
    "OTHER",
    "PUBLIC",
    "123",
    "-1",
    "1e400",
    "2024-01-15T09:30:00Z",
    "2024-01-15T09:30:00.000+0000",
    "not a date",
    "write_products",
    "ünï",
    "\u{0}",
    "a\"b\\c",
    "🦀",
    MARKER,
];

fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(WORDS).prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(KEYS).prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

fn arb_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        select(&[0i64, -1, 1, 150, 149, i64::MIN, i64::MAX][..]).prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        arb_string().prop_map(Value::String),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    arb_leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((arb_key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
enum Op {
    Replace(Value),
    Remove,
    DuplicateItems,
    Stringify,
    ChangeCase,
    RenameKey(String),
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => arb_json().prop_map(Op::Replace),
        2 => Just(Op::Remove),
        1 => Just(Op::DuplicateItems),
        1 => Just(Op::Stringify),
        1 => Just(Op::ChangeCase),
        1 => arb_key().prop_map(Op::RenameKey),
    ]
}

fn arb_mutations() -> impl Strategy<Value = Vec<(usize, Op)>> {
    prop::collection::vec((any::<usize>(), arb_op()), 1..6)
}

fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// JSON pointers of every node, in pre-order ("" is the root).
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                pointers(item, format!("{at}/{i}"), out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                pointers(item, format!("{at}/{}", escape(k)), out);
            }
        }
        _ => {}
    }
}

fn split_parent(ptr: &str) -> Option<(&str, String)> {
    let (parent, last) = ptr.rsplit_once('/')?;
    Some((parent, last.replace("~1", "/").replace("~0", "~")))
}

/// Apply one mutation to the node chosen by `pick` (modulo the node count).
fn mutate(doc: &mut Value, pick: usize, op: &Op) {
    let mut all = Vec::new();
    pointers(doc, String::new(), &mut all);
    let ptr = all[pick % all.len()].clone();
    match op {
        Op::Replace(v) => {
            if let Some(node) = doc.pointer_mut(&ptr) {
                *node = v.clone();
            }
        }
        Op::Remove | Op::RenameKey(_) => {
            let Some((parent, last)) = split_parent(&ptr) else {
                return;
            };
            match doc.pointer_mut(parent) {
                Some(Value::Object(map)) => {
                    if let Some(v) = map.remove(&last) {
                        if let Op::RenameKey(k) = op {
                            map.insert(k.clone(), v);
                        }
                    }
                }
                Some(Value::Array(items)) if matches!(op, Op::Remove) => {
                    if let Ok(i) = last.parse::<usize>() {
                        if i < items.len() {
                            items.remove(i);
                        }
                    }
                }
                _ => {}
            }
        }
        Op::DuplicateItems => {
            if let Some(Value::Array(items)) = doc.pointer_mut(&ptr) {
                let copy = items.clone();
                items.extend(copy);
            }
        }
        Op::Stringify => {
            if let Some(node) = doc.pointer_mut(&ptr) {
                if !node.is_string() {
                    *node = Value::String(node.to_string());
                }
            }
        }
        Op::ChangeCase => {
            if let Some(Value::String(s)) = doc.pointer_mut(&ptr) {
                *s = if s.chars().any(|c| c.is_lowercase()) {
                    s.to_uppercase()
                } else {
                    s.to_lowercase()
                };
            }
        }
    }
}

// ---- seeds ----------------------------------------------------------------------------

fn seeds() -> Vec<Value> {
    let mut out = vec![
        serde_json::from_str::<Value>(DOC).unwrap(),
        serde_json::from_str::<Value>(DOC_CAMEL).unwrap(),
    ];
    let data = connhealth_testkit::data::violet_merchants(16, 5);
    for chunk in data.merchants.chunks(4) {
        out.push(Value::Array(chunk.to_vec()));
    }
    out.push(json!([connhealth_testkit::data::violet_doc_example()]));
    out
}

fn arb_seed() -> impl Strategy<Value = Value> {
    select(seeds())
}

// ---- checks ---------------------------------------------------------------------------

fn check_connection(c: &Connection) -> Result<(), TestCaseError> {
    prop_assert_eq!(&c.provider, "violet");
    let pid = c.provider_connection_id.as_deref().unwrap_or_default();
    prop_assert!(!pid.is_empty(), "a merchant id");
    prop_assert_eq!(&c.id, &format!("violet:{pid}"));
    prop_assert_eq!(&c.customer.id, pid);
    prop_assert!(
        c.customer.email.is_none(),
        "no personal data without the opt-in"
    );
    prop_assert!(!c.platform.is_empty());
    prop_assert_eq!(c.platform.to_lowercase(), c.platform.clone());
    prop_assert_eq!(c.observed_at, now());
    prop_assert!(
        c.status >= c.worst_reported(),
        "{} is {} but reports worse",
        c.id,
        c.status
    );
    prop_assert!(
        c.status.is_ok() || !c.problems.is_empty(),
        "{} is {} without a problem: {:?}",
        c.id,
        c.status,
        c.checks
    );
    for p in &c.problems {
        prop_assert!(!p.code.is_empty() && !p.message.is_empty());
        prop_assert!(p
            .code
            .chars()
            .all(|ch| ch.is_ascii_lowercase() || ch == '_'));
    }
    for ch in &c.checks {
        prop_assert!(!ch.name.is_empty());
    }
    let json = serde_json::to_string(c).unwrap();
    let back: Connection = serde_json::from_str(&json).unwrap();
    prop_assert_eq!(&back, c);
    Ok(())
}

fn check_report(body: &[u8]) -> Result<(), TestCaseError> {
    match decode_report("violet", body, now(), false) {
        Ok(conns) => {
            for c in &conns {
                check_connection(c)?;
            }
            // Deterministic: the same body maps the same way.
            prop_assert_eq!(
                decode_report("violet", body, now(), false).ok(),
                Some(conns)
            );
        }
        Err(e) => {
            prop_assert_eq!(e.kind(), ErrorKind::Decode);
            prop_assert_eq!(e.provider(), "violet");
            let text = format!("{e} {e:?}");
            prop_assert!(!text.contains(MARKER), "an error quotes a value: {}", text);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        check_report(&body)?;
    }

    #[test]
    fn arbitrary_json(doc in arb_json()) {
        check_report(doc.to_string().as_bytes())?;
        check_report(json!([doc]).to_string().as_bytes())?;
        check_report(json!([{"merchant_id": 7, "connection": doc}]).to_string().as_bytes())?;
    }

    #[test]
    fn mutated_documented_and_generated_reports(mut doc in arb_seed(), muts in arb_mutations()) {
        for (pick, op) in &muts {
            mutate(&mut doc, *pick, op);
        }
        check_report(doc.to_string().as_bytes())?;
    }

    #[test]
    fn truncated_reports(doc in arb_seed(), cut in any::<prop::sample::Index>()) {
        let body = doc.to_string().into_bytes();
        let at = cut.index(body.len() + 1);
        check_report(&body[..at])?;
    }
}

#[test]
fn the_seeds_decode() {
    for seed in seeds() {
        let conns = decode_report("violet", seed.to_string().as_bytes(), now(), false).unwrap();
        assert!(!conns.is_empty());
        for c in &conns {
            check_connection(c).unwrap();
        }
    }
}

#[test]
fn a_decode_error_quotes_no_value() {
    let body = format!(r#"[{{"merchant_id": 1, "merchant_name": "{MARKER}", "#);
    let e = decode_report("violet", body.as_bytes(), now(), false).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Decode);
    assert!(!format!("{e} {e:?}").contains(MARKER), "{e}");
    let e = decode_report(
        "violet",
        format!(r#"{{"x": "{MARKER}"}}"#).as_bytes(),
        now(),
        false,
    )
    .unwrap_err();
    assert!(!format!("{e} {e:?}").contains(MARKER), "{e}");
}
