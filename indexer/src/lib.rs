//! Sawmill's indexer: durable, exactly-once ingest into time-partitioned tantivy indexes,
//! and the search API the UI and scripts use. It speaks the contract of `sawmill-record`:
//! the wire record, the field table its schema is built from, the API's parameters and
//! answers.
//!
//! The stages, in the order a record takes them:
//!
//! 1. **Enters** over HTTP: `api` ([`router`]) reads the request within its limits, and
//!    `body` decompresses it (gzip, zstd) within a size limit.
//! 2. **Is parsed**: `ingest` is the one ingest service for every route; NDJSON lines are
//!    split by `body`, Elasticsearch bulk pairs by `bulk`, and `record` normalises each
//!    object leniently into the contract's record (ECS objects, numbers for strings, level
//!    words), cut to `--max-message-bytes`, aged against retention, and counted once.
//! 3. **Is de-duplicated** by the [`Store`]'s log thread (`store::log`), against `dedup`'s
//!    set of keys (`_src`/`_seq`, or `_id`).
//! 4. **Is logged**: appended to `wal`, the write-ahead log, one fsync per group of
//!    requests, before anyone is answered.
//! 5. **Is indexed**: the index thread (`store::index`) adds records to one `partition` per
//!    hour or day of `ts` (documents per `schema`), commits about once a second noting how
//!    far into the log each commit reaches, writes `store::checkpoint` and trims the log;
//!    after a crash `store::recovery` replays the log from there.
//! 6. **Is searched**: a [`Searcher`] (`search`) opens only the partitions a time range
//!    touches, newest first, with `query`'s Lucene-like language and `collectors`; searches
//!    run on `searches`' threads within a budget, and hits stream out a chunk at a time.
//! 7. **Is retained**: `store::retention` removes partitions past `--retention` or
//!    `--max-disk`.
//! 8. **Is repaired**: `repair` compares holdings with the other replicas of the group
//!    (`--peer`) and copies what this one lacks through step 3, so replicas converge.
//!
//! Beside the flow: `layout` names every file of the data directory, `lock` keeps a second
//! indexer out of it, `metrics` holds each counter with the event that moves it, `error` is
//! the one error type and its HTTP mapping, `times` parses the API's instants.

mod api;
mod body;
mod bulk;
mod collectors;
mod dedup;
mod error;
#[cfg(test)]
mod fuzz;
mod ingest;
mod layout;
mod lock;
mod metrics;
mod objstore;
mod partition;
mod query;
mod record;
mod repair;
mod schema;
mod search;
mod searches;
mod store;
mod times;
mod wal;

use std::future::Future;

pub use api::{router, ApiConfig};
pub use dedup::DedupKey;
pub use error::{Error, Result};
pub use objstore::StoreUrl;
pub use partition::{index_settings, Granularity};
pub use record::Record;
pub use repair::{start as start_repair, RepairConfig, DEFAULT_RATE as DEFAULT_REPAIR_RATE};
pub use sawmill_record::api::{Order, Scope};
pub use schema::Fields;
pub use search::{Hit, Searcher, TimeRange};
pub use searches::SearchLimits;
pub use store::{check_group, ArchiveConfig, Outcome, Store, StoreConfig};
pub use times::{parse_bytes, parse_span};

/// Serves the API on `listener` until `shutdown` completes, then commits everything
/// acknowledged and returns. A stop waits at most `config.stop_timeout` for requests in
/// flight (live tails end at once); the store commits whatever was acknowledged either way.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Store,
    config: ApiConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let options = sawmill_http::ServeOptions {
        header_timeout: config.header_timeout,
        stop_timeout: config.stop_timeout,
        max_connections: config.max_connections,
        tls: config.tls.clone(),
    };
    let app = router(store.clone(), config, rx);
    sawmill_http::serve(listener, app, options, async move {
        shutdown.await;
        let _ = tx.send(true);
    })
    .await;
    let _ = tokio::task::spawn_blocking(move || store.shutdown()).await;
    Ok(())
}
