//! Stopping a build: Ctrl-C (SIGINT) ends it cleanly with exit 130; a vlmflow killed outright
//! (SIGKILL) leaves a run the next build marks interrupted before it completes the work.

mod common;

use std::time::Duration;

use common::{Run, Ws};

/// `slow` sleeps (while `slow.flag` exists) after writing part of its out; `after` needs it.
/// The command writes its shell's pid (its process group) to `slow.pid` and `started` once going.
const PIPELINE: &str = r#"
[stages.slow]
kind = "cmd"
cmd = """
echo $VLMFLOW_STAGE >> ran.log
mkdir -p out
printf partial > out/slow.txt
echo $$ > slow.pid
touch started
if [ -e slow.flag ]; then sleep 30; fi
printf done > out/slow.txt
"""
outs = ["out/slow.txt"]

[stages.after]
kind = "cmd"
cmd = "echo $VLMFLOW_STAGE >> ran.log && cat out/slow.txt > out/after.txt"
needs = ["slow"]
outs = ["out/after.txt"]
"#;

fn workspace() -> Ws {
    let ws = Ws::new(PIPELINE);
    ws.write("slow.flag", "");
    ws
}

#[test]
fn sigint_stops_the_build_records_the_run_interrupted_and_leaves_no_partial_out() {
    let ws = workspace();
    let args = ["build"];
    let mut child = ws.spawn(&args);
    ws.wait_for_file("started", &mut child);
    common::signal(child.id() as i32, libc::SIGINT);
    let build = Run::wait(child, &args, Duration::from_secs(20));

    build.assert_code(130);
    assert_eq!(build.status_of("slow"), "interrupted", "{build}");
    assert_eq!(build.status_of("after"), "skipped", "{build}");
    assert!(
        !ws.exists("out/slow.txt"),
        "the interrupted run's half-written out is removed\n{build}"
    );
    assert_eq!(ws.times_ran("after"), 0);

    let log = ws.log(Some("slow"));
    assert_eq!(log.len(), 1, "{log:#?}");
    assert_eq!(log[0]["status"], "interrupted", "{log:#?}");
    assert_eq!(
        ws.query_i64("SELECT count(*) FROM builds WHERE status = 'interrupted'"),
        1
    );
    assert_eq!(
        ws.query_i64("SELECT count(*) FROM runs WHERE status = 'running'"),
        0
    );

    // The next build runs it again (an interrupted run is not in the run-cache).
    ws.remove("slow.flag");
    ws.remove("started");
    ws.build_ok(&[])
        .assert_statuses(&[("slow", "ran"), ("after", "ran")]);
    assert_eq!(ws.read("out/slow.txt"), "done");
    assert_eq!(ws.read("out/after.txt"), "done");
    assert_eq!(ws.times_ran("slow"), 2);
}

#[test]
fn after_sigkill_the_next_build_marks_the_stale_run_interrupted_and_completes() {
    let ws = workspace();
    let args = ["build"];
    let mut child = ws.spawn(&args);
    ws.wait_for_file("started", &mut child);
    common::signal(child.id() as i32, libc::SIGKILL);
    let killed = Run::wait(child, &args, Duration::from_secs(20));
    assert_eq!(killed.code, 128 + libc::SIGKILL, "{killed}");
    // The command runs in its own process group, which outlives vlmflow: end it too.
    let pgid: i32 = ws.read("slow.pid").trim().parse().expect("a pid");
    // SAFETY: kill(2) on the process group of the command this test's build started.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };

    assert_eq!(
        ws.query_i64("SELECT count(*) FROM runs WHERE status = 'running'"),
        1,
        "the killed process left its run as running"
    );

    ws.remove("slow.flag");
    let build = ws.build_ok(&[]);
    build.assert_statuses(&[("slow", "ran"), ("after", "ran")]);
    assert_eq!(ws.read("out/slow.txt"), "done");

    let log = ws.log(Some("slow"));
    let statuses: Vec<&str> = log.iter().map(|e| e["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["ran", "interrupted"], "{log:#?}");
    assert!(
        log[1]["error"].as_str().is_some_and(|e| !e.is_empty()),
        "the stale run says why it ended: {log:#?}"
    );
    assert_eq!(
        ws.query_i64("SELECT count(*) FROM runs WHERE status = 'running'"),
        0
    );
    assert_eq!(
        ws.query_i64("SELECT count(*) FROM builds WHERE status = 'running'"),
        0
    );
    assert!(
        ws.files_under("cache/tmp").is_empty(),
        "the dead build's temp files are cleaned up"
    );
}

#[test]
fn sigint_with_jobs_2_interrupts_every_running_stage() {
    let mut stagefile = String::new();
    for stage in ["left", "right"] {
        stagefile.push_str(&format!(
            r#"
[stages.{stage}]
kind = "cmd"
cmd = "mkdir -p out && printf partial > out/{stage}.txt && touch {stage}.started && sleep 30 && printf done > out/{stage}.txt"
outs = ["out/{stage}.txt"]
"#
        ));
    }
    let ws = Ws::new(&stagefile);
    let args = ["build", "-j", "2"];
    let mut child = ws.spawn(&args);
    ws.wait_for_file("left.started", &mut child);
    ws.wait_for_file("right.started", &mut child);
    common::signal(child.id() as i32, libc::SIGINT);
    let build = Run::wait(child, &args, Duration::from_secs(20));
    build.assert_code(130);
    build.assert_statuses(&[("left", "interrupted"), ("right", "interrupted")]);
    assert!(!ws.exists("out/left.txt") && !ws.exists("out/right.txt"));
    assert_eq!(
        ws.query_i64("SELECT count(*) FROM runs WHERE status = 'interrupted'"),
        2
    );
}
