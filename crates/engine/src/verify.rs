//! `vlmflow verify [--repair]`: whether the cache and the run database can be trusted.
//!
//! Checks every object against its digest, every kept artifact's manifest and the objects it
//! names, every run's artifact against the database, the run records against the database
//! (`verify_records.rs`), and the database's own `PRAGMA integrity_check`. With `repair`, damaged
//! objects go to `cache/quarantine/`, every artifact that can no longer be restored whole is marked
//! swept, so the next build reruns its stage instead of restoring it, and a database that fails its
//! check is moved aside and rebuilt from the run records.

use std::collections::HashSet;

use super::build::EngineError;
use super::index_recovery::IndexProblem;
use super::lock::WorkspaceLock;
use super::verify_records::check_records;
use super::workspace::Workspace;
use vlmflow_store::Digest;
use vlmflow_store::db::Db;

/// What is wrong, one finding at a time.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Finding {
    /// The object's content no longer matches its digest.
    DamagedObject { object: String },
    /// A kept artifact's manifest is missing or damaged, or names objects that are.
    DamagedArtifact { artifact: String, why: String },
    /// A run names an artifact the database has no record of.
    RunWithoutArtifact { run: i64, artifact: String },
    /// A run that succeeded has no intact record in the cache.
    RunWithoutRecord { run: i64, stage: String },
    /// A record in the cache that the database does not index.
    RecordNotIndexed { record: String, stage: String },
    /// A ref names a record that is missing, damaged or not a record.
    UnreadableRecord { record: String, why: String },
    /// The database cannot be opened, or a line of SQLite's `PRAGMA integrity_check`.
    Database { message: String },
}

#[derive(Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    pub objects_checked: u64,
    pub bytes_checked: u64,
    pub artifacts_checked: usize,
    pub runs_checked: usize,
    pub records_checked: usize,
    pub findings: Vec<Finding>,
    /// With `--repair`: what was done, one line each.
    pub repairs: Vec<String>,
}

impl VerifyReport {
    pub fn all_well(&self) -> bool {
        self.findings.is_empty()
    }
}

pub fn verify(
    ws: &Workspace,
    repair: bool,
    waiting: impl FnOnce(&str),
) -> Result<VerifyReport, EngineError> {
    let cas = ws.open_cas()?;
    let path = ws.lock_path();
    let _lock = WorkspaceLock::acquire(&path, waiting).map_err(vlmflow_store::io_err(&path))?;
    let mut report = VerifyReport::default();

    let problems = match ws.open_db() {
        Ok(db) => integrity_problems(&db),
        Err(e) => Err(e.into()),
    }
    .unwrap_or_else(|e| vec![format!("cannot be read: {e}")]);
    if !problems.is_empty() {
        report.findings.extend(
            problems
                .into_iter()
                .map(|message| Finding::Database { message }),
        );
        if !repair {
            // Nothing else can be checked against a database that does not read.
            return Ok(report);
        }
        let rebuilt = ws.rebuild_index(&cas, IndexProblem::FailedIntegrityCheck)?;
        report.repairs.push(rebuilt.to_string());
    }
    let db = ws.open_db()?;
    // With the lock held, what a dead process left is settled first, as every locking command does.
    super::index_recovery::recover_interrupted(&db, &cas)?;

    let objects = cas.check_objects()?;
    report.objects_checked = objects.held.len() as u64;
    report.bytes_checked = objects.bytes;
    let damaged: HashSet<Digest> = objects.damaged.iter().copied().collect();
    report.findings.extend(
        objects
            .damaged
            .iter()
            .map(|d| Finding::DamagedObject { object: d.to_hex() }),
    );
    if repair {
        // First, so that what is written again below (a run record) is not kept in the damaged
        // object of the same name.
        for digest in &objects.damaged {
            if let Some(to) = cas.quarantine(digest)? {
                report.repairs.push(format!(
                    "moved damaged object {} to {}",
                    digest.short(),
                    to.display()
                ));
            }
        }
    }

    let artifacts: Vec<String> = {
        let mut stmt = db
            .conn
            .prepare("SELECT digest FROM artifacts WHERE swept_at IS NULL ORDER BY digest")?;
        stmt.query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?
    };
    report.artifacts_checked = artifacts.len();
    let mut unrestorable = vec![];
    for hex in &artifacts {
        let Ok(digest) = hex.parse::<Digest>() else {
            report.findings.push(Finding::DamagedArtifact {
                artifact: hex.clone(),
                why: "the database holds no digest for it".into(),
            });
            continue;
        };
        if let Some(why) = artifact_problem(&cas, &objects.held, &damaged, &digest) {
            unrestorable.push(digest);
            report.findings.push(Finding::DamagedArtifact {
                artifact: hex.clone(),
                why,
            });
        }
    }

    report.runs_checked =
        db.conn
            .query_row("SELECT count(*) FROM runs", [], |r| r.get::<_, i64>(0))? as usize;
    let orphans: Vec<(i64, String)> = {
        let mut stmt = db.conn.prepare(
            "SELECT id, artifact FROM runs WHERE artifact IS NOT NULL \
             AND artifact NOT IN (SELECT digest FROM artifacts) ORDER BY id",
        )?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?
    };
    report.findings.extend(
        orphans
            .into_iter()
            .map(|(run, artifact)| Finding::RunWithoutArtifact { run, artifact }),
    );

    check_records(&db, &cas, &objects, repair, &mut report)?;

    if repair {
        for digest in &unrestorable {
            db.mark_swept(digest)?;
            report.repairs.push(format!(
                "artifact {} will be rebuilt, not restored",
                digest.short()
            ));
        }
    }
    Ok(report)
}

/// The lines of `PRAGMA integrity_check` other than "ok".
fn integrity_problems(db: &Db) -> Result<Vec<String>, EngineError> {
    let mut stmt = db.conn.prepare("PRAGMA integrity_check")?;
    let lines = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(lines.into_iter().filter(|line| line != "ok").collect())
}

/// Why the artifact cannot be restored whole, if it cannot.
fn artifact_problem(
    cas: &vlmflow_store::Cas,
    held: &HashSet<Digest>,
    damaged: &HashSet<Digest>,
    artifact: &Digest,
) -> Option<String> {
    let manifest = match cas.read_manifest(artifact) {
        Ok(m) => m,
        Err(e) => return Some(format!("its manifest does not read back: {e}")),
    };
    manifest.entries().iter().find_map(|entry| {
        let vlmflow_store::Node::File { digest: object, .. } = &entry.node else {
            return None;
        };
        let state = if damaged.contains(object) {
            "damaged"
        } else if !held.contains(object) {
            "missing"
        } else {
            return None;
        };
        Some(format!(
            "{} is {state} (object {})",
            entry.path,
            object.short()
        ))
    })
}
