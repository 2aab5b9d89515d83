//! `vlmflow build` and the evaluation `status` shares with it: load the Stagefile with `--set`
//! overrides applied, select the targets and what they need, lock the workspace, clean up after a
//! crash, and schedule the stages.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use serde_json::Value;

use super::diagnostic::Diagnostics;
use super::diagnostic::did_you_mean;
use super::execute::Executor;
use super::lock::WorkspaceLock;
use super::outcome::{Outcome, Problem, Status};
use super::params::{Override, apply_override};
use super::report::Reporter;
use super::scheduler::Schedule;
use super::slurm::Slurm;
use super::stagefile::{self, Pipeline, RunsOn};
use super::workspace::Workspace;
use super::{format_duration, interrupt};
use crate::kind::Kinds;
use vlmflow_store::StoreError;
use vlmflow_store::run_status::BuildStatus;

/// Why a command could not do its work; each maps to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The Stagefile or a params file is wrong (exit 2).
    #[error("{0}")]
    Stagefile(Diagnostics),
    /// The command line is wrong (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The store could not be read or written (exit 1).
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A command other than a build failed while working (exit 1).
    #[error("{0}")]
    Failed(String),
}

impl From<rusqlite::Error> for EngineError {
    fn from(e: rusqlite::Error) -> Self {
        EngineError::Store(StoreError::Db(e))
    }
}

impl EngineError {
    pub fn exit_code(&self) -> i32 {
        match self {
            EngineError::Stagefile(_) | EngineError::Usage(_) => 2,
            EngineError::Store(_) | EngineError::Failed(_) => 1,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    pub targets: Vec<String>,
    pub jobs: usize,
    pub set: Vec<String>,
    pub force: Vec<String>,
    pub dry_run: bool,
    pub keep_going: bool,
    /// Run on this device (`cpu`, `cuda`, `cuda:N`) every stage whose kind uses a device, and every
    /// stage that names one, instead of the Stagefile's choice.
    pub device: Option<String>,
    /// Do not look stages up in the remote cache.
    pub no_remote: bool,
    /// `vlmflow pull`: fetch from the remote what it has, run nothing.
    pub remote_only: bool,
    /// Run the stages the Stagefile sends to Slurm on this machine instead.
    pub local: bool,
}

/// The pipeline with `--set` overrides applied, and the overrides per stage (as recorded with runs).
pub fn load_pipeline(
    ws: &Workspace,
    kinds: &Kinds,
    set: &[String],
) -> Result<(Pipeline, BTreeMap<String, Value>), EngineError> {
    let mut pipeline = stagefile::load(&ws.root, kinds).map_err(EngineError::Stagefile)?;
    let mut overrides: BTreeMap<String, Value> = BTreeMap::new();
    let mut applied = Vec::new();
    for text in set {
        let o = Override::parse(text).map_err(EngineError::Usage)?;
        let index = stage_index(&pipeline, &o.stage, "--set")?;
        apply_override(&mut pipeline.stages[index].params, &o).map_err(EngineError::Usage)?;
        let entry = overrides
            .entry(o.stage.clone())
            .or_insert_with(|| Value::Object(Default::default()));
        entry[o.param_name()] = o.value.clone();
        applied.push((text.as_str(), o));
    }
    stagefile::check_overrides(&pipeline, kinds, &applied).map_err(EngineError::Stagefile)?;
    Ok((pipeline, overrides))
}

/// `--device`: the stages that compute on a device run on `device`.
fn move_to_device(pipeline: &mut Pipeline, kinds: &Kinds, device: &str) -> Result<(), EngineError> {
    crate::device::check(device).map_err(|e| EngineError::Usage(format!("--device: {e}")))?;
    for stage in &mut pipeline.stages {
        let uses_device = kinds.find(&stage.kind).is_some_and(|k| k.uses_device());
        if uses_device || stage.device.is_some() {
            stage.device = Some(device.to_string());
        }
    }
    Ok(())
}

pub fn stage_index(pipeline: &Pipeline, name: &str, flag: &str) -> Result<usize, EngineError> {
    pipeline.stage_index(name).ok_or_else(|| {
        let names = pipeline.stages.iter().map(|s| s.name.as_str());
        let hint = match did_you_mean(name, names) {
            Some(best) => format!("did you mean `{best}`?"),
            None => format!(
                "the stages are: {}",
                pipeline
                    .stages
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        EngineError::Usage(format!(
            "{flag}: no stage named `{name}` in the Stagefile; {hint}"
        ))
    })
}

/// The targets and every stage they need (all stages when there is no target).
pub fn select(pipeline: &Pipeline, targets: &[String]) -> Result<Vec<bool>, EngineError> {
    if targets.is_empty() {
        return Ok(vec![true; pipeline.stages.len()]);
    }
    let mut selected = vec![false; pipeline.stages.len()];
    let mut stack = Vec::new();
    for t in targets {
        stack.push(stage_index(pipeline, t, "target")?);
    }
    while let Some(i) = stack.pop() {
        if !std::mem::replace(&mut selected[i], true) {
            stack.extend(&pipeline.stages[i].needs);
        }
    }
    Ok(selected)
}

pub struct BuildReport {
    /// (stage, outcome) for each selected stage, in pipeline order.
    pub outcomes: Vec<(String, Outcome)>,
}

impl BuildReport {
    pub fn failed(&self) -> bool {
        self.outcomes.iter().any(|(_, o)| o.status.is_failure())
    }

    pub fn count(&self, status: Status) -> usize {
        self.outcomes
            .iter()
            .filter(|(_, o)| o.status == status)
            .count()
    }
}

pub fn build(
    ws: &Workspace,
    kinds: &Kinds,
    opts: &BuildOptions,
    reporter_for: impl Fn(&Pipeline) -> Reporter,
) -> Result<BuildReport, EngineError> {
    let started = Instant::now();
    let (mut pipeline, overrides) = load_pipeline(ws, kinds, &opts.set)?;
    place_stages(&mut pipeline, kinds, opts.device.as_deref(), opts.local)?;
    let selected = select(&pipeline, &opts.targets)?;
    let mut force = HashSet::new();
    for name in &opts.force {
        force.insert(stage_index(&pipeline, name, "--force")?);
    }
    let remote = if opts.no_remote || opts.dry_run {
        None
    } else {
        super::remote_sync::open_remote(&pipeline)?
    };
    if opts.remote_only && remote.is_none() {
        return Err(EngineError::Usage(
            "no remote to pull from: add `[remote]` with `url = \"…\"` to the Stagefile, or set VLMFLOW_REMOTE"
                .into(),
        ));
    }
    let reporter = reporter_for(&pipeline);
    let db = ws.open_db()?;
    let cas = ws.open_cas()?;
    let _lock = if opts.dry_run {
        None
    } else {
        Some(lock_workspace(ws, &reporter, &db, &cas)?)
    };
    interrupt::install();
    let argv: Vec<String> = std::env::args().collect();
    let host = super::host();
    let build_id = if opts.dry_run {
        0
    } else {
        db.begin_build(&argv, &host)?
    };
    let executor = Executor {
        ws,
        kinds,
        cas: &cas,
        pipeline: &pipeline,
        reporter: &reporter,
        slurm: &Slurm::from_env(),
        build_id,
        host,
        overrides: pipeline
            .stages
            .iter()
            .map(|s| overrides.get(&s.name).cloned())
            .collect(),
        force,
        dry_run: opts.dry_run,
        remote: remote.as_ref(),
        remote_only: opts.remote_only,
        detached: None,
    };
    let schedule = Schedule {
        pipeline: &pipeline,
        selected: &selected,
        jobs: opts.jobs.max(1),
        keep_going: opts.keep_going,
    };
    let outcomes = schedule.run(
        // Each worker has its own connection: a SQLite connection is not shared across threads.
        || ws.open_db(),
        |db, index, upstream| match db {
            Ok(db) => executor.execute(db, index, upstream),
            Err(e) => Outcome::not_built(
                Problem::Failed(format!("could not open the database: {e}")),
                None,
                vec![],
            ),
        },
        |index, outcome| reporter.stage_line(&pipeline.stages[index].name, outcome),
    );
    let report = BuildReport {
        outcomes: outcomes
            .into_iter()
            .enumerate()
            .filter_map(|(i, o)| o.map(|o| (pipeline.stages[i].name.clone(), o)))
            .collect(),
    };
    if !opts.dry_run {
        let status = if interrupt::requested() {
            BuildStatus::Interrupted
        } else if report.failed() {
            BuildStatus::Failed
        } else {
            BuildStatus::Ok
        };
        db.finish_build(build_id, status)?;
        reporter.note(&summary(&report, started.elapsed().as_secs_f64()));
    }
    Ok(report)
}

/// Take the workspace lock (waiting for another build to let it go), then clean up what a process
/// that died while holding it left.
pub(crate) fn lock_workspace(
    ws: &Workspace,
    reporter: &Reporter,
    db: &vlmflow_store::db::Db,
    cas: &vlmflow_store::Cas,
) -> Result<WorkspaceLock, EngineError> {
    let path = ws.lock_path();
    let lock = WorkspaceLock::acquire(&path, |holder| {
        reporter.note(&format!("waiting for the workspace lock, held by {holder}"));
    })
    .map_err(vlmflow_store::io_err(&path))?;
    // We hold the lock, so anything 'running' or left in cache/tmp is from a process that died.
    cas.clean_temp()?;
    super::index_recovery::recover_interrupted(db, cas)?;
    Ok(lock)
}

/// `--device` and `--local`: where the pipeline's stages run.
pub(crate) fn place_stages(
    pipeline: &mut Pipeline,
    kinds: &Kinds,
    device: Option<&str>,
    local: bool,
) -> Result<(), EngineError> {
    if let Some(device) = device {
        move_to_device(pipeline, kinds, device)?;
    }
    if local {
        for stage in &mut pipeline.stages {
            stage.runs_on = RunsOn::Local;
        }
    }
    Ok(())
}

fn summary(report: &BuildReport, seconds: f64) -> String {
    let parts: Vec<String> = [
        Status::Ran,
        Status::Restored,
        Status::Fresh,
        Status::Failed,
        Status::Interrupted,
        Status::Skipped,
    ]
    .into_iter()
    .filter_map(|s| match report.count(s) {
        0 => None,
        n => Some(format!("{n} {}", s.word())),
    })
    .collect();
    let n = report.outcomes.len();
    format!(
        "{n} stage{}: {} in {}",
        if n == 1 { "" } else { "s" },
        parts.join(", "),
        format_duration(seconds)
    )
}
