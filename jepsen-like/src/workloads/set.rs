//! PLACEHOLDER: the set workload is being built (replace this whole file).

use super::{Context, WorkloadResult};

pub async fn run(_context: Context) -> anyhow::Result<WorkloadResult> {
    anyhow::bail!("the set workload is not built yet")
}
