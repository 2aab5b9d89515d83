//! Builds stopped outright (SIGKILL of the process group at random instants) or asked to stop
//! (SIGTERM, SIGINT) while training.

use super::*;

#[test]
#[ignore = "torture: opt-in (see the file's header)"]
fn sigkill_at_random_instants_then_verify_and_a_build_equal_to_a_clean_one() {
    let mut rng = Rng::from_env("sigkill");
    let mut references = References::default();
    let ws = workspace();
    let first = Variant { data: 0, seed: 1 };
    first.write_input(&ws);
    let mut forced = vec!["build".to_string()];
    forced.extend(first.sets());
    for stage in ["big", "many", "clip-train"] {
        forced.extend(["--force".to_string(), stage.to_string()]);
    }
    // The shorter of two forced builds: a slow first one (a cold page cache) must not put most
    // kill instants after the end.
    let span = (0..2)
        .map(|_| {
            let started = Instant::now();
            ws.run(&args(&forced)).assert_code(0);
            started.elapsed()
        })
        .min()
        .unwrap();
    eprintln!("a forced build takes {span:?}; kills fall uniformly within it");

    let mut stopped_in: BTreeMap<String, usize> = BTreeMap::new();
    let (mut kills, mut trial) = (0, 0);
    // Only trials whose kill struck a running build count; a build that had ended is tallied apart.
    while kills < trials() && trial < 3 * trials() {
        trial += 1;
        let variant = Variant::random(&mut rng);
        variant.write_input(&ws);
        let mut build = vec!["build".to_string()];
        build.extend(variant.sets());
        for stage in ["big", "many", "clip-train"] {
            build.extend(["--force".to_string(), stage.to_string()]);
        }
        let before = last_run_id(&ws);
        let delay = span.mul_f64(rng.unit());
        let child = spawn_group(&ws, &build);
        std::thread::sleep(delay);
        // SAFETY: signalling the process group this test created.
        unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
        let killed = Run::wait(child, &args(&build), Duration::from_secs(60));
        let what = format!("trial {trial}: {variant:?}, SIGKILL after {delay:?}");
        assert!(!killed.stderr.contains("panicked"), "{what}\n{killed}");
        recovers(&ws, variant, &mut references, false, &what);
        let stage = interrupted_stage(&ws, before).unwrap_or_else(|| {
            if killed.code == 0 {
                "(build had ended: not counted)".into()
            } else {
                "(between stages)".into()
            }
        });
        kills += usize::from(killed.code != 0);
        *stopped_in.entry(stage).or_default() += 1;
    }
    eprintln!(
        "sigkill: {kills} kills survived; killed in: {}",
        tally(&stopped_in)
    );
    assert_eq!(kills, trials(), "too few kills struck a running build");
}

#[test]
#[ignore = "torture: opt-in (see the file's header)"]
fn sigterm_and_sigint_record_the_run_interrupted_keep_the_checkpoint_and_exit_130() {
    let mut rng = Rng::from_env("sigterm");
    let mut references = References::default();
    let ws = workspace();
    let mut resumed = 0;
    for trial in 0..trials() {
        let variant = Variant::random(&mut rng);
        variant.write_input(&ws);
        let mut build = vec!["build".to_string()];
        build.extend(variant.sets());
        build.extend(["--force".to_string(), "clip-train".to_string()]);
        let before = last_run_id(&ws);
        let spawned = std::time::SystemTime::now();
        let mut child = ws.spawn(&args(&build));
        if !wait_for_checkpoint(&ws, &mut child, spawned) {
            // It wrote none: it resumed near the end from an earlier trial's checkpoint.
            Run::wait(child, &args(&build), Duration::from_secs(60)).assert_code(0);
            continue;
        }
        std::thread::sleep(Duration::from_millis(rng.below(400)));
        let signal = if rng.below(2) == 0 {
            libc::SIGTERM
        } else {
            libc::SIGINT
        };
        common::signal(child.id() as i32, signal);
        let stopped = Run::wait(child, &args(&build), Duration::from_secs(60));
        let what = format!("trial {trial}: {variant:?}, signal {signal}");
        if stopped.code == 0 {
            // The training ended before the signal arrived; nothing to check this time.
            continue;
        }
        stopped.assert_code(130);
        // The signal may land after the training: in zero-shot-eval, or between stages.
        assert_eq!(
            ws.query_i64("SELECT count(*) FROM runs WHERE status = 'running'"),
            0,
            "{what}: no run is left running\n{stopped}"
        );
        let in_training = interrupted_stage(&ws, before).as_deref() == Some("clip-train");
        if in_training {
            assert!(
                !ws.files_under("cache/checkpoints").is_empty(),
                "{what}: the checkpoint is kept"
            );
        }
        recovers(&ws, variant, &mut references, false, &what);
        resumed += usize::from(in_training);
    }
    eprintln!(
        "sigterm/sigint: {} trials, {resumed} stopped mid-training and resumed to a clean build's result",
        trials()
    );
    assert!(resumed > 0, "no trial stopped a training");
}

/// Spawns `vlmflow ARGS` in a process group of its own, so a kill reaches its commands too.
fn spawn_group(ws: &Ws, build: &[String]) -> std::process::Child {
    ws.command(&args(build))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn vlmflow")
}

/// The stage whose run the fault stopped, if one was running (after `verify` marked it).
fn interrupted_stage(ws: &Ws, since_run: i64) -> Option<String> {
    ws.query(&format!(
        "SELECT stage FROM runs WHERE id > {since_run} AND status = 'interrupted' ORDER BY id"
    ))
    .first()
    .and_then(|r| r["stage"].as_str().map(String::from))
}

/// The newest run's id; 0 before the first build.
fn last_run_id(ws: &Ws) -> i64 {
    if !ws.exists("cache/vlmflow.db") {
        return 0;
    }
    ws.query_i64("SELECT coalesce(max(id), 0) FROM runs")
}
