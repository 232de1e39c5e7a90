//! `sawmill run`: wraps a process (a container's entrypoint, say), passes its output through
//! unchanged, and ships each line to the local syslog socket, stamped the moment it was
//! read. The child never waits on logging: a missing or full socket costs lines, counted,
//! never time.

use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::event::rfc3339;

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
    let sock = UnixDatagram::unbound().map_err(|e| Error::io(&cfg.to, e))?;
    sock.set_nonblocking(true)
        .map_err(|e| Error::io(&cfg.to, e))?;
    let shared = Arc::new(Shared {
        sock,
        to: cfg.to.clone(),
        host: crate::shipper::hostname(),
        service,
        pid: pid as u32,
        dropped: AtomicU64::new(0),
        max: cfg.max_line_bytes,
    });
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let s1 = shared.clone();
    let t1 = std::thread::spawn(move || pump(out, std::io::stdout(), "stdout", 14, &s1));
    let s2 = shared.clone();
    let t2 = std::thread::spawn(move || pump(err, std::io::stderr(), "stderr", 11, &s2));
    let status = reap_until(pid)?;
    // Output still in the pipes belongs to the child's last words; grandchildren that keep
    // the pipes open are not waited for long.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    for t in [t1, t2] {
        while !t.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if t.is_finished() {
            let _ = t.join();
        }
    }
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
    sock: UnixDatagram,
    to: PathBuf,
    host: String,
    service: String,
    pid: u32,
    dropped: AtomicU64,
    max: usize,
}

/// Reads waiting to be sent; past this many, new lines are dropped (and counted) rather
/// than slow the child.
const PENDING_CHUNKS: usize = 16;

/// Copies the child's output through as it comes, one write per read, and hands the
/// complete lines of each read, stamped with the moment they were read, to a sender thread.
fn pump(
    mut from: impl Read,
    mut passthrough: impl Write,
    stream: &'static str,
    pri: u8,
    s: &Arc<Shared>,
) {
    let (tx, rx) = crossbeam_channel::bounded::<(OffsetDateTime, Vec<u8>)>(PENDING_CHUNKS);
    let sender = {
        let s = s.clone();
        std::thread::spawn(move || {
            let mut next_stamp = OffsetDateTime::UNIX_EPOCH;
            for (read_at, chunk) in rx {
                // Lines read together get consecutive nanoseconds, so their order survives.
                let mut stamp = read_at.max(next_stamp);
                for line in chunk.split(|b| *b == b'\n') {
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    let mut dgram = format!(
                        "<{pri}>1 {} {} {} {} - [sawmill@32473 stream=\"{stream}\"] ",
                        rfc3339(stamp),
                        s.host,
                        s.service,
                        s.pid
                    )
                    .into_bytes();
                    dgram.extend_from_slice(&line[..line.len().min(s.max + 1)]);
                    if s.sock.send_to(&dgram, &s.to).is_err() {
                        s.dropped.fetch_add(1, Relaxed);
                    }
                    stamp += time::Duration::nanoseconds(1);
                }
                next_stamp = stamp;
            }
        })
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut partial: Vec<u8> = Vec::new();
    let hand_over = |read_at: OffsetDateTime, chunk: Vec<u8>| {
        if let Err(e) = tx.try_send((read_at, chunk)) {
            let lines = e.into_inner().1.iter().filter(|b| **b == b'\n').count() as u64 + 1;
            s.dropped.fetch_add(lines, Relaxed);
        }
    };
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let read_at = OffsetDateTime::now_utc();
        // Passthrough first: the child's output must look exactly as without us.
        let _ = passthrough.write_all(&buf[..n]);
        let _ = passthrough.flush();
        let Some(last_nl) = buf[..n].iter().rposition(|b| *b == b'\n') else {
            // No line ends here: keep at most one byte past the limit of the line in progress.
            let room = (s.max + 1).saturating_sub(partial.len());
            partial.extend_from_slice(&buf[..n.min(room)]);
            continue;
        };
        let mut chunk = std::mem::take(&mut partial);
        chunk.extend_from_slice(&buf[..last_nl]);
        hand_over(read_at, chunk);
        let tail = &buf[last_nl + 1..n];
        partial.extend_from_slice(&tail[..tail.len().min(s.max + 1)]);
    }
    if !partial.is_empty() {
        hand_over(OffsetDateTime::now_utc(), std::mem::take(&mut partial));
    }
    drop(tx);
    let _ = sender.join();
}
