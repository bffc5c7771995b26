//! Subtotal's webhooks, verified and typed (DESIGN.md, "Webhooks in").
//!
//! * `X-Subtotal-Signature` = HMAC-SHA256 of `"{X-Subtotal-Timestamp}.{raw body}"` keyed with
//!   the destination's `signing_secret`, hex or base64, optionally prefixed `sha256=` or `v1=`
//!   (several, separated by spaces or commas, accepted if any matches).
//! * `X-Subtotal-Timestamp`: unix seconds or milliseconds, within ±5 minutes of `now`.
//! * The envelope `{type, id, payload}`; `payload` an object or a string holding JSON.
//! * `connection.activated|unauthenticated|disconnected` carry `payload.connection`, whose
//!   `status` is mapped as a fetched connection's is ([`crate::map::map_connection`]): the
//!   event's [`WebhookEvent::status`], to apply at once before the confirming
//!   `GET /connections/{id}`. `connection.profile.created` is flat (`payload.customer_id`).

use chrono::{DateTime, Utc};
use connhealth_core::webhook::{
    check_size, check_timestamp, json_id, parse_json, required_header, verify_hmac_sha256,
};
use connhealth_core::{HeaderMap, Secret, WebhookError, WebhookEvent, WebhookEventType};
use serde_json::Value;

use crate::map::{map_connection, MapContext};
use crate::wire::ConnectionResponse;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "X-Subtotal-Signature";
/// The signed timestamp header.
pub const TIMESTAMP_HEADER: &str = "X-Subtotal-Timestamp";

/// Verify one Subtotal webhook and type it. Checks, in the contract's order: the body size
/// ([`WebhookError::TooLarge`]), the signature and the timestamp
/// ([`WebhookError::MissingHeader`], [`WebhookError::BadSignature`],
/// [`WebhookError::StaleTimestamp`]), then the envelope ([`WebhookError::Malformed`]). An
/// unknown type is an event of type [`WebhookEventType::Other`], not an error. The event's
/// `provider` is [`crate::DEFAULT_NAME`]; [`crate::Subtotal`]'s
/// [`connhealth_core::Provider::verify_webhook`] puts its configured name there.
///
/// ```
/// use connhealth_core::webhook::hmac_sha256;
/// use connhealth_core::{HeaderMap, Secret, Status, WebhookEventType};
///
/// let secret = Secret::new("signing-secret");
/// let now = chrono::Utc::now();
/// let ts = now.timestamp().to_string();
/// let body = br#"{"type": "connection.unauthenticated", "id": "01EVT",
///   "payload": {"connection": {"connection_id": "01CONN", "customer_id": "cus_1",
///   "retailer_id": "target", "status": "unauthenticated"}}}"#;
/// let sig = hex::encode(hmac_sha256(&secret, &[ts.as_bytes(), b".", body]));
/// let mut headers = HeaderMap::new();
/// headers.insert("X-Subtotal-Signature", sig.parse().unwrap());
/// headers.insert("X-Subtotal-Timestamp", ts.parse().unwrap());
/// let ev = connhealth_subtotal::verify_webhook(&headers, body, &secret, now).unwrap();
/// assert_eq!(ev.event_type, WebhookEventType::ConnectionUnauthenticated);
/// assert_eq!(ev.status, Some(Status::ActionRequired));
/// assert_eq!(ev.connection_id.as_deref(), Some("01CONN"));
/// ```
pub fn verify_webhook(
    headers: &HeaderMap,
    raw_body: &[u8],
    secret: &Secret,
    now: DateTime<Utc>,
) -> Result<WebhookEvent, WebhookError> {
    check_size(raw_body)?;
    let signature = required_header(headers, SIGNATURE_HEADER)?;
    let timestamp = required_header(headers, TIMESTAMP_HEADER)?;
    verify_hmac_sha256(secret, &[timestamp.as_bytes(), b".", raw_body], signature)?;
    check_timestamp(timestamp, now)?;

    let body = parse_json(raw_body)?;
    let Value::Object(env) = &body else {
        return Err(WebhookError::malformed("the body is not a JSON object"));
    };
    let event_type = match env.get("type") {
        Some(Value::String(t)) if !t.trim().is_empty() => WebhookEventType::parse(t),
        _ => return Err(WebhookError::malformed("no string `type` in the envelope")),
    };
    let event_id = env
        .get("id")
        .and_then(json_id)
        .ok_or_else(|| WebhookError::malformed("no `id` in the envelope"))?;
    let payload = match env.get("payload") {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return Err(WebhookError::malformed(
                    "`payload` is a string that does not hold a JSON object",
                ))
            }
        },
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => {
            return Err(WebhookError::malformed(
                "`payload` is neither an object nor a string",
            ))
        }
    };

    let mut event = WebhookEvent::new(crate::DEFAULT_NAME, event_id, event_type, now);
    let carries_connection = matches!(
        event.event_type,
        WebhookEventType::ConnectionActivated
            | WebhookEventType::ConnectionUnauthenticated
            | WebhookEventType::ConnectionDisconnected
    );
    match payload.get("connection") {
        Some(conn @ Value::Object(_)) => apply_connection(&mut event, conn, now)?,
        Some(_) => {
            return Err(WebhookError::malformed(
                "`payload.connection` is not an object",
            ))
        }
        None if carries_connection => {
            return Err(WebhookError::malformed(format!(
                "a {} event without `payload.connection`",
                event.event_type
            )))
        }
        None => {
            // Flat payloads (connection.profile.created, purchase.created, unknown types).
            event.customer_id = payload.get("customer_id").and_then(json_id);
            event.connection_id = payload.get("connection_id").and_then(json_id);
        }
    }
    Ok(event)
}

fn apply_connection(
    event: &mut WebhookEvent,
    conn: &Value,
    now: DateTime<Utc>,
) -> Result<(), WebhookError> {
    let wire: ConnectionResponse = serde_json::from_value(conn.clone()).map_err(|_| {
        WebhookError::malformed("`payload.connection` is not a Subtotal connection")
    })?;
    event.customer_id = wire.customer_id.clone().filter(|s| !s.trim().is_empty());
    event.connection_id = wire.connection_id.clone().filter(|s| !s.trim().is_empty());
    if wire.status.is_some() {
        let ctx = MapContext {
            provider: &event.provider,
            observed_at: now,
            link_url: None,
            include_personal_data: false,
            retailer_names: None,
        };
        if let Some(mapped) = map_connection(&wire, event.customer_id.as_deref(), &ctx) {
            event.status = Some(mapped.status);
            event.provider_status = Some(mapped.provider_status);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use base64::Engine as _;
    use chrono::TimeZone;
    use connhealth_core::webhook::{hmac_sha256, MAX_WEBHOOK_BODY_BYTES};
    use connhealth_core::Status;
    use proptest::prelude::*;

    fn secret() -> Secret {
        Secret::new("subtotal-signing-secret")
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap()
    }

    fn tag(ts: &str, body: &[u8]) -> [u8; 32] {
        hmac_sha256(&secret(), &[ts.as_bytes(), b".", body])
    }

    fn headers(sig: &str, ts: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(SIGNATURE_HEADER, sig.parse().unwrap());
        h.insert(TIMESTAMP_HEADER, ts.parse().unwrap());
        h
    }

    fn signed(body: &[u8]) -> HeaderMap {
        let ts = now().timestamp().to_string();
        headers(&hex::encode(tag(&ts, body)), &ts)
    }

    fn verify(h: &HeaderMap, body: &[u8]) -> Result<WebhookEvent, WebhookError> {
        verify_webhook(h, body, &secret(), now())
    }

    const UNAUTH: &[u8] = br#"{"type":"connection.unauthenticated","id":"01EVT1","payload":{"connection":{"connection_id":"01CONN","customer_id":"cus_1","retailer_id":"target","email":"jane@example.com","mobile":null,"status":"unauthenticated"}}}"#;

    #[test]
    fn every_encoding_prefix_and_timestamp_unit_is_accepted() {
        let secs = now().timestamp().to_string();
        let millis = (now().timestamp() * 1000).to_string();
        for ts in [&secs, &millis] {
            let t = tag(ts, UNAUTH);
            for sig in [
                hex::encode(t),
                format!("sha256={}", hex::encode(t)),
                format!("v1={}", hex::encode_upper(t)),
                STANDARD.encode(t),
                format!("v1={}", STANDARD.encode(t)),
                URL_SAFE_NO_PAD.encode(t),
                format!("v1={} v1={}", hex::encode(tag(ts, b"x")), hex::encode(t)),
            ] {
                let ev = verify(&headers(&sig, ts), UNAUTH)
                    .unwrap_or_else(|e| panic!("{sig} at {ts}: {e}"));
                assert_eq!(ev.event_id, "01EVT1");
            }
        }
    }

    #[test]
    fn unauthenticated_maps_to_action_required_at_once() {
        let ev = verify(&signed(UNAUTH), UNAUTH).unwrap();
        assert_eq!(ev.event_type, WebhookEventType::ConnectionUnauthenticated);
        assert_eq!(ev.customer_id.as_deref(), Some("cus_1"));
        assert_eq!(ev.connection_id.as_deref(), Some("01CONN"));
        assert_eq!(ev.status, Some(Status::ActionRequired));
        assert_eq!(ev.provider_status.as_deref(), Some("unauthenticated"));
        assert_eq!(ev.refresh_target(), Some("cus_1"));
        assert_eq!(ev.received_at, now());
        // No personal data in the event.
        assert!(!format!("{ev:?}").contains("jane"));
    }

    #[test]
    fn activated_and_disconnected_map_like_a_fetched_connection() {
        for (t, status, want) in [
            ("connection.activated", "active", Status::Healthy),
            (
                "connection.disconnected",
                "disconnected",
                Status::Disconnected,
            ),
        ] {
            let body = format!(
                r#"{{"type":"{t}","id":"e","payload":{{"connection":{{"connection_id":"c","customer_id":"u","status":"{status}"}}}}}}"#
            );
            let ev = verify(&signed(body.as_bytes()), body.as_bytes()).unwrap();
            assert_eq!(ev.status, Some(want), "{t}");
        }
    }

    #[test]
    fn a_string_payload_holding_json_is_read() {
        let inner = r#"{"connection":{"connection_id":"01C","customer_id":"cus_9","status":"unauthenticated"}}"#;
        let body = serde_json::to_vec(&serde_json::json!({
            "type": "connection.unauthenticated", "id": "01E", "payload": inner,
        }))
        .unwrap();
        let ev = verify(&signed(&body), &body).unwrap();
        assert_eq!(ev.customer_id.as_deref(), Some("cus_9"));
        assert_eq!(ev.status, Some(Status::ActionRequired));
    }

    #[test]
    fn flat_profile_payload_and_unknown_types_have_nothing_to_apply() {
        let body = br#"{"type":"connection.profile.created","id":"e1","payload":{"customer_id":"cus_2","connection_id":"c2","email":"x@y.z"}}"#;
        let ev = verify(&signed(body), body).unwrap();
        assert_eq!(ev.customer_id.as_deref(), Some("cus_2"));
        assert_eq!(ev.status, None);
        assert_eq!(ev.refresh_target(), None);

        let body = br#"{"type":"order.teleported","id":"e2","payload":{"anything":[1,2]}}"#;
        let ev = verify(&signed(body), body).unwrap();
        assert_eq!(
            ev.event_type,
            WebhookEventType::Other("order.teleported".into())
        );
        assert_eq!(ev.refresh_target(), None);
    }

    #[test]
    fn timestamps_an_hour_old_or_ahead_are_stale_even_when_signed() {
        for skew in [-3600, 3600] {
            for ms in [false, true] {
                let secs = now().timestamp() + skew;
                let ts = if ms {
                    (secs * 1000).to_string()
                } else {
                    secs.to_string()
                };
                let h = headers(&hex::encode(tag(&ts, UNAUTH)), &ts);
                assert_eq!(
                    verify(&h, UNAUTH),
                    Err(WebhookError::StaleTimestamp {
                        skew_secs: skew,
                        tolerance_secs: 300
                    }),
                    "{skew} ms={ms}"
                );
            }
        }
    }

    #[test]
    fn forged_or_misapplied_signatures_are_refused() {
        let ts = now().timestamp().to_string();
        let t = tag(&ts, UNAUTH);
        let mut one_bit = t;
        one_bit[0] ^= 0x80;
        for (what, sig) in [
            ("forged", hex::encode([7u8; 32])),
            ("another body", hex::encode(tag(&ts, b"{}"))),
            (
                "body without the timestamp",
                hex::encode(hmac_sha256(&secret(), &[UNAUTH])),
            ),
            ("right length, wrong bytes", hex::encode(one_bit)),
            ("wrong length", hex::encode(&t[..20])),
        ] {
            assert_eq!(
                verify(&headers(&sig, &ts), UNAUTH),
                Err(WebhookError::BadSignature),
                "{what}"
            );
        }
        // Signed for another timestamp than the one sent.
        let other_ts = (now().timestamp() - 1).to_string();
        let h = headers(&hex::encode(tag(&other_ts, UNAUTH)), &ts);
        assert_eq!(verify(&h, UNAUTH), Err(WebhookError::BadSignature));
        // Missing headers.
        let mut h = signed(UNAUTH);
        h.remove(TIMESTAMP_HEADER);
        assert_eq!(
            verify(&h, UNAUTH),
            Err(WebhookError::MissingHeader {
                name: TIMESTAMP_HEADER
            })
        );
        assert_eq!(
            verify(&HeaderMap::new(), UNAUTH),
            Err(WebhookError::MissingHeader {
                name: SIGNATURE_HEADER
            })
        );
    }

    #[test]
    fn oversized_non_json_and_wrong_shapes_are_refused() {
        let big = vec![b'{'; MAX_WEBHOOK_BODY_BYTES + 1];
        assert_eq!(verify(&signed(&big), &big), Err(WebhookError::TooLarge));
        for bad in [
            &b"not json at all"[..],
            b"[]",
            br#"{"id":"e","payload":{}}"#,
            br#"{"type":7,"id":"e","payload":{}}"#,
            br#"{"type":"connection.activated","payload":{}}"#,
            br#"{"type":"connection.activated","id":"e","payload":42}"#,
            br#"{"type":"connection.activated","id":"e","payload":"not json"}"#,
            br#"{"type":"connection.activated","id":"e","payload":{}}"#,
            br#"{"type":"connection.activated","id":"e","payload":{"connection":"01C"}}"#,
        ] {
            let e = verify(&signed(bad), bad).unwrap_err();
            assert!(
                matches!(e, WebhookError::Malformed { .. }),
                "{}: {e:?}",
                String::from_utf8_lossy(bad)
            );
            assert_eq!(e.http_status(), 400);
        }
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_input(
            body in proptest::collection::vec(any::<u8>(), 0..512),
            sig in "[ -~]{0,120}",
            ts in "[ -~]{0,24}",
            sign in any::<bool>(),
        ) {
            let mut h = HeaderMap::new();
            let sig = if sign { hex::encode(tag(&ts, &body)) } else { sig };
            if let Ok(v) = sig.parse() { h.insert(SIGNATURE_HEADER, v); }
            if let Ok(v) = ts.parse() { h.insert(TIMESTAMP_HEADER, v); }
            let _ = verify(&h, &body);
        }

        #[test]
        fn never_panics_on_signed_json(v in connhealth_testkit::fuzz::arb_json(VOCAB)) {
            let body = serde_json::to_vec(&v).unwrap();
            let _ = verify(&signed(&body), &body);
        }
    }

    const VOCAB: connhealth_testkit::fuzz::Vocabulary = connhealth_testkit::fuzz::Vocabulary {
        keys: &[
            "type",
            "id",
            "payload",
            "connection",
            "connection_id",
            "customer_id",
            "status",
        ],
        words: &[
            "connection.activated",
            "connection.unauthenticated",
            "active",
            "{}",
            "",
        ],
    };
}
