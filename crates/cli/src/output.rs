//! Rendering a report: a table for people, JSON and NDJSON for programs, and the exit code.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use connhealth_core::{Connection, HealthReport, Outcome, Remediation, Status};

/// Output formats of `check` and `demo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table grouped by customer, worst first.
    Table,
    /// The `HealthReport` as one JSON document.
    Json,
    /// One connection per line, then one summary line.
    Ndjson,
}

/// Table options.
#[derive(Debug, Clone, Copy, Default)]
pub struct TableOptions {
    /// ANSI colours.
    pub color: bool,
    /// Show `healthy` and `not_connected` rows too (otherwise only counted).
    pub all: bool,
}

/// Exit codes: 0 healthy (also pending/syncing and not_connected: nothing is wrong yet),
/// 1 degraded or unknown, 2 action required or disconnected, 3 a provider did not fully
/// answer (partial, failed, timed out) — 3 wins because the report is incomplete.
pub fn exit_code(report: &HealthReport) -> i32 {
    if report.providers.iter().any(|p| p.outcome != Outcome::Ok) {
        return 3;
    }
    match report.overall {
        Status::Healthy | Status::NotConnected | Status::Pending | Status::Syncing => 0,
        Status::Unknown | Status::Degraded => 1,
        // `Status` may grow: a status this build does not know counts as needing action.
        _ => 2,
    }
}

/// The report as pretty JSON (the JSON names of ARCHITECTURE.md exactly), with a trailing newline.
pub fn json(report: &HealthReport) -> String {
    let mut s = serde_json::to_string_pretty(report).expect("a report always serializes");
    s.push('\n');
    s
}

/// One connection per line, then a line with everything but the connections
/// (`generated_at`, `overall`, `summary`, `providers`).
pub fn ndjson(report: &HealthReport) -> String {
    let mut out = String::new();
    for c in &report.connections {
        out.push_str(&serde_json::to_string(&**c).expect("a connection always serializes"));
        out.push('\n');
    }
    let summary = serde_json::json!({
        "generated_at": report.generated_at,
        "overall": report.overall,
        "summary": report.summary,
        "providers": report.providers,
    });
    out.push_str(&summary.to_string());
    out.push('\n');
    out
}

/// Whether `c` must not reach a terminal raw: control characters (C0, DEL, C1), the bidi
/// embeddings, overrides, isolates and marks (which reorder what follows them), and the
/// Unicode line and paragraph separators.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{061C}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

/// Text from a provider (ids, names, statuses, messages) or any other outside source, made
/// safe for a terminal: every character of [`needs_escape`] becomes a visible escape
/// (`\n`, `\r`, `\t`, else `\u{1b}`), so no text can move the cursor, clear the screen,
/// set the window title, ring the bell, draw a fake row or reorder the rest of the line.
/// Everything else is kept as it is. Used for every field of the table, every message on
/// stderr that carries outside text, and every field of the logs; JSON and NDJSON output
/// is exact instead (JSON escapes control characters itself).
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn paint(color: bool, status: Status, text: &str) -> String {
    if !color {
        return text.to_owned();
    }
    let code = match status {
        Status::Healthy => "32",
        Status::NotConnected => "2",
        Status::Pending | Status::Syncing => "36",
        Status::Unknown => "35",
        Status::Degraded => "33",
        Status::Disconnected => "31",
        _ => "1;31",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// How to fix it, in words.
pub fn remediation_text(r: &Remediation) -> String {
    match r {
        Remediation::Reauthenticate { url: Some(u) } => format!("re-authenticate: {u}"),
        Remediation::Reauthenticate { url: None } => "re-authenticate".to_owned(),
        Remediation::GrantScopes { missing } => format!("grant scopes: {}", missing.join(", ")),
        Remediation::Reconnect { url: Some(u) } => format!("reconnect: {u}"),
        Remediation::Reconnect { url: None } => "reconnect".to_owned(),
        Remediation::CompleteSetup { step } => format!("complete set-up: {step}"),
        Remediation::WaitForSync => "wait for the sync to finish".to_owned(),
        Remediation::ContactProvider { detail } => format!("contact the provider: {detail}"),
        _ => "see the problem's message".to_owned(),
    }
}

/// The table: customers worst first, each connection on a row with its problems and
/// remediations beneath, then counts per status and per provider outcome.
pub fn table(report: &HealthReport, opts: TableOptions) -> String {
    let mut by_customer: BTreeMap<&str, Vec<&Connection>> = BTreeMap::new();
    for c in &report.connections {
        by_customer
            .entry(c.customer.id.as_str())
            .or_default()
            .push(c);
    }
    let mut customers: Vec<(&str, Vec<&Connection>)> = by_customer.into_iter().collect();
    for (_, conns) in &mut customers {
        conns.sort_by(|a, b| b.status.cmp(&a.status).then(a.id.cmp(&b.id)));
    }
    let worst = |cs: &[&Connection]| cs.iter().map(|c| c.status).max().unwrap_or(Status::Healthy);
    customers.sort_by(|a, b| worst(&b.1).cmp(&worst(&a.1)).then(a.0.cmp(b.0)));

    let shown = |c: &Connection| opts.all || !c.status.is_ok();
    let rows: Vec<&Connection> = customers
        .iter()
        .flat_map(|(_, cs)| cs.iter().copied())
        .filter(|c| shown(c))
        .collect();
    let w_status = rows
        .iter()
        .map(|c| c.status.as_str().len())
        .max()
        .unwrap_or(6)
        .max(6);
    let w_provider = rows
        .iter()
        .map(|c| escape(&c.provider).chars().count())
        .max()
        .unwrap_or(8)
        .max(8);
    let w_platform = rows
        .iter()
        .map(|c| escape(&c.platform).chars().count())
        .max()
        .unwrap_or(8)
        .clamp(8, 28);

    let mut out = String::new();
    let mut hidden = 0usize;
    for (customer, conns) in &customers {
        let visible: Vec<&&Connection> = conns.iter().filter(|c| shown(c)).collect();
        hidden += conns.len() - visible.len();
        if visible.is_empty() {
            continue;
        }
        let name = conns.iter().find_map(|c| c.customer.name.as_deref());
        let customer = escape(customer);
        match name {
            Some(n) => writeln!(out, "{customer}  ({})", escape(n)).ok(),
            None => writeln!(out, "{customer}").ok(),
        };
        for c in visible {
            let status = format!("{:<w_status$}", c.status.as_str());
            let mut platform: String = escape(&c.platform).chars().take(w_platform).collect();
            while platform.chars().count() < w_platform {
                platform.push(' ');
            }
            let sync = match &c.sync {
                Some(s) => match (s.synced, s.total) {
                    (Some(a), Some(b)) => format!("  sync {:?} {a}/{b}", s.state).to_lowercase(),
                    _ => format!("  sync {:?}", s.state).to_lowercase(),
                },
                None => String::new(),
            };
            writeln!(
                out,
                "  {}  {:<w_provider$}  {platform}  {:<11}  {}{sync}",
                paint(opts.color, c.status, &status),
                escape(&c.provider),
                format!("{:?}", c.role).to_lowercase(),
                escape(&c.provider_status),
            )
            .ok();
            for p in &c.problems {
                write!(out, "      - {}: {}", escape(&p.code), escape(&p.message)).ok();
                if let Some(r) = &p.remediation {
                    write!(out, "  => {}", escape(&remediation_text(r))).ok();
                }
                out.push('\n');
            }
        }
    }
    if hidden > 0 {
        writeln!(
            out,
            "({hidden} healthy or not-connected connections not shown; --all shows them)"
        )
        .ok();
    }
    if !out.is_empty() {
        out.push('\n');
    }
    let counts: Vec<String> = Status::ALL
        .iter()
        .rev()
        .filter(|s| report.summary.count(**s) > 0)
        .map(|s| {
            paint(
                opts.color,
                *s,
                &format!("{} {}", report.summary.count(*s), s.as_str()),
            )
        })
        .collect();
    writeln!(
        out,
        "overall: {}   {} connections: {}",
        paint(opts.color, report.overall, report.overall.as_str()),
        report.summary.total,
        if counts.is_empty() {
            "none".to_owned()
        } else {
            counts.join(", ")
        }
    )
    .ok();
    for p in &report.providers {
        write!(
            out,
            "  {:<w_provider$}  {:<9}  {:>6} connections  {:>6} ms",
            escape(&p.provider),
            p.outcome.as_str(),
            p.connections,
            p.elapsed_ms
        )
        .ok();
        if !p.errors.is_empty() {
            write!(out, "  {} error(s)", p.errors.len()).ok();
        }
        out.push('\n');
        for e in p.errors.iter().take(5) {
            writeln!(out, "      ! {}", escape(&e.message)).ok();
        }
        if p.errors.len() > 5 {
            writeln!(out, "      ! … and {} more", p.errors.len() - 5).ok();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_makes_every_control_and_bidi_character_visible() {
        let cases = [
            ("clear\x1b[2J", "clear\\u{1b}[2J"),
            ("title\x1b]0;pwned\x07", "title\\u{1b}]0;pwned\\u{7}"),
            ("row\r\n  healthy", "row\\r\\n  healthy"),
            ("tab\there", "tab\\there"),
            ("nul\0del\x7f", "nul\\u{0}del\\u{7f}"),
            ("c1\u{9b}31m\u{85}", "c1\\u{9b}31m\\u{85}"),
            ("rlo\u{202E}cba", "rlo\\u{202e}cba"),
            ("lre\u{202A}pdf\u{202C}", "lre\\u{202a}pdf\\u{202c}"),
            ("iso\u{2066}x\u{2069}", "iso\\u{2066}x\\u{2069}"),
            ("ls\u{2028}ps\u{2029}", "ls\\u{2028}ps\\u{2029}"),
        ];
        for (raw, want) in cases {
            assert_eq!(escape(raw), want, "{raw:?}");
            assert!(!escape(raw).chars().any(needs_escape));
        }
    }

    #[test]
    fn escape_keeps_ordinary_text_as_it_is() {
        for s in [
            "Shop 42",
            "café Zürich",
            "東京ストア",
            "a\\b",
            "emoji 🛒",
            "",
        ] {
            assert!(matches!(escape(s), Cow::Borrowed(_)), "{s:?}");
            assert_eq!(escape(s), s);
        }
    }
}
