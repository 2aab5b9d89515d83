//! `vlmflow log [STAGE]`: run history, newest first.

use serde_json::Value;

use vlmflow_engine::build::EngineError;
use vlmflow_engine::workspace::Workspace;
use vlmflow_engine::{format_duration, format_time, params};
use vlmflow_store::db::{Db, RunRow};
use vlmflow_store::run_status::RunStatus;

#[derive(clap::Args)]
pub struct Args {
    /// Only this stage's runs.
    stage: Option<String>,
    /// How many runs to show.
    #[arg(short = 'n', long, default_value_t = 20)]
    limit: usize,
    /// Also print each run's captured log (stdout and stderr of commands).
    #[arg(long)]
    verbose: bool,
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct Entry {
    run: i64,
    stage: String,
    status: RunStatus,
    started_at: f64,
    seconds: Option<f64>,
    host: String,
    device: String,
    key: String,
    artifact: Option<String>,
    restored_from: Option<i64>,
    /// Params that differ from the stage's previous run: name → [old, new].
    changed_params: Vec<params::ParamChange>,
    overrides: Value,
    metrics: Vec<(String, f64)>,
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    log: Option<String>,
}

pub fn run(ws: &Workspace, args: Args) -> Result<i32, EngineError> {
    let db = Db::open_read_only(&ws.db_path())?;
    let cas = ws.open_cas()?;
    let runs = db.runs(args.stage.as_deref(), args.limit)?;
    if runs.is_empty() {
        eprintln!(
            "no runs recorded{}",
            args.stage
                .map(|s| format!(" for stage `{s}`"))
                .unwrap_or_default()
        );
        return Ok(0);
    }
    let mut entries = Vec::new();
    for run in &runs {
        entries.push(entry(&db, &cas, run, args.verbose)?);
    }
    if args.json {
        super::print_json(&entries);
        return Ok(0);
    }
    for e in &entries {
        let time = e.seconds.map(format_duration).unwrap_or_else(|| "-".into());
        let from = e
            .restored_from
            .map(|r| format!(" from run {r}"))
            .unwrap_or_default();
        println!(
            "run {}  {}  {}{from}  {}  {time}  {} · {}",
            e.run,
            e.stage,
            e.status,
            format_time(e.started_at),
            e.host,
            e.device
        );
        for change in &e.changed_params {
            println!("    params.{change}");
        }
        if !e.metrics.is_empty() {
            let shown: Vec<String> = e
                .metrics
                .iter()
                .map(|(n, v)| format!("{n}={}", short_number(*v)))
                .collect();
            println!("    metrics {}", shown.join(" "));
        }
        if let Some(err) = &e.error {
            println!("    error: {err}");
        }
        if let Some(log) = &e.log {
            for line in log.lines() {
                println!("    | {line}");
            }
        }
    }
    Ok(0)
}

fn entry(
    db: &Db,
    cas: &vlmflow_store::Cas,
    run: &RunRow,
    verbose: bool,
) -> Result<Entry, EngineError> {
    let changed_params = match db.previous_run(run)? {
        Some(prev) => params::diff(&parse(&prev.params), &parse(&run.params)),
        None => vec![],
    };
    let metrics_run = run.source_run.unwrap_or(run.id);
    let log = if verbose {
        // A restore ran nothing: show the log of the run that produced the artifact.
        let logged = match run.source_run {
            Some(id) => db.run(id)?.unwrap_or_else(|| run.clone()),
            None => run.clone(),
        };
        let text = match logged.log.as_deref().and_then(|d| d.parse().ok()) {
            Some(digest) => match cas.read_bytes(&digest) {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(_) => "(log deleted by `vlmflow gc`)".into(),
            },
            None => "(no log)".into(),
        };
        Some(if logged.id == run.id {
            text
        } else {
            format!("(log of run {}, which produced it)\n{text}", logged.id)
        })
    } else {
        None
    };
    Ok(Entry {
        run: run.id,
        stage: run.stage.clone(),
        status: run.status,
        started_at: run.started_at,
        seconds: run.finished_at.map(|f| f - run.started_at),
        host: run.host.clone(),
        device: run.device.clone(),
        key: run.key.clone(),
        artifact: run.artifact.clone(),
        restored_from: run.source_run,
        changed_params,
        overrides: parse(&run.overrides),
        metrics: db.final_metrics(metrics_run)?,
        error: run.error.clone(),
        log,
    })
}

pub fn parse(json: &str) -> Value {
    serde_json::from_str(json).unwrap_or(Value::Null)
}

pub fn short_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e12 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
}
