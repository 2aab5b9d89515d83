//! Zero-shot classification with a CLIP: each class becomes text through prompt templates
//! ("a photo of a {}."), the templates' embeddings are averaged per class, and every image is
//! assigned the class whose embedding is most similar. Reports top-1/top-5, per-class accuracy
//! and a confusion matrix.

use std::path::Path;

use candle_core::{Device, Result, Tensor};
use image::{Rgb, RgbImage};

use crate::data::batch::batches;
use crate::data::shards::ShardSet;
use crate::data::tokenizer::Tokenizer;
use crate::models::clip::{Clip, l2_normalize};
use crate::train::clip::BatchTensors;

#[derive(Clone, Debug, serde::Serialize)]
pub struct ZeroShot {
    pub images: u64,
    pub top1: f64,
    pub top5: f64,
    /// (class, accuracy, images of that class)
    pub per_class: Vec<(String, f64, u64)>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<u64>>,
}

/// Fill `{}` with the class name, writing "an" before a vowel where the template says "a {}".
pub fn fill(template: &str, class: &str) -> String {
    let vowel = class
        .chars()
        .next()
        .is_some_and(|c| "aeiouAEIOU".contains(c));
    let template = if vowel {
        template.replace("a {}", "an {}")
    } else {
        template.to_string()
    };
    template.replace("{}", class)
}

/// Unit embeddings `(classes, E)` of the classes, each the renormalised mean over the templates.
pub fn class_embeddings(
    model: &Clip,
    tokenizer: &Tokenizer,
    classes: &[String],
    templates: &[String],
    device: &Device,
) -> Result<Tensor> {
    let mut rows = Vec::with_capacity(classes.len());
    for class in classes {
        let ids: Vec<Vec<u32>> = templates
            .iter()
            .map(|t| {
                tokenizer
                    .encode(&fill(t, class))
                    .map_err(candle_core::Error::from)
            })
            .collect::<Result<_>>()?;
        let max_len = model.cfg.text.max_len;
        let seq = ids.iter().map(Vec::len).max().unwrap_or(1).min(max_len);
        let mut tokens = Vec::with_capacity(ids.len() * seq);
        let mut lengths = Vec::with_capacity(ids.len());
        for mut row in ids {
            row.truncate(seq);
            lengths.push(row.len() as u32);
            row.resize(seq, tokenizer.pad_id());
            tokens.extend(row);
        }
        let n = lengths.len();
        let text = model.encode_text(
            &Tensor::from_vec(tokens, (n, seq), device)?,
            &Tensor::from_vec(lengths, n, device)?,
        )?;
        rows.push(text.mean(0)?);
    }
    l2_normalize(&Tensor::stack(&rows, 0)?)
}

/// Classify every record of the shards in `dir` (records whose label is -1 are skipped).
pub fn evaluate(
    model: &Clip,
    class_embeddings: &Tensor,
    classes: &[String],
    dir: &Path,
    batch_size: usize,
    device: &Device,
) -> Result<ZeroShot> {
    let set = ShardSet::open(dir)?;
    let k = classes.len();
    let mut confusion = vec![vec![0u64; k]; k];
    let (mut images, mut top5_hits) = (0u64, 0u64);
    for batch in batches(set.iter(), set.spec(), batch_size, false) {
        let batch = batch?;
        let inputs = BatchTensors::new(&batch, set.spec().image_size as usize, device)?;
        let scores = model
            .encode_image(&inputs.images)?
            .matmul(&class_embeddings.t()?)?;
        let ranked = scores.arg_sort_last_dim(false)?.to_vec2::<u32>()?;
        for (row, label) in ranked.iter().zip(&batch.labels) {
            let Ok(label) = usize::try_from(*label) else {
                continue;
            };
            if label >= k {
                continue;
            }
            images += 1;
            confusion[label][row[0] as usize] += 1;
            top5_hits += u64::from(row.iter().take(5).any(|&p| p as usize == label));
        }
    }
    if images == 0 {
        candle_core::bail!("{}: no labelled images to evaluate", dir.display());
    }
    let correct: u64 = (0..k).map(|c| confusion[c][c]).sum();
    let per_class = classes
        .iter()
        .enumerate()
        .map(|(c, name)| {
            let total: u64 = confusion[c].iter().sum();
            (
                name.clone(),
                if total == 0 {
                    0.0
                } else {
                    confusion[c][c] as f64 / total as f64
                },
                total,
            )
        })
        .collect();
    Ok(ZeroShot {
        images,
        top1: correct as f64 / images as f64,
        top5: top5_hits as f64 / images as f64,
        per_class,
        confusion,
    })
}

/// The confusion matrix as a heat map, `cell` pixels per entry: rows true classes, columns predicted.
pub fn confusion_image(confusion: &[Vec<u64>], cell: u32) -> RgbImage {
    let k = confusion.len() as u32;
    let mut img = RgbImage::from_pixel((k * cell).max(1), (k * cell).max(1), Rgb([255, 255, 255]));
    for (t, row) in confusion.iter().enumerate() {
        let total: u64 = row.iter().sum::<u64>().max(1);
        for (p, &n) in row.iter().enumerate() {
            let shade = 255 - (255 * n / total) as u8;
            let colour = if t == p {
                Rgb([shade, 255, shade])
            } else {
                Rgb([255, shade, shade])
            };
            for y in 0..cell {
                for x in 0..cell {
                    img.put_pixel(p as u32 * cell + x, t as u32 * cell + y, colour);
                }
            }
        }
    }
    img
}
