//! What both benchmarks share: the direct-tantivy baseline's index and writer, and reading
//! a process's peak memory; and, for the indexer and UI benchmarks, generating the synthetic
//! records they ingest and sending them.

// Each bench compiles this module on its own and uses only part of it.
#![allow(dead_code)]

pub mod moto;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sawmill_indexer::{index_settings, Fields, StoreConfig};
use serde_json::{json, Value};
use tantivy::time::OffsetDateTime;
use tantivy::{Index, IndexWriter, TantivyDocument};

/// An index with the indexer's schema and settings, and a writer sized as the indexer's.
pub fn baseline_index(dir: &Path) -> (Fields, Index, IndexWriter<TantivyDocument>) {
    std::fs::create_dir_all(dir).unwrap();
    let fields = Fields::new();
    let index = Index::builder()
        .schema(fields.schema.clone())
        .settings(index_settings())
        .create_in_dir(dir)
        .unwrap();
    let cfg = StoreConfig::new(dir);
    let writer = index
        .writer_with_num_threads::<TantivyDocument>(cfg.writer_threads, cfg.writer_memory)
        .unwrap();
    (fields, index, writer)
}

/// A number from the environment (the benches' size knobs), or `default` when unset or
/// not a number.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Peak resident memory of a process, in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmHWM:")
}

/// Resident memory of a process now, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmRSS:")
}

/// CPU time a process has used (user and system), in seconds; 0 when it cannot be read.
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // utime and stime are the 12th and 13th fields after the parenthesised command name.
    let ticks: f64 = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|t| t.parse::<f64>().ok())
                .sum()
        })
        .unwrap_or(0.0);
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Waits (at most `max`) until a process uses under 5% of a core over a second: the
/// background work that follows ingest (merges, sealing) stays out of what is timed next.
pub fn wait_idle(pid: u32, max: Duration) {
    let deadline = std::time::Instant::now() + max;
    let mut before = cpu_secs(pid);
    while std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
        let now = cpu_secs(pid);
        if now - before < 0.05 {
            return;
        }
        before = now;
    }
}

/// A `kB` line of `/proc/PID/status`, in MiB; 0 when it cannot be read.
fn status_mib(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// Records per ingest batch.
pub const BATCH: usize = 5000;
pub const SERVICES: [&str; 8] = [
    "gateway",
    "auth",
    "orders",
    "payments",
    "inventory",
    "search",
    "notifications",
    "billing",
];

/// `n` random lowercase hex digits.
pub fn hex(rng: &mut fastrand::Rng, n: usize) -> String {
    (0..n)
        .map(|_| char::from_digit(rng.u32(0..16), 16).unwrap())
        .collect()
}

/// What [`generate`] has drawn for one record, for the bench to shape into its JSON line.
#[derive(Clone, Copy)]
pub struct Draw<'a> {
    pub seq: usize,
    pub ts_ms: i64,
    pub service: &'static str,
    pub severity: &'static str,
    pub phrase: &'a str,
    pub rid: &'a str,
    pub trace: &'a str,
}

/// Generated records as newline-delimited JSON, in batches of [`BATCH`].
pub struct Data {
    pub batches: Vec<Vec<u8>>,
    pub records: usize,
    pub raw_bytes: usize,
    /// A sample of the request ids, for request lookups.
    pub request_ids: Vec<String>,
    pub first_ms: i64,
    pub last_ms: i64,
}

/// Records as services write them: requests crossing services under one request id (six
/// records each), evenly over the last 20 hours. The bench gives the seed, the words
/// messages are made of, how rarely a request id is kept (one in `keep_one_in`) and `line`,
/// which makes the rest of each record from the same generator. The order of draws is
/// part of what a seed produces, so what is drawn here stays ahead of `line`.
pub fn generate_with(
    n: usize,
    seed: u64,
    words: &[&str],
    keep_one_in: u32,
    line: impl FnMut(&mut fastrand::Rng, Draw) -> Value,
) -> Data {
    let window = last_hours(20);
    generate_over(n, seed, words, keep_one_in, window, line)
}

/// The last `hours` hours up to now, as `(first_ms, span_ms)` for [`generate_over`].
pub fn last_hours(hours: i64) -> (i64, i64) {
    let now_ms = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    (now_ms - hours * 3_600_000, hours * 3_600_000)
}

/// [`generate_with`] with the records spread evenly over `window` (`(first_ms, span_ms)`)
/// rather than the last 20 hours: the same seed draws the same records, only their
/// timestamps differ.
pub fn generate_over(
    n: usize,
    seed: u64,
    words: &[&str],
    keep_one_in: u32,
    (first_ms, span_ms): (i64, i64),
    mut line: impl FnMut(&mut fastrand::Rng, Draw) -> Value,
) -> Data {
    let mut rng = fastrand::Rng::with_seed(seed);
    let step = span_ms as f64 / n as f64;
    let mut batches = Vec::new();
    let mut buf = Vec::with_capacity(BATCH * 400);
    let mut raw_bytes = 0;
    let mut request_ids = Vec::new();
    let mut rid = String::new();
    let mut trace = String::new();
    let mut last_ms = first_ms;
    for i in 0..n {
        if i % 6 == 0 {
            rid = format!("req-{}", hex(&mut rng, 16));
            trace = hex(&mut rng, 32);
            if rng.u32(0..keep_one_in) == 0 {
                request_ids.push(rid.clone());
            }
        }
        let service = SERVICES[rng.usize(..SERVICES.len())];
        let severity = match rng.u32(0..100) {
            0..=1 => "err",
            2..=6 => "warning",
            7..=20 => "debug",
            _ => "info",
        };
        let mut phrase = String::new();
        for _ in 0..rng.usize(3..7) {
            phrase.push_str(words[rng.usize(..words.len())]);
            phrase.push(' ');
        }
        let ts_ms = first_ms + (i as f64 * step) as i64;
        last_ms = ts_ms;
        let draw = Draw {
            seq: i,
            ts_ms,
            service,
            severity,
            phrase: phrase.trim_end(),
            rid: &rid,
            trace: &trace,
        };
        serde_json::to_writer(&mut buf, &line(&mut rng, draw)).unwrap();
        buf.push(b'\n');
        if (i + 1) % BATCH == 0 || i + 1 == n {
            raw_bytes += buf.len();
            batches.push(std::mem::replace(&mut buf, Vec::with_capacity(BATCH * 400)));
        }
    }
    Data {
        batches,
        records: n,
        raw_bytes,
        request_ids,
        first_ms,
        last_ms,
    }
}

/// Sends the batches to `POST {url}/api/v1/ingest` from two threads, each waiting for a
/// batch's acknowledgement before it takes the next.
pub fn ingest(batches: &[Vec<u8>], url: &str) {
    let next = AtomicUsize::new(0);
    let url = format!("{url}/api/v1/ingest");
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(120))
                    .build()
                    .unwrap();
                while let Some(b) = batches.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let resp = client.post(&url).body(b.clone()).send().unwrap();
                    assert!(resp.status().is_success(), "{}", resp.text().unwrap());
                }
            });
        }
    });
}

/// Median and 95th percentile.
pub fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (
        v[v.len() / 2],
        v[((v.len() as f64 * 0.95) as usize).min(v.len() - 1)],
    )
}

/// A real `sawmill indexer` on a kernel-chosen loopback port, killed when dropped.
pub struct Server {
    pub child: std::process::Child,
    pub url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `sawmill indexer` on `data` with `args`, and waits for its address.
pub fn start_server(data: &Path, args: &[&str]) -> Server {
    let mut full = vec!["--data", data.to_str().expect("a UTF-8 path")];
    full.extend_from_slice(args);
    start_sawmill("indexer", &full)
}

/// [`start_server`] with extra environment variables.
pub fn start_server_env(data: &Path, args: &[&str], env: &[(String, String)]) -> Server {
    let mut full = vec!["--data", data.to_str().expect("a UTF-8 path")];
    full.extend_from_slice(args);
    start_sawmill_env("indexer", &full, env)
}

/// Starts `sawmill COMMAND --listen 127.0.0.1:0 ARGS` and waits for the address it prints.
pub fn start_sawmill(command: &str, args: &[&str]) -> Server {
    start_sawmill_env(command, args, &[])
}

/// [`start_sawmill`] with extra environment variables.
pub fn start_sawmill_env(command: &str, args: &[&str], env: &[(String, String)]) -> Server {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sawmill"))
        .args([command, "--listen", "127.0.0.1:0"])
        .args(args)
        .env("SAWMILL_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first
        .strip_prefix(&format!("sawmill {command} listening on "))
        .unwrap_or_else(|| panic!("sawmill {command} did not start: {first:?}"))
        .to_string();
    std::thread::spawn(move || for _ in lines {});
    Server { child, url }
}

/// The path of run `i` of a query (runs vary what they look up).
pub type QueryPath<'a> = Box<dyn Fn(usize) -> String + 'a>;

/// The indexer benchmark's four queries as `GET` paths of the HTTP API, by name: the
/// request id lookup takes the sampled `ids` in turn, the others are the same every run.
pub fn http_queries(ids: &[String]) -> Vec<(&'static str, QueryPath<'_>)> {
    vec![
        (
            "request_id lookup",
            Box::new(move |i| {
                format!(
                    "/api/v1/search?q=request_id:{}&limit=100",
                    ids[i % ids.len()]
                )
            }),
        ),
        (
            "newest 100 hits of a common word",
            Box::new(|_| "/api/v1/search?q=completed&limit=100".into()),
        ),
        (
            "60-bucket histogram of everything",
            Box::new(|_| "/api/v1/histogram?buckets=60".into()),
        ),
        (
            "top-10 terms of service",
            Box::new(|_| "/api/v1/terms?field=service&size=10".into()),
        ),
    ]
}

/// `GET {url}{path}`, which must succeed; the body's length.
pub fn http_get(client: &reqwest::blocking::Client, url: &str, path: &str) -> usize {
    let r = client.get(format!("{url}{path}")).send().unwrap();
    let status = r.status();
    let body = r.bytes().unwrap();
    assert!(
        status.is_success(),
        "GET {path}: {status} {}",
        String::from_utf8_lossy(&body)
    );
    body.len()
}

/// A counter or gauge from a Prometheus text page (`{url}/metrics`); 0 when absent, as a
/// counter nothing has bumped yet may be.
pub fn metric(client: &reqwest::blocking::Client, url: &str, name: &str) -> f64 {
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Median and p95 in ms of `iters` calls of `f`, after three warm-up calls.
pub fn time_it(iters: usize, mut f: impl FnMut(usize)) -> (f64, f64) {
    for i in 0..3 {
        f(i);
    }
    let mut ms = Vec::with_capacity(iters);
    for i in 0..iters {
        let t = std::time::Instant::now();
        f(i);
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    percentiles(ms)
}

/// [`time_it`] of two calls taken in turns, so that whatever else loads the machine weighs
/// on both alike: (median, p95) in ms of each.
pub fn time_both(
    iters: usize,
    mut a: impl FnMut(usize),
    mut b: impl FnMut(usize),
) -> ((f64, f64), (f64, f64)) {
    for i in 0..3 {
        a(i);
        b(i);
    }
    let (mut ma, mut mb) = (Vec::with_capacity(iters), Vec::with_capacity(iters));
    for i in 0..iters {
        let t = std::time::Instant::now();
        a(i);
        ma.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = std::time::Instant::now();
        b(i);
        mb.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    (percentiles(ma), percentiles(mb))
}

pub const WORDS: [&str; 40] = [
    "connection",
    "pool",
    "exhausted",
    "retrying",
    "upstream",
    "timeout",
    "cache",
    "miss",
    "hit",
    "session",
    "token",
    "refreshed",
    "order",
    "created",
    "payment",
    "authorized",
    "declined",
    "inventory",
    "reserved",
    "released",
    "shipment",
    "scheduled",
    "queue",
    "depth",
    "latency",
    "spike",
    "database",
    "replica",
    "lag",
    "checkpoint",
    "written",
    "user",
    "profile",
    "loaded",
    "feature",
    "flag",
    "enabled",
    "rate",
    "limited",
    "backoff",
];
pub const PATHS: [&str; 6] = [
    "/api/orders",
    "/api/cart",
    "/api/checkout",
    "/api/products",
    "/api/users/me",
    "/api/search",
];

/// Realistic log lines: requests crossing services under one request id, ~200-byte messages,
/// over the last 20 hours.
pub fn generate(n: usize) -> Data {
    generate_in(n, last_hours(20))
}

/// The records of [`generate`], spread over `window` (`(first_ms, span_ms)`) instead.
pub fn generate_in(n: usize, window: (i64, i64)) -> Data {
    generate_over(n, 42, &WORDS, 1000, window, |rng, d| {
        let Draw { rid, service, .. } = d;
        let verb = if rng.bool() { "completed" } else { "handled" };
        let message = format!(
            "{} {} {verb} status={} duration_ms={} user_id={} request_id={rid} upstream={service}-{} region=eu-west-{} bytes={} {}",
            if rng.bool() { "GET" } else { "POST" },
            PATHS[rng.usize(..PATHS.len())],
            [200, 200, 200, 201, 404, 500][rng.usize(..6)],
            rng.u32(1..2000),
            rng.u32(1000..99999),
            hex(rng, 4),
            rng.u32(1..4),
            rng.u32(100..99999),
            d.phrase
        );
        json!({
            "ts": d.ts_ms, "message": message, "host": format!("node-{}", rng.u32(1..13)), "service": service,
            "severity": d.severity, "request_id": rid, "trace_id": d.trace, "_src": "bench", "_seq": d.seq,
        })
    })
}
