//! The content-addressed cache: files, manifests and run records as objects named by their digest,
//! kept by an [`ObjectStore`] (today the folder `cache/objects/`), the refs naming the run records
//! (`cache/runs/`), and the scratch folder `cache/tmp/`.
//!
//! `Cas` hashes and checks; the store only keeps bytes. Whatever reads an object back checks it
//! against its digest, so a damaged or missing object is `CorruptObject`, never wrong content.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::files::{remove_any, unique_name};
use super::object_store::{LocalObjects, ObjectStore, PutFile};
use super::{Digest, Manifest, Result, StoreError, io_err};

pub struct Cas {
    objects: Box<dyn ObjectStore>,
    tmp: PathBuf,
    /// Refs to the run records (`cas/records.rs`).
    runs: PathBuf,
}

/// What `check_objects` read: every object held, and those whose content no longer matches their
/// digest.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ObjectsChecked {
    pub held: HashSet<Digest>,
    pub bytes: u64,
    pub damaged: Vec<Digest>,
}

/// What a sweep deleted (or would delete, on a dry run).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sweep {
    pub objects: u64,
    pub bytes: u64,
}

impl Cas {
    /// `cache_dir` is the workspace's `cache/`; objects are kept in its `objects/` folder.
    pub fn open(cache_dir: &Path) -> Result<Cas> {
        let tmp = cache_dir.join("tmp");
        let objects = LocalObjects::open(&cache_dir.join("objects"), &tmp)?;
        Cas::with_store(cache_dir, Box::new(objects))
    }

    /// Objects kept by `objects`; scratch folders under `cache_dir`'s `tmp/` (created).
    pub fn with_store(cache_dir: &Path, objects: Box<dyn ObjectStore>) -> Result<Cas> {
        let tmp = cache_dir.join("tmp");
        fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        Ok(Cas {
            objects,
            tmp,
            runs: cache_dir.join("runs"),
        })
    }

    /// Store bytes as an object; returns its digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of_bytes(bytes);
        // An existing object of the wrong size (damaged by a crash or by hand) is replaced.
        if self.objects.size(&digest)? != Some(bytes.len() as u64) {
            self.objects.put_bytes(&digest, bytes)?;
        }
        Ok(digest)
    }

    /// Whether the store holds the object (its content is not read).
    pub fn holds(&self, digest: &Digest) -> Result<bool> {
        Ok(self.objects.size(digest)?.is_some())
    }

    /// The object's content as stored, as a stream: whoever reads it checks it (`remote.rs`
    /// hashes what it uploads).
    pub fn open_object(&self, digest: &Digest) -> Result<Option<Box<dyn io::Read + Send>>> {
        self.objects.open(digest)
    }

    /// Takes files, whose content the caller has checked against their digests, in as objects;
    /// all of them at once, so that many are made durable together (see `put_files`).
    pub fn take_in(&self, files: &[PutFile]) -> Result<()> {
        self.objects.put_files(files)
    }

    /// The object's bytes, checked against its digest.
    pub fn read_bytes(&self, digest: &Digest) -> Result<Vec<u8>> {
        match self.objects.get_bytes(digest)? {
            Some(bytes) if Digest::of_bytes(&bytes) == *digest => Ok(bytes),
            _ => Err(StoreError::CorruptObject(*digest)),
        }
    }

    /// If `path` is a hard link to the object `digest`, delete the object: whatever edited `path`
    /// in place edited the object too. The content stays reachable through `path`. Returns whether
    /// it evicted the object.
    pub fn evict_if_linked(&self, path: &Path, digest: &Digest) -> Result<bool> {
        self.objects.evict_if_linked(path, digest)
    }

    /// Store a manifest as an object; its object digest equals `manifest.digest()`.
    pub fn put_manifest(&self, manifest: &Manifest) -> Result<Digest> {
        self.put_bytes(&manifest.to_bytes())
    }

    pub fn read_manifest(&self, digest: &Digest) -> Result<Manifest> {
        let bytes = self.read_bytes(digest)?;
        Manifest::from_bytes(&bytes)
            .map_err(|e| StoreError::Other(format!("cache object {digest} is not a manifest: {e}")))
    }

    /// A fresh, empty folder under `cache/tmp/`.
    pub fn temp_dir(&self) -> Result<PathBuf> {
        loop {
            let dir = self.tmp.join(unique_name("dir"));
            match fs::create_dir(&dir) {
                Ok(()) => return Ok(dir),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir_all(&self.tmp).map_err(io_err(&self.tmp))?;
                }
                Err(e) => return Err(io_err(dir)(e)),
            }
        }
    }

    /// Remove everything under `cache/tmp/` (leftovers of a crash). Call with the workspace lock held.
    pub fn clean_temp(&self) -> Result<()> {
        let rd = match fs::read_dir(&self.tmp) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(&self.tmp)(e)),
        };
        for e in rd {
            remove_any(&e.map_err(io_err(&self.tmp))?.path())?;
        }
        Ok(())
    }

    /// Hashes every object held (in parallel) against its digest.
    pub fn check_objects(&self) -> Result<ObjectsChecked> {
        let all = self.objects.list()?;
        let damaged = all
            .par_iter()
            .map(|(digest, _)| {
                // One deleted meanwhile (by gc) is not damaged.
                let content = self.objects.content_digest(digest)?;
                Ok(content.filter(|c| c != digest).map(|_| *digest))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ObjectsChecked {
            held: all.iter().map(|(digest, _)| *digest).collect(),
            bytes: all.iter().map(|(_, len)| len).sum(),
            damaged: damaged.into_iter().flatten().collect(),
        })
    }

    /// Moves a damaged object to the quarantine; returns where it went.
    pub fn quarantine(&self, digest: &Digest) -> Result<Option<PathBuf>> {
        self.objects.quarantine(digest)
    }

    /// Delete every object not in `live`. Manifests are objects too: `live` must hold the
    /// digests of the manifests to keep as well as of the files they reference.
    pub fn sweep(&self, live: &HashSet<Digest>, dry_run: bool) -> Result<Sweep> {
        let dead: Vec<(Digest, u64)> = self
            .objects
            .list()?
            .into_iter()
            .filter(|(digest, _)| !live.contains(digest))
            .collect();
        dead.par_iter()
            .map(|(digest, len)| -> Result<Sweep> {
                // One deleted meanwhile by someone else is not counted.
                let gone = dry_run || self.objects.delete(digest)?;
                Ok(Sweep {
                    objects: u64::from(gone),
                    bytes: if gone { *len } else { 0 },
                })
            })
            .try_reduce(Sweep::default, |a, b| {
                Ok(Sweep {
                    objects: a.objects + b.objects,
                    bytes: a.bytes + b.bytes,
                })
            })
    }
}

mod ingest;
mod materialize;
mod records;

pub use records::RecordRef;

#[cfg(test)]
#[path = "cas_tests.rs"]
mod tests;
