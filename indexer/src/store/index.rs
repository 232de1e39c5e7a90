//! The index thread: adds logged records to their time partitions (one tantivy index per
//! hour or day of `ts`), commits every partition it touched once per commit interval with the
//! log position the commit covers, writes the checkpoint and trims the log behind it, and
//! applies retention. When indexing fails (a full disk) it drops its writers and retries by
//! itself from the log, as a restart would.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tantivy::index::SegmentMeta;
use tantivy::indexer::{LogMergePolicy, MergeCandidate, MergePolicy, NoMergePolicy};
use tantivy::{IndexWriter, TantivyDocument};
use time::OffsetDateTime;
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::layout;
use crate::metrics::{
    Committed, IndexFailed, IndexRecovered, Metrics, PartitionRemoved, UnreadableRecord, M,
};
use crate::partition::Partition;
use crate::record::Record;
use crate::store::archive::Archive;
use crate::store::shared::Shared;
use crate::store::{checkpoint, recovery, retention};
use crate::wal;

/// What the index thread is asked to do: it owns the partition writers, so every change
/// to a partition's segments goes through it.
pub enum ToIndex {
    /// Records the log thread made durable.
    Batch(IndexBatch),
    /// From the seal loop: commit, merge the segments of partition `start` that no split
    /// holds into one, and answer them (`None` when there are none). They are kept out of
    /// merges from then on; the seal loop ends that with [`Archive::end_sealing`].
    Seal {
        start: i64,
        reply: oneshot::Sender<Result<Option<Vec<SegmentMeta>>>>,
    },
    /// From the seal loop: the group's copy of partition `start` (its splits, assembled at
    /// `dir`) takes the place of this replica's own, with every record of this replica's
    /// own that the copy lacks added to it (they become another split).
    Adopt {
        start: i64,
        dir: PathBuf,
        reply: oneshot::Sender<Result<u64>>,
    },
    /// From the seal loop: removes the local copy of partition `start` if every segment it
    /// holds is in a split (`sealed`); answers whether it did.
    Evict {
        start: i64,
        sealed: HashSet<String>,
        reply: oneshot::Sender<Result<bool>>,
    },
}

/// Records the log thread made durable, for the index thread.
pub struct IndexBatch {
    pub records: Vec<(u64, Record)>,
    /// The log position just past the last record.
    pub end: u64,
}

/// The writers' merge policy with an object store: tantivy's usual one, over the
/// segments no split holds, so a merge never makes a split's segment disappear from the
/// local copy (which must stay the splits plus what is not sealed yet).
#[derive(Debug)]
struct KeepSealed {
    inner: LogMergePolicy,
    archive: Arc<Archive>,
    start: i64,
}

impl MergePolicy for KeepSealed {
    fn compute_merge_candidates(&self, segments: &[SegmentMeta]) -> Vec<MergeCandidate> {
        let keep = self.archive.keep_out_of_merges(self.start);
        let free: Vec<SegmentMeta> = segments
            .iter()
            .filter(|m| !keep.contains(&m.id().uuid_string()))
            .cloned()
            .collect();
        self.inner.compute_merge_candidates(&free)
    }
}

/// Partition writers open at once; each holds indexing memory.
const MAX_OPEN_WRITERS: usize = 4;
/// How often retention runs and the disk gauges are updated.
const TICK: Duration = Duration::from_secs(10);

/// A record of the log, or `None` (logged and counted) if it cannot be read back.
pub fn decode_frame(pos: u64, payload: &[u8], metrics: &Metrics) -> Option<Record> {
    match std::str::from_utf8(payload)
        .map_err(|e| e.to_string())
        .and_then(Record::from_source)
    {
        Ok(r) => Some(r),
        Err(error) => {
            UnreadableRecord {
                position: pos,
                error: &error,
            }
            .emit(metrics);
            None
        }
    }
}

/// The index thread's state: open partition writers and what they hold uncommitted.
pub struct Indexer {
    shared: Arc<Shared>,
    writers: HashMap<i64, IndexWriter<TantivyDocument>>,
    dirty: HashSet<i64>,
    /// Log position just past the last record added.
    pub last_pos: u64,
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
    pub fn new(shared: Arc<Shared>, checkpoint: u64) -> Indexer {
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

    pub fn run(mut self, rx: Receiver<ToIndex>) {
        let mut next_tick = Instant::now() + TICK;
        loop {
            let now = Instant::now();
            let until = [self.deadline, self.retry_at]
                .into_iter()
                .flatten()
                .fold(next_tick, Instant::min);
            match rx.recv_timeout(until.saturating_duration_since(now)) {
                Ok(ToIndex::Batch(batch)) => self.add(batch),
                Ok(ToIndex::Seal { start, reply }) => {
                    let _ = reply.send(self.seal(start));
                }
                Ok(ToIndex::Adopt { start, dir, reply }) => {
                    let _ = reply.send(self.adopt(start, &dir));
                }
                Ok(ToIndex::Evict {
                    start,
                    sealed,
                    reply,
                }) => {
                    let _ = reply.send(self.evict(start, &sealed));
                }
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
        if let Some(p) = self.shared.partitions.read().get(&start) {
            return Ok(p.clone());
        }
        let secs = self.shared.config.granularity.seconds();
        let root = layout::partitions_dir(&self.shared.config.data);
        let p = if self.sealed_in_store(start) {
            // Records for a partition only the store holds. The index thread never waits on
            // the store (every later record would wait with it): the partition starts with
            // these records alone, marked incomplete so that searches of it fail rather than
            // answer without the rest, and the seal loop adopts the group's splits into it.
            tracing::info!(
                partition = start,
                "Records arrived for a partition only the object store holds; its splits are read into it next."
            );
            Partition::create_incomplete(&root, &self.shared.fields, start, secs)?
        } else {
            Partition::create(&root, &self.shared.fields, start, secs)?
        };
        let p = Arc::new(p);
        let mut map = self.shared.partitions.write();
        map.insert(start, p.clone());
        self.shared.metrics.set(M::Partitions, map.len() as u64);
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
            if let Some(archive) = &self.shared.archive {
                w.set_merge_policy(Box::new(KeepSealed {
                    inner: LogMergePolicy::default(),
                    archive: archive.clone(),
                    start,
                }));
            }
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
    pub fn replay(&mut self, pos: u64, rec: Record, committed: &HashMap<i64, u64>) -> bool {
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
                self.shared.metrics.add(M::RecordsIndexed, 1);
            }
            Err(e) => self.fail(format!("indexing record {rid} failed: {e}")),
        }
        if self.deadline.is_none() {
            self.deadline = Some(Instant::now() + self.shared.config.commit_interval);
        }
    }

    /// Drops every writer and leaves records to the log until `recover` succeeds.
    fn fail(&mut self, problem: String) {
        {
            let mut slot = self.shared.problem.lock().unwrap();
            IndexFailed {
                problem: &problem,
                first: slot.is_none(),
            }
            .emit(&self.shared.metrics);
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
        let committed = match self.shared.partitions.committed_positions() {
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
        let dir = layout::wal_dir(&self.shared.config.data);
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
        *self.shared.problem.lock().unwrap() = None;
        IndexRecovered {
            from,
            end,
            records: added,
        }
        .emit(&self.shared.metrics);
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
    pub fn commit(&mut self) {
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
            let map = self.shared.partitions.read();
            for start in &dirty {
                if let Some(p) = map.get(start) {
                    if let Err(e) = p.reader.reload() {
                        tracing::error!(error = %e, partition = start, "Reloading a partition reader failed.");
                    }
                }
            }
        }
        if !dirty.is_empty() {
            Committed {
                took: started.elapsed(),
            }
            .emit(&self.shared.metrics);
        }
        if self.failed {
            return;
        }
        let data = &self.shared.config.data;
        if self.last_pos > self.checkpoint {
            match checkpoint::write(data, self.last_pos) {
                Ok(()) => {
                    self.checkpoint = self.last_pos;
                    if let Err(e) = wal::remove_before(&layout::wal_dir(data), self.last_pos) {
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

    pub fn enforce_retention(&mut self) {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        for start in retention::doomed(&self.shared.partitions, &self.shared.config, now) {
            self.writers.remove(&start);
            self.dirty.remove(&start);
            let removed = self.shared.partitions.write().remove(&start);
            if let Some(p) = removed {
                PartitionRemoved { dir: &p.dir }.emit(&self.shared.metrics);
                if retention::past_age(&p, &self.shared.config, now) {
                    self.forget_keys(&p);
                }
                retention::remove(&p);
            }
        }
    }

    /// Takes the keys of a partition removed for its age out of the de-duplication set, so
    /// holdings list only what is stored and a peer never asks for them (a resend is
    /// refused as older than `--retention` anyway). Keys of partitions removed for
    /// `--max-disk` are kept: a peer with more room still holds them, and forgetting them
    /// would have repair copy them back at once.
    fn forget_keys(&self, p: &Partition) {
        let (mut seqs, mut ids) = (Vec::new(), Vec::new());
        let read = recovery::each_key(
            p,
            |src, seq| {
                seqs.push(crate::DedupKey::Seq {
                    src: src.to_string(),
                    seq,
                })
            },
            |id| ids.push(crate::DedupKey::Id(id.to_string())),
        );
        if let Err(e) = read {
            tracing::warn!(error = %e, partition = %p.dir.display(), "Could not read the keys of a partition past retention; peers may ask for its records until a restart.");
        }
        // A few thousand at a time, so ingest waits on the lock for a millisecond at most.
        let keys: Vec<_> = seqs.into_iter().chain(ids).collect();
        for chunk in keys.chunks(4096) {
            let mut dedup = self.shared.dedup.lock().unwrap();
            for k in chunk {
                dedup.remove(k);
            }
        }
    }

    /// Whether the object store holds splits of partition `start`.
    fn sealed_in_store(&self, start: i64) -> bool {
        self.shared
            .archive
            .as_ref()
            .is_some_and(|a| !a.manifest().of_partition(start).is_empty())
    }

    /// Commits, then merges the segments of partition `start` that no split holds into one
    /// and returns them (see [`ToIndex::Seal`]).
    fn seal(&mut self, start: i64) -> Result<Option<Vec<SegmentMeta>>> {
        let archive = self.shared.archive.clone().ok_or(Error::ShuttingDown)?;
        self.commit();
        if self.failed {
            return Err(Error::Store {
                what: "sealing".into(),
                message: "indexing is failing; retried once it recovers".into(),
            });
        }
        let Some(p) = self.shared.partitions.read().get(&start).cloned() else {
            return Ok(None);
        };
        let unsealed = |p: &Partition| -> Result<Vec<SegmentMeta>> {
            let keep = archive.keep_out_of_merges(start);
            Ok(p.index
                .searchable_segment_metas()?
                .into_iter()
                .filter(|m| !keep.contains(&m.id().uuid_string()))
                .collect())
        };
        let mut segments = unsealed(&p)?;
        if segments.len() > 1 {
            // A merge the policy started may hold some of these segments (the explicit
            // merge then failed, "segments that were merged could not be found", seen in the
            // object-store benchmark): it is let finish first, and the segments read again.
            // Everything is committed, so the writer holds nothing else.
            if let Some(w) = self.writers.remove(&start) {
                w.wait_merging_threads()?;
                p.reader.reload()?;
                segments = unsealed(&p)?;
            }
        }
        if segments.len() > 1 {
            let ids: Vec<_> = segments.iter().map(|m| m.id()).collect();
            self.writer(start)?.merge(&ids).wait()?;
            p.reader.reload()?;
            segments = unsealed(&p)?;
            // A partition due for sealing rarely gets records: its writer's memory goes.
            self.writers.remove(&start);
        }
        if segments.is_empty() {
            return Ok(None);
        }
        let ids: Vec<String> = segments.iter().map(|m| m.id().uuid_string()).collect();
        archive.start_sealing(&ids);
        Ok(Some(segments))
    }

    /// Puts the group's copy of partition `start`, assembled at `dir`, in place of this
    /// replica's own, adding to it every record of its own the copy lacks; returns how many
    /// it added (see [`ToIndex::Adopt`]).
    fn adopt(&mut self, start: i64, dir: &Path) -> Result<u64> {
        self.commit();
        if self.failed {
            return Err(Error::Store {
                what: "adopting the group's split".into(),
                message: "indexing is failing; retried once it recovers".into(),
            });
        }
        let secs = self.shared.config.granularity.seconds();
        let copy = Partition::open(dir.to_path_buf(), start, secs)?;
        let own = self.shared.partitions.read().get(&start).cloned();
        let lacking = match &own {
            Some(own) => recovery::records_lacking(own, &copy, &self.shared.fields)?,
            None => Vec::new(),
        };
        // What only this replica held goes into the copy and is committed there, with how
        // far into the log the copy reaches, before the copy takes the partition's place:
        // until the swap the partition stays whole, and after it nothing is uncommitted.
        {
            let mut w: IndexWriter<TantivyDocument> =
                copy.index.writer_with_num_threads(1, 32 << 20)?;
            // The copy's segments are the splits': merging them would unseal them.
            w.set_merge_policy(Box::new(NoMergePolicy));
            for (rid, rec) in &lacking {
                w.add_document(self.shared.fields.document(*rid, rec))?;
            }
            let mut pc = w.prepare_commit()?;
            pc.set_payload(&self.last_pos.to_string());
            pc.commit()?;
            w.wait_merging_threads()?;
        }
        drop(copy);
        self.writers.remove(&start);
        self.dirty.remove(&start);
        let place = layout::partitions_dir(&self.shared.config.data)
            .join(layout::partition_name(start, secs));
        // A crash between the two renames is finished at the next start: recovery puts a
        // committed `.adopt-` copy in the place of a partition gone missing.
        let trash = layout::trash_dir(&place);
        if own.is_some() {
            std::fs::rename(&place, &trash).map_err(|e| Error::io(&place, e))?;
        }
        if let Err(e) = std::fs::rename(dir, &place) {
            // The partition goes back where it was, with what only it held.
            if own.is_some() {
                let _ = std::fs::rename(&trash, &place);
            }
            return Err(Error::io(dir, e));
        }
        let _ = std::fs::remove_dir_all(&trash);
        let p = Arc::new(Partition::open(place, start, secs)?);
        self.shared.partitions.write().insert(start, p);
        Ok(lacking.len() as u64)
    }

    /// Removes the local copy of partition `start` if splits hold all of it (see
    /// [`ToIndex::Evict`]).
    fn evict(&mut self, start: i64, sealed: &HashSet<String>) -> Result<bool> {
        self.commit();
        if self.failed {
            return Ok(false);
        }
        let Some(p) = self.shared.partitions.read().get(&start).cloned() else {
            return Ok(false);
        };
        let whole = p
            .index
            .searchable_segment_metas()?
            .iter()
            .all(|m| sealed.contains(&m.id().uuid_string()));
        if !whole {
            return Ok(false);
        }
        self.writers.remove(&start);
        self.shared.partitions.write().remove(&start);
        retention::remove(&p);
        tracing::info!(partition = %p.dir.display(), "Removed a sealed partition from local disk; the object store holds it.");
        Ok(true)
    }

    pub fn update_gauges(&self) {
        let map = self.shared.partitions.read();
        let m = &self.shared.metrics;
        m.set(M::Partitions, map.len() as u64);
        m.set(
            M::IndexDiskBytes,
            map.values().map(|p| p.disk_bytes()).sum(),
        );
        m.set(
            M::WalDiskBytes,
            wal::dir_bytes(&layout::wal_dir(&self.shared.config.data)),
        );
    }
}
