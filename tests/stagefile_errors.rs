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
