//! Naming runs on the command line: `12` (a run id), `train` (the run the workspace holds for that
//! stage) or `train~2` (the stage's second-to-last successful run before it).

use super::build::EngineError;
use vlmflow_store::db::{Db, RunRow};
use vlmflow_store::run_status::RunStatus;

pub fn resolve(db: &Db, text: &str) -> Result<RunRow, EngineError> {
    let not_found =
        |what: String| EngineError::Usage(format!("{what}: see `vlmflow log` for run ids"));
    if let Ok(id) = text.parse::<i64>() {
        return db.run(id)?.ok_or_else(|| not_found(format!("no run {id}")));
    }
    let (stage, back) = match text.split_once('~') {
        Some((s, n)) => (
            s,
            n.parse::<usize>()
                .map_err(|_| not_found(format!("`{text}`: expected STAGE~N")))?,
        ),
        None => (text, 0),
    };
    if back == 0
        && let Some(run) = db.current_run(stage)?
    {
        return Ok(run);
    }
    let successful: Vec<RunRow> = db
        .runs(Some(stage), usize::MAX >> 1)?
        .into_iter()
        .filter(|r| r.status == RunStatus::Ran)
        .collect();
    successful.into_iter().nth(back).ok_or_else(|| {
        not_found(format!(
            "`{text}` names no run (no such stage, or not that many runs)"
        ))
    })
}

/// The run whose metrics describe `run`'s artifact: the producer for a restore.
pub fn producer(db: &Db, run: &RunRow) -> Result<RunRow, EngineError> {
    match run.source_run {
        Some(id) => Ok(db.run(id)?.unwrap_or_else(|| run.clone())),
        None => Ok(run.clone()),
    }
}
