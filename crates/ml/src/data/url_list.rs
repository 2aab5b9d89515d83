//! URL lists: which image URL goes with which caption, as img2dataset reads them.
//!
//! CSV (`.csv`) or TSV (`.tsv`, `.txt`) with a header row, or JSON Lines (`.jsonl`, `.json`) with
//! one object a line. The URL and caption columns (and, optionally, a label column) are named by
//! the caller; other columns are ignored and header names match case-insensitively. Blank lines
//! are skipped; every other row keeps its place, so a row's index in the returned list is stable
//! for a given file. Errors name `file:line`.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde_json::Value;

use super::delimited::table;
use super::{Result, format_err, io_err};

/// One row of a URL list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlRow {
    /// Where the row starts in the file (1-based), for messages.
    pub line: usize,
    pub url: String,
    pub caption: String,
    pub label: Option<String>,
}

/// The names of the columns (or JSON keys) to read.
#[derive(Debug, Clone, Copy)]
pub struct Columns<'a> {
    pub url: &'a str,
    pub caption: &'a str,
    /// Read a class label from this column too, when given.
    pub label: Option<&'a str>,
}

impl Default for Columns<'static> {
    fn default() -> Self {
        Columns {
            url: "url",
            caption: "caption",
            label: None,
        }
    }
}

/// Read a URL list, choosing the format by extension.
pub fn read_url_list(path: &Path, columns: &Columns<'_>) -> Result<Vec<UrlRow>> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "jsonl" | "json" => read_jsonl(path, columns),
        "csv" => read_delimited(path, b',', columns),
        "tsv" | "txt" => read_delimited(path, b'\t', columns),
        _ => Err(format_err(
            path,
            None,
            "unknown URL list type: expected .csv, .tsv, .txt, .jsonl or .json \
             (convert Parquet with e.g. `duckdb -c \"COPY (FROM 'x.parquet') TO 'x.tsv'\"`)",
        )),
    }
}

fn read_delimited(path: &Path, delimiter: u8, columns: &Columns<'_>) -> Result<Vec<UrlRow>> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    // Spreadsheets often save a byte-order mark, which would otherwise hide the first column.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let (header, rows) = table(path, text, delimiter)?;
    let position = |name: &str| {
        header
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| {
                format_err(
                    path,
                    Some(1),
                    format!(
                        "the header {header:?} has no `{name}` column: name the right one with \
                         `url_column`, `caption_column` or `label_column` in the stage's params"
                    ),
                )
            })
    };
    let url_col = position(columns.url)?;
    let caption_col = position(columns.caption)?;
    let label_col = columns.label.map(position).transpose()?;
    let mut out = Vec::new();
    for row in rows {
        let row = row?;
        out.push(UrlRow {
            line: row.line,
            url: row.field(url_col)?.trim().to_string(),
            caption: row.field(caption_col)?,
            label: nonempty(label_col.map(|col| row.field(col)).transpose()?),
        });
    }
    Ok(out)
}

fn read_jsonl(path: &Path, columns: &Columns<'_>) -> Result<Vec<UrlRow>> {
    let reader = BufReader::new(File::open(path).map_err(io_err(path))?);
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(io_err(path))?;
        if line.trim().is_empty() {
            continue;
        }
        let at = |message: String| format_err(path, Some(i + 1), message);
        let object: Value =
            serde_json::from_str(&line).map_err(|e| at(format!("invalid JSON: {e}")))?;
        let text = |key: &str| match object.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(at(format!("`{key}` must be a string, not {other}"))),
            None => Err(at(format!(
                "no `{key}` key: name the right one with `url_column`, `caption_column` or \
                 `label_column` in the stage's params"
            ))),
        };
        out.push(UrlRow {
            line: i + 1,
            url: text(columns.url)?.trim().to_string(),
            caption: text(columns.caption)?,
            label: nonempty(columns.label.map(text).transpose()?),
        });
    }
    Ok(out)
}

/// An empty label is no label.
fn nonempty(label: Option<String>) -> Option<String> {
    label.filter(|l| !l.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn row(line: usize, url: &str, caption: &str) -> UrlRow {
        UrlRow {
            line,
            url: url.into(),
            caption: caption.into(),
            label: None,
        }
    }

    #[test]
    fn csv_tsv_and_jsonl_with_default_columns() {
        let dir = tempfile::tempdir().unwrap();
        let csv = write(
            dir.path(),
            "l.csv",
            "\u{feff}URL,Caption,KEY\n http://a/1.jpg ,\"a dog, running\",1\n\n http://a/2.jpg,\"two\nlines\",2\n",
        );
        assert_eq!(
            read_url_list(&csv, &Columns::default()).unwrap(),
            vec![
                row(2, "http://a/1.jpg", "a dog, running"),
                row(4, "http://a/2.jpg", "two\nlines")
            ]
        );
        let tsv = write(dir.path(), "l.tsv", "url\tcaption\nhttp://b\tb\n");
        assert_eq!(
            read_url_list(&tsv, &Columns::default()).unwrap(),
            vec![row(2, "http://b", "b")]
        );
        let jsonl = write(
            dir.path(),
            "l.jsonl",
            "{\"url\":\"http://c\",\"caption\":\"c\",\"width\":3}\n\n{\"url\":\"http://d\",\"caption\":\"d\"}\n",
        );
        assert_eq!(
            read_url_list(&jsonl, &Columns::default()).unwrap(),
            vec![row(1, "http://c", "c"), row(3, "http://d", "d")]
        );
    }

    #[test]
    fn named_columns_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        let columns = Columns {
            url: "image_url",
            caption: "text",
            label: Some("class"),
        };
        let tsv = write(
            dir.path(),
            "l.tsv",
            "text\tclass\timage_url\na cat\tcat\thttp://e\nsomething\t\thttp://g\n",
        );
        let rows = read_url_list(&tsv, &columns).unwrap();
        assert_eq!(rows[0].url, "http://e");
        assert_eq!(rows[0].caption, "a cat");
        assert_eq!(rows[0].label.as_deref(), Some("cat"));
        assert_eq!(rows[1].label, None, "an empty label is no label");
        let jsonl = write(
            dir.path(),
            "l.jsonl",
            "{\"image_url\":\"http://f\",\"text\":\"a dog\",\"class\":\"dog\"}\n",
        );
        assert_eq!(
            read_url_list(&jsonl, &columns).unwrap()[0].label.as_deref(),
            Some("dog")
        );
    }

    #[test]
    fn errors_name_the_file_line_and_the_param_to_change() {
        let dir = tempfile::tempdir().unwrap();
        let cols = Columns::default();
        let path = write(dir.path(), "h.csv", "link,caption\nhttp://a,a\n");
        let err = read_url_list(&path, &cols).unwrap_err().to_string();
        assert!(err.contains("h.csv:1:"), "{err}");
        assert!(
            err.contains("no `url` column") && err.contains("url_column"),
            "{err}"
        );

        let path = write(dir.path(), "s.tsv", "url\tcaption\nhttp://a\n");
        let err = read_url_list(&path, &cols).unwrap_err().to_string();
        assert!(err.contains("s.tsv:2: expected 2 fields"), "{err}");

        let path = write(dir.path(), "e.csv", "");
        let err = read_url_list(&path, &cols).unwrap_err().to_string();
        assert!(err.contains("e.csv:1: empty file"), "{err}");

        let path = write(
            dir.path(),
            "j.jsonl",
            "{\"url\":\"http://a\",\"caption\":\"a\"}\n{\"url\":7,\"caption\":\"b\"}\n",
        );
        let err = read_url_list(&path, &cols).unwrap_err().to_string();
        assert!(err.contains("j.jsonl:2: `url` must be a string"), "{err}");

        let path = write(dir.path(), "k.jsonl", "{\"caption\":\"b\"}\n");
        let err = read_url_list(&path, &cols).unwrap_err().to_string();
        assert!(err.contains("k.jsonl:1: no `url` key"), "{err}");

        let path = write(dir.path(), "b.jsonl", "{not json\n");
        let err = read_url_list(&path, &cols).unwrap_err().to_string();
        assert!(err.contains("b.jsonl:1: invalid JSON"), "{err}");

        let path = write(dir.path(), "l.parquet", "");
        let err = read_url_list(&path, &cols).unwrap_err().to_string();
        assert!(err.contains("l.parquet") && err.contains(".tsv"), "{err}");
        let err = read_url_list(&dir.path().join("none.csv"), &cols)
            .unwrap_err()
            .to_string();
        assert!(err.contains("none.csv"), "{err}");
    }
}
