//! Shipper benchmark, one run: 2 million ~200-byte syslog datagrams from a sender process
//! into (a) a bare receive loop on a unix socket — the baseline; (b) the shipper's socket
//! source and queue (and (b'), the whole shipper process); (c) the shipper end to end into one indexer on loopback; plus
//! `sawmill run` passthrough against the same output without it.
//!
//! Run: `cargo bench --bench shipper` (`SAWMILL_BENCH_MESSAGES=200000` for a quicker run).
//! `SAWMILL_BENCH_RUN_LINES` and `SAWMILL_BENCH_RUN_REPS` size the `sawmill run` part;
//! `SAWMILL_BENCH_PART=run` runs only that part.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::{baseline_index, env_or, peak_rss_mib, percentiles};
use sawmill_indexer::Record;
use sawmill_shipper::{read_loop, Metrics, Queue, SyslogSocket};

const SERVICES: [&str; 5] = ["gateway", "auth", "orders", "payments", "inventory"];

/// The datagram number `i`: glibc's local form with a realistic ~200-byte message.
fn datagram(i: u64) -> Vec<u8> {
    let svc = SERVICES[(i % 5) as usize];
    format!(
        "<14>Nov 27 07:57:02 {svc}[{}]: GET /api/orders/{} completed status=200 duration_ms={} user_id={} request_id=req-{:016x} upstream={svc}-7f9c region=eu-west-1 cache=miss bytes={} n={i}",
        1000 + i % 50,
        i % 9973,
        i % 1999,
        1000 + i % 97,
        i.wrapping_mul(0x9e3779b97f4a7c15),
        i % 65536
    )
    .into_bytes()
}

/// The sender process: `SAWMILL_BENCH_SEND=socket,count` re-runs this binary as one.
fn sender_main(spec: &str) {
    let (path, n) = spec.rsplit_once(',').unwrap();
    let n: u64 = n.parse().unwrap();
    let s = UnixDatagram::unbound().unwrap();
    for i in 0..n {
        let d = datagram(i);
        // Blocking sends: a full receiver slows the sender instead of losing datagrams.
        while s.send_to(&d, path).is_err() {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

fn send(path: &Path, n: u64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .env("SAWMILL_BENCH_SEND", format!("{},{n}", path.display()))
        .spawn()
        .unwrap()
}

fn report(name: &str, n: u64, bytes: u64, secs: f64) -> f64 {
    let rate = n as f64 / secs;
    println!(
        "{name:<48} {rate:>10.0} msg/s {:>8.1} MB/s  ({secs:.1} s)",
        bytes as f64 / 1e6 / secs
    );
    rate
}

/// CPU seconds used so far by this process's waited-for children (and theirs).
fn children_cpu_secs() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

/// User + system CPU seconds of a process so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0))
        / tick
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sawmill(args: &[&str]) -> (Proc, Vec<String>) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sawmill"))
        .args(args)
        .env("SAWMILL_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(c.stdout.take().unwrap()).lines();
    let mut first = Vec::new();
    let wanted = if args[0] == "shipper" { 2 } else { 1 };
    for _ in 0..wanted {
        first.push(lines.next().unwrap().unwrap());
    }
    std::thread::spawn(move || for _ in lines {});
    (Proc(c), first)
}

/// A shipper forwarding to `indexer`, with its state in `state` and its socket at `socket`;
/// returns it and its metrics URL.
fn start_shipper(indexer: &str, state: &Path, socket: &Path, extra: &[&str]) -> (Proc, String) {
    let mut args = vec![
        "shipper",
        "--indexer",
        indexer,
        "--state",
        state.to_str().unwrap(),
        "--syslog-socket",
        socket.to_str().unwrap(),
        "--metrics",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let (p, lines) = sawmill(&args);
    (p, url_after(&lines[1], "sawmill shipper metrics on "))
}

fn metric(url: &str, name: &str) -> f64 {
    let text = reqwest::blocking::get(url).unwrap().text().unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn get_total(client: &reqwest::blocking::Client, ix: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(
        &client
            .get(format!("{ix}/api/v1/search?limit=0"))
            .send()
            .unwrap()
            .text()
            .unwrap(),
    )
    .unwrap();
    v["total"].as_u64().unwrap_or(0)
}

fn url_after(line: &str, prefix: &str) -> String {
    line.strip_prefix(prefix).unwrap().trim().to_string()
}

/// Direct tantivy on the same records, the indexer benchmark's baseline, for ratio c.
fn direct_tantivy(n: u64, dir: &Path) -> f64 {
    let (fields, _index, mut w) = baseline_index(dir);
    let now = tantivy::time::OffsetDateTime::now_utc();
    let t = Instant::now();
    for i in 0..n {
        let msg = String::from_utf8(datagram(i)).unwrap();
        let obj = serde_json::json!({"message": msg, "service": SERVICES[(i % 5) as usize], "host": "vm", "severity": "info", "_src": "b", "_seq": i});
        let rec = Record::from_object(obj.as_object().unwrap().clone(), now).unwrap();
        w.add_document(fields.document(i, &rec)).unwrap();
    }
    w.commit().unwrap();
    n as f64 / t.elapsed().as_secs_f64()
}

// Long on purpose: a benchmark's main reads top to bottom as the report it prints, each
// step measuring and printing its figures beside the baseline of the same run.
fn main() {
    if let Ok(spec) = std::env::var("SAWMILL_BENCH_SEND") {
        sender_main(&spec);
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: u64 = env_or("SAWMILL_BENCH_MESSAGES", 2_000_000);
    let tmp: PathBuf =
        std::env::temp_dir().join(format!("sawmill-shipper-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    if std::env::var("SAWMILL_BENCH_PART").as_deref() == Ok("run") {
        run_passthrough(&tmp);
        let _ = std::fs::remove_dir_all(&tmp);
        return;
    }
    let bytes: u64 = (0..n).map(|i| datagram(i).len() as u64).sum();
    println!(
        "{n} datagrams, {:.0} bytes each on average\n",
        bytes as f64 / n as f64
    );

    // (a) baseline: receive and discard.
    let path = tmp.join("bare.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let mut sender = send(&path, n);
    let t = Instant::now();
    let mut buf = vec![0u8; 65 * 1024];
    for _ in 0..n {
        sock.recv(&mut buf).unwrap();
    }
    let a = report(
        "(a) bare receive loop (baseline)",
        n,
        bytes,
        t.elapsed().as_secs_f64(),
    );
    sender.wait().unwrap();

    // (b) the shipper's socket source into its queue, in this process like (a): the same
    // socket reader and queue the shipper runs, with nothing taken out of the queue, so the
    // figure is the source's own cost over a bare receive loop.
    let sockb = tmp.join("b.sock");
    {
        let metrics = Arc::new(Metrics::default());
        let queue = Queue::new(n as usize + 1, usize::MAX, metrics.clone());
        let socket = Arc::new(SyslogSocket::open(&sockb).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (socket, queue, stop) = (socket.clone(), queue.clone(), stop.clone());
            std::thread::spawn(move || read_loop(&socket, &queue, 64 * 1024, &stop))
        };
        let mut sender = send(&sockb, n);
        let t = Instant::now();
        while (queue.len() as u64) < n {
            std::thread::sleep(Duration::from_millis(1));
        }
        let b = report(
            "(b) shipper socket source into its queue",
            n,
            bytes,
            t.elapsed().as_secs_f64(),
        );
        sender.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        reader.join().unwrap();
        println!(
            "ratio b/a                                        {:.2}   (target >= 0.80: {})",
            b / a,
            if b / a >= 0.8 { "met" } else { "NOT met" }
        );
    }

    // (b') the whole shipper process with no indexer reachable: the source plus the batcher
    // (parse, enrich, JSON, zstd) sharing the same two cores with the sender.
    let sockb2 = tmp.join("b2.sock");
    let (shipper, murl) = start_shipper(
        "http://127.0.0.1:9",
        &tmp.join("sb"),
        &sockb2,
        &[
            "--queue-records",
            "3000000",
            "--queue-bytes",
            "4GiB",
            "--backlog-bytes",
            "8GiB",
        ],
    );
    let received = "sawmill_shipper_records_received_total{source=\"syslog_unix\"}";
    let mut sender = send(&sockb2, n);
    let t = Instant::now();
    while (metric(&murl, received) as u64) < n {
        std::thread::sleep(Duration::from_millis(20));
    }
    let b2 = report(
        "(b') whole shipper process, nothing delivered",
        n,
        bytes,
        t.elapsed().as_secs_f64(),
    );
    sender.wait().unwrap();
    drop(shipper);
    println!(
        "ratio b'/a                                       {:.2}",
        b2 / a
    );

    // (c) end to end into one indexer.
    let (indexer, lines) = sawmill(&[
        "indexer",
        "--listen",
        "127.0.0.1:0",
        "--data",
        tmp.join("ix").to_str().unwrap(),
    ]);
    let ix = url_after(&lines[0], "sawmill indexer listening on ");
    let sockc = tmp.join("c.sock");
    let (shipper, murl) = start_shipper(&ix, &tmp.join("sc"), &sockc, &[]);
    let spid = shipper.0.id();
    let cpu0 = cpu_secs(spid);
    let mut sender = send(&sockc, n);
    let t = Instant::now();
    let client = reqwest::blocking::Client::new();
    loop {
        let total = get_total(&client, &ix);
        let dropped = metric(
            &murl,
            "sawmill_shipper_queue_records_dropped_total{source=\"syslog_unix\"}",
        ) as u64;
        if total + dropped >= n {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let secs = t.elapsed().as_secs_f64();
    let delivered = get_total(&client, &ix);
    sender.wait().unwrap();
    let c = report(
        "(c) end to end: socket -> shipper -> indexer",
        n,
        bytes,
        secs,
    );
    let drops = metric(
        &murl,
        "sawmill_shipper_queue_records_dropped_total{source=\"syslog_unix\"}",
    );
    println!(
        "  of which delivered (searchable): {delivered} ({:.0} msg/s); the rest dropped at the full queue, counted",
        delivered as f64 / secs
    );
    let cpu = cpu_secs(spid) - cpu0;
    let rss = peak_rss_mib(spid);
    let direct = direct_tantivy(n.min(1_000_000), &tmp.join("direct"));
    println!("direct tantivy (indexer benchmark's baseline)    {direct:>10.0} msg/s;  c / direct = {:.2}", c / direct);
    println!("queue drops: {drops}; shipper CPU: {:.2} s per million messages; shipper peak RSS: {rss:.1} MiB (target <= 40: {})", cpu / (n as f64 / 1e6), if rss <= 40.0 { "met" } else { "NOT met" });
    drop(shipper);
    drop(indexer);
    run_passthrough(&tmp);
    let _ = std::fs::remove_dir_all(&tmp);
}

/// `sawmill run` passthrough: the child's output rate with and without the wrapper.
// Long on purpose, like `main`: the runs, the medians and the report in reading order.
fn run_passthrough(tmp: &Path) {
    let (_shipper, murl) = start_shipper(
        "http://127.0.0.1:9",
        &tmp.join("sr"),
        &tmp.join("r.sock"),
        &[],
    );
    // Long enough (about a second each at this machine's speed) that a run shows the steady
    // state rather than start-up and one scheduling hiccup.
    let lines_n: u64 = env_or("SAWMILL_BENCH_RUN_LINES", 3_000_000);
    let reps: usize = env_or("SAWMILL_BENCH_RUN_REPS", 9);
    let child = format!("i=0; yes 'GET /api/orders/1234 completed status=200 duration_ms=45 user_id=1042 request_id=req-abcdef0123456789 upstream=orders region=eu-west-1 cache=miss' | head -n {lines_n}");
    let time_it = |wrapped: bool| {
        let mut cmd = if wrapped {
            let mut c = Command::new(env!("CARGO_BIN_EXE_sawmill"));
            c.args([
                "run",
                "--to",
                tmp.join("r.sock").to_str().unwrap(),
                "--",
                "sh",
                "-c",
                &child,
            ]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", &child]);
            c
        };
        let cpu0 = children_cpu_secs();
        let t = Instant::now();
        let mut p = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = p.stdout.take().unwrap();
        let mut sink = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            let k = out.read(&mut sink).unwrap();
            if k == 0 {
                break;
            }
            total += k as u64;
        }
        // The clock stops when all output has passed through (end of file); the wrapper may
        // then spend up to its 2 s exit budget shipping what is queued; the child is done.
        let passed = t.elapsed().as_secs_f64();
        p.wait().unwrap();
        (passed, total, children_cpu_secs() - cpu0)
    };
    // One run of each is dominated by scheduling noise on 2 cores: take the median of
    // several, interleaved so both see the same machine.
    let (mut bares, mut wrappeds, mut cpu_bare, mut cpu_wrapped) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut total = 0;
    for _ in 0..reps {
        let (b, t, cb) = time_it(false);
        let (w, t_w, cw) = time_it(true);
        assert_eq!(t, t_w, "passthrough is exact");
        total = t;
        bares.push(b);
        wrappeds.push(w);
        cpu_bare.push(cb);
        cpu_wrapped.push(cw);
    }
    let median = |v: &[f64]| percentiles(v.to_vec()).0;
    // Each wrapped run next to the bare one just before it: the two saw the same machine.
    let paired: Vec<f64> = bares
        .iter()
        .zip(&wrappeds)
        .map(|(b, w)| 1.0 - b / w)
        .collect();
    let (bare, wrapped) = (median(&bares), median(&wrappeds));
    let cost = 1.0 - bare / wrapped;
    println!("sawmill run passthrough ({lines_n} lines, {total} bytes, median of {reps} interleaved runs, default --rate-limit): {:.1} MB/s bare, {:.1} MB/s wrapped: costs the child {:.1} % (target <= 10 %: {})", total as f64 / 1e6 / bare, total as f64 / 1e6 / wrapped, cost * 100.0, if cost <= 0.10 { "met" } else { "NOT met" });
    println!(
        "  CPU seconds per run, child and wrapper together: {:.2} bare, {:.2} wrapped",
        median(&cpu_bare),
        median(&cpu_wrapped)
    );
    println!(
        "  run by run (each wrapped against the bare run just before it): costs {:.1} % to {:.1} %, median {:.1} %",
        paired.iter().copied().fold(f64::INFINITY, f64::min) * 100.0,
        paired.iter().copied().fold(f64::NEG_INFINITY, f64::max) * 100.0,
        median(&paired) * 100.0
    );
    std::thread::sleep(Duration::from_secs(1));
    let shipped = metric(
        &murl,
        "sawmill_shipper_records_received_total{source=\"syslog_unix\"}",
    );
    println!(
        "  lines shipped per wrapped run: {:.0} of {lines_n}; the rest passed through only, counted",
        shipped / reps as f64
    );
}
