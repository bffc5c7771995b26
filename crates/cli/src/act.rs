//! `connhealth act CONNECTION_ID KIND`: perform an action through a running `serve`.
//!
//! The action goes over HTTP to `POST {url}/v1/connections/{id}/actions/{kind}` with the admin
//! token, rather than straight to the provider: `serve` owns the watcher and the store (a
//! SQLite store is held by one process), so only through it is the re-fetched connection
//! recorded as an event of source `action` and the attempt written to the audit log.
//!
//! Output: one line `{ok|failed}: {kind} {connection}: {message}`, then the `url` (link
//! actions) and `retry at: …` when given, every provider-sent text escaped; `--format json`
//! prints the answer's JSON as sent. Exit code 0 when the action was done, 1 when `ok` was
//! false (unsupported, rate limited, the provider failed); other failures are [`CliError`]s.

use std::time::Duration;

use serde_json::Value;

use crate::error::CliError;
use crate::output::escape;

/// What `act` needs.
#[derive(Debug)]
pub struct ActArgs<'a> {
    /// The server's base URL, e.g. `http://127.0.0.1:8080`.
    pub url: &'a str,
    /// The admin token.
    pub admin_token: &'a str,
    /// The connection id.
    pub connection_id: &'a str,
    /// The action kind.
    pub kind: &'a str,
    /// Print the JSON answer instead of text.
    pub json: bool,
}

/// Perform it; the text to print and the exit code.
pub async fn act(args: &ActArgs<'_>) -> Result<(String, i32), CliError> {
    let mut base = url::Url::parse(args.url)
        .map_err(|e| CliError::Usage(format!("--url {:?} is not a URL: {e}", args.url)))?;
    if !matches!(base.scheme(), "http" | "https") {
        return Err(CliError::Usage(format!(
            "--url {:?} must be http:// or https://",
            args.url
        )));
    }
    base.path_segments_mut()
        .map_err(|_| CliError::Usage(format!("--url {:?} cannot be a base", args.url)))?
        .pop_if_empty()
        .extend([
            "v1",
            "connections",
            args.connection_id,
            "actions",
            args.kind,
        ]);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| CliError::Internal(format!("HTTP client: {e}")))?;
    let resp = client
        .post(base.clone())
        .bearer_auth(args.admin_token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body("{}")
        .send()
        .await
        .map_err(|e| CliError::Unavailable(format!("cannot reach {}: {e}", args.url)))?;
    let status = resp.status().as_u16();
    let body = resp
        .bytes()
        .await
        .map_err(|e| CliError::Unavailable(format!("reading the answer from {}: {e}", args.url)))?;
    let value: Value = serde_json::from_slice(&body).map_err(|_| {
        CliError::Unavailable(format!(
            "{} answered HTTP {status} without JSON (is it connhealth serve?)",
            args.url
        ))
    })?;
    // Not an action answer: the server refused the request itself.
    let Some(ok) = value.get("ok").and_then(Value::as_bool) else {
        let message = value["message"].as_str().unwrap_or("no message");
        let line = format!("HTTP {status}: {}", escape(message));
        return Err(match status {
            401 | 403 => CliError::Usage(format!("{line} (check --admin-token)")),
            404 => CliError::Usage(line),
            _ => CliError::Unavailable(line),
        });
    };
    let code = if ok { 0 } else { 1 };
    if args.json {
        let mut text = serde_json::to_string(&value).unwrap_or_default();
        text.push('\n');
        return Ok((text, code));
    }
    let mut text = format!(
        "{}: {} {}: {}\n",
        if ok { "ok" } else { "failed" },
        escape(args.kind),
        escape(args.connection_id),
        escape(value["message"].as_str().unwrap_or("")),
    );
    if let Some(url) = value["url"].as_str() {
        text.push_str(&format!("url: {}\n", escape(url)));
    }
    if let Some(status) = value["connection"]["status"].as_str() {
        text.push_str(&format!("status now: {}\n", escape(status)));
    }
    if let Some(at) = value["retry_at"].as_str() {
        text.push_str(&format!("retry at: {}\n", escape(at)));
    }
    Ok((text, code))
}
