//! The typed Subtotal client: requests, auth and the connection-token cache.
//!
//! Every request carries the API key in `x-api-key`. `PATCH /connections/{id}` additionally
//! needs `Authorization: Bearer <connection token>` with `access` scope; the client mints that
//! token with `POST /connections/{id}/token` and caches it per connection until it expires or
//! is refused (see [`SubtotalClient::update_connection`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use connhealth_core::http::{header, HeaderName, HttpClient, Request};
use connhealth_core::{jwt, Error, ErrorKind, Result, Secret};
use reqwest::Method;
use tokio::time::Instant;
use url::Url;

use crate::wire::{
    ConnectionResponse, CreateConnection, CreateTokenRequest, GetRetailersResponse,
    ListConnectionsResponse, Retailer, TokenResponse, UpdateConnection,
};

const API_KEY_HEADER: HeaderName = HeaderName::from_static("x-api-key");

pub(crate) const EP_LIST: &str = "GET /connections";
const EP_GET: &str = "GET /connections/{connection_id}";
const EP_CREATE: &str = "POST /connections";
const EP_UPDATE: &str = "PATCH /connections/{connection_id}";
const EP_TOKEN: &str = "POST /connections/{connection_id}/token";
const EP_RETAILERS: &str = "GET /retailers";

/// The longest safety margin taken off a token's lifetime (never more than half of it).
const TOKEN_MARGIN: Duration = Duration::from_secs(60);
/// Above this many cached connections, expired entries are pruned on insert.
const PRUNE_ABOVE: usize = 1024;

/// A Subtotal API client. Cheap to clone (clones share the HTTP connection pool and the token
/// cache). Obtain it from [`crate::Subtotal::client`].
///
/// Writes are never retried blindly: `POST` and `PATCH` are retried only when the connection
/// could not be established (nothing was sent), unless `retry_patch(true)` was set on the
/// builder, which lets PATCH also be retried on transient failures (5xx, timeouts, 429).
#[derive(Clone)]
pub struct SubtotalClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: HttpClient,
    api_key: Secret,
    retry_patch: bool,
    /// One slot per connection; the slot's async mutex makes minting single-flight.
    tokens: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<CachedToken>>>>>,
}

#[derive(Clone)]
struct CachedToken {
    token: Secret,
    /// When to stop using it (already shortened by the safety margin); `None`: until refused.
    expires_at: Option<Instant>,
}

impl CachedToken {
    fn is_fresh(&self) -> bool {
        self.expires_at.is_none_or(|t| Instant::now() < t)
    }
}

impl fmt::Debug for SubtotalClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubtotalClient")
            .field("provider", &self.inner.http.provider())
            .field("base_url", &self.inner.http.base_url().as_str())
            .field("api_key", &self.inner.api_key)
            .field("retry_patch", &self.inner.retry_patch)
            .field("cached_tokens", &lock(&self.inner.tokens).len())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SubtotalClient {
    pub(crate) fn new(http: HttpClient, api_key: Secret, retry_patch: bool) -> Self {
        SubtotalClient {
            inner: Arc::new(Inner {
                http,
                api_key,
                retry_patch,
                tokens: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The provider name errors carry.
    pub fn provider(&self) -> &str {
        self.inner.http.provider()
    }

    /// The validated base URL.
    pub fn base_url(&self) -> &Url {
        self.inner.http.base_url()
    }

    /// The underlying HTTP client (request counters, base URL).
    pub fn http(&self) -> &HttpClient {
        &self.inner.http
    }

    fn request(&self, method: Method, endpoint: &str, url: Url) -> Request {
        self.inner
            .http
            .request(method, endpoint, url)
            .secret_header(API_KEY_HEADER, "", &self.inner.api_key)
    }

    /// `GET /connections?customer_id=…`: the customer's connections. The customer id is sent
    /// as one query value (percent-encoded); errors name the customer.
    ///
    /// Items that are not objects are skipped (logged at debug). No pagination is documented.
    pub async fn list_connections(&self, customer_id: &str) -> Result<Vec<ConnectionResponse>> {
        Ok(self.list_connections_raw(customer_id).await?.connections)
    }

    pub(crate) async fn list_connections_raw(
        &self,
        customer_id: &str,
    ) -> Result<ListConnectionsResponse> {
        let url = self.inner.http.url(&["connections"])?;
        let req = self
            .request(Method::GET, EP_LIST, url)
            .query(&[("customer_id", customer_id)])
            .for_customer(customer_id);
        let resp = self.inner.http.send(req).await?;
        match ListConnectionsResponse::from_slice(resp.body()) {
            Ok(list) => Ok(list),
            // Decoded again through core, for its typed error (JSON path, no values).
            Err(_) => resp.json(),
        }
    }

    /// `GET /connections/{connection_id}`: one connection (API key only; which token scope,
    /// if any, the current API wants here is unconfirmed).
    pub async fn get_connection(&self, connection_id: &str) -> Result<ConnectionResponse> {
        let url = self
            .inner
            .http
            .url(&["connections", connection_id])
            .map_err(|e| with_connection(e, connection_id))?;
        let req = self.request(Method::GET, EP_GET, url);
        self.inner
            .http
            .send_json(req)
            .await
            .map_err(|e| with_connection(e, connection_id))
    }

    /// `POST /connections` (answers 201): create a connection for a customer and retailer.
    /// Not retried once sent. Errors never contain the e-mail or mobile number.
    pub async fn create_connection(&self, body: CreateConnection) -> Result<ConnectionResponse> {
        let url = self.inner.http.url(&["connections"])?;
        let req = self
            .request(Method::POST, EP_CREATE, url)
            .json(&body)
            .for_customer(body.customer_id.clone());
        self.inner.http.send_json(req).await
    }

    /// `GET /retailers`: the retailers configured for this API key.
    pub async fn retailers(&self) -> Result<Vec<Retailer>> {
        let url = self.inner.http.url(&["retailers"])?;
        let req = self.request(Method::GET, EP_RETAILERS, url);
        let resp: GetRetailersResponse = self.inner.http.send_json(req).await?;
        Ok(resp.retailers)
    }

    /// `PATCH /connections/{connection_id}`: update a connection. Only the fields that are
    /// `Some` are sent (`None` = leave unchanged).
    ///
    /// Auth: `x-api-key` plus `Authorization: Bearer <token>`, an `access`-scope connection
    /// token minted with `POST /connections/{id}/token` and cached per connection until its
    /// JWT `exp` (less a safety margin of up to 60 s) or, when the expiry cannot be read, until
    /// it is refused. A 401 on the PATCH drops the cached token, mints a new one and repeats
    /// the PATCH **once** (safe: a 401 means the update was not applied).
    ///
    /// The PATCH is not retried on 5xx/timeouts (it may have been applied) unless the builder
    /// set `retry_patch(true)`. Errors name the connection id; e-mail and mobile never appear
    /// in errors or logs.
    pub async fn update_connection(
        &self,
        connection_id: &str,
        update: UpdateConnection,
    ) -> Result<ConnectionResponse> {
        self.update_inner(connection_id, &update, self.inner.retry_patch)
            .await
            .map_err(|e| with_connection(e, connection_id))
    }

    /// Disconnect a connection: `update_connection(id, {"status": "disconnected"})`.
    pub async fn disconnect(&self, connection_id: &str) -> Result<ConnectionResponse> {
        self.update_connection(connection_id, UpdateConnection::disconnect())
            .await
    }

    /// The `disconnect` action's form of [`SubtotalClient::disconnect`]: a freshly minted
    /// `access` token (any cached one is dropped first), then the PATCH, which is never
    /// retried on 5xx/timeouts whatever `retry_patch` says (only a 401 re-mints and repeats it
    /// once: nothing was applied then). The error's endpoint tells which step failed
    /// ([`SubtotalClient::TOKEN_ENDPOINT`] or [`SubtotalClient::UPDATE_ENDPOINT`]).
    pub async fn disconnect_fresh(&self, connection_id: &str) -> Result<ConnectionResponse> {
        {
            let slot = self.slot(connection_id);
            *slot.lock().await = None;
        }
        self.update_inner(connection_id, &UpdateConnection::disconnect(), false)
            .await
            .map_err(|e| with_connection(e, connection_id))
    }

    /// The endpoint name errors of the token mint carry.
    pub const TOKEN_ENDPOINT: &'static str = EP_TOKEN;
    /// The endpoint name errors of the PATCH carry.
    pub const UPDATE_ENDPOINT: &'static str = EP_UPDATE;

    async fn update_inner(
        &self,
        connection_id: &str,
        update: &UpdateConnection,
        retry_patch: bool,
    ) -> Result<ConnectionResponse> {
        let url = self.inner.http.url(&["connections", connection_id])?;
        let token = self.access_token(connection_id).await?;
        match self.patch(url.clone(), update, &token, retry_patch).await {
            Err(e) if e.kind() == ErrorKind::Authentication => {
                tracing::debug!(
                    provider = %self.provider(),
                    connection_id,
                    "connection token refused; minting a new one and repeating the update once"
                );
                self.forget_token(connection_id, &token).await;
                let token = self.access_token(connection_id).await?;
                self.patch(url, update, &token, retry_patch).await
            }
            other => other,
        }
    }

    async fn patch(
        &self,
        url: Url,
        update: &UpdateConnection,
        token: &Secret,
        retry_patch: bool,
    ) -> Result<ConnectionResponse> {
        let mut req = self
            .request(Method::PATCH, EP_UPDATE, url)
            .secret_header(header::AUTHORIZATION, "Bearer ", token)
            .json(update);
        if retry_patch {
            req = req.retry_unsafe();
        }
        self.inner.http.send_json(req).await
    }

    fn slot(&self, connection_id: &str) -> Arc<tokio::sync::Mutex<Option<CachedToken>>> {
        let mut map = lock(&self.inner.tokens);
        if map.len() >= PRUNE_ABOVE && !map.contains_key(connection_id) {
            map.retain(|_, slot| match slot.try_lock() {
                Ok(t) => t.as_ref().is_some_and(CachedToken::is_fresh),
                Err(_) => true, // in use
            });
        }
        map.entry(connection_id.to_owned()).or_default().clone()
    }

    /// The cached access token for a connection, minting one when there is none or it expired.
    /// Concurrent callers for the same connection wait for one mint.
    async fn access_token(&self, connection_id: &str) -> Result<Secret> {
        let slot = self.slot(connection_id);
        let mut cached = slot.lock().await;
        if let Some(t) = cached.as_ref().filter(|t| t.is_fresh()) {
            return Ok(t.token.clone());
        }
        let minted = self.mint_token(connection_id).await?;
        let token = minted.token.clone();
        *cached = Some(minted);
        Ok(token)
    }

    /// Drop the cached token if it is still the one that was refused.
    async fn forget_token(&self, connection_id: &str, refused: &Secret) {
        let slot = self.slot(connection_id);
        let mut cached = slot.lock().await;
        if cached.as_ref().is_some_and(|t| &t.token == refused) {
            *cached = None;
        }
    }

    /// `POST /connections/{id}/token` `{"scope":"access"}` → the token and when to stop using it.
    async fn mint_token(&self, connection_id: &str) -> Result<CachedToken> {
        let url = self
            .inner
            .http
            .url(&["connections", connection_id, "token"])?;
        let req = self
            .request(Method::POST, EP_TOKEN, url)
            .json(&CreateTokenRequest { scope: "access" });
        let resp: TokenResponse = self.inner.http.send_json(req).await?;
        let expires_in = resp.expires_in;
        let token = resp.into_token().ok_or_else(|| {
            Error::new(
                self.provider(),
                EP_TOKEN,
                ErrorKind::Decode,
                "token response has no connection_token (nor token / access_token)",
            )
        })?;
        let lifetime = jwt::lifetime(&token, chrono::Utc::now().timestamp())
            .or(expires_in.map(Duration::from_secs));
        // A lifetime past the clock's range (e.g. `expires_in: 18446744073709551615`) is kept
        // until refused, like a token whose lifetime is unknown.
        let expires_at = lifetime
            .and_then(|l| Instant::now().checked_add(l.saturating_sub(TOKEN_MARGIN.min(l / 2))));
        tracing::debug!(
            provider = %self.provider(),
            connection_id,
            lifetime_s = lifetime.map(|l| l.as_secs()),
            "minted connection token"
        );
        Ok(CachedToken {
            token: Secret::new(token),
            expires_at,
        })
    }
}

/// Add the connection id to an error's message (ids are not personal data), keeping
/// everything else.
fn with_connection(e: Error, connection_id: &str) -> Error {
    e.map_message(|m| {
        if m.is_empty() {
            format!("connection {connection_id:?}")
        } else {
            format!("connection {connection_id:?}: {m}")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_gain_the_connection_id() {
        let e = Error::new("subtotal", EP_UPDATE, ErrorKind::ServerError, "boom")
            .with_status(500)
            .with_customer("cus")
            .with_retry_after(Duration::from_secs(3));
        let e = with_connection(e, "01J");
        assert_eq!(e.kind(), ErrorKind::ServerError);
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(e.http_status(), Some(500));
        assert_eq!(e.customer_id(), Some("cus"));
        assert_eq!(
            e.to_string(),
            "subtotal: PATCH /connections/{connection_id}: server_error (HTTP 500) for customer \"cus\": connection \"01J\": boom"
        );
    }
}
