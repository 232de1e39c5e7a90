//! The store: the write path from an acknowledged batch to searchable, committed partitions.
//!
//! Two threads own the writing. The log thread takes ingest requests, drops duplicates,
//! appends the rest to the write-ahead log with one fsync per group of requests, and only
//! then answers them. The index thread adds those records to their time partitions and
//! commits every partition it touched once per commit interval, recording in each commit
//! the log position it covers; the log is trimmed behind the slowest partition.
//!
//! When indexing fails (a full disk), the log keeps every record: the index thread drops its
//! writers, whose uncommitted records are lost with them, and retries by itself, adding
//! everything the log holds past what each partition has committed, as a restart would.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tantivy::{IndexWriter, TantivyDocument};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot, watch};

use crate::dedup::Dedup;
use crate::error::{Error, Result};
use crate::lock::DirLock;
use crate::metrics::{add_duration, Metrics};
use crate::partition::{parse_dir_name, Granularity, Partition};
use crate::record::Record;
use crate::schema::Fields;
use crate::wal::{self, encode_frame, Wal};

/// How the store keeps data. Every field is a flag of `sawmill indexer`.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Directory holding the write-ahead log and the partitions.
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
        }
    }
}

/// What became of one record of an ingest request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Durable, with its id (its write-ahead log position).
    Stored(u64),
    /// Already held; nothing stored.
    Duplicate,
}

struct WalRequest {
    records: Vec<Record>,
    reply: oneshot::Sender<Result<Vec<Outcome>>>,
}

struct IndexBatch {
    records: Vec<(u64, Record)>,
    /// The log position just past the last record.
    end: u64,
}

/// The shared handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub config: StoreConfig,
    pub fields: Fields,
    pub partitions: RwLock<BTreeMap<i64, Arc<Partition>>>,
    wal_tx: Mutex<Option<mpsc::Sender<WalRequest>>>,
    /// Log position below which every record is searchable.
    pub searchable: watch::Sender<u64>,
    pub metrics: Arc<Metrics>,
    /// Why the store needs an operator, if it does (shown by `/healthz`).
    pub problem: Mutex<Option<String>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    _lock: DirLock,
}

const MAX_OPEN_WRITERS: usize = 4;
/// Prefix of a partition directory being removed.
const TRASH: &str = ".trash-";
const TICK: Duration = Duration::from_secs(10);

impl Store {
    /// Opens (or creates) the data directory, replays what the log holds beyond the last
    /// commit, and starts the log and index threads.
    pub fn open(config: StoreConfig) -> Result<Store> {
        let data = config.data.clone();
        std::fs::create_dir_all(&data).map_err(|e| Error::io(&data, e))?;
        let lock = DirLock::acquire(&data)?;
        let fields = Fields::new();
        let metrics = Arc::new(Metrics::default());
        let part_root = data.join("partitions");
        std::fs::create_dir_all(&part_root).map_err(|e| Error::io(&part_root, e))?;

        let mut partitions = BTreeMap::new();
        for entry in std::fs::read_dir(&part_root).map_err(|e| Error::io(&part_root, e))? {
            let entry = entry.map_err(|e| Error::io(&part_root, e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with(TRASH) {
                // Retention was removing it when the process died.
                let _ = std::fs::remove_dir_all(entry.path());
                continue;
            }
            let Some((start, secs)) = parse_dir_name(&name) else {
                continue;
            };
            if !entry.path().join("meta.json").exists() {
                // Died while creating it: tantivy writes meta.json before any record goes in.
                tracing::warn!(partition = %entry.path().display(), "Removing a partition that was never finished.");
                let _ = std::fs::remove_dir_all(entry.path());
                continue;
            }
            let p = Partition::open(entry.path(), start, secs)?;
            partitions.insert(start, Arc::new(p));
        }

        let mut dedup = Dedup::default();
        let mut committed = HashMap::new();
        for p in partitions.values() {
            load_keys(p, &mut dedup)?;
            committed.insert(p.start, p.committed_position()?);
        }
        let checkpoint = read_checkpoint(&data)?;
        metrics.partitions.store(partitions.len() as u64, Relaxed);
        let (searchable, _) = watch::channel(checkpoint);
        let (wal_tx, wal_rx) = mpsc::channel(1024);
        let shared = Arc::new(Shared {
            config,
            fields,
            partitions: RwLock::new(partitions),
            wal_tx: Mutex::new(Some(wal_tx)),
            searchable,
            metrics,
            problem: Mutex::new(None),
            threads: Mutex::new(Vec::new()),
            _lock: lock,
        });

        // Replay straight into the partitions, so memory stays bounded however much the
        // log holds beyond the last commit.
        let mut indexer = Indexer::new(shared.clone(), checkpoint);
        let mut replayed = 0u64;
        let wal = Wal::open(&data.join("wal"), checkpoint, |pos, payload| {
            if let Some(rec) = decode_frame(pos, payload, &shared.metrics) {
                if let Some(k) = &rec.key {
                    dedup.insert(k);
                }
                if indexer.replay(pos, rec, &committed) {
                    replayed += 1;
                }
            }
        })?;
        let end = wal.next_position();
        indexer.last_pos = end;
        indexer.commit();
        indexer.enforce_retention();
        shared.metrics.records_replayed.store(replayed, Relaxed);
        tracing::info!(
            partitions = shared.partitions.read().unwrap().len(),
            replayed,
            checkpoint,
            end,
            "Store opened."
        );
        indexer.update_gauges();
        let (index_tx, index_rx) = sync_channel(16);
        let wal_shared = shared.clone();
        let t1 = std::thread::Builder::new()
            .name("sawmill-wal".into())
            .spawn(move || wal_loop(wal, dedup, wal_rx, index_tx, &wal_shared.metrics))
            .map_err(|e| Error::io(&data, e))?;
        let t2 = std::thread::Builder::new()
            .name("sawmill-index".into())
            .spawn(move || indexer.run(index_rx))
            .map_err(|e| Error::io(&data, e))?;
        shared.threads.lock().unwrap().extend([t1, t2]);
        Ok(Store { shared })
    }

    /// Makes `records` durable (or recognizes them as duplicates) before returning.
    pub async fn ingest(&self, records: Vec<Record>) -> Result<Vec<Outcome>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let tx = self
            .shared
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
        self.shared.wal_tx.lock().unwrap().take();
        let threads: Vec<_> = self.shared.threads.lock().unwrap().drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }

    /// Partitions overlapping `[lo, hi]` (epoch µs), newest first.
    pub(crate) fn partitions_between(&self, lo: i64, hi: i64) -> Vec<Arc<Partition>> {
        let map = self.shared.partitions.read().unwrap();
        map.values()
            .rev()
            .filter(|p| p.overlaps(lo, hi))
            .cloned()
            .collect()
    }
}

/// Adds every idempotency key a partition holds to `dedup`.
fn load_keys(p: &Partition, dedup: &mut Dedup) -> Result<()> {
    let searcher = p.reader.searcher();
    for seg in searcher.segment_readers() {
        let ff = seg.fast_fields();
        let seq = ff.u64("_seq")?;
        if let Some(src) = ff.str("_src")? {
            let mut names: Vec<Option<String>> = vec![None; src.num_terms()];
            for doc in 0..seg.max_doc() {
                let (Some(ord), Some(n)) = (src.ords().first(doc), seq.first(doc)) else {
                    continue;
                };
                let name = names[ord as usize].get_or_insert_with(|| {
                    let mut s = String::new();
                    let _ = src.ord_to_str(ord, &mut s);
                    s
                });
                dedup.insert_seq(name, n);
            }
        }
        if let Some(key) = ff.str("_key")? {
            let mut s = String::new();
            for doc in 0..seg.max_doc() {
                if let Some(ord) = key.ords().first(doc) {
                    s.clear();
                    let _ = key.ord_to_str(ord, &mut s);
                    dedup.insert(&crate::record::DedupKey::Id(s.clone()));
                }
            }
        }
    }
    Ok(())
}

/// Where each partition's last commit reaches in the log, from its files.
fn committed_positions(shared: &Shared) -> Result<HashMap<i64, u64>> {
    let map = shared.partitions.read().unwrap();
    map.values()
        .map(|p| Ok((p.start, p.committed_position()?)))
        .collect()
}

/// A record of the log, or `None` (logged and counted) if it cannot be read back.
fn decode_frame(pos: u64, payload: &[u8], metrics: &Metrics) -> Option<Record> {
    match std::str::from_utf8(payload)
        .map_err(|e| e.to_string())
        .and_then(Record::from_source)
    {
        Ok(r) => Some(r),
        Err(e) => {
            metrics.index_errors.fetch_add(1, Relaxed);
            tracing::error!(position = pos, error = %e, "Unreadable record in the write-ahead log.");
            None
        }
    }
}

fn checkpoint_path(data: &Path) -> PathBuf {
    data.join("checkpoint")
}

fn read_checkpoint(data: &Path) -> Result<u64> {
    let path = checkpoint_path(data);
    match std::fs::read_to_string(&path) {
        Ok(s) => s.trim().parse().map_err(|_| {
            Error::io(
                &path,
                std::io::Error::other(format!("checkpoint `{}` is not a number", s.trim())),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(Error::io(&path, e)),
    }
}

fn write_checkpoint(data: &Path, pos: u64) -> Result<()> {
    let path = checkpoint_path(data);
    let tmp = data.join("checkpoint.tmp");
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, pos.to_string().as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(data)?.sync_all()
    })();
    res.map_err(|e| Error::io(&path, e))
}

/// Copies an error for every request of a failed group write.
fn copy_error(e: &Error) -> Error {
    match e {
        Error::DiskFull { path } => Error::DiskFull { path: path.clone() },
        Error::Io { path, source } => Error::Io {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        other => Error::Io {
            path: PathBuf::new(),
            source: std::io::Error::other(other.to_string()),
        },
    }
}

fn wal_loop(
    mut wal: Wal,
    mut dedup: Dedup,
    mut rx: mpsc::Receiver<WalRequest>,
    index_tx: SyncSender<IndexBatch>,
    metrics: &Metrics,
) {
    let mut buf = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        // Everyone waiting shares one fsync.
        let mut group = vec![first];
        let mut n = group[0].records.len();
        while n < 100_000 {
            match rx.try_recv() {
                Ok(r) => {
                    n += r.records.len();
                    group.push(r);
                }
                Err(_) => break,
            }
        }
        buf.clear();
        let base = wal.next_position();
        let mut outcomes = Vec::with_capacity(group.len());
        let mut batch = Vec::with_capacity(n);
        let mut replies = Vec::with_capacity(group.len());
        for req in group {
            let mut out = Vec::with_capacity(req.records.len());
            for rec in req.records {
                if let Some(k) = &rec.key {
                    if !dedup.insert(k) {
                        out.push(Outcome::Duplicate);
                        continue;
                    }
                }
                let pos = base + buf.len() as u64;
                encode_frame(&mut buf, rec.source.as_bytes());
                out.push(Outcome::Stored(pos));
                batch.push((pos, rec));
            }
            outcomes.push(out);
            replies.push(req.reply);
        }
        let started = Instant::now();
        let res = if buf.is_empty() {
            Ok(())
        } else {
            wal.append(&buf)
        };
        add_duration(&metrics.wal_sync_micros, started.elapsed());
        match res {
            Ok(()) => {
                metrics.wal_writes.fetch_add(1, Relaxed);
                metrics
                    .wal_bytes_written
                    .fetch_add(buf.len() as u64, Relaxed);
                for (reply, out) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(out));
                }
                if !batch.is_empty() {
                    let end = wal.next_position();
                    if index_tx
                        .send(IndexBatch {
                            records: batch,
                            end,
                        })
                        .is_err()
                    {
                        tracing::error!(
                            "Index thread is gone; records stay in the write-ahead log for replay."
                        );
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "Write-ahead log write failed; the requests are answered with an error.");
                for (_, rec) in &batch {
                    if let Some(k) = &rec.key {
                        dedup.remove(k);
                    }
                }
                for reply in replies {
                    let _ = reply.send(Err(copy_error(&e)));
                }
            }
        }
    }
}

/// The index thread's state: open partition writers and what they hold uncommitted.
struct Indexer {
    shared: Arc<Shared>,
    writers: HashMap<i64, IndexWriter<TantivyDocument>>,
    dirty: HashSet<i64>,
    /// Log position just past the last record added.
    last_pos: u64,
    /// The last checkpoint written: every partition holds every record before it.
    checkpoint: u64,
    deadline: Option<Instant>,
    /// Set after an indexing error: records are then left to the log until a retry adds
    /// everything past `checkpoint` again.
    failed: bool,
    /// When to retry after a failure, and the wait after the next one.
    retry_at: Option<Instant>,
    retry_delay: Duration,
    /// Partitions whose writers were dropped by a failure: they may hold segment files
    /// flushed but never committed, which only tantivy's garbage collection removes.
    orphaned: HashSet<i64>,
}

/// The first retry after an indexing failure; each failed retry doubles the wait, up to
/// `RETRY_MAX`, so a disk that stays full costs little.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

impl Indexer {
    fn new(shared: Arc<Shared>, checkpoint: u64) -> Indexer {
        Indexer {
            shared,
            writers: HashMap::new(),
            dirty: HashSet::new(),
            last_pos: checkpoint,
            checkpoint,
            deadline: None,
            failed: false,
            retry_at: None,
            retry_delay: RETRY_MIN,
            orphaned: HashSet::new(),
        }
    }

    fn run(mut self, rx: Receiver<IndexBatch>) {
        let mut next_tick = Instant::now() + TICK;
        loop {
            let now = Instant::now();
            let until = [self.deadline, self.retry_at]
                .into_iter()
                .flatten()
                .fold(next_tick, Instant::min);
            match rx.recv_timeout(until.saturating_duration_since(now)) {
                Ok(batch) => self.add(batch),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.stop();
                    return;
                }
            }
            let now = Instant::now();
            if self.deadline.is_some_and(|d| now >= d) {
                self.commit();
            }
            if self.retry_at.is_some_and(|t| now >= t) {
                self.recover();
            }
            if now >= next_tick {
                self.enforce_retention();
                self.update_gauges();
                next_tick = now + TICK;
            }
        }
    }

    /// The last commit, and the one place that says whether it covers everything.
    fn stop(&mut self) {
        self.commit();
        // No retry here: it would add the whole log again, which can take long, and the
        // next start replays it anyway.
        if self.failed {
            tracing::error!(
                checkpoint = self.checkpoint,
                end = self.last_pos,
                "Index thread stopped with indexing failing; the acknowledged records from the checkpoint on stay in the write-ahead log and are replayed at the next start."
            );
        } else {
            tracing::info!(
                position = self.last_pos,
                "Index thread stopped; everything acknowledged is committed."
            );
        }
    }

    fn partition(&mut self, start: i64) -> Result<Arc<Partition>> {
        if let Some(p) = self.shared.partitions.read().unwrap().get(&start) {
            return Ok(p.clone());
        }
        let secs = self.shared.config.granularity.seconds();
        let root = self.shared.config.data.join("partitions");
        let p = Arc::new(Partition::create(&root, &self.shared.fields, start, secs)?);
        let mut map = self.shared.partitions.write().unwrap();
        map.insert(start, p.clone());
        self.shared
            .metrics
            .partitions
            .store(map.len() as u64, Relaxed);
        Ok(p)
    }

    fn writer(&mut self, start: i64) -> Result<&mut IndexWriter<TantivyDocument>> {
        if !self.writers.contains_key(&start) {
            let p = self.partition(start)?;
            let cfg = &self.shared.config;
            let w = p.index.writer_with_num_threads(
                cfg.writer_threads.max(1),
                cfg.writer_memory
                    .max(cfg.writer_threads.max(1) * (16 << 20)),
            )?;
            self.writers.insert(start, w);
        }
        Ok(self.writers.get_mut(&start).unwrap())
    }

    fn add(&mut self, batch: IndexBatch) {
        for (rid, rec) in batch.records {
            self.add_one(rid, rec);
        }
        self.last_pos = batch.end;
    }

    /// Adds a record read back from the log, unless its partition's last commit (in
    /// `committed`) holds it already. Returns whether it was added.
    fn replay(&mut self, pos: u64, rec: Record, committed: &HashMap<i64, u64>) -> bool {
        let start = self.shared.config.granularity.start_of(rec.ts);
        if committed.get(&start).copied().unwrap_or(0) > pos {
            return false;
        }
        self.add_one(pos, rec);
        true
    }

    fn add_one(&mut self, rid: u64, rec: Record) {
        // Everything before this record is added: what an early commit may claim.
        self.last_pos = rid;
        if self.failed {
            // The log holds it; the next retry adds it.
            return;
        }
        let start = self.shared.config.granularity.start_of(rec.ts);
        if !self.writers.contains_key(&start) && self.writers.len() >= MAX_OPEN_WRITERS {
            // Writers hold indexing memory: commit and close them before opening another.
            self.commit();
            self.writers.clear();
            if self.failed {
                return;
            }
        }
        let doc = self.shared.fields.document(rid, &rec);
        let res = self
            .writer(start)
            .and_then(|w| w.add_document(doc).map_err(Error::from));
        match res {
            Ok(_) => {
                self.dirty.insert(start);
                self.shared.metrics.records_indexed.fetch_add(1, Relaxed);
            }
            Err(e) => self.fail(format!("indexing record {rid} failed: {e}")),
        }
        if self.deadline.is_none() {
            self.deadline = Some(Instant::now() + self.shared.config.commit_interval);
        }
    }

    /// Drops every writer and leaves records to the log until `recover` succeeds.
    fn fail(&mut self, problem: String) {
        self.shared.metrics.index_errors.fetch_add(1, Relaxed);
        {
            let mut slot = self.shared.problem.lock().unwrap();
            if slot.is_none() {
                tracing::error!(%problem, "Indexing failed; the write-ahead log keeps every record, and indexing is retried by itself.");
            } else {
                tracing::warn!(%problem, "Indexing failed again.");
            }
            *slot = Some(format!("{problem}; indexing is retried by itself every few seconds and resumes once the cause is fixed (a full disk: free space or lower --retention / --max-disk); nothing acknowledged is lost: the write-ahead log keeps every record until it is indexed"));
        }
        self.failed = true;
        // A tantivy writer that failed has lost the records it held uncommitted, and maybe
        // indexing threads: its next commit would then claim records it does not hold (a
        // restart replayed nothing: 32,000 acknowledged records lost), and with no thread
        // left, adding blocks for good once its queue is full. Every writer goes; `recover`
        // adds their records again from the log.
        self.orphaned.extend(self.writers.keys().copied());
        self.writers.clear();
        self.dirty.clear();
        self.deadline = None;
        self.retry_at = Some(Instant::now() + self.retry_delay);
    }

    /// After a failure: adds every record the log holds past each partition's last commit
    /// to fresh writers, and commits them, as a restart would.
    fn recover(&mut self) {
        self.retry_at = None;
        let end = self.last_pos;
        let from = self.checkpoint;
        self.failed = false;
        let committed = match committed_positions(&self.shared) {
            Ok(c) => c,
            Err(e) => {
                return self
                    .retry_failed(end, format!("reading the partitions' commits failed: {e}"))
            }
        };
        // Review: the failed writers' flushed but uncommitted segments stay on disk until
        // tantivy collects them, and only a commit or an explicit call does. Without this, a
        // retry that filled the disk again left them holding the space an operator freed,
        // and every later retry failed at its first flush.
        for start in std::mem::take(&mut self.orphaned) {
            let collected = self
                .writer(start)
                .and_then(|w| w.garbage_collect_files().wait().map_err(Error::from));
            if let Err(e) = collected {
                self.orphaned.insert(start);
                return self
                    .retry_failed(end, format!("removing uncommitted segments failed: {e}"));
            }
        }
        let dir = self.shared.config.data.join("wal");
        let metrics = self.shared.metrics.clone();
        let mut added = 0u64;
        let res = wal::read(&dir, from, end, |pos, payload| {
            if let Some(rec) = decode_frame(pos, payload, &metrics) {
                added += u64::from(self.replay(pos, rec, &committed));
            }
            !self.failed
        });
        if let Err(e) = res {
            return self.retry_failed(end, format!("reading the write-ahead log failed: {e}"));
        }
        if self.failed {
            return self.retry_failed(end, String::new());
        }
        self.last_pos = end;
        self.commit();
        if self.failed {
            return self.retry_failed(end, String::new());
        }
        self.retry_delay = RETRY_MIN;
        self.shared.metrics.index_recoveries.fetch_add(1, Relaxed);
        *self.shared.problem.lock().unwrap() = None;
        tracing::info!(
            from,
            end,
            records = added,
            "Indexing recovered; every acknowledged record is committed."
        );
    }

    /// A retry failed (`problem` is empty when `fail` has said why): the next one covers
    /// the log up to `end` at least, and waits longer.
    fn retry_failed(&mut self, end: u64, problem: String) {
        self.last_pos = end;
        if !problem.is_empty() {
            self.fail(problem);
        }
        self.retry_delay = (self.retry_delay * 2).min(RETRY_MAX);
        self.retry_at = Some(Instant::now() + self.retry_delay);
        tracing::warn!(
            retry_in_ms = self.retry_delay.as_millis() as u64,
            "Indexing still fails; retrying later."
        );
    }

    /// Commits every partition written since the last commit, then makes them searchable.
    fn commit(&mut self) {
        self.deadline = None;
        if self.failed {
            // What the writers held is gone; `recover` commits it.
            return;
        }
        let started = Instant::now();
        let payload = self.last_pos.to_string();
        let dirty: Vec<i64> = self.dirty.drain().collect();
        for start in &dirty {
            let Some(w) = self.writers.get_mut(start) else {
                continue;
            };
            let res = w.prepare_commit().and_then(|mut pc| {
                pc.set_payload(&payload);
                pc.commit()
            });
            if let Err(e) = res {
                self.fail(format!("commit of partition {start} failed: {e}"));
                break;
            }
        }
        {
            let map = self.shared.partitions.read().unwrap();
            for start in &dirty {
                if let Some(p) = map.get(start) {
                    if let Err(e) = p.reader.reload() {
                        tracing::error!(error = %e, partition = start, "Reloading a partition reader failed.");
                    }
                }
            }
        }
        if !dirty.is_empty() {
            self.shared.metrics.commits.fetch_add(1, Relaxed);
            add_duration(&self.shared.metrics.commit_micros, started.elapsed());
        }
        if self.failed {
            return;
        }
        let data = &self.shared.config.data;
        if self.last_pos > self.checkpoint {
            match write_checkpoint(data, self.last_pos) {
                Ok(()) => {
                    self.checkpoint = self.last_pos;
                    if let Err(e) = wal::remove_before(&data.join("wal"), self.last_pos) {
                        tracing::warn!(error = %e, "Could not trim the write-ahead log.");
                    }
                }
                // Every partition's commit says how far it reaches, so replay stays right
                // from an older checkpoint: only trimming the log waits.
                Err(e) => {
                    tracing::warn!(error = %e, "Could not write the checkpoint; the write-ahead log is kept from the previous one.")
                }
            }
        }
        self.shared.searchable.send_replace(self.last_pos);
    }

    fn enforce_retention(&mut self) {
        let cfg = &self.shared.config;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let mut doomed = Vec::new();
        {
            let map = self.shared.partitions.read().unwrap();
            if let Some(ret) = cfg.retention {
                let cutoff = now.saturating_sub(ret.as_secs().min(i64::MAX as u64) as i64);
                doomed.extend(map.values().filter(|p| p.end <= cutoff).map(|p| p.start));
            }
            if let Some(max) = cfg.max_disk {
                let kept: Vec<_> = map
                    .values()
                    .filter(|p| !doomed.contains(&p.start))
                    .collect();
                let mut total: u64 = kept.iter().map(|p| p.disk_bytes()).sum();
                // Oldest first, and never the partition of the present (nor a future one):
                // that is where acknowledged records are arriving.
                for p in kept.iter().filter(|p| p.end <= now) {
                    if total <= max {
                        break;
                    }
                    total = total.saturating_sub(p.disk_bytes());
                    doomed.push(p.start);
                }
            }
        }
        for start in doomed {
            self.writers.remove(&start);
            self.dirty.remove(&start);
            let removed = self.shared.partitions.write().unwrap().remove(&start);
            if let Some(p) = removed {
                tracing::info!(partition = %p.dir.display(), "Removing partition (retention).");
                // Renamed first, so a crash halfway through never leaves half a partition.
                let name = p
                    .dir
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                let trash = p.dir.with_file_name(format!("{TRASH}{name}"));
                let res =
                    std::fs::rename(&p.dir, &trash).and_then(|_| std::fs::remove_dir_all(&trash));
                if let Err(e) = res {
                    tracing::error!(error = %e, partition = %p.dir.display(), "Could not remove partition.");
                }
                self.shared.metrics.partitions_removed.fetch_add(1, Relaxed);
            }
        }
    }

    fn update_gauges(&self) {
        let map = self.shared.partitions.read().unwrap();
        let m = &self.shared.metrics;
        m.partitions.store(map.len() as u64, Relaxed);
        m.index_disk_bytes
            .store(map.values().map(|p| p.disk_bytes()).sum(), Relaxed);
        m.wal_disk_bytes.store(
            wal::dir_bytes(&self.shared.config.data.join("wal")),
            Relaxed,
        );
    }
}
