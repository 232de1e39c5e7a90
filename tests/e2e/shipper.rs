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
    // B was down for part of the stream; the shipper kept its batches and retries.
    std::thread::sleep(Duration::from_millis(500));
    let b = Indexer::start_at(&b_addr, &dir.path().join("b"), &args);
    for ix in [&a, &b] {
        wait_total(ix, "service:load", n);
        let s = seqs(ix, "service:load");
        assert_eq!(s.len() as u64, n, "distinct records");
        assert!(s.values().all(|c| *c == 1), "a record is stored twice");
    }
    assert!(
        sh.metric(&format!(
            "sawmill_shipper_batches_retried_total{{replica=\"{}\"}}",
            b.url
        )) > 0.0
    );
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
    let deadline = Instant::now() + Duration::from_secs(20);
    while q("sawmill_shipper_queue_records") > 0 || q(received) < n {
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
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let idle = [&a_url, &b_url].iter().all(|r| {
            q(&format!(
                "sawmill_shipper_backlog_records{{replica=\"{r}\"}}"
            )) == 0
        });
        let owed = q("sawmill_shipper_records_lost_total") + queue_drops;
        if idle && reported_total(&a) == owed && reported_total(&b) == owed {
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
            reported_total(ix),
            queue_drops + lost,
            "drop records on {r}"
        );
    }
    eprintln!("overflow: sent {n} in {sent_in:?}; stored {}, queue drops {queue_drops}, lost in backlogs {lost}", n - queue_drops - lost);
}

/// The sum of N over `sawmill dropped N records` records an indexer holds, leaving out the
/// reports on one replica (`fields.replica`): records lost everywhere are reported as such.
fn reported_total(ix: &Indexer) -> u64 {
    let (s, v) = get(&ix.api("/api/v1/search?q=service:sawmill-shipper&limit=1000"));
    if s != 200 {
        return 0;
    }
    v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["fields"]["replica"].is_null())
        .map(|h| h["fields"]["dropped"].as_u64().unwrap())
        .sum()
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
    let mut child = std::process::Command::new("systemd-socket-activate")
        .args(["--datagram", "-l"])
        .arg(&sock)
        .arg(env!("CARGO_BIN_EXE_sawmill"))
        .args(["shipper", "--indexer", &ix.url, "--state"])
        .arg(dir.path().join("state"))
        .arg("--syslog-socket")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("systemd-socket-activate (Debian's systemd package) is installed");
    // The service manager holds the socket before the shipper runs; the first datagram starts it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(
            Instant::now() < deadline,
            "systemd-socket-activate never made the socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
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
