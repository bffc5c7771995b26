//! The store's benchmarks (issue 17), as one bench binary: `cargo bench -p connhealth-store`.
//!
//! 1. The first poll of the 10,000-customer fleet (≈185,000 connections, polled for real from
//!    the testkit simulators) written to SQLite (target ≤ 3 s).
//! 2. A steady poll with 1 % of connections changed: its store cost (record + commit) against
//!    the poll's own wall time (target ≤ 10 %).
//! 3. 10 million events stored (bulk, through `commit_poll`, time stated), then one
//!    connection's history: p50/p99 over 2,000 random connections (target p99 ≤ 5 ms).
//! 4. Uptime by provider over 30 days at 185,000 connections, from the roll-ups (target
//!    ≤ 200 ms); by customer for comparison.
//! 5. Store size per stored event.
//!
//! `STORE_BENCH_EVENTS` overrides the 10,000,000; `STORE_BENCH_CUSTOMERS` the 10,000. The
//! databases go to `target/store-bench/` and are removed at the end (`STORE_BENCH_KEEP=1`
//! keeps them). Figures are printed and written to `target/store-bench/latest.json`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use connhealth_bench::procfs::cpu_time;
use connhealth_bench::sims::{SimSpec, Sims};
use connhealth_bench::ProviderKind;
use connhealth_core::diff::{connection_changes, Change, ChangeKind};
use connhealth_core::watch::WatchState;
use connhealth_core::{Status, WatchConfig, Watcher};
use connhealth_store::*;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

/// The next state with 1 % of the connections (every 100th from `round`) flipped between
/// degraded and healthy, their changes and ids; every connection observed again at `at`.
fn one_percent_changed(
    prev: &WatchState,
    round: usize,
    at: chrono::DateTime<Utc>,
) -> (WatchState, Vec<Change>, Vec<String>) {
    let mut next = prev.clone();
    let mut changes = Vec::new();
    let ids: Vec<String> = next
        .connections
        .keys()
        .skip(round)
        .step_by(100)
        .cloned()
        .collect();
    for id in &ids {
        let t = next.connections.get_mut(id).unwrap();
        let old = t.connection.clone();
        // A fresh allocation, as a poll's answer is (the old one is shared with `prev`).
        let c = std::sync::Arc::make_mut(&mut t.connection);
        c.status = if old.status == Status::Degraded {
            Status::Healthy
        } else {
            Status::Degraded
        };
        c.observed_at = at.into();
        changes.extend(connection_changes(&old, &t.connection, at, Some(t.since)));
        t.since = at;
    }
    // Every other connection was observed again (observed_at moves every poll).
    for t in next.connections.values_mut() {
        std::sync::Arc::make_mut(&mut t.connection).observed_at = at.into();
    }
    (next, changes, ids)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(run());
}

async fn run() {
    let customers = env_num("STORE_BENCH_CUSTOMERS", 10_000);
    let n_events = env_num("STORE_BENCH_EVENTS", 10_000_000);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/store-bench");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["poll.db", "history.db"] {
        for suffix in ["", "-wal", "-shm", ".lock"] {
            let _ = std::fs::remove_file(dir.join(format!("{f}{suffix}")));
        }
    }
    let mut out = serde_json::Map::new();

    // The fleet, polled for real.
    let sims = Sims::start(&SimSpec::uniform(customers, &ProviderKind::ALL, 17)).unwrap();
    let ep = sims.endpoints();
    let mut watcher = Watcher::new(WatchConfig {
        timeout: Duration::from_secs(3600),
        ..WatchConfig::default()
    });
    watcher.add(Arc::new(ep.channel3(64)), None);
    watcher.add(Arc::new(ep.violet(64)), None);
    watcher.add(Arc::new(ep.subtotal(64, None)), None);
    let t = Instant::now();
    let poll1 = watcher.poll().await;
    let poll1_wall = t.elapsed();
    let state1 = watcher.state().clone();
    let n_conn = state1.connections.len();
    println!(
        "fleet: {customers} customers per provider, {n_conn} connections, first poll {:.0} ms",
        ms(poll1_wall)
    );

    // 1. The first poll written.
    let store = SqliteStore::open(&dir.join("poll.db"), &OpenOptions::default())
        .await
        .unwrap();
    let t = Instant::now();
    let rec = PollRecord::between(
        poll1.report.generated_at,
        &WatchState::default(),
        &state1,
        poll1.report.providers.clone(),
        poll1.changes.clone(),
        Source::Poll,
    );
    let record_first = t.elapsed();
    let t = Instant::now();
    let cpu0 = cpu_time();
    let ids = store.commit_poll(rec).await.unwrap();
    let commit_first = t.elapsed();
    let commit_first_cpu = cpu_time().zip(cpu0).map(|(b, a)| b.saturating_sub(a));
    let first_total = record_first + commit_first;
    println!(
        "first poll written: {} events, {} connections: record {:.0} ms + commit {:.0} ms = {:.0} ms (target ≤ 3000 ms: ratio {:.2}); the commit's CPU time {:.0} ms",
        ids.len(),
        n_conn,
        ms(record_first),
        ms(commit_first),
        ms(first_total),
        ms(first_total) / 3000.0,
        commit_first_cpu.map(ms).unwrap_or(f64::NAN)
    );

    // 2. Steady polls: the poll's wall time, and the store cost of one with 1 % changed.
    let mut walls = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let p = watcher.poll().await;
        walls.push(t.elapsed());
        assert!(p.changes.is_empty(), "the simulators' data did not change");
    }
    let steady_wall = percentile(walls.clone(), 0.5);
    let mut prev = watcher.state().clone();
    let mut costs = Vec::new();
    let mut commits = Vec::new();
    let mut commit_cpus = Vec::new();
    for round in 0..5 {
        let at = Utc::now();
        let (next, changes, ids) = one_percent_changed(&prev, round, at);
        let t = Instant::now();
        let rec = PollRecord::between(at, &prev, &next, vec![], changes, Source::Poll);
        let record = t.elapsed();
        assert_eq!(rec.upserts.len(), ids.len());
        let t = Instant::now();
        let cpu0 = cpu_time();
        store.commit_poll(rec).await.unwrap();
        commits.push(t.elapsed());
        if let (Some(a), Some(b)) = (cpu0, cpu_time()) {
            commit_cpus.push(b.saturating_sub(a));
        }
        costs.push(record + t.elapsed());
        prev = next;
    }
    let steady_cost = percentile(costs, 0.5);
    let steady_commit = percentile(commits, 0.5);
    let steady_commit_cpu = (!commit_cpus.is_empty()).then(|| percentile(commit_cpus, 0.5));
    println!(
        "steady poll: wall {:.0} ms (median of 3); 1 % changed ({} connections): store cost {:.0} ms (record + commit; commit alone {:.0} ms, its CPU {:.0} ms) = {:.1} % of the poll (target ≤ 10 %)",
        ms(steady_wall),
        n_conn / 100,
        ms(steady_cost),
        ms(steady_commit),
        steady_commit_cpu.map(ms).unwrap_or(f64::NAN),
        100.0 * steady_cost.as_secs_f64() / steady_wall.as_secs_f64()
    );
    // 3. The same steady rounds through the Journal (the watcher integration of serve and
    //    watch: PollRecord::between against its own copy, the copy updated, the commit).
    let store = Arc::new(store);
    let (mut journal, loaded) = Journal::load(store.clone(), JournalOptions::default())
        .await
        .unwrap();
    let mut prev = loaded;
    let mut journal_costs = Vec::new();
    for round in 10..15 {
        let at = Utc::now();
        let (next, changes, _) = one_percent_changed(&prev, round, at);
        let t = Instant::now();
        let w = journal
            .record(at, &next, vec![], changes, Source::Poll)
            .await;
        journal_costs.push(t.elapsed());
        assert!(w.error.is_none(), "{:?}", w.error);
        prev = next;
    }
    let journal_cost = percentile(journal_costs, 0.5);
    println!(
        "steady poll through the Journal (watcher integration), 1 % changed: {:.0} ms = {:.1} % of the poll's {:.0} ms (target ≤ 10 %: ratio {:.2})",
        ms(journal_cost),
        100.0 * journal_cost.as_secs_f64() / steady_wall.as_secs_f64(),
        ms(steady_wall),
        journal_cost.as_secs_f64() / steady_wall.as_secs_f64() / 0.10
    );
    out.insert(
        "steady_1pct_journal_ms".into(),
        serde_json::json!(ms(journal_cost)),
    );
    drop(sims);
    out.insert(
        "first_poll_commit_cpu_ms".into(),
        serde_json::json!(commit_first_cpu.map(ms)),
    );
    out.insert(
        "steady_1pct_commit_cpu_ms".into(),
        serde_json::json!(steady_commit_cpu.map(ms)),
    );
    if n_events == 0 {
        std::fs::write(
            dir.join("latest-poll.json"),
            serde_json::to_string_pretty(&out).unwrap(),
        )
        .unwrap();
        return;
    }

    // 3. 10 M events.
    let hist = SqliteStore::open(&dir.join("history.db"), &OpenOptions::default())
        .await
        .unwrap();
    let start = Utc::now() - chrono::Duration::days(31);
    let mut first = PollRecord::between(
        start,
        &WatchState::default(),
        &state1,
        vec![],
        vec![],
        Source::Poll,
    );
    for t in &mut first.upserts {
        t.since = start;
    }
    hist.commit_poll(first).await.unwrap();
    let conns: Vec<_> = state1
        .connections
        .values()
        .map(|t| t.connection.clone())
        .collect();
    let batches = 100usize;
    let per = n_events / batches;
    let span = chrono::Duration::days(30);
    let t_gen = Instant::now();
    let mut rng = fastrand::Rng::with_seed(17);
    for b in 0..batches {
        let at = start + span * (b as i32 + 1) / batches as i32;
        let mut rec = PollRecord {
            at,
            ..PollRecord::default()
        };
        rec.events.reserve(per);
        for i in 0..per {
            let c = &conns[rng.usize(..conns.len())];
            let (from, to) = if i % 2 == 0 {
                (Status::Healthy, Status::Degraded)
            } else {
                (Status::Degraded, Status::Healthy)
            };
            rec.events.push(NewEvent::new(
                Change::about(c, ChangeKind::StatusChanged { from, to }, at, Some(at)),
                Source::Poll,
            ));
        }
        hist.commit_poll(rec).await.unwrap();
    }
    let gen = t_gen.elapsed();
    let stored = per * batches;
    println!(
        "generated {stored} events in {:.1} s ({:.0} events/s, through commit_poll, 100 transactions)",
        gen.as_secs_f64(),
        stored as f64 / gen.as_secs_f64()
    );
    let mut lat = Vec::new();
    let mut rng = fastrand::Rng::with_seed(5);
    for _ in 0..2000 {
        let id = &conns[rng.usize(..conns.len())].id;
        let t = Instant::now();
        let page = hist.history(id, None, 50).await.unwrap();
        lat.push(t.elapsed());
        std::hint::black_box(page);
    }
    let (p50, p99) = (percentile(lat.clone(), 0.5), percentile(lat, 0.99));
    println!(
        "history (50 newest of one connection, {stored} events stored): p50 {:.2} ms, p99 {:.2} ms (target p99 ≤ 5 ms: ratio {:.2})",
        ms(p50),
        ms(p99),
        ms(p99) / 5.0
    );

    // 4. Uptime over 30 days.
    let q = |by| UptimeQuery {
        window: Window::Month,
        by,
        provider: vec![],
        customer: vec![],
    };
    let mut up = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let r = hist.uptime(&q(GroupBy::Provider)).await.unwrap();
        up.push(t.elapsed());
        assert_eq!(r.items.len(), 3);
    }
    let up_p50 = percentile(up.clone(), 0.5);
    let up_max = percentile(up, 1.0);
    let t = Instant::now();
    let by_customer = hist.uptime(&q(GroupBy::Customer)).await.unwrap();
    let up_customer = t.elapsed();
    println!(
        "uptime by provider, 30 d, {n_conn} connections: p50 {:.2} ms, max {:.2} ms (target ≤ 200 ms: ratio {:.3}); by customer ({} keys): {:.0} ms",
        ms(up_p50),
        ms(up_max),
        ms(up_max) / 200.0,
        by_customer.items.len(),
        ms(up_customer)
    );

    // 5. Size per event.
    let (pages, page_size) = hist.page_stats().await.unwrap();
    let bytes = pages * page_size;
    let (p_pages, _) = store.page_stats().await.unwrap();
    println!(
        "size: {:.2} GB for {stored} events + {n_conn} connections + 30 d of roll-ups = {:.0} bytes per event; the first-poll store is {:.0} MB ({:.0} bytes per connection with its appeared event)",
        bytes as f64 / 1e9,
        bytes as f64 / stored as f64,
        (p_pages * page_size) as f64 / 1e6,
        (p_pages * page_size) as f64 / n_conn as f64
    );

    for (k, v) in [
        ("customers_per_provider", serde_json::json!(customers)),
        ("connections", serde_json::json!(n_conn)),
        ("first_poll_wall_ms", serde_json::json!(ms(poll1_wall))),
        ("first_poll_record_ms", serde_json::json!(ms(record_first))),
        ("first_poll_commit_ms", serde_json::json!(ms(commit_first))),
        ("steady_poll_wall_ms", serde_json::json!(ms(steady_wall))),
        (
            "steady_1pct_store_cost_ms",
            serde_json::json!(ms(steady_cost)),
        ),
        (
            "steady_1pct_commit_ms",
            serde_json::json!(ms(steady_commit)),
        ),
        ("events", serde_json::json!(stored)),
        ("events_generation_s", serde_json::json!(gen.as_secs_f64())),
        ("history_p50_ms", serde_json::json!(ms(p50))),
        ("history_p99_ms", serde_json::json!(ms(p99))),
        ("uptime_provider_30d_p50_ms", serde_json::json!(ms(up_p50))),
        ("uptime_provider_30d_max_ms", serde_json::json!(ms(up_max))),
        ("uptime_customer_30d_ms", serde_json::json!(ms(up_customer))),
        (
            "bytes_per_event",
            serde_json::json!(bytes as f64 / stored as f64),
        ),
    ] {
        out.insert(k.into(), v);
    }
    std::fs::write(
        dir.join("latest.json"),
        serde_json::to_string_pretty(&out).unwrap(),
    )
    .unwrap();
    drop(store);
    drop(hist);
    if std::env::var("STORE_BENCH_KEEP").as_deref() != Ok("1") {
        for f in ["poll.db", "history.db"] {
            for suffix in ["", "-wal", "-shm", ".lock"] {
                let _ = std::fs::remove_file(dir.join(format!("{f}{suffix}")));
            }
        }
    }
}
