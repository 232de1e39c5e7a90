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

/// A port free on every loopback address the tests use: replicas listen on it at
/// 127.0.0.2, .3, … A port merely free on 127.0.0.1 may be another test's on 127.0.0.2
/// (`fanout::srv_records_list_the_replicas_of_every_group` failed with "Address already in
/// use" on 127.0.0.2 so), so the port is tried on all of them before it is given.
pub fn free_port() -> String {
    pick_port().to_string()
}

/// A loopback address nothing listens on right now, on a port [`free_port`] picks.
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", pick_port())
}

/// A port for a test's listener. Tests hold a port released for a while (a replica killed
/// and started again at its address, two addresses picked before either is bound), so:
/// - it is below the kernel's ephemeral range, where no port-0 bind (of this process, of a
///   `sawmill` it started, of Chromium) can take it meanwhile: a port taken with port 0
///   came back from another port-0 bind about once in 7,000;
/// - this process never gives it twice (two picked one after the other were equal so);
/// - it binds on 127.0.0.1–9 when given.
fn pick_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    // Linux's default range is 32768–60999; below it, above the fixed ports the Swarm
    // stack publishes (7279, 7280).
    static BELOW: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    let below = *BELOW.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
            .unwrap_or(32_768)
            .max(20_000)
    });
    loop {
        let port = fastrand::u16(10_000..below);
        let mut given = GIVEN.lock().unwrap();
        if given.contains(&port) {
            continue;
        }
        let free =
            (1..=9).all(|i| std::net::TcpListener::bind(format!("127.0.0.{i}:{port}")).is_ok());
        if free {
            given.insert(port);
            return port;
        }
    }
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

    /// Waits until the counter `name` (with its labels) is above zero: what the batcher
    /// does runs at idle priority, so on a loaded machine no fixed pause is sure to be
    /// enough.
    pub fn wait_counted(&self, name: &str) {
        eventually(&format!("{name} counts"), 60, || match self.metric(name) {
            n if n > 0.0 => Ok(()),
            n => Err(format!("{n}")),
        });
    }

    /// Waits until the metrics show `per_group` live replicas of every group of `groups`.
    /// Lines sent before the shipper heard from a replica never reach it (a replica without
    /// `--peer` does not repair), and a first health check can time out on a loaded
    /// machine, leaving that replica to the next discovery round.
    pub fn knows_replicas(&self, groups: &[&str], per_group: usize) {
        eventually("the shipper knows every replica of every group", 30, || {
            let text = metrics_text(&self.metrics_url);
            let live = |g: &str| {
                let info = format!("group=\"{g}\",state=\"live\"}} 1");
                text.lines()
                    .filter(|l| {
                        l.starts_with("sawmill_shipper_replica_info{") && l.ends_with(&info)
                    })
                    .count()
            };
            match groups.iter().all(|g| live(g) == per_group) {
                true => Ok(()),
                false => Err(text),
            }
        });
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
    metric_in(&metrics_text(url), name)
}

/// One value from Prometheus text already fetched; `name` may carry labels.
pub fn metric_in(text: &str, name: &str) -> f64 {
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
        Ui::start_with(indexers, &[])
    }

    /// With more flags (`--users-file`, say).
    pub fn start_with(indexers: &[&str], args: &[&str]) -> Ui {
        let mut cmd = sawmill();
        cmd.args(["ui", "--listen", "127.0.0.1:0"]);
        for i in indexers {
            cmd.args(["--indexer", i]);
        }
        cmd.args(args);
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

/// A running `sawmill COMMAND` that first prints `sawmill COMMAND listening on URL` (`query`,
/// `ui`), on a kernel-chosen loopback port, logging at info to a file in `dir`.
pub struct Service {
    pub child: Child,
    pub url: String,
    pub log: PathBuf,
}

impl Service {
    pub fn start(dir: &Path, command: &str, args: &[&str]) -> Service {
        let log = dir.join(format!("{command}-{}.log", fastrand::u32(..)));
        let mut child = sawmill()
            .args([command, "--listen", "127.0.0.1:0"])
            .args(args)
            .env("SAWMILL_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("start sawmill {command}: {e}"));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().and_then(|l| l.ok()).unwrap_or_default();
        let prefix = format!("sawmill {command} listening on ");
        let Some(url) = first.strip_prefix(&prefix) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "sawmill {command} did not start; stdout: {first:?}; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let url = url.trim().to_string();
        std::thread::spawn(move || for _ in lines {});
        Service { child, url, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd` to its end, killing it after `secs`: its exit status, stdout and stderr.
pub fn run_to_exit(mut cmd: Command, secs: u64) -> (std::process::ExitStatus, String, String) {
    let dir = TempDir::new("run-to-exit");
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("start the command");
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} still ran after {secs} s; stdout:\n{}\nstderr:\n{}",
                std::fs::read_to_string(&out).unwrap_or_default(),
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    (status, read(&out), read(&err))
}

/// An HTTPS client that trusts only the CAs in the PEM files `cas` (not the system's roots)
/// and, given `identity` (a PEM file holding a certificate and its key), presents it. Each
/// client has a connection pool of its own: a new one makes a new TLS handshake.
pub fn tls_client(cas: &[&Path], identity: Option<&Path>) -> reqwest::blocking::Client {
    let mut builder = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .tls_built_in_root_certs(false);
    for ca in cas {
        let pem = std::fs::read(ca).unwrap();
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
    }
    if let Some(id) = identity {
        let pem = std::fs::read(id).unwrap();
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

/// The `openssl` configuration of the test PKI: a CA, a server certificate for `127.0.0.1`
/// and `localhost`, a client certificate, each with the extensions strict verifiers
/// (rustls' webpki, Python's ssl, curl) insist on.
const PKI_CONFIG: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[named]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:indexers.sawmill.test
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

/// Two unrelated certificate authorities made with the `openssl` CLI, each with a server and
/// a client certificate; nothing trusts either unless a test says so.
pub struct Pki {
    pub ca1: Authority,
    pub ca2: Authority,
    _dir: TempDir,
}

/// A CA and what it signed, as PEM files; keys are PKCS#8 (EC P-256).
pub struct Authority {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// The client certificate (for TLS client authentication) and its key in one file, as `reqwest::Identity::from_pem`
    /// and Python's `load_cert_chain` take them.
    pub client_identity: PathBuf,
    /// The same certificate and key in files of their own, as rsyslog takes them.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A server certificate naming only `indexers.sawmill.test`, no address: what replicas
    /// found through that DNS name show.
    pub named_cert: PathBuf,
    pub named_key: PathBuf,
}

impl Pki {
    pub fn generate() -> Pki {
        let dir = TempDir::new("pki");
        let config = dir.path().join("openssl.cnf");
        std::fs::write(&config, PKI_CONFIG).unwrap();
        Pki {
            ca1: Authority::generate(dir.path(), &config, "ca1"),
            ca2: Authority::generate(dir.path(), &config, "ca2"),
            _dir: dir,
        }
    }
}

impl Authority {
    fn generate(dir: &Path, config: &Path, name: &str) -> Authority {
        let file = |what: &str| dir.join(format!("{name}-{what}.pem"));
        let config = config.display();
        let (ca, ca_key) = (file("ca"), file("ca-key"));
        new_key(&ca_key);
        openssl(&format!(
            "req -config {config} -x509 -new -key {} -subj /CN=sawmill-test-{name} \
             -days 30 -sha256 -extensions ca -out {}",
            ca_key.display(),
            ca.display()
        ));
        // `role` is also the configuration's section of the certificate's extensions.
        let issue = |role: &str| {
            let (cert, key, csr) = (file(role), file(&format!("{role}-key")), file("csr"));
            new_key(&key);
            openssl(&format!(
                "req -config {config} -new -key {} -subj /CN=sawmill-{role}-of-{name} -out {}",
                key.display(),
                csr.display()
            ));
            openssl(&format!(
                "x509 -req -in {} -CA {} -CAkey {} -set_serial {} -days 30 -sha256 \
                 -extfile {config} -extensions {role} -out {}",
                csr.display(),
                ca.display(),
                ca_key.display(),
                fastrand::u64(1..),
                cert.display()
            ));
            (cert, key)
        };
        let (server_cert, server_key) = issue("server");
        let (client_cert, client_key) = issue("client");
        let (named_cert, named_key) = issue("named");
        let client_identity = file("client-identity");
        let mut pem = std::fs::read(&client_cert).unwrap();
        pem.extend(std::fs::read(&client_key).unwrap());
        std::fs::write(&client_identity, pem).unwrap();
        Authority {
            ca,
            server_cert,
            server_key,
            client_identity,
            client_cert,
            client_key,
            named_cert,
            named_key,
        }
    }
}

/// A PKCS#8 EC P-256 private key in PEM.
fn new_key(path: &Path) {
    openssl(&format!(
        "genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out {}",
        path.display()
    ));
}

/// Runs `openssl` with `args`, split at spaces: the paths in them are the tests' temporary
/// paths, which hold none.
fn openssl(args: &str) {
    assert!(!std::env::temp_dir().display().to_string().contains(' '));
    let out = Command::new("openssl")
        .args(args.split(' '))
        .output()
        .expect("the `openssl` command line tool is installed");
    assert!(
        out.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `password`'s hash as the real `sawmill hash-password` prints it (for a `name:HASH` line of
/// a users file), made as an operator makes it: the password on stdin.
pub fn hash_password(password: &str) -> String {
    use std::io::Write;
    let mut child = sawmill()
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sawmill hash-password");
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "hash-password failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A path as a command-line argument (the tests' temporary paths are UTF-8).
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
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

/// Where `rsyslogd` is (Debian's `rsyslog` package, which CI installs), looked for on the
/// `PATH` and in `/usr/sbin`, which a user's `PATH` may lack; `None` when not installed.
pub fn rsyslogd() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join("rsyslogd"))
        .find(|p| p.is_file())
}

/// A private `rsyslogd` in the foreground, with a configuration, a pid file and a work
/// directory of its own: it reads nothing but a UDP port on loopback and writes its own
/// messages to a file in its directory (never to the system's log), so the system's rsyslog,
/// running or not, is not involved. Stopped when dropped.
pub struct Rsyslog {
    child: Child,
    dir: PathBuf,
    /// The address its `imudp` input listens on.
    pub udp: std::net::SocketAddr,
}

impl Rsyslog {
    /// Starts `rsyslogd` in `dir` (made if missing) with `config` after the lines that set up
    /// its input and its own log; `config` defines the ruleset `input`, which gets every
    /// message sent to [`Rsyslog::udp`]. Returns once the input holds its port.
    pub fn start(dir: &Path, config: &str) -> Rsyslog {
        let bin = rsyslogd().expect("rsyslogd is installed (Debian's rsyslog package)");
        std::fs::create_dir_all(dir).unwrap();
        let dir = dir.to_path_buf();
        // A port nothing holds now; rsyslogd binds it moments later.
        let udp = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let d = path_str(&dir);
        let port = udp.port();
        // `processInternalMessages` keeps rsyslogd's own messages (errors included) in this
        // instance: by default it hands them to the system's log.
        let text = format!(
            "global(workDirectory=\"{d}\" processInternalMessages=\"on\")\n\
             module(load=\"imudp\")\n\
             input(type=\"imudp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"input\")\n\
             *.* action(type=\"omfile\" file=\"{d}/rsyslogd.log\")\n\
             {config}\n"
        );
        let conf = dir.join("rsyslog.conf");
        std::fs::write(&conf, &text).unwrap();
        // A typo or a module that is not installed fails here, in rsyslogd's words.
        let check = Command::new(&bin)
            .arg("-N1")
            .arg("-f")
            .arg(&conf)
            .output()
            .expect("run rsyslogd -N1");
        assert!(
            check.status.success(),
            "rsyslogd refuses the configuration:\n{}\n{text}",
            String::from_utf8_lossy(&check.stderr)
        );
        let out = std::fs::File::create(dir.join("rsyslogd.out")).unwrap();
        let child = Command::new(&bin)
            .arg("-n")
            .arg("-f")
            .arg(conf)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            // Were the tests run by a systemd service, rsyslogd would report to it as if it
            // were the service's daemon.
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start rsyslogd");
        let mut rs = Rsyslog { child, dir, udp };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !udp_port_bound(port) {
            if let Some(status) = rs.child.try_wait().unwrap() {
                panic!("rsyslogd exited ({status}); {}", rs.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "rsyslogd did not bind 127.0.0.1:{port} within 30 s; {}",
                rs.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        rs
    }

    /// Sends one syslog message to its input, as a device on the network does.
    pub fn send(&self, message: &str) {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(message.as_bytes(), self.udp).unwrap();
    }

    /// Its own messages (errors from its outputs among them), and what it wrote to stderr.
    pub fn log_text(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!(
            "rsyslogd's log:\n{}\nits output:\n{}",
            read("rsyslogd.log"),
            read("rsyslogd.out")
        )
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        // Once reaped, its pid may be another process's.
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SIGTERM lets it close its connections; it exits within a second or two.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a UDP socket is bound to `port` (on any address), from the kernel's table: binding
/// the port to find out could take it from the process about to bind it.
fn udp_port_bound(port: u16) -> bool {
    let suffix = format!(":{port:04X}");
    std::fs::read_to_string("/proc/net/udp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .any(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|local| local.ends_with(&suffix))
        })
}

/// The bucket every [`Moto`] server holds from its start.
pub const MOTO_BUCKET: &str = "sawmill-test";

/// A real S3-compatible server, `moto_server` (PyPI's `moto[server]`, which `.ci/run`
/// installs), on a loopback port, holding the bucket [`MOTO_BUCKET`]. Moto keeps objects in
/// memory: [`Moto::restart`] brings back an empty bucket on the same endpoint.
pub struct Moto {
    pub endpoint: String,
    port: String,
    child: Option<Child>,
    log: PathBuf,
}

// Moto checks no signatures (its auth is off unless configured), but a request without any
// credentials is an anonymous one, which the bucket's default ACL refuses with 403: the
// test's own requests carry a well-formed SigV4 header with a dummy signature.
const MOTO_AUTH: &str = "AWS4-HMAC-SHA256 Credential=test/20261130/us-east-1/s3/aws4_request, \
                         SignedHeaders=host, Signature=0000";

impl Moto {
    pub fn start() -> Moto {
        let log = std::env::temp_dir().join(format!(
            "sawmill-e2e-moto-{}-{}.log",
            std::process::id(),
            fastrand::u32(..)
        ));
        // Another process may take the free port before moto binds it: try a few.
        for _ in 0..3 {
            let port = free_port();
            let mut moto = Moto {
                endpoint: format!("http://127.0.0.1:{port}"),
                port,
                child: None,
                log: log.clone(),
            };
            if moto.launch() {
                return moto;
            }
        }
        panic!(
            "moto_server did not start on three free ports; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Starts `moto_server` on `self.port` and creates the bucket; false when it exited
    /// before answering (the port was taken).
    fn launch(&mut self) -> bool {
        use std::os::unix::process::CommandExt;
        let spawned = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &self.port])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&self.log).unwrap())
            // A group of its own, so that stopping it reaches any process it started.
            .process_group(0)
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "`moto_server` is not installed: `python3 -m pip install 'moto[server]'` \
                 (.ci/run installs it); the object-store tests run against it"
            ),
            Err(e) => panic!("could not start moto_server: {e}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(_)) = self.child.as_mut().unwrap().try_wait() {
                self.child = None;
                return false;
            }
            if client().get(&self.endpoint).send().is_ok() {
                break;
            }
            if Instant::now() > deadline {
                self.stop();
                panic!(
                    "moto_server did not answer on {} within 60 s; its log:\n{}",
                    self.endpoint,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let resp = self.request(reqwest::Method::PUT, &format!("/{MOTO_BUCKET}"));
        let status = resp.send().expect("create the bucket").status();
        assert!(
            status.is_success(),
            "creating bucket {MOTO_BUCKET}: {status}"
        );
        true
    }

    /// `s3://sawmill-test/PREFIX` (no slash for an empty prefix), for `--object-store`.
    pub fn url(&self, prefix: &str) -> String {
        if prefix.is_empty() {
            format!("s3://{MOTO_BUCKET}")
        } else {
            format!("s3://{MOTO_BUCKET}/{prefix}")
        }
    }

    /// The standard AWS environment that points an S3 client at this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        client()
            .request(method, format!("{}{path}", self.endpoint))
            .header("authorization", MOTO_AUTH)
    }

    /// Every object whose key starts with `prefix`, with its size, in key order.
    pub fn objects(&self, prefix: &str) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut path = format!("/{MOTO_BUCKET}?list-type=2&prefix={}", urlencode(prefix));
            if let Some(t) = &token {
                path.push_str(&format!("&continuation-token={}", urlencode(t)));
            }
            let resp = self.get_retrying(&path);
            let status = resp.status();
            let xml = resp.text().unwrap_or_default();
            assert!(status.is_success(), "listing {prefix:?}: {status} {xml}");
            for contents in xml.split("<Contents>").skip(1) {
                let key = xml_unescape(xml_element(contents, "Key").expect("a <Key>"));
                let size = xml_element(contents, "Size")
                    .and_then(|s| s.parse().ok())
                    .expect("a <Size>");
                out.push((key, size));
            }
            match xml_element(&xml, "NextContinuationToken") {
                Some(t) if xml_element(&xml, "IsTruncated") == Some("true") => {
                    token = Some(xml_unescape(t))
                }
                _ => return out,
            }
        }
    }

    /// An object's bytes, or `None` when there is no such object.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let resp = self.get_retrying(&format!("/{MOTO_BUCKET}/{key}"));
        match resp.status().as_u16() {
            404 => None,
            200 => Some(resp.bytes().unwrap().to_vec()),
            s => panic!("GET {key} from moto answered {s}: {}", resp.text().unwrap()),
        }
    }

    /// A `GET`, asked again for up to 5 s while moto answers 5xx: it does now and then
    /// while the same object or the bucket's listing is being written (seen in CI on a
    /// manifest the indexer was replacing, and on listings while two indexers wrote).
    fn get_retrying(&self, path: &str) -> reqwest::blocking::Response {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let resp = self
                .request(reqwest::Method::GET, path)
                .send()
                .unwrap_or_else(|e| panic!("GET {path} from moto: {e}"));
            if resp.status().as_u16() < 500 || Instant::now() > deadline {
                return resp;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Writes (or overwrites) an object.
    pub fn put(&self, key: &str, bytes: Vec<u8>) {
        let resp = self
            .request(reqwest::Method::PUT, &format!("/{MOTO_BUCKET}/{key}"))
            // Werkzeug would read a body sent as a form as form fields, and moto then
            // stores an empty object.
            .header("content-type", "application/octet-stream")
            .body(bytes)
            .send()
            .unwrap_or_else(|e| panic!("PUT {key} to moto: {e}"));
        let status = resp.status();
        assert!(
            status.is_success(),
            "PUT {key}: {status} {}",
            resp.text().unwrap()
        );
    }

    /// Deletes an object; a missing one is fine.
    pub fn delete(&self, key: &str) {
        let resp = self
            .request(reqwest::Method::DELETE, &format!("/{MOTO_BUCKET}/{key}"))
            .send()
            .unwrap_or_else(|e| panic!("DELETE {key} on moto: {e}"));
        let status = resp.status();
        assert!(status.is_success(), "DELETE {key}: {status}");
    }

    /// Kills the server (as a crash would): its endpoint refuses connections until
    /// [`Moto::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::killpg(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
        }
    }

    /// A fresh server on the same endpoint, holding only the (empty) bucket again.
    pub fn restart(&mut self) {
        self.stop();
        // The port is free again once the old process is gone, but allow for a slow kernel.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.launch() {
            assert!(
                Instant::now() < deadline,
                "moto_server could not start again on {}; its log:\n{}",
                self.endpoint,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The text of the first `<name>` element in `xml`.
fn xml_element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let len = xml[start..].find(&format!("</{name}>"))?;
    Some(&xml[start..start + len])
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}
