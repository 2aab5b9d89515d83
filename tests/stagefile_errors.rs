//! Every Stagefile mistake: exit code 2, the place (`Stagefile:LINE:COL`, or the params file), and a
//! help line saying what to do. Nothing runs.

mod common;

use common::{Run, Ws};

/// Build a workspace with this Stagefile (and extra files), expect exit 2 and a located error.
fn mistake(stagefile: &str, files: &[(&str, &str)], location: &str) -> Run {
    let ws = Ws::new(stagefile);
    for (path, text) in files {
        ws.write(path, text);
    }
    let build = ws.build(&[]);
    build.assert_code(2);
    assert!(
        build.stderr.contains("error"),
        "the mistake is reported as an error\n{build}"
    );
    assert!(
        has_location(&build.stderr, location),
        "expected the location `{location}:COL`\n{build}"
    );
    assert!(build.stderr.contains("help:"), "a help line\n{build}");
    assert!(
        build.lines().is_empty(),
        "no stage ran or was considered\n{build}"
    );
    assert!(!ws.exists("ran.log"), "no command ran");
    // Other commands that read the Stagefile say the same.
    let status = ws.run(&["status"]);
    status.assert_code(2);
    assert!(has_location(&status.stderr, location), "{status}");
    build
}

/// `text` holds `location:` followed by a column number (e.g. `Stagefile:3:1`).
fn has_location(text: &str, location: &str) -> bool {
    let needle = format!("{location}:");
    text.match_indices(&needle).any(|(i, _)| {
        text[i + needle.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

#[test]
fn an_unknown_key_is_located_with_a_suggestion() {
    let run = mistake(
        r#"[stages.prepare]
kind = "cmd"
cmdd = "true"
outs = ["out/x"]
"#,
        &[],
        "Stagefile:3",
    );
    assert!(run.stderr.contains("cmdd"), "{run}");
    assert!(run.stderr.contains("did you mean `cmd`"), "{run}");
}

#[test]
fn an_unknown_kind_is_located_with_a_suggestion() {
    let run = mistake(
        r#"[stages.prepare]
kind = "cmf"
cmd = "true"
outs = ["out/x"]
"#,
        &[],
        "Stagefile:2",
    );
    assert!(run.stderr.contains("cmf"), "{run}");
    assert!(run.stderr.contains("did you mean `cmd`"), "{run}");
}

#[test]
fn needs_naming_no_stage_is_located_with_a_suggestion() {
    let run = mistake(
        r#"[stages.prepare]
kind = "cmd"
cmd = "true"
outs = ["out/a"]

[stages.train]
kind = "cmd"
cmd = "true"
outs = ["out/b"]
needs = ["prepar"]
"#,
        &[],
        "Stagefile:10",
    );
    assert!(run.stderr.contains("prepar"), "{run}");
    assert!(run.stderr.contains("did you mean `prepare`"), "{run}");
}

#[test]
fn a_cycle_is_printed_in_full() {
    let run = mistake(
        r#"[stages.a]
kind = "cmd"
cmd = "true"
outs = ["out/a"]
needs = ["b"]

[stages.b]
kind = "cmd"
cmd = "true"
outs = ["out/b"]
needs = ["c"]

[stages.c]
kind = "cmd"
cmd = "true"
outs = ["out/c"]
needs = ["a"]
"#,
        &[],
        "Stagefile:5",
    );
    assert!(run.stderr.contains("a → b → c → a"), "{run}");
}

#[test]
fn a_duplicate_stage_is_located_at_its_second_definition() {
    let run = mistake(
        r#"[stages.prepare]
kind = "cmd"
cmd = "true"
outs = ["out/a"]

[stages.prepare]
kind = "cmd"
cmd = "true"
outs = ["out/b"]
"#,
        &[],
        "Stagefile:6",
    );
    let lower = run.stderr.to_lowercase();
    assert!(
        lower.contains("twice") || lower.contains("duplicate"),
        "{run}"
    );
    assert!(run.stderr.contains("prepare"), "{run}");
}

#[test]
fn a_missing_params_file_is_located_at_the_params_key() {
    let run = mistake(
        r#"[stages.train]
kind = "cmd"
cmd = "true"
outs = ["out/a"]
params = "stages/nope.toml"
"#,
        &[],
        "Stagefile:5",
    );
    assert!(run.stderr.contains("stages/nope.toml"), "{run}");
}

#[test]
fn a_params_file_that_is_not_toml_is_located_in_that_file() {
    let run = mistake(
        r#"[stages.train]
kind = "cmd"
cmd = "true"
outs = ["out/a"]
"#,
        &[("stages/train.toml", "lr = 0.001\nbatch = = 64\n")],
        "stages/train.toml:2",
    );
    assert!(
        !has_location(&run.stderr, "Stagefile:1"),
        "the error is in the params file, not the Stagefile\n{run}"
    );
}

#[test]
fn an_explicit_params_file_that_is_not_toml_is_located_in_that_file() {
    mistake(
        r#"[stages.train]
kind = "cmd"
cmd = "true"
outs = ["out/a"]
params = "conf/train.toml"
"#,
        &[("conf/train.toml", "# training\n\n[optim\nlr = 1\n")],
        "conf/train.toml:3",
    );
}

#[test]
fn an_input_that_does_not_exist_is_located() {
    let run = mistake(
        r#"[stages.prepare]
kind = "cmd"
cmd = "true"
outs = ["out/a"]
inputs = ["data/raw.txt", "data/nope.txt"]
"#,
        &[("data/raw.txt", "x")],
        "Stagefile:5",
    );
    assert!(run.stderr.contains("data/nope.txt"), "{run}");
}

#[test]
fn invalid_toml_in_the_stagefile_is_located() {
    mistake(
        r#"[stages.prepare]
kind = "cmd"
cmd = "true
outs = ["out/a"]
"#,
        &[],
        "Stagefile:3",
    );
}

#[test]
fn a_command_stage_without_outs_is_a_mistake() {
    let run = mistake(
        r#"[stages.prepare]
kind = "cmd"
cmd = "true"
"#,
        &[],
        "Stagefile:1",
    );
    assert!(run.stderr.contains("outs"), "{run}");
}

#[test]
fn several_mistakes_are_all_reported() {
    let run = mistake(
        r#"[stages.prepare]
kind = "cmd"
cmdd = "true"
outs = ["out/a"]

[stages.train]
kind = "cmf"
cmd = "true"
outs = ["out/b"]
"#,
        &[],
        "Stagefile:3",
    );
    assert!(has_location(&run.stderr, "Stagefile:7"), "{run}");
}

#[test]
fn outside_a_workspace_is_a_usage_error() {
    let ws = Ws::empty();
    for args in [&["build"][..], &["status"], &["log"]] {
        let run = ws.run(args);
        run.assert_code(2);
        assert!(run.stderr.contains("Stagefile"), "{run}");
    }
    assert!(
        !ws.exists("cache"),
        "nothing is created outside a workspace"
    );
}

#[test]
fn a_bad_command_line_is_exit_2() {
    let ws = common::chain();
    let run = ws.run(&["build", "--no-such-flag"]);
    run.assert_code(2);
    let run = ws.run(&["frobnicate"]);
    run.assert_code(2);
}

/// A params mistake: exit 2 at `location` (as `mistake` checks), and no object or run recorded.
fn params_mistake(stagefile: &str, files: &[(&str, &str)], location: &str) -> Run {
    let ws = Ws::new(stagefile);
    for (path, text) in files {
        ws.write(path, text);
    }
    let run = mistake(stagefile, files, location);
    ws.build(&[]).assert_code(2);
    assert!(
        ws.files_under("cache/objects").is_empty(),
        "nothing was stored"
    );
    assert!(!ws.exists("out"), "no stage wrote anything");
    run
}

#[test]
fn a_wrong_type_in_a_params_file_is_located_before_anything_runs() {
    let run = params_mistake(
        r#"[stages.prepare]
kind = "cmd"
cmd = "echo ran >> ran.log"
outs = ["out/prepare"]

[stages.download]
kind = "download"
"#,
        &[(
            "stages/download.toml",
            "# shapes\nseed = 1\ncount = \"many\"\n",
        )],
        "stages/download.toml:3",
    );
    let expected =
        "error: param `count` of stage `download`: invalid type: string \"many\", expected u64
 --> stages/download.toml:3:9
  |
3 | count = \"many\"
  |         ^^^^^^
  = help: `count` takes u64";
    assert!(run.stderr.contains(expected), "{run}");
}

#[test]
fn a_misspelt_inline_param_is_located_with_a_suggestion() {
    let run = params_mistake(
        r#"[stages.download]
kind = "download"
params = { count = 100, image_sise = 16 }
"#,
        &[],
        "Stagefile:3",
    );
    assert!(
        run.stderr
            .contains("unknown param `image_sise` in stage `download`"),
        "{run}"
    );
    assert!(run.stderr.contains("did you mean `image_size`?"), "{run}");
}

#[test]
fn a_nested_param_is_located_in_its_table() {
    let run = params_mistake(
        r#"[stages.download]
kind = "download"

[stages.finetune]
kind = "finetune"
needs = ["download"]

[stages.finetune.params]
steps = 10
lr = 1e-3
lora = { rank = 4, alpha = 8, targets = ["q_proj"], dropuot = 0.1 }
"#,
        &[],
        "Stagefile:11",
    );
    assert!(
        run.stderr
            .contains("unknown param `lora.dropuot` in stage `finetune`"),
        "{run}"
    );
    assert!(
        run.stderr
            .contains("the keys there are `rank`, `alpha`, `targets`"),
        "{run}"
    );
}

#[test]
fn a_bad_set_is_named_and_nothing_runs() {
    let ws = Ws::new(
        r#"[stages.download]
kind = "download"
params = { count = 100 }
"#,
    );
    let run = ws.build(&["--set", "download.count=many"]);
    run.assert_code(2);
    let expected = "error: `--set download.count=many`: param `count` of stage `download`: \
                    invalid type: string \"many\", expected u64";
    assert!(run.stderr.contains(expected), "{run}");
    assert!(run.stderr.contains("help: `count` takes u64"), "{run}");
    assert!(run.lines().is_empty(), "nothing ran\n{run}");
    assert!(ws.files_under("cache/objects").is_empty());
    assert!(!ws.exists("out"));
}
