//! This process's resident set size (`/proc/self/status`) and CPU time (`/proc/self/stat`);
//! Linux only, `None` elsewhere.
//!
//! `VmHWM` (the peak) is per process and never goes down, which is why the scale curve runs
//! every point in a fresh process.

use std::time::Duration;

/// Current resident set size in bytes (`VmRSS`).
pub fn current_rss_bytes() -> Option<u64> {
    field("VmRSS:")
}

/// Peak resident set size of the process so far, in bytes (`VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    field("VmHWM:")
}

/// CPU time this process has used so far, all threads, user plus system (10 ms resolution).
pub fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_cpu(&stat)
}

/// `utime + stime` of a `/proc/PID/stat` line, in clock ticks of 1/100 s (Linux's fixed
/// `USER_HZ`).
fn parse_cpu(stat: &str) -> Option<Duration> {
    // The command name (field 2) is in parentheses and may contain spaces: skip past it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

fn field(name: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_kib(&status, name)
}

/// The value of a `Name:   1234 kB` line, in bytes.
fn parse_kib(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_lines() {
        let s = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(parse_kib(s, "VmHWM:"), Some(2048 * 1024));
        assert_eq!(parse_kib(s, "VmRSS:"), Some(1024 * 1024));
        assert_eq!(parse_kib(s, "VmSwap:"), None);
    }

    #[test]
    fn parses_stat_lines() {
        let s = "123 (a b) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(parse_cpu(s), Some(Duration::from_millis(3000)));
    }

    #[test]
    fn reads_this_process_on_linux() {
        if cfg!(target_os = "linux") {
            let (cur, peak) = (current_rss_bytes().unwrap(), peak_rss_bytes().unwrap());
            assert!(cur > 0 && peak >= cur / 2, "{cur} {peak}");
            assert!(cpu_time().is_some());
        }
    }
}
