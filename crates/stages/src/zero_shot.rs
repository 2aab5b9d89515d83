//! The `zero-shot-eval` kind: classify held-out images with a trained CLIP and prompt templates;
//! top-1 / top-5 / per-class accuracy as metrics, `results.json` and a confusion-matrix image in
//! the artifact.

use std::path::Path;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::Value;

use super::{Kind, StageContext};
use crate::shared::kind_params;
use vlmflow_engine::kind::ParamProblem;
use vlmflow_ml::data::tokenizer::Tokenizer;
use vlmflow_ml::infer::zero_shot::{class_embeddings, confusion_image, evaluate};
use vlmflow_ml::models::clip::Clip;
use vlmflow_ml::param_store::ParamStore;
use vlmflow_ml::train::clip::TrainConfig;

pub struct ZeroShotEval;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ZeroShotParams {
    /// Prompt templates; `{}` is the class name. Their embeddings are averaged per class.
    #[serde(default = "default_templates")]
    templates: Vec<String>,
    /// Which split of the data stage to classify.
    #[serde(default = "default_split")]
    split: String,
    #[serde(default = "default_batch_size")]
    batch_size: usize,
}

fn default_templates() -> Vec<String> {
    vec!["a photo of a {}.".into(), "a {}.".into()]
}
fn default_split() -> String {
    "validation".into()
}
fn default_batch_size() -> usize {
    256
}

impl Kind for ZeroShotEval {
    fn name(&self) -> &'static str {
        "zero-shot-eval"
    }

    fn version(&self) -> &'static str {
        "1"
    }

    fn uses_device(&self) -> bool {
        true
    }

    fn check_params(&self, params: &Value) -> Vec<ParamProblem> {
        kind_params::check::<ZeroShotParams>(params)
    }

    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        let p: ZeroShotParams = kind_params::read(ctx)?;
        if p.templates.is_empty() || p.templates.iter().any(|t| !t.contains("{}")) {
            bail!(
                "stage `{}`: every template must contain {{}} where the class name goes",
                ctx.stage
            );
        }
        let (model_dir, data_dir) = upstreams(ctx, &p.split)?;
        let cfg: TrainConfig = super::read_json(&model_dir.join("config.json"))?;
        let device = super::device(ctx)?;
        let params = ParamStore::new(0, &device);
        let model = Clip::new(&params, &cfg.model)?;
        let weights = model_dir.join("model.safetensors");
        params
            .load(&weights)
            .with_context(|| format!("loading {}", weights.display()))?;
        let tokenizer = Tokenizer::load(&model_dir.join("tokenizer.json"))?;
        let meta: serde_json::Value = super::read_json(&data_dir.join("meta.json"))?;
        let classes: Vec<String> =
            serde_json::from_value(meta["classes"].clone()).unwrap_or_default();
        if classes.is_empty() {
            bail!(
                "stage `{}`: the data has no classes to evaluate (its meta.json lists none)",
                ctx.stage
            );
        }
        let texts = class_embeddings(&model, &tokenizer, &classes, &p.templates, &device)?;
        let result = evaluate(
            &model,
            &texts,
            &classes,
            &data_dir.join(&p.split),
            p.batch_size,
            &device,
        )?;
        ctx.metric("top1", None, result.top1);
        ctx.metric("top5", None, result.top5);
        ctx.metric("images", None, result.images as f64);
        for (class, accuracy, _) in &result.per_class {
            ctx.metric(
                &format!("per_class.{}", class.replace(' ', "_")),
                None,
                *accuracy,
            );
        }
        ctx.log(&format!(
            "top-1 {:.4}, top-5 {:.4} over {} images, {} classes",
            result.top1,
            result.top5,
            result.images,
            classes.len()
        ));
        std::fs::write(
            ctx.out_dir.join("results.json"),
            serde_json::to_string_pretty(&result)?,
        )?;
        confusion_image(&result.confusion, 12).save(ctx.out_dir.join("confusion.png"))?;
        Ok(())
    }
}

/// The needed model stage (with model.safetensors) and data stage (with the split's shards).
fn upstreams<'c>(ctx: &'c StageContext<'_>, split: &str) -> anyhow::Result<(&'c Path, &'c Path)> {
    let model = ctx.find_upstream("clip-train stage", |p| {
        p.join("model.safetensors").is_file()
    })?;
    let data = ctx.find_upstream(&format!("preprocess stage with a {split} split"), |p| {
        p.join(split).is_dir()
    })?;
    Ok((model, data))
}
