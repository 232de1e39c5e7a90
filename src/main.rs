//! The `sawmill` binary: parses the command line and starts the library components.

mod logging;
mod serve;
mod signal;
mod up;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use sawmill_indexer::{ApiConfig, Granularity, RepairConfig, SearchLimits, StoreConfig};

#[derive(Parser)]
#[command(
    name = "sawmill",
    version,
    about = "A log pipeline for containerised services: shipper, replicated tantivy indexers and a search UI."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
// Parsed once per process: boxing the larger variants would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Run everything on this machine: an indexer, a shipper and the web UI on loopback (and, with --demo, sample traffic).
    Up(UpArgs),
    /// Run one indexer replica: durable ingest and the search API.
    Indexer(IndexerArgs),
    /// Ship logs from this host to every indexer replica.
    Shipper(ShipperArgs),
    /// Run a command, pass its output through, and ship every line to the syslog socket.
    Run(RunArgs),
    /// Serve the web UI (Discover, request view, context, live tail, export) over indexer replicas.
    Ui(UiArgs),
    /// Serve the indexers' search API over every group: one healthy replica per group answers, answers are merged.
    Query(QueryArgs),
    /// Read a password from stdin and print its argon2id hash, for a `name:HASH` line of --users-file.
    HashPassword,
    /// Ask a Sawmill server's /healthz (or any URL) and exit 0 if it answers 2xx, 1 if not: a container's health check without curl.
    Health(HealthArgs),
}

#[derive(Args)]
struct HealthArgs {
    /// The URL to ask, e.g. http://127.0.0.1:7280/healthz.
    url: reqwest::Url,
    /// How long the whole check may take.
    #[arg(long, default_value = "5s", value_parser = span)]
    timeout: Duration,
    /// Verify an https server against the CAs in this PEM file instead of the system's roots.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Trust exactly the certificate in this PEM file, whatever name it is for. Inside a
    /// server's own container it defaults to that server's certificate (SAWMILL_TLS_CERT),
    /// so a check asking https://127.0.0.1 passes without a CA or a matching name. Not
    /// used when --ca-file is given.
    #[arg(long, env = "SAWMILL_TLS_CERT")]
    pin_cert: Option<PathBuf>,
}

#[derive(Args)]
struct QueryArgs {
    /// Address to listen on. Loopback by default, beside an indexer's 7280 and the UI's 7279;
    /// use 0.0.0.0:7281 to serve other hosts.
    #[arg(long, env = "SAWMILL_QUERY_LISTEN", default_value = "127.0.0.1:7281")]
    listen: SocketAddr,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Fan-outs in flight at once (each holds at most `limit` hits per group); more wait up
    /// to 10 s, then get 429.
    #[arg(
        long,
        env = "SAWMILL_QUERY_MAX_CONCURRENT_SEARCHES",
        default_value_t = 64
    )]
    max_concurrent_searches: usize,
    /// Live tails open at once (each holds one indexer stream per group); more get 429.
    #[arg(long, env = "SAWMILL_QUERY_MAX_TAILS", default_value_t = 256)]
    max_tails: usize,
    #[command(flatten)]
    http: HttpArgs,
    #[command(flatten)]
    tls: TlsArgs,
    /// Searches and /metrics need a token from this file (one per line, read again on
    /// SIGHUP); /healthz stays open.
    #[arg(long, env = "SAWMILL_READ_TOKEN_FILE")]
    read_token_file: Option<PathBuf>,
}

#[derive(Args)]
struct UiArgs {
    /// Address to listen on. Loopback by default; use 0.0.0.0:7279 to serve other hosts.
    #[arg(long, env = "SAWMILL_UI_LISTEN", default_value = "127.0.0.1:7279")]
    listen: SocketAddr,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    http: HttpArgs,
    #[command(flatten)]
    tls: TlsArgs,
    /// Ask for a user name and password (lines `name:HASH`, argon2 or bcrypt; make a hash
    /// with `sawmill hash-password`); read again on SIGHUP. Without it the UI is open, which
    /// is refused off loopback unless --insecure.
    #[arg(long, env = "SAWMILL_USERS_FILE")]
    users_file: Option<PathBuf>,
}

/// TLS on a listener, and whether it may serve the network without.
#[derive(Args)]
struct TlsArgs {
    /// Serve HTTPS only, with this certificate chain (PEM, leaf first). Read again on
    /// SIGHUP and when the file changes; connections open keep the old one.
    #[arg(long, env = "SAWMILL_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "SAWMILL_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require every client to present a certificate signed by a CA in this PEM file (mTLS).
    #[arg(long, env = "SAWMILL_CLIENT_CA", requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// Listen on a non-loopback address without TLS anyway (a private network, or TLS ended
    /// by a proxy in front). Without it, such a listener is refused.
    #[arg(long, env = "SAWMILL_INSECURE")]
    insecure: bool,
}

impl TlsArgs {
    /// The listener's TLS, once `listen` is allowed with or without it.
    fn load(&self, listens: &[SocketAddr]) -> anyhow::Result<Option<Arc<sawmill_http::ServerTls>>> {
        for l in listens {
            sawmill_http::check_listen(*l, self.tls_cert.is_some(), self.insecure)?;
        }
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        Ok(Some(sawmill_http::ServerTls::load(
            sawmill_http::ServerTlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.client_ca.clone(),
            },
        )?))
    }
}

/// How a client reaches indexers over https, and the token it sends them.
#[derive(Args)]
struct ConnectArgs {
    /// Verify https indexers against the CAs in this PEM file instead of the system's roots.
    #[arg(long, env = "SAWMILL_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Present this certificate (PEM) to indexers that require one (--client-ca).
    #[arg(long, env = "SAWMILL_CLIENT_CERT", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// The private key of --client-cert (PEM).
    #[arg(long, env = "SAWMILL_CLIENT_KEY", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Send the first token in this file to indexers (`Authorization: Bearer`); read again
    /// on SIGHUP. The shipper needs an ingest token, the UI, query and peers a read token.
    #[arg(long, env = "SAWMILL_TOKEN_FILE")]
    token_file: Option<PathBuf>,
}

impl ConnectArgs {
    /// The client settings, checked now: a CA or certificate that cannot be read is an
    /// error at start, not a replica that never answers.
    fn connect(&self) -> anyhow::Result<sawmill_http::Connect> {
        let tls = sawmill_http::ClientTls {
            ca_file: self.ca_file.clone(),
            cert: self.client_cert.clone(),
            key: self.client_key.clone(),
            pin: None,
        };
        tls.config()?;
        let token = sawmill_http::ClientToken::load_if(self.token_file.as_deref())?;
        Ok(sawmill_http::Connect { tls, token })
    }
}

/// The tokens an indexer's routes need.
#[derive(Args)]
struct TokenArgs {
    /// Ingest routes (/api/v1/ingest, /_bulk) need a token from this file (one per line,
    /// read again on SIGHUP). Without it, ingest is open.
    #[arg(long, env = "SAWMILL_INGEST_TOKEN_FILE")]
    ingest_token_file: Option<PathBuf>,
    /// Searches, repair reads and /metrics need a token from this file; /healthz stays
    /// open. Without it, reading is open.
    #[arg(long, env = "SAWMILL_READ_TOKEN_FILE")]
    read_token_file: Option<PathBuf>,
}

impl TokenArgs {
    fn access(&self) -> anyhow::Result<sawmill_http::Access> {
        Ok(sawmill_http::Access::new(
            tokens(&self.ingest_token_file)?,
            tokens(&self.read_token_file)?,
        ))
    }
}

/// TLS off loopback without tokens or client certificates encrypts what anyone on the
/// network may still read and write: allowed (a network may be trusted), but said.
fn warn_if_open(listen: SocketAddr, tls: &TlsArgs, access: &sawmill_http::Access) {
    if !listen.ip().is_loopback()
        && tls.tls_cert.is_some()
        && tls.client_ca.is_none()
        && !access.any()
    {
        tracing::warn!(%listen, "Serving the network with TLS but no token files or --client-ca: anyone who reaches it can read and write every log line. Pass --ingest-token-file and --read-token-file.");
    }
}

fn tokens(file: &Option<PathBuf>) -> anyhow::Result<Option<Arc<sawmill_http::Tokens>>> {
    Ok(match file {
        Some(f) => Some(sawmill_http::Tokens::load(f)?),
        None => None,
    })
}

/// The indexers that `query` and the UI search: every group, one healthy replica of each.
#[derive(Args)]
struct ClusterArgs {
    /// Indexers: http://HOST:PORT (one replica), dns+http://NAME:PORT (every A/AAAA record of
    /// NAME) or dnssrv+http://_SERVICE._tcp.NAME (SRV records); repeat or separate with `,`.
    /// Each replica's group comes from its /healthz; one healthy replica of every group is
    /// asked, the next of a group when one fails.
    #[arg(
        long = "indexer",
        env = "SAWMILL_INDEXER",
        value_delimiter = ',',
        required = true
    )]
    indexers: Vec<sawmill_cluster::Target>,
    /// Resolve the names again and ask every replica's health this often.
    #[arg(long, env = "SAWMILL_DISCOVERY_INTERVAL", default_value = "10s", value_parser = span)]
    discovery_interval: Duration,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// How long a client may take over a request head, and how long a stop waits for clients.
#[derive(Args)]
struct HttpArgs {
    /// Close a connection whose request head has not fully arrived this long after it began.
    #[arg(long, env = "SAWMILL_HEADER_TIMEOUT", default_value = "30s", value_parser = span)]
    header_timeout: Duration,
    /// On SIGTERM, wait this long for requests in flight, then drop their connections (live
    /// tails end at once). An indexer commits everything acknowledged either way.
    #[arg(long, env = "SAWMILL_STOP_TIMEOUT", default_value = "10s", value_parser = span)]
    stop_timeout: Duration,
    /// Serve at most this many connections at once; more wait in the kernel's listen backlog
    /// until one ends, so a flood of clients cannot exhaust memory or file descriptors.
    #[arg(long, env = "SAWMILL_MAX_CONNECTIONS", default_value_t = 4096)]
    max_connections: usize,
}

#[derive(Args)]
struct RunArgs {
    /// `service` of the records (default: Marathon's app id, else Nomad's job, else the
    /// command's name).
    #[arg(long, env = "SAWMILL_SERVICE")]
    service: Option<String>,
    /// The syslog socket the lines go to.
    #[arg(long, env = "SAWMILL_TO", default_value = "/dev/log")]
    to: PathBuf,
    /// Longer lines are cut and flagged `truncated`.
    #[arg(long, env = "SAWMILL_MAX_MESSAGE_BYTES", default_value = "64KiB", value_parser = bytes)]
    max_message_bytes: u64,
    /// Ship at most this many lines per second (bursts of a second allowed); a flood beyond
    /// it is passed through only, and counted. 0 for no limit.
    #[arg(long, env = "SAWMILL_RATE_LIMIT", default_value_t = 20_000)]
    rate_limit: u32,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(Args)]
struct ShipperArgs {
    /// Indexer replicas: a base URL (http://host:port), or a DNS name listing them
    /// (dns+http://NAME:PORT: every A/AAAA record; dnssrv+http://_SVC._tcp.NAME: SRV records).
    /// Repeatable. Each record goes to one replica group, and to every replica of it.
    #[arg(
        long = "indexer",
        env = "SAWMILL_INDEXER",
        value_delimiter = ',',
        required = true
    )]
    indexers: Vec<String>,
    /// Directory for the shipper's sender id and sequence numbers.
    #[arg(long, env = "SAWMILL_STATE", default_value = "sawmill-shipper-state")]
    state: PathBuf,
    /// Serve a syslog socket (unix datagram, mode 0666) here, e.g. /dev/log.
    #[arg(long, env = "SAWMILL_SYSLOG_SOCKET")]
    syslog_socket: Option<PathBuf>,
    /// Receive syslog over UDP on this address (e.g. 127.0.0.1:5514).
    #[arg(long, env = "SAWMILL_SYSLOG_UDP")]
    syslog_udp: Option<SocketAddr>,
    /// Receive syslog over TCP on this address, octet-counted or newline-framed (RFC 6587).
    #[arg(long, env = "SAWMILL_SYSLOG_TCP")]
    syslog_tcp: Option<SocketAddr>,
    /// Receive syslog over TLS on this address (RFC 5425, octet-counted; newlines taken
    /// too), with --tls-cert and --tls-key, and --client-ca to require client certificates.
    #[arg(long, env = "SAWMILL_SYSLOG_TLS", requires = "tls_cert")]
    syslog_tls: Option<SocketAddr>,
    /// The certificate chain (PEM) --syslog-tls serves; read again on SIGHUP and when it
    /// changes.
    #[arg(long, env = "SAWMILL_TLS_CERT", requires_all = ["tls_key", "syslog_tls"])]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "SAWMILL_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require syslog-over-TLS peers to present a certificate signed by a CA in this PEM file.
    #[arg(long, env = "SAWMILL_CLIENT_CA", requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// Follow running and new containers' stdout/stderr through the Docker Engine API.
    #[arg(long, env = "SAWMILL_DOCKER")]
    docker: bool,
    /// Tail files matching this glob (repeatable; taken whole, commas included): Docker
    /// json-file, CRI or plain text. SAWMILL_TAIL separates several globs with `:`, as PATH does.
    #[arg(long = "tail", env = "SAWMILL_TAIL")]
    tail: Vec<String>,
    /// The Docker engine's socket.
    #[arg(
        long,
        env = "DOCKER_HOST",
        default_value = "unix:///var/run/docker.sock"
    )]
    docker_host: String,
    /// Queue bound in records; past it the newest are dropped and counted.
    #[arg(long, env = "SAWMILL_QUEUE_RECORDS", default_value_t = 10_000)]
    queue_records: usize,
    /// Queue bound in bytes (e.g. 64MiB).
    #[arg(long, env = "SAWMILL_QUEUE_BYTES", default_value = "16MiB", value_parser = bytes)]
    queue_bytes: u64,
    /// Per-replica backlog bound (compressed bytes); past it the oldest batches are given up for that replica.
    #[arg(long, env = "SAWMILL_BACKLOG_BYTES", default_value = "64MiB", value_parser = bytes)]
    backlog_bytes: u64,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:7290).
    #[arg(long, env = "SAWMILL_METRICS")]
    metrics: Option<SocketAddr>,
    /// The `host` of records whose source names none, instead of this machine's name: in a
    /// container, the node's (a Kubernetes DaemonSet passes spec.nodeName).
    #[arg(long, env = "SAWMILL_HOST")]
    host: Option<String>,
    /// Longer syslog messages are cut to this size and flagged `truncated`.
    #[arg(long, env = "SAWMILL_MAX_MESSAGE_BYTES", default_value = "64KiB", value_parser = bytes)]
    max_message_bytes: u64,
    /// Zone of syslog timestamps that carry none: local, UTC or an offset such as +02:00.
    #[arg(long, env = "SAWMILL_TIMEZONE", default_value = "local")]
    timezone: sawmill_shipper::Zone,
    /// While records are dropped, report the count as a record of its own this often.
    #[arg(long, env = "SAWMILL_DROP_REPORT_INTERVAL", default_value = "5s", value_parser = span)]
    drop_report_interval: Duration,
    /// Resolve --indexer names again and ask every replica its group this often.
    #[arg(long, env = "SAWMILL_DISCOVERY_INTERVAL", default_value = "10s", value_parser = span)]
    discovery_interval: Duration,
    /// A replica no longer listed keeps its backlog (and is retried) this long, then it is
    /// given up: its backlog is dropped, counted and reported.
    #[arg(long, env = "SAWMILL_REPLICA_GRACE", default_value = "15m", value_parser = span)]
    replica_grace: Duration,
    /// A file's checkpoint passes a batch only once this many replicas of its group took it
    /// (a group with fewer replicas holds it back; sockets and Docker are unaffected).
    #[arg(long, env = "SAWMILL_ACK_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    ack_replicas: u32,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Args)]
struct UpArgs {
    /// Directory for the indexer's data.
    #[arg(long, env = "SAWMILL_DATA", default_value = "sawmill-data")]
    data: PathBuf,
    /// Address the indexer listens on.
    #[arg(long, env = "SAWMILL_LISTEN", default_value = "127.0.0.1:7280")]
    listen: SocketAddr,
    /// Keep feeding realistic traffic from five services that call each other.
    #[arg(long, env = "SAWMILL_DEMO")]
    demo: bool,
    /// Address the web UI listens on.
    #[arg(long, env = "SAWMILL_UI_LISTEN", default_value = "127.0.0.1:7279")]
    ui_listen: SocketAddr,
    /// The indexer and the UI serve HTTPS with it; the shipper and the UI inside `up` trust
    /// it (make it valid for 127.0.0.1, and not a CA: see the README).
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    tokens: TokenArgs,
}

#[derive(Args)]
struct IndexerArgs {
    /// Address to listen on. Loopback by default; use 0.0.0.0:7280 to serve other hosts.
    #[arg(long, env = "SAWMILL_LISTEN", default_value = "127.0.0.1:7280")]
    listen: SocketAddr,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    http: HttpArgs,
    /// Answer 408 to an ingest whose body has not fully arrived this long after its head.
    #[arg(long, env = "SAWMILL_BODY_TIMEOUT", default_value = "60s", value_parser = span)]
    body_timeout: Duration,
    #[command(flatten)]
    repair: RepairArgs,
    #[command(flatten)]
    archive: ArchiveArgs,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    tokens: TokenArgs,
}

#[derive(Args)]
struct ArchiveArgs {
    /// Seal partitions into this S3-compatible bucket (s3://BUCKET/PREFIX) and search the
    /// history from there; endpoint, region and credentials come from the AWS environment
    /// (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
    #[arg(long, env = "SAWMILL_OBJECT_STORE", value_parser = store_url)]
    object_store: Option<sawmill_indexer::StoreUrl>,
    /// Seal a partition once its time range ended this long ago (with --object-store).
    #[arg(long, env = "SAWMILL_SEAL_AFTER", default_value = "1h", value_parser = span)]
    seal_after: Duration,
    /// Remove sealed, uploaded partitions from local disk once their time range ended this
    /// long ago; they are then searched from the object store.
    #[arg(long, env = "SAWMILL_LOCAL_RETENTION", default_value = "24h", value_parser = span)]
    local_retention: Duration,
    /// Most disk the cache of partitions read from the object store takes (e.g. 10GiB).
    #[arg(long, env = "SAWMILL_CACHE_BYTES", default_value = "10GiB", value_parser = bytes)]
    cache_bytes: u64,
    /// Most memory the partitions read by ranges from the object store hold open at once
    /// for their splits' tails (e.g. 1GiB); a search that needs more is refused with 429.
    #[arg(long, env = "SAWMILL_CACHE_MEMORY", default_value = "1GiB", value_parser = bytes)]
    cache_memory: u64,
}

impl ArchiveArgs {
    fn config(self) -> Option<sawmill_indexer::ArchiveConfig> {
        Some(sawmill_indexer::ArchiveConfig {
            url: self.object_store?,
            seal_after: self.seal_after,
            local_retention: self.local_retention,
            cache_bytes: self.cache_bytes,
            cache_memory: self.cache_memory,
        })
    }
}

fn store_url(s: &str) -> Result<sawmill_indexer::StoreUrl, String> {
    s.parse().map_err(|e: sawmill_indexer::Error| e.to_string())
}

#[derive(Args)]
struct RepairArgs {
    /// Another replica of this group to compare with and copy missing records from:
    /// http://HOST:PORT, dns+http://NAME:PORT or dnssrv+http://_SVC._tcp.NAME; repeat for
    /// each. Members of other groups, and this indexer itself, are left out.
    #[arg(long = "peer", env = "SAWMILL_PEER", value_delimiter = ',', value_parser = peer)]
    peers: Vec<sawmill_cluster::Target>,
    /// How often peer names are resolved again and holdings compared.
    #[arg(long, env = "SAWMILL_DISCOVERY_INTERVAL", default_value = "10s", value_parser = span)]
    discovery_interval: Duration,
    /// Most records per second repair copies in from peers, all together.
    #[arg(long, env = "SAWMILL_REPAIR_RATE", default_value_t = sawmill_indexer::DEFAULT_REPAIR_RATE)]
    repair_rate: u64,
    /// How peers are reached (their read token, for https their CA).
    #[command(flatten)]
    connect: ConnectArgs,
}

impl RepairArgs {
    fn config(self) -> anyhow::Result<RepairConfig> {
        Ok(RepairConfig {
            connect: self.connect.connect()?,
            peers: self.peers,
            interval: self.discovery_interval.max(Duration::from_millis(100)),
            rate: self.repair_rate.max(1),
        })
    }
}

fn peer(s: &str) -> Result<sawmill_cluster::Target, String> {
    s.parse()
        .map_err(|e: sawmill_cluster::TargetError| e.to_string())
}

#[derive(Args)]
struct StoreArgs {
    /// Directory for the write-ahead log and the partitions. One indexer per directory.
    #[arg(long, env = "SAWMILL_DATA", default_value = "sawmill-data")]
    data: PathBuf,
    /// The replica group: indexers of one group hold the same records.
    #[arg(long, env = "SAWMILL_GROUP", default_value = "default", value_parser = group)]
    group: String,
    /// Longest time from acknowledgement to searchable; commits are grouped within it.
    #[arg(long, env = "SAWMILL_COMMIT_INTERVAL", default_value = "1s", value_parser = span)]
    commit_interval: Duration,
    /// Time covered by one partition: hour or day.
    #[arg(long, env = "SAWMILL_PARTITION", default_value = "day")]
    partition: Granularity,
    /// Remove partitions older than this (e.g. 7d, 12h); refuse records older than it.
    #[arg(long, env = "SAWMILL_RETENTION", value_parser = span)]
    retention: Option<Duration>,
    /// Remove the oldest partitions while the index takes more than this (e.g. 10GiB).
    #[arg(long, env = "SAWMILL_MAX_DISK", value_parser = bytes)]
    max_disk: Option<u64>,
    /// Largest request body, compressed or decompressed (e.g. 64MiB).
    #[arg(long, env = "SAWMILL_MAX_BODY_BYTES", default_value = "64MiB", value_parser = bytes)]
    max_body_bytes: u64,
    /// Indexing memory per open partition writer (e.g. 128MiB).
    #[arg(long, env = "SAWMILL_WRITER_MEMORY", default_value = "128MiB", value_parser = bytes)]
    writer_memory: u64,
    /// Longer ingested messages are cut to this size (on a character boundary) and flagged `truncated`.
    #[arg(long, env = "SAWMILL_MAX_MESSAGE_BYTES", default_value = "256KiB", value_parser = bytes)]
    max_message_bytes: u64,
    #[command(flatten)]
    searches: SearchArgs,
}

#[derive(Args)]
struct SearchArgs {
    /// Searches running at once (default: the number of CPU cores); others wait in the queue.
    #[arg(long, env = "SAWMILL_MAX_CONCURRENT_SEARCHES")]
    max_concurrent_searches: Option<usize>,
    /// Searches waiting for a slot; beyond it, searches are refused with 429 and Retry-After.
    #[arg(long, env = "SAWMILL_SEARCH_QUEUE", default_value_t = 64)]
    search_queue: usize,
    /// Longest wait in the queue; beyond it, 503 with Retry-After.
    #[arg(long, env = "SAWMILL_SEARCH_QUEUE_TIMEOUT", default_value = "10s", value_parser = span)]
    search_queue_timeout: Duration,
    /// Longest a search may run; beyond it, it is stopped and answered 504.
    #[arg(long, env = "SAWMILL_SEARCH_TIMEOUT", default_value = "30s", value_parser = span)]
    search_timeout: Duration,
}

impl SearchArgs {
    fn limits(&self) -> SearchLimits {
        let mut l = SearchLimits::default();
        if let Some(n) = self.max_concurrent_searches {
            l.max_concurrent = n.max(1);
        }
        l.queue = self.search_queue;
        l.queue_timeout = self.search_queue_timeout;
        l.timeout = self.search_timeout;
        l
    }
}

fn span(s: &str) -> Result<Duration, String> {
    sawmill_indexer::parse_span(s)
}

fn bytes(s: &str) -> Result<u64, String> {
    sawmill_indexer::parse_bytes(s)
}

fn group(s: &str) -> Result<String, String> {
    sawmill_indexer::check_group(s).map(|()| s.to_string())
}

impl StoreArgs {
    fn config(&self) -> StoreConfig {
        let mut c = StoreConfig::new(&self.data);
        c.commit_interval = self.commit_interval;
        c.granularity = self.partition;
        c.retention = self.retention;
        c.max_disk = self.max_disk;
        c.writer_memory = self.writer_memory as usize;
        c.group = self.group.clone();
        c
    }

    /// The API settings these flags give; the HTTP timeouts keep their defaults unless the
    /// command has flags for them.
    fn api(&self) -> ApiConfig {
        ApiConfig {
            max_body_bytes: self.max_body_bytes,
            max_message_bytes: self.max_message_bytes as usize,
            searches: self.searches.limits(),
            ..ApiConfig::default()
        }
    }
}

fn main() {
    // `run` is a process wrapper: no runtime, no log lines of its own mixed into the child's,
    // and the child's environment as it was given.
    if std::env::args().nth(1).as_deref() == Some("run") {
        let Command::Run(a) = Cli::parse().command else {
            unreachable!()
        };
        wrap(a);
    }
    forget_empty_settings();
    logging::init();
    let cli = parse_cli();
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    if let Err(e) = rt.block_on(run(cli)) {
        eprintln!("sawmill: {e:#}");
        std::process::exit(1);
    }
    // Everything acknowledged is committed by now; a search still running on a blocking
    // thread must not hold the exit (dropping the runtime would wait for it).
    rt.shutdown_timeout(Duration::from_secs(1));
}

/// An empty `SAWMILL_*` or `AWS_*` variable is taken as unset. Orchestrators' templates pass
/// a setting the operator left out as an empty variable (`SAWMILL_OBJECT_STORE:
/// ${SAWMILL_OBJECT_STORE:-}` in the Swarm stack), which would otherwise be a value: an
/// empty `--object-store`, or an empty region overriding the S3 client's default.
fn forget_empty_settings() {
    for (name, value) in std::env::vars_os() {
        let ours = name
            .to_str()
            .is_some_and(|n| n.starts_with("SAWMILL_") || n.starts_with("AWS_"));
        if ours && value.is_empty() {
            // Before any thread starts: nothing else reads the environment yet.
            std::env::remove_var(name);
        }
    }
}

/// `sawmill hash-password`: the password is stdin (one trailing newline dropped), so it is
/// never in the shell's history or `ps`.
fn hash_password() -> anyhow::Result<()> {
    use std::io::Read;
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .map_err(|e| anyhow::anyhow!("reading the password from stdin: {e}"))?;
    let password = password
        .strip_suffix('\n')
        .map(|p| p.strip_suffix('\r').unwrap_or(p))
        .unwrap_or(&password);
    let hash = sawmill_ui::signin::hash_password(password).map_err(|e| anyhow::anyhow!(e))?;
    println!("{hash}");
    Ok(())
}

/// Most of an answer `sawmill health` reads and prints.
const HEALTH_BODY_BYTES: usize = 64 << 10;

/// `sawmill health URL`: one GET, healthy on a 2xx answer. Of the server's own `SAWMILL_*`
/// settings in the same container only its certificate is read (to trust for an https
/// URL): its client CA or token files are not the check's, and `/healthz` needs neither.
async fn health(a: HealthArgs) -> anyhow::Result<()> {
    let connect = sawmill_http::Connect {
        tls: sawmill_http::ClientTls {
            // The server's own certificate matters only to an https check, and a file that
            // cannot be read must not fail a plain one.
            pin: a
                .pin_cert
                .filter(|_| a.ca_file.is_none() && a.url.scheme() == "https"),
            ca_file: a.ca_file,
            ..Default::default()
        },
        ..Default::default()
    };
    let client = connect.client(reqwest::Client::builder().timeout(a.timeout))?;
    let mut answer = client
        .get(a.url.clone())
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{}: {}", a.url, sawmill_http::describe(&e)))?;
    let status = answer.status();
    // A health answer is short; whatever else the URL serves, at most this much is read.
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = answer.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= HEALTH_BODY_BYTES {
            body.truncate(HEALTH_BODY_BYTES);
            break;
        }
    }
    let body = String::from_utf8_lossy(&body);
    let body = body.trim();
    anyhow::ensure!(status.is_success(), "{}: {status} {body}", a.url);
    println!("{}: {status} {body}", a.url);
    Ok(())
}

/// `sawmill run`: runs the command and exits with its code (127 if it could not run).
fn wrap(a: RunArgs) -> ! {
    let cfg = sawmill_shipper::RunConfig {
        command: a.command,
        // An empty SAWMILL_SERVICE, as a template leaves it, names no service.
        service: a.service.filter(|s| !s.is_empty()),
        to: a.to,
        max_line_bytes: a.max_message_bytes as usize,
        rate_limit: a.rate_limit,
    };
    match sawmill_shipper::run(cfg) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("sawmill run: {e}");
            std::process::exit(127);
        }
    }
}

/// The command line, with `SAWMILL_TAIL` split at `:` as PATH is. A `--tail` value is
/// never split: a path may hold a comma (splitting at commas silently tailed nothing).
fn parse_cli() -> Cli {
    use clap::{parser::ValueSource, CommandFactory, FromArgMatches};
    let matches = Cli::command().try_get_matches().unwrap_or_else(|e| {
        // Docker reserves a health check's exit code 2: a mistyped check is unhealthy (1).
        let health = std::env::args().nth(1).as_deref() == Some("health");
        if health && e.use_stderr() {
            let _ = e.print();
            std::process::exit(1);
        }
        e.exit()
    });
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let (Command::Shipper(a), Some(("shipper", m))) = (&mut cli.command, matches.subcommand()) {
        if m.value_source("tail") == Some(ValueSource::EnvVariable) {
            a.tail = a
                .tail
                .iter()
                .flat_map(|v| v.split(':'))
                .filter(|g| !g.is_empty())
                .map(str::to_string)
                .collect();
        }
    }
    cli
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut reload = signal::Reload::default();
    match cli.command {
        Command::Indexer(a) => {
            let api = ApiConfig {
                header_timeout: a.http.header_timeout,
                body_timeout: a.body_timeout,
                stop_timeout: a.http.stop_timeout,
                max_connections: a.http.max_connections,
                tls: a.tls.load(&[a.listen])?,
                access: a.tokens.access()?,
                ..a.store.api()
            };
            let repair = a.repair.config()?;
            warn_if_open(a.listen, &a.tls, &api.access);
            reload.server_tls(&api.tls);
            reload.access(&api.access);
            reload.connect(&repair.connect);
            reload.start();
            let mut store = a.store.config();
            store.archive = a.archive.config();
            serve::indexer(a.listen, store, api, repair).await
        }
        Command::Shipper(a) => {
            let cfg = a.config()?;
            reload.connect(&cfg.connect);
            reload.server_tls(&cfg.syslog_tls.as_ref().map(|(_, t)| t.clone()));
            reload.start();
            serve::shipper(cfg).await
        }
        Command::Run(_) => unreachable!("handled before the runtime starts"),
        Command::HashPassword => hash_password(),
        Command::Health(a) => health(a).await,
        Command::Ui(a) => {
            let signin = match &a.users_file {
                Some(f) => Some(sawmill_ui::signin::SignIn::new(
                    sawmill_ui::signin::Users::load(f)?,
                    a.tls.tls_cert.is_some(),
                )),
                None if !a.listen.ip().is_loopback() && !a.tls.insecure => {
                    anyhow::bail!("refusing to serve the UI on {} without --users-file: anyone who reaches it could read every log line. Make users with `sawmill hash-password` and pass --users-file FILE, or --insecure if a proxy in front already signs people in", a.listen)
                }
                None => None,
            };
            if let Some(s) = &signin {
                let users = s.users().clone();
                reload.add("--users-file", move || {
                    users.reload().map_err(|e| e.to_string())
                });
            }
            let config = sawmill_ui::ServeConfig {
                header_timeout: a.http.header_timeout,
                stop_timeout: a.http.stop_timeout,
                max_connections: a.http.max_connections,
                tls: a.tls.load(&[a.listen])?,
            };
            let connect = a.cluster.connect.connect()?;
            reload.server_tls(&config.tls);
            reload.connect(&connect);
            reload.start();
            serve::ui(
                a.listen,
                a.cluster.indexers,
                a.cluster.discovery_interval,
                connect,
                signin,
                config,
            )
            .await
        }
        Command::Query(a) => {
            let cluster = sawmill_query::ClusterConfig {
                targets: a.cluster.indexers,
                discovery_interval: a.cluster.discovery_interval,
                max_concurrent: a.max_concurrent_searches,
                max_tails: a.max_tails,
                connect: a.cluster.connect.connect()?,
                ..sawmill_query::ClusterConfig::default()
            };
            let http = sawmill_query::ServeConfig {
                header_timeout: a.http.header_timeout,
                stop_timeout: a.http.stop_timeout,
                max_connections: a.http.max_connections,
                tls: a.tls.load(&[a.listen])?,
            };
            let access = sawmill_http::Access::new(None, tokens(&a.read_token_file)?);
            warn_if_open(a.listen, &a.tls, &access);
            reload.server_tls(&http.tls);
            reload.access(&access);
            reload.connect(&cluster.connect);
            reload.start();
            serve::query(a.listen, cluster, http, access).await
        }
        Command::Up(a) => {
            let cfg = a.config()?;
            reload.server_tls(&cfg.api.tls);
            reload.access(&cfg.api.access);
            reload.connect(&cfg.shipper);
            reload.connect(&cfg.ui);
            reload.start();
            up::up(cfg).await
        }
    }
}

impl ShipperArgs {
    fn config(self) -> anyhow::Result<sawmill_shipper::ShipperConfig> {
        let mut cfg = sawmill_shipper::ShipperConfig::new(self.indexers, self.state);
        cfg.connect = self.connect.connect()?;
        cfg.syslog_socket = self.syslog_socket;
        cfg.syslog_udp = self.syslog_udp;
        cfg.syslog_tcp = self.syslog_tcp;
        if let (Some(addr), Some(cert), Some(key)) = (self.syslog_tls, self.tls_cert, self.tls_key)
        {
            let files = sawmill_http::ServerTlsFiles {
                cert,
                key,
                client_ca: self.client_ca,
            };
            cfg.syslog_tls = Some((addr, sawmill_http::ServerTls::load_syslog(files)?));
        }
        cfg.docker = self.docker.then_some(self.docker_host);
        cfg.tail = self.tail;
        cfg.queue_records = self.queue_records;
        cfg.queue_bytes = self.queue_bytes as usize;
        cfg.backlog_bytes = self.backlog_bytes;
        cfg.metrics = self.metrics;
        cfg.host = self.host;
        cfg.drop_report_interval = self.drop_report_interval;
        cfg.discovery_interval = self.discovery_interval;
        cfg.replica_grace = self.replica_grace;
        cfg.ack_replicas = self.ack_replicas as usize;
        cfg.parser = sawmill_shipper::Parser {
            max_message_bytes: self.max_message_bytes as usize,
            zone: self.timezone,
        };
        Ok(cfg)
    }
}

impl UpArgs {
    /// `up` takes the indexer's defaults for everything but where things go, TLS and tokens.
    fn config(self) -> anyhow::Result<up::UpConfig> {
        let store = StoreArgs {
            data: self.data,
            group: "default".into(),
            commit_interval: Duration::from_secs(1),
            partition: Granularity::Day,
            retention: None,
            max_disk: None,
            max_body_bytes: 64 << 20,
            writer_memory: 128 << 20,
            max_message_bytes: 256 << 10,
            searches: SearchArgs {
                max_concurrent_searches: None,
                search_queue: 64,
                search_queue_timeout: Duration::from_secs(10),
                search_timeout: Duration::from_secs(30),
            },
        };
        if self.tls.client_ca.is_some() {
            anyhow::bail!("`up` takes no --client-ca: its own shipper and UI present no client certificate, so the indexer would refuse them. Run `sawmill indexer --client-ca` for mTLS");
        }
        let tls = self.tls.load(&[self.listen, self.ui_listen])?;
        if !self.ui_listen.ip().is_loopback() && !self.tls.insecure {
            anyhow::bail!("refusing to serve up's UI on {}: it has no sign-in, so anyone who reaches it could read every log line. Keep --ui-listen on loopback and run `sawmill ui --users-file FILE` for other hosts, or pass --insecure if a proxy in front already signs people in", self.ui_listen);
        }
        // The shipper and the UI inside `up` trust exactly the certificate the indexer
        // serves, and send the first token of each file.
        let connect = |token: &Option<PathBuf>| -> anyhow::Result<sawmill_http::Connect> {
            Ok(sawmill_http::Connect {
                tls: sawmill_http::ClientTls {
                    pin: self.tls.tls_cert.clone(),
                    ..Default::default()
                },
                token: sawmill_http::ClientToken::load_if(token.as_deref())?,
            })
        };
        Ok(up::UpConfig {
            listen: self.listen,
            store: store.config(),
            api: ApiConfig {
                tls: tls.clone(),
                access: self.tokens.access()?,
                ..store.api()
            },
            ui_listen: self.ui_listen,
            ui_tls: tls,
            shipper: connect(&self.tokens.ingest_token_file)?,
            ui: connect(&self.tokens.read_token_file)?,
            demo: self.demo,
        })
    }
}
