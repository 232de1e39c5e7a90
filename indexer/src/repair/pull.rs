//! The repair loop: every interval, the holdings of each peer against this replica's, and a
//! copy of what is missing here, through the normal ingest path at a bounded rate.
//!
//! A peer's answers are input like any other: holdings are checked (group, replica id,
//! sorted and bounded ranges), answers are read up to a cap, and a record counts as copied
//! only when it came back and is one that was asked for. What one peer did not supply is
//! asked of the next, and again at the next round.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sawmill_cluster::{Discovery, DiscoveryConfig, Membership};
use sawmill_record::api::{
    self as paths, Holdings, KeyDigest, RepairByKey, RepairHoldingsParams, RepairKeys,
    RepairKeysParams, RepairPeerParams, RepairRecordsParams, SourceRanges, MAX_HOLDINGS_RANGES,
    MAX_REPAIR_ANSWER_BYTES, MAX_REPAIR_BY_KEY_BODY,
};
use serde::Serialize;
use time::OffsetDateTime;

use super::held::key_digests;
use super::ranges::{self, Ranges};
use super::RepairConfig;
use crate::dedup::DedupKey;
use crate::error::{Error, Result};
use crate::metrics::{RepairCopied, RepairFailed, RepairRound, M};
use crate::record::Record;
use crate::store::{check_age, Outcome, Store};

/// Records or keys asked of a peer per request: large enough that a request's overhead is
/// small. The peer also stops an answer of records at [`MAX_REPAIR_ANSWER_BYTES`].
const PAGE: u64 = 2000;

/// The most bytes read of one answer. A records answer passes the peer's budget by at most
/// its last record; holdings of [`MAX_HOLDINGS_RANGES`] ranges take a few MB.
const MAX_ANSWER_READ: usize = 4 * MAX_REPAIR_ANSWER_BYTES;

/// The most `_seq` ranges kept of one peer's holdings, all pages together.
const MAX_PEER_RANGES: usize = 10 * MAX_HOLDINGS_RANGES;

/// The most partitions one peer's holdings may list (a year of hourly partitions is 8,760).
const MAX_PARTITIONS: usize = 100_000;

/// What each request is charged against `--repair-rate`, in records, besides the records
/// it brings: a peer answering little or nothing is still asked at a bounded rate.
const REQUEST_COST: u64 = PAGE / 100;

/// Starts the loop on the runtime, or does nothing without peers. It ends with the task.
pub fn start(store: Store, config: RepairConfig) -> Option<tokio::task::JoinHandle<()>> {
    if config.peers.is_empty() {
        return None;
    }
    // Until it has compared, this replica cannot know what it lacks: a new replica on an
    // empty disk must not look caught up.
    store.repair_status().begin();
    Some(tokio::spawn(run(store, config)))
}

async fn run(store: Store, config: RepairConfig) {
    let http = match config
        .connect
        .client(reqwest::Client::builder().timeout(Duration::from_secs(60)))
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
    let mut puller = Puller::new(store, http, config.rate);
    puller.token = config.connect.token.clone();
    loop {
        let peers = peers_of(&discovery.current(), &puller.store);
        if !peers.is_empty() {
            puller.round(&peers).await;
        }
        tokio::time::sleep(config.interval).await;
    }
}

/// A peer as found by discovery: its address, and the replica that answered there. The
/// address may reach another replica by the time it is asked, so every answer is checked
/// against the replica id.
#[derive(Clone, Debug)]
struct Peer {
    url: String,
    replica: String,
}

/// The members of this replica's group other than itself, up; compared by replica id,
/// since a DNS name lists this replica too.
fn peers_of(m: &Membership, store: &Store) -> Vec<Peer> {
    m.members
        .iter()
        .filter(|p| p.up && p.group.as_deref() == Some(store.group()))
        .filter_map(|p| {
            let replica = p.replica.as_deref().filter(|r| *r != store.replica())?;
            Some(Peer {
                url: p.url.clone(),
                replica: replica.to_string(),
            })
        })
        .collect()
}

/// A page of a peer's holdings (the senders after `after`), checked and normalised: the peer
/// must be the replica of this group it was found as, its senders must follow `after` and
/// its ranges be sorted, merged and bounded in number (they are subtracted, which needs
/// sorted input).
fn check_holdings(
    h: Holdings,
    peer: &Peer,
    group: &str,
    after: Option<&str>,
) -> std::result::Result<Holdings, String> {
    if h.group != group {
        return Err(format!("it is in group `{}`, not `{group}`", h.group));
    }
    if h.replica != peer.replica {
        return Err(format!(
            "it is replica `{}`, not `{}`",
            h.replica, peer.replica
        ));
    }
    let n = h
        .sources
        .iter()
        .map(|s| s.ranges.len())
        .fold(0, usize::saturating_add);
    if n > MAX_HOLDINGS_RANGES || h.partitions.len() > MAX_PARTITIONS {
        return Err(format!(
            "its holdings list {n} ranges and {} partitions, more than {MAX_HOLDINGS_RANGES} and {MAX_PARTITIONS}",
            h.partitions.len()
        ));
    }
    if let Some(a) = after.filter(|a| h.sources.iter().any(|s| s.src.as_str() <= *a)) {
        return Err(format!(
            "its page of holdings after `{a}` lists a sender before it"
        ));
    }
    if h.next
        .as_ref()
        .is_some_and(|n| h.sources.iter().all(|s| &s.src != n))
    {
        return Err("its holdings' `next` is not a sender of the page".into());
    }
    if h.sources.iter().flat_map(|s| &s.ranges).any(|[a, b]| a > b) {
        return Err("its holdings list a range that ends before it starts".into());
    }
    let mut by_src: BTreeMap<String, Ranges> = BTreeMap::new();
    for s in h.sources {
        by_src.entry(s.src).or_default().extend(s.ranges);
    }
    let sources = by_src
        .into_iter()
        .map(|(src, r)| SourceRanges {
            src,
            ranges: ranges::normalize(r),
        })
        .collect();
    Ok(Holdings { sources, ..h })
}

struct Puller {
    store: Store,
    http: reqwest::Client,
    /// The read token peers ask for.
    token: Arc<sawmill_http::ClientToken>,
    rate: Rate,
    /// Per sender, `_seq` values a peer served that were past this replica's retention:
    /// never copied, so not counted as missing again.
    gone: HashMap<String, Ranges>,
    /// When this replica last found itself behind, for the time to converge.
    behind_since: Option<Instant>,
    /// Records still missing in the round running, for `/healthz` while it copies.
    left: u64,
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
        let s = self.seqs.iter().map(|(_, r)| ranges::count(r));
        let p = self.partitions.iter().map(|p| p.1);
        s.chain(p).fold(0, u64::saturating_add)
    }
}

/// What a request asked for: an answer's record that is not one of these is left out.
enum Asked {
    Seqs { src: String, from: u64, to: u64 },
    Keys(HashSet<String>),
}

impl Asked {
    fn covers(&self, key: &DedupKey) -> bool {
        match (self, key) {
            (Asked::Seqs { src, from, to }, DedupKey::Seq { src: s, seq }) => {
                s == src && (from..=to).contains(&seq)
            }
            (Asked::Keys(keys), DedupKey::Id(id)) => keys.contains(id),
            _ => false,
        }
    }
}

/// An answer's records, sorted out.
#[derive(Default)]
struct Parsed {
    /// To store here.
    records: Vec<Record>,
    /// The key of every record asked for that came back, stored or past retention: what
    /// this peer supplied.
    supplied: Vec<DedupKey>,
    /// The `_seq`s past this replica's retention (left out; copying them back would undo
    /// retention).
    gone: Vec<u64>,
    /// Lines that were not a record asked for.
    bad: u64,
}

/// Sorts an answer's NDJSON lines (stored records) into [`Parsed`]. A bad line is counted
/// and left out, never failing the rest: one bad stored record must not block a sender.
fn parse_copied(
    body: &[u8],
    asked: &Asked,
    retention: Option<Duration>,
    now: OffsetDateTime,
) -> Parsed {
    let mut p = Parsed::default();
    for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let rec = std::str::from_utf8(line)
            .ok()
            .and_then(|t| Record::from_source(t).ok());
        let Some((rec, key)) = rec.and_then(|r| {
            let key = r.key.clone().filter(|k| asked.covers(k))?;
            Some((r, key))
        }) else {
            p.bad += 1;
            continue;
        };
        if check_age(retention, rec.ts, now).is_err() {
            if let DedupKey::Seq { seq, .. } = &key {
                p.gone.push(*seq);
            }
        } else {
            p.records.push(rec);
        }
        p.supplied.push(key);
    }
    p
}

impl Puller {
    fn new(store: Store, http: reqwest::Client, rate: u64) -> Puller {
        Puller {
            store,
            http,
            token: sawmill_http::ClientToken::none(),
            rate: Rate::new(rate),
            gone: HashMap::new(),
            behind_since: None,
            left: 0,
        }
    }

    /// One comparison and copy with every peer.
    async fn round(&mut self, peers: &[Peer]) {
        let mut held = Vec::new();
        for peer in peers {
            match self.holdings(peer).await {
                Ok(h) => held.push((peer.clone(), h)),
                Err(e) => self.failed(&peer.url, &e),
            }
        }
        if held.is_empty() {
            return;
        }
        let missing = match self.missing(&held).await {
            Ok(m) => m,
            Err(e) => {
                // This replica's own failure, not a peer's: logged, not counted as a failed
                // request to a peer.
                let why = "Repair could not list what this replica holds; retrying next round.";
                return tracing::warn!(error = %e, "{why}");
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
        self.left = lag;
        self.store.repair_status().set(lag, true);
        tracing::info!(
            lag,
            peers = held.len(),
            "Copying what the peers hold and this replica lacks."
        );
        self.copy_seqs(&held, &missing.seqs).await;
        for &(start, _) in &missing.partitions {
            for (peer, _) in &held {
                if let Err(e) = self.copy_partition(peer, start).await {
                    self.failed(&peer.url, &e);
                }
            }
        }
        // What is still missing shows at the next comparison; until then, what could not
        // be copied this round (records no peer supplied, say, not yet searchable there).
        if self.left == 0 {
            self.caught_up();
        } else {
            self.store.repair_status().set(self.left, true);
        }
    }

    fn failed(&self, peer: &str, error: &Error) {
        RepairFailed { peer, error }.emit(self.store.metrics());
    }

    /// Copies the missing `_seq` ranges, each from the peers holding it in turn: what one
    /// peer did not supply is asked of the next.
    async fn copy_seqs(&mut self, held: &[(Peer, Holdings)], missing: &[(String, Ranges)]) {
        let theirs: Vec<HashMap<&str, &Ranges>> = held
            .iter()
            .map(|(_, h)| {
                h.sources
                    .iter()
                    .map(|s| (s.src.as_str(), &s.ranges))
                    .collect()
            })
            .collect();
        for (src, want) in missing {
            let mut want = want.clone();
            for ((peer, _), theirs) in held.iter().zip(&theirs) {
                let Some(has) = theirs.get(src.as_str()) else {
                    continue;
                };
                let here = ranges::intersect(&want, has);
                for [from, to] in here {
                    if let Err(e) = self.copy_range(peer, src, from, to, &mut want).await {
                        self.failed(&peer.url, &e);
                        break;
                    }
                }
            }
        }
    }

    /// Copies `src`'s records `from..=to` from `peer`, a page at a time (the peer answers
    /// the lowest `_seq`s it holds in the range), taking what came back out of `want`.
    async fn copy_range(
        &mut self,
        peer: &Peer,
        src: &str,
        mut from: u64,
        to: u64,
        want: &mut Ranges,
    ) -> Result<()> {
        loop {
            let params = RepairRecordsParams {
                src: src.to_string(),
                from,
                to,
                limit: PAGE as usize,
                replica: Some(peer.replica.clone()),
            };
            let body = self.get(peer, paths::REPAIR_RECORDS, &params).await?;
            let asked = Asked::Seqs {
                src: src.to_string(),
                from,
                to,
            };
            let parsed = self.ingest_copied(body, asked).await?;
            if !parsed.gone.is_empty() {
                let gone = self.gone.entry(src.to_string()).or_default();
                gone.extend(parsed.gone.iter().map(|&s| [s, s]));
                *gone = ranges::normalize(std::mem::take(gone));
            }
            let got: Ranges = parsed
                .supplied
                .iter()
                .filter_map(|k| match k {
                    DedupKey::Seq { seq, .. } => Some([*seq, *seq]),
                    DedupKey::Id(_) => None,
                })
                .collect();
            // Nothing in the rest of the range: the peer does not hold it (trimmed, or not
            // searchable yet there), whatever its holdings said.
            let Some(last) = got.iter().map(|r| r[1]).max() else {
                return Ok(());
            };
            let before = ranges::count(want);
            *want = ranges::subtract(want, &ranges::normalize(got));
            self.left = self.left.saturating_sub(before - ranges::count(want));
            self.store.repair_status().set(self.left, true);
            if last >= to {
                return Ok(());
            }
            from = last + 1;
        }
    }

    /// Nothing is missing here: the end of an episode of catching up, if one was running.
    fn caught_up(&mut self) {
        self.left = 0;
        self.store.repair_status().set(0, false);
        if let Some(since) = self.behind_since.take() {
            let took = since.elapsed();
            self.store
                .metrics()
                .set(M::RepairConvergeSeconds, took.as_micros() as u64);
            tracing::info!(seconds = took.as_secs_f64(), "Caught up with the peers.");
        }
    }

    /// All of `peer`'s holdings, a page of senders at a time.
    async fn holdings(&self, peer: &Peer) -> Result<Holdings> {
        let mut all = Holdings::default();
        let mut after: Option<String> = None;
        let mut ranges = 0usize;
        loop {
            let params = RepairHoldingsParams {
                after: after.clone(),
                replica: Some(peer.replica.clone()),
            };
            let body = self.get(peer, paths::REPAIR_HOLDINGS, &params).await?;
            let h = serde_json::from_slice(&body).map_err(|e| peer_error(&peer.url, e))?;
            let h = check_holdings(h, peer, self.store.group(), after.as_deref())
                .map_err(|e| peer_error(&peer.url, e))?;
            // A sender counts as a range at least, so pages of empty senders end too.
            ranges += h
                .sources
                .iter()
                .map(|s| s.ranges.len().max(1))
                .sum::<usize>();
            if ranges > MAX_PEER_RANGES {
                let why = format!("its holdings list more than {MAX_PEER_RANGES} ranges");
                return Err(peer_error(&peer.url, why));
            }
            let next = h.next.clone();
            if after.is_none() {
                all = h;
            } else {
                all.sources.extend(h.sources);
            }
            // Each page's senders follow the last page's (checked), so the loop ends.
            match next {
                Some(n) => after = Some(n),
                None => return Ok(all),
            }
        }
    }

    /// The union of the peers' holdings minus this replica's.
    async fn missing(&mut self, held: &[(Peer, Holdings)]) -> Result<Missing> {
        // Off the async threads: listing the ranges holds the de-duplication lock, and
        // hashing new segments reads their terms.
        let store = self.store.clone();
        let (ours, digests) = tokio::task::spawn_blocking(move || {
            let ours = store.all_seq_ranges();
            (ours, key_digests(&store))
        })
        .await?;
        let ours: HashMap<String, Ranges> = ours.into_iter().collect();
        let mut theirs: HashMap<&str, Ranges> = HashMap::new();
        for (_, h) in held {
            for s in &h.sources {
                theirs.entry(&s.src).or_default().extend(&s.ranges);
            }
        }
        // What retention keeps out is remembered only while a peer still lists it, so the
        // memory of it shrinks as the peers' own retention removes it.
        self.gone.retain(|src, _| theirs.contains_key(src.as_str()));
        let mut seqs = Vec::new();
        for (src, r) in theirs {
            let r = ranges::normalize(r);
            let mut lack = ranges::subtract(&r, ours.get(src).map_or(&[][..], |v| v));
            if let Some(gone) = self.gone.get_mut(src) {
                *gone = ranges::intersect(gone, &r);
                lack = ranges::subtract(&lack, gone);
            }
            if !lack.is_empty() {
                seqs.push((src.to_string(), lack));
            }
        }
        seqs.sort();
        let ours: HashMap<i64, KeyDigest> = digests?.into_iter().map(|d| (d.start, d)).collect();
        Ok(Missing {
            seqs,
            partitions: differing(&ours, held),
        })
    }

    /// Copies the `_key` records of partition `start` that `peer` holds and this replica
    /// lacks, listing the peer's keys a page at a time.
    async fn copy_partition(&mut self, peer: &Peer, start: i64) -> Result<()> {
        let mut after: Option<String> = None;
        loop {
            let params = RepairKeysParams {
                start,
                after: after.clone(),
                limit: PAGE as usize,
                replica: Some(peer.replica.clone()),
            };
            let body = self.get(peer, paths::REPAIR_KEYS, &params).await?;
            let page: RepairKeys =
                serde_json::from_slice(&body).map_err(|e| peer_error(&peer.url, e))?;
            if page.keys.len() > PAGE as usize {
                return Err(peer_error(&peer.url, "it listed more keys than asked for"));
            }
            let lacking = self.store.lacking_ids(page.keys);
            self.copy_keys(peer, start, lacking).await?;
            // Pages must move forward, or a peer could keep this loop going for ever.
            match page.next {
                Some(n) if after.as_ref().is_none_or(|a| &n > a) => after = Some(n),
                _ => return Ok(()),
            }
        }
    }

    /// Copies the records of `keys` (of partition `start`) from `peer`, in bodies the peer
    /// takes; what an answer cut short at the peer's byte budget left out is asked again.
    async fn copy_keys(&mut self, peer: &Peer, start: i64, mut keys: Vec<String>) -> Result<()> {
        while let Some(batch) = key_batch(&mut keys) {
            let mut want: HashSet<String> = batch.into_iter().collect();
            while !want.is_empty() {
                let req = RepairByKey {
                    start,
                    keys: want.iter().cloned().collect(),
                };
                let req = serde_json::to_vec(&req).map_err(|e| peer_error(&peer.url, e))?;
                let resp = self
                    .token
                    .apply(
                        self.http
                            .post(format!("{}{}", peer.url, paths::REPAIR_BY_KEY)),
                    )
                    .query(&RepairPeerParams {
                        replica: Some(peer.replica.clone()),
                    })
                    .header("content-type", "application/json")
                    .body(req)
                    .send()
                    .await
                    .map_err(|e| peer_error(&peer.url, e))?;
                let body = answer(&peer.url, resp).await?;
                let parsed = self.ingest_copied(body, Asked::Keys(want.clone())).await?;
                if parsed.supplied.is_empty() {
                    break;
                }
                for k in parsed.supplied {
                    if let DedupKey::Id(id) = k {
                        want.remove(&id);
                    }
                }
            }
        }
        Ok(())
    }

    /// Stores the records of an answer that were asked for through the normal ingest path,
    /// at the rate allowed (parsing off the async threads).
    async fn ingest_copied(&mut self, body: Vec<u8>, asked: Asked) -> Result<Parsed> {
        let retention = self.store.retention();
        let mut parsed = tokio::task::spawn_blocking(move || {
            parse_copied(&body, &asked, retention, OffsetDateTime::now_utc())
        })
        .await?;
        let records = std::mem::take(&mut parsed.records);
        let n = records.len() as u64;
        let outcomes = self.store.ingest(records).await?;
        RepairCopied {
            stored: outcomes
                .iter()
                .filter(|o| matches!(o, Outcome::Stored(_)))
                .count() as u64,
            skipped: parsed.gone.len() as u64,
            bad: parsed.bad,
        }
        .emit(self.store.metrics());
        self.rate.take(n + REQUEST_COST).await;
        Ok(parsed)
    }

    /// The body of a 200 answer to `GET peer+path?query`.
    async fn get(&self, peer: &Peer, path: &str, query: &impl Serialize) -> Result<Vec<u8>> {
        let resp = self
            .token
            .apply(self.http.get(format!("{}{path}", peer.url)))
            .query(query)
            .send()
            .await
            .map_err(|e| peer_error(&peer.url, e))?;
        answer(&peer.url, resp).await
    }
}

/// The partitions whose `_key` digests differ between `ours` and a peer's, with how many
/// records the peers have more. A partition that differs but is not smaller here still
/// gets its keys compared: each side may lack some.
fn differing(ours: &HashMap<i64, KeyDigest>, held: &[(Peer, Holdings)]) -> Vec<(i64, u64)> {
    let mut partitions: HashMap<i64, u64> = HashMap::new();
    for (_, h) in held {
        for d in &h.partitions {
            let mine = ours.get(&d.start);
            if mine.is_some_and(|m| m.count == d.count && m.hash == d.hash) {
                continue;
            }
            let more = d.count.saturating_sub(mine.map_or(0, |m| m.count));
            let e = partitions.entry(d.start).or_default();
            *e = (*e).max(more);
        }
    }
    let mut partitions: Vec<_> = partitions.into_iter().collect();
    partitions.sort();
    partitions
}

/// Takes from `keys` as many as one [`paths::REPAIR_BY_KEY`] body may hold (by count and
/// by size); `None` once none are left. A key too long for any body is dropped.
fn key_batch(keys: &mut Vec<String>) -> Option<Vec<String>> {
    // `{"start":-9223372036854775808,"keys":[]}` and a comma per key.
    const OVERHEAD: usize = 64;
    let mut size = OVERHEAD;
    let mut batch = Vec::new();
    while let Some(k) = keys.pop() {
        let len = serde_json::to_string(&k).map_or(usize::MAX, |j| j.len() + 1);
        if len > MAX_REPAIR_BY_KEY_BODY - OVERHEAD {
            continue;
        }
        if size + len > MAX_REPAIR_BY_KEY_BODY || batch.len() == PAGE as usize {
            keys.push(k);
            break;
        }
        size += len;
        batch.push(k);
    }
    (!batch.is_empty()).then_some(batch)
}

/// The body of a 200 answer, read up to [`MAX_ANSWER_READ`] bytes.
async fn answer(url: &str, mut resp: reqwest::Response) -> Result<Vec<u8>> {
    let status = resp.status();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| peer_error(url, e))? {
        if body.len() + chunk.len() > MAX_ANSWER_READ {
            return Err(peer_error(
                url,
                format!("its answer is longer than {MAX_ANSWER_READ} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        let why = sawmill_record::api::ErrorBody::message_of(&body);
        return Err(Error::Peer(format!(
            "peer `{url}` answered {status}: {why}"
        )));
    }
    Ok(body)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::tests::app;
    use axum::routing::get;
    use axum::{Json, Router};

    /// Serves `router` on a loopback port; returns its base URL.
    async fn serve(router: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        url
    }

    /// A replica holding `_seq` 0..10 of sender `s`, committed, and its stored lines.
    async fn peer_with_ten(name: &str) -> (Peer, Store, Vec<String>) {
        let (router, store, _) = app(name);
        let recs = (0..10)
            .map(|i| Record::from_source(&format!(r#"{{"ts":"2026-11-30T07:00:00Z","received":"2026-11-30T07:00:01Z","message":"m{i}","_src":"s","_seq":{i}}}"#)).unwrap())
            .collect();
        store.ingest(recs).await.unwrap();
        let params = RepairRecordsParams {
            src: "s".into(),
            from: 0,
            to: 9,
            limit: 100,
            replica: None,
        };
        let mut lines = Vec::new();
        for _ in 0..500 {
            let body = super::super::held::records(&store, &params).unwrap();
            lines = String::from_utf8(body)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect();
            if lines.len() == 10 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(lines.len(), 10, "committed");
        let peer = Peer {
            url: serve(router).await,
            replica: store.replica().to_string(),
        };
        (peer, store, lines)
    }

    /// A peer claiming `s` 0..10 in `group` as replica `replica`, answering `records`.
    async fn fake_peer(group: &str, replica: &str, records: String) -> Peer {
        let h = Holdings {
            replica: replica.into(),
            group: group.into(),
            sources: vec![SourceRanges {
                src: "s".into(),
                ranges: vec![[0, 9]],
            }],
            ..Holdings::default()
        };
        let router = Router::new()
            .route(
                paths::REPAIR_HOLDINGS,
                get(move || std::future::ready(Json(h.clone()))),
            )
            .route(
                paths::REPAIR_RECORDS,
                get(move || std::future::ready(records.clone())),
            );
        Peer {
            url: serve(router).await,
            replica: replica.into(),
        }
    }

    fn held(store: &Store) -> Vec<crate::dedup::SeqRanges> {
        store.all_seq_ranges()
    }

    /// A peer that lists records but cannot serve them (trimmed by --max-disk, or not yet
    /// committed there) does not stop the next peer from being asked.
    #[tokio::test(flavor = "multi_thread")]
    async fn what_one_peer_does_not_supply_is_asked_of_the_next() {
        let (b, b_store, _) = peer_with_ten("pull-next-b").await;
        let a = fake_peer("default", "a", String::new()).await;
        let (_, c, _) = app("pull-next-c");
        let mut puller = Puller::new(c.clone(), reqwest::Client::new(), 1_000_000);
        puller.round(&[a, b]).await;
        assert_eq!(held(&c), vec![("s".to_string(), vec![[0, 9]])]);
        assert_eq!(c.repair_status().lag_records(), Some(0));
        c.shutdown();
        b_store.shutdown();
    }

    /// Holdings or records from a replica other than the one found at an address (another
    /// group's, once the address was reused) are never copied.
    #[tokio::test(flavor = "multi_thread")]
    async fn answers_of_another_replica_or_group_are_refused() {
        let (b, b_store, lines) = peer_with_ten("pull-other-b").await;
        let other_group = fake_peer("other", "x", lines.join("\n")).await;
        let moved = Peer {
            replica: "was-here-before".into(),
            ..b
        };
        let (_, c, _) = app("pull-other-c");
        let mut puller = Puller::new(c.clone(), reqwest::Client::new(), 1_000_000);
        puller.round(&[other_group, moved]).await;
        assert_eq!(held(&c), vec![]);
        assert_eq!(c.metrics().get(M::RepairErrors), 2);
        c.shutdown();
        b_store.shutdown();
    }

    /// One bad line in an answer is counted and left out; the rest is copied.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_bad_line_does_not_block_a_sender() {
        let (_, b_store, mut lines) = peer_with_ten("pull-bad-b").await;
        lines.insert(3, "not a record".into());
        lines.insert(
            5,
            r#"{"ts":"2026-11-30T07:00:00Z","message":"x","_src":"t","_seq":1}"#.into(),
        );
        let a = fake_peer("default", "a", lines.join("\n")).await;
        let (_, c, _) = app("pull-bad-c");
        let mut puller = Puller::new(c.clone(), reqwest::Client::new(), 1_000_000);
        puller.round(&[a]).await;
        assert_eq!(held(&c), vec![("s".to_string(), vec![[0, 9]])]);
        assert_eq!(c.metrics().get(M::RepairErrors), 2);
        c.shutdown();
        b_store.shutdown();
    }

    #[test]
    fn holdings_are_checked_and_normalised() {
        let peer = Peer {
            url: "http://p".into(),
            replica: "r".into(),
        };
        let h = |group: &str, replica: &str, ranges: Vec<[u64; 2]>| Holdings {
            replica: replica.into(),
            group: group.into(),
            sources: vec![
                SourceRanges {
                    src: "s".into(),
                    ranges,
                },
                SourceRanges {
                    src: "s".into(),
                    ranges: vec![[1, 2]],
                },
            ],
            ..Holdings::default()
        };
        let ok =
            check_holdings(h("g", "r", vec![[8, 9], [3, 5], [0, 0]]), &peer, "g", None).unwrap();
        assert_eq!(ok.sources.len(), 1);
        assert_eq!(ok.sources[0].ranges, vec![[0, 5], [8, 9]]);
        assert!(check_holdings(h("g2", "r", vec![]), &peer, "g", None).is_err());
        assert!(check_holdings(h("g", "r2", vec![]), &peer, "g", None).is_err());
        assert!(check_holdings(h("g", "r", vec![[5, 4]]), &peer, "g", None).is_err());
        assert!(check_holdings(h("g", "r", vec![]), &peer, "g", Some("s")).is_err());
        let many = vec![[0, 0]; MAX_HOLDINGS_RANGES + 1];
        assert!(check_holdings(h("g", "r", many), &peer, "g", None).is_err());
    }

    /// `_seq`s skipped for retention are forgotten once no peer lists them.
    #[tokio::test(flavor = "multi_thread")]
    async fn what_retention_kept_out_is_forgotten_once_no_peer_lists_it() {
        let a = fake_peer("default", "a", String::new()).await;
        let (_, c, _) = app("pull-gone-c");
        let mut puller = Puller::new(c.clone(), reqwest::Client::new(), 1_000_000);
        puller.gone.insert("old".into(), vec![[1, 5]]);
        puller.gone.insert("s".into(), vec![[0, 3], [100, 200]]);
        puller.round(&[a]).await;
        let gone: Vec<_> = puller.gone.into_iter().collect();
        assert_eq!(gone, vec![("s".to_string(), vec![[0, 3]])]);
        c.shutdown();
    }

    /// A replica with peers is catching up until its first comparison.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_new_replica_is_catching_up_until_it_compared() {
        let (_, store, _) = app("pull-new");
        assert!(!store.repair_status().catching_up());
        let config = RepairConfig {
            peers: vec!["http://127.0.0.1:9".parse().unwrap()],
            ..RepairConfig::default()
        };
        let task = start(store.clone(), config).unwrap();
        assert!(store.repair_status().catching_up());
        assert_eq!(store.repair_status().lag_records(), None);
        task.abort();
        store.shutdown();
    }
}
