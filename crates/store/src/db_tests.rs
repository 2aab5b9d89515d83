//! The run database: migrations, runs and builds, queries.

use super::*;

#[test]
fn migrates_once_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vlmflow.db");
    let db = Db::open(&path).unwrap();
    let v: i64 = db
        .conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
    drop(db);
    let db = Db::open(&path).unwrap();
    let fk: i64 = db
        .conn
        .pragma_query_value(None, "foreign_keys", |r| r.get(0))
        .unwrap();
    assert_eq!(fk, 1);
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vlmflow.db");
    drop(Db::open(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(conn);
    let err = Db::open(&path).err().unwrap().to_string();
    assert!(err.contains("upgrade vlmflow"), "{err}");
}

#[test]
fn run_cache_ignores_failed_and_swept_runs() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("vlmflow.db")).unwrap();
    let build = db.begin_build(&["vlmflow".into()], "h").unwrap();
    let new = |key| NewRun {
        build_id: build,
        stage: "s",
        kind: "cmd",
        impl_version: "1",
        key,
        key_material: "{}",
        params: "{}",
        overrides: "{}",
        host: "h",
        device: "cpu",
    };
    let failed = db.insert_run(&new("k")).unwrap();
    db.fail_run(failed, RunStatus::Failed, "exit 1", None)
        .unwrap();
    assert!(db.cached_run("k").unwrap().is_none());

    let ok = db.insert_run(&new("k")).unwrap();
    let artifact = Digest::of_bytes(b"a");
    let c = Completion {
        run_id: ok,
        stage: "s",
        artifact: &artifact,
        files: 1,
        bytes: 1,
        log: None,
        inputs_manifest: None,
        inputs: &[],
        upstreams: &[],
        record: None,
    };
    db.complete_run(&c, RunStatus::Ran, None).unwrap();
    assert_eq!(db.cached_run("k").unwrap().unwrap().id, ok);
    assert_eq!(db.current_run("s").unwrap().unwrap().id, ok);

    db.conn
        .execute("UPDATE artifacts SET swept_at = 1", [])
        .unwrap();
    assert!(db.cached_run("k").unwrap().is_none());
}
