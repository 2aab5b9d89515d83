//! `vlmflow build`.

use vlmflow_engine::build::{BuildOptions, EngineError, build};
use vlmflow_engine::outcome::Status;
use vlmflow_engine::report::Reporter;
use vlmflow_engine::workspace::Workspace;

#[derive(clap::Args)]
pub struct Args {
    /// Stages to build (with everything they need); all stages when none is given.
    targets: Vec<String>,
    /// Run up to N independent stages at once.
    #[arg(short, long, default_value_t = 1, value_name = "N")]
    jobs: usize,
    /// Override a param for this build: STAGE.PARAM=VALUE (VALUE is TOML: 2e-3, true, "text").
    #[arg(long = "set", value_name = "STAGE.PARAM=VALUE")]
    set: Vec<String>,
    /// Run every stage that computes on a device on this one: cpu, cuda or cuda:N.
    #[arg(long, value_name = "DEVICE")]
    device: Option<String>,
    /// Run STAGE even if it is fresh or could be restored.
    #[arg(long, value_name = "STAGE")]
    force: Vec<String>,
    /// Print what would run, be restored or stay fresh, and why; change nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// After a failure, go on with the stages that do not depend on it.
    #[arg(short, long)]
    keep_going: bool,
    /// Do not look stages up in the remote cache before running them.
    #[arg(long)]
    no_remote: bool,
    /// Run every stage on this machine, those the Stagefile sends to Slurm too.
    #[arg(long)]
    local: bool,
}

pub fn run(ws: &Workspace, args: Args) -> Result<i32, EngineError> {
    let opts = BuildOptions {
        targets: args.targets,
        jobs: args.jobs,
        set: args.set,
        device: args.device,
        force: args.force,
        dry_run: args.dry_run,
        keep_going: args.keep_going,
        no_remote: args.no_remote,
        remote_only: false,
        local: args.local,
    };
    finish(build(ws, &vlmflow_stages::kinds(), &opts, reporter)?)
}

/// A reporter whose stage names line up.
pub fn reporter(pipeline: &vlmflow_engine::stagefile::Pipeline) -> Reporter {
    Reporter::new(
        pipeline
            .stages
            .iter()
            .map(|s| s.name.len())
            .max()
            .unwrap_or(0),
    )
}

/// The exit code of a build: 130 when interrupted, 1 when a stage failed.
pub fn finish(report: vlmflow_engine::build::BuildReport) -> Result<i32, EngineError> {
    Ok(
        if vlmflow_engine::interrupt::requested() || report.count(Status::Interrupted) > 0 {
            130
        } else if report.failed() {
            1
        } else {
            0
        },
    )
}
