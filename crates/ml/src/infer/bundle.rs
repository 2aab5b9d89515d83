//! A chat bundle: one self-contained folder with everything needed to talk to a trained VLM.
//!
//! ```text
//! bundle.json          format + version, the model config, the chat template's ids, stop ids
//! model.safetensors    the vision tower and the projector
//! lm/                  the language model in the Hugging Face Qwen2 layout (`models::vlm_folder`),
//!                      with tokenizer.json and chat_template.jinja: other tools load it as is
//! tokenizer.json
//! chat_template.jinja  the same ChatML template, for tools that render Jinja
//! ```
//!
//! (`chat-export` adds `manifest.json`, the provenance, which loading does not need.)

use std::path::Path;

use candle_core::{Device, Result, Tensor};
use serde::{Deserialize, Serialize};

use super::generate::{Prompt, SamplingConfig, generate};
use crate::data::chat::{ChatTemplate, Turn};
use crate::data::image::{decode_normalized, load_normalized};
use crate::data::tokenizer::Tokenizer;
use crate::models::vlm::{Vlm, VlmConfig};
use crate::models::vlm_folder::{self, LmFiles};
use crate::param_store::ParamStore;

pub const FORMAT: &str = "vlmflow-chat-bundle";
/// 2: the language model's weights only under `lm/` (1 also had them in `model.safetensors`).
pub const VERSION: u32 = 2;
pub const INFO: &str = "bundle.json";

/// Qwen's ChatML template, for Hugging Face tooling (vlmflow renders it in `ml::data::chat`).
pub const CHAT_TEMPLATE_JINJA: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BundleInfo {
    pub format: String,
    pub version: u32,
    pub model: VlmConfig,
    pub template: ChatTemplate,
    /// Generation ends at any of these.
    pub stop_tokens: Vec<u32>,
}

impl BundleInfo {
    pub fn new(model: VlmConfig, template: ChatTemplate, stop_tokens: Vec<u32>) -> Self {
        Self {
            format: FORMAT.into(),
            version: VERSION,
            model,
            template,
            stop_tokens,
        }
    }
}

pub struct Bundle {
    pub info: BundleInfo,
    pub model: Vlm,
    pub tokenizer: Tokenizer,
}

fn fail(path: &Path, message: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(format!("{}: {message}", path.display()))
}

/// Write a bundle into `dir` from trained `params` of a model described by `info`; `lm` says
/// where the language model's files come from.
pub fn write(
    dir: &Path,
    params: &ParamStore,
    model: &Vlm,
    lm: LmFiles,
    info: &BundleInfo,
    tokenizer: &Path,
) -> Result<()> {
    vlm_folder::save(dir, params, model, lm, tokenizer)?;
    let json = serde_json::to_string_pretty(info).map_err(candle_core::Error::wrap)?;
    std::fs::write(dir.join(INFO), json).map_err(|e| fail(dir, e))?;
    std::fs::copy(tokenizer, dir.join("tokenizer.json")).map_err(|e| fail(tokenizer, e))?;
    for folder in [dir.to_path_buf(), dir.join(vlm_folder::LM)] {
        std::fs::write(folder.join("chat_template.jinja"), CHAT_TEMPLATE_JINJA)
            .map_err(|e| fail(&folder, e))?;
    }
    Ok(())
}

impl Bundle {
    /// Load a bundle, refusing one of another format or version by name.
    pub fn load(dir: &Path, device: &Device) -> Result<Bundle> {
        let info_path = dir.join(INFO);
        let text = std::fs::read_to_string(&info_path).map_err(|e| {
            fail(
                &info_path,
                format!("{e}: not a chat bundle (build one with a chat-export stage)"),
            )
        })?;
        let header: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| fail(&info_path, e))?;
        if header["format"] != FORMAT || header["version"] != VERSION {
            return Err(fail(
                &info_path,
                format!(
                    "a bundle of format {} version {}, this vlmflow reads {FORMAT} version {VERSION}: \
                     rebuild it with this vlmflow's chat-export",
                    header["format"], header["version"]
                ),
            ));
        }
        let info: BundleInfo = serde_json::from_value(header).map_err(|e| fail(&info_path, e))?;
        let params = ParamStore::new(0, device);
        let model = Vlm::new(&params, &info.model)?;
        vlm_folder::load(dir, &params, true)?;
        let tokenizer = Tokenizer::load(&dir.join("tokenizer.json"))
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Ok(Bundle {
            info,
            model,
            tokenizer,
        })
    }

    /// An image file, decoded, resized and centre-cropped to the vision tower's size and
    /// normalised: `(1, 3, S, S)`.
    pub fn load_image(&self, path: &Path) -> Result<Tensor> {
        let size = self.model.cfg.vision.image_size;
        let pixels = load_normalized(path, size as u32)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Tensor::from_vec(pixels, (1, 3, size, size), self.model.lm.device())
    }

    /// An encoded image (PNG, JPEG, WebP bytes), prepared as [`Bundle::load_image`] prepares a file.
    pub fn decode_image(&self, bytes: &[u8]) -> Result<Tensor> {
        let size = self.model.cfg.vision.image_size;
        let pixels = decode_normalized(bytes, Path::new("the image sent"), size as u32)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Tensor::from_vec(pixels, (1, 3, size, size), self.model.lm.device())
    }

    /// The assistant's reply to `question` about `image` after `history`, with `on_text` called
    /// with each new piece of text as it is generated.
    pub fn reply(
        &self,
        image: &Tensor,
        history: &[Turn],
        question: &str,
        sampling: &SamplingConfig,
        mut on_text: impl FnMut(&str),
    ) -> Result<String> {
        let prompt = self
            .info
            .template
            .prompt(&self.tokenizer, history, question, true)?;
        let at = prompt.image_at.expect("the first turn carries the image");
        let ids = Tensor::new(prompt.ids.as_slice(), image.device())?.unsqueeze(0)?;
        let embeds = self.model.embed(&ids, Some((image, at)))?.squeeze(0)?;
        let mut cfg = sampling.clone();
        cfg.stop_tokens = self.info.stop_tokens.clone();
        let mut tokens = Vec::new();
        let mut shown = 0;
        generate(&self.model.lm, Prompt::Embeds(&[embeds]), &cfg, |_, t| {
            tokens.push(t);
            // Byte-level pieces may end inside a character: show text once it is whole.
            if let Ok(text) = self.tokenizer.decode(&tokens)
                && !text.ends_with('\u{fffd}')
                && let Some(new) = text.get(shown..).filter(|n| !n.is_empty())
            {
                on_text(new);
                shown = text.len();
            }
        })?;
        Ok(self.tokenizer.decode(&tokens)?)
    }
}

#[cfg(test)]
#[path = "bundle_faults_tests.rs"]
mod faults;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::data::tokenizer::{BpeConfig, train_bpe};

    /// A tiny bundle written from random weights into `dir/bundle`: (its folder, the model, its
    /// params, the tokenizer, the template).
    pub(crate) fn tiny_bundle(
        dir: &Path,
    ) -> Result<(std::path::PathBuf, Vlm, ParamStore, Tokenizer, ChatTemplate)> {
        let tok = train_bpe(
            ["a red circle. What colour? red"].iter(),
            &BpeConfig::default(),
        )
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let tok_path = dir.join("source-tokenizer.json");
        tok.save(&tok_path)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let mut cfg = crate::models::vlm::tests::tiny();
        cfg.lm.vocab_size = tok.vocab_size();
        let template = ChatTemplate::new(&tok, cfg.image_tokens(), None)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let params = ParamStore::new(9, &Device::Cpu);
        let model = Vlm::new(&params, &cfg)?;
        let info = BundleInfo::new(cfg.clone(), template.clone(), vec![template.im_end]);
        let out = dir.join("bundle");
        std::fs::create_dir_all(&out).map_err(candle_core::Error::wrap)?;
        write(&out, &params, &model, LmFiles::Written, &info, &tok_path)?;
        Ok((out, model, params, tok, template))
    }

    #[test]
    fn a_bundle_round_trips_to_the_same_logits_and_refuses_other_versions() -> Result<()> {
        let dir = tempfile::tempdir().map_err(candle_core::Error::wrap)?;
        let (out, model, _, tok, template) = tiny_bundle(dir.path())?;
        let back = Bundle::load(&out, &Device::Cpu)?;
        let image = Tensor::randn(0f32, 1.0, (1, 3, 16, 16), &Device::Cpu)?;
        let prompt = template
            .prompt(&tok, &[], "What colour?", true)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let ids = Tensor::new(prompt.ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        let at = prompt.image_at.unwrap();
        let logits = |m: &Vlm| {
            m.lm.forward_embeds(&m.embed(&ids, Some((&image, at)))?, None)
        };
        let diff = (logits(&model)? - logits(&back.model)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);
        // The LM alone, in the Hugging Face layout, gives the same logits for text.
        let hf = crate::models::qwen2_load::load_hf_folder(&out.join("lm"), &Device::Cpu)?;
        let text = Tensor::new(&[[1u32, 5, 9]], &Device::Cpu)?;
        let diff = (model.lm.forward_ids(&text, None)? - hf.model.forward_ids(&text, None)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);

        let info_path = out.join(INFO);
        let edited = std::fs::read_to_string(&info_path)
            .map_err(candle_core::Error::wrap)?
            .replace("\"version\": 2", "\"version\": 3");
        std::fs::write(&info_path, edited).map_err(candle_core::Error::wrap)?;
        let err = Bundle::load(&out, &Device::Cpu).err().unwrap().to_string();
        assert!(
            err.contains("version 3") && err.contains("rebuild"),
            "{err}"
        );
        Ok(())
    }
}
