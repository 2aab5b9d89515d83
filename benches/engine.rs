//! Speed benchmarks of the engine and the store, against the goals in the README's "Performance"
//! section. `cargo bench --bench engine` (about a minute; needs ~1.2 GiB free in the temp folder).
//!
//! - no-op `vlmflow build` of the real binary (process start included) on a 10-stage chain and on a
//!   generated 500-stage pipeline (chains with fan-in), each stage with a params file and an input;
//! - `engine::stagefile::load` of that 500-stage pipeline alone (the part of its no-op build that
//!   parses, checks and links the Stagefile and params files);
//! - `store::hash::hash_file` on a 1 GiB file from the page cache;
//! - `store::hash::snapshot` of a folder of 20,000 files of 4 KiB with a fresh database (first run)
//!   and again (no-op, answered by the stat cache), beside a bare walk + stat of the same folder;
//! - the binary end to end on a one-stage pipeline with that folder (and with the 1 GiB file) as input.
//!
//! The stat cache does not record files changed less than 2 s before a snapshot (the racy window,
//! see `store::hash`), so every no-op measurement starts at least 2.5 s after its files were written.
//! Each timing is repeated; the table shows the median and the minimum.
//!
//! `VLMFLOW_BENCH_QUICK=1` runs fewer repetitions (a smoke test).

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use vlmflow_engine::kind::Kinds;
use vlmflow_engine::stagefile;
use vlmflow_store::db::Db;
use vlmflow_store::hash;

const BIN: &str = env!("CARGO_BIN_EXE_vlmflow");
/// Longer than `hash::RACY_WINDOW`: files older than this are recorded by the stat cache.
const SETTLE: Duration = Duration::from_millis(2500);
const GIB: u64 = 1 << 30;
const FOLDER_FILES: usize = 20_000;
const FOLDER_FILE_SIZE: usize = 4096;

fn main() {
    // `cargo bench` passes `--bench` (and perhaps a filter); this harness takes no arguments.
    let quick = std::env::var_os("VLMFLOW_BENCH_QUICK").is_some();
    let reps = |n: usize| if quick { n.min(3) } else { n };
    let started = Instant::now();
    let mut table = Table::default();
    let load_before = loadavg();
    let cpu = CpuMeter::start();
    let tmp = Scratch::new();
    eprintln!(
        "vlmflow benches: binary {BIN}, scratch {}",
        tmp.path().display()
    );

    pipeline_noop(&mut table, &tmp.path().join("p10"), 10, reps(30), 20.0);
    pipeline_noop(&mut table, &tmp.path().join("p500"), 500, reps(15), 150.0);
    stagefile_load(&mut table, &tmp.path().join("p500"), 500, reps(50));
    folder(&mut table, &tmp.path().join("folder"), reps(5), reps(15));
    big_file(&mut table, &tmp.path().join("big"), reps(7), reps(3));

    drop(tmp);
    println!();
    println!("{}", table.render());
    println!(
        "{} of {} goals met; bench took {:.0} s. Times: median (min) of the repetitions.",
        table.passed(),
        table.goals(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "load average (1, 5, 15 min) before: {load_before}; after: {}; {} cores; other processes \
         used {:.0}% of the CPUs meanwhile (rows where they used ≥ 5% say so: rerun when idle)",
        loadavg(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu.others_share() * 100.0
    );
}

/// The first three fields of /proc/loadavg (measure when nothing else runs).
fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/// A generated pipeline of `n` `cmd` stages: no-op build of the real binary.
fn pipeline_noop(table: &mut Table, dir: &Path, n: usize, reps: usize, goal_ms: f64) {
    write_pipeline(dir, n);
    let out = vlmflow_build(dir, &["-j", "2"]);
    expect_summary(&out, &format!("{n} stages: {n} ran"));
    std::thread::sleep(SETTLE);
    let out = vlmflow_build(dir, &[]); // warm-up (and check)
    expect_summary(&out, &format!("{n} stages: {n} fresh"));
    let times = repeat(reps, || {
        let t = Instant::now();
        let out = vlmflow_build(dir, &[]);
        let e = t.elapsed();
        expect_summary(&out, &format!("{n} stages: {n} fresh"));
        e
    });
    let shape = if n <= 10 { "chain" } else { "chains + fan-in" };
    table.timed(
        &format!("no-op `vlmflow build`, {n} stages ({shape})"),
        &times,
        Goal::AtMostMs(goal_ms),
    );
}

/// Loading the Stagefile of a pipeline `pipeline_noop` wrote, in this process.
fn stagefile_load(table: &mut Table, dir: &Path, n: usize, reps: usize) {
    let kinds = Kinds::cmd_only();
    let times = repeat(reps, || {
        let t = Instant::now();
        let pipeline = stagefile::load(dir, &kinds).unwrap_or_else(|d| panic!("{d}"));
        let e = t.elapsed();
        assert_eq!(pipeline.stages.len(), n);
        e
    });
    table.timed(
        &format!("Stagefile load, {n} stages (part of the no-op build)"),
        &times,
        Goal::Reference,
    );
}

/// 20,000 files of 4 KiB: snapshot first (fresh database) and no-op, a bare walk + stat, and the
/// binary end to end with the folder as the input of a one-stage pipeline.
fn folder(table: &mut Table, ws: &Path, first_reps: usize, noop_reps: usize) {
    let raw = ws.join("data/raw");
    fs::create_dir_all(&raw).unwrap();
    let t = Instant::now();
    let mut content = vec![0u8; FOLDER_FILE_SIZE];
    for i in 0..FOLDER_FILES {
        content[..8].copy_from_slice(&(i as u64).to_le_bytes());
        fs::write(raw.join(format!("img_{i:05}.png")), &content).unwrap();
    }
    eprintln!(
        "created {FOLDER_FILES} files of {FOLDER_FILE_SIZE} B in {:.2?}",
        t.elapsed()
    );
    std::thread::sleep(SETTLE);

    // The reference: what any tool must at least do to notice a change.
    let bare = repeat(noop_reps, || {
        let t = Instant::now();
        let n = walk_stat(&raw);
        let e = t.elapsed();
        assert_eq!(n, FOLDER_FILES);
        e
    });
    let bare_ms = ms(median(&bare.times));
    table.timed(
        "bare walk + stat of the 20,000 files (1 thread, reference)",
        &bare,
        Goal::Reference,
    );

    let dbs = ws.join("dbs");
    fs::create_dir_all(&dbs).unwrap();
    let paths = vec!["data/raw".to_string()];
    let mut db = None;
    let first = repeat(first_reps, || {
        let fresh = Db::open(&dbs.join(format!("db{}.sqlite", unique()))).unwrap();
        let t = Instant::now();
        let (_, st) = hash::snapshot_with_stats(&fresh.conn, ws, &paths).unwrap();
        let e = t.elapsed();
        assert_eq!(
            (st.files, st.hashed, st.not_recorded),
            (FOLDER_FILES, FOLDER_FILES, 0)
        );
        db = Some(fresh);
        e
    });
    table.timed(
        "snapshot of 20,000 × 4 KiB, first (fresh db)",
        &first,
        Goal::AtMostMs(500.0),
    );
    let db = db.unwrap();
    let noop = repeat(noop_reps, || {
        let t = Instant::now();
        let (_, st) = hash::snapshot_with_stats(&db.conn, ws, &paths).unwrap();
        let e = t.elapsed();
        assert_eq!((st.hashed, st.from_cache), (0, FOLDER_FILES));
        e
    });
    table.timed(
        "snapshot of 20,000 × 4 KiB, no-op (stat cache)",
        &noop,
        Goal::NoopFolder { bare_ms },
    );
    drop(db);
    fs::remove_dir_all(&dbs).unwrap();

    // End to end: one stage reading the folder.
    write_one_stage(ws, "data/raw");
    let first = repeat(first_reps.min(3), || {
        reset_workspace(ws);
        let t = Instant::now();
        let out = vlmflow_build(ws, &[]);
        let e = t.elapsed();
        expect_summary(&out, "1 stage: 1 ran");
        e
    });
    table.timed(
        "`vlmflow build`, 1 stage, 20,000-file input: first",
        &first,
        Goal::Reference,
    );
    std::thread::sleep(SETTLE);
    let out = vlmflow_build(ws, &[]);
    expect_summary(&out, "1 stage: 1 fresh");
    let noop = repeat(noop_reps, || {
        let t = Instant::now();
        let out = vlmflow_build(ws, &[]);
        let e = t.elapsed();
        expect_summary(&out, "1 stage: 1 fresh");
        e
    });
    table.timed(
        "`vlmflow build`, 1 stage, 20,000-file input: no-op",
        &noop,
        Goal::NoopFolder { bare_ms },
    );
}

/// A 1 GiB file: `hash_file` from the page cache, the blake3 crate's own mmap + rayon hash of the
/// same file for reference, and the binary's first build of a one-stage pipeline reading it.
fn big_file(table: &mut Table, ws: &Path, reps: usize, e2e_reps: usize) {
    fs::create_dir_all(ws.join("data")).unwrap();
    let path = ws.join("data/big.bin");
    let t = Instant::now();
    write_big(&path, GIB);
    eprintln!("wrote 1 GiB in {:.2?}", t.elapsed());
    let expected = hash::hash_file(&path).unwrap(); // warm-up: the page cache holds it now

    let times = repeat(reps, || {
        let t = Instant::now();
        let d = hash::hash_file(&path).unwrap();
        let e = t.elapsed();
        assert_eq!(d, expected);
        e
    });
    table.rate(
        "`hash_file`, 1 GiB, page cache",
        &times,
        GIB,
        Goal::AtLeastGbs(4.0),
    );
    let reference = repeat(reps, || {
        let t = Instant::now();
        let mut h = blake3::Hasher::new();
        h.update_mmap_rayon(&path).unwrap();
        let e = t.elapsed();
        assert_eq!(vlmflow_store::Digest::from(h.finalize()), expected);
        e
    });
    table.rate(
        "blake3 `update_mmap_rayon`, same file (reference)",
        &reference,
        GIB,
        Goal::Reference,
    );

    write_one_stage(ws, "data/big.bin");
    let first = repeat(e2e_reps, || {
        reset_workspace(ws);
        let t = Instant::now();
        let out = vlmflow_build(ws, &[]);
        let e = t.elapsed();
        expect_summary(&out, "1 stage: 1 ran");
        e
    });
    table.timed(
        "`vlmflow build`, 1 stage, 1 GiB input: first",
        &first,
        Goal::Reference,
    );
    fs::remove_file(&path).unwrap(); // do not keep 1 GiB around for the rest of the run
}

// ---------------------------------------------------------------------------------------------
// Workspaces

/// `n` stages `s000`…: in groups of ten, each group a chain; the head of a group needs the tails of
/// up to four earlier groups, and the last stage also needs every group's tail (fan-in of 50 at
/// 500 stages). Each stage has an input file, a params file (`stages/<name>.toml`) and one out.
fn write_pipeline(dir: &Path, n: usize) {
    for sub in ["in", "stages", "out"] {
        fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let name = |i: usize| format!("s{i:03}");
    let mut sf = String::new();
    for i in 0..n {
        let (group, pos) = (i / 10, i % 10);
        let mut needs = Vec::new();
        if pos > 0 {
            needs.push(i - 1);
        } else {
            needs.extend((1..=group.min(4)).map(|k| (group - k) * 10 + 9));
        }
        if i == n - 1 && n > 10 {
            needs.extend((0..group).map(|g| g * 10 + 9));
        }
        let s = name(i);
        fs::write(dir.join(format!("in/{s}.txt")), format!("input of {s}\n")).unwrap();
        fs::write(
            dir.join(format!("stages/{s}.toml")),
            format!("# params of {s}\nseed = {i}\nlr = 1e-3\nname = \"{s}\"\n"),
        )
        .unwrap();
        let needs: Vec<String> = needs.iter().map(|&j| format!("\"{}\"", name(j))).collect();
        writeln!(sf, "[stages.{s}]").unwrap();
        writeln!(sf, "kind = \"cmd\"").unwrap();
        writeln!(sf, "cmd = \"printf {i} > out/{s}\"").unwrap();
        if !needs.is_empty() {
            writeln!(sf, "needs = [{}]", needs.join(", ")).unwrap();
        }
        writeln!(sf, "inputs = [\"in/{s}.txt\"]").unwrap();
        writeln!(sf, "outs = [\"out/{s}\"]\n").unwrap();
    }
    fs::write(dir.join("Stagefile"), sf).unwrap();
}

fn write_one_stage(ws: &Path, input: &str) {
    fs::create_dir_all(ws.join("out")).unwrap();
    fs::write(
        ws.join("Stagefile"),
        format!(
            "[stages.use]\nkind = \"cmd\"\ncmd = \"printf done > out/use\"\n\
             inputs = [\"{input}\"]\nouts = [\"out/use\"]\n"
        ),
    )
    .unwrap();
}

/// Back to never built: no cache (so no database, no stat cache), no out.
fn reset_workspace(ws: &Path) {
    remove_all(&ws.join("cache"));
    let out = ws.join("out/use");
    if out.exists() {
        fs::remove_file(out).unwrap();
    }
}

fn vlmflow_build(dir: &Path, extra: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("-C")
        .arg(dir)
        .arg("build")
        .args(extra)
        .env("VLMFLOW_NO_PROGRESS", "1")
        .env_remove("VLMFLOW_LOG")
        .output()
        .expect("run vlmflow");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "vlmflow build in {} failed ({}):\n{text}",
        dir.display(),
        out.status
    );
    text
}

fn expect_summary(output: &str, want: &str) {
    assert!(
        output.contains(want),
        "expected `{want}` in the build's output:\n{output}"
    );
}

// ---------------------------------------------------------------------------------------------
// Files

/// Recursive readdir + stat on one thread, as a floor for any change check. Returns the files seen.
fn walk_stat(dir: &Path) -> usize {
    let mut files = 0;
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let md = e.metadata().unwrap();
        if md.is_dir() {
            files += walk_stat(&e.path());
        } else {
            files += usize::from(md.len() < u64::MAX);
        }
    }
    files
}

/// `len` bytes of non-repeating pseudo-random data (xorshift), written in 1 MiB blocks.
fn write_big(path: &Path, len: u64) {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, fs::File::create(path).unwrap());
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..len / block.len() as u64 {
        for chunk in block.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        f.write_all(&block).unwrap();
    }
    // Flushed to disk now, so writeback does not compete with the timings that follow.
    f.into_inner().unwrap().sync_all().unwrap();
}

/// Removes a tree, making read-only folders writable first if a plain removal fails.
fn remove_all(path: &Path) {
    if !path.exists() || fs::remove_dir_all(path).is_ok() {
        return;
    }
    fn writable(p: &Path) {
        if let Ok(md) = fs::symlink_metadata(p)
            && md.is_dir()
        {
            let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o755));
            if let Ok(rd) = fs::read_dir(p) {
                for e in rd.flatten() {
                    writable(&e.path());
                }
            }
        }
    }
    writable(path);
    fs::remove_dir_all(path).unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
}

/// A temporary folder removed on drop (also after a panic), read-only parts included.
struct Scratch(Option<tempfile::TempDir>);

impl Scratch {
    fn new() -> Scratch {
        Scratch(Some(
            tempfile::Builder::new()
                .prefix("vlmflow-bench-")
                .tempdir()
                .unwrap(),
        ))
    }

    fn path(&self) -> PathBuf {
        self.0.as_ref().unwrap().path().to_path_buf()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let path = dir.keep();
            remove_all(&path);
        }
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------------------
// Statistics and the table

/// The repetitions of one measurement, and how busy the machine was meanwhile.
struct Sample {
    times: Vec<Duration>,
    /// Share of all cores used by other processes while it ran (0.0–1.0).
    others: f64,
}

fn repeat(n: usize, mut f: impl FnMut() -> Duration) -> Sample {
    let cpu = CpuMeter::start();
    let times = (0..n.max(1)).map(|_| f()).collect();
    Sample {
        times,
        others: cpu.others_share(),
    }
}

/// CPU time used by processes other than this bench and its children, from `/proc/stat` and
/// `getrusage`: a benchmark on a shared 2-core machine is only as good as its quiet.
struct CpuMeter {
    wall: Instant,
    busy: f64,
    ours: f64,
}

impl CpuMeter {
    fn start() -> CpuMeter {
        CpuMeter {
            wall: Instant::now(),
            busy: system_busy_seconds(),
            ours: own_cpu_seconds(),
        }
    }

    fn others_share(&self) -> f64 {
        let wall = self.wall.elapsed().as_secs_f64();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let others = (system_busy_seconds() - self.busy) - (own_cpu_seconds() - self.ours).max(0.0);
        (others / (wall * cores)).clamp(0.0, 1.0)
    }
}

/// Seconds all CPUs spent not idle since boot (the first line of /proc/stat).
fn system_busy_seconds() -> f64 {
    let Ok(stat) = fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …
    let busy: u64 = ticks
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != 3 && i != 4 && i < 8)
        .map(|(_, v)| v)
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    busy as f64 / hz
}

/// User + system seconds of this process and its waited-for children.
fn own_cpu_seconds() -> f64 {
    let secs = |who| {
        // SAFETY: getrusage fills the zeroed struct it is given.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut ru) };
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    };
    secs(libc::RUSAGE_SELF) + secs(libc::RUSAGE_CHILDREN)
}

fn median(times: &[Duration]) -> Duration {
    let mut v = times.to_vec();
    v.sort();
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2
    }
}

fn min(times: &[Duration]) -> Duration {
    times.iter().copied().min().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn fmt_ms(d: Duration) -> String {
    let v = ms(d);
    if v < 10.0 {
        format!("{v:.2} ms")
    } else if v < 1000.0 {
        format!("{v:.1} ms")
    } else {
        format!("{:.2} s", v / 1e3)
    }
}

/// Flags a measurement taken while other processes used a noticeable share of the CPUs.
fn busy_note(sample: &Sample) -> String {
    if sample.others >= 0.05 {
        format!(" [others used {:.0}% CPU]", sample.others * 100.0)
    } else {
        String::new()
    }
}

#[derive(Clone, Copy)]
enum Goal {
    AtMostMs(f64),
    AtLeastGbs(f64),
    /// ≤ 100 ms and within 2× of the bare walk + stat.
    NoopFolder {
        bare_ms: f64,
    },
    Reference,
}

impl Goal {
    fn describe(self) -> String {
        match self {
            Goal::AtMostMs(v) => format!("≤ {v} ms"),
            Goal::AtLeastGbs(v) => format!("≥ {v} GB/s"),
            Goal::NoopFolder { bare_ms } => {
                format!("≤ 100 ms and ≤ 2× bare stat ({:.1} ms)", 2.0 * bare_ms)
            }
            Goal::Reference => "—".into(),
        }
    }
}

#[derive(Default)]
struct Table {
    rows: Vec<[String; 4]>,
    passed: usize,
    goals: usize,
}

impl Table {
    fn push(&mut self, name: &str, value: String, goal: Goal, pass: Option<bool>) {
        let verdict = match pass {
            None => "ref".to_string(),
            Some(p) => {
                self.goals += 1;
                self.passed += usize::from(p);
                if p { "pass" } else { "FAIL" }.to_string()
            }
        };
        eprintln!("  {name}: {value}  [{verdict}]");
        self.rows
            .push([name.to_string(), value, goal.describe(), verdict]);
    }

    /// A time: pass when the median meets the goal.
    fn timed(&mut self, name: &str, sample: &Sample, goal: Goal) {
        let times = &sample.times;
        let (med, lo) = (median(times), min(times));
        let value = format!(
            "{} (min {}, n={}){}",
            fmt_ms(med),
            fmt_ms(lo),
            times.len(),
            busy_note(sample)
        );
        let m = ms(med);
        let pass = match goal {
            Goal::AtMostMs(v) => Some(m <= v),
            Goal::NoopFolder { bare_ms } => Some(m <= 100.0 && m <= 2.0 * bare_ms),
            Goal::AtLeastGbs(_) | Goal::Reference => None,
        };
        self.push(name, value, goal, pass);
    }

    /// A throughput of `bytes` per repetition: pass when the median rate meets the goal.
    fn rate(&mut self, name: &str, sample: &Sample, bytes: u64, goal: Goal) {
        let times = &sample.times;
        let gbs = |d: Duration| bytes as f64 / d.as_secs_f64() / 1e9;
        let (med, lo) = (median(times), min(times));
        let value = format!(
            "{:.2} GB/s (best {:.2}; {}, n={}){}",
            gbs(med),
            gbs(lo),
            fmt_ms(med),
            times.len(),
            busy_note(sample)
        );
        let pass = match goal {
            Goal::AtLeastGbs(v) => Some(gbs(med) >= v),
            _ => None,
        };
        self.push(name, value, goal, pass);
    }

    fn passed(&self) -> usize {
        self.passed
    }

    fn goals(&self) -> usize {
        self.goals
    }

    fn render(&self) -> String {
        let header = ["measurement", "vlmflow", "goal", "pass/fail"];
        let mut width = header.map(|h| h.chars().count());
        for row in &self.rows {
            for (w, cell) in width.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: [&str; 4]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(width)
                .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
                .collect();
            format!("| {} |", padded.join(" | "))
        };
        let mut out = line(header);
        out.push('\n');
        let rule: Vec<String> = width.iter().map(|&w| "-".repeat(w)).collect();
        writeln!(out, "|-{}-|", rule.join("-|-")).unwrap();
        for row in &self.rows {
            out.push_str(&line([&row[0], &row[1], &row[2], &row[3]]));
            out.push('\n');
        }
        out
    }
}
