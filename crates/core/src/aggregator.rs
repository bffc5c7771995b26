//! Runs every provider concurrently and merges their answers into a [`HealthReport`].

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::stream::{BoxStream, FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{Error, ErrorKind};
use crate::model::{Connection, HealthReport, Outcome, ProviderOutcome};
use crate::provider::{Fetched, Provider};

/// One provider's finished run: its outcome entry and its connections.
#[derive(Debug, Clone)]
pub struct ProviderResult {
    /// Where it is in the aggregator's list (configuration order).
    pub index: usize,
    /// The report entry.
    pub outcome: ProviderOutcome,
    /// The connections it delivered (everything that arrived, even when it then failed or
    /// timed out).
    pub connections: Vec<Connection>,
    /// The longest `Retry-After` any of its errors carried (not part of the report's JSON).
    pub retry_after: Option<Duration>,
}

struct Entry {
    provider: Arc<dyn Provider>,
    timeout: Option<Duration>,
}

/// Runs providers concurrently, each under its own timeout, and never lets one provider's
/// error, panic or slowness lose another's results.
///
/// ```
/// # use connhealth_core::{Aggregator, Provider, Batch};
/// # use futures::stream::{self, BoxStream, StreamExt};
/// #[derive(Debug)]
/// struct Empty;
/// impl Provider for Empty {
///     fn name(&self) -> &str { "empty" }
///     fn stream(&self) -> BoxStream<'_, Batch> { stream::iter(vec![Ok(vec![])]).boxed() }
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let report = Aggregator::new().with_provider(Empty).run().await;
/// assert_eq!(report.providers[0].outcome, connhealth_core::Outcome::Ok);
/// # }
/// ```
pub struct Aggregator {
    entries: Vec<Entry>,
    default_timeout: Duration,
    deadline: Option<Duration>,
}

impl std::fmt::Debug for Aggregator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aggregator")
            .field(
                "providers",
                &self
                    .entries
                    .iter()
                    .map(|e| e.provider.name())
                    .collect::<Vec<_>>(),
            )
            .field("default_timeout", &self.default_timeout)
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl Default for Aggregator {
    fn default() -> Self {
        Aggregator::new()
    }
}

impl Aggregator {
    /// No providers; a 30 s timeout per provider; no overall deadline.
    pub fn new() -> Self {
        Aggregator {
            entries: Vec::new(),
            default_timeout: Duration::from_secs(30),
            deadline: None,
        }
    }

    /// Add a provider under the default timeout.
    pub fn with_provider(mut self, provider: impl Provider + 'static) -> Self {
        self.push(Arc::new(provider), None);
        self
    }

    /// Add a provider with its own timeout.
    pub fn with_provider_timeout(
        mut self,
        provider: impl Provider + 'static,
        timeout: Duration,
    ) -> Self {
        self.push(Arc::new(provider), Some(timeout));
        self
    }

    /// Add a shared provider, optionally with its own timeout.
    pub fn push(&mut self, provider: Arc<dyn Provider>, timeout: Option<Duration>) {
        self.entries.push(Entry { provider, timeout });
    }

    /// The timeout of providers added without their own.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// A deadline for the whole aggregation: no provider runs longer than this, whatever its
    /// own timeout.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The providers' names, in order.
    pub fn provider_names(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|e| e.provider.name().to_owned())
            .collect()
    }

    /// Run every provider and merge the results into one report. Provider entries keep the
    /// configured order; connections are sorted by id.
    pub async fn run(&self) -> HealthReport {
        Aggregator::assemble(self.run_stream().collect().await)
    }

    /// Merge finished provider results (from [`Aggregator::run_stream`], in any order) into a
    /// report, exactly as [`Aggregator::run`] does.
    pub fn assemble(mut results: Vec<ProviderResult>) -> HealthReport {
        results.sort_by_key(|r| r.index);
        let mut outcomes = Vec::with_capacity(results.len());
        let total: usize = results.iter().map(|r| r.connections.len()).sum();
        let mut connections = Vec::with_capacity(total);
        for r in results {
            outcomes.push(r.outcome);
            connections.extend(r.connections);
        }
        HealthReport::new(Utc::now(), outcomes, connections)
    }

    /// Run every provider and yield each one's result as soon as it completes.
    pub fn run_stream(&self) -> BoxStream<'_, ProviderResult> {
        let runs: FuturesUnordered<_> = self
            .entries
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                let mut timeout = entry.timeout.unwrap_or(self.default_timeout);
                if let Some(d) = self.deadline {
                    timeout = timeout.min(d);
                }
                run_one(index, entry.provider.clone(), timeout)
            })
            .collect();
        runs.boxed()
    }
}

/// Aborts the task when dropped, so that dropping an aggregation cancels its providers.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn run_one(index: usize, provider: Arc<dyn Provider>, timeout: Duration) -> ProviderResult {
    let name = provider.name().to_owned();
    let started = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let task = provider.clone();
    let mut handle = AbortOnDrop(tokio::spawn(async move {
        let mut stream = task.stream();
        while let Some(batch) = stream.next().await {
            if tx.send(batch).is_err() {
                break;
            }
        }
    }));

    let mut fetched = Fetched::default();
    let sleep = tokio::time::sleep(timeout);
    tokio::pin!(sleep);
    let timed_out = loop {
        tokio::select! {
            biased;
            batch = rx.recv() => match batch {
                Some(b) => fetched.push(b),
                None => break false,
            },
            _ = &mut sleep => break true,
        }
    };

    let outcome = if timed_out {
        handle.0.abort();
        // Keep whatever arrived before the deadline.
        while let Ok(b) = rx.try_recv() {
            fetched.push(b);
        }
        fetched.errors.push(Error::new(
            &name,
            "fetch",
            ErrorKind::Timeout,
            format!("did not finish within {} ms", timeout.as_millis()),
        ));
        Outcome::TimedOut
    } else {
        match (&mut handle.0).await {
            Ok(()) => fetched.outcome(),
            Err(join) if join.is_panic() => {
                let msg = panic_message(join.into_panic());
                tracing::error!(provider = %name, panic = %msg, "provider panicked");
                fetched.errors.push(Error::new(
                    &name,
                    "fetch",
                    ErrorKind::Panicked,
                    format!("provider panicked: {msg}"),
                ));
                fetched.outcome()
            }
            Err(_) => {
                fetched.errors.push(Error::new(
                    &name,
                    "fetch",
                    ErrorKind::Panicked,
                    "provider task was cancelled",
                ));
                fetched.outcome()
            }
        }
    };

    let elapsed_ms = started.elapsed().as_millis() as u64;
    dedupe(&name, &mut fetched.connections);
    for e in &fetched.errors {
        tracing::warn!(provider = %name, error = %e, "provider error");
    }
    let retry_after = fetched.errors.iter().filter_map(Error::retry_after).max();
    ProviderResult {
        retry_after,
        index,
        outcome: ProviderOutcome {
            provider: name,
            outcome,
            connections: fetched.connections.len(),
            elapsed_ms,
            errors: fetched.errors.iter().map(Error::to_report).collect(),
        },
        connections: fetched.connections,
    }
}

/// A provider that reports the same connection id twice keeps one: the most severe (the
/// report is keyed by id; two answers for one connection mean the worse one is the news).
fn dedupe(provider: &str, connections: &mut Vec<Connection>) {
    connections.sort_by(|a, b| a.id.cmp(&b.id).then(b.status.cmp(&a.status)));
    let before = connections.len();
    connections.dedup_by(|later, kept| later.id == kept.id);
    if connections.len() != before {
        tracing::warn!(
            provider,
            duplicates = before - connections.len(),
            "provider reported duplicate connection ids; kept the most severe of each"
        );
    }
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
