//! `vlmflow ui`: a local web app over one workspace — its DAG coloured by state, the runs,
//! their curves side by side (a sweep's opened whole: `sweeps`), one run's params, log, files and
//! lineage, and a chat with its bundles (`chat`).
//!
//! The server (axum on tokio) answers JSON under `/api/` (`api`) and serves one page, compiled
//! into the binary (`assets`), for every view's URL; the page draws the views itself. It only
//! reads: the database through read-only connections, artifacts from the cache, and stage
//! states from a dry run of the build (no lock, no run written), so it is safe while builds run,
//! and any number of `ui`s may watch one workspace.

mod api;
mod assets;
mod chat;
mod sweeps;

pub use chat::ChatBackend;

use std::net::SocketAddr;
use std::sync::Arc;

use vlmflow_engine::kind::Kinds;
use vlmflow_engine::workspace::Workspace;

/// What every request reads from.
pub(crate) struct App {
    pub ws: Workspace,
    pub kinds: Kinds,
    pub chat: Arc<dyn ChatBackend>,
}

/// Serves the UI of `ws` on `addr` until the process ends, with `chat` answering in the chat view;
/// `on_listening` gets the address bound (port 0 picks a free one).
pub fn serve(
    ws: Workspace,
    kinds: Kinds,
    chat: Arc<dyn ChatBackend>,
    addr: SocketAddr,
    on_listening: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        on_listening(listener.local_addr()?);
        let app = Arc::new(App { ws, kinds, chat });
        let router = api::routes()
            .merge(chat::routes())
            .merge(sweeps::routes())
            .merge(assets::routes())
            .with_state(app);
        axum::serve(listener, router).await?;
        Ok(())
    })
}
