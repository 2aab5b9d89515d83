//! Timing experiments behind the store's constants and documented speeds, one named case each.
//! `cargo bench --bench store` runs every case; `cargo bench --bench store -- ingest manifest`
//! runs the named ones. Each prints its timings; nothing passes or fails (the goals live in
//! `benches/engine.rs`, which also times `hash_file` on 1 GiB and snapshots of 20,000 files).
//!
//! - `hash-sizes`: a read loop against mmap + rayon, by file size: where `hash::MMAP_THRESHOLD` sits.
//! - `ingest`: 20,000 fresh 4 KiB files made durable by one `syncfs` or by parallel `fsync`s (what
//!   `FSYNC_EACH_MAX` in the local object store chooses between), then `Cas::ingest`, `materialize`
//!   (twice), the snapshot right after, and a dry-run sweep over the 20,000 objects.
//! - `statcache`: 20,000 stat-cache rows written, loaded by one range query and by point queries,
//!   and deleted: why a snapshot loads a folder's rows in one query.
//! - `manifest`: a 20,000-entry manifest to bytes, back and digested: the speed `manifest`'s
//!   documentation quotes for its line format.
//!
//! Needs ~1 GiB free in the temp folder (`ingest`), and takes about a minute in all.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use vlmflow_store::db::Db;
use vlmflow_store::statcache::{self, Stat};
use vlmflow_store::{Cas, Digest, Entry, Manifest, Node, hash};

/// A case runs in a fresh temporary folder of its own.
type Case = fn(&Path);

const CASES: [(&str, Case); 4] = [
    ("hash-sizes", hash_sizes),
    ("ingest", ingest),
    ("statcache", statcache),
    ("manifest", manifest),
];

fn main() {
    // `cargo bench` passes `--bench`; other arguments name cases.
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if let Some(unknown) = wanted.iter().find(|w| !CASES.iter().any(|(n, _)| n == w)) {
        let names: Vec<&str> = CASES.iter().map(|(n, _)| *n).collect();
        eprintln!("no case `{unknown}`; the cases: {}", names.join(", "));
        std::process::exit(2);
    }
    for (name, case) in CASES {
        if wanted.is_empty() || wanted.iter().any(|w| w == name) {
            let dir = tempfile::Builder::new()
                .prefix("vlmflow-bench-store-")
                .tempdir()
                .unwrap();
            println!("{name}:");
            case(dir.path());
        }
    }
}

/// Hashing files of 64 KiB to 16 MiB from the page cache, 256 MiB in all per size: a 128 KiB read
/// loop on one thread (what `hash` does below the threshold) against blake3's mmap + rayon (what it
/// does above, less its `madvise`).
fn hash_sizes(dir: &Path) {
    for len in [
        64usize << 10,
        256 << 10,
        1 << 20,
        4 << 20,
        8 << 20,
        16 << 20,
    ] {
        let path = dir.join(format!("f{len}"));
        fs::write(&path, vec![7u8; len]).unwrap();
        let reps = (256 << 20) / len;
        let gbs = |f: &dyn Fn()| {
            let t = Instant::now();
            (0..reps).for_each(|_| f());
            (reps * len) as f64 / t.elapsed().as_secs_f64() / 1e9
        };
        let read = gbs(&|| {
            let mut file = File::open(&path).unwrap();
            let mut buf = vec![0u8; 128 << 10];
            let mut h = blake3::Hasher::new();
            loop {
                match file.read(&mut buf).unwrap() {
                    0 => break,
                    n => h.update(&buf[..n]),
                };
            }
            h.finalize();
        });
        let mmap = gbs(&|| {
            blake3::Hasher::new().update_mmap_rayon(&path).unwrap();
        });
        println!(
            "  {:>6} KiB: read {read:.2} GB/s, mmap + rayon {mmap:.2} GB/s",
            len >> 10
        );
    }
}

/// 20,000 files of 4 KiB under `dir/sub`, each distinct.
fn make_files(dir: &Path, sub: &str) -> Vec<PathBuf> {
    fs::create_dir_all(dir.join(sub)).unwrap();
    (0..20_000u32)
        .map(|i| {
            let mut content = vec![0u8; 4096];
            content[..4].copy_from_slice(&i.to_le_bytes());
            content[4..4 + sub.len()].copy_from_slice(sub.as_bytes());
            let path = dir.join(format!("{sub}/img_{i:05}.png"));
            fs::write(&path, content).unwrap();
            path
        })
        .collect()
}

fn syncfs(path: &Path) {
    let f = File::open(path).unwrap();
    // SAFETY: a valid open descriptor.
    assert_eq!(unsafe { libc::syncfs(f.as_raw_fd()) }, 0);
}

fn ingest(dir: &Path) {
    let root = dir.join("ws");
    fs::create_dir_all(&root).unwrap();
    // Durability strategies on 20,000 fresh files.
    make_files(&root, "a");
    let t = Instant::now();
    syncfs(&root);
    println!("  syncfs after writing 20,000 × 4 KiB: {:.2?}", t.elapsed());
    let fresh = make_files(&root, "b");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let t = Instant::now();
    std::thread::scope(|s| {
        for chunk in fresh[..2000].chunks(2000usize.div_ceil(threads)) {
            s.spawn(move || {
                for p in chunk {
                    File::open(p).unwrap().sync_all().unwrap();
                }
            });
        }
    });
    println!(
        "  fsync of 2,000 of 20,000 fresh files on {threads} threads: {:.2?} (×10 for all)",
        t.elapsed()
    );
    syncfs(&root);

    let db = Db::open(&dir.join("db.sqlite")).unwrap();
    let cas = Cas::open(&root.join("cache")).unwrap();
    let outs = ["out".to_string()];
    make_files(&root, "out");
    let t = Instant::now();
    let m = cas.ingest(&db.conn, &root, &outs).unwrap();
    println!(
        "  ingest 20,000 × 4 KiB (hash, stage, syncfs, rename, syncfs): {:.2?}",
        t.elapsed()
    );
    let t = Instant::now();
    cas.materialize(&db.conn, &m, &root, &outs).unwrap();
    println!(
        "  materialize 20,000 (hard links + stat-cache rows): {:.2?}",
        t.elapsed()
    );
    let t = Instant::now();
    let (_, st) = hash::snapshot_with_stats(&db.conn, &root, &outs).unwrap();
    println!(
        "  snapshot right after materialize: {:.2?} ({} of {} from the stat cache)",
        t.elapsed(),
        st.from_cache,
        st.files
    );
    let t = Instant::now();
    cas.materialize(&db.conn, &m, &root, &outs).unwrap();
    println!(
        "  materialize again (remove 20,000 + place 20,000): {:.2?}",
        t.elapsed()
    );
    let live: HashSet<Digest> = m.objects().chain([m.digest()]).collect();
    let t = Instant::now();
    let sweep = cas.sweep(&live, true).unwrap();
    println!(
        "  dry-run sweep over 20,000 objects: {:.2?} ({} would go)",
        t.elapsed(),
        sweep.objects
    );
}

fn statcache(dir: &Path) {
    let db = Db::open(&dir.join("db.sqlite")).unwrap();
    let conn = &db.conn;
    let d = Digest::of_bytes(b"x");
    let names: Vec<String> = (0..20_000)
        .map(|i| format!("data/raw/img_{i:05}.png"))
        .collect();
    let rows: Vec<(&str, Stat, Digest)> = names
        .iter()
        .zip(0u64..)
        .map(|(p, i)| {
            let stat = Stat {
                dev: u64::MAX - 1,
                ino: i,
                size: i * 10,
                mtime_ns: -5,
                ctime_ns: 7,
                mode: 0o100644,
            };
            (p.as_str(), stat, d)
        })
        .collect();
    let t = Instant::now();
    statcache::update(conn, &rows, &[]).unwrap();
    println!("  20,000 upserts in one savepoint: {:.2?}", t.elapsed());
    let t = Instant::now();
    statcache::update(conn, &rows, &[]).unwrap();
    println!("  20,000 upserts over existing rows: {:.2?}", t.elapsed());
    for _ in 0..3 {
        let t = Instant::now();
        let mut map = HashMap::new();
        statcache::load_under(conn, "data/raw", &mut map).unwrap();
        println!("  load_under, 20,000 rows: {:.2?}", t.elapsed());
        assert_eq!(map.len(), 20_000);
    }
    let t = Instant::now();
    let hits = names
        .iter()
        .filter(|n| statcache::lookup(conn, n).unwrap().is_some())
        .count();
    println!("  20,000 point lookups: {:.2?}", t.elapsed());
    assert_eq!(hits, 20_000);
    let t = Instant::now();
    assert_eq!(statcache::delete_under(conn, "data/raw").unwrap(), 20_000);
    println!("  delete_under, 20,000 rows: {:.2?}", t.elapsed());
}

fn manifest(_: &Path) {
    let entries: Vec<Entry> = (0..20_000u32)
        .map(|i| Entry {
            path: format!("data/raw/img_{i:05}.png"),
            node: Node::File {
                digest: Digest::of_bytes(&i.to_le_bytes()),
                size: 4,
                executable: false,
            },
        })
        .collect();
    let m = Manifest::new(entries);
    let t = Instant::now();
    let bytes = m.to_bytes();
    let to_bytes = t.elapsed();
    let t = Instant::now();
    let back = Manifest::from_bytes(&bytes).unwrap();
    let from_bytes = t.elapsed();
    let t = Instant::now();
    m.digest();
    let digest = t.elapsed();
    assert_eq!(back, m);
    println!(
        "  20,000 entries, {} bytes: to_bytes {to_bytes:.2?}, from_bytes {from_bytes:.2?}, digest {digest:.2?}",
        bytes.len()
    );
}
