//! A database rebuilt from the run records answers the run-cache, metrics and lineage as the lost
//! one did; importing twice adds nothing; a record of another format is refused.

use super::*;
use crate::db::{Completion, NewRun};
use crate::run_record::RunRecord;
use crate::run_status::RunStatus;
use crate::{Entry, Manifest, Node};

/// Records one successful run of `stage` with key `key`, whose artifact holds `content`; returns
/// (run id, artifact).
fn ran(
    db: &Db,
    cas: &Cas,
    stage: &str,
    key: &str,
    content: &[u8],
    upstreams: &[(String, Digest, Option<i64>)],
) -> (i64, Digest) {
    let build = db.begin_build(&["vlmflow".into()], "h").unwrap();
    let id = db
        .insert_run(&NewRun {
            build_id: build,
            stage,
            kind: "cmd",
            impl_version: "1",
            key,
            key_material: "{}",
            params: r#"{"lr":0.1}"#,
            overrides: "{}",
            host: "h",
            device: "cpu",
        })
        .unwrap();
    db.insert_metrics(
        id,
        &[("loss".into(), Some(0), 2.5), ("acc".into(), None, 0.75)],
    )
    .unwrap();
    let object = cas.put_bytes(content).unwrap();
    let manifest = Manifest::new(vec![Entry {
        path: "out.txt".into(),
        node: Node::File {
            digest: object,
            size: content.len() as u64,
            executable: false,
        },
    }]);
    let artifact = cas.put_manifest(&manifest).unwrap();
    let inputs = vec![("data.txt".to_string(), Digest::of_bytes(b"data"))];
    let mut c = Completion {
        run_id: id,
        stage,
        artifact: &artifact,
        files: 1,
        bytes: content.len() as u64,
        log: None,
        inputs_manifest: None,
        inputs: &inputs,
        upstreams,
        record: None,
    };
    let record = cas.keep_record(&db.record_of(&c).unwrap()).unwrap();
    c.record = Some(&record);
    db.complete_run(&c, RunStatus::Ran, None).unwrap();
    (id, artifact)
}

#[test]
fn a_rebuilt_database_answers_as_the_lost_one_did() {
    let dir = tempfile::tempdir().unwrap();
    let cas = Cas::open(&dir.path().join("cache")).unwrap();
    let lost = Db::open(&dir.path().join("lost.db")).unwrap();
    let (prepare, prepared) = ran(&lost, &cas, "prepare", &"a".repeat(64), b"p", &[]);
    ran(
        &lost,
        &cas,
        "train",
        &"b".repeat(64),
        b"t",
        &[("prepare".into(), prepared, Some(prepare))],
    );

    let db = Db::open(&dir.path().join("new.db")).unwrap();
    let refs = cas.record_refs().unwrap();
    assert_eq!(refs.len(), 2);
    let imported = db.import_records(&cas, &refs).unwrap();
    assert_eq!((imported.runs, imported.artifacts_gone), (2, 0));
    assert!(imported.unreadable.is_empty());

    let train = db
        .cached_run(&"b".repeat(64))
        .unwrap()
        .expect("in the run-cache");
    assert_eq!(train.params, r#"{"lr":0.1}"#);
    assert_eq!(
        db.metrics_of(train.id).unwrap(),
        vec![("loss".into(), Some(0), 2.5), ("acc".into(), None, 0.75)]
    );
    assert_eq!(
        db.inputs_of(train.id).unwrap(),
        vec![("data.txt".into(), Digest::of_bytes(b"data").to_hex())]
    );
    let prepare_now = db.cached_run(&"a".repeat(64)).unwrap().unwrap();
    assert_eq!(
        db.upstreams_of(train.id).unwrap(),
        vec![("prepare".into(), prepared.to_hex(), Some(prepare_now.id))],
        "the lineage edge names the producer's new run id"
    );

    let again = db.import_records(&cas, &refs).unwrap();
    assert_eq!(again.runs, 0, "importing twice adds nothing");
}

#[test]
fn an_artifact_the_cache_lost_is_imported_as_swept() {
    let dir = tempfile::tempdir().unwrap();
    let cas = Cas::open(&dir.path().join("cache")).unwrap();
    let lost = Db::open(&dir.path().join("lost.db")).unwrap();
    ran(&lost, &cas, "s", &"c".repeat(64), b"gone", &[]);
    let object = Digest::of_bytes(b"gone");
    std::fs::remove_file(
        dir.path()
            .join("cache/objects")
            .join(&object.to_hex()[..2])
            .join(&object.to_hex()[2..]),
    )
    .unwrap();
    let db = Db::open(&dir.path().join("new.db")).unwrap();
    let imported = db
        .import_records(&cas, &cas.record_refs().unwrap())
        .unwrap();
    assert_eq!((imported.runs, imported.artifacts_gone), (1, 1));
    assert!(
        db.cached_run(&"c".repeat(64)).unwrap().is_none(),
        "the stage runs again"
    );
}

#[test]
fn a_record_of_another_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cas = Cas::open(&dir.path().join("cache")).unwrap();
    let db = Db::open(&dir.path().join("v.db")).unwrap();
    ran(&db, &cas, "s", &"d".repeat(64), b"x", &[]);
    let refs = cas.record_refs().unwrap();
    let mut record = cas.read_record(&refs[0].record).unwrap();
    record.format = "vlmflow-run-record/9".into();
    let err = RunRecord::from_bytes(&record.to_bytes())
        .unwrap_err()
        .to_string();
    assert!(err.contains("upgrade vlmflow"), "{err}");
}
