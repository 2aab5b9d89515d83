//! Running a stage: a folder for its params, log and outputs, the context its kind sees, the work
//! itself (in this process, or as a Slurm job), then the commit — or, on failure, the run
//! recorded as failed or interrupted, the workspace put back and the log's last lines shown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use serde_json::Value;

use super::dirty::Reason;
use super::execute::{Executor, Job, Lineage};
use super::interrupt;
use super::outcome::{Outcome, Problem, Status};
use super::params::canonical_json;
use super::plan::UpstreamState;
use super::provenance;
use super::run_metrics::RunMetrics;
use super::runner::{self, RunError};
use super::slurm::SlurmOptions;
use super::slurm::job_dir::{JobDir, JobSpec};
use super::stagefile::{RunsOn, Stage};
use crate::kind::StageContext;
use vlmflow_store::db::Db;
use vlmflow_store::run_status::RunStatus;
use vlmflow_store::{Digest, StoreError};

/// Lines of a failed run's log shown on the terminal.
const LOG_TAIL_LINES: usize = 20;

/// A run that is a Slurm job: its resources, its folder, and the earlier build's job it takes
/// over, if any.
struct SlurmRun<'a> {
    options: &'a SlurmOptions,
    dir: JobDir,
    attach: Option<String>,
}

impl Executor<'_> {
    pub(crate) fn run_outcome(
        &self,
        job: &Job<'_>,
        started: Instant,
        reasons: Vec<Reason>,
    ) -> Outcome {
        let seconds = || Some(started.elapsed().as_secs_f64());
        match self.run(job) {
            Ok((artifact, run_id)) => {
                Outcome::ready(Status::Ran, artifact, run_id, seconds(), reasons)
            }
            Err(problem) => Outcome::not_built(problem, seconds(), reasons),
        }
    }

    fn run(&self, job: &Job<'_>) -> Result<(Digest, i64), Problem> {
        // A command writes its outs in the workspace (on a Slurm node too, before the job moves
        // them): a sweep, which must leave the workspace as it is, cannot run one.
        if self.detached.is_some() && job.kind.runs_command() {
            return Err(Problem::Failed(format!(
                "a sweep cannot run `{}`: its command writes its outs in the workspace; \
                 build its settings one at a time with `vlmflow build --set …`",
                job.stage.name
            )));
        }
        let run_id = self.insert_run(job)?;
        let (folder, slurm) = match &job.stage.runs_on {
            RunsOn::Local => (self.cas.temp_dir()?, None),
            RunsOn::Slurm(options) => {
                let dir = JobDir::new(self.ws.job_dir(&job.eval.key.to_hex()));
                let attach = self.slurm.attachable(&dir);
                if attach.is_none() {
                    let _ = std::fs::remove_dir_all(&dir.root);
                    std::fs::create_dir_all(&dir.root)
                        .map_err(vlmflow_store::io_err(dir.root.clone()))?;
                }
                let folder = dir.root.clone();
                let run = SlurmRun {
                    options,
                    dir,
                    attach,
                };
                (folder, Some(run))
            }
        };
        let result = self.run_in(job, run_id, &folder, slurm.as_ref());
        let _ = std::fs::remove_dir_all(&folder).or_else(|_| self.cas.clean_temp());
        result.map(|artifact| (artifact, run_id))
    }

    /// The run's work in `folder` (its params, log and outs): in this process, or as the Slurm job
    /// `slurm` describes.
    fn run_in(
        &self,
        job: &Job<'_>,
        run_id: i64,
        folder: &Path,
        slurm: Option<&SlurmRun<'_>>,
    ) -> Result<Digest, Problem> {
        let Job {
            db, stage, kind, ..
        } = job;
        // A job of an earlier build is still at work in its folder: leave its files and the
        // workspace's outs as they are.
        let attached = slurm.is_some_and(|s| s.attach.is_some());
        let io = |p: &Path| vlmflow_store::io_err(p.to_path_buf());
        let params_file = folder.join("params.json");
        if !attached {
            std::fs::write(&params_file, canonical_json(&stage.params))
                .map_err(io(&params_file))?;
        }
        let log_path = folder.join("log.txt");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(&log_path))?;
        let out_root = folder.join("out");
        let out_dir = out_root.join(&stage.outs[0]);
        if !kind.runs_command() {
            std::fs::create_dir_all(&out_dir).map_err(io(&out_dir))?;
        }
        let checkpoint_dir = self.ws.checkpoint_dir(&job.eval.key.to_hex());
        if kind.runs_command() && !attached {
            self.clear_outs(db, stage, run_id, None)?;
        }
        let metrics_file = stage.metrics.as_ref().map(|m| self.ws.root.join(m));
        let progress = self.reporter.start_stage(&self.shown_name(job));
        let metrics = RunMetrics::new(&self.ws.db_path(), run_id).with_tensorboard(
            crate::tensorboard::run_dir(&self.ws.tensorboard_dir(), &stage.name, run_id),
        );
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
            lineage: if job.kind.reads_lineage() {
                upstream_lineage(db, job.upstream)
            } else {
                BTreeMap::new()
            },
            inputs: &stage.inputs,
            metrics_file: metrics_file.as_deref(),
            log: Mutex::new(log),
            log_path: &log_path,
            metrics: &metrics,
            progress: &progress,
        };
        let _span = tracing::info_span!("run", id = run_id).entered();
        let result = match slurm {
            None => runner::in_process(*kind, &ctx),
            Some(slurm) => self.run_as_job(job, run_id, slurm, &ctx),
        };
        let result = result.map_err(|e| e.to_string());
        drop(ctx);
        drop(progress);
        // The stage's own failure is the cause to record; a failure to write its metrics comes
        // second, and either way the run ends as failed rather than staying `running`.
        let metrics_written = metrics
            .finish(db)
            .map_err(|e| format!("recording the run's metrics failed: {e}"));
        let log_digest = std::fs::read(&log_path)
            .ok()
            .and_then(|bytes| self.cas.put_bytes(&bytes).ok());
        let committed = result.and(metrics_written).and_then(|()| {
            // A local command writes its outs in the workspace; a job leaves them in `out/`.
            let source = if kind.runs_command() && slurm.is_none() {
                self.ws.root.as_path()
            } else {
                out_root.as_path()
            };
            self.commit(job, run_id, source, log_digest.as_ref())
                .map_err(|e| e.to_string())
        });
        match committed {
            Ok(artifact) => {
                let _ = std::fs::remove_dir_all(&checkpoint_dir);
                Ok(artifact)
            }
            Err(message) => {
                let interrupted = interrupt::requested();
                let status = if interrupted {
                    RunStatus::Interrupted
                } else {
                    RunStatus::Failed
                };
                let _ = db.fail_run(run_id, status, &message, log_digest.as_ref());
                if kind.runs_command() {
                    self.put_back_current(db, stage);
                }
                if interrupted {
                    Err(Problem::Interrupted(message))
                } else {
                    self.show_log_tail(stage, &log_path, run_id);
                    Err(Problem::Failed(message))
                }
            }
        }
    }

    /// Submit the stage's job (or take over the earlier build's) and wait for it. The run records
    /// the job at once, and the node once the job says where it ran.
    fn run_as_job(
        &self,
        job: &Job<'_>,
        run_id: i64,
        slurm: &SlurmRun<'_>,
        ctx: &StageContext<'_>,
    ) -> Result<(), RunError> {
        let id = match &slurm.attach {
            Some(id) => {
                self.reporter.note(&format!(
                    "note: {} takes over Slurm job {id}, submitted by an earlier build",
                    job.stage.name
                ));
                ctx.log(&format!("vlmflow: taken over by build {}", self.build_id));
                id.clone()
            }
            None => {
                let spec = JobSpec::new(ctx, job.kind.name(), &job.stage.outs);
                let id = self.slurm.submit(&slurm.dir, &spec, slurm.options)?;
                ctx.log(&format!("vlmflow: submitted as Slurm job {id}"));
                id
            }
        };
        let _ = job.db.set_run_job(run_id, &id, None);
        let end = self.slurm.wait(&id, &slurm.dir, ctx);
        if let Some(node) = &end.node {
            let _ = job.db.set_run_job(run_id, &id, Some(node));
        }
        end.result
    }

    fn commit(
        &self,
        job: &Job<'_>,
        run_id: i64,
        source: &Path,
        log: Option<&Digest>,
    ) -> Result<Digest, StoreError> {
        let Job { db, stage, .. } = job;
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
        let inputs_manifest = self.store_inputs(job.eval)?;
        let lineage = Lineage::of(job);
        let mut c = lineage.completion(run_id, stage, &artifact, &manifest);
        c.log = log;
        c.inputs_manifest = inputs_manifest.as_ref();
        // The run's record goes into the cache before its row: the database can always be rebuilt
        // from the records (`vlmflow_store::index_rebuild`).
        let run_record = self.cas.keep_record(&db.record_of(&c)?)?;
        c.record = Some(&run_record);
        match self.detached {
            None => {
                db.complete_run(&c, RunStatus::Ran, None)?;
                self.cas.materialize_just_stored(
                    &db.conn,
                    &manifest,
                    &self.ws.root,
                    &stage.outs,
                )?;
            }
            Some(detached) => {
                db.complete_detached_run(&c)?;
                let root = detached.root(job.index);
                self.cas
                    .materialize_just_stored(&db.conn, &manifest, root, &stage.outs)?;
                detached.placed(job.index);
            }
        }
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
                let root = match self.detached {
                    Some(detached) => detached.root_of(i, &self.ws.root),
                    None => &self.ws.root,
                };
                let path = match need.outs.as_slice() {
                    [only] => root.join(only),
                    _ => root.to_path_buf(),
                };
                (need.name.clone(), path)
            })
            .collect()
    }
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
