//! Placing an artifact in the workspace: folders and symlinks here, files by the object store
//! (read-only), each checked against its digest, then their stats into the stat cache.

use std::fs;
use std::path::Path;

use rayon::prelude::*;

use super::Cas;
use crate::files::remove_any;
use crate::hash::hash_file;
use crate::manifest::{Node, normalize_path};
use crate::object_store::GetFile;
use crate::statcache::{self, Stat};
use crate::{Digest, Manifest, Result, StoreError, io_err};

/// How much of a placed file is checked against its object's digest.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Check {
    Size,
    Content,
}

impl Cas {
    /// Make the workspace hold exactly `manifest` at the top-level `outs` under `root`: remove what is
    /// there now, recreate folders and symlinks, and have the object store place the files
    /// read-only. Records the placed files in the stat cache so the next snapshot does not read them.
    ///
    /// An out the manifest holds nothing for is removed and left absent. Folders are created
    /// writable (0777 less umask).
    ///
    /// Every placed file is hashed (blake3 reads ~13 GB/s here: little next to a rerun): an
    /// object whose content no longer matches its digest is quarantined (`ObjectStore::quarantine`),
    /// the outs are removed, and the result is `CorruptObject`, so nothing damaged is ever used.
    pub fn materialize(
        &self,
        conn: &rusqlite::Connection,
        manifest: &Manifest,
        root: &Path,
        outs: &[String],
    ) -> Result<()> {
        self.place(conn, manifest, root, outs, Check::Content)
    }

    /// `materialize` for the objects `ingest` stored a moment ago, which it hashed then: only
    /// their sizes are checked, so a run's outputs are not read twice.
    pub fn materialize_just_stored(
        &self,
        conn: &rusqlite::Connection,
        manifest: &Manifest,
        root: &Path,
        outs: &[String],
    ) -> Result<()> {
        self.place(conn, manifest, root, outs, Check::Size)
    }

    fn place(
        &self,
        conn: &rusqlite::Connection,
        manifest: &Manifest,
        root: &Path,
        outs: &[String],
        check: Check,
    ) -> Result<()> {
        let mut placed: Vec<(String, Digest, u64)> = Vec::new();
        let mut spelled_outs = Vec::new();
        for given in outs {
            let spelled = normalize_path(given)?;
            let full = root.join(&spelled);
            remove_any(&full)?;
            let sub = manifest.under(&spelled);
            spelled_outs.push(spelled.clone());
            if sub.is_empty() {
                continue;
            }
            if let Some(parent) = full.parent() {
                fs::create_dir_all(parent).map_err(io_err(parent))?;
            }
            let mut files = Vec::new();
            // Byte order puts every folder before what it holds.
            for e in sub.entries() {
                let rest = &e.path[spelled.len()..];
                if rest
                    .split('/')
                    .skip(1)
                    .any(|c| c.is_empty() || c == "." || c == "..")
                {
                    return Err(StoreError::Other(format!(
                        "manifest entry `{}` is not a plain path; refusing to materialize it",
                        e.path
                    )));
                }
                let dst = root.join(&e.path);
                match &e.node {
                    Node::Dir => fs::create_dir(&dst).map_err(io_err(&dst))?,
                    Node::Symlink { target } => {
                        std::os::unix::fs::symlink(target, &dst).map_err(io_err(&dst))?
                    }
                    Node::File {
                        digest,
                        size,
                        executable,
                    } => {
                        files.push(GetFile {
                            path: dst,
                            digest: *digest,
                            executable: *executable,
                        });
                        placed.push((e.path.clone(), *digest, *size));
                    }
                }
            }
            self.objects.get_files(&files)?;
        }

        // Stat after every placement: a hard link changes the shared inode's ctime.
        let checked = placed
            .par_iter()
            .map(|(path, digest, size)| {
                let dst = root.join(path);
                let md = fs::symlink_metadata(&dst).map_err(io_err(&dst))?;
                let intact =
                    md.len() == *size && (check == Check::Size || hash_file(&dst)? == *digest);
                Ok(intact.then(|| Stat::from_metadata(&md)).ok_or(*digest))
            })
            .collect::<Result<Vec<_>>>()?;
        let damaged: Vec<Digest> = checked.iter().filter_map(|c| c.err()).collect();
        if let Some(&first) = damaged.first() {
            for digest in &damaged {
                self.objects.quarantine(digest)?;
            }
            for spelled in &spelled_outs {
                remove_any(&root.join(spelled))?;
            }
            return Err(StoreError::CorruptObject(first));
        }
        let stats: Vec<Stat> = checked.into_iter().filter_map(|c| c.ok()).collect();
        statcache::in_savepoint(conn, || {
            for spelled in &spelled_outs {
                statcache::delete_under(conn, spelled)?;
            }
            let rows: Vec<(&str, Stat, Digest)> = placed
                .iter()
                .zip(&stats)
                .map(|((p, d, _), s)| (p.as_str(), *s, *d))
                .collect();
            statcache::update(conn, &rows, &[])
        })
    }
}
