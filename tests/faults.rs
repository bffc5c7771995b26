//! The fault matrix: every fault the testkit can inject, on every provider, during a full
//! three-provider aggregation over real HTTP on loopback (tokio's paused clock, so hangs,
//! backoffs and `Retry-After` cost no wall time).
//!
//! Each row states the expected outcome from the rules in ARCHITECTURE.md and `connhealth_core::http`
//! (retry only transient failures of safe requests, at most `max_attempts`; `decode` /
//! `too_large` are never retried; a hang is bounded by the provider timeout) and checks:
//! - nothing panicked (no `panicked` error anywhere);
//! - the two other providers' connections equal a fault-free baseline (ignoring `observed_at`)
//!   and their outcome is `ok`;
//! - the faulty provider's outcome and error kinds are the expected ones;
//! - the simulator saw exactly the expected number of requests (retries within their caps);
//! - the report is well-formed: roll-up rule, problems for every non-ok status, sorted unique
//!   ids, summary and per-provider counts consistent, JSON round trip.
//!
//! Run with `--nocapture` to print the fault → outcome table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use connhealth::simulators;
use connhealth::{Aggregator, Connection, ErrorKind, HealthReport, Outcome, Status};
use connhealth_testkit::{channel3 as c3sim, subtotal as stsim, violet as vsim};
use connhealth_testkit::{Fault, FaultRule, Fleet};

const SEED: u64 = 2024;
const CUSTOMERS: usize = 10;
/// The adapters' body cap in this test (every fault-free body is far below it).
const BODY_CAP: usize = 256 * 1024;
/// The per-provider timeout that bounds a hang.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(30);
/// Core's default `RetryPolicy::max_attempts`.
const MAX_ATTEMPTS: u64 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum P {
    Channel3,
    Violet,
    Subtotal,
}

impl P {
    const ALL: [P; 3] = [P::Channel3, P::Violet, P::Subtotal];

    fn name(self) -> &'static str {
        match self {
            P::Channel3 => "channel3",
            P::Violet => "violet",
            P::Subtotal => "subtotal",
        }
    }

    /// The route a poll reads its data from.
    fn data_route(self) -> &'static str {
        match self {
            P::Channel3 => c3sim::LIST_CONNECTIONS,
            P::Violet => vsim::CONNECTION_HEALTH,
            P::Subtotal => stsim::LIST_CONNECTIONS,
        }
    }

    /// Data requests of one fault-free poll: one per customer, or Violet's one report.
    fn units(self) -> u64 {
        match self {
            P::Violet => 1,
            _ => CUSTOMERS as u64,
        }
    }
}

/// Requests the simulator must have seen on the row's route.
#[derive(Debug, Clone, Copy)]
enum Req {
    /// `units × n` (e.g. every customer tried `max_attempts` times).
    PerUnit(u64),
    /// `units + n` (a burst of `n` failures, each retried once).
    Plus(u64),
    /// Exactly `n`.
    Exactly(u64),
}

impl Req {
    fn expected(self, p: P) -> u64 {
        match self {
            Req::PerUnit(n) => p.units() * n,
            Req::Plus(n) => p.units() + n,
            Req::Exactly(n) => n,
        }
    }
}

/// What the faulty provider's connections must look like.
#[derive(Debug, Clone)]
enum Conns {
    /// Equal to the baseline (ignoring `observed_at`).
    Baseline,
    /// None at all.
    Empty,
    /// The baseline minus one customer's connections.
    BaselineWithout(String),
    /// As many as the baseline, each with an `unrecognized_value` problem and status ≥ unknown.
    AllUnrecognized,
    /// The baseline's ids and statuses (other fields may differ).
    SameIdsAndStatuses,
    /// The baseline's ids.
    SameIds,
    /// As many as the baseline.
    SameCount,
}

impl Conns {
    fn label(&self) -> &'static str {
        match self {
            Conns::Baseline => "= baseline",
            Conns::Empty => "none",
            Conns::BaselineWithout(_) => "= baseline minus the failing customer",
            Conns::AllUnrecognized => "all ≥ unknown with `unrecognized_value`",
            Conns::SameIdsAndStatuses => "same ids and statuses",
            Conns::SameIds => "same ids",
            Conns::SameCount => "same count",
        }
    }
}

struct Row {
    provider: P,
    route: &'static str,
    fault: String,
    rules: Vec<FaultRule>,
    outcome: Outcome,
    kinds: Vec<ErrorKind>,
    requests: Req,
    conns: Conns,
}

fn row(p: P, fault: &str, rule: FaultRule, outcome: Outcome, kinds: &[ErrorKind]) -> Row {
    Row {
        provider: p,
        route: p.data_route(),
        fault: fault.to_owned(),
        rules: vec![rule.route(p.data_route())],
        outcome,
        kinds: kinds.to_vec(),
        requests: Req::PerUnit(1),
        conns: if outcome == Outcome::Ok {
            Conns::Baseline
        } else {
            Conns::Empty
        },
    }
}

impl Row {
    fn requests(mut self, r: Req) -> Self {
        self.requests = r;
        self
    }
    fn conns(mut self, c: Conns) -> Self {
        self.conns = c;
        self
    }
    fn on_route(mut self, route: &'static str) -> Self {
        self.route = route;
        for r in &mut self.rules {
            r.route = Some(route.to_owned());
        }
        self
    }
}

fn status_with_retry_after(code: u16, secs: u64) -> Fault {
    Fault::Status {
        status: code,
        retry_after: Some(secs.to_string()),
        body: None,
    }
}

/// The matrix. Expected outcomes are written out from the rules, not observed.
fn matrix(fleet: &Fleet) -> Vec<Row> {
    use ErrorKind as K;
    use Outcome::{Failed, Ok, Partial, TimedOut};
    let mut rows = Vec::new();
    for p in P::ALL {
        let f = FaultRule::new;
        rows.extend([
            // Slow but answering: nothing changes.
            row(
                p,
                "latency 2 s",
                f(Fault::Latency(Duration::from_secs(2))),
                Ok,
                &[],
            ),
            row(
                p,
                "latency 1-3 s (uniform)",
                f(Fault::LatencyBetween(
                    Duration::from_secs(1),
                    Duration::from_secs(3),
                )),
                Ok,
                &[],
            ),
            // Slower than the provider timeout: the same as a hang.
            row(
                p,
                "latency 60 s (> 30 s provider timeout)",
                f(Fault::Latency(Duration::from_secs(60))),
                TimedOut,
                &[K::Timeout],
            ),
            // Never answers: bounded by the provider timeout, nothing arrived.
            row(p, "hang", f(Fault::Hang), TimedOut, &[K::Timeout]),
            // One 429 with Retry-After: waited for, retried once, then fine.
            row(
                p,
                "429 + Retry-After: 1, once",
                f(Fault::too_many_requests(1)).times(1),
                Ok,
                &[],
            )
            .requests(Req::Plus(1)),
            // 429 forever: every request tries max_attempts times, then rate_limited.
            row(
                p,
                "429 + Retry-After: 1, always",
                f(Fault::too_many_requests(1)),
                Failed,
                &[K::RateLimited],
            )
            .requests(Req::PerUnit(MAX_ATTEMPTS)),
            // 5xx bursts of two: retried (backoff, or Retry-After for 503), then fine.
            row(p, "500 burst of 2", f(Fault::status(500)).times(2), Ok, &[])
                .requests(Req::Plus(2)),
            row(p, "502 burst of 2", f(Fault::status(502)).times(2), Ok, &[])
                .requests(Req::Plus(2)),
            row(
                p,
                "503 + Retry-After: 1, burst of 2",
                f(status_with_retry_after(503, 1)).times(2),
                Ok,
                &[],
            )
            .requests(Req::Plus(2)),
            // 5xx forever: max_attempts per request, then server_error.
            row(
                p,
                "500 always",
                f(Fault::status(500)),
                Failed,
                &[K::ServerError],
            )
            .requests(Req::PerUnit(MAX_ATTEMPTS)),
            row(
                p,
                "503 always (no Retry-After)",
                f(Fault::status(503)),
                Failed,
                &[K::ServerError],
            )
            .requests(Req::PerUnit(MAX_ATTEMPTS)),
            // Connection reset mid-body: transient, so retried.
            row(
                p,
                "reset mid-body, once",
                f(Fault::DropMidBody).times(1),
                Ok,
                &[],
            )
            .requests(Req::Plus(1)),
            row(
                p,
                "reset mid-body, always",
                f(Fault::DropMidBody),
                Failed,
                &[K::Connection],
            )
            .requests(Req::PerUnit(MAX_ATTEMPTS)),
            // A body that is not the documented JSON: decode, never retried.
            row(
                p,
                "malformed JSON",
                f(Fault::MalformedJson),
                Failed,
                &[K::Decode],
            ),
            row(
                p,
                "truncated body",
                f(Fault::TruncatedBody),
                Failed,
                &[K::Decode],
            ),
            // Over the cap: too_large, never retried. Under the cap: the padding is ignored.
            row(
                p,
                "oversized body (1 MiB > 256 KiB cap)",
                f(Fault::OversizedBody(1 << 20)),
                Failed,
                &[K::TooLarge],
            ),
            row(
                p,
                "padded body (64 KiB < cap)",
                f(Fault::OversizedBody(64 << 10)),
                Ok,
                &[],
            ),
            // Shape faults: the poll succeeds; the mapping explains what it could not classify.
            row(p, "unknown enum values", f(Fault::UnknownEnums), Ok, &[])
                .conns(Conns::AllUnrecognized),
            row(
                p,
                "missing optional fields",
                f(Fault::MissingOptionals),
                Ok,
                &[],
            )
            .conns(match p {
                // Without `id` a row's id becomes `channel3:{customer}:{platform}`, and an
                // active distribution row without `sync` is unknown (sync_status_missing).
                P::Channel3 => Conns::SameCount,
                // Names, e-mails, dates and error details go; the statuses stay.
                P::Violet => Conns::SameIds,
                // Only e-mail, mobile and is_simulated go: ids and statuses stay.
                P::Subtotal => Conns::SameIdsAndStatuses,
            }),
            row(p, "empty arrays", f(Fault::EmptyArrays), Ok, &[]).conns(Conns::Empty),
            // Every list of objects doubled: one connection per id, as in the baseline, and the
            // collapsed copies reported as a `decode` error (issue 16 item 4).
            row(
                p,
                "duplicate ids",
                f(Fault::DuplicateIds),
                Partial,
                &[K::Decode],
            )
            .conns(Conns::Baseline),
        ]);
    }

    // One customer failing: the others' connections are kept.
    let c3_victim = fleet.channel3.customer_ids()[1].clone();
    let st_victim = fleet.subtotal.customer_ids()[1].clone();
    let c3_path = format!("/merchants/{c3_victim}/");
    let st_path = format!("customer_id={st_victim}");
    rows.extend([
        row(
            P::Channel3,
            "500 always, one customer",
            FaultRule::new(Fault::status(500)).path_contains(&c3_path),
            Partial,
            &[K::ServerError],
        )
        .requests(Req::Plus(MAX_ATTEMPTS - 1))
        .conns(Conns::BaselineWithout(c3_victim.clone())),
        row(
            P::Channel3,
            "hang, one customer",
            FaultRule::new(Fault::Hang).path_contains(&c3_path),
            TimedOut,
            &[K::Timeout],
        )
        .conns(Conns::BaselineWithout(c3_victim)),
        row(
            P::Subtotal,
            "malformed JSON, one customer",
            FaultRule::new(Fault::MalformedJson).path_contains(&st_path),
            Partial,
            &[K::Decode],
        )
        .conns(Conns::BaselineWithout(st_victim.clone())),
        row(
            P::Subtotal,
            "hang, one customer",
            FaultRule::new(Fault::Hang).path_contains(&st_path),
            TimedOut,
            &[K::Timeout],
        )
        .conns(Conns::BaselineWithout(st_victim)),
        // Violet's login: minting a token has no side effect, so it is retried like a GET.
        row(
            P::Violet,
            "login 503 burst of 2",
            FaultRule::new(Fault::status(503)).times(2),
            Ok,
            &[],
        )
        .on_route(vsim::LOGIN)
        .requests(Req::Exactly(3)),
        row(
            P::Violet,
            "login 500 always",
            FaultRule::new(Fault::status(500)),
            Failed,
            &[K::ServerError],
        )
        .on_route(vsim::LOGIN)
        .requests(Req::Exactly(MAX_ATTEMPTS)),
        row(
            P::Violet,
            "login malformed JSON",
            FaultRule::new(Fault::MalformedJson),
            Failed,
            &[K::Decode],
        )
        .on_route(vsim::LOGIN)
        .requests(Req::Exactly(1)),
        row(
            P::Violet,
            "login hang",
            FaultRule::new(Fault::Hang),
            TimedOut,
            &[K::Timeout],
        )
        .on_route(vsim::LOGIN)
        .requests(Req::Exactly(1)),
        // Subtotal's retailer lookup is cosmetic: its failure never fails the poll; platforms
        // fall back to the retailer ids (ids and statuses unchanged).
        row(
            P::Subtotal,
            "/retailers 500 always",
            FaultRule::new(Fault::status(500)),
            Ok,
            &[],
        )
        .on_route(stsim::RETAILERS)
        .requests(Req::Exactly(MAX_ATTEMPTS))
        .conns(Conns::SameIdsAndStatuses),
        row(
            P::Subtotal,
            "/retailers hang",
            FaultRule::new(Fault::Hang),
            Ok,
            &[],
        )
        .on_route(stsim::RETAILERS)
        .requests(Req::Exactly(1))
        .conns(Conns::SameIdsAndStatuses),
    ]);
    // Discovery (Channel3 without a configured customer list) is exercised by the
    // `discovery_*` test below.
    rows
}

fn aggregator(fleet: &Fleet) -> Aggregator {
    // Client timers far beyond the provider timeout: on the paused clock a client timer could
    // otherwise fire while a loopback answer is on its way. The hang is bounded by the
    // aggregator's provider timeout.
    let long = Duration::from_secs(3600);
    let c3 = simulators::channel3(&fleet.channel3)
        .customers(fleet.channel3.customer_ids())
        .request_timeout(long)
        .connect_timeout(long)
        .max_body_bytes(BODY_CAP)
        .build()
        .unwrap();
    let violet = simulators::violet(&fleet.violet)
        .without_timers()
        .max_body_bytes(BODY_CAP)
        .build()
        .unwrap();
    let subtotal = simulators::subtotal(&fleet.subtotal)
        .without_timers()
        .max_body_bytes(BODY_CAP)
        .build()
        .unwrap();
    Aggregator::new()
        .with_timeout(PROVIDER_TIMEOUT)
        .with_provider(c3)
        .with_provider(violet)
        .with_provider(subtotal)
}

fn sim_stats(fleet: &Fleet, p: P) -> &connhealth_testkit::Stats {
    match p {
        P::Channel3 => fleet.channel3.stats(),
        P::Violet => fleet.violet.stats(),
        P::Subtotal => fleet.subtotal.stats(),
    }
}

fn sim_faults(fleet: &Fleet, p: P) -> &connhealth_testkit::Faults {
    match p {
        P::Channel3 => fleet.channel3.faults(),
        P::Violet => fleet.violet.faults(),
        P::Subtotal => fleet.subtotal.faults(),
    }
}

/// A connection with its observation time blanked, for comparisons across polls.
fn norm(c: &Connection) -> Connection {
    let mut c = c.clone();
    c.observed_at = connhealth::chrono::DateTime::UNIX_EPOCH.into();
    c
}

fn conns_of(report: &HealthReport, p: P) -> Vec<Connection> {
    report.connections_of(p.name()).map(norm).collect()
}

/// The roll-up rule, written independently of `HealthReport::roll_up`.
pub fn expected_overall(report: &HealthReport) -> Status {
    let worst = report
        .connections
        .iter()
        .map(|c| match c.status {
            Status::NotConnected => Status::Healthy,
            s => s,
        })
        .max()
        .unwrap_or(Status::Healthy);
    if report.providers.iter().any(|p| p.outcome != Outcome::Ok) {
        worst.max(Status::Unknown)
    } else {
        worst
    }
}

/// Every structural promise of a report. Returns what is wrong.
pub fn report_problems(report: &HealthReport) -> Vec<String> {
    let mut bad = Vec::new();
    if report.overall != expected_overall(report) {
        bad.push(format!(
            "overall {} but the roll-up rule gives {}",
            report.overall,
            expected_overall(report)
        ));
    }
    for w in report.connections.windows(2) {
        if w[0].id >= w[1].id {
            bad.push(format!(
                "connections not sorted/unique at {} / {}",
                w[0].id, w[1].id
            ));
        }
    }
    for c in &report.connections {
        bad.extend(connhealth_testkit::well_formed(c));
    }
    if report.summary.total != report.connections.len() {
        bad.push("summary.total differs from the connection count".into());
    }
    for s in Status::ALL {
        let n = report.connections.iter().filter(|c| c.status == s).count();
        if report.summary.count(s) != n {
            bad.push(format!(
                "summary.{s} is {} but {n} connections are {s}",
                report.summary.count(s)
            ));
        }
    }
    for p in &report.providers {
        let n = report.connections_of(&p.provider).count();
        if p.connections != n {
            bad.push(format!(
                "{}: outcome says {} connections, report has {n}",
                p.provider, p.connections
            ));
        }
        if (p.outcome == Outcome::Ok) != p.errors.is_empty() {
            bad.push(format!(
                "{}: outcome {:?} with {} errors",
                p.provider,
                p.outcome,
                p.errors.len()
            ));
        }
        for e in &p.errors {
            if e.kind == ErrorKind::Panicked {
                bad.push(format!("{}: panicked: {}", p.provider, e.message));
            }
        }
    }
    match serde_json::to_string(report) {
        Ok(json) => match serde_json::from_str::<HealthReport>(&json) {
            Ok(back) if back == *report => {}
            Ok(_) => bad.push("the report does not survive a JSON round trip".into()),
            Err(e) => bad.push(format!("the report's JSON does not parse back: {e}")),
        },
        Err(e) => bad.push(format!("the report does not serialize: {e}")),
    }
    bad
}

fn outcome_name(o: Outcome) -> &'static str {
    o.as_str()
}

fn check_conns(expect: &Conns, got: &[Connection], base: &[Connection]) -> Result<(), String> {
    let ids = |v: &[Connection]| v.iter().map(|c| c.id.clone()).collect::<Vec<_>>();
    let ids_statuses = |v: &[Connection]| {
        v.iter()
            .map(|c| (c.id.clone(), c.status))
            .collect::<Vec<_>>()
    };
    match expect {
        Conns::Baseline if got == base => Ok(()),
        Conns::Baseline => Err(format!(
            "connections differ from the baseline ({} vs {}); first difference: {:?}",
            got.len(),
            base.len(),
            got.iter()
                .zip(base)
                .find(|(a, b)| a != b)
                .map(|(a, _)| &a.id)
        )),
        Conns::Empty if got.is_empty() => Ok(()),
        Conns::Empty => Err(format!("expected no connections, got {}", got.len())),
        Conns::BaselineWithout(customer) => {
            let want: Vec<Connection> = base
                .iter()
                .filter(|c| &c.customer.id != customer)
                .cloned()
                .collect();
            if want.is_empty() || want.len() == base.len() {
                return Err("the victim customer has no or all baseline connections".into());
            }
            if got == want.as_slice() {
                Ok(())
            } else {
                Err(format!(
                    "expected the baseline without {customer} ({}), got {}",
                    want.len(),
                    got.len()
                ))
            }
        }
        Conns::AllUnrecognized => {
            if got.len() != base.len() {
                return Err(format!(
                    "expected {} connections, got {}",
                    base.len(),
                    got.len()
                ));
            }
            match got.iter().find(|c| {
                c.status < Status::Unknown
                    || !c.problems.iter().any(|p| p.code == "unrecognized_value")
            }) {
                None => Ok(()),
                Some(c) => Err(format!(
                    "{} is {} without unrecognized_value: {:?}",
                    c.id, c.status, c.problems
                )),
            }
        }
        Conns::SameIdsAndStatuses if ids_statuses(got) == ids_statuses(base) => Ok(()),
        Conns::SameIdsAndStatuses => Err("ids or statuses differ from the baseline".into()),
        Conns::SameIds if ids(got) == ids(base) => Ok(()),
        Conns::SameIds => Err("ids differ from the baseline".into()),
        Conns::SameCount if got.len() == base.len() => Ok(()),
        Conns::SameCount => Err(format!(
            "expected {} connections, got {}",
            base.len(),
            got.len()
        )),
    }
}

#[tokio::test(start_paused = true)]
async fn fault_matrix() {
    let fleet = Fleet::start(CUSTOMERS, SEED).await.unwrap();
    let baseline = aggregator(&fleet).run().await;
    assert_eq!(report_problems(&baseline), Vec::<String>::new());
    for p in &baseline.providers {
        assert_eq!(p.outcome, Outcome::Ok, "baseline: {:?}", p.errors);
    }
    let base: BTreeMap<P, Vec<Connection>> = P::ALL
        .iter()
        .map(|&p| (p, conns_of(&baseline, p)))
        .collect();
    for p in P::ALL {
        assert!(!base[&p].is_empty(), "{p:?} has baseline connections");
    }
    let rows = matrix(&fleet);
    fleet.shutdown().await;

    let mut table = String::from(
        "| provider | route | fault | expected | observed | error kinds | requests (expected) | connections (baseline) | connections check |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let mut failures = Vec::new();
    for r in &rows {
        // A fresh fleet per row (same seed, same data): counters start at zero and a hung
        // request of one row cannot leak into the next.
        let fleet = Fleet::start(CUSTOMERS, SEED).await.unwrap();
        for rule in &r.rules {
            sim_faults(&fleet, r.provider).push(rule.clone());
        }
        let report = aggregator(&fleet).run().await;
        let requests = sim_stats(&fleet, r.provider).requests(r.route);
        fleet.shutdown().await;

        let label = format!("{} / {} / {}", r.provider.name(), r.route, r.fault);
        let mut bad = report_problems(&report);
        let mine = report
            .providers
            .iter()
            .find(|o| o.provider == r.provider.name())
            .expect("every provider has an outcome");
        if mine.outcome != r.outcome {
            bad.push(format!(
                "outcome {} (expected {}); errors: {:?}",
                outcome_name(mine.outcome),
                outcome_name(r.outcome),
                mine.errors.iter().map(|e| &e.message).collect::<Vec<_>>()
            ));
        }
        let kinds: Vec<ErrorKind> = mine.errors.iter().map(|e| e.kind).collect();
        for k in &kinds {
            if !r.kinds.contains(k) {
                bad.push(format!("unexpected error kind {k}: {:?}", mine.errors));
            }
        }
        for k in &r.kinds {
            if !kinds.contains(k) {
                bad.push(format!("no error of kind {k}"));
            }
        }
        for e in &mine.errors {
            if !e.message.starts_with(r.provider.name()) {
                bad.push(format!("error does not name its provider: {}", e.message));
            }
        }
        let want_requests = r.requests.expected(r.provider);
        if requests != want_requests {
            bad.push(format!(
                "{requests} requests on {} (expected {want_requests})",
                r.route
            ));
        }
        let got = conns_of(&report, r.provider);
        if let Err(e) = check_conns(&r.conns, &got, &base[&r.provider]) {
            bad.push(e);
        }
        for other in P::ALL.into_iter().filter(|&o| o != r.provider) {
            let o = report
                .providers
                .iter()
                .find(|x| x.provider == other.name())
                .unwrap();
            if o.outcome != Outcome::Ok {
                bad.push(format!("{} was affected: {:?}", other.name(), o.errors));
            }
            if conns_of(&report, other) != base[&other] {
                bad.push(format!("{}'s connections changed", other.name()));
            }
        }
        let mut kind_names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        kind_names.sort_unstable();
        kind_names.dedup();
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {}{} | {} | {} ({}) | {} ({}) | {} |",
            r.provider.name(),
            r.route,
            r.fault,
            outcome_name(r.outcome),
            outcome_name(mine.outcome),
            if bad.is_empty() { "" } else { " ✗" },
            if kind_names.is_empty() {
                "—".to_owned()
            } else {
                kind_names.join(", ")
            },
            requests,
            want_requests,
            got.len(),
            base[&r.provider].len(),
            r.conns.label(),
        );
        if !bad.is_empty() {
            failures.push(format!("{label}:\n  - {}", bad.join("\n  - ")));
        }
    }
    println!("{table}");
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}\n\n{table}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

/// Channel3 without a configured customer list discovers merchants through List merchants; a
/// discovery failure is a typed error batch, not a panic, and the other providers are intact.
#[tokio::test(start_paused = true)]
async fn discovery_failures_are_typed_and_isolated() {
    let cases: Vec<(&str, Fault, Outcome, ErrorKind, u64)> = vec![
        (
            "500 always",
            Fault::status(500),
            Outcome::Failed,
            ErrorKind::ServerError,
            MAX_ATTEMPTS,
        ),
        (
            "malformed JSON",
            Fault::MalformedJson,
            Outcome::Failed,
            ErrorKind::Decode,
            1,
        ),
        (
            "truncated body",
            Fault::TruncatedBody,
            Outcome::Failed,
            ErrorKind::Decode,
            1,
        ),
        (
            "hang",
            Fault::Hang,
            Outcome::TimedOut,
            ErrorKind::Timeout,
            1,
        ),
    ];
    for (name, fault, outcome, kind, requests) in cases {
        let fleet = Fleet::start(CUSTOMERS, SEED).await.unwrap();
        fleet.channel3.faults().on(c3sim::LIST_MERCHANTS, fault);
        let long = Duration::from_secs(3600);
        let c3 = simulators::channel3(&fleet.channel3)
            .request_timeout(long)
            .connect_timeout(long)
            .build()
            .unwrap();
        let report = Aggregator::new()
            .with_timeout(PROVIDER_TIMEOUT)
            .with_provider(c3)
            .run()
            .await;
        assert_eq!(report_problems(&report), Vec::<String>::new(), "{name}");
        let o = &report.providers[0];
        assert_eq!(o.outcome, outcome, "{name}: {:?}", o.errors);
        assert!(
            o.errors.iter().all(|e| e.kind == kind),
            "{name}: {:?}",
            o.errors
        );
        assert_eq!(
            fleet.channel3.stats().requests(c3sim::LIST_MERCHANTS),
            requests,
            "{name}"
        );
        assert_eq!(
            fleet.channel3.stats().requests(c3sim::LIST_CONNECTIONS),
            0,
            "{name}"
        );
        assert!(report.overall >= Status::Unknown);
        fleet.shutdown().await;
    }
}

/// Every provider failing at once still yields a well-formed report: every provider named,
/// overall at least unknown, no connections invented.
#[tokio::test(start_paused = true)]
async fn every_provider_failing_at_once() {
    for fault in [Fault::status(500), Fault::MalformedJson, Fault::Hang] {
        let fleet = Fleet::start(CUSTOMERS, SEED).await.unwrap();
        fleet.fault_all(fault.clone());
        let report = aggregator(&fleet).run().await;
        assert_eq!(report_problems(&report), Vec::<String>::new(), "{fault:?}");
        assert_eq!(report.providers.len(), 3);
        assert!(
            report.providers.iter().all(|p| p.outcome != Outcome::Ok),
            "{fault:?}"
        );
        assert!(report.connections.is_empty(), "{fault:?}");
        assert_eq!(report.overall, Status::Unknown, "{fault:?}");
        fleet.shutdown().await;
    }
}

/// A hostile or broken `Retry-After` (far beyond any sane wait) is typed `rate_limited`, and the
/// watcher that slows its polling down for it neither panics nor loses the other providers.
#[tokio::test(start_paused = true)]
async fn an_absurd_retry_after_never_panics() {
    use connhealth::watch::{WatchConfig, Watcher};
    use std::sync::Arc;
    for value in [
        "18446744073709551615",
        "9223372036854775808",
        "99999999999999999999999",
        "1e300",
        "Fri, 31 Dec 9999 23:59:59 GMT",
        "-5",
        "soon",
    ] {
        let fleet = Fleet::start(CUSTOMERS, SEED).await.unwrap();
        fleet.channel3.faults().on(
            c3sim::LIST_CONNECTIONS,
            Fault::Status {
                status: 429,
                retry_after: Some(value.to_owned()),
                body: None,
            },
        );
        let agg = aggregator(&fleet);
        let report = agg.run().await;
        assert_eq!(report_problems(&report), Vec::<String>::new(), "{value}");
        let c3 = &report.providers[0];
        assert_eq!(c3.outcome, Outcome::Failed, "{value}");
        assert!(
            c3.errors.iter().all(|e| e.kind == ErrorKind::RateLimited),
            "{value}"
        );

        let mut w = Watcher::new(WatchConfig {
            interval: Duration::from_secs(60),
            jitter: 0.0,
            timeout: PROVIDER_TIMEOUT,
            ..WatchConfig::default()
        });
        let long = Duration::from_secs(3600);
        w.add(
            Arc::new(
                simulators::channel3(&fleet.channel3)
                    .customers(fleet.channel3.customer_ids())
                    .request_timeout(long)
                    .connect_timeout(long)
                    .build()
                    .unwrap(),
            ),
            None,
        );
        // Rate limited only: no event, and the provider is not asked again before its
        // (clamped) Retry-After, however absurd.
        let before = fleet.channel3.stats().requests(c3sim::LIST_CONNECTIONS);
        let poll = w.poll().await;
        assert!(poll.changes.is_empty(), "{value}: {:?}", poll.changes);
        assert_eq!(poll.report.overall, Status::Unknown, "{value}");
        let asked = fleet.channel3.stats().requests(c3sim::LIST_CONNECTIONS);
        assert!(asked > before, "{value}");
        let poll = w.poll().await;
        assert!(poll.changes.is_empty(), "{value}: {:?}", poll.changes);
        assert_eq!(
            fleet.channel3.stats().requests(c3sim::LIST_CONNECTIONS),
            asked,
            "{value}: not asked again before its Retry-After"
        );
        fleet.shutdown().await;
    }
}

/// Tokens whose `exp` lies absurdly far ahead (provider input) are used, not a panic: Violet's
/// access token on a poll, Subtotal's connection token on a PATCH.
#[tokio::test(start_paused = true)]
async fn absurd_token_lifetimes_never_panic() {
    let fleet = Fleet::start(CUSTOMERS, SEED).await.unwrap();
    fleet.violet.set_token_ttl(Duration::MAX);
    fleet.subtotal.set_token_ttl(Duration::MAX);
    let report = aggregator(&fleet).run().await;
    assert_eq!(report_problems(&report), Vec::<String>::new());
    for p in &report.providers {
        assert_eq!(p.outcome, Outcome::Ok, "{}: {:?}", p.provider, p.errors);
    }
    // The token is kept and reused: no second login.
    let violet = simulators::violet(&fleet.violet)
        .without_timers()
        .build()
        .unwrap();
    violet.client().authenticate().await.unwrap();
    tokio::time::advance(Duration::from_secs(365 * 24 * 3600)).await;
    violet.client().authenticate().await.unwrap();
    assert_eq!(violet.client().auth_stats().logins, 1);

    let subtotal = simulators::subtotal(&fleet.subtotal)
        .customers(vec![])
        .without_timers()
        .build()
        .unwrap();
    let ids = fleet.subtotal.connection_ids();
    subtotal.client().disconnect(&ids[0]).await.unwrap();
    subtotal.client().disconnect(&ids[0]).await.unwrap();
    assert_eq!(fleet.subtotal.tokens_minted(), 1, "the token is cached");
    fleet.shutdown().await;
}

/// A hang under a per-request timeout shorter than the provider timeout: each request times
/// out, is retried (a timeout is transient for a GET) up to `max_attempts`, and the provider
/// fails with `timeout` (not `timed_out`: the provider itself finished in time).
#[tokio::test(start_paused = true)]
async fn request_timeouts_are_retried_within_the_cap() {
    let fleet = Fleet::start(CUSTOMERS, SEED).await.unwrap();
    fleet
        .channel3
        .faults()
        .on(c3sim::LIST_CONNECTIONS, Fault::Hang);
    fleet
        .subtotal
        .faults()
        .on(stsim::LIST_CONNECTIONS, Fault::Hang);
    let c3 = simulators::channel3(&fleet.channel3)
        .customers(fleet.channel3.customer_ids())
        .request_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(3600))
        .build()
        .unwrap();
    let st = simulators::subtotal(&fleet.subtotal)
        .request_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(3600))
        .build()
        .unwrap();
    let report = Aggregator::new()
        .with_timeout(Duration::from_secs(120))
        .with_provider(c3)
        .with_provider(st)
        .run()
        .await;
    assert_eq!(report_problems(&report), Vec::<String>::new());
    for p in &report.providers {
        assert_eq!(p.outcome, Outcome::Failed, "{}: {:?}", p.provider, p.errors);
        assert_eq!(p.errors.len(), CUSTOMERS);
        assert!(p.errors.iter().all(|e| e.kind == ErrorKind::Timeout));
        assert!(p.errors.iter().all(|e| e.customer_id.is_some()));
    }
    let cap = MAX_ATTEMPTS * CUSTOMERS as u64;
    assert_eq!(
        fleet.channel3.stats().requests(c3sim::LIST_CONNECTIONS),
        cap
    );
    assert_eq!(
        fleet.subtotal.stats().requests(stsim::LIST_CONNECTIONS),
        cap
    );
    fleet.shutdown().await;
}
