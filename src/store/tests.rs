//! openraft's storage conformance suite against the sled store.

use openraft::testing::{StoreBuilder, Suite};

use super::*;
use crate::raft_types::{StorageError, TypeConfig};

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for SledBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().expect("a temp dir");
        let db = open_db(
            dir.path(),
            &StoreOptions {
                cache_capacity_bytes: 16 * 1024 * 1024,
            },
        )
        .expect("open");
        let (log, state_machine) = open(&db).expect("open stores");
        Ok((dir, log, state_machine))
    }
}

#[test]
fn sled_store_passes_the_openraft_suite() {
    Suite::test_all(SledBuilder).unwrap();
}
