//! Containers on this machine's Docker engine: the directory-mount pattern for `/dev/log`,
//! and (with `--docker`) container output. Images are built locally from Debian's static
//! busybox; no registry is needed.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::util::*;

const IMAGE: &str = "sawmill-test-busybox";

/// Fails clearly when there is no engine; `SAWMILL_SKIP_DOCKER=1` opts out on a machine
/// without one (CI has one and runs these).
fn docker() -> bool {
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
fn image() -> &'static str {
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
struct Container(String);

impl Container {
    fn run(args: &[&str], cmd: &str) -> Container {
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
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(ix, q) < at_least {
        assert!(
            Instant::now() < deadline,
            "fewer than {at_least} records for {q}"
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
    wait_count(&ix, "service:boxed", before + 5);
    assert!(
        sh.metric("sawmill_shipper_records_received_total{source=\"syslog_unix\"}") >= 5.0,
        "the new shipper receives the container's lines"
    );
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
    let _sh = Shipper::start(dir.path(), &[&ix.url], &["--docker"]);
    let q = format!("container:{}", c.0);
    wait_count(&ix, &q, 2);
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
    let _sh = Shipper::start(dir.path(), &[&ix.url], &["--docker"]);
    wait_count(&ix, &q, 400);
    std::thread::sleep(Duration::from_millis(500));
    let want: Vec<u64> = (1..=400).collect();
    assert_eq!(
        line_numbers(&ix, &q),
        want,
        "every line once, across the restart"
    );
}
