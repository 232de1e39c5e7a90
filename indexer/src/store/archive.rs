//! The indexer's side of the object store (`--object-store`): the group's manifest as last
//! read, the cache of partitions assembled from their splits, the segments being sealed
//! right now, and how far uploads are behind. The seal loop (`seal.rs`) reads and changes
//! it; searches and the index thread read it.
//!
//! A partition lives in one of three ways: only on local disk (not sealed yet, or holding
//! records no split holds yet), on local disk *and* in the store (sealed, within
//! `--local-retention`), or only in the store. A local partition, when there is one, is
//! what searches read; the store is read only for partitions with no local copy.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use sawmill_record::api::StoreHealth;
use tokio::runtime::Handle;

use crate::error::{Error, Result};
use crate::metrics::{Metrics, M};
use crate::objstore::{Bucket, Cache, Manifest, SplitEntry, StoreUrl};
use crate::partition::Partition;

/// An epoch second as RFC 3339, for messages.
fn format_rfc3339_secs(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .map(sawmill_record::time::format_rfc3339)
        .unwrap_or_else(|_| secs.to_string())
}

/// Notes for `/healthz` how reading the partition at `start` went.
fn note(status: &Mutex<Status>, start: i64, res: std::result::Result<(), &Error>) {
    let mut status = status.lock().unwrap_or_else(|e| e.into_inner());
    match res {
        Ok(()) => status.read_ok(start),
        Err(e) => status.read_failed(start, e.to_string(), Instant::now()),
    }
}

/// How long a download waits for the searches reading its partition by ranges to end.
const DOWNLOAD_WAIT: Duration = Duration::from_secs(30);
/// How long after a failed download a search's asking for it again is ignored.
const DOWNLOAD_RETRY: Duration = Duration::from_secs(60);
/// How long `/healthz` shows a failed read of a partition that is not read well since:
/// a partition read only by ranges (too large for the cache) is never downloaded, so a
/// success cannot always clear it, and one failure must not show for ever.
const READ_ERROR_SHOWN: Duration = Duration::from_secs(600);
/// How many partitions' read failures `/healthz` spells out.
const READ_ERRORS_NAMED: usize = 3;

/// The flags of `sawmill indexer` that concern the object store.
#[derive(Clone, Debug)]
pub struct ArchiveConfig {
    pub url: StoreUrl,
    /// A partition whose time range ended longer ago than this is sealed.
    pub seal_after: Duration,
    /// Sealed, uploaded partitions whose time range ended longer ago than this leave the
    /// local disk.
    pub local_retention: Duration,
    /// Most bytes the cache of partitions read from the store takes.
    pub cache_bytes: u64,
    /// Most memory the tails of partitions read by ranges take together.
    pub cache_memory: u64,
}

/// The object store, as the store's threads and searches share it.
pub struct Archive {
    pub cfg: ArchiveConfig,
    /// The length of this indexer's partitions (`--partition`), which splits must match.
    span: i64,
    pub bucket: Bucket,
    pub cache: Cache,
    /// The runtime the store's client runs on: searches and the index thread are plain
    /// threads and wait on it with `block_on`.
    pub rt: Handle,
    manifest: RwLock<Arc<Manifest>>,
    /// Split ids whose `sources` are in the de-duplication set already.
    known: Mutex<HashSet<String>>,
    /// Segments (uuid strings) packed for an upload that has not reached the manifest yet:
    /// kept out of merges, as sealed ones are.
    sealing: Mutex<HashSet<String>>,
    status: Arc<Mutex<Status>>,
    /// Partitions read by ranges, to be downloaded whole into the cache by the download
    /// thread ([`Archive::start_downloads`]).
    downloads: Mutex<Downloads>,
    downloads_cv: Condvar,
    metrics: Arc<Metrics>,
}

/// The download queue: partitions in the order asked, each once.
#[derive(Default)]
struct Downloads {
    queue: VecDeque<(i64, i64)>,
    queued: HashSet<i64>,
    /// When the download of a partition last failed.
    failed: HashMap<i64, Instant>,
}

/// Partitions waiting for their download at most: the queue holds manifest entries, and
/// a partition left out is asked for again by its next search.
const DOWNLOADS_QUEUED: usize = 1024;

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("bucket", &self.bucket.describe())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Status {
    /// The seal loop's last failure (reading the manifest, uploading), until a round
    /// succeeds.
    seal_error: Option<String>,
    /// Manifest entries left out as unusable.
    manifest_error: Option<String>,
    /// Partitions whose splits could not be read for a search, with when and why: until
    /// a download of the partition succeeds, the partition leaves the manifest, or
    /// [`READ_ERROR_SHOWN`] passes without another failure.
    read_errors: BTreeMap<i64, (Instant, String)>,
    unsealed: u64,
    lag: u64,
}

impl Status {
    fn read_ok(&mut self, start: i64) {
        self.read_errors.remove(&start);
    }

    fn read_failed(&mut self, start: i64, why: String, now: Instant) {
        self.read_errors.insert(start, (now, why));
    }

    /// Forgets partitions the manifest no longer lists (removed by retention).
    fn keep_read_errors(&mut self, starts: &BTreeSet<i64>) {
        self.read_errors.retain(|start, _| starts.contains(start));
    }

    /// The read failures still shown at `now`, newest first, at most [`READ_ERRORS_NAMED`]
    /// of them: each damaged partition is named, not only the last one read. Older
    /// failures are forgotten.
    fn last_read_error(&mut self, now: Instant) -> Option<String> {
        self.read_errors
            .retain(|_, (at, _)| now.saturating_duration_since(*at) < READ_ERROR_SHOWN);
        let mut shown: Vec<&(Instant, String)> = self.read_errors.values().collect();
        shown.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
        let more = shown.len().saturating_sub(READ_ERRORS_NAMED);
        let mut text = shown
            .iter()
            .take(READ_ERRORS_NAMED)
            .map(|(_, why)| why.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        if more > 0 {
            text.push_str(&format!("; and {more} more partitions fail to read"));
        }
        (!shown.is_empty()).then_some(text)
    }
}

impl Archive {
    pub fn open(
        cfg: ArchiveConfig,
        span: i64,
        group: &str,
        data: &Path,
        schema: tantivy::schema::Schema,
        metrics: Arc<Metrics>,
        rt: Handle,
    ) -> Result<Archive> {
        let bucket = Bucket::from_env(&cfg.url, group)?;
        let cache = Cache::open(
            &crate::layout::cache_dir(data),
            cfg.cache_bytes,
            schema,
            metrics.clone(),
        )?;
        cache.set_memory(cfg.cache_memory);
        Ok(Archive {
            cfg,
            span,
            bucket,
            cache,
            rt,
            manifest: RwLock::default(),
            known: Mutex::default(),
            sealing: Mutex::default(),
            status: Arc::default(),
            downloads: Mutex::default(),
            downloads_cv: Condvar::new(),
            metrics,
        })
    }

    /// Starts the thread that downloads partitions searches read by ranges into the cache,
    /// one at a time, each once no search holds it open by ranges (or after
    /// [`DOWNLOAD_WAIT`]), so a download does not compete with the search that asked for
    /// it. It ends with the archive.
    pub fn start_downloads(self: &Arc<Self>) -> std::io::Result<()> {
        let archive = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("sawmill-download".into())
            .spawn(move || loop {
                let Some(a) = archive.upgrade() else { return };
                let job = {
                    let mut d = a.downloads.lock().unwrap_or_else(|e| e.into_inner());
                    if d.queue.is_empty() {
                        // Woken for new work, or now and then to see whether the archive
                        // is gone.
                        d = a
                            .downloads_cv
                            .wait_timeout(d, Duration::from_secs(1))
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                    d.queue.pop_front()
                };
                let Some((start, span)) = job else { continue };
                // A panic here is a bug, but it must not stop every later download.
                let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    a.download(start, span)
                }))
                .unwrap_or(false);
                let mut d = a.downloads.lock().unwrap_or_else(|e| e.into_inner());
                d.queued.remove(&start);
                // Bounded: entries past their pause are of no use any more.
                d.failed.retain(|_, t| t.elapsed() < DOWNLOAD_RETRY);
                if !ok {
                    d.failed.insert(start, Instant::now());
                }
                a.metrics
                    .set(M::StoreDownloadsPending, d.queue.len() as u64);
            })
            .map(|_| ())
    }

    /// Downloads the partition at `start` whole into the cache; whether that went well.
    fn download(&self, start: i64, span: i64) -> bool {
        let mut waited = Duration::ZERO;
        while self.cache.reading_by_ranges(start) && waited < DOWNLOAD_WAIT {
            std::thread::sleep(Duration::from_millis(50));
            waited += Duration::from_millis(50);
        }
        // The manifest may have changed meanwhile: download what it lists now.
        let splits = self.splits_of(start);
        if splits.is_empty() {
            return true;
        }
        let res = self
            .cache
            .partition(&self.rt, &self.bucket, start, span, &splits);
        note(&self.status, start, res.as_ref().map(|_| ()));
        res.is_ok()
    }

    /// Asks for the partition at `start` to be downloaded into the cache.
    fn download_later(&self, start: i64, span: i64, splits: &[SplitEntry]) {
        // A partition larger than the whole cache would only push the rest out and be
        // pushed out in turn: it stays read by ranges.
        if !self.cache.fits(splits.iter().map(|s| s.bytes).sum()) {
            return;
        }
        let mut d = self.downloads.lock().unwrap_or_else(|e| e.into_inner());
        // After a failed download (a damaged split, the store failing), not again for a
        // while: every search of the partition would ask.
        if d.failed
            .get(&start)
            .is_some_and(|t| t.elapsed() < DOWNLOAD_RETRY)
        {
            return;
        }
        if d.queued.len() >= DOWNLOADS_QUEUED || !d.queued.insert(start) {
            return;
        }
        d.failed.remove(&start);
        d.queue.push_back((start, span));
        self.metrics
            .set(M::StoreDownloadsPending, d.queue.len() as u64);
        self.downloads_cv.notify_one();
    }

    /// The manifest as last read.
    pub fn manifest(&self) -> Arc<Manifest> {
        self.manifest.read().unwrap().clone()
    }

    /// Takes a manifest just read or written; returns the splits new to this replica, whose
    /// keys the de-duplication set must learn. Entries that do not check out are left out
    /// (and said in `/healthz`): searched or trusted, they could answer wrong.
    pub fn set_manifest(&self, mut m: Manifest) -> Vec<SplitEntry> {
        let mut bad = Vec::new();
        m.splits.retain(|s| match s.check(self.span) {
            Ok(()) => true,
            Err(why) => {
                bad.push(why);
                false
            }
        });
        if let Some(why) = bad.first() {
            tracing::error!(store = %self.bucket.describe(), bad = bad.len(), first = %why, "The group's manifest lists splits this indexer cannot use; they are left out of searches.");
        }
        {
            let mut status = self.status.lock().unwrap();
            status.manifest_error = bad
                .first()
                .map(|why| format!("{} unusable manifest entries, e.g.: {why}", bad.len()));
            status.keep_read_errors(&m.starts());
        }
        let mut known = self.known.lock().unwrap();
        let new: Vec<SplitEntry> = m
            .splits
            .iter()
            .filter(|s| !known.contains(&s.id))
            .cloned()
            .collect();
        known.extend(new.iter().map(|s| s.id.clone()));
        *self.manifest.write().unwrap() = Arc::new(m);
        new
    }

    /// The splits of partition `start`, as last read.
    pub fn splits_of(&self, start: i64) -> Vec<SplitEntry> {
        self.manifest()
            .of_partition(start)
            .into_iter()
            .cloned()
            .collect()
    }

    /// Segments of partition `start` a merge must leave alone: those a split holds, and
    /// those being uploaded (a merge would make their files disappear under the upload).
    pub fn keep_out_of_merges(&self, start: i64) -> HashSet<String> {
        let mut keep = self.manifest().sealed_segments(start);
        keep.extend(self.sealing.lock().unwrap().iter().cloned());
        keep
    }

    pub fn start_sealing(&self, ids: &[String]) {
        self.sealing.lock().unwrap().extend(ids.iter().cloned());
    }

    pub fn end_sealing(&self, ids: &[String]) {
        let mut s = self.sealing.lock().unwrap();
        for id in ids {
            s.remove(id);
        }
    }

    /// Partitions only the store holds (no start of `local`) that overlap `[lo, hi]` (epoch
    /// µs, inclusive), with their splits.
    pub fn remote_between(
        &self,
        lo: i64,
        hi: i64,
        local: &BTreeSet<i64>,
    ) -> Vec<(i64, i64, Vec<SplitEntry>)> {
        let m = self.manifest();
        let mut by_start: HashMap<i64, (i64, Vec<SplitEntry>)> = HashMap::new();
        for s in &m.splits {
            if local.contains(&s.start) {
                continue;
            }
            let (from, to) = (
                s.start.saturating_mul(1_000_000),
                s.start.saturating_add(s.span).saturating_mul(1_000_000),
            );
            if lo < to && hi >= from {
                by_start
                    .entry(s.start)
                    .or_insert_with(|| (s.span, Vec::new()))
                    .1
                    .push(s.clone());
            }
        }
        let mut out: Vec<_> = by_start
            .into_iter()
            .map(|(start, (span, splits))| (start, span, splits))
            .collect();
        out.sort_by_key(|p| p.0);
        out
    }

    /// The partition at `start` assembled from `splits` if the cache holds it now.
    pub fn cached(&self, start: i64, span: i64, splits: &[SplitEntry]) -> Option<Arc<Partition>> {
        let p = self.cache.cached(start, span, splits)?;
        note(&self.status, start, Ok(()));
        Some(p)
    }

    /// The partition at `start` assembled from `splits`, from the cache or fetched into it.
    /// Blocking: call from a search thread.
    pub fn open_remote(
        &self,
        start: i64,
        span: i64,
        splits: &[SplitEntry],
    ) -> Result<Arc<Partition>> {
        let (rt, bucket) = (&self.rt, &self.bucket);
        // Downloaded since the search looked: taken from the cache.
        if let Some(p) = self.cached(start, span, splits) {
            return Ok(p);
        }
        // Not downloaded yet: read by ranges now, downloaded whole in the background.
        // A failed read is noted (see `Status`); a refusal for want of memory is the
        // search's, not the store's.
        let status = self.status.clone();
        let report = Arc::new(move |e: &Error| note(&status, start, Err(e)));
        match self.cache.remote(rt, bucket, start, span, splits, report) {
            Ok(Some(p)) => {
                self.download_later(start, span, splits);
                return Ok(p);
            }
            Ok(None) => {}
            Err(e @ Error::ColdMemory { .. }) => return Err(e),
            Err(e) => {
                note(&self.status, start, Err(&e));
                return Err(e);
            }
        }
        let res = self.cache.partition(rt, bucket, start, span, splits);
        note(&self.status, start, res.as_ref().map(|_| ()));
        res
    }

    /// Fails for a local partition that holds only records that arrived after it left
    /// local disk (see [`Partition::incomplete`]): searched, it would answer without the
    /// group's splits of it, which the seal loop is reading into it.
    pub fn check_complete(&self, p: &Partition) -> Result<()> {
        if !p.incomplete {
            return Ok(());
        }
        let last = self.status.lock().unwrap().seal_error.clone();
        Err(Error::Store {
            what: format!("partition {}", format_rfc3339_secs(p.start)),
            message: format!(
                "this indexer holds only its records that arrived after the partition was sealed; the seal loop is reading the group's splits of it into it ({})",
                last.map_or("no failure so far".into(), |e| format!("last failure: {e}"))
            ),
        })
    }

    /// Notes the seal loop's failure talking to the store, for `/healthz`.
    pub fn failed(&self, e: &Error) {
        self.status.lock().unwrap().seal_error = Some(e.to_string());
    }

    /// A round of the seal loop reached the store and did all it had to.
    pub fn succeeded(&self) {
        self.status.lock().unwrap().seal_error = None;
    }

    /// How many local partitions hold records no split holds, and how many of those are
    /// due for sealing.
    pub fn set_backlog(&self, unsealed: u64, lag: u64) {
        let mut s = self.status.lock().unwrap();
        s.unsealed = unsealed;
        s.lag = lag;
    }

    pub fn health(&self) -> StoreHealth {
        let mut s = self.status.lock().unwrap();
        let read_error = s.last_read_error(Instant::now());
        StoreHealth {
            url: self.bucket.describe(),
            splits: self.manifest().splits.len() as u64,
            unsealed_partitions: s.unsealed,
            upload_lag_partitions: s.lag,
            last_error: s
                .seal_error
                .clone()
                .or_else(|| s.manifest_error.clone())
                .or(read_error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a failed read of a partition stayed in `/healthz` until a download of
    /// it succeeded, which never comes for a partition too large for the cache or one
    /// that retention removed.
    #[test]
    fn read_failures_show_for_a_while_and_not_for_partitions_gone() {
        let t0 = Instant::now();
        let mut s = Status::default();
        s.read_failed(3600, "first".into(), t0);
        s.read_failed(7200, "second".into(), t0 + Duration::from_secs(1));
        let later = t0 + Duration::from_secs(60);
        assert_eq!(s.last_read_error(later).as_deref(), Some("second; first"));
        s.keep_read_errors(&BTreeSet::from([3600]));
        assert_eq!(s.last_read_error(later).as_deref(), Some("first"));
        assert_eq!(s.last_read_error(t0 + READ_ERROR_SHOWN), None);
        s.read_failed(3600, "again".into(), t0);
        s.read_ok(3600);
        assert_eq!(s.last_read_error(t0), None);
    }
}
