//! The current snapshot as a file of its own in the data directory
//! (`conclave-snapshot`), beside sled's files rather than in a sled tree.
//!
//! A snapshot of a large state is tens of megabytes. Stored in sled, its write and
//! fsync held up every log append's flush on that node for up to 1.3 s (sled's flush
//! covers the whole database, `../shared/OPENRAFT.md` §7), the leader's appends timed
//! out and followers came close to campaigning (#16). A file is written and synced
//! on its own: a new file, fsync, rename over the old one, fsync of the directory,
//! so a crash leaves either the old snapshot or the new one, never a mix.
//!
//! Data directories of the previous release keep it in sled's `snapshot` tree: it is
//! read from there when there is no file (`state_machine`), and removed from there
//! once a file replaces it. Must not depend on anything but `std`.

use std::io::Write;
use std::path::{Path, PathBuf};

const FILE_NAME: &str = "conclave-snapshot";
const PARTIAL_NAME: &str = "conclave-snapshot.partial";

/// The snapshot file of data directory `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// The stored snapshot's bytes, if the directory has a snapshot file.
pub fn read(dir: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::read(path(dir)) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces the snapshot file with `bytes`, durably: when this returns `Ok` the new
/// snapshot survives a crash. Blocking (seconds for a large state): call it off the
/// runtime.
pub fn write(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let partial = dir.join(PARTIAL_NAME);
    let mut file = std::fs::File::create(&partial)?;
    file.write_all(bytes)?;
    // FSYNC: the new snapshot's bytes are on disk before it takes the old one's name.
    file.sync_all()?;
    drop(file);
    std::fs::rename(&partial, path(dir))?;
    // FSYNC: the rename (the directory entry) is on disk: the snapshot is durable.
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_replaces_the_snapshot_and_leaves_no_partial_file() {
        let dir = tempfile::tempdir().expect("a temp dir");
        assert_eq!(read(dir.path()).expect("read"), None);
        write(dir.path(), b"first").expect("write");
        write(dir.path(), b"second").expect("write");
        assert_eq!(
            read(dir.path()).expect("read").as_deref(),
            Some(&b"second"[..])
        );
        assert!(!dir.path().join(PARTIAL_NAME).exists());
    }

    #[test]
    fn a_partial_file_left_by_a_crash_is_not_read_and_is_overwritten() {
        let dir = tempfile::tempdir().expect("a temp dir");
        write(dir.path(), b"whole").expect("write");
        std::fs::write(dir.path().join(PARTIAL_NAME), b"torn").expect("a torn write");
        assert_eq!(
            read(dir.path()).expect("read").as_deref(),
            Some(&b"whole"[..])
        );
        write(dir.path(), b"next").expect("write");
        assert_eq!(
            read(dir.path()).expect("read").as_deref(),
            Some(&b"next"[..])
        );
    }
}
