//! tantivy collectors over fast fields: newest-first top hits, time histogram, top terms;
//! and [`Bounded`], which stops any collector once its search's budget is spent.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use sawmill_record::api::Order;
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Cardinality, Column, DynamicColumn, StrColumn};
use tantivy::query::Weight;
use tantivy::{
    DateTime, DocAddress, DocId, DocSet, Score, SegmentOrdinal, SegmentReader, TantivyError,
    COLLECT_BLOCK_BUFFER_LEN,
};

use crate::searches::Budget;

/// Blocks of documents (64 each) between two looks at the budget: a look costs a clock
/// read, about as much as collecting a handful of documents.
const BLOCKS_PER_CHECK: usize = 16;

/// Runs `inner` over each segment the way tantivy does, but checks `budget` before each
/// segment and every [`BLOCKS_PER_CHECK`] blocks of matching documents, failing the search
/// once it is spent: a search past its deadline stops working within about a thousand
/// documents, not at the end of the segment.
pub struct Bounded<'a, C> {
    pub inner: C,
    pub budget: &'a Budget,
}

/// The error a stopped collection returns; the budget says why.
pub fn stopped() -> TantivyError {
    TantivyError::InternalError("search stopped: its budget is spent".into())
}

impl<C: Collector> Collector for Bounded<'_, C> {
    type Fruit = C::Fruit;
    type Child = C::Child;

    fn for_segment(
        &self,
        segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<C::Child> {
        self.inner.for_segment(segment, reader)
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(
        &self,
        fruits: Vec<<C::Child as SegmentCollector>::Fruit>,
    ) -> tantivy::Result<C::Fruit> {
        self.inner.merge_fruits(fruits)
    }

    fn collect_segment(
        &self,
        weight: &dyn Weight,
        segment: u32,
        reader: &SegmentReader,
    ) -> tantivy::Result<<C::Child as SegmentCollector>::Fruit> {
        self.budget.check().map_err(|_| stopped())?;
        let mut child = self.inner.for_segment(segment, reader)?;
        let mut docs = weight.scorer(reader, 1.0)?;
        let alive = reader.alive_bitset();
        let mut buf = [0 as DocId; COLLECT_BLOCK_BUFFER_LEN];
        let mut blocks = 0usize;
        loop {
            let n = docs.fill_buffer(&mut buf);
            match alive {
                None => child.collect_block(&buf[..n]),
                Some(alive) => {
                    for &d in buf[..n].iter().filter(|d| alive.is_alive(**d)) {
                        child.collect(d, 0.0);
                    }
                }
            }
            if n < buf.len() {
                break;
            }
            blocks += 1;
            if blocks.is_multiple_of(BLOCKS_PER_CHECK) {
                self.budget.check().map_err(|_| stopped())?;
            }
        }
        Ok(child.harvest())
    }
}

/// One hit's sort key: larger ranks come first in the requested order. Ties in `ts` are
/// broken by arrival (`rid`), which makes paging with a cursor stable.
pub fn rank(ts_micros: i64, rid: u64, order: Order) -> u128 {
    let key = (((ts_micros as u64) ^ (1 << 63)) as u128) << 64 | rid as u128;
    match order {
        Order::Desc => key,
        Order::Asc => !key,
    }
}

#[derive(Clone, Copy, Debug)]
pub struct TopHit {
    pub rank: u128,
    pub ts_micros: i64,
    pub rid: u64,
    pub addr: DocAddress,
}

/// The `k` best-ranked documents, only those ranked below `below` (the cursor) if given.
pub struct TopCollector {
    pub k: usize,
    pub order: Order,
    pub below: Option<u128>,
}

pub struct TopSegment {
    k: usize,
    order: Order,
    below: u128,
    segment: SegmentOrdinal,
    ts: Column<DateTime>,
    rid: Column<u64>,
    heap: BinaryHeap<Reverse<(u128, i64, u64, DocId)>>,
    ts_buf: Vec<Option<DateTime>>,
    rid_buf: Vec<Option<u64>>,
}

impl Collector for TopCollector {
    type Fruit = Vec<TopHit>;
    type Child = TopSegment;

    fn for_segment(
        &self,
        segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<TopSegment> {
        Ok(TopSegment {
            k: self.k,
            order: self.order,
            below: self.below.unwrap_or(u128::MAX),
            segment,
            ts: reader.fast_fields().date("ts")?,
            rid: reader.fast_fields().u64("_rid")?,
            heap: BinaryHeap::with_capacity(self.k.min(4096) + 1),
            ts_buf: Vec::new(),
            rid_buf: Vec::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Vec<TopHit>>) -> tantivy::Result<Vec<TopHit>> {
        let mut all: Vec<TopHit> = fruits.into_iter().flatten().collect();
        all.sort_unstable_by_key(|h| std::cmp::Reverse(h.rank));
        all.truncate(self.k);
        Ok(all)
    }
}

impl TopSegment {
    #[inline]
    fn offer(&mut self, doc: DocId, ts: Option<DateTime>, rid: Option<u64>) {
        if self.k == 0 {
            return;
        }
        let ts = ts.map(|d| d.into_timestamp_micros()).unwrap_or(0);
        let rid = rid.unwrap_or(0);
        let r = rank(ts, rid, self.order);
        if r >= self.below {
            return;
        }
        if self.heap.len() < self.k {
            self.heap.push(Reverse((r, ts, rid, doc)));
        } else if let Some(Reverse(min)) = self.heap.peek() {
            if r > min.0 {
                self.heap.pop();
                self.heap.push(Reverse((r, ts, rid, doc)));
            }
        }
    }
}

impl SegmentCollector for TopSegment {
    type Fruit = Vec<TopHit>;

    fn collect(&mut self, doc: DocId, _score: Score) {
        let ts = self.ts.first(doc);
        let rid = self.rid.first(doc);
        self.offer(doc, ts, rid);
    }

    // Columns read a block of documents at a time much faster than one by one.
    fn collect_block(&mut self, docs: &[DocId]) {
        if self.k == 0 {
            return;
        }
        let mut ts_buf = std::mem::take(&mut self.ts_buf);
        let mut rid_buf = std::mem::take(&mut self.rid_buf);
        ts_buf.resize(docs.len(), None);
        rid_buf.resize(docs.len(), None);
        self.ts.first_vals(docs, &mut ts_buf);
        self.rid.first_vals(docs, &mut rid_buf);
        for ((doc, ts), rid) in docs.iter().zip(&ts_buf).zip(&rid_buf) {
            self.offer(*doc, *ts, *rid);
        }
        self.ts_buf = ts_buf;
        self.rid_buf = rid_buf;
    }

    fn harvest(self) -> Vec<TopHit> {
        let segment = self.segment;
        self.heap
            .into_iter()
            .map(|Reverse((rank, ts_micros, rid, doc))| TopHit {
                rank,
                ts_micros,
                rid,
                addr: DocAddress::new(segment, doc),
            })
            .collect()
    }
}

/// Counts of matching documents per time bucket: `[origin + i*interval, origin + (i+1)*interval)`.
pub struct HistogramCollector {
    pub origin: i64,
    pub interval: i64,
    pub buckets: usize,
}

pub struct HistogramSegment {
    origin: i64,
    interval: i64,
    ts: Column<DateTime>,
    counts: Vec<u64>,
    buf: Vec<Option<DateTime>>,
}

impl Collector for HistogramCollector {
    type Fruit = Vec<u64>;
    type Child = HistogramSegment;

    fn for_segment(
        &self,
        _: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<HistogramSegment> {
        Ok(HistogramSegment {
            origin: self.origin,
            interval: self.interval.max(1),
            ts: reader.fast_fields().date("ts")?,
            counts: vec![0; self.buckets],
            buf: Vec::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Vec<u64>>) -> tantivy::Result<Vec<u64>> {
        let mut out = vec![0; self.buckets];
        for f in fruits {
            for (o, c) in out.iter_mut().zip(f) {
                *o += c;
            }
        }
        Ok(out)
    }
}

impl HistogramSegment {
    #[inline]
    fn count(&mut self, ts: Option<DateTime>) {
        let Some(ts) = ts else { return };
        let off = ts.into_timestamp_micros() - self.origin;
        if off < 0 || self.counts.is_empty() {
            return;
        }
        // The last bucket also takes the range's inclusive end.
        let i = ((off / self.interval) as usize).min(self.counts.len() - 1);
        self.counts[i] += 1;
    }
}

impl SegmentCollector for HistogramSegment {
    type Fruit = Vec<u64>;

    fn collect(&mut self, doc: DocId, _score: Score) {
        let ts = self.ts.first(doc);
        self.count(ts);
    }

    fn collect_block(&mut self, docs: &[DocId]) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(docs.len(), None);
        self.ts.first_vals(docs, &mut buf);
        for ts in &buf {
            self.count(*ts);
        }
        self.buf = buf;
    }

    fn harvest(self) -> Vec<u64> {
        self.counts
    }
}

/// How many matching documents carry each value of one columnar string field.
pub struct TermsCollector {
    pub field: String,
}

pub struct TermsSegment {
    column: Option<StrCounts>,
    missing: u64,
}

/// Counts by term ordinal of one string column in one segment.
struct StrCounts {
    column: StrColumn,
    counts: Vec<u64>,
    buf: Vec<Option<u64>>,
}

impl StrCounts {
    fn new(column: StrColumn) -> StrCounts {
        let n = column.num_terms();
        StrCounts {
            column,
            counts: vec![0; n],
            buf: Vec::new(),
        }
    }

    /// Counts the first value of each of `docs` a block at a time; returns how many have
    /// none.
    fn count_first(&mut self, docs: &[DocId]) -> u64 {
        let mut missing = 0;
        self.buf.resize(docs.len(), None);
        self.column.ords().first_vals(docs, &mut self.buf);
        for ord in &self.buf {
            match ord {
                Some(ord) => self.counts[*ord as usize] += 1,
                None => missing += 1,
            }
        }
        missing
    }

    /// Adds each counted value to `out`. The dictionary is read as needed: a failed read
    /// fails the count rather than leaving the value out.
    fn add_to(&self, out: &mut HashMap<String, u64>) -> std::io::Result<()> {
        let mut s = String::new();
        for (ord, &c) in self.counts.iter().enumerate() {
            if c > 0 {
                s.clear();
                if self.column.ord_to_str(ord as u64, &mut s)? {
                    *out.entry(s.clone()).or_default() += c;
                }
            }
        }
        Ok(())
    }
}

/// Value counts, plus the number of documents without a value.
pub type TermCounts = (HashMap<String, u64>, u64);

impl Collector for TermsCollector {
    type Fruit = TermCounts;
    type Child = TermsSegment;

    fn for_segment(
        &self,
        _: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<TermsSegment> {
        Ok(TermsSegment {
            column: reader.fast_fields().str(&self.field)?.map(StrCounts::new),
            missing: 0,
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<SegmentTerms>) -> tantivy::Result<TermCounts> {
        merge_terms(fruits)
    }
}

/// The segments' counts added up; a segment whose values could not be read fails the count.
fn merge_terms(fruits: Vec<SegmentTerms>) -> tantivy::Result<TermCounts> {
    let mut out: HashMap<String, u64> = HashMap::new();
    let mut missing = 0;
    for fruit in fruits {
        let (m, miss) = fruit.map_err(tantivy::TantivyError::IoError)?;
        missing += miss;
        for (k, v) in m {
            *out.entry(k).or_default() += v;
        }
    }
    Ok((out, missing))
}

/// One segment's counts, or why its values could not be read (a split read by ranges).
pub type SegmentTerms = std::result::Result<TermCounts, Arc<std::io::Error>>;

impl SegmentCollector for TermsSegment {
    type Fruit = SegmentTerms;

    fn collect(&mut self, doc: DocId, _score: Score) {
        self.collect_block(&[doc]);
    }

    fn collect_block(&mut self, docs: &[DocId]) {
        self.missing += match &mut self.column {
            Some(c) => c.count_first(docs),
            None => docs.len() as u64,
        };
    }

    fn harvest(self) -> SegmentTerms {
        let mut out = HashMap::new();
        if let Some(c) = &self.column {
            c.add_to(&mut out).map_err(Arc::new)?;
        }
        Ok((out, self.missing))
    }
}

/// Top terms of one `fields.NAME` path. A record's fields are JSON, so a path's values sit
/// in one column per type in each segment (a string column, and number, boolean or date
/// columns where records held those); a record counts once per distinct value it has, and
/// as missing when no column has one. Partitions written before the fields were columnar
/// have no column: their records count as missing.
pub struct FieldTermsCollector {
    /// The column's name, `fields.NAME`.
    pub path: String,
}

/// A number, boolean or date of a `fields.NAME` column, rendered at harvest.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Scalar {
    I64(i64),
    U64(u64),
    /// `f64` bits: floats have no `Hash`.
    F64(u64),
    Bool(bool),
    /// Nanoseconds since the epoch: tantivy keeps a text that reads as an RFC 3339 time
    /// as a date.
    Date(i64),
}

impl Scalar {
    fn render(self) -> String {
        match self {
            Scalar::I64(v) => v.to_string(),
            Scalar::U64(v) => v.to_string(),
            Scalar::F64(bits) => f64::from_bits(bits).to_string(),
            Scalar::Bool(b) => b.to_string(),
            // As RFC 3339 again, which a search for the value reads back as the same date.
            Scalar::Date(nanos) => DateTime::from_timestamp_nanos(nanos)
                .into_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| nanos.to_string()),
        }
    }
}

enum ScalarColumn {
    I64(Column<i64>),
    U64(Column<u64>),
    F64(Column<f64>),
    Bool(Column<bool>),
    Date(Column<DateTime>),
}

impl ScalarColumn {
    fn each(&self, doc: DocId, mut f: impl FnMut(Scalar)) {
        match self {
            ScalarColumn::I64(c) => c.values_for_doc(doc).for_each(|v| f(Scalar::I64(v))),
            ScalarColumn::U64(c) => c.values_for_doc(doc).for_each(|v| f(Scalar::U64(v))),
            ScalarColumn::F64(c) => c
                .values_for_doc(doc)
                .for_each(|v| f(Scalar::F64(v.to_bits()))),
            ScalarColumn::Bool(c) => c.values_for_doc(doc).for_each(|v| f(Scalar::Bool(v))),
            ScalarColumn::Date(c) => c
                .values_for_doc(doc)
                .for_each(|v| f(Scalar::Date(v.into_timestamp_nanos()))),
        }
    }
}

pub struct FieldTermsSegment {
    text: Option<StrCounts>,
    scalars: Vec<ScalarColumn>,
    scalar_counts: HashMap<Scalar, u64>,
    missing: u64,
    /// One record's values, kept to count each once.
    seen: (Vec<u64>, Vec<Scalar>),
}

/// The columns of `fields.NAME` path `path` in a segment: none where no record of it has
/// the path, and none in a partition made before `fields` was columnar (tantivy refuses the
/// question there).
pub fn path_columns(
    reader: &SegmentReader,
    path: &str,
) -> tantivy::Result<Vec<tantivy::columnar::DynamicColumnHandle>> {
    if !columnar(reader, path) {
        return Ok(Vec::new());
    }
    reader.fast_fields().dynamic_column_handles(path)
}

/// Whether the segment's partition keeps `fields.NAME` path `path` in columns: not one
/// written before `fields` was columnar.
pub fn columnar(reader: &SegmentReader, path: &str) -> bool {
    let schema = reader.schema();
    schema
        .find_field(path)
        .is_some_and(|(f, _)| schema.get_field_entry(f).is_fast())
}

impl Collector for FieldTermsCollector {
    type Fruit = TermCounts;
    type Child = FieldTermsSegment;

    fn for_segment(
        &self,
        _: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<FieldTermsSegment> {
        let mut text = None;
        let mut scalars = Vec::new();
        for handle in path_columns(reader, &self.path)? {
            match handle.open()? {
                DynamicColumn::Str(c) => text = Some(StrCounts::new(c)),
                DynamicColumn::I64(c) => scalars.push(ScalarColumn::I64(c)),
                DynamicColumn::U64(c) => scalars.push(ScalarColumn::U64(c)),
                DynamicColumn::F64(c) => scalars.push(ScalarColumn::F64(c)),
                DynamicColumn::Bool(c) => scalars.push(ScalarColumn::Bool(c)),
                DynamicColumn::DateTime(c) => scalars.push(ScalarColumn::Date(c)),
                // JSON text, numbers, booleans and dates only; an object at the path has its
                // values under longer paths.
                DynamicColumn::IpAddr(_) | DynamicColumn::Bytes(_) => {}
            }
        }
        Ok(FieldTermsSegment {
            text,
            scalars,
            scalar_counts: HashMap::new(),
            missing: 0,
            seen: (Vec::new(), Vec::new()),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<SegmentTerms>) -> tantivy::Result<TermCounts> {
        merge_terms(fruits)
    }
}

impl SegmentCollector for FieldTermsSegment {
    type Fruit = SegmentTerms;

    fn collect(&mut self, doc: DocId, _score: Score) {
        // A record counts once per distinct value: an array may repeat one.
        let (ords, scalars) = &mut self.seen;
        ords.clear();
        scalars.clear();
        if let Some(t) = &self.text {
            ords.extend(t.column.term_ords(doc));
        }
        for c in &self.scalars {
            c.each(doc, |v| scalars.push(v));
        }
        if ords.is_empty() && scalars.is_empty() {
            self.missing += 1;
            return;
        }
        ords.sort_unstable();
        ords.dedup();
        if let Some(t) = &mut self.text {
            for &ord in ords.iter() {
                t.counts[ord as usize] += 1;
            }
        }
        for (i, v) in scalars.iter().enumerate() {
            if !scalars[..i].contains(v) {
                *self.scalar_counts.entry(*v).or_default() += 1;
            }
        }
    }

    fn collect_block(&mut self, docs: &[DocId]) {
        if self.scalars.is_empty() {
            match &mut self.text {
                // A path no record of the segment has (the sidebar asks for every
                // orchestrator's): all are missing, with no column to look at.
                None => {
                    self.missing += docs.len() as u64;
                    return;
                }
                // Text alone, at most one value a record (the usual task metadata): the
                // column is read a block at a time, as an exact field's.
                Some(t) if t.column.ords().get_cardinality() != Cardinality::Multivalued => {
                    self.missing += t.count_first(docs);
                    return;
                }
                Some(_) => {}
            }
        }
        for &doc in docs {
            self.collect(doc, 0.0);
        }
    }

    fn harvest(self) -> SegmentTerms {
        let mut out: HashMap<String, u64> = self
            .scalar_counts
            .into_iter()
            .map(|(v, c)| (v.render(), c))
            .collect();
        // The text "3" and the number 3 are one value to a reader: their counts add up.
        if let Some(t) = &self.text {
            t.add_to(&mut out).map_err(Arc::new)?;
        }
        Ok((out, self.missing))
    }
}
