//! Reading a partition's splits by ranges, without downloading them: what a search does
//! with a partition the cache does not hold yet (the cache then downloads it whole in the
//! background, so the next searches read it from local disk).
//!
//! Opening a split is one GET of its tail (hot bytes, footer, trailer): the tail's own
//! object, or a ranged GET of the split's end when that is missing or damaged, checked
//! against the manifest entry's `tail` sha256. tantivy then reads through
//! [`RemoteDirectory`]: a read inside a hot range is answered from memory; any other read
//! fetches the chunks it covers ([`super::split::CHUNK_BYTES`] each, one GET per run of
//! missing chunks), checks each against the footer's checksum and keeps it for the next
//! read of the same search or of the next one, under a memory budget shared by all splits
//! read this way. A chunk that does not match is an error naming the split, never data
//! handed to tantivy: a search over it fails with [`Error::CorruptSplit`].

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tantivy::directory::error::{DeleteError, LockError, OpenReadError, OpenWriteError};
use tantivy::directory::{
    Directory, DirectoryLock, FileHandle, Lock, OwnedBytes, WatchCallback, WatchHandle, WritePtr,
};
use tantivy::index::SegmentId;
use tantivy::HasLen;

use super::bucket::Bucket;
use super::manifest::{tail_object, SplitEntry};
use super::split::{
    chunk_sum, parse_tail, read_only, read_only_directory, Footer, OpenedTail, HOT_MAX, MAX_FOOTER,
};
use crate::error::{Error, Result};
use crate::metrics::{CorruptSplitFound, Metrics, SplitFetched};

/// A tail is at most the footer, the hot bytes and the trailer; anything longer is not a
/// tail this build wrote.
const MAX_TAIL: u64 = MAX_FOOTER + HOT_MAX + 16;
/// The longest a ranged read may take: a few MiB at most, where a whole split's download
/// is allowed minutes.
const RANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// A failed ranged read, carried inside the `io::Error` tantivy passes up, so the search
/// that hit it fails with what happened to which split rather than a bare I/O error.
#[derive(Debug)]
pub struct RangeReadError {
    /// `s3://…/splits/…` of the split.
    pub object: String,
    pub reason: String,
    /// The bytes arrived and do not match their checksum (or the object is too short);
    /// otherwise the store could not be read.
    pub corrupt: bool,
}

impl fmt::Display for RangeReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "split `{}`: {}", self.object, self.reason)
    }
}

impl std::error::Error for RangeReadError {}

impl RangeReadError {
    pub fn to_error(&self) -> Error {
        if self.corrupt {
            Error::CorruptSplit {
                object: self.object.clone(),
                reason: self.reason.clone(),
            }
        } else {
            Error::Store {
                what: self.object.clone(),
                message: self.reason.clone(),
            }
        }
    }
}

/// What every split read by ranges shares: the store, the runtime to wait on it with, the
/// metrics, and the chunk memory budget.
#[derive(Clone)]
pub struct Fetcher {
    pub rt: tokio::runtime::Handle,
    pub bucket: Bucket,
    pub metrics: Arc<Metrics>,
    /// Bytes of chunks kept by all splits read by ranges, and the most they may keep.
    pub kept: Arc<AtomicU64>,
    pub max_kept: u64,
    /// Told of every read that fails once the split is open (for `/healthz`).
    pub report: Arc<dyn Fn(&Error) + Send + Sync>,
}

impl Fetcher {
    /// [`Bucket::get_small`], waiting at most [`RANGE_TIMEOUT`].
    fn get_small(&self, object: &str, max: u64) -> Result<Option<Vec<u8>>> {
        let read = self.bucket.get_small(object, max);
        self.rt
            .block_on(async { tokio::time::timeout(RANGE_TIMEOUT, read).await })
            .unwrap_or_else(|_| Err(self.timed_out(object)))
    }

    fn timed_out(&self, object: &str) -> Error {
        Error::Store {
            what: format!("{}/{object}", self.bucket.describe()),
            message: format!("a read got no answer within {} s", RANGE_TIMEOUT.as_secs()),
        }
    }

    /// Bytes `range` of `object` (of `size` bytes), waiting at most [`RANGE_TIMEOUT`]: a
    /// search waits on this, and its own time limit is only checked between reads.
    fn get(&self, object: &str, size: u64, range: Range<u64>) -> Result<Vec<u8>> {
        let read = self.bucket.get_range(object, size, range);
        self.rt
            .block_on(async { tokio::time::timeout(RANGE_TIMEOUT, read).await })
            .unwrap_or_else(|_| Err(self.timed_out(object)))
    }
}

/// One split read by ranges.
pub struct RemoteSplit {
    /// `s3://…/splits/…`, for errors.
    object: String,
    /// The object's name under the group's root.
    key: String,
    /// The whole object's size.
    bytes: u64,
    footer: Footer,
    segments: Vec<(SegmentId, u32)>,
    hot: OwnedBytes,
    /// Where each hot range starts in `hot`, by (file, start in the file).
    hot_at: Vec<(usize, u64, u64, usize)>,
    chunks: Mutex<HashMap<u64, OwnedBytes>>,
    fetcher: Fetcher,
}

impl fmt::Debug for RemoteSplit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteSplit")
            .field("object", &self.object)
            .finish_non_exhaustive()
    }
}

impl Drop for RemoteSplit {
    fn drop(&mut self) {
        let held: u64 = self
            .chunks
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|c| c.len() as u64)
            .sum();
        self.fetcher.kept.fetch_sub(held, Ordering::Relaxed);
    }
}

impl RemoteSplit {
    /// Opens `entry` with one ranged GET of its tail. `None` for a format 1 split (no
    /// tail in its entry), which can only be read whole. Blocking.
    pub fn open(fetcher: &Fetcher, entry: &SplitEntry) -> Result<Option<RemoteSplit>> {
        let Some(tail) = &entry.tail else {
            return Ok(None);
        };
        let object = format!("{}/{}", fetcher.bucket.describe(), entry.object);
        let corrupt = |reason: String| Error::CorruptSplit {
            object: object.clone(),
            reason,
        };
        if tail.bytes > entry.bytes || tail.bytes > MAX_TAIL || tail.bytes < 16 {
            return Err(corrupt(format!(
                "its manifest entry gives a tail of {} bytes for a split of {}",
                tail.bytes, entry.bytes
            )));
        }
        let matches = |bytes: &[u8]| {
            bytes.len() as u64 == tail.bytes
                && format!("{:x}", Sha256::digest(bytes)).eq_ignore_ascii_case(&tail.sha256)
        };
        // The tail's own object first: a server that reads a whole object to answer a
        // range (moto does) pays for the split's size only on the chunks a search needs.
        // Missing, damaged or unreadable (refused, archived, timed out), the split's own
        // last bytes stand in for it.
        let own = fetcher
            .get_small(&tail_object(&entry.object), tail.bytes)
            .unwrap_or_else(|e| {
                tracing::info!(error = %e, split = %entry.object, "Could not read a split's tail object; reading the split's own last bytes instead.");
                None
            });
        if let Some(got) = &own {
            SplitFetched {
                bytes: got.len() as u64,
            }
            .emit(&fetcher.metrics);
        }
        let got = match own {
            Some(got) if matches(&got) => got,
            _ => {
                let range = entry.bytes - tail.bytes..entry.bytes;
                let got = fetcher
                    .get(&entry.object, entry.bytes, range)
                    .map_err(|e| report(fetcher, e))?;
                SplitFetched {
                    bytes: got.len() as u64,
                }
                .emit(&fetcher.metrics);
                got
            }
        };
        let sha = format!("{:x}", Sha256::digest(&got));
        if !sha.eq_ignore_ascii_case(&tail.sha256) {
            return Err(report(
                fetcher,
                corrupt(format!(
                    "the sha256 of its last {} bytes, {sha}, differs from its manifest entry's {}",
                    tail.bytes, tail.sha256
                )),
            ));
        }
        let OpenedTail {
            footer,
            segments,
            hot,
        } = parse_tail(&got, entry.bytes).map_err(|r| report(fetcher, corrupt(r)))?;
        check_segments(entry, &segments).map_err(|r| report(fetcher, corrupt(r)))?;
        let mut hot_at = Vec::with_capacity(footer.hot.len());
        let mut at = 0usize;
        for h in &footer.hot {
            hot_at.push((h.file, h.start, h.len, at));
            at += h.len as usize;
        }
        Ok(Some(RemoteSplit {
            object,
            key: entry.object.clone(),
            bytes: entry.bytes,
            footer,
            segments,
            hot: OwnedBytes::new(hot),
            hot_at,
            chunks: Mutex::new(HashMap::new()),
            fetcher: fetcher.clone(),
        }))
    }

    /// The split's segments: (id, max_doc).
    pub fn segments(&self) -> &[(SegmentId, u32)] {
        &self.segments
    }

    /// The segments of the split, with their files: (file name, (file number, offset, len)).
    fn files(self: &Arc<Self>) -> impl Iterator<Item = (PathBuf, RemoteFile)> + '_ {
        self.footer.files.iter().enumerate().map(|(i, f)| {
            (
                PathBuf::from(&f.name),
                RemoteFile {
                    split: self.clone(),
                    file: i,
                    offset: f.offset,
                    len: f.len,
                },
            )
        })
    }

    fn error(&self, reason: String, corrupt: bool) -> io::Error {
        let e = RangeReadError {
            object: self.object.clone(),
            reason,
            corrupt,
        };
        (self.fetcher.report)(&e.to_error());
        io::Error::other(e)
    }

    /// Bytes `abs` of the split's data, from kept chunks or fetched.
    fn read(&self, abs: Range<u64>) -> io::Result<OwnedBytes> {
        let c = self.footer.chunk;
        let (first, last) = (abs.start / c, (abs.end - 1) / c);
        let mut have: Vec<Option<OwnedBytes>> = {
            let kept = self.chunks.lock().unwrap_or_else(|e| e.into_inner());
            (first..=last).map(|i| kept.get(&i).cloned()).collect()
        };
        // Each run of missing chunks is one GET.
        let mut i = 0;
        while i < have.len() {
            if have[i].is_some() {
                i += 1;
                continue;
            }
            let mut j = i;
            while j < have.len() && have[j].is_none() {
                j += 1;
            }
            let from = (first + i as u64) * c;
            let to = ((first + j as u64) * c).min(self.footer.hot_offset);
            let got = self
                .fetcher
                .get(&self.key, self.bytes, from..to)
                .map_err(|e| {
                    let corrupt = matches!(e, Error::CorruptSplit { .. });
                    self.error(e.to_string(), corrupt)
                })?;
            SplitFetched {
                bytes: got.len() as u64,
            }
            .emit(&self.fetcher.metrics);
            let got = OwnedBytes::new(got);
            for (k, slot) in have.iter_mut().enumerate().take(j).skip(i) {
                let index = first + k as u64;
                let at = (index * c - from) as usize;
                let end = (((index + 1) * c).min(self.footer.hot_offset) - from) as usize;
                let chunk = got.slice(at..end);
                if chunk_sum(&chunk) != self.footer.chunks[index as usize] {
                    let reason = format!(
                        "bytes {}..{} differ from their checksum",
                        index * c,
                        index * c + chunk.len() as u64
                    );
                    CorruptSplitFound {
                        object: &self.object,
                        reason: &reason,
                    }
                    .emit(&self.fetcher.metrics);
                    return Err(self.error(reason, true));
                }
                self.keep(index, &chunk);
                *slot = Some(chunk);
            }
            i = j;
        }
        let have: Vec<OwnedBytes> = have.into_iter().map(|h| h.expect("filled")).collect();
        let start = (abs.start - first * c) as usize;
        let len = (abs.end - abs.start) as usize;
        if have.len() == 1 {
            return Ok(have[0].slice(start..start + len));
        }
        let mut out = Vec::with_capacity(len);
        for chunk in &have {
            out.extend_from_slice(chunk.as_slice());
        }
        Ok(OwnedBytes::new(out).slice(start..start + len))
    }

    /// Keeps a checked chunk for later reads, if the budget has room.
    fn keep(&self, index: u64, chunk: &OwnedBytes) {
        let f = &self.fetcher;
        let n = chunk.len() as u64;
        if f.kept.fetch_add(n, Ordering::Relaxed) + n > f.max_kept {
            f.kept.fetch_sub(n, Ordering::Relaxed);
            return;
        }
        // A copy of its own: a slice would keep the whole buffer of its GET alive.
        let own = OwnedBytes::new(chunk.as_slice().to_vec());
        let mut kept = self.chunks.lock().unwrap_or_else(|e| e.into_inner());
        if kept.insert(index, own).is_some() {
            // Another read fetched it at the same time: counted once.
            f.kept.fetch_sub(n, Ordering::Relaxed);
        }
    }
}

/// Counts a corrupt split where it is found.
fn report(fetcher: &Fetcher, e: Error) -> Error {
    if let Error::CorruptSplit { object, reason } = &e {
        CorruptSplitFound { object, reason }.emit(&fetcher.metrics);
    }
    e
}

/// The split holds the segments its manifest entry lists, no more, no fewer.
pub(super) fn check_segments(
    entry: &SplitEntry,
    got: &[(SegmentId, u32)],
) -> std::result::Result<(), String> {
    let mut ids: Vec<String> = got.iter().map(|(id, _)| id.uuid_string()).collect();
    let mut listed = entry.segments.clone();
    ids.sort();
    listed.sort();
    if ids != listed {
        return Err(format!(
            "it holds segments {ids:?}, its manifest entry lists {listed:?}"
        ));
    }
    Ok(())
}

/// One file of a split, read by ranges.
#[derive(Debug)]
struct RemoteFile {
    split: Arc<RemoteSplit>,
    file: usize,
    offset: u64,
    len: u64,
}

impl HasLen for RemoteFile {
    fn len(&self) -> usize {
        self.len as usize
    }
}

impl FileHandle for RemoteFile {
    fn read_bytes(&self, range: Range<usize>) -> io::Result<OwnedBytes> {
        let (start, end) = (range.start as u64, range.end as u64);
        if start >= end {
            return Ok(OwnedBytes::empty());
        }
        if end > self.len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bytes {start}..{end} of a file of {}", self.len),
            ));
        }
        let split = &self.split;
        // Hot ranges are few (a handful per file): a scan is cheaper than an index.
        for &(file, h_start, h_len, at) in &split.hot_at {
            if file == self.file && h_start <= start && end <= h_start + h_len {
                let from = at + (start - h_start) as usize;
                return Ok(split.hot.slice(from..from + (end - start) as usize));
            }
        }
        split.read(self.offset + start..self.offset + end)
    }
}

/// A read-only tantivy directory over the splits of one partition, read by ranges, with
/// a `meta.json` listing their segments.
#[derive(Clone)]
pub struct RemoteDirectory {
    files: Arc<HashMap<PathBuf, Arc<RemoteFile>>>,
    meta: Arc<Vec<u8>>,
    /// The memory its splits' tails take, given back when the last clone goes.
    _memory: Arc<Reservation>,
}

/// The memory the tails of partitions read by ranges may take together
/// (`--cache-memory`).
#[derive(Debug)]
pub struct Memory {
    limit: AtomicU64,
    used: Mutex<u64>,
}

impl Memory {
    pub fn new(limit: u64) -> Arc<Memory> {
        Arc::new(Memory {
            limit: AtomicU64::new(limit),
            used: Mutex::new(0),
        })
    }

    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    pub fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        *self.used.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `bytes` more, if they fit under the limit.
    pub fn reserve(self: &Arc<Self>, bytes: u64) -> Option<Reservation> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if used.saturating_add(bytes) > self.limit() {
            return None;
        }
        *used += bytes;
        Some(Reservation {
            memory: self.clone(),
            bytes,
        })
    }
}

/// Bytes of [`Memory`] held until dropped.
#[derive(Debug)]
pub struct Reservation {
    memory: Arc<Memory>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut used = self.memory.used.lock().unwrap_or_else(|e| e.into_inner());
        *used = used.saturating_sub(self.bytes);
    }
}

impl fmt::Debug for RemoteDirectory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteDirectory")
            .field("files", &self.files.len())
            .finish_non_exhaustive()
    }
}

impl RemoteDirectory {
    /// The directory over `splits`; `meta` is the `meta.json` listing their segments.
    pub fn new(splits: &[Arc<RemoteSplit>], meta: Vec<u8>, memory: Reservation) -> RemoteDirectory {
        let files = splits
            .iter()
            .flat_map(|s| s.files())
            .map(|(name, file)| (name, Arc::new(file)))
            .collect();
        RemoteDirectory {
            files: Arc::new(files),
            meta: Arc::new(meta),
            _memory: Arc::new(memory),
        }
    }
}

impl Directory for RemoteDirectory {
    fn get_file_handle(
        &self,
        path: &Path,
    ) -> std::result::Result<Arc<dyn FileHandle>, OpenReadError> {
        match self.files.get(path) {
            Some(f) => Ok(f.clone()),
            None => Err(OpenReadError::FileDoesNotExist(path.to_path_buf())),
        }
    }

    fn exists(&self, path: &Path) -> std::result::Result<bool, OpenReadError> {
        Ok(path == Path::new("meta.json") || self.files.contains_key(path))
    }

    fn atomic_read(&self, path: &Path) -> std::result::Result<Vec<u8>, OpenReadError> {
        if path == Path::new("meta.json") {
            return Ok(self.meta.to_vec());
        }
        Err(OpenReadError::FileDoesNotExist(path.to_path_buf()))
    }

    read_only_directory!();
}
