//! The fan-out: the groups discovery found, one healthy replica of each asked at once, the
//! next replica of a group asked when one fails within the request, and a group none of
//! whose replicas answers (or that discovery stopped listing, for a grace) reported as
//! missing rather than failing the answer.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sawmill_cluster::{Discovery, DiscoveryConfig, Member, Membership, Target};
use sawmill_record::api::{ErrorBody, Partial};
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// How a [`Cluster`] finds its indexers and bounds its work.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// What `--indexer` gave: fixed URLs and DNS names.
    pub targets: Vec<Target>,
    /// How often names are resolved again and replicas' health asked.
    pub discovery_interval: Duration,
    /// Longest one replica may take over one request before the next one is asked.
    pub request_timeout: Duration,
    /// Longest one group may take over one request, its replicas asked in turn: a group
    /// that has not answered by then is missing from the answer.
    pub group_deadline: Duration,
    /// Fan-outs in flight at once (each holds at most `limit` hits per group).
    pub max_concurrent: usize,
    /// Longest a request waits for a fan-out slot before answering 429.
    pub queue_timeout: Duration,
    /// Live tails open at once (each holds one stream per group and a few events).
    pub max_tails: usize,
    /// Most bytes read of one group's answer: with `max_concurrent` fan-outs over every
    /// group, this bounds what answers in flight can hold.
    pub max_answer_bytes: usize,
    /// How long a group discovery no longer lists is still reported missing. On Swarm and
    /// Kubernetes a dead replica drops out of DNS, so a group whose every replica died
    /// simply vanishes: without this, answers would be silently short.
    pub group_grace: Duration,
    /// How indexers are reached: the CA and client certificate for `https://`, the read
    /// token.
    pub connect: sawmill_http::Connect,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            targets: Vec::new(),
            discovery_interval: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            // One hung replica's request timeout, then half as long for the next (an
            // indexer stops a search at its --search-timeout, 30 s by default).
            group_deadline: Duration::from_secs(90),
            max_concurrent: 64,
            queue_timeout: Duration::from_secs(10),
            max_tails: 256,
            // 10 000 hits of a few KB each; `max_message_bytes` keeps bigger ones under it.
            max_answer_bytes: 64 << 20,
            // As the shipper's --replica-grace.
            group_grace: Duration::from_secs(15 * 60),
            connect: sawmill_http::Connect::default(),
        }
    }
}

/// One group's answer: which replica gave it and what it said.
#[derive(Clone, Debug)]
pub struct Answer<T> {
    pub group: String,
    /// The answering replica's id (from its `/healthz`).
    pub replica: String,
    /// The full URL asked.
    pub url: String,
    pub value: T,
}

/// The answers of a fan-out, and the groups that gave none.
#[derive(Debug)]
pub struct Fanned<T> {
    pub answers: Vec<Answer<T>>,
    /// Groups none of whose replicas answered, sorted.
    pub missing: Vec<String>,
}

impl<T> Fanned<T> {
    /// What the answer says about missing groups.
    pub fn partial(&self) -> Option<Partial> {
        partial_of(self.missing.clone())
    }
}

/// What an answer says about `missing` groups: nothing when none is.
pub(crate) fn partial_of(missing: Vec<String>) -> Option<Partial> {
    (!missing.is_empty()).then_some(Partial {
        missing_groups: missing,
    })
}

/// What the banner and `/healthz` show of one replica.
#[derive(Clone, Debug)]
pub struct ReplicaState {
    pub url: String,
    /// Unknown until its `/healthz` answered once.
    pub group: Option<String>,
    pub replica: Option<String>,
    pub up: bool,
    pub error: Option<String>,
    /// When it was last seen change state.
    pub since: OffsetDateTime,
}

/// A request a replica could not serve: ask the next one, or stop there.
pub(crate) enum Attempt {
    /// The replica failed: ask the next, and ask it last for a while.
    Failover(String),
    /// The replica is fine but has not got it (a record a replica catching up on a new
    /// disk has not copied yet): ask the next; if none has it, this is the answer.
    Elsewhere(Error),
    Final(Error),
}

struct Inner {
    http: reqwest::Client,
    discovery: Discovery,
    config: ClusterConfig,
    admission: Arc<Semaphore>,
    tails: Arc<Semaphore>,
    /// Replicas that failed a request, by URL, with why and when: asked last for
    /// [`Inner::failed_for`]. Discovery's round is asked for at once on a failure; once it
    /// had time to run, its own `up` says whether the replica is down, so an entry expires
    /// rather than wait for a success that, asked last, would never come.
    failed: Mutex<HashMap<String, (String, Instant)>>,
    /// Each replica's last state and since when, for the banner.
    seen: Mutex<HashMap<String, (bool, OffsetDateTime)>>,
    /// Each group name discovery has listed, with when it last did: a group gone from it
    /// is reported missing for `group_grace`.
    groups_seen: Mutex<HashMap<String, Instant>>,
    closing: watch::Sender<bool>,
    metrics: Metrics,
}

/// The indexer groups behind `sawmill query` and the UI. Cloning shares everything.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl Cluster {
    /// Starts discovery over `config.targets` (the first round is done when this returns).
    pub async fn start(config: ClusterConfig) -> Result<Cluster> {
        if config.targets.is_empty() {
            return Err(Error::Config("give at least one --indexer URL".into()));
        }
        let http = config
            .connect
            .client(
                reqwest::Client::builder()
                    // A dead replica on the same network refuses at once; a hung one must
                    // not hold a request for long before the next replica is asked.
                    .connect_timeout(Duration::from_secs(2))
                    .pool_idle_timeout(Duration::from_secs(30)),
            )
            .map_err(|e| Error::Config(e.to_string()))?;
        let discovery = Discovery::start(
            config.targets.clone(),
            DiscoveryConfig {
                interval: config.discovery_interval,
                health_timeout: HEALTH_TIMEOUT,
            },
            http.clone(),
        )
        .await;
        Ok(Cluster {
            inner: Arc::new(Inner {
                http,
                discovery,
                admission: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
                tails: Arc::new(Semaphore::new(config.max_tails.max(1))),
                config,
                failed: Mutex::new(HashMap::new()),
                seen: Mutex::new(HashMap::new()),
                groups_seen: Mutex::new(HashMap::new()),
                closing: watch::Sender::new(false),
                metrics: Metrics::default(),
            }),
        })
    }

    pub fn membership(&self) -> Arc<Membership> {
        self.inner.discovery.current()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Turns true when the server stops, ending live tails.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.inner.closing.subscribe()
    }

    pub fn close(&self) {
        self.inner.closing.send_replace(true);
    }

    /// Every replica known, with its state as requests and discovery saw it.
    pub fn replicas(&self) -> Vec<ReplicaState> {
        let m = self.membership();
        let failed = self.failed(&m);
        let mut seen = lock(&self.inner.seen);
        // Replicas gone from the membership are forgotten, so the map stays its size.
        seen.retain(|url, _| m.member(url).is_some());
        let now = OffsetDateTime::now_utc();
        m.members
            .iter()
            .map(|mb| {
                let error = failed.get(&mb.url).cloned().or_else(|| mb.error.clone());
                let up = mb.up && !failed.contains_key(&mb.url);
                let since = match seen.get(&mb.url) {
                    Some((was, t)) if *was == up => *t,
                    _ => {
                        seen.insert(mb.url.clone(), (up, now));
                        now
                    }
                };
                ReplicaState {
                    url: mb.url.clone(),
                    group: mb.group.clone(),
                    replica: mb.replica.clone(),
                    up,
                    error,
                    since,
                }
            })
            .collect()
    }

    /// A fan-out slot: waits up to the queue timeout, then refuses (429, `Busy`) rather
    /// than letting requests pile up.
    pub(crate) async fn admit(&self) -> Result<OwnedSemaphorePermit> {
        let sem = self.inner.admission.clone();
        match tokio::time::timeout(self.inner.config.queue_timeout, sem.acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            _ => {
                self.inner.metrics.refused.fetch_add(1, Relaxed);
                Err(Error::Busy(format!(
                    "{} searches are being fanned out already; try again shortly",
                    self.inner.config.max_concurrent
                )))
            }
        }
    }

    /// A live-tail slot, or 429 at once: a tail lasts as long as its browser watches.
    pub(crate) fn admit_tail(&self) -> Result<OwnedSemaphorePermit> {
        self.inner.tails.clone().try_acquire_owned().map_err(|_| {
            self.inner.metrics.refused.fetch_add(1, Relaxed);
            Error::Busy(format!(
                "{} live tails are open already; close one or try again later",
                self.inner.config.max_tails
            ))
        })
    }

    /// The groups known now, each with its replicas in the order to ask them: `prefer` (a
    /// replica id) first, then those believed up, those still catching up with their group
    /// after them (a replica on a new disk answers, but without what it has not copied yet),
    /// then the others (they may be back). A
    /// group discovery listed within `group_grace` but lists no more comes with no replica,
    /// so every fan-out reports it missing.
    pub(crate) fn groups(&self, prefer: &HashMap<String, String>) -> Vec<(String, Vec<Member>)> {
        let m = self.membership();
        let failed = self.failed(&m);
        let mut out: BTreeMap<String, Vec<Member>> = m
            .groups()
            .into_iter()
            .map(|(g, members)| {
                let p = prefer.get(g);
                let mut ms: Vec<Member> = members.into_iter().cloned().collect();
                ms.sort_by_key(|mb| {
                    let preferred = p.is_some() && mb.replica.as_ref() == p;
                    let catching_up = mb.health.as_ref().is_some_and(|h| h.catching_up);
                    (
                        !preferred,
                        !mb.up || failed.contains_key(&mb.url),
                        catching_up,
                    )
                });
                (g.to_string(), ms)
            })
            .collect();
        for g in self.lost_groups_of(&m) {
            out.insert(g, Vec::new());
        }
        out.into_iter().collect()
    }

    /// The replicas of `m` that failed a request lately, with why. Entries past
    /// [`Inner::failed_for`] or of replicas gone from the membership are dropped.
    fn failed(&self, m: &Membership) -> HashMap<String, String> {
        let expiry = self.inner.failed_for();
        let mut failed = lock(&self.inner.failed);
        failed.retain(|url, (_, at)| at.elapsed() < expiry && m.member(url).is_some());
        failed
            .iter()
            .map(|(url, (why, _))| (url.clone(), why.clone()))
            .collect()
    }

    /// Groups discovery listed within `group_grace` but lists no more, sorted.
    pub fn lost_groups(&self) -> Vec<String> {
        self.lost_groups_of(&self.membership())
    }

    fn lost_groups_of(&self, m: &Membership) -> Vec<String> {
        let now = Instant::now();
        let listed = m.groups();
        let mut seen = lock(&self.inner.groups_seen);
        for g in listed.keys() {
            seen.insert(g.to_string(), now);
        }
        let grace = self.inner.config.group_grace;
        seen.retain(|_, t| now.duration_since(*t) <= grace);
        let mut lost: Vec<String> = seen
            .keys()
            .filter(|g| !listed.contains_key(g.as_str()))
            .cloned()
            .collect();
        lost.sort();
        lost
    }

    /// Asks every group `path_for(group)` (a group for which it gives `None` is not asked)
    /// at once, each on its replicas in turn. A refusal (4xx, a search timeout) from any
    /// group fails the whole request: every group would refuse the same. A search timeout
    /// (504) in one group is not made a partial answer: `partial` means a group is down,
    /// and a query too heavy for one group is to be narrowed, not answered short. No group
    /// answering is an error; some not answering is a partial answer.
    pub(crate) async fn fan_out<T: DeserializeOwned>(
        &self,
        groups: Vec<(String, Vec<Member>)>,
        path_for: impl Fn(&str) -> Option<String>,
    ) -> Result<Fanned<T>> {
        if groups.is_empty() {
            return Err(self.no_groups());
        }
        let asks = groups.iter().filter_map(|(g, ms)| {
            let pq = path_for(g)?;
            Some(async move { (g.clone(), self.ask_group::<T>(g, ms, &pq).await) })
        });
        let results = futures_util::future::join_all(asks).await;
        let mut out = Fanned {
            answers: Vec::new(),
            missing: Vec::new(),
        };
        let mut attempts = Vec::new();
        let asked = results.len();
        for (g, r) in results {
            match r {
                Ok(a) => out.answers.push(a),
                Err(Attempt::Final(e) | Attempt::Elsewhere(e)) => return Err(e),
                Err(Attempt::Failover(why)) => {
                    attempts.push(why);
                    out.missing.push(g);
                }
            }
        }
        if asked > 0 && out.answers.is_empty() {
            return Err(Error::Unavailable { attempts });
        }
        if !out.missing.is_empty() {
            self.inner.metrics.partial.fetch_add(1, Relaxed);
        }
        out.missing.sort();
        Ok(out)
    }

    /// Asks one group: its replicas in turn until one answers.
    pub(crate) async fn ask_group<T: DeserializeOwned>(
        &self,
        group: &str,
        members: &[Member],
        path_and_query: &str,
    ) -> std::result::Result<Answer<T>, Attempt> {
        let res = self
            .first(group, members, |base| {
                self.fetch(format!("{base}{path_and_query}"))
            })
            .await;
        res.map(|(replica, (url, value))| Answer {
            group: group.to_string(),
            replica,
            url,
            value,
        })
    }

    /// GETs `url` and reads its JSON answer: the URL and the value.
    pub(crate) async fn fetch<T: DeserializeOwned>(
        &self,
        url: String,
    ) -> std::result::Result<(String, T), Attempt> {
        let resp = self
            .send(&url, Some(self.inner.config.request_timeout))
            .await?;
        let body = self.read_capped(resp, &url).await?;
        let value = serde_json::from_slice(&body).map_err(|e| {
            Attempt::Final(Error::BadAnswer {
                url: url.clone(),
                detail: e.to_string(),
            })
        })?;
        Ok((url, value))
    }

    /// A response's body, refused past `max_answer_bytes` (every replica would send as
    /// much: the request is what must change).
    async fn read_capped(
        &self,
        mut resp: reqwest::Response,
        url: &str,
    ) -> std::result::Result<Vec<u8>, Attempt> {
        let max = self.inner.config.max_answer_bytes;
        let too_large = || {
            Attempt::Final(Error::Indexer {
                status: 502,
                message: format!(
                    "`{url}` answered more than {max} bytes: ask fewer hits (`limit`) or \
                     shorter messages (`max_message_bytes`)"
                ),
            })
        };
        if resp.content_length().is_some_and(|n| n > max as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| Attempt::Failover(format!("`{url}`: {}", describe(&e))))?
        {
            if body.len() + chunk.len() > max {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Runs `call` on `members` in turn until one succeeds, within the group deadline: the
    /// replica id and its result.
    pub(crate) async fn first<T, F, Fut>(
        &self,
        group: &str,
        members: &[Member],
        call: F,
    ) -> std::result::Result<(String, T), Attempt>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = std::result::Result<T, Attempt>>,
    {
        let deadline = self.inner.config.group_deadline;
        match tokio::time::timeout(deadline, self.in_turn(group, members, call)).await {
            Ok(r) => r,
            Err(_) => {
                self.inner.metrics.group_failures.fetch_add(1, Relaxed);
                Err(Attempt::Failover(format!(
                    "group `{group}`: no replica answered within {deadline:?}"
                )))
            }
        }
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        self.inner.config.request_timeout
    }

    async fn in_turn<T, F, Fut>(
        &self,
        group: &str,
        members: &[Member],
        call: F,
    ) -> std::result::Result<(String, T), Attempt>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = std::result::Result<T, Attempt>>,
    {
        let mut whys = Vec::new();
        let mut elsewhere = None;
        for (i, m) in members.iter().enumerate() {
            if i > 0 {
                self.inner.metrics.failovers.fetch_add(1, Relaxed);
            }
            match call(m.url.clone()).await {
                Ok(v) => {
                    if lock(&self.inner.failed).remove(&m.url).is_some() {
                        tracing::info!(url = %m.url, group, "Indexer replica is back.");
                    }
                    return Ok((m.replica.clone().unwrap_or_default(), v));
                }
                Err(Attempt::Failover(why)) => {
                    tracing::warn!(url = %m.url, group, error = %why, "Indexer replica failed a request.");
                    let failure = (why.clone(), Instant::now());
                    lock(&self.inner.failed).insert(m.url.clone(), failure);
                    self.inner.discovery.refresh();
                    whys.push(why);
                }
                Err(Attempt::Elsewhere(e)) => elsewhere = Some(e),
                Err(final_) => return Err(final_),
            }
        }
        // Every replica asked is fine and has not got it: that is the answer.
        match elsewhere {
            Some(e) if whys.is_empty() => return Err(Attempt::Final(e)),
            Some(e) => whys.push(e.to_string()),
            None => {}
        }
        self.inner.metrics.group_failures.fetch_add(1, Relaxed);
        let why = if whys.is_empty() {
            format!("group `{group}`: discovery lists no replica of it any more")
        } else {
            format!("group `{group}`: {}", whys.join("; "))
        };
        Err(Attempt::Failover(why))
    }

    /// Sends a GET to `url`: its successful response, or whether the next replica should
    /// be asked.
    pub(crate) async fn send(
        &self,
        url: &str,
        timeout: Option<Duration>,
    ) -> std::result::Result<reqwest::Response, Attempt> {
        let fail = |e: String| Attempt::Failover(format!("`{url}`: {e}"));
        let mut req = self
            .inner
            .config
            .connect
            .authorize(self.inner.http.get(url));
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
        // The replica is fine; the request is what is wrong, and every replica would say
        // so. A search stopped at its --search-timeout (504) would be stopped on every
        // replica too: asking the next only doubles the load of the heaviest queries.
        // 429 is a full search queue: that replica is busy, another may not be.
        if (status.is_client_error() && status.as_u16() != 429)
            || status == reqwest::StatusCode::GATEWAY_TIMEOUT
        {
            return Err(Attempt::Final(Error::Indexer {
                status: status.as_u16(),
                message,
            }));
        }
        Err(fail(format!("answered {status}: {message}")))
    }

    pub(crate) fn no_groups(&self) -> Error {
        let m = self.membership();
        let mut why: Vec<String> = m
            .members
            .iter()
            .map(|mb| {
                format!(
                    "`{}`: {}",
                    mb.url,
                    mb.error.as_deref().unwrap_or("has not said its group")
                )
            })
            .collect();
        why.extend(m.errors.iter().map(|(n, e)| format!("`{n}`: {e}")));
        if why.is_empty() {
            why.push("no replica found".into());
        }
        Error::NoGroups(why.join("; "))
    }
}

impl Attempt {
    pub(crate) fn into_error(self) -> Error {
        match self {
            Attempt::Final(e) | Attempt::Elsewhere(e) => e,
            Attempt::Failover(why) => Error::Unavailable {
                attempts: vec![why],
            },
        }
    }
}

impl Inner {
    /// How long a failed replica is asked last: until the discovery round its failure
    /// asked for has surely asked its health (at most `HEALTH_TIMEOUT`), or the next
    /// regular round.
    fn failed_for(&self) -> Duration {
        self.config.discovery_interval.max(HEALTH_TIMEOUT)
    }
}

/// Longest a replica's `/healthz` may take in a discovery round.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) use sawmill_http::describe;
