//! One run's result: the human line on stdout, the JSON line appended to `--json`
//! (the format `summary` and `chart` read back), and the per-node resident memory
//! read from `/proc/<pid>/status`. Knows nothing about how the numbers were made.

use std::io::Write;
use std::path::Path;

use serde_json::{json, Map, Value};

use crate::driver::Measured;

/// A finished run, ready to print and record.
pub struct Report {
    pub system: &'static str,
    pub workload: String,
    pub clients: usize,
    /// `spread` or `leader`: where the clients sent their requests.
    pub placement: String,
    pub measured: Measured,
    /// Workload-specific figures (`entries_per_sec`, `failover_ms`, `rss_kib`, …).
    pub extra: Map<String, Value>,
}

impl Report {
    fn percentile_us(&self, fraction: f64) -> u64 {
        let latencies = &self.measured.latencies_us;
        let index =
            ((latencies.len() as f64 * fraction) as usize).min(latencies.len().saturating_sub(1));
        latencies.get(index).copied().unwrap_or(0)
    }

    fn max_us(&self) -> u64 {
        self.measured.latencies_us.last().copied().unwrap_or(0)
    }

    pub fn ops(&self) -> u64 {
        self.measured.latencies_us.len() as u64
    }

    pub fn ops_per_sec(&self) -> f64 {
        self.ops() as f64 / self.measured.elapsed.as_secs_f64().max(1e-9)
    }

    /// `system=… workload=… clients=… ops=… ops/s=… p50=…ms p99=…ms max=…ms errors=…`,
    /// the errors followed by their kinds when there are any.
    pub fn print(&self) {
        let ms = |us: u64| us as f64 / 1000.0;
        let kinds: Vec<String> = self
            .measured
            .error_kinds
            .iter()
            .map(|(kind, count)| format!("{kind}: {count}"))
            .collect();
        let kinds = if kinds.is_empty() {
            String::new()
        } else {
            format!(" ({})", kinds.join(", "))
        };
        println!(
            "system={} workload={} clients={} ops={} ops/s={:.0} p50={:.2}ms p99={:.2}ms max={:.2}ms errors={}{kinds}",
            self.system,
            self.workload,
            self.clients,
            self.ops(),
            self.ops_per_sec(),
            ms(self.percentile_us(0.5)),
            ms(self.percentile_us(0.99)),
            ms(self.max_us()),
            self.measured.errors,
        );
    }

    pub fn to_json(&self) -> Value {
        let mut line = json!({
            "system": self.system,
            "workload": self.workload,
            "clients": self.clients,
            "placement": self.placement,
            "duration_s": self.measured.elapsed.as_secs_f64(),
            "ops": self.ops(),
            "ops_per_sec": self.ops_per_sec(),
            "p50_us": self.percentile_us(0.5),
            "p99_us": self.percentile_us(0.99),
            "max_us": self.max_us(),
            "errors": self.measured.errors,
            "error_kinds": self.measured.error_kinds,
        });
        if let Value::Object(fields) = &mut line {
            fields.extend(self.extra.clone());
        }
        line
    }

    /// Appends one JSON line to `path` (created if missing).
    pub fn append_json(&self, path: &Path) -> anyhow::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        writeln!(file, "{}", self.to_json())?;
        Ok(())
    }

    /// Reads each pid's resident set size, prints it and records it as `rss_kib`
    /// (in the order given; `null` for a process that is gone).
    pub fn add_rss(&mut self, pids: &[u32]) {
        if pids.is_empty() {
            return;
        }
        let sizes: Vec<Option<u64>> = pids.iter().map(|&pid| resident_kib(pid)).collect();
        let shown: Vec<String> = pids
            .iter()
            .zip(&sizes)
            .map(|(pid, size)| match size {
                Some(kib) => format!("pid {pid}: {:.1} MiB", *kib as f64 / 1024.0),
                None => format!("pid {pid}: gone"),
            })
            .collect();
        println!("rss {}", shown.join(", "));
        self.extra.insert("rss_kib".into(), json!(sizes));
    }
}

/// `VmRSS` of a process in KiB, from `/proc/<pid>/status`.
pub fn resident_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss_kib(&status)
}

fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn vm_rss_is_read_from_a_status_file() {
        let status = "Name:\tconclave\nVmPeak:\t  90000 kB\nVmRSS:\t   21504 kB\nThreads:\t5\n";
        assert_eq!(parse_vm_rss_kib(status), Some(21504));
        assert_eq!(parse_vm_rss_kib("Name:\tx\n"), None);
    }

    #[test]
    fn percentiles_come_from_the_sorted_latencies() {
        let latencies: Vec<u64> = (1..=100).rev().collect();
        let report = Report {
            system: "conclave",
            workload: "put".into(),
            clients: 1,
            placement: "spread".into(),
            measured: Measured {
                latencies_us: latencies.into_iter().rev().collect(),
                errors: 2,
                error_kinds: [("http 503".to_owned(), 2)].into_iter().collect(),
                elapsed: Duration::from_secs(2),
            },
            extra: Map::new(),
        };
        let line = report.to_json();
        assert_eq!(line["p50_us"], 51);
        assert_eq!(line["p99_us"], 100);
        assert_eq!(line["max_us"], 100);
        assert_eq!(line["ops"], 100);
        assert_eq!(line["ops_per_sec"], 50.0);
        assert_eq!(line["errors"], 2);
        assert_eq!(line["error_kinds"]["http 503"], 2);
    }
}
