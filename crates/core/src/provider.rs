//! The `Provider` trait and the helpers adapters use to implement it.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::Semaphore;

use crate::action::{Action, ActionError, ActionKind, ActionOutcome};
use crate::error::{Error, ErrorKind};
use crate::model::{Connection, Outcome};

/// One item of a provider's stream: the connections of one unit of work (usually one
/// customer), or why that unit failed.
pub type Batch = Result<Vec<Connection>, Error>;

/// Anything that can report connections: an adapter for one provider account.
///
/// The one required method is [`Provider::stream`]: it yields [`Batch`]es as they arrive (one
/// per customer for fan-out providers, one for report-style providers). A failed batch does not
/// end the stream: other customers' batches keep coming, and the provider's outcome becomes
/// `partial`. A failure that stops everything (bad credentials before any customer was asked)
/// is yielded as an error batch and the stream ends.
///
/// Dropping the stream cancels the work. Implementations must never panic on provider input;
/// should one panic anyway, the [`crate::Aggregator`] records it and keeps the others' results.
#[async_trait]
pub trait Provider: Send + Sync + fmt::Debug {
    /// The provider's name as it appears in reports (`channel3`, or a configured name).
    fn name(&self) -> &str;

    /// The provider's connections, batch by batch, as they arrive.
    fn stream(&self) -> BoxStream<'_, Batch>;

    /// The counters of this provider's HTTP client (attempts, retries), for metrics such as
    /// `serve`'s `/metrics`. `None` (the default) for a provider without one.
    fn http_stats(&self) -> Option<Arc<crate::http::HttpStats>> {
        None
    }

    /// A targeted refresh of one customer, outside the poll: what a webhook, `POST
    /// /v1/refresh` or an action uses to confirm a suspected change. Returns that customer's
    /// connections as the provider now reports them (for [`RefreshHint::Connection`], at
    /// least that connection).
    ///
    /// The default is an [`ErrorKind::Unsupported`] error: a provider without a targeted read
    /// is refreshed by its next poll.
    async fn refresh(
        &self,
        customer_id: &str,
        hint: RefreshHint,
    ) -> Result<Vec<Connection>, Error> {
        let _ = hint;
        Err(Error::new(
            self.name(),
            "refresh",
            ErrorKind::Unsupported,
            "this provider has no targeted refresh; its next poll will show the change",
        )
        .with_customer(customer_id))
    }

    /// The shortest time between two *scheduled* re-checks of one customer
    /// ([`RefreshHint::Scheduled`], see [`crate::schedule`]), whatever `recheck_secs` says.
    /// `None` (the default): `recheck_secs` decides. Violet answers one hour: its report is
    /// cached for a day, so asking it more often tells nothing new.
    fn recheck_floor(&self) -> Option<std::time::Duration> {
        None
    }

    /// Verify a webhook this provider sent (DESIGN.md, "Webhooks in") with the provider's
    /// configured webhook secret, the event carrying the provider's name. `None` (the
    /// default) when the provider has no webhooks configured (`serve` answers 404 then).
    fn verify_webhook(
        &self,
        headers: &crate::HeaderMap,
        raw_body: &[u8],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<Result<crate::WebhookEvent, crate::WebhookError>> {
        let _ = (headers, raw_body, now);
        None
    }

    /// The actions `connection` (one of this provider's) supports now, by the adapter's rule
    /// (DESIGN.md, "Actions"). The default: none.
    fn actions(&self, connection: &Connection) -> Vec<Action> {
        let _ = connection;
        Vec::new()
    }

    /// Perform the action `kind` on `connection` (one of this provider's, as last seen). A
    /// kind not in [`Provider::actions`] is [`ActionError::Unsupported`] (nothing is sent).
    /// The default supports nothing.
    async fn act(
        &self,
        connection: &Connection,
        kind: ActionKind,
    ) -> Result<ActionOutcome, ActionError> {
        Err(ActionError::unsupported(connection, kind))
    }

    /// All connections at once: the stream, collected.
    async fn fetch(&self) -> Fetched {
        let mut fetched = Fetched::default();
        let mut s = self.stream();
        while let Some(batch) = s.next().await {
            fetched.push(batch);
        }
        fetched
    }
}

#[async_trait]
impl<P: Provider + ?Sized> Provider for Arc<P> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn verify_webhook(
        &self,
        headers: &crate::HeaderMap,
        raw_body: &[u8],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<Result<crate::WebhookEvent, crate::WebhookError>> {
        (**self).verify_webhook(headers, raw_body, now)
    }
    async fn refresh(
        &self,
        customer_id: &str,
        hint: RefreshHint,
    ) -> Result<Vec<Connection>, Error> {
        (**self).refresh(customer_id, hint).await
    }
    fn actions(&self, connection: &Connection) -> Vec<Action> {
        (**self).actions(connection)
    }
    async fn act(
        &self,
        connection: &Connection,
        kind: ActionKind,
    ) -> Result<ActionOutcome, ActionError> {
        (**self).act(connection, kind).await
    }
    fn stream(&self) -> BoxStream<'_, Batch> {
        (**self).stream()
    }
    fn http_stats(&self) -> Option<Arc<crate::http::HttpStats>> {
        (**self).http_stats()
    }
    fn recheck_floor(&self) -> Option<std::time::Duration> {
        (**self).recheck_floor()
    }
}

#[async_trait]
impl<P: Provider + ?Sized> Provider for Box<P> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn verify_webhook(
        &self,
        headers: &crate::HeaderMap,
        raw_body: &[u8],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<Result<crate::WebhookEvent, crate::WebhookError>> {
        (**self).verify_webhook(headers, raw_body, now)
    }
    async fn refresh(
        &self,
        customer_id: &str,
        hint: RefreshHint,
    ) -> Result<Vec<Connection>, Error> {
        (**self).refresh(customer_id, hint).await
    }
    fn actions(&self, connection: &Connection) -> Vec<Action> {
        (**self).actions(connection)
    }
    async fn act(
        &self,
        connection: &Connection,
        kind: ActionKind,
    ) -> Result<ActionOutcome, ActionError> {
        (**self).act(connection, kind).await
    }
    fn stream(&self) -> BoxStream<'_, Batch> {
        (**self).stream()
    }
    fn http_stats(&self) -> Option<Arc<crate::http::HttpStats>> {
        (**self).http_stats()
    }
    fn recheck_floor(&self) -> Option<std::time::Duration> {
        (**self).recheck_floor()
    }
}

/// The rule every provider follows: a 401 (`authentication`) means the credentials
/// themselves were refused, so every other request would fail the same way. That error batch
/// is the stream's last; the requests still in flight are dropped (cancelled).
///
/// ```
/// use connhealth_core::{until_refused, Batch, Error, ErrorKind};
/// use futures::stream::{self, StreamExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let refused = || Err(Error::new("p", "GET /x", ErrorKind::Authentication, "bad key"));
/// let batches: Vec<Batch> = vec![Ok(vec![]), refused(), Ok(vec![])];
/// let seen: Vec<Batch> = until_refused(stream::iter(batches).boxed()).collect().await;
/// assert_eq!(seen.len(), 2);
/// # }
/// ```
pub fn until_refused(batches: BoxStream<'_, Batch>) -> BoxStream<'_, Batch> {
    batches
        .scan(false, |refused, batch| {
            if *refused {
                return futures::future::ready(None);
            }
            *refused = matches!(&batch, Err(e) if e.kind() == ErrorKind::Authentication);
            futures::future::ready(Some(batch))
        })
        .boxed()
}

/// What a targeted [`Provider::refresh`] is about, beyond the customer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefreshHint {
    /// The customer's connections, all of them (the default).
    #[default]
    Customer,
    /// One connection, by the provider's own connection id (e.g. the `connection_id` of a
    /// Subtotal webhook): a provider that can read one connection reads only that one.
    Connection(String),
    /// A re-check the scheduler asked for (a connection that is not healthy, a stale
    /// customer), not a webhook or an action: the customer's connections, as cheaply as the
    /// provider can tell them. A provider whose fresh read is heavy reads its cached answer
    /// instead (Violet: never `refresh=true`); others treat it as [`RefreshHint::Customer`].
    Scheduled,
}

/// A collected provider answer: every connection that arrived and every error.
#[derive(Debug, Default)]
pub struct Fetched {
    /// Connections from every successful batch.
    pub connections: Vec<Connection>,
    /// One error per failed batch.
    pub errors: Vec<Error>,
    /// How many batches succeeded.
    pub ok_batches: usize,
}

impl Fetched {
    /// Add one batch.
    pub fn push(&mut self, batch: Batch) {
        match batch {
            Ok(mut conns) => {
                self.ok_batches += 1;
                self.connections.append(&mut conns);
            }
            Err(e) => self.errors.push(e),
        }
    }

    /// `ok` without errors; `partial` when some batches succeeded and some failed; `failed`
    /// when errors came and nothing succeeded.
    pub fn outcome(&self) -> Outcome {
        match (self.errors.is_empty(), self.ok_batches) {
            (true, _) => Outcome::Ok,
            (false, 0) => Outcome::Failed,
            (false, _) => Outcome::Partial,
        }
    }
}

/// A bound on concurrent requests. Each provider has one; several providers may share one
/// (clone it) so that their fan-outs together stay under one limit.
#[derive(Clone)]
pub struct Concurrency {
    limit: usize,
    shared: Option<Arc<Semaphore>>,
}

impl fmt::Debug for Concurrency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Concurrency")
            .field("limit", &self.limit)
            .field("shared", &self.shared.is_some())
            .finish()
    }
}

impl Concurrency {
    /// At most `limit` requests in flight (at least 1, and at most what a semaphore can hold,
    /// `Semaphore::MAX_PERMITS`: a larger bound means "unbounded" anyway).
    pub fn new(limit: usize) -> Self {
        Concurrency {
            limit: limit.clamp(1, Semaphore::MAX_PERMITS),
            shared: None,
        }
    }

    /// At most `limit` in flight across everyone holding a clone of this value (capped as in
    /// [`Concurrency::new`]).
    pub fn shared(limit: usize) -> Self {
        let limit = limit.clamp(1, Semaphore::MAX_PERMITS);
        Concurrency {
            limit,
            shared: Some(Arc::new(Semaphore::new(limit))),
        }
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Run `f` over `items` with at most `limit` futures in flight (and, for a shared bound,
    /// at most `limit` across all sharers), yielding results as they complete.
    pub fn fan_out<'a, I, F, Fut, T>(&self, items: I, mut f: F) -> BoxStream<'a, T>
    where
        I: IntoIterator + 'a,
        I::IntoIter: Send + 'a,
        F: FnMut(I::Item) -> Fut + Send + 'a,
        Fut: Future<Output = T> + Send + 'a,
        T: Send + 'a,
    {
        let shared = self.shared.clone();
        stream::iter(items)
            .map(move |item| {
                let fut = f(item);
                let sem = shared.clone();
                async move {
                    let _permit = match sem {
                        // A closed semaphore cannot happen (we never close it); run unbounded then.
                        Some(s) => s.acquire_owned().await.ok(),
                        None => None,
                    };
                    fut.await
                }
            })
            .buffer_unordered(self.limit)
            .boxed()
    }
}

impl Default for Concurrency {
    fn default() -> Self {
        Concurrency::new(32)
    }
}
