//! `vlmflow sweep` and `vlmflow sweeps`: try many settings, then read the results best first.

use serde_json::{Value, json};

use vlmflow_engine::build::EngineError;
use vlmflow_engine::sweep::{BuildStatus, SweepOptions, SweepReport, sweep};
use vlmflow_engine::sweep_results::{Ranking, recorded};
use vlmflow_engine::workspace::Workspace;

#[derive(clap::Args)]
pub struct Args {
    /// What to vary: STAGE.PARAM=V1,V2,… (every combination is tried), or
    /// STAGE.PARAM=loguniform(LO,HI) / uniform(LO,HI) / randint(LO,HI) with --trials N.
    #[arg(required = true, value_name = "STAGE.PARAM=…")]
    axes: Vec<String>,
    /// The stage each trial builds (repeatable); by default the last stages the varied ones lead to.
    #[arg(long = "target", value_name = "STAGE")]
    targets: Vec<String>,
    /// Run up to N stages at once, across trials.
    #[arg(short, long, default_value_t = 1, value_name = "N")]
    jobs: usize,
    /// Draws of a random search.
    #[arg(long, value_name = "N")]
    trials: Option<usize>,
    /// Seed of a random search's draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The sweep's name (default sweep-N).
    #[arg(long)]
    name: Option<String>,
    /// Order the table by this metric of the targets (default: accuracy, exact_match, f1, score
    /// or loss, whichever they have); names with loss or error are lower-is-better.
    #[arg(long, value_name = "METRIC")]
    sort: Option<String>,
    /// Override a param in every trial: STAGE.PARAM=VALUE.
    #[arg(long = "set", value_name = "STAGE.PARAM=VALUE")]
    set: Vec<String>,
    /// Run every stage that computes on a device on this one: cpu, cuda or cuda:N.
    #[arg(long, value_name = "DEVICE")]
    device: Option<String>,
    /// Run every stage on this machine, those the Stagefile sends to Slurm too.
    #[arg(long)]
    local: bool,
    /// Do not look stages up in the remote cache before running them.
    #[arg(long)]
    no_remote: bool,
    /// List the trials; build nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct ListArgs {
    /// A sweep to show (all sweeps are listed when none is named).
    name: Option<String>,
    /// Order its trials by this metric.
    #[arg(long, value_name = "METRIC")]
    sort: Option<String>,
    #[arg(long)]
    json: bool,
}

pub fn run(ws: &Workspace, args: Args) -> Result<i32, EngineError> {
    let opts = SweepOptions {
        axes: args.axes,
        trials: args.trials,
        seed: args.seed,
        name: args.name,
        targets: args.targets,
        jobs: args.jobs,
        set: args.set.clone(),
        device: args.device,
        local: args.local,
        no_remote: args.no_remote,
        dry_run: args.dry_run,
    };
    let mut report = sweep(ws, &vlmflow_stages::kinds(), &opts, |pipeline| {
        super::build::reporter(pipeline)
    })?;
    show(&mut report, args.sort.as_deref(), &args.set, args.json);
    if args.dry_run
        && !args.json
        && let Some(builds) = report.builds
    {
        println!(
            "a dry run: {} trials would take {} stage builds (stages the trials share counted once); nothing was built",
            report.trials.len(),
            builds
        );
    }
    Ok(
        if vlmflow_engine::interrupt::requested()
            || report
                .trials
                .iter()
                .any(|t| t.status == BuildStatus::Interrupted)
        {
            130
        } else if report
            .trials
            .iter()
            .any(|t| t.status == BuildStatus::Failed)
        {
            1
        } else {
            0
        },
    )
}

pub fn run_list(ws: &Workspace, args: ListArgs) -> Result<i32, EngineError> {
    let db = ws.open_db()?;
    let Some(name) = args.name else {
        let sweeps = db.sweeps()?;
        if args.json {
            super::print_json(&sweeps);
        } else if sweeps.is_empty() {
            println!("no sweeps yet: `vlmflow sweep STAGE.PARAM=A,B` runs one");
        } else {
            let rows: Vec<Vec<String>> = sweeps
                .iter()
                .map(|s| {
                    let axes: Vec<String> = serde_json::from_str(&s.axes).unwrap_or_default();
                    let targets: Vec<String> = serde_json::from_str(&s.targets).unwrap_or_default();
                    let trials = db.trials(s.id).map(|t| t.len()).unwrap_or(0);
                    vec![
                        s.name.clone(),
                        trials.to_string(),
                        targets.join(","),
                        axes.join(" "),
                    ]
                })
                .collect();
            super::table::print(&["sweep", "trials", "targets", "varied"], &rows);
        }
        return Ok(0);
    };
    let Some(mut report) = recorded(&db, &name)? else {
        return Err(EngineError::Usage(format!(
            "no sweep named `{name}`: `vlmflow sweeps` lists them"
        )));
    };
    show(&mut report, args.sort.as_deref(), &[], args.json);
    Ok(0)
}

/// The trials best first: their values, the targets' metrics, how they ended; then how to get the
/// best one back.
fn show(report: &mut SweepReport, sort: Option<&str>, set: &[String], as_json: bool) {
    let ranking = match sort {
        Some(metric) => Some(Ranking::by(metric)),
        None => Ranking::default_for(report),
    };
    if let Some(ranking) = &ranking {
        report.rank(ranking);
    }
    if as_json {
        super::print_json(&to_json(report, ranking.as_ref()));
        return;
    }
    let Some(first) = report.trials.first() else {
        return;
    };
    let axes: Vec<&str> = first.trial.values.iter().map(|(n, _)| n.as_str()).collect();
    // The ranking metric first, then top-level ones before those of a group (`per_class.cat`), up
    // to a readable width.
    let mut metrics: Vec<String> = report
        .trials
        .iter()
        .flat_map(|t| t.metrics.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let ranked = ranking.as_ref().map(|r| r.metric.as_str());
    metrics.sort_by_key(|m| (Some(m.as_str()) != ranked, m.contains('.')));
    const SHOWN_METRICS: usize = 5;
    let hidden = metrics.len().saturating_sub(SHOWN_METRICS);
    metrics.truncate(SHOWN_METRICS);
    let mut headers: Vec<&str> = vec!["#"];
    headers.extend(&axes);
    headers.extend(metrics.iter().map(String::as_str));
    headers.extend(["status", "runs"]);
    let rows: Vec<Vec<String>> = report
        .trials
        .iter()
        .map(|t| {
            let mut row = vec![t.number.to_string()];
            row.extend(t.trial.values.iter().map(|(_, v)| plain(v)));
            row.extend(metrics.iter().map(|m| match t.metrics.get(m) {
                Some(v) if v.fract() == 0.0 && v.abs() < 1e12 => format!("{v:.0}"),
                Some(v) => format!("{v:.4}"),
                None => "-".into(),
            }));
            row.push(match (&t.status, &t.problem) {
                (_, Some(problem)) => format!("{}: {problem}", status_word(t.status)),
                (status, None) => status_word(*status).to_string(),
            });
            let runs: Vec<String> = report
                .targets
                .iter()
                .filter_map(|s| t.runs.get(s))
                .map(|id| id.to_string())
                .collect();
            row.push(runs.join(","));
            row
        })
        .collect();
    super::table::print(&headers, &rows);
    let mut notes = Vec::new();
    if let Some(r) = &ranking {
        let way = if r.lower_is_better { "lower" } else { "higher" };
        notes.push(format!("best first by {} ({way} is better)", r.metric));
    }
    if hidden > 0 {
        notes.push(format!("{hidden} more metrics with --json"));
    }
    if !notes.is_empty() {
        println!("{}", notes.join("; "));
    }
    if let Some(best) = report
        .trials
        .iter()
        .find(|t| t.status == BuildStatus::Ok && !t.runs.is_empty())
    {
        let mut command = format!("vlmflow build {}", report.targets.join(" "));
        for s in set {
            command.push_str(&format!(" --set {s}"));
        }
        for (name, value) in &best.trial.values {
            command.push_str(&format!(" --set {name}={}", shell_value(value)));
        }
        println!("put trial {} in the workspace: {command}", best.number);
    }
}

fn to_json(report: &SweepReport, ranking: Option<&Ranking>) -> Value {
    json!({
        "name": report.name,
        "targets": report.targets,
        "stage_builds": report.builds,
        "sorted_by": ranking.map(|r| json!({ "metric": r.metric, "lower_is_better": r.lower_is_better })),
        "trials": report.trials.iter().map(|t| json!({
            "trial": t.number,
            "params": t.trial.values.iter().cloned().collect::<serde_json::Map<_, _>>(),
            "status": status_word(t.status),
            "error": t.problem,
            "runs": t.runs,
            "metrics": t.metrics,
        })).collect::<Vec<_>>(),
    })
}

fn status_word(status: BuildStatus) -> &'static str {
    match status {
        BuildStatus::Ok => "ok",
        BuildStatus::Failed => "failed",
        BuildStatus::Interrupted => "interrupted",
        BuildStatus::Running => "not built",
    }
}

/// A value as a person reads it: strings without quotes.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_f64() => format!("{:?}", n.as_f64().unwrap_or_default()),
        other => other.to_string(),
    }
}

/// A value as `--set` reads it back typed into a shell: strings quoted for TOML, then the shell.
fn shell_value(value: &Value) -> String {
    match value {
        Value::String(s) => format!("'\"{s}\"'"),
        Value::Number(n) if n.is_f64() => format!("{:?}", n.as_f64().unwrap_or_default()),
        Value::Number(_) | Value::Bool(_) => value.to_string(),
        other => format!("'{other}'"),
    }
}
