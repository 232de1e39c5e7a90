//! Repair benchmark (issue 11, point 6): a peer holding N records and a new replica on an
//! empty data directory that copies them all through repair; the time it takes and its
//! records/s, and the peer's own ingest rate while it serves the copy against its rate
//! without (measured first, in the same process, on the same peer).
//!
//! Run: `cargo bench --bench repair` (`SAWMILL_BENCH_RECORDS=200000` for a quicker run;
//! `SAWMILL_BENCH_REPAIR_RATE` sets the new replica's `--repair-rate`, default the
//! indexer's).

use std::time::{Duration, Instant};

mod common;

use common::{env_or, generate_with, hex, ingest, start_server, Data, Draw, Server};
use serde_json::{json, Value};

const WORDS: [&str; 16] = [
    "connection",
    "pool",
    "exhausted",
    "retrying",
    "upstream",
    "timeout",
    "cache",
    "miss",
    "session",
    "token",
    "order",
    "created",
    "payment",
    "declined",
    "queue",
    "latency",
];

/// `n` records of sender `src`, as services write them.
fn records(n: usize, seed: u64, src: &str) -> Data {
    generate_with(n, seed, &WORDS, 1000, |rng, d| {
        let Draw { rid, service, .. } = d;
        json!({
            "ts": d.ts_ms, "message": format!("{} user={} {}", d.phrase, hex(rng, 6), rid),
            "host": format!("node-{}", rng.u32(1..50)), "service": service,
            "severity": d.severity, "request_id": rid, "_src": src, "_seq": d.seq,
        })
    })
}

fn health(url: &str) -> Value {
    reqwest::blocking::get(format!("{url}/healthz"))
        .and_then(|r| r.text())
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
}

fn total(url: &str) -> u64 {
    reqwest::blocking::get(format!("{url}/api/v1/search?limit=0"))
        .and_then(|r| r.text())
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["total"].as_u64())
        .unwrap_or(0)
}

/// Waits until `f` holds, polling every 50 ms; fails with `what` after `secs`, so a stuck
/// run ends instead of hanging.
fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_total(s: &Server, n: u64) {
    wait_until(&format!("{n} records on {}", s.url), 600, || {
        total(&s.url) >= n
    });
}

/// Ingests `d` into `s`, returning records/s until acknowledged.
fn ingest_rate(d: &Data, s: &Server) -> f64 {
    let started = Instant::now();
    ingest(&d.batches, &s.url);
    d.records as f64 / started.elapsed().as_secs_f64()
}

/// CPU seconds a process has used (user + system), from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (in parentheses, and it may hold spaces): the state is
    // field 3, utime and stime fields 14 and 15, in clock ticks of 1/100 s.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    let ticks = tick(14 - 3) + tick(15 - 3);
    ticks as f64 / 100.0
}

fn main() {
    let n: usize = env_or("SAWMILL_BENCH_RECORDS", 1_000_000);
    let rate: u64 = env_or(
        "SAWMILL_BENCH_REPAIR_RATE",
        sawmill_indexer::DEFAULT_REPAIR_RATE,
    );
    // Enough live records that ingesting them takes a few seconds, well within the copy.
    let live = (n / 4).max(20_000);
    let tmp = std::env::temp_dir().join(format!("sawmill-bench-repair-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    println!("generating {n} records and twice {live} live ones ...");
    let history = records(n, 7, "history");
    let (before, during) = (records(live, 8, "live-1"), records(live, 9, "live-2"));
    let peer = start_server(&tmp.join("peer"), &["--commit-interval", "200ms"]);
    ingest(&history.batches, &peer.url);
    wait_total(&peer, n as u64);
    let cpu0 = cpu_seconds(peer.child.id());
    let baseline = ingest_rate(&before, &peer);
    let baseline_cpu = cpu_seconds(peer.child.id()) - cpu0;
    wait_total(&peer, (n + live) as u64);

    let started = Instant::now();
    let peer_cpu = cpu_seconds(peer.child.id());
    let peer_arg = peer.url.clone();
    let rate_arg = rate.to_string();
    // On one machine the new replica's fsyncs queue behind the peer's on the same disk, which
    // is no cost of serving the copy; `SAWMILL_BENCH_REPLICA_DIR=/dev/shm` keeps them apart,
    // as separate machines are.
    let replica_dir = std::env::var_os("SAWMILL_BENCH_REPLICA_DIR")
        .map(|d| {
            std::path::PathBuf::from(d).join(format!("sawmill-bench-repair-{}", std::process::id()))
        })
        .unwrap_or_else(|| tmp.join("new"));
    let replica = start_server(
        &replica_dir,
        &[
            "--commit-interval",
            "200ms",
            "--peer",
            &peer_arg,
            "--discovery-interval",
            "1s",
            "--repair-rate",
            &rate_arg,
        ],
    );
    // Let the copy get going before measuring the peer under it.
    wait_until("the copy starts", 120, || total(&replica.url) >= 1);
    let under_copy = ingest_rate(&during, &peer);
    let copying_still = total(&replica.url) < (n + live) as u64;
    let all = (n + 2 * live) as u64;
    wait_total(&peer, all);
    wait_until("the replica catches up", 1200, || {
        total(&replica.url) >= all && health(&replica.url)["lag_records"] == 0
    });
    let took = started.elapsed().as_secs_f64();
    let cpu = (
        cpu_seconds(peer.child.id()) - peer_cpu,
        cpu_seconds(replica.child.id()),
    );
    let drop = 100.0 * (1.0 - under_copy / baseline);
    println!(
        "new replica on an empty disk (--repair-rate {rate}): copied {all} records in {took:.1} s, {:.0} records/s",
        all as f64 / took
    );
    println!(
        "peer ingest: {baseline:.0} records/s alone, {under_copy:.0} records/s while serving the copy: {drop:.1} % slower (target at most 25 %){}",
        if copying_still { "" } else { " [the copy ended before the measurement did]" }
    );
    println!(
        "CPU: peer {baseline_cpu:.1} s to ingest {live} records alone; during the copy peer {:.1} s (its ingest of {live} included), new replica {:.1} s",
        cpu.0, cpu.1
    );
    drop_servers(peer, replica);
    let _ = std::fs::remove_dir_all(&tmp);
    let _ = std::fs::remove_dir_all(&replica_dir);
}

fn drop_servers(a: Server, b: Server) {
    drop(b);
    drop(a);
}
