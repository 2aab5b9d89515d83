//! The metrics and params of recorded runs, and what differs between two of them: the facts behind
//! `vlmflow metrics` and `vlmflow params diff`.

use std::collections::BTreeMap;

use super::build::{EngineError, load_pipeline};
use super::kind::Kinds;
use super::params::{self, ParamChange};
use super::runs;
use super::workspace::Workspace;

/// The final metrics of the run that produced a stage's current artifact.
#[derive(Debug, serde::Serialize)]
pub struct StageMetrics {
    pub stage: String,
    pub run: i64,
    pub metrics: BTreeMap<String, f64>,
}

/// One metric of two runs.
#[derive(Debug, serde::Serialize)]
pub struct MetricChange {
    pub metric: String,
    pub a: Option<f64>,
    pub b: Option<f64>,
    /// b − a, when both have it.
    pub change: Option<f64>,
}

/// The metrics of runs `a` and `b` (their producers, for restores), by name.
#[derive(Debug, serde::Serialize)]
pub struct MetricsDiff {
    pub a: i64,
    pub b: i64,
    pub metrics: Vec<MetricChange>,
}

/// A run as a params diff names it.
#[derive(Debug)]
pub struct RunName {
    pub id: i64,
    pub stage: String,
}

#[derive(Debug)]
pub struct ParamsDiff {
    pub a: RunName,
    pub b: RunName,
    pub changes: Vec<ParamChange>,
}

/// The metrics of the current run of `stage`, or of every stage of the Stagefile; stages with
/// none (or never built) are left out.
pub fn current_metrics(
    ws: &Workspace,
    kinds: &Kinds,
    stage: Option<String>,
) -> Result<Vec<StageMetrics>, EngineError> {
    let db = ws.read_db()?;
    let stages: Vec<String> = match stage {
        Some(s) => vec![s],
        None => load_pipeline(ws, kinds, &[])?
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
    Ok(all)
}

/// The metrics of two runs named as on the command line (`runs::resolve`).
pub fn metrics_diff(ws: &Workspace, a: &str, b: &str) -> Result<MetricsDiff, EngineError> {
    let db = ws.read_db()?;
    let (ra, rb) = (
        runs::producer(&db, &runs::resolve(&db, a)?)?,
        runs::producer(&db, &runs::resolve(&db, b)?)?,
    );
    let ma: BTreeMap<String, f64> = db.final_metrics(ra.id)?.into_iter().collect();
    let mb: BTreeMap<String, f64> = db.final_metrics(rb.id)?.into_iter().collect();
    let mut names: Vec<&String> = ma.keys().chain(mb.keys()).collect();
    names.sort();
    names.dedup();
    let metrics = names
        .into_iter()
        .map(|n| {
            let (x, y) = (ma.get(n).copied(), mb.get(n).copied());
            MetricChange {
                metric: n.clone(),
                a: x,
                b: y,
                change: x.zip(y).map(|(x, y)| y - x),
            }
        })
        .collect();
    Ok(MetricsDiff {
        a: ra.id,
        b: rb.id,
        metrics,
    })
}

/// The params that differ between two runs named as on the command line.
pub fn params_diff(ws: &Workspace, a: &str, b: &str) -> Result<ParamsDiff, EngineError> {
    let db = ws.read_db()?;
    let (ra, rb) = (runs::resolve(&db, a)?, runs::resolve(&db, b)?);
    let changes = params::diff(
        &params::parse_recorded(&ra.params),
        &params::parse_recorded(&rb.params),
    );
    Ok(ParamsDiff {
        a: RunName {
            id: ra.id,
            stage: ra.stage,
        },
        b: RunName {
            id: rb.id,
            stage: rb.stage,
        },
        changes,
    })
}
