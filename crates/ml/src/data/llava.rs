//! LLaVA-Instruct / SVIT conversation files: one JSON array of samples, each
//! `{"id", "image", "conversations": [{"from": "human", "value": "<image>\nWhat …?"},
//! {"from": "gpt", "value": "…"}, …]}`. Told from other `.json` caption files by content (an
//! array whose first element has `conversations`). Each sample becomes one record whose
//! question–answer pairs are its human → gpt turns, in order, the `<image>` marker removed (the
//! chat template places the image itself). A single-turn sample's answer is also its caption:
//! LLaVA's pretraining set (LCS-558K) is in this form, a describe instruction → the caption, so
//! the caption objectives (clip-train, vlm-pretrain) can use it. Samples without an image
//! (text-only) or without a complete turn are skipped and counted.

use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::Deserialize;

use super::captions::{CaptionRecord, Qa};
use super::{Result, format_err, io_err};

#[derive(Deserialize)]
struct Sample {
    image: Option<String>,
    conversations: Vec<Message>,
}

#[derive(Deserialize)]
struct Message {
    from: String,
    value: String,
}

/// What a conversations file gave.
#[derive(Debug, Default)]
pub struct Conversations {
    pub records: Vec<CaptionRecord>,
    pub without_image: usize,
    pub without_turns: usize,
}

/// Read `path` as a LLaVA-style conversations file, or None when it is not one.
pub fn read_if_llava(path: &Path) -> Result<Option<Conversations>> {
    let mut reader = BufReader::new(std::fs::File::open(path).map_err(io_err(path))?);
    if !starts_with_conversations(&mut reader).map_err(io_err(path))? {
        return Ok(None);
    }
    let samples: Vec<Sample> = serde_json::from_reader(reader).map_err(|e| {
        format_err(
            path,
            Some(e.line()),
            format!("not a LLaVA conversations file (a list of {{image, conversations}}): {e}"),
        )
    })?;
    let mut out = Conversations::default();
    for sample in samples {
        let Some(image) = sample.image.filter(|i| !i.is_empty()) else {
            out.without_image += 1;
            continue;
        };
        let qa = turns(&sample.conversations);
        if qa.is_empty() {
            out.without_turns += 1;
            continue;
        }
        let caption = match qa.as_slice() {
            [only] => only.answer.clone(),
            _ => String::new(),
        };
        out.records.push(CaptionRecord {
            image,
            caption,
            label: None,
            qa,
            split: None,
        });
    }
    Ok(Some(out))
}

/// Human → gpt pairs in order; a human message without an answer ends the conversation.
fn turns(messages: &[Message]) -> Vec<Qa> {
    let mut qa = Vec::new();
    let mut pending: Option<String> = None;
    for m in messages {
        match (m.from.as_str(), pending.take()) {
            ("human" | "user", _) => pending = Some(strip_image_marker(&m.value)),
            ("gpt" | "assistant", Some(question)) => qa.push(Qa {
                question,
                answer: m.value.trim().to_string(),
                kind: None,
            }),
            _ => {}
        }
    }
    qa
}

fn strip_image_marker(text: &str) -> String {
    text.replace("<image>", "").trim().to_string()
}

/// Whether the file starts with `[` and, within its first 64 KiB, mentions "conversations".
fn starts_with_conversations(reader: &mut impl BufRead) -> std::io::Result<bool> {
    let head = reader.fill_buf()?;
    let text = String::from_utf8_lossy(&head[..head.len().min(1 << 16)]);
    Ok(text.trim_start().starts_with('[') && text.contains("\"conversations\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_become_records_of_their_turns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("llava_instruct.json");
        std::fs::write(
            &path,
            r#"[
              {"id": "1", "image": "coco/1.jpg", "conversations": [
                {"from": "human", "value": "<image>\nWhat is on the table?"},
                {"from": "gpt", "value": "A red apple."},
                {"from": "human", "value": "Is it ripe?"},
                {"from": "gpt", "value": "Yes."},
                {"from": "human", "value": "Anything else?"}]},
              {"id": "2", "conversations": [
                {"from": "human", "value": "Tell me a joke."}, {"from": "gpt", "value": "No."}]},
              {"id": "3", "image": "coco/3.jpg", "conversations": [{"from": "gpt", "value": "Hi"}]}
            ]"#,
        )
        .unwrap();
        let got = read_if_llava(&path).unwrap().unwrap();
        assert_eq!((got.without_image, got.without_turns), (1, 1));
        assert_eq!(got.records.len(), 1);
        let r = &got.records[0];
        assert_eq!(r.image, "coco/1.jpg");
        assert_eq!(r.caption, "", "a conversation is not a caption");
        let pairs: Vec<(&str, &str)> =
            r.qa.iter()
                .map(|q| (q.question.as_str(), q.answer.as_str()))
                .collect();
        assert_eq!(
            pairs,
            [
                ("What is on the table?", "A red apple."),
                ("Is it ripe?", "Yes.")
            ]
        );
    }

    #[test]
    fn a_single_turn_sample_answers_with_its_caption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blip_laion_cc_sbu_558k.json");
        std::fs::write(
            &path,
            r#"[{"id": "004539375", "image": "00453/004539375.jpg", "conversations": [
                {"from": "human", "value": "Render a clear and concise summary of the photo.\n<image>"},
                {"from": "gpt", "value": "select luxury furniture 3 - inch gel memory foam mattress topper"}]}]"#,
        )
        .unwrap();
        let got = read_if_llava(&path).unwrap().unwrap();
        let r = &got.records[0];
        assert_eq!(
            r.caption,
            "select luxury furniture 3 - inch gel memory foam mattress topper"
        );
        assert_eq!(
            r.qa[0].question,
            "Render a clear and concise summary of the photo."
        );
    }

    #[test]
    fn other_json_is_not_llava_and_broken_llava_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("captions.json");
        std::fs::write(&other, r#"{"image": "a.png", "caption": "x"}"#).unwrap();
        assert!(read_if_llava(&other).unwrap().is_none());
        let broken = dir.path().join("broken.json");
        std::fs::write(&broken, "[{\"image\": \"a.png\", \"conversations\": 3}]").unwrap();
        let err = read_if_llava(&broken).unwrap_err().to_string();
        assert!(
            err.contains("broken.json") && err.contains("LLaVA"),
            "{err}"
        );
    }
}
