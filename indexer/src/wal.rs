//! The write-ahead log: records are appended and fsynced here before an ingest is acknowledged.
//!
//! A log position is a global byte offset; each segment file is named by the position it
//! starts at. A frame is `[len: u32 LE][crc32: u32 LE][payload]`, and a record's id is the
//! position of its frame, so ids grow with arrival order.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const HEADER: usize = 8;
/// A new segment is started once the current one is this large.
pub const SEGMENT_BYTES: u64 = 64 << 20;

pub struct Wal {
    dir: PathBuf,
    file: File,
    seg_start: u64,
    seg_len: u64,
    /// A failed write may have left bytes past `seg_len` (or, after a failed fsync, pages
    /// whose state nobody knows): they are cut off, or a new segment started, before the
    /// next write is accepted.
    needs_reset: bool,
    /// The segment is full but the next one could not be started: it must be, before the
    /// next write (see `append`).
    needs_rollover: bool,
}

pub fn encode_frame(buf: &mut Vec<u8>, payload: &[u8]) {
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    buf.extend_from_slice(payload);
}

fn segment_path(dir: &Path, start: u64) -> PathBuf {
    dir.join(format!("{start:020}.wal"))
}

/// Segment start positions, in order.
fn segments(dir: &Path) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name
            .strip_suffix(".wal")
            .and_then(|n| n.parse::<u64>().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

impl Wal {
    /// Opens the log, calling `visit(position, payload)` for every intact frame at or after
    /// `from`. A torn frame at the end of the last segment (a crash mid-write, never
    /// acknowledged) is cut off; the log then continues from there.
    pub fn open(dir: &Path, from: u64, mut visit: impl FnMut(u64, &[u8])) -> Result<Wal> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let segs = segments(dir)?;
        let mut end = from;
        for (i, &start) in segs.iter().enumerate() {
            let last = i + 1 == segs.len();
            let next = segs.get(i + 1).copied().unwrap_or(u64::MAX);
            let path = segment_path(dir, start);
            if next <= from {
                continue;
            }
            let data = fs::read(&path).map_err(|e| Error::io(&path, e))?;
            let (off, size) = scan_segment(&data, start, from, next, |pos, payload| {
                visit(pos, payload);
                true
            });
            if off < size {
                if last {
                    tracing::warn!(path = %path.display(), bytes = size - off, "Cutting a torn write off the end of the write-ahead log (it was never acknowledged).");
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| Error::io(&path, e))?;
                    f.set_len(off as u64).map_err(|e| Error::io(&path, e))?;
                    f.sync_all().map_err(|e| Error::io(&path, e))?;
                } else {
                    tracing::error!(path = %path.display(), offset = off, "Write-ahead log segment is corrupt; records after this point in it are lost.");
                }
            }
            end = end.max(start + off as u64);
        }
        match segs.last() {
            Some(&start) if start + SEGMENT_BYTES > end && start <= end => {
                let path = segment_path(dir, start);
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| Error::io(&path, e))?;
                Ok(Wal {
                    dir: dir.to_path_buf(),
                    file,
                    seg_start: start,
                    seg_len: end - start,
                    needs_reset: false,
                    needs_rollover: false,
                })
            }
            _ => Wal::create_segment(dir, end),
        }
    }

    fn create_segment(dir: &Path, start: u64) -> Result<Wal> {
        let path = segment_path(dir, start);
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        sync_dir(dir)?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            file,
            seg_start: start,
            seg_len: 0,
            needs_reset: false,
            needs_rollover: false,
        })
    }

    /// The position the next frame will get.
    pub fn next_position(&self) -> u64 {
        self.seg_start + self.seg_len
    }

    /// Appends encoded frames and makes them durable. On failure nothing of `frames` is
    /// left in the log, so the caller may report the whole write as failed.
    pub fn append(&mut self, frames: &[u8]) -> Result<()> {
        self.reset()?;
        if self.needs_rollover {
            *self = Wal::create_segment(&self.dir, self.next_position())?;
        }
        let path = segment_path(&self.dir, self.seg_start);
        let res = self
            .file
            .write_all_at(frames, self.seg_len)
            .and_then(|_| self.file.sync_data());
        if let Err(e) = res {
            // After a failed write or fsync, what the file holds past `seg_len` is unknown
            // (Linux may even have dropped the dirty pages and report the next fsync as
            // clean): none of it was acknowledged, so it goes before anything else is written.
            self.needs_reset = true;
            if let Err(e) = self.reset() {
                tracing::warn!(error = %e, "Could not cut a failed write off the write-ahead log yet; retrying before the next write.");
            }
            return Err(Error::io(path, e));
        }
        self.seg_len += frames.len() as u64;
        if self.seg_len >= SEGMENT_BYTES {
            // The frames are durable already. A failed rollover may still leave the new
            // segment's file behind, and reading stops where the next segment starts: writing
            // on in this one would put acknowledged frames where no replay reads them. So the
            // next write starts the segment first, and fails (unacknowledged) until it can.
            match Wal::create_segment(&self.dir, self.next_position()) {
                Ok(next) => *self = next,
                Err(e) => {
                    tracing::warn!(error = %e, "Could not start a new write-ahead log segment; retrying before the next write.");
                    self.needs_rollover = true;
                }
            }
        }
        Ok(())
    }

    /// Makes the log end cleanly at `next_position()` after a failed write: the segment is
    /// cut back to its last acknowledged byte, or, if even that fails, a new segment starts
    /// there (reading a segment stops where the next one starts, so whatever the old one
    /// holds beyond is never read).
    fn reset(&mut self) -> Result<()> {
        if !self.needs_reset {
            return Ok(());
        }
        let path = segment_path(&self.dir, self.seg_start);
        let cut = self
            .file
            .set_len(self.seg_len)
            .and_then(|_| self.file.sync_all());
        match cut {
            Ok(()) => self.needs_reset = false,
            Err(e) if self.seg_len == 0 => return Err(Error::io(path, e)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "Could not cut a failed write off the write-ahead log; starting a new segment.");
                *self = Wal::create_segment(&self.dir, self.next_position())?;
            }
        }
        Ok(())
    }
}

/// Calls `visit(position, payload)` for each intact frame of a segment that starts at
/// `start`, from position `from` on and below `below`, until `visit` returns false. Returns
/// how far the intact frames reach (an offset in `data`) and how many bytes of `data` belong
/// to the segment at all (none at or past the next segment's start).
fn scan_segment(
    data: &[u8],
    start: u64,
    from: u64,
    below: u64,
    mut visit: impl FnMut(u64, &[u8]) -> bool,
) -> (usize, usize) {
    let size = (below.saturating_sub(start)).min(data.len() as u64) as usize;
    let data = &data[..size];
    let mut off = 0usize;
    while off + HEADER <= data.len() {
        let len = u32::from_le_bytes(data[off..off + 4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(data[off + 4..off + 8].try_into().unwrap());
        let body = off + HEADER;
        // Zeroes (a preallocated or zero-filled tail) are torn too: no record is empty.
        if len == 0 || body + len > data.len() || crc32fast::hash(&data[body..body + len]) != crc {
            break;
        }
        let pos = start + off as u64;
        if pos >= from && !visit(pos, &data[body..body + len]) {
            return (off, off);
        }
        off = body + len;
    }
    (off, size)
}

/// Reads the frames at positions in `[from, to)`, which a running log has made durable,
/// calling `visit(position, payload)` until it returns false. For a writer that lost what
/// it held uncommitted: it is added again from here.
pub fn read(
    dir: &Path,
    from: u64,
    to: u64,
    mut visit: impl FnMut(u64, &[u8]) -> bool,
) -> Result<()> {
    let segs = segments(dir)?;
    for (i, &start) in segs.iter().enumerate() {
        let next = segs.get(i + 1).copied().unwrap_or(u64::MAX);
        if next <= from {
            continue;
        }
        if start >= to {
            break;
        }
        let path = segment_path(dir, start);
        let data = fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let mut stopped = false;
        let (off, _) = scan_segment(&data, start, from, next.min(to), |pos, payload| {
            stopped = !visit(pos, payload);
            !stopped
        });
        if stopped {
            return Ok(());
        }
        let reached = start + off as u64;
        if reached < next.min(to) {
            // Only a log damaged at rest gets here; Wal::open has said so at start.
            tracing::error!(path = %path.display(), offset = off, "Write-ahead log segment is corrupt; records after this point in it are lost.");
        }
    }
    Ok(())
}

/// Removes segments whose every record lies before `pos` (already committed to the index).
pub fn remove_before(dir: &Path, pos: u64) -> Result<u64> {
    let segs = segments(dir)?;
    let mut removed = 0;
    for w in segs.windows(2) {
        if w[1] <= pos {
            let path = segment_path(dir, w[0]);
            fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Bytes the files directly in `dir` take: a log's segments, a partition's segment files.
pub fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sawmill-wal-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_failed_rollover_never_writes_where_no_replay_reads() {
        // Review: a rollover that failed after creating the next segment's file went on
        // writing acknowledged frames into the full segment, past where the next one starts,
        // and a replay (which stops there) never saw them.
        let dir = tmp("rollover");
        let mut wal = Wal::open(&dir, 0, |_, _| {}).unwrap();
        let mut acked: Vec<Vec<u8>> = Vec::new();
        let mut append = |wal: &mut Wal, payload: &[u8]| {
            let mut buf = Vec::new();
            encode_frame(&mut buf, payload);
            if wal.append(&buf).is_ok() {
                acked.push(payload.to_vec());
            }
        };
        let big = vec![b'x'; SEGMENT_BYTES as usize];
        let next = (HEADER + big.len()) as u64;
        // The next segment cannot be started: a directory stands where its file goes.
        fs::create_dir_all(segment_path(&dir, next)).unwrap();
        append(&mut wal, &big);
        append(&mut wal, b"while the rollover fails");
        // What a failed rollover can leave behind: the next segment's file, empty.
        fs::remove_dir(segment_path(&dir, next)).unwrap();
        fs::write(segment_path(&dir, next), b"").unwrap();
        append(&mut wal, b"once it works");
        drop(wal);
        let mut replayed = Vec::new();
        Wal::open(&dir, 0, |_, p| replayed.push(p.to_vec())).unwrap();
        let short = |v: &[Vec<u8>]| {
            v.iter()
                .map(|p| p[..p.len().min(30)].to_vec())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            short(&replayed),
            short(&acked),
            "every acknowledged frame replays"
        );
        assert_eq!(
            acked.len(),
            2,
            "the write during the failed rollover was refused"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn frames_replay_and_a_torn_tail_is_cut() {
        let dir = tmp("torn");
        let mut wal = Wal::open(&dir, 0, |_, _| panic!("empty log")).unwrap();
        let mut buf = Vec::new();
        encode_frame(&mut buf, b"one");
        encode_frame(&mut buf, b"two");
        wal.append(&buf).unwrap();
        let end = wal.next_position();
        drop(wal);
        // A crash in the middle of a write leaves half a frame.
        let seg = segment_path(&dir, 0);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[9, 0, 0, 0, 1, 2]).unwrap();
        let mut seen = Vec::new();
        let wal = Wal::open(&dir, 0, |pos, p| seen.push((pos, p.to_vec()))).unwrap();
        assert_eq!(seen, vec![(0, b"one".to_vec()), (11, b"two".to_vec())]);
        assert_eq!(wal.next_position(), end);
        assert_eq!(fs::metadata(&seg).unwrap().len(), end);
        let mut seen = Vec::new();
        Wal::open(&dir, 11, |pos, _| seen.push(pos)).unwrap();
        assert_eq!(seen, vec![11]);
        fs::remove_dir_all(&dir).unwrap();
    }

    fn frames(payloads: &[&[u8]]) -> Vec<u8> {
        let mut buf = Vec::new();
        for p in payloads {
            encode_frame(&mut buf, p);
        }
        buf
    }

    fn replay(dir: &Path) -> Vec<(u64, Vec<u8>)> {
        let mut seen = Vec::new();
        Wal::open(dir, 0, |pos, p| seen.push((pos, p.to_vec()))).unwrap();
        seen
    }

    // What a failed write or fsync leaves (whole frames that were never acknowledged) is
    // cut off before the next write, so a restart never replays it.
    #[test]
    fn a_failed_write_is_cut_off_before_the_next() {
        let dir = tmp("reset");
        let mut wal = Wal::open(&dir, 0, |_, _| panic!("empty log")).unwrap();
        wal.append(&frames(&[b"one"])).unwrap();
        let end = wal.next_position();
        wal.file
            .write_all_at(&frames(&[b"lost", b"lost"]), end)
            .unwrap();
        wal.needs_reset = true;
        wal.append(&frames(&[b"two"])).unwrap();
        drop(wal);
        assert_eq!(
            replay(&dir),
            vec![(0, b"one".to_vec()), (end, b"two".to_vec())]
        );
        let mut seen = Vec::new();
        read(&dir, 0, end + 11, |pos, _| {
            seen.push(pos);
            true
        })
        .unwrap();
        assert_eq!(seen, vec![0, end]);
        fs::remove_dir_all(&dir).unwrap();
    }

    // When the failed write could not be cut off, a new segment starts where the last
    // acknowledged frame ends; the old one's bytes past that are never read.
    #[test]
    fn a_segment_is_read_only_up_to_where_the_next_starts() {
        let dir = tmp("bounded");
        let mut wal = Wal::open(&dir, 0, |_, _| panic!("empty log")).unwrap();
        wal.append(&frames(&[b"one"])).unwrap();
        let end = wal.next_position();
        wal.file
            .write_all_at(&frames(&[b"lost", b"lost"]), end)
            .unwrap();
        let mut wal = Wal::create_segment(&dir, end).unwrap();
        wal.append(&frames(&[b"two"])).unwrap();
        drop(wal);
        assert_eq!(
            replay(&dir),
            vec![(0, b"one".to_vec()), (end, b"two".to_vec())]
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
