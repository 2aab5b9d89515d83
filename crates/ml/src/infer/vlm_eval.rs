//! Held-out measures of a VLM: the caption loss of vlm-pretrain, and the exact-match accuracy of
//! greedy answers to the validation images' questions for finetune.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Result, Tensor};
use serde::Serialize;

use super::generate::{Prompt, SamplingConfig, generate};
use crate::data::batch::batches;
use crate::data::captions::CaptionRecord;
use crate::data::chat::ChatTemplate;
use crate::data::conversations::Sequences;
use crate::data::image::normalize_into;
use crate::data::shards::ShardSet;
use crate::data::tokenizer::Tokenizer;
use crate::models::vlm::Vlm;
use crate::train::vlm::VlmBatch;

/// Mean loss over the split in `dir` (its shards and `sequences`), in batches of `batch_size`.
pub fn mean_loss(
    model: &Vlm,
    dir: &Path,
    sequences: &Sequences,
    pad_id: u32,
    batch_size: usize,
    device: &Device,
) -> Result<f64> {
    let set = ShardSet::open(dir)?;
    let (mut weighted, mut rows) = (0.0, 0usize);
    for batch in batches(set.iter(), set.spec(), batch_size.max(1), false) {
        let batch = batch?;
        let image_size = model.cfg.vision.image_size;
        if let Some(b) = VlmBatch::new(&batch, sequences, image_size, pad_id, device)? {
            weighted += b.loss(model, 0, 1)?.to_scalar::<f32>()? as f64 * b.rows() as f64;
            rows += b.rows();
        }
    }
    Ok(if rows == 0 {
        f64::NAN
    } else {
        weighted / rows as f64
    })
}

/// Exact-match accuracy of greedy answers, overall and per question kind.
#[derive(Debug, Clone, Serialize)]
pub struct ExactMatch {
    pub accuracy: f64,
    pub questions: usize,
    /// kind → (correct, asked).
    pub per_kind: BTreeMap<String, (usize, usize)>,
    /// A few (question, expected, answered) triples, wrong ones first, for the log.
    pub examples: Vec<(String, String, String)>,
}

/// One question about one image: the image's normalised pixels, the expected answer, its kind.
struct Asked<'a> {
    pixels: Vec<f32>,
    answer: &'a str,
    kind: &'a str,
}

/// Answers are compared without case, surrounding space or a final full stop.
pub fn normalize_answer(text: &str) -> String {
    text.trim().trim_end_matches('.').trim().to_lowercase()
}

/// Ask every question of the first `max_images` records of the split in `dir` (shards +
/// `records`, aligned), one question per prompt with the image, and compare the greedy answers.
#[allow(clippy::too_many_arguments)]
pub fn exact_match(
    model: &Vlm,
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    dir: &Path,
    records: &[CaptionRecord],
    max_images: usize,
    batch_size: usize,
    device: &Device,
) -> Result<ExactMatch> {
    let set = ShardSet::open(dir)?;
    let image_size = model.cfg.vision.image_size;
    let image_len = 3 * image_size * image_size;
    // Questions grouped by their text: one prompt, many images, one batch.
    let mut by_question: BTreeMap<&str, Vec<Asked>> = BTreeMap::new();
    for record in set.iter().take(max_images) {
        let record = record?;
        let Some(caption) = records.get(record.index as usize) else {
            candle_core::bail!(
                "{}: the captions list has fewer records than the shards",
                dir.display()
            );
        };
        let mut pixels = vec![0f32; image_len];
        normalize_into(&record.image, &mut pixels);
        for qa in &caption.qa {
            let kind = qa.kind.as_deref().unwrap_or("question");
            by_question
                .entry(qa.question.as_str())
                .or_default()
                .push(Asked {
                    pixels: pixels.clone(),
                    answer: qa.answer.as_str(),
                    kind,
                });
        }
    }
    let sampling = SamplingConfig {
        max_new_tokens: 16,
        stop_tokens: vec![template.im_end, tokenizer.eos_id()],
        ..SamplingConfig::default()
    };
    let mut per_kind: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let (mut wrong, mut right) = (Vec::new(), Vec::new());
    for (question, asked) in &by_question {
        let prompt = template.prompt(tokenizer, &[], question, true)?;
        let at = prompt.image_at.expect("the prompt has an image");
        for chunk in asked.chunks(batch_size.max(1)) {
            let n = chunk.len();
            let pixels: Vec<f32> = chunk
                .iter()
                .flat_map(|a| a.pixels.iter().copied())
                .collect();
            let images = Tensor::from_vec(pixels, (n, 3, image_size, image_size), device)?;
            let ids: Vec<u32> = (0..n).flat_map(|_| prompt.ids.iter().copied()).collect();
            let ids = Tensor::from_vec(ids, (n, prompt.ids.len()), device)?;
            let embeds = model.embed(&ids, Some((&images, at)))?;
            let rows: Vec<Tensor> = (0..n).map(|i| embeds.get(i)).collect::<Result<_>>()?;
            let out = generate(&model.lm, Prompt::Embeds(&rows), &sampling, |_, _| {})?;
            for (asked, tokens) in chunk.iter().zip(&out.tokens) {
                let (expected, kind) = (asked.answer, asked.kind);
                let answer = tokenizer.decode(tokens)?;
                let ok = normalize_answer(&answer) == normalize_answer(expected);
                let entry = per_kind.entry(kind.to_string()).or_default();
                entry.0 += usize::from(ok);
                entry.1 += 1;
                let example = (question.to_string(), expected.to_string(), answer);
                match ok {
                    true if right.len() < 3 => right.push(example),
                    false if wrong.len() < 7 => wrong.push(example),
                    _ => {}
                }
            }
        }
    }
    let questions: usize = per_kind.values().map(|(_, n)| n).sum();
    let correct: usize = per_kind.values().map(|(c, _)| c).sum();
    wrong.extend(right);
    Ok(ExactMatch {
        accuracy: if questions == 0 {
            0.0
        } else {
            correct as f64 / questions as f64
        },
        questions,
        per_kind,
        examples: wrong,
    })
}
