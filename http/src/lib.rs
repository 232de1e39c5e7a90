//! Sawmill's HTTP/1 server loop, shared by the indexer and the UI (which talk to each other
//! only over HTTP, so neither links the other's crate): at most `max_connections` at once, a
//! client has `header_timeout` to send a request head, and a stop waits at most
//! `stop_timeout` for requests in flight before dropping their connections.
//!
//! axum::serve has none of these: one client stalled mid-request held a stop for as long as
//! it stayed connected, and nothing bounded how many connections a flood of clients opened.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// Serves `app` on `listener` until `shutdown` completes, then lets the requests in flight
/// finish for up to `stop_timeout` and drops whatever connections remain.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    stop_timeout: Duration,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) {
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
                Ok((io, _)) => {
                    // Streamed answers end with a small write: without this, Nagle's algorithm
                    // holds it until the client's delayed ACK (40 ms per answer, measured).
                    let _ = io.set_nodelay(true);
                    let served = connection(io, app.clone(), header_timeout, stop_rx.clone());
                    conns.spawn(async move {
                        served.await;
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
async fn connection(
    io: tokio::net::TcpStream,
    app: Router,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
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
