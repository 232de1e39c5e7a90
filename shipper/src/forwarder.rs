//! Batching and delivery: numbered records in compressed batches, sent to every indexer
//! replica, each with its own bounded backlog and retries, so a dead or slow replica never
//! holds back the others.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::AcqRel, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::event::AckTracker;
use crate::metrics::Metrics;

/// One compressed NDJSON body, shared by every replica's backlog.
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
    pub fn new(
        ndjson: &[u8],
        records: u64,
        rereadable: u64,
        pinned: bool,
        received_micros_sum: i128,
        acks: Vec<(Arc<AckTracker>, Range<u64>)>,
    ) -> Batch {
        // zstd at level 1 compresses log lines about as well as gzip at a fraction of the CPU.
        let body = zstd::bulk::compress(ndjson, 1).unwrap_or_else(|_| ndjson.to_vec());
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
        m.records_enqueued.fetch_add(batch.records, Relaxed);
        m.backlog_bytes.fetch_add(batch.body.len() as u64, Relaxed);
        m.backlog_records.fetch_add(batch.records, Relaxed);
        q.push_back(batch);
        // The front batch may be in flight: evict from the second on.
        let mut i = 1;
        let mut evicted = 0;
        while m.backlog_bytes.load(Relaxed) > self.max_bytes && i < q.len() {
            if q[i].pinned {
                i += 1;
                continue;
            }
            let gone = q.remove(i).unwrap();
            m.backlog_bytes.fetch_sub(gone.body.len() as u64, Relaxed);
            m.backlog_records.fetch_sub(gone.records, Relaxed);
            m.records_dropped.fetch_add(gone.records, Relaxed);
            evicted += gone.records;
            // Every eviction happens on the batcher's thread: these counts are exact.
            let by_backlogs = gone.evicted.fetch_add(1, Relaxed) + 1;
            let n = gone.given_up.fetch_add(1, Relaxed) + 1;
            if n == metrics.replicas.len() {
                // Given up everywhere: lost, but for file lines, which are read again.
                let lost = if by_backlogs == n {
                    // No replica misses them for good, so no drop report names them either.
                    for r in &metrics.replicas {
                        r.records_reread.fetch_add(gone.rereadable, Relaxed);
                    }
                    gone.records - gone.rereadable
                } else {
                    gone.records
                };
                metrics.records_lost.fetch_add(lost, Relaxed);
            }
            gone.handled_by_one(metrics.replicas.len());
        }
        drop(q);
        if evicted > 0 && !self.overflowing.swap(true, Relaxed) {
            // Data is lost for this replica (repair or a restart of a file source may bring
            // it back): an operator should know at once. The batcher reports the counts.
            tracing::error!(replica = %self.url, records = evicted, backlog_bytes = self.max_bytes, "Replica's backlog is full; its oldest batches are given up for it.");
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
            m.backlog_bytes.fetch_sub(b.body.len() as u64, Relaxed);
            m.backlog_records.fetch_sub(b.records, Relaxed);
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
        let url = format!("{}/api/v1/ingest", self.url.trim_end_matches('/'));
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
            m.batches_sent.fetch_add(1, Relaxed);
            let res = client
                .post(&url)
                .header("content-encoding", "zstd")
                .header("content-type", "application/x-ndjson")
                .body(batch.body.clone())
                .send()
                .await;
            let outcome = match res {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r)
                    if r.status().is_client_error()
                        && !matches!(r.status().as_u16(), 408 | 429) =>
                {
                    Err((
                        false,
                        format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
                    ))
                }
                Ok(r) => Err((true, format!("{}", r.status()))),
                Err(e) => Err((true, e.to_string())),
            };
            match outcome {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    m.batches_acked.fetch_add(1, Relaxed);
                    m.records_delivered.fetch_add(batch.records, Relaxed);
                    let first = !batch.delivered.swap(true, Relaxed);
                    if first {
                        for (t, range) in &batch.acks {
                            t.delivered(range.clone());
                        }
                    }
                    if first && batch.records > 0 {
                        let now = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000;
                        let total = now * batch.records as i128 - batch.received_micros_sum;
                        metrics
                            .latency_micros
                            .fetch_add(total.max(0) as u64, Relaxed);
                        metrics.latency_records.fetch_add(batch.records, Relaxed);
                    }
                    self.pop_delivered(&batch, &metrics);
                    batch.handled_by_one(metrics.replicas.len());
                }
                Err((false, why)) => {
                    // The replica refuses this batch for good: resending cannot help.
                    tracing::error!(replica = %self.url, %why, records = batch.records, "Replica refused a batch; it is given up for this replica.");
                    m.records_dropped.fetch_add(batch.records, Relaxed);
                    if batch.given_up.fetch_add(1, Relaxed) + 1 == metrics.replicas.len() {
                        metrics.records_lost.fetch_add(batch.records, Relaxed);
                    }
                    self.pop_delivered(&batch, &metrics);
                    batch.handled_by_one(metrics.replicas.len());
                }
                Err((true, why)) => {
                    m.batches_retried.fetch_add(1, Relaxed);
                    tracing::debug!(replica = %self.url, %why, "Batch not delivered; retrying.");
                    // Exponential backoff with jitter, so replicas coming back are not stampeded.
                    let jitter = 0.5 + fastrand::f64();
                    tokio::time::sleep(backoff.mul_f64(jitter)).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
