//! Content-addressed objects under `cache/objects/`, written atomically, read-only once written.
//!
//! An object lives at `cache/objects/<2 hex>/<62 hex>` with mode 0444, whatever the mode of the
//! file it came from (a manifest says which files are executable). Objects reach their final name
//! only by `rename` from a file whose content is already on disk, so after a crash an object name
//! either does not exist or holds its whole content.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use super::hash::{self, Item, Kind, collect, hash_item, missing_or_io};
use super::manifest::{Node, normalize_path};
use super::statcache::{self, Stat};
use super::{Digest, Manifest, Result, StoreError, io_err};

pub struct Cas {
    objects: PathBuf,
    tmp: PathBuf,
}

/// What a sweep deleted (or would delete, on a dry run).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sweep {
    pub objects: u64,
    pub bytes: u64,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{prefix}-{}-{n}-{nanos:09}", std::process::id())
}

fn errno_is(e: &io::Error, codes: &[i32]) -> bool {
    e.raw_os_error().is_some_and(|c| codes.contains(&c))
}

/// Errors that mean "this way of placing or moving a file does not work here".
const UNSUPPORTED: &[i32] = &[
    libc::EOPNOTSUPP,
    libc::ENOTSUP,
    libc::EXDEV,
    libc::EINVAL,
    libc::ENOTTY,
    libc::ENOSYS,
    libc::EPERM,
    libc::EMLINK,
];

fn fsync_path(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err(path))
}

fn syncfs(path: &Path) -> Result<()> {
    let f = File::open(path).map_err(io_err(path))?;
    // SAFETY: a valid open descriptor.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(io_err(path)(io::Error::last_os_error()));
    }
    Ok(())
}

/// Removes whatever is at `path` (nothing there is fine). Read-only files do not stop it; folders
/// without write permission are made writable first.
pub(crate) fn remove_any(path: &Path) -> Result<()> {
    let md = match fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(path)(e)),
    };
    if !md.is_dir() {
        return match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(path)(e)),
            _ => Ok(()),
        };
    }
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            make_dirs_writable(path);
            fs::remove_dir_all(path).map_err(io_err(path))
        }
    }
}

fn make_dirs_writable(dir: &Path) {
    let Ok(md) = fs::symlink_metadata(dir) else {
        return;
    };
    if !md.is_dir() {
        return;
    }
    if md.mode() & 0o700 != 0o700 {
        let _ = fs::set_permissions(
            dir,
            fs::Permissions::from_mode((md.mode() | 0o700) & 0o7777),
        );
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                make_dirs_writable(&e.path());
            }
        }
    }
}

/// Creates `dst` (which must not exist) with `mode`, and hands its descriptor to `fill`; on failure
/// `dst` is removed.
fn create_with(
    dst: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(dst)?;
    let r = fill(&mut f).and_then(|()| f.set_permissions(fs::Permissions::from_mode(mode)));
    if r.is_err() {
        let _ = fs::remove_file(dst);
    }
    r
}

fn copy_file(src: &Path, dst: &Path, mode: u32) -> io::Result<()> {
    let mut from = File::open(src)?;
    create_with(dst, mode, |to| io::copy(&mut from, to).map(|_| ()))
}

fn reflink_file(src: &Path, dst: &Path, mode: u32) -> io::Result<()> {
    let from = File::open(src)?;
    create_with(dst, mode, |to| {
        // SAFETY: FICLONE takes the source descriptor as its argument; both are open.
        if unsafe { libc::ioctl(to.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    })
}

impl Cas {
    /// `cache_dir` is the workspace's `cache/`; creates `objects/` and `tmp/` in it.
    pub fn open(cache_dir: &Path) -> Result<Cas> {
        let cas = Cas {
            objects: cache_dir.join("objects"),
            tmp: cache_dir.join("tmp"),
        };
        fs::create_dir_all(&cas.objects).map_err(io_err(&cas.objects))?;
        fs::create_dir_all(&cas.tmp).map_err(io_err(&cas.tmp))?;
        Ok(cas)
    }

    pub fn object_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.to_hex();
        self.objects.join(&hex[..2]).join(&hex[2..])
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.object_path(digest).is_file()
    }

    /// The object's size, if it exists.
    fn object_len(&self, digest: &Digest) -> Option<u64> {
        fs::metadata(self.object_path(digest))
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    }

    /// Store bytes as an object (write to tmp, fsync, rename); returns its digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of_bytes(bytes);
        // An existing object of the wrong size (damaged by a crash or by hand) is replaced.
        if self.object_len(&digest) == Some(bytes.len() as u64) {
            return Ok(digest);
        }
        let tmp = self.tmp.join(unique_name("obj"));
        create_with(&tmp, 0o444, |f| {
            use std::io::Write;
            f.write_all(bytes)?;
            f.sync_data()
        })
        .map_err(io_err(&tmp))?;
        let dst = self.rename_in(&tmp, &digest)?;
        if let Some(parent) = dst.parent() {
            fsync_path(parent)?;
        }
        Ok(digest)
    }

    /// Renames `src` to the object's path, creating its fan-out folder if needed; returns the path.
    fn rename_in(&self, src: &Path, digest: &Digest) -> Result<PathBuf> {
        let dst = self.object_path(digest);
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

    /// The object's bytes, checked against its digest.
    pub fn read_bytes(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.object_path(digest);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::CorruptObject(*digest));
            }
            Err(e) => return Err(io_err(path)(e)),
        };
        if Digest::of_bytes(&bytes) != *digest {
            return Err(StoreError::CorruptObject(*digest));
        }
        Ok(bytes)
    }

    /// If `path` is a hard link to the object `digest` (same device and inode), delete the object:
    /// whatever edited `path` in place edited the object too. The content stays reachable through
    /// `path`. Returns whether it evicted the object.
    pub fn evict_if_linked(&self, path: &Path, digest: &Digest) -> Result<bool> {
        let object = self.object_path(digest);
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

    /// Re-hashes an object: `CorruptObject` if it is missing or its content does not match.
    pub fn verify(&self, digest: &Digest) -> Result<()> {
        match hash::hash_file(&self.object_path(digest)) {
            Ok(d) if d == *digest => Ok(()),
            Ok(_) => Err(StoreError::CorruptObject(*digest)),
            Err(StoreError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::CorruptObject(*digest))
            }
            Err(e) => Err(e),
        }
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

    /// Delete every object not in `live`. Manifests are objects too: `live` must hold the
    /// digests of the manifests to keep as well as of the files they reference.
    pub fn sweep(&self, live: &HashSet<Digest>, dry_run: bool) -> Result<Sweep> {
        let fanouts = fs::read_dir(&self.objects)
            .and_then(|rd| rd.collect::<io::Result<Vec<_>>>())
            .map_err(io_err(&self.objects))?;
        fanouts
            .par_iter()
            .map(|fan| -> Result<Sweep> {
                let mut swept = Sweep::default();
                let fan_name = fan.file_name();
                let (Some(prefix), true) =
                    (fan_name.to_str(), fan.file_type().is_ok_and(|t| t.is_dir()))
                else {
                    return Ok(swept);
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
                    if live.contains(&digest) {
                        continue;
                    }
                    let path = e.path();
                    let len = match e.metadata() {
                        Ok(md) => md.len(),
                        Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                        Err(err) => return Err(io_err(path)(err)),
                    };
                    if !dry_run {
                        match fs::remove_file(&path) {
                            Ok(()) => {}
                            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                            Err(err) => return Err(io_err(path)(err)),
                        }
                    }
                    swept.objects += 1;
                    swept.bytes += len;
                }
                Ok(swept)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::{snapshot, snapshot_with_stats};
    use std::os::unix::fs::symlink;

    struct Ws {
        _dir: tempfile::TempDir,
        root: PathBuf,
        cas: Cas,
        conn: rusqlite::Connection,
    }

    fn ws() -> Ws {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ws");
        fs::create_dir_all(&root).unwrap();
        let cas = Cas::open(&root.join("cache")).unwrap();
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(include_str!("schema.sql")).unwrap();
        Ws {
            _dir: dir,
            root,
            cas,
            conn,
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn write(root: &Path, rel: &str, content: &[u8]) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    /// An output tree with nesting, an executable, a symlink, an empty folder and duplicate content.
    fn make_outputs(root: &Path) {
        write(root, "models/clip/weights.bin", &[1u8; 100_000]);
        write(root, "models/clip/config.json", b"{}");
        write(root, "models/clip/copy.json", b"{}");
        write(root, "models/clip/sub/deep/x.txt", b"x");
        write(root, "models/clip/run.sh", b"#!/bin/sh\necho hi\n");
        fs::set_permissions(
            root.join("models/clip/run.sh"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        fs::create_dir_all(root.join("models/clip/empty")).unwrap();
        symlink("config.json", root.join("models/clip/latest")).unwrap();
        write(root, "metrics.json", b"{\"acc\": 0.5}");
    }

    #[test]
    fn bytes_round_trip_read_only_and_corruption() {
        let w = ws();
        let d = w.cas.put_bytes(b"hello").unwrap();
        assert_eq!(d, Digest::of_bytes(b"hello"));
        assert!(w.cas.contains(&d));
        assert_eq!(w.cas.put_bytes(b"hello").unwrap(), d);
        assert_eq!(w.cas.read_bytes(&d).unwrap(), b"hello");
        let p = w.cas.object_path(&d);
        assert_eq!(mode(&p), 0o444);
        let hex = d.to_hex();
        assert!(p.ends_with(format!("objects/{}/{}", &hex[..2], &hex[2..])));
        w.cas.verify(&d).unwrap();

        // Damage it: read and verify notice; put_bytes repairs a wrong-size object.
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&p, b"HELLO").unwrap();
        assert!(matches!(w.cas.read_bytes(&d), Err(StoreError::CorruptObject(x)) if x == d));
        assert!(matches!(
            w.cas.verify(&d),
            Err(StoreError::CorruptObject(_))
        ));
        fs::write(&p, b"hell").unwrap();
        w.cas.put_bytes(b"hello").unwrap();
        assert_eq!(w.cas.read_bytes(&d).unwrap(), b"hello");

        let missing = Digest::of_bytes(b"never stored");
        assert!(matches!(
            w.cas.read_bytes(&missing),
            Err(StoreError::CorruptObject(_))
        ));
        assert!(matches!(
            w.cas.verify(&missing),
            Err(StoreError::CorruptObject(_))
        ));
        assert!(!w.cas.contains(&missing));
        // No leftovers in tmp.
        assert_eq!(fs::read_dir(w.root.join("cache/tmp")).unwrap().count(), 0);
    }

    #[test]
    fn manifests_are_objects() {
        let w = ws();
        make_outputs(&w.root);
        let m = snapshot(&w.conn, &w.root, &s(&["models/clip"])).unwrap();
        let d = w.cas.put_manifest(&m).unwrap();
        assert_eq!(d, m.digest());
        assert_eq!(w.cas.read_manifest(&d).unwrap(), m);
        let not = w.cas.put_bytes(b"not a manifest").unwrap();
        assert!(matches!(
            w.cas.read_manifest(&not),
            Err(StoreError::Other(_))
        ));
    }

    #[test]
    fn ingest_materialize_round_trip() {
        let w = ws();
        make_outputs(&w.root);
        let outs = s(&["models/clip", "metrics.json"]);
        let before = snapshot(&w.conn, &w.root, &outs).unwrap();

        let m = w.cas.ingest(&w.conn, &w.root, &outs).unwrap();
        assert_eq!(m, before);
        assert!(!w.root.join("models/clip").exists());
        assert!(!w.root.join("metrics.json").exists());
        assert!(w.root.join("models").is_dir(), "only the outs are taken");
        assert_eq!(w.cas.read_manifest(&m.digest()).unwrap(), m);
        for d in m.objects() {
            assert_eq!(mode(&w.cas.object_path(&d)), 0o444);
            w.cas.verify(&d).unwrap();
        }

        w.cas.materialize(&w.conn, &m, &w.root, &outs).unwrap();
        let (after, stats) = snapshot_with_stats(&w.conn, &w.root, &outs).unwrap();
        assert_eq!(after.digest(), m.digest());
        assert_eq!(
            (stats.hashed, stats.from_cache),
            (0, 6),
            "placed files are answered by the stat cache"
        );
        assert_eq!(mode(&w.root.join("models/clip/config.json")), 0o444);
        assert_eq!(mode(&w.root.join("models/clip/run.sh")), 0o555);
        assert_eq!(mode(&w.root.join("metrics.json")), 0o444);
        assert_eq!(
            fs::read_link(w.root.join("models/clip/latest")).unwrap(),
            Path::new("config.json")
        );
        assert!(w.root.join("models/clip/empty").is_dir());
        // SAFETY: geteuid has no preconditions. (Root ignores permissions.)
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                fs::write(w.root.join("models/clip/config.json"), b"x").is_err(),
                "read-only"
            );
        }
        // Folders we created stay writable.
        fs::write(w.root.join("models/clip/sub/new.txt"), b"n").unwrap();

        // Materializing again replaces what is there, extra files included.
        w.cas.materialize(&w.conn, &m, &w.root, &outs).unwrap();
        assert!(!w.root.join("models/clip/sub/new.txt").exists());
        let (again, stats) = snapshot_with_stats(&w.conn, &w.root, &outs).unwrap();
        assert_eq!(again, m);
        assert_eq!(stats.hashed, 0);
    }

    #[test]
    fn ingest_from_a_temp_dir_then_materialize_in_the_workspace() {
        // How the engine runs a stage: the command writes its outs under a temp dir.
        let w = ws();
        let tmp = w.cas.temp_dir().unwrap();
        make_outputs(&tmp);
        let outs = s(&["./models/clip/", "metrics.json"]);
        let m = w.cas.ingest(&w.conn, &tmp, &outs).unwrap();
        assert!(m.get("models/clip/run.sh").is_some());
        assert!(!tmp.join("models/clip").exists());
        w.cas.materialize(&w.conn, &m, &w.root, &outs).unwrap();
        let (now, st) = snapshot_with_stats(&w.conn, &w.root, &outs).unwrap();
        assert_eq!(now.digest(), m.digest());
        assert_eq!(st.hashed, 0);
        assert_eq!(m.under("./models/clip"), now.under("models/clip/"));
        w.cas.clean_temp().unwrap();
        assert!(!tmp.exists());
    }

    #[test]
    fn materialize_replaces_read_only_trees_and_removes_absent_outs() {
        let w = ws();
        write(&w.root, "out/a.txt", b"new a");
        let m = w.cas.ingest(&w.conn, &w.root, &s(&["out"])).unwrap();
        // Something else at the out: read-only files in a read-only folder, a stray file.
        write(&w.root, "out/locked/b.txt", b"old");
        write(&w.root, "out/a.txt", b"old a");
        fs::set_permissions(
            w.root.join("out/locked/b.txt"),
            fs::Permissions::from_mode(0o444),
        )
        .unwrap();
        fs::set_permissions(w.root.join("out/locked"), fs::Permissions::from_mode(0o555)).unwrap();
        write(&w.root, "gone.txt", b"stale");
        w.cas
            .materialize(&w.conn, &m, &w.root, &s(&["out", "gone.txt"]))
            .unwrap();
        assert_eq!(fs::read(w.root.join("out/a.txt")).unwrap(), b"new a");
        assert!(!w.root.join("out/locked").exists());
        assert!(!w.root.join("gone.txt").exists());
        // An out that is a file replaced by one that is a folder, and back.
        let f = {
            write(&w.root, "x", b"file");
            w.cas.ingest(&w.conn, &w.root, &s(&["x"])).unwrap()
        };
        write(&w.root, "x/inner", b"dir");
        w.cas.materialize(&w.conn, &f, &w.root, &s(&["x"])).unwrap();
        assert_eq!(fs::read(w.root.join("x")).unwrap(), b"file");
    }

    #[test]
    fn materialize_reports_missing_objects() {
        let w = ws();
        write(&w.root, "out/a.txt", b"a");
        let m = w.cas.ingest(&w.conn, &w.root, &s(&["out"])).unwrap();
        let d = m.objects().next().unwrap();
        fs::remove_file(w.cas.object_path(&d)).unwrap();
        let err = w
            .cas
            .materialize(&w.conn, &m, &w.root, &s(&["out"]))
            .unwrap_err();
        assert!(
            matches!(err, StoreError::CorruptObject(x) if x == d),
            "{err}"
        );
    }

    #[test]
    fn ingest_refuses_symlinked_outs_and_leaves_everything() {
        let w = ws();
        write(&w.root, "real/a.txt", b"a");
        symlink("real", w.root.join("out")).unwrap();
        let err = w
            .cas
            .ingest(&w.conn, &w.root, &s(&["real", "out"]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "out out is a symlink; outs must be real files or folders"
        );
        assert!(w.root.join("real/a.txt").is_file());
        assert!(matches!(
            w.cas.ingest(&w.conn, &w.root, &s(&["nope"])),
            Err(StoreError::Missing(_))
        ));
        assert!(
            w.cas
                .ingest(&w.conn, &w.root, &s(&["real", "real/a.txt"]))
                .is_err(),
            "overlap"
        );
        assert!(w.root.join("real/a.txt").is_file());
    }

    #[test]
    fn ingest_copies_hard_linked_files_and_drops_known_objects() {
        let w = ws();
        write(&w.root, "data/shared.txt", b"shared");
        write(&w.root, "out/known.txt", b"known");
        fs::hard_link(
            w.root.join("data/shared.txt"),
            w.root.join("out/shared.txt"),
        )
        .unwrap();
        let known = w.cas.put_bytes(b"known").unwrap();
        let known_ino = fs::metadata(w.cas.object_path(&known)).unwrap().ino();
        w.cas.ingest(&w.conn, &w.root, &s(&["out"])).unwrap();
        assert!(!w.root.join("out").exists());
        // The other name of the hard-linked file is untouched and still writable.
        assert_eq!(mode(&w.root.join("data/shared.txt")) & 0o200, 0o200);
        assert_eq!(
            fs::metadata(w.root.join("data/shared.txt"))
                .unwrap()
                .nlink(),
            1
        );
        let obj = w.cas.object_path(&Digest::of_bytes(b"shared"));
        assert_eq!(fs::read(obj).unwrap(), b"shared");
        assert_eq!(
            fs::metadata(w.cas.object_path(&known)).unwrap().ino(),
            known_ino
        );
    }

    #[test]
    fn ingest_many_files_uses_syncfs_path() {
        let w = ws();
        for i in 0..(ingest::FSYNC_EACH_MAX + 10) {
            write(
                &w.root,
                &format!("out/d{}/f{i}", i % 7),
                format!("{i}").as_bytes(),
            );
        }
        let before = snapshot(&w.conn, &w.root, &s(&["out"])).unwrap();
        let m = w.cas.ingest(&w.conn, &w.root, &s(&["out"])).unwrap();
        assert_eq!(m, before);
        w.cas
            .materialize(&w.conn, &m, &w.root, &s(&["out"]))
            .unwrap();
        assert_eq!(snapshot(&w.conn, &w.root, &s(&["out"])).unwrap(), m);
    }

    #[test]
    fn temp_dirs_and_clean_temp() {
        let w = ws();
        let a = w.cas.temp_dir().unwrap();
        let b = w.cas.temp_dir().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(w.root.join("cache/tmp")) && a.is_dir());
        write(&a, "ro/file", b"x");
        fs::set_permissions(a.join("ro/file"), fs::Permissions::from_mode(0o444)).unwrap();
        fs::set_permissions(a.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
        fs::write(w.root.join("cache/tmp/stray"), b"x").unwrap();
        fs::set_permissions(
            w.root.join("cache/tmp/stray"),
            fs::Permissions::from_mode(0o444),
        )
        .unwrap();
        w.cas.clean_temp().unwrap();
        assert_eq!(fs::read_dir(w.root.join("cache/tmp")).unwrap().count(), 0);
    }

    #[test]
    fn sweep_keeps_live_objects() {
        let w = ws();
        let keep = w.cas.put_bytes(b"keep me").unwrap();
        let drop1 = w.cas.put_bytes(b"drop").unwrap();
        let drop2 = w.cas.put_bytes(b"drop too!").unwrap();
        fs::write(w.root.join("cache/objects/not-an-object"), b"?").unwrap();
        let live: HashSet<Digest> = [keep].into();
        let dry = w.cas.sweep(&live, true).unwrap();
        assert_eq!(
            dry,
            Sweep {
                objects: 2,
                bytes: 4 + 9
            }
        );
        assert!(w.cas.contains(&drop1) && w.cas.contains(&drop2));
        let done = w.cas.sweep(&live, false).unwrap();
        assert_eq!(done, dry);
        assert!(w.cas.contains(&keep));
        assert!(!w.cas.contains(&drop1) && !w.cas.contains(&drop2));
        assert!(w.root.join("cache/objects/not-an-object").exists());
        assert_eq!(w.cas.sweep(&live, false).unwrap(), Sweep::default());
    }

    /// `cargo test --lib perf_ingest -- --ignored --nocapture`
    #[test]
    #[ignore = "timing; run with --ignored --nocapture"]
    fn perf_ingest_materialize_20k() {
        let w = ws();
        let make = |dir: &str| {
            fs::create_dir_all(w.root.join(dir)).unwrap();
            for i in 0..20_000u32 {
                let mut content = vec![0u8; 4096];
                content[..4].copy_from_slice(&i.to_le_bytes());
                content[4..4 + dir.len()].copy_from_slice(dir.as_bytes());
                fs::write(w.root.join(format!("{dir}/img_{i:05}.png")), content).unwrap();
            }
        };
        // Durability strategies on 20k fresh files.
        make("a");
        let files: Vec<PathBuf> = (0..20_000)
            .map(|i| w.root.join(format!("a/img_{i:05}.png")))
            .collect();
        let t = std::time::Instant::now();
        syncfs(&w.root).unwrap();
        eprintln!("syncfs after writing 20k x 4 KiB: {:?}", t.elapsed());
        make("b");
        let files_b: Vec<PathBuf> = (0..20_000)
            .map(|i| w.root.join(format!("b/img_{i:05}.png")))
            .collect();
        let t = std::time::Instant::now();
        files_b[..2000]
            .par_iter()
            .for_each(|p| fsync_path(p).unwrap());
        eprintln!(
            "parallel fsync of 2,000 of 20k fresh files: {:?} (x10 for all)",
            t.elapsed()
        );
        syncfs(&w.root).unwrap();
        drop(files);

        make("out");
        let t = std::time::Instant::now();
        let m = w.cas.ingest(&w.conn, &w.root, &s(&["out"])).unwrap();
        eprintln!(
            "ingest 20k x 4 KiB (hash, stage, syncfs, rename, syncfs): {:?}",
            t.elapsed()
        );
        let t = std::time::Instant::now();
        w.cas
            .materialize(&w.conn, &m, &w.root, &s(&["out"]))
            .unwrap();
        eprintln!(
            "materialize 20k (hardlink + stat-cache rows): {:?}",
            t.elapsed()
        );
        let t = std::time::Instant::now();
        let (_, st) = snapshot_with_stats(&w.conn, &w.root, &s(&["out"])).unwrap();
        eprintln!("snapshot right after materialize: {:?} {st:?}", t.elapsed());
        let t = std::time::Instant::now();
        w.cas
            .materialize(&w.conn, &m, &w.root, &s(&["out"]))
            .unwrap();
        eprintln!(
            "materialize again (remove 20k + place 20k): {:?}",
            t.elapsed()
        );
        let t = std::time::Instant::now();
        let live: HashSet<Digest> = m.objects().collect();
        let sw = w.cas.sweep(&live, true).unwrap();
        eprintln!("sweep dry run over 20k objects: {:?} {sw:?}", t.elapsed());
    }
}
