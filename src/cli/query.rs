//! `vlmflow query "SELECT …"`: read-only SQL over the provenance database.

use vlmflow_engine::build::EngineError;
use vlmflow_engine::query::{Table, query};
use vlmflow_engine::workspace::Workspace;

#[derive(clap::Args)]
pub struct Args {
    /// The SQL; the schema is in the README ("The provenance database").
    sql: String,
    #[arg(long)]
    json: bool,
}

pub fn run(ws: &Workspace, args: Args) -> Result<i32, EngineError> {
    let Table { columns, rows } = query(ws, &args.sql)?;
    if args.json {
        let objects: Vec<serde_json::Map<String, serde_json::Value>> = rows
            .into_iter()
            .map(|cells| columns.iter().cloned().zip(cells).collect())
            .collect();
        super::print_json(&objects);
    } else {
        let text: Vec<Vec<String>> = rows
            .iter()
            .map(|cells| {
                cells
                    .iter()
                    .map(|c| match c {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Null => "NULL".into(),
                        other => other.to_string(),
                    })
                    .collect()
            })
            .collect();
        let headers: Vec<&str> = columns.iter().map(String::as_str).collect();
        super::table::print(&headers, &text);
    }
    Ok(0)
}
