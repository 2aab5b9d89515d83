//! Where objects are kept: the seam between the cache and the storage under it.
//!
//! An object is a byte string named by its blake3 [`Digest`]. [`Cas`](crate::Cas) hashes, checks
//! what it reads back, decides what is already stored and keeps manifests and the stat cache; an
//! `ObjectStore` only keeps bytes under their digests. Today's store is [`LocalObjects`], the folder
//! `cache/objects/`. The shared cache ([`remote`](crate::remote)) is not one: it moves objects between
//! this store and a bucket, and checks them on the way.

use std::path::{Path, PathBuf};

use super::{Digest, Result};

pub(crate) mod local;

pub use local::LocalObjects;

/// A file to take in as the object `digest` (the digest of its content, computed by the caller).
pub struct PutFile {
    pub path: PathBuf,
    pub digest: Digest,
}

/// An object to place as a read-only file at `path`, which does not exist yet.
pub struct GetFile {
    pub path: PathBuf,
    pub digest: Digest,
    /// Placed with mode 0555 rather than 0444.
    pub executable: bool,
}

/// Keeps objects by digest. Every write is durable when it returns; no object name ever holds part
/// of its content.
pub trait ObjectStore: Send + Sync {
    /// The object's size in bytes, or `None` when the store does not hold it.
    fn size(&self, digest: &Digest) -> Result<Option<u64>>;

    /// Stores `bytes` (whose digest is `digest`), replacing an object of that name.
    fn put_bytes(&self, digest: &Digest, bytes: &[u8]) -> Result<()>;

    /// Takes files in as objects, in one batch; a file may be gone afterwards (moved in), the
    /// caller removes what is left.
    fn put_files(&self, files: &[PutFile]) -> Result<()>;

    /// The object's bytes as stored (the caller checks them), or `None` when it is not held.
    fn get_bytes(&self, digest: &Digest) -> Result<Option<Vec<u8>>>;

    /// The object's content as stored, to read as a stream (the caller checks it), or `None` when
    /// it is not held.
    fn open(&self, digest: &Digest) -> Result<Option<Box<dyn std::io::Read + Send>>>;

    /// Places objects as read-only files, in one batch; a missing object is `CorruptObject`, and a
    /// file that fails is not left half-written.
    fn get_files(&self, files: &[GetFile]) -> Result<()>;

    /// Every object held, with its size (what gc sweeps).
    fn list(&self) -> Result<Vec<(Digest, u64)>>;

    /// Deletes the object; returns whether it was there.
    fn delete(&self, digest: &Digest) -> Result<bool>;

    /// The digest of the object's content as stored (it differs from `digest` when the object is
    /// damaged), or `None` when the store does not hold it.
    fn content_digest(&self, digest: &Digest) -> Result<Option<Digest>>;

    /// Takes a damaged object out of the store, kept where a person can look at it; returns
    /// where, or `None` when the store did not hold it.
    fn quarantine(&self, digest: &Digest) -> Result<Option<PathBuf>>;

    /// Deletes the object if the file at `path` shares its storage (a hard link `get_files` made,
    /// since edited in place); returns whether it did. A store that never links keeps everything.
    fn evict_if_linked(&self, path: &Path, digest: &Digest) -> Result<bool> {
        let _ = (path, digest);
        Ok(false)
    }
}
