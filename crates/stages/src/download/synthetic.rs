//! The `synthetic` source: procedurally drawn shapes with captions and question–answer pairs,
//! deterministic from a seed — the offline default.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail};
use rayon::prelude::*;
use serde::Deserialize;

use crate::StageContext;
use vlmflow_ml::data::captions::{CaptionRecord, write_jsonl};
use vlmflow_ml::data::shapes::{ShapesConfig, classes, render_png_bytes};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SyntheticParams {
    #[serde(default = "default_count")]
    count: u64,
    #[serde(default)]
    seed: u64,
    #[serde(default = "default_image_size")]
    image_size: u32,
}

fn default_count() -> u64 {
    20_000
}

fn default_image_size() -> u32 {
    32
}

pub(super) fn run(ctx: &StageContext<'_>, p: SyntheticParams) -> anyhow::Result<()> {
    if p.count == 0 || p.image_size < 16 {
        bail!(
            "stage `{}`: synthetic data needs count ≥ 1 and image_size ≥ 16",
            ctx.stage
        );
    }
    let config = ShapesConfig {
        seed: p.seed,
        image_size: p.image_size,
    };
    let images = ctx.out_dir.join("images");
    std::fs::create_dir_all(&images)?;
    let done = AtomicU64::new(0);
    let records: Vec<CaptionRecord> = (0..p.count)
        .into_par_iter()
        .map(|i| {
            let sample = config.sample(i);
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
    std::fs::write(
        ctx.out_dir.join("classes.json"),
        serde_json::to_string_pretty(&classes())?,
    )?;
    ctx.metric("images_ok", None, p.count as f64);
    ctx.metric("images_skipped", None, 0.0);
    ctx.log(&format!(
        "drew {} shapes images at {} px (seed {})",
        p.count, p.image_size, p.seed
    ));
    Ok(())
}
