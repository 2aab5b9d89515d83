//! The outs in the workspace: read-only after a build, restored when deleted, and hand-made
//! replacements kept in `cache/trash` rather than lost.

mod common;

use common::{Ws, built_chain, mode};

#[test]
fn outs_are_read_only_after_a_build() {
    let ws = Ws::new(
        r#"
[stages.shapes]
kind = "cmd"
cmd = "echo $VLMFLOW_STAGE >> ran.log && mkdir -p out/shapes/train && printf circle > out/shapes/train/0.txt && printf square > out/shapes/1.txt && printf ok > out/flag.txt"
outs = ["out/shapes", "out/flag.txt"]
"#,
    );
    ws.build_ok(&[]).assert_statuses(&[("shapes", "ran")]);
    for file in ["out/flag.txt", "out/shapes/1.txt", "out/shapes/train/0.txt"] {
        let m = mode(&ws.path(file));
        assert_eq!(m & 0o222, 0, "{file} is writable: mode {m:o}");
    }
    assert_eq!(ws.read("out/shapes/train/0.txt"), "circle");
    assert_eq!(ws.read("out/flag.txt"), "ok");

    // A rebuild leaves them as they are.
    ws.build_ok(&[]).assert_statuses(&[("shapes", "fresh")]);
    assert_eq!(mode(&ws.path("out/flag.txt")) & 0o222, 0);
}

#[test]
fn a_deleted_out_is_restored_without_running() {
    let ws = built_chain();
    let model = ws.read("out/model.txt");
    ws.remove("out/model.txt");

    let status = ws.status();
    assert_eq!(status["train"].action, "restore", "{status:?}");
    assert!(
        status["train"].why().contains("out/model.txt"),
        "{status:?}"
    );
    let build = ws.build_ok(&[]);
    build.assert_statuses(&[
        ("prepare", "fresh"),
        ("train", "restored"),
        ("eval", "fresh"),
    ]);
    assert!(
        build.detail("train").contains("out/model.txt is missing"),
        "{build}"
    );
    assert_eq!(ws.read("out/model.txt"), model);
    assert_eq!(ws.times_ran("train"), 1);
    assert_eq!(mode(&ws.path("out/model.txt")) & 0o222, 0);

    ws.build_ok(&[]).assert_statuses(&[
        ("prepare", "fresh"),
        ("train", "fresh"),
        ("eval", "fresh"),
    ]);
}

#[test]
fn a_deleted_out_folder_is_restored() {
    let ws = Ws::new(
        r#"
[stages.shapes]
kind = "cmd"
cmd = "echo $VLMFLOW_STAGE >> ran.log && mkdir -p out/shapes/a && printf circle > out/shapes/a/0.txt && printf square > out/shapes/1.txt"
outs = ["out/shapes"]
"#,
    );
    ws.build_ok(&[]).assert_statuses(&[("shapes", "ran")]);
    std::fs::remove_dir_all(ws.path("out/shapes")).unwrap();
    ws.build_ok(&[]).assert_statuses(&[("shapes", "restored")]);
    assert_eq!(ws.read("out/shapes/a/0.txt"), "circle");
    assert_eq!(ws.read("out/shapes/1.txt"), "square");
    assert_eq!(ws.times_ran("shapes"), 1);
}

#[test]
fn an_out_replaced_by_hand_is_moved_to_the_trash_and_the_artifact_restored() {
    let ws = built_chain();
    let model = ws.read("out/model.txt");
    // Replace (not write through: the out is a read-only link into the cache).
    ws.write("out/model.txt", "hand made weights\n");

    let status = ws.status();
    assert!(
        status["train"].why().contains("out/model.txt was modified"),
        "{status:?}"
    );
    let build = ws.build_ok(&[]);
    build.assert_statuses(&[
        ("prepare", "fresh"),
        ("train", "restored"),
        ("eval", "fresh"),
    ]);
    assert_eq!(ws.read("out/model.txt"), model);
    assert!(
        build.stderr.contains("cache/trash"),
        "the user is told where the hand-made file went\n{build}"
    );

    let kept: Vec<String> = ws
        .files_under("cache/trash")
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect();
    assert!(
        kept.iter().any(|c| c == "hand made weights\n"),
        "the hand-made content is in cache/trash: {kept:?}"
    );
    assert_eq!(ws.times_ran("train"), 1);
}

#[test]
fn a_hand_made_file_in_the_way_of_a_first_run_is_kept_in_the_trash() {
    let ws = common::chain();
    ws.write("out/model.txt", "old weights from elsewhere\n");
    let build = ws.build_ok(&[]);
    build.assert_statuses(&[("prepare", "ran"), ("train", "ran"), ("eval", "ran")]);
    assert!(ws.read("out/model.txt").contains("hello shapes"));
    let kept: Vec<String> = ws
        .files_under("cache/trash")
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect();
    assert!(
        kept.iter().any(|c| c == "old weights from elsewhere\n"),
        "{kept:?}\n{build}"
    );
}

#[test]
fn an_out_made_writable_and_edited_in_place_does_not_corrupt_the_cache() {
    use std::os::unix::fs::PermissionsExt;
    let ws = built_chain();
    let model = ws.read("out/model.txt");
    let path = ws.path("out/model.txt");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    // Writes through the file (same inode), as an editor saving in place would.
    std::fs::write(&path, "tampered\n").unwrap();

    let build = ws.build_ok(&[]);
    assert_ne!(
        build.status_of("train"),
        "fresh",
        "the edit is noticed\n{build}"
    );
    assert_eq!(
        ws.read("out/model.txt"),
        model,
        "the artifact comes back with its original content\n{build}"
    );
    // The cache still holds the original bytes: restore once more from it.
    ws.remove("out/model.txt");
    let again = ws.build_ok(&[]);
    assert_eq!(ws.read("out/model.txt"), model, "{again}");
}

#[test]
fn an_out_edited_in_place_with_the_same_size_is_never_restored_corrupt() {
    use std::os::unix::fs::PermissionsExt;
    let ws = built_chain();
    let model = ws.read("out/model.txt");
    let path = ws.path("out/model.txt");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    // Same size, same inode: with hard-linked outs this edits the cache object too.
    let same_size = "x".repeat(model.len());
    std::fs::write(&path, &same_size).unwrap();

    let build = ws.build_ok(&[]);
    assert_eq!(
        build.status_of("train"),
        "ran",
        "the damaged cache copy is not restored; the stage runs again\n{build}"
    );
    assert_eq!(ws.read("out/model.txt"), model, "{build}");
    let trashed: Vec<String> = ws
        .files_under("cache/trash")
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert_eq!(trashed, [same_size], "the edited bytes are kept, not lost");
    ws.remove("out/model.txt");
    let again = ws.build_ok(&[]);
    assert_eq!(again.status_of("train"), "restored", "{again}");
    assert_eq!(ws.read("out/model.txt"), model, "{again}");
}

#[test]
fn a_cache_object_altered_in_place_is_quarantined_and_the_stage_rebuilt() {
    let ws = built_chain();
    let model = ws.read("out/model.txt");
    ws.build_ok(&["--set", "train.lr=0.002"]);
    // The first model's object gets one bit flipped (same size).
    let bytes = ws.damage_object_holding(&model);

    // Back to the first params: its artifact would be restored, but it is damaged.
    let build = ws.build_ok(&[]);
    assert_eq!(build.status_of("train"), "ran", "{build}");
    assert!(
        build.stderr.contains("is damaged") && build.stderr.contains("cache/quarantine"),
        "the user is told\n{build}"
    );
    assert_eq!(
        ws.read("out/model.txt"),
        model,
        "rebuilt, not restored corrupt"
    );
    let quarantined = ws.files_under("cache/quarantine");
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert_eq!(
        std::fs::read(&quarantined[0]).unwrap(),
        bytes,
        "kept for a look"
    );
}
