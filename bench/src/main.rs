//! Closed-loop load generator: N clients each send one request at a time for a fixed
//! duration against a set of Conclave nodes, then report ops/s and latency
//! percentiles. Workloads so far: `put` (64-byte values), `get` (linearizable) and
//! `stale-get`. The full suite with etcd side by side is issue 6.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Workload {
    Put,
    Get,
    StaleGet,
}

#[derive(Parser)]
struct Args {
    /// Node base URLs; clients are spread over them round-robin.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:7000")]
    urls: Vec<String>,
    #[arg(long, default_value_t = 1)]
    clients: usize,
    #[arg(long, default_value_t = 5)]
    duration: u64,
    #[arg(long, value_enum, default_value = "put")]
    workload: Workload,
}

#[derive(Default)]
struct ClientResult {
    latencies_us: Vec<u64>,
    errors: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .build()?;
    let value = serde_json::json!({ "value": "x".repeat(64) }).to_string();
    let value = Arc::new(value);
    if !matches!(args.workload, Workload::Put) {
        // Keys to read.
        for i in 0..args.clients {
            http.put(format!("{}/v1/kv/bench/{i}", args.urls[0]))
                .body(value.to_string())
                .send()
                .await?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.clients)
        .map(|client| {
            let (http, value, workload) = (http.clone(), value.clone(), args.workload);
            let url = args.urls[client % args.urls.len()].clone();
            tokio::spawn(async move {
                let mut result = ClientResult::default();
                let mut sequence = 0u64;
                while Instant::now() < deadline {
                    sequence += 1;
                    let request = match workload {
                        Workload::Put => http
                            .put(format!("{url}/v1/kv/bench/{client}/{}", sequence % 1000))
                            .body(value.to_string()),
                        Workload::Get => http.get(format!("{url}/v1/kv/bench/{client}")),
                        Workload::StaleGet => {
                            http.get(format!("{url}/v1/kv/bench/{client}?consistency=stale"))
                        }
                    };
                    let sent = Instant::now();
                    match request.send().await {
                        Ok(response) if response.status().is_success() => {
                            let _ = response.bytes().await;
                            result.latencies_us.push(sent.elapsed().as_micros() as u64);
                        }
                        _ => result.errors += 1,
                    }
                }
                result
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let result = task.await?;
        latencies.extend(result.latencies_us);
        errors += result.errors;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "workload={:?} clients={} ops={} ops/s={:.0} p50={:.2}ms p99={:.2}ms max={:.2}ms errors={}",
        args.workload,
        args.clients,
        latencies.len(),
        latencies.len() as f64 / elapsed,
        percentile(0.5) as f64 / 1000.0,
        percentile(0.99) as f64 / 1000.0,
        latencies.last().copied().unwrap_or(0) as f64 / 1000.0,
        errors
    );
    Ok(())
}
