//! A clean stop (SIGTERM) keeps the promise of every datagram the syslog socket accepted,
//! records only the senders the kernel named, and logs words meant for the reader it has.

use std::io::ErrorKind;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

/// How a test client reaches the socket, as real clients do.
#[derive(Clone, Copy)]
enum Client {
    /// `syslog(3)`: connects once, then sends on the connection.
    Connected,
    /// `logger`: names the path in every send.
    ByPath,
}

/// A client that keeps sending numbered datagrams until the socket refuses them, counting
/// every send the kernel accepted.
struct Sender {
    sent: Arc<AtomicU64>,
    thread: JoinHandle<()>,
}

impl Sender {
    fn start(socket: PathBuf, client: Client, tag: &'static str) -> Sender {
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        let thread = std::thread::spawn(move || {
            let s = match client {
                Client::Connected => {
                    let s = UnixDatagram::unbound().unwrap();
                    s.connect(&socket).unwrap();
                    s
                }
                Client::ByPath => UnixDatagram::unbound().unwrap(),
            };
            // Never wait on a full socket: a send that would block is tried again, and only
            // one the kernel took counts.
            s.set_nonblocking(true).unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut n = 0u64;
            loop {
                assert!(Instant::now() < deadline, "the socket never refused a send");
                let line = format!("<13>Nov 27 07:57:02 {tag}: line n={n}");
                let r = match client {
                    Client::Connected => s.send(line.as_bytes()),
                    Client::ByPath => s.send_to(line.as_bytes(), &socket),
                };
                match r {
                    Ok(_) => {
                        n += 1;
                        counter.store(n, Relaxed);
                        // About 2000 a second: enough to keep the socket busy through a stop,
                        // little enough for a shared machine to index.
                        std::thread::sleep(Duration::from_micros(500));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_micros(200))
                    }
                    // The shipper no longer accepts: its socket is gone, shut or closed.
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::ENOENT) | Some(libc::ECONNREFUSED) | Some(libc::EPIPE)
                        ) =>
                    {
                        return
                    }
                    Err(e) => panic!("unexpected send error: {e}"),
                }
            }
        });
        Sender { sent, thread }
    }

    /// Waits for the sender to be refused; the number of datagrams the kernel accepted.
    fn finish(self) -> u64 {
        self.thread.join().unwrap();
        self.sent.load(Relaxed)
    }
}

/// The number of records matching `q` once it stops changing (the indexer commits every
/// 50 ms; a second without change means everything acknowledged is searchable).
fn settled_total(ix: &Indexer, q: &str) -> u64 {
    let url = ix.api(&format!("/api/v1/search?q={}&limit=0", urlencode(q)));
    let mut last = u64::MAX;
    let mut since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let n = get_ok(&url)["total"].as_u64().unwrap();
        if n != last {
            last = n;
            since = Instant::now();
        } else if since.elapsed() > Duration::from_secs(1) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    last
}

fn wait_until_some(ix: &Indexer, q: &str) {
    let url = ix.api(&format!("/api/v1/search?q={}&limit=0", urlencode(q)));
    let deadline = Instant::now() + Duration::from_secs(60);
    while get_ok(&url)["total"].as_u64().unwrap() == 0 {
        assert!(
            Instant::now() < deadline,
            "nothing from {q} arrived; indexer log:\n{}",
            ix.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends through a SIGTERM of a shipper started with `args`; asserts that every accepted
/// datagram was indexed or reported dropped, and returns how many were reported dropped.
fn every_accepted_datagram_is_delivered_or_counted(name: &str, args: &[&str]) -> u64 {
    let dir = TempDir::new(name);
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "50ms"]);
    let sh = Shipper::start(dir.path(), &[&ix.url], args);
    let socket = sh.socket.clone();
    let senders = [
        Sender::start(socket.clone(), Client::Connected, "connected"),
        Sender::start(socket.clone(), Client::ByPath, "bypath"),
    ];
    wait_until_some(&ix, "service:connected");
    wait_until_some(&ix, "service:bypath");
    let log = sh.log.clone();
    sh.terminate();
    let sent: u64 = senders.into_iter().map(Sender::finish).sum();
    let indexed = settled_total(&ix, "service:connected OR service:bypath");
    let dropped = reported_dropped(&ix, None);
    assert_eq!(
        indexed + dropped,
        sent,
        "{sent} datagrams accepted by the socket, {indexed} indexed and {dropped} reported \
         dropped ({} unaccounted for); shipper log:\n{}",
        sent as i64 - (indexed + dropped) as i64,
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        !socket.exists(),
        "the socket the shipper made is removed by a clean stop"
    );
    dropped
}

/// Issue 10, B1: the reader stopped without taking what the kernel held, and the socket stayed
/// in place (accepting) through the drain: 12 of 875 lines were accepted and then lost.
#[test]
fn a_stop_delivers_every_datagram_the_socket_accepted() {
    every_accepted_datagram_is_delivered_or_counted("stop-delivers", &[]);
}

/// Issue 10, B1: with a queue too small for the flow, what the stop cannot queue is dropped,
/// and each such drop is counted and reported, including the ones of the last moments.
#[test]
fn a_stop_counts_every_accepted_datagram_it_cannot_deliver() {
    let dropped =
        every_accepted_datagram_is_delivered_or_counted("stop-counts", &["--queue-records", "2"]);
    assert!(
        dropped > 0,
        "a two-record queue fed 4000 datagrams a second drops some"
    );
}

fn only_hit(ix: &Indexer, q: &str) -> Value {
    wait_total(ix, q, 1)["hits"][0].clone()
}

/// Issue 10, B3: the datagram that starts a socket-activated shipper was queued before
/// `SO_PASSCRED` was on, so the kernel named no sender; it was stored as `_pid 0, _uid
/// 65534, _gid 65534`, a sender that does not exist.
#[test]
fn a_datagram_sent_before_credentials_were_asked_for_names_no_sender() {
    let dir = TempDir::new("no-creds");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "50ms"]);
    let sock = dir.path().join("dev-log");
    let mut child = socket_activated_shipper(dir.path(), &ix, &sock);
    let client = UnixDatagram::unbound().unwrap();
    // Nobody reads the socket yet: this datagram starts the shipper.
    client
        .send_to(b"<13>Nov 27 07:57:02 activated: first", &sock)
        .unwrap();
    let first = only_hit(&ix, "service:activated AND first");
    client
        .send_to(b"<13>Nov 27 07:57:03 activated: second", &sock)
        .unwrap();
    let second = only_hit(&ix, "service:activated AND second");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    for field in ["_pid", "_uid", "_gid"] {
        assert!(
            first["fields"].get(field).is_none(),
            "no credentials came with the first datagram, yet it names a sender: {first}"
        );
    }
    assert!(first.get("pid").is_none(), "{first}");
    assert_eq!(
        second["fields"]["_pid"].as_u64(),
        Some(std::process::id() as u64),
        "later datagrams carry the sender the kernel names: {second}"
    );
    assert_eq!(second["fields"]["_uid"], unsafe { libc::getuid() });
    assert!(
        sock.exists(),
        "a socket handed in belongs to the service manager and is never unlinked"
    );
}

/// An indexer started and stopped with its stderr on a pipe: everything it wrote there.
fn indexer_stderr_through_a_pipe(data: &Path) -> String {
    use std::io::{BufRead, Read};
    let mut child = sawmill()
        .args(["indexer", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .env("SAWMILL_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(
        first.starts_with("sawmill indexer listening on"),
        "{first:?}"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut text = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let _ = child.wait();
    text
}

/// Issue 10, B4: logs written to a file or a pipe carried ANSI colour codes, and the
/// shipper's stop message spoke of committing, which is what an indexer does.
#[test]
fn logs_off_a_terminal_carry_no_colour_and_the_stop_says_what_the_shipper_does() {
    let dir = TempDir::new("plain-logs");
    let indexer_log = indexer_stderr_through_a_pipe(&dir.path().join("piped"));
    let ix = Indexer::start(&dir.path().join("ix"), &[]);
    // Its stderr is a file.
    let sh = Shipper::start(dir.path(), &[&ix.url], &[]);
    let log = sh.log.clone();
    sh.terminate();
    let shipper_log = std::fs::read_to_string(&log).unwrap();
    for (who, text) in [
        ("shipper (to a file)", &shipper_log),
        ("indexer (to a pipe)", &indexer_log),
    ] {
        assert!(
            !text.contains("\x1b["),
            "the {who} writes to no terminal, so no colour codes:\n{text:?}"
        );
    }
    assert!(
        shipper_log.contains("Stopping: no longer accepting"),
        "the shipper says what its stop does:\n{shipper_log}"
    );
    assert!(
        !shipper_log.contains("committing what was acknowledged"),
        "{shipper_log}"
    );
    assert!(
        indexer_log.contains("committing what was acknowledged")
            && indexer_log.contains("Stopped."),
        "{indexer_log}"
    );
}

/// An indexer's start and stop on a terminal (a pty from `script`), with `NO_COLOR` as given:
/// everything it wrote there.
fn indexer_output_on_a_terminal(dir: &Path, no_color: Option<&str>) -> String {
    use std::io::{BufRead, Read};
    // The shell prints its pid, which `exec` hands on to sawmill.
    let cmd = format!(
        "echo pid=$$; exec {} indexer --listen 127.0.0.1:0 --data {}",
        env!("CARGO_BIN_EXE_sawmill"),
        dir.display()
    );
    let mut script = std::process::Command::new("script");
    script
        .args(["-qefc", &cmd, "/dev/null"])
        .env("SAWMILL_LOG", "info")
        .env_remove("NO_COLOR")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped());
    if let Some(v) = no_color {
        script.env("NO_COLOR", v);
    }
    let mut child = script.spawn().expect("script (util-linux) is installed");
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    let mut pid = None;
    // The address is printed once the stop signals are caught.
    while !text.contains("sawmill indexer listening on") {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            panic!("the indexer ended before it listened: {text:?}");
        }
        if let Some(p) = line.trim().strip_prefix("pid=") {
            pid = p.parse::<i32>().ok();
        }
        text.push_str(&line);
    }
    let pid = pid.expect("the shell printed its pid");
    unsafe { libc::kill(pid, libc::SIGTERM) };
    out.read_to_string(&mut text).unwrap();
    let _ = child.wait();
    text
}

/// Colour stays for people at a terminal, unless `NO_COLOR` says otherwise.
#[test]
fn a_terminal_gets_colour_unless_no_color_is_set() {
    let dir = TempDir::new("tty-logs");
    let coloured = indexer_output_on_a_terminal(&dir.path().join("a"), None);
    assert!(
        coloured.contains("Stopped.") && coloured.contains("\x1b["),
        "a terminal gets colour: {coloured:?}"
    );
    let plain = indexer_output_on_a_terminal(&dir.path().join("b"), Some("1"));
    assert!(
        plain.contains("Stopped.") && !plain.contains("\x1b["),
        "NO_COLOR=1 turns colour off: {plain:?}"
    );
}

/// Issue 10, B1: what a stop cannot deliver within its bound is counted, not silently
/// left behind (before, the shipper exited without a word about it).
#[test]
fn a_stop_that_cannot_deliver_counts_what_it_leaves_behind() {
    let dir = TempDir::new("stop-undelivered");
    let ix = Indexer::start(&dir.path().join("ix"), &[]);
    let sh = Shipper::start(dir.path(), &[&ix.url], &[]);
    ix.kill9();
    for n in 0..3 {
        sh.send(format!("<13>Nov 27 07:57:02 orphan: line {n}").as_bytes());
    }
    let log = sh.log.clone();
    sh.terminate();
    let text = std::fs::read_to_string(log).unwrap();
    assert!(
        text.lines().any(|l| l.contains("ERROR")
            && l.contains("Stopped before the replica acknowledged these records")
            && l.contains("records=3")),
        "the three records no replica took are counted in the log:\n{text}"
    );
}

/// Writes `LINES` lines to the shipper's syslog TCP listener, then stops the shipper at once;
/// every line must be indexed or reported dropped. With `accepted_first`, the connection is
/// known to have been accepted (a first line arrived) before the burst.
fn tcp_lines_written_before_a_stop_are_kept(name: &str, accepted_first: bool) {
    use std::io::Write;
    const LINES: u64 = 20_000;
    let dir = TempDir::new(name);
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "50ms"]);
    let addr = free_addr();
    let sh = Shipper::start(
        dir.path(),
        &[&ix.url],
        &["--syslog-tcp", &addr, "--queue-records", "100000"],
    );
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    let mut sent = 0;
    if accepted_first {
        conn.write_all(b"<13>Nov 27 07:57:01 tcpstop: ready\n")
            .unwrap();
        wait_total(&ix, "service:tcpstop", 1);
        sent += 1;
    }
    let mut body = Vec::new();
    for n in 0..LINES {
        writeln!(body, "<13>Nov 27 07:57:02 tcpstop: line n={n}").unwrap();
    }
    conn.write_all(&body).unwrap();
    sent += LINES;
    let log = sh.log.clone();
    sh.terminate();
    let indexed = settled_total(&ix, "service:tcpstop");
    let dropped = reported_dropped(&ix, None);
    assert_eq!(
        indexed + dropped,
        sent,
        "{sent} lines written before the stop, {indexed} indexed, {dropped} reported dropped; \
         shipper log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    drop(conn);
}

/// Before, each connection ended at the stop flag, leaving what the kernel held for it
/// unread.
#[test]
fn a_stop_reads_what_a_connected_tcp_peer_already_sent() {
    tcp_lines_written_before_a_stop_are_kept("stop-tcp-accepted", true);
}

/// Before, a connection the kernel had completed but the shipper not yet accepted was reset
/// at the stop, with the lines its peer had written.
#[test]
fn a_stop_reads_what_a_tcp_peer_not_yet_accepted_already_sent() {
    tcp_lines_written_before_a_stop_are_kept("stop-tcp-backlog", false);
}

/// A peer that streams one endless line (or a huge octet count) must not hold a stop: from
/// the stop on, reading a connection ends at the drain limit whatever the peer sends. Before,
/// the limit was checked only between frames, and such a peer held the stop for as long as
/// it kept sending. What a well-behaved peer sent before the stop is still kept.
#[test]
fn a_peer_streaming_an_endless_line_does_not_hold_a_stop() {
    use std::io::Write;
    let dir = TempDir::new("stop-tcp-endless");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "50ms"]);
    let addr = free_addr();
    let sh = Shipper::start(dir.path(), &[&ix.url], &["--syslog-tcp", &addr]);
    let mut polite = std::net::TcpStream::connect(&addr).unwrap();
    polite
        .write_all(b"<13>Nov 27 07:57:02 endless: a whole line\n")
        .unwrap();
    wait_total(&ix, "service:endless", 1);
    let streaming = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writers: Vec<JoinHandle<()>> = [&b"<13>Nov 27 07:57:02 endless: "[..], b"99999999999 "]
        .into_iter()
        .map(|start| {
            let mut conn = std::net::TcpStream::connect(&addr).unwrap();
            conn.set_write_timeout(Some(Duration::from_secs(1)))
                .unwrap();
            let go = streaming.clone();
            std::thread::spawn(move || {
                let chunk = vec![b'x'; 64 << 10];
                if conn.write_all(start).is_err() {
                    return;
                }
                while go.load(Relaxed) && conn.write_all(&chunk).is_ok() {}
            })
        })
        .collect();
    // Both peers are mid-frame and sending.
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    sh.terminate();
    let took = started.elapsed();
    streaming.store(false, Relaxed);
    for w in writers {
        let _ = w.join();
    }
    // The drain limit (1 s) plus delivery of what is queued (a few ms here).
    assert!(
        took < Duration::from_secs(8),
        "the stop took {took:?} while two peers kept sending one endless frame each"
    );
    assert_eq!(settled_total(&ix, "service:endless"), 1);
}

/// In a rolling update on a shared volume the new shipper binds the socket path before the
/// old one stops: the old one's stop must leave the new socket in place. Before, a stop
/// removed whatever the path named, and clients got ENOENT until the next restart.
#[test]
fn a_stop_leaves_a_newer_shippers_socket_in_place() {
    let dir = TempDir::new("stop-rolling");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "50ms"]);
    let old = Shipper::start(dir.path(), &[&ix.url], &[]);
    use std::os::unix::fs::MetadataExt;
    let socket = old.socket.clone();
    let new_dir = dir.path().join("new");
    std::fs::create_dir_all(&new_dir).unwrap();
    let new_log = new_dir.join("shipper.log");
    let mut new = sawmill()
        .args(["shipper", "--indexer", &ix.url, "--syslog-socket"])
        .arg(&socket)
        .arg("--state")
        .arg(new_dir.join("state"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&new_log).unwrap())
        .spawn()
        .unwrap();
    // The new shipper has bound the path once it names another file than the old socket.
    let inode = |p: &Path| std::fs::metadata(p).map(|m| m.ino()).ok();
    let old_inode = inode(&socket);
    assert!(old_inode.is_some());
    let deadline = Instant::now() + Duration::from_secs(30);
    while inode(&socket) == old_inode || inode(&socket).is_none() {
        assert!(
            Instant::now() < deadline,
            "the new shipper never bound the path"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    old.terminate();
    let after = UnixDatagram::unbound()
        .unwrap()
        .send_to(b"<13>Nov 27 07:57:02 rolling: after the old stop", &socket);
    unsafe { libc::kill(new.id() as i32, libc::SIGTERM) };
    let _ = new.wait();
    assert!(
        after.is_ok(),
        "the old shipper's stop removed the new shipper's socket: {after:?}"
    );
    wait_total(&ix, "service:rolling AND after", 1);
}
