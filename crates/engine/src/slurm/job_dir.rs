//! A Slurm stage's folder, `cache/jobs/<key>/`, on the filesystem the submitting machine and the
//! nodes share: what the job is to do (`spec.json`), and what it leaves for the submitter — its
//! log, outputs, metrics, progress and result. Keyed by the stage's key, so a build that finds a
//! job of the same key from an earlier build waits for it (or takes its result) instead of
//! running the work again.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::kind::StageContext;

/// Names the layout of `spec.json`, so a node running another vlmflow refuses it clearly.
pub const SPEC_FORMAT: &str = "vlmflow-job/1";

/// What the node needs to run one stage's kind: the fields of its `StageContext` that are data.
#[derive(Debug, Serialize, Deserialize)]
pub struct JobSpec {
    pub format: String,
    pub stage: String,
    pub kind: String,
    pub workspace: PathBuf,
    pub params: Value,
    pub cmd: Option<String>,
    pub device: String,
    pub checkpoint_dir: PathBuf,
    pub upstream: BTreeMap<String, PathBuf>,
    pub lineage: BTreeMap<String, Value>,
    pub inputs: Vec<String>,
    pub metrics_file: Option<PathBuf>,
    /// The stage's outs. A command writes them into the workspace; the job moves them into
    /// `out/` once it succeeds, where a later build still finds them.
    pub outs: Vec<String>,
}

impl JobSpec {
    /// The spec of a job doing `kind`'s work with `ctx`, for a stage with these outs.
    pub fn new(ctx: &StageContext<'_>, kind: &str, outs: &[String]) -> JobSpec {
        JobSpec {
            format: SPEC_FORMAT.to_string(),
            stage: ctx.stage.to_string(),
            kind: kind.to_string(),
            workspace: ctx.workspace.to_path_buf(),
            params: ctx.params.clone(),
            cmd: ctx.cmd.map(str::to_string),
            device: ctx.device.to_string(),
            checkpoint_dir: ctx.checkpoint_dir.to_path_buf(),
            upstream: ctx.upstream.clone(),
            lineage: ctx.lineage.clone(),
            inputs: ctx.inputs.to_vec(),
            metrics_file: ctx.metrics_file.map(Path::to_path_buf),
            outs: outs.to_vec(),
        }
    }
}

/// How the job's work ended, written by the node as its last act.
#[derive(Debug, Serialize, Deserialize)]
pub struct JobResult {
    /// The Slurm job that wrote it: a result left by a cancelled job of the same key is not
    /// taken for a newer job's.
    pub job: String,
    pub node: String,
    /// None when the work succeeded.
    pub error: Option<String>,
}

/// One metric the job recorded, a line of `metrics.jsonl`. A non-finite value is written as null.
#[derive(Debug, Serialize, Deserialize)]
pub struct MetricLine {
    pub name: String,
    pub step: Option<i64>,
    pub value: Option<f64>,
}

/// The job's latest progress, `progress.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ProgressNote {
    pub position: u64,
    pub length: Option<u64>,
    pub message: String,
}

pub struct JobDir {
    pub root: PathBuf,
}

impl JobDir {
    pub fn new(root: PathBuf) -> JobDir {
        JobDir { root }
    }

    pub fn spec(&self) -> PathBuf {
        self.root.join("spec.json")
    }
    pub fn script(&self) -> PathBuf {
        self.root.join("job.sh")
    }
    pub fn params(&self) -> PathBuf {
        self.root.join("params.json")
    }
    pub fn log(&self) -> PathBuf {
        self.root.join("log.txt")
    }
    /// Where the outputs are once the job has succeeded (`out/<out path>`).
    pub fn out(&self) -> PathBuf {
        self.root.join("out")
    }
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }
    pub fn progress(&self) -> PathBuf {
        self.root.join("progress.json")
    }
    pub fn result(&self) -> PathBuf {
        self.root.join("result.json")
    }
    /// The Slurm job id, written by the submitter as soon as `sbatch` gives it.
    pub fn job_id(&self) -> PathBuf {
        self.root.join("job")
    }
    /// What Slurm itself captured of the job's stdout and stderr.
    pub fn slurm_output(&self, job: &str) -> PathBuf {
        self.root.join(format!("slurm-{job}.out"))
    }

    /// The job submitted for this key by an earlier build, if one was.
    pub fn earlier_job(&self) -> Option<String> {
        let id = std::fs::read_to_string(self.job_id()).ok()?;
        Some(id.trim().to_string()).filter(|id| !id.is_empty())
    }

    /// The result of `job`, once it has written one.
    pub fn result_of(&self, job: &str) -> Option<JobResult> {
        let bytes = std::fs::read(self.result()).ok()?;
        let result: JobResult = serde_json::from_slice(&bytes).ok()?;
        (result.job == job).then_some(result)
    }
}

/// Write `bytes` to `path` whole or not at all: the other side polls these files.
pub fn write_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
