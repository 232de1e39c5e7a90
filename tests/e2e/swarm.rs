//! Sawmill as users run it on Docker Swarm: the image `deploy/build-image` makes and
//! `deploy/swarm/stack.yml` deployed with `docker stack deploy`, on this machine's engine
//! (a single-node swarm). An application container logs through the shipper's socket and
//! on stdout; its lines are found through `query`'s and the UI's published ports; an indexer
//! task is killed, Swarm replaces it, and the replacement catches up.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::docker::{docker, Container};
use crate::util::*;

/// Runs `docker ARGS`, failing the test with its output when it fails.
fn docker_ok(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn docker_quiet(args: &[&str]) {
    let _ = Command::new("docker")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A single-node swarm: the one that is active, or one made here and left when dropped
/// (with the bridge `swarm init` makes, unless it was there before).
struct Swarm {
    made_here: bool,
    made_bridge: bool,
}

impl Swarm {
    fn join() -> Swarm {
        let state = docker_ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
        if state.trim() == "active" {
            return Swarm {
                made_here: false,
                made_bridge: false,
            };
        }
        let had_bridge = Command::new("docker")
            .args(["network", "inspect", "docker_gwbridge"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        docker_ok(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
        Swarm {
            made_here: true,
            made_bridge: !had_bridge,
        }
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        if self.made_here {
            docker_quiet(&["swarm", "leave", "--force"]);
        }
        if self.made_bridge {
            docker_quiet(&["network", "rm", "docker_gwbridge"]);
        }
    }
}

/// The image, built by the script users run, under a tag of the test's own; removed when
/// dropped.
struct Image(String);

impl Image {
    fn build(tag: &str) -> Image {
        let out = Command::new("deploy/build-image")
            .args(["--binary", env!("CARGO_BIN_EXE_sawmill"), "--tag", tag])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "deploy/build-image: {said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // "NAME:VERSION NAME:latest built: N MiB compressed (B bytes)"
        let bytes: u64 = said
            .rsplit_once('(')
            .and_then(|(_, b)| b.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("build-image states the size: {said}"));
        assert!(
            bytes < 40 << 20,
            "the image is under 40 MB compressed: {said}"
        );
        Image(tag.to_string())
    }

    fn latest(&self) -> String {
        format!("{}:latest", self.0)
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let version = env!("CARGO_PKG_VERSION");
        docker_quiet(&[
            "image",
            "rm",
            "-f",
            &format!("{}:latest", self.0),
            &format!("{}:{version}", self.0),
        ]);
    }
}

/// A deployed stack; removed when dropped, with its tasks, network and volumes.
struct Stack {
    name: String,
}

impl Stack {
    fn deploy(name: &str, env: &[(&str, &str)]) -> Stack {
        let out = Command::new("docker")
            .args(["stack", "deploy", "-c", "deploy/swarm/stack.yml", name])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let stack = Stack {
            name: name.to_string(),
        };
        assert!(
            out.status.success(),
            "docker stack deploy: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        stack
    }

    fn service(&self, s: &str) -> String {
        format!("{}_{s}", self.name)
    }

    /// Ids of the running containers of service `s`.
    fn containers(&self, s: &str) -> Vec<String> {
        docker_ok(&[
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("label=com.docker.swarm.service.name={}", self.service(s)),
        ])
        .split_whitespace()
        .map(str::to_string)
        .collect()
    }

    /// What the services' tasks said, for a failure message.
    fn diagnose(&self) -> String {
        let mut text = String::new();
        for s in ["shipper", "indexer-g0", "indexer-g1", "query", "ui"] {
            let out = Command::new("docker")
                .args(["service", "ps", "--no-trunc", &self.service(s)])
                .output()
                .unwrap();
            text += &String::from_utf8_lossy(&out.stdout);
            let logs = Command::new("docker")
                .args(["service", "logs", "--raw", "--tail", "20", &self.service(s)])
                .output()
                .unwrap();
            text += &String::from_utf8_lossy(&logs.stdout);
            text += &String::from_utf8_lossy(&logs.stderr);
        }
        text
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        docker_quiet(&["stack", "rm", &self.name]);
        // `stack rm` returns before the tasks are gone; volumes in use cannot be removed.
        let label = format!("label=com.docker.stack.namespace={}", self.name);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let left = Command::new("docker")
                .args(["ps", "-aq", "--filter", &label])
                .output()
                .map(|o| o.stdout)
                .unwrap_or_default();
            let networks = Command::new("docker")
                .args(["network", "ls", "-q", "--filter", &label])
                .output()
                .map(|o| o.stdout)
                .unwrap_or_default();
            if left.trim_ascii().is_empty() && networks.trim_ascii().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let volumes = Command::new("docker")
            .args([
                "volume",
                "ls",
                "-q",
                "--filter",
                &format!("name={}_", self.name),
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for v in volumes.split_whitespace() {
            docker_quiet(&["volume", "rm", "-f", v]);
        }
    }
}

/// A GET's status and JSON body; a refused connection is an error, not a panic (the
/// published ports answer only once their tasks run).
fn try_get(url: &str) -> Result<(u16, Value), String> {
    let r = client().get(url).send().map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let text = r.text().map_err(|e| e.to_string())?;
    let body = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
    Ok((status, body))
}

/// `total` of a search through `query`'s published port.
fn total(query: &str, q: &str) -> Result<u64, String> {
    let (status, body) = try_get(&format!("{query}/api/v1/search?q={}&limit=0", urlencode(q)))?;
    match body["total"].as_u64() {
        Some(n) if status == 200 => Ok(n),
        _ => Err(format!("{status} {body}")),
    }
}

/// `total` of a search asked of one indexer task directly, from inside its container
/// (indexers are not published): `sawmill health` prints the answer's body.
fn replica_total(container: &str, q: &str) -> Result<u64, String> {
    let url = format!(
        "http://127.0.0.1:7280/api/v1/search?q={}&limit=0",
        urlencode(q)
    );
    let out = Command::new("docker")
        .args(["exec", container, "sawmill", "health", &url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let body: Value = text
        .find('{')
        .and_then(|i| serde_json::from_str(&text[i..]).ok())
        .ok_or_else(|| format!("{text}{}", String::from_utf8_lossy(&out.stderr)))?;
    body["total"].as_u64().ok_or(text)
}

/// Replicas `query` sees up, per group.
fn up_replicas(query: &str) -> Result<(usize, usize), String> {
    let (_, h) = try_get(&format!("{query}/healthz"))?;
    let up = |g: &str| {
        h["groups"][g]
            .as_array()
            .map(|rs| rs.iter().filter(|r| r["up"] == true).count())
            .unwrap_or(0)
    };
    Ok((up("g0"), up("g1")))
}

fn fmt_dir(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

#[test]
fn a_swarm_stack_collects_a_containers_lines_and_survives_a_killed_indexer() {
    if !docker() {
        return;
    }
    let _swarm = Swarm::join();
    let id = fastrand::u32(..);
    let image = Image::build(&format!("sawmill-e2e-{id}"));
    // Nothing in the image but sawmill: no shell to run.
    let shell = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--entrypoint",
            "/bin/sh",
            &image.latest(),
            "-c",
            "true",
        ])
        .output()
        .unwrap();
    assert!(!shell.status.success(), "the image has no shell");
    // The shipper's socket directory on the host, as users make /run/sawmill.
    let sockets = TempDir::new("swarm-sockets");
    let (query_port, ui_port) = (free_port(), free_port());
    let stack = Stack::deploy(
        &format!("sawmille2e{id}"),
        &[
            ("SAWMILL_IMAGE", image.latest().as_str()),
            ("SAWMILL_QUERY_PORT", query_port.as_str()),
            ("SAWMILL_UI_PORT", ui_port.as_str()),
            ("SAWMILL_SOCKET_DIR", fmt_dir(sockets.path()).as_str()),
        ],
    );
    let query = format!("http://127.0.0.1:{query_port}");
    let ui = format!("http://127.0.0.1:{ui_port}");

    // Two groups of two replicas, found through tasks.indexer-gN.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if up_replicas(&query) == Ok((2, 2)) && sockets.path().join("dev-log").exists() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stack did not come up: query sees {:?}\n{}",
            up_replicas(&query),
            stack.diagnose()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Every task passes its health check (`sawmill health` on /healthz, no shell or curl in
    // the image); only the shipper runs as root.
    eventually("every task is healthy", 120, || {
        for s in ["shipper", "indexer-g0", "indexer-g1", "query", "ui"] {
            for c in stack.containers(s) {
                let state = docker_ok(&[
                    "inspect",
                    "--format",
                    "{{.State.Health.Status}} {{.Config.User}}",
                    &c,
                ]);
                let (health, user) = state.trim().split_once(' ').unwrap_or((state.trim(), ""));
                if health != "healthy" {
                    return Err(format!("{s}: {health}"));
                }
                let root = user.is_empty() || user.starts_with('0');
                assert_eq!(root, s == "shipper", "{s} runs as `{user}`");
            }
        }
        Ok(())
    });

    // An application as users run one: the socket directory mounted, /dev/log linked to it.
    let app = Container::run(
        &[
            "-v",
            &format!("{}:/run/sawmill", fmt_dir(sockets.path())),
            "--label",
            "sawmill.service=swarm-app-out",
        ],
        "ln -sf /run/sawmill/dev-log /dev/log && \
         for i in $(seq 100); do logger -t swarm-app \"syslog line $i\"; echo \"stdout line $i\"; done; \
         sleep 3600",
    );
    let apps = "service:swarm-app OR service:swarm-app-out";
    let mut seen = Err(String::new());
    eventually("the app's 200 lines are found through query", 120, || {
        seen = total(&query, apps);
        match &seen {
            Ok(200) => Ok(()),
            other => Err(format!("{other:?}\n{}", stack.diagnose())),
        }
    });
    assert_eq!(total(&query, "service:swarm-app"), Ok(100), "from /dev/log");
    assert_eq!(
        total(&query, "service:swarm-app-out AND stream:stdout"),
        Ok(100),
        "from stdout"
    );
    // The records name the node as their host, not a container id.
    let (_, hit) = get(&format!(
        "{query}/api/v1/search?q=service:swarm-app&limit=1"
    ));
    let node = docker_ok(&["info", "--format", "{{.Name}}"]);
    assert_eq!(hit["hits"][0]["host"], node.trim(), "{hit}");
    // The UI over the same cluster, on its published port.
    let page = client()
        .get(format!("{ui}/?q={}", urlencode("service:swarm-app")))
        .send()
        .unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().unwrap();
    assert!(page.contains("syslog line"), "the UI shows the lines");
    assert_eq!(get(&format!("{ui}/healthz")).0, 200);

    // Kill one replica of g0: Swarm replaces it in its slot, with its volume.
    let g0 = stack.containers("indexer-g0");
    assert_eq!(g0.len(), 2, "two g0 tasks: {g0:?}");
    let (killed, survivor) = (&g0[0], &g0[1]);
    docker_ok(&["kill", killed]);
    // The other replica answers for the group meanwhile: the same total.
    eventually(
        "the search answers the same total with a replica down",
        60,
        || match total(&query, apps) {
            Ok(200) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    // Records that arrive while it is away.
    let late = Container::run(
        &["-v", &format!("{}:/run/sawmill", fmt_dir(sockets.path()))],
        "ln -sf /run/sawmill/dev-log /dev/log && \
         for i in $(seq 50); do logger -t swarm-late \"late line $i\"; done; sleep 3600",
    );
    let replacement = {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let now = stack.containers("indexer-g0");
            if let Some(new) = now.iter().find(|c| *c != killed && *c != survivor) {
                break new.clone();
            }
            assert!(
                Instant::now() < deadline,
                "Swarm did not replace the killed task\n{}",
                stack.diagnose()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    // The replacement catches up: it holds what its peer holds, the late lines included.
    let all = "service:swarm-app OR service:swarm-app-out OR service:swarm-late";
    eventually("the replacement holds what its peer holds", 120, || {
        let (a, b) = (
            replica_total(survivor, all)?,
            replica_total(&replacement, all)?,
        );
        if a == b && a > 0 {
            Ok(())
        } else {
            Err(format!("survivor {a}, replacement {b}"))
        }
    });
    eventually(
        "query sees both replicas of g0 again",
        60,
        || match up_replicas(&query)? {
            (2, 2) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    assert_eq!(
        total(&query, apps),
        Ok(200),
        "the same total before and after"
    );
    eventually("the late lines are all found", 60, || {
        match total(&query, "service:swarm-late") {
            Ok(50) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    drop((app, late));
}

/// The stack passes settings left unset as empty variables (`${SAWMILL_OBJECT_STORE:-}`):
/// they must mean unset, not an empty value.
#[test]
fn settings_left_empty_by_a_stack_file_are_unset() {
    let dir = TempDir::new("emptyenv");
    let ix = Indexer::start_env(
        dir.path(),
        &[],
        &[
            ("SAWMILL_GROUP", ""),
            ("SAWMILL_OBJECT_STORE", ""),
            ("AWS_REGION", ""),
            ("AWS_ENDPOINT_URL", ""),
            ("SAWMILL_INSECURE", "true"),
        ],
    );
    let health = get_ok(&ix.api("/healthz"));
    assert_eq!(health["group"], "default", "{health}");
    assert!(health.get("store").is_none(), "no object store: {health}");
}
