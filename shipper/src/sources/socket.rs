//! Syslog sockets: a unix datagram socket like `/dev/log`, read with the sender's
//! kernel-attested credentials, and syslog over UDP, TCP and TLS (RFC 5425). Readers only
//! receive, stamp and enqueue.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::event::{Creds, Item, Source};
use crate::queue::Queue;
use crate::sources::{thread, Context, Running, SourceConfig};

/// Syslog datagrams on a unix socket, as applications write to `/dev/log`.
#[derive(Clone, Debug)]
pub struct UnixConfig {
    /// The socket's path; a socket handed over by systemd (`LISTEN_FDS`) is used instead.
    pub path: PathBuf,
    /// Longer datagrams are cut and flagged.
    pub max_message_bytes: usize,
}

impl SourceConfig for UnixConfig {
    fn spawn(self: Box<Self>, cx: &Context) -> Result<Running> {
        let sock = Arc::new(SyslogSocket::open(&self.path)?);
        let (s, q, stop) = (sock.clone(), cx.queue.clone(), cx.stop.clone());
        let max = self.max_message_bytes;
        let t = thread("sawmill-syslog", move || read_loop(&s, &q, max, &stop))?;
        tracing::info!(path = %self.path.display(), "Listening for syslog datagrams.");
        Ok(Running {
            thread: Some(t),
            socket: Some(sock),
        })
    }
}

/// Syslog over UDP, as network devices send it.
#[derive(Clone, Debug)]
pub struct UdpConfig {
    pub addr: SocketAddr,
    pub max_message_bytes: usize,
}

impl SourceConfig for UdpConfig {
    fn spawn(self: Box<Self>, cx: &Context) -> Result<Running> {
        let sock = std::net::UdpSocket::bind(self.addr)
            .map_err(|e| Error::bind("syslog over udp", self.addr, e))?;
        let (q, stop, max) = (cx.queue.clone(), cx.stop.clone(), self.max_message_bytes);
        let t = thread("sawmill-udp", move || udp_loop(&sock, &q, max, &stop))?;
        Ok(Running {
            thread: Some(t),
            ..Running::default()
        })
    }
}

/// Syslog over TCP, with RFC 6587 framing (octet counting or newlines); with `tls`, over
/// TLS (RFC 5425: octet counting, newlines also taken).
#[derive(Clone)]
pub struct TcpConfig {
    pub addr: SocketAddr,
    pub max_message_bytes: usize,
    /// TLS on every connection (the certificate is the one in use when a peer connects).
    pub tls: Option<Arc<sawmill_http::ServerTls>>,
}

impl SourceConfig for TcpConfig {
    fn spawn(self: Box<Self>, cx: &Context) -> Result<Running> {
        let what = if self.tls.is_some() {
            "syslog over tls"
        } else {
            "syslog over tcp"
        };
        let l =
            std::net::TcpListener::bind(self.addr).map_err(|e| Error::bind(what, self.addr, e))?;
        let (q, stop, max) = (cx.queue.clone(), cx.stop.clone(), self.max_message_bytes);
        let tls = self.tls;
        let t = thread("sawmill-tcp", move || tcp_loop(l, tls, &q, max, &stop))?;
        Ok(Running {
            thread: Some(t),
            ..Running::default()
        })
    }
}

/// The socket, and whether this process made it (and so removes it at a stop).
pub struct SyslogSocket {
    pub sock: UnixDatagram,
    pub path: PathBuf,
    /// Made by this process and not yet removed: removed once only.
    owned: AtomicBool,
    /// The device and inode of the socket file this process made: the path is removed only
    /// while it still names that file, never a newer shipper's socket bound there meanwhile
    /// (a rolling update on a shared volume).
    made: Option<(u64, u64)>,
}

impl SyslogSocket {
    /// Takes the socket systemd handed over (`LISTEN_FDS`), or binds `path` (mode 0666).
    pub fn open(path: &Path) -> Result<SyslogSocket> {
        let sock = match activated_socket() {
            Some(sock) => {
                tracing::info!(path = %path.display(), "Using the syslog socket handed over by the service manager.");
                return finish(SyslogSocket {
                    sock,
                    path: path.to_path_buf(),
                    owned: AtomicBool::new(false),
                    made: None,
                });
            }
            None => {
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    if !meta.file_type().is_socket() {
                        return Err(Error::Config(format!("`{}` exists and is not a socket: remove it or choose another --syslog-socket", path.display())));
                    }
                    // A socket left by a previous run; nobody can be reading it.
                    let _ = std::fs::remove_file(path);
                }
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                }
                UnixDatagram::bind(path)
                    .map_err(|e| Error::bind("syslog datagrams", path.display(), e))?
            }
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
            .map_err(|e| Error::io(path, e))?;
        let made = file_id(path);
        finish(SyslogSocket {
            sock,
            path: path.to_path_buf(),
            owned: AtomicBool::new(true),
            made,
        })
    }

    /// The first step of a stop: a socket this process made takes no more datagrams. Its
    /// path is removed, so no new sender finds it, and it is shut for reading, so a sender
    /// already connected (as `syslog(3)` is) gets `EPIPE` instead of queueing datagrams no
    /// one would read; what the kernel already holds stays readable. A socket handed over
    /// by the service manager is left as it is: it outlives this process, and what senders
    /// queue in it is read by the next instance. True if the socket was closed to senders.
    pub fn stop_accepting(&self) -> bool {
        if !self.owned.swap(false, Relaxed) {
            return false;
        }
        self.remove_path();
        // SAFETY: shutdown on a socket we own; it changes no memory.
        unsafe { libc::shutdown(self.sock.as_raw_fd(), libc::SHUT_RD) };
        true
    }
}

fn finish(s: SyslogSocket) -> Result<SyslogSocket> {
    let fd = s.sock.as_raw_fd();
    let one: libc::c_int = 1;
    let big: libc::c_int = 8 << 20;
    // SAFETY: plain setsockopt calls on a socket we own, with correctly sized values.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PASSCRED,
            &one as *const _ as *const _,
            std::mem::size_of_val(&one) as u32,
        );
        // A large buffer absorbs bursts; FORCE works as root, the plain one otherwise.
        if libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &big as *const _ as *const _,
            4,
        ) != 0
        {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &big as *const _ as *const _,
                4,
            );
        }
    }
    s.sock
        .set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| Error::io(&s.path, e))?;
    Ok(s)
}

/// systemd socket activation: the first passed descriptor, if meant for this process.
fn activated_socket() -> Option<UnixDatagram> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let fds: u32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    if pid != std::process::id() || fds < 1 {
        return None;
    }
    // SAFETY: the service manager passes descriptor 3 to us, open and unowned by anything else.
    Some(unsafe { UnixDatagram::from_raw_fd(3) })
}

impl SyslogSocket {
    /// Removes the socket's path if it still names the file this process made.
    fn remove_path(&self) {
        if self.made.is_some() && file_id(&self.path) == self.made {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The device and inode `path` names, if it exists.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

impl Drop for SyslogSocket {
    fn drop(&mut self) {
        if *self.owned.get_mut() {
            self.remove_path();
        }
    }
}

/// Datagrams taken per `recvmmsg` call. Draining what is queued in one call matters because
/// the kernel holds only `net.unix.max_dgram_qlen` datagrams (10 by default) before
/// senders block: one call frees the whole queue and wakes a blocked sender once.
const RECV_BATCH: usize = 32;
const CONTROL_BYTES: usize = 64;

/// Receives until `stop`, then stops accepting and takes what the kernel still holds:
/// every datagram a sender saw accepted becomes one queue item (or a counted drop).
pub fn read_loop(
    sock: &SyslogSocket,
    queue: &Queue,
    max_message_bytes: usize,
    stop: &Arc<AtomicBool>,
) {
    let fd = sock.sock.as_raw_fd();
    let mut batch = Datagrams::new(max_message_bytes);
    while !stop.load(Relaxed) {
        // MSG_WAITFORONE: block (up to the socket's read timeout) for the first datagram,
        // then take only what is already queued.
        match batch.receive(fd, libc::MSG_WAITFORONE) {
            Ok(n) => batch.enqueue(n, queue),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) => {}
            Err(e) => {
                tracing::error!(error = %e, "Reading the syslog socket failed.");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    let owned = sock.stop_accepting();
    drain(sock, &mut batch, queue, owned);
}

/// How long a stop keeps reading a socket it cannot close to senders (one handed over by
/// the service manager): senders may keep it full, and what is left stays queued in it for
/// the next instance, since the service manager keeps it open.
const DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// How long a TCP peer may be silent before a stop takes it to have nothing more in
/// flight: on loopback, what waits in the peer's send buffer arrives only as we read.
const DRAIN_QUIET: Duration = Duration::from_millis(50);

/// Takes what the kernel holds, without waiting for more. Once `closed` (shut for reading),
/// nothing new can arrive, so this empties the socket for good.
fn drain(sock: &SyslogSocket, batch: &mut Datagrams, queue: &Queue, closed: bool) {
    let fd = sock.sock.as_raw_fd();
    let deadline = std::time::Instant::now() + DRAIN_LIMIT;
    let mut taken = 0;
    while closed || std::time::Instant::now() < deadline {
        match batch.receive(fd, libc::MSG_DONTWAIT) {
            Ok(0) => break,
            Ok(n) => {
                batch.enqueue(n, queue);
                taken += n;
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            // EAGAIN: empty. Anything else: nothing more can be read either.
            Err(_) => break,
        }
    }
    tracing::debug!(datagrams = taken, "Syslog socket drained.");
}

/// Buffers and headers for one `recvmmsg` call of up to `RECV_BATCH` datagrams.
struct Datagrams {
    /// One slot of `size` bytes per datagram.
    bufs: Vec<u8>,
    size: usize,
    control: Vec<u8>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    /// The headers the last call filled: the kernel shrank their control lengths to what
    /// it wrote, and nothing else in a header changes between calls.
    filled: usize,
}

impl Datagrams {
    fn new(max_message_bytes: usize) -> Datagrams {
        // One byte more than allowed, so an oversized datagram is seen as such. Only the
        // pages a datagram touches become resident, so small messages keep this cheap.
        let size = max_message_bytes + 1;
        let mut d = Datagrams {
            bufs: vec![0u8; size * RECV_BATCH],
            size,
            control: vec![0u8; CONTROL_BYTES * RECV_BATCH],
            iovs: Vec::with_capacity(RECV_BATCH),
            // SAFETY: all-zero is a valid mmsghdr (null pointers, zero lengths); filled in below.
            msgs: vec![unsafe { std::mem::zeroed() }; RECV_BATCH],
            filled: 0,
        };
        for i in 0..RECV_BATCH {
            let iov_base = d.bufs[i * size..].as_mut_ptr() as *mut _;
            d.iovs.push(libc::iovec {
                iov_base,
                iov_len: size,
            });
        }
        for (i, m) in d.msgs.iter_mut().enumerate() {
            m.msg_hdr.msg_iov = &mut d.iovs[i];
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_control = d.control[i * CONTROL_BYTES..].as_mut_ptr() as *mut _;
            m.msg_hdr.msg_controllen = CONTROL_BYTES;
        }
        d
    }

    /// One `recvmmsg` call: how many datagrams it took.
    fn receive(&mut self, fd: libc::c_int, flags: libc::c_int) -> std::io::Result<usize> {
        for m in &mut self.msgs[..self.filled] {
            m.msg_hdr.msg_controllen = CONTROL_BYTES;
        }
        self.filled = 0;
        // SAFETY: every header points at live buffers of the stated lengths for the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.msgs.as_mut_ptr(),
                RECV_BATCH as u32,
                flags,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        self.filled = n as usize;
        Ok(self.filled)
    }

    /// Puts the `n` datagrams just received in the queue.
    fn enqueue(&self, n: usize, queue: &Queue) {
        let received = OffsetDateTime::now_utc();
        let size = self.size;
        for (i, m) in self.msgs.iter().take(n).enumerate() {
            // SAFETY: the kernel filled this header's control buffer in the last call.
            let creds = unsafe { creds_of(&m.msg_hdr) };
            let len = (m.msg_len as usize).min(size);
            queue.push(Item::Syslog {
                data: self.bufs[i * size..i * size + len].to_vec(),
                received,
                creds,
                source: Source::SyslogUnix,
            });
        }
    }
}

/// The kernel's stand-in for an id it cannot map (`/proc/sys/kernel/overflowuid` and
/// `overflowgid`, 65534 unless changed): the uid and gid it reports when it has none.
const OVERFLOW_ID: u32 = 65534;

/// The overflow uid and gid this kernel uses, read once.
fn overflow_ids() -> (u32, u32) {
    static IDS: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    *IDS.get_or_init(|| {
        let read = |name: &str| {
            std::fs::read_to_string(format!("/proc/sys/kernel/{name}"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(OVERFLOW_ID)
        };
        (read("overflowuid"), read("overflowgid"))
    })
}

/// SAFETY: `msg` must be a header the kernel just filled.
unsafe fn creds_of(msg: &libc::msghdr) -> Option<Creds> {
    let mut c = libc::CMSG_FIRSTHDR(msg);
    while !c.is_null() {
        if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_CREDENTIALS {
            let u = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::ucred);
            return attested(u);
        }
        c = libc::CMSG_NXTHDR(msg, c);
    }
    None
}

/// The credentials in a `SCM_CREDENTIALS` message, unless the kernel attached none: a
/// datagram queued before `SO_PASSCRED` was on (the one that starts a socket-activated
/// shipper) reads as pid 0 with the overflow uid and gid, a sender that never existed.
fn attested(u: libc::ucred) -> Option<Creds> {
    if u.pid == 0 && (u.uid, u.gid) == overflow_ids() {
        return None;
    }
    Some(Creds {
        pid: u.pid,
        uid: u.uid,
        gid: u.gid,
    })
}

/// Syslog over UDP: one datagram, one message, as network devices send. At a stop, what
/// the kernel already holds is taken too (for at most `DRAIN_LIMIT`: UDP cannot be shut to
/// senders, and what arrives after the socket closes was never acknowledged to anyone).
pub fn udp_loop(
    sock: &std::net::UdpSocket,
    queue: &Queue,
    max_message_bytes: usize,
    stop: &Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; max_message_bytes.max(65_536) + 1];
    let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
    let mut drain_until = None;
    loop {
        if drain_until.is_none() && stop.load(Relaxed) {
            let _ = sock.set_nonblocking(true);
            drain_until = Some(std::time::Instant::now() + DRAIN_LIMIT);
        }
        if drain_until.is_some_and(|d| std::time::Instant::now() >= d) {
            return;
        }
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                let received = OffsetDateTime::now_utc();
                queue.push(Item::Syslog {
                    data: buf[..n].to_vec(),
                    received,
                    creds: None,
                    source: Source::SyslogUdp,
                });
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                if drain_until.is_some() && e.kind() == std::io::ErrorKind::WouldBlock {
                    return;
                }
            }
            Err(e) if drain_until.is_some() => {
                tracing::debug!(error = %e, "Draining syslog over UDP ended.");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "Reading syslog over UDP failed.");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Syslog over TCP (RFC 6587): each connection is read on its own thread. At a stop, the
/// connections the kernel has completed are still accepted (their peers may have sent lines
/// already), then the listener is closed, and every connection queues what its peer sent
/// (see `tcp_conn`) before this returns.
pub fn tcp_loop(
    listener: std::net::TcpListener,
    tls: Option<Arc<sawmill_http::ServerTls>>,
    queue: &Queue,
    max_message_bytes: usize,
    stop: &Arc<AtomicBool>,
) {
    let _ = listener.set_nonblocking(true);
    let mut conns: Vec<std::thread::JoinHandle<()>> = Vec::new();
    let mut stopped_at: Option<std::time::Instant> = None;
    let mut at_limit = false;
    loop {
        let stopping = stop.load(Relaxed);
        if stopping {
            // Peers that keep connecting must not hold the stop past its bound.
            let at = *stopped_at.get_or_insert_with(std::time::Instant::now);
            if at.elapsed() >= DRAIN_LIMIT {
                break;
            }
        }
        match listener.accept() {
            Ok((conn, peer)) => {
                conns.retain(|c| !c.is_finished());
                // One thread per peer: a flood of connections (or of handshakes that never
                // finish) is refused at a bound instead of exhausting threads.
                if conns.len() >= MAX_SYSLOG_CONNECTIONS {
                    if !std::mem::replace(&mut at_limit, true) {
                        tracing::warn!(max = MAX_SYSLOG_CONNECTIONS, "Syslog connection limit reached; new connections are closed until one ends.");
                    }
                    drop(conn);
                    continue;
                }
                at_limit = false;
                let tls = tls.as_ref().map(|t| t.config());
                conns.push(read_tcp_peer(
                    conn,
                    peer,
                    tls,
                    queue,
                    max_message_bytes,
                    stop,
                ));
            }
            Err(_) if stopping => break,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => {
                tracing::error!(error = %e, "Accepting a syslog TCP connection failed.");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    drop(listener);
    for c in conns {
        let _ = c.join();
    }
}

/// Reads one TCP peer on a thread of its own.
fn read_tcp_peer(
    conn: std::net::TcpStream,
    peer: std::net::SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    queue: &Queue,
    max_message_bytes: usize,
    stop: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let (q, stop) = (queue.clone(), stop.clone());
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
    std::thread::spawn(move || {
        let mut peer_stream = Peer {
            conn,
            stop: &stop,
            drain_until: None,
            give_up_at: None,
        };
        let res = match tls {
            None => tcp_conn(peer_stream, &q, max_message_bytes, Source::SyslogTcp),
            Some(config) => handshake(config, &mut peer_stream).and_then(|tls| {
                let stream = rustls::StreamOwned::new(tls, peer_stream);
                tcp_conn(stream, &q, max_message_bytes, Source::SyslogTls)
            }),
        };
        if let Err(e) = res {
            if sawmill_http::tls::is_certificate_refusal(&e) {
                tracing::warn!(%peer, error = %e, "Syslog TLS peer refused: its certificate does not verify.");
            } else {
                tracing::debug!(%peer, error = %e, "Syslog TCP connection ended.");
            }
        }
    })
}

/// Syslog TCP or TLS peers read at once, each on a thread of its own.
const MAX_SYSLOG_CONNECTIONS: usize = 1024;

/// Longest a syslog-over-TLS peer may take over its handshake: one that never finishes it
/// must not hold its thread for good.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Completes the TLS handshake within [`HANDSHAKE_TIMEOUT`].
fn handshake(
    config: Arc<rustls::ServerConfig>,
    peer: &mut Peer<'_>,
) -> std::io::Result<rustls::ServerConnection> {
    let mut tls = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    peer.give_up_at = Some(std::time::Instant::now() + HANDSHAKE_TIMEOUT);
    while tls.is_handshaking() {
        tls.complete_io(peer)?;
    }
    peer.give_up_at = None;
    Ok(tls)
}

/// An octet count (`LEN SP`) longer than this is refused: `usize::MAX` has 20 digits.
const MAX_COUNT_DIGITS: u64 = 21;

/// Reads frames until the peer closes: octet counting (`LEN SP MSG`) when a frame starts
/// with a digit, a newline-terminated line otherwise. At a stop, reads on until the peer
/// has been silent for `DRAIN_QUIET` (for at most `DRAIN_LIMIT`): the frames it sent before
/// the stop are queued, since its writes succeeded; a frame cut short by the stop is not.
fn tcp_conn(
    stream: impl std::io::Read,
    queue: &Queue,
    max: usize,
    source: Source,
) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader, Read};
    let mut r = BufReader::with_capacity(64 * 1024, stream);
    let mut frame = Vec::new();
    loop {
        let first = match r.fill_buf() {
            Ok([]) => return Ok(()),
            Ok(b) => b[0],
            // Only at a stop: the peer went quiet, or the drain limit passed.
            Err(e) if is_timeout(&e) => return Ok(()),
            Err(e) => return Err(e),
        };
        frame.clear();
        if first.is_ascii_digit() {
            // A count has at most 20 digits; reading until a space without a bound let a
            // peer that never sends one fill the memory.
            let mut len = Vec::new();
            (&mut r).take(MAX_COUNT_DIGITS).read_until(b' ', &mut len)?;
            let n: usize = std::str::from_utf8(&len)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| std::io::Error::other("bad octet count"))?;
            // Keep at most one byte past the limit (so it is flagged), skip the rest.
            let keep = n.min(max + 1);
            frame.resize(keep, 0);
            r.read_exact(&mut frame)?;
            std::io::copy(&mut (&mut r).take((n - keep) as u64), &mut std::io::sink())?;
        } else {
            // At most one byte past the limit (so it is flagged) is kept; the rest of an
            // over-long line is skipped, not buffered: a line without end cannot fill memory.
            (&mut r)
                .take(max as u64 + 1)
                .read_until(b'\n', &mut frame)?;
            if frame.last() == Some(&b'\n') {
                frame.pop();
            } else if frame.len() > max {
                r.skip_until(b'\n')?;
            }
        }
        if frame.is_empty() {
            continue;
        }
        let received = OffsetDateTime::now_utc();
        queue.push(Item::Syslog {
            data: frame.clone(),
            received,
            creds: None,
            source,
        });
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// A TCP peer's stream as the frame reader sees it. Until a stop, a read that times out is
/// tried again, so a peer may pause anywhere, even mid-frame. From a stop on, every read
/// checks the clock: reading ends once the peer has been quiet for `DRAIN_QUIET`, or at
/// `DRAIN_LIMIT` whatever it sends, even inside an endless line or a huge octet count
/// (checked only between frames, such a peer held a stop for as long as it kept sending).
struct Peer<'a> {
    conn: std::net::TcpStream,
    stop: &'a AtomicBool,
    drain_until: Option<std::time::Instant>,
    /// While set (a TLS handshake), reads end at this time whatever the peer does.
    give_up_at: Option<std::time::Instant>,
}

impl std::io::Read for Peer<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.drain_until.is_none() && self.stop.load(Relaxed) {
                self.conn.set_read_timeout(Some(DRAIN_QUIET))?;
                self.drain_until = Some(std::time::Instant::now() + DRAIN_LIMIT);
            }
            let now = std::time::Instant::now();
            if self.drain_until.is_some_and(|d| now >= d)
                || self.give_up_at.is_some_and(|d| now >= d)
            {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            match self.conn.read(buf) {
                Err(e) if is_timeout(&e) && self.drain_until.is_none() => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                res => return res,
            }
        }
    }
}

/// Writes go to the peer as they are: TLS writes its handshake and alerts through here.
impl std::io::Write for Peer<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.conn.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.conn.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ucred(pid: i32, uid: u32, gid: u32) -> libc::ucred {
        libc::ucred { pid, uid, gid }
    }

    #[test]
    fn a_datagram_without_credentials_names_no_sender() {
        assert!(attested(ucred(0, OVERFLOW_ID, OVERFLOW_ID)).is_none());
    }

    #[test]
    fn real_senders_keep_their_credentials() {
        // `nobody` is a real user, and pid 0 alone a sender in a pid namespace we cannot see.
        for (pid, uid, gid) in [(42, OVERFLOW_ID, OVERFLOW_ID), (0, 1000, 1000), (1, 0, 0)] {
            let c = attested(ucred(pid, uid, gid)).expect("credentials kept");
            assert_eq!((c.pid, c.uid, c.gid), (pid, uid, gid));
        }
    }
}
