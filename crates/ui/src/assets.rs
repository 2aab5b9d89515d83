//! The page, compiled into the binary so the UI works offline on a fresh clone: one HTML shell for
//! every view's URL, the script that draws the views, the style sheet.

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;

use crate::App;

const INDEX: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE: &str = include_str!("../assets/style.css");

/// Every view's URL answers the same page, which draws the view its URL names.
const VIEWS: [&str; 6] = ["/", "/dag", "/runs", "/runs/{id}", "/compare", "/chat"];

pub(crate) fn routes() -> Router<Arc<App>> {
    let mut router = Router::new();
    for view in VIEWS {
        router = router.route(view, get(|| async { Html(INDEX) }));
    }
    router
        .route(
            "/assets/app.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], APP_JS).into_response() }),
        )
        .route(
            "/assets/style.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css")], STYLE).into_response() }),
        )
}
