//! The `chat-export` kind: turn a trained VLM (a `finetune` or `vlm-pretrain` artifact) into a
//! chat bundle (`ml::bundle`) that `vlmflow chat --bundle` loads, the language model also in the
//! Hugging Face Qwen2 layout, and a `manifest.json` with the bundle's provenance: every stage
//! that led to it, with its key, params, input digests and final metrics. A LLaVA-shaped model
//! (a Hugging Face CLIP or SigLIP tower, the `mlp` projector) is also written in `llava/` as
//! `transformers` loads LLaVA models (`ml::infer::llava_export`).

use serde::Deserialize;
use serde_json::Value;

use super::{Kind, StageContext};
use crate::shared::kind_params;
use crate::shared::vlm_common::{VLM_JSON, VlmFolder};
use vlmflow_engine::kind::ParamProblem;
use vlmflow_ml::infer::bundle::{self, BundleInfo};
use vlmflow_ml::infer::llava_export;
use vlmflow_ml::models::llava_layout::llava_tower;
use vlmflow_ml::models::vlm_folder::{self, LmFiles};

pub struct ChatExport;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatExportParams {}

impl Kind for ChatExport {
    fn name(&self) -> &'static str {
        "chat-export"
    }

    fn version(&self) -> &'static str {
        // 3: `llava/`.
        "3"
    }

    fn uses_device(&self) -> bool {
        true
    }

    fn check_params(&self, params: &Value) -> Vec<ParamProblem> {
        kind_params::check::<ChatExportParams>(params)
    }

    /// The bundle's manifest records the lineage of the model it exports.
    fn reads_lineage(&self) -> bool {
        true
    }

    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        let _: ChatExportParams = kind_params::read(ctx)?;
        let source = ctx.find_upstream("finetune (or vlm-pretrain) stage", |p| {
            p.join(VLM_JSON).is_file()
        })?;
        // The device matters only where LoRA adapters are folded in (one matmul per adapter).
        let vlm = VlmFolder::load(source, &super::device(ctx)?)?;
        let stop_tokens = vlm.stop_tokens();
        let VlmFolder {
            manifest,
            params,
            model,
            tokenizer,
        } = vlm;
        let tokenizer_path = source.join("tokenizer.json");
        // LoRA adapters, if the model has them, are folded into the weights; otherwise the
        // language model's files are the source's.
        let source_lm = source.join(vlm_folder::LM);
        let (params, model, lm) = match manifest.model.lora {
            Some(_) => {
                let (params, model) = model.merged(&params)?;
                (params, model, LmFiles::Written)
            }
            None => (params, model, LmFiles::CopyOf(&source_lm)),
        };
        let info = BundleInfo::new(model.cfg.clone(), manifest.template, stop_tokens);
        bundle::write(ctx.out_dir, &params, &model, lm, &info, &tokenizer_path)?;
        match llava_tower(&model.cfg) {
            Ok(tower) => {
                let dir = ctx.out_dir.join(llava_export::FOLDER);
                std::fs::create_dir_all(&dir)?;
                llava_export::write_llava(&dir, &params, &model, &tower, &info, &tokenizer)?;
                ctx.log(&format!(
                    "wrote the LLaVA form for transformers in {}/",
                    llava_export::FOLDER
                ));
            }
            Err(why) => ctx.log(&format!("no LLaVA form (llava/): {why}")),
        }
        let provenance = serde_json::json!({
            "bundle": { "format": bundle::FORMAT, "version": bundle::VERSION },
            "exported_by": format!("vlmflow {}", env!("CARGO_PKG_VERSION")),
            "lineage": ctx.lineage,
        });
        std::fs::write(
            ctx.out_dir.join("manifest.json"),
            serde_json::to_string_pretty(&provenance)?,
        )?;
        ctx.metric("parameters", None, params.num_params() as f64);
        Ok(())
    }
}
