//! One partition: the tantivy index holding every record whose `ts` falls in one hour or day.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tantivy::directory::MmapDirectory;
use tantivy::store::{Compressor, ZstdCompressor};
use tantivy::{Index, IndexReader, IndexSettings, ReloadPolicy};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::layout;
use crate::schema::Fields;

/// How much time one partition covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Granularity {
    Hour,
    Day,
}

impl Granularity {
    pub fn seconds(self) -> i64 {
        match self {
            Granularity::Hour => 3600,
            Granularity::Day => 86400,
        }
    }

    /// The start (epoch seconds) of the partition holding `ts`.
    pub fn start_of(self, ts: OffsetDateTime) -> i64 {
        ts.unix_timestamp().div_euclid(self.seconds()) * self.seconds()
    }
}

impl std::str::FromStr for Granularity {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "hour" => Ok(Granularity::Hour),
            "day" => Ok(Granularity::Day),
            _ => Err(format!("`{s}` is not a partition size: use hour or day")),
        }
    }
}

pub struct Partition {
    /// Epoch seconds of the first instant it covers.
    pub start: i64,
    /// Epoch seconds just past the last instant it covers.
    pub end: i64,
    pub dir: PathBuf,
    pub index: Index,
    pub reader: IndexReader,
    /// With an object store: the partition left local disk, then records arrived for it,
    /// so it holds only those until the seal loop reads the group's splits into it (a
    /// marker file, [`layout::INCOMPLETE`], says so across restarts).
    pub incomplete: bool,
    /// Read by ranges from the object store rather than from local disk: every read may
    /// wait on the network, so searches fetch such partitions' parts in parallel first.
    pub remote: bool,
}

/// The settings every partition is created with (the benchmark's baseline uses them too).
pub fn index_settings() -> IndexSettings {
    IndexSettings {
        // Log lines compress well together; zstd over 64 KiB blocks roughly halves lz4's size.
        docstore_compression: Compressor::Zstd(ZstdCompressor {
            compression_level: Some(3),
        }),
        docstore_blocksize: 64 * 1024,
        ..IndexSettings::default()
    }
}

impl Partition {
    pub fn create(root: &Path, fields: &Fields, start: i64, secs: i64) -> Result<Partition> {
        let dir = root.join(layout::partition_name(start, secs));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let mmap =
            MmapDirectory::open(&dir).map_err(|e| Error::io(&dir, std::io::Error::other(e)))?;
        // A partition already on disk keeps the schema it was made with, as when it is
        // opened at start ([`Partition::open`]): one written before `fields` was columnar is
        // written to and read as it is (its records have no `fields.NAME` term counts),
        // where `open_or_create` would refuse it.
        let index = if Index::exists(&mmap).map_err(tantivy::TantivyError::from)? {
            Index::open(mmap)?
        } else {
            Index::builder()
                .schema(fields.schema.clone())
                .settings(index_settings())
                .open_or_create(mmap)?
        };
        Partition::from_index(dir, index, start, secs)
    }

    /// [`Partition::create`] for records arriving for a partition only the object store
    /// holds: marked incomplete before its index exists, so no crash leaves it unmarked.
    pub fn create_incomplete(
        root: &Path,
        fields: &Fields,
        start: i64,
        secs: i64,
    ) -> Result<Partition> {
        let dir = root.join(layout::partition_name(start, secs));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let marker = dir.join(layout::INCOMPLETE);
        std::fs::write(&marker, "records that arrived after this partition was sealed; the group's splits are read into it by the seal loop\n")
            .map_err(|e| Error::io(&marker, e))?;
        Partition::create(root, fields, start, secs)
    }

    pub fn open(dir: PathBuf, start: i64, secs: i64) -> Result<Partition> {
        let index = Index::open_in_dir(&dir)?;
        Partition::from_index(dir, index, start, secs)
    }

    /// A partition read through `directory` (the object store's splits, read by ranges);
    /// `dir` only names it.
    pub fn open_remote(
        dir: PathBuf,
        directory: impl tantivy::Directory,
        start: i64,
        secs: i64,
    ) -> Result<Partition> {
        let index = Index::open(directory)?;
        let mut p = Partition::from_index(dir, index, start, secs)?;
        p.remote = true;
        Ok(p)
    }

    fn from_index(dir: PathBuf, index: Index, start: i64, secs: i64) -> Result<Partition> {
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Partition {
            start,
            end: start + secs,
            incomplete: dir.join(layout::INCOMPLETE).exists(),
            remote: false,
            dir,
            index,
            reader,
        })
    }

    /// The write-ahead log position up to which this partition's records are committed.
    pub fn committed_position(&self) -> Result<u64> {
        let metas = self.index.load_metas()?;
        Ok(metas.payload.and_then(|p| p.parse().ok()).unwrap_or(0))
    }

    /// Bytes on disk.
    pub fn disk_bytes(&self) -> u64 {
        crate::wal::dir_bytes(&self.dir)
    }

    /// Whether every instant of this partition falls in `[lo, hi]` (epoch µs, inclusive).
    pub fn within(&self, lo: i64, hi: i64) -> bool {
        lo <= self.start.saturating_mul(1_000_000) && hi >= self.end.saturating_mul(1_000_000) - 1
    }

    /// Whether any instant of `[lo, hi]` (epoch µs, inclusive) falls in this partition.
    pub fn overlaps(&self, lo: i64, hi: i64) -> bool {
        let start = self.start.saturating_mul(1_000_000);
        let end = self.end.saturating_mul(1_000_000);
        lo < end && hi >= start
    }
}

/// Every partition on disk, by start (epoch seconds): the store adds and removes them,
/// searches read them. Cheap to clone; clones share one set.
#[derive(Clone, Default)]
pub struct Partitions(Arc<RwLock<BTreeMap<i64, Arc<Partition>>>>);

impl Partitions {
    pub fn new(map: BTreeMap<i64, Arc<Partition>>) -> Partitions {
        Partitions(Arc::new(RwLock::new(map)))
    }

    pub fn read(&self) -> RwLockReadGuard<'_, BTreeMap<i64, Arc<Partition>>> {
        self.0.read().unwrap()
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<i64, Arc<Partition>>> {
        self.0.write().unwrap()
    }

    /// Where each partition's last commit reaches in the log, from its files.
    pub fn committed_positions(&self) -> Result<std::collections::HashMap<i64, u64>> {
        self.read()
            .values()
            .map(|p| Ok((p.start, p.committed_position()?)))
            .collect()
    }

    /// Partitions overlapping `[lo, hi]` (epoch µs), newest first.
    pub fn between(&self, lo: i64, hi: i64) -> Vec<Arc<Partition>> {
        self.read()
            .values()
            .rev()
            .filter(|p| p.overlaps(lo, hi))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::FieldTermsCollector;
    use tantivy::query::Query;
    use tantivy::TantivyDocument;

    /// A partition made before `fields` was columnar is written to as it is, by `create` as
    /// by `open` (`open_or_create` refused it: "schema does not match"); term counts on
    /// `fields.NAME` count its records as missing rather than failing, and a quoted value
    /// is searched by its words there.
    #[test]
    fn a_partition_made_before_fields_were_columnar_is_opened_as_it_is() {
        let root =
            std::env::temp_dir().join(format!("sawmill-partition-old-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let fields = Fields::new();
        let old = fields.schema_without_fields_columns();
        assert_ne!(old, fields.schema, "the earlier schema differs");
        let dir = root.join(layout::partition_name(0, 3600));
        std::fs::create_dir_all(&dir).unwrap();
        Index::builder()
            .schema(old.clone())
            .settings(index_settings())
            .create_in_dir(&dir)
            .unwrap();

        let p = Partition::create(&root, &fields, 0, 3600).unwrap();
        assert_eq!(p.index.schema(), old, "kept as it was made");
        let reopened = Partition::open(p.dir.clone(), 0, 3600).unwrap();
        assert_eq!(reopened.index.schema(), old, "as at start");
        let mut w = p
            .index
            .writer_with_num_threads::<TantivyDocument>(1, 15_000_000)
            .unwrap();
        let mut doc = TantivyDocument::new();
        doc.add_text(fields.message, "written after the upgrade");
        doc.add_object(
            fields.fields,
            [(
                "k8s_pod".to_string(),
                tantivy::schema::OwnedValue::from("web-1"),
            )]
            .into_iter()
            .collect(),
        );
        w.add_document(doc).unwrap();
        w.commit().unwrap();
        p.reader.reload().unwrap();
        let (counts, missing) = p
            .reader
            .searcher()
            .search(
                &tantivy::query::AllQuery,
                &FieldTermsCollector {
                    path: "fields.k8s_pod".into(),
                },
            )
            .unwrap();
        assert!(counts.is_empty(), "{counts:?}");
        assert_eq!(missing, 1);
        // A quoted value, a whole value elsewhere, is found here by its words.
        let searcher = p.reader.searcher();
        for (q, want) in [
            ("fields.k8s_pod:\"web-1\"", 1),
            ("fields.k8s_pod:\"web-2\"", 0),
        ] {
            let query = crate::query::compile(q, &fields).unwrap();
            assert_eq!(query.count(&searcher).unwrap(), want, "{q}");
        }

        // A partition this version makes has the column.
        let new = Partition::create(&root, &fields, 3600, 3600).unwrap();
        assert_eq!(new.index.schema(), fields.schema);
        let _ = std::fs::remove_dir_all(&root);
    }
}
