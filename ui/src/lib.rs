//! Sawmill's web UI: server-rendered pages over the indexers' search API, with failover
//! between replicas.
//!
//! A [`Client`] holds the replicas' base URLs and asks the first healthy one, moving on to
//! the next within the same request when one fails, and remembering which are down so
//! every page can say so in a banner. [`router`] maps each page to a plain async function
//! in `pages/` that makes the API calls (Discover makes its seven at once) and builds an
//! askama template struct from the answers; `record` turns a stored record into what a row
//! shows, `highlight` splits messages into matched and unmatched segments for `<mark>`,
//! `svg` lays out the histogram and the request view's swimlanes, and `url` keeps each
//! page's whole state in its query string. Log content only ever reaches a page through
//! askama's escaping, and the pages' only script and style are the two static files served
//! from the binary under a Content-Security-Policy without `unsafe-inline`.

mod client;
mod error;
mod highlight;
mod pages;
mod record;
mod svg;
mod url;
mod web;

use std::future::Future;
use std::time::Duration;

pub use client::{Client, ReplicaStatus};
pub use error::{Error, Result};
pub use url::enc;
pub use web::{router, CSP};

/// How often replicas' health is checked for the banner.
const HEALTH_INTERVAL: Duration = Duration::from_secs(2);

/// Bounds of the UI's HTTP server.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Longest a client may take to send a request head; the connection is then closed.
    pub header_timeout: Duration,
    /// Longest a stop waits for requests in flight before dropping their connections.
    pub stop_timeout: Duration,
    /// Connections served at once; more wait in the kernel's backlog until one ends.
    pub max_connections: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            header_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(10),
            max_connections: 4096,
        }
    }
}

/// Serves the UI on `listener` until `shutdown` completes, checking the replicas' health
/// in the background. Live tails end at once when the stop begins; other requests get up
/// to `config.stop_timeout`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    client: Client,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let health = client.clone();
    let closing = client.clone();
    let checker = tokio::spawn(async move {
        loop {
            health.check_health().await;
            tokio::time::sleep(HEALTH_INTERVAL).await;
        }
    });
    sawmill_http::serve(
        listener,
        router(client),
        config.header_timeout,
        config.stop_timeout,
        config.max_connections,
        async move {
            shutdown.await;
            closing.close();
        },
    )
    .await;
    checker.abort();
    Ok(())
}

#[cfg(test)]
mod tests;
