//! Child processes: the scale curve measures every point in a fresh process (peak RSS is per
//! process and never goes down), and that process polls simulators served by yet another
//! process (so the measured memory is the client's alone).
//!
//! Both are this same executable, re-invoked with the same arguments and the environment
//! variable [`ROLE_ENV`] set; [`crate::run_bench`] (and [`crate::child_main`]) notice it first
//! thing and play the role instead. That is why a binary that calls `run_bench` needs no extra
//! command-line flag for its children.

use std::io;
use std::process::Command;

/// Environment variable naming the role of a child process: `point` or `sims`.
pub const ROLE_ENV: &str = "CONNHEALTH_BENCH_ROLE";
/// Environment variable carrying the child's JSON specification.
pub const SPEC_ENV: &str = "CONNHEALTH_BENCH_SPEC";

/// Line prefix of a scale point's result.
pub(crate) const MARK_ROW: &str = "CONNHEALTH_BENCH_ROW";
/// Line prefix of the simulators' endpoints.
pub(crate) const MARK_SIMS: &str = "CONNHEALTH_BENCH_SIMS";
/// Line prefix of the simulators' counters.
pub(crate) const MARK_STATS: &str = "CONNHEALTH_BENCH_STATS";
/// Acknowledgement line.
pub(crate) const MARK_OK: &str = "CONNHEALTH_BENCH_OK";
/// Error line.
pub(crate) const MARK_ERR: &str = "CONNHEALTH_BENCH_ERR";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Point,
    Sims,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Point => "point",
            Role::Sims => "sims",
        }
    }
}

/// This executable, with this process's arguments, in `role`.
pub(crate) fn command(role: Role, spec_json: &str) -> io::Result<Command> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args(std::env::args_os().skip(1))
        .env(ROLE_ENV, role.as_str())
        .env(SPEC_ENV, spec_json);
    Ok(cmd)
}

/// If this process was started as a benchmark child, play the role and return its exit code.
pub(crate) fn run_role() -> Option<i32> {
    let role = std::env::var(ROLE_ENV).ok()?;
    let spec = std::env::var(SPEC_ENV).unwrap_or_default();
    let result = match role.as_str() {
        "point" => crate::scale::point_main(&spec),
        "sims" => serde_json::from_str(&spec)
            .map_err(io::Error::from)
            .and_then(|spec| crate::sims::serve(&spec)),
        other => Err(io::Error::other(format!("unknown {ROLE_ENV} {other:?}"))),
    };
    Some(match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("connhealth-bench {role} child: {e}");
            1
        }
    })
}
