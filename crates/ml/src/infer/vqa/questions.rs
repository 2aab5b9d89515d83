//! Question files, recognised by their content: JSON Lines or a JSON array of objects with
//! `image` and `question`, and `answer` (open-ended), `answers` (VQAv2's human answers, strings or
//! `{"answer": …}` objects) or `choices` with an `answer` letter or text (multiple choice), and an
//! optional `category` (and `l2_category`); POPE's files (`image`, `text`, `label` yes/no); and
//! MMStar's parquet file (`mmstar_parquet`). Every mistake names the file and line (or item, or
//! row).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

use super::scoring::letter;

/// What a right answer is.
#[derive(Clone, Debug, PartialEq)]
pub enum Expected {
    /// Open-ended: one answer, compared after VQA's normalisation.
    Answer(String),
    /// VQAv2: the annotators' answers.
    Humans(Vec<String>),
    /// Multiple choice: the options, in order, and the right letter.
    Choice { choices: Vec<String>, right: char },
    /// POPE: is the object there?
    YesNo(bool),
    /// Multiple choice with the options written into the question (MMStar): the right letter.
    Letter(char),
}

/// Where a question's image is.
#[derive(Clone, Debug, PartialEq)]
pub enum ImageSource {
    File(PathBuf),
    /// Encoded image bytes inside the question file (MMStar's parquet).
    Embedded(Arc<[u8]>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Question {
    /// Where it was written: `questions.jsonl:12` or `questions.json item 3`.
    pub place: String,
    pub image: ImageSource,
    pub question: String,
    pub expected: Expected,
    pub category: Option<String>,
    /// A finer category within `category` (MMStar's `l2_category`).
    pub subcategory: Option<String>,
}

/// Read the questions in `path`; images are relative to `images`, else to the file's folder.
/// Every image must exist (a missing one is an error naming its line).
pub fn read(path: &Path, images: Option<&Path>) -> Result<Vec<Question>, String> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("{shown}: {e}"))?;
    if bytes.starts_with(super::mmstar_parquet::MAGIC) {
        return super::mmstar_parquet::read(path);
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("{shown}: neither text (JSON Lines, JSON) nor a parquet file"))?;
    let base = images
        .map(Path::to_path_buf)
        .unwrap_or_else(|| path.parent().unwrap_or(Path::new(".")).to_path_buf());
    let name = path
        .file_name()
        .map_or_else(|| shown.to_string(), |n| n.to_string_lossy().into_owned());
    let items = items(&text, &name)?;
    if items.is_empty() {
        return Err(format!(
            "{shown} holds no questions: write one JSON object per line with `image`, `question` \
             and `answer` (or `answers`, or `choices`)"
        ));
    }
    items
        .into_iter()
        .map(|(place, object)| question(&place, &object, &base))
        .collect()
}

/// A question's object and where it was written.
type Item = (String, Map<String, Value>);

/// The objects of a JSON array or of JSON Lines, each with where it was written.
fn items(text: &str, name: &str) -> Result<Vec<Item>, String> {
    if text.trim_start().starts_with('[') {
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("{name}: not valid JSON: {e}"))?;
        let Value::Array(list) = value else {
            unreachable!("a JSON text starting with [ is an array");
        };
        return list
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let place = format!("{name} item {}", i + 1);
                match v {
                    Value::Object(object) => Ok((place, object)),
                    _ => Err(format!("{place}: each question must be a JSON object")),
                }
            })
            .collect();
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let place = format!("{name}:{}", i + 1);
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(object)) => out.push((place, object)),
            Ok(_) => return Err(format!("{place}: each line must be a JSON object")),
            Err(e) => {
                return Err(format!(
                    "{place}: not a JSON object ({e}); a question file holds one object per line, \
                     or one JSON array"
                ));
            }
        }
    }
    Ok(out)
}

fn question(place: &str, o: &Map<String, Value>, base: &Path) -> Result<Question, String> {
    let text = |key: &str| o.get(key).and_then(Value::as_str).map(str::to_string);
    let fail = |what: String| Err(format!("{place}: {what}"));
    let Some(image) = text("image") else {
        return fail("no `image` (a path relative to the question file, or to `images`)".into());
    };
    let image_path = base.join(&image);
    if !image_path.is_file() {
        return fail(format!("image {} does not exist", image_path.display()));
    }
    let category = text("category");
    let subcategory = text("l2_category");
    let image = ImageSource::File(image_path);
    // POPE: `text` asks, `label` says yes or no.
    if let (None, Some(asked), Some(label)) = (text("question"), text("text"), text("label")) {
        let yes = match label.to_lowercase().as_str() {
            "yes" => true,
            "no" => false,
            other => return fail(format!("`label` is `{other}`; POPE's labels are yes or no")),
        };
        return Ok(Question {
            place: place.to_string(),
            image,
            question: asked,
            expected: Expected::YesNo(yes),
            category,
            subcategory,
        });
    }
    let Some(asked) = text("question") else {
        return fail("no `question`".into());
    };
    let expected = if let Some(choices) = o.get("choices") {
        choice(place, choices, o.get("answer"))?
    } else if let Some(answers) = o.get("answers") {
        Expected::Humans(humans(place, answers)?)
    } else if let Some(answer) = text("answer") {
        Expected::Answer(answer)
    } else {
        return fail("no `answer`, `answers` or `choices`: say what the right answer is".into());
    };
    Ok(Question {
        place: place.to_string(),
        image,
        question: asked,
        expected,
        category,
        subcategory,
    })
}

fn choice(place: &str, choices: &Value, answer: Option<&Value>) -> Result<Expected, String> {
    let list: Option<Vec<String>> = choices.as_array().and_then(|items| {
        items
            .iter()
            .map(|c| c.as_str().map(str::to_string))
            .collect()
    });
    let Some(choices) = list.filter(|l| (2..=26).contains(&l.len())) else {
        return Err(format!(
            "{place}: `choices` must be a list of 2 to 26 strings"
        ));
    };
    let letters: String = (0..choices.len()).map(letter).collect();
    let Some(answer) = answer.and_then(Value::as_str) else {
        return Err(format!(
            "{place}: no `answer`: give the right option's letter ({letters}) or its text"
        ));
    };
    let trimmed = answer.trim();
    let by_letter = trimmed
        .chars()
        .next()
        .filter(|_| trimmed.chars().count() == 1)
        .map(|c| c.to_ascii_uppercase())
        .filter(|c| letters.contains(*c));
    let by_text = choices.iter().position(|c| c.trim() == trimmed).map(letter);
    match by_letter.or(by_text) {
        Some(right) => Ok(Expected::Choice { choices, right }),
        None => Err(format!(
            "{place}: the answer `{answer}` is none of the choices' letters ({letters}) or texts"
        )),
    }
}

fn humans(place: &str, answers: &Value) -> Result<Vec<String>, String> {
    let list: Option<Vec<String>> = answers.as_array().and_then(|items| {
        items
            .iter()
            .map(|a| match a {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o.get("answer").and_then(Value::as_str).map(str::to_string),
                _ => None,
            })
            .collect()
    });
    match list {
        Some(list) if !list.is_empty() => Ok(list),
        _ => Err(format!(
            "{place}: `answers` must be a non-empty list of strings or of {{\"answer\": …}} objects"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn every_format_is_recognised_by_its_content() {
        let dir = folder(&[
            ("a.png", "png"),
            (
                "q.jsonl",
                concat!(
                    r#"{"image": "a.png", "question": "What colour?", "answer": "red", "category": "colour"}"#,
                    "\n\n",
                    r#"{"image": "a.png", "question": "What is it?", "answers": [{"answer": "dog"}, {"answer": "cat"}]}"#,
                    "\n",
                    r#"{"image": "a.png", "question": "Which shape?", "choices": ["circle", "square"], "answer": "b"}"#,
                    "\n",
                    r#"{"image": "a.png", "question": "Which shape?", "choices": ["circle", "square"], "answer": "circle"}"#,
                    "\n",
                    r#"{"question_id": 1, "image": "a.png", "text": "Is there a dog?", "label": "no"}"#,
                    "\n"
                ),
            ),
        ]);
        let qs = read(&dir.path().join("q.jsonl"), None).unwrap();
        assert_eq!(qs.len(), 5);
        assert_eq!(qs[0].expected, Expected::Answer("red".into()));
        assert_eq!(qs[0].category.as_deref(), Some("colour"));
        assert_eq!(qs[0].image, ImageSource::File(dir.path().join("a.png")));
        assert_eq!(
            qs[1].expected,
            Expected::Humans(vec!["dog".into(), "cat".into()])
        );
        assert_eq!(qs[1].place, "q.jsonl:3");
        let two = vec!["circle".to_string(), "square".to_string()];
        assert_eq!(
            qs[2].expected,
            Expected::Choice {
                choices: two.clone(),
                right: 'B'
            }
        );
        assert_eq!(
            qs[3].expected,
            Expected::Choice {
                choices: two,
                right: 'A'
            }
        );
        assert_eq!(qs[4].expected, Expected::YesNo(false));
        assert_eq!(qs[4].question, "Is there a dog?");

        let array = folder(&[
            ("b.png", "png"),
            (
                "q.json",
                r#"[{"image": "b.png", "question": "Q?", "answers": ["x", "x"]}]"#,
            ),
        ]);
        let qs = read(&array.path().join("q.json"), None).unwrap();
        assert_eq!(qs[0].place, "q.json item 1");
    }

    #[test]
    fn mistakes_name_the_file_and_line() {
        let err = |text: &str| {
            let dir = folder(&[("a.png", "png"), ("q.jsonl", text)]);
            read(&dir.path().join("q.jsonl"), None).unwrap_err()
        };
        let e = err("");
        assert!(e.contains("q.jsonl holds no questions"), "{e}");
        let e = err(
            "{\"image\": \"a.png\", \"question\": \"Q\", \"answer\": \"x\"}\n{\"image\": \"gone.png\", \"question\": \"Q\", \"answer\": \"x\"}\n",
        );
        assert!(
            e.contains("q.jsonl:2: image") && e.contains("gone.png does not exist"),
            "{e}"
        );
        let e = err(
            "{\"image\": \"a.png\", \"question\": \"Q\", \"choices\": [\"x\", \"y\"], \"answer\": \"C\"}\n",
        );
        assert!(
            e.contains("q.jsonl:1: the answer `C` is none of the choices' letters (AB)"),
            "{e}"
        );
        let e = err("not json\n");
        assert!(e.contains("q.jsonl:1: not a JSON object"), "{e}");
        let e = err("{\"image\": \"a.png\", \"question\": \"Q\"}\n");
        assert!(
            e.contains("q.jsonl:1: no `answer`, `answers` or `choices`"),
            "{e}"
        );
        let e = err("{\"image\": \"a.png\", \"text\": \"Q\", \"label\": \"maybe\"}\n");
        assert!(e.contains("POPE's labels are yes or no"), "{e}");
    }

    #[test]
    fn images_may_live_elsewhere() {
        let images = folder(&[("COCO_1.jpg", "jpg")]);
        let questions = folder(&[(
            "pope.jsonl",
            r#"{"image": "COCO_1.jpg", "text": "Is there a cat?", "label": "yes"}"#,
        )]);
        let qs = read(&questions.path().join("pope.jsonl"), Some(images.path())).unwrap();
        assert_eq!(
            qs[0].image,
            ImageSource::File(images.path().join("COCO_1.jpg"))
        );
        assert!(read(&questions.path().join("pope.jsonl"), None).is_err());
    }
}
