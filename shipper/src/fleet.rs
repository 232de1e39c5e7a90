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

use sawmill_cluster::{Membership, Target};
use tokio::sync::watch;

use crate::forward::{Replica, Shortfall};
use crate::metrics::Metrics;

/// The group a replica's `/healthz` names when started without `--group`.
pub const DEFAULT_GROUP: &str = "default";

/// How the fleet starts and retires senders.
pub struct FleetConfig {
    pub client: reqwest::Client,
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
    /// The groups records are placed on, sorted: those with a replica discovery lists.
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

    /// Takes in a new membership, and gives up replicas gone longer than their grace.
    /// Returns whether the group names changed (placement must then be recomputed).
    pub fn refresh(&mut self) -> bool {
        // Called for every record: an atomic load when nothing changed.
        let mut changed = false;
        if self.membership.has_changed().unwrap_or(false) {
            let now = self.membership.borrow_and_update().clone();
            changed = self.apply(&now);
        }
        if self.gone > 0 {
            self.retire_expired();
        }
        changed
    }

    /// The group of `m`: what its `/healthz` said; for a fixed URL not heard from yet,
    /// `default` as long as no other group is known (a single-group setup, as before
    /// groups existed), so that a replica down at start still gets its backlog.
    fn group_of<'m>(&self, m: &'m sawmill_cluster::Member, only_default: bool) -> Option<&'m str> {
        match &m.group {
            Some(g) => Some(g),
            None if only_default && self.fixed.get(m.target).copied().unwrap_or(false) => {
                Some(DEFAULT_GROUP)
            }
            None => None,
        }
    }

    /// Returns whether the group names changed.
    fn apply(&mut self, now: &Membership) -> bool {
        let only_default = now
            .members
            .iter()
            .all(|m| m.group.as_deref().is_none_or(|g| g == DEFAULT_GROUP));
        let mut listed = Vec::new();
        for m in &now.members {
            let Some(group) = self.group_of(m, only_default) else {
                continue;
            };
            listed.push(m.url.clone());
            match self.entries.get_mut(&m.url) {
                Some(e) => {
                    if e.gone_since.take().is_some() {
                        e.replica.m.set_state("live");
                        tracing::info!(replica = %m.url, %group, "Replica is listed again; it keeps its backlog.");
                    }
                    if e.group != group {
                        e.replica.m.set_group(group);
                        let (from, replica) = (e.group.clone(), e.replica.clone());
                        e.group = group.to_string();
                        if let Some(s) = self.short.get(&from) {
                            s.left(&replica);
                        }
                        self.joined(group, &replica);
                    }
                }
                None => {
                    let fixed = self.fixed.get(m.target).copied().unwrap_or(false);
                    self.add(&m.url, group, fixed)
                }
            }
        }
        for (url, e) in &mut self.entries {
            if e.gone_since.is_none() && !listed.contains(url) {
                e.gone_since = Some(Instant::now());
                e.replica.m.set_state("gone");
                tracing::warn!(replica = %url, group = %e.group, grace_secs = self.cfg.grace.as_secs(), "Replica is no longer listed; it keeps its backlog until its grace ends.");
            }
        }
        let mut groups: Vec<String> = self
            .entries
            .values()
            .filter(|e| e.gone_since.is_none())
            .map(|e| e.group.clone())
            .collect();
        groups.sort_unstable();
        groups.dedup();
        self.gone = self
            .entries
            .values()
            .filter(|e| e.gone_since.is_some())
            .count();
        if groups == self.groups {
            return false;
        }
        tracing::info!(?groups, "Records are placed on these groups now.");
        self.groups = groups;
        true
    }

    /// A replica discovery found: it gets a backlog and a sender, and receives new batches
    /// of its group from now on.
    fn add(&mut self, url: &str, group: &str, fixed: bool) {
        let m = self.metrics.add_replica(url, group);
        let replica = Arc::new(Replica::new(url.to_string(), m, self.cfg.backlog_bytes));
        let task = self.cfg.runtime.spawn(replica.clone().run(
            self.cfg.client.clone(),
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
                self.gone -= 1;
                if let Some(s) = self.short.get(&e.group) {
                    s.left(&e.replica);
                }
                // Its sender drops the backlog, counts it and ends by itself.
                e.replica.retire();
            }
        }
    }

    /// The replicas a batch of `group` goes to: those listed, and those within their
    /// grace (a batch placed just before its group's last replica left still waits for
    /// it, rather than going elsewhere).
    pub fn replicas_of(&self, group: &str) -> Vec<Arc<Replica>> {
        self.entries
            .values()
            .filter(|e| e.group == group)
            .map(|e| e.replica.clone())
            .collect()
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
