//! `vlmflow provenance PATH|DIGEST|STAGE|RUN`.

use std::path::Path;

use vlmflow_engine::build::{EngineError, load_pipeline};
use vlmflow_engine::provenance::{Lineage, lineage};
use vlmflow_engine::workspace::Workspace;
use vlmflow_engine::{format_duration, format_time};
use vlmflow_store::db::{Db, RunRow};

#[derive(clap::Args)]
pub struct Args {
    /// A stage name, a run id, a path inside some stage's outs, or an artifact digest or run key
    /// (a prefix of 8 or more hex characters is enough).
    what: String,
    #[arg(long)]
    json: bool,
}

pub fn run(ws: &Workspace, args: Args) -> Result<i32, EngineError> {
    let db = Db::open_read_only(&ws.db_path())?;
    let run = resolve(ws, &db, &args.what)?;
    let tree = lineage(&db, &run)?;
    if args.json {
        super::print_json(&tree);
    } else {
        print_tree(&tree, "", true, true);
    }
    Ok(0)
}

fn resolve(ws: &Workspace, db: &Db, what: &str) -> Result<RunRow, EngineError> {
    if let Ok(id) = what.parse::<i64>() {
        return db
            .run(id)?
            .ok_or_else(|| EngineError::Usage(format!("no run {id}")));
    }
    let (pipeline, _) = load_pipeline(ws, &vlmflow_stages::kinds(), &[])?;
    let current = |stage: &str| -> Result<RunRow, EngineError> {
        db.current_run(stage)?.ok_or_else(|| {
            EngineError::Usage(format!(
                "stage `{stage}` has not been built yet: run `vlmflow build {stage}`"
            ))
        })
    };
    if pipeline.stage_index(what).is_some() {
        return current(what);
    }
    // A path: relative to the current folder or the workspace, inside some stage's outs.
    let candidates = [std::path::absolute(what).ok(), Some(ws.root.join(what))];
    for path in candidates.into_iter().flatten() {
        let Ok(rel) = path.strip_prefix(&ws.root) else {
            continue;
        };
        let rel = rel.to_string_lossy();
        for stage in &pipeline.stages {
            if stage
                .outs
                .iter()
                .any(|o| rel == o.as_str() || rel.starts_with(&format!("{o}/")))
            {
                return current(&stage.name);
            }
        }
    }
    if what.len() >= 8 && what.chars().all(|c| c.is_ascii_hexdigit()) {
        let pattern = format!("{}%", what.to_ascii_lowercase());
        let by_artifact: Option<String> = db
            .conn
            .query_row(
                "SELECT digest FROM artifacts WHERE digest LIKE ?1 LIMIT 1",
                [&pattern],
                |r| r.get(0),
            )
            .ok();
        if let Some(run) = by_artifact
            .map(|a| db.producer_of(&a))
            .transpose()?
            .flatten()
        {
            return Ok(run);
        }
        let by_key: Option<i64> = db
            .conn
            .query_row(
                "SELECT id FROM runs WHERE key LIKE ?1 ORDER BY id DESC LIMIT 1",
                [&pattern],
                |r| r.get(0),
            )
            .ok();
        if let Some(id) = by_key.and_then(|id| db.run(id).ok().flatten()) {
            return Ok(id);
        }
    }
    Err(EngineError::Usage(format!(
        "`{what}` is not a stage, a run id, a path inside a stage's outs, or a known digest{}",
        if Path::new(what).exists() {
            " (that path is not an out of any stage)"
        } else {
            ""
        }
    )))
}

fn print_tree(node: &Lineage, prefix: &str, last: bool, root: bool) {
    let (branch, indent) = if root {
        ("", "")
    } else if last {
        ("└─ ", "   ")
    } else {
        ("├─ ", "│  ")
    };
    let time = node
        .seconds
        .map(format_duration)
        .unwrap_or_else(|| "-".into());
    let restored = node
        .restored_by
        .map(|r| format!(" (restored by run {r})"))
        .unwrap_or_default();
    println!(
        "{prefix}{branch}{}  run {}{restored} · {} {} · {} · {} · {}",
        node.stage,
        node.run,
        node.status,
        format_time(node.started_at),
        time,
        node.host,
        node.device
    );
    let inner = format!(
        "{prefix}{indent}{}",
        if node.upstream.is_empty() {
            "   "
        } else {
            "│  "
        }
    );
    println!(
        "{inner}kind {} (implementation {}) · key {}",
        node.kind,
        node.implementation,
        &node.key[..16.min(node.key.len())]
    );
    if let Some(a) = &node.artifact {
        println!("{inner}artifact {a}");
    }
    if node.params.as_object().is_some_and(|m| !m.is_empty()) {
        println!("{inner}params {}", node.params);
    }
    if node.overrides.as_object().is_some_and(|m| !m.is_empty()) {
        println!("{inner}--set {}", node.overrides);
    }
    for (path, digest) in &node.inputs {
        println!("{inner}input {path} {}", &digest[..16.min(digest.len())]);
    }
    if !node.metrics.is_empty() {
        let shown: Vec<String> = node
            .metrics
            .iter()
            .map(|(n, v)| format!("{n}={}", super::log::short_number(*v)))
            .collect();
        println!("{inner}metrics {}", shown.join(" "));
    }
    let child_prefix = format!("{prefix}{indent}");
    for (i, up) in node.upstream.iter().enumerate() {
        print_tree(up, &child_prefix, i + 1 == node.upstream.len(), false);
    }
}
