//! A chat bundle's `llava/` folder: a LLaVA-shaped VLM (`models::llava_layout`) as
//! `transformers` loads it with `LlavaForConditionalGeneration` and `AutoProcessor`, and so as
//! lmms-eval and VLMEvalKit run LLaVA models.
//!
//! ```text
//! config.json                the LLaVA config (tower and LM configs inside)
//! model.safetensors          every weight under llava-hf's names, f32
//! generation_config.json     the stop tokens, greedy decoding
//! tokenizer.json             the bundle's tokenizer, as it is
//! tokenizer_config.json      which of its tokens are the image, end and padding
//! preprocessor_config.json   CLIPImageProcessor doing what vlmflow does to an image: the short
//!                            side resized (bilinear) to the tower's size, a centre crop, the
//!                            tower's normalisation
//! processor_config.json      LlavaProcessor: the image token becomes one token per embedding
//! chat_template.jinja        the bundle's ChatML, the image between the vision delimiters
//! ```

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Result, Tensor};
use serde_json::{Value, json};

use super::bundle::BundleInfo;
use crate::data::chat::{ChatTemplate, IM_END, IM_START, VISION_END, VISION_START};
use crate::data::tokenizer::Tokenizer;
use crate::models::hf_vision_config::HfVisionConfig;
use crate::models::llava_layout::{config_json, llava_tensors, select_strategy};
use crate::models::vlm::Vlm;
use crate::param_store::ParamStore;

/// The folder inside a chat bundle.
pub const FOLDER: &str = "llava";

fn fail(path: &Path, message: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(format!("{}: {message}", path.display()))
}

/// Writes the LLaVA form of `model` (its store `params`, its tower `tower` from
/// `llava_layout::llava_tower`) into `dir`, which exists.
pub fn write_llava(
    dir: &Path,
    params: &ParamStore,
    model: &Vlm,
    tower: &HfVisionConfig,
    info: &BundleInfo,
    tokenizer: &Tokenizer,
) -> Result<()> {
    let name = |id: u32| {
        tokenizer
            .id_to_token(id)
            .ok_or_else(|| fail(dir, format!("the tokenizer has no token {id}")))
    };
    let template = &info.template;
    let image_token = name(template.image)?;
    let eos = match info.stop_tokens.first() {
        Some(&id) => name(id)?,
        None => IM_END.to_string(),
    };
    let write = |file: &str, value: &Value| {
        let path = dir.join(file);
        let text = serde_json::to_string_pretty(value).map_err(candle_core::Error::wrap)? + "\n";
        std::fs::write(&path, text).map_err(|e| fail(&path, e))
    };

    write(
        "config.json",
        &config_json(&model.cfg, tower, template.image),
    )?;
    let tensors: HashMap<String, Tensor> =
        llava_tensors(params, model, tower)?.into_iter().collect();
    let weights = dir.join("model.safetensors");
    candle_core::safetensors::save(&tensors, &weights).map_err(|e| fail(&weights, e))?;
    write(
        "generation_config.json",
        &json!({
            "eos_token_id": info.stop_tokens,
            "pad_token_id": tokenizer.pad_id(),
            "do_sample": false,
        }),
    )?;

    let tokenizer_json = dir.join("tokenizer.json");
    std::fs::write(
        &tokenizer_json,
        tokenizer
            .to_json()
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?,
    )
    .map_err(|e| fail(&tokenizer_json, e))?;
    write(
        "tokenizer_config.json",
        &json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": model.cfg.lm.max_position_embeddings,
            "eos_token": eos,
            "pad_token": name(tokenizer.pad_id())?,
            "extra_special_tokens": { "image_token": image_token },
            "clean_up_tokenization_spaces": false,
            // transformers 4 would otherwise turn tokenizer.json's prefix space off and make
            // token_type_ids, which LLaVA's generate refuses.
            "add_prefix_space": tokenizer.adds_prefix_space(),
            "model_input_names": ["input_ids", "attention_mask"],
            "processor_class": "LlavaProcessor",
        }),
    )?;

    let size = model.cfg.vision.image_size;
    let norm = HfVisionConfig::pixel_norm_of(&model.cfg.vision);
    write(
        "preprocessor_config.json",
        &json!({
            "image_processor_type": "CLIPImageProcessor",
            "processor_class": "LlavaProcessor",
            "do_convert_rgb": true,
            "do_resize": true,
            "size": { "shortest_edge": size },
            // PIL's BILINEAR, as vlmflow's triangle filter.
            "resample": 2,
            "do_center_crop": true,
            "crop_size": { "height": size, "width": size },
            "do_rescale": true,
            "rescale_factor": 1.0 / 255.0,
            "do_normalize": true,
            "image_mean": norm.mean,
            "image_std": norm.std,
        }),
    )?;
    let clip = select_strategy(tower) == "default";
    write(
        "processor_config.json",
        &json!({
            "processor_class": "LlavaProcessor",
            "image_token": image_token,
            "patch_size": tower.patch_size,
            "vision_feature_select_strategy": select_strategy(tower),
            // The CLS token, which "default" takes away again.
            "num_additional_image_tokens": usize::from(clip),
        }),
    )?;
    let jinja = dir.join("chat_template.jinja");
    std::fs::write(&jinja, chat_template(template, &image_token)).map_err(|e| fail(&jinja, e))
}

/// vlmflow's ChatML (`data::chat`) in Jinja, for messages whose content is a string or a
/// list of `{"type": "image"}` and `{"type": "text", "text": …}` parts. The system prompt, when
/// the bundle has one, is added unless the messages bring their own.
pub fn chat_template(template: &ChatTemplate, image_token: &str) -> String {
    let system = match &template.system {
        // A JSON string is a valid Jinja string literal.
        Some(text) => format!(
            "{{% if messages[0]['role'] != 'system' %}}{{{{ '{IM_START}system\\n' + {} + '{IM_END}\\n' }}}}{{% endif %}}",
            serde_json::to_string(text).expect("a string is JSON")
        ),
        None => String::new(),
    };
    format!(
        "{system}{{% for message in messages %}}{{{{ '{IM_START}' + message['role'] + '\\n' }}}}\
         {{% if message['content'] is string %}}{{{{ message['content'] }}}}{{% else %}}\
         {{% for part in message['content'] %}}\
         {{% if part['type'] == 'image' %}}{{{{ '{VISION_START}{image_token}{VISION_END}' }}}}\
         {{% elif part['type'] == 'text' %}}{{{{ part['text'] }}}}{{% endif %}}\
         {{% endfor %}}{{% endif %}}{{{{ '{IM_END}\\n' }}}}{{% endfor %}}\
         {{% if add_generation_prompt %}}{{{{ '{IM_START}assistant\\n' }}}}{{% endif %}}"
    )
}
