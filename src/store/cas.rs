//! CONTRACT STUB — helper B replaces this file.
//! Content-addressed objects under `cache/objects/`, written atomically, read-only once written.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{Digest, Manifest, Result};

pub struct Cas {
    _dir: PathBuf,
}

/// What a sweep deleted (or would delete, on a dry run).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sweep {
    pub objects: u64,
    pub bytes: u64,
}

impl Cas {
    /// `cache_dir` is the workspace's `cache/`; creates `objects/` and `tmp/` in it.
    pub fn open(_cache_dir: &Path) -> Result<Cas> {
        unimplemented!()
    }
    pub fn object_path(&self, _digest: &Digest) -> PathBuf {
        unimplemented!()
    }
    pub fn contains(&self, _digest: &Digest) -> bool {
        unimplemented!()
    }
    /// Store bytes as an object (write to tmp, fsync, rename); returns its digest.
    pub fn put_bytes(&self, _bytes: &[u8]) -> Result<Digest> {
        unimplemented!()
    }
    pub fn read_bytes(&self, _digest: &Digest) -> Result<Vec<u8>> {
        unimplemented!()
    }
    /// Store a manifest as an object; its object digest equals `manifest.digest()`.
    pub fn put_manifest(&self, _manifest: &Manifest) -> Result<Digest> {
        unimplemented!()
    }
    pub fn read_manifest(&self, _digest: &Digest) -> Result<Manifest> {
        unimplemented!()
    }
    /// Take `paths` under `root` into the store: every file becomes an object (moved in by rename
    /// when possible, else copied; fsynced), the manifest is stored too. The source paths are gone
    /// afterwards. Returns the manifest, whose paths are spelled as in `paths`.
    pub fn ingest(
        &self,
        _conn: &rusqlite::Connection,
        _root: &Path,
        _paths: &[String],
    ) -> Result<Manifest> {
        unimplemented!()
    }
    /// Make the workspace hold exactly `manifest` at the top-level `outs` under `root`: remove what is
    /// there now, recreate folders, and place files read-only by reflink, else hardlink, else copy.
    /// Records the placed files in the stat cache so the next snapshot does not read them.
    pub fn materialize(
        &self,
        _conn: &rusqlite::Connection,
        _manifest: &Manifest,
        _root: &Path,
        _outs: &[String],
    ) -> Result<()> {
        unimplemented!()
    }
    /// A fresh, empty folder under `cache/tmp/`.
    pub fn temp_dir(&self) -> Result<PathBuf> {
        unimplemented!()
    }
    /// Remove everything under `cache/tmp/` (leftovers of a crash). Call with the workspace lock held.
    pub fn clean_temp(&self) -> Result<()> {
        unimplemented!()
    }
    /// Delete every object not in `live`.
    pub fn sweep(&self, _live: &HashSet<Digest>, _dry_run: bool) -> Result<Sweep> {
        unimplemented!()
    }
}
