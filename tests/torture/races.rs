//! Builds, gc and readers racing on one workspace, and a cache on a full disk.

use super::*;

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
