//! The chat view's server side: which stages hold a chat bundle, and a reply streamed as it is
//! generated. The model is the binary's to run (`ChatBackend`): the UI knows no ML.
//!
//! ```text
//! GET  /api/bundles                                   [{stage, path}] of every built bundle
//! POST /api/chat?stage=S&question=Q&history=[[u, a]…]  body: the image's bytes (PNG, JPEG);
//!                                                     answers text/plain, streamed
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::App;
use crate::api::{Answer, ApiError};
use vlmflow_engine::build::load_pipeline;

/// Runs a bundle: handed to `serve` by the binary.
pub trait ChatBackend: Send + Sync {
    /// Whether `dir` (a stage's out) holds a chat bundle.
    fn is_bundle(&self, dir: &Path) -> bool;
    /// Answers `question` about the encoded `image` after `history` ((user, assistant) turns),
    /// handing each new piece of text to `on_text`. An error says what is wrong (a bad image).
    fn answer(
        &self,
        bundle: &Path,
        image: &[u8],
        history: &[(String, String)],
        question: &str,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<(), String>;
}

pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/bundles", get(bundles))
        .route("/api/chat", post(chat))
}

/// Every stage whose out holds a bundle: (stage, its folder).
fn bundle_dirs(app: &App) -> Answer<Vec<(String, PathBuf)>> {
    let (pipeline, _) = load_pipeline(&app.ws, &app.kinds, &[])?;
    Ok(pipeline
        .stages
        .iter()
        .filter_map(|s| {
            let dir = app.ws.root.join(s.outs.first()?);
            app.chat.is_bundle(&dir).then(|| (s.name.clone(), dir))
        })
        .collect())
}

async fn bundles(State(app): State<Arc<App>>) -> Answer<Json<Value>> {
    crate::api::blocking(app, |app| {
        let found: Vec<Value> = bundle_dirs(app)?
            .into_iter()
            .map(|(stage, dir)| {
                let shown = dir.strip_prefix(&app.ws.root).unwrap_or(&dir).to_path_buf();
                json!({ "stage": stage, "path": shown })
            })
            .collect();
        Ok(Json(Value::Array(found)))
    })
    .await
}

#[derive(serde::Deserialize)]
struct Turn {
    stage: String,
    question: String,
    /// JSON: `[["user", "assistant"], …]`.
    #[serde(default)]
    history: Option<String>,
}

/// What the generating thread sends.
enum Piece {
    Text(String),
    Failed(String),
}

async fn chat(
    State(app): State<Arc<App>>,
    Query(turn): Query<Turn>,
    image: Bytes,
) -> Answer<Response> {
    let question = turn.question.trim().to_string();
    if question.is_empty() {
        return Err(ApiError(StatusCode::BAD_REQUEST, "ask a question".into()));
    }
    if image.is_empty() {
        return Err(ApiError(StatusCode::BAD_REQUEST, "send an image".into()));
    }
    let history: Vec<(String, String)> = match &turn.history {
        Some(text) => serde_json::from_str(text)
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("history: {e}")))?,
        None => Vec::new(),
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::task::spawn_blocking(move || {
        let dir = match bundle_dirs(&app) {
            Ok(found) => found
                .into_iter()
                .find(|(s, _)| *s == turn.stage)
                .map(|(_, d)| d),
            Err(e) => return drop(tx.send(Piece::Failed(e.1))),
        };
        let Some(dir) = dir else {
            let why = format!(
                "stage `{}` holds no chat bundle: build it first",
                turn.stage
            );
            return drop(tx.send(Piece::Failed(why)));
        };
        let mut on_text = |text: &str| drop(tx.send(Piece::Text(text.to_string())));
        if let Err(e) = app
            .chat
            .answer(&dir, &image, &history, &question, &mut on_text)
        {
            let _ = tx.send(Piece::Failed(e));
        }
    });
    // A failure before the first word (no bundle, a bad image) is an error response; after it,
    // the text says so where it stopped.
    let first = match rx.recv().await {
        Some(Piece::Failed(why)) => return Err(ApiError(StatusCode::BAD_REQUEST, why)),
        Some(Piece::Text(text)) => text,
        None => String::new(),
    };
    let rest = futures::stream::unfold(rx, |mut rx| async move {
        let text = match rx.recv().await? {
            Piece::Text(text) => text,
            Piece::Failed(why) => format!("\n[stopped: {why}]"),
        };
        Some((Ok::<_, std::io::Error>(text), rx))
    });
    let body = futures::StreamExt::chain(
        futures::stream::once(async move { Ok::<_, std::io::Error>(first) }),
        rest,
    );
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(body),
    )
        .into_response())
}
