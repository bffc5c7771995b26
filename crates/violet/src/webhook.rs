//! Violet's webhooks, verified and typed (DESIGN.md, "Webhooks in").
//!
//! * `X-Violet-Hmac`: HMAC-SHA256 of the raw body keyed with the app secret (or the configured
//!   `webhook_secret_env`), base64 — hex accepted too, since the encoding is unconfirmed.
//! * `X-Violet-Event-Id`: the dedupe key. When it is absent the key is `body-digest:` and a
//!   hex HMAC-SHA256 of the body under a fixed, public key (a digest, not a signature), so a
//!   redelivered body still dedupes.
//! * The type from `X-Violet-Topic`, else the body's `event`, `type` or `topic`.
//! * The merchant id from `merchant_id` or `merchantId`, at the top level or under `data`; for
//!   a merchant event (`MERCHANT_*` but not the payout-account ones), whose body is the
//!   merchant, also from `id`. A number or a string. Never `X-Violet-Entity-External-Id` (a
//!   payout account id).

use chrono::{DateTime, Utc};
use connhealth_core::webhook::{
    check_size, hmac_sha256, json_id, optional_header, parse_json, required_header,
    verify_hmac_sha256,
};
use connhealth_core::{HeaderMap, Secret, WebhookError, WebhookEvent, WebhookEventType};
use serde_json::Value;

/// The signature header.
pub const HMAC_HEADER: &str = "X-Violet-Hmac";
/// The event id header (dedupe).
pub const EVENT_ID_HEADER: &str = "X-Violet-Event-Id";
/// The topic header (unconfirmed; the body's `event` / `type` / `topic` is the fallback).
pub const TOPIC_HEADER: &str = "X-Violet-Topic";
/// The payout account id header of payout-account events (never taken as a merchant id).
pub const ENTITY_EXTERNAL_ID_HEADER: &str = "X-Violet-Entity-External-Id";

/// Verify one Violet webhook and type it. Checks, in the contract's order: the body size
/// ([`WebhookError::TooLarge`]), the signature ([`WebhookError::MissingHeader`],
/// [`WebhookError::BadSignature`]), then the body ([`WebhookError::Malformed`]). An unknown
/// topic is an event of type [`WebhookEventType::Other`], not an error. The event's
/// `provider` is [`crate::DEFAULT_NAME`]; [`crate::Violet`]'s
/// [`connhealth_core::Provider::verify_webhook`] puts its configured name there.
///
/// ```
/// use connhealth_core::webhook::hmac_sha256;
/// use connhealth_core::{HeaderMap, Secret, WebhookEventType};
///
/// let secret = Secret::new("app-secret");
/// let body = br#"{"event": "MERCHANT_DISCONNECTED", "merchant_id": 10042}"#;
/// let mut headers = HeaderMap::new();
/// let sig = base64::Engine::encode(
///     &base64::engine::general_purpose::STANDARD,
///     hmac_sha256(&secret, &[body]),
/// );
/// headers.insert("X-Violet-Hmac", sig.parse().unwrap());
/// headers.insert("X-Violet-Event-Id", "evt-1".parse().unwrap());
/// let ev = connhealth_violet::verify_webhook(&headers, body, &secret, chrono::Utc::now()).unwrap();
/// assert_eq!(ev.event_type, WebhookEventType::MerchantDisconnected);
/// assert_eq!(ev.customer_id.as_deref(), Some("10042"));
/// assert_eq!(ev.refresh_target(), Some("10042"));
/// ```
pub fn verify_webhook(
    headers: &HeaderMap,
    raw_body: &[u8],
    secret: &Secret,
    now: DateTime<Utc>,
) -> Result<WebhookEvent, WebhookError> {
    check_size(raw_body)?;
    let signature = required_header(headers, HMAC_HEADER)?;
    verify_hmac_sha256(secret, &[raw_body], signature)?;

    let body = parse_json(raw_body)?;
    let Value::Object(obj) = &body else {
        return Err(WebhookError::malformed("the body is not a JSON object"));
    };
    let topic = optional_header(headers, TOPIC_HEADER)
        .map(str::to_owned)
        .or_else(|| {
            ["event", "type", "topic"]
                .iter()
                .find_map(|k| obj.get(*k).and_then(Value::as_str))
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        })
        .ok_or_else(|| {
            WebhookError::malformed(
                "no event type (neither an X-Violet-Topic header nor an event/type/topic field)",
            )
        })?;
    let event_type = WebhookEventType::parse(&topic);
    let event_id = match optional_header(headers, EVENT_ID_HEADER) {
        Some(id) => id.to_owned(),
        None => {
            // A digest of the body: deterministic per body, reveals nothing of it.
            let digest = hmac_sha256(&Secret::new("connhealth-violet-event-id"), &[raw_body]);
            format!("body-digest:{}", hex_lower(&digest))
        }
    };

    let mut event = WebhookEvent::new(crate::DEFAULT_NAME, event_id, event_type, now);
    event.customer_id = merchant_id(obj, &event.event_type);
    event.connection_id = event.customer_id.clone();
    Ok(event)
}

fn is_merchant_event(t: &WebhookEventType) -> bool {
    use WebhookEventType as T;
    matches!(
        t,
        T::MerchantConnected
            | T::MerchantDisconnected
            | T::MerchantEnabled
            | T::MerchantDisabled
            | T::MerchantNeedsAttention
            | T::MerchantComplete
    )
}

fn merchant_id(obj: &serde_json::Map<String, Value>, t: &WebhookEventType) -> Option<String> {
    let data = obj.get("data").and_then(Value::as_object);
    let levels = [Some(obj), data];
    let by_key = |key: &str| {
        levels
            .iter()
            .flatten()
            .find_map(|o| o.get(key).and_then(json_id))
    };
    by_key("merchant_id")
        .or_else(|| by_key("merchantId"))
        .or_else(|| is_merchant_event(t).then(|| by_key("id")).flatten())
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use connhealth_core::webhook::MAX_WEBHOOK_BODY_BYTES;
    use proptest::prelude::*;

    const VOCAB: connhealth_testkit::fuzz::Vocabulary = connhealth_testkit::fuzz::Vocabulary {
        keys: &[
            "event",
            "type",
            "topic",
            "merchant_id",
            "merchantId",
            "id",
            "data",
        ],
        words: &["MERCHANT_CONNECTED", "PRODUCT_SYNC_FAILED", "10042", ""],
    };

    fn secret() -> Secret {
        Secret::new("violet-app-secret")
    }

    fn signed(body: &[u8], extra: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        let sig = STANDARD.encode(hmac_sha256(&secret(), &[body]));
        h.insert(HMAC_HEADER, sig.parse().unwrap());
        for (k, v) in extra {
            h.insert(
                http_name(k),
                v.parse().expect("a valid header value in the test"),
            );
        }
        h
    }

    fn http_name(k: &str) -> reqwest::header::HeaderName {
        k.parse().unwrap()
    }

    fn verify(h: &HeaderMap, body: &[u8]) -> Result<WebhookEvent, WebhookError> {
        verify_webhook(h, body, &secret(), Utc::now())
    }

    #[test]
    fn base64_and_hex_signatures_are_accepted() {
        let body = br#"{"event":"MERCHANT_CONNECTED","id":5}"#;
        let tag = hmac_sha256(&secret(), &[body]);
        for sig in [
            STANDARD.encode(tag),
            hex_lower(&tag),
            format!("sha256={}", hex_lower(&tag)),
        ] {
            let mut h = HeaderMap::new();
            h.insert(HMAC_HEADER, sig.parse().unwrap());
            let ev = verify(&h, body).unwrap();
            assert_eq!(ev.customer_id.as_deref(), Some("5"), "{sig}");
        }
    }

    #[test]
    fn merchant_id_as_number_or_string_top_level_or_under_data() {
        for (body, want) in [
            (
                r#"{"event":"MERCHANT_DISABLED","merchant_id":10042}"#,
                "10042",
            ),
            (
                r#"{"event":"MERCHANT_DISABLED","merchant_id":"10042"}"#,
                "10042",
            ),
            (
                r#"{"event":"MERCHANT_DISABLED","merchantId":10043}"#,
                "10043",
            ),
            (
                r#"{"event":"MERCHANT_DISABLED","data":{"merchant_id":10044}}"#,
                "10044",
            ),
            (
                r#"{"event":"MERCHANT_DISABLED","data":{"merchantId":"10045"}}"#,
                "10045",
            ),
            (r#"{"event":"MERCHANT_DISABLED","id":10046}"#, "10046"),
            (
                r#"{"type":"PRODUCT_SYNC_FAILED","data":{"id":9,"merchant_id":10047}}"#,
                "10047",
            ),
        ] {
            let ev = verify(
                &signed(body.as_bytes(), &[("X-Violet-Event-Id", "e")]),
                body.as_bytes(),
            )
            .unwrap();
            assert_eq!(ev.customer_id.as_deref(), Some(want), "{body}");
            assert_eq!(ev.refresh_target(), Some(want), "{body}");
        }
    }

    #[test]
    fn entity_external_id_header_is_not_the_merchant_id() {
        let body = br#"{"event":"MERCHANT_PAYOUT_ACCOUNT_ACTIVATED","id":"acct_77"}"#;
        let h = signed(
            body,
            &[
                ("X-Violet-Entity-External-Id", "acct_77"),
                ("X-Violet-Event-Id", "e2"),
            ],
        );
        let ev = verify(&h, body).unwrap();
        assert_eq!(ev.event_type, WebhookEventType::PayoutAccountActivated);
        // The payout account's own `id` is not a merchant id either.
        assert_eq!(ev.customer_id, None);
        assert_eq!(ev.refresh_target(), None);

        let body =
            br#"{"event":"MERCHANT_PAYOUT_ACCOUNT_ACTIVATED","id":"acct_77","merchant_id":31}"#;
        let h = signed(body, &[("X-Violet-Entity-External-Id", "acct_77")]);
        assert_eq!(verify(&h, body).unwrap().customer_id.as_deref(), Some("31"));
    }

    #[test]
    fn topic_header_wins_and_event_id_is_the_header() {
        let body = br#"{"event":"MERCHANT_CONNECTED","merchant_id":1}"#;
        let h = signed(
            body,
            &[
                ("X-Violet-Topic", "MERCHANT_NEEDS_ATTENTION"),
                ("X-Violet-Event-Id", "evt-9"),
            ],
        );
        let ev = verify(&h, body).unwrap();
        assert_eq!(ev.event_type, WebhookEventType::MerchantNeedsAttention);
        assert_eq!(ev.event_id, "evt-9");
        assert_eq!(ev.provider, "violet");
    }

    #[test]
    fn without_an_event_id_header_the_key_is_stable_per_body() {
        let a = br#"{"event":"MERCHANT_CONNECTED","merchant_id":1}"#;
        let b = br#"{"event":"MERCHANT_CONNECTED","merchant_id":2}"#;
        let ea = verify(&signed(a, &[]), a).unwrap().event_id;
        assert_eq!(ea, verify(&signed(a, &[]), a).unwrap().event_id);
        assert_ne!(ea, verify(&signed(b, &[]), b).unwrap().event_id);
        assert!(ea.starts_with("body-digest:"), "{ea}");
    }

    #[test]
    fn unknown_topic_is_an_event_with_nothing_to_do() {
        let body = br#"{"event":"ORDER_SHIPPED","merchant_id":1}"#;
        let ev = verify(&signed(body, &[]), body).unwrap();
        assert_eq!(
            ev.event_type,
            WebhookEventType::Other("ORDER_SHIPPED".into())
        );
        assert_eq!(ev.refresh_target(), None);
    }

    #[test]
    fn bad_input_is_a_typed_refusal() {
        let body = br#"{"event":"MERCHANT_CONNECTED","merchant_id":1}"#;
        // Missing signature.
        assert_eq!(
            verify(&HeaderMap::new(), body),
            Err(WebhookError::MissingHeader { name: HMAC_HEADER })
        );
        // Signature of another body.
        let other = signed(b"{}", &[]);
        assert_eq!(verify(&other, body), Err(WebhookError::BadSignature));
        // Forged with another key.
        let mut forged = HeaderMap::new();
        let tag = hmac_sha256(&Secret::new("guess"), &[body]);
        forged.insert(HMAC_HEADER, STANDARD.encode(tag).parse().unwrap());
        assert_eq!(verify(&forged, body), Err(WebhookError::BadSignature));
        // Too large, checked before the signature.
        let big = vec![b' '; MAX_WEBHOOK_BODY_BYTES + 1];
        assert_eq!(verify(&HeaderMap::new(), &big), Err(WebhookError::TooLarge));
        // Correctly signed but not JSON / not an object / no type.
        for bad in [&b"not json"[..], b"[1,2]", br#"{"merchant_id":1}"#] {
            let e = verify(&signed(bad, &[]), bad).unwrap_err();
            assert!(matches!(e, WebhookError::Malformed { .. }), "{e:?}");
        }
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_input(
            body in proptest::collection::vec(any::<u8>(), 0..512),
            sig in "[ -~]{0,120}",
            topic in "[ -~]{0,40}",
            sign in any::<bool>(),
        ) {
            let mut h = HeaderMap::new();
            let sig = if sign { STANDARD.encode(hmac_sha256(&secret(), &[&body])) } else { sig };
            if let Ok(v) = sig.parse() { h.insert(HMAC_HEADER, v); }
            if let Ok(v) = topic.parse() { h.insert(TOPIC_HEADER, v); }
            let _ = verify(&h, &body);
        }

        #[test]
        fn never_panics_on_signed_json(v in connhealth_testkit::fuzz::arb_json(VOCAB)) {
            let body = serde_json::to_vec(&v).unwrap();
            let _ = verify(&signed(&body, &[]), &body);
        }
    }
}
