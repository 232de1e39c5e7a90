//! The commands that run one component until SIGTERM or SIGINT (`indexer`, `ui`,
//! `shipper`), and the running indexer that `sawmill up` builds on.

use std::net::SocketAddr;

use anyhow::Context;
use sawmill_indexer::{ApiConfig, RepairConfig, Store, StoreConfig};

use crate::signal::shutdown_signal;

/// What an indexer does once asked to stop.
const INDEXER_STOPPING: &str = "Shutting down: committing what was acknowledged.";

/// `sawmill indexer`: serves until a stop signal, then commits what was acknowledged.
pub async fn indexer(
    listen: SocketAddr,
    config: StoreConfig,
    api: ApiConfig,
    repair: RepairConfig,
) -> anyhow::Result<()> {
    let stop = shutdown_signal(INDEXER_STOPPING.into());
    let indexer = RunningIndexer::start(listen, config, api, repair).await?;
    stop.await;
    indexer.stop().await?;
    tracing::info!("Stopped.");
    Ok(())
}

/// An indexer serving its API on a spawned task.
pub struct RunningIndexer {
    pub url: String,
    /// The URL this process's own clients use: `url`, or loopback when it listens on every
    /// address (`0.0.0.0` names no host a certificate could be made for).
    pub local_url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    /// The repair loop, when there are peers.
    repair: Option<tokio::task::JoinHandle<()>>,
}

impl RunningIndexer {
    /// Opens the store, binds `listen` and prints the address (`sawmill indexer listening
    /// on URL`): tests and scripts read that first line to find a port the kernel chose.
    pub async fn start(
        listen: SocketAddr,
        config: StoreConfig,
        api: ApiConfig,
        repair: RepairConfig,
    ) -> anyhow::Result<RunningIndexer> {
        let data = config.data.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(config))
            .await?
            .with_context(|| format!("cannot open the data directory `{}`", data.display()))?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} (is another sawmill running? pick another with --listen)"))?;
        let bound = listener.local_addr()?;
        let scheme = sawmill_http::scheme(&api.tls);
        let url = format!("{scheme}://{bound}");
        let local_url = match bound.ip() {
            std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
                format!("{scheme}://127.0.0.1:{}", bound.port())
            }
            std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
                format!("{scheme}://[::1]:{}", bound.port())
            }
            _ => url.clone(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // Started once the address is bound, so peers that find this replica can ask it.
        let repair = sawmill_indexer::start_repair(store.clone(), repair);
        let server = tokio::spawn(sawmill_indexer::serve(listener, store, api, async {
            let _ = stopped.await;
        }));
        println!("sawmill indexer listening on {url}");
        Ok(RunningIndexer {
            url,
            local_url,
            stop,
            server,
            repair,
        })
    }

    /// Stops serving and waits until everything acknowledged is committed.
    pub async fn stop(self) -> anyhow::Result<()> {
        if let Some(r) = &self.repair {
            r.abort();
        }
        let _ = self.stop.send(());
        self.server.await??;
        Ok(())
    }
}

/// Binds the UI's address, returning the listener and its URL.
pub async fn ui_listener(
    listen: SocketAddr,
    tls: &Option<std::sync::Arc<sawmill_http::ServerTls>>,
) -> anyhow::Result<(tokio::net::TcpListener, String)> {
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| {
        format!("cannot listen on {listen} for the UI (is another sawmill running? pick another with --ui-listen / --listen)")
    })?;
    let url = format!("{}://{}", sawmill_http::scheme(tls), listener.local_addr()?);
    Ok((listener, url))
}

/// `sawmill ui`: serves the web UI over `indexers` until a stop signal.
pub async fn ui(
    listen: SocketAddr,
    indexers: Vec<sawmill_cluster::Target>,
    discovery_interval: std::time::Duration,
    connect: sawmill_http::Connect,
    signin: Option<sawmill_ui::signin::SignIn>,
    config: sawmill_ui::ServeConfig,
) -> anyhow::Result<()> {
    let stopping = format!(
        "Stopping: finishing the requests in flight (up to {} s).",
        config.stop_timeout.as_secs()
    );
    let stop = shutdown_signal(stopping);
    let client = sawmill_ui::Client::start(indexers, discovery_interval, connect).await?;
    let (listener, url) = ui_listener(listen, &config.tls).await?;
    println!("sawmill ui listening on {url}");
    sawmill_ui::serve(listener, client, signin, config, stop).await?;
    Ok(())
}

/// `sawmill query`: serves the search API over every group until a stop signal.
pub async fn query(
    listen: SocketAddr,
    cluster: sawmill_query::ClusterConfig,
    config: sawmill_query::ServeConfig,
    access: sawmill_http::Access,
) -> anyhow::Result<()> {
    let stop = shutdown_signal(format!(
        "Stopping: finishing the requests in flight (up to {} s).",
        config.stop_timeout.as_secs()
    ));
    let cluster = sawmill_query::Cluster::start(cluster).await?;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| {
        format!("cannot listen on {listen} for the query API (is another sawmill query running? pick another with --listen)")
    })?;
    let url = format!(
        "{}://{}",
        sawmill_http::scheme(&config.tls),
        listener.local_addr()?
    );
    println!("sawmill query listening on {url}");
    sawmill_query::serve(listener, cluster, config, access, stop).await;
    Ok(())
}

/// What a shipper does once asked to stop, given how long it may take to deliver.
pub fn shipper_stopping(drain_timeout: std::time::Duration) -> String {
    format!(
        "Stopping: no longer accepting; draining the socket and delivering what is queued (up to {} s).",
        drain_timeout.as_secs()
    )
}

/// `sawmill shipper`: ships until a stop signal, then delivers what it accepted.
pub async fn shipper(cfg: sawmill_shipper::ShipperConfig) -> anyhow::Result<()> {
    let stop = shutdown_signal(shipper_stopping(cfg.drain_timeout));
    let socket = cfg.syslog_socket.clone();
    let shipper = sawmill_shipper::Shipper::start(cfg)
        .await
        .context("cannot start the shipper")?;
    if let Some(p) = socket {
        println!("sawmill shipper listening on {}", p.display());
    }
    if let Some(addr) = shipper.metrics_addr {
        println!("sawmill shipper metrics on http://{addr}/metrics");
    }
    stop.await;
    shipper.stop().await;
    Ok(())
}
