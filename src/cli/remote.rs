//! `vlmflow push` and `vlmflow pull`: the shared cache.

use vlmflow_engine::build::{BuildOptions, EngineError, build};
use vlmflow_engine::remote_sync::push;
use vlmflow_engine::report::Reporter;
use vlmflow_engine::workspace::Workspace;

#[derive(clap::Args)]
pub struct PushArgs {
    /// Stages whose current runs to send (with what they need); all stages when none is given.
    targets: Vec<String>,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct PullArgs {
    /// Stages to fetch (with what they need); all stages when none is given.
    targets: Vec<String>,
    /// Fetch up to N independent stages at once.
    #[arg(short, long, default_value_t = 1, value_name = "N")]
    jobs: usize,
}

pub fn run_push(ws: &Workspace, args: PushArgs) -> Result<i32, EngineError> {
    let reporter = Reporter::new("push".len());
    let progress = reporter.start_stage("push");
    let report = push(ws, &vlmflow_stages::kinds(), &args.targets, &progress)?;
    drop(progress);
    if args.json {
        super::print_json(&report);
        return Ok(0);
    }
    let packs = match report.packs_sent {
        0 => String::new(),
        1 => ", some in 1 pack".to_string(),
        n => format!(", some in {n} packs"),
    };
    println!(
        "pushed {} stage{} to {}: {} objects sent ({}{packs}), {} already there",
        report.stages.len(),
        if report.stages.len() == 1 { "" } else { "s" },
        report.remote,
        report.objects_sent,
        super::gc::human_bytes(report.bytes_sent),
        report.objects_already_there
    );
    for (stage, why) in &report.skipped {
        println!("skipped {stage}: {why}");
    }
    Ok(0)
}

/// A build that restores from the local cache or fetches from the remote, and runs nothing.
pub fn run_pull(ws: &Workspace, args: PullArgs) -> Result<i32, EngineError> {
    let opts = BuildOptions {
        targets: args.targets,
        jobs: args.jobs,
        remote_only: true,
        ..Default::default()
    };
    super::build::finish(build(
        ws,
        &vlmflow_stages::kinds(),
        &opts,
        super::build::reporter,
    )?)
}
