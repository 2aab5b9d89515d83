//! The `local` source: an image folder with a captions file, both declared inputs. The captions
//! file is CSV/TSV/JSONL, a COCO `captions_*.json` (told by its content: an object with `images`
//! and `annotations` arrays), or a LLaVA-Instruct / SVIT conversations file (a list of samples
//! with `conversations`). An image with several captions is copied once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::bail;
use serde::Deserialize;

use super::write_index;
use crate::StageContext;
use crate::shared::inputs::require_input;
use vlmflow_ml::data::captions::{CaptionRecord, read_captions};
use vlmflow_ml::data::coco::{CaptionsPerImage, read_if_coco};
use vlmflow_ml::data::llava::read_if_llava;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LocalParams {
    /// The captions file, workspace-relative; list it (and the images) in the stage's `inputs`.
    captions: String,
    /// Where the images are; by default the captions file's folder.
    images: Option<String>,
    /// COCO captions files only: `"all"` (default) makes one record per (image, caption) pair,
    /// `"first"` one record per image, with its first caption.
    captions_per_image: Option<CaptionsPerImage>,
}

pub(super) fn run(ctx: &StageContext<'_>, p: LocalParams) -> anyhow::Result<()> {
    let captions = ctx.workspace.join(&p.captions);
    require_input(ctx, &p.captions)?;
    let image_root: PathBuf = match &p.images {
        Some(dir) => {
            require_input(ctx, dir)?;
            ctx.workspace.join(dir)
        }
        None => captions.parent().unwrap_or(Path::new(".")).to_path_buf(),
    };
    let (records, uncaptioned) = read_records(ctx, &captions, p.captions_per_image)?;
    std::fs::create_dir_all(ctx.out_dir.join("images"))?;
    let mut kept = Vec::with_capacity(records.len());
    // Each image is copied once, however many captions it has: image → its artifact name.
    let mut copied: HashMap<String, Option<String>> = HashMap::new();
    for (i, mut record) in records.into_iter().enumerate() {
        let artifact = copied.entry(record.image.clone()).or_insert_with(|| {
            let source = image_root.join(&record.image);
            let name = artifact_name(&record.image, i);
            let target = ctx.out_dir.join(&name);
            let folder = target.parent().map_or(Ok(()), std::fs::create_dir_all);
            match folder.and_then(|()| std::fs::copy(&source, &target)) {
                Ok(_) => Some(name),
                Err(e) => {
                    ctx.log(&format!("skipped {}: {e}", source.display()));
                    None
                }
            }
        });
        if let Some(name) = artifact {
            record.image = name.clone();
            kept.push(record);
        }
    }
    let missing = copied.values().filter(|a| a.is_none()).count() as u64;
    if kept.is_empty() {
        bail!(
            "stage `{}`: none of the images listed in {} could be read (see the log)",
            ctx.stage,
            p.captions
        );
    }
    write_index(ctx.out_dir, &kept)?;
    ctx.metric("images_ok", None, (copied.len() as u64 - missing) as f64);
    ctx.metric("images_skipped", None, (missing + uncaptioned) as f64);
    ctx.metric("skipped_missing", None, missing as f64);
    ctx.metric("records", None, kept.len() as f64);
    Ok(())
}

/// The caption records, and how many listed images or samples were skipped while reading
/// (COCO and conversations files; otherwise 0).
fn read_records(
    ctx: &StageContext<'_>,
    captions: &Path,
    per_image: Option<CaptionsPerImage>,
) -> anyhow::Result<(Vec<CaptionRecord>, u64)> {
    let json = captions
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let coco = if json {
        read_if_coco(captions, per_image.unwrap_or_default())?
    } else {
        None
    };
    if coco.is_none()
        && json
        && let Some(llava) = read_if_llava(captions)?
    {
        if per_image.is_some() {
            bail!(
                "stage `{}`: `captions_per_image` applies to COCO captions files, and {} is a \
                 conversations file: remove the param",
                ctx.stage,
                captions.display()
            );
        }
        ctx.metric("skipped_no_image", None, llava.without_image as f64);
        ctx.metric("skipped_no_turns", None, llava.without_turns as f64);
        let skipped = (llava.without_image + llava.without_turns) as u64;
        if skipped > 0 {
            ctx.log(&format!(
                "skipped {} samples without an image and {} without a question and its answer in {}",
                llava.without_image,
                llava.without_turns,
                captions.display()
            ));
        }
        return Ok((llava.records, skipped));
    }
    let Some(coco) = coco else {
        if per_image.is_some() {
            bail!(
                "stage `{}`: `captions_per_image` applies to COCO captions files, and {} is not one: \
                 remove the param",
                ctx.stage,
                captions.display()
            );
        }
        return Ok((read_captions(captions)?, 0));
    };
    for (count, what) in [
        (
            coco.unknown_image,
            "captions refer to an image id missing from images[]",
        ),
        (coco.empty_caption, "captions are empty"),
        (coco.images_without_caption, "images have no caption"),
    ] {
        if count > 0 {
            ctx.log(&format!(
                "skipped: {count} {what} in {}",
                captions.display()
            ));
        }
    }
    ctx.metric("skipped_unknown_image", None, coco.unknown_image as f64);
    ctx.metric("skipped_empty_caption", None, coco.empty_caption as f64);
    ctx.metric(
        "skipped_no_caption",
        None,
        coco.images_without_caption as f64,
    );
    Ok((coco.records, coco.images_without_caption))
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
