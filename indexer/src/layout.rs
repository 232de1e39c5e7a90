//! The data directory's layout, the one place that names what lives in it:
//!
//! ```text
//! DATA/
//!   LOCK                        held (flock) while an indexer uses the directory
//!   checkpoint                  log position every partition has committed up to
//!   replica                     this replica's id (see `store/identity.rs`)
//!   wal/                        the write-ahead log's segments (see `wal.rs`)
//!   partitions/
//!     p-001764201600-86400/     one tantivy index per hour or day of `ts`
//!       INCOMPLETE              present while it holds only records that arrived after
//!                               it left local disk for the object store
//!     .trash-p-.../             a partition retention is removing
//!     .adopt-p-.../             the group's copy of a partition, from the object store,
//!                               being put in place of this replica's own
//!   cache/                      partitions read from the object store (`objstore::Cache`)
//!   upload/                     splits being uploaded to the object store
//! ```

use std::path::{Path, PathBuf};

/// The lock file that keeps a second indexer out.
pub fn lock_file(data: &Path) -> PathBuf {
    data.join("LOCK")
}

/// The file holding the checkpoint, a decimal log position.
pub fn checkpoint_file(data: &Path) -> PathBuf {
    data.join("checkpoint")
}

/// Where a new checkpoint is written before it is renamed over the old one.
pub fn checkpoint_tmp(data: &Path) -> PathBuf {
    data.join("checkpoint.tmp")
}

/// The file holding the replica's id, 32 hex digits.
pub fn replica_file(data: &Path) -> PathBuf {
    data.join("replica")
}

/// Where a new replica id is written before it is renamed into place.
pub fn replica_tmp(data: &Path) -> PathBuf {
    data.join("replica.tmp")
}

/// The write-ahead log's directory.
pub fn wal_dir(data: &Path) -> PathBuf {
    data.join("wal")
}

/// The directory holding one directory per partition.
pub fn partitions_dir(data: &Path) -> PathBuf {
    data.join("partitions")
}

/// A partition's directory name; names sort in time order: `p-001764201600-86400`.
pub fn partition_name(start: i64, secs: i64) -> String {
    format!("p-{start:012}-{secs}")
}

/// (start, seconds covered) of a partition directory's name.
pub fn parse_partition_name(name: &str) -> Option<(i64, i64)> {
    let rest = name.strip_prefix("p-")?;
    // From the right: a start before 1970 is negative (`p--00000086400-86400`).
    let (start, secs) = rest.rsplit_once('-')?;
    Some((start.parse().ok()?, secs.parse().ok()?))
}

/// Whether a partition's index was finished: tantivy writes this file before any record
/// goes in, so a directory without it died while being created.
pub fn partition_is_complete(dir: &Path) -> bool {
    dir.join("meta.json").exists()
}

/// In a partition's directory: it holds only the records that arrived after it left local
/// disk, until the group's splits of it are read into it (see `store/seal.rs`).
pub const INCOMPLETE: &str = "INCOMPLETE";

/// Prefix of a partition directory being removed.
const TRASH: &str = ".trash-";
/// Prefix of a partition directory being assembled from the object store.
const ADOPT: &str = ".adopt-";

/// Where partitions read from the object store are cached.
pub fn cache_dir(data: &Path) -> PathBuf {
    data.join("cache")
}

/// Where a split is written before it is uploaded.
pub fn upload_dir(data: &Path) -> PathBuf {
    data.join("upload")
}

/// Where the group's copy of partition `dir` is assembled before it takes its place.
pub fn adopt_dir(dir: &Path) -> PathBuf {
    prefixed(dir, ADOPT)
}

/// The name a partition's directory takes while it is removed: renamed first, so a crash
/// halfway through never leaves half a partition that looks whole.
pub fn trash_dir(dir: &Path) -> PathBuf {
    prefixed(dir, TRASH)
}

/// `dir` beside itself, its name behind `prefix`.
fn prefixed(dir: &Path, prefix: &str) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    dir.with_file_name(format!("{prefix}{name}"))
}

/// The partition a `.adopt-` directory was assembled for, if `name` is one.
pub fn adopted_name(name: &str) -> Option<&str> {
    name.strip_prefix(ADOPT)
}

/// Whether `name` is a partition directory retention was removing when the process died
/// (or one being assembled from the object store: both are removed at start).
pub fn is_trash(name: &str) -> bool {
    name.starts_with(TRASH) || name.starts_with(ADOPT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_round_trip_and_sort_in_time_order() {
        for (start, secs) in [(1_764_201_600, 86_400), (-86_400, 86_400), (0, 3600)] {
            assert_eq!(
                parse_partition_name(&partition_name(start, secs)),
                Some((start, secs))
            );
        }
        assert!(partition_name(3600, 3600) < partition_name(7200, 3600));
        let t = trash_dir(Path::new("/d/partitions/p-1"));
        assert_eq!(t, Path::new("/d/partitions/.trash-p-1"));
        assert!(is_trash(".trash-p-1") && !is_trash("p-1"));
    }
}
