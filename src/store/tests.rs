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

#[test]
fn a_data_directory_of_another_format_version_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let options = StoreOptions {
        cache_capacity_bytes: 16 * 1024 * 1024,
    };
    {
        let db = open_db(dir.path(), &options).expect("first open");
        let other = codec::FORMAT_VERSION + 998;
        db.open_tree("meta")
            .unwrap()
            .insert(FORMAT_VERSION_KEY, codec::encode(&other).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    let error = open_db(dir.path(), &options).expect_err("refused");
    let message = error.to_string();
    assert!(
        matches!(error, OpenError::FormatVersion { found, expected, .. }
            if found == codec::FORMAT_VERSION + 998 && expected == codec::FORMAT_VERSION),
        "{message}"
    );
    assert!(
        message.contains(&format!("format version {}", codec::FORMAT_VERSION + 998))
            && message.contains(&format!("this binary reads {}", codec::FORMAT_VERSION)),
        "{message}"
    );
}
