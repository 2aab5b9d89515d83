//! `vlmflow sweep` and `vlmflow sweeps`: try many settings, then read the results best first.

use serde_json::{Value, json};

use vlmflow_engine::build::EngineError;
use vlmflow_engine::sweep::{BuildStatus, SweepOptions, SweepReport, sweep};
use vlmflow_engine::sweep_results::{Ranking, recorded};
use vlmflow_engine::sweep_space::value_text;
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
    show(
        &mut report,
        args.sort.as_deref(),
        &args.set,
        args.json,
        args.dry_run,
    );
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
            let mut rows = Vec::new();
            for s in &sweeps {
                let axes: Vec<String> = serde_json::from_str(&s.axes).unwrap_or_default();
                let targets: Vec<String> = serde_json::from_str(&s.targets).unwrap_or_default();
                rows.push(vec![
                    s.name.clone(),
                    db.trials(s.id)?.len().to_string(),
                    targets.join(","),
                    axes.join(" "),
                ]);
            }
            super::table::print(&["sweep", "trials", "targets", "varied"], &rows);
        }
        return Ok(0);
    };
    let Some(mut report) = recorded(&db, &name)? else {
        return Err(EngineError::Usage(format!(
            "no sweep named `{name}`: `vlmflow sweeps` lists them"
        )));
    };
    show(&mut report, args.sort.as_deref(), &[], args.json, false);
    Ok(0)
}

/// The trials best first: their values, the targets' metrics, how they ended; then how to get the
/// best one back.
fn show(
    report: &mut SweepReport,
    sort: Option<&str>,
    set: &[String],
    as_json: bool,
    dry_run: bool,
) {
    let ranking = match sort {
        Some(metric) => Some(Ranking::by(metric)),
        None => Ranking::default_for(report),
    };
    if let Some(ranking) = &ranking {
        report.rank(ranking);
    }
    if as_json {
        super::print_json(&to_json(report, ranking.as_ref(), dry_run));
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
                (status, Some(problem)) => format!("{}: {problem}", status_text(*status, dry_run)),
                (status, None) => status_text(*status, dry_run).to_string(),
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
        for arg in best.trial.set_args() {
            command.push_str(&format!(" --set {}", shell_word(&arg)));
        }
        println!("put trial {} in the workspace: {command}", best.number);
    }
}

fn to_json(report: &SweepReport, ranking: Option<&Ranking>, dry_run: bool) -> Value {
    json!({
        "name": report.name,
        "targets": report.targets,
        "stage_builds": report.builds,
        "sorted_by": ranking.map(|r| json!({ "metric": r.metric, "lower_is_better": r.lower_is_better })),
        "trials": report.trials.iter().map(|t| json!({
            "trial": t.number,
            "params": t.trial.values.iter().cloned().collect::<serde_json::Map<_, _>>(),
            "status": status_text(t.status, dry_run),
            "error": t.problem,
            "runs": t.runs,
            "metrics": t.metrics,
        })).collect::<Vec<_>>(),
    })
}

/// A trial's status as the database has it, or `would build` in a dry run.
fn status_text(status: BuildStatus, dry_run: bool) -> &'static str {
    if dry_run {
        "would build"
    } else {
        status.as_str()
    }
}

/// A value as a person reads it: as `--set` takes it, strings without their quotes.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => value_text(other),
    }
}

/// `word` as a shell reads it back: in single quotes unless every character is plain.
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "._-+=:/,".contains(c);
    if word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::shell_word;

    /// What `sh` makes of a word: the argument the restore command hands vlmflow.
    fn through_sh(word: &str) -> String {
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("printf %s {word}")])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn set_args_reach_vlmflow_as_written() {
        for arg in [
            "clip-train.lr=0.0005",
            r#"s.name="a b""#,
            "s.list=[1, 2]",
            r#"s.q="it's""#,
        ] {
            assert_eq!(through_sh(&shell_word(arg)), arg);
        }
        assert_eq!(shell_word("clip-train.lr=0.0005"), "clip-train.lr=0.0005");
    }
}
