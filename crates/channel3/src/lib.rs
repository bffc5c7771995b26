//! # connhealth-channel3
//!
//! The connhealth adapter for the [Channel3 Partner API](https://partner.docs.trychannel3.com):
//! for every merchant (`customer_id`) it reads List connections
//! (`GET /v0/partner/merchants/{customer_id}/connections`) and maps each platform entry onto a
//! normalized [`connhealth_core::Connection`] (rules: "How an answer maps" below).
//!
//! Customers are the configured list ([`Channel3Builder::customers`]) or, without one, every
//! merchant of the partner account, discovered through List merchants
//! (`GET /v0/partner/merchants?page=N&size=S`). Discovery and the per-customer requests
//! overlap: the connections of page 1's merchants are fetched while page 2 is being listed.
//! Per-customer requests run concurrently under one bound ([`Channel3Builder::concurrency`]).
//!
//! Actions (`Provider::actions` / `Provider::act`): `connect_link` for a `not_connected`,
//! `disconnected` or `action_required` connection when [`Channel3Builder::connect_redirect_uri`]
//! is set: a connect session for that platform, whose single-use `url` expires after 30 minutes.
//!
//! ```
//! use connhealth_channel3::Channel3;
//! use connhealth_core::{Outcome, Provider, Secret};
//! use connhealth_testkit::Channel3Sim;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A loopback simulator of the Partner API with 5 generated merchants.
//! let sim = Channel3Sim::start_generated(5, 42).await?;
//!
//! let provider = Channel3::builder()
//!     .base_url(sim.base_url())
//!     .api_key(Secret::new(sim.api_key()))
//!     .concurrency(8)
//!     .build()?;
//!
//! let fetched = provider.fetch().await;
//! assert_eq!(fetched.outcome(), Outcome::Ok);
//! for c in &fetched.connections {
//!     assert_eq!(c.provider, "channel3");
//!     println!("{} {} {} {}", c.customer.id, c.platform, c.status, c.problems.len());
//! }
//!
//! // Control-plane calls go through the typed client (never made by a poll).
//! let merchants = provider.client().list_all_merchants().await?;
//! assert_eq!(merchants.len(), 5);
//! # Ok(())
//! # }
//! ```
//!
//! ## How an answer maps
//!
//! | Channel3 | `status` | problem (severity) | remediation |
//! | --- | --- | --- | --- |
//! | `not_connected` | `not_connected` | — | — |
//! | `action_required` | `action_required` | `action_required` (action_required) | `reconnect {url: null}`: mint a connect session |
//! | `active`, `ingestion` | `healthy` | — | — |
//! | `active`, `distribution`, sync `pending` | `pending` | `sync_pending` (pending) | `wait_for_sync` |
//! | `active`, `distribution`, sync `syncing` | `syncing` | `sync_in_progress` (syncing) | `wait_for_sync` |
//! | `active`, `distribution`, sync `live` | `healthy` | — | — |
//! | … `live` with `synced_products < total_products` | `degraded` | `partial_sync` (degraded) | — |
//! | `active`, `distribution`, no `sync` (or a sync without `state`) | `unknown` | `sync_status_missing` (unknown) | — |
//! | an unknown `status` / `category` / `sync.state` | `unknown` | `unrecognized_value` (unknown) | — |
//! | `status` / `category` missing | `unknown` | `missing_value` (unknown) | — |
//!
//! The status is the worst of the base status and every problem's severity, so an unknown
//! value anywhere makes a connection at least `unknown`. A `sync` on an ingestion row is kept
//! but only changes the status when its state is unknown. `ingestion` → `source`,
//! `distribution` → `destination`, an unknown category → `source` (plus its problem).
//!
//! An entry without `platform` cannot be identified across polls and is left out; entries
//! sharing a connection id in one answer collapse into one, the most severe (the first of
//! equally severe ones). Both are reported: the provider turns them into a `decode` error of the report.
//! An account id listed twice in one entry's `accounts` is kept once (the first wins).
#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use connhealth_core::futures::stream::{self, BoxStream, StreamExt};
use connhealth_core::http::encode_segment;
use connhealth_core::lenient;
use connhealth_core::{
    until_refused, Action, ActionError, ActionKind, ActionOutcome, AdapterDefaults, Batch,
    ClientOptions, Concurrency, Connection, Customer, Error, ErrorKind, Provider, Result, Secret,
    Status,
};
use tokio_util::task::AbortOnDropHandle;

mod client;
mod config;
pub use config::Channel3Config;
mod map;
#[cfg(test)]
mod mapping_tests;
mod wire;
pub use wire::{
    ConnectionAccount, ConnectionStatus, ConnectionSync, PartnerConnection,
    PartnerConnectionsResponse, PlatformCategory, PlatformSlug, SkippedItem, SyncState,
};

pub use client::{
    Channel3Client, ConnectSession, CreatedMerchant, Merchant, MerchantPage, MAX_PAGES,
};

/// The default provider name (used in `Connection::provider`, ids and errors).
pub const DEFAULT_NAME: &str = "channel3";
/// The production Partner API host; every path is under `/v0/partner/`.
pub const DEFAULT_BASE_URL: &str = "https://partners.trychannel3.com";
/// The default List merchants page size.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// The default fan-out bound.
pub const DEFAULT_CONCURRENCY: usize = 32;

/// A Channel3 partner account as a connhealth [`Provider`]. Build it with [`Channel3::builder`].
#[derive(Clone)]
pub struct Channel3 {
    inner: Arc<Inner>,
    customers: Option<Vec<String>>,
    concurrency: Concurrency,
    shared: bool,
    connect_redirect_uri: Option<String>,
}

impl fmt::Debug for Channel3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel3")
            .field("name", &self.inner.name)
            .field("client", &self.inner.client)
            .field("customers", &self.customers.as_ref().map(Vec::len))
            .field("concurrency", &self.concurrency)
            .field("connect_redirect_uri", &self.connect_redirect_uri.is_some())
            .finish()
    }
}

/// How long a connect session's URL is valid when the answer gives no `expires_at`
/// (the quickstart: single-use, expires after 30 minutes).
pub const CONNECT_SESSION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(30 * 60);

impl Channel3 {
    /// A builder with the defaults (see [`Channel3Builder`]).
    pub fn builder() -> Channel3Builder {
        Channel3Builder::default()
    }

    /// The typed client, for control-plane calls (create merchant, connect sessions…).
    pub fn client(&self) -> &Channel3Client {
        &self.inner.client
    }

    /// The configured customer ids (deduplicated), or `None` when customers are discovered.
    pub fn customers(&self) -> Option<&[String]> {
        self.customers.as_deref()
    }

    /// One customer's batch, fetched and mapped on a task of its own, so that decoding and
    /// mapping run in parallel on a multi-thread runtime instead of all inside the task that
    /// polls the fan-out. The task starts when the returned future is first polled (after the
    /// concurrency permit) and is aborted if the future is dropped.
    fn fetch(
        &self,
        customer: Customer,
        observed_at: DateTime<Utc>,
    ) -> impl Future<Output = Vec<Batch>> + Send + 'static {
        let inner = Arc::clone(&self.inner);
        async move {
            let id = customer.id.clone();
            let task = Arc::clone(&inner);
            let handle =
                tokio::spawn(async move { task.fetch_customer(customer, observed_at).await });
            // Aborted if dropped, so dropping the provider's stream cancels the requests.
            match AbortOnDropHandle::new(handle).await {
                Ok(batches) => batches,
                Err(e) => {
                    let (kind, what) = if e.is_panic() {
                        (
                            ErrorKind::Panicked,
                            "panicked while fetching or mapping (a bug in connhealth-channel3)",
                        )
                    } else {
                        (
                            ErrorKind::Connection,
                            "cancelled (the runtime is shutting down)",
                        )
                    };
                    vec![Err(Error::new(
                        &*inner.name,
                        client::LIST_CONNECTIONS,
                        kind,
                        what,
                    )
                    .with_customer(id))]
                }
            }
        }
    }
}

/// What a per-customer task needs.
#[derive(Debug)]
struct Inner {
    name: String,
    client: Channel3Client,
}

impl Inner {
    /// Fetch and map one customer's connections: its batch, and a `decode` error batch
    /// naming the entries that were left out or collapsed, if any.
    async fn fetch_customer(&self, customer: Customer, observed_at: DateTime<Utc>) -> Vec<Batch> {
        let response = match self.client.list_connections(&customer.id).await {
            Ok(r) => r,
            Err(e) => return vec![Err(e)],
        };
        let mapped = map::map_connections(&self.name, &customer, &response, observed_at);
        let lost = mapped.losses.to_error(
            &self.name,
            client::LIST_CONNECTIONS,
            Some(&customer.id),
            "connection entries",
        );
        lenient::Mapped {
            connections: mapped.connections,
            lost,
        }
        .into_batches()
    }
}

#[connhealth_core::async_trait]
impl Provider for Channel3 {
    fn name(&self) -> &str {
        &self.inner.name
    }

    /// One customer's connections (`GET /v0/partner/merchants/{id}/connections`), whether or
    /// not the customer is among the configured ones: after a connect flow the platform asks
    /// for the customer it just connected. The hint is ignored (Channel3 has no per-connection
    /// read). Entries that could not be decoded are left out, as in a poll, and logged.
    async fn refresh(
        &self,
        customer_id: &str,
        _hint: connhealth_core::RefreshHint,
    ) -> Result<Vec<Connection>> {
        let mut connections = Vec::new();
        let mut first_error = None;
        for batch in self.fetch(Customer::new(customer_id), Utc::now()).await {
            match batch {
                Ok(mut c) => connections.append(&mut c),
                Err(e) if e.kind() == ErrorKind::Decode && first_error.is_none() => {
                    tracing::debug!(provider = %self.inner.name, error = %e, "refresh left entries out");
                    first_error = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        match (connections.is_empty(), first_error) {
            (true, Some(e)) => Err(e),
            _ => Ok(connections),
        }
    }

    /// `connect_link` for a connection whose status is `not_connected`, `disconnected` or
    /// `action_required` (a connect session is Channel3's remedy for all three), and only
    /// when `connect_redirect_uri` is configured.
    fn actions(&self, connection: &Connection) -> Vec<Action> {
        let wants_connect = matches!(
            connection.status,
            Status::NotConnected | Status::Disconnected | Status::ActionRequired
        );
        if wants_connect && self.connect_redirect_uri.is_some() {
            vec![Action::new(ActionKind::ConnectLink)]
        } else {
            Vec::new()
        }
    }

    /// `connect_link`: Create connect session
    /// (`POST /v0/partner/merchants/{customer_id}/connections/sessions`) for the connection's
    /// platform with the configured `connect_redirect_uri`; the outcome's `url` is the
    /// single-use hosted page (a bearer secret: never log it), the message says when it
    /// expires (the answer's `expires_at`, else 30 minutes from now). Never retried.
    async fn act(
        &self,
        connection: &Connection,
        kind: ActionKind,
    ) -> std::result::Result<ActionOutcome, ActionError> {
        if !self.actions(connection).iter().any(|a| a.kind == kind) {
            return Err(ActionError::unsupported(connection, kind));
        }
        let redirect = self
            .connect_redirect_uri
            .as_deref()
            .ok_or_else(|| ActionError::unsupported(connection, kind))?;
        let session = self
            .inner
            .client
            .create_connect_session(
                &connection.customer.id,
                redirect,
                Some(&connection.platform),
            )
            .await
            .map_err(|e| ActionError::at_step("creating the connect session failed", e))?;
        let expires = match (&session.expires_at, &session.expires_at_raw) {
            (Some(at), _) => at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            (None, Some(raw)) => format!("{raw:?}"),
            (None, None) => (Utc::now()
                + chrono::Duration::from_std(CONNECT_SESSION_LIFETIME).unwrap_or_default())
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        Ok(ActionOutcome::done(
            kind,
            format!(
                "connect session minted for {} of customer {:?}: send the customer to the url; \
                 it is single-use and expires in 30 minutes (at {expires})",
                connection.platform, connection.customer.id
            ),
        )
        .with_url(session.url))
    }

    fn http_stats(&self) -> Option<std::sync::Arc<connhealth_core::http::HttpStats>> {
        Some(self.client().http().stats().clone())
    }

    /// One batch per customer. Without configured customers, merchants are discovered page by
    /// page and each page's customers are fetched as soon as it arrives; a discovery failure
    /// is yielded as an error batch and ends discovery (customers already found still answer).
    ///
    /// A 401 (the key itself was refused) ends the stream after its error batch
    /// ([`until_refused`]).
    fn stream(&self) -> BoxStream<'_, Batch> {
        let observed_at = Utc::now();
        let batches = match &self.customers {
            Some(ids) => self
                .concurrency
                .fan_out(ids.iter().map(|id| Customer::new(id.clone())), move |c| {
                    self.fetch(c, observed_at)
                }),
            None => {
                // One semaphore across all pages' fan-outs, so the bound holds globally.
                let bound = if self.shared {
                    self.concurrency.clone()
                } else {
                    Concurrency::shared(self.concurrency.limit())
                };
                self.inner
                    .client
                    .merchant_pages()
                    .map(move |page| match page {
                        Ok(merchants) => bound.fan_out(
                            merchants.into_iter().map(|m| Customer {
                                id: m.customer_id,
                                name: m.name.map(Box::from),
                                email: None,
                            }),
                            move |c| self.fetch(c, observed_at),
                        ),
                        Err(e) => stream::once(async move { vec![Err(e)] }).boxed(),
                    })
                    .flatten_unordered(None)
                    .boxed()
            }
        };
        until_refused(batches.flat_map(stream::iter).boxed())
    }
}

/// What a [`Channel3Builder`] uses for settings left unset.
const DEFAULTS: AdapterDefaults = AdapterDefaults {
    name: DEFAULT_NAME,
    base_url: DEFAULT_BASE_URL,
    max_body_bytes: 64 * 1024 * 1024,
    concurrency: DEFAULT_CONCURRENCY,
};

/// Builds a [`Channel3`]. Setters never fail; [`Channel3Builder::build`] validates.
///
/// The shared client settings (name, base URL, timeouts, retries, body cap, concurrency) are
/// [`ClientOptions`]; the setters below are Channel3's own.
#[derive(Clone)]
pub struct Channel3Builder {
    options: ClientOptions,
    api_key: Option<Secret>,
    customers: Option<Vec<String>>,
    page_size: usize,
    connect_redirect_uri: Option<String>,
}

impl Default for Channel3Builder {
    fn default() -> Self {
        Channel3Builder {
            options: ClientOptions::new(),
            api_key: None,
            customers: None,
            page_size: DEFAULT_PAGE_SIZE,
            connect_redirect_uri: None,
        }
    }
}

impl fmt::Debug for Channel3Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel3Builder")
            .field("options", &self.options)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("customers", &self.customers.as_ref().map(Vec::len))
            .field("page_size", &self.page_size)
            .field("connect_redirect_uri", &self.connect_redirect_uri)
            .finish()
    }
}

impl Channel3Builder {
    connhealth_core::client_options_setters!();

    /// The partner secret key (`c3_sk_…`), sent as `x-api-key`. Required.
    pub fn api_key(mut self, key: Secret) -> Self {
        self.api_key = Some(key);
        self
    }

    /// Check exactly these customer ids (duplicates dropped, order kept) and skip discovery.
    /// Without it, every merchant of the partner account is discovered through List merchants.
    pub fn customers<I, S>(mut self, ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.customers = Some(ids.into_iter().map(Into::into).collect());
        self
    }

    /// List merchants page size asked for during discovery (default 100; the server may cap it).
    pub fn page_size(mut self, size: usize) -> Self {
        self.page_size = size;
        self
    }

    /// Where Channel3's hosted connect flow sends the merchant when done (the `redirect_uri`
    /// of Create connect session; it must prefix-match a URI on the partner's allowlist).
    /// Without it, connections offer no `connect_link` action. Must be an `http(s)://` URL.
    pub fn connect_redirect_uri(mut self, uri: impl Into<String>) -> Self {
        self.connect_redirect_uri = Some(uri.into());
        self
    }

    /// Validates the settings and builds the provider. Errors are [`connhealth_core::ErrorKind::Config`]
    /// and name the setting.
    pub fn build(self) -> Result<Channel3> {
        let options = self.options.validate(&DEFAULTS)?;
        let name = options.name;
        let api_key = match self.api_key {
            Some(k) if !k.is_empty() => k,
            Some(_) => return Err(Error::config(&name, "api_key is empty")),
            None => {
                return Err(Error::config(
                    &name,
                    "api_key is required (the partner secret key, sent as x-api-key)",
                ))
            }
        };
        if self.page_size == 0 {
            return Err(Error::config(&name, "page_size must be at least 1"));
        }
        let customers = match self.customers {
            None => None,
            Some(ids) => {
                if ids.is_empty() {
                    return Err(Error::config(
                        &name,
                        "customers is empty; omit it to discover every merchant",
                    ));
                }
                let mut seen = HashSet::with_capacity(ids.len());
                let mut unique = Vec::with_capacity(ids.len());
                for (i, id) in ids.into_iter().enumerate() {
                    if encode_segment(&name, &id).is_err() {
                        return Err(Error::config(
                            &name,
                            format!("customers[{i}] ({id:?}) is not a usable customer id"),
                        ));
                    }
                    if seen.insert(id.clone()) {
                        unique.push(id);
                    }
                }
                Some(unique)
            }
        };
        let connect_redirect_uri = match self.connect_redirect_uri {
            None => None,
            Some(raw) => match url::Url::parse(raw.trim()) {
                Ok(u) if matches!(u.scheme(), "https" | "http") && u.has_host() => {
                    Some(raw.trim().to_owned())
                }
                _ => {
                    return Err(Error::config(
                        &name,
                        format!("connect_redirect_uri {raw:?} is not an http(s):// URL"),
                    ))
                }
            },
        };
        Ok(Channel3 {
            connect_redirect_uri,
            inner: Arc::new(Inner {
                client: Channel3Client::new(options.http, api_key, self.page_size),
                name,
            }),
            customers,
            shared: options.shared_concurrency,
            concurrency: options.concurrency,
        })
    }
}
