//! `vlmflow gc`: delete what no kept run needs. Kept: the artifacts the workspace holds now,
//! per stage the artifacts of its last N successful runs (so reverting a recent change still
//! restores instead of retraining), and those of the last sweeps' trials (so a trial picked from
//! a sweep's table is restored, not trained again); their objects, and the logs of the runs kept.
//! Run records stay, in the database and as objects (provenance outlives artifacts); an artifact
//! whose objects are deleted is marked swept, so the run-cache no longer offers it.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use rusqlite::params;

use super::build::EngineError;
use super::lock::WorkspaceLock;
use super::workspace::Workspace;
use vlmflow_store::db::{Db, now};
use vlmflow_store::{Digest, StoreError};

#[derive(Debug, Default, serde::Serialize)]
pub struct GcReport {
    pub artifacts_kept: usize,
    pub artifacts_swept: usize,
    pub objects_deleted: u64,
    pub bytes_freed: u64,
    pub dry_run: bool,
}

pub fn gc(
    ws: &Workspace,
    keep_last: usize,
    keep_sweeps: usize,
    dry_run: bool,
    waiting: impl FnOnce(&str),
) -> Result<GcReport, EngineError> {
    let db = ws.open_db()?;
    let cas = ws.open_cas()?;
    let path = ws.lock_path();
    let _lock = WorkspaceLock::acquire(&path, waiting).map_err(vlmflow_store::io_err(&path))?;
    cas.clean_temp()?;
    super::index_recovery::recover_interrupted(&db, &cas)?;

    let (live_artifacts, kept_runs) = kept(&db, keep_last, keep_sweeps)?;
    let mut live_objects: HashSet<Digest> = HashSet::new();
    for artifact in &live_artifacts {
        live_objects.insert(*artifact);
        live_objects.extend(cas.read_manifest(artifact)?.objects());
    }
    // Run records are kept for good: provenance outlives artifacts, and they are what the
    // database is rebuilt from.
    live_objects.extend(cas.record_refs()?.into_iter().map(|r| r.record));
    for run in &kept_runs {
        let (log, inputs): (Option<String>, Option<String>) = db.conn.query_row(
            "SELECT log, inputs_manifest FROM runs WHERE id = ?1",
            [run],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        live_objects.extend(
            [log, inputs]
                .into_iter()
                .flatten()
                .filter_map(|d| d.parse::<Digest>().ok()),
        );
    }

    let all_artifacts: Vec<String> = {
        let mut stmt = db
            .conn
            .prepare("SELECT digest FROM artifacts WHERE swept_at IS NULL")?;
        stmt.query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?
    };
    let doomed: Vec<&String> = all_artifacts
        .iter()
        .filter(|d| {
            d.parse::<Digest>()
                .map_or(true, |d| !live_artifacts.contains(&d))
        })
        .collect();
    if !dry_run {
        // Mark first, delete second: a crash in between leaves unreferenced objects for the next gc,
        // never a run-cache entry whose objects are gone.
        let tx = db.conn.unchecked_transaction()?;
        for d in &doomed {
            tx.execute(
                "UPDATE artifacts SET swept_at = ?1 WHERE digest = ?2",
                params![now(), d],
            )?;
        }
        tx.commit()?;
    }
    let sweep = cas.sweep(&live_objects, dry_run)?;
    let mut bytes = sweep.bytes;
    bytes += remove_tree(&ws.trash_dir(), dry_run)?;
    bytes += remove_finished_checkpoints(&db, &ws.cache.join("checkpoints"), dry_run)?;
    Ok(GcReport {
        artifacts_kept: live_artifacts.len(),
        artifacts_swept: doomed.len(),
        objects_deleted: sweep.objects,
        bytes_freed: bytes,
        dry_run,
    })
}

/// The artifacts to keep and the runs whose logs to keep.
fn kept(
    db: &Db,
    keep_last: usize,
    keep_sweeps: usize,
) -> Result<(HashSet<Digest>, HashSet<i64>), StoreError> {
    let mut artifacts = HashSet::new();
    let mut runs = HashSet::new();
    let mut stmt = db.conn.prepare(
        "SELECT r.id, r.artifact, r.source_run FROM stage_state s JOIN runs r ON r.id = s.run_id",
    )?;
    let current: Vec<(i64, Option<String>, Option<i64>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (id, artifact, source) in current {
        runs.insert(id);
        runs.extend(source);
        artifacts.extend(artifact.and_then(|a| a.parse::<Digest>().ok()));
    }
    // Per stage, newest first: the artifacts of its last `keep_last` successful runs, and the logs
    // of its last `keep_last` runs of any status.
    let mut per_stage: HashMap<String, (usize, HashSet<Digest>)> = HashMap::new();
    for run in db.runs(None, i64::MAX as usize)? {
        let (seen_runs, seen_artifacts) = per_stage.entry(run.stage.clone()).or_default();
        if *seen_runs < keep_last {
            runs.insert(run.id);
            *seen_runs += 1;
        }
        let succeeded = run.status.succeeded();
        let Some(artifact) = run
            .artifact
            .as_deref()
            .and_then(|a| a.parse::<Digest>().ok())
        else {
            continue;
        };
        let recent = seen_artifacts.len() < keep_last || seen_artifacts.contains(&artifact);
        if succeeded && recent {
            seen_artifacts.insert(artifact);
            artifacts.insert(artifact);
            runs.insert(run.id);
            runs.extend(run.source_run);
        }
    }
    for (run_id, artifact) in db.runs_of_newest_sweeps(keep_sweeps)? {
        artifacts.extend(artifact.and_then(|a| a.parse::<Digest>().ok()));
        runs.insert(run_id);
    }
    Ok((artifacts, runs))
}

fn remove_finished_checkpoints(db: &Db, dir: &Path, dry_run: bool) -> Result<u64, StoreError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(0);
    };
    let mut bytes = 0;
    for entry in entries.flatten() {
        let key = entry.file_name().to_string_lossy().into_owned();
        let finished: bool = db.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM runs WHERE key = ?1 AND status = 'ran')",
            [&key],
            |r| r.get(0),
        )?;
        // A checkpoint of a run that never finished is what a resume needs: keep it.
        if finished {
            bytes += remove_tree(&entry.path(), dry_run)?;
        }
    }
    Ok(bytes)
}

/// Remove a folder (read-only files included), returning the bytes it held.
fn remove_tree(path: &Path, dry_run: bool) -> Result<u64, StoreError> {
    if path.symlink_metadata().is_err() {
        return Ok(0);
    }
    let bytes = tree_size(path);
    if !dry_run {
        std::fs::remove_dir_all(path).map_err(vlmflow_store::io_err(path))?;
    }
    Ok(bytes)
}

fn tree_size(path: &Path) -> u64 {
    let Ok(meta) = path.symlink_metadata() else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| tree_size(&e.path())).sum())
        .unwrap_or(0)
}
