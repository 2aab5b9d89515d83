//! Restoring a stage: put a kept run's artifact back in the workspace instead of running, recorded
//! as a run of its own that names the run that produced the artifact. Every restored file is
//! checked against its digest (`Cas::materialize`): a damaged cache copy is quarantined and
//! forgotten, and the stage runs instead.

use std::time::Instant;

use super::dirty::Reason;
use super::execute::{Executor, Job, Lineage, failed};
use super::outcome::{Outcome, Status};
use vlmflow_store::run_status::RunStatus;
use vlmflow_store::{Digest, StoreError};

impl Executor<'_> {
    pub(crate) fn restore_outcome(
        &self,
        job: &Job<'_>,
        artifact: Digest,
        producer: i64,
        origin: Option<&str>,
        started: Instant,
        mut reasons: Vec<Reason>,
    ) -> Outcome {
        match self.restore(job, artifact, producer, origin) {
            Ok(()) => Outcome::ready(
                Status::Restored,
                artifact,
                producer,
                Some(started.elapsed().as_secs_f64()),
                reasons,
            ),
            Err(StoreError::CorruptObject(object)) => {
                // The cache copy is damaged: forget it and produce the artifact again.
                if let Err(e) = job.db.mark_swept(&artifact) {
                    return failed(started, e.to_string());
                }
                self.reporter.note(&format!(
                    "note: the cached artifact of {} (made by run {producer}) is damaged: object {} \
                     is missing or no longer matches its digest (an altered one is kept in \
                     cache/quarantine/); running the stage instead",
                    job.stage.name,
                    object.short()
                ));
                reasons.push(Reason::CachedArtifactDamaged);
                self.run_outcome(job, started, reasons)
            }
            Err(e) => failed(started, format!("restoring from the cache failed: {e}")),
        }
    }

    /// `origin`: the remote the artifact was just fetched from, if it was.
    fn restore(
        &self,
        job: &Job<'_>,
        artifact: Digest,
        producer: i64,
        origin: Option<&str>,
    ) -> Result<(), StoreError> {
        let Job { db, stage, .. } = job;
        if let Some(detached) = self.detached {
            // Off the workspace, a restore only places the artifact: the run that made it is
            // the one the trial names.
            let manifest = self.cas.read_manifest(&artifact)?;
            let root = detached.root(job.index);
            self.cas
                .materialize(&db.conn, &manifest, root, &stage.outs)?;
            detached.placed(job.index);
            return Ok(());
        }
        let run_id = self.insert_run(job)?;
        if let Some(url) = origin {
            db.set_run_origin(run_id, url)?;
        }
        let result = (|| {
            let manifest = self.cas.read_manifest(&artifact)?;
            self.clear_outs(db, stage, run_id, Some(&manifest))?;
            self.cas
                .materialize(&db.conn, &manifest, &self.ws.root, &stage.outs)?;
            let inputs_manifest = self.store_inputs(job.eval)?;
            let lineage = Lineage::of(job);
            let mut c = lineage.completion(run_id, stage, &artifact, &manifest);
            c.inputs_manifest = inputs_manifest.as_ref();
            db.complete_run(&c, RunStatus::Restored, Some(producer))
        })();
        if let Err(e) = &result {
            let _ = db.fail_run(
                run_id,
                RunStatus::Failed,
                &format!("restoring from the cache failed: {e}"),
                None,
            );
        }
        result
    }
}
