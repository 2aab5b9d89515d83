//! Run history, newest first: the facts behind `vlmflow log` — each run's status, timing, where it
//! ran, what params changed since the stage's previous run, its metrics, error and (optionally) log.

use serde_json::Value;

use super::build::EngineError;
use super::params::{self, ParamChange};
use super::workspace::Workspace;
use vlmflow_store::Cas;
use vlmflow_store::db::{Db, RunRow};
use vlmflow_store::run_status::RunStatus;

#[derive(Debug, serde::Serialize)]
pub struct LogEntry {
    pub run: i64,
    pub stage: String,
    pub status: RunStatus,
    pub started_at: f64,
    pub seconds: Option<f64>,
    pub host: String,
    /// The Slurm job the run was, if it was one (`host` is its node).
    pub job: Option<String>,
    pub device: String,
    pub key: String,
    pub artifact: Option<String>,
    pub restored_from: Option<i64>,
    /// For a restore fetched from a remote cache: the remote's URL.
    pub origin: Option<String>,
    /// Params that differ from the stage's previous run: name → [old, new].
    pub changed_params: Vec<ParamChange>,
    pub overrides: Value,
    pub metrics: Vec<(String, f64)>,
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

/// The newest `limit` runs (of `stage`, when given); with `with_log`, each with its captured log.
pub fn log(
    ws: &Workspace,
    stage: Option<&str>,
    limit: usize,
    with_log: bool,
) -> Result<Vec<LogEntry>, EngineError> {
    let db = ws.read_db()?;
    let cas = ws.open_cas()?;
    db.runs(stage, limit)?
        .iter()
        .map(|run| entry(&db, &cas, run, with_log))
        .collect()
}

fn entry(db: &Db, cas: &Cas, run: &RunRow, with_log: bool) -> Result<LogEntry, EngineError> {
    let changed_params = match db.previous_run(run)? {
        Some(prev) => params::diff(
            &params::parse_recorded(&prev.params),
            &params::parse_recorded(&run.params),
        ),
        None => vec![],
    };
    let metrics_run = run.source_run.unwrap_or(run.id);
    let log = if with_log {
        Some(log_text(db, cas, run)?)
    } else {
        None
    };
    Ok(LogEntry {
        run: run.id,
        stage: run.stage.clone(),
        status: run.status,
        started_at: run.started_at,
        seconds: run.finished_at.map(|f| f - run.started_at),
        host: run.host.clone(),
        job: run.job.clone(),
        device: run.device.clone(),
        key: run.key.clone(),
        artifact: run.artifact.clone(),
        restored_from: run.source_run,
        origin: run.origin.clone(),
        changed_params,
        overrides: params::parse_recorded(&run.overrides),
        metrics: db.final_metrics(metrics_run)?,
        error: run.error.clone(),
        log,
    })
}

/// A run's captured log. A restore ran nothing: it shows the log of the run that produced the
/// artifact, saying so.
fn log_text(db: &Db, cas: &Cas, run: &RunRow) -> Result<String, EngineError> {
    let logged = match run.source_run {
        Some(id) => db.run(id)?.unwrap_or_else(|| run.clone()),
        None => run.clone(),
    };
    let text = match logged.log.as_deref().and_then(|d| d.parse().ok()) {
        Some(digest) => match cas.read_bytes(&digest) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(_) => "(log deleted by `vlmflow gc`)".into(),
        },
        None => "(no log)".into(),
    };
    Ok(if logged.id == run.id {
        text
    } else {
        format!("(log of run {}, which produced it)\n{text}", logged.id)
    })
}
