//! `sawmill run`: wraps a process (a container's entrypoint, say), passes its output through
//! unchanged, and ships each line to the local syslog socket, stamped the moment it was
//! read. The child never waits on logging: a missing or full socket costs lines, counted,
//! never time.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::error::{Error, Result};
use sawmill_record::time::write_rfc3339;

/// What to run and where its lines go.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The command and its arguments.
    pub command: Vec<String>,
    /// `service` of the records; the command's name by default.
    pub service: Option<String>,
    /// The syslog socket to write to.
    pub to: PathBuf,
    /// Longer lines are cut (the shipper flags them `truncated`).
    pub max_line_bytes: usize,
    /// At most this many lines per second are shipped (stdout and stderr together, bursts
    /// of one second allowed); the rest of a flood is passed through only, and counted.
    /// 0 ships everything the socket takes.
    pub rate_limit: u32,
}

/// The child's pid, for the signal handler to forward to.
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Runs the command to completion and returns the exit code to leave with: the child's
/// own, or 128 + the signal that ended it.
pub fn run(cfg: RunConfig) -> Result<i32> {
    let Some((program, args)) = cfg.command.split_first() else {
        return Err(Error::Config(
            "nothing to run: give a command after `--`".into(),
        ));
    };
    let service = cfg.service.clone().unwrap_or_else(|| {
        std::path::Path::new(program)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| program.clone())
    });
    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Config(format!("cannot run `{program}`: {e}")))?;
    let pid = child.id() as i32;
    CHILD.store(pid, Relaxed);
    for sig in [
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
    ] {
        // SAFETY: installing a handler that only calls kill(2).
        unsafe { libc::signal(sig, forward as *const () as libc::sighandler_t) };
    }
    let shared = Arc::new(Shared {
        to: cfg.to.clone(),
        host: crate::host::hostname(),
        service,
        pid: pid as u32,
        dropped: AtomicU64::new(0),
        bucket: std::sync::Mutex::new(Bucket {
            tokens: cfg.rate_limit as f64,
            at: Instant::now(),
        }),
        rate_limit: cfg.rate_limit,
        give_up: AtomicBool::new(false),
        max: cfg.max_line_bytes,
    });
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let s1 = shared.clone();
    let t1 = std::thread::spawn(move || pump(out, libc::STDOUT_FILENO, "stdout", 14, &s1));
    let s2 = shared.clone();
    let t2 = std::thread::spawn(move || pump(err, libc::STDERR_FILENO, "stderr", 11, &s2));
    let status = reap_until(pid)?;
    // Output still in the pipes belongs to the child's last words; grandchildren that keep
    // the pipes open are not waited for long.
    let threads = [t1, t2];
    let wait_for = |budget: Duration| {
        let deadline = Instant::now() + budget;
        while threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for(EXIT_BUDGET);
    // Out of time: lines not yet sent are counted as dropped rather than silently lost.
    shared.give_up.store(true, Relaxed);
    // Longer than one send may wait, so a sender caught mid-send still counts the rest.
    wait_for(SEND_WAIT + Duration::from_millis(100));
    let dropped = shared.dropped.load(Relaxed);
    if dropped > 0 {
        eprintln!("sawmill run: {dropped} lines could not be shipped to `{}` (socket missing or full); they were passed through only", cfg.to.display());
    }
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// Waits for the child, reaping any other process too: as PID 1 in a container, orphans
/// are ours to reap.
fn reap_until(pid: i32) -> Result<std::process::ExitStatus> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid out-pointer.
        let r = unsafe { libc::waitpid(-1, &mut status, 0) };
        if r == pid {
            return Ok(std::process::ExitStatus::from_raw(status));
        }
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(Error::io("waitpid", e));
        }
    }
}

struct Shared {
    to: PathBuf,
    host: String,
    service: String,
    pid: u32,
    dropped: AtomicU64,
    /// Set when the exit budget is spent: remaining lines are counted, not sent.
    give_up: AtomicBool,
    bucket: std::sync::Mutex<Bucket>,
    rate_limit: u32,
    max: usize,
}

/// A token bucket: lines that may still be shipped this second.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Shared {
    /// How many of `lines` may be shipped now: all of them, or (in a flood) at least a
    /// send batch's worth, else none. Why a limit at all: a child printing
    /// millions of lines a second would otherwise have the shipper's socket reader, which
    /// runs at normal priority, compete with it for CPU (rsyslog and journald rate-limit
    /// for the same reason).
    fn admit(&self, lines: u64) -> u64 {
        if self.rate_limit == 0 {
            return lines;
        }
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let rate = self.rate_limit as f64;
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(rate);
        b.at = now;
        let n = (b.tokens.floor() as u64).min(lines);
        // In a flood, ship a batch's worth at a time rather than the token or two that
        // trickled in since the last read: each hand-over wakes the sender and then the
        // shipper, and a wake-up costs far more than a line. (A limit under a batch would
        // never reach one, so then the limit is the batch.)
        if n < lines && n < (SEND_BATCH as u64).min(self.rate_limit as u64) {
            return 0;
        }
        b.tokens -= n as f64;
        n
    }
}

/// Reads waiting to be sent; past this many, new lines are dropped (and counted) rather
/// than slow the child.
const PENDING_CHUNKS: usize = 16;

/// How long `run` may outlive its child to ship the last lines.
const EXIT_BUDGET: Duration = Duration::from_secs(2);

/// How long one send may wait for room in the shipper's socket before the rest of its batch
/// is dropped.
const SEND_WAIT: Duration = Duration::from_millis(200);

/// Lines sent per sendmmsg(2), and in a flood admitted per hand-over (see `admit`). Not
/// much more than the receiving socket's queue (`max_dgram_qlen`, 10 by default), which a
/// batch fills before the reader has to make room.
const SEND_BATCH: usize = 16;

/// How often a sender retries a socket that was missing or refused.
const RECONNECT_EVERY: Duration = Duration::from_millis(500);

/// The child's pipes are made this large (the unprivileged maximum), so a burst of output
/// fits in the pipe instead of stopping the child while we copy.
const PIPE_BYTES: libc::c_int = 1 << 20;

/// At most this much is copied per read: larger reads measured no faster, and the buffer
/// is resident memory in every wrapped container.
const READ_BYTES: usize = 256 * 1024;

/// The read buffer's alignment: what the copy wants, whatever the MMU's page size.
const PAGE: usize = 4096;

// One function on purpose (over the usual length): it is the child's critical path, tuned
// by measurement (the benchmark's `sawmill run passthrough`), and reads top to bottom as
// what happens to one read.
/// Copies the child's output through as it comes, one write per read, and hands the
/// complete lines of each read, stamped with the moment they were read, to a sender thread.
fn pump(from: impl Read + AsRawFd, to_fd: RawFd, stream: &'static str, pri: u8, s: &Arc<Shared>) {
    // SAFETY: F_SETPIPE_SZ on the child's pipe and on our own output (when that is a pipe
    // too: a larger one means fewer wake-ups for whoever reads it); failure, e.g. on a
    // terminal, just leaves the size as it was.
    unsafe {
        libc::fcntl(from.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES);
        libc::fcntl(to_fd, libc::F_SETPIPE_SZ, PIPE_BYTES);
    }
    let mut from = from;
    // Our own stdout/stderr, written directly: std's handles add a lock and, for stdout, a
    // line buffer that splits every read into two writes.
    // SAFETY: the descriptor stays open for the process's life; ManuallyDrop never closes it.
    let mut passthrough = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(to_fd) });
    let (tx, rx) = crossbeam_channel::bounded::<(OffsetDateTime, Vec<u8>)>(PENDING_CHUNKS);
    let sender = {
        let s = s.clone();
        std::thread::spawn(move || send_lines(rx, stream, pri, &s))
    };
    // Page-aligned, because the kernel's copy out of the pipe (`rep movsb`) runs at half
    // speed into a misaligned buffer, and malloc's large blocks start 16 bytes into a page:
    // in a plain C copy loop, that alone took the cost to the child from 6 % to 26 %.
    let mut storage = vec![0u8; READ_BYTES + PAGE];
    let start = storage.as_ptr().align_offset(PAGE).min(PAGE);
    let buf = &mut storage[start..start + READ_BYTES];
    let mut partial: Vec<u8> = Vec::new();
    // `lines` is how many the chunk holds, counted already: a full hand-over drops them.
    let hand_over = |read_at: OffsetDateTime, chunk: Vec<u8>, lines: u64| {
        if tx.try_send((read_at, chunk)).is_err() {
            s.dropped.fetch_add(lines, Relaxed);
        }
    };
    loop {
        let n = match from.read(buf) {
            Ok(0) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
            Ok(n) => n,
        };
        let read_at = OffsetDateTime::now_utc();
        // Passthrough first: the child's output must look exactly as without us.
        let _ = passthrough.write_all(&buf[..n]);
        let Some(last_nl) = memchr::memrchr(b'\n', &buf[..n]) else {
            // No line ends here: keep at most one byte past the limit of the line in progress.
            let room = (s.max + 1).saturating_sub(partial.len());
            partial.extend_from_slice(&buf[..n.min(room)]);
            continue;
        };
        // The rate limit is applied here, before any copy: in a flood almost every read is
        // over it, and counting its lines is far cheaper than copying them to be dropped.
        let lines = memchr::memchr_iter(b'\n', &buf[..last_nl]).count() as u64 + 1;
        let admitted = s.admit(lines);
        s.dropped.fetch_add(lines - admitted, Relaxed);
        let mut chunk = std::mem::take(&mut partial);
        if admitted > 0 {
            // Past the limit the newest lines go, as the queue drops the newest.
            let end = if admitted == lines {
                last_nl
            } else {
                memchr::memchr_iter(b'\n', &buf[..last_nl])
                    .nth(admitted as usize - 1)
                    .unwrap_or(last_nl)
            };
            chunk.extend_from_slice(&buf[..end]);
            hand_over(read_at, chunk, admitted);
        }
        let tail = &buf[last_nl + 1..n];
        partial.extend_from_slice(&tail[..tail.len().min(s.max + 1)]);
    }
    if !partial.is_empty() {
        if s.admit(1) == 1 {
            hand_over(OffsetDateTime::now_utc(), std::mem::take(&mut partial), 1);
        } else {
            s.dropped.fetch_add(1, Relaxed);
        }
    }
    drop(tx);
    if to_fd == libc::STDOUT_FILENO {
        // All output has passed through: whoever reads our stdout gets its end of file now,
        // not after the last lines are shipped. (stderr stays open for our own last words.)
        if let Ok(null) = std::fs::File::open("/dev/null") {
            // SAFETY: dup2 onto our own stdout; `null` is closed when dropped.
            unsafe { libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO) };
        }
    }
    let _ = sender.join();
}

/// Sends each line of each chunk as one RFC 5424 datagram. Runs only on otherwise idle CPU:
/// when the machine is busy, the child and its passthrough go first and lines pile up in
/// the bounded hand-over (then are dropped and counted), as the contract says.
fn send_lines(
    rx: crossbeam_channel::Receiver<(OffsetDateTime, Vec<u8>)>,
    stream: &'static str,
    pri: u8,
    s: &Shared,
) {
    crate::priority::run_only_when_idle();
    // Everything but the time stamp is the same on every line.
    let header_start = format!("<{pri}>1 ");
    let header_rest = format!(
        " {} {} {} - [sawmill@32473 stream=\"{stream}\"] ",
        s.host, s.service, s.pid
    );
    let mut sock: Option<UnixDatagram> = None;
    let mut last_try: Option<Instant> = None;
    let mut batch = Datagrams::default();
    let mut next_stamp = OffsetDateTime::UNIX_EPOCH;
    for (read_at, chunk) in rx {
        // Lines read together get consecutive nanoseconds, so their order survives.
        let mut stamp = read_at.max(next_stamp);
        for line in chunk.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if sock.is_none() && last_try.is_none_or(|t| t.elapsed() >= RECONNECT_EVERY) {
                last_try = Some(Instant::now());
                sock = connect(&s.to);
            }
            if s.give_up.load(Relaxed) || sock.is_none() {
                s.dropped.fetch_add(1, Relaxed);
                continue;
            }
            let mut ts = [0u8; 30];
            let n = write_rfc3339(stamp, &mut ts);
            batch.push(&[
                header_start.as_bytes(),
                &ts[..n],
                header_rest.as_bytes(),
                &line[..line.len().min(s.max + 1)],
            ]);
            stamp += time::Duration::nanoseconds(1);
            if batch.len() == SEND_BATCH {
                batch.send(&mut sock, s);
            }
        }
        batch.send(&mut sock, s);
        next_stamp = stamp;
    }
}

/// Datagrams to send together: one system call per batch rather than per line, and fewer
/// wake-ups of the shipper's reader while it is busy.
#[derive(Default)]
struct Datagrams {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    /// Scratch for sendmmsg(2), kept to reuse its allocation; filled only while sending.
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

impl Datagrams {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn push(&mut self, parts: &[&[u8]]) {
        for p in parts {
            self.bytes.extend_from_slice(p);
        }
        self.ends.push(self.bytes.len());
    }

    /// Sends the batch and empties it; every line is either sent or counted. A socket that
    /// stays full for a whole send timeout costs the rest of the batch (it would still be
    /// full, and waiting again per line would stretch past the exit budget); a broken
    /// connection too, and the next line looks for the socket again.
    fn send(&mut self, sock: &mut Option<UnixDatagram>, s: &Shared) {
        let n = self.ends.len();
        if n == 0 {
            return;
        }
        let Some(conn) = sock.as_ref() else {
            s.dropped.fetch_add(n as u64, Relaxed);
            self.clear();
            return;
        };
        let mut start = 0;
        for &end in &self.ends {
            self.iov.push(libc::iovec {
                iov_base: self.bytes[start..end].as_ptr() as *mut libc::c_void,
                iov_len: end - start,
            });
            start = end;
        }
        // Built after every iovec is in place, so the pointers to them stay valid.
        for v in self.iov.iter_mut() {
            // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
            self.msgs.push(m);
        }
        let mut i = 0;
        while i < n {
            if s.give_up.load(Relaxed) {
                s.dropped.fetch_add((n - i) as u64, Relaxed);
                break;
            }
            // SAFETY: msgs[i..] are valid headers whose iovecs point into self.bytes; none
            // of the three is touched until the call returns.
            let r = unsafe {
                libc::sendmmsg(
                    conn.as_raw_fd(),
                    self.msgs[i..].as_mut_ptr(),
                    (n - i) as libc::c_uint,
                    0,
                )
            };
            if r > 0 {
                i += r as usize;
                continue;
            }
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EMSGSIZE | libc::ENOBUFS | libc::ENOMEM) => {
                    // This line alone cannot go; the socket is fine.
                    s.dropped.fetch_add(1, Relaxed);
                    i += 1;
                }
                Some(libc::EAGAIN) => {
                    s.dropped.fetch_add((n - i) as u64, Relaxed);
                    break;
                }
                _ => {
                    // The shipper went away or replaced its socket: find the new one.
                    s.dropped.fetch_add((n - i) as u64, Relaxed);
                    *sock = None;
                    break;
                }
            }
        }
        self.clear();
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        self.msgs.clear();
        self.iov.clear();
    }
}

/// A datagram socket connected to `path`, or None while it is missing. Sends may wait a
/// little: the kernel queues only `max_dgram_qlen` (10) datagrams, so a burst would
/// otherwise be cut while the shipper is merely busy; the sender has its own thread, so
/// the child never waits.
fn connect(path: &std::path::Path) -> Option<UnixDatagram> {
    let sock = UnixDatagram::unbound().ok()?;
    sock.set_write_timeout(Some(SEND_WAIT)).ok()?;
    sock.connect(path).ok()?;
    Some(sock)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited(rate_limit: u32, tokens: f64) -> Shared {
        Shared {
            to: PathBuf::new(),
            host: String::new(),
            service: String::new(),
            pid: 0,
            dropped: AtomicU64::new(0),
            give_up: AtomicBool::new(false),
            bucket: std::sync::Mutex::new(Bucket {
                tokens,
                at: Instant::now(),
            }),
            rate_limit,
            max: 1024,
        }
    }

    #[test]
    fn a_flood_is_admitted_a_batch_at_a_time_and_a_trickle_at_once() {
        let s = limited(20_000, 3.0);
        assert_eq!(s.admit(100), 0, "three tokens are not a batch");
        assert_eq!(s.admit(2), 2, "lines that all fit go at once");
        let s = limited(20_000, SEND_BATCH as f64 + 0.5);
        assert_eq!(s.admit(100), SEND_BATCH as u64);
        assert_eq!(limited(0, 0.0).admit(1_000_000), 1_000_000, "0 is no limit");
    }

    #[test]
    fn a_limit_below_a_batch_still_ships() {
        let s = limited(5, 5.0);
        assert_eq!(s.admit(100), 5);
        assert_eq!(s.admit(100), 0, "the second is spent");
    }
}
