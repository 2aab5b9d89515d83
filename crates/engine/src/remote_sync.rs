//! The shared cache from the engine's side. `vlmflow push` sends the runs the workspace holds —
//! their records, artifacts, logs and input manifests — to the remote (`vlmflow_store::remote`);
//! a build fetches a stage's kept run by key from the remote instead of running it, and `vlmflow
//! pull` is a build that fetches and never runs.

use super::build::{EngineError, load_pipeline, select};
use super::kind::Kinds;
use super::stagefile::Pipeline;
use super::workspace::Workspace;
use vlmflow_store::cas::RecordRef;
use vlmflow_store::db::Db;
use vlmflow_store::remote::{Moved, Remote};
use vlmflow_store::{Cas, Digest, StoreError};

/// The remote the workspace names: `VLMFLOW_REMOTE`, else the Stagefile's `[remote] url`.
pub fn open_remote(pipeline: &Pipeline) -> Result<Option<Remote>, EngineError> {
    let url = std::env::var("VLMFLOW_REMOTE")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| pipeline.remote.clone());
    Ok(url.map(|u| Remote::open(&u)).transpose()?)
}

fn no_remote() -> EngineError {
    EngineError::Usage(
        "no remote: add `[remote]` with `url = \"s3://bucket/prefix\"` to the Stagefile, or set \
         VLMFLOW_REMOTE"
            .into(),
    )
}

#[derive(Debug, Default, serde::Serialize)]
pub struct PushReport {
    pub remote: String,
    /// Stages whose current run was pushed.
    pub stages: Vec<String>,
    /// Stages with nothing to push (never built, or a run without a record), and why.
    pub skipped: Vec<(String, String)>,
    pub objects_sent: u64,
    pub bytes_sent: u64,
    pub objects_already_there: usize,
}

/// Sends the current run of each target (all stages when none is named) and of what they need.
pub fn push(ws: &Workspace, kinds: &Kinds, targets: &[String]) -> Result<PushReport, EngineError> {
    let (pipeline, _) = load_pipeline(ws, kinds, &[])?;
    let remote = open_remote(&pipeline)?.ok_or_else(no_remote)?;
    let selected = select(&pipeline, targets)?;
    let db = ws.read_db()?;
    let cas = ws.open_cas()?;
    let mut report = PushReport {
        remote: remote.url().to_string(),
        ..Default::default()
    };
    let mut objects: Vec<Digest> = Vec::new();
    let mut refs: Vec<RecordRef> = Vec::new();
    for (stage, _) in pipeline.stages.iter().zip(&selected).filter(|(_, s)| **s) {
        match kept_run(&db, &stage.name)? {
            Ok((key, record)) => {
                objects.extend(run_objects(&cas, &record)?);
                refs.push(RecordRef { key, record });
                report.stages.push(stage.name.clone());
            }
            Err(why) => report.skipped.push((stage.name.clone(), why)),
        }
    }
    objects.sort();
    objects.dedup();
    let missing = remote.missing(&objects)?;
    report.objects_already_there = objects.len() - missing.len();
    let Moved {
        objects: sent,
        bytes,
    } = remote.upload(&cas, &missing)?;
    report.objects_sent = sent;
    report.bytes_sent = bytes;
    // Refs last: a key is offered only once everything its record names is there.
    for r in &refs {
        remote.add_record_ref(&r.key, &r.record)?;
    }
    Ok(report)
}

/// The key and record of the run that produced what the workspace holds for `stage`, or why
/// there is none to push.
fn kept_run(db: &Db, stage: &str) -> Result<Result<(Digest, Digest), String>, StoreError> {
    let Some(current) = db.current_run(stage)? else {
        return Ok(Err("never built".into()));
    };
    let producer = match current.source_run {
        Some(id) => db.run(id)?.unwrap_or(current),
        None => current,
    };
    let parsed = (
        producer.key.parse::<Digest>(),
        producer.record.as_deref().map(str::parse::<Digest>),
    );
    Ok(match parsed {
        (Ok(key), Some(Ok(record))) => Ok((key, record)),
        _ => Err(format!(
            "run {} has no run record: `vlmflow verify --repair` writes it",
            producer.id
        )),
    })
}

/// Every object a run's record names that the local cache holds: the record, the artifact's
/// manifest and files, the log and the inputs' manifest.
fn run_objects(cas: &Cas, record: &Digest) -> Result<Vec<Digest>, StoreError> {
    let run = cas.read_record(record)?;
    let manifest = cas.read_manifest(&run.artifact)?;
    let mut objects = vec![*record, run.artifact];
    objects.extend(manifest.objects());
    for extra in [run.log, run.inputs_manifest].into_iter().flatten() {
        if cas.holds(&extra)? {
            objects.push(extra);
        }
    }
    Ok(objects)
}

/// Fetches a kept run of `key` from the remote into the local cache and database; returns the
/// objects moved, or `None` when the remote has none. Everything is checked against its digest
/// before it is kept.
pub(crate) fn fetch(
    remote: &Remote,
    db: &Db,
    cas: &Cas,
    key: &Digest,
) -> Result<Option<Moved>, StoreError> {
    let Some(record) = remote.record_refs(key)?.into_iter().next() else {
        return Ok(None);
    };
    let mut moved = download_missing(remote, cas, &[record])?;
    let run = cas.read_record(&record)?;
    moved = add(moved, download_missing(remote, cas, &[run.artifact])?);
    let manifest = cas.read_manifest(&run.artifact)?;
    let files: Vec<Digest> = manifest.objects().collect();
    moved = add(moved, download_missing(remote, cas, &files)?);
    // The log and the inputs' manifest help `log` and `status`, but the artifact does not need
    // them: a remote without them is fine.
    let extras: Vec<Digest> = [run.log, run.inputs_manifest]
        .into_iter()
        .flatten()
        .collect();
    if let Ok(more) = download_missing(remote, cas, &extras) {
        moved = add(moved, more);
    }
    let r = RecordRef { key: *key, record };
    cas.add_record_ref(&r)?;
    db.import_records(cas, &[r])?;
    Ok(Some(moved))
}

fn download_missing(remote: &Remote, cas: &Cas, digests: &[Digest]) -> Result<Moved, StoreError> {
    let mut wanted = Vec::new();
    for d in digests {
        if !cas.holds(d)? {
            wanted.push(*d);
        }
    }
    remote.download(cas, &wanted)
}

fn add(a: Moved, b: Moved) -> Moved {
    Moved {
        objects: a.objects + b.objects,
        bytes: a.bytes + b.bytes,
    }
}
