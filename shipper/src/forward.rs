//! Delivery: every batch goes to every replica of its group, each with its own bounded
//! backlog and sender that retries until the replica takes it, so a dead or slow replica
//! never holds back the others. A refusal gives the batch up for that replica; an
//! overflowing backlog gives up its oldest batches, and a replica given up (gone from
//! discovery past its grace) its whole backlog, counted and reported.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{
    AtomicBool, AtomicU64, AtomicUsize, Ordering::AcqRel, Ordering::Acquire, Ordering::Relaxed,
    Ordering::Release,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sawmill_record::api;
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::ack::AckTracker;
use crate::error::DeliveryError;
use crate::metrics::{Metrics, ReplicaMetrics};

/// `Batch::gave_up` counts give-ups in its low half and, of those, evictions (a backlog
/// gave it up, rather than a replica refused it) in its high half: one atomic, so that
/// whichever replica gives up last sees every other one's reason.
const EVICTED: u64 = 1 << 32;
const GAVE_UP: u64 = EVICTED - 1;

/// One compressed NDJSON body (made by the batcher), shared by the backlogs of every
/// replica of its group.
pub struct Batch {
    pub body: Vec<u8>,
    pub records: u64,
    /// Records a source can read again (file lines) if every backlog gives the batch up.
    rereadable: u64,
    /// Holds a drop report: never evicted, so the count of lost records always arrives.
    pub pinned: bool,
    /// Sum of the records' receipt times (µs), for the latency metric.
    received_micros_sum: i128,
    /// Acknowledgements it needs before its sources' checkpoints may pass it
    /// (`--ack-replicas`).
    ack_replicas: usize,
    /// The replicas it was handed to: its group's, when it was made (and one more each
    /// time its group, short of `ack_replicas`, gains a replica).
    targets: Mutex<Vec<Arc<ReplicaMetrics>>>,
    /// Give-ups, and evictions among them (see [`EVICTED`]).
    gave_up: AtomicU64,
    /// The replicas whose backlogs gave it up (credited when a file reads it again).
    evicted_by: Mutex<Vec<Arc<ReplicaMetrics>>>,
    acked: AtomicUsize,
    /// Replicas that delivered or gave up on it; when all have, `acks` are settled.
    handled: AtomicUsize,
    acks: Vec<(Arc<AckTracker>, Range<u64>)>,
    /// Where it waits when every replica of its group took it but they are fewer than
    /// `ack_replicas` (only batches whose sources wait for it, with `--ack-replicas` > 1).
    short: Option<Arc<Shortfall>>,
}

/// What a batch is made of, besides its body.
pub struct BatchParts {
    pub records: u64,
    pub rereadable: u64,
    pub pinned: bool,
    pub received_micros_sum: i128,
    pub acks: Vec<(Arc<AckTracker>, Range<u64>)>,
}

impl Batch {
    /// `body` is zstd-compressed NDJSON, for the replicas `targets`.
    pub fn new(
        body: Vec<u8>,
        parts: BatchParts,
        targets: Vec<Arc<ReplicaMetrics>>,
        ack_replicas: usize,
        short: Option<Arc<Shortfall>>,
    ) -> Batch {
        let short = short.filter(|_| ack_replicas > 1 && !parts.acks.is_empty());
        Batch {
            body,
            records: parts.records,
            rereadable: parts.rereadable,
            pinned: parts.pinned,
            received_micros_sum: parts.received_micros_sum,
            ack_replicas: ack_replicas.max(1),
            targets: Mutex::new(targets),
            gave_up: AtomicU64::new(0),
            evicted_by: Mutex::new(Vec::new()),
            acked: AtomicUsize::new(0),
            handled: AtomicUsize::new(0),
            acks: parts.acks,
            short,
        }
    }

    fn targets(&self) -> usize {
        self.targets.lock().unwrap().len()
    }

    /// Whether `replica` (the same row, or the same replica id at another address) was
    /// handed it already.
    fn has_target(&self, replica: &Arc<ReplicaMetrics>) -> bool {
        let targets = self.targets.lock().unwrap();
        targets.iter().any(|t| t.same_replica(replica))
    }

    /// A replica joined its group after every earlier one took it (see [`Shortfall`]).
    pub fn add_target(&self, replica: Arc<ReplicaMetrics>) {
        self.targets.lock().unwrap().push(replica);
    }

    /// One replica gave it up: returns whether every replica now has, and whether all of
    /// them by eviction.
    fn give_up(&self, evicted: bool) -> (bool, bool) {
        let add = if evicted { EVICTED + 1 } else { 1 };
        let now = self.gave_up.fetch_add(add, AcqRel) + add;
        let n = (now & GAVE_UP) as usize;
        (n == self.targets(), now >> 32 == now & GAVE_UP)
    }

    /// One replica is done with this batch; the last one settles what its sources may do.
    fn handled_by_one(self: &Arc<Self>, metrics: &Metrics) {
        // AcqRel: the last replica sees every other one's acks and give-ups.
        if self.handled.fetch_add(1, AcqRel) + 1 == self.targets() {
            self.settle(metrics);
        }
    }

    /// Every replica is done with it. Its sources move on if enough replicas took it (or
    /// one refused it: it would only be refused again, for ever); a file reads its lines
    /// again if a backlog gave it up and fewer than `ack_replicas` took it; and if its
    /// group simply has fewer replicas than that, it waits for one more.
    fn settle(self: &Arc<Self>, metrics: &Metrics) {
        let gave_up = self.gave_up.load(Acquire);
        let (given_up, evicted) = ((gave_up & GAVE_UP) as usize, (gave_up >> 32) as usize);
        let acked = self.acked.load(Acquire);
        let targets = self.targets();
        let lost = (evicted == targets)
            || (acked < self.ack_replicas && given_up == evicted && evicted > 0);
        if lost {
            for (t, range) in &self.acks {
                t.lose(range.clone());
            }
            // The file reads the lines again, so the replicas whose backlogs gave them up
            // get them after all: no drop report names them for these.
            if !self.acks.is_empty() {
                for r in self.evicted_by.lock().unwrap().iter() {
                    r.reread(self.rereadable);
                }
            }
        } else if acked >= self.ack_replicas || given_up > evicted || self.short.is_none() {
            for (t, range) in &self.acks {
                if acked < self.ack_replicas {
                    // Refused: never delivered, but it must leave the file's window, or the
                    // file would wait for it for ever.
                    t.delivered(range.clone());
                }
                t.release(range.clone());
            }
        } else if let Some(short) = &self.short {
            short.hold(self.clone(), self.ack_replicas, metrics);
        }
    }
}

/// The batches of one group that every replica of it took, but fewer replicas than
/// `--ack-replicas`: their sources' checkpoints wait until the group gains a replica,
/// which is then handed them. Bounded by the sources: a file reads ahead of what enough
/// replicas took by at most its window.
#[derive(Default)]
pub struct Shortfall {
    pub group: String,
    /// One lock for both, so that a batch settling while a replica joins is handed to it
    /// rather than left waiting for the next one.
    waiting: Mutex<Waiting>,
    warned: AtomicBool,
}

#[derive(Default)]
struct Waiting {
    batches: Vec<Arc<Batch>>,
    /// The group's replicas now.
    replicas: Vec<Arc<Replica>>,
}

impl Shortfall {
    pub fn new(group: &str) -> Shortfall {
        Shortfall {
            group: group.to_string(),
            ..Default::default()
        }
    }

    /// Every replica `batch` went to took it, but they are fewer than `wanted`: it goes to
    /// a replica of the group it has not been to, or waits for one.
    pub(crate) fn hold(&self, batch: Arc<Batch>, wanted: usize, metrics: &Metrics) {
        let mut w = self.waiting.lock().unwrap();
        let next = w.replicas.iter().find(|r| !batch.has_target(&r.m)).cloned();
        match next {
            Some(r) => {
                drop(w);
                batch.add_target(r.m.clone());
                r.push(batch, metrics);
            }
            None => {
                if !self.warned.swap(true, Relaxed) {
                    tracing::warn!(group = %self.group, replicas = w.replicas.len(), ack_replicas = wanted, "The group has fewer replicas than --ack-replicas: file checkpoints wait until it has more.");
                }
                w.batches.push(batch);
            }
        }
    }

    /// `replica` joined the group (or is listed again): it is handed every batch waiting
    /// here that it has not taken already (one replica's ack must not count twice).
    pub fn joined(&self, replica: &Arc<Replica>, metrics: &Metrics) {
        let held = {
            let mut w = self.waiting.lock().unwrap();
            if !w.replicas.iter().any(|r| Arc::ptr_eq(r, replica)) {
                w.replicas.push(replica.clone());
            }
            let (took, held): (Vec<_>, Vec<_>) = std::mem::take(&mut w.batches)
                .into_iter()
                .partition(|b| b.has_target(&replica.m));
            w.batches = took;
            held
        };
        if !held.is_empty() {
            tracing::info!(group = %self.group, replica = %replica.url, batches = held.len(), "The group gained a replica; sending it the batches that wait for --ack-replicas.");
        }
        self.warned.store(false, Relaxed);
        for b in held {
            b.add_target(replica.m.clone());
            replica.push(b, metrics);
        }
    }

    /// The group lost its last replica for good: the batches waiting here will never be
    /// taken by enough replicas. They settle as lost, so that files read their lines again
    /// (placed on the groups left) instead of holding their checkpoints for ever.
    pub fn abandon(&self) {
        let held = std::mem::take(&mut self.waiting.lock().unwrap().batches);
        if !held.is_empty() {
            tracing::warn!(group = %self.group, batches = held.len(), "The group has no replica left; the batches waiting for --ack-replicas are read again.");
        }
        for b in held {
            for (t, range) in &b.acks {
                t.lose(range.clone());
            }
        }
    }

    /// `replica` left the group (given up, or in another group now).
    pub fn left(&self, replica: &Arc<Replica>) {
        let mut w = self.waiting.lock().unwrap();
        w.replicas.retain(|r| !Arc::ptr_eq(r, replica));
    }
}

/// One replica's backlog and its sender.
pub struct Replica {
    pub url: String,
    pub m: Arc<ReplicaMetrics>,
    backlog: Mutex<VecDeque<Arc<Batch>>>,
    notify: Notify,
    max_bytes: u64,
    /// Set once the replica is given up: its sender drops the backlog and ends.
    retired: AtomicBool,
    retire: Notify,
}

impl Replica {
    pub fn new(url: String, m: Arc<ReplicaMetrics>, max_bytes: u64) -> Replica {
        Replica {
            url,
            m,
            backlog: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            max_bytes,
            retired: AtomicBool::new(false),
            retire: Notify::new(),
        }
    }

    /// Adds a batch; past the byte bound the oldest batches not in flight are given up.
    pub fn push(&self, batch: Arc<Batch>, metrics: &Metrics) {
        let m = &self.m;
        let mut q = self.backlog.lock().unwrap();
        m.enqueued(batch.records, batch.body.len() as u64);
        // Checked under the backlog's lock: once given up, the sender drains the backlog
        // once and ends, so a batch queued after that would never be read.
        if self.retired.load(Acquire) {
            drop(q);
            self.give_up(&batch, metrics);
            return;
        }
        q.push_back(batch);
        // The front batch may be in flight: evict from the second on.
        let mut i = 1;
        let mut evicted = 0;
        while m.backlog_bytes() > self.max_bytes && i < q.len() {
            if q[i].pinned {
                i += 1;
                continue;
            }
            let gone = q.remove(i).unwrap();
            evicted += gone.records;
            self.give_up(&gone, metrics);
        }
        drop(q);
        if evicted > 0 && !m.overflowing.swap(true, Relaxed) {
            m.overflowed(evicted, self.max_bytes);
        }
        self.notify.notify_one();
    }

    /// `gone` left this replica's backlog without being delivered: counted as dropped for
    /// it, and as lost once every replica of its group gave it up.
    fn give_up(&self, gone: &Arc<Batch>, metrics: &Metrics) {
        self.m.dequeued(gone.records, gone.body.len() as u64);
        self.m.dropped(gone.records);
        gone.evicted_by.lock().unwrap().push(self.m.clone());
        let (everywhere, all_evicted) = gone.give_up(true);
        if everywhere {
            // Given up everywhere: lost, but for file lines, which are read again.
            let lost = if all_evicted {
                gone.records - gone.rereadable
            } else {
                gone.records
            };
            metrics.lost(lost);
        }
        gone.handled_by_one(metrics);
    }

    /// Gives the replica up (it left discovery longer than its grace ago): its sender drops
    /// the backlog, counted, and ends.
    pub fn retire(&self) {
        self.retired.store(true, Release);
        self.retire.notify_one();
    }

    /// Drops the whole backlog (on the sender's task, so nothing is in flight); returns
    /// the records it held.
    fn drop_backlog(&self, metrics: &Metrics) -> u64 {
        let gone: Vec<Arc<Batch>> = self.backlog.lock().unwrap().drain(..).collect();
        let mut records = 0;
        for b in &gone {
            records += b.records;
            self.give_up(b, metrics);
        }
        records
    }

    fn front(&self) -> Option<Arc<Batch>> {
        self.backlog.lock().unwrap().front().cloned()
    }

    fn pop_delivered(&self, b: &Arc<Batch>) {
        let mut q = self.backlog.lock().unwrap();
        if q.front().is_some_and(|f| Arc::ptr_eq(f, b)) {
            q.pop_front();
            self.m.dequeued(b.records, b.body.len() as u64);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.backlog.lock().unwrap().is_empty()
    }

    /// Sends batches in order until `stop` is set and the backlog is empty (or `stop` has
    /// waited long enough), or until the replica is given up.
    pub async fn run(
        self: Arc<Self>,
        client: reqwest::Client,
        token: Arc<sawmill_http::ClientToken>,
        metrics: Arc<Metrics>,
        stop: Arc<AtomicBool>,
        grace: Duration,
    ) {
        let url = format!("{}{}", self.url.trim_end_matches('/'), api::INGEST);
        let mut backoff = Duration::from_millis(100);
        loop {
            if self.retired.load(Acquire) {
                let records = self.drop_backlog(&metrics);
                metrics.replica_given_up(&self.m, records, grace);
                return;
            }
            let Some(batch) = self.front() else {
                if stop.load(Relaxed) {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = self.notify.notified() => {}
                    _ = self.retire.notified() => {}
                }
                continue;
            };
            self.m.batch_sent();
            // A replica given up mid-request: the request is dropped with it.
            let outcome = tokio::select! {
                r = deliver(&client, &token, &url, &batch) => r,
                _ = self.retire.notified() => continue,
            };
            match outcome {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    self.delivered(&batch, &metrics);
                }
                Err(why @ DeliveryError::Refused { .. }) => {
                    self.m.batch_refused(batch.records, &why);
                    if batch.give_up(false).0 {
                        metrics.lost(batch.records);
                    }
                    self.pop_delivered(&batch);
                    batch.handled_by_one(&metrics);
                }
                Err(why @ DeliveryError::Retryable(_)) => {
                    self.m.batch_retried(&why);
                    // Once per failing spell, so a replica that refuses our certificate
                    // checks or our token is seen without debug logs.
                    if backoff == Duration::from_millis(100) {
                        tracing::warn!(replica = %url, error = %why, "A batch was not delivered; retrying with backoff.");
                    }
                    // Exponential backoff with jitter, so replicas coming back are not stampeded.
                    let jitter = 0.5 + fastrand::f64();
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.mul_f64(jitter)) => {}
                        _ = self.retire.notified() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// The replica took `batch`: the `--ack-replicas`-th to take it lets file sources move
    /// on, and the first times the records' latency.
    fn delivered(&self, batch: &Arc<Batch>, metrics: &Metrics) {
        self.m.batch_acknowledged(batch.records);
        let acked = batch.acked.fetch_add(1, AcqRel) + 1;
        if acked == batch.ack_replicas {
            for (t, range) in &batch.acks {
                t.delivered(range.clone());
            }
        }
        if acked == 1 && batch.records > 0 {
            let now = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000;
            let total = now * batch.records as i128 - batch.received_micros_sum;
            metrics.first_acknowledged(batch.records, total.max(0) as u64);
        }
        self.pop_delivered(batch);
        batch.handled_by_one(metrics);
    }
}

/// One attempt to deliver `batch` to the ingest endpoint at `url`.
async fn deliver(
    client: &reqwest::Client,
    token: &sawmill_http::ClientToken,
    url: &str,
    batch: &Batch,
) -> Result<(), DeliveryError> {
    let r = token
        .apply(client.post(url))
        .header("content-encoding", "zstd")
        .header("content-type", "application/x-ndjson")
        .body(batch.body.clone())
        .send()
        .await?;
    if r.status().is_success() {
        return Ok(());
    }
    let status = r.status();
    Err(DeliveryError::from_status(
        status,
        r.text().await.unwrap_or_default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(
        t: &Arc<AckTracker>,
        targets: &[&Replica],
        n: usize,
        short: Option<Arc<Shortfall>>,
    ) -> Arc<Batch> {
        let parts = BatchParts {
            records: 10,
            rereadable: 10,
            pinned: false,
            received_micros_sum: 0,
            acks: vec![(t.clone(), 0..10)],
        };
        let targets = targets.iter().map(|r| r.m.clone()).collect();
        Arc::new(Batch::new(vec![0; 10], parts, targets, n, short))
    }

    fn replica(metrics: &Metrics, url: &str) -> Replica {
        Replica::new(url.into(), metrics.add_replica(url, "g"), 1 << 20)
    }

    #[test]
    fn with_ack_replicas_1_the_first_ack_counts_and_the_last_releases() {
        let metrics = Metrics::default();
        let (a, b) = (replica(&metrics, "a"), replica(&metrics, "b"));
        let t = AckTracker::new(0);
        let bt = batch(&t, &[&a, &b], 1, None);
        a.push(bt.clone(), &metrics);
        b.push(bt.clone(), &metrics);
        a.delivered(&bt, &metrics);
        assert_eq!((t.delivered_through(), t.done()), (10, 0));
        b.delivered(&bt, &metrics);
        assert_eq!((t.delivered_through(), t.done()), (10, 10));
    }

    #[test]
    fn with_ack_replicas_2_a_group_of_one_holds_the_batch_until_a_second_replica_takes_it() {
        let metrics = Metrics::default();
        let a = Arc::new(replica(&metrics, "a"));
        let t = AckTracker::new(0);
        let short = Arc::new(Shortfall::new("g"));
        short.joined(&a, &metrics);
        let bt = batch(&t, &[&a], 2, Some(short.clone()));
        a.push(bt.clone(), &metrics);
        a.delivered(&bt, &metrics);
        assert_eq!(
            (t.delivered_through(), t.done()),
            (0, 0),
            "one replica took it"
        );
        assert_eq!(short.waiting.lock().unwrap().batches.len(), 1);
        let b = Arc::new(replica(&metrics, "b"));
        short.joined(&b, &metrics);
        assert!(!b.is_empty(), "the new replica is handed the batch");
        b.delivered(&bt, &metrics);
        assert_eq!((t.delivered_through(), t.done()), (10, 10));
        assert_eq!(t.rewind(), None);
    }

    #[test]
    fn with_ack_replicas_2_a_batch_made_before_a_replica_joined_goes_to_it_when_it_settles() {
        let metrics = Metrics::default();
        let (a, b) = (
            Arc::new(replica(&metrics, "a")),
            Arc::new(replica(&metrics, "b")),
        );
        let t = AckTracker::new(0);
        let short = Arc::new(Shortfall::new("g"));
        short.joined(&a, &metrics);
        // Made for A alone; B joins while A still has it in flight.
        let bt = batch(&t, &[&a], 2, Some(short.clone()));
        a.push(bt.clone(), &metrics);
        short.joined(&b, &metrics);
        a.delivered(&bt, &metrics);
        assert!(
            !b.is_empty(),
            "B is handed the batch when it settles, not left waiting"
        );
        b.delivered(&bt, &metrics);
        assert_eq!(t.done(), 10);
    }

    #[test]
    fn with_ack_replicas_2_a_batch_one_replica_gave_up_is_read_again() {
        let metrics = Metrics::default();
        let (a, b) = (replica(&metrics, "a"), replica(&metrics, "b"));
        let t = AckTracker::new(0);
        let bt = batch(&t, &[&a, &b], 2, Some(Arc::new(Shortfall::new("g"))));
        a.push(bt.clone(), &metrics);
        b.push(bt.clone(), &metrics);
        a.delivered(&bt, &metrics);
        // B is given up (its grace ended) with the batch in its backlog.
        b.retire();
        assert_eq!(b.drop_backlog(&metrics), 10);
        assert_eq!(t.rewind(), Some(0), "the file reads the lines again");
        assert_eq!(b.m.missed(), 0, "so B gets them after all");
        assert_eq!(metrics.records_lost(), 0, "A holds them");
    }

    #[test]
    fn a_backlog_given_up_everywhere_counts_as_lost_but_for_file_lines() {
        let metrics = Metrics::default();
        let a = replica(&metrics, "a");
        let t = AckTracker::new(0);
        let bt = batch(&t, &[&a], 1, None);
        a.push(bt.clone(), &metrics);
        assert_eq!(a.drop_backlog(&metrics), 10);
        assert_eq!(metrics.records_lost(), 0, "file lines are read again");
        assert_eq!(a.m.missed(), 0, "so no replica misses them");
        assert_eq!(t.rewind(), Some(0));
    }

    #[test]
    fn a_batch_pushed_after_the_sender_drained_a_given_up_backlog_is_given_up_at_once() {
        let metrics = Metrics::default();
        let a = replica(&metrics, "a");
        let t = AckTracker::new(0);
        // The batcher picked A just before A was given up and its sender ended.
        a.retire();
        assert_eq!(a.drop_backlog(&metrics), 0);
        a.push(batch(&t, &[&a], 1, None), &metrics);
        assert!(a.is_empty(), "nobody would ever read it");
        assert_eq!(a.m.backlog_bytes(), 0);
        assert_eq!(t.rewind(), Some(0), "the file reads the lines again");
    }

    #[test]
    fn a_group_given_up_reads_again_the_batches_waiting_for_ack_replicas() {
        let metrics = Metrics::default();
        let a = Arc::new(replica(&metrics, "a"));
        let t = AckTracker::new(0);
        let short = Arc::new(Shortfall::new("g"));
        short.joined(&a, &metrics);
        let bt = batch(&t, &[&a], 2, Some(short.clone()));
        a.push(bt.clone(), &metrics);
        a.delivered(&bt, &metrics);
        short.abandon();
        assert_eq!(t.rewind(), Some(0));
    }

    #[test]
    fn with_ack_replicas_2_a_replica_listed_again_is_not_handed_what_it_took() {
        let metrics = Metrics::default();
        let a = Arc::new(replica(&metrics, "a"));
        let t = AckTracker::new(0);
        let short = Arc::new(Shortfall::new("g"));
        short.joined(&a, &metrics);
        let bt = batch(&t, &[&a], 2, Some(short.clone()));
        a.push(bt.clone(), &metrics);
        a.delivered(&bt, &metrics);
        // A leaves discovery for a moment and is listed again.
        short.left(&a);
        short.joined(&a, &metrics);
        assert!(
            a.is_empty(),
            "A took it already: its ack must not count twice"
        );
        assert_eq!(short.waiting.lock().unwrap().batches.len(), 1);
    }

    #[test]
    fn with_ack_replicas_2_a_replica_back_at_another_address_does_not_count_twice() {
        let metrics = Metrics::default();
        let a = Arc::new(replica(&metrics, "http://10.0.0.1"));
        a.m.set_replica_id(Some("r-a"));
        let t = AckTracker::new(0);
        let short = Arc::new(Shortfall::new("g"));
        short.joined(&a, &metrics);
        let bt = batch(&t, &[&a], 2, Some(short.clone()));
        a.push(bt.clone(), &metrics);
        a.delivered(&bt, &metrics);
        // The pod restarts with its data directory at a new address.
        let again = Arc::new(replica(&metrics, "http://10.0.0.2"));
        again.m.set_replica_id(Some("r-a"));
        short.joined(&again, &metrics);
        assert!(again.is_empty(), "the same replica id took it already");
        assert_eq!(t.done(), 0);
    }
}
