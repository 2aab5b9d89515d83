//! Small filesystem operations the store shares: unique scratch names, durable writes, creating a
//! file whole or not at all, copies and reflinks, and removing trees that hold read-only parts.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Result, io_err};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name no other call in any process makes: prefix, process id, a counter and the clock.
pub(crate) fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{prefix}-{}-{n}-{nanos:09}", std::process::id())
}

pub(crate) fn errno_is(e: &io::Error, codes: &[i32]) -> bool {
    e.raw_os_error().is_some_and(|c| codes.contains(&c))
}

/// Errors that mean "this way of placing or moving a file does not work here".
pub(crate) const UNSUPPORTED: &[i32] = &[
    libc::EOPNOTSUPP,
    libc::ENOTSUP,
    libc::EXDEV,
    libc::EINVAL,
    libc::ENOTTY,
    libc::ENOSYS,
    libc::EPERM,
    libc::EMLINK,
];

pub(crate) fn fsync_path(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err(path))
}

/// Flushes the whole filesystem holding `path` (and waits for other writers' dirty data on it).
pub(crate) fn syncfs(path: &Path) -> Result<()> {
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
pub(crate) fn create_with(
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

pub(crate) fn copy_file(src: &Path, dst: &Path, mode: u32) -> io::Result<()> {
    let mut from = File::open(src)?;
    create_with(dst, mode, |to| io::copy(&mut from, to).map(|_| ()))
}

pub(crate) fn reflink_file(src: &Path, dst: &Path, mode: u32) -> io::Result<()> {
    let from = File::open(src)?;
    create_with(dst, mode, |to| {
        // SAFETY: FICLONE takes the source descriptor as its argument; both are open.
        if unsafe { libc::ioctl(to.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    })
}
