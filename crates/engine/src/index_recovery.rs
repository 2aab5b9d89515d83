//! Keeping the run database usable. `cache/vlmflow.db` is an index of the run records kept in the
//! cache (`vlmflow_store::run_record`), so when it is missing or is not a database it is rebuilt
//! from them: losing it costs seconds, not a retraining. A damaged one is moved to
//! `cache/quarantine/`, never deleted.

use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use super::build::EngineError;
use super::lock::WorkspaceLock;
use super::workspace::Workspace;
use vlmflow_store::db::Db;
use vlmflow_store::index_rebuild::Imported;
use vlmflow_store::{Cas, Digest, StoreError, io_err};

/// Why the database was rebuilt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexProblem {
    Missing,
    NotADatabase,
    FailedIntegrityCheck,
}

/// What a rebuild did, said to the user.
#[derive(Debug)]
pub struct IndexRebuilt {
    pub why: IndexProblem,
    pub imported: Imported,
    /// Where the damaged database (or a stray WAL of a deleted one) was moved, workspace-relative.
    pub kept_at: Option<String>,
    pub seconds: f64,
}

impl fmt::Display for IndexRebuilt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.why {
            IndexProblem::Missing => "was missing",
            IndexProblem::NotADatabase => "is not a SQLite database",
            IndexProblem::FailedIntegrityCheck => "failed its integrity check",
        };
        let Imported {
            runs,
            artifacts_gone,
            unreadable,
        } = &self.imported;
        write!(
            f,
            "cache/vlmflow.db {why}: rebuilt it from the run records in cache/runs/ ({runs} run{} in {}); \
             builds, restores and failed runs from before are not in it",
            if *runs == 1 { "" } else { "s" },
            super::format_duration(self.seconds)
        )?;
        if *artifacts_gone > 0 {
            write!(
                f,
                "; {artifacts_gone} recorded artifact(s) are no longer in the cache and will be rebuilt"
            )?;
        }
        for (r, why) in unreadable {
            write!(f, "; record {} is unreadable ({why})", r.record.short())?;
        }
        if let Some(at) = &self.kept_at {
            write!(f, "; the old files are kept in {at}")?;
        }
        Ok(())
    }
}

/// After a crash, with the workspace lock held: runs left `running` by a dead process are marked
/// interrupted, and a run that had written its record before it died (between the record and its
/// row) is added from the record, so its work is restored rather than done again.
pub fn recover_interrupted(db: &Db, cas: &Cas) -> Result<(), StoreError> {
    let keys = db.running_keys()?;
    db.mark_interrupted()?;
    let mut refs = Vec::new();
    for key in keys.iter().filter_map(|k| k.parse::<Digest>().ok()) {
        refs.extend(cas.record_refs_of(&key)?);
    }
    if !refs.is_empty() {
        db.import_records(cas, &refs)?;
    }
    Ok(())
}

impl Workspace {
    /// Rebuilds the database from the run records when it is missing or is not a database and the
    /// cache holds records; otherwise does nothing. Costs a stat and a 16-byte read when all is well.
    pub fn ensure_index(
        &self,
        waiting: impl FnOnce(&str),
    ) -> Result<Option<IndexRebuilt>, EngineError> {
        if self.index_problem().is_none() {
            return Ok(None);
        }
        let cas = self.open_cas()?;
        if !cas.holds_records() {
            return Ok(None);
        }
        let path = self.lock_path();
        let _lock = WorkspaceLock::acquire(&path, waiting).map_err(io_err(&path))?;
        // Another process may have rebuilt it while this one waited.
        let Some(why) = self.index_problem() else {
            return Ok(None);
        };
        Ok(Some(self.rebuild_index(&cas, why)?))
    }

    /// Moves the database's files aside and rebuilds it from every run record. The caller holds
    /// the workspace lock and no open connection.
    pub fn rebuild_index(&self, cas: &Cas, why: IndexProblem) -> Result<IndexRebuilt, StoreError> {
        let started = Instant::now();
        let kept_at = self.move_db_aside()?.map(|dir| {
            dir.strip_prefix(&self.root)
                .unwrap_or(&dir)
                .display()
                .to_string()
        });
        let db = self.open_db()?;
        let imported = db.import_records(cas, &cas.record_refs()?)?;
        Ok(IndexRebuilt {
            why,
            imported,
            kept_at,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// What is wrong with `cache/vlmflow.db` that a look at its header shows.
    fn index_problem(&self) -> Option<IndexProblem> {
        const HEADER: &[u8; 16] = b"SQLite format 3\0";
        let mut file = match std::fs::File::open(self.db_path()) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Some(IndexProblem::Missing);
            }
            // Unreadable for another reason: opening it says why, in the command's own words.
            Err(_) => return None,
        };
        let mut header = [0u8; 16];
        match file.read_exact(&mut header) {
            Ok(()) if &header == HEADER => None,
            _ => Some(IndexProblem::NotADatabase),
        }
    }

    /// Moves `vlmflow.db` and its `-wal` and `-shm` files, those present, to a new folder under
    /// `cache/quarantine/`; returns it when something was moved. A WAL left without its database
    /// must not be replayed into the new one.
    fn move_db_aside(&self) -> Result<Option<PathBuf>, StoreError> {
        let db = self.db_path();
        let files: Vec<PathBuf> = ["", "-wal", "-shm"]
            .iter()
            .map(|suffix| {
                let mut name = db.clone().into_os_string();
                name.push(suffix);
                PathBuf::from(name)
            })
            .filter(|p| p.symlink_metadata().is_ok())
            .collect();
        if files.is_empty() {
            return Ok(None);
        }
        let stamp = vlmflow_store::db::now();
        let dir = self.cache.join("quarantine").join(format!(
            "vlmflow.db-{}-{}",
            stamp as u64,
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        for file in files {
            let to = dir.join(file.file_name().expect("a file name"));
            std::fs::rename(&file, &to).map_err(io_err(&file))?;
        }
        Ok(Some(dir))
    }
}
