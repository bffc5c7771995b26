//! Serde types mirroring Violet's `ConnectionHealth` JSON, decoded defensively.
//!
//! Violet's documentation shows the report with snake_case keys on the GET endpoints and
//! camelCase keys on the POST/search ones (and camelCase inside `connection.results` even in
//! the snake_case GET), enum values mostly upper-case but sometimes lower-case, and schemas
//! that have shifted over time. So everything here is tolerant:
//!
//! * every key is accepted in snake_case and in camelCase (`alias` on every field; the
//!   top-level object, which also has to collect unknown sections, normalizes its keys);
//! * every field is optional and nullable ([`Lenient::Absent`]); a value of an unexpected type
//!   is kept as [`Lenient::Invalid`] (naming the JSON type it had) instead of failing;
//! * enum values are matched ignoring ASCII case and surrounding blanks, and unknown values are
//!   kept as `Other(raw)`;
//! * numbers that arrive as strings (`"123"`), and ids that are numbers or strings, are accepted;
//! * `migration.results` may be a string (documented) or an object (`{status: …}`);
//! * any other top-level key whose value is an object with a `status` becomes an extra section
//!   (e.g. `channel_connection`, `terms_of_service`, or sections added later).
//!
//! Decoding a report first splits the array into raw per-merchant slices ([`RawValue`]), then
//! decodes each one on its own, so a merchant entry that still cannot be decoded (for example a
//! key given twice) only affects that merchant ([`Item::Malformed`]).

use std::fmt;

use chrono::{DateTime, Utc};
use connhealth_core::lenient::scrub_values;
pub(crate) use connhealth_core::lenient::{FromJson, Ignored, Lenient};
use connhealth_core::{lenient_enum, object_from_json};
use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

// Lenient fields: connhealth_core::lenient (Lenient, FromJson, Ignored).

/// An identifier that may be a JSON number or a string (`123`, `"123"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Id(pub(crate) String);

impl FromJson for Id {
    fn from_i64(v: i64) -> Option<Self> {
        Some(Id(v.to_string()))
    }
    fn from_u64(v: u64) -> Option<Self> {
        Some(Id(v.to_string()))
    }
    fn from_f64(v: f64) -> Option<Self> {
        (v.is_finite() && v.fract() == 0.0 && v.abs() < 9.0e15).then(|| Id((v as i64).to_string()))
    }
    fn from_str(v: &str) -> Option<Self> {
        let v = v.trim();
        (!v.is_empty()).then(|| Id(v.to_owned()))
    }
}

// ---------------------------------------------------------------------------------------------
// Enums: matched ignoring case, unknown values kept (core's one enum macro)
// ---------------------------------------------------------------------------------------------

lenient_enum! {
    /// The per-section `status` of the report.
    pub(crate) enum CheckStatus ignoring case {
        Complete = "COMPLETE",
        Incomplete = "INCOMPLETE",
        NeedsAttention = "NEEDS_ATTENTION",
        NotApplicable = "NOT_APPLICABLE",
        Error = "ERROR",
    }
}

lenient_enum! {
    /// The top-level `merchant_status`.
    pub(crate) enum MerchantStatus ignoring case {
        Inactive = "INACTIVE",
        Active = "ACTIVE",
        Disabled = "DISABLED",
        New = "NEW",
        DisabledInactive = "DISABLED_INACTIVE",
        ForDeletion = "FOR_DELETION",
        ApplicationInProgress = "APPLICATION_IN_PROGRESS",
        ApplicationSubmitted = "APPLICATION_SUBMITTED",
        ApplicationDenied = "APPLICATION_DENIED",
        ApplicationAccepted = "APPLICATION_ACCEPTED",
    }
}

lenient_enum! {
    /// `sync_status.results.status`.
    pub(crate) enum SyncState ignoring case {
        NotStarted = "NOT_STARTED",
        Pending = "PENDING",
        InProgress = "IN_PROGRESS",
        Completed = "COMPLETED",
        Failed = "FAILED",
    }
}

lenient_enum! {
    /// `migration.results` (a plain string in the documented report).
    pub(crate) enum MigrationState ignoring case {
        MigrationRequired = "MIGRATION_REQUIRED",
        MigrationInProgress = "MIGRATION_IN_PROGRESS",
        Migrated = "MIGRATED",
        NotApplicable = "NOT_APPLICABLE",
        Error = "ERROR",
    }
}

// ---------------------------------------------------------------------------------------------
// Sections
// ---------------------------------------------------------------------------------------------

/// One report section: `{status, error, results}`. `commission_rate` adds `overrides`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(bound = "R: FromJson")]
pub(crate) struct Section<R> {
    #[serde(default)]
    pub(crate) status: Lenient<CheckStatus>,
    #[serde(default)]
    pub(crate) error: Lenient<SectionError>,
    #[serde(default)]
    pub(crate) results: Lenient<R>,
    /// `commission_rate` only: per-app overrides, each with its own status and error.
    #[serde(default)]
    pub(crate) overrides: Lenient<Vec<Override>>,
}

impl<R: FromJson> FromJson for Section<R> {
    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        Section::deserialize(MapAccessDeserializer::new(map)).map(Some)
    }
}

/// The per-section `error` object (only the message is used).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub(crate) struct SectionError {
    #[serde(default)]
    pub(crate) message: Lenient<String>,
}

/// A `commission_rate.overrides[]` item.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub(crate) struct Override {
    #[serde(default)]
    pub(crate) status: Lenient<CheckStatus>,
    #[serde(default)]
    pub(crate) error: Lenient<SectionError>,
}

/// `connection.results` (camelCase even in the snake_case report).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub(crate) struct ConnectionResults {
    #[serde(default, rename = "isConnected", alias = "is_connected")]
    pub(crate) is_connected: Lenient<bool>,
    #[serde(default)]
    pub(crate) connected: Lenient<bool>,
    #[serde(
        default,
        rename = "hasActivePlatformPlan",
        alias = "has_active_platform_plan"
    )]
    pub(crate) has_active_platform_plan: Lenient<bool>,
    #[serde(default, rename = "hasShippingMethods", alias = "has_shipping_methods")]
    pub(crate) has_shipping_methods: Lenient<bool>,
    #[serde(default, rename = "storeScopes", alias = "store_scopes")]
    pub(crate) store_scopes: Lenient<StoreScopes>,
}

/// `connection.results.storeScopes`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub(crate) struct StoreScopes {
    #[serde(default, rename = "hasValidScopes", alias = "has_valid_scopes")]
    pub(crate) has_valid_scopes: Lenient<bool>,
    #[serde(default, rename = "missingScopes", alias = "missing_scopes")]
    pub(crate) missing_scopes: Lenient<Vec<String>>,
}

/// `scope_validation.results`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub(crate) struct ScopeResults {
    #[serde(default)]
    pub(crate) valid: Lenient<bool>,
    #[serde(default, alias = "missingScopes")]
    pub(crate) missing_scopes: Lenient<Vec<String>>,
}

/// `sync_status.results`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub(crate) struct SyncResults {
    #[serde(default)]
    pub(crate) status: Lenient<SyncState>,
    #[serde(default, alias = "totalProducts")]
    pub(crate) total_products: Lenient<u64>,
    #[serde(default, alias = "totalProductsSynced")]
    pub(crate) total_products_synced: Lenient<u64>,
    #[serde(default, alias = "dateLastSynced")]
    pub(crate) date_last_synced: Lenient<DateTime<Utc>>,
}

/// `invalid_products.results`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub(crate) struct InvalidResults {
    #[serde(default)]
    pub(crate) count: Lenient<u64>,
    /// The documented example has one item under `invalid_product`; a list under
    /// `invalid_products` is accepted too (only its length is used).
    #[serde(default, alias = "invalidProducts")]
    pub(crate) invalid_products: Lenient<Vec<Ignored>>,
}

/// `payout_account.results`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub(crate) struct PayoutResults {
    #[serde(default, alias = "isActive")]
    pub(crate) is_active: Lenient<bool>,
    #[serde(default)]
    pub(crate) errors: Lenient<Vec<PayoutError>>,
}

/// `payout_account.results.errors[]`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub(crate) struct PayoutError {
    #[serde(default, alias = "errorMessage")]
    pub(crate) error_message: Lenient<String>,
    #[serde(default)]
    pub(crate) resolved: Lenient<bool>,
}

object_from_json!(
    SectionError,
    Override,
    ConnectionResults,
    StoreScopes,
    ScopeResults,
    SyncResults,
    InvalidResults,
    PayoutResults,
    PayoutError,
);

/// `migration.results`: documented as a plain string; an object with a `status` (or `state`)
/// string is accepted too.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MigrationResults(pub(crate) Lenient<MigrationState>);

impl FromJson for MigrationResults {
    fn from_str(v: &str) -> Option<Self> {
        Some(MigrationResults(Lenient::Present(MigrationState::parse(v))))
    }
    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Option<Self>, A::Error> {
        let mut state = Lenient::Absent;
        while let Some(key) = map.next_key::<Key<'_>>()? {
            match key.canonical() {
                "status" | "state" | "migration_status" if state.is_absent() => {
                    state = map.next_value::<Lenient<MigrationState>>()?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some(MigrationResults(state)))
    }
}

// ---------------------------------------------------------------------------------------------
// The merchant (top level)
// ---------------------------------------------------------------------------------------------

/// One `ConnectionHealth` object: one merchant.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Merchant {
    pub(crate) merchant_id: Lenient<Id>,
    pub(crate) merchant_name: Lenient<String>,
    pub(crate) merchant_email: Lenient<String>,
    /// Kept raw: it is `provider_status` verbatim; parsed with [`MerchantStatus::parse`].
    pub(crate) merchant_status: Lenient<String>,
    pub(crate) platform: Lenient<String>,
    pub(crate) store_url: Lenient<String>,
    pub(crate) connection: Lenient<Section<ConnectionResults>>,
    pub(crate) scope_validation: Lenient<Section<ScopeResults>>,
    pub(crate) sync_status: Lenient<Section<SyncResults>>,
    pub(crate) invalid_products: Lenient<Section<InvalidResults>>,
    pub(crate) offers_published: Lenient<Section<Ignored>>,
    pub(crate) payout_account: Lenient<Section<PayoutResults>>,
    pub(crate) migration: Lenient<Section<MigrationResults>>,
    pub(crate) commission_rate: Lenient<Section<Ignored>>,
    /// Other sections (keys normalized to snake_case), in document order.
    pub(crate) extra: Vec<(String, Section<Ignored>)>,
}

/// A top-level value that is an object with a `status` is a section; anything else is not.
struct ExtraSection(Option<Section<Ignored>>);

impl<'de> Deserialize<'de> for ExtraSection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Lenient::<Section<Ignored>>::deserialize(d)? {
            Lenient::Present(s) if !s.status.is_absent() => Ok(ExtraSection(Some(s))),
            _ => Ok(ExtraSection(None)),
        }
    }
}

impl FromJson for Merchant {
    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Option<Self>, A::Error> {
        let mut m = Merchant::default();
        while let Some(key) = map.next_key::<Key<'_>>()? {
            // A key given twice: the last one wins (never an error).
            match key.canonical() {
                "merchant_id" => m.merchant_id = map.next_value()?,
                "merchant_name" => m.merchant_name = map.next_value()?,
                "merchant_email" => m.merchant_email = map.next_value()?,
                "merchant_status" => m.merchant_status = map.next_value()?,
                "platform" => m.platform = map.next_value()?,
                "store_url" => m.store_url = map.next_value()?,
                "connection" => m.connection = map.next_value()?,
                "scope_validation" => m.scope_validation = map.next_value()?,
                "sync_status" => m.sync_status = map.next_value()?,
                "invalid_products" => m.invalid_products = map.next_value()?,
                "offers_published" => m.offers_published = map.next_value()?,
                "payout_account" => m.payout_account = map.next_value()?,
                "migration" => m.migration = map.next_value()?,
                "commission_rate" => m.commission_rate = map.next_value()?,
                name => {
                    if let ExtraSection(Some(section)) = map.next_value::<ExtraSection>()? {
                        // A section under an empty key is still reported, under a name.
                        let name = match name.trim() {
                            "" => "unnamed".to_owned(),
                            _ => name.to_owned(),
                        };
                        m.extra.retain(|(n, _)| *n != name);
                        m.extra.push((name, section));
                    }
                }
            }
        }
        Ok(Some(m))
    }
}

/// An object key, normalized to snake_case (`merchantId` → `merchant_id`) without allocating
/// when it already is.
pub(crate) enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    pub(crate) fn canonical(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }
}

/// `merchantId` → `merchant_id`, `StoreScopes` → `store_scopes`, `merchant_id` unchanged.
pub(crate) fn snake_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for (i, ch) in key.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 && !out.ends_with('_') {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                if v.bytes().any(|b| b.is_ascii_uppercase()) {
                    Ok(Key::Owned(snake_case(v)))
                } else {
                    Ok(Key::Borrowed(v))
                }
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(snake_case(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding whole documents
// ---------------------------------------------------------------------------------------------

/// One element of the report array.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Item {
    /// Decoded (every field may still be absent or invalid).
    Merchant(Box<Merchant>),
    /// Not decodable as a merchant; `merchant_id` when one could still be read.
    Malformed {
        merchant_id: Option<String>,
        reason: String,
    },
}

/// Why a whole document could not be decoded.
#[derive(Debug)]
pub(crate) struct DocumentError {
    pub(crate) message: String,
}

/// What a report body must be.
const REPORT_SHAPE: &str = "a JSON array of merchant reports";

/// Decode a report body held whole: a JSON array of merchant objects, each entry handed to
/// `each` as soon as it is read (see [`read_report`]).
pub(crate) fn decode_report(body: &[u8], each: impl FnMut(Item)) -> Result<(), DocumentError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    entries(&mut de, each).map_err(|e| DocumentError {
        message: describe_document_error(&e, REPORT_SHAPE),
    })
}

/// Decode a report body as it is read from `reader`, each entry handed to `each` as soon as
/// its closing bracket is read: the body is never held whole (only the entry being read).
/// The whole document is still checked: a syntax error, a truncation or a body that is not
/// an array is a [`DocumentError`] (the entries already handed over are the caller's to drop).
pub(crate) fn read_report(
    reader: impl std::io::Read,
    each: impl FnMut(Item),
) -> Result<(), DocumentError> {
    let mut de = serde_json::Deserializer::from_reader(reader);
    entries(&mut de, each).map_err(|e| DocumentError {
        message: describe_document_error(&e, REPORT_SHAPE),
    })
}

/// The array's entries, each decoded alone ([`decode_item`]: one bad entry is that entry's
/// problem), then nothing but whitespace.
fn entries<'de, R: serde_json::de::Read<'de>>(
    de: &mut serde_json::Deserializer<R>,
    each: impl FnMut(Item),
) -> serde_json::Result<()> {
    struct Entries<F>(F);
    impl<'de, F: FnMut(Item)> Visitor<'de> for Entries<F> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(REPORT_SHAPE)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
            while let Some(raw) = seq.next_element::<Box<RawValue>>()? {
                (self.0)(decode_item(raw.get()));
            }
            Ok(())
        }
    }
    Deserializer::deserialize_seq(&mut *de, Entries(each))?;
    de.end()
}

/// Decode one merchant object (the per-merchant endpoint's body).
pub(crate) fn decode_merchant(body: &[u8]) -> Result<Item, DocumentError> {
    let raw: &RawValue = serde_json::from_slice(body).map_err(|e| DocumentError {
        message: describe_document_error(&e, "a merchant report object"),
    })?;
    let text = raw.get();
    // Tolerated: the one object wrapped in an array.
    if text.starts_with('[') {
        if let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(text) {
            if let [one] = items.as_slice() {
                return Ok(decode_item(one.get()));
            }
        }
    }
    Ok(decode_item(text))
}

pub(crate) fn decode_item(raw: &str) -> Item {
    match serde_json::from_str::<Lenient<Merchant>>(raw) {
        Ok(Lenient::Present(m)) => Item::Merchant(Box::new(m)),
        Ok(Lenient::Absent) => Item::Malformed {
            merchant_id: None,
            reason: "entry is null".to_owned(),
        },
        Ok(Lenient::Invalid(kind)) => Item::Malformed {
            merchant_id: None,
            reason: format!("entry is not an object (it is a JSON {kind})"),
        },
        Err(e) => Item::Malformed {
            merchant_id: salvage_merchant_id(raw),
            reason: format!(
                "entry does not match the documented shape: {}",
                scrub_values(&e.to_string())
            ),
        },
    }
}

/// Read just the merchant id out of an entry that failed to decode.
fn salvage_merchant_id(raw: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(raw).ok()?;
    let obj = v.as_object()?;
    let id = obj.get("merchant_id").or_else(|| obj.get("merchantId"))?;
    let id: Lenient<Id> = serde::Deserialize::deserialize(id).ok()?;
    id.get().map(|i| i.0.clone())
}

fn describe_document_error(e: &serde_json::Error, expected: &str) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Syntax => "body is not valid JSON",
        serde_json::error::Category::Eof => "body ended early (truncated JSON)",
        serde_json::error::Category::Data => "body is not the documented shape",
        serde_json::error::Category::Io => "body could not be read",
    };
    format!(
        "{what} (expected {expected}): {} at line {}, column {}",
        scrub_values(&e.to_string()),
        e.line(),
        e.column()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merchant(json: &str) -> Merchant {
        match decode_item(json) {
            Item::Merchant(m) => *m,
            other => panic!("not a merchant: {other:?}"),
        }
    }

    #[test]
    fn snake_case_keys() {
        assert_eq!(snake_case("merchantId"), "merchant_id");
        assert_eq!(snake_case("merchant_id"), "merchant_id");
        assert_eq!(snake_case("MerchantId"), "merchant_id");
        assert_eq!(snake_case("totalProductsSynced"), "total_products_synced");
        assert_eq!(snake_case("channelConnection"), "channel_connection");
    }

    #[test]
    fn ids_numbers_and_strings() {
        assert_eq!(
            merchant(r#"{"merchant_id": 5}"#).merchant_id,
            Lenient::Present(Id("5".into()))
        );
        assert_eq!(
            merchant(r#"{"merchantId": "7"}"#).merchant_id,
            Lenient::Present(Id("7".into()))
        );
        assert_eq!(
            merchant(r#"{"merchant_id": 9.0}"#).merchant_id,
            Lenient::Present(Id("9".into()))
        );
        assert_eq!(
            merchant(r#"{"merchant_id": null}"#).merchant_id,
            Lenient::Absent
        );
        assert_eq!(
            merchant(r#"{"merchant_id": {}}"#).merchant_id,
            Lenient::Invalid("object")
        );
        assert_eq!(
            merchant(r#"{"merchant_id": " "}"#).merchant_id,
            Lenient::Invalid("string")
        );
    }

    #[test]
    fn numbers_as_strings_and_bad_types() {
        let m = merchant(
            r#"{"merchant_id": 1, "sync_status": {"status": "complete", "results":
                {"status": "completed", "total_products": "12", "totalProductsSynced": 11.0,
                 "date_last_synced": "2023-11-07T05:31:56"}}}"#,
        );
        let s = m.sync_status.get().unwrap();
        assert_eq!(s.status, Lenient::Present(CheckStatus::Complete));
        let r = s.results.get().unwrap();
        assert_eq!(r.status, Lenient::Present(SyncState::Completed));
        assert_eq!(r.total_products, Lenient::Present(12));
        assert_eq!(r.total_products_synced, Lenient::Present(11));
        assert_eq!(
            r.date_last_synced.get().unwrap().to_rfc3339(),
            "2023-11-07T05:31:56+00:00"
        );
        let m = merchant(r#"{"merchant_id": 1, "sync_status": {"status": 3, "results": "x"}}"#);
        let s = m.sync_status.get().unwrap();
        assert_eq!(s.status, Lenient::Invalid("number"));
        assert_eq!(s.results, Lenient::Invalid("string"));
    }

    #[test]
    fn enums_ignore_case_and_keep_unknowns() {
        assert_eq!(
            CheckStatus::parse("needs_attention"),
            CheckStatus::NeedsAttention
        );
        assert_eq!(CheckStatus::parse(" Complete "), CheckStatus::Complete);
        assert_eq!(
            CheckStatus::parse("WOBBLY"),
            CheckStatus::Other("WOBBLY".into())
        );
        assert_eq!(MerchantStatus::KNOWN.len(), 10);
        assert_eq!(SyncState::KNOWN.len(), 5);
    }

    #[test]
    fn migration_results_string_or_object() {
        let m = merchant(
            r#"{"merchant_id": 1, "migration": {"status": "COMPLETE", "results": "migrated"}}"#,
        );
        let r = m.migration.get().unwrap().results.get().unwrap();
        assert_eq!(r.0, Lenient::Present(MigrationState::Migrated));
        let m = merchant(
            r#"{"merchant_id": 1, "migration": {"status": "COMPLETE", "results": {"status": "MIGRATION_REQUIRED", "x": [1]}}}"#,
        );
        let r = m.migration.get().unwrap().results.get().unwrap();
        assert_eq!(r.0, Lenient::Present(MigrationState::MigrationRequired));
    }

    #[test]
    fn extra_sections_are_collected_by_snake_case_name() {
        let m = merchant(
            r#"{"merchant_id": 1, "channelConnection": {"status": "COMPLETE", "total_connected": 2},
                "terms_of_service": {"status": "needs_attention", "results": []},
                "distribution_type": "PUBLIC", "not_a_section": {"foo": 1}, "listy": [1, 2]}"#,
        );
        let names: Vec<&str> = m.extra.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["channel_connection", "terms_of_service"]);
        assert_eq!(
            m.extra[1].1.status,
            Lenient::Present(CheckStatus::NeedsAttention)
        );
    }

    #[test]
    fn a_section_under_an_empty_key_gets_a_name() {
        let m = merchant(
            r#"{"merchant_id": 1, "": {"status": "INCOMPLETE"}, " ": {"status": "ERROR"}}"#,
        );
        let names: Vec<&str> = m.extra.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["unnamed"],
            "the later one wins, as for any repeated key"
        );
        assert_eq!(m.extra[0].1.status, Lenient::Present(CheckStatus::Error));
    }

    #[test]
    fn vec_items_that_do_not_fit_are_dropped() {
        let m = merchant(
            r#"{"merchant_id": 1, "scope_validation": {"results": {"missing_scopes": ["a", null, 3, {"x": 1}]}}}"#,
        );
        let r = m.scope_validation.get().unwrap().results.get().unwrap();
        assert_eq!(
            r.missing_scopes,
            Lenient::Present(vec!["a".to_owned(), "3".to_owned()])
        );
    }

    #[test]
    fn one_bad_entry_does_not_fail_the_report() {
        let body = br#"[{"merchant_id": 1}, 5, null,
            {"merchant_id": 2, "connection": {"status": "COMPLETE", "status": "ERROR"}},
            {"merchant_id": 3, "merchant_email": "alice@example.com", "connection": {"results": {"isConnected": true, "is_connected": true}}},
            {"connection": {"results": {"isConnected": true, "isConnected": false}}}]"#;
        let mut items: Vec<Item> = Vec::new();
        decode_report(body, |i| items.push(i)).unwrap();
        assert_eq!(items.len(), 6);
        assert!(matches!(&items[0], Item::Merchant(_)));
        assert!(matches!(
            &items[1],
            Item::Malformed {
                merchant_id: None,
                ..
            }
        ));
        assert!(matches!(
            &items[2],
            Item::Malformed {
                merchant_id: None,
                ..
            }
        ));
        match &items[3] {
            Item::Malformed {
                merchant_id,
                reason,
            } => {
                assert_eq!(merchant_id.as_deref(), Some("2"));
                assert!(reason.contains("duplicate field"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        match &items[4] {
            Item::Malformed {
                merchant_id,
                reason,
            } => {
                assert_eq!(merchant_id.as_deref(), Some("3"));
                assert!(!reason.contains("alice"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            &items[5],
            Item::Malformed {
                merchant_id: None,
                ..
            }
        ));
    }

    #[test]
    fn whole_document_errors() {
        let e = decode_report(br#"{"merchant_id": 1}"#, drop).expect_err("an error");
        assert!(
            e.message.contains("not the documented shape"),
            "{}",
            e.message
        );
        let e = decode_report(br#"[{"merchant_id": 1}"#, drop).expect_err("an error");
        assert!(e.message.contains("truncated"), "{}", e.message);
        let e = decode_report(b"<html>", drop).expect_err("an error");
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
        let e = decode_report(b"[{\"merchant_id\": 1}] x", drop).expect_err("an error");
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
        let mut n = 0;
        decode_report(b" [ ] ", |_| n += 1).unwrap();
        assert_eq!(n, 0);
    }
}
