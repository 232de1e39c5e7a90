//! The store: the write path from an acknowledged batch to searchable, committed partitions,
//! one module per stage, in the order a record takes:
//!
//! - `log`: the log thread takes ingest requests, drops duplicates, appends the rest to the
//!   write-ahead log with one fsync per group of requests, and only then answers them.
//! - `index`: the index thread adds those records to their time partitions and commits
//!   every partition it touched once per commit interval, recording in each commit the log
//!   position it covers; `checkpoint` then records how far every partition reaches, and the
//!   log is trimmed behind it.
//! - `retention`: the index thread removes partitions past `--retention` or `--max-disk`.
//! - `seal` (with `--object-store`): a thread that uploads partitions past `--seal-after`
//!   as splits, adopts the group's splits sealed by other replicas, and removes local
//!   copies past `--local-retention`; `archive` is what it shares with searches and the
//!   index thread (the manifest, the cache, upload status).
//! - `recovery`: at start, the partitions on disk and a replay of the log beyond the
//!   checkpoint.
//!
//! When indexing fails (a full disk), the log keeps every record: the index thread drops its
//! writers, whose uncommitted records are lost with them, and retries by itself, adding
//! everything the log holds past what each partition has committed, as a restart would.
//! Where each file lives is `layout.rs`'s business.

mod archive;
mod checkpoint;
mod config;
mod identity;
mod index;
mod log;
mod recovery;
mod retention;
mod seal;
mod shared;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{Error, Result};
use crate::lock::DirLock;
use crate::metrics::{Metrics, M};
use crate::partition::Partitions;
use crate::record::Record;
use crate::repair::{DigestCache, RepairStatus};
use crate::schema::Fields;

pub use archive::Archive;
pub use config::{ArchiveConfig, StoreConfig};
pub use identity::check_group;
pub use log::Outcome;
pub use retention::check_age;

use index::{Indexer, ToIndex};
use log::{LogThread, WalRequest};
use seal::SealLoop;
use shared::Shared;

/// The shared handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    threads: Arc<Threads>,
}

/// The way into the log thread, and both threads, for a stop.
struct Threads {
    /// Taken at a stop: the log thread ends once the last request is in.
    wal_tx: Mutex<Option<mpsc::Sender<WalRequest>>>,
    handles: Mutex<Vec<JoinHandle<()>>>,
    /// The seal loop's way into the index thread, taken at a stop so the index thread
    /// sees its last sender go.
    index_tx: Arc<Mutex<Option<SyncSender<ToIndex>>>>,
    /// Tells the seal loop to stop.
    stop: Arc<AtomicBool>,
}

impl Store {
    /// Opens (or creates) the data directory, replays what the log holds beyond the last
    /// commit, and starts the log and index threads.
    pub fn open(config: StoreConfig) -> Result<Store> {
        let data = config.data.clone();
        std::fs::create_dir_all(&data).map_err(|e| Error::io(&data, e))?;
        let lock = DirLock::acquire(&data)?;
        let replica = identity::replica_id(&data)?;
        let partitions = recovery::open_partitions(&data)?;
        let (mut dedup, committed) = recovery::load_keys(&partitions)?;
        let checkpoint = checkpoint::read(&data)?;
        let metrics = Arc::new(Metrics::default());
        metrics.set(M::Partitions, partitions.len() as u64);
        let (searchable, _) = watch::channel(checkpoint);
        let fields = Fields::new();
        let archive = match &config.archive {
            Some(cfg) => {
                let rt = tokio::runtime::Handle::try_current().map_err(|_| Error::Store {
                    what: "the object store".into(),
                    message: "its client needs a tokio runtime: open the store from one".into(),
                })?;
                Some(Arc::new(Archive::open(
                    cfg.clone(),
                    config.granularity.seconds(),
                    &config.group,
                    &data,
                    fields.schema.clone(),
                    metrics.clone(),
                    rt,
                )?))
            }
            None => None,
        };
        let shared = Arc::new(Shared {
            config,
            replica,
            fields,
            partitions: Partitions::new(partitions),
            searchable,
            metrics,
            problem: Mutex::new(None),
            dedup: Arc::default(),
            repair: RepairStatus::default(),
            digests: DigestCache::default(),
            archive,
            _lock: lock,
        });

        let mut indexer = Indexer::new(shared.clone(), checkpoint);
        if let Some(a) = &shared.archive {
            // The group's history in the store: searchable at once, and its keys held, so
            // that repair copies from peers only what is not sealed. Read before the log
            // is replayed, so that a record for a partition only the store holds finds the
            // partition's splits.
            match a.rt.block_on(a.bucket.manifest()) {
                Ok(m) => seal::hold_keys(&mut dedup, &a.set_manifest(m)),
                Err(e) => {
                    tracing::warn!(error = %e, store = %a.bucket.describe(), "Could not read the group's manifest; the history in the object store is searchable once it can be read.");
                    a.failed(&e);
                }
            }
        }
        let (wal, replayed) =
            recovery::replay(&shared, &mut indexer, &mut dedup, checkpoint, &committed)?;
        // Before retention runs: it takes the keys of what it removes out of this set.
        *shared.dedup.lock().unwrap() = dedup;
        let end = wal.next_position();
        indexer.last_pos = end;
        indexer.commit();
        indexer.enforce_retention();
        shared.metrics.set(M::RecordsReplayed, replayed);
        tracing::info!(
            replica = %shared.replica,
            group = %shared.config.group,
            partitions = shared.partitions.read().len(),
            replayed,
            checkpoint,
            end,
            "Store opened."
        );
        indexer.update_gauges();
        let (wal_tx, wal_rx) = mpsc::channel(1024);
        let (index_tx, index_rx) = sync_channel(16);
        let seal_tx = index_tx.clone();
        let log = LogThread {
            wal,
            dedup: shared.dedup.clone(),
            index_tx,
        };
        let wal_shared = shared.clone();
        let t1 = std::thread::Builder::new()
            .name("sawmill-wal".into())
            .spawn(move || log.run(wal_rx, &wal_shared.metrics))
            .map_err(|e| Error::io(&data, e))?;
        let t2 = std::thread::Builder::new()
            .name("sawmill-index".into())
            .spawn(move || indexer.run(index_rx))
            .map_err(|e| Error::io(&data, e))?;
        let index_tx = Arc::new(Mutex::new(Some(seal_tx)));
        let stop = Arc::new(AtomicBool::new(false));
        if let Some(archive) = shared.archive.clone() {
            archive.start_downloads().map_err(|e| Error::io(&data, e))?;
            let seal = SealLoop {
                shared: shared.clone(),
                archive,
                index: index_tx.clone(),
                stop: stop.clone(),
            };
            // Not joined at a stop: an upload in flight may take a while, and what it was
            // sealing is still in the log and the partitions for the next start.
            std::thread::Builder::new()
                .name("sawmill-seal".into())
                .spawn(move || seal.run())
                .map_err(|e| Error::io(&data, e))?;
        }
        let threads = Arc::new(Threads {
            wal_tx: Mutex::new(Some(wal_tx)),
            handles: Mutex::new(vec![t1, t2]),
            index_tx,
            stop,
        });
        Ok(Store { shared, threads })
    }

    /// This replica's id, kept in its data directory.
    pub fn replica(&self) -> &str {
        &self.shared.replica
    }

    /// The replica group this indexer belongs to.
    pub fn group(&self) -> &str {
        &self.shared.config.group
    }

    /// Makes `records` durable (or recognizes them as duplicates) before returning.
    pub async fn ingest(&self, records: Vec<Record>) -> Result<Vec<Outcome>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let tx = self
            .threads
            .wal_tx
            .lock()
            .unwrap()
            .clone()
            .ok_or(Error::ShuttingDown)?;
        let (reply, rx) = oneshot::channel();
        tx.send(WalRequest { records, reply })
            .await
            .map_err(|_| Error::ShuttingDown)?;
        rx.await.map_err(|_| Error::ShuttingDown)?
    }

    pub fn retention(&self) -> Option<Duration> {
        self.shared.config.retention
    }

    /// `Some(reason)` while indexing fails: the log then keeps every record, and indexing
    /// is retried until it succeeds.
    pub fn problem(&self) -> Option<String> {
        self.shared.problem.lock().unwrap().clone()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    pub fn fields(&self) -> &Fields {
        &self.shared.fields
    }

    /// Watches the log position below which every record is searchable.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.searchable.subscribe()
    }

    /// Stops taking records, commits everything acknowledged, and waits for the threads.
    pub fn shutdown(&self) {
        self.threads.stop.store(true, Ordering::Relaxed);
        self.threads.index_tx.lock().unwrap().take();
        self.threads.wal_tx.lock().unwrap().take();
        let threads: Vec<_> = self.threads.handles.lock().unwrap().drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }

    /// A page of the senders after `after` with their `_seq` values held, as ranges, and
    /// the `after` of the next page: see [`crate::dedup::Dedup::seq_ranges`].
    pub fn seq_ranges(
        &self,
        after: Option<&str>,
        max: usize,
    ) -> (Vec<crate::dedup::SeqRanges>, Option<String>) {
        self.shared.dedup.lock().unwrap().seq_ranges(after, max)
    }

    /// Every sender's `_seq` values held, as ranges, listed a page at a time so that the
    /// log thread never waits long for the lock. Blocks on it: call off the async threads.
    pub fn all_seq_ranges(&self) -> Vec<crate::dedup::SeqRanges> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let (page, next) = self.seq_ranges(after.as_deref(), 10_000);
            all.extend(page);
            match next {
                Some(n) => after = Some(n),
                None => return all,
            }
        }
    }

    /// Of `keys` (`_key` values), those not held.
    pub fn lacking_ids(&self, keys: Vec<String>) -> Vec<String> {
        let dedup = self.shared.dedup.lock().unwrap();
        keys.into_iter().filter(|k| !dedup.has_id(k)).collect()
    }

    /// How far behind its peers this replica is.
    pub fn repair_status(&self) -> &RepairStatus {
        &self.shared.repair
    }

    /// The `_key` digests of the segments seen, for repair.
    pub fn digest_cache(&self) -> &DigestCache {
        &self.shared.digests
    }

    pub fn config(&self) -> &StoreConfig {
        &self.shared.config
    }

    /// The object store, with `--object-store`.
    pub fn archive(&self) -> Option<&Arc<Archive>> {
        self.shared.archive.as_ref()
    }

    /// The starts of the partitions the object store holds: repair leaves their `_key`s
    /// alone (their keys are held by the group's splits).
    pub fn sealed_starts(&self) -> std::collections::BTreeSet<i64> {
        self.archive()
            .map(|a| a.manifest().starts())
            .unwrap_or_default()
    }

    /// The partitions, for searches.
    pub fn partitions(&self) -> &Partitions {
        &self.shared.partitions
    }
}
