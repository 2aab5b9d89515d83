//! Shared helpers for the integration tests: temporary workspaces, running the real `vlmflow`
//! binary on them, and reading what it printed (one line per stage on stdout, a summary on stderr).
//!
//! Every command in these tests is plain `sh` (printf, cat, wc, sleep). Commands append their stage
//! name to `ran.log` at the workspace root, so a test can tell whether a command really executed
//! (`Ws::times_ran`), independently of what vlmflow reports.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_vlmflow");

/// The snippet every test command starts with: record that the command ran.
pub const TALLY: &str = "echo $VLMFLOW_STAGE >> ran.log";

/// A temporary workspace.
pub struct Ws {
    dir: tempfile::TempDir,
}

impl Ws {
    /// An empty folder (no Stagefile yet).
    pub fn empty() -> Ws {
        Ws {
            dir: tempfile::Builder::new()
                .prefix("vlmflow-test-")
                .tempdir()
                .expect("create a temporary folder"),
        }
    }

    /// A workspace with this Stagefile.
    pub fn new(stagefile: &str) -> Ws {
        let ws = Ws::empty();
        ws.stagefile(stagefile);
        ws
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn stagefile(&self, text: &str) {
        self.write("Stagefile", text);
    }

    /// Write `stages/<stage>.toml`.
    pub fn params(&self, stage: &str, text: &str) {
        self.write(&format!("stages/{stage}.toml"), text);
    }

    /// Write a file, creating its folders. An existing file is removed first: outs are read-only
    /// hard links into the cache, and writing through one (as root can) would corrupt the cache.
    pub fn write(&self, rel: &str, text: &str) {
        let path = self.path(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create folders");
        }
        if path.symlink_metadata().is_ok() {
            std::fs::remove_file(&path).expect("remove the old file");
        }
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    pub fn read(&self, rel: &str) -> String {
        let path = self.path(rel);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.path(rel).symlink_metadata().is_ok()
    }

    pub fn remove(&self, rel: &str) {
        let path = self.path(rel);
        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
    }

    /// `vlmflow -C <workspace> ARGS`, ready to run or spawn.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("-C")
            .arg(self.root())
            .args(args)
            .env("VLMFLOW_NO_PROGRESS", "1")
            .env_remove("VLMFLOW_LOG")
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let out = self.command(args).output().expect("run the vlmflow binary");
        Run::from_output(args, out.status, out.stdout, out.stderr)
    }

    /// `vlmflow build ARGS` (any exit code).
    pub fn build(&self, args: &[&str]) -> Run {
        let mut all = vec!["build"];
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// `vlmflow build ARGS`, which must exit 0.
    pub fn build_ok(&self, args: &[&str]) -> Run {
        let run = self.build(args);
        run.assert_code(0);
        run
    }

    /// Start `vlmflow ARGS` in the background, stdout and stderr captured.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the vlmflow binary")
    }

    /// `vlmflow status --json`: stage → (state, action, reasons).
    pub fn status(&self) -> BTreeMap<String, StatusRow> {
        let run = self.run(&["status", "--json"]);
        run.assert_code(0);
        let rows: Vec<Value> = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("status --json is not JSON ({e}):\n{run}"));
        rows.into_iter()
            .map(|r| {
                let row = StatusRow {
                    state: r["state"].as_str().unwrap_or_default().to_string(),
                    action: r["action"].as_str().unwrap_or_default().to_string(),
                    reasons: r["reasons"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .map(|s| s.as_str().unwrap_or_default().to_string())
                                .collect()
                        })
                        .unwrap_or_default(),
                };
                (r["stage"].as_str().unwrap_or_default().to_string(), row)
            })
            .collect()
    }

    /// `vlmflow query SQL --json`: one JSON object per row.
    pub fn query(&self, sql: &str) -> Vec<Value> {
        let run = self.run(&["query", sql, "--json"]);
        run.assert_code(0);
        serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("query --json is not JSON ({e}):\n{run}"))
    }

    /// A metric of `stage`'s current run: the final value (`step` None) or the value at a step.
    pub fn metric(&self, stage: &str, name: &str, step: Option<i64>) -> f64 {
        let step = step.map_or("IS NULL".to_string(), |s| format!("= {s}"));
        let rows = self.query(&format!(
            "SELECT m.value FROM metrics m JOIN stage_state s ON s.run_id = m.run_id \
             WHERE s.stage = '{stage}' AND m.name = '{name}' AND m.step {step}"
        ));
        rows.first()
            .and_then(|r| r["value"].as_f64())
            .unwrap_or_else(|| panic!("no metric {name} ({step}) for {stage}: {rows:?}"))
    }

    /// The single integer a `SELECT count(*) …` (or similar) answers.
    pub fn query_i64(&self, sql: &str) -> i64 {
        let rows = self.query(sql);
        assert_eq!(rows.len(), 1, "expected one row from {sql}: {rows:?}");
        let obj = rows[0].as_object().expect("a row is an object");
        assert_eq!(obj.len(), 1, "expected one column from {sql}: {rows:?}");
        obj.values()
            .next()
            .and_then(Value::as_i64)
            .unwrap_or_else(|| panic!("not an integer: {rows:?}"))
    }

    /// Runs recorded in the database, all statuses.
    pub fn run_count(&self) -> i64 {
        self.query_i64("SELECT count(*) FROM runs")
    }

    /// `vlmflow log [STAGE] --json`, newest first.
    pub fn log(&self, stage: Option<&str>) -> Vec<Value> {
        let mut args = vec!["log", "-n", "1000", "--json"];
        args.extend(stage);
        let run = self.run(&args);
        run.assert_code(0);
        if run.stdout.trim().is_empty() {
            return vec![];
        }
        serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("log --json is not JSON ({e}):\n{run}"))
    }

    /// How many times the command of `stage` has executed (lines in `ran.log`).
    pub fn times_ran(&self, stage: &str) -> usize {
        std::fs::read_to_string(self.path("ran.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.trim() == stage)
            .count()
    }

    /// Flips one bit of the cache object whose content is `content` (same size, as a disk or a
    /// careless hand would); returns the object's new bytes.
    pub fn damage_object_holding(&self, content: &str) -> Vec<u8> {
        use std::os::unix::fs::PermissionsExt;
        let object = self
            .files_under("cache/objects")
            .into_iter()
            .find(|p| std::fs::read_to_string(p).is_ok_and(|s| s == content))
            .expect("an object holds the content");
        std::fs::set_permissions(&object, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut bytes = std::fs::read(&object).unwrap();
        bytes[0] ^= 0x20;
        std::fs::write(&object, &bytes).unwrap();
        bytes
    }

    /// Every regular file under `rel`, recursively (absolute paths, sorted).
    pub fn files_under(&self, rel: &str) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                match entry.file_type() {
                    Ok(t) if t.is_dir() => walk(&path, out),
                    Ok(t) if t.is_file() => out.push(path),
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.path(rel), &mut out);
        out.sort();
        out
    }

    /// Wait until `rel` exists (a command's "I have started" marker).
    pub fn wait_for_file(&self, rel: &str, child: &mut Child) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.exists(rel) {
            if let Ok(Some(status)) = child.try_wait() {
                let (out, err) = drain(child);
                panic!(
                    "vlmflow exited ({status}) before {rel} appeared\n--- stdout\n{out}\n--- stderr\n{err}"
                );
            }
            assert!(
                Instant::now() < deadline,
                "{rel} did not appear within 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[derive(Clone, Debug)]
pub struct StatusRow {
    pub state: String,
    pub action: String,
    pub reasons: Vec<String>,
}

impl StatusRow {
    pub fn why(&self) -> String {
        self.reasons.join("; ")
    }
}

/// What one vlmflow invocation did.
pub struct Run {
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// One `<status> <stage> <time> <detail>` line of a build.
#[derive(Clone, Debug, PartialEq)]
pub struct StageLine {
    pub status: String,
    pub stage: String,
    pub time: Option<String>,
    pub detail: String,
}

const STATUS_WORDS: [&str; 8] = [
    "ran",
    "restored",
    "fresh",
    "failed",
    "interrupted",
    "skipped",
    "run",
    "restore",
];

fn is_duration(token: &str) -> bool {
    token.starts_with(|c: char| c.is_ascii_digit())
        && (token.ends_with('s') || token.ends_with('m'))
        && token
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 's' | 'm' | 'h'))
}

/// Parse one stage line; `None` for anything else.
pub fn parse_stage_line(line: &str) -> Option<StageLine> {
    let line = line.trim_end();
    let (status, rest) = line.split_once(' ')?;
    if !STATUS_WORDS.contains(&status) {
        return None;
    }
    let rest = rest.trim_start();
    let (stage, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let rest = rest.trim_start();
    let (first, after) = rest.split_once(' ').unwrap_or((rest, ""));
    let (time, detail) = if is_duration(first) {
        (Some(first.to_string()), after.trim())
    } else {
        (None, rest.trim())
    };
    Some(StageLine {
        status: status.to_string(),
        stage: stage.to_string(),
        time,
        detail: detail.to_string(),
    })
}

impl Run {
    pub fn from_output(args: &[&str], status: ExitStatus, stdout: Vec<u8>, stderr: Vec<u8>) -> Run {
        Run {
            args: args.iter().map(|s| s.to_string()).collect(),
            code: exit_code(status),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    /// Wait (at most `timeout`) for a spawned vlmflow and collect what it printed.
    pub fn wait(mut child: Child, args: &[&str], timeout: Duration) -> Run {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for vlmflow") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let (out, err) = drain(&mut child);
                panic!(
                    "vlmflow {args:?} did not exit within {timeout:?}\n--- stdout\n{out}\n--- stderr\n{err}"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let (out, err) = drain(&mut child);
        Run {
            args: args.iter().map(|s| s.to_string()).collect(),
            code: exit_code(status),
            stdout: out,
            stderr: err,
        }
    }

    pub fn assert_code(&self, code: i32) -> &Run {
        assert_eq!(self.code, code, "unexpected exit code\n{self}");
        assert!(
            !self.stderr.contains("panicked"),
            "vlmflow panicked\n{self}"
        );
        self
    }

    /// The stage lines on stdout, in the order printed.
    pub fn lines(&self) -> Vec<StageLine> {
        self.stdout.lines().filter_map(parse_stage_line).collect()
    }

    /// Stage → status word.
    pub fn statuses(&self) -> BTreeMap<String, String> {
        self.lines()
            .into_iter()
            .map(|l| (l.stage, l.status))
            .collect()
    }

    pub fn line(&self, stage: &str) -> StageLine {
        let matching: Vec<StageLine> = self
            .lines()
            .into_iter()
            .filter(|l| l.stage == stage)
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "expected exactly one line for stage `{stage}`\n{self}"
        );
        matching.into_iter().next().expect("one line")
    }

    pub fn status_of(&self, stage: &str) -> String {
        self.line(stage).status
    }

    pub fn detail(&self, stage: &str) -> String {
        self.line(stage).detail
    }

    /// Exactly these stages were printed, with these statuses.
    pub fn assert_statuses(&self, expected: &[(&str, &str)]) {
        let want: BTreeMap<String, String> = expected
            .iter()
            .map(|(s, st)| (s.to_string(), st.to_string()))
            .collect();
        assert_eq!(self.statuses(), want, "stage statuses differ\n{self}");
        assert_eq!(
            self.lines().len(),
            expected.len(),
            "one line per stage expected\n{self}"
        );
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "$ vlmflow {}\nexit code {}\n--- stdout\n{}--- stderr\n{}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        )
    }
}

fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

fn drain(child: &mut Child) -> (String, String) {
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    (out, err)
}

/// Send a signal to a process (or, with a negative pid, a process group).
pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory effects; the pids are processes these tests started.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

/// The permission bits of a path.
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The three-stage chain most tests use: prepare → train → eval.
///
/// - `prepare` reads the input `data/raw.txt` and its params (`stages/prepare.toml`), writes
///   `out/prepared.txt`;
/// - `train` reads `out/prepared.txt` (an input inside prepare's outs: an implicit need) and its
///   params (`stages/train.toml`: lr, epochs), writes `out/model.txt`;
/// - `eval` needs `train` explicitly, writes `out/eval.txt` (model size + its params).
pub const CHAIN: &str = r#"
[stages.prepare]
kind = "cmd"
cmd = "echo $VLMFLOW_STAGE >> ran.log && mkdir -p out && cat data/raw.txt $VLMFLOW_PARAMS > out/prepared.txt"
inputs = ["data/raw.txt"]
outs = ["out/prepared.txt"]

[stages.train]
kind = "cmd"
cmd = "echo $VLMFLOW_STAGE >> ran.log && cat out/prepared.txt $VLMFLOW_PARAMS > out/model.txt"
inputs = ["out/prepared.txt"]
outs = ["out/model.txt"]

[stages.eval]
kind = "cmd"
cmd = "echo $VLMFLOW_STAGE >> ran.log && wc -c < out/model.txt > out/eval.txt && cat $VLMFLOW_PARAMS >> out/eval.txt"
needs = ["train"]
outs = ["out/eval.txt"]
"#;

pub const TRAIN_PARAMS: &str = "lr = 0.001\nepochs = 3\n";

/// A workspace holding `CHAIN`, its input and its params files.
pub fn chain() -> Ws {
    let ws = Ws::new(CHAIN);
    ws.write("data/raw.txt", "hello shapes\n");
    ws.params("prepare", "seed = 1\n");
    ws.params("train", TRAIN_PARAMS);
    ws.params("eval", "split = \"val\"\n");
    ws
}

/// `chain()` after a first, successful build.
pub fn built_chain() -> Ws {
    let ws = chain();
    ws.build_ok(&[])
        .assert_statuses(&[("prepare", "ran"), ("train", "ran"), ("eval", "ran")]);
    ws
}
