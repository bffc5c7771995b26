//! Webhooks in: the typed event a provider's push becomes, the typed reasons one is refused,
//! and the one HMAC-SHA256 check every adapter's `verify_webhook` uses.
//!
//! Contract: DESIGN.md, "Webhooks in". A push only *triggers*; the connection is confirmed by a
//! targeted pull ([`crate::Provider::refresh`]). Nothing here trusts a body before its
//! signature holds, and no error message ever contains the body or the secret (bodies hold
//! personal data).
//!
//! ```
//! use connhealth_core::webhook::{hmac_sha256, verify_hmac_sha256, WebhookError};
//! use connhealth_core::Secret;
//!
//! let secret = Secret::new("whsec_test");
//! let body = br#"{"event":"MERCHANT_CONNECTED","merchant_id":7}"#;
//! let good = hex::encode(hmac_sha256(&secret, &[body]));
//! assert!(verify_hmac_sha256(&secret, &[body], &format!("sha256={good}")).is_ok());
//! assert_eq!(
//!     verify_hmac_sha256(&secret, &[b"another body"], &good),
//!     Err(WebhookError::BadSignature)
//! );
//! ```

use std::fmt;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::model::Status;
use crate::secret::Secret;

/// The largest webhook body accepted: 1 MiB. Larger is [`WebhookError::TooLarge`] (HTTP 413).
pub const MAX_WEBHOOK_BODY_BYTES: usize = 1024 * 1024;

/// How far a signed timestamp may be from `now`, either way: 5 minutes.
pub const TIMESTAMP_TOLERANCE_SECS: i64 = 5 * 60;

/// At most this many candidate signatures are tried from one header (a header listing more is
/// cut there: it costs one HMAC comparison each).
pub const MAX_SIGNATURES: usize = 8;

/// The length of an HMAC-SHA256 tag in bytes.
const TAG_LEN: usize = 32;

/// Why a webhook was refused. Messages name headers and reasons, never the body, a header's
/// value or the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// A required header (signature or timestamp) is absent or not valid text.
    #[error("missing header {name}")]
    MissingHeader {
        /// The header's name, e.g. `X-Violet-Hmac`.
        name: &'static str,
    },
    /// No signature in the header matches the body under the secret.
    #[error("bad signature")]
    BadSignature,
    /// The signed timestamp is outside the tolerance window (or not a number).
    #[error("stale timestamp: {skew_secs} s from now (tolerance ±{tolerance_secs} s)")]
    StaleTimestamp {
        /// Signed time minus now, in seconds (negative: in the past). `i64::MIN` when the
        /// header is not a number.
        skew_secs: i64,
        /// The tolerance, in seconds.
        tolerance_secs: i64,
    },
    /// The (correctly signed) body is not JSON of the documented envelope.
    #[error("malformed webhook body: {reason}")]
    Malformed {
        /// What is wrong, in our words (never a quote of the body).
        reason: String,
    },
    /// The body is larger than [`MAX_WEBHOOK_BODY_BYTES`].
    #[error("webhook body larger than {MAX_WEBHOOK_BODY_BYTES} bytes")]
    TooLarge,
}

impl WebhookError {
    /// The HTTP status `POST /v1/webhooks/{name}` answers with (DESIGN.md): 413 for
    /// [`WebhookError::TooLarge`], 401 for a missing or wrong signature or a stale timestamp,
    /// 400 for a malformed body.
    pub fn http_status(&self) -> u16 {
        match self {
            WebhookError::TooLarge => 413,
            WebhookError::MissingHeader { .. }
            | WebhookError::BadSignature
            | WebhookError::StaleTimestamp { .. } => 401,
            WebhookError::Malformed { .. } => 400,
        }
    }

    /// A [`WebhookError::Malformed`] with this reason.
    pub fn malformed(reason: impl Into<String>) -> Self {
        WebhookError::Malformed {
            reason: reason.into(),
        }
    }
}

/// An event's type: the types connhealth knows (Violet's merchant, sync and payout-account
/// topics, Subtotal's event types), or any other verbatim. An unknown type is not an error.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
#[non_exhaustive]
pub enum WebhookEventType {
    /// Violet `MERCHANT_CONNECTED`: onboarding done.
    MerchantConnected,
    /// Violet `MERCHANT_DISCONNECTED`: the app was uninstalled.
    MerchantDisconnected,
    /// Violet `MERCHANT_ENABLED`: can process orders.
    MerchantEnabled,
    /// Violet `MERCHANT_DISABLED`: cannot process orders.
    MerchantDisabled,
    /// Violet `MERCHANT_NEEDS_ATTENTION`: a health check has missing or incomplete items.
    MerchantNeedsAttention,
    /// Violet `MERCHANT_COMPLETE`: every health requirement met.
    MerchantComplete,
    /// Violet `PRODUCT_SYNC_STARTED`.
    ProductSyncStarted,
    /// Violet `PRODUCT_SYNC_COMPLETED`.
    ProductSyncCompleted,
    /// Violet `PRODUCT_SYNC_FAILED`.
    ProductSyncFailed,
    /// Violet `COLLECTION_SYNC_STARTED`.
    CollectionSyncStarted,
    /// Violet `COLLECTION_SYNC_COMPLETED`.
    CollectionSyncCompleted,
    /// Violet `COLLECTION_SYNC_FAILED`.
    CollectionSyncFailed,
    /// Violet `MERCHANT_PAYOUT_ACCOUNT_CREATED`.
    PayoutAccountCreated,
    /// Violet `MERCHANT_PAYOUT_ACCOUNT_REQUIREMENTS_UPDATED`.
    PayoutAccountRequirementsUpdated,
    /// Violet `MERCHANT_PAYOUT_ACCOUNT_ACTIVATED`.
    PayoutAccountActivated,
    /// Violet `MERCHANT_PAYOUT_ACCOUNT_DEACTIVATED`.
    PayoutAccountDeactivated,
    /// Violet `MERCHANT_PAYOUT_ACCOUNT_DELETED`.
    PayoutAccountDeleted,
    /// Subtotal `connection.activated`.
    ConnectionActivated,
    /// Subtotal `connection.unauthenticated`.
    ConnectionUnauthenticated,
    /// Subtotal `connection.disconnected`.
    ConnectionDisconnected,
    /// Subtotal `connection.profile.created`.
    ConnectionProfileCreated,
    /// Subtotal `purchase.created`.
    PurchaseCreated,
    /// Any other type, verbatim.
    Other(String),
}

/// Every known type and its wire name.
const KNOWN_TYPES: &[(WebhookEventType, &str)] = &[
    (WebhookEventType::MerchantConnected, "MERCHANT_CONNECTED"),
    (
        WebhookEventType::MerchantDisconnected,
        "MERCHANT_DISCONNECTED",
    ),
    (WebhookEventType::MerchantEnabled, "MERCHANT_ENABLED"),
    (WebhookEventType::MerchantDisabled, "MERCHANT_DISABLED"),
    (
        WebhookEventType::MerchantNeedsAttention,
        "MERCHANT_NEEDS_ATTENTION",
    ),
    (WebhookEventType::MerchantComplete, "MERCHANT_COMPLETE"),
    (WebhookEventType::ProductSyncStarted, "PRODUCT_SYNC_STARTED"),
    (
        WebhookEventType::ProductSyncCompleted,
        "PRODUCT_SYNC_COMPLETED",
    ),
    (WebhookEventType::ProductSyncFailed, "PRODUCT_SYNC_FAILED"),
    (
        WebhookEventType::CollectionSyncStarted,
        "COLLECTION_SYNC_STARTED",
    ),
    (
        WebhookEventType::CollectionSyncCompleted,
        "COLLECTION_SYNC_COMPLETED",
    ),
    (
        WebhookEventType::CollectionSyncFailed,
        "COLLECTION_SYNC_FAILED",
    ),
    (
        WebhookEventType::PayoutAccountCreated,
        "MERCHANT_PAYOUT_ACCOUNT_CREATED",
    ),
    (
        WebhookEventType::PayoutAccountRequirementsUpdated,
        "MERCHANT_PAYOUT_ACCOUNT_REQUIREMENTS_UPDATED",
    ),
    (
        WebhookEventType::PayoutAccountActivated,
        "MERCHANT_PAYOUT_ACCOUNT_ACTIVATED",
    ),
    (
        WebhookEventType::PayoutAccountDeactivated,
        "MERCHANT_PAYOUT_ACCOUNT_DEACTIVATED",
    ),
    (
        WebhookEventType::PayoutAccountDeleted,
        "MERCHANT_PAYOUT_ACCOUNT_DELETED",
    ),
    (
        WebhookEventType::ConnectionActivated,
        "connection.activated",
    ),
    (
        WebhookEventType::ConnectionUnauthenticated,
        "connection.unauthenticated",
    ),
    (
        WebhookEventType::ConnectionDisconnected,
        "connection.disconnected",
    ),
    (
        WebhookEventType::ConnectionProfileCreated,
        "connection.profile.created",
    ),
    (WebhookEventType::PurchaseCreated, "purchase.created"),
];

impl WebhookEventType {
    /// Classify a wire name. Case and the separators `_`, `.` and `-` do not matter
    /// (`merchant.connected` is `MERCHANT_CONNECTED`); anything else is kept in
    /// [`WebhookEventType::Other`] verbatim (trimmed).
    pub fn parse(raw: &str) -> Self {
        let raw = raw.trim();
        let norm = |s: &str| -> String {
            s.chars()
                .map(|c| match c {
                    '.' | '-' => '_',
                    c => c.to_ascii_uppercase(),
                })
                .collect()
        };
        let wanted = norm(raw);
        KNOWN_TYPES
            .iter()
            .find(|(_, name)| norm(name) == wanted)
            .map(|(t, _)| t.clone())
            .unwrap_or_else(|| WebhookEventType::Other(raw.to_owned()))
    }

    /// The wire name (the provider's own spelling; an `Other` value verbatim).
    pub fn as_str(&self) -> &str {
        if let WebhookEventType::Other(s) = self {
            return s;
        }
        KNOWN_TYPES
            .iter()
            .find(|(t, _)| t == self)
            .map(|(_, name)| *name)
            .unwrap_or_default()
    }

    /// Whether this type says a connection may have changed, so that a targeted refresh of
    /// the customer it names is due: Violet's merchant, sync and payout-account events and
    /// Subtotal's `connection.activated|unauthenticated|disconnected`. `purchase.created`,
    /// `connection.profile.created` and unknown types trigger nothing.
    pub fn triggers_refresh(&self) -> bool {
        !matches!(
            self,
            WebhookEventType::ConnectionProfileCreated
                | WebhookEventType::PurchaseCreated
                | WebhookEventType::Other(_)
        )
    }
}

impl fmt::Display for WebhookEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<WebhookEventType> for String {
    fn from(t: WebhookEventType) -> String {
        t.as_str().to_owned()
    }
}

impl From<String> for WebhookEventType {
    fn from(s: String) -> Self {
        WebhookEventType::parse(&s)
    }
}

/// A verified webhook, typed. Holds ids and types only: no personal data, so `Debug` and
/// serialization are safe to log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WebhookEvent {
    /// The provider name (the configured name, e.g. `violet`).
    pub provider: String,
    /// The provider's event id, for dedupe (a replay carries the same id).
    pub event_id: String,
    /// The event's type.
    pub event_type: WebhookEventType,
    /// The customer the event names (Violet: the merchant id; Subtotal: `customer_id`), if any.
    pub customer_id: Option<String>,
    /// The provider's connection id the event names, if any (Subtotal `connection_id`; Violet:
    /// the merchant id, which is its connection id).
    pub connection_id: Option<String>,
    /// A status to apply at once, before the confirming pull (Subtotal's
    /// `payload.connection.status`, mapped as the adapter maps a fetched connection).
    pub status: Option<Status>,
    /// The provider's own status value behind [`WebhookEvent::status`], verbatim.
    pub provider_status: Option<String>,
    /// When connhealth received it (the `now` given to `verify_webhook`).
    pub received_at: DateTime<Utc>,
}

impl WebhookEvent {
    /// An event of `event_type` naming nothing yet.
    pub fn new(
        provider: impl Into<String>,
        event_id: impl Into<String>,
        event_type: WebhookEventType,
        received_at: DateTime<Utc>,
    ) -> Self {
        WebhookEvent {
            provider: provider.into(),
            event_id: event_id.into(),
            event_type,
            customer_id: None,
            connection_id: None,
            status: None,
            provider_status: None,
            received_at,
        }
    }

    /// The customer to refresh for this event: its customer id when its type
    /// [triggers a refresh](WebhookEventType::triggers_refresh), else `None` (nothing to do
    /// beyond recording it).
    pub fn refresh_target(&self) -> Option<&str> {
        if self.event_type.triggers_refresh() {
            self.customer_id.as_deref()
        } else {
            None
        }
    }
}

/// HMAC-SHA256 of the concatenation of `parts`, keyed with the secret's UTF-8 bytes.
pub fn hmac_sha256(secret: &Secret, parts: &[&[u8]]) -> [u8; TAG_LEN] {
    let mut mac = new_mac(secret);
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

fn new_mac(secret: &Secret) -> Hmac<Sha256> {
    // HMAC takes a key of any length; this cannot fail.
    <Hmac<Sha256> as Mac>::new_from_slice(secret.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"))
}

/// Check a signature header against the HMAC-SHA256 of the concatenation of `parts`, keyed
/// with the secret's UTF-8 bytes, in constant time.
///
/// The header may hold several signatures separated by spaces or commas (any one matching
/// suffices, at most [`MAX_SIGNATURES`] are tried); each may be prefixed `sha256=` or `v1=`
/// and be hex (either case) or base64 (standard or URL-safe, padded or not). A candidate
/// whose decoded length is not 32 bytes is never compared.
pub fn verify_hmac_sha256(
    secret: &Secret,
    parts: &[&[u8]],
    header: &str,
) -> Result<(), WebhookError> {
    let mut mac = new_mac(secret);
    for p in parts {
        mac.update(p);
    }
    let matched = header
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .take(MAX_SIGNATURES)
        .flat_map(|token| decodings(strip_prefix(token)))
        .filter(|tag| tag.len() == TAG_LEN)
        // `verify_slice` compares in constant time (and checks the length again).
        .any(|tag| mac.clone().verify_slice(&tag).is_ok());
    if matched {
        Ok(())
    } else {
        Err(WebhookError::BadSignature)
    }
}

fn strip_prefix(token: &str) -> &str {
    for p in ["sha256=", "v1="] {
        if token.len() >= p.len() && token[..p.len()].eq_ignore_ascii_case(p) {
            return &token[p.len()..];
        }
    }
    token
}

/// Every way `token` decodes: hex, then base64 standard / URL-safe, padded or not.
fn decodings(token: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(2);
    if let Ok(b) = hex::decode(token) {
        out.push(b);
    }
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        if let Ok(b) = engine.decode(token) {
            if !out.contains(&b) {
                out.push(b);
            }
        }
    }
    out
}

/// Check a signed timestamp (unix seconds, or milliseconds when it is larger than
/// 100,000,000,000 — a date in seconds that far is the year 5138) is within
/// [`TIMESTAMP_TOLERANCE_SECS`] of `now`.
pub fn check_timestamp(raw: &str, now: DateTime<Utc>) -> Result<(), WebhookError> {
    let stale = |skew_secs| WebhookError::StaleTimestamp {
        skew_secs,
        tolerance_secs: TIMESTAMP_TOLERANCE_SECS,
    };
    let n: i64 = raw.trim().parse().map_err(|_| stale(i64::MIN))?;
    let secs = if n.unsigned_abs() > 100_000_000_000 {
        n / 1000
    } else {
        n
    };
    let skew = secs.saturating_sub(now.timestamp());
    if skew.unsigned_abs() > TIMESTAMP_TOLERANCE_SECS.unsigned_abs() {
        return Err(stale(skew));
    }
    Ok(())
}

/// A header's value as text, or [`WebhookError::MissingHeader`]. Names are matched without
/// regard to case (as HTTP does).
pub fn required_header<'h>(
    headers: &'h ::http::HeaderMap,
    name: &'static str,
) -> Result<&'h str, WebhookError> {
    optional_header(headers, name).ok_or(WebhookError::MissingHeader { name })
}

/// A header's value as trimmed, non-empty text, if present.
pub fn optional_header<'h>(headers: &'h ::http::HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// [`WebhookError::TooLarge`] for a body above [`MAX_WEBHOOK_BODY_BYTES`].
pub fn check_size(body: &[u8]) -> Result<(), WebhookError> {
    if body.len() > MAX_WEBHOOK_BODY_BYTES {
        Err(WebhookError::TooLarge)
    } else {
        Ok(())
    }
}

/// A JSON id that may be a string or a number, as text (`None` for anything else or empty).
pub fn json_id(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Parse a body as JSON, with an error that quotes nothing of it.
pub fn parse_json(body: &[u8]) -> Result<serde_json::Value, WebhookError> {
    serde_json::from_slice(body).map_err(|e| {
        WebhookError::malformed(format!(
            "not JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn secret() -> Secret {
        Secret::new("s3cr3t-key")
    }

    fn tag(body: &[u8]) -> [u8; 32] {
        hmac_sha256(&secret(), &[body])
    }

    #[test]
    fn the_tag_is_rfc4231_hmac_sha256() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let t = hmac_sha256(
            &Secret::new("Jefe"),
            &[b"what do ya ", b"want for nothing?"],
        );
        assert_eq!(
            hex::encode(t),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn every_encoding_and_prefix_is_accepted() {
        let body = b"{\"a\":1}";
        let t = tag(body);
        let encodings = [
            ("hex lower", hex::encode(t)),
            ("hex upper", hex::encode_upper(t)),
            ("base64", STANDARD.encode(t)),
            ("base64 no pad", STANDARD_NO_PAD.encode(t)),
            ("base64url", URL_SAFE.encode(t)),
            ("base64url no pad", URL_SAFE_NO_PAD.encode(t)),
        ];
        for (what, enc) in &encodings {
            for prefix in ["", "sha256=", "v1=", "SHA256="] {
                let header = format!("{prefix}{enc}");
                assert_eq!(
                    verify_hmac_sha256(&secret(), &[body], &header),
                    Ok(()),
                    "{what} with prefix {prefix:?}"
                );
            }
        }
    }

    #[test]
    fn several_signatures_any_one_matching_suffices() {
        let body = b"x";
        let good = hex::encode(tag(body));
        let bad = hex::encode(tag(b"y"));
        for header in [
            format!("{bad} {good}"),
            format!("{bad},{good}"),
            format!("v1={bad}, v1={good}"),
            format!("t=123,v1={good}"),
        ] {
            assert_eq!(
                verify_hmac_sha256(&secret(), &[body], &header),
                Ok(()),
                "{header}"
            );
        }
        assert_eq!(
            verify_hmac_sha256(&secret(), &[body], &format!("{bad} {bad}")),
            Err(WebhookError::BadSignature)
        );
    }

    #[test]
    fn forged_wrong_body_wrong_key_wrong_length_are_refused() {
        let body = b"payload";
        let t = tag(body);
        let mut flipped = t;
        flipped[31] ^= 1;
        let other_key = hmac_sha256(&Secret::new("other"), &[body]);
        let cases = [
            ("forged", "deadbeef".repeat(8)),
            ("another body", hex::encode(tag(b"payload2"))),
            ("another key", hex::encode(other_key)),
            ("right length, one bit off", hex::encode(flipped)),
            ("truncated", hex::encode(&t[..31])),
            ("prefix of the tag", hex::encode(&t[..16])),
            ("too long", format!("{}00", hex::encode(t))),
            ("empty", String::new()),
            ("not an encoding", "!!!!".to_owned()),
        ];
        for (what, header) in cases {
            assert_eq!(
                verify_hmac_sha256(&secret(), &[body], &header),
                Err(WebhookError::BadSignature),
                "{what}"
            );
        }
    }

    #[test]
    fn timestamps_in_seconds_or_millis_within_five_minutes() {
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap();
        let s = now.timestamp();
        for ok in [
            s.to_string(),
            (s * 1000).to_string(),
            (s - 299).to_string(),
            (s + 299).to_string(),
            ((s - 299) * 1000).to_string(),
            format!(" {s} "),
        ] {
            assert_eq!(check_timestamp(&ok, now), Ok(()), "{ok}");
        }
        for (raw, skew) in [
            ((s - 3600).to_string(), -3600),
            ((s + 3600).to_string(), 3600),
            (((s - 3600) * 1000).to_string(), -3600),
            (((s + 3600) * 1000).to_string(), 3600),
            ("0".to_owned(), -s),
        ] {
            assert_eq!(
                check_timestamp(&raw, now),
                Err(WebhookError::StaleTimestamp {
                    skew_secs: skew,
                    tolerance_secs: 300
                }),
                "{raw}"
            );
        }
        assert!(matches!(
            check_timestamp("yesterday", now),
            Err(WebhookError::StaleTimestamp { .. })
        ));
        assert!(matches!(
            check_timestamp(&i64::MIN.to_string(), now),
            Err(WebhookError::StaleTimestamp { .. })
        ));
    }

    #[test]
    fn body_cap_is_one_mebibyte() {
        assert_eq!(check_size(&vec![b' '; MAX_WEBHOOK_BODY_BYTES]), Ok(()));
        assert_eq!(
            check_size(&vec![b' '; MAX_WEBHOOK_BODY_BYTES + 1]),
            Err(WebhookError::TooLarge)
        );
        assert_eq!(WebhookError::TooLarge.http_status(), 413);
    }

    #[test]
    fn event_types_parse_in_any_case_and_unknown_ones_are_kept() {
        assert_eq!(
            WebhookEventType::parse("merchant_disconnected"),
            WebhookEventType::MerchantDisconnected
        );
        assert_eq!(
            WebhookEventType::parse("CONNECTION.UNAUTHENTICATED"),
            WebhookEventType::ConnectionUnauthenticated
        );
        assert_eq!(
            WebhookEventType::ConnectionUnauthenticated.as_str(),
            "connection.unauthenticated"
        );
        let other = WebhookEventType::parse("ORDER_SHIPPED");
        assert_eq!(other, WebhookEventType::Other("ORDER_SHIPPED".into()));
        assert!(!other.triggers_refresh());
        assert!(WebhookEventType::ProductSyncFailed.triggers_refresh());
        assert!(!WebhookEventType::PurchaseCreated.triggers_refresh());
        for (t, name) in KNOWN_TYPES {
            assert_eq!(&WebhookEventType::parse(name), t);
        }
    }

    #[test]
    fn errors_quote_neither_body_nor_secret() {
        let e = parse_json(b"{\"email\": \"jane@example.com\"").unwrap_err();
        assert!(!e.to_string().contains("jane"), "{e}");
        assert_eq!(e.http_status(), 400);
    }
}
