//! `clip-train` and `zero-shot-eval` on a tiny synthetic dataset: the pipeline trains, evaluates
//! above chance, records per-step metrics, reruns only what a param edit touches, and resumes an
//! interrupted training from its checkpoint.

mod common;

use common::Ws;

const PIPELINE: &str = r#"
[stages.download]
kind = "download"
params = { source = "synthetic", count = 600, seed = 1 }

[stages.preprocess]
kind = "preprocess"
needs = ["download"]
params = { val_permille = 200 }

[stages.clip-train]
kind = "clip-train"
needs = ["preprocess"]

[stages.zero-shot-eval]
kind = "zero-shot-eval"
needs = ["clip-train", "preprocess"]
"#;

const TRAIN: &str =
    "steps = 60\nbatch_size = 32\nlr = 2e-3\nwarmup_steps = 10\ncheckpoint_every = 20\n";

#[test]
fn a_tiny_clip_trains_and_classifies_above_chance() {
    let ws = Ws::new(PIPELINE);
    ws.params("clip-train", TRAIN);
    ws.params(
        "zero-shot-eval",
        "templates = [\"a photo of a {}.\", \"a {}.\"]\n",
    );
    ws.build_ok(&[]);
    for file in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "loss.svg",
    ] {
        assert!(
            ws.exists(&format!("out/clip-train/{file}")),
            "{file} in the artifact"
        );
    }
    assert!(ws.exists("out/zero-shot-eval/confusion.png"));
    let losses = ws.query(
        "SELECT value FROM metrics m JOIN stage_state s ON s.run_id = m.run_id \
         WHERE s.stage = 'clip-train' AND m.name = 'train.loss' ORDER BY step",
    );
    assert_eq!(losses.len(), 60, "one loss per step");
    let first = losses[0]["value"].as_f64().unwrap();
    let last = ws.metric("clip-train", "train.loss_final", None);
    assert!(last < first * 0.8, "loss falls: {first} → {last}");
    // 30 classes: chance is 1/30 top-1 and 5/30 top-5.
    let (top1, top5) = (
        ws.metric("zero-shot-eval", "top1", None),
        ws.metric("zero-shot-eval", "top5", None),
    );
    assert!(
        top1 > 2.0 / 30.0 && top5 > 8.0 / 30.0,
        "above chance: top-1 {top1}, top-5 {top5}"
    );

    // An eval param reruns only the eval; a training param reruns training and eval only.
    let eval_edit = ws.build_ok(&["--set", "zero-shot-eval.templates=[\"a {}.\"]"]);
    assert_eq!(eval_edit.status_of("clip-train"), "fresh", "{eval_edit}");
    assert_eq!(eval_edit.status_of("zero-shot-eval"), "ran", "{eval_edit}");
    let lr_edit = ws.build_ok(&["--set", "clip-train.lr=1e-3", "zero-shot-eval"]);
    assert_eq!(lr_edit.status_of("preprocess"), "fresh", "{lr_edit}");
    assert_eq!(lr_edit.status_of("clip-train"), "ran", "{lr_edit}");
    assert_eq!(lr_edit.status_of("zero-shot-eval"), "ran", "{lr_edit}");
}

#[test]
fn training_is_deterministic_and_an_interrupted_run_resumes_to_the_same_weights() {
    let ws = Ws::new(PIPELINE);
    ws.params("clip-train", TRAIN);
    ws.build_ok(&["clip-train"]);
    let uninterrupted = std::fs::read(ws.path("out/clip-train/model.safetensors")).unwrap();
    let curve = ws.read("out/clip-train/loss.svg");

    // Same key, fresh run: bit-identical weights (deterministic on CPU).
    ws.build_ok(&["--force", "clip-train", "clip-train"]);
    assert_eq!(
        std::fs::read(ws.path("out/clip-train/model.safetensors")).unwrap(),
        uninterrupted
    );

    // Interrupt after the first checkpoint, then build again: it resumes, not restarts.
    let mut child = ws.spawn(&["build", "--force", "clip-train", "clip-train"]);
    let checkpoint = ws.files_under("cache/checkpoints");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while ws.files_under("cache/checkpoints").len() <= checkpoint.len()
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "interrupted");
    let resumed = ws.build_ok(&["--force", "clip-train", "clip-train"]);
    let log = ws.run(&["log", "clip-train", "-n", "1", "--verbose"]);
    assert!(
        log.stdout.contains("resumed from the checkpoint at step"),
        "{resumed}\n{log}"
    );
    assert_eq!(
        std::fs::read(ws.path("out/clip-train/model.safetensors")).unwrap(),
        uninterrupted
    );
    assert_eq!(
        ws.read("out/clip-train/loss.svg"),
        curve,
        "the resumed run's loss curve holds the steps before the resume too"
    );
    let series = ws.query_i64(
        "SELECT count(*) FROM metrics m JOIN stage_state s ON s.run_id = m.run_id \
         WHERE s.stage = 'clip-train' AND m.name = 'train.loss'",
    );
    assert_eq!(series, 60, "and so does its train.loss series");
}

#[test]
fn per_step_metrics_can_be_queried_while_the_stage_trains() {
    let ws = Ws::new(PIPELINE);
    // Every stage's params are checked whatever the target: clip-train's go in first.
    ws.params("clip-train", "steps = 5000\nbatch_size = 16\nlr = 1e-3\n");
    ws.build_ok(&["preprocess"]);
    let mut child = ws.spawn(&["build", "clip-train"]);
    let losses = || {
        ws.query_i64(
            "SELECT count(*) FROM metrics JOIN runs ON runs.id = metrics.run_id \
             WHERE runs.stage = 'clip-train' AND metrics.name = 'train.loss'",
        )
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut seen = 0;
    while seen == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(250));
        seen = losses();
    }
    let still_running = child.try_wait().unwrap().is_none();
    common::signal(child.id() as i32, libc::SIGINT);
    child.wait().unwrap();
    assert!(
        seen > 0,
        "no per-step metric reached the database in 2 minutes"
    );
    assert!(
        still_running,
        "the stage finished before its metrics were seen"
    );
    assert!(losses() >= seen, "the rest is written when the run ends");
}

#[test]
fn bf16_trains_and_device_choices_move_only_the_ml_stages() {
    let ws = Ws::new(PIPELINE);
    let train = "steps = 20\nbatch_size = 32\nlr = 2e-3\n";
    ws.params("clip-train", train);
    ws.build_ok(&[]);
    let f32_last = ws.metric("clip-train", "train.loss_final", None);

    // bf16 is a training param: it reruns training and eval, and training still learns.
    ws.params("clip-train", &format!("{train}precision = \"bf16\"\n"));
    let bf16 = ws.build_ok(&[]);
    bf16.assert_statuses(&[
        ("download", "fresh"),
        ("preprocess", "fresh"),
        ("clip-train", "ran"),
        ("zero-shot-eval", "ran"),
    ]);
    let losses = ws.query(
        "SELECT value FROM metrics m JOIN stage_state s ON s.run_id = m.run_id \
         WHERE s.stage = 'clip-train' AND m.name = 'train.loss' ORDER BY step",
    );
    let first = losses[0]["value"].as_f64().unwrap();
    let last = ws.metric("clip-train", "train.loss_final", None);
    assert!(
        last < first * 0.97 && (last - f32_last).abs() < 0.02 * first,
        "bf16 loss falls as f32's: {first} → {last} (f32 → {f32_last})"
    );
    let typo = ws.build(&["--set", "clip-train.precision=\"fp8\""]);
    typo.assert_code(2);
    assert!(typo.stderr.contains("precision"), "{typo}");

    // The CPU is the default: naming it changes no key.
    let cpu = ws.build_ok(&["--device", "cpu"]);
    assert!(
        cpu.lines().iter().all(|l| l.status == "fresh"),
        "--device cpu is the default\n{cpu}"
    );
    // A GPU is another artifact for the ML stages only; data stages stay as they are.
    let status = ws.run(&["status", "--json", "--device", "cuda:1"]);
    status.assert_code(0);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&status.stdout).unwrap();
    let state = |stage: &str| {
        rows.iter()
            .find(|r| r["stage"] == stage)
            .map(|r| r["state"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(state("download"), "fresh", "{status}");
    assert_eq!(state("preprocess"), "fresh", "{status}");
    assert_ne!(state("clip-train"), "fresh", "{status}");
    assert_ne!(state("zero-shot-eval"), "fresh", "{status}");

    let bad = ws.build(&["--device", "gpu"]);
    bad.assert_code(2);
    assert!(bad.stderr.contains("unknown device `gpu`"), "{bad}");
    if !cfg!(feature = "cuda") {
        let cuda = ws.build(&["--device", "cuda"]);
        assert_ne!(cuda.code, 0, "{cuda}");
        assert!(cuda.stdout.contains("--features cuda"), "{cuda}");
        assert_eq!(cuda.status_of("clip-train"), "failed", "{cuda}");
    }
}

#[test]
fn a_diverging_training_stops_at_once_and_is_recorded_as_failed() {
    let ws = Ws::new(PIPELINE);
    ws.params(
        "clip-train",
        "steps = 40\nbatch_size = 32\nlr = 1e9\nwarmup_steps = 2\ncheckpoint_every = 1\n",
    );
    let build = ws.build(&["clip-train"]);
    build.assert_code(1);
    let line = build.detail("clip-train");
    assert!(
        line.contains("training diverged at step") && line.contains("checkpoint"),
        "the step and the checkpoint are named\n{build}"
    );
    assert!(!build.stderr.contains("NOT NULL"), "{build}");
    let runs = ws.log(Some("clip-train"));
    assert_eq!(runs[0]["status"], "failed", "{runs:?}");
    let error = runs[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("diverged"),
        "the real cause is recorded: {error}"
    );
    let stepped = ws.query(
        "SELECT count(*) AS n FROM metrics m JOIN runs r ON r.id = m.run_id \
         WHERE r.stage = 'clip-train' AND m.name = 'train.loss'",
    );
    let n = stepped[0]["n"].as_i64().unwrap();
    assert!(n < 40, "stopped before the end: {n} steps recorded");

    // Log lines into a pipe carry no colour codes.
    let traced = ws.run(&["-vv", "status"]);
    assert!(
        traced.stderr.contains("evaluated"),
        "debug lines are printed\n{traced}"
    );
    assert!(
        !traced.stderr.contains('\u{1b}'),
        "no colour codes into a pipe\n{traced}"
    );
}
