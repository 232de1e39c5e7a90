//! The split format: some tantivy segments of one partition in one immutable object.
//!
//! ```text
//! [segment files, raw, back to back][footer JSON][footer length: u64 LE]["SAWSPLT1"]
//! ```
//! The footer lists the segments (id, max_doc) and each file's name, offset and length.
//! A split is written once and read whole into the cache, so the layout is simple rather
//! than seekable; the footer at the end lets the writer stream files without knowing
//! their sizes first. Everything read back is checked against bounds before it is used:
//! a split comes from a bucket other programs can write to.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tantivy::index::{IndexMeta, SegmentId, SegmentMeta};
use tantivy::schema::Schema;

use crate::error::{Error, Result};
use crate::partition::index_settings;

/// The last 8 bytes of every split.
pub const MAGIC: &[u8; 8] = b"SAWSPLT1";
/// The footer length and the magic.
const TRAILER: u64 = 16;
/// Far above any real footer (a few hundred bytes per segment), low enough that a
/// corrupt length cannot make a reader allocate much.
pub const MAX_FOOTER: u64 = 16 << 20;
const FORMAT_VERSION: u32 = 1;
/// The copy buffer: large reads keep the disk streaming without holding a file in memory.
const CHUNK: usize = 1 << 20;

#[derive(Debug, Serialize, Deserialize)]
struct Footer {
    version: u32,
    start: i64,
    span: i64,
    segments: Vec<FooterSegment>,
    files: Vec<FooterFile>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FooterSegment {
    id: String,
    max_doc: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct FooterFile {
    name: String,
    offset: u64,
    len: u64,
}

/// Passes writes through while counting and hashing them.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
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

/// Writes the bundle of `segments` (their files, read from `partition_dir`) to `out`;
/// returns (bytes, sha256 hex).
pub fn pack(
    partition_dir: &Path,
    start: i64,
    span: i64,
    segments: &[SegmentMeta],
    out: &Path,
) -> Result<(u64, String)> {
    let file = File::create(out).map_err(|e| Error::io(out, e))?;
    let mut w = Hashing {
        inner: BufWriter::with_capacity(CHUNK, file),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let mut footer = Footer {
        version: FORMAT_VERSION,
        start,
        span,
        segments: Vec::with_capacity(segments.len()),
        files: Vec::new(),
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
    let json = serde_json::to_vec(&footer).expect("a footer always serialises");
    w.write_all(&json).map_err(|e| Error::io(out, e))?;
    w.write_all(&(json.len() as u64).to_le_bytes())
        .map_err(|e| Error::io(out, e))?;
    w.write_all(MAGIC).map_err(|e| Error::io(out, e))?;
    let Hashing {
        inner,
        hasher,
        bytes,
    } = w;
    let file = inner
        .into_inner()
        .map_err(|e| Error::io(out, e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(out, e))?;
    Ok((bytes, format!("{:x}", hasher.finalize())))
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
    if footer.version != FORMAT_VERSION {
        return Err(corrupt(format!(
            "format version {} (this build reads {FORMAT_VERSION})",
            footer.version
        )));
    }
    let mut ids = HashSet::new();
    let mut segments = Vec::with_capacity(footer.segments.len());
    for s in &footer.segments {
        let id = (s.id.len() == 32 && s.id.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| SegmentId::from_uuid_string(&s.id).ok())
            .flatten()
            .ok_or_else(|| corrupt(format!("bad segment id `{}`", s.id)))?;
        if !ids.insert(s.id.clone()) {
            return Err(corrupt(format!("segment `{}` is listed twice", s.id)));
        }
        segments.push((id, s.max_doc));
    }
    let mut names = HashSet::new();
    for file in &footer.files {
        if !allowed_name(&file.name, &ids) {
            return Err(corrupt(format!("bad file name `{}`", file.name)));
        }
        if !names.insert(file.name.as_str()) {
            return Err(corrupt(format!("file `{}` is listed twice", file.name)));
        }
        if file
            .offset
            .checked_add(file.len)
            .is_none_or(|end| end > data_end)
        {
            return Err(corrupt(format!(
                "file `{}` ({} bytes at {}) lies outside the data ({data_end} bytes)",
                file.name, file.len, file.offset
            )));
        }
    }
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

/// Writes `meta.json` in `dir` listing `segments` with sawmill's schema and settings
/// (and no payload), so `Index::open_in_dir(dir)` works.
pub fn write_meta(dir: &Path, schema: &Schema, segments: &[(SegmentId, u32)]) -> Result<()> {
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
    let text = serde_json::to_vec_pretty(&meta).expect("a meta always serialises");
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
            let (bytes, sha) = pack(&p.dir, START, 3600, std::slice::from_ref(meta), &out).unwrap();
            assert_eq!(bytes, fs::metadata(&out).unwrap().len());
            let want = format!("{:x}", Sha256::digest(fs::read(&out).unwrap()));
            assert_eq!(sha, want);

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
