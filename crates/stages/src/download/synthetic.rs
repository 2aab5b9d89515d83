//! The `synthetic` source: procedurally drawn shapes with captions and question–answer pairs,
//! deterministic from a seed — the offline default.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail};
use rayon::prelude::*;
use serde::Deserialize;

use crate::StageContext;
use vlmflow_ml::data::captions::{CaptionRecord, write_jsonl};
use vlmflow_ml::data::shapes::{Placement, ShapesConfig, classes, render_png_bytes};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SyntheticParams {
    #[serde(default = "default_count")]
    count: u64,
    #[serde(default)]
    seed: u64,
    #[serde(default = "default_image_size")]
    image_size: u32,
    /// Draw at several sizes instead, in turn (image i at `image_sizes[i % n]`).
    image_sizes: Option<Vec<u32>>,
    /// `grid` (near the cell's centre, the default) or `anywhere` in the cell.
    #[serde(default)]
    placement: Placement,
    /// Also write `questions.jsonl`, every sample's questions in `vqa-eval`'s format, by kind.
    #[serde(default)]
    questions: bool,
}

fn default_count() -> u64 {
    20_000
}

fn default_image_size() -> u32 {
    32
}

pub(super) fn run(ctx: &StageContext<'_>, p: SyntheticParams) -> anyhow::Result<()> {
    let sizes = p.image_sizes.clone().unwrap_or_else(|| vec![p.image_size]);
    if p.count == 0 || sizes.is_empty() || sizes.iter().any(|&s| s < 16) {
        bail!(
            "stage `{}`: synthetic data needs count ≥ 1 and image sizes ≥ 16",
            ctx.stage
        );
    }
    let configs: Vec<ShapesConfig> = sizes
        .iter()
        .map(|&image_size| ShapesConfig {
            seed: p.seed,
            image_size,
            placement: p.placement,
        })
        .collect();
    let images = ctx.out_dir.join("images");
    std::fs::create_dir_all(&images)?;
    let done = AtomicU64::new(0);
    let records: Vec<CaptionRecord> = (0..p.count)
        .into_par_iter()
        .map(|i| {
            let sample = configs[i as usize % configs.len()].sample(i);
            let name = format!("images/{i:06}.png");
            std::fs::write(ctx.out_dir.join(&name), render_png_bytes(&sample.image))
                .with_context(|| format!("writing {name}"))?;
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_multiple_of(1000) {
                ctx.progress(n, Some(p.count), "drawing shapes");
            }
            Ok(sample.to_record(name))
        })
        .collect::<anyhow::Result<_>>()?;
    write_jsonl(&ctx.out_dir.join("captions.jsonl"), &records)?;
    if p.questions {
        write_questions(&ctx.out_dir.join("questions.jsonl"), &records)?;
    }
    std::fs::write(
        ctx.out_dir.join("classes.json"),
        serde_json::to_string_pretty(&classes())?,
    )?;
    ctx.metric("images_ok", None, p.count as f64);
    ctx.metric("images_skipped", None, 0.0);
    let sizes: Vec<String> = sizes.iter().map(u32::to_string).collect();
    ctx.log(&format!(
        "drew {} shapes images at {} px (seed {}, placement {:?})",
        p.count,
        sizes.join("/"),
        p.seed,
        p.placement
    ));
    Ok(())
}

/// Every record's questions, one JSON line each, with its kind as the category.
fn write_questions(path: &std::path::Path, records: &[CaptionRecord]) -> anyhow::Result<()> {
    let mut text = String::new();
    for record in records {
        for qa in &record.qa {
            let line = serde_json::json!({
                "image": record.image,
                "question": qa.question,
                "answer": qa.answer,
                "category": qa.kind,
            });
            text.push_str(&line.to_string());
            text.push('\n');
        }
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
