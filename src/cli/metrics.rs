//! `vlmflow metrics [STAGE]` and `vlmflow metrics --diff A B`.

use super::log::short_number;
use vlmflow_engine::build::EngineError;
use vlmflow_engine::compare;
use vlmflow_engine::workspace::Workspace;

#[derive(clap::Args)]
pub struct Args {
    /// Only this stage (its current run).
    stage: Option<String>,
    /// Compare two runs: run ids, stage names (their current run) or STAGE~N.
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    diff: Option<Vec<String>>,
    #[arg(long)]
    json: bool,
}

pub fn run(ws: &Workspace, args: Args) -> Result<i32, EngineError> {
    if let Some(pair) = args.diff {
        return diff(ws, &pair[0], &pair[1], args.json);
    }
    let all = compare::current_metrics(ws, &vlmflow_stages::kinds(), args.stage)?;
    if args.json {
        super::print_json(&all);
    } else if all.is_empty() {
        eprintln!("no metrics recorded for the current runs");
    } else {
        let rows: Vec<Vec<String>> = all
            .iter()
            .flat_map(|s| {
                s.metrics.iter().map(|(name, v)| {
                    vec![
                        s.stage.clone(),
                        s.run.to_string(),
                        name.clone(),
                        short_number(*v),
                    ]
                })
            })
            .collect();
        super::table::print(&["stage", "run", "metric", "value"], &rows);
    }
    Ok(0)
}

fn diff(ws: &Workspace, a: &str, b: &str, json: bool) -> Result<i32, EngineError> {
    let diff = compare::metrics_diff(ws, a, b)?;
    if json {
        super::print_json(&diff);
    } else {
        let show = |v: Option<f64>| v.map(short_number).unwrap_or_else(|| "-".into());
        let table: Vec<Vec<String>> = diff
            .metrics
            .iter()
            .map(|r| {
                let change = r
                    .change
                    .map(|c| format!("{}{}", if c > 0.0 { "+" } else { "" }, short_number(c)));
                vec![
                    r.metric.clone(),
                    show(r.a),
                    show(r.b),
                    change.unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        let (ha, hb) = (format!("run {}", diff.a), format!("run {}", diff.b));
        super::table::print(&["metric", &ha, &hb, "change"], &table);
    }
    Ok(0)
}
