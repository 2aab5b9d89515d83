//! `vlmflow dag`: the stage graph as text, Graphviz dot, or Mermaid.

use vlmflow_engine::build::{EngineError, load_pipeline};
use vlmflow_engine::workspace::Workspace;

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Text,
    Dot,
    Mermaid,
}

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

pub fn run(ws: &Workspace, args: Args) -> Result<i32, EngineError> {
    let (pipeline, _) = load_pipeline(ws, &vlmflow_stages::kinds(), &[])?;
    let name = |i: usize| pipeline.stages[i].name.as_str();
    match args.format {
        Format::Text => {
            let width = pipeline
                .stages
                .iter()
                .map(|s| s.name.len())
                .max()
                .unwrap_or(0);
            for stage in &pipeline.stages {
                let needs: Vec<&str> = stage.needs.iter().map(|&i| name(i)).collect();
                let arrow = if needs.is_empty() {
                    String::new()
                } else {
                    format!("  ← {}", needs.join(", "))
                };
                println!("{:<width$}  ({}){arrow}", stage.name, stage.kind);
            }
        }
        Format::Dot => {
            println!("digraph vlmflow {{\n  rankdir=LR;\n  node [shape=box];");
            for stage in &pipeline.stages {
                println!(
                    "  \"{}\" [label=\"{}\\n({})\"];",
                    stage.name, stage.name, stage.kind
                );
                for &need in &stage.needs {
                    println!("  \"{}\" -> \"{}\";", name(need), stage.name);
                }
            }
            println!("}}");
        }
        Format::Mermaid => {
            println!("graph LR");
            // Mermaid ids cannot hold '-', so nodes get positional ids and the names as labels.
            for (i, stage) in pipeline.stages.iter().enumerate() {
                println!("  s{i}[\"{} ({})\"]", stage.name, stage.kind);
            }
            for (i, stage) in pipeline.stages.iter().enumerate() {
                for &need in &stage.needs {
                    println!("  s{need} --> s{i}");
                }
            }
        }
    }
    Ok(0)
}
