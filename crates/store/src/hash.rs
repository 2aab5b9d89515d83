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
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rayon::prelude::*;

use super::manifest::{Entry, Node, normalize_path};
use super::statcache::{self, Stat};
use super::walk::{Item, Kind, collect, missing_or_io};
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
    // A file the walk listed and that was gone when read: the tree changed under the snapshot (a
    // build replacing outs while `status` reads them). Read it again; one that never holds still
    // is an error that says so.
    const ATTEMPTS: usize = 3;
    for _ in 1..ATTEMPTS {
        match snapshot_at(conn, root, paths, SystemTime::now()) {
            Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            }
            done => return done,
        }
    }
    snapshot_at(conn, root, paths, SystemTime::now()).map_err(|e| match e {
        StoreError::Io { path, source } if source.kind() == std::io::ErrorKind::NotFound => {
            StoreError::Other(format!(
                "{}: files vanished while it was read, {ATTEMPTS} times: another process is \
                 changing it; try again when it is done",
                path.display()
            ))
        }
        other => other,
    })
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

pub(crate) fn is_executable(mode: u32) -> bool {
    mode & 0o111 != 0
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
#[path = "hash_tests.rs"]
mod tests;
