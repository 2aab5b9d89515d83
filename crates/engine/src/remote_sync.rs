//! The shared cache from the engine's side. `vlmflow push` sends the runs the workspace holds —
//! their records, artifacts, logs and input manifests — to the remote (`vlmflow_store::remote`);
//! a build fetches a stage's kept run by key from the remote instead of running it, and `vlmflow
//! pull` is a build that fetches and never runs.

use super::build::{EngineError, load_pipeline, select};
use super::kind::{Kinds, Progress};
use super::stagefile::Pipeline;
use super::workspace::Workspace;
use std::collections::HashMap;
use std::sync::Mutex;
use vlmflow_store::cas::RecordRef;
use vlmflow_store::db::Db;
use vlmflow_store::remote::{Moved, Remote, transfer_plan};
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
    /// Objects sent, loose or in packs.
    pub objects_sent: u64,
    pub bytes_sent: u64,
    pub packs_sent: u64,
    pub objects_already_there: usize,
}

/// Sends the current run of each target (all stages when none is named) and of what they need.
pub fn push(
    ws: &Workspace,
    kinds: &Kinds,
    targets: &[String],
    progress: &dyn Progress,
) -> Result<PushReport, EngineError> {
    let (pipeline, _) = load_pipeline(ws, kinds, &[])?;
    let remote = open_remote(&pipeline)?.ok_or_else(no_remote)?;
    let selected = select(&pipeline, targets)?;
    let db = ws.read_db()?;
    let cas = ws.open_cas()?;
    let mut report = PushReport {
        remote: remote.url().to_string(),
        ..Default::default()
    };
    let mut loose: Vec<Digest> = Vec::new();
    let mut packed = Vec::new();
    let mut sizes = HashMap::new();
    let mut refs: Vec<RecordRef> = Vec::new();
    for (stage, _) in pipeline.stages.iter().zip(&selected).filter(|(_, s)| **s) {
        match kept_run(&db, &stage.name)? {
            Ok((key, record)) => {
                let run = RunObjects::of(&cas, &record)?;
                sizes.extend(run.sizes);
                loose.extend(run.loose);
                packed.extend(run.packed);
                refs.push(RecordRef { key, record });
                report.stages.push(stage.name.clone());
            }
            Err(why) => report.skipped.push((stage.name.clone(), why)),
        }
    }
    loose.sort();
    loose.dedup();
    packed.sort();
    packed.dedup();
    let missing = remote.missing(&loose)?;
    report.objects_already_there = loose.len() - missing.len();
    let mut unpacked = Vec::new();
    for (manifest, files) in &packed {
        if remote.holds_packs(manifest)? {
            report.objects_already_there += files.len();
        } else {
            unpacked.push((manifest, files));
        }
    }
    let tally = Tally::new(progress, "sent");
    let size = |d: &Digest| sizes.get(d).copied().unwrap_or(0);
    tally.expect(missing.len() as u64, missing.iter().map(size).sum());
    for (_, files) in &unpacked {
        tally.expect(files.len() as u64, files.iter().map(|f| f.1).sum());
    }
    let on_moved = |m: Moved| tally.add(m);
    let mut sent = remote.upload(&cas, &missing, &on_moved)?;
    for (manifest, files) in unpacked {
        sent = sent + remote.upload_packs(&cas, manifest, files, &on_moved)?;
    }
    report.objects_sent = sent.objects;
    report.bytes_sent = sent.bytes;
    report.packs_sent = sent.packs;
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

/// Every object a run's record names that the local cache holds — the record, the artifact's
/// manifest and files, the log and the inputs' manifest — split as they travel.
struct RunObjects {
    loose: Vec<Digest>,
    /// The artifact's manifest and its files that travel packed, when there are such.
    packed: Option<(Digest, Vec<(Digest, u64)>)>,
    /// The sizes of the artifact's files (those of records and manifests are not known, and small).
    sizes: Vec<(Digest, u64)>,
}

impl RunObjects {
    fn of(cas: &Cas, record: &Digest) -> Result<RunObjects, StoreError> {
        let run = cas.read_record(record)?;
        let manifest = cas.read_manifest(&run.artifact)?;
        let sizes = manifest.file_sizes().collect();
        let plan = transfer_plan(&manifest);
        let mut loose = vec![*record, run.artifact];
        loose.extend(plan.loose);
        for extra in [run.log, run.inputs_manifest].into_iter().flatten() {
            if cas.holds(&extra)? {
                loose.push(extra);
            }
        }
        let packed = (!plan.packed.is_empty()).then_some((run.artifact, plan.packed));
        Ok(RunObjects {
            loose,
            packed,
            sizes,
        })
    }
}

/// Fetches a kept run of `key` from the remote into the local cache and database; returns the
/// objects moved, or `None` when the remote has none. Everything is checked against its digest
/// before it is kept.
pub(crate) fn fetch(
    remote: &Remote,
    db: &Db,
    cas: &Cas,
    key: &Digest,
    progress: &dyn Progress,
) -> Result<Option<Moved>, StoreError> {
    let Some(record) = remote.record_refs(key)?.into_iter().next() else {
        return Ok(None);
    };
    let tally = Tally::new(progress, "fetched");
    let on_moved = |m: Moved| tally.add(m);
    let mut moved = download_missing(remote, cas, &[record], &on_moved)?;
    let run = cas.read_record(&record)?;
    moved = moved + download_missing(remote, cas, &[run.artifact], &on_moved)?;
    let manifest = cas.read_manifest(&run.artifact)?;
    let sizes: HashMap<Digest, u64> = manifest.file_sizes().collect();
    let plan = transfer_plan(&manifest);
    let mut loose = not_held(cas, &plan.loose)?;
    let wanted_packed = not_held(cas, plan.packed.iter().map(|f| &f.0))?;
    // The log and the inputs' manifest help `log` and `status`, but the artifact does not need
    // them: a remote without them is fine.
    let extras = not_held(cas, [run.log, run.inputs_manifest].iter().flatten())?;
    let wanted = loose.iter().chain(&wanted_packed).chain(&extras);
    tally.expect(
        moved.objects + wanted.clone().count() as u64,
        moved.bytes
            + wanted
                .map(|d| sizes.get(d).copied().unwrap_or(0))
                .sum::<u64>(),
    );
    if !wanted_packed.is_empty() {
        let (from_packs, rest) =
            remote.download_packed(cas, &run.artifact, &wanted_packed, &on_moved)?;
        moved = moved + from_packs;
        loose.extend(rest);
    }
    moved = moved + remote.download(cas, &loose, &on_moved)?;
    if let Ok(more) = remote.download(cas, &extras, &on_moved) {
        moved = moved + more;
    }
    let r = RecordRef { key: *key, record };
    cas.add_record_ref(&r)?;
    db.import_records(cas, &[r])?;
    Ok(Some(moved))
}

fn download_missing(
    remote: &Remote,
    cas: &Cas,
    digests: &[Digest],
    on_moved: &(dyn Fn(Moved) + Sync),
) -> Result<Moved, StoreError> {
    remote.download(cas, &not_held(cas, digests)?, on_moved)
}

fn not_held<'a>(
    cas: &Cas,
    digests: impl IntoIterator<Item = &'a Digest>,
) -> Result<Vec<Digest>, StoreError> {
    let mut wanted = Vec::new();
    for d in digests {
        if !cas.holds(d)? {
            wanted.push(*d);
        }
    }
    Ok(wanted)
}

/// A transfer's progress as the display shows it: objects and bytes so far, against what is
/// expected (which grows as the transfer learns what it holds).
struct Tally<'a> {
    progress: &'a dyn Progress,
    verb: &'static str,
    counts: Mutex<(Moved, Moved)>,
}

impl<'a> Tally<'a> {
    fn new(progress: &'a dyn Progress, verb: &'static str) -> Tally<'a> {
        Tally {
            progress,
            verb,
            counts: Mutex::new(Default::default()),
        }
    }

    fn expect(&self, objects: u64, bytes: u64) {
        if let Ok(mut counts) = self.counts.lock() {
            counts.1 = counts.1
                + Moved {
                    objects,
                    bytes,
                    packs: 0,
                };
        }
    }

    fn add(&self, moved: Moved) {
        let Ok(mut counts) = self.counts.lock() else {
            return;
        };
        counts.0 = counts.0 + moved;
        let (done, expected) = *counts;
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        let message = if expected.bytes > done.bytes {
            format!(
                "objects {}, {:.1} of {:.1} MiB",
                self.verb,
                mib(done.bytes),
                mib(expected.bytes)
            )
        } else {
            format!("objects {}, {:.1} MiB", self.verb, mib(done.bytes))
        };
        let total = (expected.objects >= done.objects).then_some(expected.objects);
        self.progress.update(done.objects, total, &message);
    }
}
