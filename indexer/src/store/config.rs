//! How the store keeps data: the flags of `sawmill indexer` that concern storage.

use std::path::PathBuf;
use std::time::Duration;

use crate::partition::Granularity;
pub use crate::store::archive::ArchiveConfig;

/// How the store keeps data. Every field is a flag of `sawmill indexer`.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Directory holding the write-ahead log and the partitions (see `layout.rs`).
    pub data: PathBuf,
    /// Longest wait between an acknowledgement and the record being searchable.
    pub commit_interval: Duration,
    /// How much time one partition covers.
    pub granularity: Granularity,
    /// Partitions entirely older than this are removed.
    pub retention: Option<Duration>,
    /// When the partitions take more than this, the oldest are removed.
    pub max_disk: Option<u64>,
    /// Indexing memory per open partition writer, in bytes.
    pub writer_memory: usize,
    /// Indexing threads per partition writer.
    pub writer_threads: usize,
    /// The replica group this indexer belongs to: replicas of a group hold the same records.
    pub group: String,
    /// The object store sealed partitions go to, with `--object-store`.
    pub archive: Option<ArchiveConfig>,
}

impl StoreConfig {
    pub fn new(data: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            data: data.into(),
            commit_interval: Duration::from_secs(1),
            granularity: Granularity::Day,
            retention: None,
            max_disk: None,
            writer_memory: 128 << 20,
            writer_threads: std::thread::available_parallelism()
                .map(|n| n.get().min(4))
                .unwrap_or(2),
            group: "default".into(),
            archive: None,
        }
    }
}
