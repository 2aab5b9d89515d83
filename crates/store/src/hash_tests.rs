use super::*;
use std::os::unix::fs::PermissionsExt;

pub(crate) fn db() -> rusqlite::Connection {
    let conn = rusqlite::Connection::open_in_memory().unwrap();
    conn.execute_batch(include_str!("schema.sql")).unwrap();
    conn
}

fn later() -> SystemTime {
    SystemTime::now() + RACY_WINDOW + Duration::from_secs(1)
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn write(root: &Path, rel: &str, content: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

fn paths(m: &Manifest) -> Vec<&str> {
    m.entries().iter().map(|e| e.path.as_str()).collect()
}

#[test]
fn hash_file_small_and_large() {
    let dir = tempfile::tempdir().unwrap();
    for len in [
        0usize,
        1,
        1023,
        1024,
        65_537,
        MMAP_THRESHOLD as usize,
        MMAP_THRESHOLD as usize * 3 + 7,
    ] {
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let p = dir.path().join(format!("f{len}"));
        fs::write(&p, &data).unwrap();
        assert_eq!(hash_file(&p).unwrap(), Digest::of_bytes(&data), "len {len}");
    }
    assert!(matches!(
        hash_file(&dir.path().join("nope")),
        Err(StoreError::Io { .. })
    ));
}

#[test]
fn snapshot_nested_folders_symlinks_exec() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "data/raw/a.png", b"aaa");
    write(root, "data/raw/sub/deeper/b.png", b"bb");
    write(root, "data/run.sh", b"#!/bin/sh\n");
    fs::set_permissions(root.join("data/run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir_all(root.join("data/empty")).unwrap();
    std::os::unix::fs::symlink("raw/a.png", root.join("data/link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent", root.join("data/dangling")).unwrap();
    write(root, "labels.csv", b"x,y\n");

    let conn = db();
    let m = snapshot(&conn, root, &s(&["./data/", "labels.csv"])).unwrap();
    assert_eq!(
        paths(&m),
        [
            "data",
            "data/dangling",
            "data/empty",
            "data/link",
            "data/raw",
            "data/raw/a.png",
            "data/raw/sub",
            "data/raw/sub/deeper",
            "data/raw/sub/deeper/b.png",
            "data/run.sh",
            "labels.csv"
        ]
    );
    assert_eq!(
        m.get("data/link"),
        Some(&Node::Symlink {
            target: "raw/a.png".into()
        })
    );
    assert_eq!(
        m.get("data/run.sh"),
        Some(&Node::File {
            digest: Digest::of_bytes(b"#!/bin/sh\n"),
            size: 10,
            executable: true
        })
    );
    assert_eq!(
        m.get("data/raw/a.png"),
        Some(&Node::File {
            digest: Digest::of_bytes(b"aaa"),
            size: 3,
            executable: false
        })
    );
    // Overlapping paths and absolute spellings.
    let m2 = snapshot(&conn, root, &s(&["data", "data/raw"])).unwrap();
    assert_eq!(m2, m.under("data"));
    let abs = root.join("data/raw").to_str().unwrap().to_string();
    let m3 = snapshot(&conn, root, std::slice::from_ref(&abs)).unwrap();
    assert_eq!(m3.entries()[1].path, format!("{abs}/a.png"));

    assert!(
        matches!(snapshot(&conn, root, &s(&["nope"])), Err(StoreError::Missing(p)) if p == "nope")
    );
    assert!(snapshot(&conn, root, &s(&["."])).is_err());
}

#[test]
fn top_level_symlink_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "elsewhere/x.bin", b"x");
    fs::create_dir_all(root.join("data")).unwrap();
    std::os::unix::fs::symlink(root.join("elsewhere"), root.join("data/raw")).unwrap();
    std::os::unix::fs::symlink(root.join("elsewhere/x.bin"), root.join("one.bin")).unwrap();
    let conn = db();
    let m = snapshot(&conn, root, &s(&["data/raw", "one.bin"])).unwrap();
    assert_eq!(paths(&m), ["data/raw", "data/raw/x.bin", "one.bin"]);
    assert!(matches!(m.get("one.bin"), Some(Node::File { size: 1, .. })));
    std::os::unix::fs::symlink(root.join("gone"), root.join("dangling")).unwrap();
    assert!(matches!(
        snapshot(&conn, root, &s(&["dangling"])),
        Err(StoreError::Missing(_))
    ));
}

#[test]
fn non_utf8_name_is_an_error_naming_the_path() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("data")).unwrap();
    let bad = root
        .join("data")
        .join(std::ffi::OsStr::from_bytes(b"bad\xff.png"));
    if fs::write(&bad, b"x").is_err() {
        return; // a filesystem that refuses such names
    }
    let err = snapshot(&db(), root, &s(&["data"]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad") && err.contains("UTF-8"), "{err}");
}

#[test]
fn stat_cache_serves_unchanged_files_and_rehashes_edited_ones() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for i in 0..10 {
        write(
            root,
            &format!("data/f{i}"),
            format!("content {i}").as_bytes(),
        );
    }
    let conn = db();
    let (m1, st1) = snapshot_at(&conn, root, &s(&["data"]), later()).unwrap();
    assert_eq!(
        (st1.files, st1.hashed, st1.from_cache, st1.not_recorded),
        (10, 10, 0, 0)
    );
    let row = statcache::lookup(&conn, "data/f3").unwrap().unwrap();
    assert_eq!(row.digest, Digest::of_bytes(b"content 3"));
    assert_eq!(
        row.stat,
        Stat::from_metadata(&fs::metadata(root.join("data/f3")).unwrap())
    );

    let (m2, st2) = snapshot_at(&conn, root, &s(&["data"]), later()).unwrap();
    assert_eq!(m2, m1);
    assert_eq!((st2.hashed, st2.from_cache), (0, 10));

    // Same size, new content: ctime (and usually mtime) moves, so it is read again.
    std::thread::sleep(Duration::from_millis(20));
    write(root, "data/f3", b"CONTENT 3");
    fs::remove_file(root.join("data/f4")).unwrap();
    let (m3, st3) = snapshot_at(&conn, root, &s(&["data"]), later()).unwrap();
    assert_eq!((st3.hashed, st3.from_cache), (1, 8));
    let ch: Vec<String> = m1.changes(&m3).iter().map(|c| c.to_string()).collect();
    assert_eq!(ch, ["data/f3 changed", "data/f4 removed"]);
    assert_eq!(
        statcache::lookup(&conn, "data/f3").unwrap().unwrap().digest,
        Digest::of_bytes(b"CONTENT 3")
    );
    // The vanished file's row is pruned.
    assert!(statcache::lookup(&conn, "data/f4").unwrap().is_none());

    // A poisoned row with a matching stat is believed: proof that the file was not read.
    let md = fs::metadata(root.join("data/f5")).unwrap();
    statcache::record_known(&conn, "data/f5", &md, &Digest::of_bytes(b"lie")).unwrap();
    let (m4, _) = snapshot_at(&conn, root, &s(&["data"]), later()).unwrap();
    assert!(
        matches!(m4.get("data/f5"), Some(Node::File { digest, .. }) if *digest == Digest::of_bytes(b"lie"))
    );
}

#[test]
fn racy_window_is_respected() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "data/new", b"fresh");
    let conn = db();
    // Just written: hashed, in the manifest, but not recorded.
    let (m, st) = snapshot_with_stats(&conn, root, &s(&["data"])).unwrap();
    assert!(matches!(
        m.get("data/new"),
        Some(Node::File { size: 5, .. })
    ));
    assert_eq!((st.hashed, st.not_recorded), (1, 1));
    assert!(statcache::lookup(&conn, "data/new").unwrap().is_none());
    // An old mtime does not help: ctime is recent.
    let old = SystemTime::now() - Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(root.join("data/new"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let (_, st) = snapshot_with_stats(&conn, root, &s(&["data"])).unwrap();
    assert_eq!((st.hashed, st.not_recorded), (1, 1));
    // Seen from 3 s later, the same file is old enough to record.
    let (_, st) = snapshot_at(&conn, root, &s(&["data"]), later()).unwrap();
    assert_eq!((st.hashed, st.not_recorded), (1, 0));
    assert!(statcache::lookup(&conn, "data/new").unwrap().is_some());
}
