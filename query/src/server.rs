//! `sawmill query`'s HTTP layer: the indexer's search API over a [`Cluster`]. Handlers
//! read parameters (in the API's error shape when they are wrong), call the cluster's
//! method and serialise its answer; every error gets its status here, in one place.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::Stream;
use sawmill_record::api::{
    self, ContextParams, ErrorBody, HistogramParams, SearchParams, TailParams, TermsParams,
    TraceParams,
};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::cluster::Cluster;
use crate::error::Error;
use crate::tail::TailEvent;

/// Bounds of the query server's HTTP layer and its TLS, as the UI's.
pub use sawmill_http::ServeOptions as ServeConfig;

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = match &self {
            Error::Indexer { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            Error::Unavailable { .. } | Error::NoGroups(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::BadAnswer { .. } => StatusCode::BAD_GATEWAY,
            Error::Config(_) | Error::HttpClient(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let error = if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(error = %self, "Request failed.");
            match status {
                StatusCode::BAD_GATEWAY => self.to_string(),
                _ => "internal error".to_string(),
            }
        } else {
            self.to_string()
        };
        let body = ErrorBody {
            error,
            status: status.as_u16(),
        };
        (status, Json(body)).into_response()
    }
}

/// Query-string parameters, refused in the API's error shape when they do not read.
struct Params<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Error> {
        let q = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str(q)
            .map(Params)
            .map_err(|e| Error::BadRequest(format!("bad parameters: {e}")))
    }
}

type Res<T> = std::result::Result<T, Error>;

/// The search API over `cluster`'s groups.
pub fn router(cluster: Cluster, access: sawmill_http::Access) -> Router {
    let routes = Router::new()
        .route(api::SEARCH, get(search))
        .route(api::HISTOGRAM, get(histogram))
        .route(api::TERMS, get(terms))
        .route(api::CONTEXT, get(context))
        .route(api::TRACE, get(trace))
        .route(api::TAIL, get(tail))
        .route(api::HEALTHZ, get(healthz))
        .route(api::METRICS, get(metrics))
        .fallback(|uri: axum::http::Uri| async move {
            Error::NotFound(format!("route `{}`", uri.path()))
        })
        .layer(axum::Extension(access.clone()))
        .with_state(cluster);
    access.guard(routes)
}

async fn search(State(c): State<Cluster>, Params(p): Params<SearchParams>) -> Res<Response> {
    c.metrics().count("search");
    Ok(Json(c.search(&p).await?).into_response())
}

async fn histogram(State(c): State<Cluster>, Params(p): Params<HistogramParams>) -> Res<Response> {
    c.metrics().count("histogram");
    Ok(Json(c.histogram(&p).await?).into_response())
}

async fn terms(State(c): State<Cluster>, Params(p): Params<TermsParams>) -> Res<Response> {
    c.metrics().count("terms");
    Ok(Json(c.terms(&p).await?).into_response())
}

async fn context(
    State(c): State<Cluster>,
    Path(id): Path<String>,
    Params(p): Params<ContextParams>,
) -> Res<Response> {
    c.metrics().count("context");
    Ok(Json(c.context(&id, &p).await?).into_response())
}

async fn trace(
    State(c): State<Cluster>,
    Path(id): Path<String>,
    Params(p): Params<TraceParams>,
) -> Res<Response> {
    c.metrics().count("trace");
    Ok(Json(c.trace(&id, &p).await?).into_response())
}

async fn tail(
    State(c): State<Cluster>,
    Params(p): Params<TailParams>,
) -> Res<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    c.metrics().count("tail");
    let t = c.tail(&p).await?;
    let hello = Event::default().comment("connected");
    let stream = futures_util::stream::unfold((Some(t), Some(hello)), |(t, first)| async move {
        if let Some(ev) = first {
            return Some((Ok(ev), (t, None)));
        }
        let mut t = t?;
        let ev = match t.next().await? {
            TailEvent::Hit(doc) => Event::default().data(serde_json::to_string(&doc).ok()?),
            TailEvent::Skipped(n) => Event::default().event("skipped").data(n.to_string()),
            TailEvent::Problem(why) => Event::default().event("error").data(why),
            // Said, then the stream ends: the reader reconnects and another replica serves.
            TailEvent::Ended(why) => {
                return Some((Ok(Event::default().event("error").data(why)), (None, None)))
            }
        };
        Some((Ok(ev), (Some(t), None)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Which groups and replicas this query layer sees. Always 200 while it runs (it is alive);
/// `status` is `degraded` when a group has no replica up (or, within the group grace, no
/// replica listed any more), and `problem` says which.
async fn healthz(State(c): State<Cluster>) -> Response {
    let mut groups: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    let mut unknown = Vec::new();
    for r in c.replicas() {
        let v = json!({"url": r.url, "replica": r.replica, "up": r.up, "error": r.error});
        match r.group {
            Some(g) => groups.entry(g).or_default().push(v),
            None => unknown.push(v),
        }
    }
    // A group whose replicas all vanished from DNS is as down as one whose replicas fail.
    for g in c.lost_groups() {
        groups.entry(g).or_default();
    }
    let down: Vec<&String> = groups
        .iter()
        .filter(|(_, rs)| !rs.iter().any(|r| r["up"] == true))
        .map(|(g, _)| g)
        .collect();
    let problem = if groups.is_empty() {
        Some("no indexer group found yet".to_string())
    } else if !down.is_empty() {
        Some(format!(
            "no replica of group(s) {} answers",
            down.iter()
                .map(|g| format!("`{g}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    } else {
        None
    };
    Json(json!({
        "status": if problem.is_some() { "degraded" } else { "ok" },
        "problem": problem,
        "groups": groups,
        "unknown": unknown,
    }))
    .into_response()
}

async fn metrics(
    State(c): State<Cluster>,
    axum::Extension(access): axum::Extension<sawmill_http::Access>,
) -> impl IntoResponse {
    let reps: Vec<(String, bool)> = c
        .replicas()
        .into_iter()
        .filter_map(|r| Some((r.group?, r.up)))
        .collect();
    let mut text = c.metrics().render(&reps);
    access.render_metrics("sawmill_query", &mut text);
    ([("content-type", "text/plain; version=0.0.4")], text)
}

/// Serves `router(cluster)` on `listener` until `shutdown`; live tails end at once then.
pub async fn serve(
    listener: tokio::net::TcpListener,
    cluster: Cluster,
    config: ServeConfig,
    access: sawmill_http::Access,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let closing = cluster.clone();
    sawmill_http::serve(listener, router(cluster, access), config, async move {
        shutdown.await;
        closing.close();
    })
    .await;
}
