//! The client settings every adapter builder shares, validated once.
//!
//! Each adapter builder embeds one [`ClientOptions`] and exposes its setters through
//! [`client_options_setters!`](crate::client_options_setters); its `build()` calls
//! [`ClientOptions::validate`] with the adapter's [`AdapterDefaults`] and gets the trimmed name,
//! the [`HttpClient`] and the concurrency bound back. So every adapter trims its name, refuses
//! a zero timeout or a zero concurrency the same way, and `without_timers` means the same
//! everywhere.
//!
//! ```
//! use std::time::Duration;
//! use connhealth_core::{AdapterDefaults, ClientOptions, ErrorKind};
//!
//! const DEFAULTS: AdapterDefaults = AdapterDefaults {
//!     name: "example",
//!     base_url: "https://api.example.com",
//!     max_body_bytes: 1 << 20,
//!     concurrency: 8,
//! };
//! let v = ClientOptions::new().name("  eu  ").validate(&DEFAULTS).unwrap();
//! assert_eq!(v.name, "eu");
//! assert_eq!(v.concurrency.limit(), 8);
//!
//! let e = ClientOptions::new()
//!     .request_timeout(Duration::ZERO)
//!     .validate(&DEFAULTS)
//!     .unwrap_err();
//! assert_eq!(e.kind(), ErrorKind::Config);
//! ```

use std::time::Duration;

use crate::error::{Error, Result};
use crate::http::{HttpClient, HttpConfig, RateLimit, RetryPolicy};
use crate::provider::Concurrency;

/// The largest fan-out bound accepted (a larger one is a configuration mistake, and one near
/// `usize::MAX` would make tokio's semaphore panic).
pub const MAX_CONCURRENCY: usize = 10_000;

/// What an adapter uses where a [`ClientOptions`] setting was not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdapterDefaults {
    /// The provider name (`channel3`, …).
    pub name: &'static str,
    /// The production base URL.
    pub base_url: &'static str,
    /// The response-body cap.
    pub max_body_bytes: usize,
    /// The fan-out bound.
    pub concurrency: usize,
}

/// Client settings shared by every adapter: name, base URL, timeouts, retries, body cap and
/// concurrency. Setters never fail; [`ClientOptions::validate`] checks everything once.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    name: Option<String>,
    base_url: Option<String>,
    request_timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    without_timers: bool,
    retry: Option<RetryPolicy>,
    max_body_bytes: Option<usize>,
    concurrency: Option<usize>,
    shared_concurrency: Option<Concurrency>,
    rate_limit: Option<RateLimit>,
}

/// [`ClientOptions`] after validation.
#[derive(Debug, Clone)]
pub struct ValidatedOptions {
    /// The provider name, trimmed.
    pub name: String,
    /// The HTTP client (base URL, timeouts, retries and body cap checked).
    pub http: HttpClient,
    /// The settings `http` was built from.
    pub http_config: HttpConfig,
    /// The fan-out bound: the shared one when given, else a new one.
    pub concurrency: Concurrency,
    /// Whether `concurrency` was shared in through [`ClientOptions::shared_concurrency`].
    pub shared_concurrency: bool,
}

impl ClientOptions {
    /// Applies the keys every adapter's config table shares (`name`, `base_url`,
    /// `timeout_secs`, `concurrency`): a key the table leaves out keeps the current setting;
    /// `timeout_secs` is the whole fetch's budget, so one request gets at most
    /// [`MAX_REQUEST_TIMEOUT`](crate::config_file::MAX_REQUEST_TIMEOUT) of it. Nothing is
    /// validated here ([`ClientOptions`] validates once, when the adapter is built).
    pub fn with_table_keys(
        mut self,
        name: Option<&str>,
        base_url: Option<&str>,
        timeout_secs: Option<u64>,
        concurrency: Option<usize>,
    ) -> Self {
        if let Some(name) = name {
            self = self.name(name);
        }
        if let Some(url) = base_url {
            self = self.base_url(url);
        }
        if let Some(t) = timeout_secs {
            self = self.request_timeout(crate::config_file::request_timeout(t));
        }
        if let Some(n) = concurrency {
            self = self.concurrency(n);
        }
        self
    }

    /// Nothing set: every setting takes the adapter's default.
    pub fn new() -> Self {
        ClientOptions::default()
    }

    /// The provider's name in reports, connection ids and errors (trimmed; not empty).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The API's base URL: `https://`, or `http://` on a loopback host.
    pub fn base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = Some(base_url.into());
        self
    }

    /// Timeout of one request attempt, body included (default 30 s; must be positive).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// TCP + TLS connect timeout (default 10 s; must be positive).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// No client-side timers at all (no connect, request or idle-connection timeout),
    /// whatever the timeout setters say and in whichever order they were called. For tests on
    /// tokio's paused clock (see [`HttpConfig::without_timers`]); not for production use.
    pub fn without_timers(mut self) -> Self {
        self.without_timers = true;
        self
    }

    /// Retry policy for safe requests (default [`RetryPolicy::default`]).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Largest response body accepted (default: the adapter's).
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = Some(bytes);
        self
    }

    /// At most this many requests in flight (1 to [`MAX_CONCURRENCY`]; default: the
    /// adapter's). Replaces a shared bound set before.
    pub fn concurrency(mut self, limit: usize) -> Self {
        self.concurrency = Some(limit);
        self.shared_concurrency = None;
        self
    }

    /// The provider's request budget (`rate_limit = "600/min"`): every request of this
    /// provider (polls, refreshes, actions, logins, retries) waits for it; see [`crate::rate`].
    /// Default: none (adaptive pacing only).
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// The request budget as set, if set.
    pub fn rate_limit_setting(&self) -> Option<RateLimit> {
        self.rate_limit
    }

    /// Share a bound with other providers (overrides [`ClientOptions::concurrency`]). For the
    /// bound to span providers, create it with [`Concurrency::shared`].
    pub fn shared_concurrency(mut self, bound: Concurrency) -> Self {
        self.shared_concurrency = Some(bound);
        self
    }

    /// Check every setting and build the HTTP client. Errors are `config` errors naming the
    /// setting (under the default name when the name itself is wrong).
    pub fn validate(&self, defaults: &AdapterDefaults) -> Result<ValidatedOptions> {
        let name = match &self.name {
            None => defaults.name.to_owned(),
            Some(n) if n.trim().is_empty() => {
                return Err(Error::config(defaults.name, "name must not be empty"))
            }
            Some(n) => n.trim().to_owned(),
        };
        let positive = |what: &str, t: Option<Duration>| match t {
            Some(t) if t.is_zero() => Err(Error::config(
                &name,
                format!("{what} must be positive (use without_timers for no timeout at all)"),
            )),
            _ => Ok(()),
        };
        positive("request_timeout", self.request_timeout)?;
        positive("connect_timeout", self.connect_timeout)?;
        let (concurrency, shared) = match (&self.shared_concurrency, self.concurrency) {
            (Some(bound), _) => (bound.clone(), true),
            (None, Some(0)) => {
                return Err(Error::config(&name, "concurrency must be at least 1"));
            }
            (None, Some(n)) if n > MAX_CONCURRENCY => {
                return Err(Error::config(
                    &name,
                    format!("concurrency {n} is too large (at most {MAX_CONCURRENCY})"),
                ));
            }
            (None, n) => (Concurrency::new(n.unwrap_or(defaults.concurrency)), false),
        };
        let mut http = HttpConfig::new(
            self.base_url
                .clone()
                .unwrap_or_else(|| defaults.base_url.to_owned()),
        );
        if self.request_timeout.is_some() {
            http.request_timeout = self.request_timeout;
        }
        if self.connect_timeout.is_some() {
            http.connect_timeout = self.connect_timeout;
        }
        if self.without_timers {
            http = http.without_timers();
        }
        if let Some(r) = &self.retry {
            http.retry = r.clone();
        }
        http.max_body_bytes = self.max_body_bytes.unwrap_or(defaults.max_body_bytes);
        http.rate_limit = self.rate_limit;
        Ok(ValidatedOptions {
            http: HttpClient::new(&name, &http)?,
            http_config: http,
            name,
            concurrency,
            shared_concurrency: shared,
        })
    }

    /// The name as set (untrimmed), if set.
    pub fn name_setting(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The base URL as set, if set.
    pub fn base_url_setting(&self) -> Option<&str> {
        self.base_url.as_deref()
    }

    /// The fan-out bound as set, if set.
    pub fn concurrency_setting(&self) -> Option<usize> {
        self.concurrency
    }
}

/// The [`ClientOptions`] setters, for an adapter builder with a field `options: ClientOptions`:
/// `options`, `name`, `base_url`, `request_timeout`, `connect_timeout`, `without_timers`,
/// `retry`, `max_body_bytes`, `concurrency`, `shared_concurrency`, `rate_limit`,
/// `rate_limit_opt`. Written once here so that
/// every adapter's builder has the same setters with the same meaning.
///
/// ```
/// use connhealth_core::ClientOptions;
///
/// #[derive(Debug, Default)]
/// pub struct ExampleBuilder {
///     options: ClientOptions,
/// }
///
/// impl ExampleBuilder {
///     connhealth_core::client_options_setters!();
/// }
///
/// let b = ExampleBuilder::default().name("eu").concurrency(4);
/// assert_eq!(b.options.concurrency_setting(), Some(4));
/// ```
#[macro_export]
macro_rules! client_options_setters {
    () => {
        /// Set every shared client setting at once (replacing those set before).
        pub fn options(mut self, options: $crate::ClientOptions) -> Self {
            self.options = options;
            self
        }

        /// The provider's name in reports, connection ids and errors (default: the adapter's
        /// `DEFAULT_NAME`). Trimmed; must not be empty. Set it when two accounts of one
        /// provider are configured.
        pub fn name(mut self, name: impl Into<String>) -> Self {
            self.options = self.options.name(name);
            self
        }

        /// The API's base URL (default: the adapter's production URL). Must be `https://`
        /// unless the host is loopback.
        pub fn base_url(mut self, base_url: impl Into<String>) -> Self {
            self.options = self.options.base_url(base_url);
            self
        }

        /// Timeout of one request attempt, body included (default 30 s; must be positive).
        pub fn request_timeout(mut self, timeout: ::std::time::Duration) -> Self {
            self.options = self.options.request_timeout(timeout);
            self
        }

        /// TCP + TLS connect timeout (default 10 s; must be positive).
        pub fn connect_timeout(mut self, timeout: ::std::time::Duration) -> Self {
            self.options = self.options.connect_timeout(timeout);
            self
        }

        /// No client-side timers at all, whatever the timeout setters say. For tests on
        /// tokio's paused clock; not for production use (see
        /// [`ClientOptions::without_timers`]($crate::ClientOptions::without_timers)).
        pub fn without_timers(mut self) -> Self {
            self.options = self.options.without_timers();
            self
        }

        /// Retry policy for safe requests (default
        /// [`RetryPolicy::default`]($crate::http::RetryPolicy::default)).
        pub fn retry(mut self, policy: $crate::http::RetryPolicy) -> Self {
            self.options = self.options.retry(policy);
            self
        }

        /// Largest response body accepted (default: the adapter's).
        pub fn max_body_bytes(mut self, bytes: usize) -> Self {
            self.options = self.options.max_body_bytes(bytes);
            self
        }

        /// At most this many requests in flight (default 32; 1 to 10,000).
        pub fn concurrency(mut self, limit: usize) -> Self {
            self.options = self.options.concurrency(limit);
            self
        }

        /// The keys every config table shares (see
        /// [`ClientOptions::with_table_keys`]($crate::ClientOptions::with_table_keys)); for
        /// the adapters' `from_config`.
        pub fn table_keys(
            mut self,
            name: Option<&str>,
            base_url: Option<&str>,
            timeout_secs: Option<u64>,
            concurrency: Option<usize>,
        ) -> Self {
            self.options = self
                .options
                .with_table_keys(name, base_url, timeout_secs, concurrency);
            self
        }

        /// The provider's request budget, e.g. `"600/min".parse()?`: every request of this
        /// provider (polls, refreshes, actions, logins, retries) waits for it (default: none;
        /// see [`connhealth_core::rate`]($crate::rate)).
        pub fn rate_limit(mut self, limit: $crate::http::RateLimit) -> Self {
            self.options = self.options.rate_limit(limit);
            self
        }

        /// [`rate_limit`](Self::rate_limit) when `Some` (for the adapters' `from_config`).
        pub fn rate_limit_opt(mut self, limit: Option<$crate::http::RateLimit>) -> Self {
            if let Some(l) = limit {
                self.options = self.options.rate_limit(l);
            }
            self
        }

        /// Share a bound with other providers (overrides `concurrency`). For the bound to span
        /// providers, create it with
        /// [`Concurrency::shared`]($crate::Concurrency::shared).
        pub fn shared_concurrency(mut self, bound: $crate::Concurrency) -> Self {
            self.options = self.options.shared_concurrency(bound);
            self
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    const D: AdapterDefaults = AdapterDefaults {
        name: "prov",
        base_url: "https://api.example.com",
        max_body_bytes: 1024,
        concurrency: 7,
    };

    fn err(o: ClientOptions) -> String {
        let e = o.validate(&D).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        e.to_string()
    }

    #[test]
    fn table_keys_override_only_what_the_table_sets() {
        let base = ClientOptions::new().name("kept").concurrency(3);
        let v = base
            .clone()
            .with_table_keys(None, None, None, None)
            .validate(&D)
            .unwrap();
        assert_eq!((v.name.as_str(), v.concurrency.limit()), ("kept", 3));
        let v = base
            .with_table_keys(Some("eu"), Some("http://127.0.0.1:9"), Some(300), Some(5))
            .validate(&D)
            .unwrap();
        assert_eq!(v.name, "eu");
        assert_eq!(v.http.base_url().as_str(), "http://127.0.0.1:9/");
        assert_eq!(v.concurrency.limit(), 5);
        // A zero budget reaches validation (and is refused there), never silently accepted.
        assert!(
            err(ClientOptions::new().with_table_keys(None, None, Some(0), None))
                .contains("timeout")
        );
    }

    #[test]
    fn defaults_apply_and_names_are_trimmed() {
        let v = ClientOptions::new().validate(&D).unwrap();
        assert_eq!(v.name, "prov");
        assert_eq!(v.http.base_url().as_str(), "https://api.example.com/");
        assert_eq!(v.concurrency.limit(), 7);
        assert!(!v.shared_concurrency);
        let v = ClientOptions::new().name(" eu\t").validate(&D).unwrap();
        assert_eq!(v.name, "eu");
        assert_eq!(v.http.provider(), "eu");
        assert!(err(ClientOptions::new().name("  ")).starts_with("prov: config"));
    }

    #[test]
    fn zero_and_absurd_values_are_refused() {
        let e = err(ClientOptions::new().request_timeout(Duration::ZERO));
        assert!(e.contains("request_timeout must be positive"), "{e}");
        let e = err(ClientOptions::new().connect_timeout(Duration::ZERO));
        assert!(e.contains("connect_timeout must be positive"), "{e}");
        let e = err(ClientOptions::new().concurrency(0));
        assert!(e.contains("concurrency must be at least 1"), "{e}");
        let e = err(ClientOptions::new().concurrency(1 << 61));
        assert!(e.contains("at most 10000"), "{e}");
        let e = err(ClientOptions::new().max_body_bytes(0));
        assert!(e.contains("max_body_bytes"), "{e}");
        let e = err(ClientOptions::new().retry(RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        }));
        assert!(e.contains("max_attempts"), "{e}");
        let e = err(ClientOptions::new().base_url("http://api.example.com"));
        assert!(e.contains("https"), "{e}");
        assert!(ClientOptions::new()
            .concurrency(MAX_CONCURRENCY)
            .validate(&D)
            .is_ok());
    }

    #[test]
    fn without_timers_wins_whatever_the_order() {
        // Both orders give a client without timers; a zero timeout is refused even then.
        for o in [
            ClientOptions::new()
                .without_timers()
                .request_timeout(Duration::from_secs(1)),
            ClientOptions::new()
                .request_timeout(Duration::from_secs(1))
                .without_timers(),
        ] {
            let http = o.validate(&D).unwrap().http_config;
            assert_eq!(
                (
                    http.request_timeout,
                    http.connect_timeout,
                    http.pool_idle_timeout
                ),
                (None, None, None)
            );
        }
        let http = ClientOptions::new()
            .request_timeout(Duration::from_secs(2))
            .validate(&D)
            .unwrap()
            .http_config;
        assert_eq!(http.request_timeout, Some(Duration::from_secs(2)));
        assert_eq!(http.max_body_bytes, 1024);
        err(ClientOptions::new()
            .without_timers()
            .request_timeout(Duration::ZERO));
    }

    #[test]
    fn a_shared_bound_overrides_and_concurrency_replaces_it() {
        let shared = Concurrency::shared(3);
        let v = ClientOptions::new()
            .concurrency(9)
            .shared_concurrency(shared.clone())
            .validate(&D)
            .unwrap();
        assert!(v.shared_concurrency);
        assert_eq!(v.concurrency.limit(), 3);
        let v = ClientOptions::new()
            .shared_concurrency(shared)
            .concurrency(9)
            .validate(&D)
            .unwrap();
        assert!(!v.shared_concurrency);
        assert_eq!(v.concurrency.limit(), 9);
    }
}
