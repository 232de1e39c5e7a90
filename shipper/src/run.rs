//! `sawmill run`: wraps a process (a container's entrypoint, say), passes its output through
//! unchanged, and ships each line to the local syslog socket, stamped the moment it was
//! read, with what the orchestrator says about the task and the run's id; when the process
//! ends, one closing record says how and after how long. The child never waits on logging:
//! a missing or full socket costs lines, counted, never time.

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
    /// `service` of the records; by default what the orchestrator names (Marathon's app
    /// id, else Nomad's job), else the command's name.
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
    let task =
        Task::from_env(|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()));
    let service = cfg
        .service
        .clone()
        .or_else(|| task.service.clone())
        .unwrap_or_else(|| {
            std::path::Path::new(program)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| program.clone())
        });
    let host = task.host.clone().unwrap_or_else(crate::host::hostname);
    let run_id = format!("{:016x}", fastrand::u64(..));
    let origin = |pid: u32| Origin::new(&host, &service, pid, &run_id, &task.fields);
    let started = Instant::now();
    let spawned = Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            // A scheduled job that cannot start (not found, not executable) is the failure
            // most worth finding: it is closed like any run, as ours, with code 127.
            let why = format!("cannot run `{program}`: {e}");
            let ending = Ending {
                code: 127,
                signal: None,
                duration: started.elapsed(),
                not_started: Some(why.clone()),
            };
            let s = Shared::new(&cfg, origin(std::process::id()));
            if !send_closing(&s, &ending) {
                eprintln!(
                    "sawmill run: the closing record ({}) could not be shipped to `{}` (socket missing or full)",
                    ending.message(),
                    cfg.to.display()
                );
            }
            return Err(Error::Config(why));
        }
    };
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
    let shared = Arc::new(Shared::new(&cfg, origin(pid as u32)));
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let s1 = shared.clone();
    let t1 = std::thread::spawn(move || pump(out, libc::STDOUT_FILENO, "stdout", 14, &s1));
    let s2 = shared.clone();
    let t2 = std::thread::spawn(move || pump(err, libc::STDERR_FILENO, "stderr", 11, &s2));
    let status = reap_until(pid)?;
    let ending = Ending::of(status, started.elapsed());
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
    // The lines are sent or counted by now, so the closing record is the run's last.
    let closed = send_closing(&shared, &ending);
    let dropped = shared.dropped.load(Relaxed);
    let to = cfg.to.display();
    match (dropped, closed) {
        (0, true) => {}
        (0, false) => eprintln!(
            "sawmill run: the closing record ({}) could not be shipped to `{to}` (socket missing or full)",
            ending.message()
        ),
        (n, true) => eprintln!("sawmill run: {n} lines could not be shipped to `{to}` (socket missing or full); they were passed through only"),
        (n, false) => eprintln!(
            "sawmill run: {n} lines could not be shipped to `{to}` (socket missing or full); they were passed through only; nor was the closing record ({})",
            ending.message()
        ),
    }
    Ok(ending.code)
}

/// The variables orchestrators set in a task's environment that become record fields:
/// (variable, field). Marathon and Mesos set theirs themselves, Nomad too; Kubernetes'
/// come from the downward API (`fieldRef`), as our manifests set them, and
/// `CONTAINER_NAME`, which the downward API cannot give, is set as a plain value.
const TASK_ENV: [(&str, &str); 11] = [
    ("MARATHON_APP_ID", "marathon_app_id"),
    ("MARATHON_APP_VERSION", "marathon_app_version"),
    ("MESOS_TASK_ID", "mesos_task_id"),
    ("POD_NAME", "k8s_pod"),
    ("POD_NAMESPACE", "k8s_namespace"),
    ("CONTAINER_NAME", "k8s_container"),
    ("NODE_NAME", "k8s_node"),
    ("NOMAD_JOB_NAME", "nomad_job"),
    ("NOMAD_GROUP_NAME", "nomad_group"),
    ("NOMAD_TASK_NAME", "nomad_task"),
    ("NOMAD_ALLOC_ID", "nomad_alloc_id"),
];

/// At most this many bytes of a value go into a record (cut at a character boundary): an
/// id is far shorter, and every line of the run carries them all.
const MAX_PARAM_BYTES: usize = 256;

/// What the orchestrator tells a task about itself, read from the environment once at
/// start and carried by every record of the run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Task {
    /// The `service` the orchestrator names, when no `--service` is given: Marathon's app id
    /// without its leading `/` (`/shop/checkout` is `shop/checkout`), else Nomad's job,
    /// else the Kubernetes container.
    service: Option<String>,
    /// The host the task runs on, rather than the container's own host name: the Mesos
    /// agent (`HOST`, set by Marathon) for a Marathon or Mesos task, else the Kubernetes
    /// node (`NODE_NAME`). Nomad sets no such variable.
    host: Option<String>,
    /// Record fields, in the order of [`TASK_ENV`]; absent and empty variables give none.
    fields: Vec<(&'static str, String)>,
}

impl Task {
    /// Reads the task from `var`, which looks a variable up (the process environment, or a
    /// table in tests).
    fn from_env(var: impl Fn(&str) -> Option<String>) -> Task {
        let get = |name: &str| var(name).filter(|v| !v.is_empty()).map(bounded);
        let fields: Vec<(&'static str, String)> = TASK_ENV
            .iter()
            .filter_map(|(name, field)| Some((*field, get(name)?)))
            .collect();
        let field = |f: &str| {
            fields
                .iter()
                .find(|(name, _)| *name == f)
                .map(|(_, v)| v.clone())
        };
        let marathon = field("marathon_app_id")
            .map(|id| id.trim_start_matches('/').to_string())
            .filter(|id| !id.is_empty());
        let on_mesos = field("marathon_app_id").is_some() || field("mesos_task_id").is_some();
        Task {
            // A pod's container, as the node's shipper names its log file's lines.
            service: marathon
                .or_else(|| field("nomad_job"))
                .or_else(|| field("k8s_container")),
            host: get("HOST")
                .filter(|_| on_mesos)
                .or_else(|| field("k8s_node")),
            fields,
        }
    }
}

/// `v` cut to [`MAX_PARAM_BYTES`] at a character boundary.
fn bounded(mut v: String) -> String {
    sawmill_record::record::cut_str(&mut v, MAX_PARAM_BYTES);
    v
}

/// ` NAME="VALUE"` for each param, values escaped as RFC 5424 §6.3.3 says (`"`, `\` and
/// `]` behind a backslash) after being cut to [`MAX_PARAM_BYTES`].
fn sd_params<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (name, value) in params {
        out.push(' ');
        out.push_str(name);
        out.push_str("=\"");
        for c in bounded(value.to_string()).chars() {
            if matches!(c, '"' | '\\' | ']') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out
}

/// Whether `v` can be a header field of at most `max` bytes: RFC 5424 allows printable
/// ASCII only (HOSTNAME up to 255, APP-NAME up to 48), and `-` alone means none. Nor may
/// it end in `:`, which syslog parsers that also read RFC 3164 (ours, rsyslog's) take for
/// the end of the header.
fn fits_header(v: &str, max: usize) -> bool {
    !v.is_empty()
        && v != "-"
        && !v.ends_with(':')
        && v.len() <= max
        && v.bytes().all(|b| (33..=126).contains(&b))
}

/// `v` with whitespace and control characters as `_`: a record's host and service are one
/// word.
fn one_word(v: &str) -> String {
    v.chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// What every datagram of a run says about where it came from, formatted once.
struct Origin {
    /// HOSTNAME, APP-NAME and PROCID: ` host service pid`.
    header: String,
    /// The structured data params every datagram carries, escaped.
    params: String,
}

impl Origin {
    /// A host or service that cannot be a header field (a Marathon id longer than an
    /// APP-NAME may be, a name that is not ASCII) goes in a param of the same name, which
    /// the shipper's parser prefers.
    fn new(host: &str, service: &str, pid: u32, run_id: &str, task: &[(&str, String)]) -> Origin {
        let (host, service) = (one_word(host), one_word(service));
        let mut params = Vec::new();
        let host = if fits_header(&host, 255) {
            host.as_str()
        } else {
            params.push(("host", host.as_str()));
            "-"
        };
        let app = if fits_header(&service, 48) {
            service.as_str()
        } else {
            params.push(("service", service.as_str()));
            "-"
        };
        params.push(("run_id", run_id));
        params.extend(task.iter().map(|(k, v)| (*k, v.as_str())));
        Origin {
            header: format!(" {host} {app} {pid}"),
            params: sd_params(params),
        }
    }

    /// What follows a datagram's timestamp, up to its message, with `first` (escaped
    /// params) before the common ones.
    fn rest(&self, first: &str) -> String {
        format!("{} - [sawmill@32473{first}{}] ", self.header, self.params)
    }
}

/// How the child ended, for the closing record.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Ending {
    /// The exit code `sawmill run` leaves with: the child's, or 128 + the signal.
    code: i32,
    /// The signal that killed the child.
    signal: Option<i32>,
    /// From start to end of the child.
    duration: Duration,
    /// Why the command could not be started, when it was not.
    not_started: Option<String>,
}

impl Ending {
    fn of(status: std::process::ExitStatus, duration: Duration) -> Ending {
        match (status.code(), status.signal()) {
            (Some(code), _) => Ending {
                code,
                signal: None,
                duration,
                not_started: None,
            },
            (None, sig) => Ending {
                code: 128 + sig.unwrap_or(0),
                signal: sig,
                duration,
                not_started: None,
            },
        }
    }

    /// `exited with code 3 after 1.234s`, `killed by signal SIGKILL (9) after 2m3s`,
    /// `cannot run `job`: No such file or directory (os error 2)`.
    fn message(&self) -> String {
        if let Some(why) = &self.not_started {
            return why.clone();
        }
        let after = human_duration(self.duration);
        match self.signal {
            Some(sig) => format!(
                "killed by signal {} ({sig}) after {after}",
                signal_name(sig)
            ),
            None => format!("exited with code {} after {after}", self.code),
        }
    }

    /// PRI: user.err when the child failed or was killed, else user.info.
    fn pri(&self) -> u8 {
        if self.code != 0 || self.signal.is_some() {
            11
        } else {
            14
        }
    }

    /// The params only the closing record carries, escaped.
    fn params(&self) -> String {
        let code = self.code.to_string();
        let ms = self.duration.as_millis().to_string();
        let signal = self.signal.map(signal_name);
        let mut params = vec![("exit_code", code.as_str())];
        if let Some(name) = &signal {
            params.push(("signal", name));
        }
        params.push(("duration_ms", ms.as_str()));
        sd_params(params)
    }
}

/// A duration as Go prints one, to the millisecond: `0.012s`, `1.5s`, `2m3s`, `1h0m5.25s`.
fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    let (h, m, s, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&s.to_string());
    if frac > 0 {
        let digits = format!("{frac:03}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out.push('s');
    out
}

/// `SIGKILL` for 9: the name Linux gives a signal number.
fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSTKFLT => "SIGSTKFLT",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGCONT => "SIGCONT",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGTSTP => "SIGTSTP",
        libc::SIGTTIN => "SIGTTIN",
        libc::SIGTTOU => "SIGTTOU",
        libc::SIGURG => "SIGURG",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGVTALRM => "SIGVTALRM",
        libc::SIGPROF => "SIGPROF",
        libc::SIGWINCH => "SIGWINCH",
        libc::SIGIO => "SIGIO",
        libc::SIGPWR => "SIGPWR",
        libc::SIGSYS => "SIGSYS",
        _ if sig >= libc::SIGRTMIN() && sig <= libc::SIGRTMAX() => {
            return format!("SIGRTMIN+{}", sig - libc::SIGRTMIN())
        }
        _ => return format!("SIG{sig}"),
    };
    name.to_string()
}

/// Sends the run's closing record: one datagram, under the same send timeout as the lines
/// and outside the rate limit. False when the socket is missing or stayed full.
fn send_closing(s: &Shared, ending: &Ending) -> bool {
    let Some(sock) = connect(&s.to) else {
        return false;
    };
    let mut ts = [0u8; 30];
    let n = write_rfc3339(OffsetDateTime::now_utc(), &mut ts);
    let mut datagram = format!("<{}>1 ", ending.pri()).into_bytes();
    datagram.extend_from_slice(&ts[..n]);
    datagram.extend_from_slice(s.origin.rest(&ending.params()).as_bytes());
    datagram.extend_from_slice(ending.message().as_bytes());
    loop {
        match sock.send(&datagram) {
            Ok(_) => return true,
            // A forwarded signal: sends with a timeout are not restarted (signal(7)).
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
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
    origin: Origin,
    dropped: AtomicU64,
    /// Set when the exit budget is spent: remaining lines are counted, not sent.
    give_up: AtomicBool,
    bucket: std::sync::Mutex<Bucket>,
    rate_limit: u32,
    max: usize,
}

impl Shared {
    fn new(cfg: &RunConfig, origin: Origin) -> Shared {
        Shared {
            to: cfg.to.clone(),
            origin,
            dropped: AtomicU64::new(0),
            bucket: std::sync::Mutex::new(Bucket {
                tokens: cfg.rate_limit as f64,
                at: Instant::now(),
            }),
            rate_limit: cfg.rate_limit,
            give_up: AtomicBool::new(false),
            max: cfg.max_line_bytes,
        }
    }
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
    let header_rest = s.origin.rest(&format!(" stream=\"{stream}\""));
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
            origin: Origin::new("h", "s", 0, "0", &[]),
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

    /// A lookup in `vars`, as the environment would answer.
    fn env<'a>(vars: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<String> + 'a {
        |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn fields(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    #[test]
    fn marathon_names_the_service_and_the_agent_is_the_host() {
        let task = Task::from_env(env(&[
            ("MARATHON_APP_ID", "/shop/checkout"),
            ("MARATHON_APP_VERSION", "2026-11-27T10:00:00.000Z"),
            ("MESOS_TASK_ID", "shop_checkout.6f1e"),
            ("HOST", "agent-7"),
            ("NOMAD_JOB_NAME", "not-this"),
        ]));
        assert_eq!(
            task,
            Task {
                service: Some("shop/checkout".into()),
                host: Some("agent-7".into()),
                fields: fields(&[
                    ("marathon_app_id", "/shop/checkout"),
                    ("marathon_app_version", "2026-11-27T10:00:00.000Z"),
                    ("mesos_task_id", "shop_checkout.6f1e"),
                    ("nomad_job", "not-this"),
                ]),
            }
        );
        // A bare Mesos task (Chronos, Aurora): no service, still the agent as host.
        let task = Task::from_env(env(&[("MESOS_TASK_ID", "t1"), ("HOST", "agent-2")]));
        assert_eq!((task.service, task.host), (None, Some("agent-2".into())));
    }

    #[test]
    fn kubernetes_gives_fields_the_node_as_host_and_the_container_as_service() {
        let task = Task::from_env(env(&[
            ("POD_NAME", "checkout-7d9f-x2x"),
            ("POD_NAMESPACE", "shop"),
            ("CONTAINER_NAME", "app"),
            ("NODE_NAME", "node-3"),
            // Outside Marathon, HOST is just a variable.
            ("HOST", "0.0.0.0"),
        ]));
        assert_eq!(
            task,
            Task {
                service: Some("app".into()),
                host: Some("node-3".into()),
                fields: fields(&[
                    ("k8s_pod", "checkout-7d9f-x2x"),
                    ("k8s_namespace", "shop"),
                    ("k8s_container", "app"),
                    ("k8s_node", "node-3"),
                ]),
            }
        );
    }

    #[test]
    fn nomad_names_the_service_after_marathon() {
        let task = Task::from_env(env(&[
            ("NOMAD_JOB_NAME", "billing"),
            ("NOMAD_GROUP_NAME", "workers"),
            ("NOMAD_TASK_NAME", "invoice"),
            ("NOMAD_ALLOC_ID", "5b1c2d3e-0000-4000-8000-000000000001"),
            ("NOMAD_DC", "dc1"),
        ]));
        assert_eq!(
            task,
            Task {
                service: Some("billing".into()),
                host: None,
                fields: fields(&[
                    ("nomad_job", "billing"),
                    ("nomad_group", "workers"),
                    ("nomad_task", "invoice"),
                    ("nomad_alloc_id", "5b1c2d3e-0000-4000-8000-000000000001"),
                ]),
            }
        );
        assert_eq!(Task::from_env(env(&[])), Task::default(), "not scheduled");
    }

    #[test]
    fn empty_variables_count_as_absent_and_long_ones_are_cut_on_a_character() {
        let long = "é".repeat(200);
        let task = Task::from_env(env(&[
            ("MARATHON_APP_ID", "/"),
            ("MESOS_TASK_ID", ""),
            ("HOST", ""),
            ("POD_NAME", &long),
        ]));
        assert_eq!(task.service, None, "`/` names no app");
        assert_eq!(task.host, None);
        let pod = &task.fields[1];
        assert_eq!(
            (pod.0, pod.1.len()),
            ("k8s_pod", 256),
            "128 two-byte characters"
        );
    }

    #[test]
    fn param_values_are_escaped_as_rfc_5424_says() {
        assert_eq!(
            sd_params([("a", r#"x"y\z]w"#), ("b", ""), ("c", "[ok=1 ]")]),
            r#" a="x\"y\\z\]w" b="" c="[ok=1 \]""#
        );
        let cut = sd_params([("a", "]".repeat(300).as_str())]);
        assert_eq!(
            cut,
            format!(" a=\"{}\"", r"\]".repeat(256)),
            "cut before escaping"
        );
    }

    #[test]
    fn a_service_that_is_no_app_name_goes_in_a_param() {
        let o = Origin::new("agent-7", "shop/checkout", 42, "00ff", &[]);
        assert_eq!(o.header, " agent-7 shop/checkout 42");
        assert_eq!(o.params, r#" run_id="00ff""#);
        let long = "group/".repeat(9) + "app";
        let o = Origin::new("h", &long, 42, "00ff", &[("k8s_pod", "p".into())]);
        assert_eq!(o.header, " h - 42", "APP-NAME is at most 48 characters");
        assert_eq!(
            o.params,
            format!(r#" service="{long}" run_id="00ff" k8s_pod="p""#)
        );
        let o = Origin::new("h ost", "zähler dienst", 1, "1", &[]);
        assert_eq!(o.header, " h_ost - 1", "ASCII, spaces as `_`");
        assert_eq!(o.params, r#" service="zähler_dienst" run_id="1""#);
        let o = Origin::new("h:", "-", 1, "1", &[]);
        assert_eq!(o.header, " - - 1", "not a header's end, nor none");
        assert_eq!(o.params, r#" host="h:" service="-" run_id="1""#);
    }

    /// A line as `send_lines` writes it, read back by the shipper's parser.
    fn shipped(pri: u8, origin: &Origin, first: &str, message: &str) -> crate::event::Event {
        let datagram = format!(
            "<{pri}>1 2026-11-27T10:00:00.123456789Z{}{message}",
            origin.rest(first)
        );
        let received = time::macros::datetime!(2026-11-27 10:00:01 UTC);
        crate::parse::Parser::default()
            .parse(datagram.as_bytes(), received)
            .event
    }

    #[test]
    fn a_line_arrives_with_its_service_host_and_fields() {
        let long = "group/".repeat(9) + "app";
        let task = fields(&[("marathon_app_id", "/a\"b]"), ("mesos_task_id", "t.1")]);
        let o = Origin::new("agent-7", &long, 42, "0123456789abcdef", &task);
        let ev = shipped(11, &o, " stream=\"stderr\"", "boom");
        assert_eq!(
            (
                ev.host.as_deref(),
                ev.service.as_deref(),
                ev.pid,
                ev.stream,
                ev.message.as_str()
            ),
            (
                Some("agent-7"),
                Some(long.as_str()),
                Some(42),
                Some("stderr"),
                "boom"
            )
        );
        assert_eq!(
            serde_json::Value::Object(ev.fields),
            serde_json::json!({
                "run_id": "0123456789abcdef",
                "marathon_app_id": "/a\"b]",
                "mesos_task_id": "t.1",
            })
        );
    }

    #[test]
    fn the_closing_record_says_how_and_when_the_child_ended() {
        let exited = |code: i32, ms: u64| {
            Ending::of(
                std::process::ExitStatus::from_raw(code << 8),
                Duration::from_millis(ms),
            )
        };
        let failed = exited(3, 1234);
        assert_eq!(failed.message(), "exited with code 3 after 1.234s");
        assert_eq!(failed.pri(), 11, "user.err");
        let ok = exited(0, 123_000);
        assert_eq!(ok.message(), "exited with code 0 after 2m3s");
        assert_eq!(ok.pri(), 14, "user.info");
        let killed = Ending::of(
            std::process::ExitStatus::from_raw(libc::SIGKILL),
            Duration::from_millis(20),
        );
        assert_eq!(
            (killed.code, killed.signal),
            (137, Some(9)),
            "128 + the signal, as `sawmill run` exits"
        );
        assert_eq!(killed.message(), "killed by signal SIGKILL (9) after 0.02s");
        assert_eq!(killed.pri(), 11);
        let o = Origin::new("h", "job", 7, "00ff", &[]);
        let ev = shipped(killed.pri(), &o, &killed.params(), &killed.message());
        assert_eq!(ev.severity, Some(sawmill_record::Severity::Err));
        assert_eq!(
            serde_json::Value::Object(ev.fields),
            serde_json::json!({
                "exit_code": 137,
                "signal": "SIGKILL",
                "duration_ms": 20,
                "run_id": "00ff",
            }),
            "the numbers arrive as numbers"
        );
        assert_eq!(ev.message, "killed by signal SIGKILL (9) after 0.02s");
    }

    #[test]
    fn durations_read_as_go_prints_them_to_the_millisecond() {
        for (ms, want) in [
            (0, "0s"),
            (12, "0.012s"),
            (1_500, "1.5s"),
            (59_999, "59.999s"),
            (60_000, "1m0s"),
            (123_000, "2m3s"),
            (3_600_000, "1h0m0s"),
            (3_723_450, "1h2m3.45s"),
            (90_000_000, "25h0m0s"),
        ] {
            assert_eq!(human_duration(Duration::from_millis(ms)), want, "{ms} ms");
        }
        assert_eq!(signal_name(libc::SIGTERM), "SIGTERM");
        assert_eq!(signal_name(libc::SIGRTMIN() + 2), "SIGRTMIN+2");
    }

    use proptest::prelude::*;

    proptest! {
        // 5,000 cases by default (a few seconds), or `SAWMILL_PROPTEST_CASES`.
        #![proptest_config(ProptestConfig {
            cases: std::env::var("SAWMILL_PROPTEST_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(5_000),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Whatever the orchestrator puts in a variable (it cannot hold NUL), the record
        /// carries it as it was, cut to the bound; host and service likewise, as one word.
        #[test]
        fn every_value_survives_escaping_and_parsing(
            values in prop::collection::vec(
                prop_oneof!["[!-~]{0,60}", "[^\\x00]{0,300}"],
                TASK_ENV.len(),
            ),
            // Short printable ASCII fits the header, where `]`, `"`, `=`, `:` and a lone `-`
            // must still come out as they went in; the rest goes in params.
            host in prop_oneof!["[!-~]{1,60}", "[^\\x00]{0,300}"],
            service in prop_oneof!["[!-~]{1,60}", "[^\\x00]{0,300}"],
            message in "[a-z]{1,8}( [a-z]{1,8}){0,3}",
        ) {
            let task: Vec<(&'static str, String)> = TASK_ENV
                .iter()
                .zip(&values)
                .map(|((_, field), v)| (*field, bounded(v.clone())))
                .collect();
            let o = Origin::new(&host, &service, 7, "0123456789abcdef", &task);
            let ev = shipped(14, &o, " stream=\"stdout\"", &message);
            let name = |v: &str| {
                let v = bounded(one_word(v));
                (!v.is_empty()).then_some(v)
            };
            prop_assert_eq!(ev.host, name(&host));
            prop_assert_eq!(ev.service, name(&service));
            prop_assert_eq!(ev.stream, Some("stdout"));
            prop_assert_eq!(ev.message, message);
            for (field, want) in &task {
                prop_assert_eq!(
                    ev.fields.get(*field).and_then(|v| v.as_str()),
                    Some(want.as_str()),
                    "{}", field
                );
            }
            prop_assert_eq!(ev.fields.len(), task.len() + 1, "and run_id");
        }
    }

    #[test]
    fn a_limit_below_a_batch_still_ships() {
        let s = limited(5, 5.0);
        assert_eq!(s.admit(100), 5);
        assert_eq!(s.admit(100), 0, "the second is spent");
    }
}
