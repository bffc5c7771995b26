//! Requests and authentication: the typed Violet client.
//!
//! See [`VioletClient`] for how authentication works.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use connhealth_core::http::{BodySink, HeaderName, HttpClient, Request, Response};
use connhealth_core::{jwt, Concurrency, Error, ErrorKind, Result, Secret};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio::time::Instant;

const APP_ID_HEADER: HeaderName = HeaderName::from_static("x-violet-app-id");
const APP_SECRET_HEADER: HeaderName = HeaderName::from_static("x-violet-app-secret");
const TOKEN_HEADER: HeaderName = HeaderName::from_static("x-violet-token");

/// How long before the access token's expiry it is refreshed.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// The documented access-token lifetime, assumed when the token's `exp` cannot be read.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

const LOGIN: &str = "POST /login";
const REFRESH: &str = "GET /auth/token";
pub(crate) const REPORT: &str = "GET /operations/connection_health";
pub(crate) const MERCHANT: &str = "GET /operations/connection_health/{merchant_id}";

/// Counters of the client's authentication traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AuthStats {
    /// `POST /login` requests sent (successful or not).
    pub logins: u64,
    /// `GET /auth/token` requests sent (successful or not).
    pub refreshes: u64,
}

/// The typed client for Violet's operations API (control-plane calls). Cheap to clone; clones
/// share the HTTP connection pool and the token.
///
/// # Authentication
///
/// `POST /login` (headers `X-Violet-App-Id`, `X-Violet-App-Secret`, JSON `{username, password}`)
/// yields an access token (a JWT) and a refresh token. Every other call carries
/// `X-Violet-App-Id`, `X-Violet-App-Secret` and `X-Violet-Token: <access token>`.
///
/// * The access token's expiry is read from its `exp` claim (the payload is base64url-decoded;
///   the signature is not checked). When that cannot be read the documented lifetime, 24 h
///   from when the token was obtained, is assumed. The expiry is tracked on tokio's clock.
/// * [`REFRESH_MARGIN`] before expiry the token is refreshed with `GET /auth/token` (the
///   *refresh* token in `X-Violet-Token`); if the refresh token is refused (401/403) the client
///   logs in again. If a proactive refresh fails for another reason (e.g. a 5xx after core's
///   retries) while the old token is still valid, the old token keeps being used.
/// * A 401 from an API call (Violet's `error_code` 11, "Token has expired", or any other 401):
///   the token is refreshed (or, if the refresh token is refused, a new login is made) and the
///   call is repeated once; if it is refused again, a fresh login is made and the call repeated
///   once more; if that is refused too the `authentication` error is returned.
/// * Concurrent callers share one refresh or login: the token state sits behind one async
///   mutex with a generation counter; a caller whose request was refused with token generation
///   `N` renews only if the current generation is still `N`, else it simply retries with the
///   newer token.
/// * A login refused with 400/401/403/422 is an immediate `authentication` error naming
///   `POST /login` (never retried); its message never contains the username, the password or
///   the app secret. Transient login failures (5xx, 429, timeouts) are retried like a GET:
///   minting a token has no side effect.
#[derive(Clone)]
pub struct VioletClient {
    inner: Arc<Inner>,
}

pub(crate) struct Settings {
    pub(crate) name: String,
    pub(crate) http: HttpClient,
    pub(crate) app_id: u64,
    pub(crate) app_secret: Secret,
    pub(crate) username: String,
    pub(crate) password: Secret,
    pub(crate) exclude_public: bool,
    pub(crate) include_personal_data: bool,
    pub(crate) concurrency: Concurrency,
}

struct Inner {
    s: Settings,
    app_id: String,
    auth: Mutex<TokenState>,
    logins: AtomicU64,
    refreshes: AtomicU64,
}

#[derive(Default)]
struct TokenState {
    access: Option<Secret>,
    refresh: Option<Secret>,
    /// When `access` expires, on tokio's clock.
    expires_at: Option<Instant>,
    /// Bumped every time `access` changes.
    generation: u64,
}

impl fmt::Debug for VioletClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VioletClient")
            .field("name", &self.inner.s.name)
            .field("base_url", &self.inner.s.http.base_url().as_str())
            .field("app_id", &self.inner.s.app_id)
            .field("app_secret", &self.inner.s.app_secret)
            .field("username", &"[redacted]")
            .field("password", &self.inner.s.password)
            .field("exclude_public", &self.inner.s.exclude_public)
            .field("include_personal_data", &self.inner.s.include_personal_data)
            .field("concurrency", &self.inner.s.concurrency)
            .finish()
    }
}

#[derive(Serialize)]
struct LoginBody<'a> {
    username: &'a str,
    password: &'a str,
}

/// The parts of the login / refresh answers that are used (the login answer is the user
/// object, with personal data: nothing else is decoded).
#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default, alias = "refreshToken")]
    refresh_token: Option<String>,
}

impl VioletClient {
    pub(crate) fn new(settings: Settings) -> Self {
        VioletClient {
            inner: Arc::new(Inner {
                app_id: settings.app_id.to_string(),
                s: settings,
                auth: Mutex::new(TokenState::default()),
                logins: AtomicU64::new(0),
                refreshes: AtomicU64::new(0),
            }),
        }
    }

    /// The provider name errors and connections carry.
    pub fn name(&self) -> &str {
        &self.inner.s.name
    }

    /// The underlying HTTP client (its request and retry counters, for metrics).
    pub fn http(&self) -> &HttpClient {
        &self.inner.s.http
    }

    /// Login and refresh requests sent so far.
    pub fn auth_stats(&self) -> AuthStats {
        AuthStats {
            logins: self.inner.logins.load(Ordering::Relaxed),
            refreshes: self.inner.refreshes.load(Ordering::Relaxed),
        }
    }

    /// Make sure a valid access token is held: log in if there is none, refresh it if it is
    /// about to expire. Useful to check credentials without fetching anything.
    pub async fn authenticate(&self) -> Result<()> {
        self.token().await.map(|_| ())
    }

    /// `GET /operations/connection_health?app_id=…&exclude_public=…`, the body read into the
    /// sinks `sink` makes (one per attempt; Violet serves this report from a cache recomputed
    /// about every 24 h). Decoding and mapping are `map.rs`'s (see
    /// [`VioletClient::connection_health`]).
    pub(crate) async fn report_into<S, F>(&self, sink: F) -> Result<S::Output>
    where
        S: BodySink,
        F: Fn() -> S + Send + Sync,
    {
        let exclude = if self.inner.s.exclude_public {
            "true"
        } else {
            "false"
        };
        let url = self
            .inner
            .s
            .http
            .url(&["operations", "connection_health"])?;
        let build = |token: Secret| {
            self.api_request(REPORT, url.clone(), &token).query(&[
                ("app_id", self.inner.app_id.as_str()),
                ("exclude_public", exclude),
            ])
        };
        let sink = &sink;
        self.authed(None, |token| async move {
            self.inner.s.http.send_into(build(token), sink).await
        })
        .await
        .map(|(_, out)| out)
    }

    /// `GET /operations/connection_health/{merchant_id}` (with `refresh=true` when `refresh`):
    /// the raw answer about one merchant (errors name the merchant).
    pub(crate) async fn merchant(&self, merchant_id: &str, refresh: bool) -> Result<Response> {
        let url = self
            .inner
            .s
            .http
            .url(&["operations", "connection_health", merchant_id])
            .map_err(|e| e.with_customer(merchant_id))?;
        self.send_authed(Some(merchant_id), |c, token| {
            let req = c
                .api_request(MERCHANT, url.clone(), token)
                .for_customer(merchant_id);
            if refresh {
                req.query(&[("refresh", "true"), ("app_id", c.inner.app_id.as_str())])
            } else {
                req.query(&[("app_id", c.inner.app_id.as_str())])
            }
        })
        .await
    }

    /// The provider name and the personal-data opt-in, for mapping.
    pub(crate) fn settings(&self) -> &Settings {
        &self.inner.s
    }

    fn api_request(&self, endpoint: &str, url: url::Url, token: &Secret) -> Request {
        self.inner
            .s
            .http
            .request(Method::GET, endpoint, url)
            .header(APP_ID_HEADER, &self.inner.app_id)
            .secret_header(APP_SECRET_HEADER, "", &self.inner.s.app_secret)
            .secret_header(TOKEN_HEADER, "", token)
    }

    /// Send an authenticated request built by `build`, renewing the token on a 401 (see the
    /// module docs).
    async fn send_authed<F>(&self, customer: Option<&str>, build: F) -> Result<Response>
    where
        F: Fn(&Self, &Secret) -> Request,
    {
        let build = &build;
        self.authed(customer, |token| async move {
            self.inner.s.http.send(build(self, &token)).await
        })
        .await
    }

    /// Run `send` with a valid token, renewing it on a 401 and running `send` again (at most
    /// twice: a refresh, then a fresh login); errors name `customer` when given.
    async fn authed<T, F, Fut>(&self, customer: Option<&str>, send: F) -> Result<T>
    where
        F: Fn(Secret) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let with_customer = |e: Error| match customer {
            Some(c) if e.customer_id().is_none() => e.with_customer(c),
            _ => e,
        };
        let (mut token, mut generation) = self.token().await.map_err(with_customer)?;
        let mut renewals = 0;
        loop {
            match send(token.clone()).await {
                Err(e) if e.kind() == ErrorKind::Authentication && renewals < 2 => {
                    tracing::debug!(
                        provider = %self.inner.s.name,
                        endpoint = %e.endpoint(),
                        provider_code = ?e.provider_code(),
                        renewal = renewals + 1,
                        "token refused; renewing"
                    );
                    // First a refresh (or a login when the refresh token is refused); if the
                    // renewed token is refused as well, a fresh login.
                    let force_login = renewals == 1;
                    renewals += 1;
                    (token, generation) = self
                        .renew(generation, force_login)
                        .await
                        .map_err(with_customer)?;
                }
                other => return other,
            }
        }
    }

    /// A valid access token and its generation: logs in when there is none, refreshes ahead of
    /// expiry.
    async fn token(&self) -> Result<(Secret, u64)> {
        let mut st = self.inner.auth.lock().await;
        match (&st.access, st.expires_at) {
            (None, _) => self.login_locked(&mut st).await?,
            (Some(_), Some(exp)) if Instant::now() + REFRESH_MARGIN >= exp => {
                match self.refresh_locked(&mut st).await {
                    Ok(()) => {}
                    Err(e) if is_refused(&e) => self.login_locked(&mut st).await?,
                    Err(e) if Instant::now() < exp => {
                        tracing::debug!(
                            provider = %self.inner.s.name,
                            error = %e.kind(),
                            "token refresh failed; the current token is still valid, keeping it"
                        );
                    }
                    Err(e) => return Err(e),
                }
            }
            _ => {}
        }
        Ok((current(&st)?, st.generation))
    }

    /// After a request made with token generation `seen` was refused: renew, unless another
    /// caller already did.
    async fn renew(&self, seen: u64, force_login: bool) -> Result<(Secret, u64)> {
        let mut st = self.inner.auth.lock().await;
        if st.generation == seen || st.access.is_none() {
            if force_login || st.refresh.is_none() {
                self.login_locked(&mut st).await?;
            } else {
                match self.refresh_locked(&mut st).await {
                    Ok(()) => {}
                    Err(e) if is_refused(&e) => self.login_locked(&mut st).await?,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok((current(&st)?, st.generation))
    }

    async fn login_locked(&self, st: &mut TokenState) -> Result<()> {
        let s = &self.inner.s;
        self.inner.logins.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(provider = %s.name, "logging in");
        let url = s.http.url(&["login"])?;
        let req = s
            .http
            .request(Method::POST, LOGIN, url)
            .header(APP_ID_HEADER, &self.inner.app_id)
            .secret_header(APP_SECRET_HEADER, "", &s.app_secret)
            .json(&LoginBody {
                username: &s.username,
                password: s.password.expose(),
            })
            // Minting a token has no side effect, so transient failures (5xx, 429, timeouts)
            // are retried like a GET; a refusal (401) never is.
            .retry_unsafe();
        let answer: TokenAnswer = match s.http.send(req).await {
            Ok(resp) => resp.json()?,
            Err(e) => return Err(self.login_error(e)),
        };
        self.install(st, LOGIN, "login", answer)
    }

    async fn refresh_locked(&self, st: &mut TokenState) -> Result<()> {
        let s = &self.inner.s;
        let Some(refresh) = st.refresh.clone() else {
            return Err(Error::new(
                &s.name,
                REFRESH,
                ErrorKind::Authentication,
                "no refresh token",
            ));
        };
        self.inner.refreshes.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(provider = %s.name, "refreshing the access token");
        let url = s.http.url(&["auth", "token"])?;
        let req = s
            .http
            .request(Method::GET, REFRESH, url)
            .header(APP_ID_HEADER, &self.inner.app_id)
            .secret_header(APP_SECRET_HEADER, "", &s.app_secret)
            .secret_header(TOKEN_HEADER, "", &refresh);
        let answer: TokenAnswer = s.http.send_json(req).await?;
        self.install(st, REFRESH, "refresh", answer)
    }

    /// Takes the tokens of a login or refresh `answer` (from `endpoint`); an answer without an
    /// access token is a `decode` error (`the {what} answer has no token`).
    fn install(
        &self,
        st: &mut TokenState,
        endpoint: &str,
        what: &str,
        answer: TokenAnswer,
    ) -> Result<()> {
        let Some(access) = answer.token.filter(|t| !t.trim().is_empty()) else {
            return Err(Error::new(
                &self.inner.s.name,
                endpoint,
                ErrorKind::Decode,
                format!("the {what} answer has no token"),
            ));
        };
        let refresh = answer.refresh_token;
        let lifetime = token_lifetime(&access, Utc::now());
        let now = Instant::now();
        // A token claiming a lifetime past the clock's range is simply long-lived.
        st.expires_at = Some(
            now.checked_add(lifetime)
                .unwrap_or(now + DEFAULT_TOKEN_LIFETIME),
        );
        st.access = Some(Secret::new(access));
        if let Some(r) = refresh.filter(|r| !r.trim().is_empty()) {
            st.refresh = Some(Secret::new(r));
        }
        st.generation += 1;
        Ok(())
    }

    /// The login failure as an error that names `POST /login`, never the credentials.
    fn login_error(&self, e: Error) -> Error {
        let s = &self.inner.s;
        let refused = matches!(e.http_status(), Some(400 | 401 | 403 | 422));
        let kind = if refused {
            ErrorKind::Authentication
        } else {
            e.kind()
        };
        let mut said = e.message().to_owned();
        for secret in [
            s.username.as_str(),
            s.password.expose(),
            s.app_secret.expose(),
        ] {
            if secret.len() >= 3 {
                said = said.replace(secret, "[redacted]");
            }
        }
        // The local part of the e-mail on its own is personal data as well.
        if let Some(local) = s.username.split('@').next().filter(|l| l.len() >= 3) {
            said = said.replace(local, "[redacted]");
        }
        let mut message = if refused {
            "Violet refused the login: check the app id, app secret, username and password (only the app owner's login can mint API tokens)".to_owned()
        } else {
            "login failed".to_owned()
        };
        if !said.trim().is_empty() {
            message.push_str(&format!(" (Violet said: {})", said.trim()));
        }
        e.with_endpoint(LOGIN).with_kind(kind).with_message(message)
    }
}

fn current(st: &TokenState) -> Result<Secret> {
    // `login_locked` always installs a token or fails, so this is only a safeguard.
    st.access.clone().ok_or_else(|| {
        Error::new(
            "violet",
            LOGIN,
            ErrorKind::Authentication,
            "no access token",
        )
    })
}

/// The refresh token (or login) was refused, as opposed to a transient failure.
fn is_refused(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::Authentication | ErrorKind::Forbidden)
}

/// How long the access token stays valid from `now`, read from its `exp` claim; the documented
/// 24 h when unreadable. Never less than twice [`REFRESH_MARGIN`], so that a clock skew cannot
/// make every call refresh.
pub(crate) fn token_lifetime(token: &str, now: DateTime<Utc>) -> Duration {
    match jwt::exp(token) {
        Some(exp) => {
            let secs = exp.saturating_sub(now.timestamp());
            Duration::from_secs(secs.max(0) as u64).max(REFRESH_MARGIN * 2)
        }
        None => DEFAULT_TOKEN_LIFETIME,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let bytes = s.as_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
            let chars = chunk.len() + 1;
            for i in 0..chars {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    fn jwt(claims: &str) -> String {
        format!(
            "{}.{}.c2lnbmF0dXJl",
            b64(r#"{"alg":"HS256","typ":"JWT"}"#),
            b64(claims)
        )
    }

    #[test]
    fn lifetime_from_exp_or_default() {
        let now: DateTime<Utc> = "2024-01-01T00:00:00Z".parse().unwrap();
        let t = now.timestamp();
        let token = jwt(&format!(r#"{{"exp":{}}}"#, t + 3600));
        assert_eq!(token_lifetime(&token, now), Duration::from_secs(3600));
        assert_eq!(token_lifetime("opaque", now), DEFAULT_TOKEN_LIFETIME);
        // Already expired by our clock (skew): never below twice the margin.
        let token = jwt(&format!(r#"{{"exp":{}}}"#, t - 10));
        assert_eq!(token_lifetime(&token, now), REFRESH_MARGIN * 2);
    }
}
