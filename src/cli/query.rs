//! `vlmflow query "SELECT …"`: read-only SQL over the provenance database.

use rusqlite::types::ValueRef;

use vlmflow_engine::build::EngineError;
use vlmflow_engine::workspace::Workspace;
use vlmflow_store::db::Db;

#[derive(clap::Args)]
pub struct Args {
    /// The SQL; the schema is in the README ("The provenance database").
    sql: String,
    #[arg(long)]
    json: bool,
}

pub fn run(ws: &Workspace, args: Args) -> Result<i32, EngineError> {
    let db = Db::open_read_only(&ws.db_path())?;
    let usage = |e: rusqlite::Error| EngineError::Usage(format!("query: {e}"));
    let mut stmt = db.conn.prepare(&args.sql).map_err(usage)?;
    if !stmt.readonly() {
        return Err(EngineError::Usage(
            "query: only read-only statements (SELECT, WITH, …) are allowed".into(),
        ));
    }
    let names: Vec<String> = stmt.column_names().map(String::from).collect();
    let mut rows = stmt.query([]).map_err(usage)?;
    let mut table: Vec<Vec<serde_json::Value>> = Vec::new();
    while let Some(row) = rows.next().map_err(usage)? {
        let mut cells = Vec::with_capacity(names.len());
        for i in 0..names.len() {
            cells.push(match row.get_ref(i).map_err(usage)? {
                ValueRef::Null => serde_json::Value::Null,
                ValueRef::Integer(n) => n.into(),
                ValueRef::Real(x) => x.into(),
                ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
                ValueRef::Blob(b) => b
                    .iter()
                    .map(|x| format!("{x:02x}"))
                    .collect::<String>()
                    .into(),
            });
        }
        table.push(cells);
    }
    if args.json {
        let objects: Vec<serde_json::Map<String, serde_json::Value>> = table
            .into_iter()
            .map(|cells| names.iter().cloned().zip(cells).collect())
            .collect();
        super::print_json(&objects);
    } else {
        let text: Vec<Vec<String>> = table
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
        let headers: Vec<&str> = names.iter().map(String::as_str).collect();
        super::table::print(&headers, &text);
    }
    Ok(0)
}
