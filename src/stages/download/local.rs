//! The `local` source: an image folder with a CSV/TSV/JSONL captions file, both declared inputs.

use std::path::{Path, PathBuf};

use anyhow::bail;
use serde::Deserialize;

use super::{require_input, write_index};
use crate::ml::data::captions::read_captions;
use crate::stages::StageContext;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LocalParams {
    /// The captions file, workspace-relative; list it (and the images) in the stage's `inputs`.
    captions: String,
    /// Where the images are; by default the captions file's folder.
    images: Option<String>,
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
    write_index(ctx.out_dir, &kept)?;
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
