//! The HTTP API of DESIGN.md: handlers parse the request, call the store, shape the answer.

use std::convert::Infallible;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::Stream;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tantivy::query::Query;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::body::{decode, ndjson_objects, read_limited};
use crate::collectors::Order;
use crate::error::{Error, Result};
use crate::metrics::add_duration;
use crate::record::Record;
use crate::search::{Hit, Scope, TimeRange};
use crate::store::{Outcome, Store};
use crate::times::{format_rfc3339, parse_instant};

/// Limits of the HTTP layer.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Largest accepted request body, compressed and decompressed alike.
    pub max_body_bytes: u64,
    /// Longest a client may take to send a request head; the connection is then closed.
    pub header_timeout: Duration,
    /// Longest a client may take to send an ingest body; it is then answered 408.
    pub body_timeout: Duration,
    /// Longest a stop waits for requests in flight before dropping their connections.
    pub stop_timeout: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_body_bytes: 64 << 20,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    store: Store,
    config: ApiConfig,
    shutdown: watch::Receiver<bool>,
}

/// The indexer's routes. `shutdown` turning true ends live tails, so a graceful stop
/// does not wait on them.
pub fn router(store: Store, config: ApiConfig, shutdown: watch::Receiver<bool>) -> Router {
    Router::new()
        .route("/api/v1/ingest", post(ingest))
        .route("/_bulk", post(bulk))
        .route("/{index}/_bulk", post(bulk_index))
        .route("/api/v1/search", get(search))
        .route("/api/v1/histogram", get(histogram))
        .route("/api/v1/terms", get(terms))
        .route("/api/v1/context/{id}", get(context))
        .route("/api/v1/trace/{id}", get(trace))
        .route("/api/v1/tail", get(tail))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/", get(root))
        .fallback(not_found)
        .with_state(AppState {
            store,
            config,
            shutdown,
        })
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

fn default_limit() -> usize {
    100
}
fn default_buckets() -> usize {
    60
}
fn default_size() -> usize {
    10
}
fn default_neighbours() -> usize {
    10
}
fn default_trace_limit() -> usize {
    10_000
}

const MAX_LIMIT: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchParams {
    #[serde(default)]
    q: String,
    start: Option<String>,
    end: Option<String>,
    #[serde(default = "default_limit")]
    limit: usize,
    #[serde(default)]
    order: Order,
    cursor: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistogramParams {
    #[serde(default)]
    q: String,
    start: Option<String>,
    end: Option<String>,
    #[serde(default = "default_buckets")]
    buckets: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TermsParams {
    field: String,
    #[serde(default)]
    q: String,
    start: Option<String>,
    end: Option<String>,
    #[serde(default = "default_size")]
    size: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContextParams {
    #[serde(default = "default_neighbours")]
    before: usize,
    #[serde(default = "default_neighbours")]
    after: usize,
    #[serde(default)]
    scope: Scope,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TraceParams {
    #[serde(default = "default_trace_limit")]
    limit: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TailParams {
    #[serde(default)]
    q: String,
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

/// Runs a search off the async threads, counting it.
async fn blocking<T: Send + 'static>(
    s: &AppState,
    f: impl FnOnce(&Store) -> Result<T> + Send + 'static,
) -> Result<T> {
    let store = s.store.clone();
    let started = Instant::now();
    let res = tokio::task::spawn_blocking(move || f(&store))
        .await
        .unwrap_or_else(|e| {
            Err(Error::Io {
                path: Default::default(),
                source: std::io::Error::other(e.to_string()),
            })
        });
    let m = s.store.metrics();
    m.searches.fetch_add(1, Relaxed);
    add_duration(&m.search_micros, started.elapsed());
    if res.is_err() {
        m.search_errors.fetch_add(1, Relaxed);
    }
    res
}

fn hits_json(hits: &[Hit]) -> Vec<Box<RawValue>> {
    hits.iter().map(Hit::to_json).collect()
}

fn ms(started: Instant) -> u64 {
    started.elapsed().as_millis() as u64
}

#[derive(Serialize)]
struct SearchBody {
    total: u64,
    hits: Vec<Box<RawValue>>,
    took_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    cursor: Option<String>,
}

async fn search(
    State(s): State<AppState>,
    Params(p): Params<SearchParams>,
) -> Result<Json<SearchBody>> {
    let range = time_range(p.start.as_deref(), p.end.as_deref())?;
    check_max("limit", p.limit, MAX_LIMIT)?;
    let started = Instant::now();
    let r = blocking(&s, move |st| {
        st.search(&p.q, range, p.order, p.limit, p.cursor.as_deref())
    })
    .await?;
    Ok(Json(SearchBody {
        total: r.total,
        hits: hits_json(&r.hits),
        took_ms: ms(started),
        cursor: r.cursor,
    }))
}

async fn histogram(
    State(s): State<AppState>,
    Params(p): Params<HistogramParams>,
) -> Result<Json<Value>> {
    let range = time_range(p.start.as_deref(), p.end.as_deref())?;
    check_max("buckets", p.buckets, 10_000)?;
    if p.buckets == 0 {
        return Err(Error::BadRequest("`buckets` must be at least 1".into()));
    }
    let started = Instant::now();
    let h = blocking(&s, move |st| st.histogram(&p.q, range, p.buckets)).await?;
    let total: u64 = h.buckets.iter().map(|b| b.1).sum();
    let buckets: Vec<Value> = h
        .buckets
        .iter()
        .map(|(ts, c)| json!({"ts": micros_rfc3339(*ts), "count": c}))
        .collect();
    Ok(Json(
        json!({"interval_ms": h.interval_micros / 1000, "buckets": buckets, "total": total, "took_ms": ms(started)}),
    ))
}

fn micros_rfc3339(us: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(us as i128 * 1000)
        .map(format_rfc3339)
        .unwrap_or_default()
}

async fn terms(State(s): State<AppState>, Params(p): Params<TermsParams>) -> Result<Json<Value>> {
    let range = time_range(p.start.as_deref(), p.end.as_deref())?;
    check_max("size", p.size, 1000)?;
    let started = Instant::now();
    let field = p.field.clone();
    let t = blocking(&s, move |st| st.terms(&p.field, &p.q, range, p.size)).await?;
    let values: Vec<Value> = t
        .values
        .iter()
        .map(|(v, c)| json!({"value": v, "count": c}))
        .collect();
    Ok(Json(
        json!({"field": field, "values": values, "other": t.other, "missing": t.missing, "took_ms": ms(started)}),
    ))
}

fn parse_id(id: &str) -> Result<u64> {
    id.parse()
        .map_err(|_| Error::BadRequest(format!("`{id}` is not a record id (the `_id` of a hit)")))
}

#[derive(Serialize)]
struct ContextBody {
    anchor: Box<RawValue>,
    before: Vec<Box<RawValue>>,
    after: Vec<Box<RawValue>>,
    took_ms: u64,
}

async fn context(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Params(p): Params<ContextParams>,
) -> Result<Json<ContextBody>> {
    let rid = parse_id(&id)?;
    check_max("before", p.before, MAX_LIMIT)?;
    check_max("after", p.after, MAX_LIMIT)?;
    let started = Instant::now();
    let c = blocking(&s, move |st| st.context(rid, p.before, p.after, p.scope)).await?;
    Ok(Json(ContextBody {
        anchor: c.anchor.to_json(),
        before: hits_json(&c.before),
        after: hits_json(&c.after),
        took_ms: ms(started),
    }))
}

#[derive(Serialize)]
struct TraceBody {
    id: String,
    total: u64,
    hits: Vec<Box<RawValue>>,
    took_ms: u64,
}

async fn trace(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Params(p): Params<TraceParams>,
) -> Result<Json<TraceBody>> {
    check_max("limit", p.limit, 100_000)?;
    let started = Instant::now();
    let key = id.clone();
    let (total, hits) = blocking(&s, move |st| st.trace(&key, p.limit)).await?;
    Ok(Json(TraceBody {
        id,
        total,
        hits: hits_json(&hits),
        took_ms: ms(started),
    }))
}

/// Records are sent as they become searchable; a round that finds more than this many
/// sends the first of them and says how many it skipped (a browser cannot show more).
const TAIL_ROUND: usize = 1000;

async fn tail(
    State(s): State<AppState>,
    Params(p): Params<TailParams>,
) -> Result<Sse<impl Stream<Item = std::result::Result<Event, Infallible>>>> {
    let query: Arc<dyn Query> = Arc::from(s.store.parse_query(&p.q)?);
    let mut searchable = s.store.subscribe();
    let from = *searchable.borrow_and_update();
    let state = (
        s,
        query,
        searchable,
        from,
        std::collections::VecDeque::from([Event::default().comment("connected")]),
    );
    let stream = futures_util::stream::unfold(
        state,
        |(s, query, mut searchable, mut from, mut pending)| async move {
            loop {
                if let Some(ev) = pending.pop_front() {
                    return Some((Ok(ev), (s, query, searchable, from, pending)));
                }
                let mut shutdown = s.shutdown.clone();
                if *shutdown.borrow() {
                    return None;
                }
                tokio::select! {
                    changed = searchable.changed() => {
                        if changed.is_err() {
                            return None;
                        }
                    }
                    _ = shutdown.changed() => return None,
                }
                let upto = *searchable.borrow_and_update();
                if upto <= from {
                    continue;
                }
                let q = query.clone();
                let res =
                    blocking(&s, move |st| st.since(q.as_ref(), from, upto, TAIL_ROUND)).await;
                match res {
                    Ok((total, hits)) => {
                        from = upto;
                        if total > hits.len() as u64 {
                            pending.push_back(
                                Event::default()
                                    .event("skipped")
                                    .data((total - hits.len() as u64).to_string()),
                            );
                        }
                        for h in hits {
                            pending.push_back(Event::default().data(h.to_json().get()));
                        }
                    }
                    // The same window is tried again at the next commit.
                    Err(e) => {
                        pending.push_back(Event::default().event("error").data(e.to_string()))
                    }
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[derive(Serialize)]
struct RejectedLine {
    line: usize,
    error: String,
}

#[derive(Serialize)]
struct IngestBody {
    accepted: usize,
    duplicates: usize,
    rejected: Vec<RejectedLine>,
}

/// Reads and decodes a body within the limits, counting bytes.
async fn body_bytes(s: &AppState, headers: &HeaderMap, body: Body) -> Result<Vec<u8>> {
    let m = s.store.metrics();
    m.ingest_requests.fetch_add(1, Relaxed);
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
    m.bytes_received.fetch_add(raw.len() as u64, Relaxed);
    let encoding = headers
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let decoded = tokio::task::spawn_blocking(move || decode(encoding.as_deref(), raw, limit))
        .await
        .unwrap_or_else(|e| Err(Error::BadEncoding(e.to_string())))?;
    m.bytes_decoded.fetch_add(decoded.len() as u64, Relaxed);
    Ok(decoded)
}

/// Retention would remove such a record at once, so it is refused up front, as Loki does.
fn check_age(s: &AppState, r: &Record, now: OffsetDateTime) -> std::result::Result<(), String> {
    if let Some(ret) = s.store.retention() {
        if now
            .checked_sub(time::Duration::seconds(
                ret.as_secs().min(i64::MAX as u64) as i64
            ))
            .is_some_and(|cutoff| r.ts < cutoff)
        {
            return Err(format!(
                "`ts` {} is older than the retention period ({} s)",
                format_rfc3339(r.ts),
                ret.as_secs()
            ));
        }
    }
    Ok(())
}

async fn ingest(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let res = ingest_inner(&s, &headers, body).await;
    count_error(&s, res)
}

fn count_error<T: IntoResponse>(s: &AppState, res: Result<T>) -> Response {
    if res.is_err() {
        s.store.metrics().ingest_errors.fetch_add(1, Relaxed);
    }
    res.into_response()
}

async fn ingest_inner(s: &AppState, headers: &HeaderMap, body: Body) -> Result<Json<IngestBody>> {
    let decoded = body_bytes(s, headers, body).await?;
    let st = s.clone();
    let (records, rejected) = tokio::task::spawn_blocking(move || {
        let now = OffsetDateTime::now_utc();
        let mut records = Vec::new();
        let mut rejected = Vec::new();
        for (line, obj) in ndjson_objects(&decoded) {
            match obj
                .and_then(|o| Record::from_object(o, now))
                .and_then(|r| check_age(&st, &r, now).map(|_| r))
            {
                Ok(r) => records.push(r),
                Err(error) => rejected.push(RejectedLine { line, error }),
            }
        }
        (records, rejected)
    })
    .await
    .map_err(|e| Error::BadRequest(e.to_string()))?;
    let m = s.store.metrics();
    m.records_rejected.fetch_add(rejected.len() as u64, Relaxed);
    let outcomes = s.store.ingest(records).await?;
    let duplicates = outcomes
        .iter()
        .filter(|o| **o == Outcome::Duplicate)
        .count();
    let accepted = outcomes.len() - duplicates;
    m.records_accepted.fetch_add(accepted as u64, Relaxed);
    m.records_duplicate.fetch_add(duplicates as u64, Relaxed);
    Ok(Json(IngestBody {
        accepted,
        duplicates,
        rejected,
    }))
}

async fn bulk(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let res = bulk_inner(&s, "_default", &headers, body).await;
    count_error(&s, res)
}

async fn bulk_index(
    State(s): State<AppState>,
    Path(index): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let res = bulk_inner(&s, &index, &headers, body).await;
    count_error(&s, res)
}

async fn bulk_inner(
    s: &AppState,
    index: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Json<Value>> {
    let started = Instant::now();
    let decoded = body_bytes(s, headers, body).await?;
    let index = index.to_string();
    let (records, items) = tokio::task::spawn_blocking(move || {
        crate::bulk::parse(&decoded, &index, OffsetDateTime::now_utc())
    })
    .await
    .map_err(|e| Error::BadRequest(e.to_string()))?;
    let m = s.store.metrics();
    let outcomes = s.store.ingest(records).await?;
    let duplicates = outcomes
        .iter()
        .filter(|o| **o == Outcome::Duplicate)
        .count();
    m.records_accepted
        .fetch_add((outcomes.len() - duplicates) as u64, Relaxed);
    m.records_duplicate.fetch_add(duplicates as u64, Relaxed);
    let resp = crate::bulk::response(&items, &outcomes, ms(started));
    m.records_rejected
        .fetch_add(items.iter().filter(|i| i.failed()).count() as u64, Relaxed);
    Ok(Json(resp))
}

/// 200 while all is well; 503 with the reason once an operator must act.
async fn healthz(State(s): State<AppState>) -> Response {
    let position = *s.store.subscribe().borrow();
    match s.store.problem() {
        None => Json(json!({"status": "ok", "searchable_position": position})).into_response(),
        Some(problem) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({"status": "degraded", "problem": problem, "searchable_position": position}),
            ),
        )
            .into_response(),
    }
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.store.metrics().render(),
    )
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
mod tests {
    use super::*;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn app(name: &str) -> (Router, Store, std::path::PathBuf) {
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
}
