//! The documented example of `GET /operations/connection_health`, mapped; its camelCase and
//! lower-case-enum variants map identically.

use chrono::{DateTime, Utc};
use connhealth_core::Connection;
use serde_json::Value;

const DOC: &str = include_str!("fixtures/doc_example.json");
const DOC_CAMEL: &str = include_str!("fixtures/doc_example_camel.json");

fn observed() -> DateTime<Utc> {
    "2024-05-01T12:00:00Z".parse().unwrap()
}

fn map(body: &str) -> Vec<Connection> {
    connhealth_violet::decode_report("violet", body.as_bytes(), observed(), false).unwrap()
}

#[test]
fn doc_example() {
    let conns = map(DOC);
    assert_eq!(conns.len(), 1);
    insta::with_settings!({ snapshot_path => "../../../snapshots", prepend_module_to_snapshot => false }, {
        insta::assert_json_snapshot!("violet__doc_example", &conns[0], { ".observed_at" => "[observed_at]" });
    });
}

#[test]
fn doc_example_is_deterministic() {
    assert_eq!(map(DOC), map(DOC));
}

#[test]
fn camel_case_maps_identically() {
    // The fixture really is camelCase.
    assert!(DOC_CAMEL.contains("\"merchantId\"") && DOC_CAMEL.contains("\"scopeValidation\""));
    assert!(!DOC_CAMEL.contains("\"merchant_id\""));
    assert_eq!(map(DOC_CAMEL), map(DOC));
}

/// Lower-case every string value that looks like an enum value (upper-case with underscores).
fn lower_enums(v: &mut Value) {
    match v {
        Value::String(s)
            if !s.is_empty() && s.chars().all(|c| c.is_ascii_uppercase() || c == '_') =>
        {
            *s = s.to_ascii_lowercase();
        }
        Value::Array(items) => items.iter_mut().for_each(lower_enums),
        Value::Object(map) => map.values_mut().for_each(lower_enums),
        _ => {}
    }
}

#[test]
fn lower_case_enums_map_identically() {
    let mut v: Value = serde_json::from_str(DOC).unwrap();
    lower_enums(&mut v);
    let body = v.to_string();
    assert!(body.contains("\"inactive\"") && body.contains("\"migration_required\""));
    let lower = map(&body);
    let mut upper = map(DOC);
    // Only the verbatim provider_status and the lower-cased platform may differ.
    assert_eq!(lower[0].provider_status, "inactive");
    upper[0].provider_status = "inactive".into();
    // Problem messages quote the raw merchant_status.
    for p in &mut upper[0].problems {
        p.message = p.message.replace("INACTIVE", "inactive");
        if let Some(connhealth_core::Remediation::ContactProvider { detail }) = &mut p.remediation {
            *detail = detail.replace("INACTIVE", "inactive");
        }
    }
    assert_eq!(lower, upper);
}

#[test]
fn personal_data_opt_in() {
    let with =
        connhealth_violet::decode_report("violet", DOC.as_bytes(), observed(), true).unwrap();
    assert_eq!(with[0].customer.email.as_deref(), Some("<string>"));
    assert_eq!(map(DOC)[0].customer.email, None);
}

#[test]
fn one_malformed_entry_does_not_fail_the_report() {
    let doc: Value = serde_json::from_str(DOC).unwrap();
    let body = format!(
        r#"[{}, 5, null, {{"merchant_name": "no id"}},
            {{"merchant_id": "9", "merchant_email": "x@y.example", "connection": {{"status": "COMPLETE", "status": "ERROR"}}}}]"#,
        doc[0]
    );
    let conns = map(&body);
    assert_eq!(conns.len(), 2);
    assert_eq!(conns[0], map(DOC)[0]);
    let bad = &conns[1];
    assert_eq!(bad.id, "violet:9");
    assert_eq!(bad.status, connhealth_core::Status::Unknown);
    assert_eq!(bad.problems.len(), 1);
    assert_eq!(bad.problems[0].code, "malformed_entry");
    assert!(
        !bad.problems[0].message.contains("x@y"),
        "{}",
        bad.problems[0].message
    );
}
