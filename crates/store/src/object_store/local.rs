//! The local object store: the folder `cache/objects/`, one read-only file per object.
//!
//! An object lives at `objects/<2 hex>/<62 hex>` with mode 0444, whatever the mode of the file it
//! came from (a manifest says which files are executable). Objects reach their final name only by
//! `rename` from a file whose content is already on disk, so after a crash an object name either
//! does not exist or holds its whole content. Files are taken in by rename when they are on the
//! cache's filesystem, and placed in the workspace by reflink, else hard link, else copy.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::{GetFile, ObjectStore, PutFile};
use crate::files::{
    UNSUPPORTED, copy_file, create_with, errno_is, fsync_path, reflink_file, syncfs, unique_name,
};
use crate::{Digest, Result, StoreError, io_err};

/// Up to this many files, `put_files` makes them durable with one `fsync` each (in parallel) and an
/// `fsync` of each folder renamed into; above it, with one `syncfs` of the cache's filesystem
/// before the renames and one after. Measured for 20,000 fresh 4 KiB files on ext4 (2 cores):
/// parallel fsyncs about 1 ms per file (~2 s in all), one syncfs 0.2-0.3 s (`cargo bench --bench
/// store ingest`). `syncfs` also waits for other writers' dirty data on the same filesystem, which
/// is why small batches avoid it.
pub(crate) const FSYNC_EACH_MAX: usize = 64;

pub struct LocalObjects {
    dir: PathBuf,
    /// Where objects are staged before their rename: on the same filesystem as `dir`.
    tmp: PathBuf,
}

impl LocalObjects {
    /// Objects under `dir`, staged in `tmp` (both created if missing).
    pub fn open(dir: &Path, tmp: &Path) -> Result<LocalObjects> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        fs::create_dir_all(tmp).map_err(io_err(tmp))?;
        Ok(LocalObjects {
            dir: dir.to_path_buf(),
            tmp: tmp.to_path_buf(),
        })
    }

    /// Where the object `digest` lives (or would).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.to_hex();
        self.dir.join(&hex[..2]).join(&hex[2..])
    }

    /// Renames `src` to the object's path, creating its fan-out folder if needed; returns the path.
    fn rename_in(&self, src: &Path, digest: &Digest) -> Result<PathBuf> {
        let dst = self.path(digest);
        let r = fs::rename(src, &dst).or_else(|e| {
            // The fan-out folder may be missing (another thread may be creating it right now).
            let parent = dst.parent().expect("object paths have a parent");
            if e.kind() == io::ErrorKind::NotFound {
                fs::create_dir_all(parent)?;
                fs::rename(src, &dst)
            } else {
                Err(e)
            }
        });
        r.map_err(io_err(src))?;
        Ok(dst)
    }

    /// A copy of `src` in `tmp/`, read-only; fsynced when `sync`.
    fn copy_to_tmp(&self, src: &Path, sync: bool) -> Result<PathBuf> {
        let tmp = self.tmp.join(unique_name("in"));
        copy_file(src, &tmp, 0o444).map_err(io_err(src))?;
        if sync {
            fsync_path(&tmp)?;
        }
        Ok(tmp)
    }

    /// Places one file trying methods in order; returns the method that is now decided (or
    /// `NoReflink` while only executables, which are never hard-linked, have been placed).
    fn place_probe(&self, file: &GetFile, method: Method) -> Result<Method> {
        let (src, dst) = (self.path(&file.digest), file.path.as_path());
        let mode = mode(file);
        if method == Method::Unknown {
            match reflink_file(&src, dst, mode) {
                Ok(()) => return Ok(Method::Reflink),
                Err(e) if errno_is(&e, UNSUPPORTED) => {}
                Err(e) => return Err(self.place_error(e, file)),
            }
        }
        if file.executable {
            copy_file(&src, dst, mode).map_err(|e| self.place_error(e, file))?;
            return Ok(Method::NoReflink);
        }
        match fs::hard_link(&src, dst) {
            Ok(()) => Ok(Method::Hardlink),
            Err(e) if errno_is(&e, UNSUPPORTED) => {
                copy_file(&src, dst, mode).map_err(|e| self.place_error(e, file))?;
                Ok(Method::Copy)
            }
            Err(e) => Err(self.place_error(e, file)),
        }
    }

    fn place(&self, file: &GetFile, method: Method) -> Result<()> {
        let (src, dst) = (self.path(&file.digest), file.path.as_path());
        let mode = mode(file);
        let r = match method {
            Method::Reflink => reflink_file(&src, dst, mode),
            Method::Hardlink if !file.executable => fs::hard_link(&src, dst),
            _ => copy_file(&src, dst, mode),
        };
        match r {
            Ok(()) => Ok(()),
            // One file that cannot be linked (EMLINK: too many links to one inode) is copied.
            Err(e) if method != Method::Copy && errno_is(&e, UNSUPPORTED) => {
                copy_file(&src, dst, mode).map_err(|e| self.place_error(e, file))
            }
            Err(e) => Err(self.place_error(e, file)),
        }
    }

    fn place_error(&self, e: io::Error, file: &GetFile) -> StoreError {
        if e.kind() == io::ErrorKind::NotFound && !self.path(&file.digest).exists() {
            StoreError::CorruptObject(file.digest)
        } else {
            io_err(&file.path)(e)
        }
    }
}

fn mode(file: &GetFile) -> u32 {
    if file.executable { 0o555 } else { 0o444 }
}

/// How `get_files` places files; decided on the first file of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    /// Untried.
    Unknown,
    /// Reflink failed; hardlink untried (the files so far were executable, so copied).
    NoReflink,
    Reflink,
    Hardlink,
    Copy,
}

impl ObjectStore for LocalObjects {
    fn size(&self, digest: &Digest) -> Result<Option<u64>> {
        // Anything unreadable counts as absent: writing the object again repairs it.
        Ok(fs::metadata(self.path(digest))
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len()))
    }

    /// Write to tmp, fsync, rename, fsync the folder.
    fn put_bytes(&self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        let tmp = self.tmp.join(unique_name("obj"));
        create_with(&tmp, 0o444, |f| {
            f.write_all(bytes)?;
            f.sync_data()
        })
        .map_err(io_err(&tmp))?;
        let dst = self.rename_in(&tmp, digest)?;
        if let Some(parent) = dst.parent() {
            fsync_path(parent)?;
        }
        Ok(())
    }

    /// A file with one link on the cache's filesystem is made read-only and renamed in; others
    /// are copied (several hard links: their other names must not become read-only aliases of an
    /// object).
    fn put_files(&self, files: &[PutFile]) -> Result<()> {
        let cache_dev = fs::metadata(&self.dir).map_err(io_err(&self.dir))?.dev();
        let fsync_each = files.len() <= FSYNC_EACH_MAX;
        // 1. Stage: a moved file is made read-only in place, a copied one is copied into tmp/.
        let staged = files
            .par_iter()
            .map(|file| -> Result<PathBuf> {
                let src = &file.path;
                let md = fs::symlink_metadata(src).map_err(io_err(src))?;
                if md.dev() != cache_dev || md.nlink() != 1 {
                    return self.copy_to_tmp(src, fsync_each);
                }
                fs::set_permissions(src, fs::Permissions::from_mode(0o444)).map_err(io_err(src))?;
                if fsync_each {
                    fsync_path(src)?;
                }
                Ok(src.clone())
            })
            .collect::<Result<Vec<_>>>()?;
        // 2. Content on disk before any object name points at it.
        if !fsync_each {
            syncfs(&self.dir)?;
        }
        // 3. Rename into place.
        let dirs = files
            .par_iter()
            .zip(staged)
            .map(|(file, staged)| -> Result<Option<PathBuf>> {
                let dst = match self.rename_in(&staged, &file.digest) {
                    Ok(dst) => dst,
                    // Same device number but another mount (a bind mount): copy after all.
                    Err(StoreError::Io { source, .. }) if errno_is(&source, &[libc::EXDEV]) => {
                        let tmp = self.copy_to_tmp(&staged, true)?;
                        self.rename_in(&tmp, &file.digest)?
                    }
                    Err(e) => return Err(e),
                };
                Ok(dst.parent().map(Path::to_path_buf))
            })
            .collect::<Result<Vec<_>>>()?;
        // 4. The renames on disk.
        if fsync_each {
            let dirs: HashSet<PathBuf> = dirs.into_iter().flatten().collect();
            dirs.par_iter().try_for_each(|d| fsync_path(d))?;
        } else {
            syncfs(&self.dir)?;
        }
        Ok(())
    }

    fn get_bytes(&self, digest: &Digest) -> Result<Option<Vec<u8>>> {
        let path = self.path(digest);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(path)(e)),
        }
    }

    fn open(&self, digest: &Digest) -> Result<Option<Box<dyn io::Read + Send>>> {
        let path = self.path(digest);
        match fs::File::open(&path) {
            Ok(file) => Ok(Some(Box::new(file))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(path)(e)),
        }
    }

    /// The first files decide the method (reflink, else hard link, else copy; executables are
    /// never hard-linked: the object's inode is 0444 and shared); the rest follow it in parallel.
    fn get_files(&self, files: &[GetFile]) -> Result<()> {
        let mut method = Method::Unknown;
        let mut i = 0;
        while i < files.len() && matches!(method, Method::Unknown | Method::NoReflink) {
            method = self.place_probe(&files[i], method)?;
            i += 1;
        }
        files[i..]
            .par_iter()
            .try_for_each(|file| self.place(file, method))
    }

    fn list(&self) -> Result<Vec<(Digest, u64)>> {
        let fanouts = fs::read_dir(&self.dir)
            .and_then(|rd| rd.collect::<io::Result<Vec<_>>>())
            .map_err(io_err(&self.dir))?;
        let lists = fanouts
            .par_iter()
            .map(|fan| -> Result<Vec<(Digest, u64)>> {
                let mut found = Vec::new();
                let fan_name = fan.file_name();
                let (Some(prefix), true) =
                    (fan_name.to_str(), fan.file_type().is_ok_and(|t| t.is_dir()))
                else {
                    return Ok(found);
                };
                let dir = fan.path();
                for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
                    let e = e.map_err(io_err(&dir))?;
                    let name = e.file_name();
                    let Some(Ok(digest)) = name
                        .to_str()
                        .map(|n| format!("{prefix}{n}").parse::<Digest>())
                    else {
                        continue; // not an object: leave it alone
                    };
                    match e.metadata() {
                        Ok(md) => found.push((digest, md.len())),
                        Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                        Err(err) => return Err(io_err(e.path())(err)),
                    }
                }
                Ok(found)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(lists.into_iter().flatten().collect())
    }

    fn delete(&self, digest: &Digest) -> Result<bool> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(path)(e)),
        }
    }

    fn content_digest(&self, digest: &Digest) -> Result<Option<Digest>> {
        match crate::hash::hash_file(&self.path(digest)) {
            Ok(d) => Ok(Some(d)),
            Err(StoreError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Moved to `quarantine/` beside `objects/`, under its full digest.
    fn quarantine(&self, digest: &Digest) -> Result<Option<PathBuf>> {
        let quarantine = self.dir.parent().map_or_else(
            || self.dir.join("quarantine"),
            |cache| cache.join("quarantine"),
        );
        fs::create_dir_all(&quarantine).map_err(io_err(&quarantine))?;
        let (from, to) = (self.path(digest), quarantine.join(digest.to_hex()));
        match fs::rename(&from, &to) {
            Ok(()) => Ok(Some(to)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(from)(e)),
        }
    }

    /// Same device and inode: the workspace file is the object.
    fn evict_if_linked(&self, path: &Path, digest: &Digest) -> Result<bool> {
        let object = self.path(digest);
        let (Ok(file), Ok(obj)) = (fs::symlink_metadata(path), fs::symlink_metadata(&object))
        else {
            return Ok(false);
        };
        if (file.dev(), file.ino()) != (obj.dev(), obj.ino()) {
            return Ok(false);
        }
        fs::remove_file(&object).map_err(io_err(&object))?;
        Ok(true)
    }
}
