//! Taking a stage's outs into the store: hash everything first, then hand each new file to the
//! object store.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use rayon::prelude::*;

use super::Cas;
use crate::files::remove_any;
use crate::hash::{self, hash_item};
use crate::manifest::{Node, normalize_path};
use crate::object_store::PutFile;
use crate::statcache;
use crate::walk::{Kind, collect, missing_or_io};
use crate::{Manifest, Result, StoreError};

impl Cas {
    /// Take `paths` under `root` into the store: every file becomes an object (the object store
    /// moves it in when it can, else copies it), the manifest is stored too. The source paths are
    /// gone afterwards. Returns the manifest, whose paths are spelled as in `paths`.
    ///
    /// Nothing is stored until every path has been walked and hashed, so a bad out (a symlink, a
    /// non-UTF-8 name, a FIFO) leaves the workspace untouched.
    pub fn ingest(
        &self,
        conn: &rusqlite::Connection,
        root: &Path,
        paths: &[String],
    ) -> Result<Manifest> {
        let mut items = Vec::new();
        let mut tops = Vec::new();
        for given in paths {
            let spelled = normalize_path(given)?;
            let full = root.join(&spelled);
            let md = fs::symlink_metadata(&full).map_err(|e| missing_or_io(e, given, &full))?;
            if md.file_type().is_symlink() {
                return Err(StoreError::Other(format!(
                    "out {given} is a symlink; outs must be real files or folders"
                )));
            }
            collect(&full, &spelled, &md, true, &mut items)?;
            tops.push((spelled, full));
        }
        items.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        if let Some(w) = items.windows(2).find(|w| w[0].path == w[1].path) {
            return Err(StoreError::Other(format!(
                "outs overlap: {} is named twice",
                w[0].path
            )));
        }

        // Hash every file. Fresh outputs: the stat cache has nothing to say about them.
        let digests = items
            .par_iter()
            .map(|item| match item.kind {
                Kind::File(stat) => match hash_item(root, item, stat)? {
                    (d, size, true) => Ok(Some((d, size))),
                    _ => Err(StoreError::Other(format!(
                        "{} changed while it was being stored: is a process of the stage still writing it?",
                        item.path
                    ))),
                },
                _ => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;

        let manifest = Manifest::new(
            items
                .iter()
                .zip(&digests)
                .map(|(item, hashed)| crate::Entry {
                    path: item.path.clone(),
                    node: match (&item.kind, hashed) {
                        (Kind::Dir, _) => Node::Dir,
                        (Kind::Symlink(t), _) => Node::Symlink { target: t.clone() },
                        (Kind::File(stat), Some((digest, size))) => Node::File {
                            digest: *digest,
                            size: *size,
                            executable: hash::is_executable(stat.mode),
                        },
                        (Kind::File(_), None) => unreachable!("every file was hashed"),
                    },
                })
                .collect(),
        );

        // Only new content goes to the store: not an object it holds whole, nor one an earlier
        // file of this ingest supplies.
        let mut seen = HashSet::new();
        let mut puts = Vec::new();
        for (item, hashed) in items.iter().zip(&digests) {
            let Some((digest, size)) = hashed else {
                continue;
            };
            if seen.insert(*digest) && self.objects.size(digest)? != Some(*size) {
                puts.push(PutFile {
                    path: root.join(&item.path),
                    digest: *digest,
                });
            }
        }
        self.objects.put_files(&puts)?;
        self.put_manifest(&manifest)?;
        for (_, full) in &tops {
            remove_any(full)?;
        }
        statcache::in_savepoint(conn, || {
            for (spelled, _) in &tops {
                statcache::delete_under(conn, spelled)?;
            }
            Ok(())
        })?;
        Ok(manifest)
    }
}
