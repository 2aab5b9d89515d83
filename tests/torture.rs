//! The torture suite: real builds killed, interrupted, raced, starved of disk and fed damaged
//! files, each followed by `verify` and a build whose outputs must equal a clean build's.
//!
//! Slow, so opt-in: `cargo test --test torture -- --ignored --test-threads 1`.
//! `VLMFLOW_TORTURE_TRIALS` (default 50) sets the trials per fault, `VLMFLOW_TORTURE_SEED` the
//! random instants and choices (printed, so a failure can be replayed). `.ci/run` runs a few.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Run, Ws};

/// Three kinds of work to be killed in: hashing and copying a large input (`big`), committing
/// thousands of outputs (`many`), and a real training that checkpoints every 5 steps
/// (`clip-train`).
const PIPELINE: &str = r#"
[stages.big]
kind = "cmd"
cmd = "mkdir -p out/big && cp data/big.bin out/big/copy.bin && cat $VLMFLOW_PARAMS > out/big/params"
inputs = ["data/big.bin"]
outs = ["out/big"]

[stages.many]
kind = "cmd"
cmd = "mkdir -p out/many && p=$(cat $VLMFLOW_PARAMS) && i=0 && while [ $i -lt 3000 ]; do i=$((i+1)); echo \"$p $i\" > out/many/f$i; done"
outs = ["out/many"]
params = { seed = 1 }

[stages.download]
kind = "download"
params = { source = "synthetic", count = 300, seed = 1 }

[stages.preprocess]
kind = "preprocess"
needs = ["download"]
params = { val_permille = 200 }

[stages.clip-train]
kind = "clip-train"
needs = ["preprocess"]

[stages.zero-shot-eval]
kind = "zero-shot-eval"
needs = ["clip-train", "preprocess"]
"#;

const TRAIN: &str =
    "steps = 30\nbatch_size = 32\nlr = 2e-3\nwarmup_steps = 5\ncheckpoint_every = 5\nseed = 1\n";

const BIG_BYTES: usize = 48 << 20;

fn trials() -> usize {
    std::env::var("VLMFLOW_TORTURE_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

/// xorshift64*: small, seedable, reproducible.
struct Rng(u64);

impl Rng {
    fn from_env(test: &str) -> Rng {
        let seed = std::env::var("VLMFLOW_TORTURE_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{test}: VLMFLOW_TORTURE_SEED={seed}");
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One setting of the pipeline: which large input, which seeds.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Variant {
    data: u8,
    seed: u8,
}

impl Variant {
    fn random(rng: &mut Rng) -> Variant {
        Variant {
            data: rng.below(2) as u8,
            seed: 1 + rng.below(2) as u8,
        }
    }

    fn sets(&self) -> Vec<String> {
        vec![
            "--set".into(),
            format!("many.seed={}", self.seed),
            "--set".into(),
            format!("clip-train.seed={}", self.seed),
        ]
    }

    /// Rewrites the large input (always: its stat changes, so it is hashed again).
    fn write_input(&self, ws: &Ws) {
        let mut bytes = vec![0u8; BIG_BYTES];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(self.data));
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next().to_le_bytes()[..chunk.len()]);
        }
        std::fs::create_dir_all(ws.path("data")).unwrap();
        std::fs::write(ws.path("data/big.bin"), bytes).unwrap();
    }
}

fn workspace() -> Ws {
    let ws = Ws::new(PIPELINE);
    ws.params("clip-train", TRAIN);
    ws
}

fn args(build: &[String]) -> Vec<&str> {
    build.iter().map(String::as_str).collect()
}

/// Every file under `out/` and its blake3 digest: what a build produced.
fn outs(ws: &Ws) -> BTreeMap<String, String> {
    ws.files_under("out")
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(ws.root()).unwrap().display().to_string();
            let digest = blake3::hash(&std::fs::read(&p).unwrap())
                .to_hex()
                .to_string();
            (rel, digest)
        })
        .collect()
}

/// The paths (at most 10) whose content differs between two `outs`, or that only one has.
fn differences(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    a.keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .take(10)
        .cloned()
        .collect()
}

/// The outputs of a clean build of each variant, each in a fresh workspace, computed once.
#[derive(Default)]
struct References(HashMap<Variant, BTreeMap<String, String>>);

impl References {
    fn of(&mut self, variant: Variant) -> &BTreeMap<String, String> {
        self.0.entry(variant).or_insert_with(|| {
            let ws = workspace();
            variant.write_input(&ws);
            let mut build = vec!["build".to_string()];
            build.extend(variant.sets());
            ws.run(&args(&build)).assert_code(0);
            outs(&ws)
        })
    }
}

/// After a fault: `verify` finds nothing wrong (or, with `repair`, repairs what it found), a
/// build of `variant` succeeds, and its outputs equal a clean build's.
fn recovers(ws: &Ws, variant: Variant, references: &mut References, repair: bool, what: &str) {
    let verify = ws.run(if repair {
        &["verify", "--repair"]
    } else {
        &["verify"]
    });
    if repair {
        assert!(matches!(verify.code, 0 | 1), "{what}\n{verify}");
        assert!(!verify.stderr.contains("panicked"), "{what}\n{verify}");
    } else {
        assert_eq!(verify.code, 0, "{what}: verify after the fault\n{verify}");
    }
    let mut build = vec!["build".to_string()];
    build.extend(variant.sets());
    let done = ws.run(&args(&build));
    assert_eq!(done.code, 0, "{what}: the build after the fault\n{done}");
    assert!(!done.stderr.contains("panicked"), "{what}\n{done}");
    let differ = differences(&outs(ws), references.of(variant));
    assert!(
        differ.is_empty(),
        "{what}: the outputs differ from a clean build's: {differ:?}\n{done}"
    );
    ws.run(&["verify"]).assert_code(0);
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

fn last_run_id(ws: &Ws) -> i64 {
    ws.query_i64("SELECT coalesce(max(id), 0) FROM runs")
}

fn tally(counts: &BTreeMap<String, usize>) -> String {
    counts
        .iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

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

/// Waits until clip-train has written a checkpoint (a file under `cache/checkpoints/`).
fn wait_for_checkpoint(ws: &Ws, child: &mut std::process::Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if !ws.files_under("cache/checkpoints").is_empty() {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
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
        let mut child = ws
            .command(&args(&build))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        assert!(
            wait_for_checkpoint(&ws, &mut child),
            "trial {trial}: no checkpoint was written"
        );
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
        let runs = ws.log(None);
        assert_eq!(runs[0]["status"], "interrupted", "{what}\n{runs:#?}");
        // The signal may land after the training, in zero-shot-eval.
        let in_training = runs[0]["stage"] == "clip-train";
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

#[test]
#[ignore = "torture: opt-in (see the file's header)"]
fn two_builds_a_gc_and_readers_racing_lose_nothing() {
    let mut rng = Rng::from_env("race");
    // The command stages only: the race is in the engine and the store.
    let commands_only = PIPELINE.split("[stages.download]").next().unwrap();
    let ws = Ws::new(commands_only);
    Variant { data: 0, seed: 1 }.write_input(&ws);
    let mut references: HashMap<u8, BTreeMap<String, String>> = HashMap::new();
    for seed in [1u8, 2] {
        let clean = Ws::new(commands_only);
        Variant { data: 0, seed }.write_input(&clean);
        clean
            .run(&["build", "--set", &format!("many.seed={seed}")])
            .assert_code(0);
        references.insert(seed, outs(&clean));
    }
    for trial in 0..trials() {
        let commands: Vec<Vec<String>> = vec![
            vec!["build".into(), "--set".into(), "many.seed=1".into()],
            vec!["build".into(), "--set".into(), "many.seed=2".into()],
            vec!["gc".into(), "--keep-last".into(), rng.below(2).to_string()],
            vec!["status".into()],
            vec!["log".into()],
        ];
        let children: Vec<_> = commands
            .iter()
            .map(|c| {
                std::thread::sleep(Duration::from_millis(rng.below(30)));
                (c, ws.spawn(&args(c)))
            })
            .collect();
        for (c, child) in children {
            let run = Run::wait(child, &args(c), Duration::from_secs(120));
            assert_eq!(run.code, 0, "trial {trial}: {c:?}\n{run}");
            assert!(!run.stderr.contains("panicked"), "{run}");
        }
        ws.run(&["verify"]).assert_code(0);
        let seed = 1 + rng.below(2) as u8;
        ws.run(&["build", "--set", &format!("many.seed={seed}")])
            .assert_code(0);
        let differ = differences(&outs(&ws), &references[&seed]);
        assert!(differ.is_empty(), "trial {trial}: {differ:?}");
    }
    eprintln!("race: {} rounds of 2 builds + gc + 2 readers", trials());
}

/// A tmpfs mounted over a folder for the life of the value (needs root, as CI runs).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs at {} failed: this test needs root",
            at.display()
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
#[ignore = "torture: opt-in (see the file's header)"]
fn a_full_disk_fails_the_build_clearly_and_keeps_the_previous_state() {
    let ws = Ws::new(
        r#"
[stages.small]
kind = "cmd"
cmd = "mkdir -p out && head -c 1000000 /dev/urandom > out/small.bin"
outs = ["out/small.bin"]

[stages.large]
kind = "cmd"
cmd = "mkdir -p out && head -c $(($(tr -dc 0-9 < $VLMFLOW_PARAMS) * 1048576)) /dev/urandom > out/large.bin"
outs = ["out/large.bin"]
params = { mib = 1 }
"#,
    );
    let _cache = Tmpfs::mount(&ws.path("cache"), "12m");
    ws.build_ok(&[]);
    let before = outs(&ws);
    let full = ws
        .command(&["build", "--set", "large.mib=40"])
        .output()
        .unwrap();
    let full = format!(
        "exit {:?}\n{}{}",
        full.status.code(),
        String::from_utf8_lossy(&full.stdout),
        String::from_utf8_lossy(&full.stderr)
    );
    assert!(full.starts_with("exit Some(1)"), "{full}");
    assert!(!full.contains("panicked"), "{full}");
    assert!(
        full.contains("No space left on device"),
        "the cause is named\n{full}"
    );
    assert_eq!(outs(&ws), before, "the previous outputs are intact\n{full}");
    ws.run(&["verify"]).assert_code(0);
    let again = ws.build_ok(&[]);
    assert_eq!(again.status_of("small"), "fresh", "{again}");
    assert_eq!(again.status_of("large"), "fresh", "{again}");
}

/// Where a corruption trial damages a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Object,
    Manifest,
    RunRecord,
    Checkpoint,
    Database,
    Wal,
}

const TARGETS: [Target; 6] = [
    Target::Object,
    Target::Manifest,
    Target::RunRecord,
    Target::Checkpoint,
    Target::Database,
    Target::Wal,
];

/// The files a trial may damage for `target`.
fn candidates(ws: &Ws, target: Target) -> Vec<std::path::PathBuf> {
    let starts = |p: &Path, prefix: &[u8]| std::fs::read(p).is_ok_and(|b| b.starts_with(prefix));
    let objects = || ws.files_under("cache/objects").into_iter();
    match target {
        Target::Object => objects()
            .filter(|p| !starts(p, b"vlmflow-manifest") && !starts(p, b"{\"format\":\"vlmflow-run"))
            .collect(),
        Target::Manifest => objects()
            .filter(|p| starts(p, b"vlmflow-manifest"))
            .collect(),
        Target::RunRecord => objects()
            .filter(|p| starts(p, b"{\"format\":\"vlmflow-run"))
            .collect(),
        Target::Checkpoint => ws.files_under("cache/checkpoints"),
        Target::Database => vec![ws.path("cache/vlmflow.db")],
        Target::Wal => vec![ws.path("cache/vlmflow.db-wal")]
            .into_iter()
            .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
            .collect(),
    }
}

/// Flips one byte or truncates the file; says which.
fn damage(path: &Path, rng: &mut Rng) -> String {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644));
    let mut bytes = std::fs::read(path).unwrap();
    let how = if bytes.is_empty() || rng.below(2) == 0 {
        let len = rng.below(bytes.len() as u64 + 1) as usize;
        bytes.truncate(len);
        format!("truncated to {len} bytes")
    } else {
        let at = rng.below(bytes.len() as u64) as usize;
        bytes[at] ^= 1 + rng.below(255) as u8;
        format!("byte {at} flipped")
    };
    std::fs::write(path, &bytes).unwrap();
    how
}

/// Leaves a checkpoint of clip-train behind: a forced training stopped by SIGTERM.
fn leave_checkpoint(ws: &Ws, variant: Variant) {
    let mut build = vec!["build".to_string()];
    build.extend(variant.sets());
    build.extend(["--force".to_string(), "clip-train".to_string()]);
    let mut child = ws
        .command(&args(&build))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_for_checkpoint(ws, &mut child), "no checkpoint written");
    common::signal(child.id() as i32, libc::SIGTERM);
    Run::wait(child, &args(&build), Duration::from_secs(60));
}

#[test]
#[ignore = "torture: opt-in (see the file's header)"]
fn flipped_bytes_and_truncations_are_found_repaired_or_harmless() {
    let mut rng = Rng::from_env("damage");
    let mut references = References::default();
    let ws = workspace();
    let variant = Variant { data: 0, seed: 1 };
    variant.write_input(&ws);
    let mut build = vec!["build".to_string()];
    build.extend(variant.sets());
    ws.run(&args(&build)).assert_code(0);
    let mut tried: BTreeMap<String, usize> = BTreeMap::new();
    for trial in 0..trials() {
        let target = TARGETS[trial % TARGETS.len()];
        if target == Target::Checkpoint {
            leave_checkpoint(&ws, variant);
        }
        let files = candidates(&ws, target);
        if files.is_empty() {
            *tried
                .entry(format!("{target:?} (none present)"))
                .or_default() += 1;
            continue;
        }
        let file = &files[rng.below(files.len() as u64) as usize];
        let how = damage(file, &mut rng);
        let what = format!("trial {trial}: {target:?} {} {how}", file.display());
        recovers(&ws, variant, &mut references, true, &what);
        *tried.entry(format!("{target:?}")).or_default() += 1;
    }
    eprintln!("damage: {} trials survived: {}", trials(), tally(&tried));
}
