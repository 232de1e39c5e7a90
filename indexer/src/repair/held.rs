//! What this replica holds, as its peers ask for it: the holdings (ranges of `_seq` per
//! sender from the de-duplication set, a digest of `_key`s per partition), and the stored
//! records themselves, by `_seq` range or by `_key`. Runs on blocking threads; reads only
//! committed, searchable data, so a peer never copies what this replica could still lose.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Mutex;

use sawmill_record::api::{
    Holdings, KeyDigest, RepairByKey, RepairKeys, RepairKeysParams, RepairRecordsParams,
    SourceRanges, MAX_HOLDINGS_RANGES, MAX_REPAIR_LIMIT,
};
use tantivy::collector::DocSetCollector;
use tantivy::index::SegmentId;
use tantivy::query::{BooleanQuery, Occur, Query, RangeQuery, TermQuery, TermSetQuery};
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::{DocAddress, TantivyDocument, Term};

use crate::error::{Error, Result};
use crate::metrics::M;
use crate::partition::Partition;
use crate::store::Store;

/// The `_key` digest of every segment seen, so a holdings request hashes only new segments
/// (a partition of a million bulk records took about 0.1 s to hash).
#[derive(Default)]
pub struct DigestCache {
    segments: Mutex<HashMap<SegmentId, (u64, u64)>>,
}

/// A stable 64-bit hash of a key (FNV-1a, then a finaliser so sums of hashes spread):
/// replicas compare these, so it must not change between builds or processes.
fn key_hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// This replica's holdings. `_seq` ranges come from the de-duplication set (which also
/// holds records not yet searchable: a peer asking for those gets them on a later round).
pub fn holdings(store: &Store, cache: &DigestCache) -> Result<Holdings> {
    let (seqs, truncated) = store.seq_ranges(MAX_HOLDINGS_RANGES);
    Ok(Holdings {
        replica: store.replica().to_string(),
        group: store.group().to_string(),
        sources: seqs
            .into_iter()
            .map(|(src, ranges)| SourceRanges { src, ranges })
            .collect(),
        partitions: key_digests(store, cache)?,
        truncated,
    })
}

/// The `_key` digest of every partition holding `_key` records. Keys are unique within a
/// replica, so a partition's digest is the count and wrapping sum of its keys' hashes.
pub fn key_digests(store: &Store, cache: &DigestCache) -> Result<Vec<KeyDigest>> {
    let field = store.fields().key;
    let partitions: Vec<_> = store.partitions().read().values().cloned().collect();
    let mut seen = HashMap::new();
    let mut out = Vec::new();
    let old = std::mem::take(&mut *cache.segments.lock().unwrap());
    for p in partitions {
        let (mut count, mut hash) = (0u64, 0u64);
        for seg in p.reader.searcher().segment_readers() {
            let id = seg.segment_id();
            let d = match old.get(&id) {
                Some(d) => *d,
                None => {
                    let inv = seg.inverted_index(field)?;
                    let mut stream = inv.terms().stream().map_err(tantivy::TantivyError::from)?;
                    let (mut c, mut h) = (0u64, 0u64);
                    while stream.advance() {
                        let n = stream.value().doc_freq as u64;
                        c += n;
                        h = h.wrapping_add(key_hash(stream.key()).wrapping_mul(n));
                    }
                    (c, h)
                }
            };
            seen.insert(id, d);
            count += d.0;
            hash = hash.wrapping_add(d.1);
        }
        if count > 0 {
            out.push(KeyDigest {
                start: p.start,
                count,
                hash,
            });
        }
    }
    // Only the segments that exist now: the cache never outgrows the index.
    *cache.segments.lock().unwrap() = seen;
    Ok(out)
}

/// The stored records of `p.src` with `_seq` in `[p.from, p.to]`, lowest first, at most
/// `p.limit` (the range is cut to `limit` values), as NDJSON.
pub fn records(store: &Store, p: &RepairRecordsParams) -> Result<Vec<u8>> {
    let limit = check_limit(p.limit)?;
    if p.to < p.from {
        return Err(Error::BadRequest("`to` is below `from`".into()));
    }
    // A sender's `_seq` is stored once, so a range `limit` wide holds at most `limit`
    // records: the clamp bounds the work whatever range a client asks for.
    let to = p.to.min(p.from.saturating_add(limit as u64 - 1));
    let f = store.fields();
    let q = BooleanQuery::new(vec![
        (
            Occur::Must,
            Box::new(TermQuery::new(
                Term::from_field_text(f.src, &p.src),
                IndexRecordOption::Basic,
            )) as Box<dyn Query>,
        ),
        (
            Occur::Must,
            Box::new(RangeQuery::new(
                Bound::Included(Term::from_field_u64(f.seq, p.from)),
                Bound::Included(Term::from_field_u64(f.seq, to)),
            )),
        ),
    ]);
    let partitions: Vec<_> = store.partitions().read().values().cloned().collect();
    let mut found: Vec<(u64, String)> = Vec::new();
    for part in partitions {
        let searcher = part.reader.searcher();
        // In doc order: the doc store decompresses a 64 KiB block at a time and keeps the
        // last few, so reading in the collector's hash order decompressed a block per record.
        let mut docs: Vec<DocAddress> =
            searcher.search(&q, &DocSetCollector)?.into_iter().collect();
        docs.sort_unstable();
        for addr in docs {
            let seq = searcher
                .segment_reader(addr.segment_ord)
                .fast_fields()
                .u64("_seq")?
                .first(addr.doc_id)
                .unwrap_or(0);
            found.push((seq, source_of(&searcher, addr, store)?));
            // A sender's `_seq` is stored once, so the range bounds the answer; this
            // bounds it whatever the index holds.
            if found.len() >= MAX_REPAIR_LIMIT * 2 {
                break;
            }
        }
    }
    found.sort_unstable_by_key(|(s, _)| *s);
    found.truncate(limit);
    Ok(served(store, found.into_iter().map(|(_, s)| s)))
}

/// The `_key`s of partition `p.start` after `p.after`, in byte order, at most `p.limit`.
pub fn keys(store: &Store, p: &RepairKeysParams) -> Result<RepairKeys> {
    let limit = check_limit(p.limit)?;
    let Some(part) = partition(store, p.start) else {
        return Ok(RepairKeys::default());
    };
    let field = store.fields().key;
    // The smallest `limit + 1` keys of every segment hold the smallest `limit + 1` overall.
    let mut keys = BTreeSet::new();
    for seg in part.reader.searcher().segment_readers() {
        let inv = seg.inverted_index(field)?;
        let mut range = inv.terms().range();
        if let Some(after) = &p.after {
            range = range.gt(after.as_bytes());
        }
        let mut stream = range.into_stream().map_err(tantivy::TantivyError::from)?;
        let mut taken = 0;
        while taken <= limit && stream.advance() {
            keys.insert(String::from_utf8_lossy(stream.key()).into_owned());
            taken += 1;
        }
    }
    let mut keys: Vec<String> = keys.into_iter().take(limit + 1).collect();
    let next = if keys.len() > limit {
        keys.pop();
        keys.last().cloned()
    } else {
        None
    };
    Ok(RepairKeys { keys, next })
}

/// The stored records of partition `req.start` with the `_key`s asked for, as NDJSON.
pub fn by_key(store: &Store, req: &RepairByKey) -> Result<Vec<u8>> {
    check_limit(req.keys.len())?;
    let Some(part) = partition(store, req.start) else {
        return Ok(Vec::new());
    };
    let field = store.fields().key;
    let wanted: HashSet<&str> = req.keys.iter().map(String::as_str).collect();
    let q = TermSetQuery::new(wanted.iter().map(|k| Term::from_field_text(field, k)));
    let searcher = part.reader.searcher();
    let mut docs: Vec<DocAddress> = searcher.search(&q, &DocSetCollector)?.into_iter().collect();
    docs.sort_unstable();
    let mut out = Vec::new();
    for addr in docs {
        out.push(source_of(&searcher, addr, store)?);
    }
    Ok(served(store, out.into_iter()))
}

fn check_limit(limit: usize) -> Result<usize> {
    if limit == 0 || limit > MAX_REPAIR_LIMIT {
        return Err(Error::BadRequest(format!(
            "`limit` is {limit}; it must be 1 to {MAX_REPAIR_LIMIT}"
        )));
    }
    Ok(limit)
}

fn partition(store: &Store, start: i64) -> Option<std::sync::Arc<Partition>> {
    store.partitions().read().get(&start).cloned()
}

fn source_of(searcher: &tantivy::Searcher, addr: DocAddress, store: &Store) -> Result<String> {
    let doc: TantivyDocument = searcher.doc(addr)?;
    Ok(doc
        .get_first(store.fields().source)
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default())
}

/// Joins stored records into NDJSON, counting them as served to a peer.
fn served(store: &Store, sources: impl Iterator<Item = String>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut n = 0;
    for s in sources {
        out.extend_from_slice(s.as_bytes());
        out.push(b'\n');
        n += 1;
    }
    store.metrics().add(M::RepairRecordsServed, n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hashes_are_fixed_across_builds() {
        // Replicas of different builds compare digests: this value must never change.
        assert_eq!(key_hash(b"doc-1"), key_hash(b"doc-1"));
        assert_ne!(key_hash(b"doc-1"), key_hash(b"doc-2"));
        assert_eq!(key_hash(b"doc-1"), 0x7a90_fc6b_1add_0043);
    }
}
