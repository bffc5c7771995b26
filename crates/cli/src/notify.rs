//! `connhealth notifications` (the outbox, read from the store like `history`) and
//! `connhealth notify test --sink NAME` (one signed test event, now).

use std::path::Path;

use connhealth::config_file;
use connhealth_notify::{Attempt, NotifierOptions};
use connhealth_store::DeliveryState;

use crate::error::CliError;
use crate::output::escape;
use crate::store::{cli_error, open_read, StoreChoice};

/// The states `--state` takes.
pub const STATES: [&str; 6] = [
    "pending",
    "delivering",
    "delivered",
    "failed",
    "muted",
    "sink_disabled",
];

fn state_of(s: &str) -> Option<DeliveryState> {
    [
        DeliveryState::Pending,
        DeliveryState::Delivering,
        DeliveryState::Delivered,
        DeliveryState::Failed,
        DeliveryState::Muted,
        DeliveryState::SinkDisabled,
    ]
    .into_iter()
    .find(|k| k.as_str() == s)
}

/// `connhealth notifications`: the outbox rows, newest first, and the disabled sinks.
pub async fn notifications(
    choice: &StoreChoice,
    sink: Option<&str>,
    state: Option<&str>,
    limit: usize,
    json: bool,
) -> Result<String, CliError> {
    let wanted = match state {
        None => None,
        Some(s) => Some(state_of(s).ok_or_else(|| {
            CliError::Usage(format!("--state {s:?}: one of {}", STATES.join(", ")))
        })?),
    };
    let store = open_read(choice).await?;
    let items = store
        .deliveries(sink, wanted, limit)
        .await
        .map_err(|e| cli_error(&e))?;
    let disabled = store.disabled_sinks().await.map_err(|e| cli_error(&e))?;
    if json {
        let body = serde_json::json!({ "items": items, "disabled_sinks": disabled });
        return Ok(serde_json::to_string_pretty(&body).unwrap_or_default() + "\n");
    }
    let mut out = String::new();
    for d in &disabled {
        out.push_str(&format!(
            "sink {} is disabled since {}: {}\n",
            escape(&d.sink),
            d.disabled_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            escape(&d.reason)
        ));
    }
    if items.is_empty() {
        out.push_str("no notifications stored\n");
        return Ok(out);
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|d| {
            vec![
                d.id.to_string(),
                d.event_id.to_string(),
                escape(&d.sink).into_owned(),
                d.state.as_str().to_owned(),
                d.attempts.to_string(),
                d.next_attempt_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                escape(d.last_error.as_deref().unwrap_or("")).into_owned(),
            ]
        })
        .collect();
    out.push_str(&crate::store::table(
        &[
            "ID",
            "EVENT",
            "SINK",
            "STATE",
            "ATTEMPTS",
            "NEXT",
            "LAST ERROR",
        ],
        &rows,
    ));
    Ok(out)
}

/// `connhealth notify test --sink NAME`: the outcome in one line; exit 0 when delivered, 69
/// (unavailable) when the sink did not take it.
pub async fn test(config: &Path, sink: &str) -> Result<(String, i32), CliError> {
    let (sinks, _) = crate::config::load_notify(config, &config_file::process)?;
    let Some(s) = sinks.into_iter().find(|s| s.name == sink) else {
        return Err(CliError::Usage(format!(
            "no [[notify]] sink named {:?} in {}",
            escape(sink),
            config.display()
        )));
    };
    let a = connhealth_notify::send_test(s, NotifierOptions::default())
        .await
        .map_err(|e| CliError::Config(e.to_string()))?;
    let name = escape(sink);
    Ok(match a {
        Attempt::Delivered(code) => (format!("sink {name}: delivered (HTTP {code})\n"), 0),
        Attempt::Retry { error, .. } => (
            format!("sink {name}: not delivered: {}\n", escape(&error)),
            69,
        ),
        Attempt::Fail(error) => (format!("sink {name}: refused: {}\n", escape(&error)), 69),
        Attempt::Gone => (
            format!("sink {name}: the sink answered 410 Gone (a delivery would disable it)\n"),
            69,
        ),
    })
}
