//! The seal loop (`--object-store`): a thread that, every few seconds, reads the group's
//! manifest and, for every local partition whose time range ended more than
//! `--seal-after` ago:
//!
//! - **adopts** the group's copy when another replica sealed records this one holds
//!   otherwise (the splits take the place of the local copy; what only this replica held
//!   is added back and becomes another split), so every replica searches the same splits;
//! - **seals** what no split holds yet: the index thread merges those segments into one,
//!   which is packed, uploaded, read back and checked, and only then added to the manifest
//!   with a conditional write. A replica that finds another's split there first deletes
//!   its own upload: one copy per group, never two versions;
//! - **evicts** the local copy once `--local-retention` has passed and splits hold all of
//!   it.
//!
//! It also removes splits past `--retention` from the store. While the store fails, the
//! loop retries with a growing wait; ingest and search carry on from local disk.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sawmill_record::api::SourceRanges;
use tantivy::index::SegmentMeta;
use time::OffsetDateTime;
use tokio::sync::oneshot;

use crate::dedup::Dedup;
use crate::error::{Error, Result};
use crate::layout;
use crate::metrics::M;
use crate::objstore::{pack, split_object, Manifest, Placement, SplitEntry};
use crate::partition::Partition;
use crate::repair::ranges;
use crate::store::archive::Archive;
use crate::store::index::ToIndex;
use crate::store::recovery;
use crate::store::shared::Shared;

/// How often the loop runs while all is well.
const TICK: Duration = Duration::from_secs(2);
/// The longest wait between rounds while the store fails.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How often the bucket is swept for objects no manifest entry lists.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// How old an unlisted object must be before the sweep removes it: far longer than an
/// upload takes from its write to its listing (a split of tens of GB is uploaded, then
/// read back whole, before it is listed; S3 dates a multipart object from the start of
/// its upload), with room for the skew between the store's clock and this one.
const SWEEP_GRACE: Duration = Duration::from_secs(24 * 3600);

pub struct SealLoop {
    pub shared: Arc<Shared>,
    pub archive: Arc<Archive>,
    /// The way into the index thread; taken at a stop, so that the index thread sees its
    /// last sender go.
    pub index: Arc<Mutex<Option<SyncSender<ToIndex>>>>,
    pub stop: Arc<AtomicBool>,
}

/// Where one local partition stands.
#[derive(Default)]
struct Backlog {
    unsealed: u64,
    lag: u64,
}

impl SealLoop {
    pub fn run(self) {
        // Splits a stopped process was uploading: packed again when their turn comes.
        let _ = std::fs::remove_dir_all(layout::upload_dir(&self.shared.config.data));
        let mut wait = Duration::ZERO;
        let mut swept: Option<Instant> = None;
        loop {
            let until = Instant::now() + wait;
            while Instant::now() < until {
                if self.stop.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            match self.round() {
                Ok(()) => {
                    self.archive.succeeded();
                    wait = TICK;
                }
                Err(Error::ShuttingDown) => return,
                Err(e) => {
                    self.shared.metrics.add(M::StoreUploadFailures, 1);
                    tracing::warn!(error = %e, store = %self.archive.bucket.describe(), "Sealing to the object store failed; retrying later. Ingest and search go on from local disk.");
                    self.archive.failed(&e);
                    wait = (wait * 2).clamp(TICK, BACKOFF_MAX);
                }
            }
            // Whatever the round did: one partition that keeps failing must not stop it.
            if swept.is_none_or(|t| t.elapsed() >= SWEEP_EVERY) {
                swept = Some(Instant::now());
                self.sweep();
            }
        }
    }

    /// One pass over the manifest and the local partitions; the first error, after trying
    /// every partition.
    fn round(&self) -> Result<()> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let parts: Vec<Arc<Partition>> = self.shared.partitions.read().values().cloned().collect();
        let m = match self.block_on(self.archive.bucket.manifest()) {
            Ok(m) => m,
            Err(e) => {
                // The store is out of reach: the backlog still shows, against the manifest
                // as last read.
                self.count_backlog(&parts, now);
                return Err(e);
            }
        };
        learn(&self.shared, &self.archive, m);
        self.expire(now)?;
        let mut backlog = Backlog::default();
        let mut first_err = None;
        for p in parts {
            if self.stop.load(Ordering::Relaxed) {
                return Err(Error::ShuttingDown);
            }
            match self.partition_round(&p, now) {
                Ok(b) => {
                    backlog.unsealed += b.unsealed;
                    backlog.lag += b.lag;
                }
                Err(e) => {
                    backlog.unsealed += 1;
                    backlog.lag += u64::from(self.due(&p, now));
                    first_err.get_or_insert(e);
                }
            }
        }
        self.archive.set_backlog(backlog.unsealed, backlog.lag);
        self.shared
            .metrics
            .set(M::StoreUploadLagPartitions, backlog.lag);
        first_err.map_or(Ok(()), Err)
    }

    /// Counts the local partitions holding records no split holds, and those of them due
    /// for sealing, without changing anything.
    fn count_backlog(&self, parts: &[Arc<Partition>], now: i64) {
        let m = self.archive.manifest();
        let mut backlog = Backlog::default();
        for p in parts {
            let sealed = m.sealed_segments(p.start);
            let unsealed = segment_ids(p).map_or(true, |local| !local.is_subset(&sealed));
            if unsealed {
                backlog.unsealed += 1;
                backlog.lag += u64::from(self.due(p, now));
            }
        }
        self.archive.set_backlog(backlog.unsealed, backlog.lag);
        self.shared
            .metrics
            .set(M::StoreUploadLagPartitions, backlog.lag);
    }

    fn due(&self, p: &Partition, now: i64) -> bool {
        p.end.saturating_add(secs(self.archive.cfg.seal_after)) <= now
    }

    fn partition_round(&self, p: &Arc<Partition>, now: i64) -> Result<Backlog> {
        if p.incomplete {
            // Records arrived after it left local disk: the group's splits come first.
            self.adopt(p)?;
            return Ok(Backlog {
                unsealed: 1,
                lag: 1,
            });
        }
        let sealed = self.archive.manifest().sealed_segments(p.start);
        let local = segment_ids(p)?;
        let unsealed = !local.is_subset(&sealed);
        if !self.due(p, now) {
            return Ok(Backlog {
                unsealed: u64::from(unsealed),
                lag: 0,
            });
        }
        if !sealed.is_subset(&local) {
            // Another replica sealed records of this partition first.
            self.adopt(p)?;
            return Ok(Backlog {
                unsealed: 1,
                lag: 1,
            });
        }
        if unsealed {
            self.seal(p)?;
        }
        let past_local = p.end.saturating_add(secs(self.archive.cfg.local_retention)) <= now;
        if past_local {
            let sealed = self.archive.manifest().sealed_segments(p.start);
            self.ask(|reply| ToIndex::Evict {
                start: p.start,
                sealed,
                reply,
            })?;
        }
        Ok(Backlog::default())
    }

    /// Uploads the segments of `p` no split holds as one new split.
    fn seal(&self, p: &Arc<Partition>) -> Result<()> {
        let Some(segments) = self.ask(|reply| ToIndex::Seal {
            start: p.start,
            reply,
        })?
        else {
            return Ok(());
        };
        let ids: Vec<String> = segments.iter().map(|m| m.id().uuid_string()).collect();
        let res = self.upload(p, &segments);
        self.archive.end_sealing(&ids);
        res
    }

    fn upload(&self, p: &Arc<Partition>, segments: &[SegmentMeta]) -> Result<()> {
        let started = Instant::now();
        let span = p.end - p.start;
        let id = segments[0].id().uuid_string();
        let dir = layout::upload_dir(&self.shared.config.data);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let file = dir.join(format!("{id}.split"));
        let check = dir.join(format!("{id}.check"));
        let res = (|| {
            let packed = pack(&p.dir, p.start, span, segments, &file)?;
            let mut entry = describe(p, segments)?;
            entry.id = id.clone();
            entry.object = split_object(p.start, span, &id);
            entry.bytes = packed.bytes;
            entry.sha256 = packed.sha256;
            entry.tail = Some(packed.tail);
            entry.sealed_by = self.shared.replica.clone();
            entry.sealed_at = OffsetDateTime::now_utc().unix_timestamp();
            let bucket = &self.archive.bucket;
            self.block_on(bucket.put_split(&file, &entry))?;
            // Read back whole and checked against the size and checksum before the
            // manifest, and so any later removal of the local copy, relies on it.
            self.block_on(bucket.get_split(&entry, &check))?;
            let local = segment_ids(p)?;
            let mut placed = Placement::Listed;
            let m = self.block_on(bucket.update_manifest(|m: &mut Manifest| {
                placed = m.place(&entry, &local);
                Ok(placed == Placement::Added)
            }))?;
            match placed {
                Placement::Lost => {
                    tracing::info!(partition = p.start, "Another replica of the group sealed this partition first; its split is adopted instead of this one's.");
                    self.block_on(bucket.delete_split(&entry))?;
                }
                Placement::Listed => {
                    tracing::info!(partition = p.start, split = %entry.object, "This split was listed already: an earlier attempt's manifest write went through though its answer was lost.");
                }
                Placement::Added => {
                    self.shared.metrics.add(M::StoreSplitsUploaded, 1);
                    self.shared.metrics.add(M::StoreBytesUploaded, packed.bytes);
                    tracing::info!(
                        partition = p.start,
                        split = %entry.object,
                        records = entry.records,
                        bytes = packed.bytes,
                        took_ms = started.elapsed().as_millis() as u64,
                        "Sealed a partition into the object store."
                    );
                }
            }
            learn(&self.shared, &self.archive, m);
            Ok(())
        })();
        let _ = std::fs::remove_file(&file);
        let _ = std::fs::remove_file(&check);
        res
    }

    /// Puts the group's copy of `p` in place of this replica's own.
    fn adopt(&self, p: &Arc<Partition>) -> Result<()> {
        let splits = self.archive.splits_of(p.start);
        let dir = layout::adopt_dir(&p.dir);
        let _ = std::fs::remove_dir_all(&dir);
        let a = &self.archive;
        a.cache
            .materialize(&a.rt, &a.bucket, p.start, p.end - p.start, &splits, &dir)?;
        let added = self.ask(|reply| ToIndex::Adopt {
            start: p.start,
            dir: dir.clone(),
            reply,
        });
        let _ = std::fs::remove_dir_all(&dir);
        let added = added?;
        tracing::info!(
            partition = p.start,
            splits = splits.len(),
            own_records_added = added,
            "Took the group's sealed copy of a partition in place of this replica's own."
        );
        Ok(())
    }

    /// Removes splits past `--retention` from the manifest, then from the bucket.
    fn expire(&self, now: i64) -> Result<()> {
        let Some(ret) = self.shared.config.retention else {
            return Ok(());
        };
        let cutoff = now.saturating_sub(secs(ret));
        let old = |s: &SplitEntry| s.start.saturating_add(s.span) <= cutoff;
        if !self.archive.manifest().splits.iter().any(old) {
            return Ok(());
        }
        let mut gone = Vec::new();
        let m = self.block_on(self.archive.bucket.update_manifest(|m: &mut Manifest| {
            gone = m.splits.iter().filter(|s| old(s)).cloned().collect();
            m.splits.retain(|s| !old(s));
            Ok(!gone.is_empty())
        }))?;
        learn(&self.shared, &self.archive, m);
        let mut failed = None;
        for s in &gone {
            {
                let mut dedup = self.shared.dedup.lock().unwrap();
                for r in &s.sources {
                    for [lo, hi] in &r.ranges {
                        dedup.remove_range(&r.src, *lo, *hi);
                    }
                }
            }
            // Every object is tried: one failed removal leaves that object behind (named in
            // the log), not the rest.
            if let Err(e) = self.block_on(self.archive.bucket.delete_split(s)) {
                tracing::warn!(object = %s.object, error = %e, "Could not remove a split past retention from the object store; it is no longer listed, and the hourly sweep removes it.");
                failed.get_or_insert(e);
            }
        }
        if !gone.is_empty() {
            tracing::info!(
                splits = gone.len(),
                "Removed splits past retention from the object store."
            );
        }
        failed.map_or(Ok(()), Err)
    }

    /// Removes objects of this group's prefix that no manifest entry lists (see
    /// `Bucket::sweep`); a failure is logged and tried again at the next sweep.
    fn sweep(&self) {
        match self.block_on(self.archive.bucket.sweep(SWEEP_GRACE)) {
            Ok(0) => {}
            Ok(n) => {
                self.shared.metrics.add(M::StoreOrphansRemoved, n);
                tracing::info!(
                    objects = n,
                    "Removed objects no manifest entry lists from the object store."
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "Could not sweep the object store for unlisted objects; trying again in an hour.")
            }
        }
    }

    fn block_on<T>(&self, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        self.archive.rt.block_on(f)
    }

    /// Asks the index thread and waits for its answer.
    fn ask<T>(&self, msg: impl FnOnce(oneshot::Sender<Result<T>>) -> ToIndex) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        let index = self.index.lock().unwrap().clone();
        index
            .ok_or(Error::ShuttingDown)?
            .send(msg(tx))
            .map_err(|_| Error::ShuttingDown)?;
        rx.blocking_recv().map_err(|_| Error::ShuttingDown)?
    }
}

/// Takes a manifest just read or written, and adds the keys of splits new to this replica
/// to the de-duplication set: the group holds them, so a resend is a duplicate and repair
/// does not copy them.
pub fn learn(shared: &Shared, archive: &Archive, m: Manifest) {
    for s in archive.set_manifest(m) {
        hold_keys(&mut shared.dedup.lock().unwrap(), std::slice::from_ref(&s));
    }
}

/// Adds the `(_src, _seq)` ranges of `splits` to `dedup`.
pub fn hold_keys(dedup: &mut Dedup, splits: &[SplitEntry]) {
    for s in splits {
        for r in &s.sources {
            for [lo, hi] in &r.ranges {
                dedup.insert_range(&r.src, *lo, *hi);
            }
        }
    }
}

/// The uuid strings of a partition's searchable segments.
fn segment_ids(p: &Partition) -> Result<HashSet<String>> {
    Ok(p.index
        .searchable_segment_metas()?
        .iter()
        .map(|m| m.id().uuid_string())
        .collect())
}

/// A manifest entry for `segments` of `p`, but for where and what it is in the bucket:
/// their records, time span and keys.
fn describe(p: &Partition, segments: &[SegmentMeta]) -> Result<SplitEntry> {
    let ids: HashSet<_> = segments.iter().map(|m| m.id()).collect();
    p.reader.reload()?;
    let searcher = p.reader.searcher();
    let readers: Vec<_> = searcher
        .segment_readers()
        .iter()
        .filter(|s| ids.contains(&s.segment_id()))
        .collect();
    let mut seqs: BTreeMap<String, Vec<[u64; 2]>> = BTreeMap::new();
    let mut keyed = 0u64;
    recovery::each_key_in(
        readers.iter().copied(),
        |src, seq| seqs.entry(src.to_string()).or_default().push([seq, seq]),
        |_| keyed += 1,
    )?;
    let (mut min_ts, mut max_ts) = (i64::MAX, i64::MIN);
    let mut records = 0u64;
    for seg in &readers {
        records += seg.num_docs() as u64;
        let ts = seg.fast_fields().date("ts")?;
        if seg.num_docs() > 0 {
            min_ts = min_ts.min(ts.min_value().into_timestamp_micros());
            max_ts = max_ts.max(ts.max_value().into_timestamp_micros());
        }
    }
    Ok(SplitEntry {
        id: String::new(),
        start: p.start,
        span: p.end - p.start,
        object: String::new(),
        bytes: 0,
        sha256: String::new(),
        tail: None,
        records,
        segments: segments.iter().map(|m| m.id().uuid_string()).collect(),
        min_ts,
        max_ts,
        sources: seqs
            .into_iter()
            .map(|(src, r)| SourceRanges {
                src,
                ranges: ranges::normalize(r),
            })
            .collect(),
        keyed,
        sealed_by: String::new(),
        sealed_at: 0,
    })
}

fn secs(d: Duration) -> i64 {
    d.as_secs().min(i64::MAX as u64) as i64
}
