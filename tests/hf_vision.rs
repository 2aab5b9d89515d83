//! vlm-pretrain with its vision tower from a Hugging Face CLIP or SigLIP folder (the reference
//! fixtures, copied into the workspace) instead of a clip-train stage: it trains (the loss
//! falls), finetune and chat-export take it through to a bundle that `vlmflow chat` answers
//! from, and bad input gets errors that say what to fix.

mod common;

use common::Ws;

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

/// vlm-pretrain on the SigLIP fixture (trained at 32 px: its 4×4 position grid becomes 3×3 for
/// the 24-px shards), then finetune and chat-export.
const SIGLIP: &str = r#"
[stages.vlm-pretrain]
kind = "vlm-pretrain"
needs = ["lm-train", "preprocess"]
inputs = ["models/siglip"]
params = { vision = "models/siglip", projector = "mlp", steps = 40, batch_size = 32, lr = 3e-3, warmup_steps = 5 }

[stages.finetune]
kind = "finetune"
needs = ["vlm-pretrain", "preprocess"]
params = { steps = 30, batch_size = 32, lr = 2e-3, eval_images = 10 }

[stages.chat-export]
kind = "chat-export"
needs = ["finetune"]
"#;

/// Copies a reference fixture folder into the workspace at `to`.
fn copy_fixture(ws: &Ws, case: &str, to: &str) {
    let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/vision_reference")
        .join(case);
    let to = ws.path(to);
    std::fs::create_dir_all(&to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn mean(ws: &Ws, stage: &str, name: &str, steps: std::ops::RangeInclusive<i64>) -> f64 {
    let n = steps.clone().count() as f64;
    steps.map(|s| ws.metric(stage, name, Some(s))).sum::<f64>() / n
}

fn json(ws: &Ws, rel: &str) -> serde_json::Value {
    serde_json::from_str(&ws.read(rel)).unwrap()
}

#[test]
fn a_siglip_folder_trains_finetunes_exports_and_chats() {
    let ws = Ws::new(&format!("{DATA}{SIGLIP}"));
    copy_fixture(&ws, "siglip", "models/siglip");
    ws.build_ok(&[]);

    let (first, last) = (
        mean(&ws, "vlm-pretrain", "train.loss", 1..=5),
        mean(&ws, "vlm-pretrain", "train.loss", 36..=40),
    );
    assert!(last < first * 0.97, "vlm-pretrain loss {first} → {last}");
    let (first, last) = (
        mean(&ws, "finetune", "train.loss", 1..=5),
        mean(&ws, "finetune", "train.loss", 26..=30),
    );
    assert!(last < first, "finetune loss {first} → {last}");

    // The manifest carries the tower as loaded: SigLIP's build, the shards' size, LLaVA's layer.
    let vision = &json(&ws, "out/vlm-pretrain/vlm.json")["model"]["vision"];
    assert_eq!(vision["image_size"], 24);
    assert_eq!(vision["arch"]["class_token"], false);
    assert_eq!(vision["arch"]["patch_bias"], true);
    assert_eq!(vision["arch"]["pixel_norm"]["std"][0], 0.5);
    assert_eq!(vision["features"]["layer"], -2);
    assert_eq!(vision["features"]["post_norm"], false);
    let bundle = json(&ws, "out/chat-export/bundle.json");
    assert_eq!(&bundle["model"]["vision"], vision);
    let log = ws.run(&["log", "vlm-pretrain", "-n", "1", "--verbose"]);
    assert!(
        log.stdout.contains("SigLIP from models/siglip")
            && log.stdout.contains("resized (bicubic) from 32-px to 24-px"),
        "{log}"
    );

    let image = ws.files_under("out/download/images")[0]
        .to_string_lossy()
        .into_owned();
    let run = ws.run(&[
        "chat",
        "--bundle",
        ws.path("out/chat-export").to_str().unwrap(),
        "--image",
        &image,
        "--prompt",
        "What colour is the shape?",
    ]);
    run.assert_code(0);
    assert!(!run.stdout.trim().is_empty(), "{run}");
}

#[test]
fn a_clip_folder_takes_the_feature_layer_params_and_bad_input_is_named() {
    let ws = Ws::new(DATA);
    copy_fixture(&ws, "clip", "models/clip");
    let stage = |params: &str, inputs: &str| {
        format!(
            "{DATA}\n[stages.vlm-pretrain]\nkind = \"vlm-pretrain\"\nneeds = [\"lm-train\", \
             \"preprocess\"]\ninputs = [{inputs}]\nparams = {{ steps = 2, batch_size = 8, lr = 1e-3, \
             queries = 4, {params} }}\n"
        )
    };
    let failure = |params: &str, inputs: &str| {
        ws.stagefile(&stage(params, inputs));
        let run = ws.build(&[]);
        run.assert_code(1);
        format!("{}{}", run.stdout, run.stderr)
    };

    // CLIP at the shards' 24 px (grid 4 → 3), read at the last layer through the final
    // LayerNorm as a clip-train tower is: the manifest then leaves the feature layer out.
    ws.stagefile(&stage(
        r#"vision = "models/clip", vision_feature_layer = -1, vision_feature_norm = true"#,
        r#""models/clip""#,
    ));
    ws.build_ok(&[]);
    let vision = &json(&ws, "out/vlm-pretrain/vlm.json")["model"]["vision"];
    assert_eq!(vision["arch"]["pre_norm"], true);
    assert_eq!(vision["arch"]["activation"], "quick_gelu");
    assert!(vision.get("features").is_none(), "{vision}");

    let err = failure(r#"vision = "models/clip""#, "");
    assert!(
        err.contains("models/clip") && err.contains("inputs"),
        "{err}"
    );
    let err = failure(
        r#"vision = "models/clip", vision_feature_layer = -4"#,
        r#""models/clip""#,
    );
    assert!(
        err.contains("vision_feature_layer") && err.contains("-4"),
        "{err}"
    );
    let err = failure(r#"vision = "models""#, r#""models""#);
    assert!(
        err.contains("models/config.json: missing") && err.contains("the `vision` param"),
        "{err}"
    );
    std::fs::write(
        ws.path("models/clip/config.json"),
        r#"{"model_type": "vit"}"#,
    )
    .unwrap();
    let err = failure(r#"vision = "models/clip""#, r#""models/clip""#);
    assert!(err.contains("neither CLIP nor SigLIP"), "{err}");

    // Shards whose image size the patches do not divide.
    copy_fixture(&ws, "clip", "models/clip");
    ws.stagefile(
        &stage(r#"vision = "models/clip""#, r#""models/clip""#)
            .replace("image_size = 24", "image_size = 20"),
    );
    let run = ws.build(&[]);
    run.assert_code(1);
    let err = format!("{}{}", run.stdout, run.stderr);
    assert!(
        err.contains("20 px") && err.contains("multiple of 8 px"),
        "{err}"
    );
}
