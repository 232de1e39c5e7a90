//! The checkpoint file: the log position every partition has committed up to, so a start
//! replays the log only from there, and the log can be trimmed behind it.

use std::path::Path;

use crate::error::{Error, Result};
use crate::layout;

/// The last checkpoint written; 0 when there is none yet.
pub fn read(data: &Path) -> Result<u64> {
    let path = layout::checkpoint_file(data);
    match std::fs::read_to_string(&path) {
        Ok(s) => s.trim().parse().map_err(|_| {
            Error::io(
                &path,
                std::io::Error::other(format!("checkpoint `{}` is not a number", s.trim())),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// Replaces the checkpoint with `pos`, durably: written aside, synced, renamed over.
pub fn write(data: &Path, pos: u64) -> Result<()> {
    let path = layout::checkpoint_file(data);
    let tmp = layout::checkpoint_tmp(data);
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, pos.to_string().as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(data)?.sync_all()
    })();
    res.map_err(|e| Error::io(&path, e))
}
