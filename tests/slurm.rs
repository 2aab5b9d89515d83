//! Stages run as Slurm batch jobs on a real single-node cluster (slurmctld, slurmd and munge from
//! Debian's packages, configured and started by `tests/servers/slurm` on 127.0.0.1): the middle
//! stage of a pipeline is a job; its failure, a `scancel`, a Ctrl-C on the submitting side, and a
//! submitter that goes away while its job runs.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{Run, TALLY, Ws, signal};

/// The cluster's slurm.conf, once `tests/servers/slurm` has it running.
fn slurm_conf() -> &'static PathBuf {
    static CONF: OnceLock<PathBuf> = OnceLock::new();
    CONF.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/servers/slurm");
        let out = Command::new(script)
            .output()
            .expect("run tests/servers/slurm");
        assert!(
            out.status.success(),
            "the Slurm cluster did not start:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// A workspace whose `train` stage is a Slurm job running `train_cmd`, between two local stages.
fn pipeline(train_cmd: &str) -> Ws {
    let stagefile = format!(
        r#"
[stages.prep]
kind = "cmd"
cmd = "{TALLY}; mkdir -p out && echo data > out/prep"
outs = ["out/prep"]

[stages.train]
kind = "cmd"
cmd = "{TALLY}; {train_cmd}"
inputs = ["out/prep"]
outs = ["out/train"]
metrics = "metrics.json"
executor = "slurm"
slurm = {{ cpus = 1, mem = "200M", time = "5" }}

[stages.report]
kind = "cmd"
cmd = "{TALLY}; cat out/train > out/report"
inputs = ["out/train"]
outs = ["out/report"]
"#
    );
    Ws::new(&stagefile)
}

/// What a healthy `train` runs: a log line naming its host, a model, a loss curve.
const TRAIN: &str = r#"echo trained on $(hostname); cat out/prep > out/train; echo model >> out/train; echo '{\"loss\": [0.9, 0.5]}' > metrics.json"#;

/// `vlmflow ARGS` for these tests: Slurm's commands find the test cluster, and the job's state
/// is asked for twice a second.
fn slurm_command(ws: &Ws, args: &[&str]) -> Command {
    let mut cmd = ws.command(args);
    cmd.env("SLURM_CONF", slurm_conf())
        .env("VLMFLOW_SLURM_POLL", "0.5");
    cmd
}

fn build(ws: &Ws) -> Run {
    let out = slurm_command(ws, &["build"])
        .output()
        .expect("run the vlmflow binary");
    Run::from_output(&["build"], out.status, out.stdout, out.stderr)
}

/// `vlmflow build` in the background, its output captured.
fn spawn_build(ws: &Ws) -> std::process::Child {
    slurm_command(ws, &["build"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn vlmflow")
}

fn scontrol(job: &str) -> String {
    let out = Command::new("scontrol")
        .args(["show", "job", "-o", job])
        .env("SLURM_CONF", slurm_conf())
        .output()
        .expect("run scontrol");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn job_state(job: &str) -> String {
    let line = scontrol(job);
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix("JobState="))
        .unwrap_or("")
        .to_string()
}

/// The Slurm job of `stage`'s latest run.
fn job_of(ws: &Ws, stage: &str) -> String {
    let rows = ws.query(&format!(
        "SELECT job FROM runs WHERE stage = '{stage}' ORDER BY id DESC LIMIT 1"
    ));
    rows[0]["job"]
        .as_str()
        .unwrap_or_else(|| panic!("the run of {stage} names no job: {rows:?}"))
        .to_string()
}

/// The id of the job submitted for the workspace's only job folder, once `sbatch` has given it.
fn wait_for_job_id(ws: &Ws) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ids: Vec<String> = ws
            .files_under("cache/jobs")
            .iter()
            .filter(|p| p.file_name().is_some_and(|n| n == "job"))
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .collect();
        if let [id] = ids.as_slice() {
            return id.trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no job was submitted within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for_state(job: &str, wanted: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while job_state(job) != wanted {
        assert!(
            Instant::now() < deadline,
            "job {job} did not reach {wanted} within 60 s: {}",
            scontrol(job)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_middle_stage_runs_as_a_job_and_its_run_records_the_job_and_node() {
    let ws = pipeline(TRAIN);
    let run = build(&ws);
    run.assert_code(0);
    run.assert_statuses(&[("prep", "ran"), ("train", "ran"), ("report", "ran")]);
    assert_eq!(ws.read("out/report"), "data\nmodel\n");
    assert_eq!(ws.times_ran("train"), 1);

    // The submitting side recorded the run: the job, the node it ran on, its log and metrics.
    let job = job_of(&ws, "train");
    let line = scontrol(&job);
    assert!(line.contains("JobState=COMPLETED"), "{line}");
    assert!(
        line.contains("TimeLimit=00:05:00"),
        "the stage's time limit: {line}"
    );
    let node = line
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("NodeList="))
        .expect("a node")
        .to_string();
    let host = &ws.query("SELECT host FROM runs WHERE stage = 'train'")[0]["host"];
    assert_eq!(host.as_str(), Some(node.as_str()));
    assert_eq!(ws.metric("train", "loss", Some(1)), 0.5);
    let log = ws.run(&["log", "train", "--verbose"]);
    assert!(log.stdout.contains(&format!("Slurm job {job}")), "{log}");
    assert!(
        log.stdout.contains("trained on"),
        "the job's own output: {log}"
    );
    let provenance = ws.run(&["provenance", "out/report"]);
    assert!(
        provenance.stdout.contains(&format!("(Slurm job {job})")),
        "{provenance}"
    );
    assert!(
        ws.files_under("cache/jobs").is_empty(),
        "the job's folder is gone"
    );

    // Nothing changed: nothing is submitted again.
    let again = build(&ws);
    again.assert_code(0);
    again.assert_statuses(&[("prep", "fresh"), ("train", "fresh"), ("report", "fresh")]);

    // The run record carries the job: a database rebuilt from the records still names it.
    std::fs::remove_file(ws.path("cache/vlmflow.db")).expect("remove the database");
    assert_eq!(job_of(&ws, "train"), job);
    let host = &ws.query("SELECT host FROM runs WHERE stage = 'train'")[0]["host"];
    assert_eq!(host.as_str(), Some(node.as_str()));
}

#[test]
fn a_failing_job_is_a_failed_run_showing_its_log() {
    let ws = pipeline("echo boom; exit 3");
    let run = build(&ws);
    run.assert_code(1);
    assert_eq!(run.status_of("train"), "failed", "{run}");
    let detail = run.detail("train");
    assert!(
        detail.contains("Slurm job") && detail.contains("status 3"),
        "{run}"
    );
    assert!(run.stderr.contains("| boom"), "the log's tail: {run}");
    assert!(!ws.exists("out/report"));
}

#[test]
fn a_job_cancelled_with_scancel_is_a_failed_run_saying_so() {
    let ws = pipeline("touch started; sleep 60");
    let child = spawn_build(&ws);
    let job = wait_for_job_id(&ws);
    wait_for_state(&job, "RUNNING");
    let cancelled = Command::new("scancel")
        .arg(&job)
        .env("SLURM_CONF", slurm_conf())
        .status()
        .expect("run scancel");
    assert!(cancelled.success());
    let run = Run::wait(child, &["build"], Duration::from_secs(60));
    run.assert_code(1);
    assert_eq!(run.status_of("train"), "failed", "{run}");
    assert!(
        run.detail("train")
            .contains(&format!("Slurm job {job} on ")),
        "{run}"
    );
    assert!(
        run.detail("train").contains("was cancelled (scancel)"),
        "{run}"
    );
}

#[test]
fn ctrl_c_on_the_submitting_side_cancels_the_job() {
    let ws = pipeline("touch started; sleep 60");
    let mut child = spawn_build(&ws);
    ws.wait_for_file("started", &mut child);
    let job = wait_for_job_id(&ws);
    signal(child.id() as i32, libc::SIGINT);
    let run = Run::wait(child, &["build"], Duration::from_secs(90));
    run.assert_code(130);
    assert_eq!(run.status_of("train"), "interrupted", "{run}");
    assert_eq!(job_state(&job), "CANCELLED");
    assert_eq!(job_of(&ws, "train"), job);
}

#[test]
fn a_job_that_ended_while_its_submitter_was_gone_is_taken_by_the_next_build() {
    let ws = pipeline(&format!("touch started; sleep 2; {TRAIN}"));
    let mut child = spawn_build(&ws);
    ws.wait_for_file("started", &mut child);
    let job = wait_for_job_id(&ws);
    // The login node's session is lost: the submitter dies without a word; the job goes on.
    signal(child.id() as i32, libc::SIGKILL);
    let _ = child.wait();
    wait_for_state(&job, "COMPLETED");

    let run = build(&ws);
    run.assert_code(0);
    assert!(
        run.stderr.contains(&format!(
            "takes over Slurm job {job}, submitted by an earlier build"
        )),
        "{run}"
    );
    assert_eq!(run.status_of("train"), "ran", "{run}");
    assert_eq!(ws.times_ran("train"), 1, "the work was not done twice");
    let left = ws.query("SELECT error FROM runs WHERE stage = 'train' AND status = 'interrupted'");
    let said = left[0]["error"].as_str().unwrap_or_default();
    assert!(
        said.contains(&format!("ended while Slurm job {job} ran")),
        "the dead submitter's run says what happened: {said}"
    );
    assert_eq!(job_of(&ws, "train"), job);
    assert_eq!(ws.read("out/report"), "data\nmodel\n");
}

#[test]
fn a_built_in_kind_as_a_job_makes_the_artifact_it_makes_here() {
    let stagefile = |executor: &str| {
        format!(
            r#"
[stages.download]
kind = "download"
params = {{ source = "synthetic", count = 64, seed = 3, image_size = 16 }}
executor = "{executor}"
"#
        )
    };
    let artifact = |ws: &Ws| {
        ws.query("SELECT artifact FROM runs WHERE stage = 'download' AND status = 'ran'")[0]
            ["artifact"]
            .as_str()
            .expect("an artifact")
            .to_string()
    };
    let on_slurm = Ws::new(&stagefile("slurm"));
    let run = build(&on_slurm);
    run.assert_code(0);
    assert_eq!(run.status_of("download"), "ran", "{run}");
    job_of(&on_slurm, "download");
    // The same Stagefile built with --local runs here, without Slurm, to the same artifact.
    let here = Ws::new(&stagefile("slurm"));
    here.build_ok(&["--local"]);
    assert!(here.query("SELECT job FROM runs")[0]["job"].is_null());
    assert_eq!(artifact(&on_slurm), artifact(&here));
}

#[test]
fn independent_jobs_run_at_once_without_asking_for_local_workers() {
    // Each job waits for the other to have started: run one after the other, both would fail.
    let wait_for = |other: &str| {
        format!(
            "{TALLY}; touch {other}-waits; i=0; while [ ! -e {other}-started ]; do i=$((i+1)); [ $i -lt 600 ] || exit 1; sleep 0.1; done; mkdir -p out; echo ok > out/$VLMFLOW_STAGE"
        )
    };
    let job = |name: &str, other: &str| {
        format!(
            "[stages.{name}]\nkind = \"cmd\"\ncmd = \"touch {name}-started; {}\"\nouts = [\"out/{name}\"]\nexecutor = \"slurm\"\nslurm = {{ cpus = 1, mem = \"100M\" }}\n\n",
            wait_for(other)
        )
    };
    let ws = Ws::new(&format!("{}{}", job("left", "right"), job("right", "left")));
    let run = build(&ws);
    run.assert_code(0);
    run.assert_statuses(&[("left", "ran"), ("right", "ran")]);
}

#[test]
fn a_sweep_sends_its_trials_to_slurm_and_leaves_the_workspace_as_it_was() {
    let ws = Ws::new(
        r#"
[stages.download]
kind = "download"
params = { source = "synthetic", count = 64, seed = 3, image_size = 16 }
executor = "slurm"

[stages.preprocess]
kind = "preprocess"
needs = ["download"]
params = { val_permille = 200 }
"#,
    );
    build(&ws).assert_code(0);
    let before = ws.files_under("out").len();
    let captions = ws.read("out/download/captions.jsonl");
    let args = ["sweep", "download.seed=4,5", "-j", "2"];
    let out = slurm_command(&ws, &args).output().unwrap();
    let run = Run::from_output(&args, out.status, out.stdout, out.stderr);
    run.assert_code(0);
    // Both trials' downloads were jobs; their preprocess read them from the sweep's scratch.
    let jobs = ws.query_i64(
        "SELECT count(*) FROM runs WHERE stage = 'download' AND status = 'ran' AND job IS NOT NULL",
    );
    assert_eq!(jobs, 3, "{run}");
    let made = ws.query_i64("SELECT count(*) FROM sweep_runs WHERE stage = 'preprocess'");
    assert_eq!(made, 2, "{run}");
    assert_eq!(ws.read("out/download/captions.jsonl"), captions);
    assert_eq!(ws.files_under("out").len(), before);
}
