//! What the store's threads and its handles share.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::dedup::Dedup;
use crate::lock::DirLock;
use crate::metrics::Metrics;
use crate::partition::Partitions;
use crate::repair::{DigestCache, RepairStatus};
use crate::schema::Fields;
use crate::store::archive::Archive;
use crate::store::config::StoreConfig;

pub struct Shared {
    pub config: StoreConfig,
    /// This replica's id, kept in the data directory.
    pub replica: String,
    pub fields: Fields,
    pub partitions: Partitions,
    /// Log position below which every record is searchable.
    pub searchable: watch::Sender<u64>,
    pub metrics: Arc<Metrics>,
    /// Why the store needs an operator, if it does (shown by `/healthz`).
    pub problem: Mutex<Option<String>>,
    /// The idempotency keys held: the log thread's, read by repair.
    pub dedup: Arc<Mutex<Dedup>>,
    /// How far behind its peers this replica is (`/healthz`).
    pub repair: RepairStatus,
    /// The `_key` digests of the segments seen: one cache for the holdings this replica
    /// serves and the comparisons it makes, so neither hashes what the other did.
    pub digests: DigestCache,
    /// The object store, with `--object-store`.
    pub archive: Option<Arc<Archive>>,
    /// Held for as long as anything uses the data directory.
    pub _lock: DirLock,
}
