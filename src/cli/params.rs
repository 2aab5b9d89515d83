//! `vlmflow params diff A B`: which params differ between two runs.

use vlmflow_engine::build::EngineError;
use vlmflow_engine::compare;
use vlmflow_engine::workspace::Workspace;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: ParamsCommand,
}

#[derive(clap::Subcommand)]
enum ParamsCommand {
    /// Params that differ between runs A and B (run ids, stage names or STAGE~N).
    Diff {
        a: String,
        b: String,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(ws: &Workspace, args: Args) -> Result<i32, EngineError> {
    let ParamsCommand::Diff { a, b, json } = args.command;
    let compare::ParamsDiff {
        a: ra,
        b: rb,
        changes,
    } = compare::params_diff(ws, &a, &b)?;
    if json {
        super::print_json(&serde_json::json!({"a": ra.id, "b": rb.id, "changes": changes}));
    } else if changes.is_empty() {
        println!(
            "runs {} ({}) and {} ({}) have the same params",
            ra.id, ra.stage, rb.id, rb.stage
        );
    } else {
        let show = |v: &Option<serde_json::Value>| {
            v.as_ref()
                .map_or_else(|| "(unset)".into(), |v| v.to_string())
        };
        let rows: Vec<Vec<String>> = changes
            .iter()
            .map(|c| vec![c.name.clone(), show(&c.old), show(&c.new)])
            .collect();
        let (ha, hb) = (
            format!("run {} ({})", ra.id, ra.stage),
            format!("run {} ({})", rb.id, rb.stage),
        );
        super::table::print(&["param", &ha, &hb], &rows);
    }
    Ok(0)
}
