//! Docker: follows every running container's stdout and stderr through the Engine API on its
//! unix socket, and new containers through the events stream, with per-container
//! checkpoints so a restart neither loses nor repeats a line.

use sawmill_record::time::parse_rfc3339;
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sawmill_record::Severity;
use serde_json::Value;
use time::OffsetDateTime;

use crate::error::Result;
use crate::event::{Event, Item, Source};
use crate::sources::{thread, Context, Running, SourceConfig};

/// Where the engine is and where checkpoints go.
#[derive(Clone, Debug)]
pub struct DockerConfig {
    /// `unix:///var/run/docker.sock` or a socket path.
    pub host: String,
    /// Directory of per-container checkpoints.
    pub checkpoints: PathBuf,
    /// Longer lines are cut and flagged.
    pub max_line_bytes: usize,
}

impl SourceConfig for DockerConfig {
    fn spawn(self: Box<Self>, cx: &Context) -> Result<Running> {
        let cx = cx.clone();
        // Not joined at stop: it blocks on the engine's streams; followers stop reading
        // (and checkpointing) as soon as `stop` is raised.
        thread("sawmill-docker", move || run(&self, &cx))?;
        Ok(Running::default())
    }
}

impl DockerConfig {
    fn socket(&self) -> PathBuf {
        PathBuf::from(self.host.strip_prefix("unix://").unwrap_or(&self.host))
    }
}

/// A response whose body is read as it arrives (chunked or not).
struct Response {
    status: u16,
    body: Box<dyn BufRead + Send>,
}

/// How long the engine has to answer a request with its status and headers: a busy
/// engine that never answers must not hold a follower (and its container) for good.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// One HTTP/1.1 GET over the engine's unix socket; `body_timeout` bounds each read of the
/// body after the head (none for streams that may stay quiet).
fn get(socket: &Path, path: &str, body_timeout: Option<Duration>) -> std::io::Result<Response> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(HEAD_TIMEOUT))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"
    )?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut chunked = false;
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
            {
                chunked = true;
            }
        }
    }
    r.get_ref().set_read_timeout(body_timeout)?;
    let body: Box<dyn BufRead + Send> = if chunked {
        Box::new(BufReader::new(Chunked {
            inner: r,
            left: 0,
            done: false,
        }))
    } else {
        Box::new(r)
    };
    Ok(Response { status, body })
}

/// Decodes `Transfer-Encoding: chunked`.
struct Chunked<R> {
    inner: R,
    left: usize,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            self.inner.read_line(&mut line)?;
            if line.trim().is_empty() {
                line.clear();
                self.inner.read_line(&mut line)?;
            }
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                self.done = true;
                return Ok(0);
            }
            self.left = size;
        }
        let want = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= n;
        Ok(n)
    }
}

fn get_json(socket: &Path, path: &str) -> std::io::Result<Value> {
    let mut r = get(socket, path, Some(Duration::from_secs(10)))?;
    let mut text = String::new();
    r.body.read_to_string(&mut text)?;
    if r.status != 200 {
        // 404: a container gone meanwhile (`docker run --rm`), not a failure to report.
        let kind = match r.status {
            404 => std::io::ErrorKind::NotFound,
            _ => std::io::ErrorKind::Other,
        };
        return Err(std::io::Error::new(
            kind,
            format!("{path}: {} {text}", r.status),
        ));
    }
    serde_json::from_str(&text).map_err(std::io::Error::other)
}

/// What records carry about a container.
#[derive(Clone, Debug)]
struct Meta {
    id: String,
    name: String,
    image: String,
    service: String,
    tty: bool,
    /// What the orchestrator's labels say about the task (see [`LABEL_FIELDS`]).
    fields: Vec<(&'static str, String)>,
    /// False when labelled `sawmill.collect=false`.
    collect: bool,
}

/// The labels orchestrators put on the containers they start that become record fields:
/// (label, field). Swarm and Compose label every task and service container; Kubernetes'
/// dockershim labelled its containers with their pod.
const LABEL_FIELDS: [(&str, &str); 8] = [
    ("com.docker.swarm.service.name", "swarm_service"),
    ("com.docker.swarm.task.name", "swarm_task"),
    ("com.docker.swarm.node.id", "swarm_node_id"),
    ("com.docker.compose.service", "compose_service"),
    ("com.docker.compose.project", "compose_project"),
    ("io.kubernetes.pod.name", "k8s_pod"),
    ("io.kubernetes.pod.namespace", "k8s_namespace"),
    ("io.kubernetes.container.name", "k8s_container"),
];

/// A container's `service` and fields from its labels (`Config.Labels`) and `name`. The
/// service is the first there is of: the `sawmill.service` label, the Swarm service, the
/// Compose service, the Kubernetes container, the container's name.
fn labelled(labels: &Value, name: &str) -> (String, Vec<(&'static str, String)>) {
    let label = |l: &str| labels[l].as_str().filter(|v| !v.is_empty());
    let fields: Vec<(&'static str, String)> = LABEL_FIELDS
        .iter()
        .filter_map(|(l, field)| Some((*field, label(l)?.to_string())))
        .collect();
    let service = [
        "sawmill.service",
        "com.docker.swarm.service.name",
        "com.docker.compose.service",
        "io.kubernetes.container.name",
    ]
    .into_iter()
    .find_map(label)
    .unwrap_or(name)
    .to_string();
    (service, fields)
}

fn inspect(socket: &Path, id: &str) -> std::io::Result<Meta> {
    let v = get_json(socket, &format!("/containers/{id}/json"))?;
    let name = v["Name"]
        .as_str()
        .unwrap_or(id)
        .trim_start_matches('/')
        .to_string();
    let (service, fields) = labelled(&v["Config"]["Labels"], &name);
    Ok(Meta {
        id: v["Id"].as_str().unwrap_or(id).to_string(),
        name,
        image: v["Config"]["Image"].as_str().unwrap_or("").to_string(),
        service,
        tty: v["Config"]["Tty"].as_bool().unwrap_or(false),
        fields,
        collect: v["Config"]["Labels"]["sawmill.collect"].as_str() != Some("false"),
    })
}

/// This process's own container id, if it runs in one, so it does not ship itself.
fn own_container() -> Option<String> {
    container_of_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").ok()?)
}

/// Docker bind-mounts `/var/lib/docker/containers/<id>/hostname` onto `/etc/hostname` in
/// every container. Only that mount is read: on a host, other 64-hex ids (overlay layers,
/// other containers' shm) appear in mountinfo too, and must not be taken for ours.
fn container_of_mountinfo(mountinfo: &str) -> Option<String> {
    mountinfo.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (root, mount_point) = (f.nth(3)?, f.next()?);
        if mount_point != "/etc/hostname" {
            return None;
        }
        root.split('/')
            .find(|w| w.len() == 64 && w.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_string)
    })
}

/// How often running containers are listed again: a follower that failed (the engine was
/// busy, a request timed out) or a start event missed between a listing and the events
/// stream is picked up within this, not never.
const RESCAN: Duration = Duration::from_secs(5);

/// The containers being followed, shared by the events loop and the rescans.
struct Followers {
    cfg: DockerConfig,
    cx: Context,
    socket: PathBuf,
    /// This process's own container, never followed.
    me: Option<String>,
    following: Mutex<HashSet<String>>,
    /// Containers whose follower failed, so a failure that repeats is logged once.
    warned: Mutex<HashSet<String>>,
    /// Containers labelled `sawmill.collect=false`, not inspected again while they run.
    skipped: Mutex<HashSet<String>>,
}

impl Followers {
    /// Starts a follower for `id` unless one is running.
    fn follow(self: &Arc<Self>, id: &str) {
        if self.me.as_deref() == Some(id)
            || self.skipped.lock().unwrap().contains(id)
            || !self.following.lock().unwrap().insert(id.into())
        {
            return;
        }
        let (me, id, gone) = (self.clone(), id.to_string(), id.to_string());
        let spawned = thread("sawmill-docker-follow", move || {
            match follow_container(&me.cfg, &me.socket, &id, &me.cx) {
                Ok(Followed::ToTheEnd) => {
                    tracing::debug!(container = %id, "A container's output ended.")
                }
                Ok(Followed::NotCollected) => {
                    tracing::debug!(container = %id, "A container labelled sawmill.collect=false is not followed.");
                    me.skipped.lock().unwrap().insert(id.clone());
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::debug!(container = %id, error = %e, "A container went away before it was followed.")
                }
                // Retried by the next rescan while the container runs.
                Err(e) if me.warned.lock().unwrap().insert(id.clone()) => {
                    tracing::warn!(container = %id, error = %e, "Could not follow a container; retrying.")
                }
                Err(e) => {
                    tracing::debug!(container = %id, error = %e, "Could not follow a container.")
                }
            }
            me.following.lock().unwrap().remove(&id);
        });
        if let Err(e) = spawned {
            // Not followed: the next rescan tries again.
            self.following.lock().unwrap().remove(&gone);
            tracing::warn!(error = %e, "Could not start a container follower.");
        }
    }

    /// Follows every running container not yet followed.
    fn rescan(self: &Arc<Self>) -> std::io::Result<()> {
        let list = get_json(&self.socket, "/containers/json")?;
        let ids: Vec<&str> = list
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["Id"].as_str())
            .collect();
        // Forget failures of containers that are gone, so the set stays bounded.
        self.skipped
            .lock()
            .unwrap()
            .retain(|w| ids.contains(&w.as_str()));
        self.warned
            .lock()
            .unwrap()
            .retain(|w| ids.contains(&w.as_str()));
        for id in ids {
            self.follow(id);
        }
        Ok(())
    }
}

/// Follows containers until `stop`; reconnects when the engine goes away.
fn run(cfg: &DockerConfig, cx: &Context) {
    let stop = cx.stop.clone();
    let socket = cfg.socket();
    let _ = std::fs::create_dir_all(&cfg.checkpoints);
    let followers = Arc::new(Followers {
        cfg: cfg.clone(),
        cx: cx.clone(),
        socket: socket.clone(),
        me: own_container(),
        following: Mutex::default(),
        warned: Mutex::default(),
        skipped: Mutex::default(),
    });
    {
        let (followers, stop) = (followers.clone(), stop.clone());
        let rescans = thread("sawmill-docker-scan", move || {
            // The events loop lists the containers once it is subscribed; this lists them
            // again every RESCAN after that.
            loop {
                let until = std::time::Instant::now() + RESCAN;
                while !stop.load(Relaxed) && std::time::Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(100));
                }
                if stop.load(Relaxed) {
                    break;
                }
                // An engine that is away is reported by the events loop.
                let _ = followers.rescan();
            }
        });
        if let Err(e) = rescans {
            tracing::warn!(error = %e, "Could not start the container rescans.");
        }
    }
    let mut backoff = Duration::from_millis(200);
    while !stop.load(Relaxed) {
        let res = (|| -> std::io::Result<()> {
            let filters =
                "%7B%22type%22%3A%5B%22container%22%5D%2C%22event%22%3A%5B%22start%22%5D%7D";
            // Subscribed before listing, so a container that starts in between is seen.
            let mut ev = get(&socket, &format!("/events?filters={filters}"), None)?;
            followers.rescan()?;
            let mut line = String::new();
            while !stop.load(Relaxed) {
                line.clear();
                match ev.body.read_line(&mut line) {
                    Ok(0) => return Err(std::io::Error::other("events stream ended")),
                    Ok(_) => {
                        if let Ok(v) = serde_json::from_str::<Value>(&line) {
                            if let Some(id) = v["id"].as_str().or(v["Actor"]["ID"].as_str()) {
                                followers.follow(id);
                            }
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })();
        if let Err(e) = res {
            tracing::warn!(error = %e, "Docker engine not reachable; retrying.");
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(5));
        } else {
            backoff = Duration::from_millis(200);
        }
    }
}

/// How a container's follower ended.
enum Followed {
    /// Its output ended (the container stopped) or the shipper is stopping.
    ToTheEnd,
    /// Labelled `sawmill.collect=false`: its lines come another way (`sawmill run` inside
    /// it ships them with its task's metadata), and reading them here too would store each
    /// twice.
    NotCollected,
}

/// Streams one container's output from its checkpoint on.
fn follow_container(
    cfg: &DockerConfig,
    socket: &Path,
    id: &str,
    cx: &Context,
) -> std::io::Result<Followed> {
    let (queue, stop) = (&cx.queue, &*cx.stop);
    let meta = inspect(socket, id)?;
    if !meta.collect {
        return Ok(Followed::NotCollected);
    }
    let cp_path = cfg.checkpoints.join(&meta.id);
    let mut checkpoint: Option<OffsetDateTime> = std::fs::read_to_string(&cp_path)
        .ok()
        .and_then(|s| parse_rfc3339(s.trim()));
    let since = checkpoint
        .map(|t| format!("{}.{:09}", t.unix_timestamp(), t.nanosecond()))
        .unwrap_or_else(|| "0".into());
    // Blocking reads: a read timeout could cut a chunk header in half.
    let mut r = get(
        socket,
        &format!(
            "/containers/{}/logs?follow=1&stdout=1&stderr=1&timestamps=1&since={since}",
            meta.id
        ),
        None,
    )?;
    if r.status != 200 {
        return Err(std::io::Error::other(format!("logs: status {}", r.status)));
    }
    let mut partial: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut header = [0u8; 8];
    loop {
        if stop.load(Relaxed) {
            break;
        }
        let Some((stream, payload)) = next_frame(&mut r, meta.tty, &mut header)? else {
            break;
        };
        let (ts, body) = split_stamp(&payload);
        let buf = &mut partial[stream - 1];
        buf.extend_from_slice(body);
        if buf.last() != Some(&b'\n') {
            continue;
        }
        let _gate = cx.gate.read().unwrap();
        // Stopping: leave the line to be read again after the restart.
        if stop.load(Relaxed) {
            break;
        }
        let mut line = std::mem::take(buf);
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        // Lines at or before the checkpoint were shipped before a restart.
        if let (Some(ts), Some(cp)) = (ts, checkpoint) {
            if ts <= cp {
                continue;
            }
        }
        let ev = event(cfg, &meta, stream, ts, line);
        // Docker keeps the log: wait for room rather than skip the line.
        if !queue.push_wait(Item::Event(Box::new(ev), Source::Docker), stop) {
            break;
        }
        if ts.is_some() {
            checkpoint = ts;
            save(&cp_path, checkpoint);
        }
    }
    Ok(Followed::ToTheEnd)
}

/// The next frame of a logs stream as (stream: 1 stdout, 2 stderr; payload), or none at
/// its end. TTY containers send raw lines; the others 8-byte headers `[stream, 0, 0, 0,
/// size BE]` before each payload.
fn next_frame(
    r: &mut Response,
    tty: bool,
    header: &mut [u8; 8],
) -> std::io::Result<Option<(usize, Vec<u8>)>> {
    if tty {
        let mut line = Vec::new();
        return match r.body.read_until(b'\n', &mut line)? {
            0 => Ok(None),
            _ => Ok(Some((1, line))),
        };
    }
    match r.body.read_exact(header) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let size = u32::from_be_bytes(header[4..8].try_into().unwrap()) as usize;
    let mut payload = vec![0u8; size];
    r.body.read_exact(&mut payload)?;
    Ok(Some((if header[0] == 2 { 2 } else { 1 }, payload)))
}

/// Each frame is `<RFC 3339 nanos> <text>`; Docker cuts lines at 16 KiB into frames that
/// each carry a timestamp and only the last a newline.
fn split_stamp(text: &[u8]) -> (Option<OffsetDateTime>, &[u8]) {
    match text.iter().position(|b| *b == b' ') {
        Some(sp) => (
            std::str::from_utf8(&text[..sp])
                .ok()
                .and_then(parse_rfc3339),
            &text[sp + 1..],
        ),
        None => (None, text),
    }
}

/// A container's line as an event: stderr is `err` unless the line says otherwise.
fn event(
    cfg: &DockerConfig,
    meta: &Meta,
    stream: usize,
    ts: Option<OffsetDateTime>,
    mut line: Vec<u8>,
) -> Event {
    let truncated = line.len() > cfg.max_line_bytes;
    line.truncate(cfg.max_line_bytes);
    let mut ev = Event {
        ts,
        received: Some(OffsetDateTime::now_utc()),
        message: String::from_utf8_lossy(&line).into_owned(),
        service: Some(meta.service.clone()),
        container: Some(meta.name.clone()),
        image: Some(meta.image.clone()),
        stream: Some(if stream == 2 { "stderr" } else { "stdout" }),
        severity: Some(if stream == 2 {
            Severity::Err
        } else {
            Severity::Info
        }),
        truncated,
        ..Default::default()
    };
    ev.fields
        .insert("container_id".into(), Value::String(meta.id.clone()));
    for (k, v) in &meta.fields {
        ev.fields.insert(k.to_string(), Value::String(v.clone()));
    }
    ev
}

/// After every line, without fsync: a power cut costs a few repeated lines, never a lost one.
fn save(path: &Path, cp: Option<OffsetDateTime>) {
    let Some(t) = cp.and_then(|t| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    }) else {
        return;
    };
    let tmp = path.with_extension("tmp");
    if let Err(e) = std::fs::write(&tmp, t.as_bytes()).and_then(|_| std::fs::rename(&tmp, path)) {
        tracing::warn!(error = %e, "Could not save a container checkpoint.");
    }
}

#[cfg(test)]
mod tests {
    use super::{container_of_mountinfo, labelled};
    use serde_json::json;

    #[test]
    fn orchestrator_labels_become_fields_and_name_the_service_in_order() {
        let swarm = json!({
            "com.docker.swarm.service.name": "shop_web",
            "com.docker.swarm.task.name": "shop_web.1.x7k2",
            "com.docker.swarm.node.id": "n0de1d",
            "com.docker.compose.service": "web",
            "com.docker.compose.project": "shop",
            "io.kubernetes.pod.name": "web-5d8f",
            "io.kubernetes.pod.namespace": "prod",
            "io.kubernetes.container.name": "app",
            "other": "ignored",
        });
        let (service, fields) = labelled(&swarm, "shop_web.1.x7k2");
        assert_eq!(service, "shop_web", "the Swarm service before Compose's");
        assert_eq!(
            fields,
            [
                ("swarm_service", "shop_web"),
                ("swarm_task", "shop_web.1.x7k2"),
                ("swarm_node_id", "n0de1d"),
                ("compose_service", "web"),
                ("compose_project", "shop"),
                ("k8s_pod", "web-5d8f"),
                ("k8s_namespace", "prod"),
                ("k8s_container", "app"),
            ]
            .map(|(k, v)| (k, v.to_string()))
        );
        let mut labels = swarm.clone();
        labels["sawmill.service"] = json!("mine");
        assert_eq!(labelled(&labels, "c").0, "mine", "sawmill.service wins");
        let compose =
            json!({"com.docker.compose.service": "web", "io.kubernetes.container.name": "app"});
        assert_eq!(labelled(&compose, "shop-web-1").0, "web");
        let k8s = json!({"io.kubernetes.container.name": "app"});
        assert_eq!(labelled(&k8s, "k8s_app_web-5d8f").0, "app");
        let (service, fields) = labelled(&json!({"com.docker.compose.service": ""}), "plain");
        assert_eq!(
            (service.as_str(), fields.len()),
            ("plain", 0),
            "no labels (or empty ones): the container's name, no fields"
        );
        assert_eq!(
            labelled(&serde_json::Value::Null, "c").0,
            "c",
            "a container without labels"
        );
    }

    #[test]
    fn own_container_comes_from_the_hostname_mount_only() {
        let id = "3f4e2a1b".repeat(8);
        let other = "aa11bb22".repeat(8);
        let in_container = format!(
            "612 590 0:52 / / rw,relatime - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/{other}\n\
             640 612 254:1 /var/lib/docker/containers/{id}/hostname /etc/hostname rw,relatime - ext4 /dev/vda rw\n"
        );
        assert_eq!(container_of_mountinfo(&in_container), Some(id.clone()));
        // A host sees other containers' mounts, never one on its own /etc/hostname.
        let on_host = format!(
            "300 29 0:60 / /var/lib/docker/containers/{id}/mounts/shm rw - tmpfs shm rw\n\
             301 29 0:61 / /var/lib/docker/overlay2/{other}/merged rw - overlay overlay rw\n"
        );
        assert_eq!(container_of_mountinfo(&on_host), None);
    }
}
