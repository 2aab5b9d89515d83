//! Training sequences for the language model and the VLM, made from a split's caption records
//! (`captions.jsonl` beside its shards, one record per shard record, in shard order).
//!
//! The text is tokenized here, with the language model's own tokenizer and chat template, so
//! the same shards serve a tokenizer trained on the captions or a Qwen2.5 one.

use super::captions::{CaptionRecord, read_jsonl};
use super::chat::{CAPTION_PROMPT, ChatTemplate, Tokenized, Turn};
use super::tokenizer::Tokenizer;
use super::{Result, io_err};
use crate::rng::Rng;

use std::path::Path;

/// What a sequence teaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    /// Text alone, every token learned: the caption as an answer to the caption prompt, then
    /// the question–answer turns (lm-train: the language before the image).
    Text,
    /// The image, the caption prompt, the caption (vlm-pretrain: alignment).
    Caption,
    /// The image and the question–answer turns, the loss on answers (finetune). With
    /// `shuffle_turns`, each record's turns come in an order of their own (seeded by its index),
    /// so that every question is sometimes the first, as one-question prompts are at inference.
    Answers { shuffle_turns: bool },
}

/// The sequences of one split, by record index; `None` where a record has nothing to teach for
/// the objective (no question–answer pairs) or is longer than `max_len`.
#[derive(Debug)]
pub struct Sequences {
    pub by_index: Vec<Option<Tokenized>>,
    pub too_long: usize,
    pub empty: usize,
}

impl Sequences {
    pub fn get(&self, index: u64) -> Option<&Tokenized> {
        self.by_index.get(index as usize)?.as_ref()
    }

    pub fn usable(&self) -> usize {
        self.by_index.iter().flatten().count()
    }
}

/// The caption records of a split folder (`<split>/captions.jsonl`).
pub fn read_split_records(split_dir: &Path) -> Result<Vec<CaptionRecord>> {
    let path = split_dir.join("captions.jsonl");
    if !path.is_file() {
        return Err(io_err(&path)(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "missing: the data stage must be a preprocess stage of vlmflow ≥ 0.2",
        )));
    }
    read_jsonl(&path)
}

/// Tokenize every record for `objective`. `seed` orders shuffled turns.
pub fn build(
    records: &[CaptionRecord],
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    objective: Objective,
    max_len: usize,
    seed: u64,
) -> Result<Sequences> {
    let mut out = Sequences {
        by_index: Vec::with_capacity(records.len()),
        too_long: 0,
        empty: 0,
    };
    let rng = Rng::new(seed);
    for (i, record) in records.iter().enumerate() {
        let qa_turns = || -> Vec<Turn> {
            record
                .qa
                .iter()
                .map(|qa| Turn {
                    user: qa.question.clone(),
                    assistant: qa.answer.clone(),
                })
                .collect()
        };
        let sequence = match objective {
            Objective::Text => {
                let mut turns = vec![caption_turn(record)];
                turns.extend(qa_turns());
                let mut t = template.encode(tokenizer, &turns, false)?;
                t.labels = t.ids.iter().map(|&id| i64::from(id)).collect();
                Some(t)
            }
            Objective::Caption => {
                Some(template.encode(tokenizer, &[caption_turn(record)], true)?)
            }
            Objective::Answers { shuffle_turns } => {
                let mut turns = qa_turns();
                if shuffle_turns {
                    rng.fork(i as u64).shuffle(&mut turns);
                }
                if turns.is_empty() {
                    None
                } else {
                    Some(template.encode(tokenizer, &turns, true)?)
                }
            }
        };
        match sequence {
            None => {
                out.empty += 1;
                out.by_index.push(None);
            }
            Some(t) if t.ids.len() > max_len => {
                out.too_long += 1;
                out.by_index.push(None);
            }
            Some(t) => out.by_index.push(Some(t)),
        }
    }
    Ok(out)
}

fn caption_turn(record: &CaptionRecord) -> Turn {
    Turn {
        user: CAPTION_PROMPT.into(),
        assistant: record.caption.clone(),
    }
}

/// Sequences of a batch, right-padded to the longest: ids with `pad_id`, labels with
/// [`super::chat::IGNORE`]. Returns `(ids, labels, seq_len)`, row-major.
pub fn pad_batch(rows: &[&Tokenized], pad_id: u32) -> (Vec<u32>, Vec<i64>, usize) {
    let len = rows.iter().map(|t| t.ids.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(rows.len() * len);
    let mut labels = Vec::with_capacity(rows.len() * len);
    for t in rows {
        ids.extend_from_slice(&t.ids);
        ids.extend(std::iter::repeat_n(pad_id, len - t.ids.len()));
        labels.extend_from_slice(&t.labels);
        labels.extend(std::iter::repeat_n(
            super::chat::IGNORE,
            len - t.labels.len(),
        ));
    }
    (ids, labels, len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::captions::Qa;
    use crate::data::chat::IGNORE;
    use crate::data::tokenizer::{BpeConfig, train_bpe};

    fn record(qa: &[(&str, &str)]) -> CaptionRecord {
        CaptionRecord {
            image: "x.png".into(),
            caption: "a red circle.".into(),
            label: None,
            qa: qa
                .iter()
                .map(|(q, a)| Qa {
                    question: q.to_string(),
                    answer: a.to_string(),
                    kind: None,
                })
                .collect(),
            split: None,
        }
    }

    #[test]
    fn objectives_choose_turns_image_and_labels() {
        let tok = train_bpe(
            ["a red circle. What colour? red Where? left"].iter(),
            &BpeConfig::default(),
        )
        .unwrap();
        let chat = ChatTemplate::new(&tok, 4, None).unwrap();
        let records = [
            record(&[("What colour?", "red"), ("Where?", "left")]),
            record(&[]),
        ];
        let learned = |t: &Tokenized| -> String {
            let ids: Vec<u32> = t
                .labels
                .iter()
                .filter(|&&l| l != IGNORE)
                .map(|&l| l as u32)
                .collect();
            tok.decode(&ids).unwrap()
        };

        let text = build(&records, &tok, &chat, Objective::Text, 512, 0).unwrap();
        let t = text.get(0).unwrap();
        assert!(t.image_at.is_none());
        assert!(t.labels.iter().all(|&l| l != IGNORE), "text: every token");

        let caption = build(&records, &tok, &chat, Objective::Caption, 512, 0).unwrap();
        let c = caption.get(1).unwrap();
        assert!(c.image_at.is_some());
        assert_eq!(learned(c).trim(), "a red circle.");

        let answers = Objective::Answers {
            shuffle_turns: false,
        };
        let qa = build(&records, &tok, &chat, answers, 512, 0).unwrap();
        assert_eq!(learned(qa.get(0).unwrap()).replace(' ', ""), "redleft");
        assert!(qa.get(1).is_none());
        assert_eq!((qa.empty, qa.usable()), (1, 1));

        let short = build(&records, &tok, &chat, Objective::Caption, 10, 0).unwrap();
        assert_eq!((short.too_long, short.usable()), (2, 0));

        let (ids, labels, len) = pad_batch(&[c, qa.get(0).unwrap()], 1);
        assert_eq!(ids.len(), 2 * len);
        assert_eq!(labels[len - 1], IGNORE);
    }

    #[test]
    fn shuffled_turns_depend_on_the_record_and_seed_only() {
        let tok = train_bpe(["a b c d e f"].iter(), &BpeConfig::default()).unwrap();
        let chat = ChatTemplate::new(&tok, 1, None).unwrap();
        let qa: Vec<(String, String)> =
            (0..6).map(|i| (format!("q{i}"), format!("a{i}"))).collect();
        let pairs: Vec<(&str, &str)> = qa.iter().map(|(q, a)| (q.as_str(), a.as_str())).collect();
        let records = vec![record(&pairs); 8];
        let objective = Objective::Answers {
            shuffle_turns: true,
        };
        let a = build(&records, &tok, &chat, objective, 512, 7).unwrap();
        let b = build(&records, &tok, &chat, objective, 512, 7).unwrap();
        assert_eq!(a.by_index, b.by_index);
        let distinct: std::collections::HashSet<_> = a
            .by_index
            .iter()
            .map(|t| t.as_ref().unwrap().ids.clone())
            .collect();
        assert!(distinct.len() > 1, "records get different turn orders");
    }
}
