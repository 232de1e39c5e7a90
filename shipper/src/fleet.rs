//! The replicas the batcher sends to, kept in step with discovery: a backlog and sender
//! for every replica as it appears, the group each belongs to, a grace period for one that
//! left before its backlog is given up, and the group names that placement chooses from.
//!
//! It lives on the batcher's thread and is read there only, so that a batch is always
//! handed to the replicas of the group set it was placed with.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sawmill_cluster::{Member, Membership, Target};
use tokio::sync::watch;

use crate::forward::{Replica, Shortfall};
use crate::metrics::Metrics;

/// The group a replica's `/healthz` names when started without `--group`.
pub const DEFAULT_GROUP: &str = "default";

/// How the fleet starts and retires senders.
pub struct FleetConfig {
    pub client: reqwest::Client,
    /// The token the senders present.
    pub token: Arc<sawmill_http::ClientToken>,
    pub runtime: tokio::runtime::Handle,
    pub stop: Arc<AtomicBool>,
    pub backlog_bytes: u64,
    /// How long a replica gone from discovery keeps its backlog (`--replica-grace`).
    pub grace: Duration,
    pub ack_replicas: usize,
}

/// A replica the batcher knows.
struct Entry {
    replica: Arc<Replica>,
    group: String,
    /// Its replica id, once its `/healthz` said it.
    id: Option<String>,
    /// Its group is presumed (`default`), not said.
    presumed: bool,
    /// When discovery stopped listing it.
    gone_since: Option<Instant>,
    task: tokio::task::JoinHandle<()>,
}

pub struct Fleet {
    cfg: FleetConfig,
    metrics: Arc<Metrics>,
    membership: watch::Receiver<Arc<Membership>>,
    /// Per `--indexer`, whether it is a fixed URL.
    fixed: Vec<bool>,
    /// By URL.
    entries: BTreeMap<String, Entry>,
    /// The groups records are placed on, sorted: those with a replica known (listed, or
    /// within its grace).
    groups: Vec<String>,
    /// Per group, the batches waiting for one more replica (`--ack-replicas`).
    short: BTreeMap<String, Arc<Shortfall>>,
    /// Entries no longer listed, within their grace.
    gone: usize,
}

impl Fleet {
    pub fn new(
        cfg: FleetConfig,
        metrics: Arc<Metrics>,
        targets: &[Target],
        membership: watch::Receiver<Arc<Membership>>,
    ) -> Fleet {
        let mut fleet = Fleet {
            cfg,
            metrics,
            membership,
            fixed: targets
                .iter()
                .map(|t| matches!(t, Target::Fixed(_)))
                .collect(),
            entries: BTreeMap::new(),
            groups: Vec::new(),
            short: BTreeMap::new(),
            gone: 0,
        };
        let now = fleet.membership.borrow_and_update().clone();
        fleet.apply(&now);
        fleet
    }

    /// The group names records are placed on now, sorted.
    pub fn groups(&self) -> &[String] {
        &self.groups
    }

    /// Whether [`Fleet::refresh`] has anything to take in: a new membership, or a replica
    /// whose grace ended. The batcher then sends what it is filling first, so that every
    /// pending batch goes to the replicas it was placed for.
    pub fn news(&self) -> bool {
        // Asked for every record: an atomic load when nothing changed.
        self.membership.has_changed().unwrap_or(false) || (self.gone > 0 && self.expired_any())
    }

    /// Takes in a new membership, and gives up replicas gone longer than their grace.
    /// Returns whether the group names changed (placement must then be recomputed).
    pub fn refresh(&mut self) -> bool {
        let mut changed = false;
        if self.membership.has_changed().unwrap_or(false) {
            let now = self.membership.borrow_and_update().clone();
            changed = self.apply(&now);
        }
        if self.gone > 0 && self.expired_any() {
            self.retire_expired();
            changed |= self.regroup();
        }
        changed
    }

    /// The group of `m`: what its `/healthz` said. A fixed URL not heard from yet is
    /// presumed in `default` when `presume` (see [`Fleet::presume_default`]). Otherwise it
    /// has none yet and gets no batch: presuming a group it is not in would put its share
    /// of records on a group that may not exist, and both copies in two groups.
    fn group_of<'m>(&self, m: &'m Member, presume: bool) -> Option<&'m str> {
        match &m.group {
            Some(g) => Some(g),
            None if presume && self.fixed.get(m.target).copied().unwrap_or(false) => {
                Some(DEFAULT_GROUP)
            }
            None => None,
        }
    }

    /// Whether fixed URLs not heard from yet are presumed in `default`: once some replica
    /// said `default` and none another group (a single-group setup, as before groups
    /// existed, where a replica down at start still gets its backlog), or when it is the
    /// only replica there is (its records have nowhere else to go, whatever its group).
    fn presume_default(now: &Membership) -> bool {
        let mut said = now.members.iter().filter_map(|m| m.group.as_deref());
        match said.next() {
            Some(first) => first == DEFAULT_GROUP && said.all(|g| g == DEFAULT_GROUP),
            None => now.members.len() == 1,
        }
    }

    /// Returns whether the group names changed.
    fn apply(&mut self, now: &Membership) -> bool {
        let presume = Self::presume_default(now);
        let lone = now.members.len() == 1 && self.entries.len() <= 1;
        let mut listed = Vec::new();
        for m in &now.members {
            let Some(group) = self.group_of(m, presume) else {
                continue;
            };
            listed.push(m.url.clone());
            self.take_in(m, group, lone);
        }
        self.unlisted(&listed);
        self.regroup()
    }

    /// Takes in the listed member `m` of `group`.
    fn take_in(&mut self, m: &Member, group: &str, lone: bool) {
        let (mut regrouped, mut moved) = (None, false);
        if let Some(e) = self.entries.get(&m.url) {
            let new_id = e.id.is_some() && m.replica.is_some() && e.id != m.replica;
            if e.group != group && e.presumed && lone && !new_id {
                // The only replica's presumed group, now known: what it holds was all
                // meant for it anyway.
                regrouped = Some((e.group.clone(), e.replica.clone()));
            } else {
                moved = e.group != group || new_id;
            }
        }
        if moved {
            // Another replica at the same address (an IP reused by another task, or a
            // presumed group that was wrong): the old backlog was meant for the old one.
            self.replace(&m.url, group);
        }
        if let Some((from, r)) = &regrouped {
            if let Some(s) = self.short.get(from) {
                s.left(r);
            }
            r.m.set_group(group);
        }
        let Some(e) = self.entries.get_mut(&m.url) else {
            let fixed = self.fixed.get(m.target).copied().unwrap_or(false);
            return self.add(m, group, fixed);
        };
        e.group = group.to_string();
        e.presumed = m.group.is_none();
        if e.id.is_none() {
            e.id = m.replica.clone();
            e.replica.m.set_replica_id(m.replica.as_deref());
        }
        let relisted = e.gone_since.take().is_some();
        if relisted {
            e.replica.m.set_state("live");
            tracing::info!(replica = %m.url, %group, "Replica is listed again; it keeps its backlog.");
        }
        if relisted || regrouped.is_some() {
            let r = e.replica.clone();
            self.joined(group, &r);
        }
    }

    /// Marks the entries `listed` does not name as gone: they keep what they hold until
    /// their grace ends, but take no new batch.
    fn unlisted(&mut self, listed: &[String]) {
        for (url, e) in &mut self.entries {
            if e.gone_since.is_none() && !listed.contains(url) {
                e.gone_since = Some(Instant::now());
                e.replica.m.set_state("gone");
                if let Some(s) = self.short.get(&e.group) {
                    s.left(&e.replica);
                }
                tracing::warn!(replica = %url, group = %e.group, grace_secs = self.cfg.grace.as_secs(), "Replica is no longer listed; it keeps its backlog until its grace ends.");
            }
        }
        self.gone = self
            .entries
            .values()
            .filter(|e| e.gone_since.is_some())
            .count();
    }

    /// Recomputes the group names: every group with a replica known, listed or within its
    /// grace. A group whose replicas all stopped being listed (a task restarting: Swarm and
    /// Kubernetes unlist it at once) keeps its records rather than see them re-routed; it
    /// leaves only when its last replica is given up. Returns whether the names changed.
    fn regroup(&mut self) -> bool {
        let mut groups: Vec<String> = self.entries.values().map(|e| e.group.clone()).collect();
        groups.sort_unstable();
        groups.dedup();
        // A group gone for good: the batches waiting there for --ack-replicas never will be
        // acknowledged enough; files read them again.
        let left: Vec<String> = self
            .short
            .keys()
            .filter(|g| !groups.contains(g))
            .cloned()
            .collect();
        for g in left {
            if let Some(s) = self.short.remove(&g) {
                s.abandon();
            }
        }
        if groups == self.groups {
            return false;
        }
        tracing::info!(?groups, "Records are placed on these groups now.");
        self.groups = groups;
        true
    }

    /// Gives up the entry at `url` at once (its backlog dropped, counted) for a new one.
    fn replace(&mut self, url: &str, group: &str) {
        if let Some(e) = self.entries.remove(url) {
            tracing::warn!(replica = %url, from = %e.group, to = %group, "Another replica answers at this address; the backlog kept for the old one is given up.");
            self.retire(e);
        }
    }

    fn retire(&mut self, e: Entry) {
        if e.gone_since.is_some() {
            self.gone = self.gone.saturating_sub(1);
        }
        if let Some(s) = self.short.get(&e.group) {
            s.left(&e.replica);
        }
        // Its sender drops the backlog, counts it and ends by itself.
        e.replica.retire();
    }

    /// A replica discovery found: it gets a backlog and a sender, and receives new batches
    /// of its group from now on.
    fn add(&mut self, member: &Member, group: &str, fixed: bool) {
        let url = member.url.as_str();
        let m = self.metrics.add_replica(url, group);
        m.set_replica_id(member.replica.as_deref());
        let replica = Arc::new(Replica::new(url.to_string(), m, self.cfg.backlog_bytes));
        let task = self.cfg.runtime.spawn(replica.clone().run(
            self.cfg.client.clone(),
            self.cfg.token.clone(),
            self.metrics.clone(),
            self.cfg.stop.clone(),
            self.cfg.grace,
        ));
        if fixed {
            // Given on the command line: not news.
            tracing::debug!(replica = %url, %group, "Sending to a replica.");
        } else {
            tracing::info!(replica = %url, %group, "Found a replica.");
        }
        self.entries.insert(
            url.to_string(),
            Entry {
                replica: replica.clone(),
                group: group.to_string(),
                id: member.replica.clone(),
                presumed: member.group.is_none(),
                gone_since: None,
                task,
            },
        );
        self.joined(group, &replica);
    }

    /// `replica` joined `group`: it takes the batches waiting there for one more replica.
    fn joined(&mut self, group: &str, replica: &Arc<Replica>) {
        if let Some(s) = self.shortfall(group) {
            s.joined(replica, &self.metrics);
        }
    }

    fn expired_any(&self) -> bool {
        let grace = self.cfg.grace;
        self.entries
            .values()
            .any(|e| e.gone_since.is_some_and(|t| t.elapsed() >= grace))
    }

    fn retire_expired(&mut self) {
        let grace = self.cfg.grace;
        let expired: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.gone_since.is_some_and(|t| t.elapsed() >= grace))
            .map(|(u, _)| u.clone())
            .collect();
        for url in expired {
            if let Some(e) = self.entries.remove(&url) {
                self.retire(e);
            }
        }
    }

    /// The replicas a new batch of `group` goes to: those listed. While none is (its only
    /// replica restarting, say), those within their grace keep receiving them, bounded by
    /// their backlogs: the group's records wait there rather than go to another group.
    pub fn replicas_of(&self, group: &str) -> Vec<Arc<Replica>> {
        let of_group = || self.entries.values().filter(|e| e.group == group);
        let listed: Vec<Arc<Replica>> = of_group()
            .filter(|e| e.gone_since.is_none())
            .map(|e| e.replica.clone())
            .collect();
        if !listed.is_empty() {
            return listed;
        }
        of_group().map(|e| e.replica.clone()).collect()
    }

    /// Where `group`'s batches wait for one more replica, with `--ack-replicas` > 1.
    pub fn shortfall(&mut self, group: &str) -> Option<Arc<Shortfall>> {
        if self.cfg.ack_replicas <= 1 {
            return None;
        }
        let s = self
            .short
            .entry(group.to_string())
            .or_insert_with(|| Arc::new(Shortfall::new(group)));
        Some(s.clone())
    }

    pub fn ack_replicas(&self) -> usize {
        self.cfg.ack_replicas
    }

    /// Every replica still known, for a stop.
    pub fn replicas(&self) -> Vec<Arc<Replica>> {
        self.entries.values().map(|e| e.replica.clone()).collect()
    }

    /// Ends every sender at once (a stop, once the drain is over).
    pub fn abort(&mut self) {
        for e in self.entries.values() {
            e.task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::AckTracker;
    use crate::forward::{Batch, BatchParts};

    fn member(url: &str, group: Option<&str>, id: &str) -> Member {
        Member {
            url: url.into(),
            target: 0,
            group: group.map(str::to_string),
            replica: Some(id.into()).filter(|i: &String| !i.is_empty()),
            up: group.is_some(),
            error: None,
            health: None,
        }
    }

    struct Setup {
        fleet: Fleet,
        tx: watch::Sender<Arc<Membership>>,
        metrics: Arc<Metrics>,
        _rt: tokio::runtime::Runtime,
    }

    /// A fleet over one target (`fixed` or a DNS name) whose replicas are `members`.
    fn setup(fixed: bool, grace: Duration, ack_replicas: usize, members: Vec<Member>) -> Setup {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let cfg = FleetConfig {
            client: reqwest::Client::new(),
            token: sawmill_http::ClientToken::none(),
            runtime: rt.handle().clone(),
            stop: Arc::new(AtomicBool::new(false)),
            backlog_bytes: 1 << 20,
            grace,
            ack_replicas,
        };
        let target = if fixed {
            Target::Fixed("http://a".into())
        } else {
            Target::Dns {
                scheme: "http",
                name: "indexers".into(),
                port: 80,
            }
        };
        let (tx, rx) = watch::channel(Arc::new(Membership {
            members,
            errors: vec![],
        }));
        let metrics = Arc::new(Metrics::default());
        let fleet = Fleet::new(cfg, metrics.clone(), &[target], rx);
        Setup {
            fleet,
            tx,
            metrics,
            _rt: rt,
        }
    }

    impl Setup {
        fn list(&mut self, members: Vec<Member>) -> bool {
            self.tx.send_replace(Arc::new(Membership {
                members,
                errors: vec![],
            }));
            assert!(self.fleet.news());
            self.fleet.refresh()
        }

        fn urls_of(&self, group: &str) -> Vec<String> {
            let rs = self.fleet.replicas_of(group);
            rs.iter().map(|r| r.url.clone()).collect()
        }
    }

    #[test]
    fn a_group_whose_only_replica_is_unlisted_keeps_its_place_and_its_batches() {
        let (a, b) = (member("a", Some("g0"), "ra"), member("b", Some("g1"), "rb"));
        let mut s = setup(false, Duration::from_secs(900), 1, vec![a.clone(), b]);
        assert_eq!(s.fleet.groups(), ["g0", "g1"]);
        // g1's only task restarts: DNS stops listing it at once.
        assert!(!s.list(vec![a.clone()]), "no group left");
        assert_eq!(s.fleet.groups(), ["g0", "g1"]);
        assert_eq!(s.urls_of("g1"), ["b"], "g1's records wait in its backlog");
    }

    #[test]
    fn a_replica_within_its_grace_takes_no_new_batch_while_its_group_has_another() {
        let (a, a2) = (
            member("a", Some("g0"), "ra"),
            member("a2", Some("g0"), "ra2"),
        );
        let mut s = setup(false, Duration::from_secs(900), 1, vec![a, a2.clone()]);
        s.list(vec![a2]);
        assert_eq!(s.urls_of("g0"), ["a2"]);
    }

    #[test]
    fn fixed_urls_not_heard_from_get_no_group_until_one_says_its_own() {
        let (a, b) = (member("a", None, ""), member("b", None, ""));
        let mut s = setup(true, Duration::from_secs(900), 1, vec![a, b.clone()]);
        assert!(s.fleet.groups().is_empty(), "{:?}", s.fleet.groups());
        // One says `default`: a single-group setup, the other is presumed in it.
        assert!(s.list(vec![member("a", Some("default"), "ra"), b.clone()]));
        assert_eq!(s.urls_of("default"), ["a", "b"]);
        // B turns out to be in g1: what it held for `default` is given up, not sent.
        let t = AckTracker::new(0);
        let parts = BatchParts {
            records: 10,
            rereadable: 10,
            pinned: false,
            received_micros_sum: 0,
            acks: vec![(t.clone(), 0..10)],
        };
        let old = s.fleet.replicas_of("default")[1].clone();
        let batch = Arc::new(Batch::new(vec![0; 10], parts, vec![old.m.clone()], 1, None));
        old.push(batch, &s.metrics);
        assert!(s.list(vec![
            member("a", Some("default"), "ra"),
            member("b", Some("g1"), "rb")
        ]));
        assert_eq!(s.urls_of("default"), ["a"]);
        let new = s.fleet.replicas_of("g1")[0].clone();
        assert!(!Arc::ptr_eq(&old, &new), "a fresh backlog");
        assert!(new.is_empty());
        // A new replica id at the same address is a fresh backlog too.
        s.list(vec![
            member("a", Some("default"), "ra"),
            member("b", Some("g1"), "rb2"),
        ]);
        assert!(!Arc::ptr_eq(&new, &s.fleet.replicas_of("g1")[0]));
    }

    #[test]
    fn a_lone_fixed_url_down_at_start_gets_its_backlog_and_keeps_it_whatever_its_group() {
        let mut s = setup(
            true,
            Duration::from_secs(900),
            1,
            vec![member("a", None, "")],
        );
        assert_eq!(s.urls_of("default"), ["a"]);
        let old = s.fleet.replicas_of("default")[0].clone();
        assert!(s.list(vec![member("a", Some("g0"), "ra")]));
        assert_eq!(s.fleet.groups(), ["g0"]);
        assert!(Arc::ptr_eq(&old, &s.fleet.replicas_of("g0")[0]));
    }

    #[test]
    fn a_group_given_up_settles_the_batches_waiting_for_ack_replicas_as_lost() {
        let (a, b) = (member("a", Some("g0"), "ra"), member("b", Some("g1"), "rb"));
        let mut s = setup(false, Duration::ZERO, 2, vec![a.clone(), b]);
        let short = s.fleet.shortfall("g1").unwrap();
        let b = s.fleet.replicas_of("g1")[0].clone();
        let t = AckTracker::new(0);
        let parts = BatchParts {
            records: 10,
            rereadable: 10,
            pinned: false,
            received_micros_sum: 0,
            acks: vec![(t.clone(), 0..10)],
        };
        let batch = Arc::new(Batch::new(vec![0; 10], parts, vec![b.m.clone()], 2, None));
        // B took it; the group has no second replica: it waits.
        short.hold(batch, 2, &s.metrics);
        assert_eq!(t.rewind(), None);
        // B is unlisted, and its grace (none here) is over at once.
        assert!(s.list(vec![a]), "g1 leaves");
        assert_eq!(s.fleet.groups(), ["g0"]);
        assert_eq!(t.rewind(), Some(0), "the file reads the lines again");
    }
}
