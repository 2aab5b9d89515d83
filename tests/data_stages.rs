//! The `download` and `preprocess` kinds on small data: the synthetic source, a local image folder
//! with a CSV of captions (one image corrupt, one missing), and a dataset where nothing survives.

mod common;

use common::Ws;

const SYNTHETIC: &str = r#"
[stages.download]
kind = "download"
params = { source = "synthetic", count = 300, seed = 3 }

[stages.preprocess]
kind = "preprocess"
needs = ["download"]
params = { val_permille = 100, records_per_shard = 64 }
"#;

#[test]
fn synthetic_data_becomes_shards_with_a_held_out_split() {
    let ws = Ws::new(SYNTHETIC);
    ws.build_ok(&[]);
    assert_eq!(ws.files_under("out/download/images").len(), 300);
    assert_eq!(ws.metric("download", "images_ok", None), 300.0);
    let (train, validation) = (
        ws.metric("preprocess", "records_train", None),
        ws.metric("preprocess", "records_validation", None),
    );
    assert_eq!(train + validation, 300.0);
    assert!(
        (10.0..60.0).contains(&validation),
        "about 10% held out, got {validation}"
    );
    assert!(ws.exists("out/preprocess/tokenizer.json"));
    assert!(
        ws.files_under("out/preprocess/train").len() >= 4,
        "records_per_shard = 64 rolls shards"
    );
    let meta: serde_json::Value =
        serde_json::from_str(&ws.read("out/preprocess/meta.json")).unwrap();
    assert_eq!(meta["classes"].as_array().map(Vec::len), Some(30));
}

#[test]
fn held_out_questions_at_several_sizes_with_shapes_anywhere() {
    let ws = Ws::new(
        r#"
[stages.heldout]
kind = "download"
params = { source = "synthetic", count = 30, seed = 9, image_sizes = [32, 64, 96], placement = "anywhere", questions = true }
"#,
    );
    ws.build_ok(&[]);
    let lines: Vec<serde_json::Value> = ws
        .read("out/heldout/questions.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 30 * 4, "four questions per image");
    let kinds: std::collections::BTreeSet<&str> = lines
        .iter()
        .map(|l| l["category"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["colour", "position", "shape", "size"]
    );
    // Image i is drawn at image_sizes[i % 3].
    for (i, size) in [(0, 32), (1, 64), (2, 96), (3, 32)] {
        let image = image::open(ws.path(&format!("out/heldout/images/{i:06}.png"))).unwrap();
        assert_eq!((image.width(), image.height()), (size, size));
    }
    assert_eq!(lines[4]["image"], "images/000001.png");
}

#[test]
fn the_synthetic_source_is_deterministic_and_a_preprocess_param_reruns_only_preprocess() {
    let ws = Ws::new(SYNTHETIC);
    ws.build_ok(&[]);
    let shards = ws.read("out/preprocess/meta.json");
    ws.build_ok(&["--force", "download"]);
    let again = ws.build_ok(&[]);
    assert_eq!(
        again.status_of("preprocess"),
        "fresh",
        "identical data: early cutoff\n{again}"
    );
    assert_eq!(ws.read("out/preprocess/meta.json"), shards);

    let edited = ws.build_ok(&["--set", "preprocess.val_permille=200"]);
    assert_eq!(edited.status_of("download"), "fresh", "{edited}");
    assert_eq!(edited.status_of("preprocess"), "ran", "{edited}");
}

#[test]
fn a_local_folder_skips_missing_and_corrupt_images_and_counts_them() {
    let ws = Ws::new(
        r#"
[stages.download]
kind = "download"
inputs = ["raw"]
params = { source = "local", captions = "raw/captions.csv" }

[stages.preprocess]
kind = "preprocess"
needs = ["download"]
params = { val_permille = 0 }
"#,
    );
    // Three good images drawn by the generator, one truncated PNG, one that does not exist.
    let config = vlmflow_ml::data::shapes::ShapesConfig {
        seed: 1,
        image_size: 32,
        ..Default::default()
    };
    let mut csv = String::from("image,caption,label\n");
    for i in 0..3u64 {
        let sample = config.sample(i);
        let bytes = vlmflow_ml::data::shapes::render_png_bytes(&sample.image);
        std::fs::create_dir_all(ws.path("raw")).unwrap();
        std::fs::write(ws.path(&format!("raw/{i}.png")), &bytes).unwrap();
        csv.push_str(&format!(
            "{i}.png,\"{}\",{}\n",
            sample.caption,
            sample.class_name()
        ));
        if i == 0 {
            std::fs::write(ws.path("raw/broken.png"), &bytes[..bytes.len() / 2]).unwrap();
        }
    }
    csv.push_str("broken.png,a broken image,red circle\nmissing.png,not there,red circle\n");
    ws.write("raw/captions.csv", &csv);

    ws.build_ok(&[]);
    assert_eq!(ws.metric("download", "images_ok", None), 4.0);
    assert_eq!(ws.metric("download", "images_skipped", None), 1.0);
    assert_eq!(ws.metric("preprocess", "records_train", None), 3.0);
    assert_eq!(ws.metric("preprocess", "skipped_corrupt", None), 1.0);
    let log = ws.run(&["log", "preprocess", "--verbose"]);
    assert!(
        log.stdout.contains("broken.png"),
        "the log names the corrupt image\n{log}"
    );
}

#[test]
fn local_data_must_be_a_declared_input() {
    let ws = Ws::new(
        r#"
[stages.download]
kind = "download"
params = { source = "local", captions = "captions.jsonl" }
"#,
    );
    ws.write(
        "captions.jsonl",
        "{\"image\": \"a.png\", \"caption\": \"x\"}\n",
    );
    let run = ws.build(&[]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stdout.contains("not among its `inputs`"), "{run}");
}

#[test]
fn nothing_usable_fails_with_a_clear_message_and_no_artifact() {
    let ws = Ws::new(
        r#"
[stages.download]
kind = "download"
inputs = ["raw"]
params = { source = "local", captions = "raw/captions.jsonl" }

[stages.preprocess]
kind = "preprocess"
needs = ["download"]
"#,
    );
    ws.write("raw/a.png", "not an image at all");
    ws.write(
        "raw/captions.jsonl",
        "{\"image\": \"a.png\", \"caption\": \"a red circle\"}\n",
    );
    let run = ws.build(&[]);
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(run.status_of("preprocess"), "failed", "{run}");
    assert!(run.stdout.contains("no usable record"), "{run}");
    assert!(
        !ws.exists("out/preprocess"),
        "a failed stage leaves no artifact"
    );
}

#[test]
fn unknown_params_name_the_stage_and_the_param() {
    let ws = Ws::new(
        r#"
[stages.download]
kind = "download"
params = { source = "synthetic", cuont = 10 }
"#,
    );
    // Checked when the Stagefile loads, before anything runs (stagefile_errors.rs has more).
    let run = ws.build(&[]);
    assert_eq!(run.code, 2, "{run}");
    assert!(
        run.stderr
            .contains("unknown param `cuont` in stage `download`")
            && run.stderr.contains("did you mean `count`?"),
        "{run}"
    );
    assert!(run.lines().is_empty(), "nothing ran\n{run}");
}
