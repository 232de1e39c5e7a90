//! Stopping: SIGTERM ends a server within a bound whatever its clients do, and a client that
//! stalls mid-request is cut off instead of holding anything.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::*;

/// The default `--stop-timeout`, and the margin a loaded machine needs on top of it.
const STOP_BOUND: Duration = Duration::from_secs(10 + 8);

fn records(src: &str, n: u64) -> Vec<u8> {
    let recs: Vec<Value> = (0..n)
        .map(|s| json!({"message": format!("stop test {s}"), "_src": src, "_seq": s}))
        .collect();
    ndjson(&recs)
}

fn connect(url: &str) -> TcpStream {
    let conn = TcpStream::connect(url.trim_start_matches("http://")).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    conn
}

/// A client that sends half a request head and then nothing.
fn stall_in_headers(url: &str) -> TcpStream {
    let mut conn = connect(url);
    conn.write_all(b"POST /api/v1/ingest HTTP/1.1\r\nHost: sawmill\r\nContent-Le")
        .unwrap();
    conn
}

/// A client that sends a whole head announcing 100,000 bytes, then 100 of them.
fn stall_in_body(url: &str, path: &str) -> TcpStream {
    let mut conn = connect(url);
    conn.write_all(
        format!("POST {path} HTTP/1.1\r\nHost: sawmill\r\nContent-Length: 100000\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    conn.write_all(&[b' '; 100]).unwrap();
    conn
}

/// SIGTERM, then waits for the exit; fails if it takes longer than `within`.
fn stop_within(child: &mut Child, within: Duration, log: impl Fn() -> String) -> ExitStatus {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let started = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            eprintln!("stopped in {:?}", started.elapsed());
            return st;
        }
        assert!(
            started.elapsed() < within,
            "still running {within:?} after SIGTERM; log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Restarts on `data` and checks that the stop committed all `n` records of `src`.
fn assert_committed(data: &std::path::Path, src: &str, n: u64) {
    let ix = Indexer::start(data, &["--commit-interval", "1h"]);
    assert_eq!(
        ix.metric("sawmill_indexer_records_replayed_total"),
        0.0,
        "a clean stop leaves nothing to replay"
    );
    wait_total(&ix, &format!("_src:{src}"), n);
}

// Regression (issue 9, point 8): one client stalled in its request head kept the indexer
// from exiting until that client went away, its listener closed all the while.
#[test]
fn a_client_stalled_in_its_headers_does_not_hold_a_stop() {
    let dir = TempDir::new("stall-head");
    let data = dir.path().join("data");
    let mut ix = Indexer::start(&data, &["--commit-interval", "1h"]);
    let (s, _) = post(&ix.api("/api/v1/ingest"), records("sh", 500), None);
    assert_eq!(s, 200);
    let _stalled = stall_in_headers(&ix.url);
    let log = ix.log.clone();
    let st = stop_within(&mut ix.child, STOP_BOUND, || {
        std::fs::read_to_string(&log).unwrap_or_default()
    });
    assert!(st.success(), "{st:?}");
    assert_committed(&data, "sh", 500);
}

#[test]
fn a_client_stalled_in_its_body_does_not_hold_a_stop() {
    let dir = TempDir::new("stall-body");
    let data = dir.path().join("data");
    let mut ix = Indexer::start(&data, &["--commit-interval", "1h"]);
    let (s, _) = post(&ix.api("/api/v1/ingest"), records("sb", 500), None);
    assert_eq!(s, 200);
    let _ingest = stall_in_body(&ix.url, "/api/v1/ingest");
    let _bulk = stall_in_body(&ix.url, "/_bulk");
    // Its head is read and the handler waits on the body before the stop begins.
    let deadline = Instant::now() + Duration::from_secs(20);
    while ix.metric("sawmill_indexer_ingest_requests_total") < 3.0 {
        assert!(
            Instant::now() < deadline,
            "the stalled requests never arrived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = ix.log.clone();
    let st = stop_within(&mut ix.child, STOP_BOUND, || {
        std::fs::read_to_string(&log).unwrap_or_default()
    });
    assert!(st.success(), "{st:?}");
    assert_committed(&data, "sb", 500);
}

#[test]
fn stalled_clients_do_not_keep_others_from_being_served() {
    let dir = TempDir::new("stall-others");
    let ix = Indexer::start(&dir.path().join("data"), &["--commit-interval", "100ms"]);
    let _stalled: Vec<TcpStream> = (0..20)
        .flat_map(|_| {
            [
                stall_in_headers(&ix.url),
                stall_in_body(&ix.url, "/api/v1/ingest"),
            ]
        })
        .collect();
    let started = Instant::now();
    let (s, v) = post(&ix.api("/api/v1/ingest"), records("so", 100), None);
    assert_eq!((s, &v["accepted"]), (200, &json!(100)), "{v}");
    wait_total(&ix, "_src:so", 100);
    assert_eq!(get_ok(&ix.api("/healthz"))["status"], "ok");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "served, but only after {:?}",
        started.elapsed()
    );
}

#[test]
fn headers_that_never_complete_are_cut_off_after_the_header_timeout() {
    let dir = TempDir::new("head-timeout");
    let ix = Indexer::start(&dir.path().join("data"), &["--header-timeout", "1s"]);
    let mut conn = stall_in_headers(&ix.url);
    let started = Instant::now();
    let mut answer = Vec::new();
    let res = conn.read_to_end(&mut answer);
    let took = started.elapsed();
    assert!(
        res.is_ok() && took < Duration::from_secs(10),
        "the connection was still open {took:?} later ({res:?}); log:\n{}",
        ix.log_text()
    );
    assert!(
        took >= Duration::from_millis(900),
        "closed before the timeout: {took:?}"
    );
    // The server is otherwise unaffected.
    assert_eq!(get_ok(&ix.api("/healthz"))["status"], "ok");
}

// The header timeout must not touch an answer being streamed: a live tail outlives it.
#[test]
fn a_live_tail_outlives_the_header_timeout() {
    use std::io::BufRead;
    let dir = TempDir::new("tail-outlives");
    let ix = Indexer::start(
        &dir.path().join("data"),
        &["--header-timeout", "1s", "--commit-interval", "100ms"],
    );
    let resp = client()
        .get(ix.api("/api/v1/tail?q=service:late"))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut lines = std::io::BufReader::new(resp).lines();
    assert_eq!(lines.next().unwrap().unwrap(), ": connected");
    // Three header timeouts later, the stream still delivers.
    let quiet_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < quiet_until {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (s, _) = post(
        &ix.api("/api/v1/ingest"),
        ndjson(&[json!({"message": "after a while", "service": "late"})]),
        None,
    );
    assert_eq!(s, 200);
    let data = lines
        .map(|l| l.unwrap())
        .find_map(|l| l.strip_prefix("data: ").map(str::to_string))
        .expect("the tail ended without the record");
    let v: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(v["message"], "after a while");
}

#[test]
fn a_body_that_never_completes_is_answered_408_after_the_body_timeout() {
    let dir = TempDir::new("body-timeout");
    let ix = Indexer::start(
        &dir.path().join("data"),
        &["--body-timeout", "1s", "--commit-interval", "100ms"],
    );
    let mut conn = stall_in_body(&ix.url, "/api/v1/ingest");
    let started = Instant::now();
    let mut answer = Vec::new();
    let res = conn.read_to_end(&mut answer);
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&answer);
    assert!(
        res.is_ok() && text.starts_with("HTTP/1.1 408"),
        "after {took:?}: {res:?} {text:?}"
    );
    assert!(text.contains("--body-timeout"), "{text}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(ix.metric("sawmill_indexer_ingest_errors_total"), 1.0);
}

#[test]
fn a_live_tail_does_not_hold_a_stop() {
    let dir = TempDir::new("stop-tail");
    let mut ix = Indexer::start(&dir.path().join("data"), &[]);
    let mut tail = connect(&ix.url);
    tail.write_all(b"GET /api/v1/tail?q=* HTTP/1.1\r\nHost: sawmill\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    tail.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let log = ix.log.clone();
    let st = stop_within(&mut ix.child, Duration::from_secs(8), || {
        std::fs::read_to_string(&log).unwrap_or_default()
    });
    assert!(st.success(), "{st:?}");
}

#[test]
fn the_ui_stops_within_the_bound_whatever_its_clients_do() {
    let dir = TempDir::new("stop-ui");
    let ix = Indexer::start(&dir.path().join("data"), &[]);
    let mut ui = Ui::start(&[&ix.url]);
    let _head = stall_in_headers(&ui.url);
    let _body = stall_in_body(&ui.url, "/");
    let mut tail = connect(&ui.url);
    tail.write_all(b"GET /tail/stream?q=* HTTP/1.1\r\nHost: sawmill\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    tail.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let st = stop_within(&mut ui.child, STOP_BOUND, String::new);
    assert!(st.success(), "{st:?}");
}

#[test]
fn sawmill_up_stops_within_the_bound_whatever_its_clients_do() {
    let dir = TempDir::new("stop-up");
    let data = dir.path().join("data");
    let mut up = Indexer::up(&data, &[]);
    let (s, _) = post(&up.api("/api/v1/ingest"), records("su", 300), None);
    assert_eq!(s, 200);
    let ui = up.ui_url.clone().unwrap();
    let _stalled = [
        stall_in_headers(&up.url),
        stall_in_body(&up.url, "/api/v1/ingest"),
        stall_in_headers(&ui),
    ];
    let log = up.log.clone();
    // The UI and the indexer each get the stop timeout, one after the other.
    let st = stop_within(&mut up.child, STOP_BOUND + Duration::from_secs(10), || {
        std::fs::read_to_string(&log).unwrap_or_default()
    });
    assert!(st.success(), "{st:?}");
    assert_committed(&data, "su", 300);
}

#[test]
fn connections_past_the_limit_wait_until_one_ends() {
    // From review: nothing bounded the number of connections; each costs a task and buffers,
    // and a flood of clients could exhaust memory or file descriptors.
    let dir = TempDir::new("maxconn");
    let ix = Indexer::start_env(dir.path(), &[], &[("SAWMILL_MAX_CONNECTIONS", "2")]);
    let addr = ix.url.trim_start_matches("http://").to_string();
    let ask = |conn: &mut TcpStream| {
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
    };
    let status_line = |conn: &mut TcpStream, wait: Duration| -> Option<String> {
        conn.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0u8; 12];
        match conn.read_exact(&mut buf) {
            Ok(()) => Some(String::from_utf8_lossy(&buf).into_owned()),
            Err(_) => None,
        }
    };
    // Two keep-alive connections, each answered once (so both are surely accepted), then
    // left open and idle: they hold both slots.
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut c = TcpStream::connect(&addr).unwrap();
            ask(&mut c);
            let line = status_line(&mut c, Duration::from_secs(10));
            assert_eq!(line.as_deref(), Some("HTTP/1.1 200"));
            c
        })
        .collect();
    let mut third = TcpStream::connect(&addr).unwrap();
    ask(&mut third);
    assert_eq!(
        status_line(&mut third, Duration::from_secs(1)),
        None,
        "a third connection was served while two held both slots"
    );
    drop(held.remove(0));
    assert_eq!(
        status_line(&mut third, Duration::from_secs(10)).as_deref(),
        Some("HTTP/1.1 200"),
        "the waiting connection was not served once a slot freed"
    );
    assert!(
        ix.log_text().contains("Connection limit reached"),
        "the limit was not logged"
    );
}
