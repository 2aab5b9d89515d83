//! The torture suite: real builds killed, interrupted, raced, starved of disk and fed damaged
//! files, each followed by `verify` and a build whose outputs must equal a clean build's.
//!
//! Slow, so opt-in: `cargo test --test torture -- --ignored --test-threads 1`.
//! `VLMFLOW_TORTURE_TRIALS` (default 50) sets the trials per fault, `VLMFLOW_TORTURE_SEED` the
//! random instants and choices (printed, so a failure can be replayed). `.ci/run` runs a few.

#[path = "../common/mod.rs"]
mod common;
mod damage;
mod kills;
mod races;

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

fn tally(counts: &BTreeMap<String, usize>) -> String {
    counts
        .iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Waits until clip-train writes a checkpoint after `since` (one left by an earlier build does
/// not count); false when the build ends first.
fn wait_for_checkpoint(
    ws: &Ws,
    child: &mut std::process::Child,
    since: std::time::SystemTime,
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let written = ws.files_under("cache/checkpoints").iter().any(|p| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t > since)
        });
        if written {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}
