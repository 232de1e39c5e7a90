//! The harness: temporary directories, the real `sawmill` binary as a child process, HTTP.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "sawmill-e2e-{name}-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn sawmill() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sawmill"))
}

/// `sawmill` in a mount namespace of its own whose `/etc/hosts` is `hosts`: DNS discovery
/// without a DNS server (several lines for one name are several replicas). The namespace's
/// mounts are private, so nothing outside it sees the file, and it ends with the process.
pub fn sawmill_with_hosts(hosts: &Path) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$0" /etc/hosts && exec "$@""#)
        .arg(hosts)
        .arg(env!("CARGO_BIN_EXE_sawmill"));
    cmd
}

/// Writes a hosts file at `path`: `localhost`, then one line per (address, name).
pub fn hosts_file(path: &Path, entries: &[(&str, &str)]) {
    let mut text = String::from("127.0.0.1 localhost\n::1 localhost\n");
    for (addr, name) in entries {
        text.push_str(&format!("{addr} {name}\n"));
    }
    std::fs::write(path, text).unwrap();
}

/// A running `sawmill indexer` on a kernel-chosen loopback port.
pub struct Indexer {
    pub child: Child,
    pub url: String,
    pub log: PathBuf,
    /// The web UI's URL, when started by `sawmill up`.
    pub ui_url: Option<String>,
}

impl Indexer {
    pub fn start(data: &Path, args: &[&str]) -> Indexer {
        Indexer::run("indexer", "127.0.0.1:0", data, args)
    }

    /// On a fixed address, so that a restarted indexer is found where it was.
    pub fn start_at(listen: &str, data: &Path, args: &[&str]) -> Indexer {
        Indexer::run("indexer", listen, data, args)
    }

    /// `sawmill up`, which starts with the same line as `sawmill indexer`.
    pub fn up(data: &Path, args: &[&str]) -> Indexer {
        Indexer::run("up", "127.0.0.1:0", data, args)
    }

    /// With settings given as environment variables (`SAWMILL_...`), as a container would.
    pub fn start_env(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Indexer {
        Indexer::run_env("indexer", "127.0.0.1:0", data, args, env)
    }

    fn run(command: &str, listen: &str, data: &Path, args: &[&str]) -> Indexer {
        Indexer::run_env(command, listen, data, args, &[])
    }

    /// On `listen`, seeing `hosts` as its `/etc/hosts` (for `--peer dns+http://…`).
    // Issue 11's helpers: each part's tests use some of them.
    #[allow(dead_code)]
    pub fn start_in(hosts: &Path, listen: &str, data: &Path, args: &[&str]) -> Indexer {
        Indexer::run_cmd(
            sawmill_with_hosts(hosts),
            "indexer",
            listen,
            data,
            args,
            &[],
        )
    }

    fn run_env(
        command: &str,
        listen: &str,
        data: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Indexer {
        Indexer::run_cmd(sawmill(), command, listen, data, args, env)
    }

    fn run_cmd(
        mut cmd: Command,
        command: &str,
        listen: &str,
        data: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Indexer {
        let log = data.with_extension(format!("log{}", fastrand::u32(..)));
        cmd.envs(env.iter().copied());
        cmd.args([command, "--listen", listen, "--data"]).arg(data);
        if command == "up" {
            // `up` also serves the UI; a kernel-chosen port lets tests run side by side.
            cmd.args(["--ui-listen", "127.0.0.1:0"]);
        }
        let child = cmd
            .args(args)
            .env("SAWMILL_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start sawmill");
        Indexer::from_child(child, log, command == "up")
    }

    fn from_child(mut child: Child, log: PathBuf, with_ui: bool) -> Indexer {
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().and_then(|l| l.ok()).unwrap_or_default();
        let Some(url) = first.strip_prefix("sawmill indexer listening on ") else {
            let _ = child.kill();
            panic!(
                "indexer did not start; stdout: {first:?}; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let url = url.trim().to_string();
        let ui_url = with_ui.then(|| {
            let line = lines.next().and_then(|l| l.ok()).unwrap_or_default();
            match line.strip_prefix("sawmill ui listening on ") {
                Some(u) => u.trim().to_string(),
                None => panic!("`sawmill up` printed no UI address; second line: {line:?}"),
            }
        });
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Indexer {
            child,
            url,
            log,
            ui_url,
        }
    }

    pub fn api(&self, path_and_query: &str) -> String {
        format!("{}{}", self.url, path_and_query)
    }

    /// `kill -9`: no chance to flush or commit anything.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "indexer did not stop within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A Prometheus counter or gauge value.
    pub fn metric(&self, name: &str) -> f64 {
        metric_at(&self.api("/metrics"), name)
    }

    /// Whether the process is still running (not exited, not a zombie).
    pub fn child_alive(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .ok()
            .and_then(|s| {
                // The state follows the parenthesised command name.
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.trim_start().chars().next())
            })
            .is_some_and(|state| state != 'Z' && state != 'X')
    }

    /// Peak resident memory in KiB, from the kernel.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    /// Resident memory now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// Makes the kernel's peak (`VmHWM`) start again from the present resident size, so a
    /// test can measure the peak of one phase.
    pub fn reset_peak_rss(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5").unwrap();
    }

    fn status_kib(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// POSTs a body, returning the status and the JSON answer.
pub fn post(url: &str, body: Vec<u8>, encoding: Option<&str>) -> (u16, Value) {
    let mut req = client().post(url).body(body);
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    let resp = req.send().expect("request sent");
    let status = resp.status().as_u16();
    let text = resp.text().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

pub fn ndjson(records: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        serde_json::to_writer(&mut out, r).unwrap();
        out.push(b'\n');
    }
    out
}

pub fn get(url: &str) -> (u16, Value) {
    let resp = client().get(url).send().expect("request sent");
    let status = resp.status().as_u16();
    let text = resp.text().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// GETs JSON that must come back 200.
pub fn get_ok(url: &str) -> Value {
    let (status, v) = get(url);
    assert_eq!(status, 200, "GET {url} answered {status}: {v}");
    v
}

/// Waits until a search for `q` reports `n` hits in all, and returns the answer.
pub fn wait_total(ix: &Indexer, q: &str, n: u64) -> Value {
    let url = ix.api(&format!("/api/v1/search?q={}&limit=10000", urlencode(q)));
    let mut last = Value::Null;
    // Generous: the shipper's batcher runs in the SCHED_IDLE class and gets no CPU while the
    // other test thread keeps both cores busy (CI once stalled one for over 20 s).
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        last = get_ok(&url);
        if last["total"].as_u64() == Some(n) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "search {q:?} never reached total {n}; last answer total {}; indexer log:\n{}",
        last["total"],
        ix.log_text()
    );
}

/// Percent-encodes a query value or path segment, as the UI does.
pub use sawmill_ui::enc as urlencode;

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// POSTs over a bare socket and returns the status: a server may answer 413 before reading
/// a body it will refuse, which an HTTP client library reports as a broken connection.
/// `chunked` sends the body without a length, as a stream.
pub fn raw_post_status(url: &str, path: &str, body: &[u8], chunked: bool) -> u16 {
    use std::io::Read;
    let addr = url.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let length = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {}", body.len())
    };
    let head =
        format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\n{length}\r\nConnection: close\r\n\r\n");
    conn.write_all(head.as_bytes()).unwrap();
    // Writes may fail once the server has answered and closed: the answer is what counts.
    if chunked {
        for chunk in body.chunks(64 * 1024) {
            if conn
                .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .and_then(|_| conn.write_all(chunk))
                .and_then(|_| conn.write_all(b"\r\n"))
                .is_err()
            {
                break;
            }
        }
        let _ = conn.write_all(b"0\r\n\r\n");
    } else {
        let _ = conn.write_all(body);
    }
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"))
}

/// The port of a free loopback address: replicas listen on it at 127.0.0.2, .3, …
pub fn free_port() -> String {
    free_addr().rsplit_once(':').unwrap().1.to_string()
}

/// The (`_src`, `_seq`) of every record matching `q` that has them; fails if one is held
/// twice.
pub fn seq_keys(ix: &Indexer, q: &str) -> std::collections::BTreeSet<(String, u64)> {
    let keyed: Vec<(String, u64)> = all_hits(ix, q)
        .iter()
        .filter_map(|h| Some((h["_src"].as_str()?.to_string(), h["_seq"].as_u64()?)))
        .collect();
    let n = keyed.len();
    let keys: std::collections::BTreeSet<(String, u64)> = keyed.into_iter().collect();
    assert_eq!(keys.len(), n, "a record is stored twice");
    keys
}

/// Waits until `f` holds, or fails with what `f` last saw.
pub fn eventually(what: &str, secs: u64, mut f: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match f() {
            Ok(()) => return,
            Err(why) if Instant::now() >= deadline => panic!("{what}: {why}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// A loopback address nothing listens on right now.
pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// A running `sawmill shipper` with its syslog socket and metrics.
pub struct Shipper {
    pub child: Child,
    pub socket: PathBuf,
    pub metrics_url: String,
    pub log: PathBuf,
}

impl Shipper {
    pub fn start(dir: &Path, indexers: &[&str], args: &[&str]) -> Shipper {
        Shipper::start_env(dir, indexers, args, &[])
    }

    /// With environment variables set, as a container's configuration does.
    pub fn start_env(
        dir: &Path,
        indexers: &[&str],
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Shipper {
        Shipper::start_cmd(sawmill(), dir, indexers, args, env)
    }

    /// Seeing `hosts` as its `/etc/hosts`, for `--indexer dns+http://…`.
    #[allow(dead_code)]
    pub fn start_in(hosts: &Path, dir: &Path, indexers: &[&str], args: &[&str]) -> Shipper {
        Shipper::start_cmd(sawmill_with_hosts(hosts), dir, indexers, args, &[])
    }

    fn start_cmd(
        mut cmd: Command,
        dir: &Path,
        indexers: &[&str],
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Shipper {
        let socket = dir.join("dev-log");
        let log = dir.join(format!("shipper-{}.log", fastrand::u32(..)));
        cmd.arg("shipper");
        for i in indexers {
            cmd.args(["--indexer", i]);
        }
        let mut child = cmd
            .arg("--state")
            .arg(dir.join("state"))
            .arg("--syslog-socket")
            .arg(&socket)
            .args(["--metrics", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start sawmill shipper");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut metrics_url = String::new();
        for _ in 0..2 {
            let line = lines.next().and_then(|l| l.ok()).unwrap_or_default();
            if let Some(u) = line.strip_prefix("sawmill shipper metrics on ") {
                metrics_url = u.trim().to_string();
            }
        }
        if metrics_url.is_empty() {
            let _ = child.kill();
            panic!(
                "shipper did not start; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::spawn(move || for _ in lines {});
        Shipper {
            child,
            socket,
            metrics_url,
            log,
        }
    }

    /// Sends one datagram, as a client of `/dev/log` does.
    pub fn send(&self, datagram: &[u8]) {
        let s = std::os::unix::net::UnixDatagram::unbound().unwrap();
        s.send_to(datagram, &self.socket).unwrap();
    }

    /// A metric's value; `name` may carry labels: `x_total{source="syslog_unix"}`.
    pub fn metric(&self, name: &str) -> f64 {
        metric_at(&self.metrics_url, name)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM: the shipper drains what it holds, then exits.
    pub fn terminate(mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "shipper did not stop within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Shipper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every hit of `q`, paging with the cursor.
pub fn all_hits(ix: &Indexer, q: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = ix.api(&format!("/api/v1/search?q={}&limit=5000", urlencode(q)));
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let v = get_ok(&url);
        out.extend(v["hits"].as_array().unwrap().iter().cloned());
        match v["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

/// The whole text of a Prometheus endpoint.
pub fn metrics_text(url: &str) -> String {
    client().get(url).send().unwrap().text().unwrap()
}

/// One value from a Prometheus text endpoint; `name` may carry labels.
pub fn metric_at(url: &str, name: &str) -> f64 {
    let text = metrics_text(url);
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("metric {name} missing from:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// The `n=` (`fields.n`) of every record matching `q`, sorted: lines a test numbered.
pub fn line_numbers(ix: &Indexer, q: &str) -> Vec<u64> {
    let mut ns: Vec<u64> = all_hits(ix, q)
        .iter()
        .map(|h| h["fields"]["n"].as_u64().unwrap())
        .collect();
    ns.sort_unstable();
    ns
}

/// A running `sawmill ui` on a kernel-chosen loopback port.
pub struct Ui {
    pub child: Child,
    pub url: String,
}

impl Ui {
    pub fn start(indexers: &[&str]) -> Ui {
        let mut cmd = sawmill();
        cmd.args(["ui", "--listen", "127.0.0.1:0"]);
        for i in indexers {
            cmd.args(["--indexer", i]);
        }
        let mut child = cmd
            // A replica a test kills on purpose is logged as down: keep that out of the output.
            .env("SAWMILL_LOG", "error")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start sawmill ui");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().and_then(|l| l.ok()).unwrap_or_default();
        let Some(url) = first.strip_prefix("sawmill ui listening on ") else {
            let _ = child.kill();
            panic!("sawmill ui did not start; stdout: {first:?}");
        };
        let url = url.trim().to_string();
        std::thread::spawn(move || for _ in lines {});
        Ui { child, url }
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sum of N over the `sawmill dropped N records` reports an indexer holds: those naming
/// `replica` (`fields.replica`), or with `None` those naming none (records lost everywhere).
pub fn reported_dropped(ix: &Indexer, replica: Option<&str>) -> u64 {
    let (s, v) = get(&ix.api("/api/v1/search?q=service:sawmill-shipper&limit=1000"));
    if s != 200 {
        return 0;
    }
    v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["fields"]["replica"].as_str() == replica)
        .map(|h| h["fields"]["dropped"].as_u64().unwrap())
        .sum()
}

/// `systemd-socket-activate` holding a datagram socket at `sock` for `sawmill shipper`.
pub fn socket_activated_shipper(dir: &Path, ix: &Indexer, sock: &Path) -> std::process::Child {
    let child = std::process::Command::new("systemd-socket-activate")
        .args(["--datagram", "-l"])
        .arg(sock)
        .arg(env!("CARGO_BIN_EXE_sawmill"))
        .args(["shipper", "--indexer", &ix.url, "--state"])
        .arg(dir.join("state"))
        .arg("--syslog-socket")
        .arg(sock)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("shipper.log")).unwrap())
        .spawn()
        .expect("systemd-socket-activate (Debian's systemd package) is installed");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(
            Instant::now() < deadline,
            "systemd-socket-activate never made the socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}
