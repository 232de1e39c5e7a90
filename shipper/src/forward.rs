//! Delivery: every batch goes to every indexer replica, each with its own bounded backlog
//! and sender that retries until the replica takes it, so a dead or slow replica never holds
//! back the others. A refusal gives the batch up for that replica; an overflowing backlog
//! gives up its oldest batches, counted and reported.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::AcqRel, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sawmill_record::api;
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::ack::AckTracker;
use crate::error::DeliveryError;
use crate::metrics::Metrics;

/// One compressed NDJSON body (made by the batcher), shared by every replica's backlog.
pub struct Batch {
    pub body: Vec<u8>,
    pub records: u64,
    /// Records a source can read again (file lines) if every backlog gives the batch up.
    rereadable: u64,
    /// Holds a drop report: never evicted, so the count of lost records always arrives.
    pub pinned: bool,
    /// Sum of the records' receipt times (µs), for the latency metric.
    received_micros_sum: i128,
    given_up: AtomicUsize,
    /// Replicas whose backlog gave it up (rather than refused it).
    evicted: AtomicUsize,
    delivered: AtomicBool,
    /// Replicas that delivered or gave up on it; when all have, `acks` are released.
    handled: AtomicUsize,
    acks: Vec<(Arc<AckTracker>, Range<u64>)>,
}

impl Batch {
    /// `body` is zstd-compressed NDJSON.
    pub fn new(
        body: Vec<u8>,
        records: u64,
        rereadable: u64,
        pinned: bool,
        received_micros_sum: i128,
        acks: Vec<(Arc<AckTracker>, Range<u64>)>,
    ) -> Batch {
        Batch {
            body,
            records,
            rereadable,
            pinned,
            received_micros_sum,
            given_up: AtomicUsize::new(0),
            evicted: AtomicUsize::new(0),
            delivered: AtomicBool::new(false),
            handled: AtomicUsize::new(0),
            acks,
        }
    }

    /// One replica is done with this batch; the last one lets its sources move on, unless
    /// every replica's backlog gave it up: then a file reads those lines again, and its
    /// checkpoint stays before them meanwhile. (A batch the replicas refused is not read
    /// again: it would only be refused again, for ever.)
    fn handled_by_one(&self, replicas: usize) {
        // AcqRel: the last replica sees every other one's `evicted`.
        if self.handled.fetch_add(1, AcqRel) + 1 == replicas {
            let lost = self.evicted.load(Relaxed) == replicas;
            for (t, range) in &self.acks {
                if lost {
                    t.lose(range.clone());
                } else {
                    // Refused everywhere, it was never delivered: it must still leave the
                    // file's window, or the file would wait for it for ever.
                    t.delivered(range.clone());
                    t.release(range.clone());
                }
            }
        }
    }
}

/// One replica's backlog and its sender.
pub struct Replica {
    pub index: usize,
    pub url: String,
    backlog: Mutex<VecDeque<Arc<Batch>>>,
    notify: Notify,
    max_bytes: u64,
    /// Its backlog has overflowed since the batcher last found it with nothing new given
    /// up: one log line per episode, not one per batch.
    pub overflowing: AtomicBool,
}

impl Replica {
    pub fn new(index: usize, url: String, max_bytes: u64) -> Replica {
        Replica {
            index,
            url,
            backlog: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            max_bytes,
            overflowing: AtomicBool::new(false),
        }
    }

    /// Adds a batch; past the byte bound the oldest batches not in flight are given up.
    pub fn push(&self, batch: Arc<Batch>, metrics: &Metrics) {
        let m = &metrics.replicas[self.index];
        let mut q = self.backlog.lock().unwrap();
        m.enqueued(batch.records, batch.body.len() as u64);
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
            m.dequeued(gone.records, gone.body.len() as u64);
            m.dropped(gone.records);
            evicted += gone.records;
            // Every eviction happens on the batcher's thread: these counts are exact.
            let by_backlogs = gone.evicted.fetch_add(1, Relaxed) + 1;
            let n = gone.given_up.fetch_add(1, Relaxed) + 1;
            if n == metrics.replicas.len() {
                // Given up everywhere: lost, but for file lines, which are read again.
                let lost = if by_backlogs == n {
                    // No replica misses them for good, so no drop report names them either.
                    for r in &metrics.replicas {
                        r.reread(gone.rereadable);
                    }
                    gone.records - gone.rereadable
                } else {
                    gone.records
                };
                metrics.lost(lost);
            }
            gone.handled_by_one(metrics.replicas.len());
        }
        drop(q);
        if evicted > 0 && !self.overflowing.swap(true, Relaxed) {
            m.overflowed(evicted, self.max_bytes);
        }
        self.notify.notify_one();
    }

    fn front(&self) -> Option<Arc<Batch>> {
        self.backlog.lock().unwrap().front().cloned()
    }

    fn pop_delivered(&self, b: &Arc<Batch>, metrics: &Metrics) {
        let m = &metrics.replicas[self.index];
        let mut q = self.backlog.lock().unwrap();
        if q.front().is_some_and(|f| Arc::ptr_eq(f, b)) {
            q.pop_front();
            m.dequeued(b.records, b.body.len() as u64);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.backlog.lock().unwrap().is_empty()
    }

    /// Sends batches in order until `stop` is set and the backlog is empty (or `stop` has
    /// waited long enough).
    pub async fn run(
        self: Arc<Self>,
        client: reqwest::Client,
        metrics: Arc<Metrics>,
        stop: Arc<AtomicBool>,
    ) {
        let url = format!("{}{}", self.url.trim_end_matches('/'), api::INGEST);
        let m = &metrics.replicas[self.index];
        let mut backoff = Duration::from_millis(100);
        loop {
            let Some(batch) = self.front() else {
                if stop.load(Relaxed) {
                    return;
                }
                let _ =
                    tokio::time::timeout(Duration::from_millis(200), self.notify.notified()).await;
                continue;
            };
            m.batch_sent();
            match deliver(&client, &url, &batch).await {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    self.delivered(&batch, &metrics);
                }
                Err(why @ DeliveryError::Refused { .. }) => {
                    m.batch_refused(batch.records, &why);
                    if batch.given_up.fetch_add(1, Relaxed) + 1 == metrics.replicas.len() {
                        metrics.lost(batch.records);
                    }
                    self.pop_delivered(&batch, &metrics);
                    batch.handled_by_one(metrics.replicas.len());
                }
                Err(why @ DeliveryError::Retryable(_)) => {
                    m.batch_retried(&why);
                    // Exponential backoff with jitter, so replicas coming back are not stampeded.
                    let jitter = 0.5 + fastrand::f64();
                    tokio::time::sleep(backoff.mul_f64(jitter)).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// The replica took `batch`: the first to take it lets file sources move on and times
    /// the records' latency.
    fn delivered(&self, batch: &Arc<Batch>, metrics: &Metrics) {
        metrics.replicas[self.index].batch_acknowledged(batch.records);
        let first = !batch.delivered.swap(true, Relaxed);
        if first {
            for (t, range) in &batch.acks {
                t.delivered(range.clone());
            }
        }
        if first && batch.records > 0 {
            let now = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000;
            let total = now * batch.records as i128 - batch.received_micros_sum;
            metrics.first_acknowledged(batch.records, total.max(0) as u64);
        }
        self.pop_delivered(batch, metrics);
        batch.handled_by_one(metrics.replicas.len());
    }
}

/// One attempt to deliver `batch` to the ingest endpoint at `url`.
async fn deliver(client: &reqwest::Client, url: &str, batch: &Batch) -> Result<(), DeliveryError> {
    let r = client
        .post(url)
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
