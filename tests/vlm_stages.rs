//! The VLM half of the pipeline on tiny data: lm-train, vlm-pretrain, finetune and chat-export
//! build, learn (losses fall), export a bundle with its provenance that `vlmflow chat` answers
//! from, and a finetune edit reruns only finetune and chat-export (a revert restores them).

mod common;

use common::Ws;

const PIPELINE: &str = r#"
[stages.download]
kind = "download"
params = { source = "synthetic", count = 600, seed = 1 }

[stages.preprocess]
kind = "preprocess"
needs = ["download"]
params = { val_permille = 100 }

[stages.clip-train]
kind = "clip-train"
needs = ["preprocess"]
params = { steps = 40, batch_size = 32, lr = 2e-3, warmup_steps = 5 }

[stages.lm-train]
kind = "lm-train"
needs = ["preprocess"]
params = { steps = 40, batch_size = 32, lr = 3e-3, warmup_steps = 5 }

[stages.vlm-pretrain]
kind = "vlm-pretrain"
needs = ["clip-train", "lm-train", "preprocess"]
params = { steps = 30, batch_size = 32, lr = 2e-3, queries = 4 }

[stages.finetune]
kind = "finetune"
needs = ["vlm-pretrain", "preprocess"]

[stages.chat-export]
kind = "chat-export"
needs = ["finetune"]
"#;

const FINETUNE: &str = "steps = 40\nbatch_size = 32\nlr = 2e-3\neval_images = 30\n";

/// Mean of a per-step metric over steps `from..=to`.
fn mean(ws: &Ws, stage: &str, name: &str, from: i64, to: i64) -> f64 {
    (from..=to)
        .map(|s| ws.metric(stage, name, Some(s)))
        .sum::<f64>()
        / (to - from + 1) as f64
}

fn any_image(ws: &Ws) -> String {
    let images = ws.files_under("out/download/images");
    images[0].to_string_lossy().into_owned()
}

#[test]
fn the_vlm_stages_train_export_a_bundle_and_chat_from_it() {
    let ws = Ws::new(PIPELINE);
    ws.params("finetune", FINETUNE);
    ws.build_ok(&[]);

    let (first, last) = (
        mean(&ws, "lm-train", "train.loss", 1, 5),
        mean(&ws, "lm-train", "train.loss", 36, 40),
    );
    assert!(last < first * 0.7, "lm-train loss {first} → {last}");
    let (first, last) = (
        mean(&ws, "finetune", "train.loss", 1, 5),
        mean(&ws, "finetune", "train.loss", 36, 40),
    );
    assert!(last < first, "finetune loss {first} → {last}");
    let exact = ws.metric("finetune", "val.exact_match", None);
    assert!((0.0..=1.0).contains(&exact), "{exact}");
    assert!(ws.metric("finetune", "val.questions", None) > 0.0);
    assert!(ws.metric("vlm-pretrain", "val.loss", None).is_finite());

    for file in [
        "bundle.json",
        "model.safetensors",
        "tokenizer.json",
        "chat_template.jinja",
        "lm/config.json",
        "lm/model.safetensors",
        "lm/tokenizer.json",
        "manifest.json",
    ] {
        assert!(ws.exists(&format!("out/chat-export/{file}")), "{file}");
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&ws.read("out/chat-export/manifest.json")).unwrap();
    let finetune = &manifest["lineage"]["finetune"];
    assert_eq!(finetune["kind"], "finetune");
    assert_eq!(finetune["key"].as_str().map(str::len), Some(64));
    let upstream: Vec<&str> = finetune["upstream"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["stage"].as_str().unwrap())
        .collect();
    assert!(upstream.contains(&"vlm-pretrain") && upstream.contains(&"preprocess"));

    // One-shot chat from the bundle, without a workspace.
    let image = any_image(&ws);
    let bundle = ws.path("out/chat-export");
    let run = ws.run(&[
        "chat",
        "--bundle",
        bundle.to_str().unwrap(),
        "--image",
        &image,
        "--prompt",
        "What colour is the shape?",
    ]);
    run.assert_code(0);

    // Clear errors for the usual mistakes.
    let missing = ws.run(&["chat", "--image", "nope.png", "--prompt", "hi"]);
    missing.assert_code(2);
    assert!(missing.stderr.contains("nope.png"), "{}", missing.stderr);
    let empty = ws.run(&["chat", "--image", &image, "--prompt", "  "]);
    empty.assert_code(2);
    assert!(
        empty.stderr.contains("--prompt is empty"),
        "{}",
        empty.stderr
    );
    let not_image = ws.run(&["chat", "--image", "Stagefile", "--prompt", "hi"]);
    not_image.assert_code(2);
    assert!(not_image.stderr.contains("image"), "{}", not_image.stderr);
    let copy = ws.path("old-bundle");
    std::fs::create_dir_all(&copy).unwrap();
    let info = ws.read("out/chat-export/bundle.json").replace(
        &format!("\"version\": {}", vlmflow_ml::infer::bundle::VERSION),
        "\"version\": 99",
    );
    std::fs::write(copy.join("bundle.json"), info).unwrap();
    let old = ws.run(&[
        "chat",
        "--bundle",
        "old-bundle",
        "--image",
        &image,
        "--prompt",
        "hi",
    ]);
    // A bundle that does not load is failed work, not a wrong command line.
    old.assert_code(1);
    assert!(old.stderr.contains("version 99"), "{}", old.stderr);
}

#[test]
fn a_corrupt_bundle_exits_1_saying_it_does_not_load() {
    let ws = Ws::new(PIPELINE);
    std::fs::create_dir_all(ws.path("broken")).unwrap();
    std::fs::write(ws.path("broken/bundle.json"), "{ not json").unwrap();
    std::fs::write(ws.path("photo.png"), b"not checked before the bundle loads").unwrap();
    let run = ws.run(&[
        "chat",
        "--bundle",
        "broken",
        "--image",
        "photo.png",
        "--prompt",
        "hi",
    ]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("the chat bundle does not load") && run.stderr.contains("bundle.json"),
        "{}",
        run.stderr
    );

    // A folder that holds no bundle at all is a wrong `--bundle`: exit 2.
    std::fs::create_dir_all(ws.path("empty")).unwrap();
    let run = ws.run(&[
        "chat",
        "--bundle",
        "empty",
        "--image",
        "photo.png",
        "--prompt",
        "hi",
    ]);
    run.assert_code(2);
    assert!(run.stderr.contains("not a chat bundle"), "{}", run.stderr);
}

#[test]
fn a_finetune_edit_reruns_finetune_and_export_and_a_revert_restores_them() {
    let ws = Ws::new(PIPELINE);
    ws.params("finetune", FINETUNE);
    ws.build_ok(&[]);
    let bundle = ws.read("out/chat-export/bundle.json");
    let weights = std::fs::read(ws.path("out/chat-export/model.safetensors")).unwrap();

    ws.params("finetune", &FINETUNE.replace("lr = 2e-3", "lr = 1e-3"));
    let edited = ws.build_ok(&[]);
    edited.assert_statuses(&[
        ("download", "fresh"),
        ("preprocess", "fresh"),
        ("clip-train", "fresh"),
        ("lm-train", "fresh"),
        ("vlm-pretrain", "fresh"),
        ("finetune", "ran"),
        ("chat-export", "ran"),
    ]);
    assert_ne!(
        std::fs::read(ws.path("out/chat-export/model.safetensors")).unwrap(),
        weights
    );

    ws.params("finetune", FINETUNE);
    let reverted = ws.build_ok(&[]);
    reverted.assert_statuses(&[
        ("download", "fresh"),
        ("preprocess", "fresh"),
        ("clip-train", "fresh"),
        ("lm-train", "fresh"),
        ("vlm-pretrain", "fresh"),
        ("finetune", "restored"),
        ("chat-export", "restored"),
    ]);
    assert_eq!(ws.read("out/chat-export/bundle.json"), bundle);
    assert_eq!(
        std::fs::read(ws.path("out/chat-export/model.safetensors")).unwrap(),
        weights
    );
}

fn tensors(ws: &Ws, rel: &str) -> std::collections::HashMap<String, candle_core::Tensor> {
    candle_core::safetensors::load(ws.path(rel), &candle_core::Device::Cpu).unwrap()
}

fn same(a: &candle_core::Tensor, b: &candle_core::Tensor) -> bool {
    a.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        == b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn a_lora_finetune_trains_only_adapters_and_the_export_merges_them() {
    let ws = Ws::new(PIPELINE);
    ws.params(
        "finetune",
        &format!(
            "{FINETUNE}lora = {{ rank = 4, alpha = 8, targets = [\"q_proj\", \"v_proj\"] }}\n"
        ),
    );
    ws.build_ok(&[]);
    let (first, last) = (
        mean(&ws, "finetune", "train.loss", 1, 5),
        mean(&ws, "finetune", "train.loss", 36, 40),
    );
    assert!(last < first, "finetune loss {first} → {last}");

    let base = tensors(&ws, "out/vlm-pretrain/lm/model.safetensors");
    let adapters = tensors(&ws, "out/finetune/model.safetensors");
    let exported = tensors(&ws, "out/chat-export/lm/model.safetensors");
    let q = "model.layers.0.self_attn.q_proj.weight";
    let k = "model.layers.0.self_attn.k_proj.weight";
    // The frozen LM's files are byte copies of their source (stored once by the cache), from
    // lm-train through vlm-pretrain to finetune; the adapters sit beside the vision tower.
    let bytes = |rel: &str| std::fs::read(ws.path(rel)).unwrap();
    assert!(
        bytes("out/lm-train/model.safetensors") == bytes("out/vlm-pretrain/lm/model.safetensors")
    );
    assert!(
        bytes("out/vlm-pretrain/lm/model.safetensors")
            == bytes("out/finetune/lm/model.safetensors")
    );
    let b = &adapters["model.layers.0.self_attn.q_proj.lora_B"];
    assert!(
        b.abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 0.0
    );
    assert!(!adapters.contains_key("model.layers.0.self_attn.k_proj.lora_A"));
    assert!(!adapters.contains_key(q), "the LM is under lm/");
    // The export has no adapters: q_proj carries the merged update, k_proj is untouched.
    assert!(
        !exported.keys().any(|n| n.contains("lora_")),
        "adapters exported"
    );
    assert!(
        !tensors(&ws, "out/chat-export/model.safetensors")
            .keys()
            .any(|n| n.contains("lora_"))
    );
    assert!(!same(&exported[q], &base[q]), "q_proj not merged");
    assert!(same(&exported[k], &base[k]));
    let vlm: serde_json::Value = serde_json::from_str(&ws.read("out/finetune/vlm.json")).unwrap();
    assert_eq!(vlm["model"]["lora"]["rank"], 4);

    let image = any_image(&ws);
    let bundle = ws.path("out/chat-export");
    ws.run(&[
        "chat",
        "--bundle",
        bundle.to_str().unwrap(),
        "--image",
        &image,
        "--prompt",
        "What shape is it?",
    ])
    .assert_code(0);
}

/// A Hugging Face Qwen2 folder as `transformers` shards it, written from a random model whose
/// vocabulary is `tokenizer`'s: `config.json`, two safetensors shards and their index.
fn write_sharded_hf_folder(dir: &std::path::Path, tokenizer: &std::path::Path) {
    use candle_core::{Device, Tensor};
    use std::collections::HashMap;
    use vlmflow_ml::data::tokenizer::Tokenizer;
    use vlmflow_ml::models::qwen2::Qwen2;
    use vlmflow_ml::models::qwen2_config::Qwen2Config;
    use vlmflow_ml::models::qwen2_load::save_hf_folder;
    use vlmflow_ml::param_store::ParamStore;

    let vocab = Tokenizer::load(tokenizer).unwrap().vocab_size();
    let mut cfg = Qwen2Config::small(vocab);
    cfg.hidden_size = 64;
    cfg.intermediate_size = 128;
    let model = Qwen2::new(&ParamStore::new(5, &Device::Cpu), &cfg).unwrap();
    save_hf_folder(dir, &model).unwrap();
    let single = dir.join("model.safetensors");
    let tensors = candle_core::safetensors::load(&single, &Device::Cpu).unwrap();
    std::fs::remove_file(&single).unwrap();
    let (mut shards, mut weight_map) = (vec![HashMap::new(), HashMap::new()], HashMap::new());
    for (i, (name, t)) in tensors.into_iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i % 2 + 1);
        weight_map.insert(name.clone(), file);
        // bf16 on disk, as Qwen2.5 ships.
        let t: Tensor = t.to_dtype(candle_core::DType::BF16).unwrap();
        shards[i % 2].insert(name, t);
    }
    for (i, shard) in shards.iter().enumerate() {
        let path = dir.join(format!("model-0000{}-of-00002.safetensors", i + 1));
        candle_core::safetensors::save(shard, path).unwrap();
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    std::fs::copy(tokenizer, dir.join("tokenizer.json")).unwrap();
}

#[test]
fn vlm_pretrain_takes_a_hugging_face_language_model_from_a_folder() {
    let ws = Ws::new(
        r#"
[stages.download]
kind = "download"
params = { source = "synthetic", count = 300, seed = 2 }

[stages.preprocess]
kind = "preprocess"
needs = ["download"]
params = { val_permille = 100 }

[stages.clip-train]
kind = "clip-train"
needs = ["preprocess"]
params = { steps = 5, batch_size = 32, lr = 1e-3 }
"#,
    );
    ws.build_ok(&[]);
    write_sharded_hf_folder(&ws.path("qwen"), &ws.path("out/preprocess/tokenizer.json"));
    ws.stagefile(&format!(
        "{}\n{}",
        ws.read("Stagefile"),
        r#"
[stages.vlm-pretrain]
kind = "vlm-pretrain"
needs = ["clip-train", "preprocess"]
inputs = ["qwen"]
params = { lm = "qwen", steps = 4, batch_size = 16, lr = 1e-3, queries = 4 }
"#
    ));
    let run = ws.build_ok(&[]);
    assert_eq!(run.status_of("vlm-pretrain"), "ran");
    let vlm: serde_json::Value =
        serde_json::from_str(&ws.read("out/vlm-pretrain/vlm.json")).unwrap();
    assert_eq!(vlm["model"]["lm"]["hidden_size"], 64);
    // The frozen LM is kept as it came: bf16 shards and their index, byte for byte.
    for file in [
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        let ours = std::fs::read(ws.path(&format!("out/vlm-pretrain/lm/{file}"))).unwrap();
        assert!(
            ours == std::fs::read(ws.path(&format!("qwen/{file}"))).unwrap(),
            "{file}"
        );
    }

    // Without the folder among the inputs, the stage says what to add.
    ws.stagefile(&ws.read("Stagefile").replace("inputs = [\"qwen\"]\n", ""));
    let err = ws.build(&["--force", "vlm-pretrain"]);
    err.assert_code(1);
    assert!(
        err.stdout.contains("inputs") || err.stderr.contains("inputs"),
        "{err}"
    );
}

#[test]
fn an_interrupted_vlm_pretrain_resumes_to_the_same_weights() {
    // The checkpoint holds only what trains (the projector); the frozen LM and vision tower must
    // come back from their stages on resume, or the resumed run diverges.
    let pipeline = PIPELINE.replace(
        "params = { steps = 30, batch_size = 32, lr = 2e-3, queries = 4 }",
        "params = { steps = 150, batch_size = 32, lr = 2e-3, queries = 4, checkpoint_every = 10 }",
    );
    let ws = Ws::new(&pipeline);
    ws.params("finetune", FINETUNE);
    ws.build_ok(&["vlm-pretrain"]);
    let weights = || std::fs::read(ws.path("out/vlm-pretrain/model.safetensors")).unwrap();
    let uninterrupted = weights();

    let mut child = ws.spawn(&["build", "--force", "vlm-pretrain", "vlm-pretrain"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while ws.files_under("cache/checkpoints").is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(child.wait().unwrap().code(), Some(130), "interrupted");

    ws.build_ok(&["--force", "vlm-pretrain", "vlm-pretrain"]);
    let log = ws.run(&["log", "vlm-pretrain", "-n", "1", "--verbose"]);
    assert!(
        log.stdout.contains("resumed from the checkpoint at step"),
        "{log}"
    );
    assert!(
        weights() == uninterrupted,
        "resumed weights differ from the uninterrupted run's"
    );
}
