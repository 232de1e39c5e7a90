//! The read path: queries, top hits, histograms, terms, context and traces over the partitions
//! a time range touches.

use std::ops::Bound;

use serde_json::value::RawValue;
use serde_json::Value;
use tantivy::collector::Count;
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::{IndexRecordOption, Value as _};
use tantivy::{DateTime, Searcher, TantivyDocument, Term};

use crate::collectors::{rank, HistogramCollector, Order, TermsCollector, TopCollector, TopHit};
use crate::error::{Error, Result};
use crate::schema::FAST_STRING_FIELDS;
use crate::store::Store;

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
    /// The record as the API returns it: its stored JSON with `_id` added in front.
    pub fn to_json(&self) -> Box<RawValue> {
        let body = self.source.strip_prefix('{').unwrap_or("}");
        let sep = if body.trim_start().starts_with('}') {
            ""
        } else {
            ","
        };
        RawValue::from_string(format!("{{\"_id\":\"{}\"{sep}{body}", self.rid))
            .unwrap_or_else(|_| RawValue::from_string("{}".into()).unwrap())
    }

    pub fn value(&self) -> Value {
        serde_json::from_str(&self.source).unwrap_or(Value::Null)
    }

    fn cursor(&self) -> String {
        format!("{}.{}", self.ts_micros, self.rid)
    }
}

pub struct SearchResult {
    pub total: u64,
    pub hits: Vec<Hit>,
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

/// Which neighbours `context` shows.
#[derive(Clone, Copy, Debug, Default, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Same host and service.
    #[default]
    Service,
    /// Same host.
    Host,
    /// Same trace or request id.
    Request,
}

pub struct Context {
    pub anchor: Hit,
    /// Oldest first.
    pub before: Vec<Hit>,
    /// Oldest first.
    pub after: Vec<Hit>,
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

impl Store {
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

    fn load(&self, searcher: &Searcher, top: &TopHit) -> Result<Hit> {
        let doc: TantivyDocument = searcher.doc(top.addr)?;
        let source = doc
            .get_first(self.fields().source)
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        Ok(Hit {
            rid: top.rid,
            ts_micros: top.ts_micros,
            source,
        })
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
    ) -> Result<(u64, Vec<Hit>)> {
        let (lo, hi) = range.bounds();
        let mut parts = self.partitions_between(lo, hi);
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
        let mut found: Vec<(Searcher, TopHit)> = Vec::new();
        for p in &parts {
            let searcher = p.reader.searcher();
            if found.len() >= limit || !p.overlaps(rank_lo, rank_hi) {
                total += searcher.search(query, &Count)? as u64;
                continue;
            }
            let collector = TopCollector {
                k: limit - found.len(),
                order,
                below: below_rank,
            };
            let (count, top) = searcher.search(query, &(Count, collector))?;
            total += count as u64;
            // Partitions are disjoint in time, so every hit here ranks after those found so far.
            found.extend(top.into_iter().map(|t| (searcher.clone(), t)));
        }
        let hits = found
            .iter()
            .map(|(s, t)| self.load(s, t))
            .collect::<Result<Vec<_>>>()?;
        Ok((total, hits))
    }

    pub fn search(
        &self,
        q: &str,
        range: TimeRange,
        order: Order,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<SearchResult> {
        let below = cursor.map(parse_cursor).transpose()?;
        let query = self.time_filtered(self.parse_query(q)?, range);
        let (total, hits) = self.top_hits(query.as_ref(), range, order, limit, below)?;
        let cursor = if hits.len() == limit && limit > 0 {
            hits.last().map(Hit::cursor)
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
    pub fn histogram(&self, q: &str, range: TimeRange, buckets: usize) -> Result<Histogram> {
        let query = self.time_filtered(self.parse_query(q)?, range);
        let (lo, hi) = range.bounds();
        // One snapshot for the data's span and the counts, so they agree.
        let searchers: Vec<Searcher> = self
            .partitions_between(lo, hi)
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
                let Some((dmin, dmax)) = data_span(&searchers) else {
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
            let c = searcher.search(
                query.as_ref(),
                &HistogramCollector {
                    origin,
                    interval,
                    buckets: n,
                },
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

    /// The most frequent values of a columnar field among the matches.
    pub fn terms(&self, field: &str, q: &str, range: TimeRange, size: usize) -> Result<Terms> {
        if !FAST_STRING_FIELDS.contains(&field) {
            return Err(Error::BadRequest(format!(
                "`field` `{field}` has no term counts: use one of {}",
                FAST_STRING_FIELDS.join(", ")
            )));
        }
        let query = self.time_filtered(self.parse_query(q)?, range);
        let (lo, hi) = range.bounds();
        let field_handle = self.fields().string_field(field).expect("a string field");
        let match_all = q.trim().is_empty() || q.trim() == "*";
        let mut all = std::collections::HashMap::<String, u64>::new();
        let mut missing = 0;
        for p in self.partitions_between(lo, hi) {
            let searcher = p.reader.searcher();
            if match_all && p.within(lo, hi) {
                // Every record of the partition counts, and records are never deleted, so
                // the inverted index's document frequencies are the counts: no scan needed.
                for seg in searcher.segment_readers() {
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
            let (m, miss) = searcher.search(
                query.as_ref(),
                &TermsCollector {
                    field: field.to_string(),
                },
            )?;
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
    pub fn get(&self, rid: u64) -> Result<Hit> {
        let q = TermQuery::new(
            Term::from_field_u64(self.fields().rid, rid),
            IndexRecordOption::Basic,
        );
        let (_, hits) = self.top_hits(&q, TimeRange::default(), Order::Desc, 1, None)?;
        hits.into_iter()
            .next()
            .ok_or_else(|| Error::NotFound(format!("record `{rid}`")))
    }

    fn term(&self, field: &str, value: &str) -> Box<dyn Query> {
        let f = self.fields().string_field(field).expect("a string field");
        Box::new(TermQuery::new(
            Term::from_field_text(f, value),
            IndexRecordOption::Basic,
        ))
    }

    /// The records just before and after one record, in time order.
    pub fn context(&self, rid: u64, before: usize, after: usize, scope: Scope) -> Result<Context> {
        let anchor = self.get(rid)?;
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
        )?;
        earlier.reverse();
        let (_, later) = self.top_hits(
            query.as_ref(),
            TimeRange::default(),
            Order::Asc,
            after,
            Some(key),
        )?;
        Ok(Context {
            anchor,
            before: earlier,
            after: later,
        })
    }

    /// Every record of one request across services, oldest first.
    pub fn trace(&self, id: &str, limit: usize) -> Result<(u64, Vec<Hit>)> {
        let q = BooleanQuery::new(vec![
            (Occur::Should, self.term("trace_id", id)),
            (Occur::Should, self.term("request_id", id)),
        ]);
        self.top_hits(&q, TimeRange::default(), Order::Asc, limit, None)
    }

    /// Matching records with ids in `[from, upto)`, what became searchable since the last
    /// look, in arrival order; with how many matched in all.
    pub fn since(
        &self,
        query: &dyn Query,
        from: u64,
        upto: u64,
        limit: usize,
    ) -> Result<(u64, Vec<Hit>)> {
        let f = self.fields().rid;
        let lo = Bound::Included(Term::from_field_u64(f, from));
        let rid_range = RangeQuery::new(lo, Bound::Excluded(Term::from_field_u64(f, upto)));
        let q = BooleanQuery::new(vec![
            (Occur::Must, query.box_clone()),
            (Occur::Must, Box::new(rid_range)),
        ]);
        let (total, mut hits) = self.top_hits(&q, TimeRange::default(), Order::Asc, limit, None)?;
        // Arrival order, which is what a live tail shows.
        hits.sort_unstable_by_key(|h| h.rid);
        Ok((total, hits))
    }
}

/// The earliest and latest `ts` (µs) the searchers hold.
fn data_span(searchers: &[Searcher]) -> Option<(i64, i64)> {
    let mut span: Option<(i64, i64)> = None;
    for searcher in searchers {
        for seg in searcher.segment_readers() {
            if seg.num_docs() == 0 {
                continue;
            }
            let Ok(col) = seg.fast_fields().date("ts") else {
                continue;
            };
            let (a, b) = (
                col.min_value().into_timestamp_micros(),
                col.max_value().into_timestamp_micros(),
            );
            span = Some(span.map_or((a, b), |(x, y)| (x.min(a), y.max(b))));
        }
    }
    span
}
