//! Serde types mirroring the Channel3 Partner API's JSON.
//!
//! List connections follows the published OpenAPI schema (`PartnerConnectionsResponse`,
//! `PartnerConnection`, `ConnectionSync`, `ConnectionAccount`, the four enums). List merchants
//! is not documented beyond prose, so [`MerchantsEnvelope`] accepts every plausible envelope.
//!
//! Decoding is tolerant everywhere: unknown fields are ignored, `null` and missing fields
//! become `None`, every enum keeps values it does not know in an `Other(String)` variant, and
//! one list item that cannot be decoded is set aside (see
//! [`PartnerConnectionsResponse::skipped`]) instead of failing the whole response.

use connhealth_core::lenient::LenientList;
use connhealth_core::lenient_enum;
use connhealth_core::Secret;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

lenient_enum! {
    /// `PlatformSlug`: platforms Channel3 can ingest from or distribute to.
    pub enum PlatformSlug {
        /// `channel3`
        Channel3 = "channel3",
        /// `google`
        Google = "google",
        /// `microsoft`
        Microsoft = "microsoft",
        /// `openai`
        Openai = "openai",
        /// `paypal`
        Paypal = "paypal",
        /// `perplexity`
        Perplexity = "perplexity",
        /// `stripe`
        Stripe = "stripe",
        /// `ucp`
        Ucp = "ucp",
        /// `shopify`
        Shopify = "shopify",
        /// `woocommerce`
        Woocommerce = "woocommerce",
        /// `bigcommerce`
        Bigcommerce = "bigcommerce",
        /// `magento`
        Magento = "magento",
        /// `salesforce_commerce`
        SalesforceCommerce = "salesforce_commerce",
        /// `akeneo`
        Akeneo = "akeneo",
        /// `web_crawl`
        WebCrawl = "web_crawl",
    }
}

lenient_enum! {
    /// `PlatformCategory`: catalog source vs. distribution destination.
    pub enum PlatformCategory {
        /// `distribution`: a destination Channel3 delivers the catalog to.
        Distribution = "distribution",
        /// `ingestion`: a source Channel3 reads the catalog from.
        Ingestion = "ingestion",
    }
}

lenient_enum! {
    /// `ConnectionStatus`: connection health for a merchant on a platform.
    pub enum ConnectionStatus {
        /// `not_connected`: the merchant has not connected this platform.
        NotConnected = "not_connected",
        /// `action_required`: a follow-up step is needed.
        ActionRequired = "action_required",
        /// `active`
        Active = "active",
    }
}

lenient_enum! {
    /// `SyncState`: nothing delivered yet, delivered but unconfirmed, or confirmed live.
    pub enum SyncState {
        /// `pending`: nothing delivered yet.
        Pending = "pending",
        /// `syncing`: delivered but unconfirmed.
        Syncing = "syncing",
        /// `live`: confirmed live.
        Live = "live",
    }
}

/// `PartnerConnectionsResponse`: a merchant's state across every available platform.
///
/// `connections` missing or `null` decodes as an empty list.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct PartnerConnectionsResponse {
    /// One entry per platform.
    pub connections: Vec<PartnerConnection>,
    /// Not part of the wire format: entries of `connections` that could not be decoded (not
    /// an object, or a field of the wrong JSON type). They are left out of `connections`.
    #[serde(skip)]
    pub skipped: Vec<SkippedItem>,
}

/// A list entry that could not be decoded and was left out (core's shared record).
pub use connhealth_core::lenient::Skipped as SkippedItem;

impl<'de> Deserialize<'de> for PartnerConnectionsResponse {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(default)]
            connections: Option<Vec<Value>>,
        }
        let raw = Raw::deserialize(d)?;
        let list =
            LenientList::<PartnerConnection>::from_values(raw.connections.unwrap_or_default());
        Ok(PartnerConnectionsResponse {
            connections: list.items,
            skipped: list.skipped,
        })
    }
}

impl PartnerConnectionsResponse {
    /// Decodes a List connections body. Tries a direct decode first (every entry well-formed,
    /// the usual case) and falls back to the entry-by-entry decode of [`Deserialize`] only when
    /// that fails, so the common case does not pay for an intermediate `serde_json::Value`.
    pub fn from_slice(body: &[u8]) -> serde_json::Result<Self> {
        #[derive(Deserialize)]
        struct Direct {
            #[serde(default)]
            connections: Option<Vec<PartnerConnection>>,
        }
        match serde_json::from_slice::<Direct>(body) {
            Ok(d) => Ok(PartnerConnectionsResponse {
                connections: d.connections.unwrap_or_default(),
                skipped: Vec::new(),
            }),
            Err(_) => serde_json::from_slice(body),
        }
    }
}

/// `PartnerConnection`: a merchant's state on one platform.
///
/// The schema requires `platform`, `category`, `status` and `display_name`; they are `Option`
/// here so that an entry missing one still decodes and the mapping decides what to do.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PartnerConnection {
    /// The platform.
    #[serde(default)]
    pub platform: Option<PlatformSlug>,
    /// Source (`ingestion`) or destination (`distribution`).
    #[serde(default)]
    pub category: Option<PlatformCategory>,
    /// Connection health.
    #[serde(default)]
    pub status: Option<ConnectionStatus>,
    /// Store/account name or domain when connected, otherwise the platform name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Stable identifier of the connection; absent when not connected.
    #[serde(default)]
    pub id: Option<String>,
    /// When the merchant connected the platform (date-time string).
    #[serde(default)]
    pub connected_at: Option<String>,
    /// Platform-side accounts (multi-account platforms only).
    #[serde(default)]
    pub accounts: Option<Vec<ConnectionAccount>>,
    /// Delivery status (connected distribution platforms only).
    #[serde(default)]
    pub sync: Option<ConnectionSync>,
}

/// `ConnectionAccount`: a platform-side account/store attached to a connection.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConnectionAccount {
    /// The account id (required by the schema; an account without one is dropped by the mapping).
    #[serde(default)]
    pub id: Option<String>,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Store URL.
    #[serde(default)]
    pub store_url: Option<String>,
}

/// `ConnectionSync`: sync status of a distribution connection.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConnectionSync {
    /// Lifecycle state (required by the schema).
    #[serde(default)]
    pub state: Option<SyncState>,
    /// Most recent sync activity (date-time string).
    #[serde(default)]
    pub last_synced_at: Option<String>,
    /// Products Channel3 is distributing to this platform.
    #[serde(default)]
    pub total_products: Option<i64>,
    /// Products fully synced on this platform.
    #[serde(default)]
    pub synced_products: Option<i64>,
}

/// The List merchants answer, whatever envelope it came in (undocumented; see the crate docs).
///
/// Accepted: a bare array of merchants, or an object whose items are under `items`,
/// `merchants`, `data` or `results`; `total`, `pages`, `page`, `size` (numbers or numeric
/// strings) and `has_more` are all optional.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct MerchantsEnvelope {
    /// The merchants that decoded (an entry without `customer_id` is counted in `received`
    /// but left out here).
    pub items: Vec<MerchantItem>,
    /// How many entries the page held, decodable or not: pagination progress is counted in
    /// items actually received.
    pub received: usize,
    /// Total number of merchants, when sent.
    pub total: Option<u64>,
    /// Number of pages, when sent.
    pub pages: Option<u64>,
    /// This page's number, when sent.
    pub page: Option<u64>,
    /// The page size the server applied, when sent.
    pub size: Option<u64>,
    /// Whether more pages follow, when sent.
    pub has_more: Option<bool>,
    /// Entries that could not be used.
    pub skipped: Vec<SkippedItem>,
}

/// One entry of List merchants.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MerchantItem {
    /// The Channel3 customer id (a number is accepted and kept as its decimal text).
    pub customer_id: String,
    /// Display name (`name`, else `display_name`).
    pub name: Option<String>,
    /// Logo URL (`logo_url`, else `logo`).
    pub logo: Option<String>,
}

const ITEM_KEYS: [&str; 4] = ["items", "merchants", "data", "results"];

impl<'de> Deserialize<'de> for MerchantsEnvelope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut out = MerchantsEnvelope::default();
        let items = match Value::deserialize(d)? {
            Value::Array(items) => items,
            Value::Object(mut map) => {
                out.total = map.get("total").and_then(as_u64);
                out.pages = map.get("pages").and_then(as_u64);
                out.page = map.get("page").and_then(as_u64);
                out.size = map.get("size").and_then(as_u64);
                out.has_more = map.get("has_more").and_then(Value::as_bool);
                let key = ITEM_KEYS
                    .iter()
                    .find(|k| matches!(map.get(**k), Some(Value::Array(_))));
                match key {
                    Some(k) => match map.remove(*k) {
                        Some(Value::Array(items)) => items,
                        _ => Vec::new(),
                    },
                    // `{"items": null}` or an envelope with no list: an empty page.
                    None if ITEM_KEYS.iter().any(|k| map.contains_key(*k))
                        || out.total.is_some()
                        || out.pages.is_some() =>
                    {
                        Vec::new()
                    }
                    None => {
                        return Err(de::Error::custom(
                            "expected a list of merchants, or an object with `items`, `merchants`, `data` or `results`",
                        ))
                    }
                }
            }
            Value::Null => Vec::new(),
            _ => {
                return Err(de::Error::custom(
                    "expected a list of merchants or an object holding one",
                ))
            }
        };
        out.received = items.len();
        for (index, item) in items.into_iter().enumerate() {
            match merchant_item(&item) {
                Ok(m) => out.items.push(m),
                Err(reason) => out.skipped.push(SkippedItem::new(index, &item, &reason)),
            }
        }
        Ok(out)
    }
}

fn merchant_item(v: &Value) -> Result<MerchantItem, String> {
    let Value::Object(map) = v else {
        return Err("entry is not an object".to_owned());
    };
    let customer_id = match map.get("customer_id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(_)) => return Err("customer_id is empty".to_owned()),
        Some(Value::Null) | None => return Err("customer_id is missing".to_owned()),
        Some(_) => return Err("customer_id is not a string".to_owned()),
    };
    let text = |keys: &[&str]| {
        keys.iter().find_map(|k| match map.get(*k) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        })
    };
    Ok(MerchantItem {
        customer_id,
        name: text(&["name", "display_name"]),
        logo: text(&["logo_url", "logo"]),
    })
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| *f >= 0.0 && f.is_finite())
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Create merchant request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct CreateMerchantRequest<'a> {
    /// The merchant's storefront domain.
    pub domain: &'a str,
    /// Display name; Channel3 infers one when omitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
}

/// Create merchant answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct CreateMerchantResponse {
    /// The Channel3 customer id.
    pub customer_id: String,
    /// `false` when the domain already belonged to a merchant (idempotent hit). Documented
    /// as always present; a missing value reads as `false`.
    #[serde(default)]
    pub created: bool,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
}

/// Create connect session request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct CreateSessionRequest<'a> {
    /// Where the hosted flow sends the merchant back; must prefix-match an allowlisted URI.
    pub redirect_uri: &'a str,
    /// A platform slug to deep-link to; omitted to show a picker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<&'a str>,
}

/// `ConnectSessionResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct ConnectSessionResponse {
    /// The session token (a secret: never printed).
    #[serde(deserialize_with = "secret")]
    pub token: Secret,
    /// The single-use hosted page to send the merchant to.
    pub url: String,
    /// When the session expires (format undocumented; ISO 8601 expected).
    #[serde(default)]
    pub expires_at: Option<String>,
}

fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    String::deserialize(d).map(Secret::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_keep_unknown_values() {
        let s: ConnectionStatus = serde_json::from_str("\"paused\"").unwrap();
        assert_eq!(s, ConnectionStatus::Other("paused".into()));
        assert_eq!(s.as_str(), "paused");
        let s: SyncState = serde_json::from_str("7").unwrap();
        assert_eq!(s, SyncState::Other("7".into()));
        for p in PlatformSlug::KNOWN {
            let back: PlatformSlug =
                serde_json::from_value(serde_json::to_value(p).unwrap()).unwrap();
            assert_eq!(&back, p);
        }
        assert_eq!(PlatformSlug::KNOWN.len(), 15);
    }

    #[test]
    fn connections_null_or_missing_is_empty_and_bad_items_are_skipped() {
        for body in [r#"{}"#, r#"{"connections":null}"#, r#"{"connections":[]}"#] {
            let r: PartnerConnectionsResponse = serde_json::from_str(body).unwrap();
            assert!(r.connections.is_empty() && r.skipped.is_empty(), "{body}");
        }
        let r: PartnerConnectionsResponse = serde_json::from_str(
            r#"{"connections":[42, {"platform":"google","display_name":{"x":"secret@example.com"}}, {"platform":"shopify","extra":1}]}"#,
        )
        .unwrap();
        assert_eq!(r.connections.len(), 1);
        assert_eq!(r.skipped.len(), 2);
        assert_eq!(r.skipped[0].index, 0);
        assert_eq!(r.skipped[1].index, 1);
        assert!(
            !r.skipped[1].reason.contains("secret"),
            "{}",
            r.skipped[1].reason
        );
    }

    #[test]
    fn fast_and_lenient_decodes_agree() {
        let good = br#"{"connections":[{"platform":"google","category":"distribution","status":"active","display_name":"G","sync":{"state":"live","total_products":3}}],"extra":1}"#;
        let fast = PartnerConnectionsResponse::from_slice(good).unwrap();
        let slow: PartnerConnectionsResponse = serde_json::from_slice(good).unwrap();
        assert_eq!(fast, slow);
        let bad = br#"{"connections":[{"platform":"google","id":5},{"platform":"shopify"}]}"#;
        let r = PartnerConnectionsResponse::from_slice(bad).unwrap();
        assert_eq!((r.connections.len(), r.skipped.len()), (1, 1));
        assert!(PartnerConnectionsResponse::from_slice(b"{\"connections\": [").is_err());
    }

    #[test]
    fn merchant_envelopes() {
        let e: MerchantsEnvelope =
            serde_json::from_str(r#"[{"customer_id":"a","name":"A","logo":"l"},{"name":"no id"}]"#)
                .unwrap();
        assert_eq!(e.received, 2);
        assert_eq!(e.items.len(), 1);
        assert_eq!(e.items[0].logo.as_deref(), Some("l"));
        assert_eq!(e.total, None);
        let e: MerchantsEnvelope = serde_json::from_str(
            r#"{"data":[{"customer_id":12,"logo_url":"u","logo":"l"}],"total":"40","pages":4,"page":1,"size":10,"has_more":true}"#,
        )
        .unwrap();
        assert_eq!(e.items[0].customer_id, "12");
        assert_eq!(e.items[0].logo.as_deref(), Some("u"));
        assert_eq!(
            (e.total, e.pages, e.page, e.size, e.has_more),
            (Some(40), Some(4), Some(1), Some(10), Some(true))
        );
        let e: MerchantsEnvelope = serde_json::from_str(r#"{"items":null,"total":0}"#).unwrap();
        assert_eq!(e.received, 0);
        assert!(serde_json::from_str::<MerchantsEnvelope>(r#"{"foo":1}"#).is_err());
        assert!(serde_json::from_str::<MerchantsEnvelope>(r#""x""#).is_err());
    }
}
