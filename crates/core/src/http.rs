//! Shared HTTP plumbing: one client per provider, retries where safe, capped bodies, typed errors.
//!
//! Every adapter talks to its API through an [`HttpClient`]:
//! - rustls TLS, connect and request timeouts, user agent `connhealth/<version>`;
//! - `base_url` must be `https://` unless the host is loopback (tests, simulators);
//! - redirects are followed only within the same origin, so a key never travels elsewhere;
//! - path ids are percent-encoded as exactly one segment ([`HttpClient::url`]);
//! - safe requests (GET, HEAD) are retried on transient failures with jittered exponential
//!   backoff, honouring `Retry-After` (seconds or HTTP-date) on 429/503, within a cap on
//!   attempts and on total time; other methods are retried only when the connection could not
//!   be established (nothing was sent) or when the caller opts in;
//! - every attempt first waits for the provider's rate control ([`crate::rate`]): the shared
//!   `Retry-After` pause, the adaptive pacing rate and the configured budget (`rate_limit`);
//! - response bodies are capped; a non-2xx answer becomes an [`Error`] carrying the provider's
//!   `detail`/`message`, never a secret.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
pub use reqwest::header::{self as header, HeaderName};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, RETRY_AFTER};
pub use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;
use url::Url;

use crate::error::{Error, ErrorKind, Result};
use crate::lenient::scrub_values;
use crate::rate::RateControl;
pub use crate::rate::{ParseRateLimitError, RateLimit};
use crate::secret::Secret;

/// The user agent every request carries.
pub const USER_AGENT: &str = concat!("connhealth/", env!("CARGO_PKG_VERSION"));

/// When and how often to retry.
///
/// The defaults: 4 attempts, backoff 200 ms doubling to at most 10 s (equal jitter), at most
/// 60 s spent in retries overall, and a `Retry-After` longer than 60 s is not waited for (the
/// error is returned with the delay attached, so a poller can slow down instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, including the first (1 = never retry).
    pub max_attempts: u32,
    /// The first backoff.
    pub initial_backoff: Duration,
    /// The largest backoff.
    pub max_backoff: Duration,
    /// The most time a request may take across all its attempts and waits before we give up
    /// instead of waiting again.
    pub max_total: Duration,
    /// The longest `Retry-After` we honour by waiting.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            max_total: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// Never retry.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The backoff before retry number `retry` (1-based): exponential, with equal jitter
    /// (half fixed, half random), capped at `max_backoff`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(30);
        let base = self
            .initial_backoff
            .saturating_mul(1u32 << exp)
            .min(self.max_backoff);
        let half = base / 2;
        let jitter_ms = fastrand::u64(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter_ms)
    }
}

/// Settings of an [`HttpClient`]. Setters never fail; [`HttpClient::new`] validates.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// The API's base URL (`https://…`, or `http://` on a loopback host).
    pub base_url: String,
    /// TCP + TLS connect timeout. `None`: none.
    pub connect_timeout: Option<Duration>,
    /// Timeout of one request attempt, body included. `None`: no per-request timeout.
    pub request_timeout: Option<Duration>,
    /// Largest response body accepted.
    pub max_body_bytes: usize,
    /// Retry policy for safe requests.
    pub retry: RetryPolicy,
    /// How long an idle pooled connection is kept. `None`: until the server closes it.
    pub pool_idle_timeout: Option<Duration>,
    /// The provider's request budget (`rate_limit`), applied before every attempt. `None`:
    /// no budget (the adaptive pacing still applies; see [`crate::rate`]).
    pub rate_limit: Option<RateLimit>,
}

impl HttpConfig {
    /// Defaults (10 s connect, 30 s request, 64 MiB bodies, default retries) for `base_url`.
    pub fn new(base_url: impl Into<String>) -> Self {
        HttpConfig {
            base_url: base_url.into(),
            connect_timeout: Some(Duration::from_secs(10)),
            request_timeout: Some(Duration::from_secs(30)),
            max_body_bytes: 64 * 1024 * 1024,
            retry: RetryPolicy::default(),
            pool_idle_timeout: Some(Duration::from_secs(90)),
            rate_limit: None,
        }
    }

    /// No client-side timers at all (no connect, request or pool-idle timeout).
    ///
    /// For tests on tokio's paused clock against a server on another thread (wiremock): the
    /// paused clock jumps to the next pending timer whenever the runtime waits on I/O, so any
    /// client timer could fire while a loopback answer is still on its way.
    pub fn without_timers(mut self) -> Self {
        self.connect_timeout = None;
        self.request_timeout = None;
        self.pool_idle_timeout = None;
        self
    }
}

/// Counters an [`HttpClient`] keeps (shared by its clones), for metrics: requests and retries,
/// and what the rate control ([`crate::rate`]) sees and does.
#[derive(Debug, Default)]
pub struct HttpStats {
    requests: AtomicU64,
    retries: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) unavailable: AtomicU64,
    pub(crate) paused_ns: AtomicU64,
    /// f64 bits; 0 = none.
    configured: AtomicU64,
    limit: AtomicU64,
    rate: AtomicU64,
}

fn load_rate(a: &AtomicU64) -> Option<f64> {
    let v = f64::from_bits(a.load(Ordering::Relaxed));
    (v > 0.0).then_some(v)
}

impl HttpStats {
    /// Answers 429 (Too Many Requests) received.
    pub fn rate_limited(&self) -> u64 {
        self.rate_limited.load(Ordering::Relaxed)
    }
    /// Answers 503 (Service Unavailable) received.
    pub fn unavailable(&self) -> u64 {
        self.unavailable.load(Ordering::Relaxed)
    }
    /// Time the provider was paused by `Retry-After` (all callers waiting), in all.
    pub fn paused(&self) -> Duration {
        Duration::from_nanos(self.paused_ns.load(Ordering::Relaxed))
    }
    /// The configured budget (`rate_limit`) in requests per second, if one is configured.
    pub fn configured_rate(&self) -> Option<f64> {
        load_rate(&self.configured)
    }
    /// The pacing limit in force, in requests per second: the smaller of the configured budget
    /// and the adaptive rate; `None` while neither applies (nothing configured, never throttled).
    pub fn current_limit(&self) -> Option<f64> {
        load_rate(&self.limit)
    }
    /// Requests answered (not throttled) in the last second, as last seen.
    pub fn current_rate(&self) -> f64 {
        load_rate(&self.rate).unwrap_or(0.0)
    }
    pub(crate) fn set_configured(&self, v: Option<f64>) {
        self.configured
            .store(v.unwrap_or(0.0).to_bits(), Ordering::Relaxed);
    }
    pub(crate) fn set_limit(&self, v: Option<f64>) {
        self.limit
            .store(v.unwrap_or(0.0).to_bits(), Ordering::Relaxed);
    }
    pub(crate) fn set_rate(&self, v: f64) {
        self.rate.store(v.to_bits(), Ordering::Relaxed);
    }
    /// Attempts sent (first tries and retries).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
    /// Retries sent.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
}

/// Checks a base URL: it must parse, have a host, and be `https` unless the host is loopback.
/// A trailing `/` is removed so that paths can be appended.
pub fn validate_base_url(provider: &str, base_url: &str) -> Result<Url> {
    let url = Url::parse(base_url.trim())
        .map_err(|e| Error::config(provider, format!("base_url {base_url:?} is not a URL: {e}")))?;
    let host = url
        .host()
        .ok_or_else(|| Error::config(provider, format!("base_url {base_url:?} has no host")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::config(
            provider,
            "base_url must not carry credentials; use the credential settings",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Error::config(
            provider,
            format!("base_url {base_url:?} must not have a query or fragment"),
        ));
    }
    let loopback = match host {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(Error::config(
                provider,
                format!("base_url {base_url:?} must use https:// (plain http is only allowed for loopback hosts)"),
            ))
        }
        other => {
            return Err(Error::config(
                provider,
                format!("base_url {base_url:?} has unsupported scheme {other:?}; use https://"),
            ))
        }
    }
    let mut url = url;
    let trimmed = url.path().trim_end_matches('/').to_owned();
    url.set_path(&trimmed);
    Ok(url)
}

/// Characters left as they are in a path segment: RFC 3986 unreserved. Everything else,
/// including `/ ? # %` and non-ASCII, is percent-encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes `id` as exactly one path segment. `.` and `..` (and empty ids) cannot be
/// expressed as a segment (URL parsers resolve them), so they are refused.
pub fn encode_segment(provider: &str, id: &str) -> Result<String> {
    check_segment(provider, id)?;
    Ok(utf8_percent_encode(id, SEGMENT).to_string())
}

/// Refuses the ids [`encode_segment`] cannot express.
fn check_segment(provider: &str, id: &str) -> Result<()> {
    if id.is_empty() || id == "." || id == ".." {
        return Err(Error::new(
            provider,
            "path",
            ErrorKind::InvalidRequest,
            format!("id {id:?} cannot be used as a URL path segment"),
        ));
    }
    Ok(())
}

/// A client for one provider's API.
#[derive(Debug, Clone)]
pub struct HttpClient {
    provider: Arc<str>,
    base: Url,
    client: reqwest::Client,
    retry: RetryPolicy,
    max_body: usize,
    stats: Arc<HttpStats>,
    rate: Arc<RateControl>,
}

impl HttpClient {
    /// Build a client for `provider` (its name appears in every error). Validates the config.
    pub fn new(provider: &str, config: &HttpConfig) -> Result<Self> {
        let base = validate_base_url(provider, &config.base_url)?;
        if config.retry.max_attempts == 0 {
            return Err(Error::config(
                provider,
                "retry.max_attempts must be at least 1",
            ));
        }
        if config.max_body_bytes == 0 {
            return Err(Error::config(provider, "max_body_bytes must be positive"));
        }
        let redirect = reqwest::redirect::Policy::custom(|attempt| {
            let same_origin = attempt
                .previous()
                .first()
                .map(|first| first.origin() == attempt.url().origin())
                .unwrap_or(false);
            // `previous` holds every URL requested so far (the first included): at most 5 hops.
            if same_origin && attempt.previous().len() <= 5 {
                attempt.follow()
            } else {
                // Returns the 3xx response itself; it becomes a `config` error below.
                attempt.stop()
            }
        });
        let mut builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .redirect(redirect)
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(1024)
            .tcp_nodelay(true)
            .use_rustls_tls();
        if let Some(t) = config.request_timeout {
            builder = builder.timeout(t);
        }
        if let Some(t) = config.connect_timeout {
            builder = builder.connect_timeout(t);
        }
        let client = builder.build().map_err(|e| {
            Error::config(
                provider,
                format!("cannot build HTTP client: {}", e.without_url()),
            )
        })?;
        let stats = Arc::new(HttpStats::default());
        Ok(HttpClient {
            provider: Arc::from(provider),
            base,
            client,
            retry: config.retry.clone(),
            max_body: config.max_body_bytes,
            rate: Arc::new(RateControl::new(config.rate_limit, stats.clone())),
            stats,
        })
    }

    /// The provider's name.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The validated base URL (no trailing slash).
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// Request counters.
    pub fn stats(&self) -> &Arc<HttpStats> {
        &self.stats
    }

    /// The configured request budget (`rate_limit`), if any.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.rate.budget()
    }

    /// The configured budget in requests per second, if any.
    pub fn configured_rate(&self) -> Option<f64> {
        self.stats.configured_rate()
    }

    /// The pacing limit in force in requests per second (the smaller of the budget and the
    /// adaptive rate), if any; see [`HttpStats::current_limit`].
    pub fn current_limit(&self) -> Option<f64> {
        self.stats.current_limit()
    }

    /// `base_url` + `/` + each segment. Segments are literal path parts (e.g. `"v0"`) or ids;
    /// every one is percent-encoded as exactly one segment, so an id containing `/`, `?`, `#`,
    /// `%`, spaces or unicode cannot change the path.
    pub fn url(&self, segments: &[&str]) -> Result<Url> {
        // The base is already validated: only the path is new, so set it rather than parse the
        // whole URL (host included) again on every request.
        let mut path = self.base.path().trim_end_matches('/').to_owned();
        for seg in segments {
            check_segment(&self.provider, seg)?;
            path.push('/');
            path.extend(utf8_percent_encode(seg, SEGMENT));
        }
        let mut url = self.base.clone();
        url.set_path(&path);
        Ok(url)
    }

    /// Start a request. `endpoint` is the label errors carry, e.g.
    /// `"GET /v0/partner/merchants/{customer_id}/connections"`.
    pub fn request(&self, method: Method, endpoint: impl Into<String>, url: Url) -> Request {
        let idempotent = matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
        Request {
            method,
            endpoint: endpoint.into(),
            url,
            headers: HeaderMap::new(),
            secrets: Vec::new(),
            body: None,
            retry_any: idempotent,
            customer: None,
            bad_header: None,
        }
    }

    /// Send `req`, retrying as the policy allows. A 2xx answer is `Ok`; anything else is an
    /// [`Error`] whose kind follows the status ([`ErrorKind::from_status`]).
    pub async fn send(&self, req: Request) -> Result<Response> {
        let req = Arc::new(req);
        let (meta, body) = self.send_into(req.clone(), Collect::default).await?;
        Ok(Response {
            status: meta.status,
            url: meta.url,
            headers: meta.headers,
            body,
            provider: self.provider.clone(),
            endpoint: req.endpoint.clone(),
            customer: req.customer.clone(),
            secrets: req.secrets.clone(),
        })
    }

    /// [`HttpClient::send`], with a 2xx body handed to a [`BodySink`] chunk by chunk as it
    /// arrives instead of gathered into one buffer (a large report is then decoded while it
    /// downloads and never held whole). Every attempt gets a fresh sink from `sink`; the
    /// retries, the rate control, the body cap and the errors are `send`'s. A sink's refusal
    /// is a `decode` error naming the provider and the endpoint, and is not retried.
    pub async fn send_into<S, F>(
        &self,
        req: impl Into<Arc<Request>>,
        sink: F,
    ) -> Result<(Answered, S::Output)>
    where
        S: BodySink,
        F: Fn() -> S + Send + Sync,
    {
        let req: Arc<Request> = req.into();
        if let Some(name) = &req.bad_header {
            return Err(self.error(
                &req,
                ErrorKind::Config,
                format!("header {name} has a value that cannot be sent"),
            ));
        }
        // The retry budget counts from the first attempt's send, not from the wait for the
        // provider's rate budget before it (a long queue under a small budget is not a reason
        // to give up retrying).
        let mut first_sent: Option<Instant> = None;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            // The provider's budget, pause and pacing, shared by every caller, before every
            // attempt (retries included).
            let permit = self.rate.acquire().await;
            let sent_at = Instant::now();
            let start = *first_sent.get_or_insert(sent_at);
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            if attempt > 1 {
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
            }
            let (err, nothing_sent) = match self.attempt(&req, &sink).await {
                Ok(resp) => {
                    self.rate.on_success(permit);
                    return Ok(resp);
                }
                Err(e) => e,
            };
            match err.http_status() {
                Some(status @ (429 | 503)) => self.rate.on_throttle(
                    status,
                    sent_at,
                    err.retry_after(),
                    self.retry.max_retry_after,
                ),
                // Answered (an error of the request's own): the provider accepted the call.
                Some(_) => self.rate.on_success(permit),
                None => {}
            }
            let retryable = err.is_transient() && (req.retry_any || nothing_sent);
            if !retryable || attempt >= self.retry.max_attempts {
                return Err(err);
            }
            let wait = match err.retry_after() {
                Some(ra) if ra > self.retry.max_retry_after => return Err(err),
                Some(ra) => ra,
                None => self.retry.backoff(attempt),
            };
            if start.elapsed() + wait > self.retry.max_total {
                return Err(err);
            }
            tracing::debug!(
                provider = %self.provider,
                endpoint = %req.endpoint,
                attempt,
                wait_ms = wait.as_millis() as u64,
                error = %err.kind(),
                "retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// Send a request and decode its JSON answer into `T`.
    pub async fn send_json<T: DeserializeOwned>(&self, req: Request) -> Result<T> {
        self.send(req).await?.json()
    }

    /// One attempt. On failure also says whether nothing reached the server (connect error).
    async fn attempt<S: BodySink>(
        &self,
        req: &Request,
        sink: &(impl Fn() -> S + Sync),
    ) -> std::result::Result<(Answered, S::Output), (Error, bool)> {
        let mut rb = self
            .client
            .request(req.method.clone(), req.url.clone())
            .headers(req.headers.clone());
        if let Some(body) = &req.body {
            rb = rb.body(body.clone());
        }
        let started = Instant::now();
        let resp = match rb.send().await {
            Ok(r) => r,
            Err(e) => {
                let connect = e.is_connect();
                return Err((self.transport_error(req, e), connect));
            }
        };
        let status = resp.status().as_u16();
        // Moved out, not cloned: reading the body does not need them (any decompression was
        // set up when the response arrived).
        let mut resp = resp;
        let url = resp.url().clone();
        let headers = std::mem::take(resp.headers_mut());
        let log = |bytes: usize| {
            tracing::debug!(
                provider = %self.provider,
                endpoint = %req.endpoint,
                status,
                bytes,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "response"
            )
        };
        if (200..300).contains(&status) {
            let (bytes, out) = self
                .read_body(req, resp, &headers, sink())
                .await
                .map_err(|e| (e, false))?;
            log(bytes);
            return Ok((
                Answered {
                    status,
                    url,
                    headers,
                },
                out,
            ));
        }
        // An error answer is read whole: its message is in it.
        let (bytes, body) = self
            .read_body(req, resp, &headers, Collect::default())
            .await
            .map_err(|e| (e, false))?;
        log(bytes);
        let response = Response {
            status,
            url,
            headers,
            body,
            provider: self.provider.clone(),
            endpoint: req.endpoint.clone(),
            customer: req.customer.clone(),
            secrets: req.secrets.clone(),
        };
        Err((response.to_error(), false))
    }

    /// Read a body into `sink`, within the cap; the bytes read and what the sink made of them.
    async fn read_body<S: BodySink>(
        &self,
        req: &Request,
        mut resp: reqwest::Response,
        headers: &HeaderMap,
        mut sink: S,
    ) -> Result<(usize, S::Output)> {
        let status = resp.status().as_u16();
        let too_large = |n: String| {
            self.error(
                req,
                ErrorKind::TooLarge,
                format!(
                    "response body {n} exceeds the cap of {} bytes",
                    self.max_body
                ),
            )
            .with_status(status)
        };
        let refused = |m: String| self.error(req, ErrorKind::Decode, m).with_status(status);
        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(len) = declared {
            if len > self.max_body as u64 {
                return Err(too_large(format!("of {len} bytes")));
            }
        }
        sink.declared(declared);
        let mut held = 0usize;
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if held + chunk.len() > self.max_body {
                        return Err(too_large("length".to_owned()));
                    }
                    held += chunk.len();
                    sink.feed(chunk).await.map_err(refused)?;
                }
                Ok(None) => {
                    let out = sink.finish().await.map_err(refused)?;
                    return Ok((held, out));
                }
                Err(e) => {
                    return Err(self.transport_error(req, e).with_status(status));
                }
            }
        }
    }

    fn error(&self, req: &Request, kind: ErrorKind, message: String) -> Error {
        let mut e = Error::new(&*self.provider, &req.endpoint, kind, message);
        if let Some(c) = &req.customer {
            e = e.with_customer(c.clone());
        }
        e
    }

    fn transport_error(&self, req: &Request, e: reqwest::Error) -> Error {
        let e = e.without_url();
        let (kind, what) = if e.is_timeout() {
            (ErrorKind::Timeout, "request timed out")
        } else if e.is_connect() {
            (ErrorKind::Connection, "could not connect")
        } else if e.is_body() || e.is_decode() {
            (
                ErrorKind::Connection,
                "connection failed while reading the body",
            )
        } else if e.is_redirect() {
            (ErrorKind::Config, "redirect refused")
        } else {
            (ErrorKind::Connection, "request failed")
        };
        let detail = redact(&error_chain(&e), &req.secrets);
        self.error(req, kind, format!("{what}: {detail}"))
            .with_source(e)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

fn redact(text: &str, secrets: &[Secret]) -> String {
    let mut out = text.to_owned();
    for s in secrets {
        if s.expose().len() >= 4 {
            out = out.replace(s.expose(), "[redacted]");
        }
    }
    out
}

/// A request being built. Header values given through [`Request::secret_header`] are marked
/// sensitive and scrubbed from any error text.
#[derive(Debug)]
pub struct Request {
    method: Method,
    endpoint: String,
    url: Url,
    headers: HeaderMap,
    secrets: Vec<Secret>,
    body: Option<Bytes>,
    retry_any: bool,
    customer: Option<String>,
    bad_header: Option<String>,
}

impl Request {
    /// Add a plain header. The name is a [`HeaderName`] (e.g. `header::ACCEPT`, or
    /// `HeaderName::from_static("x-violet-app-id")` in a `const`), so a name that cannot be
    /// sent is refused where it is written, not at run time. A value that cannot be sent makes
    /// [`HttpClient::send`] return a `config` error.
    pub fn header(mut self, name: HeaderName, value: &str) -> Self {
        match HeaderValue::from_str(value) {
            Ok(v) => {
                self.headers.insert(name, v);
            }
            Err(_) => self.bad_header = Some(name.as_str().to_owned()),
        }
        self
    }

    /// Add a header carrying a secret (`x-api-key`, a token). `prefix` is prepended to the
    /// value, e.g. `"Bearer "`.
    pub fn secret_header(mut self, name: HeaderName, prefix: &str, secret: &Secret) -> Self {
        match HeaderValue::from_str(&format!("{prefix}{}", secret.expose())) {
            Ok(mut v) => {
                v.set_sensitive(true);
                self.secrets.push(secret.clone());
                self.headers.insert(name, v);
            }
            Err(_) => self.bad_header = Some(name.as_str().to_owned()),
        }
        self
    }

    /// Add query parameters.
    pub fn query(mut self, pairs: &[(&str, &str)]) -> Self {
        self.url.query_pairs_mut().extend_pairs(pairs);
        self
    }

    /// Set a JSON body.
    pub fn json<T: Serialize + ?Sized>(mut self, body: &T) -> Self {
        match serde_json::to_vec(body) {
            Ok(v) => {
                self.body = Some(Bytes::from(v));
                self.headers.insert(
                    reqwest::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
            }
            Err(_) => self.bad_header = Some("body".to_owned()),
        }
        self
    }

    /// Name the customer this request is for; errors then carry it.
    pub fn for_customer(mut self, customer_id: impl Into<String>) -> Self {
        self.customer = Some(customer_id.into());
        self
    }

    /// Opt in to retrying this request on any transient failure even though its method is not
    /// idempotent. Without it, POST/PATCH/PUT/DELETE are retried only when the connection
    /// could not be established.
    pub fn retry_unsafe(mut self) -> Self {
        self.retry_any = true;
        self
    }

    /// The endpoint label.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The URL that will be requested.
    pub fn url(&self) -> &Url {
        &self.url
    }
}

/// What [`HttpClient::send_into`] tells of a 2xx answer besides its body.
#[derive(Debug, Clone)]
pub struct Answered {
    /// The HTTP status (2xx).
    pub status: u16,
    /// The URL that answered (after any redirects followed).
    pub url: Url,
    /// The response headers.
    pub headers: HeaderMap,
}

/// Where [`HttpClient::send_into`] puts a 2xx body as it arrives: [`BodySink::feed`] per chunk
/// in order, then [`BodySink::finish`] at its end. A sink that refuses the body (an `Err`
/// with a message that quotes no value) ends the request with a `decode` error.
pub trait BodySink: Send {
    /// What the whole body becomes.
    type Output: Send;
    /// The `Content-Length` the server declared, if any, before the first chunk (a sink may
    /// size a buffer from it). The default ignores it.
    fn declared(&mut self, _len: Option<u64>) {}
    /// The next chunk of the body.
    fn feed(
        &mut self,
        chunk: Bytes,
    ) -> impl std::future::Future<Output = std::result::Result<(), String>> + Send;
    /// The body ended (every chunk was fed).
    fn finish(
        self,
    ) -> impl std::future::Future<Output = std::result::Result<Self::Output, String>> + Send;
}

/// The sink [`HttpClient::send`] reads into: the body as one [`Bytes`]. A body that arrives in
/// one chunk (most do) is kept as it is; a longer one is gathered into a buffer sized from
/// `Content-Length` when the server sent one.
#[derive(Debug, Default)]
struct Collect {
    declared: usize,
    first: Option<Bytes>,
    buf: BytesMut,
}

impl BodySink for Collect {
    type Output = Bytes;

    fn declared(&mut self, len: Option<u64>) {
        self.declared = len.map_or(0, |l| l as usize);
    }

    async fn feed(&mut self, chunk: Bytes) -> std::result::Result<(), String> {
        if self.first.is_none() && self.buf.is_empty() {
            self.first = Some(chunk);
            return Ok(());
        }
        if let Some(f) = self.first.take() {
            self.buf.reserve(self.declared.max(f.len() + chunk.len()));
            self.buf.extend_from_slice(&f);
        }
        self.buf.extend_from_slice(&chunk);
        Ok(())
    }

    async fn finish(self) -> std::result::Result<Bytes, String> {
        Ok(self.first.unwrap_or_else(|| self.buf.freeze()))
    }
}

/// A received answer (2xx, or the error answer inside [`Response::to_error`]).
#[derive(Debug)]
pub struct Response {
    status: u16,
    /// The URL that answered (after any redirects followed).
    url: Url,
    headers: HeaderMap,
    body: Bytes,
    provider: Arc<str>,
    endpoint: String,
    customer: Option<String>,
    secrets: Vec<Secret>,
}

impl Response {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.status
    }
    /// The response headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }
    /// The body (at most the configured cap).
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Decode the body as JSON into `T`. A failure is a `decode` error naming the provider, the
    /// endpoint and where in the document it went wrong (values are not quoted, so no personal
    /// data reaches the message).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        decode_json(&self.provider, &self.endpoint, &self.body).map_err(|mut e| {
            if let Some(c) = &self.customer {
                e = e.with_customer(c.clone());
            }
            e.with_status(self.status)
        })
    }

    /// The error this (non-2xx) answer stands for: kind from the status, the provider's
    /// message from the body, `Retry-After` parsed.
    pub fn to_error(&self) -> Error {
        let kind = ErrorKind::from_status(self.status);
        let parsed = parse_error_body(&self.body);
        let mut message = parsed.message.unwrap_or_else(|| {
            if self.body.is_empty() {
                String::new()
            } else {
                let text = String::from_utf8_lossy(&self.body);
                let t: String = text.chars().take(200).collect();
                t.trim().to_owned()
            }
        });
        if (300..400).contains(&self.status) {
            // Where it points, resolved against the URL that answered (`Location` may be
            // relative). Same origin means the redirect policy stopped at its hop limit.
            let to = self
                .headers
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| self.url.join(l).ok());
            message = match to {
                Some(to) if to.origin() == self.url.origin() => format!(
                    "too many redirects within {} (more than 5 in a row); check base_url",
                    to.origin().ascii_serialization()
                ),
                Some(to) => format!(
                    "redirect to {} refused (credentials are never sent to another origin); check base_url",
                    to.origin().ascii_serialization()
                ),
                None => "redirect without a usable Location refused; check base_url".to_owned(),
            };
        }
        let mut e = Error::new(
            &*self.provider,
            &self.endpoint,
            kind,
            redact(&message, &self.secrets),
        )
        .with_status(self.status);
        if let Some(code) = parsed.code {
            e = e.with_provider_code(code);
        }
        if let Some(c) = &self.customer {
            e = e.with_customer(c.clone());
        }
        if matches!(self.status, 429 | 503) {
            if let Some(d) = self
                .headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after)
            {
                e = e.with_retry_after(d);
            }
        }
        e
    }
}

/// The longest delay [`parse_retry_after`] returns (about 31 years). A larger value is a broken
/// header; clamping it keeps `Instant + delay` from overflowing wherever the delay is used.
const MAX_RETRY_AFTER_SECS: u64 = 1_000_000_000;

/// Parse a `Retry-After` value: delay-seconds, or an HTTP-date (a date in the past is 0).
/// Delays are clamped to about 31 years.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(MAX_RETRY_AFTER_SECS)));
    }
    if let Ok(secs) = v.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_secs_f64(
                secs.min(MAX_RETRY_AFTER_SECS as f64),
            ));
        }
    }
    // An HTTP-date in any of the three forms RFC 9110 requires recipients to accept
    // (IMF-fixdate, RFC 850, asctime), by the `httpdate` crate rather than by hand.
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(MAX_RETRY_AFTER_SECS)),
    )
}

/// Decode JSON bytes into `T`, or a `decode` error with the JSON path where it failed.
pub fn decode_json<T: DeserializeOwned>(provider: &str, endpoint: &str, body: &[u8]) -> Result<T> {
    match serde_json::from_slice::<T>(body) {
        Ok(v) => Ok(v),
        Err(first) => {
            // Decode again with path tracking, only on the failure path.
            let de = &mut serde_json::Deserializer::from_slice(body);
            let path = match serde_path_to_error::deserialize::<_, T>(de) {
                Err(e) => e.path().to_string(),
                Ok(_) => String::from("."),
            };
            let what = match first.classify() {
                serde_json::error::Category::Syntax => "body is not valid JSON",
                serde_json::error::Category::Eof => "body ended early (truncated JSON)",
                serde_json::error::Category::Data => "body does not match the documented shape",
                serde_json::error::Category::Io => "body could not be read",
            };
            Err(Error::new(
                provider,
                endpoint,
                ErrorKind::Decode,
                format!(
                    "{what}: {} at {path} (line {}, column {}; {} bytes)",
                    scrub_values(&first.to_string()),
                    first.line(),
                    first.column(),
                    body.len()
                ),
            ))
        }
    }
}

struct ParsedError {
    message: Option<String>,
    code: Option<i64>,
}

/// Pull a message out of the error bodies providers send: FastAPI `{detail: string}` and
/// `{detail: [{loc, msg, type}]}` (rendered `body.email: msg`), Violet `{message, error_code}`,
/// and the common `{error}`, `{error_description}`, `{title}`.
fn parse_error_body(body: &[u8]) -> ParsedError {
    let mut out = ParsedError {
        message: None,
        code: None,
    };
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body)
    else {
        return out;
    };
    out.code = map
        .get("error_code")
        .or_else(|| map.get("errorCode"))
        .and_then(|v| {
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        });
    let detail = map.get("detail").and_then(|d| match d {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(render_detail_item).collect();
            (!parts.is_empty()).then(|| parts.join("; "))
        }
        serde_json::Value::Object(_) => Some(render_detail_item(d)),
        _ => None,
    });
    out.message = detail.or_else(|| {
        ["message", "error_description", "error", "title"]
            .iter()
            .find_map(|k| map.get(*k).and_then(|v| v.as_str()).map(str::to_owned))
    });
    out
}

fn render_detail_item(item: &serde_json::Value) -> String {
    let msg = item
        .get("msg")
        .or_else(|| item.get("message"))
        .and_then(|m| m.as_str());
    let loc = item.get("loc").and_then(|l| l.as_array()).map(|parts| {
        parts
            .iter()
            .map(|p| match p {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(".")
    });
    match (loc, msg) {
        (Some(l), Some(m)) if !l.is_empty() => format!("{l}: {m}"),
        (_, Some(m)) => m.to_owned(),
        _ => item.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let future = (chrono::Utc::now() + chrono::Duration::seconds(120))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let d = parse_retry_after(&future).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
        // The two obsolete forms recipients must still accept (RFC 9110 §5.6.7).
        for old in ["Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"] {
            assert_eq!(parse_retry_after(old), Some(Duration::ZERO), "{old}");
        }
        // Absurd values are clamped (an unclamped u64::MAX seconds made the watcher's
        // `Instant + delay` overflow and panic).
        let cap = Duration::from_secs(MAX_RETRY_AFTER_SECS);
        for absurd in [
            "18446744073709551615",
            "99999999999999999999",
            "1e300",
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ] {
            assert_eq!(parse_retry_after(absurd), Some(cap), "{absurd}");
        }
    }

    #[test]
    fn fastapi_validation_detail_names_the_field() {
        let body = br#"{"detail":[{"loc":["body","email"],"msg":"value is not a valid email address","type":"value_error"}]}"#;
        let p = parse_error_body(body);
        assert_eq!(
            p.message.as_deref(),
            Some("body.email: value is not a valid email address")
        );
        let p = parse_error_body(br#"{"detail":"Merchant not found"}"#);
        assert_eq!(p.message.as_deref(), Some("Merchant not found"));
        let p =
            parse_error_body(br#"{"status":401,"message":"Token has expired","error_code":11}"#);
        assert_eq!(p.message.as_deref(), Some("Token has expired"));
        assert_eq!(p.code, Some(11));
        let p = parse_error_body(b"<html>oops</html>");
        assert_eq!(p.message, None);
    }

    #[test]
    fn segments_are_encoded_as_one() {
        assert_eq!(encode_segment("t", "cus_123").unwrap(), "cus_123");
        assert_eq!(
            encode_segment("t", "a/b?c#d%e f").unwrap(),
            "a%2Fb%3Fc%23d%25e%20f"
        );
        assert_eq!(encode_segment("t", "../x").unwrap(), "..%2Fx");
        assert_eq!(encode_segment("t", "ü").unwrap(), "%C3%BC");
        for bad in ["", ".", ".."] {
            assert_eq!(
                encode_segment("t", bad).unwrap_err().kind(),
                ErrorKind::InvalidRequest
            );
        }
    }

    #[test]
    fn urls_are_what_parsing_the_joined_string_gives() {
        let ids = [
            "cus_123",
            "a/b?c#d%e f",
            "..%2Fx",
            "ü",
            "%2e",
            "...",
            "a b",
            "x:y@z",
            "~-._",
        ];
        for base in [
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8080/",
            "http://localhost:1/v1",
            "https://api.example.com/v1/",
            "https://api.example.com/a%20b",
        ] {
            let client = HttpClient::new("t", &HttpConfig::new(base)).unwrap();
            for id in ids {
                for segments in [&["v0", id, "connections"][..], &[id][..], &[][..]] {
                    let mut s = client.base_url().as_str().trim_end_matches('/').to_owned();
                    for seg in segments {
                        s.push('/');
                        s.push_str(&encode_segment("t", seg).unwrap());
                    }
                    let expected = Url::parse(&s).unwrap();
                    assert_eq!(
                        client.url(segments).unwrap(),
                        expected,
                        "{base} {segments:?}"
                    );
                }
            }
            for bad in ["", ".", ".."] {
                let e = client.url(&["v0", bad]).unwrap_err();
                assert_eq!(e.kind(), ErrorKind::InvalidRequest);
            }
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy::default();
        for retry in 1..10 {
            let b = p.backoff(retry);
            let base = (p.initial_backoff * (1 << (retry - 1))).min(p.max_backoff);
            assert!(
                b >= base / 2 && b <= base,
                "retry {retry}: {b:?} vs {base:?}"
            );
        }
    }
}
