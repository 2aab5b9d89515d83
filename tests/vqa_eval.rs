//! The `vqa-eval` kind on a tiny trained VLM: a question file of every format scored from the
//! finetune folder and from the chat bundle, with results, charts and per-category metrics; an edit
//! of the questions reruns only the evaluation; a missing image is an error naming its line, an
//! unreadable one a skipped question.

mod common;

use common::Ws;
use serde_json::Value;

const PIPELINE: &str = r#"
[stages.download]
kind = "download"
params = { source = "synthetic", count = 300, seed = 1 }

[stages.preprocess]
kind = "preprocess"
needs = ["download"]
params = { val_permille = 100 }

[stages.clip-train]
kind = "clip-train"
needs = ["preprocess"]
params = { steps = 10, batch_size = 32, lr = 2e-3, warmup_steps = 2 }

[stages.lm-train]
kind = "lm-train"
needs = ["preprocess"]
params = { steps = 10, batch_size = 32, lr = 2e-3, warmup_steps = 2 }

[stages.vlm-pretrain]
kind = "vlm-pretrain"
needs = ["clip-train", "lm-train", "preprocess"]
params = { steps = 10, batch_size = 32, lr = 2e-3, queries = 4 }

[stages.finetune]
kind = "finetune"
needs = ["vlm-pretrain", "preprocess"]
params = { steps = 10, batch_size = 32, lr = 2e-3, eval_images = 5 }

[stages.chat-export]
kind = "chat-export"
needs = ["finetune"]

[stages.eval-finetune]
kind = "vqa-eval"
needs = ["finetune", "download"]
inputs = ["eval"]
params = { questions = "eval/questions.jsonl", images = "out/download/images", max_new_tokens = 6 }

[stages.eval-bundle]
kind = "vqa-eval"
needs = ["chat-export", "download"]
inputs = ["eval"]
params = { questions = "eval/questions.jsonl", images = "out/download/images", batch_size = 2 }
"#;

/// MMStar's parquet layout (a fixture from scripts/reference/mmstar_fixture.py), asked of the
/// bundle.
const MMSTAR: &str = r#"
[stages.eval-mmstar]
kind = "vqa-eval"
needs = ["chat-export"]
inputs = ["mmstar"]
params = { questions = "mmstar/mmstar_sample.parquet", max_new_tokens = 4 }
"#;

/// Questions of every format about the first images the download stage drew.
fn questions(ws: &Ws) -> String {
    let mut images: Vec<String> = ws
        .files_under("out/download/images")
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    images.sort();
    let (a, b, c) = (&images[0], &images[1], &images[2]);
    [
        format!(r#"{{"image": "{a}", "question": "What colour is the shape?", "answer": "red", "category": "colour"}}"#),
        format!(r#"{{"image": "{b}", "question": "What shape is it?", "answer": "circle", "category": "shape"}}"#),
        format!(r#"{{"image": "{c}", "question": "Which shape is it?", "choices": ["circle", "square", "triangle"], "answer": "A", "category": "shape"}}"#),
        format!(r#"{{"image": "{a}", "question": "What is it?", "answers": ["circle", "circle", "ring"]}}"#),
        format!(r#"{{"image": "{b}", "text": "Is there a circle in the image?", "label": "yes"}}"#),
    ]
    .join("\n")
}

fn results(ws: &Ws, stage: &str) -> Value {
    serde_json::from_str(&ws.read(&format!("out/{stage}/results.json"))).unwrap()
}

#[test]
fn a_question_file_is_scored_from_a_finetune_folder_and_from_a_bundle() {
    let ws = Ws::new(&format!("{PIPELINE}{MMSTAR}"));
    let parquet = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mmstar/mmstar_sample.parquet");
    std::fs::create_dir_all(ws.path("mmstar")).unwrap();
    std::fs::copy(parquet, ws.path("mmstar/mmstar_sample.parquet")).unwrap();
    ws.write("eval/questions.jsonl", "");
    ws.build_ok(&["download"]);
    ws.write("eval/questions.jsonl", &questions(&ws));
    ws.build_ok(&[]);

    for stage in ["eval-finetune", "eval-bundle"] {
        let report = results(&ws, stage);
        let answers = report["answers"].as_array().unwrap();
        assert_eq!(answers.len(), 5, "{stage}");
        assert!(answers.iter().all(|a| a["answer"].is_string()), "{report}");
        assert_eq!(answers[2]["place"], "questions.jsonl:3");
        let accuracy = ws.metric(stage, "accuracy", None);
        let mean = answers
            .iter()
            .map(|a| a["score"].as_f64().unwrap())
            .sum::<f64>()
            / 5.0;
        assert!(
            (accuracy - mean).abs() < 1e-9,
            "{stage}: {accuracy} vs {mean}"
        );
        assert_eq!(ws.metric(stage, "questions", None), 5.0);
        assert!((0.0..=1.0).contains(&ws.metric(stage, "category.shape", None)));
        assert!((0.0..=1.0).contains(&ws.metric(stage, "pope.f1", None)));
        assert!(
            ws.read(&format!("out/{stage}/categories.svg"))
                .contains("colour")
        );
        assert!(
            ws.read(&format!("out/{stage}/confusion.svg"))
                .starts_with("<svg")
        );
    }

    // MMStar: letters read as its scorer reads them, categories as the mean of subcategories.
    let report = results(&ws, "eval-mmstar");
    assert_eq!(report["asked"], 7);
    assert_eq!(report["skipped"], 1);
    assert_eq!(report["answers"][0]["place"], "mmstar_sample.parquet row 1");
    assert_eq!(report["answers"][0]["subcategory"], "image scene and topic");
    let average = ws.metric("eval-mmstar", "subcategory_average", None);
    let subs: Vec<f64> = [
        "image_scene_and_topic",
        "image_style___quality",
        "recognition",
        "localization",
    ]
    .iter()
    .map(|s| ws.metric("eval-mmstar", &format!("subcategory.{s}"), None))
    .collect();
    assert!((average - subs.iter().sum::<f64>() / 4.0).abs() < 1e-9);
    let coarse = ws.metric("eval-mmstar", "category.coarse_perception", None);
    assert!((coarse - (subs[0] + subs[1]) / 2.0).abs() < 1e-9);
    assert!(ws.read("out/eval-mmstar/confusion.svg").starts_with("<svg"));

    // Another question: only the evaluations run again.
    let more = format!(
        "{}\n{}",
        questions(&ws),
        r#"{"image": "broken.png", "question": "What colour?", "answer": "red"}"#
    );
    // An unreadable image is skipped and counted. It is named relative to the images folder, and
    // lies in the stage's own inputs.
    ws.write(
        "eval/questions.jsonl",
        &more.replace("broken.png", "../../../eval/broken.png"),
    );
    ws.write("eval/broken.png", "not a png");
    let run = ws.build_ok(&[]);
    run.assert_statuses(&[
        ("download", "fresh"),
        ("preprocess", "fresh"),
        ("clip-train", "fresh"),
        ("lm-train", "fresh"),
        ("vlm-pretrain", "fresh"),
        ("finetune", "fresh"),
        ("chat-export", "fresh"),
        ("eval-finetune", "ran"),
        ("eval-bundle", "ran"),
        ("eval-mmstar", "fresh"),
    ]);
    assert_eq!(ws.metric("eval-bundle", "skipped_images", None), 1.0);
    assert_eq!(ws.metric("eval-bundle", "questions", None), 5.0);
    let report = results(&ws, "eval-bundle");
    assert!(report["answers"][5]["skipped"].is_string(), "{report}");
}

#[test]
fn a_missing_image_or_a_wrong_letter_stops_the_stage_naming_the_line() {
    let ws = Ws::new(PIPELINE);
    ws.write("eval/questions.jsonl", "");
    ws.build_ok(&["download"]);
    let good = questions(&ws);
    let missing = format!(
        "{good}\n{}",
        r#"{"image": "nowhere.png", "question": "What colour?", "answer": "red"}"#
    );
    ws.write("eval/questions.jsonl", &missing);
    let run = ws.build(&["eval-finetune"]);
    run.assert_code(1);
    let detail = run.detail("eval-finetune");
    assert!(
        detail.contains("questions.jsonl:6: image")
            && detail.contains("nowhere.png does not exist"),
        "{run}"
    );
    let wrong_letter = good.replace(r#""answer": "A""#, r#""answer": "E""#);
    ws.write("eval/questions.jsonl", &wrong_letter);
    let run = ws.build(&["eval-finetune"]);
    run.assert_code(1);
    assert!(
        run.detail("eval-finetune")
            .contains("questions.jsonl:3: the answer `E` is none of the choices' letters (ABC)"),
        "{run}"
    );
}
