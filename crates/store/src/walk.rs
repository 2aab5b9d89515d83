//! Walking the paths a snapshot or an ingest is given: each file with its stat, each folder (walked
//! in parallel) and symlink, spelled as in manifests; anything a manifest cannot hold is refused.

use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use rayon::prelude::*;

use super::statcache::Stat;
use super::{Result, StoreError, io_err};

/// One thing found under a path, spelled as in manifests.
pub(crate) struct Item {
    pub path: String,
    pub kind: Kind,
    /// A path given by the caller (followed if it is a symlink), not found by walking.
    pub top: bool,
}

pub(crate) enum Kind {
    Dir,
    Symlink(String),
    File(Stat),
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
        });
    } else if ft.is_dir() {
        let full = e.path();
        acc.push(Item {
            path: path.clone(),
            kind: Kind::Dir,
            top: false,
        });
        walk_dir(&full, &path, acc)?;
    } else if ft.is_symlink() {
        acc.push(Item {
            path,
            kind: Kind::Symlink(read_link(&e.path())?),
            top: false,
        });
    } else {
        return Err(special(&e.path(), ft));
    }
    Ok(())
}
