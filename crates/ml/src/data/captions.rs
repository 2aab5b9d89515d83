//! Caption files: which image goes with which caption.
//!
//! Read: CSV (`.csv`) or TSV (`.tsv`, `.txt`) with a header naming the `image` and `caption`
//! columns (any order, other columns ignored; quoted fields as in RFC 4180), or JSON Lines
//! (`.jsonl`, `.json`) with one `{"image": …, "caption": …}` object a line. Write: JSON Lines,
//! the form the synthetic generator emits, so one reader serves both. Optional `label` and
//! `qa` fields ride along in JSONL. Errors name `file:line`.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::delimited::table;
use super::split::Split;
use super::{DataError, Result, format_err, io_err};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Qa {
    pub question: String,
    pub answer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptionRecord {
    /// The image's path as written in the file (usually relative to the file's folder).
    pub image: String,
    pub caption: String,
    /// A class name, where the data has classes (zero-shot evaluation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// `"train"` or `"validation"` where the data says (CIFAR's test images are validation);
    /// otherwise preprocess splits by a hash of `image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<Split>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub qa: Vec<Qa>,
}

/// Read a caption file, choosing the format by extension.
pub fn read_captions(path: &Path) -> Result<Vec<CaptionRecord>> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "jsonl" | "json" => read_jsonl(path),
        "csv" => read_delimited(path, b','),
        "tsv" | "txt" => read_delimited(path, b'\t'),
        _ => Err(format_err(
            path,
            None,
            "unknown caption file type: expected .csv, .tsv, .txt, .jsonl or .json",
        )),
    }
}

pub fn read_jsonl(path: &Path) -> Result<Vec<CaptionRecord>> {
    let reader = BufReader::new(File::open(path).map_err(io_err(path))?);
    let mut records = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(io_err(path))?;
        if line.trim().is_empty() {
            continue;
        }
        let record: CaptionRecord = serde_json::from_str(&line)
            .map_err(|e| format_err(path, Some(i + 1), format!("invalid record: {e}")))?;
        records.push(record);
    }
    Ok(records)
}

/// Write records as JSON Lines (field order fixed, so the bytes are deterministic).
pub fn write_jsonl(path: &Path, records: &[CaptionRecord]) -> Result<()> {
    let mut out = BufWriter::new(File::create(path).map_err(io_err(path))?);
    for record in records {
        serde_json::to_writer(&mut out, record).map_err(|e| DataError::Invalid(e.to_string()))?;
        out.write_all(b"\n").map_err(io_err(path))?;
    }
    out.flush().map_err(io_err(path))
}

pub fn read_delimited(path: &Path, delimiter: u8) -> Result<Vec<CaptionRecord>> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let (header, rows) = table(path, &text, delimiter)?;
    let column = |names: &[&str]| {
        header
            .iter()
            .position(|h| names.contains(&h.trim().to_ascii_lowercase().as_str()))
    };
    let (Some(image_col), Some(caption_col)) = (
        column(&["image", "file_name", "filename", "path"]),
        column(&["caption", "text"]),
    ) else {
        return Err(format_err(
            path,
            Some(1),
            format!("header {header:?} must name an `image` and a `caption` column"),
        ));
    };
    let mut records = Vec::new();
    for row in rows {
        let row = row?;
        records.push(CaptionRecord {
            image: row.field(image_col)?,
            caption: row.field(caption_col)?,
            label: None,
            split: None,
            qa: Vec::new(),
        });
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn rec(image: &str, caption: &str) -> CaptionRecord {
        CaptionRecord {
            image: image.into(),
            caption: caption.into(),
            label: None,
            split: None,
            qa: Vec::new(),
        }
    }

    #[test]
    fn csv_with_quotes_and_extra_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "c.csv",
            "id,caption,image\r\n1,\"a dog, running\",img/1.jpg\r\n\n2,\"say \"\"hi\"\"\nthere\",img/2.jpg\n",
        );
        let records = read_captions(&path).unwrap();
        assert_eq!(
            records,
            vec![
                rec("img/1.jpg", "a dog, running"),
                rec("img/2.jpg", "say \"hi\"\nthere")
            ]
        );
    }

    #[test]
    fn tsv_and_errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "c.tsv", "image\tcaption\na.png\ta cat\nb.png\n");
        let err = read_captions(&path).unwrap_err().to_string();
        assert!(err.contains("c.tsv:3:"), "{err}");
        assert!(err.contains("expected 2 fields"), "{err}");

        let path = write(dir.path(), "h.tsv", "file\tcolour\na.png\tred\n");
        let err = read_captions(&path).unwrap_err().to_string();
        assert!(err.contains("h.tsv:1:"), "{err}");

        let path = write(dir.path(), "q.csv", "image,caption\na.png,\"open\n");
        let err = read_captions(&path).unwrap_err().to_string();
        assert!(err.contains("q.csv:2: unterminated"), "{err}");
    }

    #[test]
    fn jsonl_round_trip_and_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        let mut with_qa = rec("0.png", "a red circle");
        with_qa.label = Some("red circle".into());
        with_qa.qa.push(Qa {
            question: "What colour is the shape?".into(),
            answer: "red".into(),
            kind: Some("colour".into()),
        });
        let records = vec![with_qa, rec("1.png", "a photo of a \"blue\" square")];
        write_jsonl(&path, &records).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("{\"image\":\"0.png\",\"caption\":\"a red circle\""));
        assert!(text.lines().nth(1).unwrap().ends_with("square\"}"));
        assert_eq!(read_captions(&path).unwrap(), records);

        let path = write(
            dir.path(),
            "bad.jsonl",
            "{\"image\":\"a\",\"caption\":\"b\"}\n\n{\"image\":\"a\"}\n",
        );
        let err = read_captions(&path).unwrap_err().to_string();
        assert!(err.contains("bad.jsonl:3: invalid record"), "{err}");
    }

    #[test]
    fn unknown_extension_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "c.parquet", "");
        assert!(
            read_captions(&path)
                .unwrap_err()
                .to_string()
                .contains("c.parquet")
        );
        let missing = dir.path().join("none.csv");
        assert!(
            read_captions(&missing)
                .unwrap_err()
                .to_string()
                .contains("none.csv")
        );
    }
}
