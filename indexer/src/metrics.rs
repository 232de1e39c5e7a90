//! The indexer's counters and gauges, rendered in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

#[derive(Default)]
pub struct Metrics {
    pub records_accepted: AtomicU64,
    pub records_duplicate: AtomicU64,
    pub records_rejected: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_decoded: AtomicU64,
    pub ingest_requests: AtomicU64,
    pub ingest_errors: AtomicU64,
    pub wal_writes: AtomicU64,
    pub wal_bytes_written: AtomicU64,
    pub wal_sync_micros: AtomicU64,
    pub commits: AtomicU64,
    pub commit_micros: AtomicU64,
    pub index_errors: AtomicU64,
    pub index_recoveries: AtomicU64,
    pub records_indexed: AtomicU64,
    pub records_replayed: AtomicU64,
    pub partitions: AtomicU64,
    pub partitions_removed: AtomicU64,
    pub index_disk_bytes: AtomicU64,
    pub wal_disk_bytes: AtomicU64,
    pub searches: AtomicU64,
    pub search_errors: AtomicU64,
    pub search_micros: AtomicU64,
    /// Searches on a search thread now (a gauge).
    pub searches_running: AtomicU64,
    /// Searches waiting for a slot now (a gauge).
    pub searches_queued: AtomicU64,
    pub searches_rejected_queue_full: AtomicU64,
    pub searches_rejected_queue_timeout: AtomicU64,
    pub searches_timed_out: AtomicU64,
    pub searches_cancelled: AtomicU64,
    pub records_truncated: AtomicU64,
}

pub fn add_duration(counter: &AtomicU64, d: Duration) {
    counter.fetch_add(d.as_micros() as u64, Relaxed);
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP sawmill_indexer_{name} {help}\n# TYPE sawmill_indexer_{name} counter\nsawmill_indexer_{name} {v}");
        };
        counter(
            "records_accepted_total",
            "Records stored.",
            self.records_accepted.load(Relaxed),
        );
        counter(
            "records_duplicate_total",
            "Records acknowledged but not stored again (already held).",
            self.records_duplicate.load(Relaxed),
        );
        counter(
            "records_rejected_total",
            "Ingested lines rejected, with a reason sent back.",
            self.records_rejected.load(Relaxed),
        );
        counter(
            "bytes_received_total",
            "Request body bytes as sent (possibly compressed).",
            self.bytes_received.load(Relaxed),
        );
        counter(
            "bytes_decoded_total",
            "Request body bytes after decompression.",
            self.bytes_decoded.load(Relaxed),
        );
        counter(
            "ingest_requests_total",
            "Ingest and bulk requests.",
            self.ingest_requests.load(Relaxed),
        );
        counter(
            "ingest_errors_total",
            "Ingest requests answered with an error status.",
            self.ingest_errors.load(Relaxed),
        );
        counter(
            "wal_writes_total",
            "Group writes (each one fsync) to the write-ahead log.",
            self.wal_writes.load(Relaxed),
        );
        counter(
            "wal_bytes_written_total",
            "Bytes appended to the write-ahead log.",
            self.wal_bytes_written.load(Relaxed),
        );
        counter(
            "commits_total",
            "Grouped tantivy commits.",
            self.commits.load(Relaxed),
        );
        counter(
            "records_indexed_total",
            "Records added to tantivy (including replay after a restart).",
            self.records_indexed.load(Relaxed),
        );
        counter(
            "records_replayed_total",
            "Records replayed from the write-ahead log at start (found uncommitted).",
            self.records_replayed.load(Relaxed),
        );
        counter(
            "index_errors_total",
            "Errors while indexing; the write-ahead log keeps the records for replay.",
            self.index_errors.load(Relaxed),
        );
        counter(
            "index_recoveries_total",
            "Times indexing resumed by itself after failing, the records the log kept added again.",
            self.index_recoveries.load(Relaxed),
        );
        counter(
            "partitions_removed_total",
            "Partitions removed by retention.",
            self.partitions_removed.load(Relaxed),
        );
        counter(
            "searches_total",
            "Search API requests.",
            self.searches.load(Relaxed),
        );
        counter(
            "search_errors_total",
            "Search API requests that failed.",
            self.search_errors.load(Relaxed),
        );
        counter(
            "searches_timed_out_total",
            "Searches stopped at --search-timeout (answered 504).",
            self.searches_timed_out.load(Relaxed),
        );
        counter(
            "searches_cancelled_total",
            "Searches stopped because their client went away.",
            self.searches_cancelled.load(Relaxed),
        );
        counter(
            "records_truncated_total",
            "Ingested records whose message was cut to --max-message-bytes (flagged `truncated`).",
            self.records_truncated.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP sawmill_indexer_searches_rejected_total Searches refused without running: the queue was full (429) or the wait for a slot timed out (503).\n# TYPE sawmill_indexer_searches_rejected_total counter"
        );
        for (reason, n) in [
            ("queue_full", &self.searches_rejected_queue_full),
            ("queue_timeout", &self.searches_rejected_queue_timeout),
        ] {
            let _ = writeln!(
                out,
                "sawmill_indexer_searches_rejected_total{{reason=\"{reason}\"}} {}",
                n.load(Relaxed)
            );
        }
        let mut float = |name: &str, kind: &str, help: &str, v: String| {
            let _ = writeln!(out, "# HELP sawmill_indexer_{name} {help}\n# TYPE sawmill_indexer_{name} {kind}\nsawmill_indexer_{name} {v}");
        };
        float(
            "wal_sync_seconds_total",
            "counter",
            "Time spent writing and syncing the write-ahead log.",
            secs(&self.wal_sync_micros),
        );
        float(
            "commit_seconds_total",
            "counter",
            "Time spent in tantivy commits (divide by commits_total for the mean latency).",
            secs(&self.commit_micros),
        );
        float(
            "search_seconds_total",
            "counter",
            "Time spent answering searches (divide by searches_total for the mean latency).",
            secs(&self.search_micros),
        );
        float(
            "searches_running",
            "gauge",
            "Searches running now (at most --max-concurrent-searches).",
            self.searches_running.load(Relaxed).to_string(),
        );
        float(
            "searches_queued",
            "gauge",
            "Searches waiting for a slot now (at most --search-queue).",
            self.searches_queued.load(Relaxed).to_string(),
        );
        float(
            "partitions",
            "gauge",
            "Time partitions on disk.",
            self.partitions.load(Relaxed).to_string(),
        );
        float(
            "index_disk_bytes",
            "gauge",
            "Bytes the partitions take on disk.",
            self.index_disk_bytes.load(Relaxed).to_string(),
        );
        float(
            "wal_disk_bytes",
            "gauge",
            "Bytes the write-ahead log takes on disk.",
            self.wal_disk_bytes.load(Relaxed).to_string(),
        );
        out
    }
}

fn secs(c: &AtomicU64) -> String {
    format!("{:.6}", c.load(Relaxed) as f64 / 1e6)
}
