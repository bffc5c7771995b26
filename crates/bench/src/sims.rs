//! The three simulators a benchmark polls: started in this process on a runtime of their own
//! ([`Sims`]), or in a child process (for the scale curve, so that the measuring
//! process holds nothing but the client and its report).

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::time::Duration;

use connhealth_channel3::Channel3;
use connhealth_core::{Aggregator, Secret};
use connhealth_subtotal::Subtotal;
use connhealth_testkit::{Channel3Sim, Fault, Stats, SubtotalSim, VioletSim};
use connhealth_violet::Violet;
use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;

use crate::{child, on_fresh_thread, ProviderKind};

/// What to start: generated customers per simulator (0 = that provider is left out of
/// aggregations), the data seed, and a latency added to every request of every route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimSpec {
    /// Channel3 merchants.
    pub channel3: usize,
    /// Violet merchants.
    pub violet: usize,
    /// Subtotal customers.
    pub subtotal: usize,
    /// Seed of the data generators.
    pub seed: u64,
    /// Latency added to every request, in microseconds (0: none).
    pub latency_us: u64,
}

impl SimSpec {
    /// `customers` of each kind in `providers`, none of the others.
    pub fn uniform(customers: usize, providers: &[ProviderKind], seed: u64) -> Self {
        let n = |k| if providers.contains(&k) { customers } else { 0 };
        SimSpec {
            channel3: n(ProviderKind::Channel3),
            violet: n(ProviderKind::Violet),
            subtotal: n(ProviderKind::Subtotal),
            seed,
            latency_us: 0,
        }
    }

    /// The injected latency.
    pub fn latency(&self) -> Duration {
        Duration::from_micros(self.latency_us)
    }
}

/// How to reach the simulators, and the configuration a client needs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Endpoints {
    /// Channel3 base URL.
    pub channel3_url: String,
    /// Channel3 `x-api-key`.
    pub channel3_key: String,
    /// Violet base URL.
    pub violet_url: String,
    /// Violet app id.
    pub violet_app_id: u64,
    /// Violet app secret.
    pub violet_secret: String,
    /// Violet username.
    pub violet_username: String,
    /// Violet password.
    pub violet_password: String,
    /// Subtotal base URL.
    pub subtotal_url: String,
    /// Subtotal `x-api-key`.
    pub subtotal_key: String,
    /// Subtotal customer ids (Subtotal cannot list customers: they must be configured).
    pub subtotal_customers: Vec<String>,
    /// The sizes the simulators were started with.
    pub spec: Option<SimSpec>,
}

impl Endpoints {
    /// A Channel3 provider that discovers its merchants (List merchants), `concurrency` bound.
    pub fn channel3(&self, concurrency: usize) -> Channel3 {
        Channel3::builder()
            .base_url(&self.channel3_url)
            .api_key(Secret::new(&self.channel3_key))
            .concurrency(concurrency)
            .build()
            .expect("a valid Channel3 configuration")
    }

    /// The Violet provider (one report request per poll; every merchant, public ones included).
    pub fn violet(&self, concurrency: usize) -> Violet {
        Violet::builder()
            .base_url(&self.violet_url)
            .app_id(self.violet_app_id)
            .app_secret(Secret::new(&self.violet_secret))
            .username(&self.violet_username)
            .password(Secret::new(&self.violet_password))
            .exclude_public(false)
            .concurrency(concurrency)
            .build()
            .expect("a valid Violet configuration")
    }

    /// A Subtotal provider over `customers` (all of them when `None`).
    pub fn subtotal(&self, concurrency: usize, customers: Option<&[String]>) -> Subtotal {
        let customers = customers.unwrap_or(&self.subtotal_customers).to_vec();
        Subtotal::builder()
            .base_url(&self.subtotal_url)
            .api_key(Secret::new(&self.subtotal_key))
            .customers(customers)
            .concurrency(concurrency)
            .build()
            .expect("a valid Subtotal configuration")
    }

    /// An aggregator over every provider with customers, each bound to `concurrency`, with a
    /// generous timeout (a benchmark measures, it does not give up).
    pub fn aggregator(&self, concurrency: usize) -> Aggregator {
        let spec = self.spec.clone().unwrap_or(SimSpec {
            channel3: 1,
            violet: 1,
            subtotal: 1,
            seed: 0,
            latency_us: 0,
        });
        let mut agg = Aggregator::new().with_timeout(Duration::from_secs(3600));
        if spec.channel3 > 0 {
            agg = agg.with_provider(self.channel3(concurrency));
        }
        if spec.violet > 0 {
            agg = agg.with_provider(self.violet(concurrency));
        }
        if spec.subtotal > 0 {
            agg = agg.with_provider(self.subtotal(concurrency, None));
        }
        agg
    }
}

/// Request counters of one simulator.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimCounters {
    /// TCP connections its listener accepted.
    pub tcp_connections: u64,
    /// Requests it received.
    pub requests: u64,
    /// Requests per route name.
    pub by_route: BTreeMap<String, u64>,
}

impl SimCounters {
    fn of(stats: &Stats) -> Self {
        SimCounters {
            tcp_connections: stats.tcp_connections(),
            requests: stats.total_requests(),
            by_route: stats.requests_by_route(),
        }
    }
}

/// Counters of all three simulators, and the resident memory of the process serving them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SimStats {
    /// Channel3.
    pub channel3: SimCounters,
    /// Violet.
    pub violet: SimCounters,
    /// Subtotal.
    pub subtotal: SimCounters,
    /// Peak resident set of the simulators' process (bytes), where known.
    pub peak_rss_bytes: Option<u64>,
    /// CPU time the simulators' process used since the last reset, in milliseconds (only when
    /// they run in a process of their own).
    pub cpu_ms: Option<f64>,
}

impl SimStats {
    /// One simulator's counters.
    pub fn of(&self, kind: ProviderKind) -> &SimCounters {
        match kind {
            ProviderKind::Channel3 => &self.channel3,
            ProviderKind::Violet => &self.violet,
            ProviderKind::Subtotal => &self.subtotal,
        }
    }

    /// Requests over all three.
    pub fn requests(&self) -> u64 {
        self.channel3.requests + self.violet.requests + self.subtotal.requests
    }

    /// TCP connections over all three.
    pub fn tcp_connections(&self) -> u64 {
        self.channel3.tcp_connections + self.violet.tcp_connections + self.subtotal.tcp_connections
    }
}

/// The three simulators, served by a multi-thread tokio runtime of their own (so that they
/// keep serving whatever the caller's threads do). Dropping it stops them.
pub struct Sims {
    /// The Channel3 simulator.
    pub channel3: Channel3Sim,
    /// The Violet simulator.
    pub violet: VioletSim,
    /// The Subtotal simulator.
    pub subtotal: SubtotalSim,
    spec: SimSpec,
    runtime: Option<Runtime>,
}

impl std::fmt::Debug for Sims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sims").field("spec", &self.spec).finish()
    }
}

impl Sims {
    /// Generate the data and start the three simulators (a latency rule on every route when
    /// `spec.latency_us > 0`). May be called from anywhere, inside a runtime or not.
    pub fn start(spec: &SimSpec) -> io::Result<Sims> {
        let spec = spec.clone();
        on_fresh_thread(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("bench-sims")
                .build()?;
            let (channel3, violet, subtotal) = runtime.block_on(async {
                let c = Channel3Sim::start_generated(spec.channel3, spec.seed).await?;
                let v = VioletSim::start_generated(spec.violet, spec.seed).await?;
                let s = SubtotalSim::start_generated(spec.subtotal, spec.seed).await?;
                Ok::<_, io::Error>((c, v, s))
            })?;
            let sims = Sims {
                channel3,
                violet,
                subtotal,
                spec,
                runtime: Some(runtime),
            };
            if sims.spec.latency_us > 0 {
                let l = Fault::Latency(sims.spec.latency());
                sims.channel3.faults().on_all(l.clone());
                sims.violet.faults().on_all(l.clone());
                sims.subtotal.faults().on_all(l);
            }
            Ok(sims)
        })
    }

    /// What it was started with.
    pub fn spec(&self) -> &SimSpec {
        &self.spec
    }

    /// How to reach them.
    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            channel3_url: self.channel3.base_url(),
            channel3_key: self.channel3.api_key().to_owned(),
            violet_url: self.violet.base_url(),
            violet_app_id: self.violet.app_id(),
            violet_secret: self.violet.app_secret().to_owned(),
            violet_username: self.violet.username().to_owned(),
            violet_password: self.violet.password().to_owned(),
            subtotal_url: self.subtotal.base_url(),
            subtotal_key: self.subtotal.api_key().to_owned(),
            subtotal_customers: self.subtotal.customer_ids(),
            spec: Some(self.spec.clone()),
        }
    }

    /// Their counters now.
    pub fn stats(&self) -> SimStats {
        SimStats {
            channel3: SimCounters::of(self.channel3.stats()),
            violet: SimCounters::of(self.violet.stats()),
            subtotal: SimCounters::of(self.subtotal.stats()),
            peak_rss_bytes: crate::procfs::peak_rss_bytes(),
            cpu_ms: None,
        }
    }

    /// Zero their counters.
    pub fn reset(&self) {
        self.channel3.stats().reset();
        self.violet.stats().reset();
        self.subtotal.stats().reset();
    }
}

impl Drop for Sims {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The simulators in a child process (this executable, re-invoked with the `sims` role), driven
/// through its stdin/stdout. Dropping it closes the child's stdin, which stops it.
pub(crate) struct ChildSims {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    endpoints: Endpoints,
}

impl ChildSims {
    pub(crate) fn spawn(spec: &SimSpec) -> io::Result<ChildSims> {
        let mut cmd = child::command(child::Role::Sims, &serde_json::to_string(spec)?)?;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(
            child
                .stdout
                .take()
                .ok_or_else(|| io::Error::other("no stdout"))?,
        );
        let mut sims = ChildSims {
            child,
            stdin,
            stdout,
            endpoints: Endpoints::default(),
        };
        sims.endpoints = serde_json::from_str(&sims.expect(child::MARK_SIMS)?)?;
        Ok(sims)
    }

    pub(crate) fn endpoints_mut(&mut self) -> &mut Endpoints {
        &mut self.endpoints
    }

    pub(crate) fn stats(&mut self) -> io::Result<SimStats> {
        self.send("stats")?;
        Ok(serde_json::from_str(&self.expect(child::MARK_STATS)?)?)
    }

    pub(crate) fn reset(&mut self) -> io::Result<()> {
        self.send("reset")?;
        self.expect(child::MARK_OK).map(drop)
    }

    fn send(&mut self, command: &str) -> io::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| io::Error::other("simulator stdin closed"))?;
        writeln!(stdin, "{command}")?;
        stdin.flush()
    }

    /// The payload of the next line starting with `mark` (other lines are skipped: the
    /// executable may print something of its own first).
    fn expect(&mut self, mark: &str) -> io::Result<String> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the simulator process ended without answering",
                ));
            }
            if let Some(rest) = line.strip_prefix(mark) {
                return Ok(rest.trim().to_owned());
            }
        }
    }
}

impl Drop for ChildSims {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if std::time::Instant::now() > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

/// The `sims` role: start the simulators, print their endpoints, then answer `stats` and
/// `reset` on stdin until it closes.
pub(crate) fn serve(spec: &SimSpec) -> io::Result<()> {
    let sims = Sims::start(spec)?;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "{} {}",
        child::MARK_SIMS,
        serde_json::to_string(&sims.endpoints())?
    )?;
    out.flush()?;
    let mut cpu_at_reset = crate::procfs::cpu_time();
    for line in io::stdin().lock().lines() {
        match line?.trim() {
            "stats" => {
                let mut stats = sims.stats();
                stats.cpu_ms = match (crate::procfs::cpu_time(), cpu_at_reset) {
                    (Some(now), Some(then)) => Some((now - then).as_secs_f64() * 1e3),
                    _ => None,
                };
                writeln!(
                    out,
                    "{} {}",
                    child::MARK_STATS,
                    serde_json::to_string(&stats)?
                )?
            }
            "reset" => {
                sims.reset();
                cpu_at_reset = crate::procfs::cpu_time();
                writeln!(out, "{}", child::MARK_OK)?;
            }
            "quit" => break,
            other => writeln!(out, "{} unknown command {other:?}", child::MARK_ERR)?,
        }
        out.flush()?;
    }
    Ok(())
}
