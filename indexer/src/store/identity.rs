//! Who this indexer is in a cluster: its group (a flag: the set of replicas that hold the
//! same records) and its replica id, kept in the data directory. The id lives and dies with
//! the data: the same directory after a restart is the same replica, while a new, empty
//! directory (a task the orchestrator moved to another machine) is a new replica, which
//! holds nothing yet whatever address it answers on.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::layout;

/// The replica id kept in `data`, made and saved durably on first use.
pub fn replica_id(data: &Path) -> Result<String> {
    let path = layout::replica_file(data);
    match std::fs::read_to_string(&path) {
        Ok(s) if valid_id(s.trim()) => return Ok(s.trim().to_string()),
        Ok(s) => {
            return Err(Error::io(
                &path,
                std::io::Error::other(format!(
                    "`{}` is not a replica id: restore the file, or move the data directory away to start a new replica",
                    s.trim()
                )),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&path, e)),
    }
    let id = new_id(&path)?;
    let tmp = layout::replica_tmp(data);
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(id.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(data)?.sync_all()
    })();
    res.map_err(|e| Error::io(&path, e))?;
    Ok(id)
}

/// 128 random bits from the kernel, as 32 hex digits.
fn new_id(path: &Path) -> Result<String> {
    // The kernel's UUID generator: random, and no dependency for sixteen bytes.
    let uuid =
        std::fs::read_to_string("/proc/sys/kernel/random/uuid").map_err(|e| Error::io(path, e))?;
    let id: String = uuid.trim().chars().filter(|c| *c != '-').collect();
    if !valid_id(&id) {
        return Err(Error::io(
            path,
            std::io::Error::other(format!("the kernel gave `{}` as a random id", uuid.trim())),
        ));
    }
    Ok(id)
}

fn valid_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Checks a group name: 1 to 64 of `A-Z a-z 0-9 . _ -`, so it can stand in file names,
/// DNS labels and metric labels as it is.
pub fn check_group(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("group `{name}` must have 1 to 64 characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "group `{name}` may only hold letters, digits, `.`, `_` and `-`, not `{c}`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("sawmill-identity-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let a = replica_id(&dir).unwrap();
        assert!(valid_id(&a), "{a}");
        assert_eq!(replica_id(&dir).unwrap(), a);
        std::fs::write(layout::replica_file(&dir), "not an id").unwrap();
        let e = replica_id(&dir).unwrap_err().to_string();
        assert!(e.contains("is not a replica id"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn group_names_are_checked() {
        assert!(check_group("default").is_ok());
        assert!(check_group("g-1.eu_west").is_ok());
        assert!(check_group("").is_err());
        assert!(check_group("a b").unwrap_err().contains("not ` `"));
        assert!(check_group(&"g".repeat(65)).is_err());
    }
}
