//! chat-export writes a LLaVA-shaped VLM (a Hugging Face CLIP or SigLIP tower, the `mlp`
//! projector, a Qwen2 LM) also as `transformers` loads LLaVA models, in the bundle's `llava/`.
//!
//! The always-run test checks the folder as files. The ignored one loads it with PyTorch and
//! transformers (scripts/reference/llava_export_check.py) and compares logits and greedy answers
//! with vlmflow's: `scripts/reference/llava-check` installs them from PyPI and runs it.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use common::Ws;
use vlmflow_ml::data::image::resize_center_crop;
use vlmflow_ml::infer::bundle::Bundle;
use vlmflow_ml::infer::generate::{Prompt, SamplingConfig, generate};

const DATA: &str = r#"
[stages.download]
kind = "download"
params = { source = "synthetic", count = 300, seed = 3 }

[stages.preprocess]
kind = "preprocess"
needs = ["download"]
params = { val_permille = 100, image_size = 24 }

[stages.lm-train]
kind = "lm-train"
needs = ["preprocess"]
params = { steps = 30, batch_size = 32, lr = 3e-3, warmup_steps = 5 }
"#;

const QUESTION: &str = "What colour is the shape?";

/// The DAG up to a chat bundle on the reference fixture `case` (`clip` or `siglip`), with
/// `finetune`'s extra params (LoRA, for one).
fn pipeline(case: &str, finetune: &str) -> String {
    format!(
        r#"{DATA}
[stages.vlm-pretrain]
kind = "vlm-pretrain"
needs = ["lm-train", "preprocess"]
inputs = ["models/{case}"]
params = {{ vision = "models/{case}", projector = "mlp", steps = 40, batch_size = 32, lr = 3e-3, warmup_steps = 5 }}

[stages.finetune]
kind = "finetune"
needs = ["vlm-pretrain", "preprocess"]
params = {{ steps = 30, batch_size = 32, lr = 2e-3, eval_images = 10 {finetune} }}

[stages.chat-export]
kind = "chat-export"
needs = ["finetune"]
"#
    )
}

const LORA: &str = r#", lora = { rank = 4, alpha = 8.0, targets = ["q_proj", "v_proj"] }"#;

/// A workspace with the chat bundle of `case` built.
fn exported(case: &str, finetune: &str) -> Ws {
    let ws = Ws::new(&pipeline(case, finetune));
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vision_reference");
    let to = ws.path(&format!("models/{case}"));
    std::fs::create_dir_all(&to).unwrap();
    for entry in std::fs::read_dir(from.join(case)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    ws.build_ok(&[]);
    ws
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_llava_shaped_bundle_has_a_transformers_folder_and_others_say_why_not() {
    let ws = exported("clip", LORA);
    let llava = ws.path("out/chat-export/llava");
    for file in [
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "preprocessor_config.json",
        "processor_config.json",
        "chat_template.jinja",
    ] {
        assert!(llava.join(file).is_file(), "llava/{file} missing");
    }
    let config = json(&llava.join("config.json"));
    assert_eq!(config["architectures"][0], "LlavaForConditionalGeneration");
    assert_eq!(config["vision_config"]["model_type"], "clip_vision_model");
    assert_eq!(config["vision_config"]["image_size"], 24);
    assert_eq!(config["vision_config"]["hidden_act"], "quick_gelu");
    assert_eq!(config["text_config"]["model_type"], "qwen2");
    assert_eq!(config["vision_feature_layer"], -2);
    assert_eq!(config["vision_feature_select_strategy"], "default");
    // 24-px images in 8-px patches: 9 image tokens.
    assert_eq!(config["image_seq_length"], 9);
    let processor = json(&llava.join("processor_config.json"));
    assert_eq!(processor["num_additional_image_tokens"], 1);
    let tokenizer = json(&llava.join("tokenizer_config.json"));
    let image_token = tokenizer["extra_special_tokens"]["image_token"]
        .as_str()
        .unwrap();
    let tok = vlmflow_ml::data::tokenizer::Tokenizer::load(&llava.join("tokenizer.json")).unwrap();
    assert_eq!(
        tok.token_to_id(image_token).map(i64::from),
        config["image_token_index"].as_i64()
    );

    // LoRA merged away; every LLaVA part there under llava-hf's names, the lm_head included.
    let names =
        vlmflow_ml::models::hf_weights::tensor_names(&llava, "LLaVA").expect("weights readable");
    assert!(names.iter().all(|n| !n.contains("lora")), "{names:?}");
    for name in [
        "vision_tower.vision_model.embeddings.patch_embedding.weight",
        "vision_tower.vision_model.embeddings.class_embedding",
        "vision_tower.vision_model.pre_layrnorm.weight",
        "multi_modal_projector.linear_1.weight",
        "multi_modal_projector.linear_2.bias",
        "language_model.model.embed_tokens.weight",
        "language_model.lm_head.weight",
    ] {
        assert!(names.contains(name), "{name} not in {names:?}");
    }
    let log = ws.run(&["log", "chat-export", "-n", "1", "--verbose"]);
    assert!(log.stdout.contains("wrote the LLaVA form"), "{log}");

    // A resampler VLM has no LLaVA form, and the log says why.
    ws.stagefile(&pipeline("clip", LORA).replace(
        r#"projector = "mlp""#,
        r#"projector = "resampler", queries = 4"#,
    ));
    ws.build_ok(&[]);
    assert!(!ws.exists("out/chat-export/llava"));
    let log = ws.run(&["log", "chat-export", "-n", "1", "--verbose"]);
    assert!(
        log.stdout
            .contains("no LLaVA form (llava/): its projector is the resampler"),
        "{log}"
    );
}

/// What vlmflow computes for `image` and [`QUESTION`] with the bundle in `dir`, as
/// llava_export_check.py reads it.
fn vlmflow_answer(dir: &Path, image: &Path) -> serde_json::Value {
    let bundle = Bundle::load(dir, &Device::Cpu).unwrap();
    let pixels = bundle.load_image(image).unwrap();
    let prompt = bundle
        .info
        .template
        .prompt(&bundle.tokenizer, &[], QUESTION, true)
        .unwrap();
    let ids = Tensor::new(prompt.ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let embeds = bundle
        .model
        .embed(&ids, Some((&pixels, prompt.image_at.unwrap())))
        .unwrap();
    let logits: Vec<Vec<f32>> = bundle
        .model
        .lm
        .forward_embeds(&embeds, None)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2()
        .unwrap();
    let sampling = SamplingConfig {
        max_new_tokens: 8,
        stop_tokens: bundle.info.stop_tokens.clone(),
        ..SamplingConfig::default()
    };
    let answer = generate(
        &bundle.model.lm,
        Prompt::Embeds(&[embeds.squeeze(0).unwrap()]),
        &sampling,
        |_, _| {},
    )
    .unwrap();
    serde_json::json!({
        "question": QUESTION,
        "ids": prompt.ids,
        "logits": logits,
        "answer_ids": answer.tokens[0],
    })
}

/// Runs the check script on `ws`'s bundle for `image`; panics with its report when it fails.
fn check_in_transformers(python: &str, ws: &Ws, image: &Path) -> String {
    let bundle = ws.path("out/chat-export");
    let expected = ws.path("vlmflow-answer.json");
    std::fs::write(&expected, vlmflow_answer(&bundle, image).to_string()).unwrap();
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/reference/llava_export_check.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(bundle.join("llava"))
        .arg(image)
        .arg(&expected)
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}");
    report
}

/// One of the data's images, resized and cropped to the tower's 24 px as vlmflow does (so that
/// both sides see the same pixels; the processor's own bilinear resize is PIL's, not ours).
fn image_at_tower_size(ws: &Ws) -> PathBuf {
    let source = &ws.files_under("out/download/images")[0];
    let image = image::open(source).unwrap().to_rgb8();
    let path = ws.path("question.png");
    resize_center_crop(&image, 24).save(&path).unwrap();
    path
}

#[test]
#[ignore = "needs PyTorch and transformers: scripts/reference/llava-check runs it"]
fn transformers_loads_the_llava_folder_and_gives_vlmflows_logits() {
    let python = std::env::var("VLMFLOW_TRANSFORMERS_PYTHON").expect(
        "VLMFLOW_TRANSFORMERS_PYTHON: a python with torch and transformers \
         (scripts/reference/llava-check sets it up)",
    );
    for (case, finetune) in [("clip", LORA), ("siglip", "")] {
        let ws = exported(case, finetune);
        let image = image_at_tower_size(&ws);
        eprintln!("{case}: {}", check_in_transformers(&python, &ws, &image));
    }
}
