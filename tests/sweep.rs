//! `vlmflow sweep`: every trial built into the run-cache off the workspace (its outs and state
//! untouched), shared work done once, the results best first and recorded as a named group, and
//! `build --set` putting a trial in the workspace by restoring it.

mod common;

use std::collections::BTreeMap;

use common::Ws;
use serde_json::Value;

const PIPELINE: &str = r#"
[stages.download]
kind = "download"
params = { source = "synthetic", count = 200, seed = 1 }

[stages.preprocess]
kind = "preprocess"
needs = ["download"]
params = { val_permille = 200 }

[stages.clip-train]
kind = "clip-train"
needs = ["preprocess"]
params = { steps = 4, batch_size = 16, lr = 2e-3, warmup_steps = 1, seed = 0 }

[stages.zero-shot-eval]
kind = "zero-shot-eval"
needs = ["clip-train", "preprocess"]
"#;

/// Every file under `out/` with its bytes.
fn outs(ws: &Ws) -> BTreeMap<String, Vec<u8>> {
    ws.files_under("out")
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (
                p.strip_prefix(ws.root()).unwrap().display().to_string(),
                bytes,
            )
        })
        .collect()
}

fn sweep_json(ws: &Ws, name: &str) -> Value {
    let run = ws.run(&["sweeps", name, "--json"]);
    run.assert_code(0);
    serde_json::from_str(&run.stdout).unwrap()
}

/// Stage lines that say `ran` (a sweep's lines name their trials: `ran  #2 clip-train …`).
fn ran_lines(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| l.starts_with("ran "))
        .map(|l| l[4..].trim().split("  ").next().unwrap().to_string())
        .collect()
}

#[test]
fn a_grid_sweep_builds_off_the_workspace_and_build_set_restores_a_trial() {
    let ws = Ws::new(PIPELINE);
    ws.build_ok(&[]);
    let before = outs(&ws);
    let current = ws.query_i64("SELECT run_id FROM stage_state WHERE stage = 'clip-train'");

    let run = ws.run(&[
        "sweep",
        "clip-train.lr=2e-3,5e-4",
        "clip-train.seed=0,1",
        "-j",
        "2",
        "--name",
        "grid",
    ]);
    run.assert_code(0);
    // Trial 1 is what the workspace holds; the other three train and evaluate once each.
    let mut ran = ran_lines(&run.stdout);
    ran.sort();
    assert_eq!(
        ran,
        [
            "#2 clip-train",
            "#2 zero-shot-eval",
            "#3 clip-train",
            "#3 zero-shot-eval",
            "#4 clip-train",
            "#4 zero-shot-eval"
        ],
        "{run}"
    );
    assert!(
        run.stdout.contains("best first by top1 (higher is better)"),
        "{run}"
    );
    assert!(
        run.stdout
            .contains("vlmflow build zero-shot-eval --set clip-train.lr="),
        "{run}"
    );
    // The workspace is as it was: the same files, every stage fresh.
    assert_eq!(outs(&ws), before);
    for (stage, row) in ws.status() {
        assert_eq!(row.state, "fresh", "{stage}: {row:?}");
    }
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM runs WHERE stage = 'download'"),
        1
    );

    let grid = sweep_json(&ws, "grid");
    let trials = grid["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 4);
    let mut by_number: BTreeMap<i64, &Value> = BTreeMap::new();
    for t in trials {
        assert_eq!(t["status"], "ok", "{t}");
        assert!(t["metrics"]["top1"].is_f64(), "{t}");
        by_number.insert(t["trial"].as_i64().unwrap(), t);
    }
    assert_eq!(by_number[&1]["runs"]["clip-train"], current);
    assert_eq!(by_number[&4]["params"]["clip-train.lr"], 5e-4);
    assert_eq!(by_number[&4]["params"]["clip-train.seed"], 1);
    let ranked: Vec<f64> = trials
        .iter()
        .map(|t| t["metrics"]["top1"].as_f64().unwrap())
        .collect();
    assert!(ranked.windows(2).all(|w| w[0] >= w[1]), "{ranked:?}");

    // Trial 4 back in the workspace, restored rather than run.
    let restore = ws.build_ok(&[
        "zero-shot-eval",
        "--set",
        "clip-train.lr=0.0005",
        "--set",
        "clip-train.seed=1",
    ]);
    assert_eq!(restore.status_of("clip-train"), "restored", "{restore}");
    assert_eq!(restore.status_of("zero-shot-eval"), "restored", "{restore}");
    let made_by = ws.query_i64(
        "SELECT r.source_run FROM stage_state s JOIN runs r ON r.id = s.run_id \
         WHERE s.stage = 'zero-shot-eval'",
    );
    assert_eq!(made_by, by_number[&4]["runs"]["zero-shot-eval"]);

    // A second sweep shares what the first made: only the new setting runs.
    let again = ws.run(&["sweep", "clip-train.lr=2e-3,1e-3", "clip-train.seed=1"]);
    again.assert_code(0);
    let mut ran = ran_lines(&again.stdout);
    ran.sort();
    assert_eq!(ran, ["#2 clip-train", "#2 zero-shot-eval"], "{again}");
    let listed = ws.run(&["sweeps"]);
    listed.assert_code(0);
    assert!(
        listed.stdout.contains("grid") && listed.stdout.contains("sweep-2"),
        "{listed}"
    );

    let taken = ws.run(&["sweep", "clip-train.lr=1e-3", "--name", "grid"]);
    taken.assert_code(2);
    assert!(
        taken.stderr.contains("a sweep named `grid` exists"),
        "{taken}"
    );
}

#[test]
fn a_random_search_draws_the_same_values_from_the_same_seed() {
    let ws = Ws::new(PIPELINE);
    let draws = |seed: &str| {
        let run = ws.run(&[
            "sweep",
            "clip-train.lr=loguniform(1e-4, 1e-2)",
            "clip-train.seed=randint(0, 9)",
            "--trials",
            "5",
            "--seed",
            seed,
            "--dry-run",
            "--json",
        ]);
        run.assert_code(0);
        let listed: Value = serde_json::from_str(&run.stdout).unwrap();
        // download and preprocess once, clip-train and zero-shot-eval per trial.
        assert_eq!(listed["stage_builds"], 12, "{listed}");
        listed["trials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["params"].clone())
            .collect::<Vec<_>>()
    };
    let first = draws("3");
    assert_eq!(first.len(), 5);
    assert_eq!(first, draws("3"));
    assert_ne!(first, draws("4"));
    for p in &first {
        let lr = p["clip-train.lr"].as_f64().unwrap();
        assert!((1e-4..=1e-2).contains(&lr), "{p}");
        assert!(
            (0..=9).contains(&p["clip-train.seed"].as_i64().unwrap()),
            "{p}"
        );
    }
    // A dry run builds and records nothing.
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM runs"), 0);
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM sweeps"), 0);

    let count_missing = ws.run(&["sweep", "clip-train.lr=uniform(0.1, 0.2)"]);
    count_missing.assert_code(2);
    assert!(
        count_missing.stderr.contains("--trials N"),
        "{count_missing}"
    );
}

#[test]
fn a_bad_sweep_is_refused_before_anything_runs() {
    let ws = Ws::new(PIPELINE);
    for (args, says) in [
        (
            vec!["sweep", "clip-train.lrr=1e-3,2e-3"],
            "has no param `lrr`",
        ),
        (
            vec!["sweep", "clip-trian.lr=1e-3"],
            "did you mean `clip-train`?",
        ),
        (vec!["sweep", "lr=1e-3,2e-3"], "expected STAGE.PARAM=V1,V2"),
        (
            vec!["sweep", "clip-train.lr=1e-3", "--target", "eval"],
            "no stage named `eval`",
        ),
    ] {
        let run = ws.run(&args);
        run.assert_code(2);
        assert!(run.stderr.contains(says), "{args:?}\n{run}");
    }
    assert!(!ws.exists("cache/vlmflow.db"), "nothing was recorded");
}

#[test]
fn a_command_stage_is_not_run_by_a_sweep_and_the_workspace_stays() {
    let ws = common::built_chain();
    let before = ws.read("out/eval.txt");
    let run = ws.run(&["sweep", "train.lr=0.01,0.02"]);
    run.assert_code(1);
    assert!(
        run.stdout
            .contains("a sweep cannot run `train`: its command writes"),
        "{run}"
    );
    assert_eq!(ws.times_ran("train"), 1);
    assert_eq!(ws.read("out/eval.txt"), before);
    let recorded = sweep_json(&ws, "sweep-1");
    assert!(
        recorded["trials"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["status"] == "failed" && t["error"].as_str().unwrap().contains("train")),
        "{recorded}"
    );
}

/// A resource a stage asks for is held across trials: with `gpus = 1`, three trials' trainings
/// never overlap, even with `-j 3`.
#[test]
fn trials_hold_the_stagefile_resources() {
    let ws = Ws::new(&PIPELINE.replace(
        "needs = [\"preprocess\"]\nparams = { steps = 4,",
        "needs = [\"preprocess\"]\nresources = { gpus = 1 }\nparams = { steps = 4,",
    ));
    ws.build_ok(&["preprocess"]);
    let run = ws.run(&[
        "sweep",
        "clip-train.lr=2e-3,1e-3,5e-4",
        "--target",
        "clip-train",
        "-j",
        "3",
    ]);
    run.assert_code(0);
    let spans: Vec<(f64, f64)> = ws
        .query(
            "SELECT started_at, finished_at FROM runs WHERE stage = 'clip-train' \
             ORDER BY started_at",
        )
        .iter()
        .map(|r| {
            (
                r["started_at"].as_f64().unwrap(),
                r["finished_at"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(spans.len(), 3, "{run}");
    for pair in spans.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "trainings overlapped: {spans:?}");
    }
}

/// Ctrl-C stops a sweep (exit 130, its trials recorded as interrupted, the workspace as it
/// was); the same sweep run again resumes the interrupted training from its checkpoint.
#[test]
fn an_interrupted_sweep_resumes_from_its_checkpoint() {
    let ws = Ws::new(&PIPELINE.replace(
        "steps = 4, batch_size = 16",
        "steps = 60, batch_size = 16, checkpoint_every = 10",
    ));
    ws.build_ok(&["preprocess"]);
    let args = ["sweep", "clip-train.lr=2e-3,1e-3", "--target", "clip-train"];
    let mut first: Vec<&str> = args.to_vec();
    first.extend(["--name", "first"]);
    let child = ws.spawn(&first);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while ws.files_under("cache/checkpoints").is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    common::signal(child.id() as i32, libc::SIGINT);
    let stopped = common::Run::wait(child, &first, std::time::Duration::from_secs(60));
    stopped.assert_code(130);
    let recorded = sweep_json(&ws, "first");
    for t in recorded["trials"].as_array().unwrap() {
        assert_eq!(t["status"], "interrupted", "{recorded}");
    }
    assert!(
        !ws.exists("out/clip-train"),
        "the workspace has no clip-train yet"
    );

    ws.run(&args).assert_code(0);
    let log = ws.run(&["log", "clip-train", "--verbose"]);
    assert!(
        log.stdout.contains("resumed from the checkpoint at step"),
        "{log}"
    );
    let again = sweep_json(&ws, "sweep-2");
    for t in again["trials"].as_array().unwrap() {
        assert_eq!(t["status"], "ok", "{again}");
    }
    assert!(
        !ws.exists("out/clip-train"),
        "a sweep leaves the workspace as it was"
    );
}

/// `gc` keeps every trial of the newest sweep, so the trial picked from its table is restored
/// after a gc; an older sweep's trials are freed like any old run.
#[test]
fn gc_keeps_the_newest_sweeps_trials() {
    let ws = Ws::new(PIPELINE);
    ws.build_ok(&["clip-train"]);
    let sweep = |lrs: &str| {
        let axis = format!("clip-train.lr={lrs}");
        ws.run(&["sweep", &axis, "--target", "clip-train"])
            .assert_code(0);
    };
    let gc = || {
        ws.run(&["gc", "--keep-last", "0"]).assert_code(0);
    };
    let build = |lr: &str| {
        let set = format!("clip-train.lr={lr}");
        ws.build_ok(&["clip-train", "--set", &set])
            .status_of("clip-train")
    };
    sweep("1e-3,5e-4");
    gc();
    assert_eq!(build("0.0005"), "restored");
    sweep("3e-3,4e-3");
    gc();
    assert_eq!(build("0.003"), "restored");
    assert_eq!(build("0.001"), "ran", "the older sweep's trial was freed");
}
