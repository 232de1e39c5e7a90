//! The running shipper: wires the stages together (sources into the queue, the batcher out
//! of it, one sender per indexer replica as discovery finds them) and stops them in order.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sawmill_cluster::{Discovery, DiscoveryConfig};

use crate::batch::{BatchConfig, Batcher};
use crate::error::{Error, Result};
use crate::fleet::{Fleet, FleetConfig};
use crate::forward::Replica;
use crate::host::hostname;
use crate::metrics::Metrics;
use crate::parse::Parser;
use crate::queue::Queue;
use crate::report::DropReports;
use crate::sources::docker::DockerConfig;
use crate::sources::file::FileConfig;
use crate::sources::socket::{SyslogSocket, TcpConfig, UdpConfig, UnixConfig};
use crate::sources::{self, Context, SourceConfig};
use crate::state::State;

/// Everything `sawmill shipper` is told. Each field is a flag.
#[derive(Clone, Debug)]
pub struct ShipperConfig {
    /// The indexer replicas: base URLs, or DNS names that list them (`dns+http://NAME:PORT`,
    /// `dnssrv+http://_SVC._tcp.NAME`). Each record goes to one group, and to every
    /// replica of it.
    pub indexers: Vec<String>,
    /// How replicas are reached: the CA and client certificate for `https://`, the token.
    pub connect: sawmill_http::Connect,
    /// How often DNS names are resolved again and every replica's group asked.
    pub discovery_interval: Duration,
    /// How long a replica no longer listed keeps its backlog before it is given up.
    pub replica_grace: Duration,
    /// Replicas of a batch's group that must take it before a file's checkpoint passes it.
    pub ack_replicas: usize,
    /// Where the sender id and sequence numbers are kept.
    pub state: PathBuf,
    /// The unix datagram socket to serve, like `/dev/log`.
    pub syslog_socket: Option<PathBuf>,
    /// Syslog over UDP on this address.
    pub syslog_udp: Option<SocketAddr>,
    /// Syslog over TCP (RFC 6587 framing) on this address.
    pub syslog_tcp: Option<SocketAddr>,
    /// Syslog over TLS (RFC 5425) on this address, with this certificate.
    pub syslog_tls: Option<(SocketAddr, Arc<sawmill_http::ServerTls>)>,
    /// Follow containers through the Docker Engine API at this address.
    pub docker: Option<String>,
    /// Tail files matching these globs.
    pub tail: Vec<String>,
    /// Queue bound in records.
    pub queue_records: usize,
    /// Queue bound in bytes.
    pub queue_bytes: usize,
    /// Per-replica backlog bound in (compressed) bytes.
    pub backlog_bytes: u64,
    /// Where to serve Prometheus metrics.
    pub metrics: Option<SocketAddr>,
    /// The `host` of records whose source names none; this machine's name when unset. In a
    /// container the machine's name is the container's: a DaemonSet passes its node's.
    pub host: Option<String>,
    pub parser: Parser,
    /// A batch is sent once it holds this many records …
    pub batch_records: usize,
    /// … or this many bytes of NDJSON …
    pub batch_bytes: usize,
    /// … or its first record has waited this long.
    pub linger: Duration,
    /// How often drops are reported as records of their own.
    pub drop_report_interval: Duration,
    /// How long a stop waits for replicas to take what is left.
    pub drain_timeout: Duration,
}

impl ShipperConfig {
    pub fn new(indexers: Vec<String>, state: PathBuf) -> ShipperConfig {
        ShipperConfig {
            indexers,
            connect: sawmill_http::Connect::default(),
            discovery_interval: Duration::from_secs(10),
            replica_grace: Duration::from_secs(15 * 60),
            ack_replicas: 1,
            state,
            syslog_socket: None,
            syslog_udp: None,
            syslog_tcp: None,
            syslog_tls: None,
            docker: None,
            tail: Vec::new(),
            queue_records: 10_000,
            queue_bytes: 16 << 20,
            backlog_bytes: 64 << 20,
            metrics: None,
            host: None,
            parser: Parser::default(),
            batch_records: 2000,
            batch_bytes: 1 << 20,
            linger: Duration::from_millis(200),
            drop_report_interval: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

pub struct Shipper {
    pub metrics: Arc<Metrics>,
    /// Where metrics are served, once bound.
    pub metrics_addr: Option<SocketAddr>,
    pub queue: Queue,
    stop_sources: Arc<AtomicBool>,
    /// Set only once every source has stopped, so that the batcher takes all they queued.
    stop_batcher: Arc<AtomicBool>,
    stop_senders: Arc<AtomicBool>,
    /// The sources' threads.
    threads: Vec<JoinHandle<()>>,
    batcher: Option<JoinHandle<Fleet>>,
    /// Keeps the membership current while it lives.
    _discovery: Discovery,
    drain_timeout: Duration,
    gate: Arc<std::sync::RwLock<()>>,
    _socket: Option<Arc<SyslogSocket>>,
}

/// The sources the flags turn on, in the order they start.
fn source_configs(cfg: &ShipperConfig, src: &str) -> Vec<Box<dyn SourceConfig>> {
    let max = cfg.parser.max_message_bytes;
    let mut out: Vec<Box<dyn SourceConfig>> = Vec::new();
    if let Some(path) = &cfg.syslog_socket {
        out.push(Box::new(UnixConfig {
            path: path.clone(),
            max_message_bytes: max,
        }));
    }
    if let Some(addr) = cfg.syslog_udp {
        out.push(Box::new(UdpConfig {
            addr,
            max_message_bytes: max,
        }));
    }
    if let Some(addr) = cfg.syslog_tcp {
        out.push(Box::new(TcpConfig {
            addr,
            max_message_bytes: max,
            tls: None,
        }));
    }
    if let Some((addr, tls)) = &cfg.syslog_tls {
        out.push(Box::new(TcpConfig {
            addr: *addr,
            max_message_bytes: max,
            tls: Some(tls.clone()),
        }));
    }
    if let Some(host) = &cfg.docker {
        out.push(Box::new(DockerConfig {
            host: host.clone(),
            checkpoints: cfg.state.join("docker"),
            max_line_bytes: max,
        }));
    }
    if !cfg.tail.is_empty() {
        out.push(Box::new(FileConfig {
            globs: cfg.tail.clone(),
            checkpoints: cfg.state.join("files.json"),
            max_line_bytes: max,
            src: src.to_string(),
            // A quarter of a backlog, in bytes of the files: records compress to about the
            // size of their lines, so what the files sent and no replica took yet fits in
            // every backlog, with room left for the sockets' records.
            window: (cfg.backlog_bytes / 4).max(1),
        }));
    }
    out
}

/// Serves `/metrics` and `/healthz` on `addr`; returns the address bound. `/healthz`
/// answers once the sources are up (this is served after they started), for an
/// orchestrator's health check (`sawmill health http://127.0.0.1:PORT/healthz`).
async fn serve_metrics(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<Option<SocketAddr>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::bind("metrics", addr, e))?;
    let bound = listener.local_addr().ok();
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || async move { metrics.render() }),
        )
        .route("/healthz", axum::routing::get(sawmill_http::serving));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(bound)
}

/// Starts discovery of the replicas `cfg.indexers` names, and the fleet that follows it
/// with a backlog and sender per replica.
async fn start_forwarding(
    cfg: &ShipperConfig,
    metrics: &Arc<Metrics>,
    stop: &Arc<AtomicBool>,
) -> Result<(Discovery, Fleet)> {
    let targets = sawmill_cluster::target::parse_all(&cfg.indexers)
        .map_err(|e| Error::Config(e.to_string()))?;
    if cfg.discovery_interval.is_zero() {
        return Err(Error::Config(
            "--discovery-interval must be longer than 0 (e.g. 10s)".into(),
        ));
    }
    if cfg.ack_replicas == 0 {
        return Err(Error::Config(
            "--ack-replicas must be at least 1 (the replicas of a group that must take a batch before a file's checkpoint passes it)".into(),
        ));
    }
    let client = cfg
        .connect
        .client(reqwest::Client::builder().timeout(Duration::from_secs(30)))
        .map_err(|e| Error::Config(e.to_string()))?;
    let discovery = Discovery::start(
        targets.clone(),
        DiscoveryConfig {
            interval: cfg.discovery_interval,
            ..Default::default()
        },
        client.clone(),
    )
    .await;
    let fleet = Fleet::new(
        FleetConfig {
            client,
            token: cfg.connect.token.clone(),
            runtime: tokio::runtime::Handle::current(),
            stop: stop.clone(),
            backlog_bytes: cfg.backlog_bytes,
            grace: cfg.replica_grace,
            ack_replicas: cfg.ack_replicas,
        },
        metrics.clone(),
        &targets,
        discovery.subscribe(),
    );
    Ok((discovery, fleet))
}

impl Shipper {
    /// Starts every stage, in data-flow order (the queue holds what sources read until the
    /// batcher runs). Must be called inside a tokio runtime.
    pub async fn start(cfg: ShipperConfig) -> Result<Shipper> {
        if cfg.indexers.is_empty() {
            return Err(Error::Config(
                "no --indexer given: name at least one indexer URL".into(),
            ));
        }
        let metrics = Arc::new(Metrics::default());
        let queue = Queue::new(cfg.queue_records, cfg.queue_bytes, metrics.clone());
        let state = State::open(&cfg.state)?;
        let cx = Context {
            queue: queue.clone(),
            stop: Arc::new(AtomicBool::new(false)),
            gate: Arc::default(),
        };
        let (mut threads, mut socket) = (Vec::new(), None);
        for source in source_configs(&cfg, &state.src) {
            let running = source.spawn(&cx)?;
            threads.extend(running.thread);
            socket = socket.or(running.socket);
        }
        let stop_senders = Arc::new(AtomicBool::new(false));
        let (discovery, fleet) = start_forwarding(&cfg, &metrics, &stop_senders).await?;
        let batcher = Batcher {
            queue: queue.clone(),
            parser: cfg.parser.clone(),
            state,
            state_dir: cfg.state.clone(),
            fleet,
            metrics: metrics.clone(),
            host: cfg.host.clone().unwrap_or_else(hostname),
            config: BatchConfig {
                records: cfg.batch_records,
                bytes: cfg.batch_bytes,
                linger: cfg.linger,
            },
            reports: DropReports::new(cfg.drop_report_interval),
            outage: None,
            placing: Default::default(),
        };
        let stop_batcher = Arc::new(AtomicBool::new(false));
        let stop = stop_batcher.clone();
        let batcher = sources::thread("sawmill-batch", move || {
            // Parsing, JSON and compression can wait in the queue; the socket readers and
            // the applications cannot.
            crate::priority::run_only_when_idle();
            batcher.run(&stop)
        })?;
        let metrics_addr = match cfg.metrics {
            Some(addr) => serve_metrics(addr, metrics.clone()).await?,
            None => None,
        };
        Ok(Shipper {
            metrics,
            metrics_addr,
            queue,
            stop_sources: cx.stop,
            stop_batcher,
            stop_senders,
            threads,
            batcher: Some(batcher),
            _discovery: discovery,
            drain_timeout: cfg.drain_timeout,
            gate: cx.gate,
            _socket: socket,
        })
    }

    /// Stops the sources (each stops accepting, then queues what it already took), lets
    /// the batcher empty the queue, and waits a little for the replicas to take the rest.
    pub async fn stop(mut self) {
        self.stop_sources.store(true, Relaxed);
        // Waits out any line being enqueued right now; later ones see the flag.
        drop(self.gate.write().unwrap());
        for t in self.threads.drain(..) {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        // Only now: a batcher stopped with the sources could end before a socket's drain.
        self.stop_batcher.store(true, Relaxed);
        let Some(t) = self.batcher.take() else {
            return;
        };
        let Ok(Ok(mut fleet)) = tokio::task::spawn_blocking(move || t.join()).await else {
            // The fleet went with the batcher, so its senders cannot be aborted from here:
            // told to stop, each ends once its backlog is delivered (or with the runtime).
            tracing::error!("The batcher ended with a panic; what it held is lost.");
            self.stop_senders.store(true, Relaxed);
            return;
        };
        let replicas = fleet.replicas();
        let deadline = Instant::now() + self.drain_timeout;
        while Instant::now() < deadline && replicas.iter().any(|r| !r.is_empty()) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        log_undelivered(&replicas);
        self.stop_senders.store(true, Relaxed);
        fleet.abort();
    }
}

/// Counts, in the log, what a stop leaves behind: records a replica has not acknowledged
/// when the drain timeout ends are lost for it, and no drop report can reach it.
fn log_undelivered(replicas: &[Arc<Replica>]) {
    for r in replicas {
        let records = r.m.backlog_records();
        if records > 0 {
            tracing::error!(replica = %r.url, records, "Stopped before the replica acknowledged these records; they are lost for it.");
        }
    }
}
