//! Small HTTP helpers: JSON bodies, error bodies, ETags, token comparison, CSP.

use std::sync::OnceLock;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use sha2::{Digest, Sha256};

/// The content type of every JSON response.
pub(crate) const JSON: &str = "application/json; charset=utf-8";

/// A JSON response from already-serialized bytes.
pub(crate) fn json_bytes(status: StatusCode, body: Bytes) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(JSON))],
        body,
    )
        .into_response()
}

/// A JSON response from a value.
pub(crate) fn json_value(status: StatusCode, value: &serde_json::Value) -> Response {
    json_bytes(status, Bytes::from(value.to_string()))
}

/// The error body every failure uses: `{"error": code, "message": text}`.
pub(crate) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    json_value(
        status,
        &serde_json::json!({ "error": code, "message": message.into() }),
    )
}

/// 503 before the first poll finished.
pub(crate) fn not_ready() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
        "the first poll has not finished yet; retry shortly",
    )
}

/// A strong ETag: the first 128 bits of the body's SHA-256, hex, quoted.
pub(crate) fn etag_of(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let mut s = String::with_capacity(34);
    s.push('"');
    for b in &digest[..16] {
        s.push_str(&format!("{b:02x}"));
    }
    s.push('"');
    s
}

/// Whether `If-None-Match` matches `etag` (weak comparison, as RFC 9110 §13.1.2 requires for
/// this header; `*` matches any current representation).
pub(crate) fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// A JSON body with its ETag, or 304 when the client already has it.
pub(crate) fn json_with_etag(headers: &HeaderMap, body: Bytes, etag: &str) -> Response {
    let etag_value = HeaderValue::from_str(etag).expect("hex in quotes is a valid header value");
    if none_match(headers, etag) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response();
    }
    let mut resp = json_bytes(StatusCode::OK, body);
    resp.headers_mut().insert(header::ETAG, etag_value);
    resp
}

/// Compare two byte strings in time that depends only on their lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Compare digests: equal-length inputs, so not even the token's length leaks through
    // timing (beyond hashing time, which does not depend on the secret's content).
    let (da, db) = (Sha256::digest(a), Sha256::digest(b));
    da.iter()
        .zip(db.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The text between the first `<open` tag and `</close>` of `html` (exclusive).
fn inner_of<'a>(html: &'a str, open: &str, close: &str) -> &'a str {
    let start = html
        .find(open)
        .and_then(|i| html[i..].find('>').map(|j| i + j + 1))
        .unwrap_or(0);
    let end = html[start..].find(close).map_or(start, |j| start + j);
    &html[start..end]
}

fn sha256_source(text: &str) -> String {
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes()))
    )
}

/// The dashboard's Content-Security-Policy: only its own inline script and style (by hash),
/// fetches to this origin, nothing else.
pub(crate) fn dashboard_csp(html: &str) -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        let script = sha256_source(inner_of(html, "<script", "</script>"));
        let style = sha256_source(inner_of(html, "<style", "</style>"));
        format!(
            "default-src 'none'; script-src {script}; style-src {style}; connect-src 'self'; \
             img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_strong_and_match_weakly() {
        let tag = etag_of(b"{}");
        assert!(tag.starts_with('"') && tag.ends_with('"') && tag.len() == 34);
        assert_ne!(tag, etag_of(b"{ }"));
        let mut h = HeaderMap::new();
        assert!(!none_match(&h, &tag));
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"x\", W/{tag}")).unwrap(),
        );
        assert!(none_match(&h, &tag));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(none_match(&h, &tag));
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn csp_hashes_the_inline_script_and_style() {
        let html = "<style>a{}</style><script type=\"module\">x()</script>";
        assert_eq!(inner_of(html, "<script", "</script>"), "x()");
        assert_eq!(inner_of(html, "<style", "</style>"), "a{}");
        // sha256("x()"), computed independently.
        assert_eq!(
            sha256_source("x()"),
            "'sha256-D6IGS8VMvCoyaR/l0h9tERrBTATY01CoPS7l6xDv0kI='"
        );
    }
}
