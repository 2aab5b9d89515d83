//! MMStar's published parquet file as it is (Lin-Chen/MMStar, `mmstar.parquet`): one row per
//! question, with `question` (the options written into it: `…\nOptions: A: …, B: …`), `image`
//! (Hugging Face's Image feature, a struct of `bytes` and `path`, or plain bytes), `answer` (the
//! right letter), `category` and `l2_category`; other columns (`index`, `meta_info`) are not
//! read. Images stay encoded in memory until asked about. Mistakes name the file and row.

use std::path::Path;
use std::sync::Arc;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, Row};

use super::questions::{Expected, ImageSource, Question};

/// How a parquet file starts.
pub const MAGIC: &[u8] = b"PAR1";

/// Every row of the parquet file at `path` as a question.
pub fn read(path: &Path) -> Result<Vec<Question>, String> {
    let shown = path.display();
    let name = path
        .file_name()
        .map_or_else(|| shown.to_string(), |n| n.to_string_lossy().into_owned());
    let file = std::fs::File::open(path).map_err(|e| format!("{shown}: {e}"))?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| format!("{shown}: not a readable parquet file: {e}"))?;
    let rows = reader
        .get_row_iter(None)
        .map_err(|e| format!("{shown}: {e}"))?;
    let mut out = Vec::new();
    for (i, row) in rows.enumerate() {
        let place = format!("{name} row {}", i + 1);
        let row = row.map_err(|e| format!("{place}: {e}"))?;
        out.push(question(&place, &row)?);
    }
    if out.is_empty() {
        return Err(format!("{shown} holds no rows"));
    }
    Ok(out)
}

fn question(place: &str, row: &Row) -> Result<Question, String> {
    let field = |name: &str| {
        row.get_column_iter()
            .find(|(column, _)| column.as_str() == name)
            .map(|(_, value)| value)
    };
    let text = |name: &str| match field(name) {
        Some(Field::Str(s)) => Some(s.clone()),
        _ => None,
    };
    let required = |name: &str, what: &str| {
        text(name).ok_or_else(|| {
            format!("{place}: no `{name}` text: MMStar's parquet has {what} in that column")
        })
    };
    let asked = required("question", "the question with its options")?;
    let answer = required("answer", "the right option's letter")?;
    let bytes = match field("image") {
        Some(Field::Bytes(b)) => b.data().to_vec(),
        Some(Field::Group(image)) => match image
            .get_column_iter()
            .find(|(name, _)| name.as_str() == "bytes")
        {
            Some((_, Field::Bytes(b))) => b.data().to_vec(),
            _ => return Err(format!("{place}: the `image` struct has no `bytes`")),
        },
        _ => {
            return Err(format!(
                "{place}: no `image` bytes (MMStar's parquet holds each image encoded in that column)"
            ));
        }
    };
    let right = letter_answer(&asked, &answer).map_err(|e| format!("{place}: {e}"))?;
    Ok(Question {
        place: place.to_string(),
        image: ImageSource::Embedded(Arc::from(bytes)),
        question: asked,
        expected: Expected::Letter(right),
        category: text("category"),
        subcategory: text("l2_category"),
    })
}

/// The right letter of `answer`, which must be one of the options the question lists (any
/// letter when it lists none in MMStar's `Options: A: …, B: …` way).
fn letter_answer(question: &str, answer: &str) -> Result<char, String> {
    let offered = offered_letters(question);
    let trimmed = answer.trim();
    let mut chars = trimmed.chars();
    match (chars.next().map(|c| c.to_ascii_uppercase()), chars.next()) {
        (Some(c), None)
            if c.is_ascii_uppercase() && offered.as_ref().is_none_or(|o| o.contains(c)) =>
        {
            Ok(c)
        }
        _ => Err(format!(
            "the answer `{answer}` is not one of the option letters the question lists ({})",
            offered.as_deref().unwrap_or("A–Z")
        )),
    }
}

/// The letters after `Options:` in MMStar's way of listing them (`A: …, B: …`), or None.
fn offered_letters(question: &str) -> Option<String> {
    let (_, options) = question.rsplit_once("Options:")?;
    let letters: String = ('A'..='Z')
        .filter(|c| {
            options.trim_start().starts_with(&format!("{c}:"))
                || options.contains(&format!(", {c}:"))
        })
        .collect();
    (!letters.is_empty()).then_some(letters)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/mmstar")
            .join(name)
    }

    #[test]
    fn both_image_layouts_and_codecs_read_every_row() {
        let sample = read(&fixture("mmstar_sample.parquet")).unwrap();
        assert_eq!(sample.len(), 8);
        let q = &sample[1];
        assert_eq!(q.place, "mmstar_sample.parquet row 2");
        assert!(
            q.question
                .ends_with("Options: A: green, B: blue, C: yellow, D: red")
        );
        assert_eq!(q.expected, Expected::Letter('A'));
        assert_eq!(q.category.as_deref(), Some("coarse perception"));
        assert_eq!(q.subcategory.as_deref(), Some("image style & quality"));
        let ImageSource::Embedded(bytes) = &q.image else {
            panic!("{:?}", q.image)
        };
        assert!(bytes.starts_with(b"\x89PNG"));

        let zstd = read(&fixture("binary_zstd.parquet")).unwrap();
        assert_eq!(zstd.len(), 7);
        assert_eq!(zstd[1].expected, sample[1].expected);
        assert_eq!(zstd[1].image, sample[1].image);
    }

    #[test]
    fn an_answer_among_the_options_is_required() {
        let q = "Which?\nOptions: A: red, B: green, C: blue";
        assert_eq!(offered_letters(q).as_deref(), Some("ABC"));
        assert_eq!(letter_answer(q, "b"), Ok('B'));
        let e = letter_answer(q, "D").unwrap_err();
        assert!(
            e.contains("`D` is not one of the option letters the question lists (ABC)"),
            "{e}"
        );
        assert!(letter_answer(q, "red").is_err());
        assert_eq!(letter_answer("No options here", "E"), Ok('E'));
    }

    #[test]
    fn a_file_that_is_not_parquet_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.parquet");
        std::fs::write(&path, b"PAR1 and then nothing").unwrap();
        let e = read(&path).unwrap_err();
        assert!(
            e.contains("broken.parquet: not a readable parquet file"),
            "{e}"
        );
    }
}
