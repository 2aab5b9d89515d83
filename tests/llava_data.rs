//! Real-format conversation data end to end: a LLaVA-Instruct JSON file and its image folder,
//! read by the `local` source, preprocessed, and used by a `finetune` that continues from a VLM
//! pretrained on the synthetic data; the export chats.

mod common;

use common::Ws;
use vlmflow_ml::data::shapes::{ShapesConfig, render_png_bytes};

const PIPELINE: &str = r#"
[stages.download]
kind = "download"
params = { source = "synthetic", count = 400, seed = 1 }

[stages.preprocess]
kind = "preprocess"
needs = ["download"]
params = { val_permille = 100 }

[stages.clip-train]
kind = "clip-train"
needs = ["preprocess"]
params = { steps = 10, batch_size = 32, lr = 2e-3 }

[stages.lm-train]
kind = "lm-train"
needs = ["preprocess"]
params = { steps = 10, batch_size = 32, lr = 3e-3 }

[stages.vlm-pretrain]
kind = "vlm-pretrain"
needs = ["clip-train", "lm-train", "preprocess"]
params = { steps = 10, batch_size = 32, lr = 2e-3, queries = 4 }

[stages.llava]
kind = "download"
inputs = ["llava"]
params = { source = "local", captions = "llava/instruct.json", images = "llava/images" }

[stages.llava-shards]
kind = "preprocess"
needs = ["llava"]
params = { val_permille = 200 }

[stages.finetune]
kind = "finetune"
needs = ["vlm-pretrain", "llava-shards"]
params = { steps = 30, batch_size = 16, lr = 2e-3, eval_images = 20 }

[stages.chat-export]
kind = "chat-export"
needs = ["finetune"]
"#;

/// `count` images from the shapes generator and a LLaVA-Instruct file about them: each sample
/// asks its questions in LLaVA's shape (`<image>` marker in the first human turn, `from` =
/// human/gpt), plus one text-only sample and one with an unanswered question, which the reader
/// skips.
fn write_llava(ws: &Ws, count: u64) {
    let shapes = ShapesConfig {
        seed: 9,
        image_size: 32,
        ..Default::default()
    };
    let dir = ws.path("llava/images");
    std::fs::create_dir_all(&dir).unwrap();
    let mut samples = Vec::new();
    for i in 0..count {
        let sample = shapes.sample(i);
        let file = format!("{i:05}.png");
        std::fs::write(dir.join(&file), render_png_bytes(&sample.image)).unwrap();
        let mut turns = Vec::new();
        for (t, qa) in sample.qa.iter().enumerate() {
            let question = if t == 0 {
                format!("<image>\n{}", qa.question)
            } else {
                qa.question.clone()
            };
            turns.push(serde_json::json!({ "from": "human", "value": question }));
            turns.push(serde_json::json!({ "from": "gpt", "value": qa.answer }));
        }
        samples.push(
            serde_json::json!({ "id": format!("{i}"), "image": file, "conversations": turns }),
        );
    }
    samples.push(serde_json::json!({ "id": "text", "conversations": [
        { "from": "human", "value": "Hello?" }, { "from": "gpt", "value": "Hi." } ] }));
    samples.push(
        serde_json::json!({ "id": "open", "image": "00000.png", "conversations": [
        { "from": "human", "value": "<image>\nWhat is this?" } ] }),
    );
    ws.write(
        "llava/instruct.json",
        &serde_json::to_string_pretty(&samples).unwrap(),
    );
}

#[test]
fn a_llava_instruct_file_finetunes_a_vlm_and_the_export_chats() {
    let ws = Ws::new(PIPELINE);
    write_llava(&ws, 200);
    ws.build_ok(&[]);

    assert_eq!(ws.metric("llava", "records", None), 200.0);
    assert_eq!(ws.metric("llava", "images_skipped", None), 2.0);
    let first = (1..=5)
        .map(|s| ws.metric("finetune", "train.loss", Some(s)))
        .sum::<f64>();
    let last = (26..=30)
        .map(|s| ws.metric("finetune", "train.loss", Some(s)))
        .sum::<f64>();
    assert!(last < first, "finetune loss {first} → {last}");
    // 20% of 200 images held out, 4 questions each (at most eval_images of them asked).
    assert_eq!(ws.metric("finetune", "val.questions", None), 80.0);

    let run = ws.run(&[
        "chat",
        "--bundle",
        ws.path("out/chat-export").to_str().unwrap(),
        "--image",
        ws.path("llava/images/00003.png").to_str().unwrap(),
        "--prompt",
        "What colour is the shape?",
    ]);
    run.assert_code(0);
    assert!(!run.stdout.trim().is_empty(), "{run}");
}
