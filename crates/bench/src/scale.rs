//! Family 3, the scale curve: one aggregation over 100 → 1,000 → 10,000 → 100,000 customers per
//! provider, each point in a fresh process polling simulators served by another process.

use std::io::{self, BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use connhealth_core::{HealthReport, Outcome};
use serde::{Deserialize, Serialize};

use crate::alloc;
use crate::child::{self, Role};
use crate::procfs;
use crate::sims::{ChildSims, Endpoints, SimSpec, SimStats, Sims};
use crate::{on_fresh_thread, ProviderKind};

/// The default points of the curve: customers per provider.
pub const DEFAULT_POINTS: [usize; 4] = [100, 1_000, 10_000, 100_000];

/// What the scale curve measures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleOptions {
    /// Customers per provider at each point (Channel3 merchants, Violet merchants, Subtotal
    /// customers).
    pub customers: Vec<usize>,
    /// The providers polled (all three by default).
    pub providers: Vec<ProviderKind>,
    /// Fan-out bound of each provider.
    pub concurrency: usize,
    /// Latency injected on every simulator route, in milliseconds (0: none, so the curve shows
    /// cost, not waiting).
    pub latency_ms: u64,
    /// Seed of the simulators' data.
    pub seed: u64,
    /// Run each point in a fresh child process, with the simulators in another (the default).
    /// `false` measures in this process, simulators included: quicker, but the memory figures
    /// then include the simulators and carry over from point to point.
    pub isolate: bool,
}

impl Default for ScaleOptions {
    fn default() -> Self {
        ScaleOptions {
            customers: DEFAULT_POINTS.to_vec(),
            providers: ProviderKind::ALL.to_vec(),
            concurrency: 64,
            latency_ms: 0,
            seed: 42,
            isolate: true,
        }
    }
}

/// One point's specification, as handed to its child process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PointSpec {
    customers: usize,
    providers: Vec<ProviderKind>,
    concurrency: usize,
    latency_ms: u64,
    seed: u64,
}

impl PointSpec {
    fn sims(&self) -> SimSpec {
        let mut s = SimSpec::uniform(self.customers, &self.providers, self.seed);
        s.latency_us = self.latency_ms * 1000;
        s
    }
}

/// One provider's part of a scale point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderRow {
    /// The provider.
    pub provider: String,
    /// Its outcome (`ok` unless something is wrong).
    pub outcome: Outcome,
    /// Connections it contributed.
    pub connections: usize,
    /// Its own elapsed time, as the report says.
    pub elapsed_ms: u64,
    /// Requests its simulator received during the poll.
    pub requests: u64,
    /// TCP connections its simulator accepted during the poll.
    pub tcp_connections: u64,
}

/// Heap figures of one point, from the counting allocator ([`crate::alloc`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeapFigures {
    /// Bytes allocated during the poll (every allocation, freed or not).
    pub allocated_bytes: u64,
    /// Allocation calls during the poll.
    pub allocations: u64,
    /// `allocated_bytes` per connection of the report.
    pub bytes_per_connection: f64,
    /// `allocations` per connection of the report.
    pub allocations_per_connection: f64,
    /// The most heap live at once during the poll, above what was live before it.
    pub peak_bytes: u64,
    /// `peak_bytes / report_bytes`: how much more than the report itself the poll needed at
    /// its worst moment (bodies being decoded, batches in flight, the merge).
    pub peak_over_report: f64,
}

/// One point of the scale curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleRow {
    /// Customers per provider.
    pub customers: usize,
    /// Connections in the report.
    pub connections: usize,
    /// HTTP requests the simulators received during the poll.
    pub requests: u64,
    /// Wall time of the aggregation (`Aggregator::run`).
    pub wall_ms: f64,
    /// `requests` per second of wall time.
    pub requests_per_sec: f64,
    /// Wall time per connection of the report, in microseconds (flat when cost is linear).
    pub us_per_connection: f64,
    /// CPU time of the measuring process (the client) during the poll, all threads, in
    /// milliseconds (10 ms resolution).
    pub client_cpu_ms: Option<f64>,
    /// `client_cpu_ms` per connection, in microseconds: the client's own cost, whatever the
    /// simulators' share of the machine (`None` below 50 ms of CPU, where the clock's 10 ms
    /// resolution makes it noise).
    pub client_cpu_us_per_connection: Option<f64>,
    /// CPU time of the simulators' process during the poll, in milliseconds (isolated points
    /// only).
    pub sims_cpu_ms: Option<f64>,
    /// TCP connections the simulators accepted during the poll (reused connections keep this
    /// near the fan-out bound per provider, whatever the number of requests).
    pub tcp_connections: u64,
    /// The fan-out bound of each provider.
    pub concurrency: usize,
    /// Heap the report holds (string and vector capacities, computed by walking it).
    pub report_bytes: u64,
    /// Resident set of the measuring process just before the poll.
    pub rss_before_bytes: Option<u64>,
    /// Peak resident set of the measuring process (`VmHWM`, after the poll).
    pub rss_peak_bytes: Option<u64>,
    /// `(rss_peak - rss_before) / report_bytes`.
    pub rss_growth_over_report: Option<f64>,
    /// Heap figures (when the counting allocator is installed).
    pub heap: Option<HeapFigures>,
    /// Peak resident set of the simulators' process.
    pub sims_rss_peak_bytes: Option<u64>,
    /// Per provider.
    pub providers: Vec<ProviderRow>,
    /// Whether the point ran in processes of its own (else memory figures include the
    /// simulators).
    pub isolated: bool,
    /// Why the point failed or is suspect (a provider not `ok`, a child that died).
    pub error: Option<String>,
}

impl ScaleRow {
    fn failed(customers: usize, concurrency: usize, isolated: bool, error: String) -> Self {
        ScaleRow {
            customers,
            connections: 0,
            requests: 0,
            wall_ms: 0.0,
            requests_per_sec: 0.0,
            us_per_connection: 0.0,
            client_cpu_ms: None,
            client_cpu_us_per_connection: None,
            sims_cpu_ms: None,
            tcp_connections: 0,
            concurrency,
            report_bytes: 0,
            rss_before_bytes: None,
            rss_peak_bytes: None,
            rss_growth_over_report: None,
            heap: None,
            sims_rss_peak_bytes: None,
            providers: Vec::new(),
            isolated,
            error: Some(error),
        }
    }
}

/// Run the scale curve: one row per point of `opts.customers`, in order. A point that fails
/// gives a row with `error` set; the others still run.
///
/// With `opts.isolate` (the default) each point runs in a child process of this executable
/// (see [`crate::child`]); the executable must call [`crate::run_bench`] or
/// [`crate::child_main`] with the same arguments it was given, which both binaries of this
/// workspace do.
pub fn scale_curve(opts: &ScaleOptions) -> Vec<ScaleRow> {
    opts.customers
        .iter()
        .map(|&customers| {
            let spec = PointSpec {
                customers,
                providers: opts.providers.clone(),
                concurrency: opts.concurrency.max(1),
                latency_ms: opts.latency_ms,
                seed: opts.seed,
            };
            let row = if opts.isolate {
                run_isolated(&spec)
            } else {
                run_in_process(&spec)
            };
            row.unwrap_or_else(|e| {
                ScaleRow::failed(customers, spec.concurrency, opts.isolate, e.to_string())
            })
        })
        .collect()
}

/// One point in this process, simulators included.
fn run_in_process(spec: &PointSpec) -> io::Result<ScaleRow> {
    let mut sims = LocalSims::start(&spec.sims())?;
    measure(spec, &mut sims, false)
}

/// One point in a child process of this executable.
fn run_isolated(spec: &PointSpec) -> io::Result<ScaleRow> {
    let mut cmd = child::command(Role::Point, &serde_json::to_string(spec)?)?;
    let mut proc = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = proc
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("no stdout"))?;
    let mut row = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(json) = line.strip_prefix(child::MARK_ROW) {
            row = Some(serde_json::from_str::<ScaleRow>(json.trim())?);
        }
    }
    let status = proc.wait()?;
    match row {
        Some(r) => Ok(r),
        None => Err(io::Error::other(format!(
            "the point's child process gave no result ({status})"
        ))),
    }
}

/// The `point` role: measure one point against simulators in a grandchild process and print
/// the row.
pub(crate) fn point_main(spec_json: &str) -> io::Result<()> {
    let spec: PointSpec = serde_json::from_str(spec_json)?;
    let mut sims = ChildSims::spawn(&spec.sims())?;
    let row = measure(&spec, &mut sims, true)?;
    drop(sims);
    println!("{} {}", child::MARK_ROW, serde_json::to_string(&row)?);
    Ok(())
}

/// What `measure` needs from the simulators, wherever they run.
trait SimsControl {
    fn take_endpoints(&mut self) -> Endpoints;
    fn reset(&mut self) -> io::Result<()>;
    fn stats(&mut self) -> io::Result<SimStats>;
}

impl SimsControl for ChildSims {
    fn take_endpoints(&mut self) -> Endpoints {
        std::mem::take(self.endpoints_mut())
    }
    fn reset(&mut self) -> io::Result<()> {
        ChildSims::reset(self)
    }
    fn stats(&mut self) -> io::Result<SimStats> {
        ChildSims::stats(self)
    }
}

struct LocalSims(Sims);

impl LocalSims {
    fn start(spec: &SimSpec) -> io::Result<Self> {
        Sims::start(spec).map(LocalSims)
    }
}

impl SimsControl for LocalSims {
    fn take_endpoints(&mut self) -> Endpoints {
        self.0.endpoints()
    }
    fn reset(&mut self) -> io::Result<()> {
        self.0.reset();
        Ok(())
    }
    fn stats(&mut self) -> io::Result<SimStats> {
        Ok(self.0.stats())
    }
}

/// What is kept of the report once it has been measured and dropped.
struct Summary {
    connections: usize,
    report_bytes: u64,
    providers: Vec<(String, Outcome, usize, u64, usize)>,
    first_error: Option<String>,
}

impl Summary {
    fn of(report: &HealthReport) -> Self {
        Summary {
            connections: report.connections.len(),
            report_bytes: report_heap_bytes(report),
            providers: report
                .providers
                .iter()
                .map(|p| {
                    (
                        p.provider.clone(),
                        p.outcome,
                        p.connections,
                        p.elapsed_ms,
                        p.errors.len(),
                    )
                })
                .collect(),
            first_error: report.providers.iter().find_map(|p| {
                p.errors
                    .first()
                    .map(|e| format!("{}: {}", p.provider, e.message))
            }),
        }
    }
}

fn measure(spec: &PointSpec, sims: &mut dyn SimsControl, isolated: bool) -> io::Result<ScaleRow> {
    let endpoints = sims.take_endpoints();
    let aggregator = endpoints.aggregator(spec.concurrency);
    drop(endpoints);
    sims.reset()?;
    let (wall, cpu, summary, before, after, rss_before, rss_peak) = on_fresh_thread(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("bench-client")
            .build()?;
        let rss_before = procfs::current_rss_bytes();
        alloc::reset_peak();
        let before = alloc::snapshot();
        let cpu_before = procfs::cpu_time();
        let started = Instant::now();
        let report = rt.block_on(aggregator.run());
        let wall = started.elapsed();
        let cpu = match (procfs::cpu_time(), cpu_before) {
            (Some(now), Some(then)) => Some((now - then).as_secs_f64() * 1e3),
            _ => None,
        };
        let after = alloc::snapshot();
        let rss_peak = procfs::peak_rss_bytes();
        let summary = Summary::of(&report);
        drop(report);
        drop(aggregator);
        rt.shutdown_timeout(Duration::from_secs(5));
        Ok::<_, io::Error>((wall, cpu, summary, before, after, rss_before, rss_peak))
    })?;
    let stats = sims.stats()?;

    let conns = summary.connections;
    let per_conn = |x: f64| if conns == 0 { 0.0 } else { x / conns as f64 };
    let report_bytes = summary.report_bytes.max(1);
    let heap = match (before, after) {
        (Some(b), Some(a)) => {
            let peak = a.peak_live_bytes.saturating_sub(b.live_bytes);
            Some(HeapFigures {
                allocated_bytes: a.allocated_bytes - b.allocated_bytes,
                allocations: a.allocations - b.allocations,
                bytes_per_connection: per_conn((a.allocated_bytes - b.allocated_bytes) as f64),
                allocations_per_connection: per_conn((a.allocations - b.allocations) as f64),
                peak_bytes: peak,
                peak_over_report: peak as f64 / report_bytes as f64,
            })
        }
        _ => None,
    };
    let providers: Vec<ProviderRow> = summary
        .providers
        .iter()
        .map(|(name, outcome, connections, elapsed_ms, _)| {
            let kind = ProviderKind::from_name(name);
            let counters = kind.map(|k| stats.of(k).clone()).unwrap_or_default();
            ProviderRow {
                provider: name.clone(),
                outcome: *outcome,
                connections: *connections,
                elapsed_ms: *elapsed_ms,
                requests: counters.requests,
                tcp_connections: counters.tcp_connections,
            }
        })
        .collect();
    let error = providers.iter().any(|p| p.outcome != Outcome::Ok).then(|| {
        summary
            .first_error
            .clone()
            .unwrap_or_else(|| "a provider did not answer fully".to_owned())
    });
    let secs = wall.as_secs_f64();
    let requests = stats.requests();
    Ok(ScaleRow {
        customers: spec.customers,
        connections: conns,
        requests,
        wall_ms: secs * 1e3,
        requests_per_sec: if secs > 0.0 {
            requests as f64 / secs
        } else {
            0.0
        },
        us_per_connection: per_conn(secs * 1e6),
        client_cpu_ms: cpu,
        // Below 50 ms the 10 ms resolution of the CPU clock makes a per-connection figure noise.
        client_cpu_us_per_connection: cpu.filter(|&c| c >= 50.0).map(|c| per_conn(c * 1e3)),
        sims_cpu_ms: stats.cpu_ms,
        tcp_connections: stats.tcp_connections(),
        concurrency: spec.concurrency,
        report_bytes: summary.report_bytes,
        rss_before_bytes: rss_before,
        rss_peak_bytes: rss_peak,
        rss_growth_over_report: match (rss_before, rss_peak) {
            (Some(b), Some(p)) => Some(p.saturating_sub(b) as f64 / report_bytes as f64),
            _ => None,
        },
        heap,
        sims_rss_peak_bytes: stats.peak_rss_bytes,
        providers,
        isolated,
        error,
    })
}

/// The heap a report holds: every string's and vector's capacity, plus the vectors' elements.
pub fn report_heap_bytes(report: &HealthReport) -> u64 {
    use std::mem::size_of;
    let s = |v: &String| v.capacity();
    let os = |v: &Option<String>| v.as_ref().map_or(0, String::capacity);
    let ob = |v: &Option<Box<str>>| v.as_ref().map_or(0, |b| b.len());
    // A `ThinVec` keeps its length and capacity in front of its elements, and allocates
    // nothing while it has never held any.
    fn thin<T>(v: &connhealth_core::ThinVec<T>) -> usize {
        if v.capacity() == 0 {
            0
        } else {
            2 * size_of::<usize>() + v.capacity() * size_of::<T>()
        }
    }
    // Each connection is its own shared allocation (`Arc`: two counters and the connection)
    // behind the report's vector of pointers.
    let mut total = report.connections.capacity()
        * size_of::<std::sync::Arc<connhealth_core::Connection>>()
        + report.connections.len()
            * (2 * size_of::<usize>() + size_of::<connhealth_core::Connection>())
        + report.providers.capacity() * size_of::<connhealth_core::ProviderOutcome>();
    for p in &report.providers {
        total += s(&p.provider) + p.errors.capacity() * size_of::<connhealth_core::ReportError>();
        for e in &p.errors {
            total += s(&e.message) + os(&e.customer_id);
        }
    }
    for c in &report.connections {
        total += s(&c.id)
            + s(&c.provider)
            + ob(&c.provider_connection_id)
            + s(&c.customer.id)
            + ob(&c.customer.name)
            + ob(&c.customer.email)
            + s(&c.platform)
            + s(&c.provider_status)
            + c.sync
                .as_ref()
                .map_or(0, |_| size_of::<connhealth_core::SyncProgress>())
            + thin(&c.checks)
            + thin(&c.problems)
            + thin(&c.accounts);
        for k in &c.checks {
            total += s(&k.name) + os(&k.detail);
        }
        for p in &c.problems {
            use connhealth_core::Remediation as R;
            total += s(&p.code) + s(&p.message);
            total += match &p.remediation {
                Some(R::Reauthenticate { url }) | Some(R::Reconnect { url }) => os(url),
                Some(R::GrantScopes { missing }) => {
                    missing.capacity() * size_of::<String>() + missing.iter().map(s).sum::<usize>()
                }
                Some(R::CompleteSetup { step }) => s(step),
                Some(R::ContactProvider { detail }) => s(detail),
                _ => 0,
            };
        }
        for a in &c.accounts {
            total += s(&a.id) + os(&a.name) + os(&a.store_url);
        }
    }
    total as u64
}
