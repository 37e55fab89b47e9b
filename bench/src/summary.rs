//! Reads the JSON lines of many runs back and reduces them to one figure per
//! (system, workload, clients): the median over rounds. Renders the markdown tables
//! `compare.sh` prints; `chart.rs` draws from the same medians.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use serde_json::Value;

/// Medians over the rounds of one (system, workload, clients).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Point {
    pub rounds: usize,
    pub ops_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub errors: u64,
    /// Largest per-node resident set at the end of the run, MiB.
    pub rss_mib: Option<f64>,
    pub entries_per_sec: Option<f64>,
    pub failover_ms: Option<f64>,
    pub election_ms: Option<f64>,
    /// `footprint`: tasks stored, and seconds storing them and the sessions took.
    pub tasks: Option<f64>,
    pub stored_s: Option<f64>,
    /// `keepalive` / `footprint`: sessions kept alive or stored.
    pub sessions: Option<f64>,
    /// `watch-fanout`: events delivered per second over all watchers, their
    /// delivery lag, and how many watchers there were.
    pub events_per_sec: Option<f64>,
    pub lag_p50_us: Option<f64>,
    pub lag_p99_us: Option<f64>,
    pub watchers: Option<f64>,
}

/// (system, workload) → clients → medians.
pub type Summary = BTreeMap<(String, String), BTreeMap<u64, Point>>;

pub fn read_lines(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| Ok(serde_json::from_str(line)?))
        .collect()
}

pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|value| value.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    })
}

pub fn summarize(lines: &[Value]) -> Summary {
    let mut groups: BTreeMap<(String, String, u64), Vec<&Value>> = BTreeMap::new();
    for line in lines {
        let (Some(system), Some(workload), Some(clients)) = (
            line["system"].as_str(),
            line["workload"].as_str(),
            line["clients"].as_u64(),
        ) else {
            continue;
        };
        groups
            .entry((system.to_owned(), workload.to_owned(), clients))
            .or_default()
            .push(line);
    }
    let mut summary = Summary::new();
    for ((system, workload, clients), runs) in groups {
        let field = |name: &str| median(runs.iter().filter_map(|run| run[name].as_f64()).collect());
        let rss = median(
            runs.iter()
                .filter_map(|run| run["rss_kib"].as_array())
                .filter_map(|sizes| sizes.iter().filter_map(Value::as_f64).reduce(f64::max))
                .map(|kib| kib / 1024.0)
                .collect(),
        );
        let point = Point {
            rounds: runs.len(),
            ops_per_sec: field("ops_per_sec").unwrap_or(0.0),
            p50_us: field("p50_us").unwrap_or(0.0),
            p99_us: field("p99_us").unwrap_or(0.0),
            errors: runs.iter().filter_map(|run| run["errors"].as_u64()).sum(),
            rss_mib: rss,
            entries_per_sec: field("entries_per_sec"),
            failover_ms: field("failover_ms"),
            election_ms: field("election_ms"),
            tasks: field("tasks"),
            stored_s: field("stored_s"),
            sessions: field("sessions"),
            events_per_sec: field("events_per_sec"),
            lag_p50_us: field("lag_p50_us"),
            lag_p99_us: field("lag_p99_us"),
            watchers: field("watchers"),
        };
        summary
            .entry((system, workload))
            .or_default()
            .insert(clients, point);
    }
    summary
}

fn ms(us: f64) -> String {
    format!("{:.2} ms", us / 1000.0)
}

fn mib(value: Option<f64>) -> String {
    value.map_or("–".into(), |mib| format!("{mib:.0}"))
}

/// Workloads measured on both systems (failover aside), in a fixed order.
pub fn shared_workloads(summary: &Summary) -> Vec<String> {
    let has =
        |system: &str, workload: &str| summary.contains_key(&(system.into(), workload.into()));
    let mut workloads: Vec<String> = summary
        .keys()
        .filter(|(system, workload)| {
            system == "conclave" && workload != FAILOVER && has("etcd", workload)
        })
        .map(|(_, workload)| workload.clone())
        .collect();
    let order = ["put", "get", "stale-get", "lock", "contended-lock"];
    workloads.sort_by_key(|w| order.iter().position(|o| o == w).unwrap_or(order.len()));
    workloads
}

const FAILOVER: &str = "failover";

/// The system label `compare.sh` gives an earlier Conclave (`BASELINE=<rev>`).
pub const BASELINE: &str = "conclave-baseline";

/// The A/B table of this Conclave against the baseline, per workload and client
/// count both ran (empty when there is no baseline).
fn render_baseline(summary: &Summary, errors: &mut u64) -> String {
    let mut rows = String::new();
    for ((system, workload), by_clients) in summary {
        let Some(ours) = summary.get(&("conclave".to_owned(), workload.clone())) else {
            continue;
        };
        if system != BASELINE {
            continue;
        }
        for (clients, before) in by_clients {
            let Some(after) = ours.get(clients) else {
                continue;
            };
            *errors += before.errors;
            let ratio = if before.ops_per_sec > 0.0 {
                format!("{:.2}", after.ops_per_sec / before.ops_per_sec)
            } else {
                "–".into()
            };
            let _ = writeln!(
                rows,
                "| {workload} | {clients} | {:.0} | {:.0} | {ratio} | {} | {} |",
                after.ops_per_sec,
                before.ops_per_sec,
                ms(after.p99_us),
                ms(before.p99_us),
            );
        }
    }
    if rows.is_empty() {
        return rows;
    }
    format!(
        "\nA/B against the baseline build (same run, medians):\n\n| workload | clients | conclave ops/s | baseline ops/s | conclave / baseline | conclave p99 | baseline p99 |\n|---|---:|---:|---:|---:|---:|---:|\n{rows}"
    )
}

/// The side-by-side table, the failover table and the Conclave-only rows, as
/// markdown, then the count of failed operations.
pub fn render(summary: &Summary) -> String {
    let mut out = String::new();
    let shared = shared_workloads(summary);
    let mut errors = 0;
    if !shared.is_empty() {
        out.push_str("| workload | clients | conclave ops/s | etcd ops/s | conclave / etcd | conclave p99 | etcd p99 | RSS MiB (conclave / etcd) |\n");
        out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    }
    for workload in &shared {
        let conclave = &summary[&("conclave".to_owned(), workload.clone())];
        let etcd = &summary[&("etcd".to_owned(), workload.clone())];
        for (clients, ours) in conclave {
            let Some(theirs) = etcd.get(clients) else {
                continue;
            };
            errors += ours.errors + theirs.errors;
            let ratio = if theirs.ops_per_sec > 0.0 {
                format!("{:.2}", ours.ops_per_sec / theirs.ops_per_sec)
            } else {
                "–".into()
            };
            let _ = writeln!(
                out,
                "| {workload} | {clients} | {:.0} | {:.0} | {ratio} | {} | {} | {} / {} |",
                ours.ops_per_sec,
                theirs.ops_per_sec,
                ms(ours.p99_us),
                ms(theirs.p99_us),
                mib(ours.rss_mib),
                mib(theirs.rss_mib),
            );
        }
    }
    let mut failover = String::new();
    let mut retries = 0;
    for system in ["conclave", "etcd"] {
        let Some(point) = summary
            .get(&(system.to_owned(), FAILOVER.to_owned()))
            .and_then(|by_clients| by_clients.values().next())
        else {
            continue;
        };
        retries += point.errors;
        let _ = writeln!(
            failover,
            "| {system} | {} | {} | {} | {} |",
            point
                .failover_ms
                .map_or("–".into(), |v| format!("{v:.0} ms")),
            point
                .election_ms
                .map_or("–".into(), |v| format!("{v:.0} ms")),
            point.errors,
            point.rounds
        );
    }
    if !failover.is_empty() {
        out.push_str(
            "\nLeader killed (SIGKILL) under one writer talking to a follower; medians:\n\n",
        );
        out.push_str("| system | first write acknowledged after the kill | new leader seen by a survivor | failed writes (all rounds) | rounds |\n");
        out.push_str("|---|---:|---:|---:|---:|\n");
        out.push_str(&failover);
    }
    out.push_str(&render_baseline(summary, &mut errors));
    let mut others = String::new();
    for ((system, workload), by_clients) in summary {
        if shared.contains(workload) || workload == FAILOVER || system == BASELINE {
            continue;
        }
        for (clients, point) in by_clients {
            errors += point.errors;
            let result = match (point.entries_per_sec, point.stored_s) {
                _ if point.events_per_sec.is_some() => format!(
                    "**{:.0} events/s delivered** to {:.0} watchers, delivery lag p50 {} p99 {}; {:.0} writes/s (p99 {})",
                    point.events_per_sec.unwrap_or(0.0),
                    point.watchers.unwrap_or(0.0),
                    ms(point.lag_p50_us.unwrap_or(0.0)),
                    ms(point.lag_p99_us.unwrap_or(0.0)),
                    point.ops_per_sec,
                    ms(point.p99_us)
                ),
                (Some(entries), _) => format!(
                    "**{entries:.1} log entries/s**, {:.0} keepalives/s, p99 {}",
                    point.ops_per_sec,
                    ms(point.p99_us)
                ),
                (None, Some(stored_s)) => format!(
                    "**{:.0} sessions + {:.0} queued tasks stored** in {stored_s:.1} s ({:.0} requests/s, p99 {}); RSS = largest node's after",
                    point.sessions.unwrap_or(0.0),
                    point.tasks.unwrap_or(0.0),
                    point.ops_per_sec,
                    ms(point.p99_us)
                ),
                (None, None) => format!(
                    "{:.0} ops/s, p50 {}, p99 {}",
                    point.ops_per_sec,
                    ms(point.p50_us),
                    ms(point.p99_us)
                ),
            };
            let _ = writeln!(
                others,
                "| {system} | {workload} | {clients} | {result} | {} | {} |",
                mib(point.rss_mib),
                point.rounds
            );
        }
    }
    if !others.is_empty() {
        out.push_str("\n| system | workload | clients | result (median) | RSS MiB | rounds |\n");
        out.push_str("|---|---|---:|---|---:|---:|\n");
        out.push_str(&others);
    }
    let _ = writeln!(
        out,
        "\nFailed operations over all runs: {errors} (failover retries not counted: {retries})."
    );
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_baseline_gets_its_own_ab_table_and_no_other_rows() {
        let lines = vec![
            json!({"system":"conclave","workload":"put","clients":64,"ops_per_sec":950.0,"p50_us":1000,"p99_us":4000,"errors":0}),
            json!({"system":"conclave-baseline","workload":"put","clients":64,"ops_per_sec":1000.0,"p50_us":1000,"p99_us":5000,"errors":2}),
            json!({"system":"etcd","workload":"put","clients":64,"ops_per_sec":500.0,"p50_us":1000,"p99_us":5000,"errors":0}),
        ];
        let table = render(&summarize(&lines));
        assert!(
            table.contains("| put | 64 | 950 | 1000 | 0.95 | 4.00 ms | 5.00 ms |"),
            "{table}"
        );
        assert!(!table.contains("| conclave-baseline |"), "{table}");
        assert!(
            table.contains("Failed operations over all runs: 2"),
            "{table}"
        );
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn rounds_reduce_to_medians_and_the_table_pairs_systems() {
        let lines = vec![
            json!({"system":"conclave","workload":"put","clients":16,"ops_per_sec":100.0,"p50_us":1000,"p99_us":4000,"errors":0,"rss_kib":[10240, 20480]}),
            json!({"system":"conclave","workload":"put","clients":16,"ops_per_sec":300.0,"p50_us":1000,"p99_us":2000,"errors":1}),
            json!({"system":"conclave","workload":"put","clients":16,"ops_per_sec":200.0,"p50_us":1000,"p99_us":3000,"errors":0}),
            json!({"system":"etcd","workload":"put","clients":16,"ops_per_sec":400.0,"p50_us":500,"p99_us":1000,"errors":0}),
            json!({"system":"conclave","workload":"failover","clients":1,"ops_per_sec":5.0,"failover_ms":700.0,"election_ms":500.0,"errors":3}),
        ];
        let summary = summarize(&lines);
        let put = &summary[&("conclave".to_owned(), "put".to_owned())][&16];
        assert_eq!(put.ops_per_sec, 200.0);
        assert_eq!(put.p99_us, 3000.0);
        assert_eq!(put.rss_mib, Some(20.0));
        assert_eq!(put.errors, 1);
        let table = render(&summary);
        assert!(
            table.contains("| put | 16 | 200 | 400 | 0.50 | 3.00 ms | 1.00 ms | 20 / – |"),
            "{table}"
        );
        assert!(
            table.contains("| conclave | 700 ms | 500 ms | 3 | 1 |"),
            "{table}"
        );
        assert!(
            table.contains("Failed operations over all runs: 1 (failover retries not counted: 3)."),
            "{table}"
        );
    }

    #[test]
    fn a_footprint_row_says_what_was_stored() {
        let lines = vec![
            json!({"system":"conclave","workload":"footprint","clients":64,"ops_per_sec":2000.0,"p50_us":1000,"p99_us":5000,"errors":0,"sessions":10000,"tasks":100000,"stored_s":55.0,"rss_kib":[102400, 153600, 112640]}),
            json!({"system":"conclave","workload":"mixed","clients":16,"ops_per_sec":3000.0,"p50_us":2000,"p99_us":9000,"errors":2}),
            json!({"system":"conclave","workload":"watch-fanout","clients":64,"ops_per_sec":3000.0,"p50_us":2000,"p99_us":9000,"errors":0,"watchers":100,"events_per_sec":300000.0,"lag_p50_us":4000,"lag_p99_us":30000}),
        ];
        let table = render(&summarize(&lines));
        assert!(
            table.contains("| conclave | watch-fanout | 64 | **300000 events/s delivered** to 100 watchers, delivery lag p50 4.00 ms p99 30.00 ms; 3000 writes/s (p99 9.00 ms) | – | 1 |"),
            "{table}"
        );
        assert!(
            table.contains("| conclave | footprint | 64 | **10000 sessions + 100000 queued tasks stored** in 55.0 s (2000 requests/s, p99 5.00 ms); RSS = largest node's after | 150 | 1 |"),
            "{table}"
        );
        assert!(
            table.contains(
                "| conclave | mixed | 16 | 3000 ops/s, p50 2.00 ms, p99 9.00 ms | – | 1 |"
            ),
            "{table}"
        );
        assert!(
            table.contains("Failed operations over all runs: 2 "),
            "{table}"
        );
    }
}
