//! The HTTP API of DESIGN.md, where every request enters: handlers parse the request (the
//! contract's parameter types), call a service (`ingest`, or a [`Searcher`] method on the
//! search threads within their limits), and shape the answer (the contract's answer types).
//! Answers with hits are streamed, the hits read from the doc store a chunk at a time as the
//! client takes them; unit tests read them back as the contract's types.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, State};
use axum::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{Stream, StreamExt};
use sawmill_record::api::{
    self as paths, Bucket, ContextParams, Health, HistogramParams, HistogramResponse, LocalId,
    SearchParams, TailParams, TermCount, TermsParams, TermsResponse, TraceParams, MAX_BUCKETS,
    MAX_LIMIT, MAX_TERMS, MAX_TRACE_LIMIT,
};
use sawmill_record::api::{
    Holdings, RepairByKey, RepairHoldingsParams, RepairKeys, RepairKeysParams, RepairPeerParams,
    RepairRecordsParams, MAX_REPAIR_BY_KEY_BODY,
};
use sawmill_record::time::format_micros;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use tantivy::query::Query;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::body::{decode, read_limited};
use crate::error::{Error, Result};
use crate::ingest::{self, Format, IngestReport};
use crate::metrics::{AnswerFailed, BodyDecoded, BodyReceived, Searched, M};
use crate::repair;
use crate::search::{HitReader, Searcher, TimeRange};
use crate::searches::{Budget, SearchLimits, Searches};
use crate::store::Store;
use crate::times::parse_instant;

/// Limits of the HTTP layer, and who may use it.
#[derive(Clone)]
pub struct ApiConfig {
    /// Largest accepted request body, compressed and decompressed alike.
    pub max_body_bytes: u64,
    /// Longest a client may take to send a request head; the connection is then closed.
    pub header_timeout: Duration,
    /// Longest a client may take to send an ingest body; it is then answered 408.
    pub body_timeout: Duration,
    /// Longest a stop waits for requests in flight before dropping their connections.
    pub stop_timeout: Duration,
    /// Connections served at once; more wait in the kernel's backlog until one ends.
    pub max_connections: usize,
    /// Longer ingested messages are cut to this many bytes and flagged `truncated`.
    pub max_message_bytes: usize,
    /// How many searches run at once, wait, and for how long.
    pub searches: SearchLimits,
    /// HTTPS only, with this certificate.
    pub tls: Option<Arc<sawmill_http::ServerTls>>,
    /// The ingest and read tokens, when routes need them.
    pub access: sawmill_http::Access,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_body_bytes: 64 << 20,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_message_bytes: 256 << 10,
            searches: SearchLimits::default(),
            tls: None,
            access: sawmill_http::Access::default(),
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    store: Store,
    searcher: Searcher,
    config: ApiConfig,
    searches: Searches,
    shutdown: watch::Receiver<bool>,
    repair: RepairReads,
}

/// What the repair routes share: a bound on the doc-store reads peers can make this
/// replica do at once.
#[derive(Clone)]
struct RepairReads {
    permits: Arc<tokio::sync::Semaphore>,
}

/// Repair reads served at once; more peers wait their turn (repair is never urgent).
const REPAIR_READS: usize = 2;

/// The indexer's routes. `shutdown` turning true ends live tails, so a graceful stop
/// does not wait on them.
pub fn router(store: Store, config: ApiConfig, shutdown: watch::Receiver<bool>) -> Router {
    let access = config.access.clone();
    let routes = Router::new()
        .route(paths::INGEST, post(ingest))
        .route(paths::BULK, post(bulk))
        .route(paths::BULK_INDEX, post(bulk_index))
        .route(paths::SEARCH, get(search))
        .route(paths::HISTOGRAM, get(histogram))
        .route(paths::TERMS, get(terms))
        .route(paths::CONTEXT, get(context))
        .route(paths::TRACE, get(trace))
        .route(paths::TAIL, get(tail))
        .route(paths::REPAIR_HOLDINGS, get(repair_holdings))
        .route(paths::REPAIR_RECORDS, get(repair_records))
        .route(paths::REPAIR_KEYS, get(repair_keys))
        .route(paths::REPAIR_BY_KEY, post(repair_by_key))
        .route(paths::HEALTHZ, get(healthz))
        .route(paths::METRICS, get(metrics))
        .route("/", get(root))
        .fallback(not_found)
        .with_state(AppState {
            searches: Searches::start(config.searches.clone(), store.metrics().clone()),
            searcher: Searcher::new(
                store.partitions().clone(),
                store.fields().clone(),
                store.archive().cloned(),
            ),
            store,
            config,
            shutdown,
            repair: RepairReads {
                permits: Arc::new(tokio::sync::Semaphore::new(REPAIR_READS)),
            },
        });
    access.guard(routes)
}

/// Query-string parameters whose rejection is the API's own 400.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| Params(q.0))
            .map_err(|e| Error::BadRequest(e.body_text()))
    }
}

fn time_range(start: Option<&str>, end: Option<&str>) -> Result<TimeRange> {
    let now = OffsetDateTime::now_utc();
    let parse = |name: &str, v: Option<&str>| -> Result<Option<i64>> {
        match v {
            None => Ok(None),
            Some(s) if s.trim().is_empty() => Ok(None),
            Some(s) => parse_instant(s, now)
                .map(|t| Some((t.unix_timestamp_nanos() / 1000) as i64))
                .map_err(|e| Error::BadRequest(format!("`{name}`: {e}"))),
        }
    };
    let r = TimeRange {
        lo: parse("start", start)?,
        hi: parse("end", end)?,
    };
    if let (Some(lo), Some(hi)) = (r.lo, r.hi) {
        if hi < lo {
            return Err(Error::BadRequest("`end` is before `start`".into()));
        }
    }
    Ok(r)
}

fn check_max(name: &str, v: usize, max: usize) -> Result<()> {
    if v > max {
        return Err(Error::BadRequest(format!("`{name}` is {v}; at most {max}")));
    }
    Ok(())
}

/// Runs a search on the search threads within its limits, counting it.
async fn blocking<T: Send + 'static>(
    s: &AppState,
    f: impl FnOnce(&Searcher, &Budget) -> Result<T> + Send + 'static,
) -> Result<T> {
    let searcher = s.searcher.clone();
    let started = Instant::now();
    let res = s.searches.run(move |budget| f(&searcher, budget)).await;
    Searched {
        took: started.elapsed(),
        failed: res.is_err(),
    }
    .emit(s.store.metrics());
    res
}

fn ms(started: Instant) -> u64 {
    started.elapsed().as_millis() as u64
}

/// A piece of a streamed answer: JSON text, or hits still to be read, comma-separated.
enum Part {
    Text(String),
    Hits(HitReader),
}

/// A streamed answer's hits are read on the search threads in chunks of about this size,
/// one chunk ahead of the client: four clients taking 200 MB answers at once grew the
/// indexer by 2 GiB when answers were built whole, and by about 40 MiB since.
const CHUNK_BYTES: usize = 256 << 10;

/// The next chunk of a streamed answer: parts gathered until it holds [`CHUNK_BYTES`] or
/// the parts run out; hits are read on the search threads.
async fn next_chunk(parts: &mut VecDeque<Part>, s: &AppState) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    while out.len() < CHUNK_BYTES {
        match parts.pop_front() {
            None => break,
            Some(Part::Text(t)) => out.extend_from_slice(t.as_bytes()),
            Some(Part::Hits(reader)) if reader.remaining() == 0 => {}
            Some(Part::Hits(mut reader)) => {
                let (reader, chunk) = s
                    .searches
                    .spawn(move || {
                        let res = reader.read_chunk(&mut out, CHUNK_BYTES);
                        res.map(|_| (reader, out))
                    })
                    .await??;
                out = chunk;
                parts.push_front(Part::Hits(reader));
            }
        }
    }
    Ok(out)
}

/// A JSON answer written as the client takes it, in memory bounded by one chunk. An answer
/// that fits in one chunk leaves whole, in one write: streamed, its end-of-body marker went
/// as a second small write, which Nagle's algorithm held until the client's delayed ACK,
/// 40 ms later. A failure after the first chunk can no longer change the status, so it
/// cuts the body short (the client sees incomplete JSON) and is logged and counted.
async fn streamed(s: &AppState, parts: Vec<Part>) -> Response {
    let mut parts = VecDeque::from(parts);
    let json = [(CONTENT_TYPE, "application/json")];
    let first = match next_chunk(&mut parts, s).await {
        Ok(first) => first,
        Err(e) => {
            AnswerFailed {
                error: &e,
                cut_short: false,
            }
            .emit(s.store.metrics());
            return e.into_response();
        }
    };
    if parts.is_empty() {
        return (json, first).into_response();
    }
    let rest = futures_util::stream::unfold((parts, s.clone()), |(mut parts, s)| async move {
        match next_chunk(&mut parts, &s).await {
            Ok(chunk) if chunk.is_empty() => None,
            Ok(chunk) => Some((Ok(Bytes::from(chunk)), (parts, s))),
            Err(e) => {
                AnswerFailed {
                    error: &e,
                    cut_short: true,
                }
                .emit(s.store.metrics());
                parts.clear();
                Some((Err(std::io::Error::other(e.to_string())), (parts, s)))
            }
        }
    });
    let first = futures_util::stream::once(async move { Ok(Bytes::from(first)) });
    (json, Body::from_stream(first.chain(rest))).into_response()
}

fn json_text<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// `{"total":N,"hits":[...],"took_ms":T,"cursor":"..."}`, streamed.
async fn search(State(s): State<AppState>, Params(p): Params<SearchParams>) -> Result<Response> {
    let range = time_range(p.start.as_deref(), p.end.as_deref())?;
    check_max("limit", p.limit, MAX_LIMIT)?;
    let started = Instant::now();
    let cut = p.max_message_bytes;
    let r = blocking(&s, move |st, budget| {
        st.search(&p.q, range, p.order, p.limit, p.cursor.as_deref(), budget)
    })
    .await?;
    let mut end = format!("],\"took_ms\":{}", ms(started));
    if let Some(c) = &r.cursor {
        end.push_str(&format!(",\"cursor\":{}", json_text(c)));
    }
    end.push('}');
    Ok(streamed(
        &s,
        vec![
            Part::Text(format!("{{\"total\":{},\"hits\":[", r.total)),
            Part::Hits(r.hits.reader(cut)),
            Part::Text(end),
        ],
    )
    .await)
}

async fn histogram(
    State(s): State<AppState>,
    Params(p): Params<HistogramParams>,
) -> Result<Json<HistogramResponse>> {
    let range = time_range(p.start.as_deref(), p.end.as_deref())?;
    check_max("buckets", p.buckets, MAX_BUCKETS)?;
    if p.buckets == 0 {
        return Err(Error::BadRequest("`buckets` must be at least 1".into()));
    }
    let started = Instant::now();
    let h = blocking(&s, move |st, b| st.histogram(&p.q, range, p.buckets, b)).await?;
    Ok(Json(HistogramResponse {
        interval_ms: h.interval_micros / 1000,
        total: h.buckets.iter().map(|b| b.1).sum(),
        buckets: h
            .buckets
            .into_iter()
            .map(|(ts, count)| Bucket {
                ts: format_micros(ts),
                count,
            })
            .collect(),
        took_ms: ms(started),
        partial: None,
    }))
}

async fn terms(
    State(s): State<AppState>,
    Params(p): Params<TermsParams>,
) -> Result<Json<TermsResponse>> {
    let range = time_range(p.start.as_deref(), p.end.as_deref())?;
    check_max("size", p.size, MAX_TERMS)?;
    let started = Instant::now();
    let field = p.field.clone();
    let t = blocking(&s, move |st, b| st.terms(&p.field, &p.q, range, p.size, b)).await?;
    Ok(Json(TermsResponse {
        field,
        values: t
            .values
            .into_iter()
            .map(|(value, count)| TermCount { value, count })
            .collect(),
        other: t.other,
        missing: t.missing,
        took_ms: ms(started),
        approximate: false,
        partial: None,
    }))
}

/// A record id in any of the forms of [`LocalId`]: a hit's numeric `_id`, or a key-based
/// form that every replica of the group can answer.
fn parse_id(id: &str) -> Result<LocalId> {
    id.parse().map_err(|e: sawmill_record::api::BadId| {
        Error::BadRequest(format!(
            "{e}: give a hit's `_id`, `s~SEQ~SRC`, `d~KEY` or `r~REPLICA~ID`"
        ))
    })
}

/// `{"anchor":{...},"before":[...],"after":[...],"took_ms":T}`, streamed.
async fn context(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Params(p): Params<ContextParams>,
) -> Result<Response> {
    let id = parse_id(&id)?;
    check_max("before", p.before, MAX_LIMIT)?;
    check_max("after", p.after, MAX_LIMIT)?;
    let started = Instant::now();
    let cut = p.max_message_bytes;
    let me = s.store.replica().to_string();
    let c = blocking(&s, move |st, b| {
        let rid = st.resolve(&id, &me, b)?;
        st.context(rid, p.before, p.after, p.scope, b)
    })
    .await?;
    let mut anchor = b"{\"anchor\":".to_vec();
    c.anchor.write_json(&mut anchor, cut);
    anchor.extend_from_slice(b",\"before\":[");
    Ok(streamed(
        &s,
        vec![
            Part::Text(String::from_utf8(anchor).unwrap_or_default()),
            Part::Hits(c.before.reader(cut)),
            Part::Text("],\"after\":[".into()),
            Part::Hits(c.after.reader(cut)),
            Part::Text(format!("],\"took_ms\":{}}}", ms(started))),
        ],
    )
    .await)
}

/// `{"id":"...","total":N,"hits":[...],"took_ms":T}`, streamed.
async fn trace(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Params(p): Params<TraceParams>,
) -> Result<Response> {
    check_max("limit", p.limit, MAX_TRACE_LIMIT)?;
    let started = Instant::now();
    let key = id.clone();
    let (total, hits) = blocking(&s, move |st, b| st.trace(&key, p.limit, b)).await?;
    Ok(streamed(
        &s,
        vec![
            Part::Text(format!(
                "{{\"id\":{},\"total\":{total},\"hits\":[",
                json_text(&id)
            )),
            Part::Hits(hits.reader(p.max_message_bytes)),
            Part::Text(format!("],\"took_ms\":{}}}", ms(started))),
        ],
    )
    .await)
}

/// Records are sent as they become searchable; a round that finds more than this many
/// sends the first of them and says how many it skipped (a browser cannot show more).
const TAIL_ROUND: usize = 1000;

/// A live tail between events: what it has to send, and where the next round starts.
struct Tailing {
    s: AppState,
    query: Arc<dyn Query>,
    searchable: watch::Receiver<u64>,
    /// The next round looks at records from this log position on.
    from: u64,
    pending: VecDeque<Event>,
    /// A round's hits not yet read: read a chunk at a time, as the events go out.
    reading: Option<HitReader>,
    cut: Option<usize>,
}

impl Tailing {
    /// Reads the next chunk of a round's hits into events.
    async fn read_events(&mut self, reader: HitReader) {
        let cut = self.cut;
        let res = self
            .s
            .searches
            .spawn(move || {
                let mut reader = reader;
                let mut events = Vec::new();
                let mut bytes = 0;
                while bytes < CHUNK_BYTES {
                    let Some(hit) = reader.next_hit()? else { break };
                    let mut out = Vec::new();
                    hit.write_json(&mut out, cut);
                    bytes += out.len();
                    events.push(Event::default().data(String::from_utf8_lossy(&out)));
                }
                Ok((reader, events))
            })
            .await
            .and_then(|r| r);
        match res {
            Ok((reader, events)) => {
                self.reading = Some(reader);
                self.pending.extend(events);
            }
            Err(e) => {
                self.pending
                    .push_back(Event::default().event("error").data(e.to_string()));
            }
        }
    }

    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some(ev);
            }
            if let Some(reader) = self.reading.take().filter(|r| r.remaining() > 0) {
                self.read_events(reader).await;
                continue;
            }
            let mut shutdown = self.s.shutdown.clone();
            if *shutdown.borrow() {
                return None;
            }
            tokio::select! {
                changed = self.searchable.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                _ = shutdown.changed() => return None,
            }
            let upto = *self.searchable.borrow_and_update();
            if upto <= self.from {
                continue;
            }
            let (q, from) = (self.query.clone(), self.from);
            let res = blocking(&self.s, move |st, b| {
                st.since(q.as_ref(), from, upto, TAIL_ROUND, b)
            })
            .await;
            match res {
                Ok((total, hits)) => {
                    self.from = upto;
                    if total > hits.len() as u64 {
                        self.pending.push_back(
                            Event::default()
                                .event("skipped")
                                .data((total - hits.len() as u64).to_string()),
                        );
                    }
                    self.reading = Some(hits.reader(self.cut));
                }
                Err(e) => {
                    // A round past the search timeout would only grow and time out again:
                    // it is given up, and the error says so. Other failures (a full search
                    // queue) are tried again with the next commit.
                    if matches!(e, Error::SearchTimeout { .. }) {
                        self.from = upto;
                    }
                    self.pending
                        .push_back(Event::default().event("error").data(e.to_string()));
                }
            }
        }
    }
}

async fn tail(
    State(s): State<AppState>,
    Params(p): Params<TailParams>,
) -> Result<Sse<impl Stream<Item = std::result::Result<Event, Infallible>>>> {
    let query: Arc<dyn Query> = Arc::from(s.searcher.parse_query(&p.q)?);
    let mut searchable = s.store.subscribe();
    let from = *searchable.borrow_and_update();
    let state = Tailing {
        s,
        query,
        searchable,
        from,
        pending: VecDeque::from([Event::default().comment("connected")]),
        reading: None,
        cut: p.max_message_bytes,
    };
    let stream = futures_util::stream::unfold(state, |mut t| async move {
        let ev = t.next_event().await?;
        Some((Ok(ev), t))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Reads and decodes a body within the limits, counting it.
async fn body_bytes(s: &AppState, headers: &HeaderMap, body: Body) -> Result<Vec<u8>> {
    s.store.metrics().add(M::IngestRequests, 1);
    let limit = s.config.max_body_bytes;
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Error::TooLarge {
            what: "request body",
            limit,
        });
    }
    let raw = tokio::time::timeout(s.config.body_timeout, read_limited(body, limit))
        .await
        .map_err(|_| Error::BodyTimeout(s.config.body_timeout))??;
    BodyReceived { bytes: raw.len() }.emit(s.store.metrics());
    let encoding = headers
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let decoded = tokio::task::spawn_blocking(move || decode(encoding.as_deref(), raw, limit))
        .await
        // As for parsing: a body that panics the decoder is refused, never retried.
        .map_err(|e| Error::BadEncoding(e.to_string()))??;
    BodyDecoded {
        bytes: decoded.len(),
    }
    .emit(s.store.metrics());
    Ok(decoded)
}

/// Every ingest route: read the body, hand it to the ingest service, answer in the route's
/// form; a failed request is counted.
async fn ingest_route(s: &AppState, headers: &HeaderMap, body: Body, format: Format) -> Response {
    // A bulk answer's `took` counts from here, reading and decoding the body included.
    let started = Instant::now();
    let res = async {
        let decoded = body_bytes(s, headers, body).await?;
        let max = s.config.max_message_bytes;
        ingest::ingest(&s.store, decoded, format, max, started).await
    }
    .await;
    match res {
        Ok(IngestReport::Ndjson(r)) => Json(r).into_response(),
        Ok(IngestReport::Bulk(r)) => Json(r).into_response(),
        Err(e) => {
            s.store.metrics().add(M::IngestErrors, 1);
            e.into_response()
        }
    }
}

async fn ingest(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    ingest_route(&s, &headers, body, Format::Ndjson).await
}

async fn bulk(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let index = "_default".to_string();
    ingest_route(&s, &headers, body, Format::Bulk { index }).await
}

async fn bulk_index(
    State(s): State<AppState>,
    Path(index): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    ingest_route(&s, &headers, body, Format::Bulk { index }).await
}

/// Runs a repair read on a blocking thread, at most [`REPAIR_READS`] at once.
async fn repair_read<T: Send + 'static>(
    s: &AppState,
    f: impl FnOnce(&Store) -> Result<T> + Send + 'static,
) -> Result<T> {
    let _permit = s
        .repair
        .permits
        .acquire()
        .await
        .map_err(|_| Error::ShuttingDown)?;
    let store = s.store.clone();
    tokio::task::spawn_blocking(move || f(&store)).await?
}

fn ndjson(body: Vec<u8>) -> Response {
    ([(CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

/// [`paths::REPAIR_HOLDINGS`]: what this replica holds, for its peers' repair.
async fn repair_holdings(
    State(s): State<AppState>,
    Params(p): Params<RepairHoldingsParams>,
) -> Result<Json<Holdings>> {
    Ok(Json(
        repair_read(&s, move |st| repair::holdings(st, &p)).await?,
    ))
}

/// [`paths::REPAIR_RECORDS`]: one sender's stored records in a `_seq` range, NDJSON.
async fn repair_records(
    State(s): State<AppState>,
    Params(p): Params<RepairRecordsParams>,
) -> Result<Response> {
    Ok(ndjson(
        repair_read(&s, move |st| repair::records(st, &p)).await?,
    ))
}

/// [`paths::REPAIR_KEYS`]: a page of one partition's `_key`s.
async fn repair_keys(
    State(s): State<AppState>,
    Params(p): Params<RepairKeysParams>,
) -> Result<Json<RepairKeys>> {
    Ok(Json(repair_read(&s, move |st| repair::keys(st, &p)).await?))
}

/// [`paths::REPAIR_BY_KEY`]: the stored records of a list of `_key`s, NDJSON.
async fn repair_by_key(
    State(s): State<AppState>,
    Params(peer): Params<RepairPeerParams>,
    body: Body,
) -> Result<Response> {
    // Read here rather than by axum's extractor, whose own 2 MB limit answers in plain text:
    // the limit is the contract's, the one the client keeps to.
    let limit = MAX_REPAIR_BY_KEY_BODY;
    let body = tokio::time::timeout(s.config.body_timeout, read_limited(body, limit as u64))
        .await
        .map_err(|_| Error::BodyTimeout(s.config.body_timeout))?
        .map_err(|e| match e {
            Error::TooLarge { .. } => Error::KeysTooLarge(limit),
            e => e,
        })?;
    let req: RepairByKey = serde_json::from_slice(&body)
        .map_err(|e| Error::BadRequest(format!("the body is not a key list: {e}")))?;
    Ok(ndjson(
        repair_read(&s, move |st| repair::by_key(st, &req, &peer)).await?,
    ))
}

/// 200 while all is well; 503 with the reason once an operator must act.
async fn healthz(State(s): State<AppState>) -> Response {
    let searchable_position = *s.store.subscribe().borrow();
    let problem = s.store.problem();
    let status = match problem {
        None => axum::http::StatusCode::OK,
        Some(_) => axum::http::StatusCode::SERVICE_UNAVAILABLE,
    };
    let health = Health {
        status: if problem.is_none() { "ok" } else { "degraded" }.into(),
        problem,
        searchable_position,
        replica: s.store.replica().to_string(),
        group: s.store.group().to_string(),
        lag_records: s.store.repair_status().lag_records(),
        catching_up: s.store.repair_status().catching_up(),
        store: s.store.archive().map(|a| a.health()),
    };
    (status, Json(health)).into_response()
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    let mut text = s.store.metrics().render();
    s.config.access.render_metrics("sawmill_indexer", &mut text);
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// Elasticsearch clients (Vector, Filebeat) ask for the server's version before shipping.
async fn root() -> Json<Value> {
    Json(json!({
        "name": "sawmill",
        "cluster_name": "sawmill",
        "version": {"number": "8.11.0", "build_flavor": "default", "lucene_version": "9.8.0"},
        "tagline": "You Know, for Search"
    }))
}

async fn not_found(uri: axum::http::Uri) -> Error {
    Error::NotFound(format!("route `{}`", uri.path()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    /// The API over a store in a fresh directory that commits every 10 ms.
    pub(crate) fn app(name: &str) -> (Router, Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("sawmill-api-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cfg = crate::StoreConfig::new(&dir);
        cfg.commit_interval = Duration::from_millis(10);
        cfg.writer_threads = 1;
        cfg.writer_memory = 16 << 20;
        let store = Store::open(cfg).unwrap();
        let (_tx, rx) = watch::channel(false);
        (router(store.clone(), ApiConfig::default(), rx), store, dir)
    }

    async fn call(app: &Router, req: Request<Body>) -> (StatusCode, Value) {
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn get(uri: &str) -> Request<Body> {
        Request::get(uri).body(Body::empty()).unwrap()
    }

    /// Repair routes answer bad parameters 400 in the API's error shape, a request meant
    /// for another replica 409, and a `_seq` range of any width costs at most `limit`
    /// records and reaches past a gap.
    #[tokio::test(flavor = "multi_thread")]
    async fn repair_routes_refuse_bad_input_and_bound_their_answers() {
        let (app, store, dir) = app("repair");
        let body: String = (0..30)
            .chain([1000])
            .map(|i| format!("{{\"message\":\"m{i}\",\"_src\":\"s\",\"_seq\":{i}}}\n"))
            .collect();
        let (status, _) = call(
            &app,
            Request::post(paths::INGEST).body(Body::from(body)).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let lines = |uri: String| {
            let app = app.clone();
            async move {
                let resp = app.oneshot(get(&uri)).await.unwrap();
                let bytes = resp.into_body().collect().await.unwrap().to_bytes();
                let text = String::from_utf8(bytes.to_vec()).unwrap();
                text.lines()
                    .map(|l| {
                        serde_json::from_str::<Value>(l).unwrap()["_seq"]
                            .as_u64()
                            .unwrap()
                    })
                    .collect::<Vec<u64>>()
            }
        };
        let mut all = Vec::new();
        for _ in 0..200 {
            all = lines(format!(
                "{}?src=s&from=0&to=100&limit=100",
                paths::REPAIR_RECORDS
            ))
            .await;
            if all.len() == 30 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(all, (0..30).collect::<Vec<u64>>());
        let wide = |from: u64| {
            format!(
                "{}?src=s&from={from}&to={}&limit=5",
                paths::REPAIR_RECORDS,
                u64::MAX
            )
        };
        assert_eq!(lines(wide(3)).await, vec![3, 4, 5, 6, 7]);
        assert_eq!(lines(wide(30)).await, vec![1000]);
        let mine = store.replica().to_string();
        let ok = format!("{}&replica={mine}", wide(28));
        assert_eq!(lines(ok).await, vec![28, 29, 1000]);
        for uri in [
            format!("{}&replica=other", wide(0)),
            format!("{}?start=0&replica=other", paths::REPAIR_KEYS),
        ] {
            let (status, v) = call(&app, get(&uri)).await;
            assert_eq!(status, StatusCode::CONFLICT, "{uri}: {v}");
            assert!(v["error"].as_str().unwrap().contains(&mine), "{v}");
        }
        let req = Request::post(format!("{}?replica=other", paths::REPAIR_BY_KEY))
            .body(Body::from(r#"{"start":0,"keys":["k"]}"#))
            .unwrap();
        assert_eq!(call(&app, req).await.0, StatusCode::CONFLICT);
        // Key lists up to the contract's limit are taken (past axum's default 2 MB), larger
        // ones refused in the API's error shape.
        for (size, want) in [
            (MAX_REPAIR_BY_KEY_BODY - 100, StatusCode::OK),
            (MAX_REPAIR_BY_KEY_BODY + 1, StatusCode::PAYLOAD_TOO_LARGE),
        ] {
            let key = "k".repeat(size - r#"{"start":0,"keys":[""]}"#.len());
            let body = format!(r#"{{"start":0,"keys":["{key}"]}}"#);
            let req = Request::post(paths::REPAIR_BY_KEY).body(Body::from(body));
            let (status, v) = call(&app, req.unwrap()).await;
            assert_eq!(status, want, "{v}");
            assert!(want == StatusCode::OK || v["error"].is_string(), "{v}");
        }
        for bad in [
            "?src=s",
            "?src=s&from=0&to=1&limit=0",
            "?src=s&from=0&to=1&limit=10001",
            "?src=s&from=5&to=1",
            "?src=s&from=0&to=1&nope=1",
        ] {
            let (status, v) = call(&app, get(&format!("{}{bad}", paths::REPAIR_RECORDS))).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {v}");
            assert!(v["error"].is_string(), "{bad}: {v}");
        }
        let req = Request::post(paths::REPAIR_BY_KEY)
            .body(Body::from("nope"))
            .unwrap();
        let (status, v) = call(&app, req).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        let (status, v) = call(&app, get(paths::REPAIR_HOLDINGS)).await;
        assert_eq!(status, StatusCode::OK);
        let ranges = json!([{"src": "s", "ranges": [[0, 29], [1000, 1000]]}]);
        assert_eq!(v["sources"], ranges);
        let (status, v) = call(&app, get(&format!("{}?start=0", paths::REPAIR_KEYS))).await;
        assert_eq!((status, v), (StatusCode::OK, json!({"keys": []})));
        store.shutdown();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn ingested_record_is_found_by_search() {
        let (app, store, dir) = app("roundtrip");
        let req = Request::post("/api/v1/ingest")
            .body(Body::from(
                "{\"message\":\"hello <b>world</b>\",\"service\":\"api\"}\n",
            ))
            .unwrap();
        let (status, v) = call(&app, req).await;
        assert_eq!(
            (status, v),
            (
                StatusCode::OK,
                json!({"accepted": 1, "duplicates": 0, "rejected": []})
            )
        );
        let mut found = Value::Null;
        for _ in 0..200 {
            let (status, v) = call(&app, get("/api/v1/search?q=service:api")).await;
            assert_eq!(status, StatusCode::OK);
            if v["total"] == 1 {
                found = v;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(found["hits"][0]["message"], "hello <b>world</b>", "{found}");
        store.shutdown();
        let _ = std::fs::remove_dir_all(dir);
    }

    // Regression: `X AND NOT Y` matched nothing (tantivy read it under conjunction by
    // default as a lone negation); `X NOT Y` and `X -Y` worked.
    #[tokio::test(flavor = "multi_thread")]
    async fn not_excludes_in_every_spelling() {
        let (app, store, dir) = app("not");
        let body = "{\"message\":\"alpha one\",\"service\":\"auth\"}\n\
                    {\"message\":\"alpha two\",\"service\":\"api\"}\n\
                    {\"message\":\"beta three\",\"service\":\"api\"}\n";
        let req = Request::post("/api/v1/ingest")
            .body(Body::from(body))
            .unwrap();
        assert_eq!(call(&app, req).await.0, StatusCode::OK);
        let total = |q: &str| {
            let app = app.clone();
            let uri = format!(
                "/api/v1/search?q={}",
                q.replace(' ', "%20").replace('"', "%22")
            );
            async move { call(&app, get(&uri)).await.1["total"].clone() }
        };
        for _ in 0..200 {
            if total("*").await == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for (q, want) in [
            ("alpha AND NOT service:auth", 1),
            ("alpha NOT service:auth", 1),
            ("alpha -service:auth", 1),
            ("* AND NOT service:auth", 2),
            ("NOT service:auth", 2),
            ("(alpha OR beta) AND NOT service:\"auth\"", 2),
            ("alpha AND NOT (service:auth OR two)", 0),
            ("service:api AND NOT beta", 1),
        ] {
            assert_eq!(total(q).await, want, "{q}");
        }
        store.shutdown();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn errors_come_back_in_the_api_shape() {
        let (app, store, dir) = app("errors");
        let (status, v) = call(&app, get("/api/v1/search?q=(")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(v["status"], 400);
        assert!(
            v["error"].as_str().unwrap().contains("does not parse"),
            "{v}"
        );
        let (status, v) = call(&app, get("/no/such/route")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(v["error"], "route `/no/such/route` not found");
        let req = Request::post("/api/v1/ingest")
            .header("content-encoding", "br")
            .body(Body::from("x"))
            .unwrap();
        let (status, _) = call(&app, req).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        store.shutdown();
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Ingests `body` and waits until `n` records are searchable.
    async fn ingest_and_wait(app: &Router, body: &str, n: u64) {
        let req = Request::post(paths::INGEST)
            .body(Body::from(body.to_string()))
            .unwrap();
        assert_eq!(call(app, req).await.0, StatusCode::OK);
        for _ in 0..500 {
            if call(app, get("/api/v1/search?q=*")).await.1["total"] == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{n} records never became searchable");
    }

    /// The raw body of a GET, which must answer 200.
    async fn text(app: &Router, uri: &str) -> String {
        let resp = app.clone().oneshot(get(uri)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{uri}");
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    // The streamed answers are written as text, piece by piece: these read them back as the
    // contract's types, so the text and the contract cannot drift apart.
    #[tokio::test(flavor = "multi_thread")]
    async fn streamed_answers_read_back_as_the_contract_types() {
        use sawmill_record::api::{ContextResponse, SearchResponse, TraceResponse};
        use sawmill_record::Severity;

        let (app, store, dir) = app("streamed");
        let body = "{\"ts\":\"2026-11-30T07:00:01Z\",\"message\":\"one\",\"host\":\"h\",\"service\":\"api\",\"severity\":\"ERROR\",\"trace_id\":\"t1\",\"_src\":\"s\",\"_seq\":1}\n\
                    {\"ts\":\"2026-11-30T07:00:02Z\",\"message\":\"two\",\"host\":\"h\",\"service\":\"api\",\"request_id\":\"t1\",\"pid\":7}\n\
                    {\"ts\":\"2026-11-30T07:00:03Z\",\"message\":\"three\",\"host\":\"h\",\"service\":\"api\",\"fields\":{\"k\":1}}\n";
        ingest_and_wait(&app, body, 3).await;

        let page: SearchResponse =
            serde_json::from_str(&text(&app, "/api/v1/search?q=*&limit=2").await).unwrap();
        assert_eq!(page.total, 3);
        let messages: Vec<&str> = page.hits.iter().map(|h| &*h.record.message).collect();
        assert_eq!(messages, ["three", "two"]);
        assert_eq!(page.hits[0].record.fields["k"], 1);
        assert_eq!(page.hits[1].record.pid, Some(7));
        let cursor = page.cursor.expect("a full page has a cursor");
        let uri = format!("/api/v1/search?q=*&limit=2&cursor={cursor}");
        let rest: SearchResponse = serde_json::from_str(&text(&app, &uri).await).unwrap();
        assert_eq!(rest.hits.len(), 1);
        let first = &rest.hits[0];
        assert_eq!(first.record.severity, Some(Severity::Err));
        assert_eq!(
            first.record.key.as_ref().map(|k| (&*k.src, k.seq)),
            Some(("s", 1))
        );
        assert_eq!(rest.cursor, None);

        let cut: SearchResponse =
            serde_json::from_str(&text(&app, "/api/v1/search?q=three&max_message_bytes=2").await)
                .unwrap();
        assert_eq!(
            (&*cut.hits[0].record.message, cut.hits[0].message_cut),
            ("th", true)
        );

        let uri = format!("/api/v1/context/{}?before=5&after=5", page.hits[1].id);
        let c: ContextResponse = serde_json::from_str(&text(&app, &uri).await).unwrap();
        assert_eq!(c.anchor.record.message, "two");
        assert_eq!(c.anchor.id, page.hits[1].id);
        let before: Vec<&str> = c.before.iter().map(|h| &*h.record.message).collect();
        let after: Vec<&str> = c.after.iter().map(|h| &*h.record.message).collect();
        assert_eq!((before, after), (vec!["one"], vec!["three"]));

        let t: TraceResponse = serde_json::from_str(&text(&app, "/api/v1/trace/t1").await).unwrap();
        assert_eq!((t.id.as_str(), t.total), ("t1", 2));
        let messages: Vec<&str> = t.hits.iter().map(|h| &*h.record.message).collect();
        assert_eq!(messages, ["one", "two"]);
        store.shutdown();
        let _ = std::fs::remove_dir_all(dir);
    }

    // Links that survive a failover: the key-based id forms name a record on every replica.
    #[tokio::test(flavor = "multi_thread")]
    async fn context_finds_a_record_by_its_key() {
        use sawmill_record::api::ContextResponse;

        let (app, store, dir) = app("by_key");
        let body = "{\"ts\":\"2026-11-30T07:00:01Z\",\"message\":\"one\",\"host\":\"h\",\"_src\":\"s~x\",\"_seq\":1}\n\
                    {\"ts\":\"2026-11-30T07:00:02Z\",\"message\":\"two\",\"host\":\"h\",\"_src\":\"s~x\",\"_seq\":2}\n\
                    {\"ts\":\"2026-11-30T07:00:03Z\",\"message\":\"three\",\"host\":\"h\",\"_src\":\"t\",\"_seq\":2}\n\
                    {\"ts\":\"2026-11-30T07:00:04Z\",\"message\":\"four\",\"host\":\"h\",\"_id\":\"doc-1\"}\n";
        ingest_and_wait(&app, body, 4).await;
        let anchor = |uri: String| {
            let app = app.clone();
            async move {
                let c: ContextResponse = serde_json::from_str(&text(&app, &uri).await).unwrap();
                c.anchor.record.message.to_string()
            }
        };
        let ctx = |id: &str| {
            format!(
                "/api/v1/context/{}?before=1&after=1",
                paths::path_with(paths::CONTEXT, id)
                    .rsplit('/')
                    .next()
                    .unwrap()
            )
        };
        assert_eq!(anchor(ctx("s~2~s~x")).await, "two");
        assert_eq!(anchor(ctx("s~2~t")).await, "three");
        assert_eq!(anchor(ctx("d~doc-1")).await, "four");
        let me = store.replica().to_string();
        let any: serde_json::Value =
            serde_json::from_str(&text(&app, "/api/v1/search?q=one").await).unwrap();
        let rid = any["hits"][0]["_id"].as_str().unwrap().to_string();
        assert_eq!(anchor(ctx(&format!("r~{me}~{rid}"))).await, "one");

        let (status, v) = call(&app, get(&ctx("s~3~s~x"))).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
        let (status, v) = call(&app, get(&ctx(&format!("r~other~{rid}")))).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("only replica `other` knows"),
            "{v}"
        );
        let (status, v) = call(&app, get(&ctx("s~x~y"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        store.shutdown();
        let _ = std::fs::remove_dir_all(dir);
    }
}
