//! The schedule's face in `serve`: the `connhealth_schedule_*` metrics and the `/readyz`
//! warning `staleness_budget` (see [`connhealth_core::schedule`]).

use std::fmt::Write as _;

use connhealth_core::schedule::ScheduleStats;

use crate::metrics::{escape_label, header};
use crate::AppState;

/// The `/readyz` warning code when the sweeps cannot keep every customer within
/// `max_staleness` (never a 503).
pub(crate) const STALENESS_BUDGET: &str = "staleness_budget";

/// Show or clear the `staleness_budget` warning after a sweep.
pub(crate) fn update_warning(state: &AppState, stats: &ScheduleStats) {
    match stats.budget_warning() {
        Some(message) => state.set_warning(STALENESS_BUDGET, message),
        None => state.clear_warning(STALENESS_BUDGET),
    }
}

/// Append the `connhealth_schedule_*` series (none before the poller started).
pub(crate) fn render(out: &mut String, state: &AppState) {
    let Some(stats) = state.schedule_stats() else {
        return;
    };
    let gauges: [(&str, &str, u64); 4] = [
        (
            "connhealth_schedule_due_rechecks",
            "Customers due for a re-check at the last plan (in flight or waiting for a slot).",
            stats.due(),
        ),
        (
            "connhealth_schedule_rechecks_in_flight",
            "Scheduled re-checks in flight.",
            stats.in_flight(),
        ),
        (
            "connhealth_schedule_customers",
            "Customers (provider x customer) the schedule keeps fresh.",
            stats.customers(),
        ),
        (
            "connhealth_schedule_oldest_customer_age_seconds",
            "Age of the oldest customer's last read (sweep, re-check or webhook).",
            stats.oldest_age_secs(),
        ),
    ];
    for (name, help, value) in gauges {
        header(out, name, "gauge", help);
        let _ = writeln!(out, "{name} {value}");
    }
    if let Some(b) = stats.budget() {
        header(
            out,
            "connhealth_schedule_achievable_staleness_seconds",
            "gauge",
            "interval + customers / sweep rate: how stale a customer gets between sweeps.",
        );
        let _ = writeln!(
            out,
            "connhealth_schedule_achievable_staleness_seconds {}",
            b.achievable.as_secs()
        );
        header(
            out,
            "connhealth_schedule_max_staleness_seconds",
            "gauge",
            "The configured max_staleness.",
        );
        let _ = writeln!(
            out,
            "connhealth_schedule_max_staleness_seconds {}",
            b.max_staleness.as_secs()
        );
        header(
            out,
            "connhealth_schedule_sweep_customers_per_second",
            "gauge",
            "Customers per second the last sweep achieved (or the configured budget allows).",
        );
        let _ = writeln!(
            out,
            "connhealth_schedule_sweep_customers_per_second {:.3}",
            b.customers_per_sec
        );
    }
    let rechecks = stats.rechecks();
    header(
        out,
        "connhealth_schedule_rechecks_total",
        "counter",
        "Scheduled re-checks done (answered or failed), by provider.",
    );
    for (provider, n) in rechecks {
        let _ = writeln!(
            out,
            "connhealth_schedule_rechecks_total{{provider=\"{}\"}} {n}",
            escape_label(&provider)
        );
    }
}
