//! Hashing workspace paths with blake3: large files memory-mapped and hashed on all cores,
//! folders walked and hashed in parallel, unchanged files answered by the stat cache.
//!
//! # The racy-timestamp problem
//!
//! The stat cache trusts a file whose (dev, inode, size, mtime, ctime, mode) are unchanged. That is
//! only sound if every later write is bound to change one of them. A write changes mtime and ctime
//! to "now", but timestamps have a granularity (the kernel's coarse clock ticks every 1-10 ms, FAT
//! stores mtime in 2 s steps, network filesystems add their own rounding): a file written, hashed
//! and written again, same size, within one tick keeps its stat while its content changed. Git's
//! index has the same hole ("racy git").
//!
//! So a snapshot does not record (it still hashes and reports, of course) a file whose mtime or ctime
//! lies less than [`RACY_WINDOW`] before the snapshot started, or after it. A recorded file was last
//! changed at least 2 s before we began; any write after we began happens at least 2 s later than
//! that, and so changes ctime by at least 2 s, far more than any timestamp granularity — the next
//! snapshot sees it. (mtime alone is not enough: `touch -d` and `cp -p` set it at will, ctime they
//! cannot.) Such recent files are re-hashed by the next snapshot and recorded once they are older.
//! A file whose stat changes while it is hashed is not recorded either.

use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rayon::prelude::*;

use super::manifest::{Entry, Node, normalize_path};
use super::statcache::{self, Stat};
use super::{Digest, Manifest, Result, StoreError, io_err};

/// Files at least this big are memory-mapped and hashed on all cores (blake3's `update_rayon`);
/// smaller ones are read into a buffer and hashed on the calling thread. Measured on a 2-core
/// AVX-512 machine (page cache): reading hashes at ~8 GB/s at every size; mmap + 2 threads gives
/// 1.2 GB/s at 64 KiB, 5.9 at 1 MiB, 7.8 at 4 MiB, 14.8 at 16 MiB and beyond (map, page-table
/// and thread hand-off costs dominate small files). Snapshots hash many files at once anyway.
pub const MMAP_THRESHOLD: u64 = 8 << 20;

/// Files changed this recently before a snapshot started are not written to the stat cache
/// (see the module documentation).
pub const RACY_WINDOW: Duration = Duration::from_secs(2);

/// Hash one file's content (mmap + multi-threaded above a size threshold).
pub fn hash_file(path: &Path) -> Result<Digest> {
    let file = File::open(path).map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    hash_open(&file, len).map(|(d, _)| d).map_err(io_err(path))
}

/// Hashes an open file whose stat said `len` bytes; returns the digest and the bytes hashed.
pub(crate) fn hash_open(file: &File, len: u64) -> io::Result<(Digest, u64)> {
    if len >= MMAP_THRESHOLD
        && let Some(done) = hash_mmap(file, len)
    {
        return Ok(done);
    }
    hash_read(file)
}

fn hash_read(mut file: &File) -> io::Result<(Digest, u64)> {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 128 * 1024]);
    }
    BUF.with_borrow_mut(|buf| {
        let mut hasher = blake3::Hasher::new();
        let mut total = 0u64;
        loop {
            match file.read(buf) {
                Ok(0) => break,
                Ok(n) => {
                    hasher.update(&buf[..n]);
                    total += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok((hasher.finalize().into(), total))
    })
}

/// Maps `len` bytes of `file` and hashes them on all cores; `None` if mapping fails (then the
/// caller reads). If another process truncates the file while it is mapped, reading the lost pages
/// raises SIGBUS: the same trade every mmap-based hasher (b3sum, git with core.packedGitWindowSize) makes.
fn hash_mmap(file: &File, len: u64) -> Option<(Digest, u64)> {
    struct Map(*mut libc::c_void, usize);
    impl Drop for Map {
        fn drop(&mut self) {
            // SAFETY: unmaps exactly the region mapped below.
            unsafe { libc::munmap(self.0, self.1) };
        }
    }
    let n = usize::try_from(len).ok()?;
    // SAFETY: a fresh private read-only mapping of an open file; the pointer is checked.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            n,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return None;
    }
    let map = Map(ptr, n);
    // SAFETY: the mapping is valid for `n` bytes until `map` drops, after the hash.
    unsafe { libc::madvise(map.0, n, libc::MADV_WILLNEED) };
    let bytes = unsafe { std::slice::from_raw_parts(map.0 as *const u8, n) };
    let mut hasher = blake3::Hasher::new();
    hasher.update_rayon(bytes);
    Some((hasher.finalize().into(), len))
}

/// What a snapshot did, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Regular files in the manifest.
    pub files: usize,
    /// Files answered by the stat cache, not read.
    pub from_cache: usize,
    /// Files read and hashed.
    pub hashed: usize,
    pub hashed_bytes: u64,
    /// Hashed files not written to the stat cache: changed within the racy window, or while hashed.
    pub not_recorded: usize,
}

/// What `paths` hold now, as one manifest. `paths` are relative to `root` ("data/raw") or absolute;
/// each entry keeps that spelling as its prefix ("data/raw/img_001.png"). A folder yields a `Dir`
/// entry for itself and entries for everything inside it. A missing path is `StoreError::Missing`.
/// Files whose (dev, inode, size, mtime, ctime, mode) match the stat cache are not read.
///
/// A path that is itself a symlink is followed; symlinks inside folders are recorded as such.
/// Spellings are normalized ("./data/raw/" → "data/raw"); overlapping paths are fine.
pub fn snapshot(conn: &rusqlite::Connection, root: &Path, paths: &[String]) -> Result<Manifest> {
    snapshot_with_stats(conn, root, paths).map(|(m, _)| m)
}

/// [`snapshot`], also saying how much it read.
pub fn snapshot_with_stats(
    conn: &rusqlite::Connection,
    root: &Path,
    paths: &[String],
) -> Result<(Manifest, SnapshotStats)> {
    snapshot_at(conn, root, paths, SystemTime::now())
}

/// A snapshot that takes `started` as its start time (tests move it forward to leave the racy
/// window behind without sleeping).
pub(crate) fn snapshot_at(
    conn: &rusqlite::Connection,
    root: &Path,
    paths: &[String],
    started: SystemTime,
) -> Result<(Manifest, SnapshotStats)> {
    let cutoff_ns = started
        .checked_sub(RACY_WINDOW)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    let tops = paths
        .iter()
        .map(|p| normalize_path(p).map(|s| (p.as_str(), s)))
        .collect::<Result<Vec<_>>>()?;

    // Walk on the rayon pool while this thread loads the stat-cache rows (a Connection cannot
    // cross threads).
    let (walked, cache) = std::thread::scope(|s| {
        let walker = s.spawn(|| {
            let mut items = Vec::new();
            for (given, spelled) in &tops {
                let full = root.join(spelled);
                let md = fs::metadata(&full).map_err(|e| missing_or_io(e, given, &full))?;
                collect(&full, spelled, &md, true, &mut items)?;
            }
            Ok::<_, StoreError>(items)
        });
        let mut cache = HashMap::new();
        let loaded = tops
            .iter()
            .try_for_each(|(_, spelled)| statcache::load_under(conn, spelled, &mut cache));
        let walked = walker
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (walked, loaded.map(|()| cache))
    });
    let mut items = walked?;
    let mut cache = cache?;
    items.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    items.dedup_by(|a, b| a.path == b.path); // overlapping paths, e.g. "data" and "data/raw"

    let outcomes = items
        .par_iter()
        .map(|item| match item.kind {
            Kind::File(stat) => match cache.get(&item.path) {
                Some(c) if c.stat == stat => Ok(Outcome::Cached(c.digest)),
                _ => {
                    let (digest, size, stable) = hash_item(root, item, stat)?;
                    let racy = stat.mtime_ns >= cutoff_ns || stat.ctime_ns >= cutoff_ns;
                    Ok(Outcome::Hashed {
                        digest,
                        size,
                        record: stable && !racy,
                    })
                }
            },
            _ => Ok(Outcome::NotFile),
        })
        .collect::<Result<Vec<_>>>()?;

    let mut stats = SnapshotStats::default();
    let mut entries = Vec::with_capacity(items.len());
    let mut upserts = Vec::new();
    let mut deletes: Vec<&str> = Vec::new();
    for (item, outcome) in items.iter().zip(outcomes) {
        let node = match (&item.kind, outcome) {
            (Kind::Dir, _) => Node::Dir,
            (Kind::Symlink(target), _) => Node::Symlink {
                target: target.clone(),
            },
            (Kind::File(stat), Outcome::Cached(digest)) => {
                stats.from_cache += 1;
                Node::File {
                    digest,
                    size: stat.size,
                    executable: is_executable(stat.mode),
                }
            }
            (
                Kind::File(stat),
                Outcome::Hashed {
                    digest,
                    size,
                    record,
                },
            ) => {
                stats.hashed += 1;
                stats.hashed_bytes += size;
                if record {
                    upserts.push((item.path.as_str(), *stat, digest));
                } else {
                    stats.not_recorded += 1;
                    if cache.contains_key(&item.path) {
                        deletes.push(item.path.as_str());
                    }
                }
                Node::File {
                    digest,
                    size,
                    executable: is_executable(stat.mode),
                }
            }
            (Kind::File(_), Outcome::NotFile) => unreachable!("a file item has a file outcome"),
        };
        if matches!(node, Node::File { .. }) {
            stats.files += 1;
            cache.remove(&item.path);
        }
        entries.push(Entry {
            path: item.path.clone(),
            node,
        });
    }
    // What is left of the loaded rows no longer names a file under the snapshotted paths.
    deletes.extend(cache.keys().map(String::as_str));
    statcache::update(conn, &upserts, &deletes)?;
    Ok((Manifest::new(entries), stats))
}

enum Outcome {
    Cached(Digest),
    Hashed {
        digest: Digest,
        size: u64,
        record: bool,
    },
    NotFile,
}

/// One thing found under a path, spelled as in manifests.
pub(crate) struct Item {
    pub path: String,
    pub kind: Kind,
    /// A path given by the caller (followed if it is a symlink), not found by walking.
    pub top: bool,
    /// Hard links to a file (1 for anything else).
    pub nlink: u64,
}

pub(crate) enum Kind {
    Dir,
    Symlink(String),
    File(Stat),
}

pub(crate) fn is_executable(mode: u32) -> bool {
    mode & 0o111 != 0
}

pub(crate) fn missing_or_io(e: io::Error, given: &str, full: &Path) -> StoreError {
    if e.kind() == io::ErrorKind::NotFound {
        StoreError::Missing(given.to_string())
    } else {
        StoreError::Io {
            path: full.to_path_buf(),
            source: e,
        }
    }
}

fn non_utf8(full: &Path) -> StoreError {
    StoreError::Other(format!(
        "{}: the name is not valid UTF-8; rename it (vlmflow records paths as UTF-8)",
        full.display()
    ))
}

fn special(full: &Path, ft: fs::FileType) -> StoreError {
    let what = if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_block_device() || ft.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    };
    StoreError::Other(format!(
        "{} is {what}; inputs and outputs may hold only files, folders and symlinks",
        full.display()
    ))
}

/// Appends what `full` (spelled `spelled`, with metadata `md`) holds to `items`: itself, and for a
/// folder everything inside, walked in parallel. Symlinks inside folders are not followed.
pub(crate) fn collect(
    full: &Path,
    spelled: &str,
    md: &Metadata,
    top: bool,
    items: &mut Vec<Item>,
) -> Result<()> {
    let ft = md.file_type();
    let kind = if ft.is_file() {
        Kind::File(Stat::from_metadata(md))
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink(read_link(full)?)
    } else {
        return Err(special(full, ft));
    };
    let is_dir = matches!(kind, Kind::Dir);
    items.push(Item {
        path: spelled.to_string(),
        kind,
        top,
        nlink: md.nlink(),
    });
    if is_dir {
        walk_dir(full, spelled, items)?;
    }
    Ok(())
}

fn read_link(full: &Path) -> Result<String> {
    let target = fs::read_link(full).map_err(io_err(full))?;
    target
        .into_os_string()
        .into_string()
        .map_err(|_| non_utf8(full))
}

fn walk_dir(full: &Path, spelled: &str, items: &mut Vec<Item>) -> Result<()> {
    let entries = fs::read_dir(full)
        .and_then(|rd| rd.collect::<io::Result<Vec<_>>>())
        .map_err(io_err(full))?;
    let found = entries
        .into_par_iter()
        .try_fold(Vec::new, |mut acc, e| {
            visit(&e, spelled, &mut acc).map(|()| acc)
        })
        .try_reduce(Vec::new, |mut a, mut b| {
            if a.len() < b.len() {
                std::mem::swap(&mut a, &mut b);
            }
            a.append(&mut b);
            Ok(a)
        })?;
    items.extend(found);
    Ok(())
}

fn visit(e: &fs::DirEntry, parent: &str, acc: &mut Vec<Item>) -> Result<()> {
    let name = e.file_name();
    let Some(name) = name.to_str() else {
        return Err(non_utf8(&e.path()));
    };
    let path = if parent.ends_with('/') {
        format!("{parent}{name}")
    } else {
        format!("{parent}/{name}")
    };
    let ft = match e.file_type() {
        Ok(ft) => ft,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()), // deleted meanwhile
        Err(err) => return Err(io_err(e.path())(err)),
    };
    if ft.is_file() {
        // statx relative to the open directory: no path lookup.
        let md = match e.metadata() {
            Ok(md) => md,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(io_err(e.path())(err)),
        };
        acc.push(Item {
            path,
            kind: Kind::File(Stat::from_metadata(&md)),
            top: false,
            nlink: md.nlink(),
        });
    } else if ft.is_dir() {
        let full = e.path();
        acc.push(Item {
            path: path.clone(),
            kind: Kind::Dir,
            top: false,
            nlink: 1,
        });
        walk_dir(&full, &path, acc)?;
    } else if ft.is_symlink() {
        acc.push(Item {
            path,
            kind: Kind::Symlink(read_link(&e.path())?),
            top: false,
            nlink: 1,
        });
    } else {
        return Err(special(&e.path(), ft));
    }
    Ok(())
}

/// Reads and hashes a file item found with `stat`; returns (digest, size, stable) where `stable`
/// says its stat did not change while it was hashed.
pub(crate) fn hash_item(root: &Path, item: &Item, stat: Stat) -> Result<(Digest, u64, bool)> {
    let full = root.join(&item.path);
    // O_NONBLOCK: should the file have been replaced by a FIFO, open must not hang (it has no
    // effect on regular files). O_NOFOLLOW: a file found inside a folder is not a symlink.
    let mut flags = libc::O_NONBLOCK;
    if !item.top {
        flags |= libc::O_NOFOLLOW;
    }
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(&full)
        .map_err(io_err(&full))?;
    let (digest, size) = hash_open(&file, stat.size).map_err(io_err(&full))?;
    let after = file.metadata().map_err(io_err(&full))?;
    let stable = Stat::from_metadata(&after) == stat && after.size() == size;
    Ok((digest, size, stable))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    pub(crate) fn db() -> rusqlite::Connection {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(include_str!("schema.sql")).unwrap();
        conn
    }

    fn later() -> SystemTime {
        SystemTime::now() + RACY_WINDOW + Duration::from_secs(1)
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn write(root: &Path, rel: &str, content: &[u8]) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    fn paths(m: &Manifest) -> Vec<&str> {
        m.entries().iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn hash_file_small_and_large() {
        let dir = tempfile::tempdir().unwrap();
        for len in [
            0usize,
            1,
            1023,
            1024,
            65_537,
            MMAP_THRESHOLD as usize,
            MMAP_THRESHOLD as usize * 3 + 7,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let p = dir.path().join(format!("f{len}"));
            fs::write(&p, &data).unwrap();
            assert_eq!(hash_file(&p).unwrap(), Digest::of_bytes(&data), "len {len}");
        }
        assert!(matches!(
            hash_file(&dir.path().join("nope")),
            Err(StoreError::Io { .. })
        ));
    }

    #[test]
    fn snapshot_nested_folders_symlinks_exec() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "data/raw/a.png", b"aaa");
        write(root, "data/raw/sub/deeper/b.png", b"bb");
        write(root, "data/run.sh", b"#!/bin/sh\n");
        fs::set_permissions(root.join("data/run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir_all(root.join("data/empty")).unwrap();
        std::os::unix::fs::symlink("raw/a.png", root.join("data/link")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", root.join("data/dangling")).unwrap();
        write(root, "labels.csv", b"x,y\n");

        let conn = db();
        let m = snapshot(&conn, root, &s(&["./data/", "labels.csv"])).unwrap();
        assert_eq!(
            paths(&m),
            [
                "data",
                "data/dangling",
                "data/empty",
                "data/link",
                "data/raw",
                "data/raw/a.png",
                "data/raw/sub",
                "data/raw/sub/deeper",
                "data/raw/sub/deeper/b.png",
                "data/run.sh",
                "labels.csv"
            ]
        );
        assert_eq!(
            m.get("data/link"),
            Some(&Node::Symlink {
                target: "raw/a.png".into()
            })
        );
        assert_eq!(
            m.get("data/run.sh"),
            Some(&Node::File {
                digest: Digest::of_bytes(b"#!/bin/sh\n"),
                size: 10,
                executable: true
            })
        );
        assert_eq!(
            m.get("data/raw/a.png"),
            Some(&Node::File {
                digest: Digest::of_bytes(b"aaa"),
                size: 3,
                executable: false
            })
        );
        // Overlapping paths and absolute spellings.
        let m2 = snapshot(&conn, root, &s(&["data", "data/raw"])).unwrap();
        assert_eq!(m2, m.under("data"));
        let abs = root.join("data/raw").to_str().unwrap().to_string();
        let m3 = snapshot(&conn, root, std::slice::from_ref(&abs)).unwrap();
        assert_eq!(m3.entries()[1].path, format!("{abs}/a.png"));

        assert!(
            matches!(snapshot(&conn, root, &s(&["nope"])), Err(StoreError::Missing(p)) if p == "nope")
        );
        assert!(snapshot(&conn, root, &s(&["."])).is_err());
    }

    #[test]
    fn top_level_symlink_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "elsewhere/x.bin", b"x");
        fs::create_dir_all(root.join("data")).unwrap();
        std::os::unix::fs::symlink(root.join("elsewhere"), root.join("data/raw")).unwrap();
        std::os::unix::fs::symlink(root.join("elsewhere/x.bin"), root.join("one.bin")).unwrap();
        let conn = db();
        let m = snapshot(&conn, root, &s(&["data/raw", "one.bin"])).unwrap();
        assert_eq!(paths(&m), ["data/raw", "data/raw/x.bin", "one.bin"]);
        assert!(matches!(m.get("one.bin"), Some(Node::File { size: 1, .. })));
        std::os::unix::fs::symlink(root.join("gone"), root.join("dangling")).unwrap();
        assert!(matches!(
            snapshot(&conn, root, &s(&["dangling"])),
            Err(StoreError::Missing(_))
        ));
    }

    #[test]
    fn non_utf8_name_is_an_error_naming_the_path() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("data")).unwrap();
        let bad = root
            .join("data")
            .join(std::ffi::OsStr::from_bytes(b"bad\xff.png"));
        if fs::write(&bad, b"x").is_err() {
            return; // a filesystem that refuses such names
        }
        let err = snapshot(&db(), root, &s(&["data"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad") && err.contains("UTF-8"), "{err}");
    }

    #[test]
    fn stat_cache_serves_unchanged_files_and_rehashes_edited_ones() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for i in 0..10 {
            write(
                root,
                &format!("data/f{i}"),
                format!("content {i}").as_bytes(),
            );
        }
        let conn = db();
        let (m1, st1) = snapshot_at(&conn, root, &s(&["data"]), later()).unwrap();
        assert_eq!(
            (st1.files, st1.hashed, st1.from_cache, st1.not_recorded),
            (10, 10, 0, 0)
        );
        let row = statcache::lookup(&conn, "data/f3").unwrap().unwrap();
        assert_eq!(row.digest, Digest::of_bytes(b"content 3"));
        assert_eq!(
            row.stat,
            Stat::from_metadata(&fs::metadata(root.join("data/f3")).unwrap())
        );

        let (m2, st2) = snapshot_at(&conn, root, &s(&["data"]), later()).unwrap();
        assert_eq!(m2, m1);
        assert_eq!((st2.hashed, st2.from_cache), (0, 10));

        // Same size, new content: ctime (and usually mtime) moves, so it is read again.
        std::thread::sleep(Duration::from_millis(20));
        write(root, "data/f3", b"CONTENT 3");
        fs::remove_file(root.join("data/f4")).unwrap();
        let (m3, st3) = snapshot_at(&conn, root, &s(&["data"]), later()).unwrap();
        assert_eq!((st3.hashed, st3.from_cache), (1, 8));
        let ch: Vec<String> = m1.changes(&m3).iter().map(|c| c.to_string()).collect();
        assert_eq!(ch, ["data/f3 changed", "data/f4 removed"]);
        assert_eq!(
            statcache::lookup(&conn, "data/f3").unwrap().unwrap().digest,
            Digest::of_bytes(b"CONTENT 3")
        );
        // The vanished file's row is pruned.
        assert!(statcache::lookup(&conn, "data/f4").unwrap().is_none());

        // A poisoned row with a matching stat is believed: proof that the file was not read.
        let md = fs::metadata(root.join("data/f5")).unwrap();
        statcache::record_known(&conn, "data/f5", &md, &Digest::of_bytes(b"lie")).unwrap();
        let (m4, _) = snapshot_at(&conn, root, &s(&["data"]), later()).unwrap();
        assert!(
            matches!(m4.get("data/f5"), Some(Node::File { digest, .. }) if *digest == Digest::of_bytes(b"lie"))
        );
    }

    #[test]
    fn racy_window_is_respected() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "data/new", b"fresh");
        let conn = db();
        // Just written: hashed, in the manifest, but not recorded.
        let (m, st) = snapshot_with_stats(&conn, root, &s(&["data"])).unwrap();
        assert!(matches!(
            m.get("data/new"),
            Some(Node::File { size: 5, .. })
        ));
        assert_eq!((st.hashed, st.not_recorded), (1, 1));
        assert!(statcache::lookup(&conn, "data/new").unwrap().is_none());
        // An old mtime does not help: ctime is recent.
        let old = SystemTime::now() - Duration::from_secs(3600);
        fs::File::options()
            .write(true)
            .open(root.join("data/new"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let (_, st) = snapshot_with_stats(&conn, root, &s(&["data"])).unwrap();
        assert_eq!((st.hashed, st.not_recorded), (1, 1));
        // Seen from 3 s later, the same file is old enough to record.
        let (_, st) = snapshot_at(&conn, root, &s(&["data"]), later()).unwrap();
        assert_eq!((st.hashed, st.not_recorded), (1, 0));
        assert!(statcache::lookup(&conn, "data/new").unwrap().is_some());
    }

    /// Timings for the report. `cargo test --release --lib perf_hash -- --ignored --nocapture`
    #[test]
    #[ignore = "timing; run with --ignored --nocapture"]
    fn perf_hash_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        let data: Vec<u8> = (0..(1usize << 30))
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        fs::write(&big, &data).unwrap();
        drop(data);
        for len in [64u64 << 10, 256 << 10, 1 << 20, 4 << 20, 8 << 20, 16 << 20] {
            let p = dir.path().join(format!("f{len}"));
            fs::write(&p, vec![7u8; len as usize]).unwrap();
            let reps = (256u64 << 20) / len;
            for (name, mmap) in [("read", false), ("mmap+rayon", true)] {
                let t = std::time::Instant::now();
                for _ in 0..reps {
                    let f = File::open(&p).unwrap();
                    if mmap {
                        hash_mmap(&f, len).unwrap();
                    } else {
                        hash_read(&f).unwrap();
                    }
                }
                let gbs = (reps * len) as f64 / t.elapsed().as_secs_f64() / 1e9;
                eprintln!("{:>6} KiB {name:>10}: {gbs:.2} GB/s", len >> 10);
            }
        }
        for _ in 0..3 {
            let t = std::time::Instant::now();
            hash_file(&big).unwrap();
            let e = t.elapsed();
            eprintln!(
                "1 GiB hash_file: {e:?} = {:.2} GB/s",
                (1u64 << 30) as f64 / e.as_secs_f64() / 1e9
            );
            let t = std::time::Instant::now();
            let mut h = blake3::Hasher::new();
            h.update_mmap_rayon(&big).unwrap();
            let e = t.elapsed();
            eprintln!(
                "1 GiB blake3 update_mmap_rayon: {e:?} = {:.2} GB/s",
                (1u64 << 30) as f64 / e.as_secs_f64() / 1e9
            );
        }
    }

    /// `cargo test --release --lib perf_snapshot -- --ignored --nocapture`
    #[test]
    #[ignore = "timing; run with --ignored --nocapture"]
    fn perf_snapshot_20k() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("data/raw")).unwrap();
        let t = std::time::Instant::now();
        for i in 0..20_000u32 {
            let mut content = vec![0u8; 4096];
            content[..4].copy_from_slice(&i.to_le_bytes());
            fs::write(root.join(format!("data/raw/img_{i:05}.png")), content).unwrap();
        }
        eprintln!("created 20k files in {:?}", t.elapsed());
        let conn = rusqlite::Connection::open(root.join("db.sqlite")).unwrap();
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
            .unwrap();
        conn.execute_batch(include_str!("schema.sql")).unwrap();
        let p = s(&["data/raw"]);
        let wait = Duration::from_millis(2100);
        eprintln!("waiting {wait:?} for the racy window to pass");
        std::thread::sleep(wait);
        // Stat cost alone, for comparison.
        let t = std::time::Instant::now();
        let mut items = Vec::new();
        let full = root.join("data/raw");
        collect(
            &full,
            "data/raw",
            &fs::metadata(&full).unwrap(),
            true,
            &mut items,
        )
        .unwrap();
        eprintln!("walk + stat only (parallel): {:?}", t.elapsed());
        let t = std::time::Instant::now();
        for e in fs::read_dir(&full).unwrap() {
            e.unwrap().metadata().unwrap();
        }
        eprintln!("readdir + stat, one thread: {:?}", t.elapsed());

        let t = std::time::Instant::now();
        let (m, st) = snapshot_with_stats(&conn, root, &p).unwrap();
        eprintln!("first snapshot: {:?} {st:?}", t.elapsed());
        assert_eq!(st.hashed, 20_000);
        assert_eq!(st.not_recorded, 0);
        for _ in 0..3 {
            let t = std::time::Instant::now();
            let (m2, st) = snapshot_with_stats(&conn, root, &p).unwrap();
            eprintln!("no-op snapshot: {:?} {st:?}", t.elapsed());
            assert_eq!(st.from_cache, 20_000);
            assert_eq!(m2.digest(), m.digest());
        }
    }
}
