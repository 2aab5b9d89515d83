//! `vlmflow metrics [STAGE]` and `vlmflow metrics --diff A B`.

use std::collections::BTreeMap;

use super::log::short_number;
use super::runs;
use vlmflow_engine::build::{EngineError, load_pipeline};
use vlmflow_engine::workspace::Workspace;
use vlmflow_store::db::Db;

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

#[derive(serde::Serialize)]
struct StageMetrics {
    stage: String,
    run: i64,
    metrics: BTreeMap<String, f64>,
}

pub fn run(ws: &Workspace, args: Args) -> Result<i32, EngineError> {
    let db = Db::open_read_only(&ws.db_path())?;
    if let Some(pair) = args.diff {
        return diff(&db, &pair[0], &pair[1], args.json);
    }
    let stages: Vec<String> = match args.stage {
        Some(s) => vec![s],
        None => load_pipeline(ws, &vlmflow_stages::kinds(), &[])?
            .0
            .stages
            .into_iter()
            .map(|s| s.name)
            .collect(),
    };
    let mut all = Vec::new();
    for stage in stages {
        let Some(run) = db.current_run(&stage)? else {
            continue;
        };
        let producer = runs::producer(&db, &run)?;
        let metrics: BTreeMap<String, f64> = db.final_metrics(producer.id)?.into_iter().collect();
        if !metrics.is_empty() {
            all.push(StageMetrics {
                stage,
                run: producer.id,
                metrics,
            });
        }
    }
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

fn diff(db: &Db, a: &str, b: &str, json: bool) -> Result<i32, EngineError> {
    let (ra, rb) = (
        runs::producer(db, &runs::resolve(db, a)?)?,
        runs::producer(db, &runs::resolve(db, b)?)?,
    );
    let ma: BTreeMap<String, f64> = db.final_metrics(ra.id)?.into_iter().collect();
    let mb: BTreeMap<String, f64> = db.final_metrics(rb.id)?.into_iter().collect();
    let mut names: Vec<&String> = ma.keys().chain(mb.keys()).collect();
    names.sort();
    names.dedup();
    #[derive(serde::Serialize)]
    struct Row {
        metric: String,
        a: Option<f64>,
        b: Option<f64>,
        change: Option<f64>,
    }
    let rows: Vec<Row> = names
        .into_iter()
        .map(|n| {
            let (x, y) = (ma.get(n).copied(), mb.get(n).copied());
            Row {
                metric: n.clone(),
                a: x,
                b: y,
                change: x.zip(y).map(|(x, y)| y - x),
            }
        })
        .collect();
    if json {
        super::print_json(&serde_json::json!({"a": ra.id, "b": rb.id, "metrics": rows}));
    } else {
        let show = |v: Option<f64>| v.map(short_number).unwrap_or_else(|| "-".into());
        let table: Vec<Vec<String>> = rows
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
        let (ha, hb) = (format!("run {}", ra.id), format!("run {}", rb.id));
        super::table::print(&["metric", &ha, &hb, "change"], &table);
    }
    Ok(0)
}
