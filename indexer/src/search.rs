//! The read path: queries, top hits, histograms, terms, context and traces over the partitions
//! a time range touches. Every search spends from a [`Budget`] and stops when it is spent;
//! hits are found first and read from the doc store later, a chunk at a time, by a
//! [`HitReader`], so an answer of any size is written out in bounded memory.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{Map, Value};
use tantivy::collector::{Collector, Count};
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, Value as _};
use tantivy::store::StoreReader;
use tantivy::{DateTime, TantivyDocument, Term};

use sawmill_record::api::{LocalId, Order, Scope};
use sawmill_record::fields::{field, FieldKind, FIELDS};

use crate::collectors::{
    path_columns, rank, Bounded, FieldTermsCollector, HistogramCollector, TermsCollector,
    TopCollector, TopHit,
};
use crate::error::{Error, Result};
use crate::partition::{Partition, Partitions};
use crate::schema::Fields;
use crate::searches::Budget;
use crate::store::Archive;
use sawmill_record::record::cut_str;

/// An inclusive time range in epoch microseconds; `None` is unbounded.
#[derive(Clone, Copy, Debug, Default)]
pub struct TimeRange {
    pub lo: Option<i64>,
    pub hi: Option<i64>,
}

impl TimeRange {
    fn bounds(&self) -> (i64, i64) {
        (self.lo.unwrap_or(i64::MIN), self.hi.unwrap_or(i64::MAX))
    }
}

/// A stored record as found by a search.
#[derive(Clone, Debug)]
pub struct Hit {
    pub rid: u64,
    pub ts_micros: i64,
    pub source: String,
}

impl Hit {
    /// Appends the record as the API returns it to `out`, its stored JSON with `_id` added in
    /// front; with `cut`, a message longer than that many bytes is cut on a character
    /// boundary and the hit says so (`_message_cut`).
    pub fn write_json(&self, out: &mut Vec<u8>, cut: Option<usize>) {
        // The whole record is no longer than the limit, so neither is its message.
        if let Some(max) = cut.filter(|max| self.source.len() > *max) {
            if let Ok(mut obj) = serde_json::from_str::<Map<String, Value>>(&self.source) {
                if let Some(Value::String(m)) = obj.get_mut("message") {
                    if cut_str(m, max) {
                        obj.insert("_message_cut".into(), Value::Bool(true));
                        obj.insert("_id".into(), Value::String(self.rid.to_string()));
                        if let Ok(json) = serde_json::to_vec(&obj) {
                            out.extend_from_slice(&json);
                            return;
                        }
                    }
                }
            }
        }
        let body = self.source.strip_prefix('{').unwrap_or("}");
        let sep = if body.trim_start().starts_with('}') {
            ""
        } else {
            ","
        };
        out.extend_from_slice(b"{\"_id\":\"");
        out.extend_from_slice(self.rid.to_string().as_bytes());
        out.push(b'"');
        out.extend_from_slice(sep.as_bytes());
        out.extend_from_slice(body.as_bytes());
    }

    pub fn value(&self) -> Value {
        serde_json::from_str(&self.source).unwrap_or(Value::Null)
    }
}

/// Hits found and ranked but not yet read from the doc store.
pub struct Found {
    /// One snapshot per partition, kept so the hits can still be read after a commit.
    searchers: Vec<tantivy::Searcher>,
    /// (index into `searchers`, hit), in answer order.
    hits: Vec<(usize, TopHit)>,
    source: Field,
}

impl Found {
    pub fn len(&self) -> usize {
        self.hits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hits.is_empty()
    }

    /// Reads the hits in order; `cut` cuts messages (see [`Hit::write_json`]).
    pub fn reader(self, cut: Option<usize>) -> HitReader {
        HitReader {
            found: self,
            next: 0,
            stores: Vec::new(),
            cut,
        }
    }

    fn reverse(&mut self) {
        self.hits.reverse();
    }

    fn sort_by_rid(&mut self) {
        self.hits.sort_unstable_by_key(|(_, t)| t.rid);
    }
}

/// Doc store readers kept open at once by a [`HitReader`]; each caches one block.
const OPEN_STORES: usize = 8;

/// Reads found hits from the doc store in order. It opens its own store readers, each
/// caching a single block, rather than using the searcher's shared ones, which keep up to
/// a hundred decompressed blocks per segment for as long as the searcher lives: with
/// records of a megabyte, that was a hundred megabytes per segment.
pub struct HitReader {
    found: Found,
    next: usize,
    /// (partition, segment) → its store reader, most recently opened last.
    stores: Vec<((usize, u32), StoreReader)>,
    cut: Option<usize>,
}

impl HitReader {
    pub fn remaining(&self) -> usize {
        self.found.hits.len() - self.next
    }

    /// The next hit, if any.
    pub fn next_hit(&mut self) -> Result<Option<Hit>> {
        let Some(&(p, top)) = self.found.hits.get(self.next) else {
            return Ok(None);
        };
        self.next += 1;
        let key = (p, top.addr.segment_ord);
        let i = match self.stores.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                if self.stores.len() >= OPEN_STORES {
                    self.stores.remove(0);
                }
                let seg = self.found.searchers[p].segment_reader(top.addr.segment_ord);
                let store = seg
                    .get_store_reader(1)
                    .map_err(tantivy::TantivyError::from)?;
                self.stores.push((key, store));
                self.stores.len() - 1
            }
        };
        let doc: TantivyDocument = self.stores[i].1.get(top.addr.doc_id)?;
        let source = doc
            .get_first(self.found.source)
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        Ok(Some(Hit {
            rid: top.rid,
            ts_micros: top.ts_micros,
            source,
        }))
    }

    /// Appends the next hits to `out` as comma-separated JSON until it holds `max_bytes` or
    /// the hits run out.
    pub fn read_chunk(&mut self, out: &mut Vec<u8>, max_bytes: usize) -> Result<()> {
        while out.len() < max_bytes {
            let first = self.next == 0;
            let Some(hit) = self.next_hit()? else { break };
            if !first {
                out.push(b',');
            }
            hit.write_json(out, self.cut);
        }
        Ok(())
    }
}

pub struct SearchResult {
    pub total: u64,
    pub hits: Found,
    /// Present when more hits may follow.
    pub cursor: Option<String>,
}

pub struct Histogram {
    pub interval_micros: i64,
    /// (bucket start in epoch µs, count)
    pub buckets: Vec<(i64, u64)>,
}

pub struct Terms {
    pub values: Vec<(String, u64)>,
    /// Matching records whose value is not among `values`.
    pub other: u64,
    /// Matching records without the field.
    pub missing: u64,
}

pub struct Context {
    pub anchor: Hit,
    /// Oldest first.
    pub before: Found,
    /// Oldest first.
    pub after: Found,
}

/// Round intervals a histogram chooses from, in milliseconds.
const NICE_MS: [i64; 33] = [
    1,
    2,
    5,
    10,
    20,
    50,
    100,
    200,
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    15_000,
    30_000,
    60_000,
    120_000,
    300_000,
    600_000,
    900_000,
    1_800_000,
    3_600_000,
    7_200_000,
    10_800_000,
    21_600_000,
    43_200_000,
    86_400_000,
    172_800_000,
    604_800_000,
    1_209_600_000,
    2_592_000_000,
    7_776_000_000,
    31_536_000_000,
];

fn parse_cursor(s: &str) -> Result<(i64, u64)> {
    let bad = || Error::BadRequest(format!("`cursor` `{s}` is not a cursor this API returned"));
    let (ts, rid) = s.split_once('.').ok_or_else(bad)?;
    Ok((
        ts.parse().map_err(|_| bad())?,
        rid.parse().map_err(|_| bad())?,
    ))
}

/// Runs `collector` within `budget`: a spent budget stops it and is the error returned.
fn bounded<C: Collector>(
    searcher: &tantivy::Searcher,
    query: &dyn Query,
    collector: C,
    budget: &Budget,
) -> Result<C::Fruit> {
    budget.check()?;
    searcher
        .search(
            query,
            &Bounded {
                inner: collector,
                budget,
            },
        )
        .map_err(|e| budget.check().err().unwrap_or_else(|| e.into()))
}

/// Partitions of a search opened from the object store at once, and read by ranges at
/// once before the search proper: every read of such a partition waits on the network,
/// so they are made side by side rather than one partition after another.
const STORE_READS_AT_ONCE: usize = 16;

/// A part of a partition read by ranges fetched before the search proper.
#[derive(Clone, Copy)]
enum Prefetch {
    Ts,
    Rid,
    Query,
}

/// `f` over `items` on up to `workers` threads, results in the items' order; stops
/// taking new items at the first error or once the search's time is up.
fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    budget: &Budget,
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let mut done: Vec<(usize, Result<R>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers.min(items.len()))
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    while !failed.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        let r = budget.check().and_then(|_| f(item));
                        if r.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        out.push((i, r));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join().unwrap_or_else(|_| {
                    vec![(
                        usize::MAX,
                        Err(Error::Panicked("reading from the object store".into())),
                    )]
                })
            })
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// The read path over the store's partitions: what a search needs from the store (the
/// partitions and the schema), and nothing it writes with. Cheap to clone.
#[derive(Clone)]
pub struct Searcher {
    partitions: Partitions,
    fields: Fields,
    /// With `--object-store`: partitions with no local copy are read from there.
    archive: Option<Arc<Archive>>,
}

impl Searcher {
    pub fn new(partitions: Partitions, fields: Fields, archive: Option<Arc<Archive>>) -> Searcher {
        Searcher {
            partitions,
            fields,
            archive,
        }
    }

    fn fields(&self) -> &Fields {
        &self.fields
    }

    /// The partitions overlapping `[lo, hi]` (epoch µs), newest first: the local ones, and
    /// those only the object store holds, from the cache or fetched into it (so this
    /// blocks, on a search thread). A split that cannot be read fails the search with a
    /// clear error rather than answering without it.
    fn partitions_between(
        &self,
        lo: i64,
        hi: i64,
        query: &dyn Query,
        budget: &Budget,
    ) -> Result<Vec<Arc<Partition>>> {
        let Some(archive) = &self.archive else {
            return Ok(self.partitions.between(lo, hi));
        };
        // One look at the local partitions for both lists: a partition evicted or fetched
        // in between would otherwise be searched twice, or not at all.
        let (mut all, starts) = {
            let map = self.partitions.read();
            let local: Vec<_> = map
                .values()
                .filter(|p| p.overlaps(lo, hi))
                .cloned()
                .collect();
            (local, map.keys().copied().collect::<BTreeSet<i64>>())
        };
        for p in &all {
            archive.check_complete(p)?;
        }
        let mut remote = Vec::new();
        for (start, span, splits) in archive.remote_between(lo, hi, &starts) {
            match archive.cached(start, span, &splits) {
                Some(p) => all.push(p),
                None => remote.push((start, span, splits)),
            }
        }
        all.extend(in_parallel(
            &remote,
            STORE_READS_AT_ONCE,
            budget,
            |(start, span, splits)| archive.open_remote(*start, *span, splits),
        )?);
        // What the search will read of the partitions read by ranges, fetched side by
        // side: the `ts` and `_rid` columns every ranking reads, and the query's terms,
        // postings and columns (by counting its matches). The search proper, which visits
        // partitions one after another, then finds them kept.
        let reads: Vec<(&Arc<Partition>, Prefetch)> = all
            .iter()
            .filter(|p| p.remote)
            .flat_map(|p| [Prefetch::Ts, Prefetch::Rid, Prefetch::Query].map(|r| (p, r)))
            .collect();
        in_parallel(&reads, STORE_READS_AT_ONCE, budget, |(p, read)| {
            let searcher = p.reader.searcher();
            let segments = searcher.segment_readers();
            let columns = |open: &dyn Fn(&tantivy::SegmentReader) -> tantivy::Result<()>| {
                segments.iter().try_for_each(open).map_err(Error::from)
            };
            match read {
                Prefetch::Ts => columns(&|seg| seg.fast_fields().date("ts").map(drop)),
                Prefetch::Rid => columns(&|seg| seg.fast_fields().u64("_rid").map(drop)),
                Prefetch::Query => bounded(&searcher, query, Count, budget).map(drop),
            }
        })?;
        all.sort_by_key(|p| std::cmp::Reverse(p.start));
        Ok(all)
    }

    /// Parses the Lucene-like query language (see `query.rs`); `*` and the empty query
    /// match everything.
    pub fn parse_query(&self, q: &str) -> Result<Box<dyn Query>> {
        crate::query::compile(q, self.fields())
    }

    fn time_filtered(&self, q: Box<dyn Query>, range: TimeRange) -> Box<dyn Query> {
        if range.lo.is_none() && range.hi.is_none() {
            return q;
        }
        let f = self.fields().ts;
        let b = |x: Option<i64>| {
            x.map_or(Bound::Unbounded, |v| {
                Bound::Included(Term::from_field_date(f, DateTime::from_timestamp_micros(v)))
            })
        };
        let range = RangeQuery::new(b(range.lo), b(range.hi));
        Box::new(BooleanQuery::new(vec![
            (Occur::Must, q),
            (Occur::Must, Box::new(range)),
        ]))
    }

    /// Counts every match in `range` and returns the `limit` best-ranked ones ranked below
    /// `below` (a cursor), visiting partitions in order and stopping the ranking early.
    fn top_hits(
        &self,
        query: &dyn Query,
        range: TimeRange,
        order: Order,
        limit: usize,
        below: Option<(i64, u64)>,
        budget: &Budget,
    ) -> Result<(u64, Found)> {
        let (lo, hi) = range.bounds();
        let mut parts = self.partitions_between(lo, hi, query, budget)?;
        if order == Order::Asc {
            parts.reverse();
        }
        // Partitions beyond the cursor hold nothing for this page.
        let (rank_lo, rank_hi) = match (below, order) {
            (Some((ts, _)), Order::Desc) => (lo, hi.min(ts)),
            (Some((ts, _)), Order::Asc) => (lo.max(ts), hi),
            (None, _) => (lo, hi),
        };
        let below_rank = below.map(|(ts, rid)| rank(ts, rid, order));
        let mut total = 0;
        let mut found = Found {
            searchers: Vec::new(),
            hits: Vec::new(),
            source: self.fields().source,
        };
        for p in &parts {
            let searcher = p.reader.searcher();
            if found.hits.len() >= limit || !p.overlaps(rank_lo, rank_hi) {
                total += bounded(&searcher, query, Count, budget)? as u64;
                continue;
            }
            let collector = TopCollector {
                k: limit - found.hits.len(),
                order,
                below: below_rank,
            };
            let (count, top) = bounded(&searcher, query, (Count, collector), budget)?;
            total += count as u64;
            // Partitions are disjoint in time, so every hit here ranks after those found so far.
            let i = found.searchers.len();
            found.hits.extend(top.into_iter().map(|t| (i, t)));
            found.searchers.push(searcher);
        }
        Ok((total, found))
    }

    pub fn search(
        &self,
        q: &str,
        range: TimeRange,
        order: Order,
        limit: usize,
        cursor: Option<&str>,
        budget: &Budget,
    ) -> Result<SearchResult> {
        let below = cursor.map(parse_cursor).transpose()?;
        let query = self.time_filtered(self.parse_query(q)?, range);
        let (total, hits) = self.top_hits(query.as_ref(), range, order, limit, below, budget)?;
        let cursor = if hits.len() == limit && limit > 0 {
            hits.hits
                .last()
                .map(|(_, t)| format!("{}.{}", t.ts_micros, t.rid))
        } else {
            None
        };
        Ok(SearchResult {
            total,
            hits,
            cursor,
        })
    }

    /// Counts over time. An unbounded side of `range` is taken from the data itself, so the
    /// buckets always add up to the search's total.
    pub fn histogram(
        &self,
        q: &str,
        range: TimeRange,
        buckets: usize,
        budget: &Budget,
    ) -> Result<Histogram> {
        let query = self.time_filtered(self.parse_query(q)?, range);
        let (lo, hi) = range.bounds();
        // One snapshot for the data's span and the counts, so they agree.
        let searchers: Vec<tantivy::Searcher> = self
            .partitions_between(lo, hi, query.as_ref(), budget)?
            .iter()
            .map(|p| p.reader.searcher())
            .collect();
        let empty = Histogram {
            interval_micros: 1000,
            buckets: Vec::new(),
        };
        let (lo, hi) = match (range.lo, range.hi) {
            (Some(lo), Some(hi)) => (lo, hi),
            _ => {
                let Some((dmin, dmax)) = data_span(&searchers)? else {
                    return Ok(empty);
                };
                (range.lo.unwrap_or(dmin), range.hi.unwrap_or(dmax))
            }
        };
        if hi < lo {
            // Only possible with one side open and no data on the other: nothing to count.
            return Ok(empty);
        }
        let want = ((hi - lo) / buckets.max(1) as i64).max(1);
        let interval = NICE_MS
            .iter()
            .map(|ms| ms * 1000)
            .find(|i| *i >= want)
            .unwrap_or((want / 86_400_000_000 + 1) * 86_400_000_000);
        let origin = lo.div_euclid(interval) * interval;
        let n = ((hi - origin) / interval + 1) as usize;
        let mut counts = vec![0u64; n];
        for searcher in &searchers {
            let c = bounded(
                searcher,
                query.as_ref(),
                HistogramCollector {
                    origin,
                    interval,
                    buckets: n,
                },
                budget,
            )?;
            for (a, b) in counts.iter_mut().zip(c) {
                *a += b;
            }
        }
        Ok(Histogram {
            interval_micros: interval,
            buckets: counts
                .into_iter()
                .enumerate()
                .map(|(i, c)| (origin + i as i64 * interval, c))
                .collect(),
        })
    }

    /// The most frequent values of a columnar field, or of a `fields.NAME` path, among the
    /// matches.
    pub fn terms(
        &self,
        name: &str,
        q: &str,
        range: TimeRange,
        size: usize,
        budget: &Budget,
    ) -> Result<Terms> {
        let columnar = |f: &sawmill_record::Field| f.kind == FieldKind::Exact && f.fast;
        let json = name.strip_prefix("fields.");
        if json == Some("") {
            return Err(Error::BadRequest(
                "`fields.` needs a name after the dot".into(),
            ));
        }
        if json.is_none() && !field(name).is_some_and(columnar) {
            let names: Vec<&str> = FIELDS
                .iter()
                .filter(|f| columnar(f))
                .map(|f| f.name)
                .collect();
            return Err(Error::BadRequest(format!(
                "`field` `{name}` has no term counts: use one of {} or fields.NAME",
                names.join(", ")
            )));
        }
        let query = self.time_filtered(self.parse_query(q)?, range);
        let (lo, hi) = range.bounds();
        let match_all = q.trim().is_empty() || q.trim() == "*";
        // An exact field's index holds each value whole; `fields` is indexed by word.
        let exact = self.fields().exact_field(name).filter(|_| json.is_none());
        let mut all = std::collections::HashMap::<String, u64>::new();
        let mut missing = 0;
        for p in self.partitions_between(lo, hi, query.as_ref(), budget)? {
            let searcher = p.reader.searcher();
            if let Some(field_handle) = exact.filter(|_| match_all && p.within(lo, hi)) {
                // Every record of the partition counts, and records are never deleted, so
                // the inverted index's document frequencies are the counts: no scan needed.
                for seg in searcher.segment_readers() {
                    budget.check()?;
                    let inverted = seg.inverted_index(field_handle)?;
                    let mut terms = inverted
                        .terms()
                        .stream()
                        .map_err(tantivy::TantivyError::from)?;
                    let mut with_value = 0u64;
                    while terms.advance() {
                        let n = terms.value().doc_freq as u64;
                        with_value += n;
                        *all.entry(String::from_utf8_lossy(terms.key()).into_owned())
                            .or_default() += n;
                    }
                    missing += (seg.num_docs() as u64).saturating_sub(with_value);
                }
                continue;
            }
            if json.is_some() && match_all && p.within(lo, hi) {
                // The sidebar asks for every orchestrator's metadata: where no record of the
                // partition has the path, every record is missing, with nothing to scan.
                let mut none = true;
                for seg in searcher.segment_readers() {
                    none &= path_columns(seg, name)?.is_empty();
                }
                if none {
                    missing += searcher.num_docs();
                    continue;
                }
            }
            let (m, miss) = if json.is_some() {
                let path = name.to_string();
                bounded(
                    &searcher,
                    query.as_ref(),
                    FieldTermsCollector { path },
                    budget,
                )?
            } else {
                let field = name.to_string();
                bounded(&searcher, query.as_ref(), TermsCollector { field }, budget)?
            };
            missing += miss;
            for (k, v) in m {
                *all.entry(k).or_default() += v;
            }
        }
        let mut values: Vec<(String, u64)> = all.into_iter().collect();
        values.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let other = values.iter().skip(size).map(|v| v.1).sum();
        values.truncate(size);
        Ok(Terms {
            values,
            other,
            missing,
        })
    }

    /// One record by id.
    pub fn get(&self, rid: u64, budget: &Budget) -> Result<Hit> {
        let q = TermQuery::new(
            Term::from_field_u64(self.fields().rid, rid),
            IndexRecordOption::Basic,
        );
        let (_, found) = self.top_hits(&q, TimeRange::default(), Order::Desc, 1, None, budget)?;
        found
            .reader(None)
            .next_hit()?
            .ok_or_else(|| Error::NotFound(format!("record `{rid}`")))
    }

    /// This replica's numeric id of the record `id` names. The key-based forms name the
    /// same record on every replica of its group, which is what lets a link made on one
    /// replica be followed on another after a failover; `replica` is this replica's id.
    pub fn resolve(&self, id: &LocalId, replica: &str, budget: &Budget) -> Result<u64> {
        let f = self.fields();
        let q: Box<dyn Query> = match id {
            LocalId::Rid(rid) => return Ok(*rid),
            LocalId::Replica { replica: r, rid } if r == replica => return Ok(*rid),
            LocalId::Replica { replica: r, .. } => {
                return Err(Error::NotFound(format!(
                    "record `{id}` (an id only replica `{r}` knows; this is replica `{replica}`)"
                )))
            }
            LocalId::Seq { src, seq } => {
                // `_seq` is columnar only: a range of one value reads it from the column,
                // among the few records of one `_src`.
                let at = |v| Bound::Included(Term::from_field_u64(f.seq, v));
                Box::new(BooleanQuery::new(vec![
                    (
                        Occur::Must,
                        Box::new(TermQuery::new(
                            Term::from_field_text(f.src, src),
                            IndexRecordOption::Basic,
                        )),
                    ),
                    (Occur::Must, Box::new(RangeQuery::new(at(*seq), at(*seq)))),
                ]))
            }
            LocalId::Doc(key) => Box::new(TermQuery::new(
                Term::from_field_text(f.key, key),
                IndexRecordOption::Basic,
            )),
        };
        let (_, found) = self.top_hits(
            q.as_ref(),
            TimeRange::default(),
            Order::Desc,
            1,
            None,
            budget,
        )?;
        found
            .hits
            .first()
            .map(|(_, t)| t.rid)
            .ok_or_else(|| Error::NotFound(format!("record `{id}`")))
    }

    fn term(&self, field: &str, value: &str) -> Box<dyn Query> {
        let f = self.fields().exact_field(field).expect("an exact field");
        Box::new(TermQuery::new(
            Term::from_field_text(f, value),
            IndexRecordOption::Basic,
        ))
    }

    /// The records just before and after one record, in time order.
    pub fn context(
        &self,
        rid: u64,
        before: usize,
        after: usize,
        scope: Scope,
        budget: &Budget,
    ) -> Result<Context> {
        let anchor = self.get(rid, budget)?;
        let v = anchor.value();
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let mut must: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        match scope {
            Scope::Service | Scope::Host => {
                if let Some(h) = s("host") {
                    must.push((Occur::Must, self.term("host", &h)));
                }
                if scope == Scope::Service {
                    if let Some(svc) = s("service") {
                        must.push((Occur::Must, self.term("service", &svc)));
                    }
                }
            }
            Scope::Request => {
                let mut any: Vec<(Occur, Box<dyn Query>)> = Vec::new();
                for f in ["trace_id", "request_id"] {
                    if let Some(id) = s(f) {
                        any.push((Occur::Should, self.term("trace_id", &id)));
                        any.push((Occur::Should, self.term("request_id", &id)));
                    }
                }
                if any.is_empty() {
                    return Err(Error::BadRequest(format!("record `{rid}` has no `trace_id` or `request_id`, so it has no request context")));
                }
                must.push((Occur::Must, Box::new(BooleanQuery::new(any))));
            }
        }
        let query: Box<dyn Query> = if must.is_empty() {
            Box::new(AllQuery)
        } else {
            Box::new(BooleanQuery::new(must))
        };
        let key = (anchor.ts_micros, anchor.rid);
        let (_, mut earlier) = self.top_hits(
            query.as_ref(),
            TimeRange::default(),
            Order::Desc,
            before,
            Some(key),
            budget,
        )?;
        earlier.reverse();
        let (_, later) = self.top_hits(
            query.as_ref(),
            TimeRange::default(),
            Order::Asc,
            after,
            Some(key),
            budget,
        )?;
        Ok(Context {
            anchor,
            before: earlier,
            after: later,
        })
    }

    /// Every record of one request across services, oldest first.
    pub fn trace(&self, id: &str, limit: usize, budget: &Budget) -> Result<(u64, Found)> {
        let q = BooleanQuery::new(vec![
            (Occur::Should, self.term("trace_id", id)),
            (Occur::Should, self.term("request_id", id)),
        ]);
        self.top_hits(&q, TimeRange::default(), Order::Asc, limit, None, budget)
    }

    /// Matching records with ids in `[from, upto)`, what became searchable since the last
    /// look, in arrival order; with how many matched in all.
    pub fn since(
        &self,
        query: &dyn Query,
        from: u64,
        upto: u64,
        limit: usize,
        budget: &Budget,
    ) -> Result<(u64, Found)> {
        let f = self.fields().rid;
        let lo = Bound::Included(Term::from_field_u64(f, from));
        let rid_range = RangeQuery::new(lo, Bound::Excluded(Term::from_field_u64(f, upto)));
        let q = BooleanQuery::new(vec![
            (Occur::Must, query.box_clone()),
            (Occur::Must, Box::new(rid_range)),
        ]);
        let (total, mut hits) =
            self.top_hits(&q, TimeRange::default(), Order::Asc, limit, None, budget)?;
        // Arrival order, which is what a live tail shows.
        hits.sort_by_rid();
        Ok((total, hits))
    }
}

/// The earliest and latest `ts` (µs) the searchers hold.
fn data_span(searchers: &[tantivy::Searcher]) -> Result<Option<(i64, i64)>> {
    let mut span: Option<(i64, i64)> = None;
    for searcher in searchers {
        for seg in searcher.segment_readers() {
            if seg.num_docs() == 0 {
                continue;
            }
            // Every record has a `ts`: failing to read the column (a split read by
            // ranges) fails the histogram rather than narrowing its span.
            let col = seg.fast_fields().date("ts")?;
            let (a, b) = (
                col.min_value().into_timestamp_micros(),
                col.max_value().into_timestamp_micros(),
            );
            span = Some(span.map_or((a, b), |(x, y)| (x.min(a), y.max(b))));
        }
    }
    Ok(span)
}
