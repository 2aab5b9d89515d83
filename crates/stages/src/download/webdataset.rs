//! The `webdataset` source: tar shards of `KEY.jpg` + `KEY.txt` (or `KEY.json`) samples, as
//! LAION-400M is distributed, streamed one sample at a time. Image bytes are copied as they are
//! (preprocess decodes them and skips the corrupt ones) to `images/<shard-stem>/<KEY>.<ext>`.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use anyhow::{Context, bail};
use serde::Deserialize;

use super::write_index;
use crate::StageContext;
use crate::shared::inputs::require_input;
use vlmflow_ml::data::braces;
use vlmflow_ml::data::captions::CaptionRecord;
use vlmflow_ml::data::webdataset::{Item, Skip, read_shard};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WebdatasetParams {
    /// The shards, workspace-relative: one pattern with brace ranges and lists
    /// (`"data/shard-{00000..00099}.tar"`) or a list of paths (each expanded the same way). Every
    /// shard must be covered by the stage's `inputs` (a folder input covers the files in it).
    shards: Shards,
}

#[derive(Deserialize)]
#[serde(untagged, expecting = "a path pattern or a list of paths")]
enum Shards {
    Pattern(String),
    Paths(Vec<String>),
}

pub(super) fn run(ctx: &StageContext<'_>, p: WebdatasetParams) -> anyhow::Result<()> {
    let shards = expand(ctx, p.shards)?;
    std::fs::create_dir_all(ctx.out_dir.join("images"))?;
    let mut records = Vec::new();
    let mut skipped: BTreeMap<Skip, u64> = Skip::ALL.iter().map(|s| (*s, 0)).collect();
    let mut duplicates = 0u64;
    let mut written = HashSet::new();
    for (i, shard) in shards.iter().enumerate() {
        let stem = shard_stem(shard);
        let path = ctx.workspace.join(shard);
        let end = read_shard(&path, |item| -> anyhow::Result<()> {
            match item {
                Item::Sample(sample) => {
                    let name = format!("images/{stem}/{}.{}", sample.key, sample.image_ext);
                    if !written.insert(name.clone()) {
                        duplicates += 1;
                        ctx.log(&format!("skipped {shard}: {}: key seen twice", sample.key));
                        return Ok(());
                    }
                    let file = ctx.out_dir.join(&name);
                    if let Some(folder) = file.parent() {
                        std::fs::create_dir_all(folder)?;
                    }
                    std::fs::write(&file, &sample.image)
                        .with_context(|| format!("writing {}", file.display()))?;
                    records.push(CaptionRecord {
                        image: name,
                        caption: sample.caption,
                        label: None,
                        split: None,
                        qa: Vec::new(),
                    });
                }
                Item::Skipped {
                    key,
                    reason,
                    detail,
                } => {
                    *skipped.entry(reason).or_default() += 1;
                    ctx.log(&format!("skipped {shard}: {key}: {detail}"));
                }
            }
            Ok(())
        })
        .with_context(|| format!("stage `{}` reading shard {shard}", ctx.stage))?;
        if let Some(why) = end.truncated {
            ctx.log(&format!(
                "{shard} is cut short ({why}): kept the samples read before the cut"
            ));
        }
        ctx.progress(i as u64 + 1, Some(shards.len() as u64), "reading shards");
    }
    let skipped_total = skipped.values().sum::<u64>() + duplicates;
    if records.is_empty() {
        bail!(
            "stage `{}`: no sample with both an image and a caption in {} shard(s) ({skipped_total} skipped, \
             see `vlmflow log {} --verbose`)",
            ctx.stage,
            shards.len(),
            ctx.stage
        );
    }
    write_index(ctx.out_dir, &records)?;
    ctx.metric("shards", None, shards.len() as f64);
    ctx.metric("images_ok", None, records.len() as f64);
    ctx.metric("images_skipped", None, skipped_total as f64);
    for (reason, count) in &skipped {
        ctx.metric(reason.metric(), None, *count as f64);
    }
    ctx.metric("skipped_duplicate", None, duplicates as f64);
    Ok(())
}

/// The shard paths, expanded, each a declared input that exists; stems unique, since they name
/// the image folders.
fn expand(ctx: &StageContext<'_>, shards: Shards) -> anyhow::Result<Vec<String>> {
    let patterns = match shards {
        Shards::Pattern(p) => vec![p],
        Shards::Paths(list) => list,
    };
    let mut paths = Vec::new();
    for pattern in &patterns {
        let names = braces::expand(pattern)
            .map_err(|e| anyhow::anyhow!("stage `{}`: param `shards`: {e}", ctx.stage))?;
        paths.extend(names);
    }
    if paths.is_empty() {
        bail!("stage `{}`: param `shards` names no shard", ctx.stage);
    }
    let mut stems: BTreeMap<String, &str> = BTreeMap::new();
    for path in &paths {
        require_input(ctx, path)?;
        if !ctx.workspace.join(path).is_file() {
            bail!(
                "stage `{}`: shard {path} does not exist (from `shards` = {}): fix the pattern or fetch the shard",
                ctx.stage,
                patterns.join(", ")
            );
        }
        if let Some(other) = stems.insert(shard_stem(path), path) {
            bail!(
                "stage `{}`: shards {other} and {path} have the same file name stem; their images would \
                 share a folder: list each shard once and rename one of two same-named shards",
                ctx.stage
            );
        }
    }
    Ok(paths)
}

/// `data/shard-00042.tar` → `shard-00042`.
fn shard_stem(path: &str) -> String {
    let name = Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_string());
    match name.split_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem.to_string(),
        _ => name,
    }
}
