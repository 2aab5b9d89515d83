//! A workspace: the folder holding `Stagefile`, `stages/` and `cache/`, and the store inside it.

use std::path::{Path, PathBuf};

use vlmflow_store::db::Db;
use vlmflow_store::{Cas, Result};

pub struct Workspace {
    pub root: PathBuf,
    pub cache: PathBuf,
}

impl Workspace {
    /// The workspace at `dir`, or the nearest parent of it that holds a `Stagefile`.
    pub fn find(dir: &Path) -> Option<Workspace> {
        let dir = std::path::absolute(dir).ok()?;
        let root = dir
            .ancestors()
            .find(|d| d.join("Stagefile").is_file())?
            .to_path_buf();
        Some(Workspace::at(root))
    }

    pub fn at(root: PathBuf) -> Workspace {
        let cache = root.join("cache");
        Workspace { root, cache }
    }

    pub fn db_path(&self) -> PathBuf {
        self.cache.join("vlmflow.db")
    }

    /// Open the database for writing, creating `cache/` when needed.
    pub fn open_db(&self) -> Result<Db> {
        std::fs::create_dir_all(&self.cache).map_err(vlmflow_store::io_err(&self.cache))?;
        Db::open(&self.db_path())
    }

    /// Open the database read-only (for the commands that only report); it must exist.
    pub fn read_db(&self) -> Result<Db> {
        Db::open_read_only(&self.db_path())
    }

    pub fn open_cas(&self) -> Result<Cas> {
        Cas::open(&self.cache)
    }

    pub fn lock_path(&self) -> PathBuf {
        self.cache.join("lock")
    }

    pub fn checkpoint_dir(&self, key: &str) -> PathBuf {
        self.cache.join("checkpoints").join(key)
    }

    /// The folder of a Slurm stage's job (`slurm::job_dir`), shared with the nodes.
    pub fn job_dir(&self, key: &str) -> PathBuf {
        self.cache.join("jobs").join(key)
    }

    /// The TensorBoard log folder: `tensorboard --logdir cache/tensorboard`.
    pub fn tensorboard_dir(&self) -> PathBuf {
        self.cache.join("tensorboard")
    }

    /// Where outs found in the way of a run, and not made by vlmflow, are kept instead of deleted.
    pub fn trash_dir(&self) -> PathBuf {
        self.cache.join("trash")
    }
}
