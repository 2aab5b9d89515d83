//! A kept run's record: key → artifact, params, metrics and lineage, stored as a content-addressed
//! object and written before the run's SQLite row. The database is an index of these records: when
//! it is lost or damaged it is rebuilt from them (`index_rebuild.rs`), and a shared cache carries
//! them beside the artifacts. Refs under `cache/runs/<key>/<record digest>` say which objects are
//! records (`cas/records.rs`).

use serde::{Deserialize, Serialize};

use super::db::{Completion, Db, RunRow, now};
use super::{Digest, Result, StoreError};

/// The first field of every record: what reads it knows which layout it has.
pub const FORMAT: &str = "vlmflow-run-record/1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub format: String,
    pub stage: String,
    pub kind: String,
    pub impl_version: String,
    pub key: String,
    /// Canonical JSON: what the key was computed from.
    pub key_material: String,
    /// Canonical JSON of the effective params.
    pub params: String,
    /// JSON of the `--set` overrides applied.
    pub overrides: String,
    pub artifact: Digest,
    pub files: u64,
    pub bytes: u64,
    pub log: Option<Digest>,
    pub inputs_manifest: Option<Digest>,
    /// (workspace path, digest) of each input read.
    pub inputs: Vec<(String, Digest)>,
    pub upstreams: Vec<UpstreamRecord>,
    /// (name, step, value); step `None` for a final value.
    pub metrics: Vec<(String, Option<i64>, f64)>,
    pub host: String,
    /// The Slurm job the run was (its `host` is then the node). Left out of records of local runs,
    /// which stay as they were before jobs existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    pub device: String,
    pub started_at: f64,
    pub finished_at: f64,
}

/// An upstream artifact the run consumed, and the record of the run that produced it (when that
/// run has one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpstreamRecord {
    pub stage: String,
    pub artifact: Digest,
    pub producer: Option<Digest>,
}

impl RunRecord {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a run record serializes")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<RunRecord> {
        let record: RunRecord = serde_json::from_slice(bytes)
            .map_err(|e| StoreError::Other(format!("not a run record: {e}")))?;
        if record.format != FORMAT {
            return Err(StoreError::Other(format!(
                "a run record of format `{}`, which this vlmflow does not read ({FORMAT}): upgrade vlmflow",
                record.format
            )));
        }
        Ok(record)
    }
}

impl Db {
    /// The record of the run `c` completes: its row as inserted, the metrics it wrote, and `c`.
    /// Called before `complete_run`, whose row then names the record.
    pub fn record_of(&self, c: &Completion<'_>) -> Result<RunRecord> {
        let run = self
            .run(c.run_id)?
            .ok_or_else(|| StoreError::Other(format!("run {} is not in the database", c.run_id)))?;
        let upstreams = c
            .upstreams
            .iter()
            .map(|(stage, artifact, producer)| {
                let producer = match producer {
                    Some(id) => self.run(*id)?.and_then(|r| record_digest(&r)),
                    None => None,
                };
                Ok(UpstreamRecord {
                    stage: stage.clone(),
                    artifact: *artifact,
                    producer,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RunRecord {
            format: FORMAT.to_string(),
            stage: run.stage,
            kind: run.kind,
            impl_version: run.impl_version,
            key: run.key,
            key_material: run.key_material,
            params: run.params,
            overrides: run.overrides,
            artifact: *c.artifact,
            files: c.files,
            bytes: c.bytes,
            log: c.log.copied(),
            inputs_manifest: c.inputs_manifest.copied(),
            inputs: c.inputs.to_vec(),
            upstreams,
            metrics: self.metrics_of(c.run_id)?,
            host: run.host,
            job: run.job,
            device: run.device,
            started_at: run.started_at,
            finished_at: run.finished_at.unwrap_or_else(now),
        })
    }

    /// The record of a run that succeeded before records were written (or whose record was lost),
    /// from what the database holds of it.
    pub fn record_of_kept_run(&self, run: &RunRow) -> Result<RunRecord> {
        let missing =
            |what: &str| StoreError::Other(format!("run {} has no {what} in the database", run.id));
        let artifact: Digest = run
            .artifact
            .as_deref()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| missing("artifact"))?;
        let (files, bytes): (i64, i64) = self.conn.query_row(
            "SELECT files, bytes FROM artifacts WHERE digest = ?1",
            [artifact.to_hex()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let parse = |hex: &str| hex.parse::<Digest>().map_err(StoreError::Other);
        let inputs = self
            .inputs_of(run.id)?
            .into_iter()
            .map(|(path, digest)| Ok((path, parse(&digest)?)))
            .collect::<Result<Vec<_>>>()?;
        let upstreams = self
            .upstreams_of(run.id)?
            .into_iter()
            .map(|(stage, artifact, producer)| Ok((stage, parse(&artifact)?, producer)))
            .collect::<Result<Vec<_>>>()?;
        let log = run.log.as_deref().and_then(|d| d.parse().ok());
        let inputs_manifest = run.inputs_manifest.as_deref().and_then(|d| d.parse().ok());
        self.record_of(&Completion {
            run_id: run.id,
            stage: &run.stage,
            artifact: &artifact,
            files: files as u64,
            bytes: bytes as u64,
            log: log.as_ref(),
            inputs_manifest: inputs_manifest.as_ref(),
            inputs: &inputs,
            upstreams: &upstreams,
            record: None,
        })
    }
}

fn record_digest(run: &RunRow) -> Option<Digest> {
    run.record.as_deref().and_then(|d| d.parse().ok())
}
