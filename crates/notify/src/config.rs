//! The `[[notify]]` and `[[mute]]` tables, validated at start into [`Sink`]s and [`Mute`]s.

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use connhealth_core::{Change, ChangeKind, Secret, Status};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::guard::is_private;
use crate::sign::Signer;
use crate::NotifyError;

/// The default retry schedule (DESIGN.md): after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
pub const DEFAULT_RETRY_SCHEDULE: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// The default per-attempt timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// Every event name a sink's `events` may list.
pub const EVENT_NAMES: [&str; 8] = [
    "appeared",
    "disappeared",
    "status_changed",
    "problem_raised",
    "problem_cleared",
    "sync_progressed",
    "provider_unavailable",
    "provider_recovered",
];

/// What kind of sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// Standard Webhooks: a signed JSON `POST`.
    Webhook,
    /// A Slack incoming webhook (its URL from `url_env`).
    Slack,
}

/// A duration written as `"5s"`, `"5m"`, `"24h"` or a number of seconds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum DurationSpec {
    /// Seconds.
    Secs(u64),
    /// `humantime` text.
    Text(String),
}

impl DurationSpec {
    fn parse(&self, sink: &str, key: &str) -> Result<Duration, NotifyError> {
        match self {
            DurationSpec::Secs(s) => Ok(Duration::from_secs(*s)),
            DurationSpec::Text(t) => humantime::parse_duration(t.trim()).map_err(|e| {
                NotifyError::Config(format!(
                    "notify {sink:?}: {key} {t:?}: {e} (try 30s, 5m or 24h)"
                ))
            }),
        }
    }
}

/// One `[[notify]]` table as written (DESIGN.md "Notifications out"; the keys are a contract).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Unique name (outbox rows and metrics carry it).
    pub name: String,
    /// `webhook` or `slack`.
    pub kind: SinkKind,
    /// The endpoint (webhook; a Slack sink may give it here instead of `url_env`).
    #[serde(default)]
    pub url: Option<String>,
    /// The environment variable holding the URL (Slack incoming-webhook URLs are secrets).
    #[serde(default)]
    pub url_env: Option<String>,
    /// The environment variable holding the `whsec_` + base64 signing secret (webhook).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Only events about statuses at least this bad, and their recoveries.
    #[serde(default)]
    pub min_severity: Option<Status>,
    /// Only these event kinds (default: all).
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// Only these providers (by name).
    #[serde(default)]
    pub providers: Option<Vec<String>>,
    /// Only these customers (`customer_id` or `{provider}:{customer_id}`).
    #[serde(default)]
    pub customers: Option<Vec<String>>,
    /// More than 10 unsent events within this window of the oldest: one digest.
    #[serde(default)]
    pub digest_secs: Option<u64>,
    /// Re-notify a connection still bad after this long (a `connhealth.reminder`).
    #[serde(default)]
    pub remind_after: Option<DurationSpec>,
    /// Overrides the retry schedule (`["5s", "5m", …]`).
    #[serde(default)]
    pub retry_schedule: Option<Vec<DurationSpec>>,
    /// Allow an address in a private range (off by default: no SSRF through a config).
    #[serde(default)]
    pub allow_private: bool,
    /// Per-attempt timeout (default 15 s).
    #[serde(default)]
    pub timeout: Option<DurationSpec>,
}

/// A validated sink, ready for the worker.
#[derive(Clone)]
pub struct Sink {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: SinkKind,
    pub(crate) url: Secret,
    pub(crate) signer: Option<Signer>,
    /// Filters.
    pub filter: Filter,
    /// The digest window.
    pub digest: Option<Duration>,
    /// The reminder interval.
    pub remind_after: Option<Duration>,
    /// The retry schedule.
    pub retry_schedule: Vec<Duration>,
    /// Whether private addresses are allowed.
    pub allow_private: bool,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// A digest of what the sink is (kind, URL, secret): a sink disabled by a 410 stays
    /// disabled across restarts while this is unchanged; a changed config re-enables it.
    pub(crate) fingerprint: String,
}

impl Sink {
    /// See the field: hex SHA-256 of the kind, the URL and the secret's variable and value
    /// (the URL and the secret are never stored themselves).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

fn fingerprint(kind: SinkKind, url: &str, secret: Option<(&str, &str)>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(format!("{kind:?}").as_bytes());
    h.update([0]);
    h.update(url.as_bytes());
    if let Some((var, value)) = secret {
        h.update([0]);
        h.update(var.as_bytes());
        h.update([0]);
        h.update(value.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL (a Slack URL is a credential) and the secret are never shown.
        f.debug_struct("Sink")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("filter", &self.filter)
            .field("digest", &self.digest)
            .field("retry_schedule", &self.retry_schedule)
            .field("allow_private", &self.allow_private)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A sink's filters (empty: everything passes).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// See [`SinkConfig::min_severity`].
    pub min_severity: Option<Status>,
    /// See [`SinkConfig::events`].
    pub events: Vec<String>,
    /// See [`SinkConfig::providers`].
    pub providers: Vec<String>,
    /// See [`SinkConfig::customers`].
    pub customers: Vec<String>,
}

impl Filter {
    /// Whether a change passes. Provider events (`provider_unavailable`, `provider_recovered`)
    /// always pass `min_severity` and `customers` (an outage concerns every customer), and are
    /// held to `events` and `providers`. `min_severity` lets through an event whose old or new
    /// status is at least that bad (so a recovery is announced to whoever heard the problem);
    /// `problem_cleared` carries no status and passes.
    pub fn matches(&self, c: &Change) -> bool {
        let name = c.kind.name();
        if !self.events.is_empty() && !self.events.iter().any(|e| e == name) {
            return false;
        }
        if !self.providers.is_empty() && !self.providers.contains(&c.provider) {
            return false;
        }
        let provider_event = matches!(
            c.kind,
            ChangeKind::ProviderUnavailable { .. } | ChangeKind::ProviderRecovered
        );
        if provider_event {
            return true;
        }
        if !self.customers.is_empty() {
            let Some(cust) = &c.customer_id else {
                return false;
            };
            let key = format!("{}:{cust}", c.provider);
            if !self.customers.iter().any(|k| k == cust || *k == key) {
                return false;
            }
        }
        if let Some(min) = self.min_severity {
            let at_least = |s: Status| s.severity() >= min.severity();
            let ok = match &c.kind {
                ChangeKind::Appeared { status } => at_least(*status),
                ChangeKind::Disappeared { last_status } => at_least(*last_status),
                ChangeKind::StatusChanged { from, to } => at_least(*from) || at_least(*to),
                ChangeKind::ProblemRaised { problem } => at_least(problem.severity),
                ChangeKind::SyncProgressed { .. } => at_least(Status::Syncing),
                _ => true,
            };
            if !ok {
                return false;
            }
        }
        true
    }
}

/// What a mute matches (every field given must match; at least one is required).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MuteMatch {
    /// A provider name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// A `customer_id` or `{provider}:{customer_id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    /// A connection id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
}

/// A mute (`[[mute]]` in config, `/v1/mutes` in the API): matching events are stored, their
/// deliveries become `muted`, until `until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mute {
    /// What it silences.
    #[serde(rename = "match")]
    pub matches: MuteMatch,
    /// Until when.
    pub until: DateTime<Utc>,
    /// Why (shown in the outbox's `last_error`).
    #[serde(default)]
    pub reason: String,
}

impl From<&connhealth_store::StoredMute> for Mute {
    fn from(m: &connhealth_store::StoredMute) -> Mute {
        Mute {
            matches: MuteMatch {
                provider: m.mute.provider.clone(),
                customer: m.mute.customer.clone(),
                connection: m.mute.connection.clone(),
            },
            until: m.mute.until,
            reason: m.mute.reason.clone(),
        }
    }
}

impl Mute {
    /// Check it at start: a mute matching everything is refused.
    pub fn validate(&self) -> Result<(), NotifyError> {
        let m = &self.matches;
        if m.provider.is_none() && m.customer.is_none() && m.connection.is_none() {
            return Err(NotifyError::Config(
                "mute: match needs at least one of provider, customer, connection".into(),
            ));
        }
        Ok(())
    }

    /// Whether it silences `c` at `now`.
    pub fn silences(&self, c: &Change, now: DateTime<Utc>) -> bool {
        if now >= self.until {
            return false;
        }
        let m = &self.matches;
        if m.provider.is_none() && m.customer.is_none() && m.connection.is_none() {
            return false;
        }
        if m.provider.as_ref().is_some_and(|p| *p != c.provider) {
            return false;
        }
        if let Some(want) = &m.customer {
            let Some(cust) = &c.customer_id else {
                return false;
            };
            if want != cust && *want != format!("{}:{cust}", c.provider) {
                return false;
            }
        }
        if let Some(want) = &m.connection {
            if c.connection_id.as_ref() != Some(want) {
                return false;
            }
        }
        true
    }
}

impl SinkConfig {
    /// Validate against the process environment.
    pub fn validate(&self) -> Result<Sink, NotifyError> {
        self.validate_with(|k| std::env::var(k).ok())
    }

    /// Validate, reading environment variables through `env` (one-line errors naming the
    /// sink and the key; never the secret's value).
    pub fn validate_with(&self, env: impl Fn(&str) -> Option<String>) -> Result<Sink, NotifyError> {
        let n = &self.name;
        let err = |m: String| NotifyError::Config(format!("notify {n:?}: {m}"));
        if n.trim().is_empty() {
            return Err(NotifyError::Config("notify: name is empty".into()));
        }
        let read = |var: &str, what: &str| -> Result<String, NotifyError> {
            match env(var) {
                Some(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
                _ => Err(err(format!(
                    "{what}: environment variable {var} is not set"
                ))),
            }
        };
        let url = match (&self.url, &self.url_env) {
            (Some(u), None) => u.clone(),
            (None, Some(var)) => read(var, "url_env")?,
            (Some(_), Some(_)) => return Err(err("give url or url_env, not both".into())),
            (None, None) => {
                return Err(err(match self.kind {
                    SinkKind::Webhook => "url is required".into(),
                    SinkKind::Slack => {
                        "url_env (the incoming-webhook URL's variable) is required".into()
                    }
                }))
            }
        };
        // The URL's text is not echoed: a Slack URL is a credential.
        let parsed = Url::parse(&url).map_err(|e| err(format!("url is not a URL ({e})")))?;
        let host = parsed.host().ok_or_else(|| err("url has no host".into()))?;
        let (loopback_literal, literal_ip) = match host {
            url::Host::Domain(d) => (d.eq_ignore_ascii_case("localhost"), None),
            url::Host::Ipv4(ip) => (ip.is_loopback(), Some(IpAddr::V4(ip))),
            url::Host::Ipv6(ip) => (ip.is_loopback(), Some(IpAddr::V6(ip))),
        };
        match parsed.scheme() {
            "https" => {}
            "http" if loopback_literal => {}
            "http" => return Err(err("url must be https:// (http:// only on loopback)".into())),
            s => return Err(err(format!("url scheme {s:?}: must be https://"))),
        }
        if let Some(ip) = literal_ip {
            if !ip.is_loopback() && is_private(ip) && !self.allow_private {
                return Err(err(
                    "url is an address in a private range (set allow_private = true to allow it)"
                        .into(),
                ));
            }
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(err("url must not carry credentials".into()));
        }
        let mut secret_text = None;
        let signer = match (self.kind, &self.secret_env) {
            (SinkKind::Webhook, None) => return Err(err("secret_env is required".into())),
            (_, Some(var)) => {
                let s = Secret::new(read(var, "secret_env")?);
                let signer = Signer::new(&s).map_err(|e| err(format!("secret_env {var}: {e}")))?;
                secret_text = Some((var.as_str(), s));
                Some(signer)
            }
            (SinkKind::Slack, None) => None,
        };
        let fingerprint = fingerprint(
            self.kind,
            &url,
            secret_text.as_ref().map(|(v, s)| (*v, s.expose())),
        );
        if let Some(ev) = &self.events {
            for e in ev {
                if !EVENT_NAMES.contains(&e.as_str()) {
                    return Err(err(format!(
                        "events: unknown event {e:?} (one of {})",
                        EVENT_NAMES.join(", ")
                    )));
                }
            }
        }
        let retry_schedule = match &self.retry_schedule {
            None => DEFAULT_RETRY_SCHEDULE.to_vec(),
            Some(s) => s
                .iter()
                .map(|d| d.parse(n, "retry_schedule"))
                .collect::<Result<_, _>>()?,
        };
        let timeout = match &self.timeout {
            None => DEFAULT_TIMEOUT,
            Some(t) => t.parse(n, "timeout")?,
        };
        if timeout.is_zero() {
            return Err(err("timeout must be above zero".into()));
        }
        Ok(Sink {
            name: n.clone(),
            kind: self.kind,
            url: Secret::new(url),
            signer,
            filter: Filter {
                min_severity: self.min_severity,
                events: self.events.clone().unwrap_or_default(),
                providers: self.providers.clone().unwrap_or_default(),
                customers: self.customers.clone().unwrap_or_default(),
            },
            digest: self.digest_secs.map(Duration::from_secs),
            remind_after: self
                .remind_after
                .as_ref()
                .map(|d| d.parse(n, "remind_after"))
                .transpose()?,
            retry_schedule,
            allow_private: self.allow_private,
            timeout,
            fingerprint,
        })
    }
}

/// Validate every sink and mute; names must be unique.
pub fn validate_all(
    sinks: &[SinkConfig],
    mutes: &[Mute],
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<Sink>, NotifyError> {
    let mut out: Vec<Sink> = Vec::new();
    for s in sinks {
        let v = s.validate_with(&env)?;
        if out.iter().any(|o| o.name == v.name) {
            return Err(NotifyError::Config(format!(
                "notify {:?}: the name is used twice",
                v.name
            )));
        }
        out.push(v);
    }
    for m in mutes {
        m.validate()?;
    }
    Ok(out)
}
