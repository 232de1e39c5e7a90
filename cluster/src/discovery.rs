//! Discovery: the replicas behind a list of [`Target`]s, re-resolved every interval, each
//! with the group and id its `/healthz` gives, published as a [`Membership`] whenever it
//! changes.
//!
//! A replica's group is sticky: once learnt it is kept while the replica is unreachable, so
//! records for a group whose replicas are all down still wait for that group rather than
//! going elsewhere. A replica leaves the membership when its name stops listing it (a DNS
//! name) — a fixed URL never leaves. What to do with a replica that left (keep its backlog
//! for a grace period, say) is the consumer's business.
//!
//! A name whose lookup *fails* (a SERVFAIL or a timeout, not an empty answer) keeps its
//! last good answer for [`stale_for`] of the interval (a minute at least), so one bad answer
//! does not empty the membership. Every lookup has a timeout, so a round always ends.
//!
//! Subscribers are woken only when the membership's shape changes (a replica's address,
//! group, id or whether it is up), not for every new health figure; [`Discovery::current`]
//! still shows the latest health.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sawmill_record::api::{self, Health};
use tokio::sync::watch;

use crate::target::Target;

/// Longest one name lookup may take (an SRV name, and each of its hosts apiece).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a name whose lookup fails keeps its last good answer: a few rounds, and a
/// minute at least.
pub fn stale_for(interval: Duration) -> Duration {
    (interval * 3).max(Duration::from_secs(60))
}

/// How discovery runs.
#[derive(Clone, Debug)]
pub struct DiscoveryConfig {
    /// How often names are resolved again and every replica's health asked.
    pub interval: Duration,
    /// Longest a `/healthz` may take.
    pub health_timeout: Duration,
}

/// The shortest interval between rounds, whatever is asked (tests use 1 s).
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            interval: Duration::from_secs(10),
            health_timeout: Duration::from_secs(2),
        }
    }
}

/// One replica as discovery knows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    /// Base URL, `http://ip:port` (or the fixed URL as given).
    pub url: String,
    /// Which target found it (its index in the list given).
    pub target: usize,
    /// Its group, once a `/healthz` said it (kept while it is unreachable).
    pub group: Option<String>,
    /// Its replica id, likewise.
    pub replica: Option<String>,
    /// Its last `/healthz` answered.
    pub up: bool,
    /// Why it is down, when it is.
    pub error: Option<String>,
    /// Its last health answer.
    pub health: Option<Health>,
}

/// Every replica found, at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Membership {
    /// In the order found: targets in the order given, addresses in DNS order.
    pub members: Vec<Member>,
    /// Names that could not be resolved at the last try, with the reason.
    pub errors: Vec<(String, String)>,
}

impl Membership {
    /// The replicas of each group whose group is known, by group name.
    pub fn groups(&self) -> BTreeMap<&str, Vec<&Member>> {
        let mut out: BTreeMap<&str, Vec<&Member>> = BTreeMap::new();
        for m in &self.members {
            if let Some(g) = &m.group {
                out.entry(g.as_str()).or_default().push(m);
            }
        }
        out
    }

    /// The names of the groups known, sorted.
    pub fn group_names(&self) -> Vec<&str> {
        self.groups().into_keys().collect()
    }

    /// The member at `url`, if any.
    pub fn member(&self, url: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.url == url)
    }

    /// Whether `other` has the same replicas, each with the same group, id and being up or
    /// not: what a change is announced for (health figures and error texts change every
    /// round).
    pub fn same_shape(&self, other: &Membership) -> bool {
        let shape = |m: &Member| (m.url.clone(), m.group.clone(), m.replica.clone(), m.up);
        self.members.len() == other.members.len()
            && self
                .members
                .iter()
                .map(shape)
                .eq(other.members.iter().map(shape))
    }
}

/// Stores `next` (so the latest health is seen) and wakes subscribers only if its shape
/// changed.
fn publish(tx: &watch::Sender<Arc<Membership>>, next: Membership) {
    tx.send_if_modified(|cur| {
        let changed = !cur.same_shape(&next);
        *cur = Arc::new(next);
        changed
    });
}

/// A running discovery: a task that keeps the membership current. Dropping it stops it.
pub struct Discovery {
    rx: watch::Receiver<Arc<Membership>>,
    refresh: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Discovery {
    /// Resolves `targets` once (so the first membership is there when this returns), then
    /// keeps doing so every `config.interval` in a task. Must be called inside a tokio
    /// runtime.
    pub async fn start(
        targets: Vec<Target>,
        config: DiscoveryConfig,
        http: reqwest::Client,
    ) -> Discovery {
        // A zero interval would resolve and ask every replica back to back, for ever.
        let config = DiscoveryConfig {
            interval: config.interval.max(MIN_INTERVAL),
            ..config
        };
        let mut state = State {
            targets,
            config,
            http,
            known: HashMap::new(),
            resolver: None,
            failing: HashMap::new(),
            last_good: HashMap::new(),
        };
        let first = state.round().await;
        let (tx, rx) = watch::channel(Arc::new(first));
        let refresh = Arc::new(tokio::sync::Notify::new());
        let wake = refresh.clone();
        let task = tokio::spawn(async move {
            loop {
                let _ = tokio::time::timeout(state.config.interval, wake.notified()).await;
                let next = state.round().await;
                publish(&tx, next);
                if tx.is_closed() {
                    return;
                }
            }
        });
        Discovery { rx, refresh, task }
    }

    /// The membership now.
    pub fn current(&self) -> Arc<Membership> {
        self.rx.borrow().clone()
    }

    /// A receiver that sees every change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Membership>> {
        self.rx.clone()
    }

    /// Asks for a round now instead of at the next interval (a request just failed on a
    /// replica, say). The new membership follows through [`Discovery::subscribe`].
    pub fn refresh(&self) {
        self.refresh.notify_one();
    }
}

/// What one replica said, kept across rounds.
#[derive(Clone, Debug, Default)]
struct Known {
    group: Option<String>,
    replica: Option<String>,
    /// Why its health check fails, while it does: logged once per episode.
    down: Option<String>,
}

struct State {
    targets: Vec<Target>,
    config: DiscoveryConfig,
    http: reqwest::Client,
    known: HashMap<String, Known>,
    /// Made on the first SRV lookup: a machine without /etc/resolv.conf can still use the
    /// other forms.
    resolver: Option<hickory_resolver::TokioResolver>,
    /// Names whose lookup fails, so the warning is logged once per episode.
    failing: HashMap<String, String>,
    /// Each name's last good answer and when it came.
    last_good: HashMap<String, (Vec<String>, Instant)>,
}

impl State {
    /// Resolves every target and asks every replica's health, all at once.
    async fn round(&mut self) -> Membership {
        let mut found: Vec<(String, usize)> = Vec::new();
        let mut errors = Vec::new();
        for (i, t) in self.targets.clone().iter().enumerate() {
            let answer = self.resolve(t).await;
            let (urls, error) = self.answer(t, answer, Instant::now());
            if let Some(why) = error {
                errors.push((t.to_string(), why));
            }
            for u in urls {
                if !found.iter().any(|(f, _)| *f == u) {
                    found.push((u, i));
                }
            }
        }
        let checks = found
            .iter()
            .map(|(url, _)| health(&self.http, url, self.config.health_timeout));
        // Together: one slow replica costs one timeout per round, not one per replica.
        let answers = futures_util::future::join_all(checks).await;
        let mut members = Vec::with_capacity(found.len());
        for ((url, target), answer) in found.into_iter().zip(answers) {
            let known = self.known.entry(url.clone()).or_default();
            let (up, error, health) = match answer {
                Ok(h) => {
                    if !h.group.is_empty() {
                        known.group = Some(h.group.clone());
                    }
                    if !h.replica.is_empty() {
                        known.replica = Some(h.replica.clone());
                    }
                    if known.down.take().is_some() {
                        tracing::info!(replica = %url, "The replica answers its health check again.");
                    }
                    (true, None, Some(h))
                }
                Err(e) => {
                    if known.down.is_none() {
                        // A certificate that does not verify lands here too, named with
                        // its reason: the replica counts as down, never as plain HTTP.
                        tracing::warn!(replica = %url, error = %e, "The replica does not answer its health check; it counts as down until it does.");
                    }
                    known.down = Some(e.clone());
                    (false, Some(e), None)
                }
            };
            members.push(Member {
                url,
                target,
                group: known.group.clone(),
                replica: known.replica.clone(),
                up,
                error,
                health,
            });
        }
        // Forget what left, so memory follows the membership (a churning Swarm service
        // gets a new address per task).
        self.known
            .retain(|u, _| members.iter().any(|m: &Member| m.url == *u));
        Membership { members, errors }
    }

    /// What `t` lists, given its lookup's `answer` at `now`: a failed lookup lists its last
    /// good answer for [`stale_for`] (a name that answers with no record is no failure),
    /// then nothing. Also returns the failure, if any.
    fn answer(
        &mut self,
        t: &Target,
        answer: Result<Vec<String>, String>,
        now: Instant,
    ) -> (Vec<String>, Option<String>) {
        let name = t.to_string();
        let Err(why) = answer else {
            let urls = answer.unwrap_or_default();
            if self.failing.remove(&name).is_some() {
                tracing::info!(target = %t, replicas = urls.len(), "The name resolves again.");
            }
            self.last_good.insert(name, (urls.clone(), now));
            return (urls, None);
        };
        let stale = stale_for(self.config.interval);
        let kept = match self.last_good.get(&name) {
            Some((urls, at)) if now.saturating_duration_since(*at) < stale => urls.clone(),
            _ => Vec::new(),
        };
        if self.failing.insert(name, why.clone()).is_none() {
            tracing::warn!(target = %t, error = %why, stale_secs = stale.as_secs(), "Could not resolve the name; it lists its last answer for a while, then no replica until it resolves.");
        }
        (kept, Some(why))
    }

    /// The base URLs `t` stands for now.
    async fn resolve(&mut self, t: &Target) -> Result<Vec<String>, String> {
        match t {
            Target::Fixed(u) => Ok(vec![u.clone()]),
            Target::Dns { scheme, name, port } => {
                let addrs = lookup(name, *port).await?;
                if *scheme == "https" {
                    let ips: Vec<IpAddr> = addrs.iter().map(|a| a.ip()).collect();
                    sawmill_http::tls::remember_name(name, &ips);
                }
                Ok(addrs.iter().map(|a| base_url(scheme, *a)).collect())
            }
            Target::Srv { scheme, name } => {
                if self.resolver.is_none() {
                    let r = hickory_resolver::TokioResolver::builder_tokio()
                        .map_err(|e| format!("reading the system's DNS configuration: {e}"))?
                        .build()
                        .map_err(|e| format!("starting the DNS resolver: {e}"))?;
                    self.resolver = Some(r);
                }
                let resolver = self.resolver.as_ref().expect("made above");
                let lookup =
                    tokio::time::timeout(LOOKUP_TIMEOUT, resolver.srv_lookup(name.as_str()))
                        .await
                        .map_err(|_| {
                            format!("SRV lookup of {name}: no answer within {LOOKUP_TIMEOUT:?}")
                        })?
                        .map_err(|e| format!("SRV lookup of {name}: {e}"))?;
                let mut out = Vec::new();
                for r in lookup.answers() {
                    let hickory_resolver::proto::rr::RData::SRV(srv) = &r.data else {
                        continue;
                    };
                    let host = srv.target.to_utf8();
                    let host = host.trim_end_matches('.');
                    // One host that does not resolve is skipped: the others are replicas.
                    let addrs = match lookup_host_or_ip(host, srv.port).await {
                        Ok(addrs) => addrs,
                        Err(why) => {
                            tracing::warn!(target = %t, host, error = %why, "An SRV target does not resolve; skipped.");
                            continue;
                        }
                    };
                    for a in addrs {
                        let u = base_url(scheme, a);
                        if !out.contains(&u) {
                            out.push(u);
                        }
                    }
                }
                if *scheme == "https" {
                    // The name to check is the service's domain the operator gave
                    // (`_indexer._tcp.sawmill.example` → `sawmill.example`), not a target a
                    // DNS answer names: whoever forges the answer would choose that.
                    let ips: Vec<IpAddr> = out
                        .iter()
                        .filter_map(|u| u.split_once("://"))
                        .filter_map(|(_, hp)| hp.parse::<SocketAddr>().ok())
                        .map(|a| a.ip())
                        .collect();
                    sawmill_http::tls::remember_name(service_domain(name), &ips);
                }
                Ok(out)
            }
        }
    }
}

/// The domain of an SRV name: `_indexer._tcp.sawmill.example` gives `sawmill.example`.
fn service_domain(srv: &str) -> &str {
    let mut rest = srv;
    while let Some(r) = rest.strip_prefix('_').and_then(|r| r.split_once('.')) {
        rest = r.1;
    }
    rest
}

/// `scheme://ip:port`, with brackets for IPv6.
fn base_url(scheme: &str, a: SocketAddr) -> String {
    match a.ip() {
        IpAddr::V4(ip) => format!("{scheme}://{ip}:{}", a.port()),
        IpAddr::V6(ip) => format!("{scheme}://[{ip}]:{}", a.port()),
    }
}

/// Every address of `name` through the system's resolver (getaddrinfo: /etc/hosts, then
/// DNS, as nsswitch says), deduplicated, in the order given.
async fn lookup(name: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let addrs = tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((name, port)))
        .await
        .map_err(|_| format!("{name}: no answer within {LOOKUP_TIMEOUT:?}"))?
        .map_err(|e| format!("{name}: {e}"))?;
    let mut out: Vec<SocketAddr> = Vec::new();
    for a in addrs {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    Ok(out)
}

/// An SRV target is usually a name, but may be an address.
async fn lookup_host_or_ip(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    match host.parse::<IpAddr>() {
        Ok(ip) => Ok(vec![SocketAddr::new(ip, port)]),
        Err(_) => lookup(host, port).await,
    }
}

/// Asks `url`'s health.
async fn health(http: &reqwest::Client, url: &str, timeout: Duration) -> Result<Health, String> {
    let started = Instant::now();
    let r = http
        .get(format!("{url}{}", api::HEALTHZ))
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| format!("{url}: {}", sawmill_http::describe(&e)))?;
    // A degraded replica answers 503 with the same body: it is still in its group.
    let body = r.bytes().await.map_err(|e| format!("{url}: {e}"))?;
    let h: Health = serde_json::from_slice(&body).map_err(|e| {
        format!(
            "{url}{} did not answer a health ({e}) after {:?}",
            api::HEALTHZ,
            started.elapsed()
        )
    })?;
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(url: &str, up: bool, error: Option<&str>) -> Member {
        Member {
            url: url.into(),
            target: 0,
            group: Some("g0".into()),
            replica: Some("r".into()),
            up,
            error: error.map(str::to_string),
            health: None,
        }
    }

    fn of(members: Vec<Member>) -> Membership {
        Membership {
            members,
            errors: vec![],
        }
    }

    #[test]
    fn new_health_figures_are_stored_but_wake_no_subscriber() {
        let (tx, mut rx) = watch::channel(Arc::new(of(vec![member("a", false, Some("1 s"))])));
        rx.borrow_and_update();
        publish(&tx, of(vec![member("a", false, Some("2 s"))]));
        assert!(!rx.has_changed().unwrap(), "same shape");
        assert_eq!(rx.borrow().members[0].error.as_deref(), Some("2 s"));
        publish(&tx, of(vec![member("a", true, None)]));
        assert!(rx.has_changed().unwrap(), "it is up now");
        rx.borrow_and_update();
        publish(
            &tx,
            of(vec![member("a", true, None), member("b", true, None)]),
        );
        assert!(rx.has_changed().unwrap(), "b joined");
    }

    #[test]
    fn an_srv_names_domain_is_what_its_replicas_certificates_name() {
        assert_eq!(
            service_domain("_indexer._tcp.sawmill.example"),
            "sawmill.example"
        );
        assert_eq!(
            service_domain("_indexer-g0._tcp.marathon.mesos"),
            "marathon.mesos"
        );
        assert_eq!(service_domain("plain.example"), "plain.example");
    }

    #[test]
    fn a_failed_lookup_keeps_the_last_good_answer_for_a_while() {
        let target = Target::Dns {
            scheme: "http",
            name: "tasks.indexer".into(),
            port: 7700,
        };
        let mut state = State {
            targets: vec![target.clone()],
            config: DiscoveryConfig::default(),
            http: reqwest::Client::new(),
            known: HashMap::new(),
            resolver: None,
            failing: HashMap::new(),
            last_good: HashMap::new(),
        };
        let t0 = Instant::now();
        let urls = vec!["http://127.0.0.2:7700".to_string()];
        let ok = state.answer(&target, Ok(urls.clone()), t0);
        assert_eq!(ok, (urls.clone(), None));
        let fail = || Err("SERVFAIL".to_string());
        let (kept, error) = state.answer(&target, fail(), t0 + Duration::from_secs(20));
        assert_eq!((kept, error.is_some()), (urls, true));
        let (kept, _) = state.answer(&target, fail(), t0 + Duration::from_secs(61));
        assert!(kept.is_empty(), "then it lists nothing");
        // An empty answer is an answer: nothing kept.
        let empty = state.answer(&target, Ok(vec![]), t0 + Duration::from_secs(62));
        assert_eq!(empty, (vec![], None));
    }
}
