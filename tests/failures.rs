//! A stage that fails: exit code 1, what stays built, what is skipped, what the user sees, and
//! that nothing half-written is left behind.

mod common;

use common::Ws;

/// a → b → c, and d on its own. b fails when its params say `mode = "bad"`, after writing part of
/// its out and a line on stderr.
const PIPELINE: &str = r#"
[stages.a]
kind = "cmd"
cmd = "echo $VLMFLOW_STAGE >> ran.log && mkdir -p out && printf A > out/a.txt"
outs = ["out/a.txt"]

[stages.b]
kind = "cmd"
cmd = """
echo $VLMFLOW_STAGE >> ran.log
if grep -q bad $VLMFLOW_PARAMS; then
  printf partial > out/b.txt
  echo 'step 1 ok'
  echo 'boom: the loss is NaN' >&2
  exit 3
fi
cat out/a.txt > out/b.txt
printf good >> out/b.txt
"""
inputs = ["out/a.txt"]
outs = ["out/b.txt"]

[stages.c]
kind = "cmd"
cmd = "echo $VLMFLOW_STAGE >> ran.log && cat out/b.txt > out/c.txt"
needs = ["b"]
outs = ["out/c.txt"]

[stages.d]
kind = "cmd"
cmd = "echo $VLMFLOW_STAGE >> ran.log && mkdir -p out && printf D > out/d.txt"
outs = ["out/d.txt"]
"#;

fn workspace(mode: &str) -> Ws {
    let ws = Ws::new(PIPELINE);
    ws.params("b", &format!("mode = \"{mode}\"\n"));
    ws
}

#[test]
fn a_failing_middle_stage_fails_the_build_and_skips_downstream() {
    let ws = workspace("bad");
    let build = ws.build(&[]);
    build.assert_code(1);
    build.assert_statuses(&[
        ("a", "ran"),
        ("b", "failed"),
        ("c", "skipped"),
        ("d", "skipped"),
    ]);
    assert!(
        build.detail("b").contains("status 3"),
        "the failure says how the command ended\n{build}"
    );
    assert!(!build.detail("c").is_empty(), "a skip says why\n{build}");
    assert_eq!(ws.times_ran("c"), 0, "a skipped stage does not run");
    assert_eq!(ws.times_ran("d"), 0, "without -k nothing new starts");
    assert!(
        !ws.exists("out/b.txt"),
        "the half-written out of a failed run is removed"
    );
    assert!(!ws.exists("out/c.txt"));
    assert_eq!(ws.read("out/a.txt"), "A");

    // The tail of the log is on stderr, with where to find the rest.
    assert!(
        build.stderr.contains("boom: the loss is NaN"),
        "log tail shown\n{build}"
    );
    assert!(build.stderr.contains("vlmflow log b --verbose"), "{build}");

    // The run is recorded as failed, with its whole log.
    let log = ws.log(Some("b"));
    assert_eq!(log[0]["status"], "failed", "{log:#?}");
    let verbose = ws.run(&["log", "b", "--verbose"]);
    verbose.assert_code(0);
    assert!(verbose.stdout.contains("step 1 ok"), "{verbose}");
    assert!(
        verbose.stdout.contains("boom: the loss is NaN"),
        "{verbose}"
    );

    // The upstream stage stays built; b fails again.
    let again = ws.build(&[]);
    again.assert_code(1);
    assert_eq!(again.status_of("a"), "fresh", "{again}");
    assert_eq!(again.status_of("b"), "failed", "{again}");
    assert_eq!(ws.times_ran("a"), 1);

    // Fixed: b and c run, a stays fresh.
    ws.params("b", "mode = \"good\"\n");
    ws.build_ok(&[])
        .assert_statuses(&[("a", "fresh"), ("b", "ran"), ("c", "ran"), ("d", "ran")]);
    assert_eq!(ws.read("out/c.txt"), "Agood");
}

#[test]
fn a_failed_rerun_leaves_the_previous_good_artifact() {
    let ws = workspace("good");
    ws.build_ok(&[])
        .assert_statuses(&[("a", "ran"), ("b", "ran"), ("c", "ran"), ("d", "ran")]);
    assert_eq!(ws.read("out/b.txt"), "Agood");

    ws.params("b", "mode = \"bad\"\n");
    let build = ws.build(&[]);
    build.assert_code(1);
    assert_eq!(build.status_of("a"), "fresh", "{build}");
    assert_eq!(build.status_of("b"), "failed", "{build}");
    assert_eq!(build.status_of("c"), "skipped", "{build}");
    assert_eq!(
        ws.read("out/b.txt"),
        "Agood",
        "the previous artifact is put back, not the partial output"
    );
    assert_eq!(ws.read("out/c.txt"), "Agood");

    // Reverting the params: the good artifact is what the workspace holds, so b is fresh again.
    ws.params("b", "mode = \"good\"\n");
    ws.build_ok(&[]).assert_statuses(&[
        ("a", "fresh"),
        ("b", "fresh"),
        ("c", "fresh"),
        ("d", "fresh"),
    ]);
}

#[test]
fn keep_going_still_runs_independent_branches() {
    let ws = workspace("bad");
    let build = ws.build(&["--keep-going"]);
    build.assert_code(1);
    build.assert_statuses(&[
        ("a", "ran"),
        ("b", "failed"),
        ("c", "skipped"),
        ("d", "ran"),
    ]);
    assert!(
        build.detail("c").contains("upstream b did not build"),
        "{build}"
    );
    assert_eq!(ws.read("out/d.txt"), "D");
    assert_eq!(ws.times_ran("c"), 0);
}

#[test]
fn a_declared_out_the_command_did_not_produce_fails_the_stage() {
    let ws = Ws::new(
        r#"
[stages.train]
kind = "cmd"
cmd = "echo $VLMFLOW_STAGE >> ran.log && mkdir -p out && printf w > out/model.txt"
outs = ["out/model.txt", "out/tokenizer.json"]

[stages.eval]
kind = "cmd"
cmd = "echo $VLMFLOW_STAGE >> ran.log && cat out/model.txt > out/eval.txt"
needs = ["train"]
outs = ["out/eval.txt"]
"#,
    );
    let build = ws.build(&[]);
    build.assert_code(1);
    build.assert_statuses(&[("train", "failed"), ("eval", "skipped")]);
    assert!(
        build.detail("train").contains("out/tokenizer.json"),
        "the message names the missing out\n{build}"
    );
    assert!(
        !ws.exists("out/model.txt"),
        "a failed run leaves none of its outs"
    );
    let log = ws.log(Some("train"));
    assert_eq!(log[0]["status"], "failed");
    assert!(
        log[0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("out/tokenizer.json"),
        "{log:#?}"
    );
}

#[test]
fn a_command_killed_by_a_signal_is_a_failure() {
    let ws = Ws::new(
        r#"
[stages.oom]
kind = "cmd"
cmd = "mkdir -p out && printf x > out/x.txt && kill -9 $$"
outs = ["out/x.txt"]
"#,
    );
    let build = ws.build(&[]);
    build.assert_code(1);
    build.assert_statuses(&[("oom", "failed")]);
    assert!(build.detail("oom").contains("signal 9"), "{build}");
    assert!(!ws.exists("out/x.txt"));
}

#[test]
fn a_bad_metrics_file_fails_the_stage() {
    let ws = Ws::new(
        r#"
[stages.eval]
kind = "cmd"
cmd = "mkdir -p out && printf 'not json' > out/metrics.json"
outs = ["out/metrics.json"]
metrics = "out/metrics.json"
"#,
    );
    let build = ws.build(&[]);
    build.assert_code(1);
    build.assert_statuses(&[("eval", "failed")]);
    assert!(build.detail("eval").contains("out/metrics.json"), "{build}");
}

#[test]
fn with_jobs_2_a_failure_lets_the_running_sibling_finish() {
    let ws = Ws::new(
        r#"
[stages.slow]
kind = "cmd"
cmd = "echo $VLMFLOW_STAGE >> ran.log && mkdir -p out && touch slow.started && sleep 0.5 && printf slow > out/slow.txt"
outs = ["out/slow.txt"]

[stages.fail]
kind = "cmd"
cmd = "i=0; while [ ! -e slow.started ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; exit 1"
outs = ["out/fail.txt"]

[stages.later]
kind = "cmd"
cmd = "echo $VLMFLOW_STAGE >> ran.log && mkdir -p out && printf later > out/later.txt"
outs = ["out/later.txt"]
"#,
    );
    let build = ws.build(&["-j", "2"]);
    build.assert_code(1);
    build.assert_statuses(&[("slow", "ran"), ("fail", "failed"), ("later", "skipped")]);
    assert_eq!(ws.read("out/slow.txt"), "slow");
    assert_eq!(ws.times_ran("later"), 0);
    ws.build(&[]).assert_code(1);
    assert_eq!(ws.times_ran("slow"), 1, "the finished sibling stays built");
}
