//! `vlmflow status`: fresh / stale / never built, and why.

use vlmflow_engine::build::{BuildOptions, EngineError, build};
use vlmflow_engine::dirty::Reason;
use vlmflow_engine::outcome::Status;
use vlmflow_engine::report::Reporter;
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

#[derive(serde::Serialize)]
struct Row {
    stage: String,
    state: &'static str,
    /// What `build` would do: nothing, restore from the cache, run, or run if upstream changes.
    action: &'static str,
    reasons: Vec<String>,
}

pub fn run(ws: &Workspace, args: Args) -> Result<i32, EngineError> {
    let opts = BuildOptions {
        targets: args.targets,
        set: args.set,
        device: args.device,
        dry_run: true,
        jobs: 1,
        ..Default::default()
    };
    let report = build(ws, &vlmflow_stages::kinds(), &opts, |_| Reporter::quiet())?;
    let rows: Vec<Row> = report
        .outcomes
        .into_iter()
        .map(|(stage, o)| {
            let never = o.reasons.contains(&Reason::NeverBuilt);
            let (state, action) = match o.status {
                Status::Fresh => ("fresh", "none"),
                Status::WouldRestore => (if never { "never built" } else { "stale" }, "restore"),
                Status::WouldRun
                    if o.reasons
                        .iter()
                        .all(|r| matches!(r, Reason::UpstreamPending(_))) =>
                {
                    ("stale", "run if upstream changes")
                }
                Status::WouldRun => (if never { "never built" } else { "stale" }, "run"),
                _ => ("error", "none"),
            };
            let reasons = match o.problem {
                Some(problem) => vec![problem.to_string()],
                None => o.reasons.iter().map(ToString::to_string).collect(),
            };
            Row {
                stage,
                state,
                action,
                reasons,
            }
        })
        .collect();
    if args.json {
        super::print_json(&rows);
    } else {
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                let mut why = r.reasons.join("; ");
                if r.action == "restore" {
                    why = format!("{why} (a cached run will be restored)")
                        .trim_start()
                        .to_string();
                }
                vec![r.stage.clone(), r.state.to_string(), why]
            })
            .collect();
        super::table::print(&["stage", "state", "why"], &table);
    }
    Ok(if rows.iter().any(|r| r.state == "error") {
        1
    } else {
        0
    })
}
