//! The workspace side of a stage's outs: clearing them before a run or restore without losing
//! anything vlmflow did not make, and putting the current artifact back after a failed command.

use std::path::Path;

use super::execute::Executor;
use super::stagefile::Stage;
use vlmflow_store::db::Db;
use vlmflow_store::{Digest, Manifest, Node, StoreError, hash};

impl Executor<'_> {
    /// The manifest of the artifact the workspace holds for `stage`, if any (and still stored).
    fn current_manifest(&self, db: &Db, stage: &Stage) -> Result<Option<Manifest>, StoreError> {
        Ok(db
            .current_run(&stage.name)?
            .and_then(|r| r.artifact)
            .and_then(|a| a.parse::<Digest>().ok())
            .and_then(|a| self.cas.read_manifest(&a).ok()))
    }

    /// Outs in the workspace that are not exactly what vlmflow put there (made by hand, or edited)
    /// are moved to `cache/trash/<run>/` rather than deleted; the rest are already in the store.
    /// An out that equals its part of `restoring` (the artifact about to be put back: the database
    /// that knew it was put there may have been rebuilt since) is known too.
    pub(super) fn clear_outs(
        &self,
        db: &Db,
        stage: &Stage,
        run_id: i64,
        restoring: Option<&Manifest>,
    ) -> Result<(), StoreError> {
        let current = self.current_manifest(db, stage)?;
        for out in &stage.outs {
            let path = self.ws.root.join(out);
            if path.symlink_metadata().is_err() {
                continue;
            }
            let now = hash::snapshot(&db.conn, &self.ws.root, std::slice::from_ref(out)).ok();
            let known = now.as_ref().is_some_and(|now| {
                [current.as_ref(), restoring]
                    .into_iter()
                    .flatten()
                    .any(|m| m.under(out) == *now)
            });
            if known {
                remove_path(&path)?;
            } else {
                // A hard-linked file edited in place edited its object too: drop that object so
                // the run-cache cannot hand the edited bytes back. Files still as stored keep
                // theirs (other artifacts may share them).
                for entry in current.iter().flat_map(|m| m.under(out).into_entries()) {
                    let unchanged =
                        now.as_ref().and_then(|n| n.get(&entry.path)) == Some(&entry.node);
                    if let Node::File { digest, .. } = entry.node
                        && !unchanged
                    {
                        self.cas
                            .evict_if_linked(&self.ws.root.join(&entry.path), &digest)?;
                    }
                }
                let dest = self.ws.trash_dir().join(run_id.to_string()).join(out);
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent).map_err(vlmflow_store::io_err(parent))?;
                }
                std::fs::rename(&path, &dest).map_err(vlmflow_store::io_err(&path))?;
                self.reporter.note(&format!(
                    "note: {out} was not made by vlmflow (or was edited since); moved it to {} (`vlmflow gc` empties the trash)",
                    dest.strip_prefix(&self.ws.root).unwrap_or(&dest).display()
                ));
            }
        }
        Ok(())
    }

    /// After a failed command: remove what it half-wrote and put back the artifact the workspace held.
    pub(super) fn put_back_current(&self, db: &Db, stage: &Stage) {
        let manifest = self
            .current_manifest(db, stage)
            .ok()
            .flatten()
            .unwrap_or_default();
        if let Err(e) = self
            .cas
            .materialize(&db.conn, &manifest, &self.ws.root, &stage.outs)
        {
            self.reporter.note(&format!(
                "warning: could not put back the outs of {}: {e}",
                stage.name
            ));
        }
    }
}

fn remove_path(path: &Path) -> Result<(), StoreError> {
    let meta = path
        .symlink_metadata()
        .map_err(vlmflow_store::io_err(path))?;
    let result = if meta.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    result.map_err(vlmflow_store::io_err(path))
}
