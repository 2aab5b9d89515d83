//! The `vqa-eval` kind: score a VLM stage (vlm-pretrain, finetune or chat-export) on a question
//! file as the benchmarks do (`ml::infer::vqa`): metrics overall and per category (and POPE's
//! measures), `results.json` with every question, answer and score, `categories.svg`, and for
//! multiple choice `confusion.svg`.

use std::path::{Path, PathBuf};

use anyhow::bail;
use serde::Deserialize;
use serde_json::Value;

use super::{Kind, StageContext};
use crate::shared::kind_params;
use crate::shared::vlm_common::{VLM_JSON, VlmFolder};
use vlmflow_engine::kind::ParamProblem;
use vlmflow_ml::data::chat::ChatTemplate;
use vlmflow_ml::data::tokenizer::Tokenizer;
use vlmflow_ml::infer::bundle::{self, Bundle};
use vlmflow_ml::infer::vqa::questions::{self, ImageSource};
use vlmflow_ml::infer::vqa::{self, Answerer, Asking, CHOICE_PROMPT, charts};
use vlmflow_ml::models::vlm::Vlm;

pub struct VqaEval;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VqaEvalParams {
    /// The question file, a workspace path: listed in `inputs`, or inside a needed stage's out.
    questions: String,
    /// The folder the images are named relative to (default: the question file's folder).
    images: Option<String>,
    #[serde(default = "default_max_new_tokens")]
    max_new_tokens: usize,
    #[serde(default = "default_batch_size")]
    batch_size: usize,
    /// Appended to open-ended and yes/no questions (e.g. "Answer in one word.").
    #[serde(default)]
    open_prompt: String,
    /// Appended after a multiple-choice question's options.
    #[serde(default = "default_choice_prompt")]
    choice_prompt: String,
}

fn default_max_new_tokens() -> usize {
    16
}
fn default_batch_size() -> usize {
    32
}
fn default_choice_prompt() -> String {
    CHOICE_PROMPT.into()
}

impl Kind for VqaEval {
    fn name(&self) -> &'static str {
        "vqa-eval"
    }

    fn version(&self) -> &'static str {
        // 2: MMStar's parquet; subcategories.
        "2"
    }

    fn uses_device(&self) -> bool {
        true
    }

    fn check_params(&self, params: &Value) -> Vec<ParamProblem> {
        let mut problems = kind_params::check::<VqaEvalParams>(params);
        if let Ok(p) = serde_json::from_value::<VqaEvalParams>(params.clone()) {
            if p.max_new_tokens == 0 {
                problems.push(ParamProblem::invalid(
                    &["max_new_tokens"],
                    "must be at least 1",
                ));
            }
            if p.batch_size == 0 {
                problems.push(ParamProblem::invalid(&["batch_size"], "must be at least 1"));
            }
        }
        problems
    }

    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        let p: VqaEvalParams = kind_params::read(ctx)?;
        let file = tracked(ctx, &p.questions, "questions file")?;
        let images = p
            .images
            .as_deref()
            .map(|dir| tracked(ctx, dir, "images folder"))
            .transpose()?;
        let questions = questions::read(&file, images.as_deref()).map_err(anyhow::Error::msg)?;
        for q in &questions {
            if let ImageSource::File(image) = &q.image
                && !is_tracked(ctx, image)
            {
                bail!(
                    "{}: image {} is neither among the stage's inputs nor in a needed stage's out: \
                     list its folder in `inputs`, so that changing an image reruns the stage",
                    q.place,
                    image.display()
                );
            }
        }
        let device = super::device(ctx)?;
        let source = ctx
            .find_upstream("VLM stage (vlm-pretrain, finetune or chat-export)", |p| {
                p.join(VLM_JSON).is_file() || p.join(bundle::INFO).is_file()
            })?;
        let vlm = LoadedVlm::load(source, &device)?;
        let who = Answerer {
            model: &vlm.model,
            tokenizer: &vlm.tokenizer,
            template: &vlm.template,
            stop_tokens: vlm.stop_tokens.clone(),
        };
        let asking = Asking {
            max_new_tokens: p.max_new_tokens,
            batch_size: p.batch_size,
            open_prompt: p.open_prompt,
            choice_prompt: p.choice_prompt,
        };
        ctx.log(&format!(
            "{} questions from {}",
            questions.len(),
            file.display()
        ));
        let report = vqa::evaluate(&who, &questions, &asking, &device, |done, total| {
            ctx.progress(done as u64, Some(total as u64), "answering");
        })?;
        record(ctx, &report)?;
        Ok(())
    }
}

/// A workspace path the stage reads, which must be tracked: listed in `inputs`, or inside the
/// out of a needed stage.
fn tracked(ctx: &StageContext<'_>, path: &str, what: &str) -> anyhow::Result<PathBuf> {
    let full = ctx.workspace.join(path);
    if !full.exists() {
        bail!("stage `{}`: {what} {path} does not exist", ctx.stage);
    }
    if !is_tracked(ctx, &full) {
        bail!(
            "stage `{}`: {what} {path} is not among the stage's inputs: add it to `inputs` (or \
             make it the out of a stage this one needs), so that changing it reruns the stage",
            ctx.stage
        );
    }
    Ok(full)
}

fn is_tracked(ctx: &StageContext<'_>, path: &Path) -> bool {
    let path = lexical(path);
    ctx.inputs
        .iter()
        .map(|input| ctx.workspace.join(input))
        .chain(ctx.upstream.values().cloned())
        .any(|root| path.starts_with(lexical(&root)))
}

/// `path` with `.` and `..` resolved by their names: `images/../../eval/x.png` must not count as
/// inside `images`.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Metrics, `results.json` and the charts.
fn record(ctx: &StageContext<'_>, report: &vqa::Report) -> anyhow::Result<()> {
    ctx.metric("accuracy", None, report.score);
    ctx.metric("questions", None, report.asked as f64);
    ctx.metric("skipped_images", None, report.skipped as f64);
    for (category, (score, _)) in &report.per_category {
        ctx.metric(&format!("category.{}", metric_name(category)), None, *score);
    }
    for (sub, (score, _)) in &report.per_subcategory {
        ctx.metric(&format!("subcategory.{}", metric_name(sub)), None, *score);
    }
    if let Some(average) = report.subcategory_average {
        ctx.metric("subcategory_average", None, average);
    }
    if let Some(yes_no) = &report.yes_no {
        for (name, value) in yes_no.report() {
            ctx.metric(&format!("pope.{name}"), None, value);
        }
    }
    ctx.log(&format!(
        "accuracy {:.4} over {} questions ({} skipped: unreadable image)",
        report.score, report.asked, report.skipped
    ));
    if let Some(average) = report.subcategory_average {
        ctx.log(&format!(
            "mean of the {} subcategories' accuracies (MMStar's average): {average:.4}",
            report.per_subcategory.len()
        ));
    }
    for (category, (score, n)) in &report.per_category {
        ctx.log(&format!("  {category}: {score:.4} ({n})"));
    }
    for wrong in report.answers.iter().filter(|a| a.score < 1.0).take(8) {
        match (&wrong.answer, &wrong.skipped) {
            (Some(said), _) => ctx.log(&format!(
                "  wrong: {} {:?} → {said:?} (expected {:?})",
                wrong.place, wrong.question, wrong.expected
            )),
            (None, Some(why)) => ctx.log(&format!("  skipped: {} ({why})", wrong.place)),
            (None, None) => {}
        }
    }
    let out = ctx.out_dir;
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(report)?,
    )?;
    let title = format!("{}: accuracy per category", ctx.stage);
    std::fs::write(
        out.join("categories.svg"),
        charts::category_bars(&title, &report.per_category),
    )?;
    if !report.confusion.is_empty() {
        let title = format!("{}: multiple choice", ctx.stage);
        std::fs::write(
            out.join("confusion.svg"),
            charts::confusion(&title, &report.confusion),
        )?;
    }
    Ok(())
}

/// A category as part of a metric's name: `Fine-grained Perception` → `fine-grained_perception`.
fn metric_name(category: &str) -> String {
    category
        .trim()
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A VLM from a chat-export bundle or from a vlm-pretrain / finetune folder.
struct LoadedVlm {
    model: Vlm,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    stop_tokens: Vec<u32>,
}

impl LoadedVlm {
    fn load(dir: &Path, device: &candle_core::Device) -> anyhow::Result<LoadedVlm> {
        if dir.join(bundle::INFO).is_file() {
            let b = Bundle::load(dir, device)?;
            return Ok(LoadedVlm {
                model: b.model,
                tokenizer: b.tokenizer,
                template: b.info.template,
                stop_tokens: b.info.stop_tokens,
            });
        }
        let vlm = VlmFolder::load(dir, device)?;
        Ok(LoadedVlm {
            stop_tokens: vlm.stop_tokens(),
            model: vlm.model,
            tokenizer: vlm.tokenizer,
            template: vlm.manifest.template,
        })
    }
}
