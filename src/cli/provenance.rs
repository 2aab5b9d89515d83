//! `vlmflow provenance PATH|DIGEST|STAGE|RUN`.

use vlmflow_engine::build::EngineError;
use vlmflow_engine::provenance::{self, Lineage};
use vlmflow_engine::workspace::Workspace;
use vlmflow_engine::{format_duration, format_time};

#[derive(clap::Args)]
pub struct Args {
    /// A stage name, a run id, a path inside some stage's outs, or an artifact digest or run key
    /// (a prefix of 8 or more hex characters is enough).
    what: String,
    #[arg(long)]
    json: bool,
}

pub fn run(ws: &Workspace, args: Args) -> Result<i32, EngineError> {
    let tree = provenance::find(ws, &vlmflow_stages::kinds(), &args.what)?;
    if args.json {
        super::print_json(&tree);
    } else {
        print_tree(&tree, "", true, true);
    }
    Ok(0)
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
    let restored = match (node.restored_by, &node.restored_from_remote) {
        (Some(r), Some(url)) => format!(" (restored by run {r} from remote {url})"),
        (Some(r), None) => format!(" (restored by run {r})"),
        (None, _) => String::new(),
    };
    let job = node
        .job
        .as_ref()
        .map(|j| format!(" (Slurm job {j})"))
        .unwrap_or_default();
    println!(
        "{prefix}{branch}{}  run {}{restored} · {} {} · {} · {}{job} · {}",
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
