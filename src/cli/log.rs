//! `vlmflow log [STAGE]`: run history, newest first.

use vlmflow_engine::build::EngineError;
use vlmflow_engine::history;
use vlmflow_engine::workspace::Workspace;
use vlmflow_engine::{format_duration, format_time};

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

pub fn run(ws: &Workspace, args: Args) -> Result<i32, EngineError> {
    let entries = history::log(ws, args.stage.as_deref(), args.limit, args.verbose)?;
    if entries.is_empty() {
        eprintln!(
            "no runs recorded{}",
            args.stage
                .map(|s| format!(" for stage `{s}`"))
                .unwrap_or_default()
        );
        return Ok(0);
    }
    if args.json {
        super::print_json(&entries);
        return Ok(0);
    }
    for e in &entries {
        let time = e.seconds.map(format_duration).unwrap_or_else(|| "-".into());
        let from = match (e.restored_from, &e.origin) {
            (Some(r), Some(url)) => format!(" from run {r} (from remote {url})"),
            (Some(r), None) => format!(" from run {r}"),
            (None, _) => String::new(),
        };
        let job = e
            .job
            .as_ref()
            .map(|j| format!(" (Slurm job {j})"))
            .unwrap_or_default();
        println!(
            "run {}  {}  {}{from}  {}  {time}  {}{job} · {}",
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

pub fn short_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e12 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
}
