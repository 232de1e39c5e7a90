//! The running shipper: sources into the queue, the batcher out of it, and one sender per
//! indexer replica.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use serde_json::Value;
use time::OffsetDateTime;

use sawmill_record::{Key, Severity};

use crate::error::{Error, Result};
use crate::event::{AckTracker, Event};
use crate::forwarder::{Batch, Replica};
use crate::metrics::Metrics;
use crate::queue::{take_drops, Item, Queue};
use crate::sources::docker::{run as docker_run, DockerConfig};
use crate::sources::file::{run as file_run, FileConfig};
use crate::sources::syslog::{read_loop, tcp_loop, udp_loop, SyslogSocket};
use crate::state::State;
use crate::syslog::Parser;

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
    stop_senders: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    replicas: Vec<Arc<Replica>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    drain_timeout: Duration,
    gate: Arc<std::sync::RwLock<()>>,
    _socket: Option<Arc<SyslogSocket>>,
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| Error::io(name, e))
}

fn sock_path(cfg: &ShipperConfig) -> String {
    cfg.syslog_socket
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// The machine's host name, for records whose source names none.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut _, buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

impl Shipper {
    /// Starts everything; must be called inside a tokio runtime.
    pub async fn start(cfg: ShipperConfig) -> Result<Shipper> {
        if cfg.indexers.is_empty() {
            return Err(Error::Config(
                "no --indexer given: name at least one indexer URL".into(),
            ));
        }
        let metrics = Arc::new(Metrics::with_replicas(&cfg.indexers));
        let queue = Queue::new(cfg.queue_records, cfg.queue_bytes, metrics.clone());
        let state = State::open(&cfg.state)?;
        let stop_sources = Arc::new(AtomicBool::new(false));
        let stop_senders = Arc::new(AtomicBool::new(false));
        let gate: Arc<std::sync::RwLock<()>> = Arc::default();
        let mut threads = Vec::new();
        let max = cfg.parser.max_message_bytes;
        let socket = match &cfg.syslog_socket {
            Some(p) => Some(Arc::new(SyslogSocket::open(p)?)),
            None => None,
        };
        if let Some(sock) = &socket {
            let (sock, q, stop) = (sock.clone(), queue.clone(), stop_sources.clone());
            threads.push(spawn("sawmill-syslog", move || {
                read_loop(&sock, &q, max, &stop)
            })?);
            tracing::info!(path = %sock_path(&cfg), "Listening for syslog datagrams.");
        }
        if let Some(addr) = cfg.syslog_udp {
            let sock = std::net::UdpSocket::bind(addr).map_err(|e| {
                Error::Config(format!("cannot listen for syslog on udp {addr}: {e}"))
            })?;
            let (q, stop) = (queue.clone(), stop_sources.clone());
            threads.push(spawn("sawmill-udp", move || {
                udp_loop(&sock, &q, max, &stop)
            })?);
        }
        if let Some(addr) = cfg.syslog_tcp {
            let l = std::net::TcpListener::bind(addr).map_err(|e| {
                Error::Config(format!("cannot listen for syslog on tcp {addr}: {e}"))
            })?;
            let (q, stop) = (queue.clone(), stop_sources.clone());
            threads.push(spawn("sawmill-tcp", move || tcp_loop(&l, &q, max, &stop))?);
        }
        if let Some(host) = &cfg.docker {
            let dcfg = DockerConfig {
                host: host.clone(),
                checkpoints: cfg.state.join("docker"),
                max_line_bytes: max,
                gate: gate.clone(),
            };
            let (q, stop) = (queue.clone(), stop_sources.clone());
            // Not joined at stop: it blocks on the engine's streams; followers stop reading
            // (and checkpointing) as soon as `stop` is set.
            spawn("sawmill-docker", move || docker_run(&dcfg, &q, &stop))?;
        }
        if !cfg.tail.is_empty() {
            for pattern in &cfg.tail {
                glob::Pattern::new(pattern).map_err(|e| {
                    Error::Config(format!(
                        "--tail `{pattern}` is not a valid glob: {e} (escape `*`, `?` and `[` as `[*]`, `[?]` and `[[]`)"
                    ))
                })?;
            }
            let fcfg = FileConfig {
                globs: cfg.tail.clone(),
                checkpoints: cfg.state.join("files.json"),
                max_line_bytes: max,
                src: state.src.clone(),
                gate: gate.clone(),
                // A quarter of a backlog, in bytes of the files: records compress to about
                // the size of their lines, so what the files sent and no replica took yet
                // fits in every backlog, with room left for the sockets' records.
                window: (cfg.backlog_bytes / 4).max(1),
            };
            let (q, stop) = (queue.clone(), stop_sources.clone());
            threads.push(spawn("sawmill-files", move || file_run(&fcfg, &q, &stop))?);
        }
        let replicas: Vec<Arc<Replica>> = cfg
            .indexers
            .iter()
            .enumerate()
            .map(|(i, u)| {
                Arc::new(Replica::new(
                    i,
                    u.trim_end_matches('/').to_string(),
                    cfg.backlog_bytes,
                ))
            })
            .collect();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        let tasks = replicas
            .iter()
            .map(|r| {
                tokio::spawn(
                    r.clone()
                        .run(client.clone(), metrics.clone(), stop_senders.clone()),
                )
            })
            .collect();
        {
            let batcher = Batcher {
                queue: queue.clone(),
                parser: cfg.parser.clone(),
                state,
                replicas: replicas.clone(),
                metrics: metrics.clone(),
                host: hostname(),
                cfg: cfg.clone(),
                outage: None,
            };
            let stop = stop_sources.clone();
            threads.push(spawn("sawmill-batch", move || {
                // Parsing, JSON and compression can wait in the queue; the socket readers
                // and the applications cannot.
                crate::priority::run_only_when_idle();
                batcher.run(&stop)
            })?);
        }
        let mut metrics_addr = None;
        if let Some(addr) = cfg.metrics {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| Error::Config(format!("cannot serve metrics on {addr}: {e}")))?;
            metrics_addr = listener.local_addr().ok();
            let m = metrics.clone();
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || async move { m.render() }),
            );
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
        }
        Ok(Shipper {
            metrics,
            metrics_addr,
            queue,
            stop_sources,
            stop_senders,
            threads,
            replicas,
            tasks,
            drain_timeout: cfg.drain_timeout,
            gate,
            _socket: socket,
        })
    }

    /// Stops the sources, sends what is queued, and waits a little for the replicas.
    pub async fn stop(mut self) {
        self.stop_sources.store(true, Relaxed);
        // Waits out any line being enqueued right now; later ones see the flag.
        drop(self.gate.write().unwrap());
        for t in self.threads.drain(..) {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        let deadline = Instant::now() + self.drain_timeout;
        while Instant::now() < deadline && self.replicas.iter().any(|r| !r.is_empty()) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.stop_senders.store(true, Relaxed);
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

/// A `sawmill dropped N records …` record, as rsyslog reports its own losses.
fn drop_report(message: String, n: u64, source: &str) -> Event {
    let mut ev = Event {
        message,
        service: Some("sawmill-shipper".into()),
        severity: Some(Severity::Warning),
        received: Some(OffsetDateTime::now_utc()),
        ..Default::default()
    };
    ev.fields.insert("dropped".into(), Value::from(n));
    ev.fields.insert("source".into(), Value::from(source));
    ev
}

struct Batcher {
    queue: Queue,
    parser: Parser,
    state: State,
    replicas: Vec<Arc<Replica>>,
    metrics: Arc<Metrics>,
    host: String,
    cfg: ShipperConfig,
    /// Set while sequence numbers cannot be reserved on disk.
    outage: Option<StateOutage>,
}

/// An episode in which the state directory could not be written (full or read-only disk).
struct StateOutage {
    since: Instant,
    retry_at: Instant,
    backoff: Duration,
    /// Records sent without a key meanwhile.
    unkeyed: u64,
}

/// Retries of a failed reservation start this far apart and double up to the maximum.
const STATE_RETRY_FIRST: Duration = Duration::from_millis(50);
const STATE_RETRY_MAX: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Pending {
    acks: Vec<(Arc<AckTracker>, std::ops::Range<u64>)>,
    ndjson: Vec<u8>,
    records: u64,
    /// Records a source can read again (file lines).
    rereadable: u64,
    received_sum: i128,
    since: Option<Instant>,
    pinned: bool,
}

/// How long the batcher naps when the queue is empty, and how many naps in a row before
/// it parks until the next push.
const NAP: Duration = Duration::from_millis(2);
const IDLE_NAPS: u32 = 3;

impl Batcher {
    fn run(mut self, stop: &AtomicBool) {
        let mut p = Pending::default();
        let mut reported = [0u64; 6];
        let mut reported_lost = 0u64;
        // Per replica: records given up for it as last reported, and when its episode began.
        let mut reported_replica = vec![0u64; self.replicas.len()];
        let mut episode_start = vec![0u64; self.replicas.len()];
        let mut last_report = Instant::now();
        let mut idle_naps = 0;
        loop {
            let wait = p
                .since
                .map_or(self.cfg.linger, |s| {
                    self.cfg.linger.saturating_sub(s.elapsed())
                })
                .max(Duration::from_millis(1));
            // Under load the batcher naps instead of parking on the queue: a parked reader
            // makes every push pay a wake-up syscall, on the socket reader's time.
            let item = match self.queue.try_pop() {
                Some(item) => {
                    idle_naps = 0;
                    Some(item)
                }
                None if idle_naps < IDLE_NAPS => {
                    idle_naps += 1;
                    std::thread::sleep(NAP.min(wait));
                    None
                }
                None => match self.queue.pop(wait) {
                    Ok(item) => Some(item),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                },
            };
            if let Some(item) = item {
                let ev = self.event(item);
                self.add(&mut p, ev);
            }
            if self
                .outage
                .as_ref()
                .is_some_and(|o| Instant::now() >= o.retry_at)
            {
                // Recover without waiting for the next record.
                self.reserved(1);
            }
            if last_report.elapsed() >= self.cfg.drop_report_interval {
                let secs = last_report.elapsed().as_secs();
                last_report = Instant::now();
                let mut drops: Vec<(&str, &str, u64)> = take_drops(&self.metrics, &mut reported)
                    .into_iter()
                    .map(|(s, n)| (s.name(), "", n))
                    .collect();
                // Records every replica gave up on are lost just the same.
                let lost = self.metrics.records_lost.load(Relaxed);
                if lost > reported_lost {
                    drops.push(("backlog", "", lost - reported_lost));
                    reported_lost = lost;
                }
                for (source, why, n) in drops {
                    let ev = drop_report(
                        format!(
                            "sawmill dropped {n} records from {source}{why} in the last {secs} s"
                        ),
                        n,
                        source,
                    );
                    self.metrics.drop_reports.fetch_add(1, Relaxed);
                    self.add(&mut p, ev);
                    p.pinned = true;
                }
                // What one replica gave up while others took it: the replica misses it, so
                // say which one (the others hold the report; it gets it too when back, as
                // reports are never evicted).
                for (i, r) in self.replicas.clone().iter().enumerate() {
                    let m = &self.metrics.replicas[i];
                    // Saturating, and never below what was reported: lines a replica gave up
                    // count as re-read only once every replica has given them up, so this
                    // difference can shrink after a report went out (a panic, or a report of
                    // 2^64 records, before).
                    let total = m
                        .records_dropped
                        .load(Relaxed)
                        .saturating_sub(m.records_reread.load(Relaxed));
                    let n = total.saturating_sub(reported_replica[i]);
                    reported_replica[i] = reported_replica[i].max(total);
                    if n > 0 {
                        let mut ev = drop_report(
                            format!(
                                "sawmill dropped {n} records for replica {} in the last {secs} s",
                                r.url
                            ),
                            n,
                            "replica",
                        );
                        ev.fields
                            .insert("replica".into(), Value::from(r.url.clone()));
                        self.metrics.drop_reports.fetch_add(1, Relaxed);
                        self.add(&mut p, ev);
                        p.pinned = true;
                    } else if r.overflowing.swap(false, Relaxed) {
                        tracing::warn!(replica = %r.url, dropped = total.saturating_sub(episode_start[i]), "Replica's backlog has room again; what it missed was reported.");
                    }
                    if !r.overflowing.load(Relaxed) {
                        episode_start[i] = total;
                    }
                }
            }
            let full = p.records as usize >= self.cfg.batch_records
                || p.ndjson.len() >= self.cfg.batch_bytes;
            let due = p.since.is_some_and(|s| s.elapsed() >= self.cfg.linger);
            if full || due || (p.pinned && p.records > 0) {
                self.flush(&mut p);
            }
            if stop.load(Relaxed) && self.queue.is_empty() {
                self.flush(&mut p);
                return;
            }
        }
        self.flush(&mut p);
    }

    fn event(&self, item: Item) -> Event {
        match item {
            Item::Syslog {
                data,
                received,
                creds,
                ..
            } => {
                let parsed = self.parser.parse(&data, received);
                if parsed.fallback {
                    self.metrics.parse_fallbacks.fetch_add(1, Relaxed);
                }
                let mut ev = parsed.event;
                if let Some(c) = creds {
                    // Trusted: the kernel says who sent it, whatever the header claims.
                    ev.fields.insert("_pid".into(), Value::from(c.pid));
                    ev.fields.insert("_uid".into(), Value::from(c.uid));
                    ev.fields.insert("_gid".into(), Value::from(c.gid));
                }
                ev
            }
            Item::Event(ev, _) => *ev,
        }
    }

    fn add(&mut self, p: &mut Pending, mut ev: Event) {
        match &ev.key {
            Some((src, seq)) => {
                let key = Key {
                    src: Cow::Borrowed(src),
                    seq: *seq,
                };
                ev.write_record(&mut p.ndjson, Some(key), &self.host)
            }
            None => {
                let seq = self.number();
                let key = seq.map(|seq| Key {
                    src: Cow::Borrowed(&self.state.src),
                    seq,
                });
                ev.write_record(&mut p.ndjson, key, &self.host)
            }
        }
        // Only once the record is in the batch: an ack released for a record that was
        // dropped would let its source's checkpoint pass a line never sent.
        if let Some((t, range)) = ev.ack.take() {
            p.rereadable += 1;
            // A source's lines arrive in order: one range per source and batch.
            match p.acks.last_mut() {
                Some((last, r)) if Arc::ptr_eq(last, &t) && r.end == range.start => {
                    r.end = range.end
                }
                _ => p.acks.push((t, range)),
            }
        }
        p.records += 1;
        p.received_sum += ev
            .received
            .unwrap_or_else(OffsetDateTime::now_utc)
            .unix_timestamp_nanos()
            / 1000;
        p.since.get_or_insert_with(Instant::now);
    }

    /// The next sequence number, if it is reserved on disk. Otherwise none: a number not
    /// made durable would be handed out again after a restart, and the indexer would drop
    /// the record that then carries it as a duplicate. A record without a number goes
    /// without a key (issue 10, B2): stored, though a resend may store it twice.
    fn number(&mut self) -> Option<u64> {
        match self.reserved(1).then(|| self.state.next_seq()) {
            Some(Ok(s)) => Some(s),
            _ => {
                self.metrics.state_unkeyed.fetch_add(1, Relaxed);
                if let Some(o) = &mut self.outage {
                    o.unkeyed += 1;
                }
                None
            }
        }
    }

    /// Whether the next `n` sequence numbers are reserved on disk, reserving them if
    /// needed. After a failure, tries again only once its backoff has passed; logs ERROR
    /// once per episode and INFO when it ends.
    fn reserved(&mut self, n: u64) -> bool {
        // Called for every record: the clock is read only during an outage.
        if self
            .outage
            .as_ref()
            .is_some_and(|o| Instant::now() < o.retry_at)
        {
            return false;
        }
        match self.state.reserve(n) {
            Ok(()) => {
                if let Some(o) = self.outage.take() {
                    self.metrics.state_unwritable.store(0, Relaxed);
                    tracing::info!(
                        unkeyed = o.unkeyed,
                        seconds = o.since.elapsed().as_secs(),
                        "Sequence numbers are reserved on disk again; records are keyed again."
                    );
                }
                true
            }
            Err(e) => {
                let now = Instant::now();
                match &mut self.outage {
                    Some(o) => {
                        o.backoff = (o.backoff * 2).min(STATE_RETRY_MAX);
                        o.retry_at = now + o.backoff;
                    }
                    None => {
                        tracing::error!(error = %e, state = %self.cfg.state.display(), "Cannot reserve sequence numbers on disk; records are sent without a de-duplication key until it can.");
                        self.metrics.state_unwritable.store(1, Relaxed);
                        self.outage = Some(StateOutage {
                            since: now,
                            retry_at: now + STATE_RETRY_FIRST,
                            backoff: STATE_RETRY_FIRST,
                            unkeyed: 0,
                        });
                    }
                }
                false
            }
        }
    }

    fn flush(&self, p: &mut Pending) {
        if p.records == 0 {
            return;
        }
        let acks = std::mem::take(&mut p.acks);
        let batch = Arc::new(Batch::new(
            &p.ndjson,
            p.records,
            p.rereadable,
            p.pinned,
            p.received_sum,
            acks,
        ));
        for r in &self.replicas {
            r.push(batch.clone(), &self.metrics);
        }
        *p = Pending::default();
    }
}
