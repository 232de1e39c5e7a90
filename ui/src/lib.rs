//! Sawmill's web UI: server-rendered pages over the search API of every indexer group, through
//! the query crate's fan-out in-process. A request passes five stages, one module each:
//!
//! 1. **HTTP** (`web`): the router maps each page to a thin handler that reads the query
//!    string into the page's parameters (a typo is a 400 page, not a silent default), calls
//!    the page's function and renders its template. Every answer gets the security headers
//!    here, and every [`Error`] (defined in `error`) becomes its status and error page here,
//!    in one place.
//! 2. **Pages** (`pages/`): one plain async function per page (`discover`, `context`,
//!    `record`, `request`, `tail`, `export`) that decides which API calls the page needs,
//!    makes them (Discover its nine at once) and builds the page's askama struct. Page
//!    state lives in the URL (`url`), so every view can be shared by copying the address.
//! 3. **Typed client** (`client`): one method per route of the contract
//!    (`sawmill_record::api`), each a call into `sawmill_query::Cluster` (the code
//!    `sawmill query` serves, so the UI and the API agree), its answer read hit by hit, so
//!    a stored record that does not fit the contract becomes a placeholder row ("record
//!    could not be read") instead of failing the page.
//! 4. **Groups and replicas** (`sawmill_query`): every group is asked on one healthy
//!    replica, the next replica of a group asked when one fails within the request (a
//!    refusal, 4xx or a search timeout, is final); a group none of whose replicas answers
//!    leaves the answer partial, and the banner says so. Replicas' state, from discovery's
//!    `/healthz` rounds and from requests, feeds every page's banner. Record ids name their
//!    group and key (`g0~s~SEQ~SRC`), so a link finds its record on any replica of the group.
//! 5. **Templates** (`row`, `highlight`, `svg`, `ui/templates/`): `row` turns a hit into
//!    what a row shows (typed severity, cut messages, safe links), `highlight` splits
//!    messages into matched and unmatched segments for `<mark>`, `svg` lays out the
//!    histogram and the request view's swimlanes. Log content only reaches a page through
//!    askama's escaping, and the pages' only script and style are two static files served
//!    under a Content-Security-Policy without `unsafe-inline`.
//!
//! With `--users-file`, `signin` stands in front of all five: a sign-in page, sessions in a
//! cookie, and failed sign-ins bounded per address.

mod client;
mod error;
mod highlight;
mod pages;
mod row;
pub mod signin;
mod svg;
mod url;
mod web;

use std::future::Future;

pub use client::{Client, ReplicaStatus};
pub use error::{Error, Result};
pub use pages::discover::{FACETS, TASK_FACETS};
pub use url::enc;
pub use web::{router, CSP};

/// Bounds of the UI's HTTP server, and its TLS.
pub use sawmill_http::ServeOptions as ServeConfig;

/// Serves the UI on `listener` until `shutdown` completes (discovery checks the replicas'
/// health in the background). Live tails end at once when the stop begins; other requests
/// get up to `config.stop_timeout`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    client: Client,
    signin: Option<signin::SignIn>,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let closing = client.clone();
    sawmill_http::serve(listener, router(client, signin), config, async move {
        shutdown.await;
        closing.close();
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests;
