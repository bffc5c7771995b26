//! Reading a JWT's `exp` claim, to refresh a token before it expires. Nothing is verified:
//! the token came from the provider over TLS, and the provider checks it; we only want to know
//! when it will stop working.
//!
//! ```
//! use connhealth_core::jwt;
//! // {"alg":"none"} . {"exp":1700000000} . (no signature)
//! let token = "eyJhbGciOiJub25lIn0.eyJleHAiOjE3MDAwMDAwMDB9.";
//! assert_eq!(jwt::exp(token), Some(1_700_000_000));
//! assert_eq!(jwt::lifetime(token, 1_699_999_000), Some(std::time::Duration::from_secs(1000)));
//! assert_eq!(jwt::exp("an-opaque-token"), None);
//! ```

use std::time::Duration;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

/// RFC 7515 says base64url without padding; padding and the standard alphabet are accepted
/// too (some issuers send them).
const CONFIG: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, CONFIG);
const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, CONFIG);

/// The `exp` claim (seconds since the Unix epoch) of a JWT (`header.payload.signature`):
/// an integer, a float (truncated) or a string holding an integer. `None` when the token is
/// not a JWT or has no readable `exp`.
pub fn exp(token: &str) -> Option<i64> {
    let mut parts = token.trim().split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes = URL_SAFE
        .decode(payload)
        .or_else(|_| STANDARD.decode(payload))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?;
    exp.as_i64()
        .or_else(|| exp.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
        .or_else(|| exp.as_str().and_then(|s| s.trim().parse().ok()))
}

/// Time left before the token's `exp`, seen from `now` (Unix seconds): zero when it already
/// expired, `None` when [`exp`] cannot read it.
pub fn lifetime(token: &str, now: i64) -> Option<Duration> {
    let exp = exp(token)?;
    Some(Duration::from_secs(exp.saturating_sub(now).max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        format!(
            "{}.{}.c2lnbmF0dXJl",
            URL_SAFE.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims)
        )
    }

    #[test]
    fn exp_in_every_plausible_form() {
        assert_eq!(
            exp(&jwt(r#"{"sub":"1","exp":1700000000}"#)),
            Some(1_700_000_000)
        );
        assert_eq!(exp(&jwt(r#"{"exp":"1700000000"}"#)), Some(1_700_000_000));
        assert_eq!(exp(&jwt(r#"{"exp":1700000000.5}"#)), Some(1_700_000_000));
        // Padded, and the standard alphabet (`+`, `/`).
        let padded = format!("h.{}.s", URL_SAFE.encode(r#"{"exp":10}"#));
        assert!(padded.contains('='));
        assert_eq!(exp(&padded), Some(10));
        let claims = r#"{"exp":2,"x":"~~~?"}"#;
        let std = format!("h.{}.s", STANDARD.encode(claims));
        assert!(std.contains('/') || std.contains('+'), "{std}");
        assert_eq!(exp(&std), Some(2));
    }

    #[test]
    fn anything_else_is_none() {
        assert_eq!(exp(&jwt(r#"{"sub":"1"}"#)), None);
        assert_eq!(exp(&jwt(r#"{"exp":"soon"}"#)), None);
        assert_eq!(exp(&jwt(r#"{"exp":null}"#)), None);
        assert_eq!(exp("opaque-token"), None);
        assert_eq!(exp("a.b"), None);
        assert_eq!(exp("a.!!!.c"), None);
        assert_eq!(exp("a.Zm9vY.c"), None);
        assert_eq!(exp(&format!("x.{}.y", URL_SAFE.encode("not json"))), None);
        assert_eq!(exp(""), None);
    }

    #[test]
    fn lifetime_from_now() {
        let t = jwt(r#"{"exp":1100}"#);
        assert_eq!(lifetime(&t, 1000), Some(Duration::from_secs(100)));
        assert_eq!(lifetime(&t, 2000), Some(Duration::ZERO));
        assert_eq!(
            lifetime(&jwt(r#"{"exp":1100.5}"#), 1000),
            Some(Duration::from_secs(100))
        );
        assert_eq!(lifetime("opaque", 1000), None);
    }
}
