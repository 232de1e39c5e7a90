//! Recovery at start: the partitions on disk (finishing what a crash left half done), the
//! idempotency keys they hold, and a replay of the log beyond what each partition committed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use crate::dedup::{Dedup, DedupKey};
use crate::error::{Error, Result};
use crate::layout;
use crate::partition::Partition;
use crate::record::Record;
use crate::schema::Fields;
use crate::store::index::{decode_frame, Indexer};
use crate::store::shared::Shared;
use crate::wal::Wal;
use tantivy::index::SegmentId;
use tantivy::schema::Value;
use tantivy::{DocAddress, SegmentReader, TantivyDocument};

/// The partitions in `data`, by start; removes those a crash left half created or half
/// removed.
pub fn open_partitions(data: &Path) -> Result<BTreeMap<i64, Arc<Partition>>> {
    let root = layout::partitions_dir(data);
    std::fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
    let mut partitions = BTreeMap::new();
    finish_adoptions(&root)?;
    for entry in std::fs::read_dir(&root).map_err(|e| Error::io(&root, e))? {
        let entry = entry.map_err(|e| Error::io(&root, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if layout::is_trash(&name) {
            // Retention was removing it when the process died.
            let _ = std::fs::remove_dir_all(entry.path());
            continue;
        }
        let Some((start, secs)) = layout::parse_partition_name(&name) else {
            continue;
        };
        if !layout::partition_is_complete(&entry.path()) {
            tracing::warn!(partition = %entry.path().display(), "Removing a partition that was never finished.");
            let _ = std::fs::remove_dir_all(entry.path());
            continue;
        }
        let p = Partition::open(entry.path(), start, secs)?;
        partitions.insert(start, Arc::new(p));
    }
    Ok(partitions)
}

/// Finishes what a crash left of an adoption (the group's copy of a partition from the
/// object store put in place of this replica's own): a copy whose partition is gone was
/// committed and halfway through the swap, so it takes the partition's place; one whose
/// partition is still there is removed with the other leftovers.
fn finish_adoptions(root: &Path) -> Result<()> {
    for entry in std::fs::read_dir(root).map_err(|e| Error::io(root, e))? {
        let entry = entry.map_err(|e| Error::io(root, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(partition) = layout::adopted_name(&name) else {
            continue;
        };
        let place = root.join(partition);
        let committed = layout::partition_is_complete(&entry.path())
            && tantivy::Index::open_in_dir(entry.path())
                .and_then(|i| i.load_metas())
                .is_ok_and(|m| m.payload.is_some());
        if !place.exists() && committed {
            tracing::warn!(partition = %place.display(), "Finishing the adoption of the group's copy of a partition that a stop interrupted.");
            std::fs::rename(entry.path(), &place).map_err(|e| Error::io(&place, e))?;
        }
    }
    Ok(())
}

/// Every idempotency key the partitions hold, and where each partition's last commit
/// reaches in the log.
pub fn load_keys(partitions: &BTreeMap<i64, Arc<Partition>>) -> Result<(Dedup, HashMap<i64, u64>)> {
    let mut dedup = Dedup::default();
    let mut committed = HashMap::new();
    for p in partitions.values() {
        load_partition_keys(p, &mut dedup)?;
        committed.insert(p.start, p.committed_position()?);
    }
    Ok((dedup, committed))
}

/// Adds every idempotency key a partition holds to `dedup`.
fn load_partition_keys(p: &Partition, dedup: &mut Dedup) -> Result<()> {
    let mut ids = Vec::new();
    each_key(
        p,
        |src, seq| {
            dedup.insert_seq(src, seq);
        },
        |id| ids.push(id.to_string()),
    )?;
    for id in ids {
        dedup.insert(&DedupKey::Id(id));
    }
    Ok(())
}

/// Calls `seq` with every `(_src, _seq)` and `id` with every `_key` a partition holds.
pub fn each_key(p: &Partition, seq: impl FnMut(&str, u64), id: impl FnMut(&str)) -> Result<()> {
    let searcher = p.reader.searcher();
    each_key_in(searcher.segment_readers(), seq, id)
}

/// [`each_key`] over some segments of a partition.
pub fn each_key_in<'a>(
    segments: impl IntoIterator<Item = &'a SegmentReader>,
    mut seq: impl FnMut(&str, u64),
    mut id: impl FnMut(&str),
) -> Result<()> {
    for seg in segments {
        let ff = seg.fast_fields();
        let seqs = ff.u64("_seq")?;
        if let Some(src) = ff.str("_src")? {
            let mut names: Vec<Option<String>> = vec![None; src.num_terms()];
            for doc in 0..seg.max_doc() {
                let (Some(ord), Some(n)) = (src.ords().first(doc), seqs.first(doc)) else {
                    continue;
                };
                let name = names[ord as usize].get_or_insert_with(|| {
                    let mut s = String::new();
                    let _ = src.ord_to_str(ord, &mut s);
                    s
                });
                seq(name, n);
            }
        }
        if let Some(key) = ff.str("_key")? {
            let mut s = String::new();
            for doc in 0..seg.max_doc() {
                if let Some(ord) = key.ords().first(doc) {
                    s.clear();
                    let _ = key.ord_to_str(ord, &mut s);
                    id(&s);
                }
            }
        }
    }
    Ok(())
}

/// The records of `own`'s segments that `copy` does not have (a segment of the same id
/// is the same records): those whose key `copy` lacks, and those with no key at all, with
/// their record ids. Used when the group's copy of a partition takes the place of this
/// replica's own, so that nothing only this replica held is lost.
pub fn records_lacking(
    own: &Partition,
    copy: &Partition,
    fields: &Fields,
) -> Result<Vec<(u64, Record)>> {
    let copy_searcher = copy.reader.searcher();
    let copied: HashSet<SegmentId> = copy_searcher
        .segment_readers()
        .iter()
        .map(|s| s.segment_id())
        .collect();
    let (mut seqs, mut ids) = (HashSet::new(), HashSet::new());
    each_key(
        copy,
        |src, seq| {
            seqs.insert((src.to_string(), seq));
        },
        |id| {
            ids.insert(id.to_string());
        },
    )?;
    let searcher = own.reader.searcher();
    let mut out = Vec::new();
    for (ord, seg) in searcher.segment_readers().iter().enumerate() {
        if copied.contains(&seg.segment_id()) {
            continue;
        }
        let rids = seg.fast_fields().u64("_rid")?;
        for doc in 0..seg.max_doc() {
            let stored: TantivyDocument = searcher.doc(DocAddress::new(ord as u32, doc))?;
            let source = stored
                .get_first(fields.source)
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            let rec = Record::from_source(source).map_err(|e| {
                Error::BadRequest(format!("a stored record does not read back: {e}"))
            })?;
            let held = match &rec.key {
                Some(DedupKey::Seq { src, seq }) => seqs.contains(&(src.clone(), *seq)),
                Some(DedupKey::Id(id)) => ids.contains(id),
                None => false,
            };
            if !held {
                out.push((rids.first(doc).unwrap_or(0), rec));
            }
        }
    }
    Ok(out)
}

/// Opens the log and replays it from `checkpoint` straight into the partitions, so memory
/// stays bounded however much the log holds beyond the last commit; every replayed key goes
/// into `dedup`. Returns the log, positioned at its end, and how many records were added.
pub fn replay(
    shared: &Arc<Shared>,
    indexer: &mut Indexer,
    dedup: &mut Dedup,
    checkpoint: u64,
    committed: &HashMap<i64, u64>,
) -> Result<(Wal, u64)> {
    let mut replayed = 0u64;
    let wal = Wal::open(
        &layout::wal_dir(&shared.config.data),
        checkpoint,
        |pos, payload| {
            if let Some(rec) = decode_frame(pos, payload, &shared.metrics) {
                if let Some(k) = &rec.key {
                    dedup.insert(k);
                }
                if indexer.replay(pos, rec, committed) {
                    replayed += 1;
                }
            }
        },
    )?;
    Ok((wal, replayed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map};
    use tantivy::TantivyDocument;

    /// A partition of one record under `root`, committed with a log position, then moved
    /// to `name`.
    fn committed_partition(root: &Path, start: i64, name: &str) {
        let fields = Fields::new();
        let p = Partition::create(root, &fields, start, 3600).unwrap();
        let mut w = p
            .index
            .writer_with_num_threads::<TantivyDocument>(1, 15_000_000)
            .unwrap();
        let mut obj = Map::new();
        obj.insert("message".into(), json!("only this replica held it"));
        obj.insert("ts".into(), json!((start + 5) * 1000));
        let now = time::OffsetDateTime::from_unix_timestamp(start + 10).unwrap();
        let r = Record::from_object(obj, now).unwrap();
        w.add_document(fields.document(7, &r)).unwrap();
        let mut pc = w.prepare_commit().unwrap();
        pc.set_payload("8");
        pc.commit().unwrap();
        w.wait_merging_threads().unwrap();
        std::fs::rename(&p.dir, root.join(name)).unwrap();
    }

    /// A stop between the two renames of an adoption left the partition renamed away and
    /// the group's committed copy not yet in its place: the copy takes it at the next start
    /// (it was removed as a leftover, and with it records only this replica held).
    #[test]
    fn an_adoption_a_crash_interrupted_is_finished_at_start() {
        let data =
            std::env::temp_dir().join(format!("sawmill-recovery-adopt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        let root = layout::partitions_dir(&data);
        std::fs::create_dir_all(&root).unwrap();
        let (a, b) = (1_764_201_600, 1_764_205_200);
        let name_a = layout::partition_name(a, 3600);
        let name_b = layout::partition_name(b, 3600);
        // `a`: the swap was halfway, its own copy already trashed.
        committed_partition(&root, a, &format!(".adopt-{name_a}"));
        committed_partition(&root, a + 1, &format!(".trash-{name_a}"));
        // `b`: the adoption had not reached its swap; the partition is still in place.
        committed_partition(&root, b, &name_b);
        committed_partition(&root, b + 1, &format!(".adopt-{name_b}"));
        let parts = open_partitions(&data).unwrap();
        assert_eq!(parts.keys().copied().collect::<Vec<_>>(), vec![a, b]);
        assert_eq!(parts[&a].committed_position().unwrap(), 8);
        assert_eq!(parts[&a].reader.searcher().num_docs(), 1);
        let left: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(left.len(), 2, "leftovers removed: {left:?}");
        let _ = std::fs::remove_dir_all(&data);
    }
}
