//! Reading CPU time and resident memory of a process from `/proc`.

use std::time::Instant;

/// CPU time (user + system) in clock ticks from the text of `/proc/PID/stat`.
///
/// The command name (field 2) may contain spaces and parentheses, so fields
/// are counted after the last `)`: `utime` and `stime` are fields 14 and 15.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` in KiB from the text of `/proc/PID/status`.
pub fn parse_vmrss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(value),
        Some("mB") => Some(value * 1024),
        _ => None,
    }
}

/// Clock ticks per second (`getconf CLK_TCK`), 100 when it cannot be asked.
pub fn clock_ticks_per_sec() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

fn read_ticks(pid: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu_ticks(&text)
}

/// Resident memory of a process in KiB, if it can be read.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vmrss_kib(&text)
}

/// A point-in-time reading of the servers' and this process's CPU time.
#[derive(Debug, Clone)]
pub struct CpuSample {
    /// Sum over the watched server processes; `None` when none is watched or
    /// one of them could not be read.
    server_ticks: Option<u64>,
    self_ticks: Option<u64>,
    at: Instant,
}

/// CPU used between two samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuUsed {
    pub wall_s: f64,
    pub server_s: Option<f64>,
    pub bench_s: Option<f64>,
}

impl CpuSample {
    pub fn take(server_pids: &[u32]) -> Self {
        let server_ticks = if server_pids.is_empty() {
            None
        } else {
            server_pids
                .iter()
                .map(|pid| read_ticks(&pid.to_string()))
                .sum::<Option<u64>>()
        };
        Self {
            server_ticks,
            self_ticks: read_ticks("self"),
            at: Instant::now(),
        }
    }

    pub fn since(&self, earlier: &CpuSample, ticks_per_sec: u64) -> CpuUsed {
        let secs = |a: Option<u64>, b: Option<u64>| {
            Some(a?.saturating_sub(b?) as f64 / ticks_per_sec as f64)
        };
        CpuUsed {
            wall_s: self.at.duration_since(earlier.at).as_secs_f64(),
            server_s: secs(self.server_ticks, earlier.server_ticks),
            bench_s: secs(self.self_ticks, earlier.self_ticks),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "4242 (chat server) S 1 4242 4242 0 -1 4194560 1200 0 3 0 \
                    150 37 0 0 20 0 9 0 12345 123456789 2000 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(187));
        let tricky = "7 (a) b) c) R 1 7 7 0 -1 0 0 0 0 0 5 6 0 0";
        assert_eq!(parse_stat_cpu_ticks(tricky), Some(11));
        assert_eq!(parse_stat_cpu_ticks("7 (short) R 1"), None);
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn vmrss_is_read_in_kib() {
        let status = "Name:\tchatserver\nVmPeak:\t  900000 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_vmrss_kib(status), Some(12345));
        assert_eq!(parse_vmrss_kib("Name:\tx\n"), None);
        assert_eq!(parse_vmrss_kib("VmRSS:\tlots kB\n"), None);
    }

    #[test]
    fn own_process_can_be_sampled() {
        let pid = std::process::id();
        let before = CpuSample::take(&[pid]);
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        let used = CpuSample::take(&[pid]).since(&before, clock_ticks_per_sec());
        assert!(used.server_s.is_some() && used.bench_s.is_some());
        assert!(rss_kib(pid).unwrap() > 0);
        assert_eq!(CpuSample::take(&[]).since(&before, 100).server_s, None);
    }
}
