//! The local cache of partitions assembled from their splits: each entry is one index
//! directory (all files of all the partition's splits plus a `meta.json` listing their
//! segments), downloaded whole and verified before anyone reads it, kept under a byte
//! budget by evicting the least recently used entries that no search holds.
//!
//! ```text
//! CACHE_DIR/
//!   p-001764201600-3600-0f3a9c1e5b7d2a40/   a partition version (hash of its split ids)
//!   p-001764201600-3600-....tmp/            being downloaded, or being removed
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use sha2::{Digest, Sha256};
use tantivy::schema::Schema;

use super::bucket::Bucket;
use super::manifest::SplitEntry;
use super::remote::{check_segments, Fetcher, Memory, RemoteDirectory, RemoteSplit, Reservation};
use super::split::{meta_json, unpack, write_meta};
use crate::error::{Error, Result};
use crate::layout;
use crate::metrics::{CacheLookup, CorruptSplitFound, Metrics, SplitFetched, M};
use crate::partition::Partition;

/// Partitions assembled from their splits under CACHE_DIR (`DATA/cache/`), bounded by
/// `max_bytes`: least recently used entries not in use are removed first. One entry per
/// partition *version* (its set of split ids); a newer version replaces an older.
/// Cheap to clone; clones share one cache.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    max_bytes: u64,
    schema: Schema,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    /// Partitions read by ranges (`remote.rs`) until their download lands, by entry name,
    /// with when each was last used; at most [`REMOTE_ENTRIES`].
    remote: Mutex<HashMap<String, (u64, Arc<Partition>)>>,
    /// Bytes of checked chunks the partitions read by ranges keep in memory, shared.
    kept: Arc<AtomicU64>,
    /// The memory the open partitions read by ranges take for their splits' tails.
    memory: Arc<Memory>,
}

/// `--cache-memory`'s default.
pub const DEFAULT_MEMORY: u64 = 1 << 30;

/// Partitions read by ranges kept open at once (each holds its splits' hot bytes, at most
/// 8 MiB a split, and shares the chunk budget).
const REMOTE_ENTRIES: usize = 32;
/// The chunk budget of the partitions read by ranges: an eighth of `--cache-bytes`, at
/// most this (it is memory, not disk).
const MAX_KEPT: u64 = 256 << 20;

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// Entries being downloaded, so a second caller waits for the first download.
    loading: HashMap<String, Arc<Flight>>,
    /// Bytes of every entry.
    bytes: u64,
    /// A clock for recency: bumped at every use.
    tick: u64,
}

struct Entry {
    start: i64,
    bytes: u64,
    last_used: u64,
    /// Opened on first use; a clone held elsewhere means a search uses it.
    partition: Option<Arc<Partition>>,
}

impl Entry {
    fn in_use(&self) -> bool {
        self.partition
            .as_ref()
            .is_some_and(|p| Arc::strong_count(p) > 1)
    }
}

/// One download in progress: its outcome, once known, for everyone waiting on it.
#[derive(Default)]
struct Flight {
    done: Mutex<Option<Result<()>>>,
    cv: Condvar,
}

/// Ends a flight whatever happens to its leader: a panic must not leave waiters waiting.
struct Landing<'a> {
    cache: &'a Inner,
    name: &'a str,
    flight: Arc<Flight>,
    result: Option<Result<()>>,
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        let result = self
            .result
            .take()
            .unwrap_or_else(|| Err(Error::Panicked("a cache download panicked".into())));
        self.cache.lock().loading.remove(self.name);
        *self.flight.done.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
        self.flight.cv.notify_all();
    }
}

/// Refuses a request for partition `start` with no splits or splits of another partition.
fn check_splits(start: i64, span: i64, splits: &[SplitEntry]) -> Result<()> {
    if splits.is_empty() || splits.iter().any(|s| s.start != start || s.span != span) {
        return Err(Error::BadRequest(format!(
            "the cache was asked for partition {start} with splits of another partition, or none"
        )));
    }
    Ok(())
}

/// The entry name of a partition version: its start and span, then a hash of its split
/// ids, so a new split (a new version) gets a new entry.
fn entry_name(start: i64, span: i64, splits: &[SplitEntry]) -> String {
    let mut ids: Vec<&str> = splits.iter().map(|s| s.id.as_str()).collect();
    ids.sort_unstable();
    let mut h = Sha256::new();
    for id in ids {
        h.update(id.as_bytes());
        h.update(b"\n");
    }
    let hash = h.finalize();
    let mut name = layout::partition_name(start, span);
    name.push('-');
    for b in &hash[..8] {
        let _ = write!(name, "{b:02x}");
    }
    name
}

/// Takes the least recently used of the partitions read by ranges that `may` allows out
/// of `remote` (dropped by the caller, outside the lock).
fn close_oldest(
    remote: &mut HashMap<String, (u64, Arc<Partition>)>,
    may: impl Fn(&Arc<Partition>) -> bool,
) -> Option<(u64, Arc<Partition>)> {
    let oldest = remote
        .iter()
        .filter(|(_, (_, p))| may(p))
        .min_by_key(|(_, (used, _))| *used)
        .map(|(n, _)| n.clone())?;
    remote.remove(&oldest)
}

/// (start, span) of an entry name, `p-START-SPAN-HASH`.
fn parse_entry_name(name: &str) -> Option<(i64, i64)> {
    let (partition, hash) = name.rsplit_once('-')?;
    if hash.len() != 16 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    layout::parse_partition_name(partition)
}

impl Cache {
    /// Opens the cache in `dir`: drops leftovers (`*.tmp`: downloads cut short, removals
    /// not finished), keeps complete entries, and trims to `max_bytes`.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        schema: Schema,
        metrics: Arc<Metrics>,
    ) -> Result<Cache> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut found = Vec::new();
        for item in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let item = item.map_err(|e| Error::io(dir, e))?;
            let path = item.path();
            let name = item.file_name().to_string_lossy().into_owned();
            let parsed = parse_entry_name(&name);
            if name.ends_with(".tmp") || (parsed.is_some() && !path.join("meta.json").is_file()) {
                remove_any(&path)?;
                continue;
            }
            let Some((start, _)) = parsed else {
                tracing::warn!(path = %path.display(), "Leaving an unknown file in the cache directory.");
                continue;
            };
            let modified = item.metadata().and_then(|m| m.modified()).ok();
            found.push((modified, name, start, crate::wal::dir_bytes(&path)));
        }
        // The oldest first, so recency survives a restart roughly.
        found.sort();
        let mut state = State::default();
        for (_, name, start, bytes) in found {
            state.tick += 1;
            state.bytes += bytes;
            let entry = Entry {
                start,
                bytes,
                last_used: state.tick,
                partition: None,
            };
            state.entries.insert(name, entry);
        }
        let cache = Cache {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                max_bytes,
                schema,
                metrics,
                state: Mutex::new(state),
                remote: Mutex::default(),
                kept: Arc::default(),
                memory: Memory::new(DEFAULT_MEMORY),
            }),
        };
        let victims = cache.inner.evict(&mut cache.inner.lock(), false);
        cache.inner.remove_dirs(victims);
        Ok(cache)
    }

    /// The assembled partition for `splits` (all of one partition's), downloading and
    /// verifying missing ones with `bucket` via `rt.block_on`. Blocking: call from a
    /// blocking thread, never from async code. Concurrent callers for the same entry
    /// download once.
    pub fn partition(
        &self,
        rt: &tokio::runtime::Handle,
        bucket: &Bucket,
        start: i64,
        span: i64,
        splits: &[SplitEntry],
    ) -> Result<Arc<Partition>> {
        check_splits(start, span, splits)?;
        let inner = &*self.inner;
        let name = entry_name(start, span, splits);
        loop {
            if let Some(p) = inner.cached(&name, start, span) {
                return Ok(p);
            }
            let state = inner.lock();
            // Landed between the two looks.
            if state.entries.contains_key(&name) {
                continue;
            }
            if let Some(flight) = state.loading.get(&name).cloned() {
                drop(state);
                let mut done = flight.done.lock().unwrap_or_else(|e| e.into_inner());
                while done.is_none() {
                    done = flight.cv.wait(done).unwrap_or_else(|e| e.into_inner());
                }
                if let Some(Err(e)) = &*done {
                    return Err(e.clone());
                }
                // Downloaded: the next turn finds the entry (or, evicted meanwhile, loads it).
                continue;
            }
            let mut state = state;
            let flight = Arc::new(Flight::default());
            state.loading.insert(name.clone(), flight.clone());
            drop(state);
            CacheLookup { hit: false }.emit(&inner.metrics);
            let mut landing = Landing {
                cache: inner,
                name: &name,
                flight,
                result: None,
            };
            let loaded = inner.load(rt, bucket, &name, start, span, splits);
            landing.result = Some(loaded.as_ref().map(|_| ()).map_err(Error::clone));
            drop(landing);
            return loaded;
        }
    }

    /// The partition for `splits` read by ranges from the store (`remote.rs`), without
    /// downloading it: opened with one GET of each split's tail, then kept open (with the
    /// chunks its searches fetched) until the partition's download lands, or until its
    /// tails' memory is needed for another and no search holds it (`--cache-memory`).
    /// `None` when a split is of format 1, or the tails need more than the whole memory
    /// limit: those can only be read whole. Blocking, like [`Cache::partition`]. `report`
    /// hears of every read that fails later.
    pub fn remote(
        &self,
        rt: &tokio::runtime::Handle,
        bucket: &Bucket,
        start: i64,
        span: i64,
        splits: &[SplitEntry],
        report: Arc<dyn Fn(&Error) + Send + Sync>,
    ) -> Result<Option<Arc<Partition>>> {
        check_splits(start, span, splits)?;
        if splits.iter().any(|s| s.tail.is_none()) {
            return Ok(None);
        }
        let inner = &*self.inner;
        let name = entry_name(start, span, splits);
        let tick = {
            let mut state = inner.lock();
            state.tick += 1;
            state.tick
        };
        if let Some((used, p)) = inner.remote_lock().get_mut(&name) {
            *used = tick;
            CacheLookup { hit: true }.emit(&inner.metrics);
            return Ok(Some(p.clone()));
        }
        CacheLookup { hit: false }.emit(&inner.metrics);
        let Some(memory) = inner.reserve(splits)? else {
            return Ok(None);
        };
        let fetcher = Fetcher {
            rt: rt.clone(),
            bucket: bucket.clone(),
            metrics: inner.metrics.clone(),
            kept: inner.kept.clone(),
            max_kept: (inner.max_bytes / 8).min(MAX_KEPT),
            report,
        };
        let mut opened = Vec::with_capacity(splits.len());
        let mut segments = Vec::new();
        let mut seen = HashSet::new();
        for split in splits {
            let Some(remote) = RemoteSplit::open(&fetcher, split)? else {
                return Ok(None);
            };
            for (id, max_doc) in remote.segments() {
                if !seen.insert(*id) {
                    return Err(Error::CorruptSplit {
                        object: format!("{}/{}", bucket.describe(), split.object),
                        reason: format!(
                            "segment {} is also in another split of the partition",
                            id.uuid_string()
                        ),
                    });
                }
                segments.push((*id, *max_doc));
            }
            opened.push(Arc::new(remote));
        }
        let directory = RemoteDirectory::new(&opened, meta_json(&inner.schema, &segments), memory);
        let partition = Arc::new(Partition::open_remote(
            inner.dir.join(&name),
            directory,
            start,
            span,
        )?);
        let mut remote = inner.remote_lock();
        // Downloaded meanwhile: later searches read the download, so keeping this copy
        // would only hold memory.
        if !inner.lock().entries.contains_key(&name) {
            remote.insert(name, (tick, partition.clone()));
        }
        while remote.len() > REMOTE_ENTRIES {
            close_oldest(&mut remote, |_| true);
        }
        Ok(Some(partition))
    }

    /// Writes a writable copy of the assembled partition for `splits` into `dest`: hard
    /// links of the cached files where the file system allows (tantivy never changes a
    /// segment file, it only adds and removes whole files, so sharing them is safe),
    /// copies otherwise, and a `meta.json` of its own. For records that arrive for a
    /// partition only the store holds.
    pub fn materialize(
        &self,
        rt: &tokio::runtime::Handle,
        bucket: &Bucket,
        start: i64,
        span: i64,
        splits: &[SplitEntry],
        dest: &Path,
    ) -> Result<()> {
        // Held until the copy is done, so eviction cannot remove the files mid-copy.
        let partition = self.partition(rt, bucket, start, span, splits)?;
        if dest.join("meta.json").exists() {
            return Err(Error::io(
                dest,
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "a partition is already there",
                ),
            ));
        }
        fs::create_dir_all(dest).map_err(|e| Error::io(dest, e))?;
        let segments: Vec<_> = partition
            .index
            .searchable_segment_metas()?
            .iter()
            .map(|s| (s.id(), s.max_doc()))
            .collect();
        let mut copied = Vec::new();
        for item in fs::read_dir(&partition.dir).map_err(|e| Error::io(&partition.dir, e))? {
            let item = item.map_err(|e| Error::io(&partition.dir, e))?;
            let name = item.file_name().to_string_lossy().into_owned();
            if name.starts_with("meta.json") || name.starts_with('.') {
                continue;
            }
            let (from, to) = (item.path(), dest.join(&name));
            // A copy cut short earlier may have left it.
            let _ = fs::remove_file(&to);
            if fs::hard_link(&from, &to).is_err() {
                fs::copy(&from, &to).map_err(|e| Error::io(&to, e))?;
            }
            copied.push(name);
        }
        // Listing the files as tantivy-managed lets its garbage collection remove them
        // once merges have replaced them in the writable copy.
        let managed = dest.join(".managed.json");
        let mut text = serde_json::to_vec(&copied).expect("names always serialise");
        text.push(b'\n');
        fs::write(&managed, text).map_err(|e| Error::io(&managed, e))?;
        write_meta(dest, &self.inner.schema, &segments)
    }

    /// The partition assembled from `splits` if it is in the cache now, opened: a search
    /// takes it at once instead of waiting in line with the downloads.
    pub fn cached(&self, start: i64, span: i64, splits: &[SplitEntry]) -> Option<Arc<Partition>> {
        check_splits(start, span, splits).ok()?;
        self.inner
            .cached(&entry_name(start, span, splits), start, span)
    }

    /// Whether a search is reading the partition at `start` by ranges right now.
    pub fn reading_by_ranges(&self, start: i64) -> bool {
        self.inner
            .remote_lock()
            .values()
            .any(|(_, p)| p.start == start && Arc::strong_count(p) > 1)
    }

    /// Sets how much memory the tails of partitions read by ranges may take together
    /// (`--cache-memory`; [`DEFAULT_MEMORY`] until set).
    pub fn set_memory(&self, bytes: u64) {
        self.inner.memory.set_limit(bytes);
    }

    /// Whether a partition of `bytes` fits in the cache at all.
    pub fn fits(&self, bytes: u64) -> bool {
        bytes <= self.inner.max_bytes
    }

    /// Bytes the entries take on disk.
    pub fn bytes(&self) -> u64 {
        self.inner.lock().bytes
    }

    /// Drops every entry not in use, and every partition read by ranges (for tests and
    /// benchmarks: a cold cache).
    pub fn clear(&self) {
        self.inner.remote_lock().clear();
        let victims = self.inner.evict(&mut self.inner.lock(), true);
        self.inner.remove_dirs(victims);
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves the map consistent (every
        // change is one insert or remove), so carry on with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Entry `name`, opened and marked used; `None` when absent, or when it no longer opens
    /// (damaged on local disk: dropped, to be downloaded again).
    fn cached(&self, name: &str, start: i64, span: i64) -> Option<Arc<Partition>> {
        let mut state = self.lock();
        state.tick += 1;
        let tick = state.tick;
        let entry = state.entries.get_mut(name)?;
        entry.last_used = tick;
        let opened = match &entry.partition {
            Some(p) => Ok(p.clone()),
            None => Partition::open(self.dir.join(name), start, span).map(Arc::new),
        };
        match opened {
            Ok(p) => {
                entry.partition = Some(p.clone());
                CacheLookup { hit: true }.emit(&self.metrics);
                // Entries the searches held since the last download may be let go by now:
                // the budget is kept on hits too, not only on misses.
                let victims = self.evict(&mut state, false);
                drop(state);
                self.remove_dirs(victims);
                Some(p)
            }
            Err(e) => {
                tracing::warn!(entry = %name, error = %e, "Cached partition does not open; fetching it again.");
                let victim = self.take(&mut state, name);
                drop(state);
                self.remove_dirs(victim.into_iter().collect());
                None
            }
        }
    }

    fn remote_lock(&self) -> MutexGuard<'_, HashMap<String, (u64, Arc<Partition>)>> {
        self.remote.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The memory for the tails of `splits`, making room by closing the partitions read
    /// by ranges that no search holds, least recently used first; refused when searches
    /// hold too much; `None` when they need more than the whole limit (the partition is
    /// then downloaded whole instead).
    fn reserve(&self, splits: &[SplitEntry]) -> Result<Option<Reservation>> {
        let needed: u64 = splits
            .iter()
            .map(|s| s.tail.as_ref().map_or(0, |t| t.bytes))
            .sum();
        if needed > self.memory.limit() {
            return Ok(None);
        }
        loop {
            if let Some(r) = self.memory.reserve(needed) {
                return Ok(Some(r));
            }
            let victim = close_oldest(&mut self.remote_lock(), |p| Arc::strong_count(p) == 1);
            // Dropped outside the lock: closing it gives its memory back.
            if victim.is_none() {
                return Err(Error::ColdMemory {
                    needed,
                    held: self.memory.used(),
                    limit: self.memory.limit(),
                });
            }
        }
    }

    /// Downloads, verifies and assembles entry `name`, then adds it.
    fn load(
        &self,
        rt: &tokio::runtime::Handle,
        bucket: &Bucket,
        name: &str,
        start: i64,
        span: i64,
        splits: &[SplitEntry],
    ) -> Result<Arc<Partition>> {
        let tmp = self.dir.join(format!("{name}.tmp"));
        let dir = self.dir.join(name);
        let assembled = self.assemble(rt, bucket, &tmp, splits);
        if let Err(e) = &assembled {
            let _ = fs::remove_dir_all(&tmp);
            if let Error::CorruptSplit { object, reason } = e {
                CorruptSplitFound { object, reason }.emit(&self.metrics);
            }
        }
        assembled?;
        if let Err(e) = fs::rename(&tmp, &dir) {
            let _ = fs::remove_dir_all(&tmp);
            return Err(Error::io(&dir, e));
        }
        let partition = match Partition::open(dir.clone(), start, span) {
            Ok(p) => Arc::new(p),
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let bytes = crate::wal::dir_bytes(&dir);
        let victims = {
            let mut state = self.lock();
            state.tick += 1;
            let tick = state.tick;
            // Older versions of the partition go first once nothing uses them.
            for (other, entry) in state.entries.iter_mut() {
                if entry.start == start && other != name {
                    entry.last_used = 0;
                }
            }
            state.bytes += bytes;
            state.entries.insert(
                name.to_string(),
                Entry {
                    start,
                    bytes,
                    last_used: tick,
                    partition: Some(partition.clone()),
                },
            );
            let mut victims = self.evict(&mut state, false);
            let stale: Vec<String> = state
                .entries
                .iter()
                .filter(|(n, e)| e.start == start && n.as_str() != name && !e.in_use())
                .map(|(n, _)| n.clone())
                .collect();
            for n in stale {
                victims.extend(self.take(&mut state, &n));
            }
            victims
        };
        self.remove_dirs(victims);
        // Read from local disk from now on: the copy read by ranges, with its chunks, goes
        // once the searches holding it end. (After the entry is in: `remote` checks for it
        // before keeping a copy, so none is left behind.)
        self.remote_lock().retain(|_, (_, p)| p.start != start);
        Ok(partition)
    }

    /// Fetches and unpacks every split into `tmp`, checking each holds the segments its
    /// manifest entry lists, and writes the `meta.json` of their union.
    fn assemble(
        &self,
        rt: &tokio::runtime::Handle,
        bucket: &Bucket,
        tmp: &Path,
        splits: &[SplitEntry],
    ) -> Result<()> {
        let _ = fs::remove_dir_all(tmp);
        fs::create_dir_all(tmp).map_err(|e| Error::io(tmp, e))?;
        let mut segments = Vec::new();
        let mut seen = HashSet::new();
        for (i, split) in splits.iter().enumerate() {
            let object = format!("{}/{}", bucket.describe(), split.object);
            let corrupt = |reason: String| Error::CorruptSplit {
                object: object.clone(),
                reason,
            };
            // Named by position, not by the manifest's id: the id is not trusted as a path.
            let bundle = tmp.join(format!("split-{i}.bundle"));
            let fetched = rt.block_on(bucket.get_split(split, &bundle))?;
            SplitFetched { bytes: fetched }.emit(&self.metrics);
            let got = unpack(&bundle, tmp).map_err(|e| match e {
                Error::CorruptSplit { reason, .. } => corrupt(reason),
                e => e,
            })?;
            fs::remove_file(&bundle).map_err(|e| Error::io(&bundle, e))?;
            check_segments(split, &got).map_err(corrupt)?;
            for (id, max_doc) in got {
                if !seen.insert(id) {
                    return Err(corrupt(format!(
                        "segment {} is also in another split of the partition",
                        id.uuid_string()
                    )));
                }
                segments.push((id, max_doc));
            }
        }
        write_meta(tmp, &self.schema, &segments)
    }

    /// Takes the least recently used entries not in use out of the map until the rest fit
    /// in `max_bytes` (all of them with `all`); returns the directories to remove.
    fn evict(&self, state: &mut State, all: bool) -> Vec<PathBuf> {
        let mut victims = Vec::new();
        while all || state.bytes > self.max_bytes {
            let oldest = state
                .entries
                .iter()
                .filter(|(_, e)| !e.in_use())
                .min_by_key(|(_, e)| e.last_used)
                .map(|(n, _)| n.clone());
            let Some(name) = oldest else { break };
            victims.extend(self.take(state, &name));
        }
        self.metrics.set(M::StoreCacheBytes, state.bytes);
        victims
    }

    /// Removes entry `name` from the map and renames its directory out of the way (under
    /// the lock, so a new download of the same entry cannot collide with the removal);
    /// returns where it went, to be removed outside the lock.
    fn take(&self, state: &mut State, name: &str) -> Option<PathBuf> {
        let entry = state.entries.remove(name)?;
        state.bytes -= entry.bytes;
        state.tick += 1;
        self.metrics.set(M::StoreCacheBytes, state.bytes);
        let from = self.dir.join(name);
        let to = self.dir.join(format!("{name}.{}.tmp", state.tick));
        match fs::rename(&from, &to) {
            Ok(()) => Some(to),
            Err(e) => {
                tracing::warn!(path = %from.display(), error = %e, "Could not remove a cache entry.");
                None
            }
        }
    }

    fn remove_dirs(&self, dirs: Vec<PathBuf>) {
        for dir in dirs {
            if let Err(e) = fs::remove_dir_all(&dir) {
                tracing::warn!(path = %dir.display(), error = %e, "Could not remove a cache entry; it goes at the next start.");
            }
        }
    }
}

/// Removes a file or a directory tree.
fn remove_any(path: &Path) -> Result<()> {
    let r = if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    r.map_err(|e| Error::io(path, e))
}
