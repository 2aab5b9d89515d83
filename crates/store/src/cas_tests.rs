use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

use super::*;
use crate::hash::{snapshot, snapshot_with_stats};
use crate::object_store::local::FSYNC_EACH_MAX;

struct Ws {
    _dir: tempfile::TempDir,
    root: PathBuf,
    cas: Cas,
    /// The folder under `cas`, for looking at its files.
    objects: LocalObjects,
    conn: rusqlite::Connection,
}

impl Ws {
    fn held(&self, digest: &Digest) -> bool {
        self.objects.path(digest).is_file()
    }
}

fn ws() -> Ws {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ws");
    fs::create_dir_all(&root).unwrap();
    let cas = Cas::open(&root.join("cache")).unwrap();
    let objects = LocalObjects::open(&root.join("cache/objects"), &root.join("cache/tmp")).unwrap();
    let conn = rusqlite::Connection::open_in_memory().unwrap();
    conn.execute_batch(include_str!("schema.sql")).unwrap();
    Ws {
        _dir: dir,
        root,
        cas,
        objects,
        conn,
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn write(root: &Path, rel: &str, content: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

/// An output tree with nesting, an executable, a symlink, an empty folder and duplicate content.
fn make_outputs(root: &Path) {
    write(root, "models/clip/weights.bin", &[1u8; 100_000]);
    write(root, "models/clip/config.json", b"{}");
    write(root, "models/clip/copy.json", b"{}");
    write(root, "models/clip/sub/deep/x.txt", b"x");
    write(root, "models/clip/run.sh", b"#!/bin/sh\necho hi\n");
    fs::set_permissions(
        root.join("models/clip/run.sh"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    fs::create_dir_all(root.join("models/clip/empty")).unwrap();
    symlink("config.json", root.join("models/clip/latest")).unwrap();
    write(root, "metrics.json", b"{\"acc\": 0.5}");
}

#[test]
fn bytes_round_trip_read_only_and_corruption() {
    let w = ws();
    let d = w.cas.put_bytes(b"hello").unwrap();
    assert_eq!(d, Digest::of_bytes(b"hello"));
    assert!(w.held(&d));
    assert_eq!(w.cas.put_bytes(b"hello").unwrap(), d);
    assert_eq!(w.cas.read_bytes(&d).unwrap(), b"hello");
    let p = w.objects.path(&d);
    assert_eq!(mode(&p), 0o444);
    let hex = d.to_hex();
    assert!(p.ends_with(format!("objects/{}/{}", &hex[..2], &hex[2..])));

    // Damage it: reading notices; put_bytes repairs a wrong-size object.
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&p, b"HELLO").unwrap();
    assert!(matches!(w.cas.read_bytes(&d), Err(StoreError::CorruptObject(x)) if x == d));
    fs::write(&p, b"hell").unwrap();
    w.cas.put_bytes(b"hello").unwrap();
    assert_eq!(w.cas.read_bytes(&d).unwrap(), b"hello");

    let missing = Digest::of_bytes(b"never stored");
    assert!(matches!(
        w.cas.read_bytes(&missing),
        Err(StoreError::CorruptObject(_))
    ));
    assert!(!w.held(&missing));
    // No leftovers in tmp.
    assert_eq!(fs::read_dir(w.root.join("cache/tmp")).unwrap().count(), 0);
}

#[test]
fn manifests_are_objects() {
    let w = ws();
    make_outputs(&w.root);
    let m = snapshot(&w.conn, &w.root, &s(&["models/clip"])).unwrap();
    let d = w.cas.put_manifest(&m).unwrap();
    assert_eq!(d, m.digest());
    assert_eq!(w.cas.read_manifest(&d).unwrap(), m);
    let not = w.cas.put_bytes(b"not a manifest").unwrap();
    assert!(matches!(
        w.cas.read_manifest(&not),
        Err(StoreError::Other(_))
    ));
}

#[test]
fn ingest_materialize_round_trip() {
    let w = ws();
    make_outputs(&w.root);
    let outs = s(&["models/clip", "metrics.json"]);
    let before = snapshot(&w.conn, &w.root, &outs).unwrap();

    let m = w.cas.ingest(&w.conn, &w.root, &outs).unwrap();
    assert_eq!(m, before);
    assert!(!w.root.join("models/clip").exists());
    assert!(!w.root.join("metrics.json").exists());
    assert!(w.root.join("models").is_dir(), "only the outs are taken");
    assert_eq!(w.cas.read_manifest(&m.digest()).unwrap(), m);
    for d in m.objects() {
        assert_eq!(mode(&w.objects.path(&d)), 0o444);
    }

    w.cas.materialize(&w.conn, &m, &w.root, &outs).unwrap();
    let (after, stats) = snapshot_with_stats(&w.conn, &w.root, &outs).unwrap();
    assert_eq!(after.digest(), m.digest());
    assert_eq!(
        (stats.hashed, stats.from_cache),
        (0, 6),
        "placed files are answered by the stat cache"
    );
    assert_eq!(mode(&w.root.join("models/clip/config.json")), 0o444);
    assert_eq!(mode(&w.root.join("models/clip/run.sh")), 0o555);
    assert_eq!(mode(&w.root.join("metrics.json")), 0o444);
    assert_eq!(
        fs::read_link(w.root.join("models/clip/latest")).unwrap(),
        Path::new("config.json")
    );
    assert!(w.root.join("models/clip/empty").is_dir());
    // SAFETY: geteuid has no preconditions. (Root ignores permissions.)
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            fs::write(w.root.join("models/clip/config.json"), b"x").is_err(),
            "read-only"
        );
    }
    // Folders we created stay writable.
    fs::write(w.root.join("models/clip/sub/new.txt"), b"n").unwrap();

    // Materializing again replaces what is there, extra files included.
    w.cas.materialize(&w.conn, &m, &w.root, &outs).unwrap();
    assert!(!w.root.join("models/clip/sub/new.txt").exists());
    let (again, stats) = snapshot_with_stats(&w.conn, &w.root, &outs).unwrap();
    assert_eq!(again, m);
    assert_eq!(stats.hashed, 0);
}

#[test]
fn ingest_from_a_temp_dir_then_materialize_in_the_workspace() {
    // How the engine runs a stage: the command writes its outs under a temp dir.
    let w = ws();
    let tmp = w.cas.temp_dir().unwrap();
    make_outputs(&tmp);
    let outs = s(&["./models/clip/", "metrics.json"]);
    let m = w.cas.ingest(&w.conn, &tmp, &outs).unwrap();
    assert!(m.get("models/clip/run.sh").is_some());
    assert!(!tmp.join("models/clip").exists());
    w.cas.materialize(&w.conn, &m, &w.root, &outs).unwrap();
    let (now, st) = snapshot_with_stats(&w.conn, &w.root, &outs).unwrap();
    assert_eq!(now.digest(), m.digest());
    assert_eq!(st.hashed, 0);
    assert_eq!(m.under("./models/clip"), now.under("models/clip/"));
    w.cas.clean_temp().unwrap();
    assert!(!tmp.exists());
}

#[test]
fn materialize_replaces_read_only_trees_and_removes_absent_outs() {
    let w = ws();
    write(&w.root, "out/a.txt", b"new a");
    let m = w.cas.ingest(&w.conn, &w.root, &s(&["out"])).unwrap();
    // Something else at the out: read-only files in a read-only folder, a stray file.
    write(&w.root, "out/locked/b.txt", b"old");
    write(&w.root, "out/a.txt", b"old a");
    fs::set_permissions(
        w.root.join("out/locked/b.txt"),
        fs::Permissions::from_mode(0o444),
    )
    .unwrap();
    fs::set_permissions(w.root.join("out/locked"), fs::Permissions::from_mode(0o555)).unwrap();
    write(&w.root, "gone.txt", b"stale");
    w.cas
        .materialize(&w.conn, &m, &w.root, &s(&["out", "gone.txt"]))
        .unwrap();
    assert_eq!(fs::read(w.root.join("out/a.txt")).unwrap(), b"new a");
    assert!(!w.root.join("out/locked").exists());
    assert!(!w.root.join("gone.txt").exists());
    // An out that is a file replaced by one that is a folder, and back.
    let f = {
        write(&w.root, "x", b"file");
        w.cas.ingest(&w.conn, &w.root, &s(&["x"])).unwrap()
    };
    write(&w.root, "x/inner", b"dir");
    w.cas.materialize(&w.conn, &f, &w.root, &s(&["x"])).unwrap();
    assert_eq!(fs::read(w.root.join("x")).unwrap(), b"file");
}

#[test]
fn materialize_reports_missing_objects() {
    let w = ws();
    write(&w.root, "out/a.txt", b"a");
    let m = w.cas.ingest(&w.conn, &w.root, &s(&["out"])).unwrap();
    let d = m.objects().next().unwrap();
    fs::remove_file(w.objects.path(&d)).unwrap();
    let err = w
        .cas
        .materialize(&w.conn, &m, &w.root, &s(&["out"]))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::CorruptObject(x) if x == d),
        "{err}"
    );
}

#[test]
fn materialize_quarantines_an_altered_object_and_leaves_no_out() {
    let w = ws();
    write(&w.root, "out/a.txt", b"good content");
    write(&w.root, "out/b.txt", b"other");
    let m = w.cas.ingest(&w.conn, &w.root, &s(&["out"])).unwrap();
    let a = m.under("out/a.txt").objects().next().unwrap();
    // Same size, one byte flipped: only the content says so.
    let object = w.objects.path(&a);
    fs::set_permissions(&object, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&object, b"good contenT").unwrap();
    let err = w
        .cas
        .materialize(&w.conn, &m, &w.root, &s(&["out"]))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::CorruptObject(x) if x == a),
        "{err}"
    );
    assert!(
        !w.root.join("out").exists(),
        "nothing damaged is left in the workspace"
    );
    assert!(!w.held(&a), "the object left the store");
    let kept = w.root.join("cache/quarantine").join(a.to_hex());
    assert_eq!(fs::read(kept).unwrap(), b"good contenT");
}

#[test]
fn ingest_refuses_symlinked_outs_and_leaves_everything() {
    let w = ws();
    write(&w.root, "real/a.txt", b"a");
    symlink("real", w.root.join("out")).unwrap();
    let err = w
        .cas
        .ingest(&w.conn, &w.root, &s(&["real", "out"]))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "out out is a symlink; outs must be real files or folders"
    );
    assert!(w.root.join("real/a.txt").is_file());
    assert!(matches!(
        w.cas.ingest(&w.conn, &w.root, &s(&["nope"])),
        Err(StoreError::Missing(_))
    ));
    assert!(
        w.cas
            .ingest(&w.conn, &w.root, &s(&["real", "real/a.txt"]))
            .is_err(),
        "overlap"
    );
    assert!(w.root.join("real/a.txt").is_file());
}

#[test]
fn ingest_copies_hard_linked_files_and_drops_known_objects() {
    let w = ws();
    write(&w.root, "data/shared.txt", b"shared");
    write(&w.root, "out/known.txt", b"known");
    fs::hard_link(
        w.root.join("data/shared.txt"),
        w.root.join("out/shared.txt"),
    )
    .unwrap();
    let known = w.cas.put_bytes(b"known").unwrap();
    let known_ino = fs::metadata(w.objects.path(&known)).unwrap().ino();
    w.cas.ingest(&w.conn, &w.root, &s(&["out"])).unwrap();
    assert!(!w.root.join("out").exists());
    // The other name of the hard-linked file is untouched and still writable.
    assert_eq!(mode(&w.root.join("data/shared.txt")) & 0o200, 0o200);
    assert_eq!(
        fs::metadata(w.root.join("data/shared.txt"))
            .unwrap()
            .nlink(),
        1
    );
    let obj = w.objects.path(&Digest::of_bytes(b"shared"));
    assert_eq!(fs::read(obj).unwrap(), b"shared");
    assert_eq!(
        fs::metadata(w.objects.path(&known)).unwrap().ino(),
        known_ino
    );
}

#[test]
fn ingest_many_files_uses_syncfs_path() {
    let w = ws();
    for i in 0..(FSYNC_EACH_MAX + 10) {
        write(
            &w.root,
            &format!("out/d{}/f{i}", i % 7),
            format!("{i}").as_bytes(),
        );
    }
    let before = snapshot(&w.conn, &w.root, &s(&["out"])).unwrap();
    let m = w.cas.ingest(&w.conn, &w.root, &s(&["out"])).unwrap();
    assert_eq!(m, before);
    w.cas
        .materialize(&w.conn, &m, &w.root, &s(&["out"]))
        .unwrap();
    assert_eq!(snapshot(&w.conn, &w.root, &s(&["out"])).unwrap(), m);
}

#[test]
fn temp_dirs_and_clean_temp() {
    let w = ws();
    let a = w.cas.temp_dir().unwrap();
    let b = w.cas.temp_dir().unwrap();
    assert_ne!(a, b);
    assert!(a.starts_with(w.root.join("cache/tmp")) && a.is_dir());
    write(&a, "ro/file", b"x");
    fs::set_permissions(a.join("ro/file"), fs::Permissions::from_mode(0o444)).unwrap();
    fs::set_permissions(a.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
    fs::write(w.root.join("cache/tmp/stray"), b"x").unwrap();
    fs::set_permissions(
        w.root.join("cache/tmp/stray"),
        fs::Permissions::from_mode(0o444),
    )
    .unwrap();
    w.cas.clean_temp().unwrap();
    assert_eq!(fs::read_dir(w.root.join("cache/tmp")).unwrap().count(), 0);
}

#[test]
fn sweep_keeps_live_objects() {
    let w = ws();
    let keep = w.cas.put_bytes(b"keep me").unwrap();
    let drop1 = w.cas.put_bytes(b"drop").unwrap();
    let drop2 = w.cas.put_bytes(b"drop too!").unwrap();
    fs::write(w.root.join("cache/objects/not-an-object"), b"?").unwrap();
    let live: HashSet<Digest> = [keep].into();
    let dry = w.cas.sweep(&live, true).unwrap();
    assert_eq!(
        dry,
        Sweep {
            objects: 2,
            bytes: 4 + 9
        }
    );
    assert!(w.held(&drop1) && w.held(&drop2));
    let done = w.cas.sweep(&live, false).unwrap();
    assert_eq!(done, dry);
    assert!(w.held(&keep));
    assert!(!w.held(&drop1) && !w.held(&drop2));
    assert!(w.root.join("cache/objects/not-an-object").exists());
    assert_eq!(w.cas.sweep(&live, false).unwrap(), Sweep::default());
}

/// Objects in a map: a store that can neither move nor link, as a remote one cannot.
#[derive(Default)]
struct MemoryObjects(std::sync::Mutex<std::collections::HashMap<Digest, Vec<u8>>>);

impl ObjectStore for MemoryObjects {
    fn size(&self, digest: &Digest) -> Result<Option<u64>> {
        Ok(self.0.lock().unwrap().get(digest).map(|b| b.len() as u64))
    }
    fn put_bytes(&self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        self.0.lock().unwrap().insert(*digest, bytes.to_vec());
        Ok(())
    }
    fn put_files(&self, files: &[crate::object_store::PutFile]) -> Result<()> {
        for f in files {
            let bytes = fs::read(&f.path).map_err(io_err(&f.path))?;
            self.put_bytes(&f.digest, &bytes)?;
        }
        Ok(())
    }
    fn get_bytes(&self, digest: &Digest) -> Result<Option<Vec<u8>>> {
        Ok(self.0.lock().unwrap().get(digest).cloned())
    }
    fn open(&self, digest: &Digest) -> Result<Option<Box<dyn std::io::Read + Send>>> {
        Ok(self
            .get_bytes(digest)?
            .map(|b| Box::new(std::io::Cursor::new(b)) as Box<dyn std::io::Read + Send>))
    }
    fn get_files(&self, files: &[crate::object_store::GetFile]) -> Result<()> {
        for f in files {
            let bytes = self
                .get_bytes(&f.digest)?
                .ok_or(StoreError::CorruptObject(f.digest))?;
            fs::write(&f.path, bytes).map_err(io_err(&f.path))?;
            let mode = if f.executable { 0o555 } else { 0o444 };
            fs::set_permissions(&f.path, fs::Permissions::from_mode(mode))
                .map_err(io_err(&f.path))?;
        }
        Ok(())
    }
    fn list(&self) -> Result<Vec<(Digest, u64)>> {
        let map = self.0.lock().unwrap();
        Ok(map.iter().map(|(d, b)| (*d, b.len() as u64)).collect())
    }
    fn delete(&self, digest: &Digest) -> Result<bool> {
        Ok(self.0.lock().unwrap().remove(digest).is_some())
    }
    fn content_digest(&self, digest: &Digest) -> Result<Option<Digest>> {
        Ok(self.get_bytes(digest)?.map(|b| Digest::of_bytes(&b)))
    }
    fn quarantine(&self, digest: &Digest) -> Result<Option<std::path::PathBuf>> {
        self.delete(digest).map(|_| None)
    }
}

#[test]
fn another_object_store_is_a_drop_in() {
    let w = ws();
    let cas = Cas::with_store(&w.root.join("cache"), Box::<MemoryObjects>::default()).unwrap();
    make_outputs(&w.root);
    let outs = s(&["models/clip", "metrics.json"]);
    let before = snapshot(&w.conn, &w.root, &outs).unwrap();
    let m = cas.ingest(&w.conn, &w.root, &outs).unwrap();
    assert_eq!(m, before);
    assert!(!w.root.join("models/clip").exists());
    assert_eq!(cas.read_manifest(&m.digest()).unwrap(), m);
    assert!(m.objects().all(|d| !w.held(&d)), "nothing in the folder");

    cas.materialize(&w.conn, &m, &w.root, &outs).unwrap();
    let (after, stats) = snapshot_with_stats(&w.conn, &w.root, &outs).unwrap();
    assert_eq!((after, stats.hashed), (m.clone(), 0));
    assert_eq!(mode(&w.root.join("models/clip/run.sh")), 0o555);

    let live: HashSet<Digest> = m.objects().chain([m.digest()]).collect();
    let stray = cas.put_bytes(b"stray").unwrap();
    assert_eq!(
        cas.sweep(&live, false).unwrap(),
        Sweep {
            objects: 1,
            bytes: 5
        }
    );
    assert!(matches!(
        cas.read_bytes(&stray),
        Err(StoreError::CorruptObject(_))
    ));
    cas.materialize(&w.conn, &m, &w.root, &outs).unwrap();
}
