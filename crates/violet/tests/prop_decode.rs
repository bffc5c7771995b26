//! Property tests: arbitrary bytes, arbitrary JSON and mutations of the documented example
//! (snake_case and camelCase) and of generated simulator reports, fed to the public decoder
//! and mapping (`decode_report`). Never a panic; always connections that keep the model's
//! promises, or a typed `decode` error that quotes no document value.
//!
//! (The per-merchant decoder is not public; it is exercised through the simulator in
//! `tests/sim.rs`.)

use chrono::{DateTime, Utc};
use connhealth_core::{Connection, ErrorKind};
use connhealth_testkit::assert_well_formed;
use connhealth_testkit::fuzz::{self, Vocabulary};
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
    prop_assert_eq!(c.observed_at.get(), now());
    assert_well_formed(c);
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
    #![proptest_config(fuzz::config())]

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
            fuzz::mutate(&mut doc, *pick, op);
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
