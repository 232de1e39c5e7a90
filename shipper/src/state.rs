//! What the shipper keeps across restarts: its stable sender id and its sequence numbers,
//! reserved on disk a block at a time so that no number is ever handed out twice.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Sequence numbers are reserved on disk this many at a time: a restart skips the rest of
/// a block (gaps are harmless) but never reuses a number.
const BLOCK: u64 = 100_000;

pub struct State {
    dir: PathBuf,
    pub src: String,
    next: u64,
    reserved: u64,
}

impl State {
    pub fn open(dir: &Path) -> Result<State> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let src_path = dir.join("src");
        let src = match fs::read_to_string(&src_path) {
            Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
            _ => {
                let host = crate::host::hostname();
                let id = format!("{host}-{:016x}", fastrand::u64(..));
                write_atomic(&src_path, id.as_bytes())?;
                id
            }
        };
        let seq_path = dir.join("seq");
        let next = match fs::read_to_string(&seq_path) {
            Ok(s) => s.trim().parse().map_err(|_| {
                Error::io(
                    &seq_path,
                    std::io::Error::other(format!("`{}` is not a sequence number", s.trim())),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(Error::io(&seq_path, e)),
        };
        Ok(State {
            dir: dir.to_path_buf(),
            src,
            next,
            reserved: next,
        })
    }

    /// Makes sure the next `n` numbers are reserved on disk, writing a new block when
    /// needed. When that fails (a full or read-only disk) nothing changes: a number that is
    /// not durably reserved is never handed out, since after a restart it would be handed
    /// out again and the indexer would drop the new record as a duplicate.
    pub fn reserve(&mut self, n: u64) -> Result<()> {
        let Some(wanted) = self.next.checked_add(n) else {
            return Err(exhausted());
        };
        if wanted <= self.reserved {
            return Ok(());
        }
        // A `seq` file near 2^64 (damaged, or edited by hand) must not wrap around to
        // numbers already sent: that is treated like a disk that cannot be written.
        let reserved = self.next.checked_add(BLOCK.max(n)).ok_or_else(exhausted)?;
        write_atomic(&self.dir.join("seq"), reserved.to_string().as_bytes())?;
        self.reserved = reserved;
        Ok(())
    }

    /// The next sequence number, reserving a new block on disk when needed.
    pub fn next_seq(&mut self) -> Result<u64> {
        self.reserve(1)?;
        let s = self.next;
        self.next += 1;
        Ok(s)
    }
}

/// Sequence numbers have run out (only a damaged `seq` file gets here).
fn exhausted() -> Error {
    Error::Config("the sequence numbers in the shipper's state have run out: move the --state directory away to start a new sender".into())
}

pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let res = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Some(parent) = path.parent() {
            fs::File::open(parent)?.sync_all()?;
        }
        Ok(())
    })();
    res.map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_never_repeat_across_restarts() {
        let dir = std::env::temp_dir().join(format!("sawmill-state-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut s = State::open(&dir).unwrap();
        let src = s.src.clone();
        let a: Vec<u64> = (0..5).map(|_| s.next_seq().unwrap()).collect();
        drop(s);
        let mut s = State::open(&dir).unwrap();
        assert_eq!(s.src, src, "the sender id is stable");
        let b = s.next_seq().unwrap();
        assert!(b > *a.last().unwrap(), "{b} after {a:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Regression (issue 9, point 7): a failed reservation used to leave the block counted
    /// as reserved, so numbers were handed out from memory and reused after a restart.
    #[test]
    fn no_number_is_handed_out_unless_reserved_on_disk() {
        let dir = std::env::temp_dir().join(format!("sawmill-state-ro-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut s = State::open(&dir).unwrap();
        assert_eq!(s.next_seq().unwrap(), 0);
        s.next = s.reserved; // the block is used up
                             // Where the next block would be written, a directory: the write fails as on a full disk.
        fs::create_dir(dir.join("seq.tmp")).unwrap();
        for _ in 0..3 {
            assert!(s.next_seq().is_err(), "a number without a reservation");
        }
        fs::remove_dir(dir.join("seq.tmp")).unwrap();
        let n = s.next_seq().unwrap();
        assert_eq!(n, BLOCK, "numbering resumes where the reserved block ended");
        drop(s);
        let mut s = State::open(&dir).unwrap();
        assert!(s.next_seq().unwrap() > n, "a restart never reuses a number");
        fs::remove_dir_all(&dir).unwrap();
    }
}
