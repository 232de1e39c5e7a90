//! Files: tails paths matching globs — Docker json-file, CRI and plain text (Mesos sandbox
//! `stdout`/`stderr`), told apart per file — through rename-and-create and copytruncate
//! rotation, knowing a file by its inode and a fingerprint of its first bytes, so a copy is
//! recognised and a truncation seen even across restarts. A file is its own buffer: its
//! lines wait for room in the queue, never dropped. A line's idempotency key is its file and
//! offset, and the checkpoint only moves past lines every replica has handled, so a crash or
//! restart neither loses nor repeats. The kubelet's log files say in their path which pod
//! and container wrote them, and their records say so too.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sawmill_record::time::parse_rfc3339;
use sawmill_record::Severity;
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::ack::AckTracker;
use crate::error::{Error, Result};
use crate::event::{Event, Item, Source};
use crate::metrics::Metrics;
use crate::sources::{thread, Context, Running, SourceConfig};

#[derive(Clone, Debug)]
pub struct FileConfig {
    /// Paths to follow; `*`, `?` and `[...]` as in a shell.
    pub globs: Vec<String>,
    /// Where offsets are kept (a JSON file).
    pub checkpoints: PathBuf,
    pub max_line_bytes: usize,
    /// The shipper's sender id; file records are keyed by it, the file and the offset.
    pub src: String,
    /// Bytes of all files that may be sent and not yet taken by any replica: past it the
    /// files wait, so that while every replica is away their lines stay in the files
    /// rather than overflow the backlogs.
    pub window: u64,
}

impl SourceConfig for FileConfig {
    fn spawn(self: Box<Self>, cx: &Context) -> Result<Running> {
        for pattern in &self.globs {
            glob::Pattern::new(pattern).map_err(|e| {
                Error::Config(format!(
                    "--tail `{pattern}` is not a valid glob: {e} (escape `*`, `?` and `[` as `[*]`, `[?]` and `[[]`)"
                ))
            })?;
        }
        let cx = cx.clone();
        let t = thread("sawmill-files", move || run(&self, &cx))?;
        Ok(Running {
            thread: Some(t),
            ..Running::default()
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    /// `{"log":"…\n","stream":"stdout","time":"…"}`
    DockerJson,
    /// `2026-11-27T10:00:00.123456789Z stdout F text`
    Cri,
    Plain,
}

struct Tail {
    path: PathBuf,
    file: File,
    dev_ino: String,
    /// What the records' keys are made of: the file's own `dev-ino`, or, for a copy of a
    /// file already read (copytruncate), the original's, so that lines read from both have
    /// the same key and the indexer stores them once.
    id: String,
    /// Bumped when the file is truncated, so reused offsets get new keys.
    generation: u64,
    offset: u64,
    fp: Fingerprint,
    /// The modification time at the last look: a file cut and written again to the length
    /// already read has the same length, and only this says it changed.
    modified: Option<SystemTime>,
    format: Option<Format>,
    ack: Arc<AckTracker>,
    /// A line joined from partials (Docker's 16 KiB cuts, CRI `P`): text, stream, ts, start.
    pending: Option<(String, &'static str, Option<OffsetDateTime>, u64)>,
    /// The pod and container the kubelet wrote it for, from the path it was first seen at
    /// (a rotated copy keeps them).
    pod: Option<PodLog>,
}

/// The Kubernetes container whose output a kubelet log file holds.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PodLog {
    namespace: String,
    pod: String,
    container: String,
}

impl PodLog {
    /// Adds `k8s_namespace`, `k8s_pod`, `k8s_container`, and the container as `service`.
    fn describe(&self, ev: &mut Event) {
        for (k, v) in [
            ("k8s_namespace", &self.namespace),
            ("k8s_pod", &self.pod),
            ("k8s_container", &self.container),
        ] {
            ev.fields.insert(k.into(), Value::String(v.clone()));
        }
        ev.service.get_or_insert_with(|| self.container.clone());
    }
}

/// The pod and container of a file in the kubelet's layout, as it names them
/// (`pkg/kubelet/kuberuntime`, `BuildContainerLogsDirectory` and `logSymlink`):
/// `…/pods/NAMESPACE_POD_UID/CONTAINER/N.log`, or the link to it
/// `…/containers/POD_NAMESPACE_CONTAINER-ID.log`. Only the last components are read, so a
/// shipper that mounts the node's `/var/log` elsewhere (`/host/var/log`) finds them too.
/// Names never hold `_` (pods and namespaces are DNS names, containers DNS labels), which
/// is what makes the underscores separators.
fn cri_path_meta(path: &Path) -> Option<PodLog> {
    let parts: Vec<&str> = path
        .iter()
        .rev()
        .take(4)
        .map(|p| p.to_str())
        .collect::<Option<_>>()?;
    let dns = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
    };
    let meta = |namespace: &str, pod: &str, container: &str| {
        (dns(namespace) && dns(pod) && dns(container)).then(|| PodLog {
            namespace: namespace.to_string(),
            pod: pod.to_string(),
            container: container.to_string(),
        })
    };
    match parts.as_slice() {
        [file, container, pod_dir, "pods", ..] => {
            let restarts = file.strip_suffix(".log")?;
            if restarts.is_empty() || !restarts.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let [namespace, pod, uid] = split3(pod_dir)?;
            if !dns(uid) {
                return None;
            }
            meta(namespace, pod, container)
        }
        [file, "containers", ..] => {
            let [pod, namespace, rest] = split3(file.strip_suffix(".log")?)?;
            let (container, id) = rest.rsplit_once('-')?;
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            meta(namespace, pod, container)
        }
        _ => None,
    }
}

/// `a_b_c` as its three parts; none unless there are exactly three.
fn split3(s: &str) -> Option<[&str; 3]> {
    let mut it = s.split('_');
    let parts = [it.next()?, it.next()?, it.next()?];
    it.next().is_none().then_some(parts)
}

/// A file's first bytes, by which its content is recognised under another inode (a copy)
/// and a truncation is told apart from growth, as Vector's `checksum` fingerprinter does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Fingerprint {
    /// How many bytes it covers: `FP_BYTES`, or the whole file while it is shorter.
    len: u64,
    /// FNV-1a of those bytes.
    sum: u64,
}

/// 1 KiB holds about ten timestamped lines: enough to tell apart most files that start
/// with the same banner, little enough to read again on every look at a growing file.
const FP_BYTES: u64 = 1024;

impl Fingerprint {
    /// Of the file as it is now.
    fn of(file: &File) -> std::io::Result<Fingerprint> {
        let len = file.metadata()?.len().min(FP_BYTES);
        Fingerprint::of_first(file, len)
    }

    fn of_first(file: &File, len: u64) -> std::io::Result<Fingerprint> {
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, 0)?;
        let mut sum: u64 = 0xcbf2_9ce4_8422_2325;
        for b in buf {
            sum = (sum ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        Ok(Fingerprint { len, sum })
    }

    /// Whether `file` still starts with the bytes this fingerprint was taken of.
    fn matches(&self, file: &File) -> bool {
        self.len == 0 || Fingerprint::of_first(file, self.len).is_ok_and(|f| f == *self)
    }
}

/// A file read before, under any inode: where its content was read to.
#[derive(Clone, Debug)]
struct Known {
    id: String,
    generation: u64,
    offset: u64,
    fp: Fingerprint,
}

impl Known {
    fn from_saved(key: &str, v: &Value) -> Known {
        Known {
            id: v["id"].as_str().unwrap_or(key).to_string(),
            generation: v["generation"].as_u64().unwrap_or(0),
            offset: v["offset"].as_u64().unwrap_or(0),
            // Checkpoints written before fingerprints have none: nothing to compare.
            fp: Fingerprint {
                len: v["fp_len"].as_u64().unwrap_or(0),
                sum: v["fp"].as_u64().unwrap_or(0),
            },
        }
    }

    /// Whether `file`, of length `len`, holds this content up to where it was read: a
    /// copy of it. Never for a file read from nowhere, or known only by an old checkpoint.
    fn copied_to(&self, file: &File, len: u64) -> bool {
        self.offset > 0 && self.fp.len > 0 && len >= self.offset && self.fp.matches(file)
    }

    /// Whether `file` starts like this content but does not reach where it was read to.
    fn being_copied_to(&self, file: &File, len: u64) -> bool {
        self.offset > 0
            && self.fp.len > 0
            && len < self.offset
            && len >= self.fp.len
            && self.fp.matches(file)
    }
}

/// Where to start a file first seen under this `dev-ino`, and under which key.
fn resume(
    key: &str,
    path: &Path,
    file: &File,
    len: u64,
    saved: Option<&Value>,
    known: &[Known],
) -> (String, u64, u64) {
    if let Some(v) = saved {
        let k = Known::from_saved(key, v);
        // Checkpoints sit at line ends; anything else means other content at this offset.
        let at_line_end = k.offset == 0 || {
            let mut b = [0u8; 1];
            file.read_exact_at(&mut b, k.offset - 1).is_ok() && b[0] == b'\n'
        };
        if len >= k.offset && k.fp.matches(file) && at_line_end {
            return (k.id, k.generation, k.offset);
        }
        // Truncated (copytruncate) or replaced while the shipper was away: start over,
        // under new keys.
        tracing::info!(path = %path.display(), offset = k.offset, len, "File was truncated or replaced since its checkpoint; reading it from the start.");
        return (key.to_string(), k.generation + 1, 0);
    }
    if let Some(k) = known.iter().rev().find(|k| k.copied_to(file, len)) {
        tracing::info!(path = %path.display(), offset = k.offset, "File is a copy of one already read (copytruncate); reading on from where that one was.");
        return (k.id.clone(), k.generation, k.offset);
    }
    (key.to_string(), 0, 0)
}

/// Rotated copies remembered at most: logrotate keeps a handful per file.
const MAX_KNOWN: usize = 1024;

/// Follows the globs until `stop`.
fn run(cfg: &FileConfig, cx: &Context) {
    let mut files = Files::open(cfg);
    let mut watch = PatternWatch::default();
    while !cx.stop.load(Relaxed) {
        let matches = files.discover();
        watch.update(&cfg.globs, &matches, cx.queue.metrics());
        files.read_round(cx);
        files.save();
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The file source between rounds: the files tailed, and what was read before.
struct Files<'a> {
    cfg: &'a FileConfig,
    /// The checkpoints, by `dev-ino`, as last written.
    saved: HashMap<String, Value>,
    /// What was read before under other inodes: the checkpoints as they were at start (a
    /// copy made while the shipper was down), then content truncated while running.
    known: Vec<Known>,
    tails: HashMap<String, Tail>,
    last_written: String,
    round: usize,
}

impl Files<'_> {
    fn open(cfg: &FileConfig) -> Files<'_> {
        let saved: HashMap<String, Value> = std::fs::read_to_string(&cfg.checkpoints)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        let known = saved.iter().map(|(k, v)| Known::from_saved(k, v)).collect();
        Files {
            cfg,
            saved,
            known,
            tails: HashMap::new(),
            last_written: String::new(),
            round: 0,
        }
    }

    /// Starts tailing the files that match now and are not tailed yet; returns how many
    /// files each pattern matches.
    fn discover(&mut self) -> Vec<usize> {
        let mut matches = vec![0usize; self.cfg.globs.len()];
        for (i, pattern) in self.cfg.globs.iter().enumerate() {
            let Ok(paths) = glob::glob(pattern) else {
                // The shipper refuses invalid globs at start; counted as matching nothing.
                continue;
            };
            for path in paths.flatten() {
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                if !meta.is_file() {
                    continue;
                }
                matches[i] += 1;
                let key = format!("{}-{}", meta.dev(), meta.ino());
                if let Some(t) = self.tails.get_mut(&key) {
                    t.path = path;
                    continue;
                }
                if let Some(t) = self.tail(key.clone(), path) {
                    self.tails.insert(key, t);
                }
            }
        }
        matches
    }

    /// A file newly matched, and where to resume it; none while it looks like a copy still
    /// being written.
    fn tail(&self, key: String, path: PathBuf) -> Option<Tail> {
        let file = File::open(&path).ok()?;
        let meta = file.metadata().ok();
        let len = meta.as_ref().map_or(0, |m| m.len());
        // Before the fingerprint is taken: a write after it moves the time again.
        let modified = meta.and_then(|m| m.modified().ok());
        // The live files too: a copy is usually seen while its original is tailed.
        let live = self.tails.values().map(|t| Known {
            id: t.id.clone(),
            generation: t.generation,
            offset: t.ack.done(),
            fp: t.fp,
        });
        let candidates: Vec<Known> = self.known.iter().cloned().chain(live).collect();
        if !self.saved.contains_key(&key)
            && candidates.iter().any(|k| k.being_copied_to(&file, len))
        {
            // Starts like a file already read but is shorter than what was read of it: a
            // copy still being written. Look again next time.
            return None;
        }
        let (id, generation, offset) =
            resume(&key, &path, &file, len, self.saved.get(&key), &candidates);
        tracing::info!(path = %path.display(), offset, "Tailing a file.");
        let pod = cri_path_meta(&path);
        Some(Tail {
            path,
            fp: Fingerprint::of(&file).unwrap_or_default(),
            modified,
            file,
            dev_ino: key,
            id,
            generation,
            offset,
            format: None,
            ack: AckTracker::new(offset),
            pending: None,
            pod,
        })
    }

    /// Reads what is new in every file, as far as the window allows, and lets go of files
    /// rotated away and done with.
    fn read_round(&mut self, cx: &Context) {
        let out: u64 = self
            .tails
            .values()
            .map(|t| t.offset.saturating_sub(t.ack.delivered_through()))
            .sum();
        // With nothing out, one line goes whatever its size, so a huge line cannot stall.
        let mut window = Window {
            left: self.cfg.window.saturating_sub(out),
            free_line: out == 0,
        };
        // Each round starts with another file, so that one busy file cannot take the whole
        // window round after round.
        let mut order: Vec<String> = self.tails.keys().cloned().collect();
        order.sort_unstable();
        if !order.is_empty() {
            let first = self.round % order.len();
            order.rotate_left(first);
        }
        self.round = self.round.wrapping_add(1);
        let mut gone = Vec::new();
        for key in order {
            let Some(t) = self.tails.get_mut(&key) else {
                continue;
            };
            if !read_new(self.cfg, t, cx, &mut self.known, &mut window) {
                break;
            }
            // Rotated away (renamed, or deleted), read to the end and every line handled by
            // the replicas: done with it. Lines they all gave up keep it open, deleted or
            // not, until they are read again from it.
            let current = std::fs::metadata(&t.path)
                .ok()
                .map(|m| format!("{}-{}", m.dev(), m.ino()));
            if current.as_deref() != Some(key.as_str())
                && t.ack.done() >= t.offset
                && t.file
                    .metadata()
                    .map(|m| m.len() <= t.offset)
                    .unwrap_or(true)
            {
                gone.push(key);
            }
        }
        for k in gone {
            self.tails.remove(&k);
            self.saved.remove(&k);
        }
        if self.known.len() > MAX_KNOWN {
            self.known.drain(..self.known.len() - MAX_KNOWN);
        }
    }

    /// Writes the checkpoints when they changed.
    fn save(&mut self) {
        for (k, t) in &self.tails {
            self.saved.insert(
                k.clone(),
                json!({
                    "path": t.path,
                    "offset": t.ack.done(),
                    "generation": t.generation,
                    "id": t.id,
                    "fp": t.fp.sum,
                    "fp_len": t.fp.len,
                }),
            );
        }
        let text = serde_json::to_string(&self.saved).unwrap_or_default();
        if text != self.last_written {
            let path = &self.cfg.checkpoints;
            let tmp = path.with_extension("tmp");
            if let Err(e) = std::fs::write(&tmp, &text).and_then(|_| std::fs::rename(&tmp, path)) {
                tracing::warn!(error = %e, "Could not save file checkpoints.");
            }
            self.last_written = text;
        }
    }
}

/// Which patterns match no file: a typo or a path that does not exist yet is said once at
/// start (WARN) and always shown in a gauge; the pattern is still watched, so a file that
/// appears later is tailed.
#[derive(Default)]
struct PatternWatch {
    /// Per pattern: it matched a file at the last look. Empty before the first look.
    matched: Vec<bool>,
}

impl PatternWatch {
    fn update(&mut self, globs: &[String], matches: &[usize], metrics: &Metrics) {
        let first = self.matched.is_empty();
        self.matched.resize(globs.len(), false);
        for ((pattern, n), matched) in globs.iter().zip(matches).zip(&mut self.matched) {
            if first && *n == 0 {
                tracing::warn!(%pattern, "No file matches this tail pattern; watching for one.");
            } else if !first && !*matched && *n > 0 {
                tracing::info!(%pattern, files = n, "Files match the tail pattern now.");
            }
            *matched = *n > 0;
        }
        let unmatched = matches.iter().filter(|n| **n == 0).count() as u64;
        metrics.tail_patterns_unmatched(unmatched);
    }
}

/// What the files may still send before a replica takes some of it.
struct Window {
    left: u64,
    free_line: bool,
}

impl Window {
    /// Takes room for a line of `size` bytes, if there is.
    fn take(&mut self, size: u64) -> bool {
        if size <= self.left || std::mem::take(&mut self.free_line) {
            self.left = self.left.saturating_sub(size);
            return true;
        }
        false
    }
}

/// Takes in what changed in a file since the last look: lines every replica gave up are
/// read again, a truncated file is read from the start. Returns its length now.
fn refresh(t: &mut Tail, known: &mut Vec<Known>) -> Option<u64> {
    if let Some(from) = t.ack.rewind() {
        // Every replica gave these lines up (their backlogs overflowed): the file still
        // holds them, so read them again rather than skip them.
        if from < t.offset {
            tracing::warn!(path = %t.path.display(), from, to = t.offset, "Every replica gave up lines of a file; reading them again.");
            t.offset = from;
            t.pending = None;
        }
    }
    let meta = t.file.metadata().ok()?;
    let len = meta.len();
    // Written since the last look (by the time, where the filesystem keeps one). The first
    // bytes are read again only then, not on every look at an idle file.
    let modified = meta.modified().ok();
    let touched = modified != std::mem::replace(&mut t.modified, modified);
    let written = len != t.offset || touched;
    // Shorter than what was read, or other first bytes (cut and written again between two
    // looks, maybe to the very length that had been read): copytruncate, the same file
    // starts over.
    if len < t.offset || (written && !t.fp.matches(&t.file)) {
        tracing::info!(path = %t.path.display(), "File was truncated; reading it from the start.");
        // A copy not seen yet is recognised by what this content was.
        known.push(Known {
            id: t.id.clone(),
            generation: t.generation,
            offset: t.ack.done(),
            fp: t.fp,
        });
        t.id = t.dev_ino.clone();
        t.offset = 0;
        t.generation += 1;
        t.ack = AckTracker::new(0);
        t.pending = None;
        t.fp = Fingerprint::default();
    }
    // A file shorter than the fingerprint grows into it.
    if t.fp.len < FP_BYTES && len > t.fp.len {
        if let Ok(fp) = Fingerprint::of(&t.file) {
            t.fp = fp;
        }
    }
    Some(len)
}

/// Reads what was appended since the last look; false when stopping.
fn read_new(
    cfg: &FileConfig,
    t: &mut Tail,
    cx: &Context,
    known: &mut Vec<Known>,
    window: &mut Window,
) -> bool {
    let (queue, stop) = (&cx.queue, &*cx.stop);
    let Some(len) = refresh(t, known) else {
        return true;
    };
    if len == t.offset {
        return true;
    }
    let want = (len - t.offset).min(4 << 20) as usize;
    let mut buf = vec![0u8; want];
    if t.file.seek(SeekFrom::Start(t.offset)).is_err() || t.file.read_exact(&mut buf).is_err() {
        return true;
    }
    let src = format!("{}/file/{}-{}", cfg.src, t.id, t.generation);
    let mut start = 0usize;
    let mut held = false;
    while let Some(nl) = buf[start..].iter().position(|b| *b == b'\n') {
        let line = &buf[start..start + nl];
        let line_offset = t.offset + start as u64;
        let next = line_offset + nl as u64 + 1;
        if !window.take(next - line_offset) {
            // The replicas have enough of this file's lines to take: read on later.
            held = true;
            break;
        }
        let _gate = cx.gate.read().unwrap();
        if stop.load(Relaxed) {
            return false;
        }
        let format = *t.format.get_or_insert_with(|| detect(line));
        if let Some(ev) = parse(cfg, t, format, line, line_offset) {
            let mut ev = ev;
            // A joined line is keyed, and acknowledged, from where its first piece began.
            let first = ev.key.map_or(line_offset, |k| k.1);
            ev.key = Some((src.clone(), first));
            ev.ack = Some((t.ack.clone(), first..next));
            describe(t, &mut ev);
            // A file is its own buffer: wait for room, never drop. When the shipper stops
            // first, the line is not handed on and the checkpoint stays before it.
            if !queue.push_wait(Item::Event(Box::new(ev), Source::File), stop) {
                return false;
            }
        }
        start += nl + 1;
    }
    if !held && start == 0 && buf.len() >= 4 << 20 {
        // No newline in 4 MiB: ship it cut rather than wait forever.
        start = buf.len();
        let mut ev = plain(cfg, &buf);
        describe(t, &mut ev);
        ev.key = Some((src, t.offset));
        ev.ack = Some((t.ack.clone(), t.offset..t.offset + start as u64));
        let _gate = cx.gate.read().unwrap();
        if !queue.push_wait(Item::Event(Box::new(ev), Source::File), stop) {
            return false;
        }
    }
    t.offset += start as u64;
    true
}

/// What a line's file says about it: its path, and the pod and container it belongs to.
fn describe(t: &Tail, ev: &mut Event) {
    ev.fields
        .insert("path".into(), Value::String(t.path.display().to_string()));
    if let Some(pod) = &t.pod {
        pod.describe(ev);
    }
}

fn detect(line: &[u8]) -> Format {
    if line.first() == Some(&b'{') {
        if let Ok(v) = serde_json::from_slice::<Value>(line) {
            if v.get("log").is_some() && v.get("time").is_some() {
                return Format::DockerJson;
            }
        }
    }
    let s = String::from_utf8_lossy(line);
    let mut parts = s.splitn(4, ' ');
    if let (Some(ts), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next()) {
        if matches!(stream, "stdout" | "stderr")
            && matches!(tag, "P" | "F")
            && parse_rfc3339(ts).is_some()
        {
            return Format::Cri;
        }
    }
    Format::Plain
}

fn plain(cfg: &FileConfig, line: &[u8]) -> Event {
    let truncated = line.len() > cfg.max_line_bytes;
    let line = &line[..line.len().min(cfg.max_line_bytes)];
    let text = String::from_utf8_lossy(line);
    Event {
        received: Some(OffsetDateTime::now_utc()),
        message: text.strip_suffix('\r').unwrap_or(&text).to_string(),
        stream: Some("file"),
        truncated,
        ..Default::default()
    }
}

/// One line in its file's format; `None` while a split line is still being joined.
fn parse(
    cfg: &FileConfig,
    t: &mut Tail,
    format: Format,
    line: &[u8],
    offset: u64,
) -> Option<Event> {
    let (text, stream, ts, complete) = match format {
        Format::Plain => return Some(plain(cfg, line)),
        Format::DockerJson => {
            let Ok(v) = serde_json::from_slice::<Value>(line) else {
                return Some(plain(cfg, line));
            };
            let log = v["log"].as_str().unwrap_or("").to_string();
            let complete = log.ends_with('\n');
            let stream = if v["stream"] == "stderr" {
                "stderr"
            } else {
                "stdout"
            };
            let ts = v["time"].as_str().and_then(parse_rfc3339);
            (log.trim_end_matches('\n').to_string(), stream, ts, complete)
        }
        Format::Cri => {
            let s = String::from_utf8_lossy(line).into_owned();
            let mut parts = s.splitn(4, ' ');
            let ts = parts.next().and_then(parse_rfc3339);
            let stream = if parts.next() == Some("stderr") {
                "stderr"
            } else {
                "stdout"
            };
            let complete = parts.next() != Some("P");
            (parts.next().unwrap_or("").to_string(), stream, ts, complete)
        }
    };
    let (text, ts, start) = match t.pending.take() {
        Some((mut acc, _, first_ts, start)) => {
            acc.push_str(&text);
            (acc, first_ts.or(ts), start)
        }
        None => (text, ts, offset),
    };
    if !complete {
        t.pending = Some((text, stream, ts, start));
        return None;
    }
    let mut message = text;
    let truncated = sawmill_record::record::cut_str(&mut message, cfg.max_line_bytes);
    Some(Event {
        ts,
        received: Some(OffsetDateTime::now_utc()),
        message,
        stream: Some(stream),
        severity: Some(if stream == "stderr" {
            Severity::Err
        } else {
            Severity::Info
        }),
        truncated,
        // A joined line is keyed by where it began.
        key: Some((String::new(), start)),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A file in a fresh temporary directory, removed with it.
    struct Temp(PathBuf);

    impl Temp {
        fn new(name: &str) -> Temp {
            let dir = std::env::temp_dir().join(format!(
                "sawmill-fp-{name}-{}-{}",
                std::process::id(),
                fastrand::u32(..)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Temp(dir)
        }

        fn file(&self, name: &str, text: &str) -> (PathBuf, File) {
            let p = self.0.join(name);
            std::fs::write(&p, text).unwrap();
            let f = File::open(&p).unwrap();
            (p, f)
        }
    }

    impl Drop for Temp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn lines(range: std::ops::Range<u32>) -> String {
        range.map(|i| format!("line {i} of the log\n")).collect()
    }

    fn saved(offset: usize, fp: Option<Fingerprint>) -> Value {
        let mut v = json!({"path": "x", "offset": offset, "generation": 3});
        if let Some(fp) = fp {
            v["fp"] = json!(fp.sum);
            v["fp_len"] = json!(fp.len);
        }
        v
    }

    #[test]
    fn kubelet_log_paths_name_their_pod_and_container() {
        let pod = |ns: &str, pod: &str, c: &str| {
            Some(PodLog {
                namespace: ns.into(),
                pod: pod.into(),
                container: c.into(),
            })
        };
        let id = "4f1a".repeat(16);
        let cases = [
            (
                "/var/log/pods/shop_checkout-7d9f8.x2_0e4c3b1a-5f2d-4c1e-9b8a-7d6c5b4a3f2e/app/0.log".to_string(),
                pod("shop", "checkout-7d9f8.x2", "app"),
            ),
            (
                "/host/var/log/pods/kube-system_coredns-5d78c_uid/coredns/12.log".into(),
                pod("kube-system", "coredns-5d78c", "coredns"),
            ),
            (
                format!("/var/log/containers/checkout-7d9f8.x2_shop_app-{id}.log"),
                pod("shop", "checkout-7d9f8.x2", "app"),
            ),
            // A container name with dashes: the id follows the last one.
            (
                format!("/var/log/containers/web-0_prod_side-car-{id}.log"),
                pod("prod", "web-0", "side-car"),
            ),
            // Not the kubelet's layout.
            ("/var/log/pods/shop_checkout_uid/app/0.log.20261127-100000".into(), None),
            ("/var/log/pods/shop_checkout_uid/app/current.log".into(), None),
            ("/var/log/pods/shop_checkout/app/0.log".into(), None),
            ("/var/log/pods/a_b_c_d/app/0.log".into(), None),
            ("/var/log/other/shop_checkout_uid/app/0.log".into(), None),
            ("/var/log/containers/web-0_prod_app.log".into(), None),
            ("/var/log/containers/web-0_prod_app-xyz.log".into(), None),
            (format!("/var/log/containers/web-0_prod-{id}.log"), None),
            (format!("/var/lib/docker/containers/{id}/{id}-json.log"), None),
            ("/var/log/syslog".into(), None),
            ("0.log".into(), None),
        ];
        for (path, want) in cases {
            assert_eq!(cri_path_meta(Path::new(&path)), want, "{path}");
        }
    }

    #[test]
    fn a_checkpoint_resumes_only_where_the_same_content_still_is() {
        let tmp = Temp::new("resume");
        let before = lines(0..100);
        let (_, f) = tmp.file("a", &before);
        let fp = Fingerprint::of(&f).unwrap();
        let at = lines(0..40).len();
        let len = before.len() as u64;
        let go =
            |f: &File, len: u64, v: Value| resume("1-2", Path::new("a"), f, len, Some(&v), &[]);
        assert_eq!(
            go(&f, len, saved(at, Some(fp))),
            ("1-2".into(), 3, at as u64)
        );
        // A checkpoint from before fingerprints: the offset is trusted.
        assert_eq!(go(&f, len, saved(at, None)), ("1-2".into(), 3, at as u64));
        // Not at a line end: other content is at that offset.
        assert_eq!(go(&f, len, saved(at - 3, None)), ("1-2".into(), 4, 0));
        // Cut and written again past the old offset: other first bytes.
        let after = lines(500..700);
        let (_, g) = tmp.file("b", &after);
        assert_eq!(
            go(&g, after.len() as u64, saved(at, Some(fp))),
            ("1-2".into(), 4, 0)
        );
        // Shorter than the offset.
        let (_, h) = tmp.file("c", &lines(0..10));
        assert_eq!(
            go(&h, lines(0..10).len() as u64, saved(at, None)),
            ("1-2".into(), 4, 0)
        );
    }

    #[test]
    fn a_copy_is_known_by_its_first_bytes_and_its_length() {
        let tmp = Temp::new("copy");
        let text = lines(0..100);
        let (_, orig) = tmp.file("orig", &text);
        let read_to = lines(0..90).len() as u64;
        let k = Known {
            id: "1-2".into(),
            generation: 5,
            offset: read_to,
            fp: Fingerprint::of(&orig).unwrap(),
        };
        assert_eq!(k.fp.len, FP_BYTES);
        let (_, copy) = tmp.file("copy", &text);
        let start = resume(
            "1-9",
            Path::new("copy"),
            &copy,
            text.len() as u64,
            None,
            std::slice::from_ref(&k),
        );
        assert_eq!(
            start,
            ("1-2".into(), 5, read_to),
            "read on under the original's keys"
        );
        // A copy still being written is shorter than what was read of the original.
        let part = &text[..1500];
        let (_, partial) = tmp.file("partial", part);
        assert!(k.being_copied_to(&partial, part.len() as u64));
        // Another file is new.
        let other = lines(1000..1100);
        let (_, new) = tmp.file("new", &other);
        let start = resume(
            "1-7",
            Path::new("new"),
            &new,
            other.len() as u64,
            None,
            &[k],
        );
        assert_eq!(start, ("1-7".into(), 0, 0));
    }

    #[test]
    fn a_file_cut_and_written_again_to_the_length_read_starts_over() {
        let tmp = Temp::new("same-length");
        let (p, f) = tmp.file("a", "n=11\nn=12\n");
        let mut t = Tail {
            path: p.clone(),
            dev_ino: "1-2".into(),
            id: "1-2".into(),
            generation: 0,
            offset: 10,
            fp: Fingerprint::of(&f).unwrap(),
            modified: f.metadata().unwrap().modified().ok(),
            file: f,
            format: None,
            ack: AckTracker::new(10),
            pending: None,
            pod: None,
        };
        let mut known = Vec::new();
        // Times set apart by whole seconds: what a write does, without the clock's tick.
        let write = |text: &str, secs: u64| {
            let w = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&p)
                .unwrap();
            (&w).write_all(text.as_bytes()).unwrap();
            w.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
                .unwrap();
        };
        assert_eq!(refresh(&mut t, &mut known), Some(10));
        // The same bytes written again: nothing to read again.
        write("n=11\nn=12\n", 1_000);
        assert_eq!(refresh(&mut t, &mut known), Some(10));
        assert_eq!((t.offset, t.generation, known.len()), (10, 0, 0));
        // Cut and written again to the same length between two looks: read from the start,
        // under new keys, the content read before remembered for a copy of it.
        write("n=13\nn=14\n", 2_000);
        assert_eq!(refresh(&mut t, &mut known), Some(10));
        assert_eq!((t.offset, t.generation, known.len()), (0, 1, 1));
        assert_eq!(known[0].offset, 10);
    }

    #[test]
    fn a_short_file_is_fingerprinted_whole_and_the_fingerprint_grows_with_it() {
        let tmp = Temp::new("short");
        let (p, f) = tmp.file("a", "one\n");
        let small = Fingerprint::of(&f).unwrap();
        assert_eq!(small.len, 4);
        std::fs::write(&p, format!("one\n{}", lines(0..100))).unwrap();
        assert!(small.matches(&f), "the first four bytes are unchanged");
        std::fs::write(&p, lines(0..100)).unwrap();
        assert!(!small.matches(&f), "other first bytes");
        assert_eq!(Fingerprint::of(&f).unwrap().len, FP_BYTES);
    }
}
