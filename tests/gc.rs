//! `vlmflow gc`: keeps what the workspace holds and each stage's last N artifacts, frees the rest,
//! and the run-cache stops offering what it deleted.

mod common;

use serde_json::Value;

use common::{Ws, built_chain};

fn set_lr(ws: &Ws, lr: &str) {
    ws.params("train", &format!("lr = {lr}\nepochs = 3\n"));
}

/// The chain built with lr = 0.001, 0.01, 0.1 in turn (the workspace holds 0.1). The values have
/// different lengths, so eval (which records the model's size) makes a new artifact each time too.
fn three_variants() -> Ws {
    let ws = built_chain();
    for lr in ["0.01", "0.1"] {
        set_lr(&ws, lr);
        ws.build_ok(&[]).assert_statuses(&[
            ("prepare", "fresh"),
            ("train", "ran"),
            ("eval", "ran"),
        ]);
    }
    ws
}

fn gc(ws: &Ws, args: &[&str]) -> Value {
    let mut all = vec!["gc", "--json"];
    all.extend_from_slice(args);
    let run = ws.run(&all);
    run.assert_code(0);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e})\n{run}"))
}

#[test]
fn gc_keep_last_1_keeps_the_current_artifact_and_frees_the_rest() {
    let ws = three_variants();
    let model = ws.read("out/model.txt");
    let objects_before = ws.files_under("cache/objects").len();

    let report = gc(&ws, &["--keep-last", "1"]);
    assert_eq!(report["dry_run"], false, "{report:#}");
    assert!(
        report["bytes_freed"].as_u64().is_some_and(|b| b > 0),
        "{report:#}"
    );
    assert!(
        report["artifacts_swept"].as_u64() == Some(4),
        "two old artifacts each of train and eval: {report:#}"
    );
    assert!(
        ws.files_under("cache/objects").len() < objects_before,
        "objects were deleted"
    );
    // Run records outlive their artifacts.
    assert_eq!(ws.run_count(), 7);

    // What the workspace holds is untouched and still fresh.
    assert_eq!(ws.read("out/model.txt"), model);
    ws.build_ok(&[]).assert_statuses(&[
        ("prepare", "fresh"),
        ("train", "fresh"),
        ("eval", "fresh"),
    ]);
    // ... and still restorable from the cache.
    ws.remove("out/model.txt");
    ws.build_ok(&[]).assert_statuses(&[
        ("prepare", "fresh"),
        ("train", "restored"),
        ("eval", "fresh"),
    ]);
    assert_eq!(ws.read("out/model.txt"), model);

    // A reverted param older than what was kept runs again instead of restoring.
    set_lr(&ws, "0.01");
    let status = ws.status();
    assert_eq!(status["train"].action, "run", "{status:?}");
    ws.build_ok(&[])
        .assert_statuses(&[("prepare", "fresh"), ("train", "ran"), ("eval", "ran")]);
    assert_eq!(ws.times_ran("train"), 4);

    // A second gc right away has little or nothing left to free of the kept artifacts.
    let again = gc(&ws, &["--keep-last", "1"]);
    assert!(again["artifacts_kept"].as_u64().unwrap() >= 3, "{again:#}");
}

#[test]
fn gc_keep_last_2_keeps_the_previous_artifact_restorable() {
    let ws = three_variants();
    gc(&ws, &["--keep-last", "2"]);

    set_lr(&ws, "0.01");
    ws.build_ok(&[]).assert_statuses(&[
        ("prepare", "fresh"),
        ("train", "restored"),
        ("eval", "restored"),
    ]);
    set_lr(&ws, "0.001");
    ws.build_ok(&[])
        .assert_statuses(&[("prepare", "fresh"), ("train", "ran"), ("eval", "ran")]);
}

#[test]
fn gc_dry_run_deletes_nothing() {
    let ws = three_variants();
    let objects_before = ws.files_under("cache/objects");

    let report = gc(&ws, &["--keep-last", "1", "--dry-run"]);
    assert_eq!(report["dry_run"], true, "{report:#}");
    assert!(
        report["bytes_freed"].as_u64().is_some_and(|b| b > 0),
        "it says what it would free: {report:#}"
    );
    assert_eq!(ws.files_under("cache/objects"), objects_before);
    assert_eq!(
        ws.query_i64("SELECT count(*) FROM artifacts WHERE swept_at IS NOT NULL"),
        0
    );
    let text = ws.run(&["gc", "--keep-last", "1", "-n"]);
    text.assert_code(0);
    assert!(text.stdout.contains("would free"), "{text}");

    // The oldest variant is still restorable.
    set_lr(&ws, "0.001");
    ws.build_ok(&[]).assert_statuses(&[
        ("prepare", "fresh"),
        ("train", "restored"),
        ("eval", "restored"),
    ]);
}

#[test]
fn gc_empties_the_trash() {
    let ws = built_chain();
    ws.write("out/model.txt", "hand made\n");
    ws.build_ok(&[]);
    assert!(!ws.files_under("cache/trash").is_empty());
    let report = gc(&ws, &[]);
    assert!(report["bytes_freed"].as_u64().unwrap() >= "hand made\n".len() as u64);
    assert!(ws.files_under("cache/trash").is_empty());
    ws.build_ok(&[]).assert_statuses(&[
        ("prepare", "fresh"),
        ("train", "fresh"),
        ("eval", "fresh"),
    ]);
}
