//! What this replica holds, as its peers ask for it: the holdings (ranges of `_seq` per
//! sender from the de-duplication set, a digest of `_key`s per partition), and the stored
//! records themselves, by `_seq` range or by `_key`. Runs on blocking threads; reads only
//! committed, searchable data, so a peer never copies what this replica could still lose.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Mutex;

use sawmill_record::api::{
    Holdings, KeyDigest, RepairByKey, RepairHoldingsParams, RepairKeys, RepairKeysParams,
    RepairPeerParams, RepairRecordsParams, SourceRanges, MAX_HOLDINGS_RANGES,
    MAX_REPAIR_ANSWER_BYTES, MAX_REPAIR_LIMIT,
};
use tantivy::collector::{DocSetCollector, TopDocs};
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

/// A page of this replica's holdings. `_seq` ranges come from the de-duplication set (which
/// also holds records not yet searchable: a peer asking for those gets them on a later
/// round); the `_key` digests come with the first page.
pub fn holdings(store: &Store, p: &RepairHoldingsParams) -> Result<Holdings> {
    check_replica(store, p.replica.as_deref())?;
    let (seqs, next) = store.seq_ranges(p.after.as_deref(), MAX_HOLDINGS_RANGES);
    let partitions = match p.after {
        None => key_digests(store)?,
        Some(_) => Vec::new(),
    };
    Ok(Holdings {
        replica: store.replica().to_string(),
        group: store.group().to_string(),
        sources: seqs
            .into_iter()
            .map(|(src, ranges)| SourceRanges { src, ranges })
            .collect(),
        partitions,
        next,
    })
}

/// The `_key` digest of every partition holding `_key` records. Keys are unique within a
/// replica, so a partition's digest is the count and wrapping sum of its keys' hashes.
/// Partitions the object store holds are left out: the group's splits hold their keys,
/// whether or not a replica still has a local copy.
pub fn key_digests(store: &Store) -> Result<Vec<KeyDigest>> {
    let cache = store.digest_cache();
    let field = store.fields().key;
    let sealed = store.sealed_starts();
    let partitions: Vec<_> = store
        .partitions()
        .read()
        .values()
        .filter(|p| !sealed.contains(&p.start))
        .cloned()
        .collect();
    let mut seen = HashMap::new();
    let mut out = Vec::new();
    for p in partitions {
        let (mut count, mut hash) = (0u64, 0u64);
        for seg in p.reader.searcher().segment_readers() {
            let id = seg.segment_id();
            // The lock only for the look-up: the API and the repair loop hash at once.
            let cached = cache.segments.lock().unwrap().get(&id).copied();
            let d = match cached {
                Some(d) => d,
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

/// The stored records of `p.src` with `_seq` in `[p.from, p.to]`, the lowest `p.limit` of
/// them, lowest first, as NDJSON; cut short at about [`MAX_REPAIR_ANSWER_BYTES`].
pub fn records(store: &Store, p: &RepairRecordsParams) -> Result<Vec<u8>> {
    check_replica(store, p.replica.as_deref())?;
    let limit = check_limit(p.limit)?;
    if p.to < p.from {
        return Err(Error::BadRequest("`to` is below `from`".into()));
    }
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
                Bound::Included(Term::from_field_u64(f.seq, p.to)),
            )),
        ),
    ]);
    // The lowest `limit` of each partition hold the lowest `limit` overall; memory is
    // bounded by `limit` per partition, however wide the range asked.
    let top = TopDocs::with_limit(limit).order_by_fast_field::<u64>("_seq", tantivy::Order::Asc);
    let partitions: Vec<_> = store.partitions().read().values().cloned().collect();
    let mut found = Vec::new();
    for (i, part) in partitions.iter().enumerate() {
        let searcher = part.reader.searcher();
        let docs = searcher.search(&q, &top)?;
        found.extend(
            docs.into_iter()
                .map(|(seq, addr)| (seq.unwrap_or(0), i, addr)),
        );
    }
    found.sort_unstable();
    found.truncate(limit);
    let searchers: Vec<_> = partitions.iter().map(|p| p.reader.searcher()).collect();
    let sources = read_within_budget(store, &searchers, &found)?;
    Ok(served(store, sources.into_iter()))
}

/// The stored forms of `wanted` (`(_seq, partition, address)`, lowest `_seq` first), as long
/// a prefix of them as fits in [`MAX_REPAIR_ANSWER_BYTES`] (at least one). Read in doc
/// order: the doc store decompresses a 64 KiB block at a time and keeps the last few, so
/// reading in `_seq` order could decompress a block per record.
fn read_within_budget(
    store: &Store,
    searchers: &[tantivy::Searcher],
    wanted: &[(u64, usize, DocAddress)],
) -> Result<Vec<String>> {
    let mut order: Vec<usize> = (0..wanted.len()).collect();
    order.sort_unstable_by_key(|&i| (wanted[i].1, wanted[i].2));
    let mut read: Vec<Option<String>> = vec![None; wanted.len()];
    let mut bytes = 0;
    for i in order {
        if bytes > MAX_REPAIR_ANSWER_BYTES {
            break;
        }
        let (_, part, addr) = wanted[i];
        let source = source_of(&searchers[part], addr, store)?;
        bytes += source.len() + 1;
        read[i] = Some(source);
    }
    // The answer is a prefix in `_seq` order, so the client can go on from its last one.
    let mut out = Vec::new();
    let mut bytes = 0;
    for source in read.into_iter().map_while(|s| s) {
        if bytes > 0 && bytes + source.len() > MAX_REPAIR_ANSWER_BYTES {
            break;
        }
        bytes += source.len() + 1;
        out.push(source);
    }
    Ok(out)
}

/// The `_key`s of partition `p.start` after `p.after`, in byte order, at most `p.limit`.
pub fn keys(store: &Store, p: &RepairKeysParams) -> Result<RepairKeys> {
    check_replica(store, p.replica.as_deref())?;
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

/// The stored records of partition `req.start` with the `_key`s asked for, as NDJSON; cut
/// short at about [`MAX_REPAIR_ANSWER_BYTES`] (the client asks again for the rest).
pub fn by_key(store: &Store, req: &RepairByKey, peer: &RepairPeerParams) -> Result<Vec<u8>> {
    check_replica(store, peer.replica.as_deref())?;
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
    let mut bytes = 0;
    for addr in docs {
        if bytes > MAX_REPAIR_ANSWER_BYTES {
            break;
        }
        let source = source_of(&searcher, addr, store)?;
        bytes += source.len() + 1;
        out.push(source);
    }
    Ok(served(store, out.into_iter()))
}

/// Refuses a request meant for another replica: the client's list of peers is a snapshot,
/// and a peer's address may since have gone to a replica of another group.
fn check_replica(store: &Store, asked: Option<&str>) -> Result<()> {
    match asked {
        Some(r) if r != store.replica() => Err(Error::Conflict(format!(
            "this is replica `{}` of group `{}`, not replica `{r}`",
            store.replica(),
            store.group()
        ))),
        _ => Ok(()),
    }
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

    /// An answer stops once past its byte budget, at a prefix in `_seq` order, so the
    /// client can go on from its last `_seq`.
    #[tokio::test(flavor = "multi_thread")]
    async fn answers_stop_at_their_byte_budget() {
        let (_, store, _) = crate::api::tests::app("held-budget");
        let big = "x".repeat(200_000);
        let n = MAX_REPAIR_ANSWER_BYTES / big.len() + 10;
        let recs = (0..n)
            .map(|i| {
                let line = format!(
                    r#"{{"ts":"2026-11-30T07:00:00Z","message":"{big}","_src":"s","_seq":{i}}}"#
                );
                crate::record::Record::from_source(&line).unwrap()
            })
            .collect();
        store.ingest(recs).await.unwrap();
        let ask = |from| RepairRecordsParams {
            src: "s".into(),
            from,
            to: u64::MAX,
            limit: MAX_REPAIR_LIMIT,
            replica: None,
        };
        let seqs = |body: Vec<u8>| -> Vec<u64> {
            let text = String::from_utf8(body).unwrap();
            let v = text
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap());
            v.map(|v| v["_seq"].as_u64().unwrap()).collect()
        };
        // Until all are searchable.
        for _ in 0..500 {
            if !records(&store, &ask(n as u64 - 1)).unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let body = records(&store, &ask(0)).unwrap();
        assert!(body.len() <= MAX_REPAIR_ANSWER_BYTES + big.len() + 200);
        let first = seqs(body);
        assert!(first.len() < n, "{} of {n}", first.len());
        assert_eq!(first, (0..first.len() as u64).collect::<Vec<_>>());
        let rest = seqs(records(&store, &ask(first.len() as u64)).unwrap());
        assert_eq!(rest, (first.len() as u64..n as u64).collect::<Vec<_>>());
        store.shutdown();
    }

    #[test]
    fn key_hashes_are_fixed_across_builds() {
        // Replicas of different builds compare digests: this value must never change.
        assert_eq!(key_hash(b"doc-1"), key_hash(b"doc-1"));
        assert_ne!(key_hash(b"doc-1"), key_hash(b"doc-2"));
        assert_eq!(key_hash(b"doc-1"), 0x7a90_fc6b_1add_0043);
    }
}
