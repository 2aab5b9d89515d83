//! `vlmflow tensorboard`: event files for the runs that have none, and the command to view them.

use vlmflow_engine::build::EngineError;
use vlmflow_engine::tensorboard::write_missing;
use vlmflow_engine::workspace::Workspace;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(ws: &Workspace, _args: Args) -> Result<i32, EngineError> {
    let db = ws.read_db()?;
    let root = ws.tensorboard_dir();
    let written = write_missing(&db, &root).map_err(|e| {
        EngineError::Failed(format!("writing event files under {}: {e}", root.display()))
    })?;
    for dir in &written {
        let shown = dir.strip_prefix(&ws.root).unwrap_or(dir);
        println!("wrote {}", shown.display());
    }
    if written.is_empty() {
        println!("every run with metrics has its event file");
    }
    let logdir = root.strip_prefix(&ws.root).unwrap_or(&root);
    println!("view them with: tensorboard --logdir {}", logdir.display());
    Ok(0)
}
