//! Files: tails paths matching globs — Docker json-file, CRI and plain text (Mesos sandbox
//! `stdout`/`stderr`), told apart per file — through rename-and-create and copytruncate
//! rotation. A file is its own buffer: its lines wait for room in the queue, never dropped.
//! A line's idempotency key is its file and offset, and the checkpoint only moves past lines
//! every replica has handled, so a crash or restart neither loses nor repeats.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::enrich::enrich;
use crate::event::{AckTracker, Event};
use crate::queue::{Item, Queue, Source};

#[derive(Clone, Debug)]
pub struct FileConfig {
    /// Paths to follow; `*`, `?` and `[...]` as in a shell.
    pub globs: Vec<String>,
    /// Where offsets are kept (a JSON file).
    pub checkpoints: PathBuf,
    pub max_line_bytes: usize,
    /// The shipper's sender id; file records are keyed by it, the file and the offset.
    pub src: String,
    /// See `DockerConfig::gate`.
    pub gate: Arc<RwLock<()>>,
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
    /// Bumped when the file is truncated, so reused offsets get new keys.
    generation: u64,
    offset: u64,
    format: Option<Format>,
    ack: Arc<AckTracker>,
    /// A line joined from partials (Docker's 16 KiB cuts, CRI `P`): text, stream, ts, start.
    pending: Option<(String, &'static str, Option<OffsetDateTime>, u64)>,
}

/// Follows the globs until `stop`.
pub fn run(cfg: &FileConfig, queue: &Queue, stop: &AtomicBool) {
    let mut saved: HashMap<String, Value> = std::fs::read_to_string(&cfg.checkpoints)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    let mut tails: HashMap<String, Tail> = HashMap::new();
    let mut last_written = String::new();
    while !stop.load(Relaxed) {
        for pattern in &cfg.globs {
            let Ok(paths) = glob::glob(pattern) else {
                tracing::error!(%pattern, "Not a valid glob.");
                continue;
            };
            for path in paths.flatten() {
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                if !meta.is_file() {
                    continue;
                }
                let key = format!("{}-{}", meta.dev(), meta.ino());
                if let Some(t) = tails.get_mut(&key) {
                    t.path = path;
                    continue;
                }
                let Ok(file) = File::open(&path) else {
                    continue;
                };
                let (offset, generation) = saved
                    .get(&key)
                    .map(|v| {
                        (
                            v["offset"].as_u64().unwrap_or(0),
                            v["generation"].as_u64().unwrap_or(0),
                        )
                    })
                    .unwrap_or((0, 0));
                tracing::info!(path = %path.display(), offset, "Tailing a file.");
                tails.insert(
                    key.clone(),
                    Tail {
                        path,
                        file,
                        dev_ino: key,
                        generation,
                        offset,
                        format: None,
                        ack: AckTracker::new(offset),
                        pending: None,
                    },
                );
            }
        }
        let mut gone = Vec::new();
        for (key, t) in tails.iter_mut() {
            if !read_new(cfg, t, queue, stop) {
                break;
            }
            // Rotated away (renamed, or deleted), read to the end and every line back from
            // the replicas: done with it (lines they all gave up cannot be read again from a
            // file that is gone, and holding it open would keep its space).
            let current = std::fs::metadata(&t.path)
                .ok()
                .map(|m| format!("{}-{}", m.dev(), m.ino()));
            if current.as_deref() != Some(key.as_str())
                && t.ack.handled() >= t.offset
                && t.file
                    .metadata()
                    .map(|m| m.len() <= t.offset)
                    .unwrap_or(true)
            {
                gone.push(key.clone());
            }
        }
        for k in gone {
            tails.remove(&k);
            saved.remove(&k);
        }
        for (k, t) in &tails {
            saved.insert(
                k.clone(),
                json!({"path": t.path, "offset": t.ack.done(), "generation": t.generation}),
            );
        }
        let text = serde_json::to_string(&saved).unwrap_or_default();
        if text != last_written {
            let tmp = cfg.checkpoints.with_extension("tmp");
            if let Err(e) =
                std::fs::write(&tmp, &text).and_then(|_| std::fs::rename(&tmp, &cfg.checkpoints))
            {
                tracing::warn!(error = %e, "Could not save file checkpoints.");
            }
            last_written = text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads what was appended since the last look; false when stopping.
fn read_new(cfg: &FileConfig, t: &mut Tail, queue: &Queue, stop: &AtomicBool) -> bool {
    let len = match t.file.metadata() {
        Ok(m) => m.len(),
        Err(_) => return true,
    };
    if len < t.offset {
        // copytruncate: the same file starts over.
        tracing::info!(path = %t.path.display(), "File was truncated; reading it from the start.");
        t.offset = 0;
        t.generation += 1;
        t.ack = AckTracker::new(0);
        t.pending = None;
    }
    if len == t.offset {
        return true;
    }
    let want = (len - t.offset).min(4 << 20) as usize;
    let mut buf = vec![0u8; want];
    if t.file.seek(SeekFrom::Start(t.offset)).is_err() || t.file.read_exact(&mut buf).is_err() {
        return true;
    }
    let src = format!("{}/file/{}-{}", cfg.src, t.dev_ino, t.generation);
    let mut start = 0usize;
    while let Some(nl) = buf[start..].iter().position(|b| *b == b'\n') {
        let line = &buf[start..start + nl];
        let line_offset = t.offset + start as u64;
        let next = line_offset + nl as u64 + 1;
        let _gate = cfg.gate.read().unwrap();
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
            ev.fields
                .insert("path".into(), Value::String(t.path.display().to_string()));
            enrich(&mut ev);
            // A file is its own buffer: wait for room, never drop. When the shipper stops
            // first, the line is not handed on and the checkpoint stays before it.
            if !queue.push_wait(Item::Event(Box::new(ev), Source::File), stop) {
                return false;
            }
        }
        start += nl + 1;
    }
    if start == 0 && buf.len() >= 4 << 20 {
        // No newline in 4 MiB: ship it cut rather than wait forever.
        start = buf.len();
        let mut ev = plain(cfg, &buf);
        ev.key = Some((src, t.offset));
        ev.ack = Some((t.ack.clone(), t.offset..t.offset + start as u64));
        let _gate = cfg.gate.read().unwrap();
        if !queue.push_wait(Item::Event(Box::new(ev), Source::File), stop) {
            return false;
        }
    }
    t.offset += start as u64;
    true
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
            && OffsetDateTime::parse(ts, &Rfc3339).is_ok()
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
            let ts = v["time"]
                .as_str()
                .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok());
            (log.trim_end_matches('\n').to_string(), stream, ts, complete)
        }
        Format::Cri => {
            let s = String::from_utf8_lossy(line).into_owned();
            let mut parts = s.splitn(4, ' ');
            let ts = parts
                .next()
                .and_then(|x| OffsetDateTime::parse(x, &Rfc3339).ok());
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
    let truncated = text.len() > cfg.max_line_bytes;
    let mut message = text;
    if truncated {
        let mut cut = cfg.max_line_bytes;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    Some(Event {
        ts,
        received: Some(OffsetDateTime::now_utc()),
        message,
        stream: Some(stream),
        severity: Some(if stream == "stderr" { "err" } else { "info" }),
        truncated,
        // A joined line is keyed by where it began.
        key: Some((String::new(), start)),
        ..Default::default()
    })
}
