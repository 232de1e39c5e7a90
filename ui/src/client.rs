//! The search API as the UI uses it: the query crate's fan-out over every indexer group,
//! called in-process (the same code `sawmill query` serves, so the UI and the API always
//! agree), with answers read into the contract's types hit by hit.

use sawmill_cluster::Target;
use sawmill_query::{Cluster, ClusterConfig, Doc, Tail};
use sawmill_record::api::{
    self, ContextParams, ContextResponse, HistogramParams, HistogramResponse, Hit, SearchParams,
    SearchResponse, TailParams, TermsParams, TermsResponse, TraceParams, TraceResponse,
};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use std::time::Duration;
use time::OffsetDateTime;

use crate::error::{Error, Result};

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
        Ok(ReadHit::of_raw(raw))
    }
}

impl ReadHit {
    fn of_raw(raw: Box<RawValue>) -> ReadHit {
        match serde_json::from_str::<Hit>(raw.get()) {
            Ok(h) => ReadHit::Hit(h),
            Err(e) => ReadHit::Unreadable(Unreadable {
                error: e.to_string(),
                raw,
            }),
        }
    }

    /// A hit as the fan-out passes it on: read from the map itself; only one that is not
    /// a record is written out as text, to be shown as given.
    pub fn of_doc(doc: Doc) -> ReadHit {
        let v = serde_json::Value::Object(doc);
        match Hit::deserialize(&v) {
            Ok(h) => ReadHit::Hit(h),
            Err(e) => ReadHit::Unreadable(Unreadable {
                error: e.to_string(),
                raw: serde_json::value::to_raw_value(&v)
                    .unwrap_or_else(|_| RawValue::from_string("{}".into()).expect("JSON")),
            }),
        }
    }

    pub fn hit(&self) -> Option<&Hit> {
        match self {
            ReadHit::Hit(h) => Some(h),
            ReadHit::Unreadable(_) => None,
        }
    }
}

fn read_all(docs: Vec<Doc>) -> Vec<ReadHit> {
    docs.into_iter().map(ReadHit::of_doc).collect()
}

/// The answers whose hits the UI reads one by one.
pub type Search = SearchResponse<ReadHit>;
pub type Context = ContextResponse<ReadHit>;
pub type Trace = TraceResponse<ReadHit>;

/// An answer, with the same request's path and query through `sawmill query`'s API for the
/// page's "same data through the API" line (no indexer's URL: one group's would show only
/// its records). `replica` is kept for links made before record ids
/// were cluster-wide (`r=`); ids now name their group and key, so it is always 0.
#[derive(Clone, Debug)]
pub struct Served<T> {
    pub value: T,
    pub replica: usize,
    pub url: String,
}

/// What the UI knows about one replica, for the banner.
#[derive(Clone, Debug)]
pub struct ReplicaStatus {
    pub url: String,
    pub group: Option<String>,
    pub up: bool,
    /// Why it is considered down.
    pub error: Option<String>,
    /// When it was last seen change state.
    pub since: OffsetDateTime,
}

/// The indexer groups behind the UI. Cloning shares the cluster's state.
#[derive(Clone)]
pub struct Client {
    cluster: Cluster,
}

impl From<sawmill_query::Error> for Error {
    fn from(e: sawmill_query::Error) -> Error {
        use sawmill_query::Error as Q;
        match e {
            Q::Indexer { status, message } => Error::Indexer { status, message },
            Q::Unavailable { attempts } => Error::Unavailable { attempts },
            Q::NoGroups(why) => Error::Unavailable {
                attempts: vec![why],
            },
            Q::BadRequest(m) => Error::BadRequest(m),
            Q::NotFound(m) => Error::NotFound(m),
            Q::Busy(message) => Error::Indexer {
                status: 429,
                message,
            },
            Q::BadAnswer { url, detail } => Error::BadAnswer { url, detail },
            Q::Config(m) => Error::Config(m),
            Q::HttpClient(e) => Error::HttpClient(e),
        }
    }
}

impl Client {
    /// Finds the indexers `targets` name (fixed URLs or DNS names, re-resolved every
    /// `discovery_interval`).
    pub async fn start(
        targets: Vec<Target>,
        discovery_interval: Duration,
        connect: sawmill_http::Connect,
    ) -> Result<Client> {
        let cluster = Cluster::start(ClusterConfig {
            targets,
            discovery_interval,
            connect,
            ..ClusterConfig::default()
        })
        .await?;
        Ok(Client { cluster })
    }

    /// Over fixed base URLs (`http(s)://host:port`), as `sawmill up` runs it.
    pub async fn new(urls: Vec<String>, connect: sawmill_http::Connect) -> Result<Client> {
        let targets =
            sawmill_cluster::target::parse_all(&urls).map_err(|e| Error::Config(e.to_string()))?;
        Client::start(targets, Duration::from_secs(10), connect).await
    }

    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.cluster.closing()
    }

    pub fn close(&self) {
        self.cluster.close();
    }

    pub fn statuses(&self) -> Vec<ReplicaStatus> {
        self.cluster
            .replicas()
            .into_iter()
            .map(|r| ReplicaStatus {
                url: r.url,
                group: r.group,
                up: r.up,
                error: r.error,
                since: r.since,
            })
            .collect()
    }

    fn served<T>(&self, value: T, path: &str, params: &impl serde::Serialize) -> Served<T> {
        Served {
            value,
            replica: 0,
            url: sawmill_query::path_and_query(path, params),
        }
    }

    // ---- The routes, one method each. ----

    /// [`api::SEARCH`] over every group (`_prefer` is kept for callers: a cluster cursor
    /// already prefers the replicas that gave it).
    pub async fn search(&self, p: &SearchParams, _prefer: Option<usize>) -> Result<Served<Search>> {
        let s = self.cluster.search(p).await?;
        let value = SearchResponse {
            total: s.total,
            hits: read_all(s.hits),
            took_ms: s.took_ms,
            cursor: s.cursor,
            partial: s.partial,
        };
        Ok(self.served(value, api::SEARCH, p))
    }

    /// [`api::HISTOGRAM`] over every group.
    pub async fn histogram(&self, p: &HistogramParams) -> Result<Served<HistogramResponse>> {
        let h = self.cluster.histogram(p).await?;
        Ok(self.served(h, api::HISTOGRAM, p))
    }

    /// [`api::TERMS`] over every group.
    pub async fn terms(&self, p: &TermsParams) -> Result<Served<TermsResponse>> {
        let t = self.cluster.terms(p).await?;
        Ok(self.served(t, api::TERMS, p))
    }

    /// [`api::CONTEXT`] of record `id` (a cluster-wide id: any replica of its group
    /// answers for a key-based one).
    pub async fn context(
        &self,
        _replica: Option<usize>,
        id: &str,
        p: &ContextParams,
    ) -> Result<Served<Context>> {
        let c = self.cluster.context(id, p).await?;
        let value = ContextResponse {
            anchor: ReadHit::of_doc(c.anchor),
            before: read_all(c.before),
            after: read_all(c.after),
            took_ms: c.took_ms,
            partial: c.partial,
        };
        Ok(self.served(value, &api::path_with(api::CONTEXT, id), p))
    }

    /// [`api::TRACE`] of request or trace id `id`, over every group.
    pub async fn trace(&self, id: &str, p: &TraceParams) -> Result<Served<Trace>> {
        let t = self.cluster.trace(id, p).await?;
        let value = TraceResponse {
            id: t.id,
            total: t.total,
            hits: read_all(t.hits),
            took_ms: t.took_ms,
            partial: t.partial,
        };
        Ok(self.served(value, &api::path_with(api::TRACE, id), p))
    }

    /// Opens [`api::TAIL`] on every group, merged.
    pub async fn tail(&self, p: &TailParams) -> Result<Served<Tail>> {
        let t = self.cluster.tail(p).await?;
        let url = t.urls.first().cloned().unwrap_or_default();
        Ok(Served {
            value: t,
            replica: 0,
            url,
        })
    }

    /// The request of [`Client::tail`] through `sawmill query`, for a page to show.
    pub fn tail_url(&self, _replica: usize, p: &TailParams) -> String {
        sawmill_query::path_and_query(api::TAIL, p)
    }
}
