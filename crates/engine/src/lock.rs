//! The workspace lock: one `vlmflow build` (or `gc`) at a time per workspace. A second one waits,
//! saying which process holds the lock. The OS releases the lock when its holder dies, however it dies.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

pub struct WorkspaceLock {
    _file: File,
}

impl WorkspaceLock {
    /// Take the lock at `path`, calling `waiting(holder)` once if another process holds it.
    pub fn acquire(path: &Path, waiting: impl FnOnce(&str)) -> std::io::Result<WorkspaceLock> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                waiting(if holder.is_empty() {
                    "another vlmflow process"
                } else {
                    holder
                });
                file.lock()?;
            }
            Err(TryLockError::Error(e)) => return Err(e),
        }
        // Say who we are, for the next process that has to wait.
        let argv: Vec<String> = std::env::args().collect();
        file.set_len(0)?;
        file.rewind()?;
        write!(
            file,
            "pid {} on {} ({}), since {}",
            std::process::id(),
            super::host(),
            argv.join(" "),
            now_text()
        )?;
        file.flush()?;
        Ok(WorkspaceLock { _file: file })
    }
}

fn now_text() -> String {
    let secs = vlmflow_store::db::now() as i64;
    super::format_time(secs as f64)
}
