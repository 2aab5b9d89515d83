//! The `cifar10` and `cifar100` sources: the binary-format datasets from a local folder or
//! archive, as PNGs with the caption "a photo of a {class}.", the class name as label, and
//! `classes.json` in the official class order (label ids index it, so it is not sorted). Test
//! images are marked `validation` and training images `train`, so preprocess keeps CIFAR's own
//! split and zero-shot-eval reads the test set.

use std::collections::HashSet;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::StageContext;
use crate::shared::inputs::require_input;
use vlmflow_ml::data::captions::{CaptionRecord, write_jsonl};
use vlmflow_ml::data::cifar::{self, Labels, Subset, Variant};
use vlmflow_ml::data::shapes::render_png_bytes;
use vlmflow_ml::data::split::Split;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CifarParams {
    /// The extracted binary folder (`data/cifar-10-batches-bin`, `data/cifar-100-binary`) or the
    /// archive as distributed (`data/cifar-10-binary.tar.gz`), workspace-relative; list it in
    /// the stage's `inputs`.
    path: String,
    /// `"test"` (default: the test batch, for zero-shot evaluation), `"train"` or `"all"`.
    #[serde(default)]
    split: Subset,
    /// CIFAR-100 only: `"fine"` (default, 100 classes) or `"coarse"` (20 superclasses).
    labels: Option<Labels>,
}

/// One image written, until the class names are known (an archive may list them last).
struct Written {
    batch: usize,
    index: u64,
    split: Split,
    label: usize,
    image: String,
}

pub(super) fn run(ctx: &StageContext<'_>, variant: Variant, p: CifarParams) -> anyhow::Result<()> {
    require_input(ctx, &p.path)?;
    let path = ctx.workspace.join(&p.path);
    if !path.exists() {
        bail!(
            "stage `{}`: {} does not exist: download and extract the {} binary version, or fix `path`",
            ctx.stage,
            p.path,
            variant.name()
        );
    }
    if variant == Variant::Cifar10 && p.labels.is_some() {
        bail!(
            "stage `{}`: `labels` chooses between CIFAR-100's label sets; CIFAR-10 has one: remove it",
            ctx.stage
        );
    }
    let labels = p.labels.unwrap_or_default();
    let batches = variant.batches(p.split);
    let mut folders = HashSet::new();
    let mut written = Vec::new();
    let classes = cifar::read(
        &path,
        variant,
        labels,
        p.split,
        |image| -> anyhow::Result<()> {
            let stem = batches[image.batch].0.trim_end_matches(".bin");
            let folder = ctx.out_dir.join("images").join(stem);
            if folders.insert(image.batch) {
                std::fs::create_dir_all(&folder)?;
            }
            let name = format!("images/{stem}/{:05}.png", image.index);
            let png = render_png_bytes(&cifar::to_image(image.pixels));
            std::fs::write(ctx.out_dir.join(&name), png)
                .with_context(|| format!("writing {name}"))?;
            written.push(Written {
                batch: image.batch,
                index: image.index,
                split: image.split,
                label: image.label,
                image: name,
            });
            if written.len().is_multiple_of(1000) {
                ctx.progress(written.len() as u64, None, "writing CIFAR images");
            }
            Ok(())
        },
    )
    .with_context(|| format!("stage `{}` reading {}", ctx.stage, p.path))?;
    if written.is_empty() {
        bail!(
            "stage `{}`: the {} batches in {} hold no image",
            ctx.stage,
            variant.name(),
            p.path
        );
    }
    // An archive's members come in any order; the artifact does not depend on it.
    written.sort_by_key(|w| (w.batch, w.index));
    let records: Vec<CaptionRecord> = written
        .into_iter()
        .map(|w| CaptionRecord {
            image: w.image,
            caption: format!("a photo of a {}.", classes[w.label]),
            label: Some(classes[w.label].clone()),
            split: Some(w.split),
            qa: Vec::new(),
        })
        .collect();
    write_jsonl(&ctx.out_dir.join("captions.jsonl"), &records)?;
    std::fs::write(
        ctx.out_dir.join("classes.json"),
        serde_json::to_string_pretty(&classes)?,
    )?;
    ctx.metric("images_ok", None, records.len() as f64);
    ctx.metric("images_skipped", None, 0.0);
    ctx.metric("classes", None, classes.len() as f64);
    ctx.log(&format!(
        "{} {:?} split: {} images, {} classes",
        variant.name(),
        p.split,
        records.len(),
        classes.len()
    ));
    Ok(())
}
