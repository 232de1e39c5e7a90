//! Sawmill as users run it on Docker Swarm: the image `deploy/build-image` makes and
//! `deploy/swarm/stack.yml` deployed with `docker stack deploy`, on this machine's engine
//! (a single-node swarm). An application container logs through the shipper's socket and
//! on stdout; its lines are found through `query`'s and the UI's published ports; an indexer
//! task is killed, Swarm replaces it, and the replacement catches up.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::docker::{docker, Container};
use crate::util::*;

/// Runs `docker ARGS`, failing the test with its output when it fails.
fn docker_ok(args: &[&str]) -> String {
    docker_try(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `docker ARGS`: its standard output, or what it said when it failed.
fn docker_try(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker").args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    match out.status.success() {
        true => Ok(stdout),
        false => Err(format!(
            "docker {}: {stdout}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )),
    }
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
    fn deploy(name: &str, files: &[&str], env: &[(&str, String)]) -> Stack {
        let mut cmd = Command::new("docker");
        cmd.args(["stack", "deploy"]);
        for f in files {
            cmd.args(["-c", f]);
        }
        let out = cmd
            .arg(name)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .envs(env.iter().map(|(k, v)| (k, v)))
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

/// How the test reads `query`: plain, or over TLS with a read token.
struct Reader {
    client: reqwest::blocking::Client,
    token: Option<String>,
}

impl Reader {
    fn plain() -> Reader {
        Reader {
            client: client(),
            token: None,
        }
    }

    /// A GET's status and JSON body; a refused connection is an error, not a panic (the
    /// published ports answer only once their tasks run).
    fn get(&self, url: &str) -> Result<(u16, Value), String> {
        let mut req = self.client.get(url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let r = req.send().map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        let text = r.text().map_err(|e| e.to_string())?;
        let body = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        Ok((status, body))
    }

    /// `total` of a search through `query`'s published port.
    fn total(&self, query: &str, q: &str) -> Result<u64, String> {
        let (status, body) =
            self.get(&format!("{query}/api/v1/search?q={}&limit=0", urlencode(q)))?;
        match body["total"].as_u64() {
            Some(n) if status == 200 => Ok(n),
            _ => Err(format!("{status} {body}")),
        }
    }

    /// Replicas `query` sees up, per group.
    fn up_replicas(&self, query: &str) -> Result<(usize, usize), String> {
        let (_, h) = self.get(&format!("{query}/healthz"))?;
        let up = |g: &str| {
            h["groups"][g]
                .as_array()
                .map(|rs| rs.iter().filter(|r| r["up"] == true).count())
                .unwrap_or(0)
        };
        Ok((up("g0"), up("g1")))
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

/// One test at a time deploys: `swarm init` and `leave` are the engine's, not a test's.
static ONE_SWARM: Mutex<()> = Mutex::new(());

/// Docker secrets for `tls.yml`, named `PREFIX-cert`, …; removed when dropped.
struct Secrets(Vec<String>);

impl Secrets {
    fn create(prefix: &str, files: &[(&str, &Path)]) -> Secrets {
        let mut made = Secrets(Vec::new());
        for (what, file) in files {
            let name = format!("{prefix}-{what}");
            docker_ok(&["secret", "create", &name, path_str(file)]);
            made.0.push(name);
        }
        made
    }
}

impl Drop for Secrets {
    fn drop(&mut self) {
        for name in &self.0 {
            docker_quiet(&["secret", "rm", name]);
        }
    }
}

/// A stack deployed from a fresh image, with what it needs; everything is removed when
/// dropped, in this order (fields drop top to bottom).
struct Deployment {
    stack: Stack,
    _secrets: Option<Secrets>,
    _image: Image,
    _swarm: Swarm,
    /// The host directory of the shipper's socket, as users make /run/sawmill.
    sockets: TempDir,
    query: String,
    ui: String,
    _one: MutexGuard<'static, ()>,
}

impl Deployment {
    /// Builds the image, deploys `files` (with `env` and the secrets `make_secrets` makes
    /// given the secrets' prefix) and waits until `query` sees two replicas in each group.
    fn up(
        files: &[&str],
        env: &[(&str, &str)],
        make_secrets: impl FnOnce(&str) -> Option<Secrets>,
        scheme: &str,
        reader: &Reader,
    ) -> Deployment {
        let one = ONE_SWARM.lock().unwrap_or_else(|e| e.into_inner());
        let swarm = Swarm::join();
        let id = fastrand::u32(..);
        let image = Image::build(&format!("sawmill-e2e-{id}"));
        let name = format!("sawmille2e{id}");
        let secrets = make_secrets(&name);
        let sockets = TempDir::new("swarm-sockets");
        let (query_port, ui_port) = (free_port(), free_port());
        let mut all_env = vec![
            ("SAWMILL_IMAGE", image.latest()),
            ("SAWMILL_QUERY_PORT", query_port.clone()),
            ("SAWMILL_UI_PORT", ui_port.clone()),
            ("SAWMILL_SOCKET_DIR", path_str(sockets.path()).to_string()),
            ("SAWMILL_SECRETS", name.clone()),
        ];
        all_env.extend(env.iter().map(|(k, v)| (*k, v.to_string())));
        let stack = Stack::deploy(&name, files, &all_env);
        let d = Deployment {
            stack,
            _secrets: secrets,
            _image: image,
            _swarm: swarm,
            sockets,
            query: format!("{scheme}://127.0.0.1:{query_port}"),
            ui: format!("{scheme}://127.0.0.1:{ui_port}"),
            _one: one,
        };
        // Two groups of two replicas, found through tasks.indexer-gN.
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if reader.up_replicas(&d.query) == Ok((2, 2))
                && d.sockets.path().join("dev-log").exists()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the stack did not come up: query sees {:?}\n{}",
                reader.up_replicas(&d.query),
                d.stack.diagnose()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        // Every task passes its health check (`sawmill health` on /healthz, no shell or
        // curl in the image); only the shipper runs as root.
        eventually("every task is healthy", 120, || {
            for s in ["shipper", "indexer-g0", "indexer-g1", "query", "ui"] {
                for c in d.stack.containers(s) {
                    // A task listed a moment ago may be gone: Swarm replaces one that
                    // failed its health check, which is what this wait rides out.
                    let state = docker_try(&[
                        "inspect",
                        "--format",
                        "{{.State.Health.Status}} {{.Config.User}}",
                        &c,
                    ])
                    .map_err(|e| format!("{s}: {e}"))?;
                    let (health, user) = state.trim().split_once(' ').unwrap_or((state.trim(), ""));
                    if health != "healthy" {
                        return Err(format!("{s}: {health}\n{}", d.stack.diagnose()));
                    }
                    let root = user.is_empty() || user.starts_with('0');
                    assert_eq!(root, s == "shipper", "{s} runs as `{user}`");
                }
            }
            Ok(())
        });
        d
    }

    /// An application as users run one: the socket directory mounted, /dev/log linked to
    /// it; `script` runs after that.
    fn app(&self, args: &[&str], script: &str) -> Container {
        let mount = format!("{}:/run/sawmill", path_str(self.sockets.path()));
        let mut all = vec!["-v", mount.as_str()];
        all.extend_from_slice(args);
        Container::run(
            &all,
            &format!("ln -sf /run/sawmill/dev-log /dev/log && {script}; sleep 3600"),
        )
    }
}

#[test]
fn a_swarm_stack_collects_a_containers_lines_and_survives_a_killed_indexer() {
    if !docker() {
        return;
    }
    let d = Deployment::up(
        &["deploy/swarm/stack.yml"],
        &[],
        |_| None,
        "http",
        &Reader::plain(),
    );
    let r = Reader::plain();
    let (stack, query, ui) = (&d.stack, d.query.as_str(), d.ui.as_str());
    // Nothing in the image but sawmill: no shell to run.
    let shell = Command::new("docker")
        .args(["run", "--rm", "--entrypoint", "/bin/sh"])
        .args([&d._image.latest(), "-c", "true"])
        .output()
        .unwrap();
    assert!(!shell.status.success(), "the image has no shell");

    let app = d.app(
        &["--label", "sawmill.service=swarm-app-out"],
        "for i in $(seq 100); do logger -t swarm-app \"syslog line $i\"; echo \"stdout line $i\"; done",
    );
    let apps = "service:swarm-app OR service:swarm-app-out";
    let mut seen = Err(String::new());
    eventually("the app's 200 lines are found through query", 120, || {
        seen = r.total(query, apps);
        match &seen {
            Ok(200) => Ok(()),
            other => Err(format!("{other:?}\n{}", stack.diagnose())),
        }
    });
    // `query` asks one replica of each group, maybe another one this time, which repair may
    // not have brought level yet (see below): the same wait.
    let node = docker_ok(&["info", "--format", "{{.Name}}"]);
    eventually(
        "each source's lines are found, named for the node",
        60,
        || {
            let syslog = r.total(query, "service:swarm-app")?;
            let stdout = r.total(query, "service:swarm-app-out AND stream:stdout")?;
            // The records name the node as their host, not a container id.
            let (_, hit) = get(&format!(
                "{query}/api/v1/search?q=service:swarm-app&limit=1"
            ));
            match (syslog, stdout) {
                (100, 100) if hit["hits"][0]["host"] == node.trim() => Ok(()),
                _ => Err(format!("/dev/log {syslog}, stdout {stdout}, {hit}")),
            }
        },
    );
    // The UI over the same cluster, on its published port. It asks a replica of each group
    // on its own, which may be the one repair has not yet brought level with its peer (see
    // below), so it is given a repair round or two, as the total through `query` was.
    eventually("the UI shows the lines", 60, || {
        let page = client()
            .get(format!("{ui}/?q={}", urlencode("service:swarm-app")))
            .send()
            .map_err(|e| e.to_string())?;
        let status = page.status();
        let page = page.text().map_err(|e| e.to_string())?;
        match status == 200 && page.contains("syslog line") {
            true => Ok(()),
            false => Err(format!(
                "{status}: {}",
                page[page.find("<main").unwrap_or(0)..]
                    .chars()
                    .take(4000)
                    .collect::<String>()
            )),
        }
    });
    assert_eq!(get(&format!("{ui}/healthz")).0, 200);

    // Kill one replica of a group that holds the lines: Swarm replaces it in its slot, with
    // its volume. A sender's records go to groups by blocks of 256 (cluster's placement:
    // a hash of the sender's name and the block), so these few hundred lines may all be on
    // one group, and which one changes with the sender's name. (Killing in g0 always made
    // the test fail when they were all on g1: "survivor 0, replacement 0".) Both replicas
    // must hold them first: `query` found them on one, and the shipper may have sent to a
    // group before discovery listed its second replica, which then copies them from its
    // peer by repair, a round later; and on a loaded machine one `sawmill health` inside a
    // task may time out. Asking the first replica of each group once failed in CI ("a group
    // holds the lines"), and said nothing of why: this says what each replica answered.
    let all = "service:swarm-app OR service:swarm-app-out OR service:swarm-late";
    let mut held = None;
    eventually("both replicas of a group hold the lines", 120, || {
        let mut seen = Vec::new();
        for g in ["g0", "g1"] {
            let tasks = stack.containers(&format!("indexer-{g}"));
            let totals: Vec<_> = tasks.iter().map(|t| replica_total(t, all)).collect();
            if tasks.len() == 2 && totals[0] == totals[1] && matches!(totals[0], Ok(n) if n > 0) {
                held = Some((g, tasks));
                return Ok(());
            }
            seen.push(format!("{g}: {totals:?}"));
        }
        Err(seen.join("; "))
    });
    let (group, tasks) = held.expect("eventually returned Ok");
    let (killed, survivor) = (&tasks[0], &tasks[1]);
    docker_ok(&["kill", killed]);
    // The other replica answers for the group meanwhile: the same total.
    eventually(
        "the search answers the same total with a replica down",
        60,
        || match r.total(query, apps) {
            Ok(200) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    // Records that arrive while it is away.
    let late = d.app(
        &[],
        "for i in $(seq 50); do logger -t swarm-late \"late line $i\"; done",
    );
    let replacement = {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let now = stack.containers(&format!("indexer-{group}"));
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
        "query sees both replicas of each group again",
        60,
        || match r.up_replicas(query)? {
            (2, 2) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    assert_eq!(
        r.total(query, apps),
        Ok(200),
        "the same total before and after"
    );
    eventually("the late lines are all found", 60, || {
        match r.total(query, "service:swarm-late") {
            Ok(50) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    drop((app, late));
}

/// `tls.yml` over the stack, set up as its header says: the certificate made by the
/// `openssl` command given there, tokens and users as Docker secrets. Every part then speaks
/// https to the others (indexers found by `dns+https://tasks.…` and verified against that
/// name), the indexers need tokens, the UI a sign-in, and the health checks still pass.
#[test]
fn a_swarm_stack_with_tls_yml_ships_and_searches_over_tls_with_tokens() {
    if !docker() {
        return;
    }
    let dir = TempDir::new("swarm-tls");
    let file = |name: &str| dir.path().join(name);
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "365", "-subj", "/CN=sawmill"])
        .args(["-keyout", path_str(&file("key.pem"))])
        .args(["-out", path_str(&file("cert.pem"))])
        .args([
            "-addext",
            "subjectAltName=DNS:tasks.indexer-g0,DNS:tasks.indexer-g1,IP:127.0.0.1",
        ])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let (ingest, read) = (
        format!("ingest-{}", fastrand::u64(..)),
        format!("read-{}", fastrand::u64(..)),
    );
    std::fs::write(file("ingest-token"), format!("{ingest}\n")).unwrap();
    std::fs::write(file("read-token"), format!("{read}\n")).unwrap();
    let hash = hash_password("a long passphrase");
    std::fs::write(file("users"), format!("alice:{hash}\n")).unwrap();

    let reader = Reader {
        client: tls_client(&[&file("cert.pem")], None),
        token: Some(read.clone()),
    };
    let d = Deployment::up(
        &["deploy/swarm/stack.yml", "deploy/swarm/tls.yml"],
        &[("SAWMILL_SCHEME", "https")],
        |prefix| {
            Some(Secrets::create(
                prefix,
                &[
                    ("cert", &file("cert.pem")),
                    ("key", &file("key.pem")),
                    ("ca", &file("cert.pem")),
                    ("ingest-token", &file("ingest-token")),
                    ("read-token", &file("read-token")),
                    ("users", &file("users")),
                ],
            ))
        },
        "https",
        &reader,
    );
    let query = d.query.as_str();
    // The shipper reaches the indexers by dns+https with the ingest token.
    let _app = d.app(
        &[],
        "for i in $(seq 20); do logger -t swarm-tls \"over tls $i\"; done",
    );
    eventually(
        "the lines are found through query over https",
        120,
        || match reader.total(query, "service:swarm-tls") {
            Ok(20) => Ok(()),
            other => Err(format!("{other:?}\n{}", d.stack.diagnose())),
        },
    );
    // Without the read token, query refuses; plain http gets no answer.
    let anonymous = Reader {
        client: tls_client(&[&file("cert.pem")], None),
        token: None,
    };
    let refused = anonymous.get(&format!("{query}/api/v1/search?q=*"));
    assert_eq!(refused.map(|(s, _)| s), Ok(401));
    let plain = format!("{}/healthz", query.replacen("https", "http", 1));
    assert!(client().get(&plain).send().is_err(), "no plain http");
    // The UI asks for a sign-in.
    let page = tls_client(&[&file("cert.pem")], None)
        .get(format!("{}/", d.ui))
        .send()
        .unwrap();
    assert_eq!(
        page.url().path(),
        "/signin",
        "redirected to the sign-in page"
    );
    assert_eq!(page.status(), 200);
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
