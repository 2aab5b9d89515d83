//! Lineage: every run that led to an artifact, through the upstream edges recorded with each run;
//! and finding the run a user names (`vlmflow provenance`).

use std::path::Path;

use serde_json::Value;

use super::build::{EngineError, load_pipeline};
use super::kind::Kinds;
use super::params;
use super::workspace::Workspace;
use vlmflow_store::db::{Db, RunRow};
use vlmflow_store::run_status::RunStatus;
use vlmflow_store::{Result, StoreError};

/// One run in a lineage, with the runs that produced what it consumed.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Lineage {
    pub run: i64,
    pub stage: String,
    pub kind: String,
    pub implementation: String,
    pub status: RunStatus,
    pub key: String,
    pub artifact: Option<String>,
    pub host: String,
    /// The Slurm job the run was, if it was one (`host` is its node).
    pub job: Option<String>,
    pub device: String,
    pub started_at: f64,
    pub seconds: Option<f64>,
    pub params: Value,
    pub overrides: Value,
    /// (path, digest) of each file input.
    pub inputs: Vec<(String, String)>,
    pub metrics: Vec<(String, f64)>,
    /// Restores of this artifact that the lineage went through (newest last), when it was reached
    /// through a restore rather than the run itself.
    pub restored_by: Option<i64>,
    /// The remote cache that restore fetched the artifact from, if it did.
    pub restored_from_remote: Option<String>,
    pub upstream: Vec<Lineage>,
}

/// The lineage of what `what` names: a stage (its current run), a run id, a path inside some
/// stage's outs, or a prefix (8+ hex characters) of an artifact digest or a run key.
pub fn find(ws: &Workspace, kinds: &Kinds, what: &str) -> Result<Lineage, EngineError> {
    let db = ws.read_db()?;
    let run = resolve(ws, kinds, &db, what)?;
    Ok(lineage(&db, &run)?)
}

/// The run `what` names.
fn resolve(ws: &Workspace, kinds: &Kinds, db: &Db, what: &str) -> Result<RunRow, EngineError> {
    if let Ok(id) = what.parse::<i64>() {
        return db
            .run(id)?
            .ok_or_else(|| EngineError::Usage(format!("no run {id}")));
    }
    let (pipeline, _) = load_pipeline(ws, kinds, &[])?;
    let current = |stage: &str| -> Result<RunRow, EngineError> {
        db.current_run(stage)?.ok_or_else(|| {
            EngineError::Usage(format!(
                "stage `{stage}` has not been built yet: run `vlmflow build {stage}`"
            ))
        })
    };
    if pipeline.stage_index(what).is_some() {
        return current(what);
    }
    // A path: relative to the current folder or the workspace, inside some stage's outs.
    let candidates = [std::path::absolute(what).ok(), Some(ws.root.join(what))];
    for path in candidates.into_iter().flatten() {
        let Ok(rel) = path.strip_prefix(&ws.root) else {
            continue;
        };
        let rel = rel.to_string_lossy();
        for stage in &pipeline.stages {
            if stage
                .outs
                .iter()
                .any(|o| rel == o.as_str() || rel.starts_with(&format!("{o}/")))
            {
                return current(&stage.name);
            }
        }
    }
    if what.len() >= 8 && what.chars().all(|c| c.is_ascii_hexdigit()) {
        let pattern = format!("{}%", what.to_ascii_lowercase());
        let by_artifact: Option<String> = db
            .conn
            .query_row(
                "SELECT digest FROM artifacts WHERE digest LIKE ?1 LIMIT 1",
                [&pattern],
                |r| r.get(0),
            )
            .ok();
        if let Some(run) = by_artifact
            .map(|a| db.producer_of(&a))
            .transpose()?
            .flatten()
        {
            return Ok(run);
        }
        let by_key: Option<i64> = db
            .conn
            .query_row(
                "SELECT id FROM runs WHERE key LIKE ?1 ORDER BY id DESC LIMIT 1",
                [&pattern],
                |r| r.get(0),
            )
            .ok();
        if let Some(id) = by_key.and_then(|id| db.run(id).ok().flatten()) {
            return Ok(id);
        }
    }
    Err(EngineError::Usage(format!(
        "`{what}` is not a stage, a run id, a path inside a stage's outs, or a known digest{}",
        if Path::new(what).exists() {
            " (that path is not an out of any stage)"
        } else {
            ""
        }
    )))
}

/// The lineage of `run`'s artifact. A restore is followed to the run that produced the artifact.
pub fn lineage(db: &Db, run: &RunRow) -> Result<Lineage> {
    lineage_at(db, run, 0)
}

/// Deeper than any real pipeline; guards against a corrupt database that loops.
const MAX_DEPTH: usize = 256;

fn lineage_at(db: &Db, run: &RunRow, depth: usize) -> Result<Lineage> {
    if depth > MAX_DEPTH {
        return Err(StoreError::Other(
            "lineage deeper than 256 runs: the database may be corrupt".into(),
        ));
    }
    let (producer, restored_by, restored_from_remote) = match run.source_run {
        Some(id) => (
            db.run(id)?.unwrap_or_else(|| run.clone()),
            Some(run.id),
            run.origin.clone(),
        ),
        None => (run.clone(), None, None),
    };
    let mut upstream = Vec::new();
    for (_stage, artifact, producer_id) in db.upstreams_of(producer.id)? {
        let up = match producer_id {
            Some(id) => db.run(id)?,
            None => db.producer_of(&artifact)?,
        };
        if let Some(up) = up {
            upstream.push(lineage_at(db, &up, depth + 1)?);
        }
    }
    Ok(Lineage {
        run: producer.id,
        stage: producer.stage.clone(),
        kind: producer.kind.clone(),
        implementation: producer.impl_version.clone(),
        status: producer.status,
        key: producer.key.clone(),
        artifact: producer.artifact.clone(),
        host: producer.host.clone(),
        job: producer.job.clone(),
        device: producer.device.clone(),
        started_at: producer.started_at,
        seconds: producer.finished_at.map(|f| f - producer.started_at),
        params: params::parse_recorded(&producer.params),
        overrides: params::parse_recorded(&producer.overrides),
        inputs: db.inputs_of(producer.id)?,
        metrics: db.final_metrics(producer.id)?,
        restored_by,
        restored_from_remote,
        upstream,
    })
}

/// The lineage of the artifact `producer` made (or, without a known producer, of whichever run
/// made `artifact`); `None` when the database has no such run.
pub fn of_artifact(db: &Db, artifact: &str, producer: Option<i64>) -> Result<Option<Lineage>> {
    let run = match producer {
        Some(id) => db.run(id)?,
        None => db.producer_of(artifact)?,
    };
    run.map(|r| lineage(db, &r)).transpose()
}

/// The part of a lineage that depends on the artifacts alone (no run ids, hosts or times): what
/// an exported bundle records, so that the bundle stays a function of its inputs. Throughput
/// metrics (`…per_s`) are left out for the same reason.
pub fn portable(l: &Lineage) -> Value {
    let metrics: serde_json::Map<String, Value> = l
        .metrics
        .iter()
        .filter(|(name, _)| !name.ends_with("per_s"))
        .map(|(name, value)| (name.clone(), Value::from(*value)))
        .collect();
    let inputs: serde_json::Map<String, Value> = l
        .inputs
        .iter()
        .map(|(path, digest)| (path.clone(), Value::from(digest.clone())))
        .collect();
    serde_json::json!({
        "stage": l.stage,
        "kind": l.kind,
        "implementation": l.implementation,
        "key": l.key,
        "artifact": l.artifact,
        "params": l.params,
        "inputs": inputs,
        "metrics": metrics,
        "upstream": l.upstream.iter().map(portable).collect::<Vec<_>>(),
    })
}
