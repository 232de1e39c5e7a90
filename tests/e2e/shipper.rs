//! The shipper against real indexers: the syslog corpus, real clients (`logger`, Python's
//! `SysLogHandler`), replicas that die, and a queue that overflows.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::corpus::{input, mismatch, syslog_cases};
use crate::util::*;

fn hostname() -> String {
    String::from_utf8(Command::new("hostname").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string()
}

/// The record with the highest `_seq`: the one the shipper sent last.
fn newest_by_seq(ix: &Indexer) -> Value {
    let hits = all_hits(ix, "*");
    hits.into_iter()
        .max_by_key(|h| h["_seq"].as_u64().unwrap_or(0))
        .expect("a record")
}

#[test]
fn every_corpus_case_through_the_real_socket() {
    let dir = TempDir::new("corpus");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "50ms"]);
    let sh = Shipper::start(dir.path(), &[&ix.url], &["--timezone", "UTC"]);
    let me = hostname();
    let mut failures = Vec::new();
    let cases = syslog_cases();
    for (i, case) in cases.iter().enumerate() {
        sh.send(&input(case));
        wait_total(&ix, "*", i as u64 + 1);
        let rec = newest_by_seq(&ix);
        if let Some(m) = mismatch(&case["expect"], &rec, &me) {
            failures.push(format!("- {}: {m}\n    record: {rec}", case["name"]));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert_eq!(
        sh.metric("sawmill_shipper_records_received_total{source=\"syslog_unix\"}"),
        cases.len() as f64
    );
}

/// In a container the machine's name is the container's; `--host` (a DaemonSet passes its
/// node's name) is the `host` of records that name none, and a record that names one keeps
/// its own.
#[test]
fn host_names_the_records_that_carry_none() {
    let dir = TempDir::new("host");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "50ms"]);
    let sh = Shipper::start_env(
        dir.path(),
        &[&ix.url],
        &[],
        &[("SAWMILL_HOST", "node-7.cluster")],
    );
    sh.send(b"<14>app: no host here");
    sh.send(b"<14>1 2026-12-01T06:00:00Z elsewhere app - - - has its own host");
    wait_total(&ix, "*", 2);
    assert_eq!(
        all_hits(&ix, "message:no")[0]["host"],
        "node-7.cluster",
        "the default host"
    );
    assert_eq!(all_hits(&ix, "message:own")[0]["host"], "elsewhere");
}

#[test]
fn logger_and_python_syslog_handler_records() {
    let dir = TempDir::new("clients");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "50ms"]);
    let sh = Shipper::start(dir.path(), &[&ix.url], &[]);
    let sock = sh.socket.to_str().unwrap().to_string();
    let logger = |args: &[&str]| {
        let st = Command::new("logger")
            .args(["-u", &sock])
            .args(args)
            .status()
            .expect("util-linux logger is installed");
        assert!(st.success(), "logger {args:?}");
    };
    logger(&["-t", "deflt", "-p", "local3.err", "default form"]);
    logger(&["--rfc3164", "-t", "old", "rfc3164 form"]);
    logger(&[
        "--rfc5424",
        "--sd-id",
        "req@32473",
        "--sd-param",
        "request_id=\"abc-123\"",
        "-t",
        "new",
        "rfc5424 form",
    ]);
    let py = format!(
        "import logging, logging.handlers\nh = logging.handlers.SysLogHandler(address={sock:?})\nl = logging.getLogger('app')\nl.addHandler(h)\nl.warning('python warning request_id=r-9')\n"
    );
    let st = Command::new("python3")
        .args(["-c", &py])
        .status()
        .expect("python3 is installed");
    assert!(st.success());
    wait_total(&ix, "*", 4);
    let me = hostname();
    let by_msg: HashMap<String, Value> = all_hits(&ix, "*")
        .into_iter()
        .map(|h| (h["message"].as_str().unwrap().to_string(), h))
        .collect();
    let d = &by_msg["default form"];
    assert_eq!(
        (
            d["service"].as_str(),
            d["severity"].as_str(),
            d["facility"].as_str()
        ),
        (Some("deflt"), Some("err"), Some("local3")),
        "{d}"
    );
    assert_eq!(d["host"], me.as_str());
    // The kernel's word on who sent it: logger's own pid, not whatever the header says.
    assert!(d["fields"]["_pid"].as_u64().unwrap() > 1, "{d}");
    assert_eq!(d["fields"]["_uid"], unsafe { libc::getuid() });
    let o = &by_msg["rfc3164 form"];
    assert_eq!(o["service"], "old", "{o}");
    let n = &by_msg["rfc5424 form"];
    assert_eq!(
        (n["service"].as_str(), n["request_id"].as_str()),
        (Some("new"), Some("abc-123")),
        "{n}"
    );
    let p = &by_msg["python warning request_id=r-9"];
    assert_eq!(
        (
            p["severity"].as_str(),
            p["facility"].as_str(),
            p["request_id"].as_str()
        ),
        (Some("warning"), Some("user"), Some("r-9")),
        "{p}"
    );
}

/// Each `_seq` of the shipper's records in `ix`, with how often it is stored.
fn seqs(ix: &Indexer, q: &str) -> HashMap<u64, u32> {
    let mut out = HashMap::new();
    for h in all_hits(ix, q) {
        *out.entry(h["_seq"].as_u64().unwrap()).or_insert(0) += 1;
    }
    out
}

#[test]
fn a_replica_killed_mid_stream_ends_up_with_every_record_once() {
    let dir = TempDir::new("replicas");
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let args = ["--commit-interval", "100ms"];
    let a = Indexer::start_at(&a_addr, &dir.path().join("a"), &args);
    let b = Indexer::start_at(&b_addr, &dir.path().join("b"), &args);
    let sh = Shipper::start(dir.path(), &[&a.url, &b.url], &[]);
    let n = 3000;
    let b_url = b.url.clone();
    let mut b = Some(b);
    for i in 0..n {
        sh.send(format!("<13>Nov 27 07:57:02 load[1]: line {i}").as_bytes());
        if i == n / 3 {
            b.take().unwrap().kill9();
        }
        if i % 100 == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // B was down for part of the stream; the shipper kept its batches and retries. It is
    // started again once a retry was counted (the batcher runs at idle priority: on a
    // loaded machine a fixed pause may pass before it tried B at all).
    sh.wait_counted(&format!(
        "sawmill_shipper_batches_retried_total{{replica=\"{b_url}\"}}"
    ));
    let b = Indexer::start_at(&b_addr, &dir.path().join("b"), &args);
    for ix in [&a, &b] {
        wait_total(ix, "service:load", n);
        let s = seqs(ix, "service:load");
        assert_eq!(s.len() as u64, n, "distinct records");
        assert!(s.values().all(|c| *c == 1), "a record is stored twice");
    }
    for r in [&a.url, &b.url] {
        let delivered = sh.metric(&format!(
            "sawmill_shipper_replica_records_delivered_total{{replica=\"{r}\"}}"
        ));
        assert_eq!(delivered, n as f64, "replica {r}");
    }
}

#[test]
fn when_everything_overflows_every_lost_record_is_counted_and_reported() {
    let dir = TempDir::new("overflow");
    let (a_addr, b_addr) = (free_addr(), free_addr());
    // Both replicas down; a tiny queue and tiny backlogs.
    let a_url = format!("http://{a_addr}");
    let b_url = format!("http://{b_addr}");
    let sh = Shipper::start(
        dir.path(),
        &[&a_url, &b_url],
        &[
            "--queue-records",
            "20",
            "--backlog-bytes",
            "16KiB",
            "--drop-report-interval",
            "1s",
        ],
    );
    let n = 20_000u64;
    let started = Instant::now();
    for i in 0..n {
        sh.send(
            format!(
                "<13>Nov 27 07:57:02 blast[1]: burst line {i} with some padding to make it longer"
            )
            .as_bytes(),
        );
    }
    let sent_in = started.elapsed();
    let q = |m: &str| sh.metric(m) as u64;
    let received = "sawmill_shipper_records_received_total{source=\"syslog_unix\"}";
    let dropped = "sawmill_shipper_queue_records_dropped_total{source=\"syslog_unix\"}";
    let deadline = Instant::now() + Duration::from_secs(60);
    // No replica has said its group yet, so records wait in the queue (up to its bound)
    // rather than in backlogs presumed to be of a group.
    while q(received) < n {
        assert!(
            Instant::now() < deadline,
            "the shipper never took all datagrams"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(q(received), n);
    let queue_drops = q(dropped);
    assert!(queue_drops > 0, "the queue never overflowed");
    // Let drop reports be made, then bring the replicas up.
    std::thread::sleep(Duration::from_millis(1500));
    let args = ["--commit-interval", "100ms"];
    let a = Indexer::start_at(&a_addr, &dir.path().join("a"), &args);
    let b = Indexer::start_at(&b_addr, &dir.path().join("b"), &args);
    let deadline = Instant::now() + Duration::from_secs(60);
    // The shipper has backlogs for them once they said their group.
    loop {
        let text = metrics_text(&sh.metrics_url);
        if [&a_url, &b_url]
            .iter()
            .all(|r| text.contains(&format!("replica=\"{r}\"")))
        {
            break;
        }
        assert!(Instant::now() < deadline, "no replica row: {text}");
        std::thread::sleep(Duration::from_millis(200));
    }
    loop {
        let idle = [&a_url, &b_url].iter().all(|r| {
            q(&format!(
                "sawmill_shipper_backlog_records{{replica=\"{r}\"}}"
            )) == 0
        });
        let owed = q("sawmill_shipper_records_lost_total") + queue_drops;
        // What waited in the queue may still be on its way (it was never in a backlog).
        let stored = |ix: &Indexer| {
            get_ok(&ix.api("/api/v1/search?q=service:blast&limit=0"))["total"]
                .as_u64()
                .unwrap()
        };
        let all_in = stored(&a) + owed == n && stored(&b) + owed == n;
        if idle
            && all_in
            && reported_dropped(&a, None) == owed
            && reported_dropped(&b, None) == owed
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "backlogs never drained; log:\n{}",
            sh.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let lost = q("sawmill_shipper_records_lost_total");
    for (ix, r) in [(&a, &a_url), (&b, &b_url)] {
        let stored = get_ok(&ix.api("/api/v1/search?q=service:blast&limit=0"))["total"]
            .as_u64()
            .unwrap();
        // Per replica: received = delivered + dropped + in flight (none left).
        let enq = q(&format!(
            "sawmill_shipper_replica_records_enqueued_total{{replica=\"{r}\"}}"
        ));
        let del = q(&format!(
            "sawmill_shipper_replica_records_delivered_total{{replica=\"{r}\"}}"
        ));
        let drp = q(&format!(
            "sawmill_shipper_replica_records_dropped_total{{replica=\"{r}\"}}"
        ));
        assert_eq!(
            enq,
            del + drp,
            "replica {r}: enqueued {enq} = delivered {del} + dropped {drp}"
        );
        // Every datagram is stored, or counted as dropped by the queue or by every replica.
        assert_eq!(
            stored + queue_drops + lost,
            n,
            "replica {r}: stored {stored} + queue drops {queue_drops} + lost {lost}"
        );
        // ... and the drop records say so, to the record.
        assert_eq!(
            reported_dropped(ix, None),
            queue_drops + lost,
            "drop records on {r}"
        );
    }
    eprintln!("overflow: sent {n} in {sent_in:?}; stored {}, queue drops {queue_drops}, lost in backlogs {lost}", n - queue_drops - lost);
}

#[test]
fn syslog_over_udp_and_tcp_with_both_framings() {
    let dir = TempDir::new("net");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "50ms"]);
    let (udp, tcp) = (free_addr(), free_addr());
    let sh = Shipper::start(
        dir.path(),
        &[&ix.url],
        &["--syslog-udp", &udp, "--syslog-tcp", &tcp],
    );
    let port = |a: &str| a.rsplit(':').next().unwrap().to_string();
    let logger = |args: &[&str]| {
        let st = Command::new("logger")
            .args(args)
            .status()
            .expect("util-linux logger is installed");
        assert!(st.success(), "logger {args:?}");
    };
    logger(&[
        "--udp",
        "-n",
        "127.0.0.1",
        "-P",
        &port(&udp),
        "-t",
        "viaudp",
        "over udp",
    ]);
    logger(&[
        "--tcp",
        "-n",
        "127.0.0.1",
        "-P",
        &port(&tcp),
        "-t",
        "viatcp",
        "over tcp",
    ]);
    logger(&[
        "--tcp",
        "--octet-count",
        "-n",
        "127.0.0.1",
        "-P",
        &port(&tcp),
        "-t",
        "viatcp",
        "octet counted\nwith a newline inside",
    ]);
    // A relay that sends several newline-framed messages on one connection.
    let mut conn = std::net::TcpStream::connect(&tcp).unwrap();
    std::io::Write::write_all(
        &mut conn,
        b"<14>Nov 27 07:57:02 relay app: one\n<14>Nov 27 07:57:03 relay app: two\n",
    )
    .unwrap();
    drop(conn);
    wait_total(&ix, "*", 5);
    let msgs: Vec<String> = all_hits(&ix, "*")
        .iter()
        .map(|h| {
            format!(
                "{}|{}",
                h["service"].as_str().unwrap_or(""),
                h["message"].as_str().unwrap()
            )
        })
        .collect();
    for want in [
        "viaudp|over udp",
        "viatcp|over tcp",
        "viatcp|octet counted\nwith a newline inside",
        "app|one",
        "app|two",
    ] {
        assert!(
            msgs.iter().any(|m| m == want),
            "{want:?} not among {msgs:?}"
        );
    }
    assert_eq!(
        sh.metric("sawmill_shipper_records_received_total{source=\"syslog_udp\"}"),
        1.0
    );
    assert_eq!(
        sh.metric("sawmill_shipper_records_received_total{source=\"syslog_tcp\"}"),
        4.0
    );
}

#[test]
fn a_socket_handed_over_by_systemd_is_used_and_never_unlinked() {
    let dir = TempDir::new("activate");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "50ms"]);
    let sock = dir.path().join("dev-log");
    // The service manager holds the socket before the shipper runs; the first datagram starts it.
    let mut child = socket_activated_shipper(dir.path(), &ix, &sock);
    let client = std::os::unix::net::UnixDatagram::unbound().unwrap();
    client
        .send_to(b"<13>Nov 27 07:57:02 activated: first", &sock)
        .unwrap();
    wait_total(&ix, "service:activated", 1);
    client
        .send_to(b"<13>Nov 27 07:57:03 activated: second", &sock)
        .unwrap();
    wait_total(&ix, "service:activated", 2);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    assert!(
        sock.exists(),
        "a socket handed in belongs to the service manager and is never unlinked"
    );
}

/// A datagram, then the host, service, pid, message and (when fixed) time it must give.
type Variant<'a> = (
    &'a str,
    &'a str,
    &'a str,
    Option<u64>,
    &'a str,
    Option<&'a str>,
);

/// Issue 9, point 13: RFC 3164 as network devices and rsyslog write it. Before, a tag ended
/// by a space stayed in the message, a year in the timestamp lost time, host and tag, and a
/// colon after the time became the host.
#[test]
fn rfc3164_variants_are_read_as_rsyslog_reads_them() {
    let dir = TempDir::new("variants");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "50ms"]);
    let sh = Shipper::start(dir.path(), &[&ix.url], &["--timezone", "UTC"]);
    let me = hostname();
    let cases: [Variant; 6] = [
        (
            "<6>Aug 10 22:18:24 host tag text a",
            "host",
            "tag",
            None,
            "text a",
            None,
        ),
        (
            "<6>Aug 10 22:18:24 host tag[7] text b",
            "host",
            "tag",
            Some(7),
            "text b",
            None,
        ),
        (
            "<189>Mar  7 2008 19:06:53 router sshd: text c",
            "router",
            "sshd",
            None,
            "text c",
            Some("2008-03-07T19:06:53Z"),
        ),
        (
            "<13>Nov 7 19:06:53: host tag: text d",
            "host",
            "tag",
            None,
            "text d",
            None,
        ),
        (
            "<189>Mar  7 2008 19:06:53: %SYS-5-CONFIG_I: text e",
            &me,
            "%SYS-5-CONFIG_I",
            None,
            "text e",
            Some("2008-03-07T19:06:53Z"),
        ),
        // glibc's syslog(3), which sends no host, still reads as before.
        (
            "<13>Nov 27 07:57:02 myapp[42]: text f",
            &me,
            "myapp",
            Some(42),
            "text f",
            None,
        ),
    ];
    for case in &cases {
        sh.send(case.0.as_bytes());
    }
    let hits = wait_total(&ix, "*", cases.len() as u64)["hits"].clone();
    let mut wrong = Vec::new();
    for (raw, host, service, pid, message, ts) in cases {
        let Some(h) = hits.as_array().unwrap().iter().find(|h| {
            h["message"]
                .as_str()
                .is_some_and(|m| m.ends_with(&message[4..]))
        }) else {
            wrong.push(format!("{raw:?}: no record"));
            continue;
        };
        let got = (
            h["host"].as_str(),
            h["service"].as_str(),
            h["pid"].as_u64(),
            h["message"].as_str(),
        );
        let mut ok = got == (Some(host), Some(service), pid, Some(message));
        if let Some(ts) = ts {
            ok &= h["ts"].as_str().is_some_and(|t| t.starts_with(&ts[..19]));
        }
        if !ok {
            wrong.push(format!(
                "{raw:?}\n     got {got:?} ts {}\n    want {:?} ts {ts:?}",
                h["ts"],
                (host, service, pid, message)
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} datagrams read wrong:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

/// Regression (found by the syslog fuzz tests): a multi-byte character where the month goes,
/// or a time past year 9999 once in UTC, panicked the batcher, and every later record was
/// lost with it.
#[test]
fn datagrams_that_panicked_the_parser_are_stored_and_later_ones_too() {
    let dir = TempDir::new("panics");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "50ms"]);
    let sh = Shipper::start(dir.path(), &[&ix.url], &[]);
    sh.send(b"<0> \xf0\x90\x80\x80 aAA0AaA0a0");
    sh.send(b"<13>9999-12-31T23:00:00-23:00 host app: far future");
    sh.send(b"<13>Nov 27 07:57:02 after: still here");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut total = 0;
    while Instant::now() < deadline && total < 3 {
        total = get_ok(&ix.api("/api/v1/search?q=*&limit=0"))["total"]
            .as_u64()
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = sh.log_text();
    assert_eq!(
        total,
        3,
        "stored {total} of 3 records; shipper log:\n{}",
        &log[log.len().saturating_sub(1500)..]
    );
    wait_total(&ix, "service:after", 1);
}

/// A metric, or 0 when the shipper does not export it (as before the fix).
fn metric_or_zero(sh: &Shipper, name: &str) -> u64 {
    let text = metrics_text(&sh.metrics_url);
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
}

const STATE_UNKEYED: &str = "sawmill_shipper_state_records_unkeyed_total";

fn stored(ix: &Indexer, q: &str) -> u64 {
    get_ok(&ix.api(&format!("/api/v1/search?q={}&limit=0", urlencode(q))))["total"]
        .as_u64()
        .unwrap()
}

/// Sends datagrams `n=start..end` of service `fill`, then waits (60 s at most: the batcher
/// runs at idle priority) until every one sent so far is stored.
fn send_fill(sh: &Shipper, ix: &Indexer, range: std::ops::Range<u64>) {
    for i in range.clone() {
        sh.send(format!("<13>Nov 27 07:57:02 fill: n={i}").as_bytes());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while stored(ix, "service:fill") < range.end && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Fills the filesystem at `dir` with one file, and returns it.
fn fill_up(dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![b'x'; 4096];
    while f.write_all(&chunk).and_then(|_| f.flush()).is_ok() {}
    let _ = f.sync_all();
    path
}

/// Issue 9, point 7. A shipper whose state disk was full kept numbering from memory, and
/// after a restart numbered again from the last block it had written: the indexer dropped
/// the new records as duplicates while the shipper counted them delivered. Issue 10, B2:
/// it then dropped them instead; a record whose number cannot be saved goes without a key.
#[test]
fn a_full_state_disk_sends_records_without_a_key_and_never_reuses_a_number() {
    let dir = TempDir::new("statefull");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "50ms"]);
    let state = dir.path().join("state");
    let _fs = crate::durability::Tmpfs::mount(&state, "256k");
    let args = ["--drop-report-interval", "1s"];
    let sh = Shipper::start(dir.path(), &[&ix.url], &args);
    send_fill(&sh, &ix, 0..100);
    assert_eq!(metric_or_zero(&sh, STATE_UNKEYED), 0);
    // A full disk, and a restart: the new process must reserve a block before numbering.
    let filler = fill_up(&state);
    sh.terminate();
    let sh = Shipper::start(dir.path(), &[&ix.url], &args);
    send_fill(&sh, &ix, 100..300);
    let unkeyed = metric_or_zero(&sh, STATE_UNKEYED);
    // Space again: numbering resumes by itself.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric_or_zero(&sh, "sawmill_shipper_state_unwritable") != 0 {
        assert!(Instant::now() < deadline, "the shipper never recovered");
        std::thread::sleep(Duration::from_millis(50));
    }
    send_fill(&sh, &ix, 300..500);
    let log = sh.log_text();
    sh.terminate();
    // And a restart with space: no number handed out before may come again.
    let sh = Shipper::start(dir.path(), &[&ix.url], &args);
    send_fill(&sh, &ix, 500..700);
    sh.terminate();
    let ns = line_numbers(&ix, "service:fill");
    let duplicates = ix.metric("sawmill_indexer_records_duplicate_total") as u64;
    eprintln!(
        "state disk full: sent 700, stored {}, {unkeyed} without a key, {duplicates} refused as duplicates",
        ns.len()
    );
    assert_eq!(duplicates, 0, "new records refused as duplicates");
    assert_eq!(
        ns,
        (0..700).collect::<Vec<u64>>(),
        "every record stored once"
    );
    assert_eq!(
        unkeyed, 200,
        "the records sent while the disk was full go without a key"
    );
    for h in all_hits(&ix, "service:fill") {
        let n = h["fields"]["n"].as_u64().unwrap();
        assert_eq!(
            h.get("_seq").is_some(),
            !(100..300).contains(&n),
            "only the records sent while the disk was full go without a key: {h}"
        );
    }
    // Said once per episode, and its end too.
    let errors = log.lines().filter(|l| l.contains("ERROR")).count();
    assert_eq!(errors, 1, "ERROR lines while the disk was full:\n{log}");
    assert!(
        log.contains("reserved on disk again"),
        "no recovery line:\n{log}"
    );
}

/// Peak resident memory of a process in KiB, from the kernel.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Regression (found reading the TCP framing while fuzzing the parser): a line that never
/// ends, or an octet count that never does, was buffered whole before being cut, so one
/// peer could fill the shipper's memory.
#[test]
fn an_endless_tcp_line_is_cut_not_buffered() {
    use std::io::Write;
    let dir = TempDir::new("endless");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "50ms"]);
    let tcp = free_addr();
    let sh = Shipper::start(dir.path(), &[&ix.url], &["--syslog-tcp", &tcp]);
    let before = peak_rss_kib(sh.child.id());
    let chunk = vec![b'x'; 1 << 20];
    let mut conn = std::net::TcpStream::connect(&tcp).unwrap();
    conn.write_all(b"<13>Nov 27 07:57:02 endless: ").unwrap();
    for _ in 0..256 {
        conn.write_all(&chunk).unwrap();
    }
    conn.write_all(b"\n<13>Nov 27 07:57:02 after: the next line\n")
        .unwrap();
    drop(conn);
    // Digits without the space that ends a count: the connection is refused, not buffered.
    let mut conn = std::net::TcpStream::connect(&tcp).unwrap();
    let digits = vec![b'1'; 1 << 20];
    for _ in 0..256 {
        if conn.write_all(&digits).is_err() {
            break;
        }
    }
    drop(conn);
    wait_total(&ix, "service:after", 1);
    let cut = &wait_total(&ix, "service:endless", 1)["hits"][0];
    assert_eq!(cut["truncated"], true);
    assert!(cut["message"].as_str().unwrap().len() <= 64 * 1024);
    let grown_mib = (peak_rss_kib(sh.child.id()) - before) / 1024;
    assert!(
        grown_mib < 64,
        "the shipper's peak memory grew by {grown_mib} MiB for 2 × 256 MiB without an end"
    );
}
