//! The indexers' search API as the UI uses it: typed answers, and failover between replicas
//! within one request, remembering which replicas are down for the page's banner.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::url::enc;

/// A stored record as the search API returns it, `_id` included.
pub type Hit = Map<String, Value>;

#[derive(Clone, Debug, Deserialize)]
pub struct SearchAnswer {
    pub total: u64,
    pub hits: Vec<Hit>,
    pub took_ms: u64,
    #[serde(default)]
    pub cursor: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Bucket {
    pub ts: String,
    pub count: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct HistogramAnswer {
    pub interval_ms: i64,
    pub buckets: Vec<Bucket>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct TermCount {
    pub value: String,
    pub count: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct TermsAnswer {
    pub values: Vec<TermCount>,
    #[serde(default)]
    pub other: u64,
    #[serde(default)]
    pub missing: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ContextAnswer {
    pub anchor: Hit,
    pub before: Vec<Hit>,
    pub after: Vec<Hit>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct TraceAnswer {
    pub total: u64,
    pub hits: Vec<Hit>,
}

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

/// A request a replica could not serve: try the next one.
enum Attempt {
    Failover(String),
    Final(Error),
}

impl Client {
    /// `urls` are the replicas' base URLs (`http://host:port`), in order of preference.
    pub fn new(urls: Vec<String>) -> Result<Client> {
        if urls.is_empty() {
            return Err(Error::BadRequest("give at least one --indexer URL".into()));
        }
        let http = reqwest::Client::builder()
            // A dead replica on the same network refuses at once; a hung one must not hold
            // a page for long before the next replica is asked.
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::BadRequest(format!("cannot build an HTTP client: {e}")))?;
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

    pub fn replica_urls(&self) -> Vec<String> {
        self.replicas.iter().map(|r| r.url.clone()).collect()
    }

    pub fn statuses(&self) -> Vec<ReplicaStatus> {
        self.replicas
            .iter()
            .map(|r| r.status.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect()
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
    fn order(&self, prefer: Option<usize>) -> Vec<usize> {
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
        order
    }

    async fn try_one(&self, i: usize, path_and_query: &str) -> std::result::Result<Bytes, Attempt> {
        let url = format!("{}{}", self.replicas[i].url, path_and_query);
        let fail = |e: String| Attempt::Failover(format!("`{}`: {e}", self.replicas[i].url));
        let resp = self
            .http
            .get(&url)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| fail(describe(&e)))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| fail(describe(&e)))?;
        if status.is_success() {
            return Ok(body);
        }
        let message = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned());
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

    /// GETs `path_and_query` from the first replica that answers, failing over on
    /// connection errors and 5xx answers.
    pub async fn get_raw(
        &self,
        path_and_query: &str,
        prefer: Option<usize>,
    ) -> Result<Served<Bytes>> {
        let mut attempts = Vec::new();
        for i in self.order(prefer) {
            match self.try_one(i, path_and_query).await {
                Ok(body) => {
                    self.mark(i, None);
                    return Ok(Served {
                        value: body,
                        replica: i,
                        url: format!("{}{}", self.replicas[i].url, path_and_query),
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

    pub async fn get<T: DeserializeOwned>(
        &self,
        path_and_query: &str,
        prefer: Option<usize>,
    ) -> Result<Served<T>> {
        let raw = self.get_raw(path_and_query, prefer).await?;
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

    /// GETs from one replica only: for record ids, which mean something on the replica that
    /// issued them and nowhere else.
    pub async fn get_from<T: DeserializeOwned>(
        &self,
        replica: usize,
        path_and_query: &str,
    ) -> Result<Served<T>> {
        if replica >= self.replicas.len() {
            return Err(Error::BadRequest(format!(
                "`r={replica}` names no replica: this UI has {}",
                self.replicas.len()
            )));
        }
        let body = match self.try_one(replica, path_and_query).await {
            Ok(b) => {
                self.mark(replica, None);
                b
            }
            Err(Attempt::Final(e)) => {
                self.mark(replica, None);
                return Err(e);
            }
            Err(Attempt::Failover(why)) => {
                self.mark(replica, Some(why.clone()));
                return Err(Error::Unavailable {
                    attempts: vec![why],
                });
            }
        };
        let url = format!("{}{}", self.replicas[replica].url, path_and_query);
        let value = serde_json::from_slice(&body).map_err(|e| Error::BadAnswer {
            url: url.clone(),
            detail: e.to_string(),
        })?;
        Ok(Served {
            value,
            replica,
            url,
        })
    }

    /// Opens the live tail of `q` on the first replica that accepts it: the response whose
    /// body is the indexer's event stream.
    pub async fn tail(&self, q: &str) -> Result<Served<reqwest::Response>> {
        let pq = format!(
            "/api/v1/tail?q={}&max_message_bytes={}",
            enc(q),
            crate::record::LIST_MESSAGE_BYTES
        );
        let mut attempts = Vec::new();
        for i in self.order(None) {
            let url = format!("{}{}", self.replicas[i].url, pq);
            match self.http.get(&url).send().await {
                Ok(resp) if resp.status().is_success() => {
                    self.mark(i, None);
                    return Ok(Served {
                        value: resp,
                        replica: i,
                        url,
                    });
                }
                Ok(resp) if resp.status().is_client_error() => {
                    self.mark(i, None);
                    let status = resp.status().as_u16();
                    let body = resp.bytes().await.unwrap_or_default();
                    let message = serde_json::from_slice::<Value>(&body)
                        .ok()
                        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
                        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
                    return Err(Error::Indexer { status, message });
                }
                Ok(resp) => {
                    let why = format!("`{}`: answered {}", self.replicas[i].url, resp.status());
                    self.mark(i, Some(why.clone()));
                    attempts.push(why);
                }
                Err(e) => {
                    let why = format!("`{}`: {}", self.replicas[i].url, describe(&e));
                    self.mark(i, Some(why.clone()));
                    attempts.push(why);
                }
            }
        }
        Err(Error::Unavailable { attempts })
    }

    /// Asks every replica's `/healthz`, so the banner knows about a dead replica even while
    /// pages are served by another one.
    pub async fn check_health(&self) {
        let checks = (0..self.replicas.len()).map(|i| async move {
            let url = format!("{}/healthz", self.replicas[i].url);
            let res = self
                .http
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            let error = match res {
                Ok(r) if r.status().is_success() => None,
                // Degraded (a full disk, say) still answers searches: report it, keep it.
                Ok(r) if r.status().as_u16() == 503 => {
                    let b = r.bytes().await.unwrap_or_default();
                    let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
                    let problem = v
                        .get("problem")
                        .and_then(Value::as_str)
                        .unwrap_or("degraded");
                    let mut s = self.replicas[i]
                        .status
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    s.error = Some(format!("`{}`: degraded: {problem}", self.replicas[i].url));
                    return;
                }
                Ok(r) => Some(format!(
                    "`{}`: /healthz answered {}",
                    self.replicas[i].url,
                    r.status()
                )),
                Err(e) => Some(format!("`{}`: {}", self.replicas[i].url, describe(&e))),
            };
            self.mark(i, error);
        });
        futures_util::future::join_all(checks).await;
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
