//! The `download` kind: get image–caption data into an artifact of the one layout the rest of the
//! pipeline reads — `images/` and `captions.jsonl` (image path, caption, label, question–answer
//! pairs). Sources: `synthetic` (the offline default: procedurally drawn shapes) and `local` (an
//! image folder with a CSV/TSV/JSONL captions file).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail};
use rayon::prelude::*;
use serde::Deserialize;
use serde_json::Value;

use super::{Kind, StageContext, params};
use crate::ml::data::captions::{CaptionRecord, read_captions, write_jsonl};
use crate::ml::data::shapes::{ShapesConfig, classes, render_png_bytes};

pub struct Download;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SyntheticParams {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LocalParams {
    /// The captions file, workspace-relative; list it (and the images) in the stage's `inputs`.
    captions: String,
    /// Where the images are; by default the captions file's folder.
    images: Option<String>,
}

impl Kind for Download {
    fn name(&self) -> &'static str {
        "download"
    }

    fn version(&self) -> &'static str {
        "1"
    }

    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        let mut params = ctx.params.clone();
        let source = match params.as_object_mut().and_then(|p| p.remove("source")) {
            Some(Value::String(s)) => s,
            None => "synthetic".to_string(),
            Some(other) => bail!(
                "stage `{}`: `source` must be a string, not {other}",
                ctx.stage
            ),
        };
        match source.as_str() {
            "synthetic" => synthetic(ctx, params::read_value(ctx, params)?),
            "local" => local(ctx, params::read_value(ctx, params)?),
            other => bail!(
                "stage `{}`: unknown source `{other}`: expected `synthetic` or `local`",
                ctx.stage
            ),
        }
    }
}

fn synthetic(ctx: &StageContext<'_>, p: SyntheticParams) -> anyhow::Result<()> {
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

fn local(ctx: &StageContext<'_>, p: LocalParams) -> anyhow::Result<()> {
    let captions = ctx.workspace.join(&p.captions);
    require_input(ctx, &p.captions)?;
    let image_root: PathBuf = match &p.images {
        Some(dir) => {
            require_input(ctx, dir)?;
            ctx.workspace.join(dir)
        }
        None => captions.parent().unwrap_or(Path::new(".")).to_path_buf(),
    };
    let records = read_captions(&captions)?;
    std::fs::create_dir_all(ctx.out_dir.join("images"))?;
    let mut kept = Vec::with_capacity(records.len());
    let mut missing = 0u64;
    for (i, mut record) in records.into_iter().enumerate() {
        let source = image_root.join(&record.image);
        let name = artifact_name(&record.image, i);
        let copied = ctx
            .out_dir
            .join(&name)
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all);
        match copied.and_then(|()| std::fs::copy(&source, ctx.out_dir.join(&name))) {
            Ok(_) => {
                record.image = name;
                kept.push(record);
            }
            Err(e) => {
                missing += 1;
                ctx.log(&format!("skipped {}: {e}", source.display()));
            }
        }
    }
    if kept.is_empty() {
        bail!(
            "stage `{}`: none of the images listed in {} could be read (see the log)",
            ctx.stage,
            p.captions
        );
    }
    write_jsonl(&ctx.out_dir.join("captions.jsonl"), &kept)?;
    let mut labels: Vec<String> = kept.iter().filter_map(|r| r.label.clone()).collect();
    labels.sort();
    labels.dedup();
    if !labels.is_empty() {
        std::fs::write(
            ctx.out_dir.join("classes.json"),
            serde_json::to_string_pretty(&labels)?,
        )?;
    }
    ctx.metric("images_ok", None, kept.len() as f64);
    ctx.metric("images_skipped", None, missing as f64);
    Ok(())
}

/// Where a local image goes in the artifact: under `images/` by its own relative path, so logs and
/// captions keep the user's names; by its position when the path is absolute or climbs out.
fn artifact_name(image: &str, index: usize) -> String {
    let plain = Path::new(image)
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    if plain && !image.is_empty() {
        format!("images/{image}")
    } else {
        let extension = Path::new(image)
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("img");
        format!("images/{index:06}.{}", extension.to_ascii_lowercase())
    }
}

/// Local data must be a declared input, or edits to it would not make the stage stale.
fn require_input(ctx: &StageContext<'_>, path: &str) -> anyhow::Result<()> {
    let covered = ctx
        .inputs
        .iter()
        .any(|i| path == i || path.starts_with(&format!("{i}/")));
    if !covered {
        bail!(
            "stage `{}` reads {path}, which is not among its `inputs`: add it to `inputs` in the Stagefile \
             so that changing it reruns the stage",
            ctx.stage
        );
    }
    Ok(())
}
