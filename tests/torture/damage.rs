//! Flipped bytes and truncations in every kind of file vlmflow keeps.

use super::*;

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
    let spawned = std::time::SystemTime::now();
    let mut child = ws.spawn(&args(&build));
    assert!(
        wait_for_checkpoint(ws, &mut child, spawned),
        "no checkpoint written"
    );
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
