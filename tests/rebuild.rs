//! What a build decides to do: run, restore or leave fresh — after edits of params, inputs and
//! upstream outputs, after reverts, with `--set`, `--force` and `--dry-run`.

mod common;

use common::{TRAIN_PARAMS, Ws, built_chain, chain, parse_stage_line};

#[test]
fn stage_lines_parse() {
    let l = parse_stage_line("ran       train       1.52s  params.lr 0.001 → 0.002").unwrap();
    assert_eq!(
        (l.status.as_str(), l.stage.as_str(), l.time.as_deref()),
        ("ran", "train", Some("1.52s"))
    );
    assert_eq!(l.detail, "params.lr 0.001 → 0.002");
    let l = parse_stage_line("fresh     eval").unwrap();
    assert_eq!(
        (l.status.as_str(), l.time, l.detail.as_str()),
        ("fresh", None, "")
    );
    let l = parse_stage_line("skipped   eval                upstream train did not build").unwrap();
    assert_eq!(l.detail, "upstream train did not build");
    assert!(parse_stage_line("3 stages: 3 ran in 0.1s").is_none());
}

#[test]
fn first_build_runs_everything_and_a_second_build_is_all_fresh() {
    let ws = chain();
    let first = ws.build_ok(&[]);
    first.assert_statuses(&[("prepare", "ran"), ("train", "ran"), ("eval", "ran")]);
    for stage in ["prepare", "train", "eval"] {
        assert!(
            first.line(stage).time.is_some(),
            "a stage that ran shows its time\n{first}"
        );
        assert!(
            first.detail(stage).contains("never built"),
            "first run says why\n{first}"
        );
    }
    // Lines come in dependency order with -j 1.
    let order: Vec<String> = first.lines().into_iter().map(|l| l.stage).collect();
    assert_eq!(order, ["prepare", "train", "eval"], "{first}");
    assert!(
        first.stderr.contains("3 stages"),
        "summary on stderr\n{first}"
    );
    assert!(ws.read("out/model.txt").contains("hello shapes"));
    assert!(ws.read("out/model.txt").contains(r#""lr":0.001"#));

    let second = ws.build_ok(&[]);
    second.assert_statuses(&[("prepare", "fresh"), ("train", "fresh"), ("eval", "fresh")]);
    for stage in ["prepare", "train", "eval"] {
        assert_eq!(ws.times_ran(stage), 1, "{stage} ran once");
    }
    let status = ws.status();
    assert!(
        status.values().all(|r| r.state == "fresh"),
        "status after a build: {status:?}"
    );
}

#[test]
fn building_a_target_builds_only_it_and_what_it_needs() {
    let ws = chain();
    ws.build_ok(&["train"])
        .assert_statuses(&[("prepare", "ran"), ("train", "ran")]);
    assert!(!ws.exists("out/eval.txt"));
    assert_eq!(ws.times_ran("eval"), 0);

    ws.build_ok(&["prepare"])
        .assert_statuses(&[("prepare", "fresh")]);
    ws.build_ok(&[])
        .assert_statuses(&[("prepare", "fresh"), ("train", "fresh"), ("eval", "ran")]);

    let unknown = ws.build(&["trian"]);
    unknown.assert_code(2);
    assert!(unknown.stderr.contains("did you mean `train`"), "{unknown}");
}

#[test]
fn a_param_edit_reruns_the_stage_and_downstream_and_status_says_why() {
    let ws = built_chain();
    ws.params("train", "lr = 0.002\nepochs = 3\n");

    let status = ws.status();
    assert_eq!(status["prepare"].state, "fresh", "{status:?}");
    assert_eq!(status["train"].state, "stale", "{status:?}");
    assert_eq!(status["train"].action, "run", "{status:?}");
    assert!(
        status["train"].why().contains("params.lr 0.001 → 0.002"),
        "{status:?}"
    );
    assert!(
        status["eval"]
            .why()
            .contains("upstream train will run first"),
        "{status:?}"
    );
    // The text table says the same.
    let table = ws.run(&["status"]);
    table.assert_code(0);
    assert!(table.stdout.contains("params.lr 0.001 → 0.002"), "{table}");

    let build = ws.build_ok(&[]);
    build.assert_statuses(&[("prepare", "fresh"), ("train", "ran"), ("eval", "ran")]);
    assert!(
        build.detail("train").contains("params.lr 0.001 → 0.002"),
        "{build}"
    );
    assert!(
        build
            .detail("eval")
            .contains("upstream train produced a new artifact"),
        "{build}"
    );
    assert!(ws.read("out/model.txt").contains(r#""lr":0.002"#));
    assert_eq!(ws.times_ran("prepare"), 1);
    assert_eq!(ws.times_ran("train"), 2);
    assert_eq!(ws.times_ran("eval"), 2);
}

#[test]
fn a_params_edit_of_only_whitespace_comments_or_key_order_stays_fresh() {
    let ws = built_chain();
    ws.params(
        "train",
        "# learning schedule\nepochs   =   3   # three passes\n\n\nlr=1e-3\n",
    );
    let status = ws.status();
    assert!(status.values().all(|r| r.state == "fresh"), "{status:?}");
    ws.build_ok(&[]).assert_statuses(&[
        ("prepare", "fresh"),
        ("train", "fresh"),
        ("eval", "fresh"),
    ]);
    assert_eq!(ws.times_ran("train"), 1);
}

#[test]
fn an_input_edit_is_named_by_status_and_reruns() {
    let ws = built_chain();
    ws.write("data/raw.txt", "hello circles\n");
    let status = ws.status();
    assert!(
        status["prepare"]
            .why()
            .contains("input data/raw.txt changed"),
        "{status:?}"
    );
    assert!(
        status["train"]
            .why()
            .contains("upstream prepare will run first"),
        "{status:?}"
    );
    let build = ws.build_ok(&[]);
    build.assert_statuses(&[("prepare", "ran"), ("train", "ran"), ("eval", "ran")]);
    assert!(
        build
            .detail("prepare")
            .contains("input data/raw.txt changed"),
        "{build}"
    );
    assert!(ws.read("out/model.txt").contains("hello circles"));

    // Touching the file without changing it is not a change.
    ws.write("data/raw.txt", "hello circles\n");
    ws.build_ok(&[]).assert_statuses(&[
        ("prepare", "fresh"),
        ("train", "fresh"),
        ("eval", "fresh"),
    ]);
}

#[test]
fn a_changed_file_inside_a_folder_input_is_named() {
    let ws = Ws::new(
        r#"
[stages.count]
kind = "cmd"
cmd = "echo $VLMFLOW_STAGE >> ran.log && mkdir -p out && find data/images -type f | sort | xargs cat | wc -c > out/count.txt"
inputs = ["data/images"]
outs = ["out/count.txt"]
"#,
    );
    ws.write("data/images/a.txt", "aaaa\n");
    ws.write("data/images/b.txt", "bbbb\n");
    ws.write("data/images/sub/c.txt", "cccc\n");
    ws.build_ok(&[]).assert_statuses(&[("count", "ran")]);

    ws.write("data/images/b.txt", "bbbbbbbb\n");
    let status = ws.status();
    assert!(
        status["count"]
            .why()
            .contains("input data/images/b.txt changed"),
        "{status:?}"
    );
    let build = ws.build_ok(&[]);
    build.assert_statuses(&[("count", "ran")]);
    assert!(
        build.detail("count").contains("data/images/b.txt"),
        "{build}"
    );

    ws.write("data/images/sub/d.txt", "dddd\n");
    let status = ws.status();
    assert!(
        status["count"].why().contains("data/images/sub/d.txt"),
        "an added file is named: {status:?}"
    );
    ws.build_ok(&[]).assert_statuses(&[("count", "ran")]);
    assert_eq!(ws.read("out/count.txt").trim(), "24");
}

/// prepare runs `sh scripts/prepare.sh`, an input; train reads prepare's out.
fn scripted() -> Ws {
    let ws = Ws::new(
        r#"
[stages.prepare]
kind = "cmd"
cmd = "echo $VLMFLOW_STAGE >> ran.log && mkdir -p out && sh scripts/prepare.sh > out/prepared.txt"
inputs = ["scripts/prepare.sh", "data/raw.txt"]
outs = ["out/prepared.txt"]

[stages.train]
kind = "cmd"
cmd = "echo $VLMFLOW_STAGE >> ran.log && cat out/prepared.txt out/prepared.txt > out/model.txt"
inputs = ["out/prepared.txt"]
outs = ["out/model.txt"]
"#,
    );
    ws.write("data/raw.txt", "red circle\n");
    ws.write("scripts/prepare.sh", "tr a-z A-Z < data/raw.txt\n");
    ws.build_ok(&[])
        .assert_statuses(&[("prepare", "ran"), ("train", "ran")]);
    ws
}

#[test]
fn an_upstream_rerun_with_identical_output_leaves_downstream_fresh() {
    let ws = scripted();
    ws.write(
        "scripts/prepare.sh",
        "# upper-case the captions\ntr a-z A-Z < data/raw.txt\n",
    );
    let status = ws.status();
    assert!(
        status["prepare"]
            .why()
            .contains("input scripts/prepare.sh changed"),
        "{status:?}"
    );
    let build = ws.build_ok(&[]);
    build.assert_statuses(&[("prepare", "ran"), ("train", "fresh")]);
    assert_eq!(ws.times_ran("prepare"), 2);
    assert_eq!(ws.times_ran("train"), 1, "early cutoff: train did not run");
    assert_eq!(ws.read("out/model.txt"), "RED CIRCLE\nRED CIRCLE\n");
}

#[test]
fn an_upstream_rerun_with_new_output_reruns_downstream() {
    let ws = scripted();
    ws.write(
        "scripts/prepare.sh",
        "tr a-z A-Z < data/raw.txt\necho BLUE SQUARE\n",
    );
    let dry = ws.build(&["--dry-run"]);
    dry.assert_code(0);
    dry.assert_statuses(&[("prepare", "run"), ("train", "run")]);
    assert!(
        dry.detail("train")
            .contains("upstream prepare will run first"),
        "{dry}"
    );

    // Build prepare alone: now status knows prepare's new artifact and says so.
    ws.build_ok(&["prepare"])
        .assert_statuses(&[("prepare", "ran")]);
    let status = ws.status();
    assert!(
        status["train"]
            .why()
            .contains("upstream prepare produced a new artifact"),
        "{status:?}"
    );
    let build = ws.build_ok(&[]);
    build.assert_statuses(&[("prepare", "fresh"), ("train", "ran")]);
    assert!(
        build
            .detail("train")
            .contains("upstream prepare produced a new artifact"),
        "{build}"
    );
    assert_eq!(
        ws.read("out/model.txt"),
        "RED CIRCLE\nBLUE SQUARE\nRED CIRCLE\nBLUE SQUARE\n"
    );
}

#[test]
fn reverting_a_param_restores_the_earlier_artifact_instead_of_running() {
    let ws = built_chain();
    let first_model = ws.read("out/model.txt");
    let first_eval = ws.read("out/eval.txt");
    let first_train_run = ws.log(Some("train"))[0]["run"].as_i64().unwrap();

    ws.params("train", "lr = 0.002\nepochs = 3\n");
    ws.build_ok(&[])
        .assert_statuses(&[("prepare", "fresh"), ("train", "ran"), ("eval", "ran")]);
    assert_ne!(ws.read("out/model.txt"), first_model);

    ws.params("train", TRAIN_PARAMS);
    let status = ws.status();
    assert_eq!(status["train"].action, "restore", "{status:?}");
    let build = ws.build_ok(&[]);
    build.assert_statuses(&[
        ("prepare", "fresh"),
        ("train", "restored"),
        ("eval", "restored"),
    ]);
    assert!(
        build.detail("train").contains("params.lr 0.002 → 0.001"),
        "{build}"
    );
    assert_eq!(
        ws.times_ran("train"),
        2,
        "the restore did not run the command"
    );
    assert_eq!(ws.times_ran("eval"), 2);
    assert_eq!(ws.read("out/model.txt"), first_model);
    assert_eq!(ws.read("out/eval.txt"), first_eval);

    let log = ws.log(Some("train"));
    assert_eq!(log[0]["status"], "restored", "{log:#?}");
    assert_eq!(log[0]["restored_from"], first_train_run, "{log:#?}");
    let text = ws.run(&["log", "train"]);
    text.assert_code(0);
    assert!(
        text.stdout
            .contains(&format!("restored from run {first_train_run}")),
        "{text}"
    );

    ws.build_ok(&[]).assert_statuses(&[
        ("prepare", "fresh"),
        ("train", "fresh"),
        ("eval", "fresh"),
    ]);
}

#[test]
fn set_overrides_a_param_for_one_build() {
    let ws = built_chain();
    let original = ws.read("out/model.txt");

    let set = ws.build_ok(&["--set", "train.lr=0.5"]);
    set.assert_statuses(&[("prepare", "fresh"), ("train", "ran"), ("eval", "ran")]);
    assert!(
        ws.read("out/model.txt").contains(r#""lr":0.5"#),
        "the command saw the override: {}",
        ws.read("out/model.txt")
    );
    let log = ws.log(Some("train"));
    assert_eq!(log[0]["status"], "ran");
    assert_eq!(
        log[0]["overrides"],
        serde_json::json!({"lr": 0.5}),
        "{log:#?}"
    );
    let params = ws.query("SELECT params FROM runs WHERE stage = 'train' ORDER BY id DESC LIMIT 1");
    assert!(
        params[0]["params"]
            .as_str()
            .unwrap()
            .contains(r#""lr":0.5"#),
        "{params:?}"
    );

    ws.build_ok(&["--set", "train.lr=0.5"]).assert_statuses(&[
        ("prepare", "fresh"),
        ("train", "fresh"),
        ("eval", "fresh"),
    ]);

    ws.build_ok(&[]).assert_statuses(&[
        ("prepare", "fresh"),
        ("train", "restored"),
        ("eval", "restored"),
    ]);
    assert_eq!(ws.read("out/model.txt"), original);
    assert_eq!(ws.times_ran("train"), 2);
}

#[test]
fn set_of_an_unknown_param_or_stage_is_a_usage_error() {
    let ws = built_chain();
    let runs = ws.run_count();

    let param = ws.build(&["--set", "train.lrr=0.5"]);
    param.assert_code(2);
    assert!(param.stderr.contains("did you mean `lr`"), "{param}");

    let stage = ws.build(&["--set", "trian.lr=0.5"]);
    stage.assert_code(2);
    assert!(stage.stderr.contains("did you mean `train`"), "{stage}");

    let malformed = ws.build(&["--set", "train=0.5"]);
    malformed.assert_code(2);

    assert_eq!(ws.run_count(), runs, "nothing ran");
    assert_eq!(ws.times_ran("train"), 1);
}

#[test]
fn force_reruns_a_fresh_stage_and_identical_output_keeps_downstream_fresh() {
    let ws = built_chain();
    let build = ws.build_ok(&["--force", "train"]);
    build.assert_statuses(&[("prepare", "fresh"), ("train", "ran"), ("eval", "fresh")]);
    assert!(build.detail("train").contains("--force"), "{build}");
    assert_eq!(ws.times_ran("train"), 2);
    assert_eq!(ws.times_ran("eval"), 1);
}

#[test]
fn dry_run_prints_run_restore_fresh_and_changes_nothing() {
    let ws = built_chain();
    ws.params("train", "lr = 0.002\nepochs = 3\n");
    ws.build_ok(&[]);
    let model = ws.read("out/model.txt");
    let runs = ws.run_count();
    let builds = ws.query_i64("SELECT count(*) FROM builds");

    // Back to the first params: restorable.
    ws.params("train", TRAIN_PARAMS);
    let dry = ws.build_ok(&["--dry-run"]);
    dry.assert_statuses(&[
        ("prepare", "fresh"),
        ("train", "restore"),
        ("eval", "restore"),
    ]);
    assert!(
        dry.detail("train").contains("params.lr 0.002 → 0.001"),
        "{dry}"
    );

    // A value never built: must run.
    ws.params("train", "lr = 0.003\nepochs = 3\n");
    let dry = ws.build_ok(&["-n"]);
    dry.assert_statuses(&[("prepare", "fresh"), ("train", "run"), ("eval", "run")]);
    assert!(
        dry.detail("train").contains("params.lr 0.002 → 0.003"),
        "{dry}"
    );
    assert!(dry.detail("eval").contains("will run first"), "{dry}");

    assert_eq!(ws.run_count(), runs, "a dry run records no run");
    assert_eq!(
        ws.query_i64("SELECT count(*) FROM builds"),
        builds,
        "a dry run records no build"
    );
    assert_eq!(ws.read("out/model.txt"), model);
    assert_eq!(ws.times_ran("train"), 2);
    assert_eq!(ws.status()["train"].state, "stale");
}

#[test]
fn status_before_any_build_says_never_built() {
    let ws = chain();
    let status = ws.status();
    assert_eq!(status["prepare"].state, "never built", "{status:?}");
    assert_eq!(status["prepare"].action, "run", "{status:?}");
    assert!(
        status["train"]
            .why()
            .contains("upstream prepare will run first"),
        "{status:?}"
    );
    assert!(!ws.exists("ran.log"), "status runs nothing");
    let dry = ws.build_ok(&["--dry-run"]);
    dry.assert_statuses(&[("prepare", "run"), ("train", "run"), ("eval", "run")]);
    assert!(!ws.exists("ran.log"), "a dry run runs nothing");
    assert!(!ws.exists("out"), "a dry run writes no out");
}

#[test]
fn an_in_place_edit_of_the_same_size_and_mtime_is_detected() {
    use std::io::Write;
    let ws = built_chain();
    let path = ws.path("data/raw.txt");
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    {
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all(b"HELLO SHAPES\n").unwrap();
        f.set_modified(mtime).unwrap();
    }
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);
    let build = ws.build_ok(&[]);
    build.assert_statuses(&[("prepare", "ran"), ("train", "ran"), ("eval", "ran")]);
    assert!(ws.read("out/model.txt").contains("HELLO SHAPES"));
}

#[test]
fn a_changed_command_reruns_and_says_so() {
    let ws = built_chain();
    ws.stagefile(&common::CHAIN.replace("wc -c < out/model.txt", "wc -l < out/model.txt"));
    let status = ws.status();
    assert_eq!(status["eval"].state, "stale", "{status:?}");
    assert!(status["eval"].why().contains("cmd"), "{status:?}");
    ws.build_ok(&[])
        .assert_statuses(&[("prepare", "fresh"), ("train", "fresh"), ("eval", "ran")]);
}

#[test]
fn set_reaches_nested_params_and_keeps_the_type() {
    let ws = Ws::new(
        r#"
[stages.train]
kind = "cmd"
cmd = "echo $VLMFLOW_STAGE >> ran.log && mkdir -p out && cat $VLMFLOW_PARAMS > out/params.json"
outs = ["out/params.json"]
"#,
    );
    ws.params(
        "train",
        "name = \"tiny\"\n[optim]\nlr = 1e-3\nbetas = [0.9, 0.95]\n",
    );
    ws.build_ok(&[]).assert_statuses(&[("train", "ran")]);
    let params: serde_json::Value = serde_json::from_str(&ws.read("out/params.json")).unwrap();
    assert_eq!(
        params,
        serde_json::json!({"name": "tiny", "optim": {"lr": 0.001, "betas": [0.9, 0.95]}})
    );

    ws.build_ok(&["--set", "train.optim.lr=2e-3", "--set", "train.name=small"])
        .assert_statuses(&[("train", "ran")]);
    let params: serde_json::Value = serde_json::from_str(&ws.read("out/params.json")).unwrap();
    assert_eq!(params["optim"]["lr"], 0.002);
    assert_eq!(params["name"], "small");
    let log = ws.log(Some("train"));
    assert_eq!(
        log[0]["overrides"],
        serde_json::json!({"optim.lr": 0.002, "name": "small"}),
        "{log:#?}"
    );

    let bad = ws.build(&["--set", "train.optim.lrr=1"]);
    bad.assert_code(2);
    assert!(bad.stderr.contains("did you mean `lr`"), "{bad}");
}
