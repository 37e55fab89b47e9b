//! PLACEHOLDER: the semaphore workload is being built (replace this whole file).

use super::{Context, WorkloadResult};

pub async fn run(_context: Context) -> anyhow::Result<WorkloadResult> {
    anyhow::bail!("the semaphore workload is not built yet")
}
