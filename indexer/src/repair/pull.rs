//! The repair loop: every interval, the holdings of each peer against this replica's, and a
//! copy of what is missing here, through the normal ingest path at a bounded rate.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sawmill_cluster::{Discovery, DiscoveryConfig, Membership};
use sawmill_record::api::{
    self as paths, Holdings, KeyDigest, RepairByKey, RepairKeys, RepairKeysParams,
    RepairRecordsParams,
};
use time::OffsetDateTime;

use super::held::{key_digests, DigestCache};
use super::ranges::{self, Ranges};
use super::RepairConfig;
use crate::error::{Error, Result};
use crate::metrics::{RepairCopied, RepairFailed, RepairRound, M};
use crate::record::Record;
use crate::store::{check_age, Outcome, Store};

/// Records asked of a peer per request: large enough that a request's overhead is small,
/// small enough that one answer stays a few MB.
const PAGE: u64 = 2000;

/// Starts the loop on the runtime, or does nothing without peers. It ends with the task.
pub fn start(store: Store, config: RepairConfig) -> Option<tokio::task::JoinHandle<()>> {
    if config.peers.is_empty() {
        return None;
    }
    Some(tokio::spawn(run(store, config)))
}

async fn run(store: Store, config: RepairConfig) {
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "Cannot build an HTTP client; repair is off.");
            return;
        }
    };
    let discovery = Discovery::start(
        config.peers.clone(),
        DiscoveryConfig {
            interval: config.interval,
            health_timeout: Duration::from_secs(2),
        },
        http.clone(),
    )
    .await;
    let mut puller = Puller {
        store,
        http,
        rate: Rate::new(config.rate),
        cache: Arc::default(),
        gone: HashMap::new(),
        behind_since: None,
    };
    loop {
        let peers = peers_of(&discovery.current(), &puller.store);
        if !peers.is_empty() {
            puller.round(&peers).await;
        }
        tokio::time::sleep(config.interval).await;
    }
}

/// The members of this replica's group other than itself, up; compared by replica id,
/// since a DNS name lists this replica too.
fn peers_of(m: &Membership, store: &Store) -> Vec<String> {
    m.members
        .iter()
        .filter(|p| p.up && p.group.as_deref() == Some(store.group()))
        .filter(|p| p.replica.as_deref().is_some_and(|r| r != store.replica()))
        .map(|p| p.url.clone())
        .collect()
}

struct Puller {
    store: Store,
    http: reqwest::Client,
    rate: Rate,
    cache: Arc<DigestCache>,
    /// Per sender, `_seq` values a peer served that were past this replica's retention:
    /// never copied, so not counted as missing again.
    gone: HashMap<String, Ranges>,
    /// When this replica last found itself behind, for the time to converge.
    behind_since: Option<Instant>,
}

/// What this replica lacks, from one comparison.
#[derive(Default)]
struct Missing {
    /// Per sender, the `_seq` ranges missing here.
    seqs: Vec<(String, Ranges)>,
    /// Partitions whose `_key` digests differ, and how many records the peers have more.
    partitions: Vec<(i64, u64)>,
}

impl Missing {
    fn records(&self) -> u64 {
        let s: u64 = self.seqs.iter().map(|(_, r)| ranges::count(r)).sum();
        s.saturating_add(self.partitions.iter().map(|p| p.1).sum::<u64>())
    }
}

impl Puller {
    /// One comparison and copy with every peer.
    async fn round(&mut self, peers: &[String]) {
        let mut held = Vec::new();
        for url in peers {
            match self.holdings(url).await {
                Ok(h) => held.push((url.clone(), h)),
                Err(e) => RepairFailed {
                    peer: url,
                    error: &e,
                }
                .emit(self.store.metrics()),
            }
        }
        if held.is_empty() {
            return;
        }
        let missing = match self.missing(&held).await {
            Ok(m) => m,
            Err(e) => {
                return RepairFailed {
                    peer: "-",
                    error: &e,
                }
                .emit(self.store.metrics())
            }
        };
        let lag = missing.records();
        let started = Instant::now();
        RepairRound {
            lag,
            ranges: missing.seqs.iter().map(|(_, r)| r.len() as u64).sum(),
        }
        .emit(self.store.metrics());
        if lag == 0 && missing.partitions.is_empty() {
            return self.caught_up();
        }
        self.behind_since.get_or_insert(started);
        self.store.repair_status().set(lag, true);
        tracing::info!(
            lag,
            peers = held.len(),
            "Copying what the peers hold and this replica lacks."
        );
        let left = self.copy_seqs(&held, &missing.seqs, lag).await;
        for &(start, _) in &missing.partitions {
            for (url, _) in &held {
                if let Err(e) = self.copy_partition(url, start).await {
                    RepairFailed {
                        peer: url,
                        error: &e,
                    }
                    .emit(self.store.metrics());
                }
            }
        }
        // What is still missing shows at the next comparison; until then, what could not
        // be copied this round (records a peer has not made searchable yet, say).
        if left == 0 {
            self.caught_up();
        } else {
            self.store.repair_status().set(left, true);
        }
    }

    /// Copies the missing `_seq` ranges, each from the first peer holding it; returns how
    /// many of `lag` records are left.
    async fn copy_seqs(
        &mut self,
        held: &[(String, Holdings)],
        missing: &[(String, Ranges)],
        lag: u64,
    ) -> u64 {
        let mut left = lag;
        for (src, want) in missing {
            let mut want = want.clone();
            for (url, h) in held {
                let Some(theirs) = h.sources.iter().find(|s| &s.src == src) else {
                    continue;
                };
                let here = ranges::subtract(&want, &ranges::subtract(&want, &theirs.ranges));
                let mut done = Vec::new();
                for [from, to] in ranges::pieces(&here, PAGE) {
                    if let Err(e) = self.copy_range(url, src, from, to).await {
                        RepairFailed {
                            peer: url,
                            error: &e,
                        }
                        .emit(self.store.metrics());
                        break;
                    }
                    done.push([from, to]);
                    left = left.saturating_sub(to - from + 1);
                    self.store.repair_status().set(left, true);
                }
                // Not asked of the next peer again.
                want = ranges::subtract(&want, &ranges::normalize(done));
            }
        }
        left
    }

    /// Nothing is missing here: the end of an episode of catching up, if one was running.
    fn caught_up(&mut self) {
        self.store.repair_status().set(0, false);
        if let Some(since) = self.behind_since.take() {
            let took = since.elapsed();
            self.store
                .metrics()
                .set(M::RepairConvergeSeconds, took.as_micros() as u64);
            tracing::info!(seconds = took.as_secs_f64(), "Caught up with the peers.");
        }
    }

    async fn holdings(&self, url: &str) -> Result<Holdings> {
        let body = self.get(url, paths::REPAIR_HOLDINGS, &[]).await?;
        serde_json::from_slice(&body).map_err(|e| peer_error(url, e))
    }

    /// The union of the peers' holdings minus this replica's.
    async fn missing(&self, held: &[(String, Holdings)]) -> Result<Missing> {
        let (ours, _) = self.store.seq_ranges(usize::MAX);
        let ours: HashMap<String, Ranges> = ours.into_iter().collect();
        let mut theirs: HashMap<&str, Ranges> = HashMap::new();
        for (_, h) in held {
            for s in &h.sources {
                theirs.entry(&s.src).or_default().extend(&s.ranges);
            }
        }
        let mut seqs = Vec::new();
        for (src, r) in theirs {
            let mut lack =
                ranges::subtract(&ranges::normalize(r), ours.get(src).map_or(&[][..], |v| v));
            if let Some(gone) = self.gone.get(src) {
                lack = ranges::subtract(&lack, gone);
            }
            if !lack.is_empty() {
                seqs.push((src.to_string(), lack));
            }
        }
        seqs.sort();
        let (store, cache) = (self.store.clone(), self.cache.clone());
        let digests = tokio::task::spawn_blocking(move || key_digests(&store, &cache)).await?;
        let ours: HashMap<i64, KeyDigest> = digests?.into_iter().map(|d| (d.start, d)).collect();
        let mut partitions: HashMap<i64, u64> = HashMap::new();
        for (_, h) in held {
            for d in &h.partitions {
                let mine = ours.get(&d.start);
                if mine.is_some_and(|m| m.count == d.count && m.hash == d.hash) {
                    continue;
                }
                // A partition that differs but is not smaller here still gets its keys
                // compared: each side may lack some.
                let more = d.count.saturating_sub(mine.map_or(0, |m| m.count));
                let e = partitions.entry(d.start).or_default();
                *e = (*e).max(more);
            }
        }
        let mut partitions: Vec<_> = partitions.into_iter().collect();
        partitions.sort();
        Ok(Missing { seqs, partitions })
    }

    /// Copies `src`'s records `from..=to` from the peer at `url`.
    async fn copy_range(&mut self, url: &str, src: &str, from: u64, to: u64) -> Result<()> {
        let params = RepairRecordsParams {
            src: src.to_string(),
            from,
            to,
            limit: (to - from + 1) as usize,
        };
        let query = serde_urlencoded_pairs(&params);
        let body = self.get(url, paths::REPAIR_RECORDS, &query).await?;
        let skipped = self.ingest_copied(url, &body).await?;
        if !skipped.is_empty() {
            let gone = self.gone.entry(src.to_string()).or_default();
            gone.extend(skipped.into_iter().map(|s| [s, s]));
            *gone = ranges::normalize(std::mem::take(gone));
        }
        Ok(())
    }

    /// Copies the `_key` records of partition `start` that the peer at `url` holds and this
    /// replica lacks, listing the peer's keys a page at a time.
    async fn copy_partition(&mut self, url: &str, start: i64) -> Result<()> {
        let mut after = None;
        loop {
            let params = RepairKeysParams {
                start,
                after: after.clone(),
                limit: PAGE as usize,
            };
            let mut query = vec![("start".to_string(), start.to_string())];
            query.push(("limit".into(), params.limit.to_string()));
            if let Some(a) = &params.after {
                query.push(("after".into(), a.clone()));
            }
            let body = self.get(url, paths::REPAIR_KEYS, &query).await?;
            let page: RepairKeys = serde_json::from_slice(&body).map_err(|e| peer_error(url, e))?;
            let lacking = self.store.lacking_ids(page.keys);
            if !lacking.is_empty() {
                let req = RepairByKey {
                    start,
                    keys: lacking,
                };
                let body = self
                    .http
                    .post(format!("{url}{}", paths::REPAIR_BY_KEY))
                    .header("content-type", "application/json")
                    .body(serde_json::to_vec(&req).unwrap_or_default())
                    .send()
                    .await
                    .map_err(|e| peer_error(url, e))?;
                let body = answer(url, body).await?;
                self.ingest_copied(url, &body).await?;
            }
            match page.next {
                Some(n) => after = Some(n),
                None => return Ok(()),
            }
        }
    }

    /// Stores copied records (NDJSON in the stored form) through the normal ingest path, at
    /// the rate allowed; returns the `_seq`s left out as past this replica's retention
    /// (they would be removed at once; copying them back would undo retention).
    async fn ingest_copied(&mut self, url: &str, body: &[u8]) -> Result<Vec<u64>> {
        let now = OffsetDateTime::now_utc();
        let retention = self.store.retention();
        let mut records = Vec::new();
        let mut skipped = Vec::new();
        for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let text = std::str::from_utf8(line).map_err(|e| peer_error(url, e))?;
            let rec = Record::from_source(text).map_err(|e| peer_error(url, e))?;
            if check_age(retention, rec.ts, now).is_err() {
                if let Some(crate::DedupKey::Seq { seq, .. }) = &rec.key {
                    skipped.push(*seq);
                }
                continue;
            }
            records.push(rec);
        }
        let n = records.len() as u64;
        let outcomes = self.store.ingest(records).await?;
        RepairCopied {
            stored: outcomes
                .iter()
                .filter(|o| matches!(o, Outcome::Stored(_)))
                .count() as u64,
            skipped: skipped.len() as u64,
        }
        .emit(self.store.metrics());
        self.rate.take(n).await;
        Ok(skipped)
    }

    /// The body of a 200 answer to `GET url+path?query`.
    async fn get(&self, url: &str, path: &str, query: &[(String, String)]) -> Result<Vec<u8>> {
        let resp = self
            .http
            .get(format!("{url}{path}"))
            .query(query)
            .send()
            .await
            .map_err(|e| peer_error(url, e))?;
        answer(url, resp).await
    }
}

fn serde_urlencoded_pairs(p: &RepairRecordsParams) -> Vec<(String, String)> {
    vec![
        ("src".into(), p.src.clone()),
        ("from".into(), p.from.to_string()),
        ("to".into(), p.to.to_string()),
        ("limit".into(), p.limit.to_string()),
    ]
}

async fn answer(url: &str, resp: reqwest::Response) -> Result<Vec<u8>> {
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| peer_error(url, e))?;
    if !status.is_success() {
        let why = sawmill_record::api::ErrorBody::message_of(&body);
        return Err(Error::Peer(format!(
            "peer `{url}` answered {status}: {why}"
        )));
    }
    Ok(body.to_vec())
}

fn peer_error(url: &str, e: impl std::fmt::Display) -> Error {
    Error::Peer(format!("peer `{url}`: {e}"))
}

/// At most `per_second` records on average: each batch pushes the next allowed instant on.
struct Rate {
    per_second: u64,
    next: Instant,
}

impl Rate {
    fn new(per_second: u64) -> Rate {
        Rate {
            per_second: per_second.max(1),
            next: Instant::now(),
        }
    }

    async fn take(&mut self, n: u64) {
        let now = Instant::now();
        // Time not used is not saved up beyond one second's worth.
        if self.next + Duration::from_secs(1) < now {
            self.next = now - Duration::from_secs(1);
        }
        self.next += Duration::from_secs_f64(n as f64 / self.per_second as f64);
        if self.next > now {
            tokio::time::sleep_until(self.next.into()).await;
        }
    }
}
