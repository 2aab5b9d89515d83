//! `vlmflow status`: fresh / stale / never built, and why.

use vlmflow_engine::build::{BuildOptions, EngineError};
use vlmflow_engine::stage_states::{Action, State, stage_states};
use vlmflow_engine::workspace::Workspace;

#[derive(clap::Args)]
pub struct Args {
    /// Only these stages and what they need.
    targets: Vec<String>,
    /// Evaluate as if these overrides were given to `build`.
    #[arg(long = "set", value_name = "STAGE.PARAM=VALUE")]
    set: Vec<String>,
    /// Evaluate as if `build --device DEVICE` were run.
    #[arg(long, value_name = "DEVICE")]
    device: Option<String>,
    #[arg(long)]
    json: bool,
}

pub fn run(ws: &Workspace, args: Args) -> Result<i32, EngineError> {
    let opts = BuildOptions {
        targets: args.targets,
        set: args.set,
        device: args.device,
        ..Default::default()
    };
    let rows = stage_states(ws, &vlmflow_stages::kinds(), &opts)?;
    if args.json {
        super::print_json(&rows);
    } else {
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                let mut why = r.reasons.join("; ");
                if r.action == Action::Restore {
                    why = format!("{why} (a cached run will be restored)")
                        .trim_start()
                        .to_string();
                }
                vec![r.stage.clone(), r.state.as_str().to_string(), why]
            })
            .collect();
        super::table::print(&["stage", "state", "why"], &table);
    }
    Ok(if rows.iter().any(|r| r.state == State::Error) {
        1
    } else {
        0
    })
}
