//! Every run's metrics also land in a TensorBoard event file under cache/tensorboard, which the
//! `tensorboard` package from PyPI reads back (tests/tools/read_tfevents.py, CRCs checked), and
//! `vlmflow tensorboard` writes the files of runs that have none.

mod common;

use std::process::Command;

use common::Ws;
use serde_json::{Value, json};

const STAGES: &str = r#"
[stages.train]
kind = "cmd"
cmd = "python3 train.py"
inputs = ["train.py"]
outs = ["model.txt"]
metrics = "metrics.json"

[stages.download]
kind = "download"
params = { source = "synthetic", count = 120, seed = 2 }

[stages.preprocess]
kind = "preprocess"
needs = ["download"]
params = { val_permille = 100 }

[stages.lm-train]
kind = "lm-train"
needs = ["preprocess"]
params = { steps = 6, batch_size = 16, lr = 2e-3, warmup_steps = 2 }
"#;

fn train_script(losses: &str) -> String {
    format!(
        "import json\njson.dump({{\"train.loss\": [{losses}], \"val.acc\": 0.75}}, \
         open(\"metrics.json\", \"w\"))\nopen(\"model.txt\", \"w\").write(\"{losses}\")\n"
    )
}

/// Every run's scalars under `cache/tensorboard`, as TensorBoard reads them.
fn read_back(ws: &Ws) -> Value {
    let root = env!("CARGO_MANIFEST_DIR");
    let python = Command::new(format!("{root}/tests/tools/tensorboard-python"))
        .output()
        .expect("tests/tools/tensorboard-python");
    assert!(python.status.success(), "{python:?}");
    let python = String::from_utf8(python.stdout).unwrap();
    let out = Command::new(python.trim())
        .arg(format!("{root}/tests/tools/read_tfevents.py"))
        .arg(ws.path("cache/tensorboard"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn runs_write_event_files_tensorboard_reads_and_missing_ones_are_written_on_demand() {
    let ws = Ws::new(STAGES);
    ws.write("train.py", &train_script("1.0, 0.5, 0.25"));
    ws.build_ok(&[]);
    ws.write("train.py", &train_script("0.75, 0.375"));
    ws.build_ok(&["train"]);

    let runs = read_back(&ws);
    assert_eq!(
        runs["train/run-1"],
        json!({"train/loss": [[0, 1.0], [1, 0.5], [2, 0.25]], "val/acc": [[2, 0.75]]})
    );
    // The rebuild is a run of its own beside the first (values exact in f32: TensorBoard
    // scalars are `simple_value` floats).
    assert_eq!(
        runs["train/run-5"]["train/loss"],
        json!([[0, 0.75], [1, 0.375]])
    );
    // A real training stage: its loss at every step, as the database has it.
    let lm = runs
        .as_object()
        .unwrap()
        .iter()
        .find(|(run, _)| run.starts_with("lm-train/"))
        .map(|(_, tags)| tags.clone())
        .expect("an lm-train run");
    let loss = lm["train/loss"].as_array().unwrap();
    assert_eq!(loss.len(), 6);
    for point in loss {
        let (step, value) = (point[0].as_i64().unwrap(), point[1].as_f64().unwrap());
        let stored = ws.metric("lm-train", "train.loss", Some(step));
        assert!(
            (value - stored).abs() < 1e-5 * stored.abs().max(1.0),
            "step {step}"
        );
    }

    // Gone (an old workspace, a cleaned cache): `vlmflow tensorboard` writes them from the
    // database, with the same numbers.
    std::fs::remove_dir_all(ws.path("cache/tensorboard")).unwrap();
    let run = ws.run(&["tensorboard"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("wrote cache/tensorboard/train/run-1")
            && run
                .stdout
                .contains("tensorboard --logdir cache/tensorboard"),
        "{run}"
    );
    assert_eq!(read_back(&ws), runs);
    let again = ws.run(&["tensorboard"]);
    assert!(
        again
            .stdout
            .contains("every run with metrics has its event file"),
        "{again}"
    );
}
