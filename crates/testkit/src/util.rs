//! Small shared helpers: the simulators' clock, fake JWTs, id formats, query parsing.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde_json::Value;

/// The simulators' idea of "now": a wall-clock instant taken at start plus the time elapsed
/// on **tokio's** clock since then, so that tests with a paused clock
/// (`#[tokio::test(start_paused = true)]`) move it with `tokio::time::advance`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SimClock {
    wall: DateTime<Utc>,
    instant: tokio::time::Instant,
}

impl SimClock {
    pub(crate) fn new() -> Self {
        SimClock {
            wall: Utc::now(),
            instant: tokio::time::Instant::now(),
        }
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.instant);
        let delta = TimeDelta::from_std(elapsed).unwrap_or(TimeDelta::MAX);
        self.wall.checked_add_signed(delta).unwrap_or(self.wall)
    }

    pub(crate) fn now_secs(&self) -> i64 {
        self.now().timestamp()
    }

    pub(crate) fn now_millis(&self) -> i64 {
        self.now().timestamp_millis()
    }

    pub(crate) fn rfc3339_in(&self, secs: i64) -> String {
        let t = self
            .now()
            .checked_add_signed(TimeDelta::seconds(secs))
            .unwrap_or_else(|| self.now());
        t.to_rfc3339_opts(SecondsFormat::Secs, true)
    }
}

/// Build a JWT-shaped token: real base64url header and payload, a random fake signature.
pub(crate) fn mint_jwt(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let mut sig = [0u8; 32];
    for b in sig.iter_mut() {
        *b = fastrand::u8(..);
    }
    format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// A random token id.
pub(crate) fn random_id(len: usize) -> String {
    (0..len).map(|_| fastrand::alphanumeric()).collect()
}

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A ULID-like id: 10 Crockford base32 characters of milliseconds, 16 of randomness.
pub(crate) fn ulid(rng: &mut fastrand::Rng, millis: u64) -> String {
    let mut s = String::with_capacity(26);
    for i in (0..10).rev() {
        let idx = ((millis >> (i * 5)) & 31) as usize;
        s.push(CROCKFORD[idx] as char);
    }
    for _ in 0..16 {
        s.push(CROCKFORD[rng.usize(..32)] as char);
    }
    s
}

/// A UUID-v4-like id.
pub(crate) fn uuid(rng: &mut fastrand::Rng) -> String {
    let hex = |rng: &mut fastrand::Rng, n: usize| -> String {
        (0..n)
            .map(|_| char::from_digit(rng.u32(..16), 16).unwrap_or('0'))
            .collect()
    };
    let variant = ['8', '9', 'a', 'b'][rng.usize(..4)];
    format!(
        "{}-{}-4{}-{}{}-{}",
        hex(rng, 8),
        hex(rng, 4),
        hex(rng, 3),
        variant,
        hex(rng, 3),
        hex(rng, 12)
    )
}

/// Parse a raw query string into decoded `(key, value)` pairs (never fails).
pub(crate) fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    })
    .unwrap_or_default()
}

/// The first value of `key` in decoded query pairs.
pub(crate) fn query_get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulid_and_uuid_shapes() {
        let mut rng = fastrand::Rng::with_seed(1);
        let u = ulid(&mut rng, 1_723_000_000_000);
        assert_eq!(u.len(), 26);
        assert!(u.bytes().all(|b| CROCKFORD.contains(&b)));
        let id = uuid(&mut rng);
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
    }

    #[test]
    fn jwt_has_three_segments() {
        let t = mint_jwt(&serde_json::json!({"sub":"x","exp":1}));
        assert_eq!(t.split('.').count(), 3);
        let payload = t.split('.').nth(1).unwrap_or_default();
        let bytes = URL_SAFE_NO_PAD.decode(payload).unwrap_or_default();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        assert_eq!(v["exp"], 1);
    }
}
