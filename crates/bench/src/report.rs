//! [`BenchOptions`] in, [`BenchReport`] out: the table and the JSON files.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::e2e::{E2eOptions, E2eReport};
use crate::scale::{ScaleOptions, ScaleRow};

/// What [`crate::run_bench`] runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BenchOptions {
    /// The scale curve (family 3); it always runs.
    pub scale: ScaleOptions,
    /// Families 1 and 2 with plain timers (a few minutes on two cores); `None` skips them.
    pub families: Option<E2eOptions>,
}

impl Default for BenchOptions {
    /// The full curve (100 → 100,000 customers), isolated; no families.
    fn default() -> Self {
        BenchOptions {
            scale: ScaleOptions::default(),
            families: None,
        }
    }
}

impl BenchOptions {
    /// The curve without its 100,000 point (seconds instead of about a minute).
    pub fn quick() -> Self {
        let mut o = BenchOptions::default();
        o.scale.customers.retain(|&n| n <= 10_000);
        o
    }
}

/// The machine a report was measured on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// Logical CPUs available to this process.
    pub cpus: usize,
    /// CPU model (`/proc/cpuinfo`), where known.
    pub cpu_model: Option<String>,
    /// Total memory in bytes (`/proc/meminfo`), where known.
    pub memory_bytes: Option<u64>,
    /// `linux`, `macos`…
    pub os: String,
    /// Load average (1, 5, 15 minutes) when the run started, where known: the machine is
    /// shared, and figures taken under load say so here.
    pub load_average: Option<[f64; 3]>,
}

impl Machine {
    /// This machine.
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let l: Vec<f64> = load
            .split_whitespace()
            .take(3)
            .filter_map(|x| x.parse().ok())
            .collect();
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: cpuinfo
                .lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned()),
            memory_bytes: meminfo
                .lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
                .map(|k| k * 1024),
            os: std::env::consts::OS.to_owned(),
            load_average: (l.len() == 3).then(|| [l[0], l[1], l[2]]),
        }
    }
}

/// Everything one run of the benchmarks measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// When it ran (seconds since the Unix epoch).
    pub unix_time: u64,
    /// `git rev-parse --short HEAD` of the working directory, `+dirty` when it has changes.
    pub git_commit: Option<String>,
    /// Where it ran.
    pub machine: Machine,
    /// What ran.
    pub options: BenchOptions,
    /// The scale curve.
    pub scale: Vec<ScaleRow>,
    /// Families 1 and 2, when asked for.
    pub families: Option<E2eReport>,
}

fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let mut commit = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .is_some_and(|o| !o.stdout.is_empty());
    if dirty {
        commit.push_str("+dirty");
    }
    Some(commit)
}

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl BenchReport {
    pub(crate) fn new(
        options: BenchOptions,
        scale: Vec<ScaleRow>,
        families: Option<E2eReport>,
    ) -> Self {
        BenchReport {
            unix_time: now_unix(),
            git_commit: git_commit(),
            machine: Machine::detect(),
            options,
            scale,
            families,
        }
    }

    /// Whether every measurement completed (no row with an error).
    pub fn is_ok(&self) -> bool {
        self.scale.iter().all(|r| r.error.is_none())
            && self.families.as_ref().is_none_or(|f| f.errors.is_empty())
    }

    /// The human-readable tables (what `connhealth-bench` prints).
    pub fn table(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(
            out,
            "machine: {} CPUs ({}), {} memory, {}{}{}",
            m.cpus,
            m.cpu_model.as_deref().unwrap_or("unknown CPU"),
            m.memory_bytes.map_or("unknown".into(), mib_or_gib),
            m.os,
            m.load_average.map_or(String::new(), |l| format!(
                ", load {:.2} {:.2} {:.2}",
                l[0], l[1], l[2]
            )),
            self.git_commit
                .as_deref()
                .map_or(String::new(), |c| format!(", commit {c}")),
        );
        if let Some(f) = &self.families {
            out.push('\n');
            out.push_str(&families_table(f));
        }
        out.push('\n');
        out.push_str(&scale_table(&self.options.scale, &self.scale));
        out
    }

    /// Write `scale-<unix time>.json` and `latest.json` into `dir` (created if missing);
    /// returns the path of the first.
    pub fn write_json(&self, dir: impl AsRef<Path>) -> io::Result<PathBuf> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_vec_pretty(self)?;
        let path = dir.join(format!("scale-{}.json", self.unix_time));
        std::fs::write(&path, &json)?;
        std::fs::write(dir.join("latest.json"), &json)?;
        Ok(path)
    }

    /// Read a report written by [`BenchReport::write_json`].
    pub fn load(path: impl AsRef<Path>) -> io::Result<BenchReport> {
        Ok(serde_json::from_slice(&std::fs::read(path)?)?)
    }

    /// How the scale curve moved against `previous` (points matched by customer count).
    pub fn compare(&self, previous: &BenchReport) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "against {} ({}):",
            previous.git_commit.as_deref().unwrap_or("an earlier run"),
            previous.unix_time
        );
        let _ = writeln!(
            out,
            "{:>9} {:>16} {:>18} {:>16}",
            "customers", "wall", "alloc B/conn", "RSS peak"
        );
        for row in &self.scale {
            let Some(old) = previous
                .scale
                .iter()
                .find(|r| r.customers == row.customers && r.error.is_none())
            else {
                continue;
            };
            let delta = |new: f64, old: f64| {
                if old > 0.0 {
                    format!("{:+.1}%", (new / old - 1.0) * 100.0)
                } else {
                    "n/a".into()
                }
            };
            let b = |r: &ScaleRow| r.heap.as_ref().map_or(0.0, |h| h.bytes_per_connection);
            let rss = |r: &ScaleRow| r.rss_peak_bytes.unwrap_or(0) as f64;
            let _ = writeln!(
                out,
                "{:>9} {:>16} {:>18} {:>16}",
                thousands(row.customers as u64),
                delta(row.wall_ms, old.wall_ms),
                delta(b(row), b(old)),
                delta(rss(row), rss(old)),
            );
        }
        out
    }
}

fn mib(b: u64) -> String {
    format!("{:.1}", b as f64 / 1048576.0)
}

fn mib_or_gib(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
    } else {
        format!("{} MiB", mib(b))
    }
}

/// `12,345`.
pub(crate) fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn percent(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "n/a".to_owned(), f)
}

/// The scale curve's table.
pub fn scale_table(opts: &ScaleOptions, rows: &[ScaleRow]) -> String {
    let mut out = String::new();
    let names: Vec<&str> = opts.providers.iter().map(|p| p.as_str()).collect();
    let _ = writeln!(
        out,
        "scale curve: one aggregation of {} per point; concurrency {} per provider; latency {} ms; {}",
        names.join(" + "),
        opts.concurrency,
        opts.latency_ms,
        if opts.isolate {
            "each point in a fresh process, simulators in another"
        } else {
            "in this process (memory figures include the simulators)"
        }
    );
    let _ = writeln!(
        out,
        "{:>9} {:>11} {:>9} {:>9} {:>8} {:>8} {:>9} {:>8} {:>9}",
        "customers",
        "connections",
        "requests",
        "wall ms",
        "req/s",
        "wall µs",
        "client",
        "sims CPU",
        "TCP"
    );
    let _ = writeln!(
        out,
        "{:>9} {:>11} {:>9} {:>9} {:>8} {:>8} {:>9} {:>8} {:>9}",
        "", "", "", "", "", "/conn", "CPU µs/c", "ms", "connects"
    );
    for r in rows {
        if let (Some(e), 0) = (&r.error, r.connections) {
            let _ = writeln!(out, "{:>9} failed: {e}", thousands(r.customers as u64));
            continue;
        }
        let _ = writeln!(
            out,
            "{:>9} {:>11} {:>9} {:>9.1} {:>8} {:>8.2} {:>9} {:>8} {:>9}",
            thousands(r.customers as u64),
            thousands(r.connections as u64),
            thousands(r.requests),
            r.wall_ms,
            thousands(r.requests_per_sec.round() as u64),
            r.us_per_connection,
            opt(r.client_cpu_us_per_connection, |x| format!("{x:.2}")),
            opt(r.sims_cpu_ms, |x| format!("{x:.0}")),
            thousands(r.tcp_connections),
        );
        if let Some(e) = &r.error {
            let _ = writeln!(out, "{:>9} warning: {e}", "");
        }
    }
    let _ = writeln!(
        out,
        "{:>9} {:>9} {:>7} {:>9} {:>9} {:>7} {:>9} {:>9} {:>9}",
        "customers",
        "B alloc'd",
        "allocs",
        "report",
        "heap peak",
        "peak/",
        "RSS before",
        "RSS peak",
        "RSS grow/"
    );
    let _ = writeln!(
        out,
        "{:>9} {:>9} {:>7} {:>9} {:>9} {:>7} {:>9} {:>9} {:>9}",
        "", "/conn", "/conn", "MiB", "MiB", "report", "MiB", "MiB", "report"
    );
    for r in rows.iter().filter(|r| r.connections > 0) {
        let h = r.heap.as_ref();
        let _ = writeln!(
            out,
            "{:>9} {:>9} {:>7} {:>9} {:>9} {:>7} {:>9} {:>9} {:>9}",
            thousands(r.customers as u64),
            opt(h, |h| thousands(h.bytes_per_connection.round() as u64)),
            opt(h, |h| format!("{:.1}", h.allocations_per_connection)),
            mib(r.report_bytes),
            opt(h, |h| mib(h.peak_bytes)),
            opt(h, |h| format!("{:.2}", h.peak_over_report)),
            opt(r.rss_before_bytes, mib),
            opt(r.rss_peak_bytes, mib),
            opt(r.rss_growth_over_report, |x| format!("{x:.2}")),
        );
    }
    // Linearity: cost per connection against the first complete point of at least 1,000.
    let base = rows
        .iter()
        .find(|r| r.error.is_none() && r.customers >= 1_000)
        .or_else(|| rows.iter().find(|r| r.error.is_none()));
    if let Some(base) = base {
        let _ = write!(
            out,
            "linearity (per connection, against {} customers): time",
            thousands(base.customers as u64)
        );
        for r in rows.iter().filter(|r| r.error.is_none()) {
            let _ = write!(
                out,
                " {}={:.2}",
                thousands(r.customers as u64),
                r.us_per_connection / base.us_per_connection
            );
        }
        if let Some(bc) = base.client_cpu_us_per_connection {
            let _ = write!(out, "; client CPU");
            for r in rows.iter().filter(|r| r.error.is_none()) {
                if let Some(c) = r.client_cpu_us_per_connection {
                    let _ = write!(out, " {}={:.2}", thousands(r.customers as u64), c / bc);
                }
            }
        }
        if let Some(bh) = &base.heap {
            let _ = write!(out, "; bytes allocated");
            for r in rows.iter().filter(|r| r.error.is_none()) {
                if let Some(h) = &r.heap {
                    let _ = write!(
                        out,
                        " {}={:.2}",
                        thousands(r.customers as u64),
                        h.bytes_per_connection / bh.bytes_per_connection
                    );
                }
            }
        }
        out.push('\n');
    }
    // Per-provider detail.
    let _ = writeln!(
        out,
        "per provider (connections / requests / TCP connects / elapsed ms):"
    );
    for r in rows.iter().filter(|r| !r.providers.is_empty()) {
        let parts: Vec<String> = r
            .providers
            .iter()
            .map(|p| {
                format!(
                    "{} {}/{}/{}/{}",
                    p.provider,
                    thousands(p.connections as u64),
                    thousands(p.requests),
                    p.tcp_connections,
                    p.elapsed_ms
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "{:>9}  {}",
            thousands(r.customers as u64),
            parts.join("  ")
        );
    }
    out
}

/// Families 1 and 2 as tables.
pub fn families_table(f: &E2eReport) -> String {
    let mut out = String::new();
    if let Some(a) = &f.family1 {
        let _ = writeln!(
            out,
            "family 1: three providers together vs each alone (latency {} ms on every route, concurrency {}; median of {})",
            a.latency_ms, a.concurrency, f.options.runs
        );
        let _ = writeln!(
            out,
            "{:>10} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "", "connections", "requests", "wall ms", "ideal ms", "/ideal", "CPU busy"
        );
        for r in &a.rows {
            let _ = writeln!(
                out,
                "{:>10} {:>11} {:>9} {:>9.1} {:>9.1} {:>9.3} {:>9}",
                r.name,
                thousands(r.connections as u64),
                thousands(r.requests),
                r.wall_ms,
                r.ideal_ms,
                r.ratio_vs_ideal,
                opt(r.cpu_busy, percent)
            );
        }
        let _ = writeln!(
            out,
            "aggregate / slowest alone ({}) = {:.3} (target <= 1.05)",
            a.slowest, a.ratio
        );
    }
    if !f.family2.is_empty() {
        let _ = writeln!(
            out,
            "\nfamily 2: fan-out efficiency, wall / (ceil(requests / concurrency) x latency) (target <= 1.10; median of {})",
            f.options.runs
        );
        let _ = writeln!(
            out,
            "{:>11} {:>11} {:>8} {:>10} {:>9} {:>9} {:>7} {:>9} {:>5} {:>9}",
            "provider",
            "concurrency",
            "requests",
            "latency",
            "ideal ms",
            "wall ms",
            "ratio",
            "in flight",
            "TCP",
            "CPU busy"
        );
        for r in &f.family2 {
            let _ = writeln!(
                out,
                "{:>11} {:>11} {:>8} {:>8}ms {:>9.1} {:>9.1} {:>7.3} {:>9} {:>5} {:>9}",
                r.provider,
                r.concurrency,
                thousands(r.requests as u64),
                r.latency_ms,
                r.ideal_ms,
                r.wall_ms,
                r.ratio,
                r.max_in_flight,
                r.tcp_connections,
                opt(r.cpu_busy, percent)
            );
        }
    }
    for e in &f.errors {
        let _ = writeln!(out, "error: {e}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
