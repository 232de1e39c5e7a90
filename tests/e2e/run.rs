//! `sawmill run`: a wrapped process's lines, passed through and shipped with what the
//! orchestrator says about the task, and the closing record of each run.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

#[test]
fn both_streams_are_passed_through_and_shipped_in_order_with_the_exit_code() {
    let dir = TempDir::new("run");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "50ms"]);
    let sh = Shipper::start(dir.path(), &[&ix.url], &[]);
    let script = "for i in 1 2 3; do echo out$i; echo err$i >&2; done; echo '{\"level\":\"warning\",\"request_id\":\"rq-7\"}' >&2; exit 3";
    let out = sawmill()
        .args(["run", "--service", "wrapped", "--to"])
        .arg(&sh.socket)
        .args(["--", "sh", "-c", script])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "the child's exit code");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "out1\nout2\nout3\n",
        "stdout passes through unchanged"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "err1\nerr2\nerr3\n{\"level\":\"warning\",\"request_id\":\"rq-7\"}\n"
    );
    // The closing record, the run's last, is the only one on neither stream.
    let v = wait_total(&ix, "service:wrapped AND stream:(stdout OR stderr)", 7);
    let mut hits = v["hits"].as_array().unwrap().clone();
    hits.sort_by_key(|h| h["ts"].as_str().unwrap().to_string());
    let per_stream = |stream: &str| -> Vec<String> {
        hits.iter()
            .filter(|h| h["stream"] == stream)
            .map(|h| h["message"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        per_stream("stdout"),
        vec!["out1", "out2", "out3"],
        "in order, by the time each was read"
    );
    assert_eq!(per_stream("stderr")[..3], ["err1", "err2", "err3"]);
    for h in &hits {
        let want = if h["stream"] == "stdout" {
            "info"
        } else if h["message"].as_str().unwrap().starts_with('{') {
            "warning"
        } else {
            "err"
        };
        assert_eq!(h["severity"], want, "{h}");
        // Stamped to the nanosecond when read, not when shipped.
        assert_eq!(
            h["ts"].as_str().unwrap().len(),
            "2026-11-27T10:00:00.123456789Z".len()
        );
        assert!(h["pid"].as_u64().unwrap() > 1);
    }
    let json = hits
        .iter()
        .find(|h| h["message"].as_str().unwrap().starts_with('{'))
        .unwrap();
    assert_eq!(
        json["request_id"], "rq-7",
        "a line can say otherwise: {json}"
    );
}

#[test]
fn a_missing_socket_costs_lines_never_the_child() {
    let dir = TempDir::new("run-nosock");
    let out = sawmill()
        .args(["run", "--to"])
        .arg(dir.path().join("no-such-socket"))
        .args([
            "--",
            "sh",
            "-c",
            "for i in $(seq 1 500); do echo line $i; done; exit 5",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        500,
        "every line passed through"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("500 lines could not be shipped"),
        "the loss is counted and said: {err}"
    );
}

#[test]
fn a_flood_over_the_rate_limit_is_passed_through_and_every_unshipped_line_counted() {
    let dir = TempDir::new("run-flood");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "50ms"]);
    let sh = Shipper::start(dir.path(), &[&ix.url], &[]);
    let out = sawmill()
        .args(["run", "--service", "flood", "--rate-limit", "200", "--to"])
        .arg(&sh.socket)
        .args(["--", "sh", "-c", "seq 1 5000"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        5000,
        "every line passed through"
    );
    let unshipped = unshipped(&out.stderr);
    // Shipped lines arrive; with what was reported unshipped they account for all 5000.
    let shipped = 5000 - unshipped;
    assert!(
        (200..1000).contains(&shipped),
        "about the one-second burst of 200 is shipped, not the flood: {shipped}"
    );
    // The lines, without the closing record (which the rate limit does not hold back).
    let lines = "service:flood AND stream:stdout";
    wait_total(&ix, lines, shipped);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        get_ok(&ix.api(&format!("/api/v1/search?q={}&limit=0", urlencode(lines))))["total"],
        shipped,
        "shipped + counted = 5000"
    );
    wait_total(&ix, "service:flood AND fields.exit_code:0", 1);
}

#[test]
fn sigterm_is_forwarded_to_the_child() {
    let dir = TempDir::new("run-term");
    let mut child = sawmill()
        .args(["run", "--to"])
        .arg(dir.path().join("no-such-socket"))
        .args([
            "--",
            "sh",
            "-c",
            "trap 'echo got term; exit 7' TERM; echo ready; while true; do sleep 0.05; done",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(lines.next().unwrap().unwrap(), "got term");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sawmill run did not exit after its child"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(7));
}

#[test]
fn a_child_outlives_its_shipper_and_lines_flow_again_when_a_new_one_binds_the_socket() {
    let dir = TempDir::new("run-restart");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "50ms"]);
    let first = Shipper::start(dir.path(), &[&ix.url], &[]);
    let go = |n: u32| dir.path().join(format!("go{n}"));
    // Three groups of 100 lines: with the shipper up, with it gone, with a new one up. The
    // pause before the third outlasts the sender's 500 ms between reconnect attempts, and
    // the child stays until the third group is in, so the exit budget plays no part.
    let script = format!(
        "seq 1 100; until [ -e '{g1}' ]; do sleep 0.02; done; seq 101 200; \
         until [ -e '{g2}' ]; do sleep 0.02; done; sleep 0.7; seq 201 300; \
         until [ -e '{g3}' ]; do sleep 0.02; done",
        g1 = go(1).display(),
        g2 = go(2).display(),
        g3 = go(3).display()
    );
    let run = sawmill()
        .args(["run", "--service", "phoenix", "--to"])
        .arg(&first.socket)
        .args(["--", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_total(&ix, "service:phoenix", 100);
    first.terminate();
    std::fs::write(go(1), "").unwrap();
    let second = Shipper::start(dir.path(), &[&ix.url], &[]);
    std::fs::write(go(2), "").unwrap();
    // The last line arrives through the new shipper: the run reconnected on its own.
    wait_total(&ix, "service:phoenix AND message:300", 1);
    std::fs::write(go(3), "").unwrap();
    let out = run.wait_with_output().unwrap();
    assert!(out.status.success());
    let want: Vec<String> = (1..=300).map(|i| i.to_string()).collect();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .collect::<Vec<_>>(),
        want,
        "every line passed through, in order, shipper or not"
    );
    let unshipped = unshipped(&out.stderr);
    assert!(
        (1..=100).contains(&unshipped),
        "lines sent to the dead socket are counted, and only those: {unshipped}"
    );
    // Shipped and counted add up to all 300.
    wait_total(&ix, "service:phoenix AND stream:stdout", 300 - unshipped);
    drop(second);
}

/// The count in `sawmill run`'s last words: `sawmill run: N lines could not be shipped ...`.
fn unshipped(stderr: &[u8]) -> u64 {
    let err = String::from_utf8_lossy(stderr);
    err.split_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("`sawmill run` reports what it did not ship: {err}"))
}

#[test]
fn lines_still_unsent_when_the_exit_budget_runs_out_are_counted() {
    let dir = TempDir::new("run-stopped");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "50ms"]);
    let sh = Shipper::start(dir.path(), &[&ix.url], &[]);
    // A stopped shipper takes the few datagrams its socket queues, then nothing: the run
    // must give up after its exit budget and count what it could not send.
    unsafe { libc::kill(sh.child.id() as i32, libc::SIGSTOP) };
    let started = std::time::Instant::now();
    let out = sawmill()
        .args(["run", "--service", "stopped", "--to"])
        .arg(&sh.socket)
        .args(["--", "sh", "-c", "seq 1 1000"])
        .output()
        .unwrap();
    let took = started.elapsed();
    unsafe { libc::kill(sh.child.id() as i32, libc::SIGCONT) };
    assert!(out.status.success());
    assert!(
        took < Duration::from_secs(5),
        "the run outlives its child by its exit budget, not by every send: {took:?}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1000);
    let unshipped = unshipped(&out.stderr);
    assert!(unshipped >= 900, "most could not be sent: {unshipped}");
    let lines = "service:stopped AND stream:stdout";
    wait_total(&ix, lines, 1000 - unshipped);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        get_ok(&ix.api(&format!("/api/v1/search?q={}&limit=0", urlencode(lines))))["total"],
        1000 - unshipped,
        "what the socket queued arrives; with what was counted it makes 1000"
    );
}

#[test]
fn as_pid_1_it_reaps_the_orphans_it_inherits() {
    // A new PID namespace makes `sawmill run` its PID 1, as in a container whose entrypoint
    // it is: orphaned grandchildren become its children, and unreaped they stay zombies.
    // Needs root for the namespace (CI has it).
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root to create a PID namespace; run the tests as root (CI does)"
    );
    let dir = TempDir::new("run-pid1");
    let script = "for i in 1 2 3; do (sleep 0.1 &); done; sleep 0.6; \
                  echo pid $$; grep -l '^State:.*Z' /proc/[0-9]*/status | wc -l";
    let out = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(env!("CARGO_BIN_EXE_sawmill"))
        .args(["run", "--to"])
        .arg(dir.path().join("no-socket"))
        .args(["--", "sh", "-c", script])
        .output()
        .expect("run unshare (util-linux)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "pid 2", "the shell is PID 1's child: {stdout}");
    assert_eq!(lines[1].trim(), "0", "no zombies left: {stdout}");
}

/// What orchestrators set in a task's environment that `sawmill run` reads, and its own
/// service variable: cleared for the runs below, so the machine's own cannot leak in.
const TASK_VARS: [&str; 13] = [
    "MARATHON_APP_ID",
    "MARATHON_APP_VERSION",
    "MESOS_TASK_ID",
    "HOST",
    "POD_NAME",
    "POD_NAMESPACE",
    "CONTAINER_NAME",
    "NODE_NAME",
    "NOMAD_JOB_NAME",
    "NOMAD_GROUP_NAME",
    "NOMAD_TASK_NAME",
    "NOMAD_ALLOC_ID",
    "SAWMILL_SERVICE",
];

/// `sawmill run [flags] --to SOCKET -- sh -c SCRIPT` in a task whose environment holds
/// `env` (and none of [`TASK_VARS`] otherwise).
fn run_task(
    socket: &Path,
    flags: &[&str],
    env: &[(&str, &str)],
    script: &str,
) -> std::process::Output {
    let mut cmd = sawmill();
    for var in TASK_VARS {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied())
        .arg("run")
        .args(flags)
        .arg("--to")
        .arg(socket)
        .args(["--", "sh", "-c", script])
        .output()
        .unwrap()
}

/// The hits' messages, sorted.
fn messages(v: &Value) -> Vec<String> {
    let mut m: Vec<String> = v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["message"].as_str().unwrap().to_string())
        .collect();
    m.sort();
    m
}

/// The one hit of `v` that is the closing record.
fn closing(v: &Value) -> Value {
    let closing: Vec<&Value> = v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["fields"]["exit_code"].is_number())
        .collect();
    assert_eq!(closing.len(), 1, "one closing record per run: {v}");
    closing[0].clone()
}

#[test]
fn a_marathon_tasks_records_carry_its_app_task_version_and_agent() {
    let dir = TempDir::new("run-marathon");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "50ms"]);
    let sh = Shipper::start(dir.path(), &[&ix.url], &[]);
    let task_id = "shop_checkout.7c1f2e3d-0b1a-11f1-9c2b-0242ac110002";
    let out = run_task(
        &sh.socket,
        &[],
        &[
            ("MARATHON_APP_ID", "/shop/checkout"),
            ("MESOS_TASK_ID", task_id),
            ("MARATHON_APP_VERSION", "2026-11-27T10:00:00.000Z"),
            ("HOST", "agent-7"),
        ],
        "echo paid; echo declined >&2",
    );
    assert!(out.status.success());
    let v = wait_total(&ix, &format!("fields.mesos_task_id:\"{task_id}\""), 3);
    let m = messages(&v);
    assert!(
        m[0] == "declined" && m[1].starts_with("exited with code 0 after ") && m[2] == "paid",
        "both lines and the closing record: {m:?}"
    );
    for h in v["hits"].as_array().unwrap() {
        assert_eq!(
            (&h["service"], &h["host"]),
            (&Value::from("shop/checkout"), &Value::from("agent-7")),
            "the app id without its `/`, and the agent: {h}"
        );
        assert_eq!(h["fields"]["marathon_app_id"], "/shop/checkout", "{h}");
        assert_eq!(h["fields"]["mesos_task_id"], task_id, "{h}");
        assert_eq!(
            h["fields"]["marathon_app_version"], "2026-11-27T10:00:00.000Z",
            "{h}"
        );
    }
    wait_total(&ix, "service:\"shop/checkout\" AND host:agent-7", 3);
}

#[test]
fn a_failed_run_ends_with_one_err_closing_record_that_shares_its_run_id() {
    let dir = TempDir::new("run-failed");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "50ms"]);
    let sh = Shipper::start(dir.path(), &[&ix.url], &[]);
    let out = run_task(
        &sh.socket,
        &["--service", "nightly"],
        &[],
        "echo one; echo two >&2; sleep 0.2; exit 3",
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "the child's exit code, as before"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\n");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "two\n",
        "the output is the child's alone"
    );
    let v = wait_total(&ix, "service:nightly", 3);
    let run_id = v["hits"][0]["fields"]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        run_id.len() == 16 && run_id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{run_id}"
    );
    let v = wait_total(&ix, &format!("fields.run_id:{run_id}"), 3);
    let end = closing(&v);
    let message = end["message"].as_str().unwrap();
    assert_eq!(end["severity"], "err", "{end}");
    assert_eq!(end["fields"]["exit_code"], 3, "a number: {end}");
    let ms = end["fields"]["duration_ms"].as_u64().expect("a number");
    assert!((200..10_000).contains(&ms), "the child's lifetime: {ms} ms");
    // The text says the same duration (however long a busy machine made it).
    let secs = format!("{}.{:03}", ms / 1000, ms % 1000);
    let secs = secs.trim_end_matches('0').trim_end_matches('.');
    assert!(
        message == format!("exited with code 3 after {secs}s") || ms >= 60_000,
        "{end}"
    );
    assert!(end["fields"].get("signal").is_none(), "{end}");
    let line = v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["stream"] == "stdout")
        .unwrap();
    assert_eq!(end["pid"], line["pid"], "the child's pid, as its lines");
    let last = v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["ts"].as_str().unwrap())
        .max()
        .unwrap();
    assert_eq!(end["ts"], last, "the run's last record");
    // Searchable as a failure, and as a number.
    wait_total(&ix, "fields.exit_code:3 AND severity:err", 1);
    wait_total(
        &ix,
        &format!("fields.run_id:{run_id} AND NOT fields.exit_code:*"),
        2,
    );
}

#[test]
fn a_killed_run_closes_with_its_signal_as_err_and_a_clean_one_as_info() {
    let dir = TempDir::new("run-killed");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "50ms"]);
    let sh = Shipper::start(dir.path(), &[&ix.url], &[]);
    let out = run_task(
        &sh.socket,
        &["--service", "doomed"],
        &[],
        "echo before; kill -9 $$",
    );
    assert_eq!(out.status.code(), Some(137), "128 + 9, as before");
    let out = run_task(&sh.socket, &["--service", "fine"], &[], "echo done");
    assert!(out.status.success());
    let end = closing(&wait_total(&ix, "service:doomed", 2));
    let message = end["message"].as_str().unwrap();
    assert!(
        message.starts_with("killed by signal SIGKILL (9) after "),
        "{end}"
    );
    assert_eq!(end["severity"], "err", "{end}");
    assert_eq!(end["fields"]["signal"], "SIGKILL", "{end}");
    assert_eq!(
        end["fields"]["exit_code"], 137,
        "as `sawmill run` exits: {end}"
    );
    assert!(end["fields"]["duration_ms"].is_u64(), "{end}");
    let end = closing(&wait_total(&ix, "service:fine", 2));
    assert!(
        end["message"]
            .as_str()
            .unwrap()
            .starts_with("exited with code 0 after "),
        "{end}"
    );
    assert_eq!(end["severity"], "info", "{end}");
    assert_eq!(end["fields"]["exit_code"], 0, "{end}");
    assert_ne!(
        end["fields"]["run_id"],
        closing(&wait_total(&ix, "service:doomed", 2))["fields"]["run_id"],
        "each run has its own id"
    );
}

#[test]
fn kubernetes_and_nomad_tasks_are_recorded_and_service_beats_them() {
    let dir = TempDir::new("run-k8s-nomad");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "50ms"]);
    let sh = Shipper::start(dir.path(), &[&ix.url], &[]);
    let k8s = [
        ("POD_NAME", "checkout-7d9f-x2x"),
        ("POD_NAMESPACE", "shop"),
        ("CONTAINER_NAME", "app"),
        ("NODE_NAME", "node-3"),
    ];
    assert!(run_task(&sh.socket, &[], &k8s, "echo from a pod")
        .status
        .success());
    let nomad = [
        ("NOMAD_JOB_NAME", "billing"),
        ("NOMAD_GROUP_NAME", "workers"),
        ("NOMAD_TASK_NAME", "invoice"),
        ("NOMAD_ALLOC_ID", "5b1c2d3e-0000-4000-8000-000000000001"),
    ];
    assert!(run_task(&sh.socket, &[], &nomad, "echo from an alloc")
        .status
        .success());
    let marathon = [
        ("MARATHON_APP_ID", "/shop/other"),
        ("NOMAD_JOB_NAME", "not-this"),
    ];
    let flags = ["--service", "explicit"];
    assert!(run_task(&sh.socket, &flags, &marathon, "echo named")
        .status
        .success());

    let v = wait_total(&ix, "fields.k8s_pod:\"checkout-7d9f-x2x\"", 2);
    for h in v["hits"].as_array().unwrap() {
        assert_eq!(
            (&h["service"], &h["host"]),
            (&Value::from("app"), &Value::from("node-3")),
            "the container's name, as the node's shipper names its log file's lines, and the node: {h}"
        );
        let f = &h["fields"];
        assert_eq!(
            (&f["k8s_namespace"], &f["k8s_container"], &f["k8s_node"]),
            (
                &Value::from("shop"),
                &Value::from("app"),
                &Value::from("node-3")
            ),
            "{h}"
        );
    }
    let v = wait_total(&ix, "service:billing", 2);
    for h in v["hits"].as_array().unwrap() {
        let f = &h["fields"];
        assert_eq!(
            (
                &f["nomad_job"],
                &f["nomad_group"],
                &f["nomad_task"],
                &f["nomad_alloc_id"]
            ),
            (
                &Value::from("billing"),
                &Value::from("workers"),
                &Value::from("invoice"),
                &Value::from("5b1c2d3e-0000-4000-8000-000000000001")
            ),
            "{h}"
        );
    }
    let v = wait_total(&ix, "service:explicit", 2);
    assert_eq!(
        v["hits"][0]["fields"]["marathon_app_id"], "/shop/other",
        "--service names the service; the app id is still recorded"
    );
}

/// A job that cannot start (not found, not executable) is the failure most worth finding:
/// its run closes like any other, with code 127, as `sawmill run` exits.
#[test]
fn a_command_that_cannot_start_still_closes_its_run() {
    let dir = TempDir::new("run-not-started");
    let ix = Indexer::start(&dir.path().join("ix"), &["--commit-interval", "50ms"]);
    let sh = Shipper::start(dir.path(), &[&ix.url], &[]);
    let out = sawmill()
        .args(["run", "--service", "nightly", "--to"])
        .arg(&sh.socket)
        .args(["--", "/no/such/job"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot run `/no/such/job`"),
        "{out:?}"
    );
    let v = wait_total(&ix, "service:nightly", 1);
    let end = &v["hits"][0];
    assert!(
        end["message"]
            .as_str()
            .unwrap()
            .starts_with("cannot run `/no/such/job`: No such file or directory"),
        "{end}"
    );
    assert_eq!(end["severity"], "err", "{end}");
    assert_eq!(end["fields"]["exit_code"], 127, "{end}");
    assert!(end["fields"]["duration_ms"].is_u64(), "{end}");
    assert_eq!(end["fields"]["run_id"].as_str().map(str::len), Some(16));
}
