//! Delimited text (CSV, TSV) with a header row, as caption files and URL lists hold it: fields
//! may be quoted with `"` as in RFC 4180, and a quoted field may span lines. Errors name
//! `file:line`.

use std::path::Path;

use super::{Result, format_err};

/// A data row of a table: its fields, and the line it starts on (1-based).
pub(super) struct TableRow<'a> {
    path: &'a Path,
    /// The header's width, for the error when this row is shorter.
    width: usize,
    pub(super) line: usize,
    fields: Vec<String>,
}

impl TableRow<'_> {
    /// Field `col`, or an error naming the line when the row has no such field.
    pub(super) fn field(&self, col: usize) -> Result<String> {
        self.fields.get(col).cloned().ok_or_else(|| {
            format_err(
                self.path,
                Some(self.line),
                format!(
                    "expected {} fields as in the header, found {}",
                    self.width,
                    self.fields.len()
                ),
            )
        })
    }
}

/// The header of `text` (the contents of `path`) and its data rows, blank lines skipped. Rows are
/// parsed as they are taken, so a bad header is reported before a bad row further down.
pub(super) fn table<'a>(
    path: &'a Path,
    text: &'a str,
    delimiter: u8,
) -> Result<(Vec<String>, impl Iterator<Item = Result<TableRow<'a>>> + 'a)> {
    let mut rows = parse_delimited(text, delimiter)
        .map(move |row| row.map_err(|(line, message)| format_err(path, Some(line), message)));
    let Some(header) = rows.next().transpose()? else {
        return Err(format_err(path, Some(1), "empty file: expected a header"));
    };
    let width = header.fields.len();
    let rows = rows
        .filter(|row| {
            // A blank line.
            !matches!(row, Ok(r) if r.fields.len() == 1 && r.fields[0].trim().is_empty())
        })
        .map(move |row| {
            row.map(|Row { line, fields }| TableRow {
                path,
                width,
                line,
                fields,
            })
        });
    Ok((header.fields, rows))
}

/// One row of a delimited file and the line it starts on (1-based).
#[derive(Debug, PartialEq, Eq)]
struct Row {
    line: usize,
    fields: Vec<String>,
}

/// Split delimited text into rows: fields may be quoted with `"` (a doubled `""` is a quote),
/// and a quoted field may span lines. Errors carry the line where the problem starts.
fn parse_delimited(
    text: &str,
    delimiter: u8,
) -> impl Iterator<Item = std::result::Result<Row, (usize, String)>> + '_ {
    let bytes = text.as_bytes();
    let mut pos = 0;
    let mut line = 1;
    std::iter::from_fn(move || {
        if pos >= bytes.len() {
            return None;
        }
        let start_line = line;
        let mut fields = Vec::new();
        let mut field = Vec::new();
        let mut quoted = false; // inside quotes
        let mut was_quoted = false; // this field began with a quote
        loop {
            let Some(&b) = bytes.get(pos) else {
                if quoted {
                    return Some(Err((start_line, "unterminated quoted field".into())));
                }
                break;
            };
            pos += 1;
            if quoted {
                match b {
                    b'"' if bytes.get(pos) == Some(&b'"') => {
                        field.push(b'"');
                        pos += 1;
                    }
                    b'"' => quoted = false,
                    b'\n' => {
                        line += 1;
                        field.push(b);
                    }
                    _ => field.push(b),
                }
            } else if b == b'"' && field.is_empty() && !was_quoted {
                quoted = true;
                was_quoted = true;
            } else if b == delimiter {
                fields.push(take_field(&mut field, &mut was_quoted));
            } else if b == b'\n' {
                line += 1;
                break;
            } else if b == b'\r' && bytes.get(pos) == Some(&b'\n') {
                // CRLF: the '\n' ends the row.
            } else if was_quoted {
                return Some(Err((
                    start_line,
                    format!("unexpected {:?} after a closing quote", b as char),
                )));
            } else {
                field.push(b);
            }
        }
        fields.push(take_field(&mut field, &mut was_quoted));
        Some(Ok(Row {
            line: start_line,
            fields,
        }))
    })
}

fn take_field(field: &mut Vec<u8>, was_quoted: &mut bool) -> String {
    *was_quoted = false;
    // The input is a &str and we split only at ASCII bytes, so every field is valid UTF-8.
    String::from_utf8(std::mem::take(field)).expect("fields split at ASCII bytes")
}
