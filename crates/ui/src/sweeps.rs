//! Sweeps, for the compare view to open whole.
//!
//! ```text
//! GET /api/sweeps          [{name, targets, axes, trials, created_at}], newest first
//! GET /api/sweeps/{name}   {name, targets, axes, trials: [{trial, params, status, error, runs}]}
//! ```

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Json;
use axum::routing::get;
use serde_json::{Value, json};

use crate::App;
use crate::api::{Answer, ApiError, blocking, parse_json as parse};

pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/sweeps", get(sweeps))
        .route("/api/sweeps/{name}", get(sweep))
}

async fn sweeps(State(app): State<Arc<App>>) -> Answer<Json<Value>> {
    blocking(app, |app| {
        let db = app.ws.read_db()?;
        let mut out = Vec::new();
        for s in db.sweeps()? {
            out.push(json!({
                "name": s.name,
                "targets": parse(&s.targets),
                "axes": parse(&s.axes),
                "trials": db.trials(s.id)?.len(),
                "created_at": s.created_at,
            }));
        }
        Ok(Json(Value::Array(out)))
    })
    .await
}

async fn sweep(State(app): State<Arc<App>>, Path(name): Path<String>) -> Answer<Json<Value>> {
    blocking(app, move |app| {
        let db = app.ws.read_db()?;
        let Some(s) = db.sweeps()?.into_iter().find(|s| s.name == name) else {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("no sweep named `{name}`"),
            ));
        };
        let trials: Vec<Value> = db
            .trials(s.id)?
            .into_iter()
            .map(|t| {
                json!({
                    "trial": t.trial,
                    "params": parse(&t.assignment),
                    "status": t.status,
                    "error": t.error,
                    "runs": t.runs.into_iter().collect::<std::collections::BTreeMap<String, i64>>(),
                })
            })
            .collect();
        Ok(Json(json!({
            "name": s.name,
            "targets": parse(&s.targets),
            "axes": parse(&s.axes),
            "trials": trials,
        })))
    })
    .await
}
