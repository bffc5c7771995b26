//! The store from the command line: which one (`--store`, the config's `store`, serve's
//! default), opening it for a watcher, and the `history` and `uptime` commands.

use std::path::Path;
use std::sync::Arc;

use connhealth_core::watch::WatchState;
use connhealth_core::Secret;
use connhealth_store::{
    GroupBy, Journal, JournalOptions, OpenOptions, Retention, Store, StoreError, StoreUrl,
    StoredEvent, UptimeQuery, UptimeReport, Window,
};

use crate::config::StoreSettings;
use crate::error::CliError;
use crate::output::escape;

/// serve's store when neither `--store`, `--state` nor the config's `store` says otherwise.
pub const DEFAULT_STORE: &str = "sqlite://connhealth.db";

/// A store chosen, not yet opened.
#[derive(Debug, Clone)]
pub struct StoreChoice {
    /// Where.
    pub url: StoreUrl,
    /// The PostgreSQL password from `store_password_env` (else PGPASSWORD, read by the store).
    pub password: Option<Secret>,
    /// `retention_days` (default 90).
    pub retention_days: u32,
}

/// Choose the store: `--store` (a relative SQLite path from the working folder), else the
/// config's `store` (relative to the config file's folder), else `default` (relative to the
/// config file's folder), else none.
pub fn choose(
    flag: Option<&str>,
    settings: &StoreSettings,
    default: Option<&str>,
) -> Result<Option<StoreChoice>, CliError> {
    let url = match (flag, settings.url.as_deref(), default) {
        (Some(f), _, _) => {
            StoreUrl::parse(f).map_err(|e| CliError::Usage(format!("--store: {e}")))?
        }
        (None, Some(u), _) => StoreUrl::parse_relative_to(u, &settings.dir)
            .map_err(|e| CliError::Config(format!("store: {e}")))?,
        (None, None, Some(d)) => StoreUrl::parse_relative_to(d, &settings.dir)
            .map_err(|e| CliError::Internal(e.to_string()))?,
        (None, None, None) => return Ok(None),
    };
    let password = match &settings.password_env {
        None => None,
        Some(var) => Some(Secret::new(std::env::var(var).map_err(|_| {
            CliError::Config(format!(
                "store_password_env: the environment variable {var} is not set"
            ))
        })?)),
    };
    Ok(Some(StoreChoice {
        url,
        password,
        retention_days: settings.retention_days.unwrap_or(90),
    }))
}

/// A store error as one CLI line: a held store or an unreadable file is 74 (as a held state
/// file), an unreachable PostgreSQL 69.
pub fn cli_error(e: &StoreError) -> CliError {
    let msg = escape(&e.to_string()).into_owned();
    match e {
        StoreError::Unavailable { .. } => CliError::Unavailable(msg),
        StoreError::BadUrl { .. } => CliError::Usage(msg),
        _ => CliError::Io(msg),
    }
}

/// Open the store for a watcher: the journal and the state the watcher starts from.
pub async fn open_journal(choice: &StoreChoice) -> Result<(Journal, WatchState), CliError> {
    let store = connhealth_store::open(
        &choice.url,
        OpenOptions {
            password: choice.password.clone(),
            read_only: false,
        },
    )
    .await
    .map_err(|e| cli_error(&e))?;
    let opts = JournalOptions {
        retention: Retention {
            retention_days: choice.retention_days,
            ..Retention::default()
        },
        ..JournalOptions::default()
    };
    Journal::load(store, opts).await.map_err(|e| cli_error(&e))
}

/// Open the store read-only (an SQLite store is then not locked: it can be read beside the
/// `serve` or `watch` that holds it).
pub async fn open_read(choice: &StoreChoice) -> Result<Arc<dyn Store>, CliError> {
    connhealth_store::open(
        &choice.url,
        OpenOptions {
            password: choice.password.clone(),
            read_only: true,
        },
    )
    .await
    .map_err(|e| match e {
        // A read-only open does not create the file.
        StoreError::Database { .. } | StoreError::Corrupt { .. } => CliError::Io(format!(
            "{} (is this the store serve or watch writes? see --store / the config's `store`)",
            escape(&e.to_string())
        )),
        e => cli_error(&e),
    })
}

/// The store of `history`/`uptime`: `--store`, else the config's (or serve's default next to
/// the config file).
pub fn choose_for_reading(flag: Option<&str>, config: &Path) -> Result<StoreChoice, CliError> {
    let settings = match flag {
        Some(_) => StoreSettings::default(),
        None => StoreSettings::load(config)?,
    };
    Ok(choose(flag, &settings, Some(DEFAULT_STORE))?.expect("a default is given"))
}

/// What one event says beyond its kind, for the table.
fn detail(e: &StoredEvent) -> String {
    let v = serde_json::to_value(&e.change).unwrap_or_default();
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
    match v["event"].as_str().unwrap_or_default() {
        "appeared" => s("status"),
        "disappeared" => format!("was {}", s("last_status")),
        "status_changed" => format!("{} -> {}", s("from"), s("to")),
        "problem_raised" => v["problem"]["code"].as_str().unwrap_or_default().to_owned(),
        "problem_cleared" => s("code"),
        "sync_progressed" => format!(
            "{}/{}",
            v["synced"].as_u64().map_or("?".into(), |n| n.to_string()),
            v["total"].as_u64().map_or("?".into(), |n| n.to_string())
        ),
        "provider_unavailable" => s("outcome"),
        _ => String::new(),
    }
}

/// Lay out rows under a header, each column as wide as its widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// `connhealth history`: one connection's events, newest first.
pub async fn history(
    choice: &StoreChoice,
    connection_id: &str,
    limit: usize,
    json: bool,
) -> Result<String, CliError> {
    let store = open_read(choice).await?;
    let page = store
        .history(connection_id, None, limit)
        .await
        .map_err(|e| cli_error(&e))?;
    if json {
        let body = serde_json::json!({ "items": page.items, "next_before": page.next });
        return Ok(serde_json::to_string_pretty(&body).unwrap_or_default() + "\n");
    }
    if page.items.is_empty() {
        return Ok(format!("no events stored for {}\n", escape(connection_id)));
    }
    let rows: Vec<Vec<String>> = page
        .items
        .iter()
        .map(|e| {
            vec![
                e.id.to_string(),
                e.change
                    .at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                e.change.kind.name().to_owned(),
                e.source.as_str().to_owned(),
                escape(&detail(e)).into_owned(),
            ]
        })
        .collect();
    Ok(table(&["ID", "AT", "EVENT", "SOURCE", "DETAIL"], &rows))
}

/// `connhealth uptime`.
pub async fn uptime(
    choice: &StoreChoice,
    window: Window,
    by: GroupBy,
    provider: Vec<String>,
    customer: Vec<String>,
    json: bool,
) -> Result<String, CliError> {
    let store = open_read(choice).await?;
    let report: UptimeReport = store
        .uptime(&UptimeQuery {
            window,
            by,
            provider,
            customer,
        })
        .await
        .map_err(|e| cli_error(&e))?;
    if json {
        return Ok(serde_json::to_string_pretty(&report).unwrap_or_default() + "\n");
    }
    let secs = |s: i64| format!("{:.1}h", s as f64 / 3600.0);
    let rows: Vec<Vec<String>> = report
        .items
        .iter()
        .map(|i| {
            vec![
                escape(&i.key).into_owned(),
                i.uptime
                    .map_or("-".into(), |u| format!("{:.3}%", u * 100.0)),
                secs(i.good_seconds),
                secs(i.bad_seconds),
                secs(i.unknown_seconds),
                i.incidents.to_string(),
                i.mttr_seconds.map_or("-".into(), |m| format!("{:.0}s", m)),
            ]
        })
        .collect();
    let mut out = format!(
        "uptime over {} ({} to {})\n",
        report.window.as_str(),
        report
            .from
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        report.to.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    out.push_str(&table(
        &[
            "KEY",
            "UPTIME",
            "GOOD",
            "BAD",
            "UNKNOWN",
            "INCIDENTS",
            "MTTR",
        ],
        &rows,
    ));
    Ok(out)
}
