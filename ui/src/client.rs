//! The indexers' search API as the UI uses it: one typed method per route, built from the
//! contract's paths and parameter types (`sawmill_record::api`) and read back into its
//! answer types, with failover between replicas within one request, remembering which
//! replicas are down for the page's banner.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sawmill_record::api::{
    self, ContextParams, ContextResponse, ErrorBody, Health, HistogramParams, HistogramResponse,
    Hit, SearchParams, SearchResponse, TailParams, TermsParams, TermsResponse, TraceParams,
    TraceResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;

use crate::error::{Error, Result};

/// Longest one API call may take before the next replica is asked.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a health check may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// A hit as the UI reads it: the contract's [`Hit`], or, for a stored record that does not
/// fit it, why not and its JSON as the indexer gave it. The indexer normalises what it
/// stores (`message` is a string, `severity` one of the eight names), but a replica of
/// another version or a peer speaking the API may not: one odd record then costs a
/// placeholder row, never the page.
#[derive(Clone, Debug)]
// Nearly every hit is readable: boxing the large variant would allocate for each of them.
#[allow(clippy::large_enum_variant)]
pub enum ReadHit {
    Hit(Hit),
    Unreadable(Unreadable),
}

/// A hit that is not a record of the contract.
#[derive(Clone, Debug)]
pub struct Unreadable {
    /// Why it could not be read, in serde's words.
    pub error: String,
    /// The hit's JSON, as given.
    pub raw: Box<RawValue>,
}

impl<'de> Deserialize<'de> for ReadHit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<ReadHit, D::Error> {
        // Only a hit that is not JSON at all fails the answer; it cannot be, inside JSON.
        let raw = Box::<RawValue>::deserialize(d)?;
        Ok(match serde_json::from_str::<Hit>(raw.get()) {
            Ok(h) => ReadHit::Hit(h),
            Err(e) => ReadHit::Unreadable(Unreadable {
                error: e.to_string(),
                raw,
            }),
        })
    }
}

impl ReadHit {
    pub fn hit(&self) -> Option<&Hit> {
        match self {
            ReadHit::Hit(h) => Some(h),
            ReadHit::Unreadable(_) => None,
        }
    }
}

/// The answers whose hits the UI reads one by one.
pub type Search = SearchResponse<ReadHit>;
pub type Context = ContextResponse<ReadHit>;
pub type Trace = TraceResponse<ReadHit>;

/// An answer and the replica that gave it (its index in the configured list), so record ids,
/// which only mean something on the replica that issued them, can be traced back.
#[derive(Clone, Debug)]
pub struct Served<T> {
    pub value: T,
    pub replica: usize,
    /// The full URL that was asked, for the page's "same query through the API" line.
    pub url: String,
}

/// What the UI knows about one replica, for the banner.
#[derive(Clone, Debug)]
pub struct ReplicaStatus {
    pub url: String,
    pub up: bool,
    /// Why it is considered down.
    pub error: Option<String>,
    /// When it was last seen change state.
    pub since: OffsetDateTime,
}

struct Replica {
    url: String,
    status: Mutex<ReplicaStatus>,
}

/// The indexer replicas behind the UI. Cloning shares the replicas' state.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    replicas: Arc<Vec<Replica>>,
    /// Turns true when the server stops, ending live tails so shutdown does not wait on them.
    closing: Arc<tokio::sync::watch::Sender<bool>>,
}

/// Which replicas may answer a request.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// Any, `prefer` first: the answer is the same on every replica.
    Any { prefer: Option<usize> },
    /// Only this one: record ids mean something on the replica that issued them only.
    Only(usize),
}

/// A request a replica could not serve: try the next one, or stop there.
enum Attempt {
    Failover(String),
    Final(Error),
}

/// `path?query` for a route and its parameters, the query in the form the indexer's
/// parameter types read.
fn path_and_query<P: Serialize>(path: &str, params: &P) -> String {
    // Flat structs of strings, numbers and unit enums always serialise; were one not to,
    // the route's defaults would apply, which the page's API line then shows.
    let q = serde_urlencoded::to_string(params).unwrap_or_default();
    if q.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{q}")
    }
}

impl Client {
    /// `urls` are the replicas' base URLs (`http://host:port`), in order of preference.
    pub fn new(urls: Vec<String>) -> Result<Client> {
        if urls.is_empty() {
            return Err(Error::Config("give at least one --indexer URL".into()));
        }
        let http = reqwest::Client::builder()
            // A dead replica on the same network refuses at once; a hung one must not hold
            // a page for long before the next replica is asked.
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(Error::HttpClient)?;
        let now = OffsetDateTime::now_utc();
        let replicas = urls
            .into_iter()
            .map(|u| {
                let url = u.trim_end_matches('/').to_string();
                Replica {
                    status: Mutex::new(ReplicaStatus {
                        url: url.clone(),
                        up: true,
                        error: None,
                        since: now,
                    }),
                    url,
                }
            })
            .collect();
        Ok(Client {
            http,
            replicas: Arc::new(replicas),
            closing: Arc::new(tokio::sync::watch::Sender::new(false)),
        })
    }

    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }

    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    pub fn statuses(&self) -> Vec<ReplicaStatus> {
        self.replicas
            .iter()
            .map(|r| r.status.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect()
    }

    // ---- The routes, one method each. ----

    /// [`api::SEARCH`], on any replica (`prefer` first: a cursor continues on its own).
    pub async fn search(&self, p: &SearchParams, prefer: Option<usize>) -> Result<Served<Search>> {
        self.get(&path_and_query(api::SEARCH, p), Target::Any { prefer })
            .await
    }

    /// [`api::HISTOGRAM`], on any replica.
    pub async fn histogram(&self, p: &HistogramParams) -> Result<Served<HistogramResponse>> {
        let pq = path_and_query(api::HISTOGRAM, p);
        self.get(&pq, Target::Any { prefer: None }).await
    }

    /// [`api::TERMS`], on any replica.
    pub async fn terms(&self, p: &TermsParams) -> Result<Served<TermsResponse>> {
        let pq = path_and_query(api::TERMS, p);
        self.get(&pq, Target::Any { prefer: None }).await
    }

    /// [`api::CONTEXT`] of record `id`: on `replica`, the one that issued the id, or on any
    /// replica for an id of unknown origin (a hand-made link).
    pub async fn context(
        &self,
        replica: Option<usize>,
        id: &str,
        p: &ContextParams,
    ) -> Result<Served<Context>> {
        let pq = path_and_query(&api::path_with(api::CONTEXT, id), p);
        let target = match replica {
            Some(r) => Target::Only(r),
            None => Target::Any { prefer: None },
        };
        self.get(&pq, target).await
    }

    /// [`api::TRACE`] of request or trace id `id`, on any replica.
    pub async fn trace(&self, id: &str, p: &TraceParams) -> Result<Served<Trace>> {
        let pq = path_and_query(&api::path_with(api::TRACE, id), p);
        self.get(&pq, Target::Any { prefer: None }).await
    }

    /// Opens [`api::TAIL`] on the first replica that accepts it: the response whose body is
    /// the indexer's event stream.
    pub async fn tail(&self, p: &TailParams) -> Result<Served<reqwest::Response>> {
        let pq = path_and_query(api::TAIL, p);
        // No overall timeout: the stream lasts as long as the browser watches.
        self.first(
            &pq,
            Target::Any { prefer: None },
            None,
            |r| async move { Ok(r) },
        )
        .await
    }

    /// The URL [`Client::tail`] asks on `replica`, for a page to show before it is opened.
    pub fn tail_url(&self, replica: usize, p: &TailParams) -> String {
        let base = self.replicas.get(replica).map_or("", |r| r.url.as_str());
        format!("{base}{}", path_and_query(api::TAIL, p))
    }

    /// Asks every replica's [`api::HEALTHZ`], so the banner knows about a dead replica even
    /// while pages are served by another one.
    pub async fn check_health(&self) {
        let checks = (0..self.replicas.len()).map(|i| self.check_one(i));
        futures_util::future::join_all(checks).await;
    }

    // ---- Failover. ----

    async fn check_one(&self, i: usize) {
        let base = &self.replicas[i].url;
        let res = self
            .http
            .get(format!("{base}{}", api::HEALTHZ))
            .timeout(HEALTH_TIMEOUT)
            .send()
            .await;
        let error = match res {
            Ok(r) if r.status().is_success() => None,
            // Degraded (a full disk, say) still answers searches: report it, keep it.
            Ok(r) if r.status().as_u16() == 503 => {
                let b = r.bytes().await.unwrap_or_default();
                let problem = serde_json::from_slice::<Health>(&b)
                    .ok()
                    .and_then(|h| h.problem)
                    .unwrap_or_else(|| "degraded".into());
                let mut s = self.replicas[i]
                    .status
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                s.error = Some(format!("`{base}`: degraded: {problem}"));
                return;
            }
            Ok(r) => Some(format!(
                "`{base}`: {} answered {}",
                api::HEALTHZ,
                r.status()
            )),
            Err(e) => Some(format!("`{base}`: {}", describe(&e))),
        };
        self.mark(i, error);
    }

    fn mark(&self, i: usize, error: Option<String>) {
        let mut s = self.replicas[i]
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let up = error.is_none();
        if s.up != up {
            if up {
                tracing::info!(url = %s.url, "Indexer replica is back.");
            } else {
                tracing::warn!(url = %s.url, error = error.as_deref().unwrap_or(""), "Indexer replica is down.");
            }
            s.since = OffsetDateTime::now_utc();
        }
        s.up = up;
        s.error = error;
    }

    /// The order in which replicas are asked: `prefer` first, then those believed up, then
    /// those believed down (they may have come back since).
    fn order(&self, target: Target) -> Result<Vec<usize>> {
        let prefer = match target {
            Target::Only(r) if r < self.replicas.len() => return Ok(vec![r]),
            Target::Only(r) => {
                return Err(Error::BadRequest(format!(
                    "`r={r}` names no replica: this UI has {}",
                    self.replicas.len()
                )))
            }
            Target::Any { prefer } => prefer,
        };
        let st = self.statuses();
        let mut order: Vec<usize> = Vec::with_capacity(st.len());
        if let Some(p) = prefer.filter(|p| *p < st.len()) {
            order.push(p);
        }
        for want_up in [true, false] {
            for (i, s) in st.iter().enumerate() {
                if s.up == want_up && !order.contains(&i) {
                    order.push(i);
                }
            }
        }
        Ok(order)
    }

    /// Sends `path_and_query` to replica `i`: its successful response, or whether the next
    /// replica should be asked.
    async fn send(
        &self,
        i: usize,
        path_and_query: &str,
        timeout: Option<Duration>,
    ) -> std::result::Result<reqwest::Response, Attempt> {
        let base = &self.replicas[i].url;
        let fail = |e: String| Attempt::Failover(format!("`{base}`: {e}"));
        let mut req = self.http.get(format!("{base}{path_and_query}"));
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        let resp = req.send().await.map_err(|e| fail(describe(&e)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.bytes().await.unwrap_or_default();
        let message = ErrorBody::message_of(&body);
        // The replica is fine; the request is what is wrong, and every replica would say so.
        // A search stopped at its --search-timeout (504) is final too: it would be stopped on
        // every replica, and asking the next only doubles the load of the heaviest queries.
        if status.is_client_error() || status == reqwest::StatusCode::GATEWAY_TIMEOUT {
            return Err(Attempt::Final(Error::Indexer {
                status: status.as_u16(),
                message,
            }));
        }
        Err(fail(format!("answered {status}: {message}")))
    }

    /// The first answer among `target`'s replicas, read by `read`, failing over on
    /// connection errors, 5xx answers and bodies cut off on the way, and noting each
    /// replica's state for the banner.
    async fn first<T, F, Fut>(
        &self,
        path_and_query: &str,
        target: Target,
        timeout: Option<Duration>,
        read: F,
    ) -> Result<Served<T>>
    where
        F: Fn(reqwest::Response) -> Fut,
        Fut: Future<Output = std::result::Result<T, reqwest::Error>>,
    {
        let mut attempts = Vec::new();
        for i in self.order(target)? {
            let outcome = match self.send(i, path_and_query, timeout).await {
                Ok(resp) => read(resp).await.map_err(|e| {
                    Attempt::Failover(format!("`{}`: {}", self.replicas[i].url, describe(&e)))
                }),
                Err(a) => Err(a),
            };
            match outcome {
                Ok(value) => {
                    self.mark(i, None);
                    return Ok(Served {
                        value,
                        replica: i,
                        url: format!("{}{path_and_query}", self.replicas[i].url),
                    });
                }
                Err(Attempt::Final(e)) => {
                    self.mark(i, None);
                    return Err(e);
                }
                Err(Attempt::Failover(why)) => {
                    self.mark(i, Some(why.clone()));
                    attempts.push(why);
                }
            }
        }
        Err(Error::Unavailable { attempts })
    }

    /// The answer of the first replica that gives one, read as `T`. A body that is not the
    /// API's answer is no reason to ask the next replica: every one of the same version
    /// would answer the same.
    async fn get<T: DeserializeOwned>(
        &self,
        path_and_query: &str,
        target: Target,
    ) -> Result<Served<T>> {
        let raw = self
            .first(path_and_query, target, Some(REQUEST_TIMEOUT), |r| r.bytes())
            .await?;
        let value = serde_json::from_slice(&raw.value).map_err(|e| Error::BadAnswer {
            url: raw.url.clone(),
            detail: e.to_string(),
        })?;
        Ok(Served {
            value,
            replica: raw.replica,
            url: raw.url,
        })
    }
}

/// A transport error in a few words: reqwest's own chain says "error sending request".
fn describe(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut s = if e.is_connect() {
        "cannot connect".to_string()
    } else if e.is_timeout() {
        "timed out".to_string()
    } else {
        e.to_string()
    };
    let mut src = e.source();
    while let Some(inner) = src {
        if inner.source().is_none() {
            s.push_str(&format!(" ({inner})"));
        }
        src = inner.source();
    }
    s
}
