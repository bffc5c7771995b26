//! The TOML configuration: top-level defaults and one `[[provider]]` table per provider account.
//!
//! This module knows no provider. It reads the top level and each table's `kind`, fills in the
//! defaults a table leaves out (`timeout_secs`, `concurrency`), and hands the table to the
//! adapter of that kind: each adapter crate exports a `Deserialize` config struct and
//! `Builder::from_config`, so adding a provider adds one arm to [`build`] and nothing else.
//!
//! Credentials are never in the file: it names environment variables (`api_key_env = "…"`),
//! read when the config is resolved. Every mistake is one line naming the file, the key and
//! what was expected.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use connhealth::channel3::{Channel3Builder, Channel3Config};
use connhealth::config_file::{EnvError, Lookup};
use connhealth::subtotal::{SubtotalBuilder, SubtotalConfig};
use connhealth::violet::{VioletBuilder, VioletConfig};
use connhealth::{ErrorKind, Provider};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::CliError;

/// Defaults applied to every provider that does not set its own.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// Default per-provider fan-out bound.
pub const DEFAULT_CONCURRENCY: usize = 32;
/// The largest `concurrency` accepted (a bound beyond it is a typo, and beyond 2^61 the
/// semaphore behind it cannot even be created).
pub const MAX_CONCURRENCY: usize = 10_000;
/// The provider kinds this build knows, as the config file spells them.
pub const KINDS: [&str; 3] = [
    Channel3Config::KIND,
    VioletConfig::KIND,
    SubtotalConfig::KIND,
];

fn config_error(file: &Path, message: impl std::fmt::Display) -> CliError {
    CliError::Config(format!("{}: {message}", file.display()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTop {
    timeout_secs: Option<u64>,
    concurrency: Option<usize>,
    interval: Option<String>,
    recheck_secs: Option<u64>,
    max_staleness: Option<String>,
    store: Option<String>,
    store_password_env: Option<String>,
    retention_days: Option<u32>,
    #[serde(default)]
    provider: Vec<toml::Value>,
    /// `[[notify]]` sinks (connhealth-notify validates them).
    #[serde(default)]
    notify: Vec<connhealth_notify::SinkConfig>,
    /// `[[mute]]` tables (`until` a TOML date-time or an RFC 3339 string).
    #[serde(default)]
    mute: Vec<toml::Value>,
}

/// The top-level store keys only (for `history` and `uptime`, which need no provider).
#[derive(Debug, Deserialize)]
struct RawStoreKeys {
    store: Option<String>,
    store_password_env: Option<String>,
    retention_days: Option<u32>,
}

/// The store keys of a config file: `store` (a URL; a relative SQLite path is taken from the
/// config file's folder), `store_password_env` and `retention_days` (default 90).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreSettings {
    /// `store`, as written.
    pub url: Option<String>,
    /// `store_password_env`: the variable holding the PostgreSQL password.
    pub password_env: Option<String>,
    /// `retention_days`.
    pub retention_days: Option<u32>,
    /// The config file's folder (what a relative `store` path is taken from).
    pub dir: PathBuf,
}

impl StoreSettings {
    fn from_raw(
        path: &Path,
        store: Option<String>,
        password_env: Option<String>,
        retention_days: Option<u32>,
    ) -> Result<StoreSettings, CliError> {
        if retention_days == Some(0) {
            return Err(config_error(path, "retention_days: must be at least 1"));
        }
        if let Some(url) = &store {
            connhealth_store::StoreUrl::parse(url)
                .map_err(|e| config_error(path, format!("store: {e}")))?;
        }
        Ok(StoreSettings {
            url: store,
            password_env,
            retention_days,
            dir: path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_owned(),
        })
    }

    /// Read only the store keys of a config file (providers are not resolved, so their
    /// environment variables need not be set).
    pub fn load(path: &Path) -> Result<StoreSettings, CliError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            CliError::NoInput(format!(
                "{}: cannot read config file: {}",
                path.display(),
                io_reason(&e)
            ))
        })?;
        let raw: RawStoreKeys = serde_path_to_error::deserialize(toml::Deserializer::new(&text))
            .map_err(|e| config_error(path, located(&text, &e)))?;
        StoreSettings::from_raw(path, raw.store, raw.store_password_env, raw.retention_days)
    }
}

/// The keys every `[[provider]]` table has, read after the adapter accepted the table.
#[derive(Debug, Deserialize)]
struct CommonKeys {
    name: Option<String>,
    timeout_secs: u64,
    concurrency: usize,
}

/// One configured provider account, built and ready to ask.
#[derive(Debug, Clone)]
pub struct ProviderEntry {
    /// Name in reports (the kind unless set).
    pub name: String,
    /// Whole-fetch timeout.
    pub timeout: Duration,
    /// The adapter.
    pub provider: Arc<dyn Provider>,
}

/// The polling keys of the top level (`watch` and `serve` flags of the same names win).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollKeys {
    /// `interval`: time between sweeps (default 5m).
    pub interval: Option<Duration>,
    /// `recheck_secs`: how often a customer with a connection that is not healthy is read
    /// again (default 60).
    pub recheck: Option<Duration>,
    /// `max_staleness`: no customer's last read is older (default 24h).
    pub max_staleness: Option<Duration>,
}

/// Default `interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);

/// A duration as flags and the config file spell it (`30s`, `5m`, `1h`; at least 1 s).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (try 30s, 5m or 1h)"))?;
    if d < Duration::from_secs(1) {
        return Err("must be at least 1s".to_owned());
    }
    Ok(d)
}

impl PollKeys {
    fn from_raw(
        path: &Path,
        interval: Option<&str>,
        recheck_secs: Option<u64>,
        max_staleness: Option<&str>,
    ) -> Result<PollKeys, CliError> {
        let duration = |key: &str, v: Option<&str>| {
            v.map(|v| {
                parse_duration(v).map_err(|e| config_error(path, format!("{key}: {v:?}: {e}")))
            })
            .transpose()
        };
        let recheck = positive(path, "recheck_secs", recheck_secs)?.map(Duration::from_secs);
        Ok(PollKeys {
            interval: duration("interval", interval)?,
            recheck,
            max_staleness: duration("max_staleness", max_staleness)?,
        })
    }
}

/// A resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `interval`, `recheck_secs`, `max_staleness`.
    pub poll: PollKeys,
    /// Where it came from.
    pub path: PathBuf,
    /// The providers, in file order.
    pub providers: Vec<ProviderEntry>,
    /// The store keys.
    pub store: StoreSettings,
    /// The `[[notify]]` sinks, validated (their env vars read, their URLs checked).
    pub sinks: Vec<connhealth_notify::Sink>,
    /// The `[[mute]]` tables.
    pub mutes: Vec<connhealth_notify::Mute>,
}

/// Why one `[[provider]]` table was refused (before the file and table are named).
#[derive(Debug)]
enum TableError {
    /// Not what the adapter's config struct accepts.
    Keys(serde_path_to_error::Error<toml::de::Error>),
    /// An environment variable it names is not set.
    Env(EnvError),
    /// The builder refused the values.
    Build(connhealth::Error),
}

/// Deserialize the table as the adapter's `C`, then let `make` build the provider.
fn adapter<C, P>(
    table: &toml::Value,
    make: impl FnOnce(&C) -> Result<connhealth::Result<P>, EnvError>,
) -> Result<Arc<dyn Provider>, TableError>
where
    C: DeserializeOwned,
    P: Provider + 'static,
{
    let config: C = serde_path_to_error::deserialize(table.clone()).map_err(TableError::Keys)?;
    let provider = make(&config)
        .map_err(TableError::Env)?
        .map_err(TableError::Build)?;
    Ok(Arc::new(provider))
}

/// The one place that maps a `kind` to its adapter: `None` for a kind this build does not know.
fn build(
    kind: &str,
    table: &toml::Value,
    env: Lookup<'_>,
) -> Option<Result<Arc<dyn Provider>, TableError>> {
    Some(match kind {
        Channel3Config::KIND => {
            adapter(table, |c| Ok(Channel3Builder::from_config(c, env)?.build()))
        }
        VioletConfig::KIND => adapter(table, |c| Ok(VioletBuilder::from_config(c, env)?.build())),
        SubtotalConfig::KIND => {
            adapter(table, |c| Ok(SubtotalBuilder::from_config(c, env)?.build()))
        }
        _ => return None,
    })
}

impl Config {
    /// Read and resolve a config file.
    pub fn load(path: &Path, env: Lookup<'_>) -> Result<Config, CliError> {
        let bytes = std::fs::read(path).map_err(|e| {
            CliError::NoInput(format!(
                "{}: cannot read config file: {}",
                path.display(),
                io_reason(&e)
            ))
        })?;
        // The file was read: bad content is a config error (78), not a missing file (66).
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
            config_error(
                path,
                format!(
                    "line {line}: not valid UTF-8 (byte {}); save the file as UTF-8",
                    valid.len()
                ),
            )
        })?;
        Config::parse(path, &text, env)
    }

    /// Parse and resolve config text (`path` is only used in messages).
    pub fn parse(path: &Path, text: &str, env: Lookup<'_>) -> Result<Config, CliError> {
        let raw: RawTop = serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|e| config_error(path, located(text, &e)))?;
        if raw.provider.is_empty() {
            return Err(config_error(
                path,
                "no [[provider]] table; add one per provider (see `connhealth config example`)",
            ));
        }
        let store =
            StoreSettings::from_raw(path, raw.store, raw.store_password_env, raw.retention_days)?;
        let poll = PollKeys::from_raw(
            path,
            raw.interval.as_deref(),
            raw.recheck_secs,
            raw.max_staleness.as_deref(),
        )?;
        let default_timeout =
            positive(path, "timeout_secs", raw.timeout_secs)?.unwrap_or(DEFAULT_TIMEOUT_SECS);
        let default_conc =
            bounded(path, "concurrency", raw.concurrency)?.unwrap_or(DEFAULT_CONCURRENCY);
        let expected = KINDS.map(|k| format!("{k:?}")).join(", ");
        let mut providers = Vec::new();
        let mut names = HashSet::new();
        for (i, mut table) in raw.provider.into_iter().enumerate() {
            let at = format!("provider[{i}]");
            let Some(keys) = table.as_table_mut() else {
                return Err(config_error(
                    path,
                    format!("{at}: must be a table ([[provider]])"),
                ));
            };
            let kind = match keys.get("kind") {
                None => {
                    return Err(config_error(
                        path,
                        format!("{at}: missing key `kind`; expected one of {expected}"),
                    ))
                }
                Some(toml::Value::String(k)) => k.clone(),
                Some(other) => {
                    return Err(config_error(
                        path,
                        format!(
                            "{at}.kind: must be a string, got {}; expected one of {expected}",
                            describe(other)
                        ),
                    ))
                }
            };
            let unknown_kind = || {
                config_error(
                    path,
                    format!("{at}.kind: unknown kind {kind:?}; expected one of {expected}"),
                )
            };
            if !KINDS.contains(&kind.as_str()) {
                return Err(unknown_kind());
            }
            // A paced provider's sweep takes as long as its budget needs (5,000 customers at
            // 600/min is 500 s): with no timeout set anywhere, its whole fetch is bounded by
            // `max_staleness` instead of the 30 s default, which would cut every sweep short.
            let paced_default = (raw.timeout_secs.is_none()
                && !keys.contains_key("timeout_secs")
                && keys.contains_key("rate_limit"))
            .then(|| {
                poll.max_staleness
                    .unwrap_or(connhealth::schedule::ScheduleConfig::default().max_staleness)
            });
            // The top-level defaults, for the adapter to apply like any other key.
            keys.entry("timeout_secs")
                .or_insert(toml::Value::Integer(clamp_i64(default_timeout)));
            keys.entry("concurrency")
                .or_insert(toml::Value::Integer(clamp_i64(default_conc as u64)));
            let at_kind = format!("{at} ({kind})");
            let key_error = |e: serde_path_to_error::Error<toml::de::Error>| {
                let key = e.path().to_string();
                let sep = if key == "." {
                    ": ".to_owned()
                } else {
                    format!(".{key}: ")
                };
                config_error(path, format!("{at_kind}{sep}{}", toml_message(e.inner())))
            };
            // The keys every table has, checked before the adapter sees them: a builder
            // given an absurd bound could not even create its semaphore.
            let common: CommonKeys =
                serde_path_to_error::deserialize(table.clone()).map_err(key_error)?;
            positive(
                path,
                &format!("{at_kind}.timeout_secs"),
                Some(common.timeout_secs),
            )?;
            bounded(
                path,
                &format!("{at_kind}.concurrency"),
                Some(common.concurrency),
            )?;
            let name = common.name.unwrap_or_else(|| kind.clone());
            if name.is_empty()
                || !name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
            {
                return Err(config_error(path, format!("{at_kind}.name: {name:?} is not a valid name; expected letters, digits, '-' or '_'")));
            }
            let Some(built) = build(&kind, &table, env) else {
                return Err(unknown_kind());
            };
            let provider = match built {
                Ok(p) => p,
                Err(TableError::Keys(e)) => return Err(key_error(e)),
                Err(TableError::Env(e)) => {
                    return Err(config_error(path, format!("{at_kind}.{e}")))
                }
                // The builder's refusal, said once: `config` is already what this whole
                // message is about, so the error's kind and endpoint are not repeated.
                Err(TableError::Build(e)) if e.kind() == ErrorKind::Config => {
                    return Err(config_error(path, format!("{at_kind}: {}", e.message())))
                }
                Err(TableError::Build(e)) => {
                    return Err(config_error(path, format!("{at_kind}: {e}")))
                }
            };
            if !names.insert(name.clone()) {
                return Err(config_error(
                    path,
                    format!("{at_kind}.name: {name:?} is used twice; give each provider of the same kind a distinct `name`"),
                ));
            }
            providers.push(ProviderEntry {
                name,
                timeout: paced_default.unwrap_or(Duration::from_secs(common.timeout_secs)),
                provider,
            });
        }
        let (sinks, mutes) = notify_from_raw(path, &raw.notify, raw.mute, env)?;
        Ok(Config {
            poll,
            path: path.to_owned(),
            providers,
            store,
            sinks,
            mutes,
        })
    }
}

/// The `[[notify]]` and `[[mute]]` keys only (for `notify test`, which asks no provider).
#[derive(Debug, Deserialize)]
struct RawNotifyKeys {
    #[serde(default)]
    notify: Vec<connhealth_notify::SinkConfig>,
    #[serde(default)]
    mute: Vec<toml::Value>,
}

/// Read and validate only the `[[notify]]` and `[[mute]]` tables of a config file.
pub fn load_notify(
    path: &Path,
    env: Lookup<'_>,
) -> Result<(Vec<connhealth_notify::Sink>, Vec<connhealth_notify::Mute>), CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::NoInput(format!(
            "{}: cannot read config file: {}",
            path.display(),
            io_reason(&e)
        ))
    })?;
    let raw: RawNotifyKeys = serde_path_to_error::deserialize(toml::Deserializer::new(&text))
        .map_err(|e| config_error(path, located(&text, &e)))?;
    notify_from_raw(path, &raw.notify, raw.mute, env)
}

/// Validate the sinks against `env` (one line naming the file and the sink) and read the
/// mutes (`until` a TOML date-time or an RFC 3339 string).
fn notify_from_raw(
    path: &Path,
    notify: &[connhealth_notify::SinkConfig],
    mute: Vec<toml::Value>,
    env: Lookup<'_>,
) -> Result<(Vec<connhealth_notify::Sink>, Vec<connhealth_notify::Mute>), CliError> {
    let mut mutes = Vec::new();
    for (i, mut m) in mute.into_iter().enumerate() {
        // A bare TOML date-time is handed on as its RFC 3339 text.
        if let Some(t) = m.as_table_mut() {
            if let Some(toml::Value::Datetime(d)) = t.get("until") {
                let text = d.to_string();
                t.insert("until".into(), toml::Value::String(text));
            }
        }
        let parsed: connhealth_notify::Mute = serde_path_to_error::deserialize(m).map_err(|e| {
            let key = e.path().to_string();
            config_error(
                path,
                format!("mute[{i}].{key}: {}", toml_message(e.inner())),
            )
        })?;
        mutes.push(parsed);
    }
    let sinks =
        connhealth_notify::validate_all(notify, &mutes, env).map_err(|e| config_error(path, e))?;
    Ok((sinks, mutes))
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A TOML value in an error message: its type, and the value itself when it is short.
fn describe(v: &toml::Value) -> String {
    match v {
        toml::Value::Integer(_)
        | toml::Value::Float(_)
        | toml::Value::Boolean(_)
        | toml::Value::Datetime(_) => {
            format!("{} `{v}`", v.type_str())
        }
        other => other.type_str().to_owned(),
    }
}

fn positive(path: &Path, key: &str, v: Option<u64>) -> Result<Option<u64>, CliError> {
    match v {
        Some(0) => Err(config_error(
            path,
            format!("{key}: must be a positive whole number, got 0"),
        )),
        other => Ok(other),
    }
}

/// A fan-out bound: 1 to [`MAX_CONCURRENCY`].
fn bounded(path: &Path, key: &str, v: Option<usize>) -> Result<Option<usize>, CliError> {
    match v {
        Some(n) if !(1..=MAX_CONCURRENCY).contains(&n) => Err(config_error(
            path,
            format!("{key}: must be a whole number from 1 to {MAX_CONCURRENCY}, got {n}"),
        )),
        other => Ok(other),
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => e.to_string(),
    }
}

/// `line N: key.path: message` for an error of the whole file.
fn located(text: &str, e: &serde_path_to_error::Error<toml::de::Error>) -> String {
    let mut out = String::new();
    if let Some(span) = e.inner().span() {
        let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
        out.push_str(&format!("line {line}: "));
    }
    let key = e.path().to_string();
    if key != "." {
        out.push_str(&key);
        out.push_str(": ");
    }
    out.push_str(&toml_message(e.inner()));
    out
}

/// toml's message on one line, without the source snippet.
fn toml_message(e: &toml::de::Error) -> String {
    let msg = e.message().trim().replace('\n', " ");
    msg.replace("unknown field", "unknown key")
        .replace("missing field", "missing key")
}

/// The commented example printed by `connhealth config example`.
pub const EXAMPLE: &str = r#"# connhealth configuration.
# Credentials are never written here: each *_env key names the environment variable to read.

timeout_secs = 30            # per provider, whole fetch (default 30)
concurrency = 32             # per provider fan-out bound, 1 to 10000 (default 32)
interval = "5m"              # time between sweeps of every customer (default 5m)
recheck_secs = 60            # a customer with a connection that is not healthy (or pending,
                             # syncing) is read again this often (default 60; Violet: hourly,
                             # its cached report, never refresh=true)
max_staleness = "24h"        # no customer is staler than this; /readyz warns if the sweep
                             # rate cannot keep it (default 24h)
# store = "sqlite://connhealth.db"   # history, uptime, since; relative to this file's folder
#                                    # (serve's default); or "postgres://user@host:5432/db"
# store_password_env = "CONNHEALTH_STORE_PASSWORD"   # else PGPASSWORD
# retention_days = 90                # raw events kept (hourly uptime roll-ups: 400 days)

[[provider]]
kind = "channel3"
# base_url = "https://partners.trychannel3.com"   # the default
api_key_env = "CHANNEL3_API_KEY"
# customers = ["cus_123"]                         # default: discover all merchants
# rate_limit = "600/min"                          # the request budget (N/s, N/min, N/h) shared
#                                                 # by polls, refreshes and actions; default:
#                                                 # none, the pace adapts to 429s
# connect_redirect_uri = "https://app.example.com/channel3/callback"   # enables connect_link

[[provider]]
kind = "violet"
base_url = "https://sandbox-api.violet.io/v1"     # live: https://api.violet.io/v1
app_id = 10001                                    # not a secret
app_secret_env = "VIOLET_APP_SECRET"
username_env = "VIOLET_USERNAME"
password_env = "VIOLET_PASSWORD"
# exclude_public = true

[[provider]]
kind = "subtotal"
# base_url = "https://api.subtotal.com"           # the default
api_key_env = "SUBTOTAL_API_KEY"
customers = ["8a46e581-48ba-498a-9ad0-2ee72582e1af"]   # Subtotal cannot list customers
# link_url = "https://link.subtotal.com/abc123"   # re-authentication links (and reauth_link)
# timeout_secs = 60                               # any provider may override the defaults
# concurrency = 8
# rate_limit = "10/s"                             # any provider may set a budget

# The same kind may appear twice (two partner accounts); each then needs its own name:
# [[provider]]
# kind = "channel3"
# name = "channel3-eu"
# api_key_env = "CHANNEL3_EU_API_KEY"
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(name: &str) -> Option<String> {
        let vars = HashMap::from([
            ("CHANNEL3_API_KEY", "c3_sk_test"),
            ("VIOLET_APP_SECRET", "vs"),
            ("VIOLET_USERNAME", "owner@example.com"),
            ("VIOLET_PASSWORD", "pw"),
            ("SUBTOTAL_API_KEY", "st"),
            ("EMPTY", " "),
        ]);
        vars.get(name).map(|s| s.to_string())
    }

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("ch.toml"), text, &env).map_err(|e| {
            assert_eq!(e.exit_code(), 78);
            assert!(!e.message().contains('\n'), "not one line: {e}");
            e.to_string()
        })
    }

    #[test]
    fn the_example_parses() {
        let c = parse(EXAMPLE).unwrap();
        assert_eq!(c.providers.len(), 3);
        let names: Vec<&str> = c.providers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["channel3", "violet", "subtotal"]);
        assert!(c
            .providers
            .iter()
            .all(|p| p.timeout == Duration::from_secs(30)));
        // Secrets do not show in Debug.
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("c3_sk_test") && !dbg.contains("\"pw\""),
            "{dbg}"
        );
    }

    #[test]
    fn poll_keys_parse_and_bad_values_are_one_line() {
        let c = parse(EXAMPLE).unwrap();
        assert_eq!(
            c.poll,
            PollKeys {
                interval: Some(Duration::from_secs(300)),
                recheck: Some(Duration::from_secs(60)),
                max_staleness: Some(Duration::from_secs(24 * 3600)),
            }
        );
        let c3 = "[[provider]]\nkind='channel3'\napi_key_env='CHANNEL3_API_KEY'\n";
        assert_eq!(parse(c3).unwrap().poll, PollKeys::default());
        let c = parse(&format!(
            "interval = '90s'\nrecheck_secs = 15\nmax_staleness = '2h'\n{c3}"
        ))
        .unwrap();
        assert_eq!(c.poll.interval, Some(Duration::from_secs(90)));
        assert_eq!(c.poll.recheck, Some(Duration::from_secs(15)));
        assert_eq!(c.poll.max_staleness, Some(Duration::from_secs(7200)));
        for (text, want) in [
            ("interval = 'soon'\n", "ch.toml: interval: \"soon\": "),
            (
                "interval = '10ms'\n",
                "ch.toml: interval: \"10ms\": must be at least 1s",
            ),
            (
                "recheck_secs = 0\n",
                "ch.toml: recheck_secs: must be a positive whole number",
            ),
            (
                "recheck_secs = '60'\n",
                "ch.toml: line 1: recheck_secs: invalid type: string",
            ),
            (
                "max_staleness = 'forever'\n",
                "ch.toml: max_staleness: \"forever\": ",
            ),
        ] {
            let msg = parse(&format!("{text}{c3}")).unwrap_err();
            assert!(
                msg.starts_with(want),
                "for {text:?}\n got: {msg}\nwant: {want}"
            );
        }
    }

    #[test]
    fn overrides_and_defaults() {
        let c = parse(
            "concurrency = 4\n[[provider]]\nkind='channel3'\napi_key_env='CHANNEL3_API_KEY'\ntimeout_secs=5\n[[provider]]\nkind='channel3'\nname='c3-eu'\napi_key_env='CHANNEL3_API_KEY'\nconcurrency=9\n",
        )
        .unwrap();
        assert_eq!(c.providers[0].timeout, Duration::from_secs(5));
        // The bound reached the adapter (its Debug shows it).
        let dbg = |i: usize| format!("{:?}", c.providers[i].provider);
        assert!(dbg(0).contains("limit: 4"), "{}", dbg(0));
        assert!(dbg(1).contains("limit: 9"), "{}", dbg(1));
        assert_eq!(c.providers[1].name, "c3-eu");
    }

    #[test]
    fn each_mistake_is_one_line_naming_file_and_key() {
        let cases: &[(&str, &str)] = &[
            ("", "ch.toml: no [[provider]] table"),
            ("[[provider]]\nkind='channel3'\napi_kye_env='X'\n", "ch.toml: provider[0] (channel3).api_kye_env: unknown key `api_kye_env`, expected one of `kind`"),
            ("[[provider]]\nkind='channel3'\n", "ch.toml: provider[0] (channel3): missing key `api_key_env`"),
            ("[[provider]]\nkind='channel3'\napi_key_env='NOPE'\n", "ch.toml: provider[0] (channel3).api_key_env: environment variable NOPE is not set"),
            ("[[provider]]\nkind='channel3'\napi_key_env='EMPTY'\n", "environment variable EMPTY is empty"),
            ("[[provider]]\nkind='shopify'\n", "ch.toml: provider[0].kind: unknown kind \"shopify\""),
            ("[[provider]]\napi_key_env='X'\n", "ch.toml: provider[0]: missing key `kind`"),
            ("timeout_secs = 'soon'\n[[provider]]\nkind='channel3'\napi_key_env='CHANNEL3_API_KEY'\n", "ch.toml: line 1: timeout_secs: invalid type: string \"soon\", expected u64"),
            ("timeout_secs = 0\n[[provider]]\nkind='channel3'\napi_key_env='CHANNEL3_API_KEY'\n", "ch.toml: timeout_secs: must be a positive whole number"),
            ("[[provider]]\nkind='violet'\napp_id='abc'\napp_secret_env='VIOLET_APP_SECRET'\nusername_env='VIOLET_USERNAME'\npassword_env='VIOLET_PASSWORD'\n", "ch.toml: provider[0] (violet).app_id: invalid type: string \"abc\", expected u64"),
            ("[[provider]]\nkind='channel3'\napi_key_env='CHANNEL3_API_KEY'\n[[provider]]\nkind='channel3'\napi_key_env='CHANNEL3_API_KEY'\n", "provider[1] (channel3).name: \"channel3\" is used twice"),
            ("[[provider]]\nkind='subtotal'\napi_key_env='SUBTOTAL_API_KEY'\n", "ch.toml: provider[0] (subtotal): missing key `customers`"),
            ("bogus = 1\n[[provider]]\nkind='channel3'\napi_key_env='CHANNEL3_API_KEY'\n", "ch.toml: line 1: bogus: unknown key `bogus`, expected one of `timeout_secs`"),
            ("concurrency = -3\n[[provider]]\nkind='channel3'\napi_key_env='CHANNEL3_API_KEY'\n", "ch.toml: line 1: concurrency: invalid value: integer `-3`, expected usize"),
            ("[[provider]]\nkind='subtotal'\napi_key_env='SUBTOTAL_API_KEY'\ncustomers=[1]\n", "ch.toml: provider[0] (subtotal).customers[0]: invalid type: integer `1`, expected a string"),
            ("[[provider]\n", "ch.toml: "),
        ];
        for (text, want) in cases {
            let msg = parse(text).unwrap_err();
            assert!(
                msg.starts_with(want) || msg.contains(want),
                "for {text:?}\n got: {msg}\nwant: {want}"
            );
        }
    }

    /// Issue 16: mistakes that passed, or were named wrongly, before.
    #[test]
    fn hardening_bounds_types_and_encoding() {
        let c3 = "[[provider]]\nkind='channel3'\napi_key_env='CHANNEL3_API_KEY'\n";
        let cases: Vec<(String, &str)> = vec![
            (format!("concurrency = 2305843009213693952\n{c3}"), "ch.toml: concurrency: must be a whole number from 1 to 10000, got 2305843009213693952"),
            (format!("concurrency = 0\n{c3}"), "ch.toml: concurrency: must be a whole number from 1 to 10000, got 0"),
            (format!("{c3}concurrency = 10001\n"), "ch.toml: provider[0] (channel3).concurrency: must be a whole number from 1 to 10000, got 10001"),
            (format!("{c3}concurrency = 2305843009213693952\n"), "ch.toml: provider[0] (channel3).concurrency: must be a whole number from 1 to 10000"),
            (format!("{c3}concurrency = 'many'\n"), "ch.toml: provider[0] (channel3).concurrency: invalid type: string \"many\", expected usize"),
            ("[[provider]]\nkind=3\n".into(), "ch.toml: provider[0].kind: must be a string, got integer `3`; expected one of \"channel3\", \"violet\", \"subtotal\""),
            ("[[provider]]\nkind=['channel3']\n".into(), "ch.toml: provider[0].kind: must be a string, got array"),
            ("[[provider]]\nkind='channel3'\nbase_url='http://partners.example.com'\napi_key_env='CHANNEL3_API_KEY'\n".into(), "ch.toml: provider[0] (channel3): base_url \"http://partners.example.com\" must use https://"),
        ];
        for (text, want) in &cases {
            let msg = parse(text).unwrap_err();
            assert!(
                msg.starts_with(want),
                "for {text:?}\n got: {msg}\nwant: {want}"
            );
            assert!(!msg.contains("config: config:"), "{msg}");
        }
        // The bounds themselves are accepted.
        for n in [1, MAX_CONCURRENCY] {
            parse(&format!("concurrency = {n}\n{c3}")).unwrap();
            parse(&format!("{c3}concurrency = {n}\n")).unwrap();
        }
        // A file that is not UTF-8 was read: it is bad content (78), not a missing file (66).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ch.toml");
        std::fs::write(&path, b"timeout_secs = 5\n# caf\xe9\n").unwrap();
        let e = Config::load(&path, &env).unwrap_err();
        assert_eq!(e.exit_code(), 78);
        assert_eq!(
            e.message(),
            format!(
                "{}: line 2: not valid UTF-8 (byte 22); save the file as UTF-8",
                path.display()
            )
        );
    }

    #[test]
    fn each_kind_goes_to_its_adapter() {
        let c = parse(EXAMPLE).unwrap();
        for (p, want) in c.providers.iter().zip(["Channel3", "Violet", "Subtotal"]) {
            assert_eq!(p.provider.name(), p.name);
            assert!(
                format!("{:?}", p.provider).starts_with(want),
                "{:?}",
                p.provider
            );
            assert!(p.provider.http_stats().is_some(), "{}", p.name);
        }
    }

    /// Issue 22: `rate_limit` per provider table, reaching the provider's HTTP client; a bad
    /// value is one line naming the key path (exit 78, checked by `parse`).
    #[test]
    fn rate_limit_reaches_each_provider_and_a_bad_one_is_named() {
        let text = "[[provider]]\nkind='channel3'\napi_key_env='CHANNEL3_API_KEY'\nrate_limit='600/min'\n\
                    [[provider]]\nkind='subtotal'\napi_key_env='SUBTOTAL_API_KEY'\ncustomers=['a']\nrate_limit='5/s'\n\
                    [[provider]]\nkind='violet'\napp_id=1\napp_secret_env='VIOLET_APP_SECRET'\nusername_env='VIOLET_USERNAME'\npassword_env='VIOLET_PASSWORD'\nrate_limit='3600/h'\n";
        let c = parse(text).unwrap();
        let rates: Vec<Option<f64>> = c
            .providers
            .iter()
            .map(|p| p.provider.http_stats().and_then(|s| s.configured_rate()))
            .collect();
        assert_eq!(rates, [Some(10.0), Some(5.0), Some(1.0)]);
        // Not set: no budget.
        let c = parse(EXAMPLE).unwrap();
        assert!(c.providers.iter().all(|p| p
            .provider
            .http_stats()
            .unwrap()
            .configured_rate()
            .is_none()));
        let c3 = "[[provider]]\nkind='channel3'\napi_key_env='CHANNEL3_API_KEY'\n";
        for (bad, want) in [
            ("'600/day'", "ch.toml: provider[0] (channel3).rate_limit: \"600/day\" is not a rate limit; expected N/s, N/min or N/h"),
            ("'0/s'", "ch.toml: provider[0] (channel3).rate_limit: \"0/s\" is not a rate limit"),
            ("600", "ch.toml: provider[0] (channel3).rate_limit: invalid type: integer `600`, expected a string"),
        ] {
            let msg = parse(&format!("{c3}rate_limit = {bad}\n")).unwrap_err();
            assert!(msg.starts_with(want), "for {bad}\n got: {msg}\nwant: {want}");
        }
    }

    #[test]
    fn a_paced_provider_without_a_timeout_gets_max_staleness_as_its_whole_fetch_bound() {
        let c3 = "[[provider]]\nkind='channel3'\napi_key_env='CHANNEL3_API_KEY'\n";
        let timeouts = |text: &str| -> Vec<Duration> {
            parse(text)
                .unwrap()
                .providers
                .iter()
                .map(|p| p.timeout)
                .collect()
        };
        // Paced, nothing set: max_staleness (the file's, else 24 h); unpaced: the 30 s default.
        assert_eq!(
            timeouts(&format!("{c3}rate_limit='600/min'\n{c3}name='b'\n")),
            [Duration::from_secs(24 * 3600), Duration::from_secs(30)]
        );
        assert_eq!(
            timeouts(&format!("max_staleness='2h'\n{c3}rate_limit='600/min'\n")),
            [Duration::from_secs(7200)]
        );
        // A timeout set in the table or at the top level is kept as written.
        assert_eq!(
            timeouts(&format!("{c3}rate_limit='600/min'\ntimeout_secs=90\n")),
            [Duration::from_secs(90)]
        );
        assert_eq!(
            timeouts(&format!("timeout_secs=45\n{c3}rate_limit='600/min'\n")),
            [Duration::from_secs(45)]
        );
    }

    #[test]
    fn a_missing_file_says_so() {
        let e = Config::load(Path::new("/nonexistent/ch.toml"), &env).unwrap_err();
        assert_eq!(e.exit_code(), 66);
        assert_eq!(
            e.message(),
            "/nonexistent/ch.toml: cannot read config file: no such file"
        );
    }
}
