//! CPU time and memory of a process, from `/proc/<pid>/stat` and `/proc/<pid>/status`.

use std::path::PathBuf;
use std::time::Duration;

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct ProcSample {
    /// User plus system CPU time so far.
    pub cpu: Duration,
    /// Resident set size now (VmRSS), KiB.
    pub rss_kib: u64,
    /// Peak resident set size (VmHWM), KiB.
    pub hwm_kib: u64,
}

/// Which process: `None` is this one.
pub(crate) fn proc_dir(pid: Option<u32>) -> PathBuf {
    match pid {
        Some(p) => PathBuf::from(format!("/proc/{p}")),
        None => PathBuf::from("/proc/self"),
    }
}

/// Reads the process's CPU time and memory.
pub(crate) fn sample(pid: Option<u32>) -> std::io::Result<ProcSample> {
    let dir = proc_dir(pid);
    let stat = std::fs::read_to_string(dir.join("stat"))?;
    let status = std::fs::read_to_string(dir.join("status"))?;
    let ticks = rustix::param::clock_ticks_per_second().max(1);
    parse(&stat, &status, ticks).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unexpected format of {}/stat or status", dir.display()),
        )
    })
}

/// Parses `stat` (utime and stime, fields 14 and 15, in clock ticks) and `status` (VmRSS,
/// VmHWM).
fn parse(stat: &str, status: &str, ticks_per_second: u64) -> Option<ProcSample> {
    // The command name (field 2) may hold spaces and parentheses: count fields after its ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so utime (14) is index 11 and stime (15) index 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = utime + stime;
    let cpu = Duration::from_secs(ticks / ticks_per_second)
        + Duration::from_nanos((ticks % ticks_per_second) * 1_000_000_000 / ticks_per_second);
    let kib = |key: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    Some(ProcSample {
        cpu,
        rss_kib: kib("VmRSS:").unwrap_or(0),
        hwm_kib: kib("VmHWM:").unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_and_status() {
        let stat = "4242 (weft (control) x) S 1 4242 4242 0 -1 4194560 3163 0 0 0 250 75 0 0 20 0 3 0 100 0 0";
        let status = "Name:\tweft\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t3\n";
        let s = parse(stat, status, 100).unwrap();
        assert_eq!(s.cpu, Duration::from_millis(3250));
        assert_eq!((s.rss_kib, s.hwm_kib), (102_400, 204_800));
        assert!(parse("garbage", status, 100).is_none());
    }

    #[test]
    fn samples_this_process() {
        let s = sample(None).unwrap();
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib);
        let me = sample(Some(std::process::id())).unwrap();
        assert!(me.cpu >= s.cpu);
        assert!(sample(Some(u32::MAX)).is_err());
    }
}
