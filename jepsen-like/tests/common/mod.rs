//! What the integration tests share (`mod common;`): the server binary they run,
//! the lock that keeps their runs one at a time, report folders, and the
//! [`RunConfig`] every cell starts from.

// Each test crate uses only part of this.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use jepsen_like::nemesis::Nemesis;
use jepsen_like::run::RunConfig;
use jepsen_like::workloads::Workload;

/// Runs share two cores: one at a time.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The debug server binary (`cargo build -p conclave`), or `CONCLAVE_BINARY`.
pub fn binary() -> PathBuf {
    std::env::var_os("CONCLAVE_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/conclave")
        })
}

/// A fresh report folder, `<tmp>/jepsen-like-<label>-<pid>-<random>`.
pub fn out_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "jepsen-like-{label}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One cell of `seconds` on 3 nodes, 6 processes, 3 keys, no planted bug; tests
/// change what they need with `RunConfig { keys: 2, ..config(…) }`.
pub fn config(
    workload: Workload,
    nemesis: Nemesis,
    seconds: u64,
    seed: u64,
    out: &Path,
) -> RunConfig {
    RunConfig {
        binary: binary(),
        out: out.to_owned(),
        workload,
        nemesis,
        duration: Duration::from_secs(seconds),
        seed,
        nodes: 3,
        processes: 6,
        keys: 3,
        inject_bug: None,
        command: format!("test seed {seed}"),
    }
}
