//! The Prometheus text exposition (format 0.0.4), written by hand: a dozen series do not need
//! a metrics library, and this way every series is derived from the same snapshot the JSON
//! routes serve.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use connhealth_core::{Outcome, Status};

use crate::state::AppState;
use crate::webhook::Received;

/// The content type of the exposition.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every event name the watcher can emit, so `connhealth_events_total` starts at zero for each.
const EVENT_NAMES: [&str; 8] = [
    "appeared",
    "disappeared",
    "status_changed",
    "problem_raised",
    "problem_cleared",
    "sync_progressed",
    "provider_unavailable",
    "provider_recovered",
];

/// Escape a label value: backslash, double quote and line feed (the exposition format's rule).
pub(crate) fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for ch in value.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

pub(crate) fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A float the way Prometheus reads it.
pub(crate) fn float(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else if v.is_nan() {
        "NaN".into()
    } else if v > 0.0 {
        "+Inf".into()
    } else {
        "-Inf".into()
    }
}

/// Render every series.
pub(crate) fn render(state: &AppState) -> String {
    let mut out = String::with_capacity(4096);
    let snapshot = state.snapshot();

    header(
        &mut out,
        "connhealth_ready",
        "gauge",
        "1 once the first poll has finished.",
    );
    let _ = writeln!(out, "connhealth_ready {}", u8::from(snapshot.is_some()));

    if let Some(s) = &snapshot {
        let report = &s.report;
        // Providers in configuration order, then any that only appear in connections.
        let mut providers: Vec<&str> = report
            .providers
            .iter()
            .map(|p| p.provider.as_str())
            .collect();
        let listed: BTreeSet<&str> = providers.iter().copied().collect();
        let extra: BTreeSet<&str> = report
            .connections
            .iter()
            .map(|c| c.provider.as_str())
            .filter(|p| !listed.contains(p))
            .collect();
        providers.extend(extra);

        header(
            &mut out,
            "connhealth_connections",
            "gauge",
            "Connections per provider and normalized status, in the current report.",
        );
        for provider in &providers {
            let p = escape_label(provider);
            for status in Status::ALL {
                let n = report
                    .connections
                    .iter()
                    .filter(|c| c.provider == *provider && c.status == status)
                    .count();
                let _ = writeln!(
                    out,
                    "connhealth_connections{{provider=\"{p}\",status=\"{status}\"}} {n}"
                );
            }
        }

        header(
            &mut out,
            "connhealth_provider_up",
            "gauge",
            "1 when the provider's last outcome was ok or partial, else 0.",
        );
        for p in &report.providers {
            let up = matches!(p.outcome, Outcome::Ok | Outcome::Partial);
            let _ = writeln!(
                out,
                "connhealth_provider_up{{provider=\"{}\"}} {}",
                escape_label(&p.provider),
                u8::from(up)
            );
        }

        header(
            &mut out,
            "connhealth_last_poll_duration_seconds",
            "gauge",
            "How long the last poll took.",
        );
        let _ = writeln!(
            out,
            "connhealth_last_poll_duration_seconds {}",
            float(s.duration.as_secs_f64())
        );
        header(
            &mut out,
            "connhealth_last_poll_timestamp_seconds",
            "gauge",
            "When the last poll finished, in seconds since the Unix epoch.",
        );
        let _ = writeln!(
            out,
            "connhealth_last_poll_timestamp_seconds {}",
            float(s.polled_at.timestamp_millis() as f64 / 1000.0)
        );
    }

    state.with_counters(|c| {
        header(
            &mut out,
            "connhealth_polls_total",
            "counter",
            "Polls finished since the server started.",
        );
        let _ = writeln!(out, "connhealth_polls_total {}", c.polls);

        header(
            &mut out,
            "connhealth_poll_errors_total",
            "counter",
            "Errors providers reported while polling, by provider and error kind.",
        );
        for ((provider, kind), n) in &c.poll_errors {
            let _ = writeln!(
                out,
                "connhealth_poll_errors_total{{provider=\"{}\",kind=\"{}\"}} {n}",
                escape_label(provider),
                escape_label(kind)
            );
        }

        header(
            &mut out,
            "connhealth_events_total",
            "counter",
            "Change events published, by event name.",
        );
        for name in EVENT_NAMES {
            let n = c.events.get(name).copied().unwrap_or(0);
            let _ = writeln!(out, "connhealth_events_total{{event=\"{name}\"}} {n}");
        }
    });

    let stats = state.http_stats();
    if !stats.is_empty() {
        header(
            &mut out,
            "connhealth_http_retries_total",
            "counter",
            "HTTP retries the provider's client sent.",
        );
        for (provider, s) in &stats {
            let _ = writeln!(
                out,
                "connhealth_http_retries_total{{provider=\"{}\"}} {}",
                escape_label(provider),
                s.retries()
            );
        }
        rate_series(&mut out, &stats);
    }

    let save = state.save_stats();
    if save.configured {
        header(
            &mut out,
            "connhealth_state_save_failures_total",
            "counter",
            "Saves of the --state file that failed.",
        );
        let _ = writeln!(
            out,
            "connhealth_state_save_failures_total {}",
            save.failures
        );
        header(
            &mut out,
            "connhealth_state_save_failing",
            "gauge",
            "1 while the last save of the --state file failed.",
        );
        let _ = writeln!(
            out,
            "connhealth_state_save_failing {}",
            u8::from(save.failing)
        );
    }

    let st = state.store_stats();
    if st.configured {
        let rows: [(&str, &str, &str, String); 5] = [
            (
                "connhealth_store_write_failures_total",
                "counter",
                "Attempts to write polls to the store that failed.",
                st.failures.to_string(),
            ),
            (
                "connhealth_store_write_failing",
                "gauge",
                "1 while the last write to the store failed.",
                u8::from(st.failing).to_string(),
            ),
            (
                "connhealth_store_pending_polls",
                "gauge",
                "Polls kept in memory because the store could not be written.",
                st.pending_polls.to_string(),
            ),
            (
                "connhealth_store_pending_events",
                "gauge",
                "Change events kept in memory because the store could not be written.",
                st.pending_events.to_string(),
            ),
            (
                "connhealth_store_dropped_events_total",
                "counter",
                "Change events never stored: the store was unwritable past the in-memory bound.",
                st.dropped_events.to_string(),
            ),
        ];
        for (name, kind, help, value) in rows {
            header(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
    }

    render_webhooks(&mut out, state);
    crate::schedule::render(&mut out, state);
    crate::replica::render_metrics(&mut out, state);

    let (open, over_cap) = state.connection_counts();
    header(
        &mut out,
        "connhealth_server_connections_open",
        "gauge",
        "HTTP connections open now.",
    );
    let _ = writeln!(out, "connhealth_server_connections_open {open}");
    header(
        &mut out,
        "connhealth_server_connections_over_cap_total",
        "counter",
        "HTTP connections that arrived past the connection cap (served /healthz only, or closed).",
    );
    let _ = writeln!(
        out,
        "connhealth_server_connections_over_cap_total {over_cap}"
    );
    // Notifications: deliveries by sink and outcome, requests by sink, disabled sinks.
    if let Some(n) = state.notifier() {
        out.push_str(&n.render_prometheus());
    }
    out
}

/// The webhook intake's series: only with a store (without one, `serve` takes no webhooks).
fn render_webhooks(out: &mut String, state: &AppState) {
    if state.store().is_none() {
        return;
    }
    let intake = state.intake();
    let stats = intake.stats();
    header(
        out,
        "connhealth_webhooks_received_total",
        "counter",
        "Webhooks received, by provider (\"unknown\" for a name not configured) and outcome.",
    );
    // Every outcome of every provider that has webhooks configured starts at zero.
    let mut received = stats.received.clone();
    for provider in intake.webhook_providers() {
        for outcome in Received::ALL {
            received.entry((provider.clone(), outcome)).or_default();
        }
    }
    for ((provider, outcome), n) in &received {
        let _ = writeln!(
            out,
            "connhealth_webhooks_received_total{{provider=\"{}\",outcome=\"{}\"}} {n}",
            escape_label(provider),
            outcome.as_str()
        );
    }
    header(
        out,
        "connhealth_webhook_queue_depth",
        "gauge",
        "Targeted refreshes queued and not yet finished.",
    );
    let _ = writeln!(out, "connhealth_webhook_queue_depth {}", intake.depth());
    header(
        out,
        "connhealth_webhook_queue_bound",
        "gauge",
        "The queue's bound: past it, webhooks and refresh requests get 429.",
    );
    let _ = writeln!(out, "connhealth_webhook_queue_bound {}", intake.bound());
    header(
        out,
        "connhealth_refreshes_total",
        "counter",
        "Targeted refreshes finished, by provider, source (webhook, refresh) and result (done, failed, retried).",
    );
    for ((provider, source, result), n) in &stats.refreshes {
        let _ = writeln!(
            out,
            "connhealth_refreshes_total{{provider=\"{}\",source=\"{}\",result=\"{}\"}} {n}",
            escape_label(provider),
            escape_label(source),
            result.as_str()
        );
    }
    header(
        out,
        "connhealth_webhook_last_received_timestamp_seconds",
        "gauge",
        "When the provider's last accepted webhook arrived, in seconds since the Unix epoch.",
    );
    for (provider, at) in &stats.last_webhook {
        let _ = writeln!(
            out,
            "connhealth_webhook_last_received_timestamp_seconds{{provider=\"{}\"}} {}",
            escape_label(provider),
            float(at.timestamp_millis() as f64 / 1000.0)
        );
    }
}

/// The rate control's series (see `connhealth_core::rate`), one per provider with HTTP counters.
fn rate_series(
    out: &mut String,
    stats: &[(String, std::sync::Arc<connhealth_core::http::HttpStats>)],
) {
    type Get = fn(&connhealth_core::http::HttpStats) -> Option<String>;
    let series: [(&str, &str, &str, Get); 6] = [
        (
            "connhealth_provider_rate_limit",
            "gauge",
            "The pacing limit in force, in requests per second (the smaller of rate_limit and the adaptive rate; +Inf while neither applies).",
            |s| Some(float(s.current_limit().unwrap_or(f64::INFINITY))),
        ),
        (
            "connhealth_provider_rate_budget",
            "gauge",
            "The configured rate_limit, in requests per second (only providers that set one).",
            |s| s.configured_rate().map(float),
        ),
        (
            "connhealth_provider_request_rate",
            "gauge",
            "Requests the provider answered (not throttled) in the last second.",
            |s| Some(float(s.current_rate())),
        ),
        (
            "connhealth_provider_rate_limited_total",
            "counter",
            "Answers 429 (Too Many Requests) received from the provider.",
            |s| Some(s.rate_limited().to_string()),
        ),
        (
            "connhealth_provider_unavailable_total",
            "counter",
            "Answers 503 (Service Unavailable) received from the provider.",
            |s| Some(s.unavailable().to_string()),
        ),
        (
            "connhealth_provider_paused_seconds_total",
            "counter",
            "Time every request to the provider waited for a Retry-After pause, in seconds.",
            |s| Some(float(s.paused().as_secs_f64())),
        ),
    ];
    for (name, kind, help, get) in series {
        header(out, name, kind, help);
        for (provider, s) in stats {
            if let Some(v) = get(s) {
                let _ = writeln!(out, "{name}{{provider=\"{}\"}} {v}", escape_label(provider));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use chrono::Utc;
    use connhealth_core::watch::Poll;
    use connhealth_core::{Connection, Customer, HealthReport, ProviderOutcome, Role};

    fn conn(provider: &str, id: &str, status: Status) -> Connection {
        let mut built = Connection::new(
            provider,
            None,
            Customer::new("c"),
            "shopify",
            Role::Source,
            status,
            Utc::now(),
        );
        built.id = format!("{provider}:{id}");
        built.provider_connection_id = Some(id.into());
        built.provider_status = "x".into();
        built
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("a\nb"), "a\\nb");
        assert_eq!(escape_label("plain:é"), "plain:é");
    }

    #[test]
    fn every_status_of_every_provider_is_present_and_names_are_escaped() {
        let weird = "we\"ird\\name\n";
        let report = HealthReport::new(
            Utc::now(),
            vec![ProviderOutcome {
                provider: weird.into(),
                outcome: Outcome::Partial,
                connections: 2,
                elapsed_ms: 1,
                errors: vec![],
            }],
            vec![
                conn(weird, "1", Status::Degraded),
                conn(weird, "2", Status::Degraded),
            ],
        );
        let state = AppState::new(None, 4);
        assert!(render(&state).contains("connhealth_ready 0\n"));
        state.record_poll(
            &Poll {
                report,
                changes: vec![],
            },
            Duration::from_millis(1500),
        );
        let text = render(&state);
        let label = r#"provider="we\"ird\\name\n""#;
        for status in Status::ALL {
            let n = if status == Status::Degraded { 2 } else { 0 };
            let line = format!("connhealth_connections{{{label},status=\"{status}\"}} {n}\n");
            assert!(text.contains(&line), "{line} missing from\n{text}");
        }
        assert!(text.contains(&format!("connhealth_provider_up{{{label}}} 1\n")));
        assert!(text.contains("connhealth_last_poll_duration_seconds 1.5\n"));
        assert!(text.contains("connhealth_events_total{event=\"status_changed\"} 0\n"));
        assert!(!text.contains("connhealth_http_retries_total"));
        // Every line is a comment or `name{labels} value` with no raw newline inside.
        for line in text.lines() {
            assert!(
                line.starts_with('#') || line.starts_with("connhealth_"),
                "{line}"
            );
        }
    }

    /// Issue 22: the rate control's series, from a real client that met a real 429.
    #[tokio::test]
    async fn rate_series_show_the_budget_the_limit_and_429s() {
        use connhealth_core::http::{HeaderName, HttpClient, HttpConfig, Method, RetryPolicy};
        use connhealth_testkit::{Channel3Sim, RateLimitFault};

        let sim = Channel3Sim::start_generated(2, 1).await.unwrap();
        sim.faults()
            .set_rate_limit(Some(RateLimitFault::per_second(1.0 / 60.0)));
        let mut cfg = HttpConfig::new(sim.base_url());
        cfg.retry = RetryPolicy::none();
        cfg.rate_limit = Some("100/s".parse().unwrap());
        let budgeted = HttpClient::new("c3", &cfg).unwrap();
        let unbudgeted = HttpClient::new("other", &HttpConfig::new(sim.base_url())).unwrap();
        let key = connhealth_core::Secret::new(sim.api_key());
        let mut statuses = Vec::new();
        for _ in 0..2 {
            let url = budgeted.url(&["v0", "partner", "merchants"]).unwrap();
            let req = budgeted
                .request(Method::GET, "GET /v0/partner/merchants", url)
                .secret_header(HeaderName::from_static("x-api-key"), "", &key);
            statuses.push(match budgeted.send(req).await {
                Ok(r) => r.status(),
                Err(e) => e.http_status().unwrap_or(0),
            });
        }
        assert_eq!(statuses, [200, 429]);
        let state = AppState::new(None, 4);
        state.add_http_stats("c3".into(), budgeted.stats().clone());
        state.add_http_stats("other".into(), unbudgeted.stats().clone());
        let text = render(&state);
        for line in [
            "# TYPE connhealth_provider_rate_limit gauge\n",
            "# TYPE connhealth_provider_rate_limited_total counter\n",
            "connhealth_provider_rate_budget{provider=\"c3\"} 100\n",
            // Seeded from the one answer accepted in the last second, under the budget.
            "connhealth_provider_rate_limit{provider=\"c3\"} 1\n",
            "connhealth_provider_rate_limit{provider=\"other\"} +Inf\n",
            "connhealth_provider_rate_limited_total{provider=\"c3\"} 1\n",
            "connhealth_provider_rate_limited_total{provider=\"other\"} 0\n",
            "connhealth_provider_unavailable_total{provider=\"c3\"} 0\n",
            "connhealth_provider_request_rate{provider=\"other\"} 0\n",
            "connhealth_provider_paused_seconds_total{provider=\"other\"} 0\n",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(!text.contains("connhealth_provider_rate_budget{provider=\"other\"}"));
        // A Retry-After of about a minute (one token a minute), capped at the policy's 60 s.
        let paused = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("connhealth_provider_paused_seconds_total{provider=\"c3\"} ")
            })
            .and_then(|v| v.parse::<f64>().ok())
            .expect("paused seconds of c3");
        assert!((55.0..=60.0).contains(&paused), "{paused}");
        let rate = text
            .lines()
            .find_map(|l| l.strip_prefix("connhealth_provider_request_rate{provider=\"c3\"} "))
            .and_then(|v| v.parse::<f64>().ok())
            .expect("request rate of c3");
        assert_eq!(rate, 1.0);
    }
}
