//! Sawmill's HTTP, shared by the indexer, `query` and the UI (which talk to each other only
//! over HTTP, so none links another's crate):
//!
//! - [`serve`], the HTTP/1 server loop: at most `max_connections` at once, a client has
//!   `header_timeout` to finish the TLS handshake and send a request head, and a stop waits
//!   at most `stop_timeout` for requests in flight before dropping their connections.
//!   axum::serve has none of these: one client stalled mid-request held a stop for as long
//!   as it stayed connected, and nothing bounded how many connections a flood opened.
//! - [`tls`]: certificates for listeners and clients; [`auth`]: ingest and read tokens;
//!   [`connect`]: a client's TLS and token together.
//! - [`check_listen`]: no listener on a network address without TLS unless asked for.

pub mod auth;
pub mod connect;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

pub use auth::{Access, ClientToken, Need, Tokens};
pub use connect::{describe, Connect};
pub use tls::{ClientTls, ServerTls, ServerTlsFiles};

/// What can go wrong setting up a listener or a client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("TLS: `{file}`: {why}")]
    Tls { file: PathBuf, why: String },
    #[error("building the HTTP client: {0}")]
    Client(String),
    #[error("token file `{file}`: {why}")]
    Tokens { file: PathBuf, why: String },
    #[error("refusing to listen on {addr} without TLS: anyone on the network could read and write every log line. Pass --tls-cert FILE --tls-key FILE (and token files) to serve it safely, or --insecure if a private network or a proxy in front already protects it")]
    Insecure { addr: SocketAddr },
}

impl Error {
    pub(crate) fn tls(file: &Path, why: impl std::fmt::Display) -> Error {
        Error::Tls {
            file: file.to_path_buf(),
            why: why.to_string(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Refuses a plain-HTTP listener on anything but loopback, unless `insecure`.
pub fn check_listen(addr: SocketAddr, tls: bool, insecure: bool) -> Result<()> {
    if tls || insecure || addr.ip().is_loopback() {
        return Ok(());
    }
    Err(Error::Insecure { addr })
}

/// `https` with TLS, `http` without: the scheme of a listener's URL.
pub fn scheme(tls: &Option<Arc<ServerTls>>) -> &'static str {
    if tls.is_some() {
        "https"
    } else {
        "http"
    }
}

/// How a server serves its connections.
#[derive(Clone)]
pub struct ServeOptions {
    pub header_timeout: Duration,
    pub stop_timeout: Duration,
    pub max_connections: usize,
    /// HTTPS only, with this configuration.
    pub tls: Option<Arc<ServerTls>>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            header_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(10),
            max_connections: 4096,
            tls: None,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets the requests in flight
/// finish for up to `stop_timeout` and drops whatever connections remain.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let ServeOptions {
        header_timeout,
        stop_timeout,
        max_connections,
        tls,
    } = options;
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    let mut at_limit = false;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // At the limit, nothing more is accepted until a connection ends: the kernel's
        // backlog holds the rest, so a flood of clients costs a bounded number of tasks and
        // buffers here.
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if !std::mem::replace(&mut at_limit, true) {
                    tracing::warn!(
                        max_connections,
                        "Connection limit reached; new connections wait until one ends."
                    );
                }
                tokio::select! {
                    _ = &mut shutdown => break,
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                }
            }
        };
        if slots.available_permits() > 0 {
            at_limit = false;
        }
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((io, peer)) => {
                    // Streamed answers end with a small write: without this, Nagle's algorithm
                    // holds it until the client's delayed ACK (40 ms per answer, measured).
                    let _ = io.set_nodelay(true);
                    let (app, stop) = (app.clone(), stop_rx.clone());
                    let acceptor = tls.as_ref().map(|t| t.acceptor());
                    conns.spawn(async move {
                        match acceptor {
                            None => connection(io, app, peer, header_timeout, stop).await,
                            // The handshake is part of the head: a client that stalls in it
                            // holds a slot no longer than one that stalls sending headers.
                            Some(acceptor) => {
                                match tokio::time::timeout(header_timeout, acceptor.accept(io)).await {
                                    Ok(Ok(io)) => connection(io, app, peer, header_timeout, stop).await,
                                    Ok(Err(e)) if tls::is_certificate_refusal(&e) => {
                                        tracing::warn!(%peer, error = %e, "A client's certificate was refused.")
                                    }
                                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed."),
                                    Err(_) => tracing::debug!("TLS handshake timed out."),
                                }
                            }
                        }
                        drop(slot);
                    });
                }
                Err(e) => {
                    // Out of file descriptors, most likely: the listener itself is fine, and a
                    // pause lets connections close instead of spinning on the error.
                    tracing::warn!(error = %e, "Accepting a connection failed.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            // Finished connections are reaped as they go, so the set stays small.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(stop_timeout, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = conns.len(),
            stop_timeout_ms = stop_timeout.as_millis() as u64,
            "Dropping connections still open at the stop deadline."
        );
        conns.shutdown().await;
    }
}

/// One connection: served until it ends, or, once the stop begins, until its request in
/// flight is answered (an idle connection closes at once).
async fn connection<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: I,
    app: Router,
    peer: SocketAddr,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    // The client's address rides in every request (the UI bounds failed sign-ins by it).
    let app = tower::ServiceBuilder::new()
        .map_request(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            req
        })
        .service(app);
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "Connection ended with an error.");
            }
            return;
        }
        _ = stop.wait_for(|s| *s) => {}
    }
    conn.as_mut().graceful_shutdown();
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "Connection ended with an error.");
    }
}

/// `/healthz` of a part with nothing more to say than that it serves (the UI; the shipper on
/// its metrics address): `{"status":"ok"}`, for an orchestrator's health check.
pub async fn serving() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"status": "ok"}))
}
