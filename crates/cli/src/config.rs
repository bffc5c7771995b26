//! The TOML configuration: one `[[provider]]` table per provider account.
//!
//! Credentials are never in the file: it names environment variables (`api_key_env = "…"`),
//! read when the config is resolved. Every mistake is one line naming the file, the key and
//! what was expected.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A configuration mistake: one line, naming the file and the key.
#[derive(Debug)]
pub struct ConfigError {
    /// What to print.
    pub message: String,
    /// The process exit code (66 missing file, 78 bad content).
    pub exit_code: i32,
}

impl ConfigError {
    fn new(file: &Path, message: impl std::fmt::Display) -> Self {
        ConfigError {
            message: format!("{}: {message}", file.display()),
            exit_code: 78,
        }
    }
}

/// Defaults applied to every provider that does not set its own.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// Default per-provider fan-out bound.
pub const DEFAULT_CONCURRENCY: usize = 32;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTop {
    timeout_secs: Option<u64>,
    concurrency: Option<usize>,
    #[serde(default)]
    provider: Vec<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannel3 {
    #[allow(dead_code)]
    kind: String,
    name: Option<String>,
    base_url: Option<String>,
    api_key_env: String,
    customers: Option<Vec<String>>,
    timeout_secs: Option<u64>,
    concurrency: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawViolet {
    #[allow(dead_code)]
    kind: String,
    name: Option<String>,
    base_url: Option<String>,
    app_id: u64,
    app_secret_env: String,
    username_env: String,
    password_env: String,
    exclude_public: Option<bool>,
    timeout_secs: Option<u64>,
    concurrency: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubtotal {
    #[allow(dead_code)]
    kind: String,
    name: Option<String>,
    base_url: Option<String>,
    api_key_env: String,
    customers: Vec<String>,
    link_url: Option<String>,
    timeout_secs: Option<u64>,
    concurrency: Option<usize>,
}

/// Settings every provider has.
#[derive(Debug, Clone)]
pub struct Common {
    /// Name in reports (the kind unless set).
    pub name: String,
    /// Base URL override.
    pub base_url: Option<String>,
    /// Whole-fetch timeout.
    pub timeout: Duration,
    /// Fan-out bound.
    pub concurrency: usize,
}

/// One provider account, with credentials read from the environment.
#[derive(Debug, Clone)]
pub enum ProviderConfig {
    /// Channel3 partner account.
    Channel3 {
        /// Shared settings.
        common: Common,
        /// The partner key.
        api_key: connhealth_core::Secret,
        /// Explicit customers, or discovery when `None`.
        customers: Option<Vec<String>>,
    },
    /// Violet app.
    Violet {
        /// Shared settings.
        common: Common,
        /// The app id (not a secret).
        app_id: u64,
        /// The app secret.
        app_secret: connhealth_core::Secret,
        /// The owner's username (an e-mail address).
        username: String,
        /// The owner's password.
        password: connhealth_core::Secret,
        /// Leave out merchants with PUBLIC distribution.
        exclude_public: Option<bool>,
    },
    /// Subtotal account.
    Subtotal {
        /// Shared settings.
        common: Common,
        /// The API key.
        api_key: connhealth_core::Secret,
        /// Customers to watch.
        customers: Vec<String>,
        /// Link URL base for re-authentication links.
        link_url: Option<String>,
    },
}

impl ProviderConfig {
    /// Shared settings.
    pub fn common(&self) -> &Common {
        match self {
            ProviderConfig::Channel3 { common, .. }
            | ProviderConfig::Violet { common, .. }
            | ProviderConfig::Subtotal { common, .. } => common,
        }
    }
}

/// A resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from.
    pub path: PathBuf,
    /// The providers, in file order.
    pub providers: Vec<ProviderConfig>,
}

/// Where environment variables come from (the process environment, or a map in tests).
pub trait Env {
    /// The variable's value, if set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Config {
    /// Read and resolve a config file.
    pub fn load(path: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            message: format!(
                "{}: cannot read config file: {}",
                path.display(),
                io_reason(&e)
            ),
            exit_code: 66,
        })?;
        Config::parse(path, &text, env)
    }

    /// Parse and resolve config text (`path` is only used in messages).
    pub fn parse(path: &Path, text: &str, env: &dyn Env) -> Result<Config, ConfigError> {
        let raw: RawTop = serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|e| ConfigError::new(path, located(text, &e)))?;
        if raw.provider.is_empty() {
            return Err(ConfigError::new(
                path,
                "no [[provider]] table; add one per provider (see `connhealth config example`)",
            ));
        }
        let default_timeout =
            positive(path, "timeout_secs", raw.timeout_secs)?.unwrap_or(DEFAULT_TIMEOUT_SECS);
        let default_conc = positive(path, "concurrency", raw.concurrency.map(|c| c as u64))?
            .map(|c| c as usize)
            .unwrap_or(DEFAULT_CONCURRENCY);
        let mut providers = Vec::new();
        let mut names = HashSet::new();
        for (i, value) in raw.provider.into_iter().enumerate() {
            let at = format!("provider[{i}]");
            let kind = value
                .get("kind")
                .and_then(|k| k.as_str())
                .ok_or_else(|| ConfigError::new(path, format!("{at}: missing key `kind`; expected one of \"channel3\", \"violet\", \"subtotal\"")))?
                .to_owned();
            let at = format!("{at} ({kind})");
            let err = |e: serde_path_to_error::Error<toml::de::Error>| {
                let key = e.path().to_string();
                let sep = if key == "." {
                    ": ".to_owned()
                } else {
                    format!(".{key}: ")
                };
                ConfigError::new(path, format!("{at}{sep}{}", toml_message(e.inner())))
            };
            let common = |name: Option<String>,
                          base_url: Option<String>,
                          t: Option<u64>,
                          c: Option<usize>|
             -> Result<Common, ConfigError> {
                let timeout =
                    positive(path, &format!("{at}.timeout_secs"), t)?.unwrap_or(default_timeout);
                let concurrency =
                    positive(path, &format!("{at}.concurrency"), c.map(|c| c as u64))?
                        .map(|c| c as usize)
                        .unwrap_or(default_conc);
                let name = name.unwrap_or_else(|| kind.clone());
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
                {
                    return Err(ConfigError::new(path, format!("{at}.name: {name:?} is not a valid name; expected letters, digits, '-' or '_'")));
                }
                Ok(Common {
                    name,
                    base_url,
                    timeout: Duration::from_secs(timeout),
                    concurrency,
                })
            };
            let secret = |key: &str, var: &str| -> Result<connhealth_core::Secret, ConfigError> {
                match env.var(var) {
                    Some(v) if !v.trim().is_empty() => Ok(connhealth_core::Secret::new(v)),
                    Some(_) => Err(ConfigError::new(
                        path,
                        format!("{at}.{key}: environment variable {var} is empty"),
                    )),
                    None => Err(ConfigError::new(
                        path,
                        format!("{at}.{key}: environment variable {var} is not set"),
                    )),
                }
            };
            let p = match kind.as_str() {
                "channel3" => {
                    let r: RawChannel3 = serde_path_to_error::deserialize(value).map_err(err)?;
                    ProviderConfig::Channel3 {
                        api_key: secret("api_key_env", &r.api_key_env)?,
                        common: common(r.name, r.base_url, r.timeout_secs, r.concurrency)?,
                        customers: r.customers,
                    }
                }
                "violet" => {
                    let r: RawViolet = serde_path_to_error::deserialize(value).map_err(err)?;
                    ProviderConfig::Violet {
                        app_secret: secret("app_secret_env", &r.app_secret_env)?,
                        username: secret("username_env", &r.username_env)?.expose().to_owned(),
                        password: secret("password_env", &r.password_env)?,
                        common: common(r.name, r.base_url, r.timeout_secs, r.concurrency)?,
                        app_id: r.app_id,
                        exclude_public: r.exclude_public,
                    }
                }
                "subtotal" => {
                    let r: RawSubtotal = serde_path_to_error::deserialize(value).map_err(err)?;
                    ProviderConfig::Subtotal {
                        api_key: secret("api_key_env", &r.api_key_env)?,
                        common: common(r.name, r.base_url, r.timeout_secs, r.concurrency)?,
                        customers: r.customers,
                        link_url: r.link_url,
                    }
                }
                other => {
                    return Err(ConfigError::new(
                        path,
                        format!("provider[{i}].kind: unknown kind {other:?}; expected one of \"channel3\", \"violet\", \"subtotal\""),
                    ))
                }
            };
            let name = p.common().name.clone();
            if !names.insert(name.clone()) {
                return Err(ConfigError::new(
                    path,
                    format!("{at}.name: {name:?} is used twice; give each provider of the same kind a distinct `name`"),
                ));
            }
            providers.push(p);
        }
        Ok(Config {
            path: path.to_owned(),
            providers,
        })
    }
}

fn positive(path: &Path, key: &str, v: Option<u64>) -> Result<Option<u64>, ConfigError> {
    match v {
        Some(0) => Err(ConfigError::new(
            path,
            format!("{key}: must be a positive whole number, got 0"),
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

/// toml's message on one line, without the source snippet, with its line number.
fn toml_message(e: &toml::de::Error) -> String {
    let msg = e.message().trim().replace('\n', " ");
    msg.replace("unknown field", "unknown key")
        .replace("missing field", "missing key")
}

/// The commented example printed by `connhealth config example`.
pub const EXAMPLE: &str = r#"# connhealth configuration.
# Credentials are never written here: each *_env key names the environment variable to read.

timeout_secs = 30            # per provider, whole fetch (default 30)
concurrency = 32             # per provider fan-out bound (default 32)

[[provider]]
kind = "channel3"
# base_url = "https://partners.trychannel3.com"   # the default
api_key_env = "CHANNEL3_API_KEY"
# customers = ["cus_123"]                         # default: discover all merchants

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
# link_url = "https://link.subtotal.com/abc123"   # re-authentication links in remediations
# timeout_secs = 60                               # any provider may override the defaults
# concurrency = 8

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

    struct MapEnv(HashMap<&'static str, &'static str>);
    impl Env for MapEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|s| s.to_string())
        }
    }

    fn env() -> MapEnv {
        MapEnv(HashMap::from([
            ("CHANNEL3_API_KEY", "c3_sk_test"),
            ("VIOLET_APP_SECRET", "vs"),
            ("VIOLET_USERNAME", "owner@example.com"),
            ("VIOLET_PASSWORD", "pw"),
            ("SUBTOTAL_API_KEY", "st"),
            ("EMPTY", " "),
        ]))
    }

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("ch.toml"), text, &env()).map_err(|e| {
            assert_eq!(e.exit_code, 78);
            assert!(!e.message.contains('\n'), "not one line: {}", e.message);
            e.message
        })
    }

    #[test]
    fn the_example_parses() {
        let c = parse(EXAMPLE).unwrap();
        assert_eq!(c.providers.len(), 3);
        let names: Vec<&str> = c
            .providers
            .iter()
            .map(|p| p.common().name.as_str())
            .collect();
        assert_eq!(names, ["channel3", "violet", "subtotal"]);
        assert!(c
            .providers
            .iter()
            .all(|p| p.common().timeout == Duration::from_secs(30)));
        // Secrets do not show in Debug.
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("c3_sk_test") && !dbg.contains("\"pw\""),
            "{dbg}"
        );
    }

    #[test]
    fn overrides_and_defaults() {
        let c = parse(
            "concurrency = 4\n[[provider]]\nkind='channel3'\napi_key_env='CHANNEL3_API_KEY'\ntimeout_secs=5\n[[provider]]\nkind='channel3'\nname='c3-eu'\napi_key_env='CHANNEL3_API_KEY'\nconcurrency=9\n",
        )
        .unwrap();
        assert_eq!(c.providers[0].common().timeout, Duration::from_secs(5));
        assert_eq!(c.providers[0].common().concurrency, 4);
        assert_eq!(c.providers[1].common().concurrency, 9);
        assert_eq!(c.providers[1].common().name, "c3-eu");
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

    #[test]
    fn a_missing_file_says_so() {
        let e = Config::load(Path::new("/nonexistent/ch.toml"), &env()).unwrap_err();
        assert_eq!(e.exit_code, 66);
        assert_eq!(
            e.message,
            "/nonexistent/ch.toml: cannot read config file: no such file"
        );
    }
}
