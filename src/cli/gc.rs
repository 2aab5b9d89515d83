//! `vlmflow gc`.

use vlmflow_engine::build::EngineError;
use vlmflow_engine::gc::gc;
use vlmflow_engine::workspace::Workspace;

#[derive(clap::Args)]
pub struct Args {
    /// Per stage, keep the artifacts of its last N successful runs (besides what the workspace holds).
    #[arg(long, default_value_t = 3, value_name = "N")]
    keep_last: usize,
    /// Keep the artifacts of every trial of the last N sweeps.
    #[arg(long, default_value_t = 1, value_name = "N")]
    keep_sweeps: usize,
    /// Say what would be deleted; delete nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
    #[arg(long)]
    json: bool,
}

pub fn run(ws: &Workspace, args: Args) -> Result<i32, EngineError> {
    let report = gc(
        ws,
        args.keep_last,
        args.keep_sweeps,
        args.dry_run,
        |holder| {
            eprintln!("waiting for the workspace lock, held by {holder}");
        },
    )?;
    if args.json {
        super::print_json(&report);
    } else {
        let verb = if args.dry_run { "would free" } else { "freed" };
        println!(
            "{verb} {} ({} objects, {} artifacts); kept {} artifacts",
            human_bytes(report.bytes_freed),
            report.objects_deleted,
            report.artifacts_swept,
            report.artifacts_kept
        );
    }
    Ok(0)
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
