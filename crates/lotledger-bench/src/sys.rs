//! The machine and the process: CPU, cores, memory, peak RSS; latency percentiles.

use serde::Serialize;

/// What the bench ran on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub ram_bytes: u64,
    pub kernel: String,
}

impl Machine {
    pub fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            ram_bytes: kib_field(&meminfo, "MemTotal:").unwrap_or(0) * 1024,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
        }
    }
}

fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Peak resident set size of this process (`VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    kib_field(&status, "VmHWM:").map(|k| k * 1024)
}

/// Current resident set size (`VmRSS`), in bytes.
pub fn rss_bytes() -> Option<u64> {
    rss_bytes_at("/proc/self/status")
}

/// Current resident set size (`VmRSS`) of another process, in bytes.
pub fn rss_bytes_of(pid: u32) -> Option<u64> {
    rss_bytes_at(&format!("/proc/{pid}/status"))
}

fn rss_bytes_at(status_path: &str) -> Option<u64> {
    let status = std::fs::read_to_string(status_path).ok()?;
    kib_field(&status, "VmRSS:").map(|k| k * 1024)
}

/// p50, p99 and max of latencies in nanoseconds (nearest rank), in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

impl Percentiles {
    pub fn of(nanos: &mut [u64]) -> Percentiles {
        nanos.sort_unstable();
        let rank = |p: u64| -> f64 {
            if nanos.is_empty() {
                return 0.0;
            }
            let n = nanos.len() as u64;
            let i = (p * n).div_ceil(100).saturating_sub(1).min(n - 1) as usize;
            nanos.get(i).copied().unwrap_or(0) as f64 / 1000.0
        };
        Percentiles {
            count: nanos.len() as u64,
            p50_us: rank(50),
            p99_us: rank(99),
            max_us: rank(100),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn nearest_rank() {
        let mut v: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        let p = super::Percentiles::of(&mut v);
        assert_eq!((p.p50_us, p.p99_us, p.max_us), (50.0, 99.0, 100.0));
        let p = super::Percentiles::of(&mut [7000]);
        assert_eq!((p.p50_us, p.p99_us, p.max_us), (7.0, 7.0, 7.0));
        assert_eq!(super::Percentiles::of(&mut []).count, 0);
    }

    #[test]
    fn reads_proc() {
        assert!(super::peak_rss_bytes().unwrap_or(1) > 0);
        assert!(super::Machine::read().cores >= 1);
    }
}
