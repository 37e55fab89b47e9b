//! PLACEHOLDER: the lock workload is being built (replace this whole file).

use super::{Context, WorkloadResult};

pub async fn run(_context: Context, _fenced: bool) -> anyhow::Result<WorkloadResult> {
    anyhow::bail!("the lock workload is not built yet")
}
