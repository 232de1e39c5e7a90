//! The running shipper: wires the stages together (sources into the queue, the batcher out
//! of it, one sender per indexer replica) and stops them in order.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::batch::{BatchConfig, Batcher};
use crate::error::{Error, Result};
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
    /// Base URLs of the indexer replicas; every record goes to each.
    pub indexers: Vec<String>,
    /// Where the sender id and sequence numbers are kept.
    pub state: PathBuf,
    /// The unix datagram socket to serve, like `/dev/log`.
    pub syslog_socket: Option<PathBuf>,
    /// Syslog over UDP on this address.
    pub syslog_udp: Option<SocketAddr>,
    /// Syslog over TCP (RFC 6587 framing) on this address.
    pub syslog_tcp: Option<SocketAddr>,
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
            state,
            syslog_socket: None,
            syslog_udp: None,
            syslog_tcp: None,
            docker: None,
            tail: Vec::new(),
            queue_records: 10_000,
            queue_bytes: 16 << 20,
            backlog_bytes: 64 << 20,
            metrics: None,
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
    batcher: Option<JoinHandle<()>>,
    replicas: Vec<Arc<Replica>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
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

/// Serves `/metrics` on `addr`; returns the address bound.
async fn serve_metrics(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<Option<SocketAddr>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::bind("metrics", addr, e))?;
    let bound = listener.local_addr().ok();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || async move { metrics.render() }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(bound)
}

/// One backlog and sender per replica.
type Forwarding = (Vec<Arc<Replica>>, Vec<tokio::task::JoinHandle<()>>);

/// Starts one sender per replica, each on its own backlog.
fn start_forwarding(
    cfg: &ShipperConfig,
    metrics: &Arc<Metrics>,
    stop: &Arc<AtomicBool>,
) -> Result<Forwarding> {
    let replicas: Vec<Arc<Replica>> = cfg
        .indexers
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let url = u.trim_end_matches('/').to_string();
            Arc::new(Replica::new(i, url, cfg.backlog_bytes))
        })
        .collect();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let tasks = replicas
        .iter()
        .map(|r| tokio::spawn(r.clone().run(client.clone(), metrics.clone(), stop.clone())))
        .collect();
    Ok((replicas, tasks))
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
        let metrics = Arc::new(Metrics::with_replicas(&cfg.indexers));
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
        let (replicas, tasks) = start_forwarding(&cfg, &metrics, &stop_senders)?;
        let batcher = Batcher {
            queue: queue.clone(),
            parser: cfg.parser.clone(),
            state,
            state_dir: cfg.state.clone(),
            replicas: replicas.clone(),
            metrics: metrics.clone(),
            host: hostname(),
            config: BatchConfig {
                records: cfg.batch_records,
                bytes: cfg.batch_bytes,
                linger: cfg.linger,
            },
            reports: DropReports::new(cfg.drop_report_interval, replicas.len()),
            outage: None,
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
            replicas,
            tasks,
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
        if let Some(t) = self.batcher.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        let deadline = Instant::now() + self.drain_timeout;
        while Instant::now() < deadline && self.replicas.iter().any(|r| !r.is_empty()) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.log_undelivered();
        self.stop_senders.store(true, Relaxed);
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }

    /// Counts, in the log, what a stop leaves behind: records a replica has not acknowledged
    /// when the drain timeout ends are lost for it, and no drop report can reach it.
    fn log_undelivered(&self) {
        for (r, m) in self.replicas.iter().zip(&self.metrics.replicas) {
            let records = m.backlog_records();
            if records > 0 {
                tracing::error!(replica = %r.url, records, "Stopped before the replica acknowledged these records; they are lost for it.");
            }
        }
    }
}
