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
        let (log, state_machine) =
            open(&db, dir.path(), crate::watch::Hub::default(), None).expect("open stores");
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

#[test]
fn a_data_directory_of_the_previous_format_is_migrated_in_place() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let options = StoreOptions {
        cache_capacity_bytes: 16 * 1024 * 1024,
    };
    let marker = |db: &sled::Db| -> u32 {
        let bytes = db
            .open_tree("meta")
            .unwrap()
            .get(FORMAT_VERSION_KEY)
            .unwrap();
        codec::decode(&bytes.expect("a marker")).unwrap()
    };
    {
        let db = open_db(dir.path(), &options).expect("first open");
        let previous = codec::PREVIOUS_FORMAT_VERSION;
        db.open_tree("meta")
            .unwrap()
            .insert(FORMAT_VERSION_KEY, codec::encode(&previous).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    let db = open_db(dir.path(), &options).expect("the previous format opens");
    assert_eq!(
        marker(&db),
        codec::FORMAT_VERSION,
        "the marker was rewritten"
    );
    // One older than the previous is refused.
    db.open_tree("meta")
        .unwrap()
        .insert(
            FORMAT_VERSION_KEY,
            codec::encode(&(codec::PREVIOUS_FORMAT_VERSION - 1)).unwrap(),
        )
        .unwrap();
    db.flush().unwrap();
    drop(db);
    assert!(matches!(
        open_db(dir.path(), &options),
        Err(OpenError::FormatVersion { .. })
    ));
}

/// A data directory keeps the cluster id it was bootstrapped with: reopening it for
/// another cluster is refused naming both ids; with none configured the stored one
/// is used.
#[test]
fn a_data_directory_of_another_cluster_is_refused_naming_both_ids() {
    use super::identity::ClusterIdentity;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().display().to_string();
    {
        let db = open_without_flusher(dir.path());
        let identity = ClusterIdentity::open(&db, &path, Some("alpha"), None).unwrap();
        assert_eq!(identity.get().as_deref(), Some("alpha"));
    }
    let db = open_without_flusher(dir.path());
    let refused = ClusterIdentity::open(&db, &path, Some("beta"), Some("derived".into()));
    let message = refused.unwrap_err().to_string();
    assert!(
        message.contains("\"alpha\"") && message.contains("\"beta\""),
        "{message}"
    );
    let reopened = ClusterIdentity::open(&db, &path, None, Some("derived".into())).unwrap();
    assert_eq!(reopened.get().as_deref(), Some("alpha"));
}

/// A joining node (no id configured, not bootstrapping) adopts the first cluster id
/// it hears, durably, and from then on refuses any other, and RPCs without one.
#[tokio::test]
async fn a_joining_node_adopts_its_clusters_id_once_and_refuses_others() {
    use super::identity::ClusterIdentity;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().display().to_string();
    {
        let db = open_without_flusher(dir.path());
        let identity = ClusterIdentity::open(&db, &path, None, None).unwrap();
        assert_eq!(identity.get(), None);
        identity.admit(None).await.unwrap();
        identity.admit(Some("gamma")).await.unwrap();
        identity.admit(Some("gamma")).await.unwrap();
        let other = identity.admit(Some("delta")).await.unwrap_err();
        assert_eq!(other.this, "gamma");
        assert!(identity.admit(None).await.is_err());
        assert!(identity.admit(Some("not valid!")).await.is_err());
    }
    let db = open_without_flusher(dir.path());
    let reopened = ClusterIdentity::open(&db, &path, None, None).unwrap();
    assert_eq!(reopened.get().as_deref(), Some("gamma"), "adopted durably");
}

#[test]
fn every_initial_member_derives_the_same_cluster_id_and_another_secret_another() {
    use super::identity::{derive, valid};
    let id = derive("secret-0123456789abcdef", &[1, 2, 3]);
    assert_eq!(id, derive("secret-0123456789abcdef", &[1, 2, 3]));
    assert_ne!(id, derive("secret-0123456789abcdeg", &[1, 2, 3]));
    assert_ne!(id, derive("secret-0123456789abcdef", &[1, 2]));
    assert!(valid(&id) && id.len() == 16, "{id}");
}

/// A sled database without its background flusher, reopened in the same test after
/// an earlier handle was dropped. sled releases the directory's file lock only when
/// its last internal reference goes, and its I/O pool can hold one for a moment after
/// the drop (on a loaded machine the reopen failed with `WouldBlock`), so the open
/// waits on that condition: it retries while the lock is held, up to
/// [`REOPEN_ATTEMPTS`] times, and fails on any other error at once.
fn open_without_flusher(path: &std::path::Path) -> sled::Db {
    for _ in 0..REOPEN_ATTEMPTS {
        match sled::Config::new().path(path).flush_every_ms(None).open() {
            Ok(db) => return db,
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("opening {}: {e}", path.display()),
        }
    }
    panic!(
        "{} stayed locked after {REOPEN_ATTEMPTS} attempts",
        path.display()
    );
}

/// How often [`open_without_flusher`] retries a directory whose lock an earlier,
/// dropped handle still holds (20 ms apart: 10 s in all).
const REOPEN_ATTEMPTS: u32 = 500;

mod early_leader_acks {
    //! `durable`'s three rules at the store: which appends are acknowledged before
    //! their flush, the committed id stored, and apply waiting for the durable point.
    use openraft::storage::{RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::raft_types::{Entry, LogId, Vote};
    use crate::store::log_store::Written;

    fn blank(term: u64, leader: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, leader), index),
            payload: EntryPayload::Blank,
        }
    }

    fn stores(dir: &std::path::Path) -> (LogStore, StateMachineStore) {
        let db = open_db(
            dir,
            &StoreOptions {
                cache_capacity_bytes: 16 * 1024 * 1024,
            },
        )
        .expect("open");
        open(&db, dir, crate::watch::Hub::default(), None).expect("open stores")
    }

    #[tokio::test]
    async fn only_a_leaders_own_entries_are_acknowledged_before_their_flush() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = stores(dir.path());
        let mut log = log.owned_by(1);
        // Leader of term 2: its own entries flush in the background.
        log.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
        let written = log.write_entries(vec![blank(2, 1, 1), blank(2, 1, 2)]);
        assert_eq!(written.await.unwrap(), Written::Flushing);
        log.durable().wait_for(blank(2, 1, 2).log_id).await;
        // A candidate's vote (not committed) is not leadership.
        log.save_vote(&Vote::new(3, 1)).await.unwrap();
        let written = log.write_entries(vec![blank(2, 1, 3)]).await.unwrap();
        assert_eq!(written, Written::Flushed);
        // Node 2 leads term 4: its entries, and this node's own of an earlier term
        // sent back by it, are on disk before they are acknowledged.
        log.save_vote(&Vote::new_committed(4, 2)).await.unwrap();
        let written = log.write_entries(vec![blank(2, 1, 4)]).await.unwrap();
        assert_eq!(written, Written::Flushed);
        assert_eq!(log.durable().get(), Some(blank(2, 1, 4).log_id));
        let written = log.write_entries(vec![blank(4, 2, 5)]).await.unwrap();
        assert_eq!(written, Written::Flushed);
        assert_eq!(log.durable().get(), Some(blank(4, 2, 5).log_id));
        // Leader again (term 5): an append mixing in another leader's entry flushes.
        log.save_vote(&Vote::new_committed(5, 1)).await.unwrap();
        let mixed = vec![blank(4, 2, 6), blank(5, 1, 7)];
        assert_eq!(log.write_entries(mixed).await.unwrap(), Written::Flushed);
        // A store that does not know its node (openraft's suite) always flushes.
        let dir = tempfile::tempdir().unwrap();
        let (mut anonymous, _) = stores(dir.path());
        anonymous
            .save_vote(&Vote::new_committed(2, 1))
            .await
            .unwrap();
        let written = anonymous.write_entries(vec![blank(2, 1, 1)]).await.unwrap();
        assert_eq!(written, Written::Flushed);
    }

    #[tokio::test]
    async fn the_committed_id_stored_never_passes_the_durable_point() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = stores(dir.path());
        log.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
        log.write_entries(vec![blank(2, 1, 1), blank(2, 1, 2)])
            .await
            .unwrap();
        log.save_committed(Some(blank(2, 1, 5).log_id))
            .await
            .unwrap();
        assert_eq!(
            log.read_committed().await.unwrap(),
            Some(blank(2, 1, 2).log_id)
        );
    }

    #[tokio::test]
    async fn an_entry_is_applied_only_once_the_durable_point_covers_it() {
        let dir = tempfile::tempdir().unwrap();
        let (_, machine) = stores(dir.path());
        let durable = durable::Durable::new(None);
        let mut machine = machine.applying_when_durable(durable.clone());
        let apply = {
            let mut machine = machine.clone();
            tokio::spawn(async move { machine.apply(vec![blank(2, 1, 1)]).await })
        };
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        assert!(!apply.is_finished(), "applied before its flush");
        assert_eq!(machine.applied_state().await.unwrap().0, None);
        durable.advance(blank(2, 1, 1).log_id);
        apply.await.unwrap().unwrap();
        assert_eq!(
            machine.applied_state().await.unwrap().0,
            Some(blank(2, 1, 1).log_id)
        );
    }

    #[tokio::test]
    async fn an_installed_snapshot_moves_the_durable_point_to_its_last_entry() {
        let source_dir = tempfile::tempdir().unwrap();
        let (_, mut source) = stores(source_dir.path());
        source
            .apply(vec![blank(2, 1, 1), blank(2, 1, 2)])
            .await
            .unwrap();
        let snapshot = source.build_snapshot().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (_, machine) = stores(dir.path());
        let durable = durable::Durable::new(None);
        let mut machine = machine.applying_when_durable(durable.clone());
        machine
            .install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await
            .unwrap();
        assert_eq!(durable.get(), Some(blank(2, 1, 2).log_id));
    }
}
