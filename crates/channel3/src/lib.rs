//! # connhealth-channel3
//!
//! The connhealth adapter for the [Channel3 Partner API](https://partner.docs.trychannel3.com):
//! for every merchant (`customer_id`) it reads List connections
//! (`GET /v0/partner/merchants/{customer_id}/connections`) and maps each platform entry onto a
//! normalized [`connhealth_core::Connection`] (rules in [`map`]).
//!
//! Customers are the configured list ([`Channel3Builder::customers`]) or, without one, every
//! merchant of the partner account, discovered through List merchants
//! (`GET /v0/partner/merchants?page=N&size=S`). Discovery and the per-customer requests
//! overlap: the connections of page 1's merchants are fetched while page 2 is being listed.
//! Per-customer requests run concurrently under one bound ([`Channel3Builder::concurrency`]).
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
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::{DateTime, Utc};
use connhealth_core::futures::future;
use connhealth_core::futures::stream::{self, BoxStream, StreamExt};
use connhealth_core::http::{encode_segment, HttpClient, HttpConfig, RetryPolicy};
use connhealth_core::lenient;
use connhealth_core::{Batch, Concurrency, Customer, Error, ErrorKind, Provider, Result, Secret};

mod client;
pub mod map;
pub mod wire;

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
}

impl fmt::Debug for Channel3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel3")
            .field("name", &self.inner.name)
            .field("client", &self.inner.client)
            .field("customers", &self.customers.as_ref().map(Vec::len))
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

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
            match AbortOnDrop(handle).await {
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
        let lost = mapped.losses().to_error(
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

impl Provider for Channel3 {
    fn name(&self) -> &str {
        &self.inner.name
    }

    /// One batch per customer. Without configured customers, merchants are discovered page by
    /// page and each page's customers are fetched as soon as it arrives; a discovery failure
    /// is yielded as an error batch and ends discovery (customers already found still answer).
    ///
    /// A 401 (the key itself was refused) ends the stream after its error batch: every other
    /// request would fail the same way.
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
                                name: m.name,
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
        batches
            .flat_map(stream::iter)
            .scan(false, |stopped, batch| {
                if *stopped {
                    return future::ready(None);
                }
                *stopped = matches!(&batch, Err(e) if e.kind() == ErrorKind::Authentication);
                future::ready(Some(batch))
            })
            .boxed()
    }
}

/// Builds a [`Channel3`]. Setters never fail; [`Channel3Builder::build`] validates.
#[derive(Clone)]
pub struct Channel3Builder {
    name: String,
    base_url: String,
    api_key: Option<Secret>,
    customers: Option<Vec<String>>,
    page_size: usize,
    concurrency: usize,
    shared: Option<Concurrency>,
    request_timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    retry: Option<RetryPolicy>,
    max_body_bytes: Option<usize>,
}

impl Default for Channel3Builder {
    fn default() -> Self {
        Channel3Builder {
            name: DEFAULT_NAME.to_owned(),
            base_url: DEFAULT_BASE_URL.to_owned(),
            api_key: None,
            customers: None,
            page_size: DEFAULT_PAGE_SIZE,
            concurrency: DEFAULT_CONCURRENCY,
            shared: None,
            request_timeout: None,
            connect_timeout: None,
            retry: None,
            max_body_bytes: None,
        }
    }
}

impl fmt::Debug for Channel3Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel3Builder")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("customers", &self.customers.as_ref().map(Vec::len))
            .field("page_size", &self.page_size)
            .field("concurrency", &self.concurrency)
            .field("shared_concurrency", &self.shared)
            .finish_non_exhaustive()
    }
}

impl Channel3Builder {
    /// The provider's name in reports, connection ids and errors (default `channel3`); set it
    /// when two Channel3 partner accounts are configured.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The API host (default [`DEFAULT_BASE_URL`]); paths `/v0/partner/…` are appended.
    /// Must be `https://` unless the host is loopback.
    pub fn base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into();
        self
    }

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

    /// At most this many List connections requests in flight (default 32).
    pub fn concurrency(mut self, limit: usize) -> Self {
        self.concurrency = limit;
        self.shared = None;
        self
    }

    /// Share a bound with other providers (overrides [`Channel3Builder::concurrency`]). For the
    /// bound to span providers, create it with [`Concurrency::shared`].
    pub fn shared_concurrency(mut self, bound: Concurrency) -> Self {
        self.shared = Some(bound);
        self
    }

    /// Timeout of one request attempt, body included (default 30 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// TCP + TLS connect timeout (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Retry policy for safe requests (default [`RetryPolicy::default`]).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Largest response body accepted (default 64 MiB).
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = Some(bytes);
        self
    }

    /// Validates the settings and builds the provider. Errors are [`connhealth_core::ErrorKind::Config`]
    /// and name the setting.
    pub fn build(self) -> Result<Channel3> {
        let name = self.name.trim().to_owned();
        if name.is_empty() {
            return Err(Error::config(DEFAULT_NAME, "name must not be empty"));
        }
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
        let shared = self.shared.is_some();
        let concurrency = match self.shared {
            Some(c) => c,
            None if self.concurrency == 0 => {
                return Err(Error::config(&name, "concurrency must be at least 1"))
            }
            None => Concurrency::new(self.concurrency),
        };
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
        let mut http = HttpConfig::new(self.base_url);
        if let Some(t) = self.request_timeout {
            if t.is_zero() {
                return Err(Error::config(&name, "request_timeout must be positive"));
            }
            http.request_timeout = Some(t);
        }
        if let Some(t) = self.connect_timeout {
            if t.is_zero() {
                return Err(Error::config(&name, "connect_timeout must be positive"));
            }
            http.connect_timeout = Some(t);
        }
        if let Some(r) = self.retry {
            http.retry = r;
        }
        if let Some(b) = self.max_body_bytes {
            http.max_body_bytes = b;
        }
        let http = HttpClient::new(&name, &http)?;
        Ok(Channel3 {
            inner: Arc::new(Inner {
                client: Channel3Client::new(http, api_key, self.page_size),
                name,
            }),
            customers,
            shared,
            concurrency,
        })
    }
}

/// A spawned task that is aborted when its handle is dropped (so dropping the provider's
/// stream cancels the requests in flight).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Future for AbortOnDrop<T> {
    type Output = std::result::Result<T, tokio::task::JoinError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
