//! The JSON the page draws from, each answered on a blocking thread (SQLite, the cache):
//!
//! ```text
//! GET /api/stages              the DAG: every stage, its needs, state (fresh / stale / never
//!                              built / running / failed), why, and its latest run
//! GET /api/runs                every run, newest first, with params and final metrics
//! GET /api/runs/{id}           one run: params, final metrics, log, inputs, artifact files,
//!                              lineage back to the raw data
//! GET /api/runs/{id}/series    its per-step metrics: {name: [[step, value], …]}
//! GET /api/runs/{id}/file?path=P   a file of its artifact, as it is
//! ```

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::App;
use vlmflow_engine::build::{BuildOptions, load_pipeline};
use vlmflow_engine::provenance::lineage;
use vlmflow_engine::stage_states::{State as StageState, stage_states};
use vlmflow_store::db::{Db, RunRow};
use vlmflow_store::manifest::{Manifest, Node};
use vlmflow_store::run_status::RunStatus;
use vlmflow_store::{Cas, Digest};

/// A log is shown from its end: the last this many bytes.
const LOG_TAIL: usize = 256 * 1024;

pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/stages", get(stages))
        .route("/api/runs", get(runs))
        .route("/api/runs/{id}", get(run))
        .route("/api/runs/{id}/series", get(series))
        .route("/api/runs/{id}/file", get(file))
}

/// An error as the page shows it: `{"error": …}` with a status.
pub(crate) struct ApiError(pub StatusCode, pub String);

impl ApiError {
    fn not_found(what: String) -> ApiError {
        ApiError(StatusCode::NOT_FOUND, what)
    }
}

impl<E: std::fmt::Display> From<E> for ApiError {
    fn from(e: E) -> ApiError {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

pub(crate) type Answer<T> = Result<T, ApiError>;

/// Runs `work` on a blocking thread with the app.
pub(crate) async fn blocking<T: Send + 'static>(
    app: Arc<App>,
    work: impl FnOnce(&App) -> Answer<T> + Send + 'static,
) -> Answer<T> {
    tokio::task::spawn_blocking(move || work(&app)).await?
}

async fn stages(State(app): State<Arc<App>>) -> Answer<Json<Value>> {
    blocking(app, |app| Ok(Json(stages_json(app)?))).await
}

async fn runs(State(app): State<Arc<App>>) -> Answer<Json<Value>> {
    blocking(app, |app| {
        let db = app.ws.read_db()?;
        let rows: Vec<Value> = db
            .runs(None, usize::MAX)?
            .iter()
            .map(|r| run_summary(&db, r))
            .collect::<Answer<_>>()?;
        Ok(Json(Value::Array(rows)))
    })
    .await
}

async fn run(State(app): State<Arc<App>>, Path(id): Path<i64>) -> Answer<Json<Value>> {
    blocking(app, move |app| Ok(Json(run_json(app, id)?))).await
}

async fn series(State(app): State<Arc<App>>, Path(id): Path<i64>) -> Answer<Json<Value>> {
    blocking(app, move |app| {
        let db = app.ws.read_db()?;
        let mut out: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
        for (name, step, value) in db.metrics_of(id)? {
            if let Some(step) = step {
                out.entry(name).or_default().push((step, value));
            }
        }
        for points in out.values_mut() {
            points.sort_by_key(|p| p.0);
        }
        Ok(Json(json!(out)))
    })
    .await
}

#[derive(serde::Deserialize)]
struct FileQuery {
    path: String,
}

async fn file(
    State(app): State<Arc<App>>,
    Path(id): Path<i64>,
    Query(q): Query<FileQuery>,
) -> Answer<Response> {
    blocking(app, move |app| {
        let db = app.ws.read_db()?;
        let run = find_run(&db, id)?;
        let cas = Cas::open(&app.ws.cache)?;
        let manifest = artifact_manifest(&cas, &run)?
            .ok_or_else(|| ApiError::not_found(format!("run {id} has no artifact")))?;
        let Some(Node::File { digest, .. }) = manifest.get(&q.path) else {
            return Err(ApiError::not_found(format!(
                "run {id}'s artifact has no file {}",
                q.path
            )));
        };
        let bytes = cas.read_bytes(digest)?;
        Ok((
            [
                (header::CONTENT_TYPE, content_type(&q.path)),
                // An artifact's SVG or HTML runs nothing of its own in this origin.
                (header::CONTENT_SECURITY_POLICY, "sandbox"),
            ],
            bytes,
        )
            .into_response())
    })
    .await
}

fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "json" | "jsonl" => "application/json",
        "txt" | "log" | "md" | "toml" | "csv" | "tsv" | "jinja" | "py" | "sh" => {
            "text/plain; charset=utf-8"
        }
        _ => "application/octet-stream",
    }
}

fn find_run(db: &Db, id: i64) -> Answer<RunRow> {
    db.run(id)?
        .ok_or_else(|| ApiError::not_found(format!("no run {id}")))
}

fn artifact_manifest(cas: &Cas, run: &RunRow) -> Answer<Option<Manifest>> {
    let Some(artifact) = &run.artifact else {
        return Ok(None);
    };
    let digest = Digest::from_str(artifact)?;
    Ok(Some(cas.read_manifest(&digest)?))
}

/// A JSON column as a value (null when it is not JSON).
pub(crate) fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// A run as a row of the runs table.
fn run_summary(db: &Db, r: &RunRow) -> Answer<Value> {
    let metrics: BTreeMap<String, f64> = db.final_metrics(r.id)?.into_iter().collect();
    Ok(json!({
        "id": r.id,
        "stage": r.stage,
        "kind": r.kind,
        "status": r.status.as_str(),
        "started_at": r.started_at,
        "seconds": r.finished_at.map(|f| f - r.started_at),
        "host": r.host,
        "job": r.job,
        "device": r.device,
        "params": parse_json(&r.params),
        "overrides": parse_json(&r.overrides),
        "source_run": r.source_run,
        "error": r.error,
        "metrics": metrics,
    }))
}

fn run_json(app: &App, id: i64) -> Answer<Value> {
    let db = app.ws.read_db()?;
    let run = find_run(&db, id)?;
    let cas = Cas::open(&app.ws.cache)?;
    let mut out = run_summary(&db, &run)?;
    let log = match &run.log {
        Some(digest) => {
            let bytes = cas.read_bytes(&Digest::from_str(digest)?)?;
            let from = bytes.len().saturating_sub(LOG_TAIL);
            String::from_utf8_lossy(&bytes[from..]).into_owned()
        }
        None => String::new(),
    };
    let files: Vec<Value> = artifact_manifest(&cas, &run)?
        .map(|m| {
            m.entries()
                .iter()
                .filter_map(|e| match &e.node {
                    Node::File { size, .. } => Some(json!({ "path": e.path, "bytes": size })),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    out["log"] = log.into();
    out["files"] = files.into();
    out["key"] = run.key.clone().into();
    out["artifact"] = json!(run.artifact);
    out["inputs"] = json!(db.inputs_of(id)?);
    out["lineage"] = serde_json::to_value(lineage(&db, &run)?)?;
    Ok(out)
}

fn stages_json(app: &App) -> Answer<Value> {
    let (pipeline, _) = load_pipeline(&app.ws, &app.kinds, &[])?;
    let states: BTreeMap<String, _> = stage_states(&app.ws, &app.kinds, &BuildOptions::default())?
        .into_iter()
        .map(|s| (s.stage.clone(), s))
        .collect();
    let db = app.ws.read_db().ok();
    let mut out = Vec::new();
    for stage in &pipeline.stages {
        let latest = match &db {
            Some(db) => db.runs(Some(&stage.name), 1)?.into_iter().next(),
            None => None,
        };
        let current = match &db {
            Some(db) => db.current_run(&stage.name)?.map(|r| r.id),
            None => None,
        };
        let state = states.get(&stage.name);
        let shown = match (&latest, state.map(|s| s.state)) {
            (Some(r), _) if r.status == RunStatus::Running => "running",
            (Some(r), Some(s)) if r.status == RunStatus::Failed && s != StageState::Fresh => {
                "failed"
            }
            (_, Some(s)) => s.as_str(),
            (_, None) => "unknown",
        };
        out.push(json!({
            "name": stage.name,
            "kind": stage.kind,
            "description": stage.description,
            "needs": stage.needs.iter().map(|&i| &pipeline.stages[i].name).collect::<Vec<_>>(),
            "state": shown,
            "action": state.map(|s| s.action.as_str()),
            "reasons": state.map(|s| s.reasons.clone()).unwrap_or_default(),
            "current_run": current,
            "latest": latest.map(|r| json!({
                "id": r.id,
                "status": r.status.as_str(),
                "error": r.error,
                "started_at": r.started_at,
            })),
        }));
    }
    Ok(json!({ "stages": out }))
}
