//! Containers on this machine's Docker engine: the directory-mount pattern for `/dev/log`,
//! and (with `--docker`) container output. Images are built locally from Debian's static
//! busybox; no registry is needed.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::util::*;

const IMAGE: &str = "sawmill-test-busybox";

/// Fails clearly when there is no engine; `SAWMILL_SKIP_DOCKER=1` opts out on a machine
/// without one (CI has one and runs these).
pub(crate) fn docker() -> bool {
    if std::env::var("SAWMILL_SKIP_DOCKER").as_deref() == Ok("1") {
        eprintln!("SKIPPED: SAWMILL_SKIP_DOCKER=1, Docker tests not run");
        return false;
    }
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok, "these tests need a running Docker engine (`docker info` fails); set SAWMILL_SKIP_DOCKER=1 to skip them on a machine without one");
    true
}

/// A tiny image holding Debian's static busybox, imported once.
pub(crate) fn image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        if Command::new("docker")
            .args(["image", "inspect", IMAGE])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
        {
            return;
        }
        let root = TempDir::new("busybox-root");
        let bin = root.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy("/bin/busybox", bin.join("busybox"))
            .expect("Debian's busybox-static is installed (/bin/busybox)");
        for tool in ["sh", "logger", "sleep", "ln", "echo", "seq", "cat"] {
            std::os::unix::fs::symlink("busybox", bin.join(tool)).unwrap();
        }
        std::fs::create_dir_all(root.path().join("dev")).unwrap();
        std::fs::create_dir_all(root.path().join("tmp")).unwrap();
        let tar = Command::new("tar")
            .arg("-C")
            .arg(root.path())
            .args(["-c", "."])
            .output()
            .unwrap();
        assert!(tar.status.success());
        let mut imp = Command::new("docker")
            .args(["import", "-", IMAGE])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        imp.stdin.take().unwrap().write_all(&tar.stdout).unwrap();
        assert!(imp.wait().unwrap().success(), "docker import failed");
    });
    IMAGE
}

/// A container removed when dropped.
pub(crate) struct Container(pub(crate) String);

impl Container {
    pub(crate) fn run(args: &[&str], cmd: &str) -> Container {
        let name = format!("sawmill-test-{}", fastrand::u32(..));
        let out = Command::new("docker")
            .args(["run", "-d", "--name", &name])
            .args(args)
            .args([image(), "sh", "-c", cmd])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker run: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Container(name)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn count(ix: &Indexer, q: &str) -> u64 {
    get_ok(&ix.api(&format!("/api/v1/search?q={}&limit=0", urlencode(q))))["total"]
        .as_u64()
        .unwrap()
}

fn wait_count(ix: &Indexer, q: &str, at_least: u64) {
    wait_count_then(ix, q, at_least, String::new);
}

/// As `wait_count`, printing the shipper's log when the records do not come.
fn wait_count_or(ix: &Indexer, q: &str, at_least: u64, sh: &Shipper) {
    wait_count_then(ix, q, at_least, || {
        format!("; the shipper's log:\n{}", sh.log_text())
    });
}

fn wait_count_then(ix: &Indexer, q: &str, at_least: u64, more: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(ix, q) < at_least {
        assert!(
            Instant::now() < deadline,
            "fewer than {at_least} records for {q}{}",
            more()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_container_with_the_socket_directory_mounted_keeps_logging_across_a_shipper_restart() {
    if !docker() {
        return;
    }
    let dir = TempDir::new("dirmount");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "100ms"]);
    let sockdir = dir.path().join("run");
    std::fs::create_dir_all(&sockdir).unwrap();
    let sh = Shipper::start(&sockdir, &[&ix.url], &[]);
    // The documented pattern: mount the directory, point /dev/log at the socket in it.
    let _c = Container::run(
        &["-v", &format!("{}:/run/sawmill", sockdir.display())],
        "ln -sf /run/sawmill/dev-log /dev/log; i=0; while true; do i=$((i+1)); logger -t boxed \"tick $i\"; sleep 0.1; done",
    );
    wait_count(&ix, "service:boxed", 5);
    // A restart replaces the socket; the container never notices.
    drop(sh);
    let before = count(&ix, "service:boxed");
    let sh = Shipper::start(&sockdir, &[&ix.url], &[]);
    // Waited for, not read once: records the killed shipper had delivered but the indexer
    // had not yet made searchable can make up the count before the new one's arrive.
    let deadline = Instant::now() + Duration::from_secs(60);
    while sh.metric("sawmill_shipper_records_received_total{source=\"syslog_unix\"}") < 5.0 {
        assert!(
            Instant::now() < deadline,
            "the new shipper receives the container's lines"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_count(&ix, "service:boxed", before + 5);
}

#[test]
fn a_containers_output_is_collected_with_its_name_and_image() {
    if !docker() {
        return;
    }
    let dir = TempDir::new("dockerout");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "100ms"]);
    let c = Container::run(
        &["--label", "sawmill.service=boxsvc"],
        "echo hello from stdout; echo 'level=warning from stderr' >&2; sleep 600",
    );
    let sh = Shipper::start(dir.path(), &[&ix.url], &["--docker"]);
    let q = format!("container:{}", c.0);
    wait_count_or(&ix, &q, 2, &sh);
    let hits = all_hits(&ix, &q);
    let out = hits
        .iter()
        .find(|h| h["stream"] == "stdout")
        .expect("a stdout record");
    assert_eq!(out["message"], "hello from stdout");
    assert_eq!(out["image"], IMAGE);
    assert_eq!(
        out["service"], "boxsvc",
        "the sawmill.service label names the service"
    );
    assert_eq!(out["severity"], "info");
    let err = hits
        .iter()
        .find(|h| h["stream"] == "stderr")
        .expect("a stderr record");
    assert_eq!(
        err["severity"], "warning",
        "stderr is err unless the line says otherwise: {err}"
    );
    assert!(err["fields"]["container_id"].as_str().unwrap().len() == 64);
}

/// A container whose lines come another way (`sawmill run` inside it) opts out with
/// `sawmill.collect=false`, so they are not stored twice; the others are still followed.
#[test]
fn a_container_labelled_not_to_collect_is_skipped() {
    if !docker() {
        return;
    }
    let dir = TempDir::new("dockerskip");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "100ms"]);
    let skipped = Container::run(
        &["--label", "sawmill.collect=false"],
        "i=0; while true; do i=$((i+1)); echo skipped=$i; sleep 0.05; done",
    );
    let witness = Container::run(
        &[],
        "i=0; while true; do i=$((i+1)); echo witness=$i; sleep 0.05; done",
    );
    let sh = Shipper::start(dir.path(), &[&ix.url], &["--docker"]);
    // Past a rescan (5 s), which must not pick the skipped one up either.
    wait_count_or(&ix, &format!("container:{}", witness.0), 150, &sh);
    assert_eq!(count(&ix, &format!("container:{}", skipped.0)), 0);
}

#[test]
fn a_compose_containers_labels_name_its_service_and_project() {
    if !docker() {
        return;
    }
    let dir = TempDir::new("dockercompose");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "100ms"]);
    let c = Container::run(
        &[
            "--label",
            "com.docker.compose.service=web",
            "--label",
            "com.docker.compose.project=shop",
        ],
        "echo composed; sleep 600",
    );
    let sh = Shipper::start(dir.path(), &[&ix.url], &["--docker"]);
    let q = format!("container:{} AND fields.compose_project:shop", c.0);
    wait_count_or(&ix, &q, 1, &sh);
    let hits = all_hits(&ix, &q);
    let h = &hits[0];
    assert_eq!(h["message"], "composed");
    assert_eq!(
        h["service"], "web",
        "the Compose service, not the container's name: {h}"
    );
    assert_eq!(
        (
            &h["fields"]["compose_service"],
            &h["fields"]["compose_project"]
        ),
        (
            &serde_json::Value::from("web"),
            &serde_json::Value::from("shop")
        ),
        "{h}"
    );
    assert!(
        h["fields"].get("swarm_service").is_none(),
        "no other orchestrator's: {h}"
    );
    // The sidebar's task facet counts the container's lines by the label's value.
    let t = get_ok(&ix.api(&format!(
        "/api/v1/terms?field=fields.compose_service&q=container%3A{}",
        c.0
    )));
    assert_eq!(
        t["values"],
        serde_json::json!([{"value": "web", "count": 1}]),
        "{t}"
    );
}

#[test]
fn a_shipper_restarted_while_a_container_prints_loses_and_repeats_nothing() {
    if !docker() {
        return;
    }
    let dir = TempDir::new("dockerrestart");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "100ms"]);
    let c = Container::run(
        &[],
        "i=0; while [ $i -lt 400 ]; do i=$((i+1)); echo n=$i; sleep 0.01; done; sleep 600",
    );
    let q = format!("container:{}", c.0);
    let sh = Shipper::start(dir.path(), &[&ix.url], &["--docker"]);
    wait_count(&ix, &q, 50);
    sh.terminate();
    let sh = Shipper::start(dir.path(), &[&ix.url], &["--docker"]);
    wait_count_or(&ix, &q, 400, &sh);
    std::thread::sleep(Duration::from_millis(500));
    let want: Vec<u64> = (1..=400).collect();
    assert_eq!(
        line_numbers(&ix, &q),
        want,
        "every line once, across the restart"
    );
}

/// A stand-in for the engine's socket that can vanish and come back: it forwards to the
/// real engine, and `stop` cuts every connection and removes the socket, as a daemon
/// restart does, without disturbing the other tests that share the real engine.
struct EngineProxy {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<UnixStream>>>,
    accept: std::thread::JoinHandle<()>,
}

impl EngineProxy {
    fn start(path: &Path) -> EngineProxy {
        EngineProxy::start_with(path, 0)
    }

    /// The first `hiccups` requests to inspect each container are cut off unanswered, as
    /// a busy engine's timeout does.
    fn start_with(path: &Path, hiccups: usize) -> EngineProxy {
        let inspected: Arc<Mutex<HashMap<String, usize>>> = Default::default();
        let listener = UnixListener::bind(path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<UnixStream>>> = Default::default();
        let accept = {
            let (stop, conns) = (stop.clone(), conns.clone());
            std::thread::spawn(move || {
                while !stop.load(Relaxed) {
                    let Ok((client, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    client.set_nonblocking(false).unwrap();
                    let mut engine = UnixStream::connect("/var/run/docker.sock").unwrap();
                    if hiccups > 0 {
                        let head = request_head(&client);
                        let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                        let id = path
                            .strip_prefix("/containers/")
                            .and_then(|p| p.strip_suffix("/json"))
                            .filter(|id| !id.is_empty() && !id.contains('/'));
                        if let Some(id) = id {
                            let mut seen = inspected.lock().unwrap();
                            let cut = seen.entry(id.to_string()).or_default();
                            *cut += 1;
                            if *cut <= hiccups {
                                let _ = client.shutdown(Shutdown::Both);
                                continue;
                            }
                        }
                        engine.write_all(head.as_bytes()).unwrap();
                    }
                    let mut list = conns.lock().unwrap();
                    list.push(client.try_clone().unwrap());
                    list.push(engine.try_clone().unwrap());
                    for (mut from, mut to) in [
                        (client.try_clone().unwrap(), engine.try_clone().unwrap()),
                        (engine, client),
                    ] {
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut from, &mut to);
                            let _ = to.shutdown(Shutdown::Both);
                        });
                    }
                }
            })
        };
        EngineProxy {
            path: path.to_path_buf(),
            stop,
            conns,
            accept,
        }
    }

    fn stop(self) {
        self.stop.store(true, Relaxed);
        self.accept.join().unwrap();
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        std::fs::remove_file(&self.path).unwrap();
    }
}

/// A GET's request line and headers, read from the client byte by byte so nothing past
/// them is consumed.
fn request_head(mut client: &UnixStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") && client.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Regression: a container whose follower failed once (a request to the engine cut off)
/// was never followed again while it ran: only a new start event or an engine reconnect
/// listed it again, so its output was lost until then. Two cuts: the listing at start and
/// the first periodic rescan fail, the second rescan follows it.
#[test]
fn a_container_whose_first_inspect_fails_is_followed_on_the_next_scan() {
    if !docker() {
        return;
    }
    let dir = TempDir::new("dockerhiccup");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "100ms"]);
    let engine = dir.path().join("engine.sock");
    let proxy = EngineProxy::start_with(&engine, 2);
    let c = Container::run(
        &[],
        "i=0; while [ $i -lt 50 ]; do i=$((i+1)); echo n=$i; done; sleep 600",
    );
    let host = format!("unix://{}", engine.display());
    let sh = Shipper::start(
        dir.path(),
        &[&ix.url],
        &["--docker", "--docker-host", &host],
    );
    let q = format!("container:{}", c.0);
    wait_count_or(&ix, &q, 50, &sh);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(line_numbers(&ix, &q), (1..=50).collect::<Vec<u64>>());
    assert!(
        sh.log_text()
            .contains("Could not follow a container; retrying."),
        "the failure is logged:\n{}",
        sh.log_text()
    );
    proxy.stop();
}

#[test]
fn the_docker_source_reconnects_when_the_engine_comes_back_and_misses_nothing() {
    if !docker() {
        return;
    }
    let dir = TempDir::new("dockerreconnect");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "100ms"]);
    let engine = dir.path().join("engine.sock");
    let proxy = EngineProxy::start(&engine);
    let a = Container::run(
        &[],
        "i=0; while [ $i -lt 300 ]; do i=$((i+1)); echo n=$i; sleep 0.02; done; sleep 600",
    );
    let qa = format!("container:{}", a.0);
    let host = format!("unix://{}", engine.display());
    let sh = Shipper::start(
        dir.path(),
        &[&ix.url],
        &["--docker", "--docker-host", &host],
    );
    wait_count(&ix, &qa, 30);
    // The engine goes away mid-stream; a container starts while it is gone.
    proxy.stop();
    std::thread::sleep(Duration::from_secs(1));
    let b = Container::run(
        &[],
        "i=0; while [ $i -lt 100 ]; do i=$((i+1)); echo n=$i; done; sleep 600",
    );
    let qb = format!("container:{}", b.0);
    let _proxy = EngineProxy::start(&engine);
    wait_count_or(&ix, &qa, 300, &sh);
    wait_count_or(&ix, &qb, 100, &sh);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        line_numbers(&ix, &qa),
        (1..=300).collect::<Vec<u64>>(),
        "every line of the running container once, across the outage"
    );
    assert_eq!(
        line_numbers(&ix, &qb),
        (1..=100).collect::<Vec<u64>>(),
        "the container started during the outage, from its first line"
    );
    assert!(
        sh.log_text().contains("Docker engine not reachable"),
        "the outage is logged:\n{}",
        sh.log_text()
    );
}

#[test]
fn a_shipper_inside_a_container_does_not_ship_its_own_output() {
    if !docker() {
        return;
    }
    let dir = TempDir::new("dockerself");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "100ms"]);
    // The real binary in the busybox image, with the host's C library beside it; host
    // networking so it reaches the indexer on loopback.
    let bin = env!("CARGO_BIN_EXE_sawmill");
    let me = Container::run(
        &[
            "--network",
            "host",
            "-e",
            "SAWMILL_LOG=info",
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            "-v",
            &format!("{bin}:/sawmill:ro"),
            "-v",
            "/lib:/lib:ro",
            "-v",
            "/lib64:/lib64:ro",
            "-v",
            "/usr/lib:/usr/lib:ro",
        ],
        &format!(
            "/sawmill shipper --docker --indexer {} --state /tmp/state --metrics 127.0.0.1:0",
            ix.url
        ),
    );
    // Another container's lines arriving proves the shipper in the container works.
    let witness = Container::run(
        &[],
        "i=0; while true; do i=$((i+1)); echo n=$i; sleep 0.05; done",
    );
    wait_count(&ix, &format!("container:{}", witness.0), 20);
    let own_output = Command::new("docker")
        .args(["logs", &me.0])
        .output()
        .unwrap();
    let own = format!(
        "{}{}",
        String::from_utf8_lossy(&own_output.stdout),
        String::from_utf8_lossy(&own_output.stderr)
    );
    assert!(
        own.contains("sawmill shipper"),
        "the shipper in the container prints lines it could ship: {own}"
    );
    assert_eq!(
        count(&ix, &format!("container:{}", me.0)),
        0,
        "the shipper skips its own container"
    );
}

/// Regression (issue 9, point 5): a container's output went through the drop-when-full
/// queue, so a burst under a small queue lost lines for good (the checkpoint passed them).
/// Docker keeps the log: the source waits for room instead.
#[test]
fn a_containers_burst_under_a_small_queue_waits_for_room_and_loses_nothing() {
    if !docker() {
        return;
    }
    let dir = TempDir::new("dockerburst");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "100ms"]);
    let n = 10_000u64;
    let c = Container::run(
        &[],
        &format!("i=0; while [ $i -lt {n} ]; do echo n=$i; i=$((i+1)); done; sleep 600"),
    );
    let q = format!("container:{}", c.0);
    let sh = Shipper::start(
        dir.path(),
        &[&ix.url],
        &["--docker", "--queue-records", "4"],
    );
    // Until all are in, or the count has stood still for 10 s (lost lines never come).
    let deadline = Instant::now() + Duration::from_secs(90);
    let (mut last, mut since) = (u64::MAX, Instant::now());
    loop {
        let got = count(&ix, &q);
        if got != last {
            (last, since) = (got, Instant::now());
        }
        if got >= n || since.elapsed() > Duration::from_secs(10) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    let got = line_numbers(&ix, &q);
    let missing = (0..n).filter(|i| got.binary_search(i).is_err()).count();
    let dropped = sh.metric("sawmill_shipper_queue_records_dropped_total{source=\"docker\"}");
    assert_eq!(
        (got.len(), missing, dropped),
        (n as usize, 0, 0.0),
        "(stored, missing, dropped by the queue): every line once, none dropped"
    );
}
