//! Running stages at once (`-j`), resources that keep them apart, and two `vlmflow build`
//! processes on one workspace.

mod common;

use std::time::Duration;

use common::{Run, Ws};

/// A command that announces itself in `sync/<stage>.running`, waits up to `wait` tenths of a
/// second for `sync/<other>.running`, writes `together` or `alone` to its out, and leaves.
/// It also records its start and end times (nanoseconds) in `sync/<stage>.times`.
fn rendezvous(stage: &str, other: &str, wait: u32) -> String {
    format!(
        r#"
[stages.{stage}]
kind = "cmd"
cmd = """
echo $VLMFLOW_STAGE >> ran.log
mkdir -p sync out
date +%s%N > sync/{stage}.times
touch sync/{stage}.running
i=0
while [ ! -e sync/{other}.running ] && [ $i -lt {wait} ]; do sleep 0.1; i=$((i+1)); done
if [ -e sync/{other}.running ]; then echo together > out/{stage}.txt; else echo alone > out/{stage}.txt; fi
sleep 0.2
rm -f sync/{stage}.running
date +%s%N >> sync/{stage}.times
"""
outs = ["out/{stage}.txt"]
"#
    )
}

fn times(ws: &Ws, stage: &str) -> (u128, u128) {
    let text = ws.read(&format!("sync/{stage}.times"));
    let v: Vec<u128> = text
        .lines()
        .map(|l| l.trim().parse().expect("nanoseconds"))
        .collect();
    assert_eq!(v.len(), 2, "start and end of {stage}: {text}");
    (v[0], v[1])
}

#[test]
fn jobs_2_runs_independent_stages_at_the_same_time() {
    // Each waits up to 10 s for the other: they only finish quickly (with `together`) if both run
    // at once.
    let ws = Ws::new(&(rendezvous("left", "right", 100) + &rendezvous("right", "left", 100)));
    let build = ws.build_ok(&["-j", "2"]);
    build.assert_statuses(&[("left", "ran"), ("right", "ran")]);
    assert_eq!(ws.read("out/left.txt"), "together\n", "{build}");
    assert_eq!(ws.read("out/right.txt"), "together\n", "{build}");
    let (ls, le) = times(&ws, "left");
    let (rs, re) = times(&ws, "right");
    assert!(ls < re && rs < le, "the two runs overlap in time");
}

#[test]
fn jobs_1_runs_one_stage_at_a_time() {
    let ws = Ws::new(&(rendezvous("left", "right", 3) + &rendezvous("right", "left", 3)));
    ws.build_ok(&[])
        .assert_statuses(&[("left", "ran"), ("right", "ran")]);
    assert_eq!(ws.read("out/left.txt"), "alone\n");
    assert_eq!(ws.read("out/right.txt"), "alone\n");
}

#[test]
fn stages_holding_a_gpu_never_overlap_even_with_jobs_2() {
    let mut stagefile = String::from("[resources]\ngpus = 1\n");
    for (stage, other) in [("clip", "vlm"), ("vlm", "clip")] {
        stagefile.push_str(&rendezvous(stage, other, 4));
        stagefile.push_str("resources = { gpus = 1 }\n");
    }
    // A CPU stage may run beside either of them.
    stagefile.push_str(&rendezvous("cpu", "none", 0));
    let ws = Ws::new(&stagefile);
    let build = ws.build_ok(&["-j", "2"]);
    build.assert_statuses(&[("clip", "ran"), ("vlm", "ran"), ("cpu", "ran")]);
    assert_eq!(ws.read("out/clip.txt"), "alone\n", "{build}");
    assert_eq!(ws.read("out/vlm.txt"), "alone\n", "{build}");
    let (cs, ce) = times(&ws, "clip");
    let (vs, ve) = times(&ws, "vlm");
    assert!(
        ce <= vs || ve <= cs,
        "clip [{cs}, {ce}] and vlm [{vs}, {ve}] overlap\n{build}"
    );
}

#[test]
fn a_second_build_waits_for_the_workspace_lock() {
    let ws = Ws::new(
        r#"
[stages.slow]
kind = "cmd"
cmd = "echo $VLMFLOW_STAGE >> ran.log && mkdir -p out && touch started && sleep 1 && printf slow > out/slow.txt"
outs = ["out/slow.txt"]

[stages.next]
kind = "cmd"
cmd = "echo $VLMFLOW_STAGE >> ran.log && cat out/slow.txt > out/next.txt"
needs = ["slow"]
outs = ["out/next.txt"]
"#,
    );
    let args = ["build"];
    let mut first = ws.spawn(&args);
    ws.wait_for_file("started", &mut first);
    let second = ws.spawn(&args);
    let first = Run::wait(first, &args, Duration::from_secs(30));
    let second = Run::wait(second, &args, Duration::from_secs(30));

    first.assert_code(0);
    second.assert_code(0);
    first.assert_statuses(&[("slow", "ran"), ("next", "ran")]);
    assert!(
        second.stderr.contains("waiting for the workspace lock"),
        "{second}"
    );
    second.assert_statuses(&[("slow", "fresh"), ("next", "fresh")]);

    assert_eq!(ws.times_ran("slow"), 1);
    assert_eq!(ws.times_ran("next"), 1);
    let per_stage = ws.query("SELECT stage, count(*) AS n FROM runs GROUP BY stage ORDER BY stage");
    assert_eq!(
        per_stage,
        serde_json::json!([{"stage": "next", "n": 1}, {"stage": "slow", "n": 1}])
            .as_array()
            .unwrap()
            .clone(),
        "each stage ran once"
    );
    assert_eq!(
        ws.query_i64("SELECT count(*) FROM runs WHERE status <> 'ran'"),
        0
    );
    assert_eq!(
        ws.query_i64("SELECT count(*) FROM builds WHERE status = 'ok'"),
        2
    );
    assert_eq!(ws.query_i64("SELECT count(*) FROM stage_state"), 2);
}

#[test]
fn jobs_2_on_a_chain_keeps_dependency_order() {
    let ws = common::chain();
    let build = ws.build_ok(&["-j", "2"]);
    build.assert_statuses(&[("prepare", "ran"), ("train", "ran"), ("eval", "ran")]);
    let order: Vec<String> = build.lines().into_iter().map(|l| l.stage).collect();
    assert_eq!(order, ["prepare", "train", "eval"], "{build}");
    assert!(ws.read("out/eval.txt").contains("split"));
}
