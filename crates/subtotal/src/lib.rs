//! # connhealth-subtotal
//!
//! The connhealth adapter for [Subtotal](https://subtotal.com) customer ↔ retailer connections.
//!
//! - **Health** ([`Provider`]): `GET /connections?customer_id=…` for every configured customer
//!   (Subtotal cannot list customers), concurrently under a bound, one batch per customer; plus
//!   `GET /retailers` once per poll to show retailer names as platforms (optional; its failure
//!   never fails a poll). Statuses are mapped as described in "How an answer maps" below.
//! - **Actions** ([`SubtotalClient`], from [`Subtotal::client`]): get, create, update and
//!   disconnect connections; the connection token the update needs is minted and cached for you.
//! - **Actions** (`Provider::actions` / `Provider::act`, DESIGN.md "Actions"): `reauth_link`
//!   for an `unauthenticated` or `disconnected` connection when a `link_url` is configured (the
//!   Link URL with `connection_id`), and `disconnect` (destructive) for one not yet
//!   `disconnected` ([`SubtotalClient::disconnect_fresh`]: a fresh token, a PATCH never retried).
//!
//! Choices where Subtotal's documentation is silent or unconfirmed:
//! - `customers` must be set (Subtotal has no "list customers"); an explicitly empty list is
//!   accepted and a poll then yields nothing, so the client can be used on its own.
//! - A 401 on a customer's list means the API key was refused: that error is the poll's last
//!   batch. Other errors (403, 5xx…) fail only their customer.
//! - `/retailers` item fields are unknown: the id is read from `retailer_id` or `id`, the name
//!   from `name` or `display_name`. The lookup may take at most [`RETAILERS_BUDGET`]; if it
//!   fails or is slower, platforms fall back to the lowercased retailer ids.
//! - The token endpoint's answer is read from `connection_token`, `token` or `access_token`;
//!   its lifetime from the JWT `exp` claim, else `expires_in`, else the token is kept until
//!   refused (a 401 re-mints it once).
//! - `is_simulated: true` becomes a healthy `simulated` check (see "How an answer maps" below).
//!
//! ```
//! use connhealth_core::{Provider, Secret, Status};
//! use connhealth_subtotal::Subtotal;
//! use connhealth_testkit::SubtotalSim;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A loopback simulator of the Subtotal API with two generated customers.
//! let sim = SubtotalSim::start_generated(2, 7).await?;
//! let customers: Vec<String> = sim.customer_ids();
//!
//! let subtotal = Subtotal::builder()
//!     .base_url(sim.base_url())
//!     .api_key(Secret::new(sim.api_key()))
//!     .customers(customers.clone())
//!     .link_url("https://link.subtotal.com/abc123")
//!     .build()?;
//!
//! let fetched = subtotal.fetch().await;
//! assert!(fetched.errors.is_empty());
//! for c in &fetched.connections {
//!     assert!(c.id.starts_with("subtotal:"));
//!     assert!(customers.contains(&c.customer.id));
//!     // Every status other than healthy carries a problem explaining it.
//!     assert!(c.status == Status::Healthy || !c.problems.is_empty());
//! }
//!
//! // Disconnect one connection through the typed client.
//! if let Some(c) = fetched.connections.first() {
//!     let id = c.provider_connection_id.as_deref().unwrap();
//!     let updated = subtotal.client().disconnect(id).await?;
//!     assert_eq!(updated.status.map(|s| s.to_string()).as_deref(), Some("disconnected"));
//! }
//! # Ok(())
//! # }
//! ```
//!
//! ## How an answer maps
//!
//! [`map_connection`] is a pure function (no I/O, no clock): the caller passes the provider
//! name, the observation time and the options.
//!
//! | `status` | normalized | problem | remediation |
//! | --- | --- | --- | --- |
//! | `active` | `healthy` | — | — |
//! | `initialized` | `pending` | `connection_initialized` | `complete_setup {step: "link"}`; the message names the Link URL when one is configured |
//! | `unauthenticated` | `action_required` | `reauthentication_required` | `reauthenticate {url}` |
//! | `disconnected` | `disconnected` | `connection_disconnected` | `reconnect {url}` |
//! | anything else (another spelling too, e.g. `ACTIVE`) | `unknown` | `unrecognized_value` (field `status`) | — |
//! | missing / `null` | `unknown` | `unrecognized_value` ("no status reported") | — |
//!
//! `url` is the configured Link URL with `connection_id=<id>` added to its query (an existing
//! `connection_id` parameter is replaced, other parameters are kept), or `None` when no Link
//! URL is configured; the problem message then says how to get one.
//!
//! Other fields:
//! - `id` = `"{provider}:{connection_id}"`; `provider_connection_id` = `connection_id`; items
//!   without a `connection_id` are not mapped (`None`).
//! - `role` = `account`; `provider_status` = the raw `status` (`""` when missing).
//! - `platform` = the retailer: the slug of its name (lowercased, apostrophes dropped, other
//!   runs of non-alphanumerics one `_`: `"Sam's Club"` → `sams_club`) when the name is known (from
//!   `GET /retailers`), else the lowercased `retailer_id`, else `"unknown"`. The platform can
//!   therefore change between polls when `/retailers` fails; the connection `id` does not.
//! - `customer` = `{id: customer_id, email}`; `email` only with `include_personal_data`.
//!   The mobile number is never copied.
//! - `accounts` = one account `{id: retailer_id, name: retailer name}` (Subtotal exposes no
//!   per-customer account id at the retailer, so the retailer itself is the account; this keeps
//!   the raw `retailer_id` and the display name next to the platform slug), or none when the
//!   item has no `retailer_id`.
//! - `is_simulated: true` adds a `healthy` check `simulated` ("simulated connection
//!   (is_simulated)"), so dashboards can tell test connections apart; it never changes the status.
//! - `connected_at`, `sync`, `data_as_of`: `null` (Subtotal reports none of them).
#![forbid(unsafe_code)]

mod client;
mod config;
pub use config::SubtotalConfig;
mod map;
#[cfg(test)]
mod mapping_tests;
pub mod webhook;
mod wire;

pub use webhook::verify_webhook;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use connhealth_core::futures::future::{self, Either, FutureExt};
use connhealth_core::futures::stream::{self, BoxStream, StreamExt};
use connhealth_core::lenient::{self, Losses, Mapped, Skipped};
use connhealth_core::{
    until_refused, Action, ActionError, ActionKind, ActionOutcome, AdapterDefaults, Batch,
    ClientOptions, Concurrency, Connection, Error, HeaderMap, Provider, RefreshHint, Result,
    Secret, WebhookError, WebhookEvent,
};
use url::Url;

pub use client::SubtotalClient;
/// The pure mapping of one decoded connection (no I/O, no clock), for offline use and benchmarks.
pub use map::{map_connection, MapContext};
pub use wire::{
    ConnectionResponse, ConnectionStatus, CreateConnection, Retailer, UpdateConnection,
};

/// The production API.
pub const DEFAULT_BASE_URL: &str = "https://api.subtotal.com";
/// The default provider name.
pub const DEFAULT_NAME: &str = "subtotal";
/// The longest a poll waits for `GET /retailers` (retries included) before it goes on with
/// retailer ids; the lookup is cosmetic and must not hold the health answers back.
pub const RETAILERS_BUDGET: Duration = Duration::from_secs(10);

/// The Subtotal provider: configured customers' connections as normalized [`Connection`]s.
///
/// Build it with [`Subtotal::builder`]. `Debug` never shows the API key.
pub struct Subtotal {
    name: String,
    client: SubtotalClient,
    customers: Arc<[String]>,
    concurrency: Concurrency,
    link_url: Option<Url>,
    resolve_retailer_names: bool,
    include_personal_data: bool,
    webhook_secret: Option<Secret>,
}

impl fmt::Debug for Subtotal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subtotal")
            .field("name", &self.name)
            .field("client", &self.client)
            .field("customers", &self.customers.len())
            .field("concurrency", &self.concurrency)
            .field("link_url", &self.link_url.as_ref().map(Url::as_str))
            .field("resolve_retailer_names", &self.resolve_retailer_names)
            .field("include_personal_data", &self.include_personal_data)
            .field("webhook_secret", &self.webhook_secret)
            .finish()
    }
}

impl Subtotal {
    /// Start configuring a provider.
    pub fn builder() -> SubtotalBuilder {
        SubtotalBuilder::default()
    }

    /// The typed client for control-plane calls (get, create, update, disconnect, retailers).
    pub fn client(&self) -> &SubtotalClient {
        &self.client
    }

    /// The configured customers (deduplicated, in configuration order).
    pub fn customers(&self) -> &[String] {
        &self.customers
    }

    /// Fetch one customer's connections, mapped (the unit of work of one batch). A list whose
    /// every entry is undecodable is a `decode` error.
    /// `retailer_names` maps retailer ids to names (see [`Subtotal::retailer_names`]).
    pub async fn fetch_customer(
        &self,
        customer_id: &str,
        retailer_names: Option<&HashMap<String, String>>,
    ) -> Result<Vec<Connection>> {
        self.fetch_customer_at(customer_id, retailer_names, Utc::now())
            .await
    }

    async fn fetch_customer_at(
        &self,
        customer_id: &str,
        retailer_names: Option<&HashMap<String, String>>,
        observed_at: chrono::DateTime<Utc>,
    ) -> Result<Vec<Connection>> {
        let list = self.client.list_connections_raw(customer_id).await?;
        let ctx = MapContext {
            provider: &self.name,
            observed_at,
            link_url: self.link_url.as_ref(),
            include_personal_data: self.include_personal_data,
            retailer_names,
        };
        // Entries left out are reported by the provider's stream; here only a list whose every
        // entry was lost is an error.
        map_list(&list, customer_id, &ctx).into_result()
    }

    /// Map one connection answer (e.g. what [`SubtotalClient::update_connection`] returned)
    /// with this provider's name and options, observed now. `retailer_names` as for
    /// [`Subtotal::fetch_customer`]. `None` when the answer has no `connection_id`.
    pub fn map_response(
        &self,
        response: &ConnectionResponse,
        retailer_names: Option<&HashMap<String, String>>,
    ) -> Option<Connection> {
        let ctx = MapContext {
            provider: &self.name,
            observed_at: Utc::now(),
            link_url: self.link_url.as_ref(),
            include_personal_data: self.include_personal_data,
            retailer_names,
        };
        map::map_connection(response, None, &ctx)
    }

    /// Retailer names by retailer id from `GET /retailers` (items without an id or a name are
    /// left out).
    pub async fn retailer_names(&self) -> Result<HashMap<String, String>> {
        let retailers = self.client.retailers().await?;
        Ok(retailers
            .iter()
            .filter_map(|r| Some((r.key()?.to_owned(), r.label()?.to_owned())))
            .collect())
    }

    /// The poll's retailer lookup: never fails (a failure or a lookup slower than
    /// [`RETAILERS_BUDGET`] is logged at debug and the poll goes on with retailer ids).
    async fn retailer_names_for_poll(&self) -> Option<Arc<HashMap<String, String>>> {
        if !self.resolve_retailer_names {
            return None;
        }
        match tokio::time::timeout(RETAILERS_BUDGET, self.retailer_names()).await {
            Ok(Ok(names)) => Some(Arc::new(names)),
            Ok(Err(e)) => {
                tracing::debug!(provider = %self.name, error = %e, "retailer lookup failed; using retailer ids as platforms");
                None
            }
            Err(_) => {
                tracing::debug!(provider = %self.name, "retailer lookup too slow; using retailer ids as platforms");
                None
            }
        }
    }
}

/// Map a customer's list. Items that did not decode or carry no `connection_id` are left out,
/// and of connections sharing an id the most severe is kept; both are reported as one
/// `decode` error (see [`connhealth_core::lenient`]).
fn map_list(
    list: &wire::ListConnectionsResponse,
    customer_id: &str,
    ctx: &MapContext<'_>,
) -> Mapped {
    let mut losses = Losses {
        skipped: list.skipped.clone(),
        duplicates: Vec::new(),
    };
    let mut out = Vec::with_capacity(list.connections.len());
    for (index, item) in list.connections.iter().enumerate() {
        match map::map_connection(item, Some(customer_id), ctx) {
            Some(c) => out.push(c),
            None => losses.skipped.push(Skipped {
                index,
                id: None,
                reason: "connection_id is missing".to_owned(),
            }),
        }
    }
    losses.duplicates = lenient::collapse_duplicates(&mut out);
    Mapped {
        connections: out,
        lost: losses.to_error(
            ctx.provider,
            client::EP_LIST,
            Some(customer_id),
            "connection entries",
        ),
    }
}

#[connhealth_core::async_trait]
impl Provider for Subtotal {
    fn name(&self) -> &str {
        &self.name
    }

    /// By the connection's Subtotal status (`provider_status`), for a connection with a
    /// `connection_id`:
    /// - `reauth_link` when it is `unauthenticated` or `disconnected` (status
    ///   `action_required` / `disconnected`) and a `link_url` is configured;
    /// - `disconnect` (destructive) unless it is already `disconnected`.
    fn actions(&self, connection: &Connection) -> Vec<Action> {
        let Some(_) = connection.provider_connection_id.as_deref() else {
            return Vec::new();
        };
        let already = connection.status == connhealth_core::Status::Disconnected
            || connection
                .provider_status
                .eq_ignore_ascii_case("disconnected");
        let mut out = Vec::new();
        let needs_auth = already
            || connection.status == connhealth_core::Status::ActionRequired
            || connection
                .provider_status
                .eq_ignore_ascii_case("unauthenticated");
        if needs_auth && self.link_url.is_some() {
            out.push(Action::new(ActionKind::ReauthLink));
        }
        if !already {
            out.push(Action::new(ActionKind::Disconnect));
        }
        out
    }

    /// `reauth_link`: the configured Link URL with `connection_id` (no request is sent).
    /// `disconnect`: mint an `access` token (`POST /connections/{id}/token`), then
    /// `PATCH /connections/{id}` `{"status": "disconnected"}`, never retried blindly; a failure
    /// names the step (a failed PATCH after a minted token says so).
    async fn act(
        &self,
        connection: &Connection,
        kind: ActionKind,
    ) -> std::result::Result<ActionOutcome, ActionError> {
        if !self.actions(connection).iter().any(|a| a.kind == kind) {
            return Err(ActionError::unsupported(connection, kind));
        }
        let id = connection
            .provider_connection_id
            .as_deref()
            .ok_or_else(|| ActionError::unsupported(connection, kind))?;
        match kind {
            ActionKind::ReauthLink => {
                let base = self
                    .link_url
                    .as_ref()
                    .ok_or_else(|| ActionError::unsupported(connection, kind))?;
                Ok(ActionOutcome::done(
                    kind,
                    format!(
                        "send customer {:?} to the url to re-authenticate connection {id}",
                        connection.customer.id
                    ),
                )
                .with_url(map::link_for(base, id)))
            }
            ActionKind::Disconnect => match self.client.disconnect_fresh(id).await {
                Ok(resp) => {
                    let mut out = ActionOutcome::done(
                        kind,
                        format!(
                            "connection {id} disconnected at Subtotal (PATCH status=disconnected)"
                        ),
                    );
                    if let Some(mut c) = self.map_response(&resp, None) {
                        if resp.customer_id.is_none() {
                            c.customer = connection.customer.clone();
                        }
                        // The PATCH answer has no retailer name: keep the platform the poll
                        // resolved while the retailer is the same one.
                        if c.accounts.first().map(|a| &a.id)
                            == connection.accounts.first().map(|a| &a.id)
                        {
                            c.platform = connection.platform.clone();
                            c.accounts = connection.accounts.clone();
                        }
                        out = out.with_connection(c);
                    }
                    Ok(out)
                }
                Err(e) if e.endpoint() == SubtotalClient::TOKEN_ENDPOINT => Err(
                    ActionError::at_step("minting the access token failed; nothing was changed", e),
                ),
                Err(e) => Err(ActionError::at_step(
                    "the access token was minted, then the PATCH failed (not retried)",
                    e,
                )),
            },
            _ => Err(ActionError::unsupported(connection, kind)),
        }
    }

    /// [`RefreshHint::Connection`]: that one connection (`GET /connections/{id}`), which is
    /// how a webhook is confirmed; otherwise the customer's connections (`GET
    /// /connections?customer_id=…`), configured or not. Retailer names are not looked up.
    async fn refresh(&self, customer_id: &str, hint: RefreshHint) -> Result<Vec<Connection>> {
        match hint {
            RefreshHint::Connection(id) => {
                let item = self
                    .client
                    .get_connection(&id)
                    .await
                    .map_err(|e| e.with_customer(customer_id))?;
                let ctx = MapContext {
                    provider: &self.name,
                    observed_at: Utc::now(),
                    link_url: self.link_url.as_ref(),
                    include_personal_data: self.include_personal_data,
                    retailer_names: None,
                };
                Ok(map::map_connection(&item, Some(customer_id), &ctx)
                    .into_iter()
                    .collect())
            }
            _ => self.fetch_customer(customer_id, None).await,
        }
    }

    /// [`verify_webhook`] with the configured webhook secret (`None` without one), the event
    /// carrying this provider's name.
    fn verify_webhook(
        &self,
        headers: &HeaderMap,
        raw_body: &[u8],
        now: chrono::DateTime<Utc>,
    ) -> Option<std::result::Result<WebhookEvent, WebhookError>> {
        let secret = self.webhook_secret.as_ref()?;
        Some(
            webhook::verify_webhook(headers, raw_body, secret, now).map(|mut e| {
                e.provider = self.name.clone();
                e
            }),
        )
    }

    fn http_stats(&self) -> Option<std::sync::Arc<connhealth_core::http::HttpStats>> {
        Some(self.client().http().stats().clone())
    }

    /// One batch per configured customer, concurrently under the bound; `GET /retailers` runs
    /// alongside (once per poll). With an empty customer list the stream is empty. A 401 (the
    /// API key refused) ends the stream after that error batch.
    fn stream(&self) -> BoxStream<'_, Batch> {
        if self.customers.is_empty() {
            tracing::debug!(provider = %self.name, "no customers configured; nothing to poll");
            return stream::empty().boxed();
        }
        let observed_at = Utc::now();
        let names = self.retailer_names_for_poll().boxed().shared();
        let batches = self
            .concurrency
            .fan_out(self.customers.iter().cloned(), move |customer: String| {
                let names = names.clone();
                async move {
                    // The retailer lookup runs alongside the first customers' requests; a
                    // customer's error is returned without waiting for it.
                    let list = self.client.list_connections_raw(&customer);
                    let (list, names) = match future::select(Box::pin(list), names).await {
                        Either::Left((Ok(list), names)) => (list, names.await),
                        Either::Left((Err(e), _)) => return vec![Err(e)],
                        Either::Right((names, list)) => match list.await {
                            Ok(list) => (list, names),
                            Err(e) => return vec![Err(e)],
                        },
                    };
                    let ctx = MapContext {
                        provider: &self.name,
                        observed_at,
                        link_url: self.link_url.as_ref(),
                        include_personal_data: self.include_personal_data,
                        retailer_names: names.as_deref(),
                    };
                    map_list(&list, &customer, &ctx).into_batches()
                }
            })
            .flat_map(stream::iter)
            .boxed();
        // A 401 means the API key itself was refused: that error is the last batch.
        until_refused(batches)
    }
}

/// What a [`SubtotalBuilder`] uses for settings left unset.
const DEFAULTS: AdapterDefaults = AdapterDefaults {
    name: DEFAULT_NAME,
    base_url: DEFAULT_BASE_URL,
    max_body_bytes: 64 * 1024 * 1024,
    concurrency: 32,
};

/// Configures a [`Subtotal`] provider. Setters never fail; [`SubtotalBuilder::build`] validates.
///
/// The shared client settings (name, base URL, timeouts, retries, body cap, concurrency) are
/// [`ClientOptions`]; the setters below them are Subtotal's own.
#[derive(Clone, Default)]
pub struct SubtotalBuilder {
    options: ClientOptions,
    api_key: Option<Secret>,
    customers: Option<Vec<String>>,
    link_url: Option<String>,
    resolve_retailer_names: Option<bool>,
    include_personal_data: bool,
    retry_patch: bool,
    webhook_secret: Option<Secret>,
}

impl fmt::Debug for SubtotalBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubtotalBuilder")
            .field("options", &self.options)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("customers", &self.customers.as_ref().map(Vec::len))
            .field("link_url", &self.link_url)
            .finish_non_exhaustive()
    }
}

impl SubtotalBuilder {
    connhealth_core::client_options_setters!();

    /// The API key sent as `x-api-key` (required).
    pub fn api_key(mut self, key: Secret) -> Self {
        self.api_key = Some(key);
        self
    }

    /// The customers to poll (required: Subtotal cannot list customers). An explicitly empty
    /// list is allowed, e.g. to use only the client: polls then yield nothing. Duplicates are
    /// dropped; an empty id is a configuration error.
    pub fn customers(mut self, customers: Vec<String>) -> Self {
        self.customers = Some(customers);
        self
    }

    /// The Link URL base used to build re-authentication / reconnect links, e.g.
    /// `https://link.subtotal.com/abc123` (must be `https://`). Links get
    /// `connection_id=<id>` added to the query; other query parameters are kept.
    pub fn link_url(mut self, url: impl Into<String>) -> Self {
        self.link_url = Some(url.into());
        self
    }

    /// Call `GET /retailers` once per poll to use retailer names as platforms (default `true`).
    pub fn resolve_retailer_names(mut self, on: bool) -> Self {
        self.resolve_retailer_names = Some(on);
        self
    }

    /// Copy customers' e-mail addresses into [`connhealth_core::Customer::email`] (default
    /// `false`: personal data stays out of reports). Mobile numbers are never copied.
    pub fn include_personal_data(mut self, on: bool) -> Self {
        self.include_personal_data = on;
        self
    }

    /// Let `PATCH /connections/{id}` be retried on transient failures (5xx, timeouts, 429).
    /// Default `false`: an update that may have been applied is never sent twice.
    pub fn retry_patch(mut self, on: bool) -> Self {
        self.retry_patch = on;
        self
    }

    /// The webhook destination's `signing_secret` (`X-Subtotal-Signature`). Without it the
    /// provider has no webhooks ([`Provider::verify_webhook`] is `None`).
    pub fn webhook_secret(mut self, secret: Secret) -> Self {
        self.webhook_secret = Some(secret);
        self
    }

    /// Validate and build. Errors are [`connhealth_core::ErrorKind::Config`] naming the setting.
    pub fn build(self) -> Result<Subtotal> {
        let options = self.options.validate(&DEFAULTS)?;
        let name = options.name;
        let api_key = match self.api_key {
            Some(k) if !k.is_empty() => k,
            _ => {
                return Err(Error::config(
                    &name,
                    "api_key is required (the Subtotal API key, sent as x-api-key)",
                ))
            }
        };
        let customers = self.customers.ok_or_else(|| {
            Error::config(
                &name,
                "customers is required: Subtotal cannot list customers (pass an empty list to use only the client)",
            )
        })?;
        let mut seen = HashSet::new();
        let mut unique = Vec::with_capacity(customers.len());
        for (i, c) in customers.into_iter().enumerate() {
            if c.trim().is_empty() {
                return Err(Error::config(&name, format!("customers[{i}] is empty")));
            }
            if seen.insert(c.clone()) {
                unique.push(c);
            }
        }
        let concurrency = options.concurrency;
        let link_url = match self.link_url {
            None => None,
            Some(raw) => Some(validate_link_url(&name, &raw)?),
        };
        if self.webhook_secret.as_ref().is_some_and(Secret::is_empty) {
            return Err(Error::config(&name, "webhook_secret is empty"));
        }
        let client = SubtotalClient::new(options.http, api_key, self.retry_patch);
        Ok(Subtotal {
            name,
            client,
            customers: unique.into(),
            concurrency,
            link_url,
            resolve_retailer_names: self.resolve_retailer_names.unwrap_or(true),
            include_personal_data: self.include_personal_data,
            webhook_secret: self.webhook_secret,
        })
    }
}

fn validate_link_url(name: &str, raw: &str) -> Result<Url> {
    let url = Url::parse(raw.trim())
        .map_err(|e| Error::config(name, format!("link_url {raw:?} is not a URL: {e}")))?;
    if url.scheme() != "https" || url.host_str().is_none_or(str::is_empty) {
        return Err(Error::config(
            name,
            format!(
                "link_url {raw:?} must be an https:// URL (e.g. https://link.subtotal.com/abc123)"
            ),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::config(name, "link_url must not carry credentials"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use connhealth_core::ErrorKind;

    fn base() -> SubtotalBuilder {
        Subtotal::builder()
            .api_key(Secret::new("sk_test_123"))
            .customers(vec!["c1".into()])
    }

    #[test]
    fn build_validates_settings() {
        let err = Subtotal::builder().customers(vec![]).build().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("api_key"), "{err}");
        let err = Subtotal::builder()
            .api_key(Secret::new(" "))
            .customers(vec![])
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("api_key"), "{err}");
        let err = Subtotal::builder()
            .api_key(Secret::new("k"))
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("customers"), "{err}");
        let err = base()
            .customers(vec!["a".into(), "".into()])
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("customers[1]"), "{err}");
        let err = base()
            .base_url("http://api.subtotal.com")
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("https"), "{err}");
        let err = base()
            .link_url("http://link.subtotal.com/x")
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("link_url"), "{err}");
        let err = base().link_url("not a url").build().unwrap_err();
        assert!(err.to_string().contains("link_url"), "{err}");
        let err = base().concurrency(0).build().unwrap_err();
        assert!(err.to_string().contains("concurrency"), "{err}");
        let err = base().name("").build().unwrap_err();
        assert!(err.to_string().contains("name"), "{err}");

        let p = base()
            .customers(vec!["a".into(), "b".into(), "a".into()])
            .link_url("https://link.subtotal.com/abc123?redirect_url=x")
            .name("subtotal-eu")
            .build()
            .unwrap();
        assert_eq!(p.customers(), ["a".to_owned(), "b".to_owned()]);
        assert_eq!(p.name(), "subtotal-eu");
        assert_eq!(p.client().base_url().as_str(), "https://api.subtotal.com/");
        let empty = base().customers(vec![]).build().unwrap();
        assert!(empty.customers().is_empty());
    }

    #[test]
    fn debug_hides_the_key() {
        let b = base();
        assert!(!format!("{b:?}").contains("sk_test_123"));
        let p = b.build().unwrap();
        let dbg = format!("{p:?}");
        assert!(!dbg.contains("sk_test_123"), "{dbg}");
        assert!(dbg.contains("[redacted]"));
    }

    #[tokio::test]
    async fn empty_customer_list_yields_nothing() {
        let p = base().customers(vec![]).build().unwrap();
        let f = p.fetch().await;
        assert!(f.connections.is_empty() && f.errors.is_empty());
        assert_eq!(f.outcome(), connhealth_core::Outcome::Ok);
    }
}
