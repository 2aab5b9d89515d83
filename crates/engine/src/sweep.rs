//! `vlmflow sweep`: build the targets once per trial of a sweep's space (`sweep_space`), off the
//! workspace (`detached`): every trial's runs land in the run-cache, so `vlmflow build --set …`
//! later restores the chosen one, while the workspace's outs and state stay as they were. The
//! trials are one pipeline (`sweep_dag`), and the sweep is recorded as a named group of runs.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::Value;

use super::build::{EngineError, load_pipeline, lock_workspace, place_stages, select, stage_index};
use super::detached::Detached;
use super::execute::Executor;
use super::format_duration;
use super::interrupt;
use super::outcome::{Outcome, Problem, Status};
use super::plan::UpstreamState;
use super::report::Reporter;
use super::scheduler::Schedule;
use super::slurm::Slurm;
use super::stagefile::Pipeline;
use super::sweep_dag::{SweepDag, combine};
use super::sweep_space::{Axis, Trial, trials};
use super::workspace::Workspace;
use crate::kind::Kinds;
use vlmflow_store::db::Db;
pub use vlmflow_store::run_status::BuildStatus;

#[derive(Clone, Debug, Default)]
pub struct SweepOptions {
    /// `stage.param=…` specs.
    pub axes: Vec<String>,
    /// Draws of a random search.
    pub trials: Option<usize>,
    pub seed: u64,
    pub name: Option<String>,
    /// The stages each trial builds; by default the last stages the varied ones lead to.
    pub targets: Vec<String>,
    pub jobs: usize,
    /// Overrides every trial shares.
    pub set: Vec<String>,
    pub device: Option<String>,
    pub local: bool,
    pub no_remote: bool,
    /// List the trials; build nothing.
    pub dry_run: bool,
}

pub struct SweepReport {
    pub name: String,
    pub targets: Vec<String>,
    pub trials: Vec<TrialReport>,
    /// Stage builds the trials need after sharing what they have in common (not known of a sweep
    /// read back from the database).
    pub builds: Option<usize>,
}

pub struct TrialReport {
    /// 1-based.
    pub number: usize,
    pub trial: Trial,
    pub status: BuildStatus,
    /// The first stage that did not build, and why.
    pub problem: Option<String>,
    /// Stage → the run that made its artifact.
    pub runs: BTreeMap<String, i64>,
    /// The targets' final metrics: `metric`, or `stage.metric` with several targets.
    pub metrics: BTreeMap<String, f64>,
}

pub fn sweep(
    ws: &Workspace,
    kinds: &Kinds,
    opts: &SweepOptions,
    reporter_for: impl Fn(&Pipeline) -> Reporter,
) -> Result<SweepReport, EngineError> {
    let started = Instant::now();
    let plan = plan(ws, kinds, opts)?;
    let db = ws.open_db()?;
    let name = match &opts.name {
        Some(name) => name.clone(),
        None => default_name(&db)?,
    };
    if db.sweep(&name)?.is_some() {
        return Err(EngineError::Usage(format!(
            "a sweep named `{name}` exists: pick another --name (`vlmflow sweeps` lists them)"
        )));
    }
    let mut report = SweepReport {
        name,
        targets: plan.targets.clone(),
        trials: Vec::new(),
        builds: Some(plan.dag.pipeline.stages.len()),
    };
    if opts.dry_run {
        report.trials = (plan.trials.iter().cloned().enumerate())
            .map(|(i, trial)| TrialReport::new(i, trial))
            .collect();
        return Ok(report);
    }

    let reporter = reporter_for(&plan.dag.pipeline);
    let cas = ws.open_cas()?;
    let remote = if opts.no_remote {
        None
    } else {
        super::remote_sync::open_remote(plan.first())?
    };
    let _lock = lock_workspace(ws, &reporter, &db, &cas)?;
    interrupt::install();
    let argv: Vec<String> = std::env::args().collect();
    let host = super::host();
    let build_id = db.begin_build(&argv, &host)?;
    let sweep_id = db
        .insert_sweep(
            &report.name,
            build_id,
            &serde_json::to_string(&plan.targets).unwrap_or_default(),
            &serde_json::to_string(&opts.axes).unwrap_or_default(),
        )?
        .ok_or_else(|| EngineError::Usage(format!("a sweep named `{}` exists", report.name)))?;
    for (i, trial) in plan.trials.iter().enumerate() {
        db.insert_trial(sweep_id, i as i64 + 1, &assignment_json(trial))?;
    }
    reporter.note(&format!(
        "sweep {}: {} trials, {} stage builds after sharing what they have in common",
        report.name,
        plan.trials.len(),
        plan.dag.pipeline.stages.len()
    ));
    // Each stage copy places its outs in a folder of its own under the sweep's scratch.
    let scratch = cas.temp_dir()?;
    let copies = plan.dag.pipeline.stages.len();
    let detached = Detached::new(
        (0..copies).map(|c| scratch.join(c.to_string())).collect(),
        (0..copies).map(|c| plan.dag.label(c)).collect(),
    );
    let executor = Executor {
        ws,
        kinds,
        cas: &cas,
        pipeline: &plan.dag.pipeline,
        reporter: &reporter,
        slurm: &Slurm::from_env(),
        build_id,
        host,
        overrides: plan.dag.overrides.clone(),
        force: Default::default(),
        dry_run: false,
        remote: remote.as_ref(),
        remote_only: false,
        detached: Some(&detached),
    };
    let TrialsBuilt {
        db,
        outcomes,
        recorded,
    } = run_trials(&plan, &executor, opts.jobs, db, sweep_id)?;
    let _ = std::fs::remove_dir_all(&scratch);

    for (i, trial) in plan.trials.iter().cloned().enumerate() {
        let mut r = TrialReport::new(i, trial);
        r.settle(&plan.dag, &outcomes, plan.first());
        if !recorded[i] {
            record_trial(&db, sweep_id, &r)?;
        }
        r.metrics = target_metrics(&db, &plan.targets, &r.runs)?;
        report.trials.push(r);
    }
    let ended = |status| report.trials.iter().filter(|r| r.status == status).count();
    let status = if ended(BuildStatus::Interrupted) > 0 {
        BuildStatus::Interrupted
    } else if ended(BuildStatus::Failed) > 0 {
        BuildStatus::Failed
    } else {
        BuildStatus::Ok
    };
    db.finish_build(build_id, status)?;
    reporter.note(&format!(
        "sweep {}: {} of {} trials built in {}",
        report.name,
        ended(BuildStatus::Ok),
        report.trials.len(),
        format_duration(started.elapsed().as_secs_f64())
    ));
    Ok(report)
}

/// What a sweep builds: its trials, each one's pipeline (with its overrides per stage), the
/// targets, and the trials joined into one pipeline.
struct SweepPlan {
    trials: Vec<Trial>,
    pipelines: Vec<(Pipeline, Vec<Option<Value>>)>,
    targets: Vec<String>,
    dag: SweepDag,
}

impl SweepPlan {
    /// The first trial's pipeline: every trial's has the same stages, only params differ.
    fn first(&self) -> &Pipeline {
        &self.pipelines[0].0
    }
}

fn plan(ws: &Workspace, kinds: &Kinds, opts: &SweepOptions) -> Result<SweepPlan, EngineError> {
    let axes: Vec<Axis> = opts
        .axes
        .iter()
        .map(|a| Axis::parse(a))
        .collect::<Result<_, _>>()
        .map_err(EngineError::Usage)?;
    let trials = trials(&axes, opts.trials, opts.seed).map_err(EngineError::Usage)?;
    // Every trial's pipeline first: a param that does not exist fails before anything runs.
    let mut pipelines = Vec::new();
    for trial in &trials {
        let mut set = opts.set.clone();
        set.extend(trial.set_args());
        let (mut pipeline, overrides) = load_pipeline(ws, kinds, &set)?;
        place_stages(&mut pipeline, kinds, opts.device.as_deref(), opts.local)?;
        let overrides = pipeline
            .stages
            .iter()
            .map(|s| overrides.get(&s.name).cloned())
            .collect();
        pipelines.push((pipeline, overrides));
    }
    let first = &pipelines[0].0;
    let targets = if opts.targets.is_empty() {
        default_targets(first, &axes)
    } else {
        for t in &opts.targets {
            stage_index(first, t, "--target")?;
        }
        opts.targets.clone()
    };
    let selected = select(first, &targets)?;
    let dag = combine(&pipelines, &selected);
    Ok(SweepPlan {
        trials,
        pipelines,
        targets,
        dag,
    })
}

/// Build the plan's pipeline off the workspace, recording each trial as its last stage ends (so
/// `sweeps` and the UI see it while the others still build).
fn run_trials(
    plan: &SweepPlan,
    executor: &Executor<'_>,
    jobs: usize,
    db: Db,
    sweep_id: i64,
) -> Result<TrialsBuilt, EngineError> {
    let dag = &plan.dag;
    let copies = dag.pipeline.stages.len();
    let everything = vec![true; copies];
    let schedule = Schedule {
        pipeline: &dag.pipeline,
        selected: &everything,
        jobs: jobs.max(1),
        // A trial that fails leaves the others to go on.
        keep_going: true,
    };
    let tally = Mutex::new(Tally {
        left: dag.copies.iter().map(Vec::len).collect(),
        outcomes: vec![None; copies],
        recorded: vec![false; plan.trials.len()],
    });
    let db = Mutex::new(db);
    let outcomes = schedule.run(
        || executor.ws.open_db(),
        |db, index, upstream| match db {
            Ok(db) => executor.execute(db, index, upstream),
            Err(e) => Outcome::not_built(
                Problem::Failed(format!("could not open the database: {e}")),
                None,
                vec![],
            ),
        },
        |index, outcome| {
            let label = executor.detached.map_or("", |d| d.label(index));
            let shown = format!("{label}{}", dag.pipeline.stages[index].name);
            executor.reporter.stage_line(&shown, outcome);
            let mut tally = tally.lock().unwrap_or_else(|e| e.into_inner());
            tally.outcomes[index] = Some(outcome.clone());
            for &t in &dag.members[index] {
                tally.left[t] -= 1;
                if tally.left[t] == 0 {
                    let mut report = TrialReport::new(t, plan.trials[t].clone());
                    report.settle(dag, &tally.outcomes, plan.first());
                    let db = db.lock().unwrap_or_else(|e| e.into_inner());
                    tally.recorded[t] = record_trial(&db, sweep_id, &report).is_ok();
                }
            }
        },
    );
    let db = db.into_inner().unwrap_or_else(|e| e.into_inner());
    let tally = tally.into_inner().unwrap_or_else(|e| e.into_inner());
    Ok(TrialsBuilt {
        db,
        outcomes,
        recorded: tally.recorded,
    })
}

/// What `run_trials` hands back: the database, every stage copy's outcome, and which trials the
/// database has the end of.
struct TrialsBuilt {
    db: Db,
    outcomes: Vec<Option<Outcome>>,
    recorded: Vec<bool>,
}

impl TrialReport {
    fn new(index: usize, trial: Trial) -> TrialReport {
        TrialReport {
            number: index + 1,
            trial,
            status: BuildStatus::Running,
            problem: None,
            runs: BTreeMap::new(),
            metrics: BTreeMap::new(),
        }
    }

    /// Its status, problem and runs, from the outcomes of its copies.
    fn settle(&mut self, dag: &SweepDag, outcomes: &[Option<Outcome>], pipeline: &Pipeline) {
        let mut status = BuildStatus::Ok;
        for &(stage, copy) in &dag.copies[self.number - 1] {
            let name = &pipeline.stages[stage].name;
            let Some(outcome) = &outcomes[copy] else {
                status = BuildStatus::Interrupted;
                continue;
            };
            if let UpstreamState::Ready {
                producer: Some(run),
                ..
            } = outcome.upstream
            {
                self.runs.insert(name.clone(), run);
            }
            // A stage stopped by Ctrl-C, or one that never started because of it.
            let interrupted = outcome.status == Status::Interrupted
                || matches!(outcome.problem, Some(Problem::BuildInterrupted));
            if interrupted {
                status = BuildStatus::Interrupted;
            } else if outcome.status.is_failure() && status == BuildStatus::Ok {
                status = BuildStatus::Failed;
            }
            if self.problem.is_none()
                && outcome.status.is_failure()
                && let Some(problem) = &outcome.problem
            {
                self.problem = Some(format!("{name}: {problem}"));
            }
        }
        self.status = status;
    }
}

/// The outcomes so far, and per trial how many of its stages have yet to end.
struct Tally {
    left: Vec<usize>,
    outcomes: Vec<Option<Outcome>>,
    /// The trials whose end the database has.
    recorded: Vec<bool>,
}

/// A trial's end in the database: its status, why it failed, the run behind each stage.
fn record_trial(db: &Db, sweep_id: i64, report: &TrialReport) -> Result<(), EngineError> {
    let runs: Vec<(String, i64)> = report.runs.iter().map(|(s, id)| (s.clone(), *id)).collect();
    let trial = report.number as i64;
    let problem = report.problem.as_deref();
    Ok(db.finish_trial(sweep_id, trial, report.status, problem, &runs)?)
}

/// `sweep-N`, the first N no sweep is named after.
fn default_name(db: &Db) -> Result<String, EngineError> {
    let mut n = db.next_sweep_number()?;
    while db.sweep(&format!("sweep-{n}"))?.is_some() {
        n += 1;
    }
    Ok(format!("sweep-{n}"))
}

/// The JSON object the database keeps for a trial: `"stage.param"` → value.
fn assignment_json(trial: &Trial) -> String {
    let object: serde_json::Map<String, Value> = trial.values.iter().cloned().collect();
    Value::Object(object).to_string()
}

/// Without `--target`: the stages the varied ones lead to that lead nowhere further among them.
fn default_targets(pipeline: &Pipeline, axes: &[Axis]) -> Vec<String> {
    let n = pipeline.stages.len();
    let mut affected = vec![false; n];
    for (i, stage) in pipeline.stages.iter().enumerate() {
        affected[i] = axes.iter().any(|a| a.stage == stage.name)
            || stage.needs.iter().any(|&need| affected[need]);
    }
    let needed_by_affected: Vec<bool> = (0..n)
        .map(|i| {
            pipeline
                .stages
                .iter()
                .enumerate()
                .any(|(j, s)| affected[j] && s.needs.contains(&i))
        })
        .collect();
    (0..n)
        .filter(|&i| affected[i] && !needed_by_affected[i])
        .map(|i| pipeline.stages[i].name.clone())
        .collect()
}

/// The targets' final metrics, named by metric (by `stage.metric` with several targets).
pub(crate) fn target_metrics(
    db: &Db,
    targets: &[String],
    runs: &BTreeMap<String, i64>,
) -> Result<BTreeMap<String, f64>, EngineError> {
    let mut metrics = BTreeMap::new();
    for target in targets {
        let Some(&run) = runs.get(target) else {
            continue;
        };
        for (metric, value) in db.final_metrics(run)? {
            let name = match targets.len() {
                1 => metric,
                _ => format!("{target}.{metric}"),
            };
            metrics.insert(name, value);
        }
    }
    Ok(metrics)
}
