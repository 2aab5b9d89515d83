//! One stage's turn in a build: evaluate it, then act on the decision — nothing (fresh), restore
//! (`restore.rs`), run (`run.rs`), or, in a dry run, only say which. The bookkeeping a run and a
//! restore share (the run's row, its completion, its lineage) is here too.
//!
//! The order is what makes a crash harmless: outputs are ingested into the store (fsynced) first,
//! then the run is committed in one SQLite transaction, then the artifact is materialized in the
//! workspace. A crash before the commit leaves the old state; after it, the next build finds the
//! workspace short of the new artifact and restores it. A failed run leaves the workspace as it was
//! before the run.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use serde_json::Value;

use super::detached::Detached;
use super::dirty::Reason;
use super::outcome::{Outcome, Problem, Status};
use super::params::canonical_json;
use super::plan::{self, Decision, Evaluation, UpstreamState};
use super::remote_sync;
use super::report::Reporter;
use super::slurm::Slurm;
use super::stagefile::{Pipeline, Stage};
use super::workspace::Workspace;
use crate::kind::{Kind, Kinds};
use vlmflow_store::db::{Completion, Db, NewRun};
use vlmflow_store::remote::Remote;
use vlmflow_store::{Cas, Digest, Manifest, StoreError};

pub struct Executor<'a> {
    pub ws: &'a Workspace,
    pub kinds: &'a Kinds,
    pub cas: &'a Cas,
    pub pipeline: &'a Pipeline,
    pub reporter: &'a Reporter,
    /// How stages with `executor = "slurm"` reach the cluster.
    pub slurm: &'a Slurm,
    pub build_id: i64,
    pub host: String,
    /// Per stage (by index): the `--set` overrides applied to it (a JSON object), recorded with
    /// its runs.
    pub overrides: Vec<Option<Value>>,
    pub force: HashSet<usize>,
    pub dry_run: bool,
    /// The shared cache a stage about to run is first looked up in.
    pub remote: Option<&'a Remote>,
    /// `vlmflow pull`: a stage the remote does not have is not run.
    pub remote_only: bool,
    /// Build off the workspace (a sweep's trial): outs go to a scratch folder instead.
    pub detached: Option<&'a Detached>,
}

/// What travels with one stage through its turn: the worker's connection, the stage and its kind,
/// how it was evaluated, and what its needed stages left.
pub(crate) struct Job<'j> {
    pub db: &'j Db,
    /// The stage's index in the pipeline.
    pub index: usize,
    pub stage: &'j Stage,
    pub kind: &'j dyn Kind,
    pub eval: &'j Evaluation,
    pub upstream: &'j BTreeMap<String, UpstreamState>,
}

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
            Err(e) => return failed(started, e.to_string()),
        };
        tracing::debug!(
            key = %eval.key.short(),
            decision = ?eval.decision,
            seconds = started.elapsed().as_secs_f64(),
            "evaluated"
        );
        let reasons = eval.decision.reasons().to_vec();
        let job = Job {
            db,
            index,
            stage,
            kind,
            eval: &eval,
            upstream,
        };
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
            (Decision::Run { .. } | Decision::AfterUpstream { .. }, true) => {
                Outcome::would_run(reasons)
            }
            (
                Decision::Restore {
                    artifact, producer, ..
                },
                false,
            ) => self.restore_outcome(&job, *artifact, *producer, None, started, reasons),
            (Decision::Run { .. }, false) => self.fetch_or_run(&job, started, reasons),
            (Decision::AfterUpstream { .. }, false) => failed(
                started,
                "internal error: an upstream stage has no artifact".into(),
            ),
        }
    }

    /// A stage to run: restored instead when the remote has a kept run of its key.
    fn fetch_or_run(&self, job: &Job<'_>, started: Instant, mut reasons: Vec<Reason>) -> Outcome {
        // Another trial of a sweep may be running this key: wait for it, then restore its run.
        let _claim = match self.detached {
            Some(detached) => {
                let claim = detached.claims.claim(job.eval.key);
                match job.db.cached_run(&job.eval.key.to_hex()) {
                    Ok(Some(cached)) => {
                        if let Some(artifact) =
                            cached.artifact.as_deref().and_then(|a| a.parse().ok())
                        {
                            return self
                                .restore_outcome(job, artifact, cached.id, None, started, reasons);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => return failed(started, e.to_string()),
                }
                Some(claim)
            }
            None => None,
        };
        if let Some(remote) = self.remote {
            let key = job.eval.key;
            let progress = self.reporter.start_stage(&self.shown_name(job));
            let fetched = remote_sync::fetch(remote, job.db, self.cas, &key, &progress);
            drop(progress);
            match fetched {
                Ok(Some(moved)) => {
                    let cached = job.db.cached_run(&key.to_hex()).ok().flatten();
                    if let Some((run, artifact)) =
                        cached.and_then(|r| Some((r.id, r.artifact.as_deref()?.parse().ok()?)))
                    {
                        self.reporter.note(&format!(
                            "note: {} fetched from remote {} ({} objects, {:.1} MB)",
                            job.stage.name,
                            remote.url(),
                            moved.objects,
                            moved.bytes as f64 / 1e6
                        ));
                        reasons.push(Reason::FromRemote);
                        let origin = Some(remote.url());
                        return self.restore_outcome(job, artifact, run, origin, started, reasons);
                    }
                }
                Ok(None) => {}
                Err(e) if self.remote_only => return failed(started, e.to_string()),
                Err(e) => self.reporter.note(&format!(
                    "warning: {}: fetching from the remote failed ({e}); running the stage",
                    job.stage.name
                )),
            }
        }
        if self.remote_only {
            return failed(
                started,
                "not on the remote: `vlmflow build` runs it (and `vlmflow push` shares it)".into(),
            );
        }
        self.run_outcome(job, started, reasons)
    }

    pub(crate) fn insert_run(&self, job: &Job<'_>) -> Result<i64, StoreError> {
        let Job {
            db, stage, eval, ..
        } = job;
        db.insert_run(&NewRun {
            build_id: self.build_id,
            stage: &stage.name,
            kind: &stage.kind,
            impl_version: &eval.material.implementation,
            key: &eval.key.to_hex(),
            key_material: &eval.material.canonical(),
            params: &canonical_json(&stage.params),
            overrides: &self.overrides[job.index]
                .as_ref()
                .map_or_else(|| "{}".to_string(), canonical_json),
            host: &self.host,
            device: stage.device.as_deref().unwrap_or("cpu"),
        })
    }

    /// The stage's name as the terminal shows it (after its trial's label in a sweep).
    pub(crate) fn shown_name(&self, job: &Job<'_>) -> String {
        match self.detached {
            Some(detached) => format!("{}{}", detached.label(job.index), job.stage.name),
            None => job.stage.name.clone(),
        }
    }

    /// The inputs' manifest, stored so a later `status` can name the files that changed.
    pub(crate) fn store_inputs(&self, eval: &Evaluation) -> Result<Option<Digest>, StoreError> {
        if eval.inputs.entries().is_empty() {
            return Ok(None);
        }
        self.cas.put_manifest(&eval.inputs).map(Some)
    }
}

/// A bookkeeping failure before or around the stage's work.
pub(crate) fn failed(started: Instant, message: String) -> Outcome {
    Outcome::not_built(
        Problem::Failed(message),
        Some(started.elapsed().as_secs_f64()),
        vec![],
    )
}

/// What a completed run or restore records: its artifact, what it read and which runs made that.
pub(crate) struct Lineage {
    inputs: Vec<(String, Digest)>,
    upstreams: Vec<(String, Digest, Option<i64>)>,
}

impl Lineage {
    pub(crate) fn of(job: &Job<'_>) -> Lineage {
        let inputs = job
            .eval
            .material
            .inputs
            .iter()
            .map(|(p, d)| (p.clone(), *d))
            .collect();
        let upstreams = job
            .upstream
            .iter()
            .filter_map(|(name, state)| match state {
                UpstreamState::Ready { artifact, producer } => {
                    Some((name.clone(), *artifact, *producer))
                }
                UpstreamState::Pending => None,
            })
            .collect();
        Lineage { inputs, upstreams }
    }

    pub(crate) fn completion<'c>(
        &'c self,
        run_id: i64,
        stage: &'c Stage,
        artifact: &'c Digest,
        manifest: &Manifest,
    ) -> Completion<'c> {
        Completion {
            run_id,
            stage: &stage.name,
            artifact,
            files: manifest.file_count() as u64,
            bytes: manifest.total_size(),
            log: None,
            inputs_manifest: None,
            inputs: &self.inputs,
            upstreams: &self.upstreams,
            record: None,
        }
    }
}
