//! The indexer's counters and gauges, and the events that move them (Vector's internal
//! events are the model): each metric is one row of [`TABLE`] (name, help, kind), and each
//! event is one small struct whose `emit` bumps its counters and writes its log line. Adding
//! a metric is one variant of [`M`] and one row; `/metrics` renders the table in a loop.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// How a metric is rendered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    /// A counter kept in microseconds and rendered in seconds.
    Seconds,
    /// A gauge kept in microseconds and rendered in seconds.
    SecondsGauge,
}

/// One row of the table: the name after `sawmill_indexer_`, an optional label, its help.
struct Def {
    name: &'static str,
    label: Option<&'static str>,
    help: &'static str,
    kind: Kind,
}

const fn def(name: &'static str, kind: Kind, help: &'static str) -> Def {
    Def {
        name,
        label: None,
        help,
        kind,
    }
}

/// Every metric, by its row in [`TABLE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum M {
    RecordsAccepted,
    RecordsDuplicate,
    RecordsRejected,
    BytesReceived,
    BytesDecoded,
    IngestRequests,
    IngestErrors,
    WalWrites,
    WalBytesWritten,
    Commits,
    RecordsIndexed,
    RecordsReplayed,
    IndexErrors,
    IndexRecoveries,
    PartitionsRemoved,
    Searches,
    SearchErrors,
    SearchesTimedOut,
    SearchesCancelled,
    RecordsTruncated,
    SearchesRejectedQueueFull,
    SearchesRejectedQueueTimeout,
    WalSyncSeconds,
    CommitSeconds,
    SearchSeconds,
    SearchesRunning,
    SearchesQueued,
    Partitions,
    IndexDiskBytes,
    WalDiskBytes,
    RecordsUnkeyed,
    RepairRecordsCopied,
    RepairRecordsServed,
    RepairRecordsSkipped,
    RepairErrors,
    RepairRangesMissing,
    RepairLagRecords,
    RepairConvergeSeconds,
    StoreBytesFetched,
    StoreCacheBytes,
    StoreCacheHits,
    StoreCacheMisses,
    StoreBytesUploaded,
    StoreSplitsUploaded,
    StoreUploadFailures,
    StoreUploadLagPartitions,
    StoreCorruptSplits,
    StoreDownloadsPending,
    StoreOrphansRemoved,
}

const REJECTED_HELP: &str = "Searches refused without running: the queue was full (429) or the wait for a slot timed out (503).";

/// The metrics in [`M`]'s order, which is the order `/metrics` lists them in.
const TABLE: [Def; 49] = [
    def("records_accepted_total", Kind::Counter, "Records stored."),
    def(
        "records_duplicate_total",
        Kind::Counter,
        "Records acknowledged but not stored again (already held).",
    ),
    def(
        "records_rejected_total",
        Kind::Counter,
        "Ingested lines rejected, with a reason sent back.",
    ),
    def(
        "bytes_received_total",
        Kind::Counter,
        "Request body bytes as sent (possibly compressed).",
    ),
    def(
        "bytes_decoded_total",
        Kind::Counter,
        "Request body bytes after decompression.",
    ),
    def(
        "ingest_requests_total",
        Kind::Counter,
        "Ingest and bulk requests.",
    ),
    def(
        "ingest_errors_total",
        Kind::Counter,
        "Ingest requests answered with an error status.",
    ),
    def(
        "wal_writes_total",
        Kind::Counter,
        "Group writes (each one fsync) to the write-ahead log.",
    ),
    def(
        "wal_bytes_written_total",
        Kind::Counter,
        "Bytes appended to the write-ahead log.",
    ),
    def("commits_total", Kind::Counter, "Grouped tantivy commits."),
    def(
        "records_indexed_total",
        Kind::Counter,
        "Records added to tantivy (including replay after a restart).",
    ),
    def(
        "records_replayed_total",
        Kind::Counter,
        "Records replayed from the write-ahead log at start (found uncommitted).",
    ),
    def(
        "index_errors_total",
        Kind::Counter,
        "Errors while indexing; the write-ahead log keeps the records for replay.",
    ),
    def(
        "index_recoveries_total",
        Kind::Counter,
        "Times indexing resumed by itself after failing, the records the log kept added again.",
    ),
    def(
        "partitions_removed_total",
        Kind::Counter,
        "Partitions removed by retention.",
    ),
    def("searches_total", Kind::Counter, "Search API requests."),
    def(
        "search_errors_total",
        Kind::Counter,
        "Search API requests that failed.",
    ),
    def(
        "searches_timed_out_total",
        Kind::Counter,
        "Searches stopped at --search-timeout (answered 504).",
    ),
    def(
        "searches_cancelled_total",
        Kind::Counter,
        "Searches stopped because their client went away.",
    ),
    def(
        "records_truncated_total",
        Kind::Counter,
        "Ingested records whose message was cut to --max-message-bytes (flagged `truncated`).",
    ),
    Def {
        name: "searches_rejected_total",
        label: Some("reason=\"queue_full\""),
        help: REJECTED_HELP,
        kind: Kind::Counter,
    },
    Def {
        name: "searches_rejected_total",
        label: Some("reason=\"queue_timeout\""),
        help: REJECTED_HELP,
        kind: Kind::Counter,
    },
    def(
        "wal_sync_seconds_total",
        Kind::Seconds,
        "Time spent writing and syncing the write-ahead log.",
    ),
    def(
        "commit_seconds_total",
        Kind::Seconds,
        "Time spent in tantivy commits (divide by commits_total for the mean latency).",
    ),
    def(
        "search_seconds_total",
        Kind::Seconds,
        "Time spent answering searches (divide by searches_total for the mean latency).",
    ),
    def(
        "searches_running",
        Kind::Gauge,
        "Searches running now (at most --max-concurrent-searches).",
    ),
    def(
        "searches_queued",
        Kind::Gauge,
        "Searches waiting for a slot now (at most --search-queue).",
    ),
    def("partitions", Kind::Gauge, "Time partitions on disk."),
    def(
        "index_disk_bytes",
        Kind::Gauge,
        "Bytes the partitions take on disk.",
    ),
    def(
        "wal_disk_bytes",
        Kind::Gauge,
        "Bytes the write-ahead log takes on disk.",
    ),
    def(
        "records_unkeyed_total",
        Kind::Counter,
        "Records stored with neither `_src`/`_seq` nor `_id`: repair cannot compare them, so never copies them to a peer.",
    ),
    def(
        "repair_records_copied_total",
        Kind::Counter,
        "Records copied in from peers by repair (stored here; duplicates not counted).",
    ),
    def(
        "repair_records_served_total",
        Kind::Counter,
        "Records handed out to peers' repair.",
    ),
    def(
        "repair_records_skipped_total",
        Kind::Counter,
        "Records a peer served that were not copied: older than this replica's --retention.",
    ),
    def(
        "repair_errors_total",
        Kind::Counter,
        "Repair requests to peers that failed (retried at the next round).",
    ),
    def(
        "repair_ranges_missing",
        Kind::Gauge,
        "`_seq` ranges the peers hold and this replica lacked at the last comparison.",
    ),
    def(
        "repair_lag_records",
        Kind::Gauge,
        "Records the peers hold and this replica lacked at the last comparison.",
    ),
    def(
        "repair_converge_seconds",
        Kind::SecondsGauge,
        "How long the last episode of catching up took, from finding a lag to finding none.",
    ),
    def(
        "store_bytes_fetched_total",
        Kind::Counter,
        "Bytes of splits downloaded from the object store.",
    ),
    def(
        "store_cache_bytes",
        Kind::Gauge,
        "Bytes the cache of assembled splits takes on disk (at most --cache-bytes, but for entries in use).",
    ),
    def(
        "store_cache_hits_total",
        Kind::Counter,
        "Partitions from the object store found assembled in the cache.",
    ),
    def(
        "store_cache_misses_total",
        Kind::Counter,
        "Partitions from the object store that had to be downloaded into the cache.",
    ),
    def(
        "store_bytes_uploaded_total",
        Kind::Counter,
        "Bytes of splits uploaded to the object store.",
    ),
    def(
        "store_splits_uploaded_total",
        Kind::Counter,
        "Splits uploaded to the object store and recorded in the manifest.",
    ),
    def(
        "store_upload_failures_total",
        Kind::Counter,
        "Split uploads that failed (retried with backoff; the local copy is kept).",
    ),
    def(
        "store_upload_lag_partitions",
        Kind::Gauge,
        "Partitions due to be sealed and uploaded that are not in the object store yet.",
    ),
    def(
        "store_corrupt_splits_total",
        Kind::Counter,
        "Splits read from the object store that did not match their manifest entry.",
    ),
    def(
        "store_downloads_pending",
        Kind::Gauge,
        "Partitions read by ranges from the object store waiting for their whole download into the cache.",
    ),
    def(
        "store_orphans_removed_total",
        Kind::Counter,
        "Objects no manifest entry listed (lost races, unfinished or failed removals) removed by the hourly sweep.",
    ),
];

/// The values of every metric in [`TABLE`].
pub struct Metrics {
    values: [AtomicU64; TABLE.len()],
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            values: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Metrics {
    pub fn add(&self, m: M, n: u64) {
        self.values[m as usize].fetch_add(n, Relaxed);
    }

    pub fn sub(&self, m: M, n: u64) {
        self.values[m as usize].fetch_sub(n, Relaxed);
    }

    /// Sets a gauge.
    pub fn set(&self, m: M, v: u64) {
        self.values[m as usize].store(v, Relaxed);
    }

    pub fn get(&self, m: M) -> u64 {
        self.values[m as usize].load(Relaxed)
    }

    /// Adds to a [`Kind::Seconds`] metric.
    pub fn add_duration(&self, m: M, d: Duration) {
        self.add(m, d.as_micros() as u64);
    }

    /// The Prometheus text format: `# HELP` and `# TYPE` once per name, then each value.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut last = "";
        for (def, value) in TABLE.iter().zip(&self.values) {
            let name = def.name;
            if name != last {
                let kind = match def.kind {
                    Kind::Counter | Kind::Seconds => "counter",
                    Kind::Gauge | Kind::SecondsGauge => "gauge",
                };
                let _ = writeln!(
                    out,
                    "# HELP sawmill_indexer_{name} {}\n# TYPE sawmill_indexer_{name} {kind}",
                    def.help
                );
                last = name;
            }
            let v = value.load(Relaxed);
            let _ = match def.label {
                Some(l) => write!(out, "sawmill_indexer_{name}{{{l}}} "),
                None => write!(out, "sawmill_indexer_{name} "),
            };
            let _ = match def.kind {
                Kind::Seconds | Kind::SecondsGauge => writeln!(out, "{:.6}", v as f64 / 1e6),
                Kind::Counter | Kind::Gauge => writeln!(out, "{v}"),
            };
        }
        out
    }
}

// The events. Each says what happened, counts it and logs it, in one place.

/// Repair copied records in from a peer: `stored` new here, `skipped` past retention.
pub struct RepairCopied {
    pub stored: u64,
    pub skipped: u64,
    /// Lines of the answer that were not a record of what was asked; left out and counted
    /// as repair errors, so one bad line never blocks the rest.
    pub bad: u64,
}

impl RepairCopied {
    pub fn emit(self, m: &Metrics) {
        m.add(M::RepairRecordsCopied, self.stored);
        m.add(M::RepairRecordsSkipped, self.skipped);
        m.add(M::RepairErrors, self.bad);
    }
}

/// A repair request to a peer failed; the next round tries again.
pub struct RepairFailed<'a> {
    pub peer: &'a str,
    pub error: &'a crate::error::Error,
}

impl RepairFailed<'_> {
    pub fn emit(self, m: &Metrics) {
        m.add(M::RepairErrors, 1);
        tracing::warn!(peer = %self.peer, error = %self.error, "Repair request failed; retrying next round.");
    }
}

/// A comparison with the peers found `lag` records in `ranges` ranges missing here.
pub struct RepairRound {
    pub lag: u64,
    pub ranges: u64,
}

impl RepairRound {
    pub fn emit(self, m: &Metrics) {
        m.set(M::RepairLagRecords, self.lag);
        m.set(M::RepairRangesMissing, self.ranges);
    }
}

/// An ingest or bulk request's body arrived, `bytes` as sent (possibly compressed).
pub struct BodyReceived {
    pub bytes: usize,
}

impl BodyReceived {
    pub fn emit(self, m: &Metrics) {
        m.add(M::BytesReceived, self.bytes as u64);
    }
}

/// An ingest or bulk request's body was decompressed to `bytes`.
pub struct BodyDecoded {
    pub bytes: usize,
}

impl BodyDecoded {
    pub fn emit(self, m: &Metrics) {
        m.add(M::BytesDecoded, self.bytes as u64);
    }
}

/// What became of the lines of one ingest or bulk request.
#[derive(Default)]
pub struct Ingested {
    pub accepted: usize,
    pub duplicates: usize,
    pub rejected: usize,
    /// Stored records whose message was cut (a resent duplicate was counted before).
    pub truncated: usize,
}

impl Ingested {
    pub fn emit(self, m: &Metrics) {
        m.add(M::RecordsAccepted, self.accepted as u64);
        m.add(M::RecordsDuplicate, self.duplicates as u64);
        m.add(M::RecordsRejected, self.rejected as u64);
        m.add(M::RecordsTruncated, self.truncated as u64);
    }
}

/// A group of requests was appended to the log and synced.
pub struct WalWritten {
    pub bytes: usize,
    pub took: Duration,
}

impl WalWritten {
    pub fn emit(self, m: &Metrics) {
        m.add(M::WalWrites, 1);
        m.add(M::WalBytesWritten, self.bytes as u64);
        m.add_duration(M::WalSyncSeconds, self.took);
    }
}

/// Appending a group to the log failed: every request in it gets the error.
pub struct WalWriteFailed<'a> {
    pub error: &'a crate::Error,
    pub took: Duration,
}

impl WalWriteFailed<'_> {
    pub fn emit(self, m: &Metrics) {
        m.add_duration(M::WalSyncSeconds, self.took);
        tracing::error!(error = %self.error, "Write-ahead log write failed; the requests are answered with an error.");
    }
}

/// A record of the log could not be read back; it is skipped.
pub struct UnreadableRecord<'a> {
    pub position: u64,
    pub error: &'a str,
}

impl UnreadableRecord<'_> {
    pub fn emit(self, m: &Metrics) {
        m.add(M::IndexErrors, 1);
        tracing::error!(position = self.position, error = %self.error, "Unreadable record in the write-ahead log.");
    }
}

/// Indexing failed; `first` when it was working until now.
pub struct IndexFailed<'a> {
    pub problem: &'a str,
    pub first: bool,
}

impl IndexFailed<'_> {
    pub fn emit(self, m: &Metrics) {
        m.add(M::IndexErrors, 1);
        if self.first {
            tracing::error!(problem = %self.problem, "Indexing failed; the write-ahead log keeps every record, and indexing is retried by itself.");
        } else {
            tracing::warn!(problem = %self.problem, "Indexing failed again.");
        }
    }
}

/// Indexing works again after failing: the records the log kept were added again.
pub struct IndexRecovered {
    pub from: u64,
    pub end: u64,
    pub records: u64,
}

impl IndexRecovered {
    pub fn emit(self, m: &Metrics) {
        m.add(M::IndexRecoveries, 1);
        tracing::info!(
            from = self.from,
            end = self.end,
            records = self.records,
            "Indexing recovered; every acknowledged record is committed."
        );
    }
}

/// Partitions written since the last commit were committed.
pub struct Committed {
    pub took: Duration,
}

impl Committed {
    pub fn emit(self, m: &Metrics) {
        m.add(M::Commits, 1);
        m.add_duration(M::CommitSeconds, self.took);
    }
}

/// Retention removed a partition.
pub struct PartitionRemoved<'a> {
    pub dir: &'a std::path::Path,
}

impl PartitionRemoved<'_> {
    pub fn emit(self, m: &Metrics) {
        m.add(M::PartitionsRemoved, 1);
        tracing::info!(partition = %self.dir.display(), "Removing partition (retention).");
    }
}

/// A search API request ended (`failed` or not) after `took`.
pub struct Searched {
    pub took: Duration,
    pub failed: bool,
}

impl Searched {
    pub fn emit(self, m: &Metrics) {
        m.add(M::Searches, 1);
        m.add_duration(M::SearchSeconds, self.took);
        if self.failed {
            m.add(M::SearchErrors, 1);
        }
    }
}

/// Reading the hits of a streamed answer failed; `cut_short` once part of it was sent.
pub struct AnswerFailed<'a> {
    pub error: &'a crate::Error,
    pub cut_short: bool,
}

impl AnswerFailed<'_> {
    pub fn emit(self, m: &Metrics) {
        m.add(M::SearchErrors, 1);
        if self.cut_short {
            tracing::error!(error = %self.error, "Reading hits for an answer failed; the answer is cut short.");
        }
    }
}

/// A split was downloaded from the object store into the cache.
pub struct SplitFetched {
    pub bytes: u64,
}

impl SplitFetched {
    pub fn emit(self, m: &Metrics) {
        m.add(M::StoreBytesFetched, self.bytes);
    }
}

/// A partition from the object store was asked of the cache: found assembled, or not.
pub struct CacheLookup {
    pub hit: bool,
}

impl CacheLookup {
    pub fn emit(self, m: &Metrics) {
        m.add(
            if self.hit {
                M::StoreCacheHits
            } else {
                M::StoreCacheMisses
            },
            1,
        );
    }
}

/// A split in the object store did not match its manifest entry: part of the history
/// cannot be searched until an operator restores or removes it.
pub struct CorruptSplitFound<'a> {
    pub object: &'a str,
    pub reason: &'a str,
}

impl CorruptSplitFound<'_> {
    pub fn emit(self, m: &Metrics) {
        m.add(M::StoreCorruptSplits, 1);
        tracing::error!(object = %self.object, reason = %self.reason, "Corrupt split in the object store; searches that need it fail.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Every metric must keep its name and help text: the README and the e2e tests scrape them.
    #[test]
    fn the_table_renders_every_metric_once_with_its_type() {
        let m = Metrics::default();
        m.add(M::SearchesRejectedQueueTimeout, 2);
        m.add_duration(M::CommitSeconds, Duration::from_millis(1500));
        m.set(M::Partitions, 3);
        let text = m.render();
        assert!(
            text.contains("sawmill_indexer_searches_rejected_total{reason=\"queue_timeout\"} 2\n")
        );
        assert!(text.contains("sawmill_indexer_commit_seconds_total 1.500000\n"));
        assert!(text
            .contains("# TYPE sawmill_indexer_partitions gauge\nsawmill_indexer_partitions 3\n"));
        assert_eq!(
            text.matches("# HELP sawmill_indexer_searches_rejected_total")
                .count(),
            1
        );
        assert_eq!(text.matches("# HELP").count(), TABLE.len() - 1);
        assert_eq!(TABLE[M::WalDiskBytes as usize].name, "wal_disk_bytes");
    }

    /// The enum and the table must stay in step: a row moved without its variant would put
    /// one counter's value under another's name.
    #[test]
    fn every_variant_names_its_own_row() {
        let golden = [
            (M::RecordsAccepted, "records_accepted_total"),
            (M::RecordsDuplicate, "records_duplicate_total"),
            (M::RecordsRejected, "records_rejected_total"),
            (M::BytesReceived, "bytes_received_total"),
            (M::BytesDecoded, "bytes_decoded_total"),
            (M::IngestRequests, "ingest_requests_total"),
            (M::IngestErrors, "ingest_errors_total"),
            (M::WalWrites, "wal_writes_total"),
            (M::WalBytesWritten, "wal_bytes_written_total"),
            (M::Commits, "commits_total"),
            (M::RecordsIndexed, "records_indexed_total"),
            (M::RecordsReplayed, "records_replayed_total"),
            (M::IndexErrors, "index_errors_total"),
            (M::IndexRecoveries, "index_recoveries_total"),
            (M::PartitionsRemoved, "partitions_removed_total"),
            (M::Searches, "searches_total"),
            (M::SearchErrors, "search_errors_total"),
            (M::SearchesTimedOut, "searches_timed_out_total"),
            (M::SearchesCancelled, "searches_cancelled_total"),
            (M::RecordsTruncated, "records_truncated_total"),
            (M::SearchesRejectedQueueFull, "searches_rejected_total"),
            (M::SearchesRejectedQueueTimeout, "searches_rejected_total"),
            (M::WalSyncSeconds, "wal_sync_seconds_total"),
            (M::CommitSeconds, "commit_seconds_total"),
            (M::SearchSeconds, "search_seconds_total"),
            (M::SearchesRunning, "searches_running"),
            (M::SearchesQueued, "searches_queued"),
            (M::Partitions, "partitions"),
            (M::IndexDiskBytes, "index_disk_bytes"),
            (M::WalDiskBytes, "wal_disk_bytes"),
            (M::RecordsUnkeyed, "records_unkeyed_total"),
            (M::RepairRecordsCopied, "repair_records_copied_total"),
            (M::RepairRecordsServed, "repair_records_served_total"),
            (M::RepairRecordsSkipped, "repair_records_skipped_total"),
            (M::RepairErrors, "repair_errors_total"),
            (M::RepairRangesMissing, "repair_ranges_missing"),
            (M::RepairLagRecords, "repair_lag_records"),
            (M::RepairConvergeSeconds, "repair_converge_seconds"),
            (M::StoreBytesFetched, "store_bytes_fetched_total"),
            (M::StoreCacheBytes, "store_cache_bytes"),
            (M::StoreCacheHits, "store_cache_hits_total"),
            (M::StoreCacheMisses, "store_cache_misses_total"),
            (M::StoreBytesUploaded, "store_bytes_uploaded_total"),
            (M::StoreSplitsUploaded, "store_splits_uploaded_total"),
            (M::StoreUploadFailures, "store_upload_failures_total"),
            (M::StoreUploadLagPartitions, "store_upload_lag_partitions"),
            (M::StoreCorruptSplits, "store_corrupt_splits_total"),
            (M::StoreDownloadsPending, "store_downloads_pending"),
            (M::StoreOrphansRemoved, "store_orphans_removed_total"),
        ];
        assert_eq!(golden.len(), TABLE.len());
        for (i, (m, name)) in golden.iter().enumerate() {
            assert_eq!(*m as usize, i, "{m:?}");
            assert_eq!(TABLE[i].name, *name, "{m:?}");
        }
    }
}
