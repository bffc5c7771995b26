//! Serde types mirroring Subtotal's JSON (the current `/connections…` API generation).
//!
//! Decoding is deliberately lenient, because several shapes are unconfirmed
//! (the provider facts are summarized in ARCHITECTURE.md, "Provider facts"):
//! - every field is optional (`#[serde(default)]`), `null` is accepted everywhere, extra fields
//!   are ignored;
//! - ids may arrive as strings or numbers; anything else is treated as absent;
//! - enum values keep unknown strings ([`ConnectionStatus::Other`]);
//! - in a list, an item that is not an object is skipped (logged at debug) instead of failing
//!   the whole response, and a bare top-level array is accepted as well as the documented
//!   `{"connections": [...]}` / `{"retailers": [...]}` envelope.
//!
//! Types that can hold personal data (`email`, `mobile`) have a `Debug` that prints
//! `[redacted]` in their place.

use std::fmt;

use connhealth_core::lenient::{LenientList, Skipped};
use connhealth_core::lenient_enum;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

lenient_enum! {
    /// A connection's status (`ConnectionResponse.status`).
    ///
    /// The documented values are `active`, `initialized`, `unauthenticated` and `disconnected`
    /// (matched exactly, as the API's FastAPI enum sends them); anything else, including another
    /// spelling such as `ACTIVE`, is kept verbatim in [`ConnectionStatus::Other`], so the raw
    /// value always round-trips through [`ConnectionStatus::as_str`]. A non-string value is kept
    /// as its JSON text (an object or array as `{…}` / `[…]`); see core's `lenient_enum!`.
    pub enum ConnectionStatus {
        /// `active`: the customer linked their retailer account.
        Active = "active",
        /// `initialized`: the customer began linking but has not finished.
        Initialized = "initialized",
        /// `unauthenticated`: was active; the customer must sign in again.
        Unauthenticated = "unauthenticated",
        /// `disconnected`: the customer (or the integrator, via PATCH) disconnected it.
        Disconnected = "disconnected",
    }
}

/// `ConnectionResponse`: one customer ↔ retailer connection, as List/Get/Create/Update return it.
///
/// Every field is optional here even though the documentation marks them required, so that one
/// odd item never fails a whole list. `Debug` redacts `email` and `mobile`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ConnectionResponse {
    /// ULID-like connection id, e.g. `01J51S0JYV6N7K1030CV1ZKSCA`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub connection_id: Option<String>,
    /// The integrator's own customer key.
    #[serde(default, deserialize_with = "lenient_string")]
    pub customer_id: Option<String>,
    /// The retailer, an opaque string (documented examples are both slugs and ULIDs).
    #[serde(default, deserialize_with = "lenient_string")]
    pub retailer_id: Option<String>,
    /// The connection's status.
    #[serde(default)]
    pub status: Option<ConnectionStatus>,
    /// The customer's e-mail address (personal data).
    #[serde(default, deserialize_with = "lenient_string")]
    pub email: Option<String>,
    /// The customer's mobile number (personal data).
    #[serde(default, deserialize_with = "lenient_string")]
    pub mobile: Option<String>,
    /// `true` for simulated (test) connections. Whether this field is part of
    /// `ConnectionResponse` is unconfirmed; it is read when present.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub is_simulated: Option<bool>,
}

impl fmt::Debug for ConnectionResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionResponse")
            .field("connection_id", &self.connection_id)
            .field("customer_id", &self.customer_id)
            .field("retailer_id", &self.retailer_id)
            .field("status", &self.status)
            .field("email", &Redacted(&self.email))
            .field("mobile", &Redacted(&self.mobile))
            .field("is_simulated", &self.is_simulated)
            .finish()
    }
}

/// `GET /connections?customer_id=…`: `{"connections": [ConnectionResponse…]}`.
///
/// Also accepts a bare array. Items that are not JSON objects are skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ListConnectionsResponse {
    /// The customer's connections.
    pub connections: Vec<ConnectionResponse>,
    /// The items that could not be decoded (not objects, or a field of the wrong type).
    pub skipped: Vec<Skipped>,
}

impl<'de> Deserialize<'de> for ListConnectionsResponse {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let list =
            lenient_list(Value::deserialize(d)?, "connections").map_err(de::Error::custom)?;
        Ok(ListConnectionsResponse {
            connections: list.items,
            skipped: list.skipped,
        })
    }
}

impl ListConnectionsResponse {
    /// Decodes a `GET /connections` body. The usual shape (an object whose `connections` are
    /// all objects) is decoded straight into the items; anything else, or anything that shape's
    /// decode refuses, goes through the tolerant decode above (which first builds a whole
    /// `serde_json::Value`). Where the direct decode succeeds both give the same answer.
    pub(crate) fn from_slice(body: &[u8]) -> serde_json::Result<Self> {
        #[derive(Deserialize)]
        struct Direct {
            #[serde(default)]
            connections: Option<Vec<ConnectionResponse>>,
        }
        let is_object = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        if is_object {
            if let Ok(d) = serde_json::from_slice::<Direct>(body) {
                return Ok(ListConnectionsResponse {
                    connections: d.connections.unwrap_or_default(),
                    skipped: Vec::new(),
                });
            }
        }
        serde_json::from_slice(body)
    }
}

/// One item of `GET /retailers` (`ConfiguredRetailer`; its fields are unconfirmed).
///
/// The id is read from `retailer_id` or `id`, the name from `name` or `display_name`; use
/// [`Retailer::key`] and [`Retailer::label`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Retailer {
    /// The retailer id, when sent as `retailer_id`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub retailer_id: Option<String>,
    /// The retailer id, when sent as `id`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub id: Option<String>,
    /// The retailer's name (e.g. `Walmart`).
    #[serde(default, deserialize_with = "lenient_string")]
    pub name: Option<String>,
    /// The retailer's display name, when sent under that key.
    #[serde(default, deserialize_with = "lenient_string")]
    pub display_name: Option<String>,
    /// Whether the retailer is enabled for this client (documented on Update Retailer).
    #[serde(default, deserialize_with = "lenient_bool")]
    pub enabled: Option<bool>,
}

impl Retailer {
    /// The retailer id: `retailer_id`, else `id` (empty strings count as absent).
    pub fn key(&self) -> Option<&str> {
        non_empty(&self.retailer_id).or_else(|| non_empty(&self.id))
    }

    /// The retailer's name: `name`, else `display_name` (empty strings count as absent).
    pub fn label(&self) -> Option<&str> {
        non_empty(&self.name).or_else(|| non_empty(&self.display_name))
    }
}

/// `GET /retailers`: `{"retailers": [ConfiguredRetailer…]}` (also accepts a bare array).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct GetRetailersResponse {
    /// The configured retailers.
    pub retailers: Vec<Retailer>,
}

impl<'de> Deserialize<'de> for GetRetailersResponse {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let list = lenient_list(Value::deserialize(d)?, "retailers").map_err(de::Error::custom)?;
        Ok(GetRetailersResponse {
            retailers: list.items,
        })
    }
}

/// `POST /connections` body (`CreateConnection`). `Debug` redacts `email` and `mobile`.
#[derive(Clone, Default, PartialEq, Eq, Serialize)]
pub struct CreateConnection {
    /// Your customer key (required).
    pub customer_id: String,
    /// The retailer to connect (required).
    pub retailer_id: String,
    /// The customer's e-mail address; omitted from the body when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The customer's mobile number; omitted from the body when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mobile: Option<String>,
}

impl fmt::Debug for CreateConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateConnection")
            .field("customer_id", &self.customer_id)
            .field("retailer_id", &self.retailer_id)
            .field("email", &Redacted(&self.email))
            .field("mobile", &Redacted(&self.mobile))
            .finish()
    }
}

/// `PATCH /connections/{connection_id}` body (`UpdateConnection`).
///
/// `None` means **omit the field** (leave it unchanged): only fields that are `Some` are sent.
/// This type cannot send an explicit `null` (clearing a value is not documented).
/// The API currently accepts only [`ConnectionStatus::Disconnected`] as `status`; anything else
/// is sent as given and the server's validation error is returned.
/// `Debug` redacts `email` and `mobile`.
#[derive(Clone, Default, PartialEq, Eq, Serialize)]
pub struct UpdateConnection {
    /// New customer key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    /// New e-mail address (personal data).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// New mobile number (personal data).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mobile: Option<String>,
    /// New status; currently only `disconnected` is allowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<ConnectionStatus>,
}

impl UpdateConnection {
    /// The update that disconnects a connection: `{"status": "disconnected"}`.
    pub fn disconnect() -> Self {
        UpdateConnection {
            status: Some(ConnectionStatus::Disconnected),
            ..UpdateConnection::default()
        }
    }
}

impl fmt::Debug for UpdateConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpdateConnection")
            .field("customer_id", &self.customer_id)
            .field("email", &Redacted(&self.email))
            .field("mobile", &Redacted(&self.mobile))
            .field("status", &self.status)
            .finish()
    }
}

/// `POST /connections/{connection_id}/token` body.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CreateTokenRequest<'a> {
    pub(crate) scope: &'a str,
}

/// `POST /connections/{connection_id}/token` answer. The current shape is unconfirmed: the
/// legacy API documents `{"connection_token": "<JWT>"}`; `token` and `access_token` are
/// accepted too, and an `expires_in` (seconds) when there is one. No `Debug`: it holds a token.
#[derive(Default, Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default, deserialize_with = "lenient_string")]
    pub(crate) connection_token: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub(crate) token: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub(crate) access_token: Option<String>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub(crate) expires_in: Option<u64>,
}

impl TokenResponse {
    /// The token, from whichever key carried it.
    pub(crate) fn into_token(self) -> Option<String> {
        [self.connection_token, self.token, self.access_token]
            .into_iter()
            .flatten()
            .find(|t| !t.trim().is_empty())
    }
}

/// Prints `Some([redacted])` / `None` for a personal-data field.
struct Redacted<'a>(&'a Option<String>);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(_) => f.write_str("Some([redacted])"),
            None => f.write_str("None"),
        }
    }
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// A string, or a number rendered as a string; anything else (null, bool, object…) is `None`.
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

/// A bool, or the strings `"true"`/`"false"` (any case); anything else is `None`.
fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::Bool(b)) => Some(b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Some(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    })
}

/// A non-negative integer (or a numeric string); anything else is `None`.
fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::Number(n)) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f as u64)
        }),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    })
}

/// The items of a list response: `value[key]` when `value` is an object (a missing or `null`
/// key is an empty list), or `value` itself when it is an array. Items that fail to decode as
/// `T` are skipped and counted.
fn lenient_list<T: serde::de::DeserializeOwned>(
    value: Value,
    key: &str,
) -> Result<LenientList<T>, String> {
    let items = match value {
        Value::Array(items) => items,
        Value::Object(mut map) => match map.remove(key) {
            Some(Value::Array(items)) => items,
            None | Some(Value::Null) => Vec::new(),
            Some(_) => return Err(format!("`{key}` is not a list")),
        },
        _ => return Err(format!("expected an object with a `{key}` list")),
    };
    Ok(LenientList::from_values(items))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_and_tolerant_list_decodes_agree() {
        let bodies: &[&str] = &[
            r#"{"connections": [{"connection_id": "a", "customer_id": "c", "retailer_id": "walmart", "status": "active", "email": "x@y.z", "is_simulated": true}, {"connection_id": 7, "status": "INITIALIZED", "extra": {"k": [1, 2]}}]}"#,
            r#"{"connections": []}"#,
            r#"{"connections": null}"#,
            r#"{}"#,
            r#"{"connections": [{"connection_id": "a"}, 3, null, "x", {"connection_id": "b"}]}"#,
            r#"{"connections": [["a", "b"], {"connection_id": "c"}]}"#,
            r#"{"connections": [{"connection_id": "a", "connection_id": "b"}]}"#,
            r#"{"connections": [{"status": 5, "is_simulated": "TRUE", "mobile": 12.5}]}"#,
            r#"  [{"connection_id": "a"}, 1]"#,
            r#"[[{"connection_id": "a"}]]"#,
            r#"[null]"#,
            r#"{"connections": {"a": 1}}"#,
            r#"{"connections": [{"connection_id": "a"}], "connections": []}"#,
            r#"not json"#,
        ];
        for body in bodies {
            let tolerant = serde_json::from_slice::<ListConnectionsResponse>(body.as_bytes());
            let direct = ListConnectionsResponse::from_slice(body.as_bytes());
            match (tolerant, direct) {
                (Ok(t), Ok(d)) => assert_eq!(t, d, "{body}"),
                (Err(_), Err(_)) => {}
                (t, d) => panic!("{body}: tolerant {t:?}, direct {d:?}"),
            }
        }
    }

    #[test]
    fn connection_tolerates_odd_values() {
        let c: ConnectionResponse = serde_json::from_str(
            r#"{"connection_id": 42, "customer_id": null, "retailer_id": "walmart",
                "status": "active", "email": {"x": 1}, "is_simulated": "true", "new_field": [1]}"#,
        )
        .unwrap();
        assert_eq!(c.connection_id.as_deref(), Some("42"));
        assert_eq!(c.customer_id, None);
        assert_eq!(c.status, Some(ConnectionStatus::Active));
        assert_eq!(c.email, None);
        assert_eq!(c.is_simulated, Some(true));

        let c: ConnectionResponse = serde_json::from_str(r#"{"status": "ACTIVE"}"#).unwrap();
        assert_eq!(c.status, Some(ConnectionStatus::Other("ACTIVE".into())));
        let c: ConnectionResponse = serde_json::from_str(r#"{"status": 7}"#).unwrap();
        assert_eq!(c.status, Some(ConnectionStatus::Other("7".into())));
        let c: ConnectionResponse = serde_json::from_str(r#"{"status": "paused"}"#).unwrap();
        assert_eq!(c.status, Some(ConnectionStatus::Other("paused".into())));
        // An object is kept as `{…}`, never with its content (which could be personal data).
        let c: ConnectionResponse =
            serde_json::from_str(r#"{"status": {"email": "a@b.example"}}"#).unwrap();
        assert_eq!(c.status, Some(ConnectionStatus::Other("{…}".into())));
        let c: ConnectionResponse = serde_json::from_str(r#"{"status": null}"#).unwrap();
        assert_eq!(c.status, None);
        let c: ConnectionResponse = serde_json::from_str("{}").unwrap();
        assert_eq!(c, ConnectionResponse::default());
    }

    #[test]
    fn lists_skip_bad_items_and_accept_bare_arrays() {
        let l: ListConnectionsResponse = serde_json::from_str(
            r#"{"connections": [{"connection_id": "a"}, "junk", null, 3, {"connection_id": "b"}]}"#,
        )
        .unwrap();
        assert_eq!(l.connections.len(), 2);
        assert_eq!(l.skipped.len(), 3);
        let l: ListConnectionsResponse =
            serde_json::from_str(r#"[{"connection_id": "a"}]"#).unwrap();
        assert_eq!(l.connections.len(), 1);
        let l: ListConnectionsResponse = serde_json::from_str(r#"{"connections": null}"#).unwrap();
        assert!(l.connections.is_empty());
        let l: ListConnectionsResponse = serde_json::from_str(r#"{}"#).unwrap();
        assert!(l.connections.is_empty());
        assert!(serde_json::from_str::<ListConnectionsResponse>(r#"{"connections": 1}"#).is_err());
        assert!(serde_json::from_str::<ListConnectionsResponse>(r#""x""#).is_err());
    }

    #[test]
    fn retailer_keys_and_labels() {
        let r: GetRetailersResponse = serde_json::from_str(
            r#"{"retailers": [
                {"retailer_id": "r1", "name": "Walmart"},
                {"id": "r2", "display_name": "Target"},
                {"retailer_id": "", "id": "r3", "name": "", "display_name": "Best Buy"},
                {"name": "no id"}
            ]}"#,
        )
        .unwrap();
        let pairs: Vec<_> = r.retailers.iter().map(|r| (r.key(), r.label())).collect();
        assert_eq!(
            pairs,
            vec![
                (Some("r1"), Some("Walmart")),
                (Some("r2"), Some("Target")),
                (Some("r3"), Some("Best Buy")),
                (None, Some("no id")),
            ]
        );
    }

    #[test]
    fn update_body_only_has_set_fields_and_debug_hides_personal_data() {
        let u = UpdateConnection {
            email: Some("alice@example.com".into()),
            mobile: Some("+1234567890".into()),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&u).unwrap(),
            serde_json::json!({"email": "alice@example.com", "mobile": "+1234567890"})
        );
        let dbg = format!("{u:?}");
        assert!(
            !dbg.contains("alice") && !dbg.contains("1234567890"),
            "{dbg}"
        );
        assert!(dbg.contains("[redacted]"));
        assert_eq!(
            serde_json::to_value(UpdateConnection::disconnect()).unwrap(),
            serde_json::json!({"status": "disconnected"})
        );
        assert_eq!(
            serde_json::to_value(UpdateConnection::default()).unwrap(),
            serde_json::json!({})
        );

        let c = CreateConnection {
            customer_id: "c".into(),
            retailer_id: "walmart".into(),
            email: Some("bob@example.com".into()),
            mobile: None,
        };
        assert!(!format!("{c:?}").contains("bob"));
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            serde_json::json!({"customer_id": "c", "retailer_id": "walmart", "email": "bob@example.com"})
        );
        let r = ConnectionResponse {
            email: Some("carol@example.com".into()),
            mobile: Some("+15550001".into()),
            ..Default::default()
        };
        let dbg = format!("{r:?}");
        assert!(!dbg.contains("carol") && !dbg.contains("15550001"), "{dbg}");
    }

    #[test]
    fn token_response_keys() {
        let t: TokenResponse = serde_json::from_str(r#"{"connection_token": "a.b.c"}"#).unwrap();
        assert_eq!(t.into_token().as_deref(), Some("a.b.c"));
        let t: TokenResponse = serde_json::from_str(r#"{"token": "t", "expires_in": 60}"#).unwrap();
        assert_eq!(t.expires_in, Some(60));
        assert_eq!(t.into_token().as_deref(), Some("t"));
        let t: TokenResponse =
            serde_json::from_str(r#"{"connection_token": "", "access_token": "x"}"#).unwrap();
        assert_eq!(t.into_token().as_deref(), Some("x"));
        let t: TokenResponse = serde_json::from_str(r#"{"other": 1}"#).unwrap();
        assert_eq!(t.into_token(), None);
    }
}
