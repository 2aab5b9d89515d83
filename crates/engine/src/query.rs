//! Read-only SQL over the provenance database: the facts behind `vlmflow query`.

use rusqlite::types::ValueRef;
use serde_json::Value;

use super::build::EngineError;
use super::workspace::Workspace;

/// A query's result: column names, and each row's cells as JSON values (blobs as hex).
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

/// Run one read-only statement; a statement that is wrong or writes is a usage error.
pub fn query(ws: &Workspace, sql: &str) -> Result<Table, EngineError> {
    let db = ws.read_db()?;
    let usage = |e: rusqlite::Error| EngineError::Usage(format!("query: {e}"));
    let mut stmt = db.conn.prepare(sql).map_err(usage)?;
    if !stmt.readonly() {
        return Err(EngineError::Usage(
            "query: only read-only statements (SELECT, WITH, …) are allowed".into(),
        ));
    }
    let columns: Vec<String> = stmt.column_names().map(String::from).collect();
    let mut rows = stmt.query([]).map_err(usage)?;
    let mut table = Vec::new();
    while let Some(row) = rows.next().map_err(usage)? {
        let mut cells = Vec::with_capacity(columns.len());
        for i in 0..columns.len() {
            cells.push(match row.get_ref(i).map_err(usage)? {
                ValueRef::Null => Value::Null,
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
    Ok(Table {
        columns,
        rows: table,
    })
}
