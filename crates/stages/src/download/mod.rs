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

use serde_json::Value;

use super::{Kind, StageContext};
use crate::shared::kind_params::{self, check};
use vlmflow_engine::kind::{ParamFault, ParamProblem};
use vlmflow_ml::data::captions::{CaptionRecord, write_jsonl};
use vlmflow_ml::data::cifar::Variant::{self, Cifar10, Cifar100};

pub struct Download;

impl Kind for Download {
    fn name(&self) -> &'static str {
        "download"
    }

    fn version(&self) -> &'static str {
        "2"
    }

    fn check_params(&self, params: &Value) -> Vec<ParamProblem> {
        let (source, rest) = match source(params) {
            Ok(found) => found,
            Err(why) => return vec![ParamProblem::invalid(&["source"], why)],
        };
        let mut problems = match source {
            Source::Synthetic => check::<synthetic::SyntheticParams>(&rest),
            Source::Local => check::<local::LocalParams>(&rest),
            Source::Webdataset => check::<webdataset::WebdatasetParams>(&rest),
            Source::Cifar(_) => check::<cifar::CifarParams>(&rest),
            Source::UrlList => check::<url_list::UrlListParams>(&rest),
        };
        // `source` was taken out before the source's params were read, but is a param too.
        for problem in &mut problems {
            if let (ParamFault::Unknown { known }, 1) = (&mut problem.fault, problem.path.len()) {
                known.push("source".to_string());
            }
        }
        problems
    }

    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        let (source, params) =
            source(ctx.params).map_err(|why| anyhow::anyhow!("stage `{}`: {why}", ctx.stage))?;
        match source {
            Source::Synthetic => synthetic::run(ctx, kind_params::read_value(ctx, params)?),
            Source::Local => local::run(ctx, kind_params::read_value(ctx, params)?),
            Source::Webdataset => webdataset::run(ctx, kind_params::read_value(ctx, params)?),
            Source::Cifar(variant) => {
                cifar::run(ctx, variant, kind_params::read_value(ctx, params)?)
            }
            Source::UrlList => url_list::run(ctx, kind_params::read_value(ctx, params)?),
        }
    }
}

/// Where the data comes from: the `source` param.
enum Source {
    Synthetic,
    Local,
    Webdataset,
    Cifar(Variant),
    UrlList,
}

/// The `source` param (default `synthetic`) and the params of that source: the rest.
fn source(params: &Value) -> Result<(Source, Value), String> {
    let mut rest = params.clone();
    let source = match rest.as_object_mut().and_then(|p| p.remove("source")) {
        Some(Value::String(s)) => s,
        None => "synthetic".to_string(),
        Some(other) => return Err(format!("`source` must be a string, not {other}")),
    };
    let source = match source.as_str() {
        "synthetic" => Source::Synthetic,
        "local" => Source::Local,
        "webdataset" => Source::Webdataset,
        "cifar10" => Source::Cifar(Cifar10),
        "cifar100" => Source::Cifar(Cifar100),
        "url-list" => Source::UrlList,
        other => {
            return Err(format!(
                "unknown source `{other}`: expected `synthetic`, `local`, `webdataset`, \
                 `url-list`, `cifar10` or `cifar100`"
            ));
        }
    };
    Ok((source, rest))
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
