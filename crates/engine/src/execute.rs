//! Running or restoring one stage, and recording it. The order is what makes a crash harmless:
//! outputs are ingested into the store (fsynced) first, then the run is committed in one SQLite
//! transaction, then the artifact is materialized in the workspace. A crash before the commit leaves
//! the old state; after it, the next build finds the workspace short of the new artifact and
//! restores it. A failed run leaves the workspace as it was before the run.

use std::collections::{BTreeMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use serde_json::Value;

use super::interrupt;
use super::params::canonical_json;
use super::plan::{self, Decision, Evaluation, UpstreamState};
use super::provenance;
use super::report::Reporter;
use super::run_metrics::RunMetrics;
use super::stagefile::{Pipeline, Stage};
use super::workspace::Workspace;
use crate::kind::{Kind, Kinds, StageContext};
use vlmflow_store::db::{Completion, Db, NewRun};
use vlmflow_store::{Cas, Digest, Manifest, StoreError};

/// How a stage's turn in a build ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Fresh,
    Restored,
    Ran,
    Failed,
    Interrupted,
    /// Not attempted: an upstream stage failed, or the build stopped first.
    Skipped,
    /// Dry run: what would happen.
    WouldRestore,
    WouldRun,
}

impl Status {
    pub fn word(self) -> &'static str {
        match self {
            Status::Fresh => "fresh",
            Status::Restored => "restored",
            Status::Ran => "ran",
            Status::Failed => "failed",
            Status::Interrupted => "interrupted",
            Status::Skipped => "skipped",
            Status::WouldRestore => "restore",
            Status::WouldRun => "run",
        }
    }

    pub fn is_failure(self) -> bool {
        matches!(self, Status::Failed | Status::Interrupted)
    }
}

#[derive(Clone, Debug)]
pub struct Outcome {
    pub status: Status,
    /// What dependents see of this stage.
    pub upstream: UpstreamState,
    pub seconds: Option<f64>,
    /// Why it ran, was restored, or would be (empty when fresh).
    pub reasons: Vec<String>,
    /// What went wrong, for failures and skips.
    pub error: Option<String>,
}

impl Outcome {
    pub fn skipped(why: String) -> Outcome {
        Outcome {
            status: Status::Skipped,
            upstream: UpstreamState::Pending,
            seconds: None,
            reasons: vec![],
            error: Some(why),
        }
    }

    /// A stage whose artifact dependents can use.
    fn ready(
        status: Status,
        artifact: Digest,
        producer: i64,
        seconds: Option<f64>,
        reasons: Vec<String>,
    ) -> Outcome {
        Outcome {
            status,
            upstream: UpstreamState::Ready {
                artifact,
                producer: Some(producer),
            },
            seconds,
            reasons,
            error: None,
        }
    }

    /// The words after the stage name on its line.
    pub fn detail(&self) -> String {
        match &self.error {
            Some(e) => e.clone(),
            None => self.reasons.join("; "),
        }
    }
}

pub struct Executor<'a> {
    pub ws: &'a Workspace,
    pub kinds: &'a Kinds,
    pub cas: &'a Cas,
    pub pipeline: &'a Pipeline,
    pub reporter: &'a Reporter,
    pub build_id: i64,
    pub host: String,
    /// Stage name → the `--set` overrides applied to it (a JSON object), recorded with its runs.
    pub overrides: BTreeMap<String, Value>,
    pub force: HashSet<usize>,
    pub dry_run: bool,
}

/// Lines of a failed run's log shown on the terminal.
const LOG_TAIL_LINES: usize = 20;

impl Executor<'_> {
    pub fn execute(
        &self,
        db: &Db,
        index: usize,
        upstream: &BTreeMap<String, UpstreamState>,
    ) -> Outcome {
        let stage = &self.pipeline.stages[index];
        let kind = self
            .kinds
            .find(&stage.kind)
            .expect("the Stagefile loader checked the kind");
        let _span = tracing::info_span!("stage", name = %stage.name, kind = %stage.kind).entered();
        let started = Instant::now();
        let eval = match plan::evaluate(
            db,
            self.cas,
            &self.ws.root,
            stage,
            kind,
            upstream,
            self.force.contains(&index),
        ) {
            Ok(eval) => eval,
            Err(e) => return self.failed(started, format!("{e}")),
        };
        tracing::debug!(
            key = %eval.key.short(),
            decision = ?eval.decision,
            seconds = started.elapsed().as_secs_f64(),
            "evaluated"
        );
        let reasons: Vec<String> = eval
            .decision
            .reasons()
            .iter()
            .map(ToString::to_string)
            .collect();
        match (&eval.decision, self.dry_run) {
            (Decision::Fresh { artifact, producer }, _) => {
                Outcome::ready(Status::Fresh, *artifact, *producer, None, reasons)
            }
            (
                Decision::Restore {
                    artifact, producer, ..
                },
                true,
            ) => Outcome::ready(Status::WouldRestore, *artifact, *producer, None, reasons),
            (Decision::Run { .. } | Decision::AfterUpstream { .. }, true) => Outcome {
                status: Status::WouldRun,
                upstream: UpstreamState::Pending,
                seconds: None,
                reasons,
                error: None,
            },
            (
                Decision::Restore {
                    artifact, producer, ..
                },
                false,
            ) => match self.restore(db, stage, &eval, *artifact, *producer, upstream) {
                Ok(()) => Outcome::ready(
                    Status::Restored,
                    *artifact,
                    *producer,
                    Some(started.elapsed().as_secs_f64()),
                    reasons,
                ),
                Err(StoreError::CorruptObject(object)) => {
                    // The cache copy is damaged: forget it and produce the artifact again.
                    if let Err(e) = db.mark_swept(artifact) {
                        return self.failed(started, e.to_string());
                    }
                    self.reporter.note(&format!(
                        "note: the cached artifact of {} is damaged (object {} is missing or altered); running it instead",
                        stage.name,
                        object.short()
                    ));
                    let mut reasons = reasons;
                    reasons.push("cached artifact damaged".into());
                    self.run_outcome(db, stage, kind, &eval, upstream, started, reasons)
                }
                Err(e) => self.failed(started, format!("restoring from the cache failed: {e}")),
            },
            (Decision::Run { .. }, false) => {
                self.run_outcome(db, stage, kind, &eval, upstream, started, reasons)
            }
            (Decision::AfterUpstream { .. }, false) => self.failed(
                started,
                "internal error: an upstream stage has no artifact".into(),
            ),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn run_outcome(
        &self,
        db: &Db,
        stage: &Stage,
        kind: &dyn Kind,
        eval: &Evaluation,
        upstream: &BTreeMap<String, UpstreamState>,
        started: Instant,
        reasons: Vec<String>,
    ) -> Outcome {
        match self.run(db, stage, kind, eval, upstream) {
            Ok((artifact, run_id)) => Outcome::ready(
                Status::Ran,
                artifact,
                run_id,
                Some(started.elapsed().as_secs_f64()),
                reasons,
            ),
            Err(failure) => Outcome {
                status: if failure.interrupted {
                    Status::Interrupted
                } else {
                    Status::Failed
                },
                upstream: UpstreamState::Pending,
                seconds: Some(started.elapsed().as_secs_f64()),
                reasons,
                error: Some(failure.message),
            },
        }
    }

    fn failed(&self, started: Instant, error: String) -> Outcome {
        Outcome {
            status: Status::Failed,
            upstream: UpstreamState::Pending,
            seconds: Some(started.elapsed().as_secs_f64()),
            reasons: vec![],
            error: Some(error),
        }
    }

    fn insert_run(&self, db: &Db, stage: &Stage, eval: &Evaluation) -> Result<i64, StoreError> {
        db.insert_run(&NewRun {
            build_id: self.build_id,
            stage: &stage.name,
            kind: &stage.kind,
            impl_version: &eval.material.implementation,
            key: &eval.key.to_hex(),
            key_material: &eval.material.canonical(),
            params: &canonical_json(&stage.params),
            overrides: &self
                .overrides
                .get(&stage.name)
                .map_or_else(|| "{}".to_string(), canonical_json),
            host: &self.host,
            device: stage.device.as_deref().unwrap_or("cpu"),
        })
    }

    fn completion<'c>(
        &self,
        run_id: i64,
        stage: &'c Stage,
        artifact: &'c Digest,
        manifest: &Manifest,
        inputs: &'c [(String, Digest)],
        upstreams: &'c [(String, Digest, Option<i64>)],
    ) -> Completion<'c> {
        Completion {
            run_id,
            stage: &stage.name,
            artifact,
            files: manifest.file_count() as u64,
            bytes: manifest.total_size(),
            log: None,
            inputs_manifest: None,
            inputs,
            upstreams,
        }
    }

    fn restore(
        &self,
        db: &Db,
        stage: &Stage,
        eval: &Evaluation,
        artifact: Digest,
        producer: i64,
        upstream: &BTreeMap<String, UpstreamState>,
    ) -> Result<(), StoreError> {
        let run_id = self.insert_run(db, stage, eval)?;
        let result = (|| {
            let manifest = self.cas.read_manifest(&artifact)?;
            self.clear_outs(db, stage, run_id)?;
            self.cas
                .materialize(&db.conn, &manifest, &self.ws.root, &stage.outs)?;
            let inputs_manifest = self.store_inputs(eval)?;
            let (inputs, upstreams) = lineage(eval, upstream);
            let mut c = self.completion(run_id, stage, &artifact, &manifest, &inputs, &upstreams);
            c.inputs_manifest = inputs_manifest.as_ref();
            db.complete_run(&c, "restored", Some(producer))
        })();
        if let Err(e) = &result {
            let _ = db.fail_run(
                run_id,
                "failed",
                &format!("restoring from the cache failed: {e}"),
                None,
            );
        }
        result
    }

    fn store_inputs(&self, eval: &Evaluation) -> Result<Option<Digest>, StoreError> {
        if eval.inputs.entries().is_empty() {
            return Ok(None);
        }
        self.cas.put_manifest(&eval.inputs).map(Some)
    }

    fn run(
        &self,
        db: &Db,
        stage: &Stage,
        kind: &dyn Kind,
        eval: &Evaluation,
        upstream: &BTreeMap<String, UpstreamState>,
    ) -> Result<(Digest, i64), RunFailure> {
        let run_id = self.insert_run(db, stage, eval).map_err(RunFailure::from)?;
        let tmp = self.cas.temp_dir().map_err(RunFailure::from)?;
        let result = self.run_in(db, stage, kind, eval, upstream, run_id, &tmp);
        let _ = std::fs::remove_dir_all(&tmp).or_else(|_| self.cas.clean_temp());
        result.map(|artifact| (artifact, run_id))
    }

    #[allow(clippy::too_many_arguments)]
    fn run_in(
        &self,
        db: &Db,
        stage: &Stage,
        kind: &dyn Kind,
        eval: &Evaluation,
        upstream: &BTreeMap<String, UpstreamState>,
        run_id: i64,
        tmp: &Path,
    ) -> Result<Digest, RunFailure> {
        let io = |p: &Path| vlmflow_store::io_err(p.to_path_buf());
        let params_file = tmp.join("params.json");
        std::fs::write(&params_file, canonical_json(&stage.params)).map_err(io(&params_file))?;
        let log_path = tmp.join("log.txt");
        let log = std::fs::File::create(&log_path).map_err(io(&log_path))?;
        let out_root = tmp.join("out");
        let out_dir = out_root.join(&stage.outs[0]);
        if !kind.runs_command() {
            std::fs::create_dir_all(&out_dir).map_err(io(&out_dir))?;
        }
        let checkpoint_dir = self.ws.checkpoint_dir(&eval.key.to_hex());
        if kind.runs_command() {
            self.clear_outs(db, stage, run_id)?;
        }
        let metrics_file = stage.metrics.as_ref().map(|m| self.ws.root.join(m));
        let progress = self.reporter.start_stage(&stage.name);
        let metrics = RunMetrics::new(&self.ws.db_path(), run_id);
        let ctx = StageContext {
            stage: &stage.name,
            workspace: &self.ws.root,
            params: &stage.params,
            params_file: &params_file,
            cmd: stage.cmd.as_deref(),
            device: stage.device.as_deref().unwrap_or("cpu"),
            out_dir: &out_dir,
            checkpoint_dir: &checkpoint_dir,
            upstream: self.upstream_paths(stage),
            lineage: upstream_lineage(db, upstream),
            inputs: &stage.inputs,
            metrics_file: metrics_file.as_deref(),
            log: Mutex::new(log),
            log_path: &log_path,
            metrics: &metrics,
            progress: &progress,
        };
        let _span = tracing::info_span!("run", id = run_id).entered();
        let result = match std::panic::catch_unwind(AssertUnwindSafe(|| kind.run(&ctx))) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(panic) => Err(format!(
                "the {} stage panicked: {}",
                stage.kind,
                panic_text(&panic)
            )),
        };
        drop(ctx);
        drop(progress);
        metrics.finish(db).map_err(RunFailure::from)?;
        let log_digest = std::fs::read(&log_path)
            .ok()
            .and_then(|bytes| self.cas.put_bytes(&bytes).ok());
        let committed = result.and_then(|()| {
            let source = if kind.runs_command() {
                self.ws.root.as_path()
            } else {
                out_root.as_path()
            };
            self.commit(
                db,
                stage,
                eval,
                upstream,
                run_id,
                source,
                log_digest.as_ref(),
            )
            .map_err(|e| e.to_string())
        });
        match committed {
            Ok(artifact) => {
                let _ = std::fs::remove_dir_all(&checkpoint_dir);
                Ok(artifact)
            }
            Err(message) => {
                let interrupted = interrupt::requested();
                let status = if interrupted { "interrupted" } else { "failed" };
                let _ = db.fail_run(run_id, status, &message, log_digest.as_ref());
                if kind.runs_command() {
                    self.put_back_current(db, stage);
                }
                if !interrupted {
                    self.show_log_tail(stage, &log_path, run_id);
                }
                Err(RunFailure {
                    message,
                    interrupted,
                })
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn commit(
        &self,
        db: &Db,
        stage: &Stage,
        eval: &Evaluation,
        upstream: &BTreeMap<String, UpstreamState>,
        run_id: i64,
        source: &Path,
        log: Option<&Digest>,
    ) -> Result<Digest, StoreError> {
        for out in &stage.outs {
            if source.join(out).symlink_metadata().is_err() {
                return Err(StoreError::Other(format!(
                    "the command succeeded but did not produce {out}, declared in `outs` of stage `{}`: \
                     fix the command or the Stagefile",
                    stage.name
                )));
            }
        }
        let manifest = self.cas.ingest(&db.conn, source, &stage.outs)?;
        let artifact = manifest.digest();
        let inputs_manifest = self.store_inputs(eval)?;
        let (inputs, upstreams) = lineage(eval, upstream);
        let mut c = self.completion(run_id, stage, &artifact, &manifest, &inputs, &upstreams);
        c.log = log;
        c.inputs_manifest = inputs_manifest.as_ref();
        db.complete_run(&c, "ran", None)?;
        self.cas
            .materialize(&db.conn, &manifest, &self.ws.root, &stage.outs)?;
        Ok(artifact)
    }

    fn show_log_tail(&self, stage: &Stage, log_path: &Path, run_id: i64) {
        let text = std::fs::read_to_string(log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        if lines.is_empty() {
            return;
        }
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
        let mut note = format!(
            "--- last lines of the log of {} (run {run_id}; `vlmflow log {} --verbose` shows it all)\n",
            stage.name, stage.name
        );
        for line in tail {
            note.push_str("  | ");
            note.push_str(line);
            note.push('\n');
        }
        self.reporter.note(note.trim_end());
    }

    /// Needed stage → where its artifact is in the workspace: its only out, or the workspace root
    /// when it declares several.
    fn upstream_paths(&self, stage: &Stage) -> BTreeMap<String, PathBuf> {
        stage
            .needs
            .iter()
            .map(|&i| {
                let need = &self.pipeline.stages[i];
                let path = match need.outs.as_slice() {
                    [only] => self.ws.root.join(only),
                    _ => self.ws.root.clone(),
                };
                (need.name.clone(), path)
            })
            .collect()
    }
}

type Lineage = (Vec<(String, Digest)>, Vec<(String, Digest, Option<i64>)>);

fn lineage(eval: &Evaluation, upstream: &BTreeMap<String, UpstreamState>) -> Lineage {
    let inputs = eval
        .material
        .inputs
        .iter()
        .map(|(p, d)| (p.clone(), *d))
        .collect();
    let upstreams = upstream
        .iter()
        .filter_map(|(name, state)| match state {
            UpstreamState::Ready { artifact, producer } => {
                Some((name.clone(), *artifact, *producer))
            }
            UpstreamState::Pending => None,
        })
        .collect();
    (inputs, upstreams)
}

/// The portable lineage of each ready upstream artifact, by stage (see `provenance::portable`).
/// A lineage the database cannot give is left out rather than failing the run.
fn upstream_lineage(
    db: &Db,
    upstream: &BTreeMap<String, UpstreamState>,
) -> BTreeMap<String, Value> {
    upstream
        .iter()
        .filter_map(|(name, state)| match state {
            UpstreamState::Ready { artifact, producer } => {
                let found = provenance::of_artifact(db, &artifact.to_hex(), *producer);
                let lineage = found.ok().flatten()?;
                Some((name.clone(), provenance::portable(&lineage)))
            }
            UpstreamState::Pending => None,
        })
        .collect()
}

pub struct RunFailure {
    pub message: String,
    pub interrupted: bool,
}

impl From<StoreError> for RunFailure {
    fn from(e: StoreError) -> Self {
        RunFailure {
            message: e.to_string(),
            interrupted: false,
        }
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
}
