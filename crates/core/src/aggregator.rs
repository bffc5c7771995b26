//! Runs every provider concurrently and merges their answers into a [`HealthReport`].

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::stream::{BoxStream, FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use crate::error::{Error, ErrorKind};
use crate::lenient::Losses;
use crate::model::{Connection, HealthReport, Outcome, ProviderOutcome, Status};
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
    /// The connections it delivered that equal a [`Known`] one in everything but
    /// `observed_at` ([`Aggregator::with_known`]): kept as a pointer to the known one and
    /// the new read time, not as a second copy. Empty without `with_known`. Ids here are
    /// unique and not in `connections`.
    pub unchanged: Vec<Unchanged>,
}

/// Connections already known when a run begins (a watcher's memory), for
/// [`Aggregator::with_known`]: sorted by id, shared.
#[derive(Debug, Clone, Default)]
pub struct Known(Arc<[Arc<Connection>]>);

impl Known {
    /// The known set of `connections` (any order; a later duplicate id is ignored).
    pub fn new(connections: impl IntoIterator<Item = Arc<Connection>>) -> Known {
        let mut list: Vec<Arc<Connection>> = connections.into_iter().collect();
        if !list.is_sorted_by(|a, b| a.id <= b.id) {
            list.sort_by(|a, b| a.id.cmp(&b.id));
        }
        list.dedup_by(|later, kept| later.id == kept.id);
        Known(list.into())
    }

    /// The known connection with this id.
    pub fn get(&self, id: &str) -> Option<&Arc<Connection>> {
        self.0
            .binary_search_by(|c| c.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.0[i])
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Move every connection of `batch` that equals a known one except in `observed_at`
    /// into `unchanged`.
    fn split(&self, batch: &mut Vec<Connection>, unchanged: &mut Vec<Unchanged>) {
        batch.retain(|c| match self.get(&c.id) {
            Some(k) if k.same_except_observed_at(c) => {
                unchanged.push(Unchanged {
                    known: k.clone(),
                    observed_at: c.observed_at.get(),
                });
                false
            }
            _ => true,
        });
    }
}

/// A connection a provider answered with that equals a [`Known`] one in everything but when
/// it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unchanged {
    /// The known connection.
    pub known: Arc<Connection>,
    /// When it was read now.
    pub observed_at: chrono::DateTime<Utc>,
}

impl Unchanged {
    /// The connection as read now: the known one with this read's `observed_at`.
    pub fn to_connection(&self) -> Connection {
        let c = (*self.known).clone();
        c.observed_at.set(self.observed_at);
        c
    }
}

/// Turn back into full connections the unchanged ones whose id is also in `connections` or
/// more than once in `unchanged` (a provider that answered the same id twice), so that
/// [`dedupe`] sees every copy; leaves `unchanged` sorted by id with unique ids.
fn settle_unchanged(connections: &mut Vec<Connection>, unchanged: &mut Vec<Unchanged>) {
    if unchanged.is_empty() {
        return;
    }
    unchanged.sort_by(|a, b| a.known.id.cmp(&b.known.id));
    let fresh: std::collections::HashSet<&str> =
        connections.iter().map(|c| c.id.as_str()).collect();
    let dup: Vec<bool> = (0..unchanged.len())
        .map(|i| {
            let id = &unchanged[i].known.id;
            fresh.contains(id.as_str())
                || (i > 0 && unchanged[i - 1].known.id == *id)
                || unchanged.get(i + 1).is_some_and(|n| n.known.id == *id)
        })
        .collect();
    drop(fresh);
    if !dup.contains(&true) {
        return;
    }
    let mut keep = Vec::with_capacity(unchanged.len());
    for (u, d) in std::mem::take(unchanged).into_iter().zip(dup) {
        if d {
            connections.push(u.to_connection());
        } else {
            keep.push(u);
        }
    }
    *unchanged = keep;
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
    known: Option<Known>,
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
            known: None,
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

    /// Compare every answer with `known` as it arrives: one that equals a known connection
    /// except in `observed_at` goes to [`ProviderResult::unchanged`] as a pointer to it, so
    /// that a run over a fleet that did not change holds no second copy of it (a watcher's
    /// sweep). [`Aggregator::run`] and [`Aggregator::assemble`] turn them back into full
    /// connections; [`Aggregator::run_stream`] leaves that to its caller.
    pub fn with_known(mut self, known: Known) -> Self {
        self.known = Some(known);
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
        let mut runs = Vec::with_capacity(results.len());
        for r in results {
            outcomes.push(r.outcome);
            let mut connections = r.connections;
            if !r.unchanged.is_empty() {
                connections.extend(r.unchanged.iter().map(Unchanged::to_connection));
                connections.sort_by(|a, b| a.id.cmp(&b.id));
            }
            runs.push(connections);
        }
        HealthReport::new(Utc::now(), outcomes, concat_sorted(runs))
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
                run_one(index, entry.provider.clone(), timeout, self.known.clone())
            })
            .collect();
        runs.boxed()
    }
}

async fn run_one(
    index: usize,
    provider: Arc<dyn Provider>,
    timeout: Duration,
    known: Option<Known>,
) -> ProviderResult {
    let name = provider.name().to_owned();
    let started = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let task = provider.clone();
    // Aborted when dropped, so that dropping an aggregation cancels its providers.
    let mut handle = AbortOnDropHandle::new(tokio::spawn(async move {
        let mut stream = task.stream();
        while let Some(batch) = stream.next().await {
            if tx.send(batch).is_err() {
                break;
            }
        }
    }));

    let mut fetched = Fetched::default();
    let mut unchanged = Vec::new();
    // Each batch is compared with what is known as it arrives, so only what changed is
    // kept whole while the provider runs.
    let mut take = |fetched: &mut Fetched, mut batch: crate::provider::Batch| {
        if let (Some(k), Ok(b)) = (&known, &mut batch) {
            k.split(b, &mut unchanged);
        }
        fetched.push(batch);
    };
    let sleep = tokio::time::sleep(timeout);
    tokio::pin!(sleep);
    let timed_out = loop {
        tokio::select! {
            biased;
            batch = rx.recv() => match batch {
                Some(b) => take(&mut fetched, b),
                None => break false,
            },
            _ = &mut sleep => break true,
        }
    };

    let outcome = if timed_out {
        handle.abort();
        // Keep whatever arrived before the deadline.
        while let Ok(b) = rx.try_recv() {
            take(&mut fetched, b);
        }
        fetched.errors.push(Error::new(
            &name,
            "fetch",
            ErrorKind::Timeout,
            format!("did not finish within {} ms", timeout.as_millis()),
        ));
        Outcome::TimedOut
    } else {
        match (&mut handle).await {
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
    settle_unchanged(&mut fetched.connections, &mut unchanged);
    let duplicates = dedupe(&mut fetched.connections);
    let losses = Losses {
        skipped: Vec::new(),
        duplicates,
    };
    // Collapsed duplicates are part of the answer that is missing: never only a log line.
    let outcome = match losses.to_error(&name, "fetch", None, "connections") {
        Some(e) => {
            fetched.errors.push(e);
            if outcome == Outcome::Ok {
                Outcome::Partial
            } else {
                outcome
            }
        }
        None => outcome,
    };
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
            connections: fetched.connections.len() + unchanged.len(),
            elapsed_ms,
            errors: fetched.errors.iter().map(Error::to_report).collect(),
        },
        connections: fetched.connections,
        unchanged,
    }
}

/// A provider that reports the same connection id twice keeps one: the most severe (the
/// report is keyed by id; two answers for one connection mean the worse one is the news).
/// Returns the ids of the connections dropped (once per dropped copy), for the report.
fn dedupe(connections: &mut Vec<Connection>) -> Vec<String> {
    sort_by_id_most_severe_first(connections);
    let mut dropped = Vec::new();
    connections.dedup_by(|later, kept| {
        let same = later.id == kept.id;
        if same {
            dropped.push(later.id.clone());
        }
        same
    });
    dropped
}

/// Sorts by id, the most severe first within an id, stably (equal entries keep their arrival
/// order): the order `dedupe` needs. A `Connection` is a few hundred bytes, so this sorts a
/// permutation of indices and then moves every connection at most once, rather than moving
/// connections around inside the sort (O(n log n) moves of large values).
fn sort_by_id_most_severe_first(connections: &mut [Connection]) {
    let in_order = |a: &Connection, b: &Connection| {
        a.id.cmp(&b.id).then(b.status.cmp(&a.status)) != std::cmp::Ordering::Greater
    };
    if connections.windows(2).all(|w| in_order(&w[0], &w[1])) {
        return;
    }
    // Keys inline (no pointer chase to the connection per comparison); the index makes every
    // key unique, so the in-place unstable sort gives exactly the stable order.
    let mut keys: Vec<(&str, std::cmp::Reverse<Status>, usize)> = connections
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id.as_str(), std::cmp::Reverse(c.status), i))
        .collect();
    keys.sort_unstable();
    let mut order: Vec<usize> = keys.into_iter().map(|(_, _, i)| i).collect();
    apply_permutation(connections, &mut order);
}

/// Rearranges `items` in place so that `items[i]` becomes the former `items[order[i]]`, by
/// following the permutation's cycles. `order` must be a permutation of `0..items.len()`; it is
/// consumed (overwritten).
fn apply_permutation<T>(items: &mut [T], order: &mut [usize]) {
    const DONE: usize = usize::MAX;
    for start in 0..items.len() {
        let mut at = start;
        while order[at] != DONE {
            let from = order[at];
            order[at] = DONE;
            if from == start {
                break;
            }
            items.swap(at, from);
            at = from;
        }
    }
}

/// Concatenates per-provider connection lists into one sorted by id, as
/// [`HealthReport::new`] would sort it. Each provider's list comes out of [`dedupe`] sorted
/// by id, and ids start with the provider's name, so usually the lists' id ranges do not
/// overlap: then they are concatenated in id order, into the largest list's allocation, and
/// the result is already sorted (no second sort, no second copy of every connection). Lists
/// that are unsorted or overlap are concatenated in provider order and left to
/// `HealthReport::new` to sort, as before.
fn concat_sorted(mut runs: Vec<Vec<Connection>>) -> Vec<Connection> {
    runs.retain(|r| !r.is_empty());
    if runs.len() <= 1 {
        let mut out = runs.pop().unwrap_or_default();
        out.shrink_to_fit();
        return out;
    }
    let total: usize = runs.iter().map(Vec::len).sum();
    let sorted = |r: &Vec<Connection>| r.windows(2).all(|w| w[0].id <= w[1].id);
    let mut by_first: Vec<usize> = (0..runs.len()).collect();
    by_first.sort_by(|&a, &b| runs[a][0].id.cmp(&runs[b][0].id));
    let disjoint = by_first.windows(2).all(|w| {
        let (before, after) = (&runs[w[0]], &runs[w[1]]);
        before[before.len() - 1].id < after[0].id
    });
    let mut out = if runs.iter().all(sorted) && disjoint {
        let largest = (0..runs.len())
            .max_by_key(|&i| runs[i].capacity())
            .unwrap_or(0);
        let mut slots: Vec<Option<Vec<Connection>>> = runs.into_iter().map(Some).collect();
        let mut out = slots
            .get_mut(largest)
            .and_then(Option::take)
            .unwrap_or_default();
        out.reserve(total - out.len());
        let pos = by_first.iter().position(|&i| i == largest).unwrap_or(0);
        let mut before = Vec::new();
        for &i in &by_first[..pos] {
            before.append(slots[i].as_mut().expect("each run is taken once"));
        }
        out.splice(0..0, before);
        for &i in &by_first[pos + 1..] {
            out.append(slots[i].as_mut().expect("each run is taken once"));
        }
        out
    } else {
        let mut out = Vec::with_capacity(total);
        for r in runs {
            out.extend(r);
        }
        out
    };
    // The report keeps this list as long as it lives: drop the growth slack.
    out.shrink_to_fit();
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Customer, Role};

    fn conn(id: &str, status: Status, tag: usize) -> Connection {
        Connection {
            id: id.to_owned(),
            provider: "p".into(),
            provider_connection_id: None,
            customer: Customer::new(tag.to_string()),
            platform: "x".into(),
            role: Role::Source,
            status,
            provider_status: String::new(),
            connected_at: None,
            sync: None,
            checks: thin_vec::thin_vec![],
            problems: thin_vec::thin_vec![],
            accounts: thin_vec::thin_vec![],
            observed_at: chrono::DateTime::UNIX_EPOCH.into(),
            data_as_of: None,
        }
    }

    fn random_run(
        rng: &mut fastrand::Rng,
        prefix: &str,
        n: usize,
        tag: &mut usize,
    ) -> Vec<Connection> {
        (0..n)
            .map(|_| {
                *tag += 1;
                let id = format!("{prefix}:{}", rng.usize(..n.max(1) * 2));
                conn(&id, Status::ALL[rng.usize(..Status::ALL.len())], *tag)
            })
            .collect()
    }

    /// What `dedupe` and `assemble` did before they avoided moving connections in the sort.
    fn reference(runs: &[Vec<Connection>]) -> Vec<Connection> {
        let mut all = Vec::new();
        for r in runs {
            let mut r = r.clone();
            r.sort_by(|a, b| a.id.cmp(&b.id).then(b.status.cmp(&a.status)));
            r.dedup_by(|later, kept| later.id == kept.id);
            all.extend(r);
        }
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    fn ours(runs: &[Vec<Connection>]) -> Vec<Connection> {
        let runs: Vec<Vec<Connection>> = runs
            .iter()
            .map(|r| {
                let mut r = r.clone();
                dedupe(&mut r);
                r
            })
            .collect();
        let mut all = concat_sorted(runs);
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    #[test]
    fn permutation_applies_in_place() {
        let mut rng = fastrand::Rng::with_seed(7);
        for n in [0, 1, 2, 3, 10, 257] {
            let mut order: Vec<usize> = (0..n).collect();
            rng.shuffle(&mut order);
            let items: Vec<usize> = (0..n).map(|i| i * 10).collect();
            let expected: Vec<usize> = order.iter().map(|&i| items[i]).collect();
            let mut got = items.clone();
            apply_permutation(&mut got, &mut order.clone());
            assert_eq!(got, expected, "n = {n}");
        }
    }

    #[test]
    fn same_order_and_survivors_as_a_plain_stable_sort() {
        let mut rng = fastrand::Rng::with_seed(42);
        let mut tag = 0;
        for case in 0..200 {
            let k = rng.usize(0..4);
            // Distinct prefixes (the usual case) most of the time; a shared one (two providers
            // with the same name) sometimes, so that the fallback is exercised too.
            let runs: Vec<Vec<Connection>> = (0..k)
                .map(|i| {
                    let prefix = if case % 5 == 0 {
                        "same".to_owned()
                    } else {
                        format!("p{i}")
                    };
                    let n = rng.usize(0..40);
                    random_run(&mut rng, &prefix, n, &mut tag)
                })
                .collect();
            let (expected, got) = (reference(&runs), ours(&runs));
            let key = |c: &Connection| (c.id.clone(), c.status, c.customer.id.clone());
            assert_eq!(
                got.iter().map(key).collect::<Vec<_>>(),
                expected.iter().map(key).collect::<Vec<_>>(),
                "case {case}"
            );
        }
    }

    #[test]
    fn disjoint_runs_come_out_sorted_without_the_report_sorting() {
        let a = vec![
            conn("b:1", Status::Healthy, 0),
            conn("b:2", Status::Healthy, 0),
        ];
        let big: Vec<Connection> = (0..100)
            .map(|i| conn(&format!("c:{i:03}"), Status::Healthy, 0))
            .collect();
        let z = vec![conn("a:9", Status::Healthy, 0)];
        let out = concat_sorted(vec![a, big, z]);
        assert_eq!(out.len(), 103);
        assert!(out.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(out[0].id, "a:9");
        assert_eq!(out.capacity(), out.len());
        assert!(concat_sorted(vec![]).is_empty());
        assert!(concat_sorted(vec![vec![], vec![]]).is_empty());
    }
}
