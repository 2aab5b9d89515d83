//! The `download` kind: get image–caption data into an artifact of the one layout the rest of the
//! pipeline reads — `images/`, `captions.jsonl` (image path, caption, label, question–answer
//! pairs) and, where the data has classes, `classes.json`. One file per source:
//! - [`synthetic`]: the offline default, procedurally drawn shapes;
//! - [`local`]: an image folder with a CSV/TSV/JSONL captions file;
//! - [`webdataset`]: WebDataset tar shards (LAION-style), streamed;
//! - [`cifar`]: CIFAR-10/100 binary batches, for zero-shot evaluation;
//! - [`url_list`]: a CSV/TSV/JSONL list of image URLs and captions, fetched over HTTP(S).

mod cifar;
mod local;
mod skip;
mod synthetic;
mod url_list;
mod webdataset;

use std::path::Path;

use anyhow::bail;
use serde_json::Value;

use super::{Kind, StageContext, params};
use vlmflow_ml::data::captions::{CaptionRecord, write_jsonl};
use vlmflow_ml::data::cifar::Variant::{Cifar10, Cifar100};

pub struct Download;

impl Kind for Download {
    fn name(&self) -> &'static str {
        "download"
    }

    fn version(&self) -> &'static str {
        "2"
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
            "synthetic" => synthetic::run(ctx, params::read_value(ctx, params)?),
            "local" => local::run(ctx, params::read_value(ctx, params)?),
            "webdataset" => webdataset::run(ctx, params::read_value(ctx, params)?),
            "cifar10" => cifar::run(ctx, Cifar10, params::read_value(ctx, params)?),
            "cifar100" => cifar::run(ctx, Cifar100, params::read_value(ctx, params)?),
            "url-list" => url_list::run(ctx, params::read_value(ctx, params)?),
            other => bail!(
                "stage `{}`: unknown source `{other}`: expected `synthetic`, `local`, `webdataset`, \
                 `url-list`, `cifar10` or `cifar100`",
                ctx.stage
            ),
        }
    }
}

/// Write the artifact's index: `captions.jsonl`, and `classes.json` (sorted, deduplicated) when
/// any record has a label.
fn write_index(out_dir: &Path, records: &[CaptionRecord]) -> anyhow::Result<()> {
    write_jsonl(&out_dir.join("captions.jsonl"), records)?;
    let mut labels: Vec<&str> = records.iter().filter_map(|r| r.label.as_deref()).collect();
    labels.sort_unstable();
    labels.dedup();
    if !labels.is_empty() {
        std::fs::write(
            out_dir.join("classes.json"),
            serde_json::to_string_pretty(&labels)?,
        )?;
    }
    Ok(())
}

/// Local data must be a declared input, or edits to it would not make the stage stale.
pub(crate) fn require_input(ctx: &StageContext<'_>, path: &str) -> anyhow::Result<()> {
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
