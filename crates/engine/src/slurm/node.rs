//! The job's side: `vlmflow job-run <spec.json>`, what the batch script runs on the node. It runs
//! one stage's kind with the context the spec describes, sends its metrics and progress to files
//! in the job's folder, and ends by writing its result there. It opens neither the database nor
//! the workspace lock: those stay with the submitting `vlmflow build`, which commits the run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::job_dir::{
    JobDir, JobResult, JobSpec, MetricLine, ProgressNote, SPEC_FORMAT, write_whole,
};
use crate::kind::{Kinds, MetricsSink, Progress, StageContext};
use crate::runner;

/// Run the job `spec` describes. Ok(true) when its work succeeded; Err when it could not even
/// start (a spec it cannot read): then there is no result, and the submitter shows Slurm's
/// output file, where this error is printed.
pub fn run_job(spec_path: &Path, kinds: &Kinds) -> anyhow::Result<bool> {
    let bytes =
        std::fs::read(spec_path).with_context(|| format!("reading {}", spec_path.display()))?;
    let spec: JobSpec = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a vlmflow job spec", spec_path.display()))?;
    if spec.format != SPEC_FORMAT {
        bail!(
            "{} has format `{}`; this vlmflow runs `{SPEC_FORMAT}`: run the same vlmflow on the nodes as on the submitting machine",
            spec_path.display(),
            spec.format
        );
    }
    let dir = JobDir::new(
        spec_path
            .parent()
            .context("the job spec has no folder")?
            .to_path_buf(),
    );
    let Some(kind) = kinds.find(&spec.kind) else {
        bail!(
            "{}: this vlmflow ({}) has no kind `{}`: run the same vlmflow on the nodes as on the \
             submitting machine (VLMFLOW_JOB_BIN names it)",
            spec_path.display(),
            std::env::current_exe().unwrap_or_default().display(),
            spec.kind
        );
    };
    crate::interrupt::install();
    let job = std::env::var("SLURM_JOB_ID").unwrap_or_default();
    let log_path = dir.log();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let metrics = FileMetrics::open(&dir.metrics())?;
    let progress = FileProgress::new(dir.progress());
    let out_dir = dir
        .out()
        .join(spec.outs.first().map_or("out", String::as_str));
    let params_file = dir.params();
    let ctx = StageContext {
        stage: &spec.stage,
        workspace: &spec.workspace,
        params: &spec.params,
        params_file: &params_file,
        cmd: spec.cmd.as_deref(),
        device: &spec.device,
        out_dir: &out_dir,
        checkpoint_dir: &spec.checkpoint_dir,
        upstream: spec.upstream.clone(),
        lineage: spec.lineage.clone(),
        inputs: &spec.inputs,
        metrics_file: spec.metrics_file.as_deref(),
        log: Mutex::new(log),
        log_path: &log_path,
        metrics: &metrics,
        progress: &progress,
    };
    let node = crate::host();
    ctx.log(&format!("vlmflow: Slurm job {job} running on {node}"));
    let mut outcome = runner::in_process(kind, &ctx).map_err(|e| e.to_string());
    if outcome.is_ok() && kind.runs_command() {
        outcome = keep_outs(&spec, &dir).map_err(|e| format!("{e:#}"));
    }
    progress.flush();
    let result = JobResult {
        job,
        node,
        error: outcome.err(),
    };
    let ok = result.error.is_none();
    let bytes = serde_json::to_vec(&result).expect("a job result serializes");
    write_whole(&dir.result(), &bytes)
        .with_context(|| format!("writing {}", dir.result().display()))?;
    Ok(ok)
}

/// A command wrote its outs into the workspace; move them into the job's `out/`, where they stay
/// for the submitter whatever happens in the workspace meanwhile. An out the command did not
/// write is left missing: the submitter's commit names it.
fn keep_outs(spec: &JobSpec, dir: &JobDir) -> anyhow::Result<()> {
    for out in &spec.outs {
        let from = spec.workspace.join(out);
        if from.symlink_metadata().is_err() {
            continue;
        }
        let to = dir.out().join(out);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::rename(&from, &to)
            .with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

/// Metrics as lines of JSON, each written whole as it comes.
struct FileMetrics {
    file: Mutex<std::fs::File>,
}

impl FileMetrics {
    fn open(path: &Path) -> anyhow::Result<FileMetrics> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(FileMetrics {
            file: Mutex::new(file),
        })
    }
}

impl MetricsSink for FileMetrics {
    fn record(&self, name: &str, step: Option<i64>, value: f64) {
        let line = MetricLine {
            name: name.to_string(),
            step,
            value: value.is_finite().then_some(value),
        };
        let mut text = serde_json::to_string(&line).expect("a metric serializes");
        text.push('\n');
        if let Ok(mut file) = self.file.lock() {
            let _ = file.write_all(text.as_bytes());
        }
    }
}

/// How often the progress file is rewritten: the submitter polls it, a training loop may report
/// every step.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// The latest progress in a file, rewritten whole at most every `PROGRESS_EVERY`.
struct FileProgress {
    path: PathBuf,
    state: Mutex<(ProgressNote, Option<Instant>)>,
}

impl FileProgress {
    fn new(path: PathBuf) -> FileProgress {
        FileProgress {
            path,
            state: Mutex::new((ProgressNote::default(), None)),
        }
    }

    fn flush(&self) {
        if let Ok(state) = self.state.lock() {
            self.write(&state.0);
        }
    }

    fn write(&self, note: &ProgressNote) {
        let bytes = serde_json::to_vec(note).expect("progress serializes");
        let _ = write_whole(&self.path, &bytes);
    }
}

impl Progress for FileProgress {
    fn update(&self, position: u64, length: Option<u64>, message: &str) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        state.0 = ProgressNote {
            position,
            length,
            message: message.to_string(),
        };
        if state.1.is_none_or(|at| at.elapsed() >= PROGRESS_EVERY) {
            self.write(&state.0);
            state.1 = Some(Instant::now());
        }
    }
}
