//! Sawmill's indexer: durable, exactly-once ingest into time-partitioned tantivy indexes,
//! and the search API the UI and scripts use.
//!
//! A request reaches [`router`]'s handlers, which decode NDJSON or Elasticsearch bulk bodies
//! into normalized [`Record`]s and hand them to the [`Store`]. The store's log thread drops
//! records it already holds (by `_src`/`_seq` or `_id`), appends the rest to the write-ahead
//! log and fsyncs once per group of requests before anyone is answered; its index thread adds
//! them to one tantivy index per hour or day of `ts` and commits about once a second, noting
//! in each commit how far into the log it reaches. After a crash, the log is replayed from
//! there. Searches open only the partitions a time range touches, newest first.

mod api;
mod body;
mod bulk;
mod collectors;
mod dedup;
mod error;
#[cfg(test)]
mod fuzz;
mod lock;
mod metrics;
mod partition;
mod query;
mod record;
mod schema;
mod search;
mod searches;
mod store;
mod times;
mod wal;

use std::future::Future;

pub use api::{router, ApiConfig};
pub use collectors::Order;
pub use error::{Error, Result};
pub use partition::{index_settings, Granularity};
pub use record::{DedupKey, Record, SEVERITIES};
pub use schema::Fields;
pub use search::{Hit, Scope, TimeRange};
pub use searches::SearchLimits;
pub use store::{Outcome, Store, StoreConfig};
pub use times::{format_rfc3339, parse_bytes, parse_span};

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
    let (header_timeout, stop_timeout, max_connections) = (
        config.header_timeout,
        config.stop_timeout,
        config.max_connections,
    );
    let app = router(store.clone(), config, rx);
    sawmill_http::serve(
        listener,
        app,
        header_timeout,
        stop_timeout,
        max_connections,
        async move {
            shutdown.await;
            let _ = tx.send(true);
        },
    )
    .await;
    let _ = tokio::task::spawn_blocking(move || store.shutdown()).await;
    Ok(())
}
