//! The split format: some tantivy segments of one partition in one immutable object.
//!
//! ```text
//! [segment files, raw, back to back][hot bytes][footer JSON][footer length: u64 LE]["SAWSPLT1"]
//! \________________ data ________/ \______________________ tail _________________________/
//! ```
//! The footer lists the segments (id, max_doc), each file's name, offset and length, a
//! checksum of every [`CHUNK_BYTES`] of the data, and the *hot* ranges, copied once more
//! into the tail: the small pieces of the files tantivy reads just to open the segments
//! and their term dictionaries, and whole the `ts` and `_rid` columns and the correlation
//! fields' term dictionaries (see `hot_reads`). The tail is also uploaded as an object of
//! its own (`ID.tail`). So a search opens a split it has never seen with one GET of the
//! tail (checked against the manifest entry's `tail` checksum) and then fetches only the
//! chunks its query touches, each checked against its checksum (`remote.rs`); a
//! background download brings the whole split into the cache (checked against the
//! entry's size and sha256). The footer at the end lets the writer
//! stream files without knowing their sizes first. Everything read back is checked
//! against bounds before it is used: a split comes from a bucket other programs can write
//! to. Format 1 (no chunks, no hot bytes) is still read, whole.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tantivy::directory::error::{DeleteError, LockError, OpenReadError, OpenWriteError};
use tantivy::directory::{
    Directory, DirectoryLock, FileHandle, Lock, MmapDirectory, OwnedBytes, WatchCallback,
    WatchHandle, WritePtr,
};
use tantivy::index::{IndexMeta, SegmentId, SegmentMeta};
use tantivy::schema::Schema;
use tantivy::{HasLen, Index, ReloadPolicy};

use super::manifest::Tail;
use crate::error::{Error, Result};
use crate::partition::index_settings;

/// The last 8 bytes of every split.
pub const MAGIC: &[u8; 8] = b"SAWSPLT1";
/// The footer length and the magic.
const TRAILER: u64 = 16;
/// Far above any real footer (a few hundred bytes per segment and file, 19 bytes per 64 KiB
/// of data: a 16 MiB footer lists some 55 GB), low enough that a corrupt length cannot make
/// a reader allocate much.
pub const MAX_FOOTER: u64 = 16 << 20;
const FORMAT_VERSION: u32 = 2;
/// The unit in which ranged reads fetch and check the data: small enough that a term
/// lookup or one doc-store block costs little more than its own bytes, large enough that
/// the footer's checksum list stays a few KiB per hundred MiB.
pub const CHUNK_BYTES: u64 = 64 << 10;
/// Reads made while opening a split that are larger than this (whole term dictionaries of
/// busy fields, columns) are left to be fetched on demand rather than copied hot.
const HOT_READ_MAX: u64 = 64 << 10;
/// The most hot bytes a split carries: every cold search fetches them per split.
pub(super) const HOT_MAX: u64 = 8 << 20;
/// The fields whose whole term dictionaries a split keeps hot, room allowing.
const HOT_DICTIONARIES: [&str; 2] = ["request_id", "trace_id"];
/// The copy buffer: large reads keep the disk streaming without holding a file in memory.
const CHUNK: usize = 1 << 20;

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Footer {
    version: u32,
    start: i64,
    span: i64,
    segments: Vec<FooterSegment>,
    pub files: Vec<FooterFile>,
    /// Format 2: the chunk size, and the first 16 hex digits of the sha256 of each chunk
    /// of the data (`[0, hot_offset)`, the last chunk possibly shorter).
    #[serde(default)]
    pub chunk: u64,
    #[serde(default)]
    pub chunks: Vec<String>,
    /// Format 2: where the data ends and the hot bytes begin, and what they are (back to
    /// back, in this order).
    #[serde(default)]
    pub hot_offset: u64,
    #[serde(default)]
    pub hot: Vec<HotRange>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FooterSegment {
    id: String,
    max_doc: u32,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct FooterFile {
    pub name: String,
    pub offset: u64,
    pub len: u64,
}

/// Bytes `[start, start + len)` of file number `file` of the footer's list, kept hot.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct HotRange {
    pub file: usize,
    pub start: u64,
    pub len: u64,
}

/// The short checksum of one chunk as the footer lists it.
pub(super) fn chunk_sum(bytes: &[u8]) -> String {
    let mut hex = format!("{:x}", Sha256::digest(bytes));
    hex.truncate(16);
    hex
}

/// What [`pack`] wrote: the split's size and sha256, and its tail's (for the manifest).
#[derive(Debug)]
pub struct Packed {
    pub bytes: u64,
    pub sha256: String,
    pub tail: Tail,
}

/// Passes writes through while counting and hashing them: whole, per chunk while
/// `chunks` is on (the data), and from `tail` on (the tail).
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
    chunking: bool,
    chunk: Vec<u8>,
    chunks: Vec<String>,
    tail: Option<Sha256>,
}

impl<W: Write> Hashing<W> {
    /// Ends the data: the last, shorter chunk gets its checksum and the tail begins.
    fn end_data(&mut self) {
        if !self.chunk.is_empty() {
            self.chunks.push(chunk_sum(&self.chunk));
            self.chunk.clear();
        }
        self.chunking = false;
        self.tail = Some(Sha256::new());
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        if self.chunking {
            let mut rest = &buf[..n];
            while !rest.is_empty() {
                let take = rest.len().min(CHUNK_BYTES as usize - self.chunk.len());
                self.chunk.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if self.chunk.len() == CHUNK_BYTES as usize {
                    self.chunks.push(chunk_sum(&self.chunk));
                    self.chunk.clear();
                }
            }
        }
        if let Some(tail) = &mut self.tail {
            tail.update(&buf[..n]);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The files of `segment` in a partition directory, by name. tantivy 0.27 lists a
/// segment's files only through [`IndexMeta::list_segment_files`]; sawmill registers no
/// custom plugins, so an `IndexMeta` with no persisted extensions lists all of them.
fn segment_files(segment: &SegmentMeta) -> Vec<PathBuf> {
    let mut meta = IndexMeta::with_schema(Schema::builder().build());
    meta.segments = vec![segment.clone()];
    let mut files: Vec<PathBuf> = meta.list_segment_files().into_iter().collect();
    files.sort();
    files
}

/// Files tantivy lists as candidates that a committed segment may lack: the delete bitset
/// (none without deletes) and the temporary doc store of a segment still being written.
fn optional_file(name: &str) -> bool {
    name.ends_with(".del") || name.ends_with(".store.temp")
}

/// Writes the split of `segments` (their files, read from `partition_dir`, and their hot
/// ranges) to `out`.
pub fn pack(
    partition_dir: &Path,
    start: i64,
    span: i64,
    segments: &[SegmentMeta],
    out: &Path,
) -> Result<Packed> {
    // Refused before a byte is written: packing tens of gigabytes only to find the footer
    // too large would be repeated at every seal round.
    let mut data = 0u64;
    for segment in segments {
        for name in segment_files(segment) {
            data += std::fs::metadata(partition_dir.join(name)).map_or(0, |m| m.len());
        }
    }
    footer_fits(data).map_err(|why| Error::io(out, io::Error::other(why)))?;
    let file = File::create(out).map_err(|e| Error::io(out, e))?;
    let mut w = Hashing {
        inner: BufWriter::with_capacity(CHUNK, file),
        hasher: Sha256::new(),
        bytes: 0,
        chunking: true,
        chunk: Vec::with_capacity(CHUNK_BYTES as usize),
        chunks: Vec::new(),
        tail: None,
    };
    let mut footer = Footer {
        version: FORMAT_VERSION,
        start,
        span,
        segments: Vec::with_capacity(segments.len()),
        files: Vec::new(),
        chunk: CHUNK_BYTES,
        chunks: Vec::new(),
        hot_offset: 0,
        hot: Vec::new(),
    };
    let mut buf = vec![0u8; CHUNK];
    for segment in segments {
        // The footer has no place for a delete bitset's opstamp and count; sawmill never
        // deletes documents, so a segment with deletes means something else wrote here.
        if segment.has_deletes() {
            return Err(Error::io(
                partition_dir,
                io::Error::other(format!(
                    "segment {} has deleted documents, which a split cannot carry",
                    segment.id().uuid_string()
                )),
            ));
        }
        footer.segments.push(FooterSegment {
            id: segment.id().uuid_string(),
            max_doc: segment.max_doc(),
        });
        for name in segment_files(segment) {
            let path = partition_dir.join(&name);
            let name = name.to_string_lossy().into_owned();
            let mut f = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound && optional_file(&name) => continue,
                Err(e) => return Err(Error::io(&path, e)),
            };
            let offset = w.bytes;
            loop {
                let n = f.read(&mut buf).map_err(|e| Error::io(&path, e))?;
                if n == 0 {
                    break;
                }
                w.write_all(&buf[..n]).map_err(|e| Error::io(out, e))?;
            }
            footer.files.push(FooterFile {
                name,
                offset,
                len: w.bytes - offset,
            });
        }
    }
    w.end_data();
    footer.hot_offset = w.bytes;
    footer.chunks = std::mem::take(&mut w.chunks);
    for (name, range) in hot_reads(partition_dir, segments)? {
        let Some(file) = footer.files.iter().position(|f| f.name == name) else {
            continue;
        };
        let path = partition_dir.join(&name);
        let mut f = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let mut bytes = vec![0u8; (range.end - range.start) as usize];
        f.seek(SeekFrom::Start(range.start))
            .and_then(|_| f.read_exact(&mut bytes))
            .map_err(|e| Error::io(&path, e))?;
        w.write_all(&bytes).map_err(|e| Error::io(out, e))?;
        footer.hot.push(HotRange {
            file,
            start: range.start,
            len: range.end - range.start,
        });
    }
    let json = serde_json::to_vec(&footer).expect("a footer always serialises");
    if json.len() as u64 > MAX_FOOTER {
        // Readers refuse it as corrupt: say so now rather than upload what no one reads.
        return Err(Error::io(
            out,
            io::Error::other(format!(
                "the split's footer would take {} bytes, more than the {MAX_FOOTER} a reader accepts (a partition of about 50 GB or more: use --partition hour)",
                json.len()
            )),
        ));
    }
    w.write_all(&json).map_err(|e| Error::io(out, e))?;
    w.write_all(&(json.len() as u64).to_le_bytes())
        .map_err(|e| Error::io(out, e))?;
    w.write_all(MAGIC).map_err(|e| Error::io(out, e))?;
    let tail_bytes = w.bytes - footer.hot_offset;
    let Hashing {
        inner,
        hasher,
        bytes,
        tail,
        ..
    } = w;
    let file = inner
        .into_inner()
        .map_err(|e| Error::io(out, e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(out, e))?;
    Ok(Packed {
        bytes,
        sha256: format!("{:x}", hasher.finalize()),
        tail: Tail {
            bytes: tail_bytes,
            sha256: format!("{:x}", tail.expect("the data has ended").finalize()),
        },
    })
}

/// Fails when a split of `data` bytes would need a footer larger than readers accept: its
/// chunk checksums alone take 19 bytes of JSON each (16 hex digits, quotes and a comma).
fn footer_fits(data: u64) -> std::result::Result<(), String> {
    let at_least = data.div_ceil(CHUNK_BYTES) * 19;
    if at_least > MAX_FOOTER {
        return Err(format!(
            "the split's footer would take at least {at_least} bytes for {data} bytes of data, more than the {MAX_FOOTER} a reader accepts (a partition of about 50 GB or more: use --partition hour)"
        ));
    }
    Ok(())
}

/// The byte ranges (file name, range) to keep hot in the tail of the split of `segments`
/// of the partition in `partition_dir`, merged, at most [`HOT_MAX`] in all:
/// - what tantivy reads to open the segments and the term dictionary of every indexed
///   field, but for large reads ([`HOT_READ_MAX`]): a cold search would otherwise fetch
///   these one small GET after another;
/// - whole, as room allows, each column or dictionary all or nothing (part of one would
///   save no GET): the `ts` and `_rid` columns of every segment first, which every
///   ranking, count by time and time filter reads, then the term dictionaries of
///   [`HOT_DICTIONARIES`], the fields a correlation lookup (`request_id:…`, `/trace/…`)
///   asks of every partition.
fn hot_reads(partition_dir: &Path, segments: &[SegmentMeta]) -> Result<Vec<(String, Range<u64>)>> {
    let meta_path = partition_dir.join("meta.json");
    let text = fs::read(&meta_path).map_err(|e| Error::io(&meta_path, e))?;
    let mut meta: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| Error::io(&meta_path, io::Error::other(e)))?;
    // Only this split's segments: the partition may hold others, sealed before or not yet.
    let ours: HashSet<String> = segments.iter().map(|s| s.id().uuid_string()).collect();
    if let Some(list) = meta.get_mut("segments").and_then(|v| v.as_array_mut()) {
        list.retain(|s| {
            s.get("segment_id")
                .and_then(|v| v.as_str())
                .is_some_and(|id| ours.contains(&id.replace('-', "")))
        });
    }
    let mmap = MmapDirectory::open(partition_dir)
        .map_err(|e| Error::io(partition_dir, io::Error::other(e)))?;
    let recording = Recording {
        inner: mmap,
        meta: Arc::new(serde_json::to_vec(&meta).expect("a meta always serialises")),
        reads: Arc::default(),
        unit: Arc::default(),
    };
    let (reads, unit) = (recording.reads.clone(), recording.unit.clone());
    let index = Index::open(recording)?;
    let reader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()?;
    let searcher = reader.searcher();
    let schema = index.schema();
    // tantivy opens each column and dictionary once per segment reader: the ones kept
    // whole are opened first, each while its own unit number marks its reads, in the
    // order they are kept in: every segment's ranking columns, then the dictionaries.
    let mut next = 0;
    let mut mark = || {
        next += 1;
        unit.store(next, Ordering::Relaxed);
    };
    for seg in searcher.segment_readers() {
        mark();
        seg.fast_fields().date("ts")?;
        mark();
        seg.fast_fields().u64("_rid")?;
    }
    for seg in searcher.segment_readers() {
        for name in HOT_DICTIONARIES {
            if let Ok(field) = schema.get_field(name) {
                mark();
                seg.inverted_index(field)?;
            }
        }
    }
    unit.store(0, Ordering::Relaxed);
    for seg in searcher.segment_readers() {
        for (field, entry) in schema.fields() {
            if entry.is_indexed() {
                seg.inverted_index(field)?;
            }
        }
    }
    drop(searcher);
    drop(reader);
    let reads = std::mem::take(&mut *reads.lock().unwrap_or_else(|e| e.into_inner()));
    let mut chosen = choose_hot(reads, HOT_MAX);
    chosen.sort_by(|a, b| (&a.0, a.1.start).cmp(&(&b.0, b.1.start)));
    let mut merged: Vec<(String, Range<u64>)> = Vec::new();
    for (name, r) in chosen {
        match merged.last_mut() {
            Some((last, lr)) if *last == name && r.start <= lr.end => lr.end = lr.end.max(r.end),
            _ => merged.push((name, r)),
        }
    }
    Ok(merged)
}

/// Which of `reads` to keep hot within `budget` bytes: the small reads of unit 0 (at most
/// [`HOT_READ_MAX`] each) first, then each numbered unit in order, whole or not at all.
fn choose_hot(reads: Vec<NotedRead>, budget: u64) -> Vec<(String, Range<u64>)> {
    let mut units: BTreeMap<u32, Vec<(String, Range<u64>)>> = BTreeMap::new();
    let mut chosen = Vec::new();
    let mut total = 0;
    for (name, r, unit) in reads.into_iter().filter(|(_, r, _)| r.end > r.start) {
        let len = r.end - r.start;
        if unit != 0 {
            units.entry(unit).or_default().push((name, r));
        } else if len <= HOT_READ_MAX && total + len <= budget {
            total += len;
            chosen.push((name, r));
        }
    }
    let mut left_out = Vec::new();
    for reads in units.into_values() {
        let len: u64 = reads.iter().map(|(_, r)| r.end - r.start).sum();
        if total + len <= budget {
            total += len;
            chosen.extend(reads);
        } else {
            left_out.extend(reads);
        }
    }
    // The small reads of a unit left out (a column's header, read to open it) still save
    // a GET each, as unit 0's do.
    for (name, r) in left_out {
        let len = r.end - r.start;
        if len <= HOT_READ_MAX && total + len <= budget {
            total += len;
            chosen.push((name, r));
        }
    }
    chosen
}

/// The [`Directory`] methods of a directory only ever read through: every write fails,
/// and the reader's lock is a no-op (nothing writes here to lock against).
macro_rules! read_only_directory {
    () => {
        fn delete(&self, path: &Path) -> std::result::Result<(), DeleteError> {
            Err(DeleteError::IoError {
                io_error: Arc::new(read_only()),
                filepath: path.to_path_buf(),
            })
        }

        fn open_write(&self, path: &Path) -> std::result::Result<WritePtr, OpenWriteError> {
            Err(OpenWriteError::wrap_io_error(
                read_only(),
                path.to_path_buf(),
            ))
        }

        fn atomic_write(&self, _path: &Path, _data: &[u8]) -> io::Result<()> {
            Err(read_only())
        }

        fn sync_directory(&self) -> io::Result<()> {
            Ok(())
        }

        fn acquire_lock(&self, _lock: &Lock) -> std::result::Result<DirectoryLock, LockError> {
            Ok(DirectoryLock::from(Box::new(())))
        }

        fn watch(&self, _: WatchCallback) -> tantivy::Result<WatchHandle> {
            Ok(WatchHandle::empty())
        }
    };
}
pub(super) use read_only_directory;

/// A read noted by [`Recording`]: file, range, and the unit it was read for (0: none,
/// the reads that open a split).
type NotedRead = (String, Range<u64>, u32);

/// A read-only view of a partition directory that shows `meta` as its `meta.json` and
/// notes every range read through it.
#[derive(Clone, Debug)]
struct Recording {
    inner: MmapDirectory,
    meta: Arc<Vec<u8>>,
    /// Every read: file, range, and the unit being read then.
    reads: Arc<Mutex<Vec<NotedRead>>>,
    unit: Arc<AtomicU32>,
}

#[derive(Debug)]
struct RecordingFile {
    name: String,
    inner: Arc<dyn FileHandle>,
    reads: Arc<Mutex<Vec<NotedRead>>>,
    unit: Arc<AtomicU32>,
}

impl HasLen for RecordingFile {
    fn len(&self) -> usize {
        self.inner.len()
    }
}

impl FileHandle for RecordingFile {
    fn read_bytes(&self, range: Range<usize>) -> io::Result<OwnedBytes> {
        self.reads.lock().unwrap_or_else(|e| e.into_inner()).push((
            self.name.clone(),
            range.start as u64..range.end as u64,
            self.unit.load(Ordering::Relaxed),
        ));
        self.inner.read_bytes(range)
    }
}

impl Directory for Recording {
    fn get_file_handle(
        &self,
        path: &Path,
    ) -> std::result::Result<Arc<dyn FileHandle>, OpenReadError> {
        Ok(Arc::new(RecordingFile {
            name: path.to_string_lossy().into_owned(),
            inner: self.inner.get_file_handle(path)?,
            reads: self.reads.clone(),
            unit: self.unit.clone(),
        }))
    }

    fn exists(&self, path: &Path) -> std::result::Result<bool, OpenReadError> {
        self.inner.exists(path)
    }

    fn atomic_read(&self, path: &Path) -> std::result::Result<Vec<u8>, OpenReadError> {
        if path == Path::new("meta.json") {
            return Ok(self.meta.to_vec());
        }
        // `.managed.json` and the like: a reader needs none of them.
        Err(OpenReadError::FileDoesNotExist(path.to_path_buf()))
    }

    read_only_directory!();
}

/// The error of a write to a directory only ever read through.
pub(super) fn read_only() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "a read-only view of a split",
    )
}

/// Whether `name` may be written into an index directory: a plain file name of one of
/// the split's own segments (`<segment id>.<extension>`), so a crafted footer can neither
/// leave the directory nor replace `meta.json` or another segment's files.
fn allowed_name(name: &str, ids: &HashSet<String>) -> bool {
    let Some((id, ext)) = name.split_once('.') else {
        return false;
    };
    ids.contains(id)
        && !ext.is_empty()
        && ext.len() <= 64
        && !ext.contains("..")
        && ext
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.')
}

/// Checks magic/footer (bounded: footer ≤ 16 MiB, offsets inside the file, names plain
/// file names of the split's segments) and writes the files into `dir`; returns (segment
/// id, max_doc). Corrupt input is [`Error::CorruptSplit`] naming `bundle`.
pub fn unpack(bundle: &Path, dir: &Path) -> Result<Vec<(SegmentId, u32)>> {
    let corrupt = |reason: String| Error::CorruptSplit {
        object: bundle.display().to_string(),
        reason,
    };
    let mut f = File::open(bundle).map_err(|e| Error::io(bundle, e))?;
    let len = f.metadata().map_err(|e| Error::io(bundle, e))?.len();
    if len < TRAILER {
        return Err(corrupt(format!("{len} bytes is too short for a split")));
    }
    let mut trailer = [0u8; TRAILER as usize];
    f.seek(SeekFrom::Start(len - TRAILER))
        .and_then(|_| f.read_exact(&mut trailer))
        .map_err(|e| Error::io(bundle, e))?;
    if &trailer[8..] != MAGIC {
        return Err(corrupt("it does not end with the split magic".into()));
    }
    let footer_len = u64::from_le_bytes(trailer[..8].try_into().expect("8 bytes"));
    if footer_len > MAX_FOOTER || footer_len > len - TRAILER {
        return Err(corrupt(format!(
            "footer length {footer_len} exceeds the file ({len} bytes) or the limit of {MAX_FOOTER}"
        )));
    }
    let data_end = len - TRAILER - footer_len;
    let mut json = vec![0u8; footer_len as usize];
    f.seek(SeekFrom::Start(data_end))
        .and_then(|_| f.read_exact(&mut json))
        .map_err(|e| Error::io(bundle, e))?;
    let footer: Footer =
        serde_json::from_slice(&json).map_err(|e| corrupt(format!("bad footer: {e}")))?;
    let segments = check_footer(&footer, data_end).map_err(corrupt)?;
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut buf = vec![0u8; CHUNK];
    for file in &footer.files {
        let path = dir.join(&file.name);
        let mut out = File::create(&path).map_err(|e| Error::io(&path, e))?;
        f.seek(SeekFrom::Start(file.offset))
            .map_err(|e| Error::io(bundle, e))?;
        let mut left = file.len;
        while left > 0 {
            let want = left.min(CHUNK as u64) as usize;
            f.read_exact(&mut buf[..want])
                .map_err(|e| Error::io(bundle, e))?;
            out.write_all(&buf[..want])
                .map_err(|e| Error::io(&path, e))?;
            left -= want as u64;
        }
        out.sync_all().map_err(|e| Error::io(&path, e))?;
    }
    Ok(segments)
}

/// Checks a footer that begins at `footer_start`: its version, segment ids, file names,
/// that the files lie in the data and (format 2) that the chunk checksums cover the data
/// and the hot ranges lie in their files and fill the space up to the footer exactly.
/// Returns (segment id, max_doc) of its segments.
pub(super) fn check_footer(
    footer: &Footer,
    footer_start: u64,
) -> std::result::Result<Vec<(SegmentId, u32)>, String> {
    let data_end = match footer.version {
        1 => footer_start,
        2 => footer.hot_offset,
        v => {
            return Err(format!(
                "format version {v} (this build reads 1 and {FORMAT_VERSION})"
            ))
        }
    };
    if data_end > footer_start {
        return Err(format!(
            "its data ends at {data_end}, after its footer begins at {footer_start}"
        ));
    }
    let mut ids = HashSet::new();
    let mut segments = Vec::with_capacity(footer.segments.len());
    for s in &footer.segments {
        let id = (s.id.len() == 32 && s.id.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| SegmentId::from_uuid_string(&s.id).ok())
            .flatten()
            .ok_or_else(|| format!("bad segment id `{}`", s.id))?;
        if !ids.insert(s.id.clone()) {
            return Err(format!("segment `{}` is listed twice", s.id));
        }
        segments.push((id, s.max_doc));
    }
    let mut names = HashSet::new();
    for file in &footer.files {
        if !allowed_name(&file.name, &ids) {
            return Err(format!("bad file name `{}`", file.name));
        }
        if !names.insert(file.name.as_str()) {
            return Err(format!("file `{}` is listed twice", file.name));
        }
        if file
            .offset
            .checked_add(file.len)
            .is_none_or(|end| end > data_end)
        {
            return Err(format!(
                "file `{}` ({} bytes at {}) lies outside the data ({data_end} bytes)",
                file.name, file.len, file.offset
            ));
        }
    }
    if footer.version == 1 {
        return Ok(segments);
    }
    if !(4096..=16 << 20).contains(&footer.chunk) {
        return Err(format!("chunk size {} is out of bounds", footer.chunk));
    }
    if footer.chunks.len() as u64 != data_end.div_ceil(footer.chunk)
        || footer
            .chunks
            .iter()
            .any(|c| c.len() != 16 || !c.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(format!(
            "{} chunk checksums for {data_end} bytes of data in chunks of {}",
            footer.chunks.len(),
            footer.chunk
        ));
    }
    let mut hot_end = data_end;
    for h in &footer.hot {
        let inside = footer.files.get(h.file).is_some_and(|f| {
            h.len > 0 && h.start.checked_add(h.len).is_some_and(|end| end <= f.len)
        });
        if !inside {
            return Err(format!(
                "hot range of {} bytes at {} of file {} lies outside it",
                h.len, h.start, h.file
            ));
        }
        hot_end = hot_end.saturating_add(h.len);
    }
    if hot_end != footer_start {
        return Err(format!(
            "its hot ranges end at {hot_end}, its footer begins at {footer_start}"
        ));
    }
    Ok(segments)
}

/// A split's tail, read: its footer, its segments (id, max_doc) and its hot bytes.
pub(super) struct OpenedTail {
    pub footer: Footer,
    pub segments: Vec<(SegmentId, u32)>,
    pub hot: Vec<u8>,
}

/// Reads a split's tail (format 2: everything from its hot bytes on; `split_bytes` is the
/// whole split's size): (footer, segments, the hot bytes). The caller has checked the
/// tail against the manifest's checksum; this checks its structure.
pub(super) fn parse_tail(tail: &[u8], split_bytes: u64) -> std::result::Result<OpenedTail, String> {
    let len = tail.len() as u64;
    if len < TRAILER || len > split_bytes {
        return Err(format!(
            "a tail of {len} bytes cannot end a split of {split_bytes}"
        ));
    }
    let trailer = &tail[(len - TRAILER) as usize..];
    if &trailer[8..] != MAGIC {
        return Err("it does not end with the split magic".into());
    }
    let footer_len = u64::from_le_bytes(trailer[..8].try_into().expect("8 bytes"));
    if footer_len > MAX_FOOTER || footer_len > len - TRAILER {
        return Err(format!(
            "footer length {footer_len} exceeds the tail ({len} bytes) or the limit of {MAX_FOOTER}"
        ));
    }
    let json_at = (len - TRAILER - footer_len) as usize;
    let footer: Footer = serde_json::from_slice(&tail[json_at..(len - TRAILER) as usize])
        .map_err(|e| format!("bad footer: {e}"))?;
    if footer.version != 2 {
        return Err(format!(
            "format version {} has no tail to read by ranges",
            footer.version
        ));
    }
    let tail_start = split_bytes - len;
    if footer.hot_offset != tail_start {
        return Err(format!(
            "its data ends at {}, its tail begins at {tail_start}",
            footer.hot_offset
        ));
    }
    let segments = check_footer(&footer, tail_start + json_at as u64)?;
    Ok(OpenedTail {
        footer,
        segments,
        hot: tail[..json_at].to_vec(),
    })
}

/// The `meta.json` of an index of `segments` with sawmill's schema and settings (and no
/// payload).
pub(super) fn meta_json(schema: &Schema, segments: &[(SegmentId, u32)]) -> Vec<u8> {
    // tantivy builds segment metas only from an open index; the JSON is the same shape
    // its own `IndexMeta` writes, with every part serialised by tantivy's own types.
    let segments: Vec<serde_json::Value> = segments
        .iter()
        .map(|(id, max_doc)| serde_json::json!({"segment_id": id, "max_doc": max_doc, "deletes": null}))
        .collect();
    let meta = serde_json::json!({
        "index_settings": index_settings(),
        "segments": segments,
        "schema": schema,
        "opstamp": 0,
    });
    serde_json::to_vec_pretty(&meta).expect("a meta always serialises")
}

/// Writes `meta.json` in `dir` listing `segments` with sawmill's schema and settings
/// (and no payload), so `Index::open_in_dir(dir)` works.
pub fn write_meta(dir: &Path, schema: &Schema, segments: &[(SegmentId, u32)]) -> Result<()> {
    let text = meta_json(schema, segments);
    let tmp = dir.join("meta.json.tmp");
    let path = dir.join("meta.json");
    let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(&text)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::partition::Partition;
    use crate::record::Record;
    use crate::schema::Fields;
    use proptest::prelude::*;
    use serde_json::{json, Map};
    use tantivy::collector::Count;
    use tantivy::query::{AllQuery, TermQuery};
    use tantivy::schema::{IndexRecordOption, Value};
    use tantivy::{Index, TantivyDocument, Term};

    pub(crate) const START: i64 = 1_764_201_600;

    /// A fresh directory under the system's temp dir.
    pub(crate) fn tmp(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("sawmill-objstore-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    /// A partition under `root` with one segment per commit: `commits[i]` records each,
    /// messages `rec N word{N % 7}`, services `svc{N % 3}`.
    pub(crate) fn partition(root: &Path, commits: &[u64]) -> Partition {
        let fields = Fields::new();
        let p = Partition::create(root, &fields, START, 3600).unwrap();
        let mut writer = p
            .index
            .writer_with_num_threads::<TantivyDocument>(1, 15_000_000)
            .unwrap();
        let now = time::OffsetDateTime::from_unix_timestamp(START + 10).unwrap();
        let mut n = 0u64;
        for &count in commits {
            for _ in 0..count {
                let mut obj = Map::new();
                obj.insert("message".into(), json!(format!("rec {n} word{}", n % 7)));
                obj.insert("service".into(), json!(format!("svc{}", n % 3)));
                obj.insert("ts".into(), json!((START + (n as i64 % 3600)) * 1000));
                let r = Record::from_object(obj, now).unwrap();
                writer.add_document(fields.document(n, &r)).unwrap();
                n += 1;
            }
            writer.commit().unwrap();
        }
        writer.wait_merging_threads().unwrap();
        p.reader.reload().unwrap();
        p
    }

    /// Every stored `_source` of the index in `dir`, sorted, and its hits for `svc1`.
    fn contents(index: &Index) -> (Vec<String>, usize) {
        let fields = Fields::new();
        let searcher = index.reader().unwrap().searcher();
        let mut sources = Vec::new();
        for reader in searcher.segment_readers() {
            let store = reader.get_store_reader(1).unwrap();
            for doc in 0..reader.max_doc() {
                let d: TantivyDocument = store.get(doc).unwrap();
                let s = d.get_first(fields.source).unwrap().as_str().unwrap();
                sources.push(s.to_string());
            }
        }
        sources.sort();
        let service = fields.exact_field("service").unwrap();
        let q = TermQuery::new(
            Term::from_field_text(service, "svc1"),
            IndexRecordOption::Basic,
        );
        (sources, searcher.search(&q, &Count).unwrap())
    }

    /// A valid bundle of a small partition, its bytes.
    pub(crate) fn bundle(name: &str) -> (PathBuf, Vec<u8>) {
        let root = tmp(name);
        let p = partition(&root, &[40]);
        let metas = p.index.searchable_segment_metas().unwrap();
        let out = root.join("b.split");
        pack(&p.dir, START, 3600, &metas, &out).unwrap();
        let bytes = fs::read(&out).unwrap();
        (root, bytes)
    }

    /// Regression: hot ranges were admitted read by read in the order tantivy made them,
    /// one segment after another, so a segment's dictionaries could take the room of the
    /// next segment's ranking columns, and a dictionary could be kept in part (saving no
    /// GET). Now every segment's columns come first, and each unit is kept whole or not.
    #[test]
    fn hot_ranges_keep_every_segments_columns_first_and_units_whole() {
        const MB: u64 = 1 << 20;
        let read =
            |name: &str, at: u64, len: u64, unit: u32| (name.to_string(), at..at + len, unit);
        const KB: u64 = 1 << 10;
        let reads = vec![
            read("meta", 0, 100, 0),
            read("a.fast", 0, 3 * MB, 1),
            read("a.fast", 3 * MB, MB, 2),
            read("b.fast", 0, 2 * MB, 3),
            read("b.fast", 2 * MB, MB, 4),
            // request_id's dictionary in two reads, too large for the room left: not kept
            // in part; trace_id's, after it, fits.
            read("a.term", 0, 600 * KB, 5),
            read("a.term", 600 * KB, 600 * KB, 5),
            read("t.term", 0, 900 * KB, 6),
            read("big", 0, HOT_READ_MAX + 1, 0),
        ];
        let chosen = choose_hot(reads, 8 * MB);
        let names: Vec<(&str, u64)> = chosen.iter().map(|(n, r)| (n.as_str(), r.start)).collect();
        assert_eq!(
            names,
            [
                ("meta", 0),
                ("a.fast", 0),
                ("a.fast", 3 * MB),
                ("b.fast", 0),
                ("b.fast", 2 * MB),
                ("t.term", 0),
            ]
        );
        // A small read of a unit left out still fits alone.
        let chosen = choose_hot(
            vec![
                read("x.fast", 0, 2 * MB, 1),
                read("x.fast", 2 * MB, 1000, 1),
            ],
            MB,
        );
        assert_eq!(chosen, [("x.fast".to_string(), 2 * MB..2 * MB + 1000)]);
    }

    /// A split whose footer readers would refuse is refused up front, from the files'
    /// sizes, not after its data has been written.
    #[test]
    fn a_split_too_large_for_its_footer_is_refused_before_packing() {
        assert!(footer_fits(10 << 30).is_ok());
        let why = footer_fits(60 << 30).unwrap_err();
        assert!(why.contains("--partition hour"), "{why}");
        // Checksums alone past the limit: refused (the written footer is checked again).
        let chunks = MAX_FOOTER / 19 + 1;
        assert!(footer_fits(chunks * CHUNK_BYTES).is_err());
    }

    #[test]
    fn two_splits_of_two_commits_unpack_into_the_union() {
        let root = tmp("roundtrip");
        let p = partition(&root, &[300, 200]);
        let metas = p.index.searchable_segment_metas().unwrap();
        assert_eq!(metas.len(), 2, "one segment per commit");
        let (original, svc1) = contents(&p.index);
        assert_eq!(original.len(), 500);

        let mut assembled = Vec::new();
        for (i, meta) in metas.iter().enumerate() {
            let out = root.join(format!("{i}.split"));
            let packed = pack(&p.dir, START, 3600, std::slice::from_ref(meta), &out).unwrap();
            let body = fs::read(&out).unwrap();
            assert_eq!(packed.bytes, body.len() as u64);
            assert_eq!(packed.sha256, format!("{:x}", Sha256::digest(&body)));
            let tail = &body[body.len() - packed.tail.bytes as usize..];
            assert_eq!(packed.tail.sha256, format!("{:x}", Sha256::digest(tail)));
            let OpenedTail {
                footer,
                segments: segs,
                hot,
            } = parse_tail(tail, packed.bytes).unwrap();
            assert_eq!(segs, vec![(meta.id(), meta.max_doc())]);
            assert!(!footer.hot.is_empty(), "opening a segment reads something");
            // Every chunk checksum and every hot range is what the data holds.
            for (i, sum) in footer.chunks.iter().enumerate() {
                let at = i * CHUNK_BYTES as usize;
                let end = (at + CHUNK_BYTES as usize).min(footer.hot_offset as usize);
                assert_eq!(*sum, chunk_sum(&body[at..end]));
            }
            let mut at = 0;
            for h in &footer.hot {
                let f = &footer.files[h.file];
                let from = (f.offset + h.start) as usize;
                assert_eq!(
                    hot[at..at + h.len as usize],
                    body[from..from + h.len as usize]
                );
                at += h.len as usize;
            }
            assert_eq!(at, hot.len());

            // Each split alone is a complete index of its segment.
            let alone = root.join(format!("alone-{i}"));
            let segs = unpack(&out, &alone).unwrap();
            assert_eq!(segs, vec![(meta.id(), meta.max_doc())]);
            write_meta(&alone, &p.index.schema(), &segs).unwrap();
            let index = Index::open_in_dir(&alone).unwrap();
            let n = index
                .reader()
                .unwrap()
                .searcher()
                .search(&AllQuery, &Count)
                .unwrap();
            assert_eq!(n as u32, meta.max_doc());

            let both = root.join("both");
            assembled.extend(unpack(&out, &both).unwrap());
        }
        let both = root.join("both");
        write_meta(&both, &p.index.schema(), &assembled).unwrap();
        let index = Index::open_in_dir(&both).unwrap();
        assert_eq!(index.settings(), &index_settings());
        let (sources, hits) = contents(&index);
        assert_eq!(sources, original);
        assert_eq!(hits, svc1);
        assert!(hits > 100, "svc1 is a third of 500: {hits}");
        // The assembled directory opens as a partition, as the cache does.
        let reopened = Partition::open(both, START, 3600).unwrap();
        assert_eq!(reopened.reader.searcher().num_docs(), 500);
        let _ = fs::remove_dir_all(&root);
    }

    /// A bundle of `data` with `footer` (JSON) and the given length field and magic.
    fn assemble(
        data: &[u8],
        footer: &serde_json::Value,
        len: Option<u64>,
        magic: &[u8],
    ) -> Vec<u8> {
        let json = serde_json::to_vec(footer).unwrap();
        let mut out = data.to_vec();
        out.extend_from_slice(&json);
        out.extend_from_slice(&len.unwrap_or(json.len() as u64).to_le_bytes());
        out.extend_from_slice(magic);
        out
    }

    /// (data, footer) of a valid bundle.
    fn split_up(bytes: &[u8]) -> (Vec<u8>, serde_json::Value) {
        let n = bytes.len();
        let flen = u64::from_le_bytes(bytes[n - 16..n - 8].try_into().unwrap()) as usize;
        let data_end = n - 16 - flen;
        let footer = serde_json::from_slice(&bytes[data_end..n - 16]).unwrap();
        (bytes[..data_end].to_vec(), footer)
    }

    #[test]
    fn corrupt_bundles_are_refused_with_a_reason() {
        let (root, good) = bundle("corrupt");
        let (data, footer) = split_up(&good);
        let first = footer["files"][0]["name"].as_str().unwrap().to_string();
        let with_file = |f: serde_json::Value| {
            let mut footer = footer.clone();
            footer["files"][0] = f;
            footer
        };
        let name_case = |name: &str| {
            assemble(
                &data,
                &with_file(json!({"name": name, "offset": 0, "len": 1})),
                None,
                MAGIC,
            )
        };
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("truncated", good[..good.len() - 5].to_vec(), "magic"),
            ("tiny", good[..3].to_vec(), "too short"),
            ("empty", vec![], "too short"),
            (
                "bad magic",
                assemble(&data, &footer, None, b"SAWSPLT2"),
                "magic",
            ),
            (
                "footer past file",
                assemble(&data, &footer, Some(good.len() as u64), MAGIC),
                "footer length",
            ),
            (
                "huge footer",
                assemble(&data, &footer, Some(u64::MAX), MAGIC),
                "footer length",
            ),
            (
                "footer over limit",
                assemble(&data, &footer, Some(MAX_FOOTER + 1), MAGIC),
                "footer length",
            ),
            (
                "footer not json",
                assemble(&data, &json!("x"), None, MAGIC),
                "bad footer",
            ),
            (
                "offset past data",
                assemble(
                    &data,
                    &with_file(json!({"name": first, "offset": data.len(), "len": 1})),
                    None,
                    MAGIC,
                ),
                "outside",
            ),
            (
                "offset overflow",
                assemble(
                    &data,
                    &with_file(json!({"name": first, "offset": u64::MAX - 1, "len": 10})),
                    None,
                    MAGIC,
                ),
                "outside",
            ),
            (
                "slash",
                name_case(&format!("{}/../../escape", &first[..32])),
                "bad file name",
            ),
            ("dotdot", name_case(".."), "bad file name"),
            (
                "dotdot ext",
                name_case(&format!("{}...x", &first[..32])),
                "bad file name",
            ),
            ("meta", name_case("meta.json"), "bad file name"),
            (
                "other segment",
                name_case(&format!("{}.idx", "0".repeat(32))),
                "bad file name",
            ),
            ("absolute", name_case("/tmp/escape"), "bad file name"),
        ];
        for (what, bytes, why) in cases {
            let path = root.join("case.split");
            fs::write(&path, &bytes).unwrap();
            let dir = root.join("out").join("x");
            match unpack(&path, &dir) {
                Err(Error::CorruptSplit { reason, .. }) => {
                    assert!(
                        reason.contains(why),
                        "{what}: expected `{why}` in `{reason}`"
                    )
                }
                other => panic!("{what}: expected a corrupt split, got {other:?}"),
            }
            assert!(!root.join("escape").exists() && !root.join("out").join("escape").exists());
        }
        let mut bad_id = footer.clone();
        bad_id["segments"][0]["id"] = json!("../x");
        fs::write(root.join("id.split"), assemble(&data, &bad_id, None, MAGIC)).unwrap();
        let err = unpack(&root.join("id.split"), &root.join("out")).unwrap_err();
        assert!(err.to_string().contains("bad segment id"), "{err}");
        let _ = fs::remove_dir_all(&root);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn unpack_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048), tail in any::<bool>()) {
            let root = tmp("random");
            let mut bytes = bytes;
            if tail {
                // Valid-looking trailers reach the footer checks.
                let len = bytes.len().saturating_sub(16) as u64 / 2;
                bytes.extend_from_slice(&len.to_le_bytes());
                bytes.extend_from_slice(MAGIC);
            }
            fs::write(root.join("r.split"), &bytes).unwrap();
            let _ = unpack(&root.join("r.split"), &root.join("out"));
        }

        #[test]
        fn unpack_never_panics_on_a_damaged_bundle(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in proptest::option::of(any::<prop::sample::Index>()),
        ) {
            static GOOD: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
            let good = GOOD.get_or_init(|| bundle("damage-src").1);
            let root = tmp("damage");
            let mut bytes = good.clone();
            // Bias damage toward the footer and trailer, where the checks are.
            let tail_from = bytes.len().saturating_sub(600);
            for (at, b) in flips {
                let i = tail_from + at.index(bytes.len() - tail_from);
                bytes[i] = b;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len()));
            }
            fs::write(root.join("d.split"), &bytes).unwrap();
            let _ = unpack(&root.join("d.split"), &root.join("out"));
            for item in fs::read_dir(&root).unwrap() {
                let name = item.unwrap().file_name();
                prop_assert!(name == "d.split" || name == "out", "{:?} written outside", name);
            }
        }
    }
}
