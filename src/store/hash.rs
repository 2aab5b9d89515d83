//! CONTRACT STUB — helper B replaces this file.
//! Hashing workspace paths with blake3: large files memory-mapped and hashed on all cores,
//! folders walked and hashed in parallel, unchanged files answered by the stat cache.

use std::path::Path;

use super::{Digest, Manifest, Result};

/// Hash one file's content (mmap + multi-threaded above a size threshold).
pub fn hash_file(_path: &Path) -> Result<Digest> {
    unimplemented!()
}

/// What `paths` hold now, as one manifest. `paths` are relative to `root` ("data/raw") or absolute;
/// each entry keeps that spelling as its prefix ("data/raw/img_001.png"). A folder yields a `Dir`
/// entry for itself and entries for everything inside it. A missing path is `StoreError::Missing`.
/// Files whose (dev, inode, size, mtime, ctime, mode) match the stat cache are not read.
pub fn snapshot(_conn: &rusqlite::Connection, _root: &Path, _paths: &[String]) -> Result<Manifest> {
    unimplemented!()
}
