//! What a sink receives: the Standard Webhooks JSON body, a digest, a Slack message.

use chrono::{DateTime, Utc};
use connhealth_core::{ChangeKind, Remediation};
use connhealth_store::{ConnectionItem, StoredEvent};
use serde_json::{json, Value};

/// At most this many events are listed in a digest's `events`.
pub const DIGEST_EVENTS: usize = 50;

/// The body for one event: `{type: "connhealth.<kind>", timestamp, data}`.
pub fn event_body(event: &StoredEvent, now: DateTime<Utc>) -> Value {
    json!({
        "type": format!("connhealth.{}", event.change.kind.name()),
        "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "data": event,
    })
}

/// The body of a digest: `{type: "connhealth.digest", timestamp, data: {count, from, to,
/// events}}`, `events` the first [`DIGEST_EVENTS`], `from`/`to` the earliest and latest `at`.
pub fn digest_body(events: &[&StoredEvent], now: DateTime<Utc>) -> Value {
    let from = events.iter().map(|e| e.change.at).min();
    let to = events.iter().map(|e| e.change.at).max();
    json!({
        "type": "connhealth.digest",
        "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "data": {
            "count": events.len(),
            "from": from,
            "to": to,
            "events": events.iter().take(DIGEST_EVENTS).collect::<Vec<_>>(),
        },
    })
}

/// Escape text for Slack mrkdwn: `&`, `<`, `>` become entities, so `<!channel>`,
/// `<@U123>` and `<url|text>` in provider text are shown, never acted on.
pub fn slack_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c if c.is_control() && c != '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A URL made safe inside Slack's `<url|label>`: only http(s), and `<`, `>`, `|` and spaces
/// percent-encoded so the link cannot end early or smuggle markup.
fn slack_url(u: &str) -> Option<String> {
    let parsed = url::Url::parse(u).ok()?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return None;
    }
    let s: String = parsed
        .as_str()
        .chars()
        .map(|c| match c {
            '<' => "%3C".to_owned(),
            '>' => "%3E".to_owned(),
            '|' => "%7C".to_owned(),
            ' ' => "%20".to_owned(),
            '&' => "&amp;".to_owned(),
            c => c.to_string(),
        })
        .collect();
    Some(s)
}

fn remediation_text(r: &Remediation) -> String {
    let link = |url: &Option<String>, label: &str| match url.as_deref().and_then(slack_url) {
        Some(u) => format!("<{u}|{label}>"),
        None => label.to_owned(),
    };
    match r {
        Remediation::Reauthenticate { url } => link(url, "Reauthenticate"),
        Remediation::Reconnect { url } => link(url, "Reconnect"),
        Remediation::GrantScopes { missing } => {
            format!("Grant scopes: {}", slack_escape(&missing.join(", ")))
        }
        Remediation::CompleteSetup { step } => format!("Complete set-up: {}", slack_escape(step)),
        Remediation::WaitForSync => "Wait for the sync to finish".to_owned(),
        Remediation::ContactProvider { detail } => {
            format!("Contact the provider: {}", slack_escape(detail))
        }
        _ => "See the problem".to_owned(),
    }
}

fn event_line(e: &StoredEvent) -> String {
    let c = &e.change;
    let what = match &c.kind {
        ChangeKind::Appeared { status } => format!("appeared as *{}*", status.as_str()),
        ChangeKind::Disappeared { last_status } => {
            format!("disappeared (was *{}*)", last_status.as_str())
        }
        ChangeKind::StatusChanged { from, to } => {
            format!("*{}* (was {})", to.as_str(), from.as_str())
        }
        ChangeKind::ProblemRaised { problem } => format!(
            "problem *{}*: {}",
            slack_escape(&problem.code),
            slack_escape(&problem.message)
        ),
        ChangeKind::ProblemCleared { code } => format!("problem cleared: {}", slack_escape(code)),
        ChangeKind::SyncProgressed { synced, total } => format!(
            "sync {} / {}",
            synced.map_or("?".into(), |s| s.to_string()),
            total.map_or("?".into(), |s| s.to_string())
        ),
        ChangeKind::ProviderUnavailable { outcome, .. } => {
            format!("*provider unavailable* ({outcome:?})").to_lowercase()
        }
        ChangeKind::ProviderRecovered => "provider recovered".to_owned(),
        _ => slack_escape(c.kind.name()),
    };
    let mut line = format!("*{}*", slack_escape(&c.provider));
    if let Some(cust) = &c.customer_id {
        line.push_str(&format!(" · customer {}", slack_escape(cust)));
    }
    if let Some(p) = &c.platform {
        line.push_str(&format!(" · {}", slack_escape(p)));
    }
    line.push_str(": ");
    line.push_str(&what);
    if let ChangeKind::ProblemRaised { problem } = &c.kind {
        if let Some(r) = &problem.remediation {
            line.push_str(&format!("\n→ {}", remediation_text(r)));
        }
    }
    line
}

/// A Slack incoming-webhook message for one event.
pub fn slack_event(e: &StoredEvent) -> Value {
    let text = event_line(e);
    json!({
        "text": text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
    })
}

/// A Slack message for a digest (the first [`DIGEST_EVENTS`] lines, then a count).
pub fn slack_digest(events: &[&StoredEvent]) -> Value {
    let mut text = format!("*connhealth: {} changes*", events.len());
    for e in events.iter().take(DIGEST_EVENTS) {
        text.push('\n');
        text.push_str(&event_line(e));
    }
    if events.len() > DIGEST_EVENTS {
        text.push_str(&format!("\n… and {} more", events.len() - DIGEST_EVENTS));
    }
    // Slack cuts a section's text at 3000 characters; the plain `text` carries it all.
    let short: String = text.chars().take(2900).collect();
    json!({
        "text": text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": short}}],
    })
}

fn reminder_item(i: &ConnectionItem, now: DateTime<Utc>) -> Value {
    let c = &i.connection;
    json!({
        "connection_id": c.id,
        "provider": c.provider,
        "customer_id": c.customer.id,
        "platform": c.platform,
        "status": c.status,
        "since": i.since,
        "bad_for_seconds": (now - i.since).num_seconds().max(0),
        "problems": c.problems,
    })
}

/// The body of a reminder (`remind_after`): `{type: "connhealth.reminder", timestamp, data:
/// {count, connections}}`, `connections` the first [`DIGEST_EVENTS`] of those still bad, each
/// `{connection_id, provider, customer_id, platform, status, since, bad_for_seconds,
/// problems}` (`since`: when the current status began).
pub fn reminder_body(items: &[&ConnectionItem], now: DateTime<Utc>) -> Value {
    json!({
        "type": "connhealth.reminder",
        "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "data": {
            "count": items.len(),
            "connections": items.iter().take(DIGEST_EVENTS).map(|i| reminder_item(i, now)).collect::<Vec<_>>(),
        },
    })
}

/// A Slack message for a reminder.
pub fn slack_reminder(items: &[&ConnectionItem], now: DateTime<Utc>) -> Value {
    let mut text = format!("*connhealth: {} connections still bad*", items.len());
    for i in items.iter().take(DIGEST_EVENTS) {
        let c = &i.connection;
        let hours = (now - i.since).num_minutes() as f64 / 60.0;
        text.push_str(&format!(
            "\n*{}* · customer {} · {}: *{}* for {hours:.1} h",
            slack_escape(&c.provider),
            slack_escape(&c.customer.id),
            slack_escape(&c.platform),
            c.status.as_str()
        ));
    }
    if items.len() > DIGEST_EVENTS {
        text.push_str(&format!("\n… and {} more", items.len() - DIGEST_EVENTS));
    }
    let short: String = text.chars().take(2900).collect();
    json!({
        "text": text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": short}}],
    })
}
