//! Lineage: every run that led to an artifact, through the upstream edges recorded with each run.

use serde_json::Value;

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
    pub upstream: Vec<Lineage>,
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
    let (producer, restored_by) = match run.source_run {
        Some(id) => (db.run(id)?.unwrap_or_else(|| run.clone()), Some(run.id)),
        None => (run.clone(), None),
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
    let parse = |s: &str| serde_json::from_str(s).unwrap_or(Value::Null);
    Ok(Lineage {
        run: producer.id,
        stage: producer.stage.clone(),
        kind: producer.kind.clone(),
        implementation: producer.impl_version.clone(),
        status: producer.status,
        key: producer.key.clone(),
        artifact: producer.artifact.clone(),
        host: producer.host.clone(),
        device: producer.device.clone(),
        started_at: producer.started_at,
        seconds: producer.finished_at.map(|f| f - producer.started_at),
        params: parse(&producer.params),
        overrides: parse(&producer.overrides),
        inputs: db.inputs_of(producer.id)?,
        metrics: db.final_metrics(producer.id)?,
        restored_by,
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
