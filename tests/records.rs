//! The run database is an index of the run records kept in the cache: deleted or damaged, it is
//! rebuilt from them, and what was trained is restored, not trained again. `verify` checks the
//! records against the database and `--repair` writes what is missing.

mod common;

use common::{CHAIN, TRAIN_PARAMS, Ws};
use serde_json::Value;

/// `CHAIN` and a stage that reports metrics (a final value and a series) after `eval`.
fn scored_chain() -> Ws {
    let ws = Ws::new(&format!(
        "{CHAIN}
[stages.score]
kind = \"cmd\"
cmd = \"echo $VLMFLOW_STAGE >> ran.log && mkdir -p out/score && cat out/eval.txt > out/score/eval.txt && printf '{{\\\"acc\\\": 0.75, \\\"loss\\\": [1.5, 1.0, 0.5]}}' > out/score/metrics.json\"
needs = [\"eval\"]
outs = [\"out/score\"]
metrics = \"out/score/metrics.json\"
"
    ));
    ws.write("data/raw.txt", "hello shapes\n");
    ws.params("prepare", "seed = 1\n");
    ws.params("train", TRAIN_PARAMS);
    ws.params("eval", "split = \"val\"\n");
    ws.build_ok(&[]).assert_statuses(&[
        ("prepare", "ran"),
        ("train", "ran"),
        ("eval", "ran"),
        ("score", "ran"),
    ]);
    ws
}

const STAGES: [&str; 4] = ["prepare", "train", "eval", "score"];

fn times_ran_all(ws: &Ws) -> Vec<usize> {
    STAGES.iter().map(|s| ws.times_ran(s)).collect()
}

/// What the database says of the runs that ran, without ids or build numbers.
fn ran_runs(ws: &Ws) -> Vec<Value> {
    ws.query(
        "SELECT stage, key, params, artifact, inputs_manifest, log, host, record, \
             (SELECT group_concat(name || '@' || coalesce(step, '-') || '=' || value, ' ') \
                FROM metrics m WHERE m.run_id = r.id) AS metrics, \
             (SELECT group_concat(u.stage || ':' || u.artifact || ':' || p.key, ' ') \
                FROM run_upstreams u JOIN runs p ON p.id = u.producer_run_id WHERE u.run_id = r.id) AS lineage, \
             (SELECT group_concat(path || ':' || digest, ' ') FROM run_inputs i WHERE i.run_id = r.id) AS inputs \
         FROM runs r WHERE status = 'ran' ORDER BY stage, key",
    )
}

fn remove_db(ws: &Ws) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(ws.path(&format!("cache/vlmflow.db{suffix}")));
    }
}

#[test]
fn a_deleted_database_is_rebuilt_from_the_run_records_and_nothing_trains_again() {
    let ws = scored_chain();
    // A second model in the run-cache: reverting to it must restore after the database is gone.
    ws.build_ok(&["--set", "train.epochs=5"]);
    ws.build_ok(&[]);
    let before = ran_runs(&ws);
    assert_eq!(before.len(), 6, "{before:#?}");
    let outs: Vec<String> = ["out/model.txt", "out/eval.txt", "out/score/metrics.json"]
        .iter()
        .map(|p| ws.read(p))
        .collect();
    let ran = times_ran_all(&ws);

    remove_db(&ws);
    let log = ws.run(&["log", "--json"]);
    log.assert_code(0);
    assert!(
        log.stderr.contains(
            "note: cache/vlmflow.db was missing: rebuilt it from the run records in cache/runs/ (6 runs"
        ),
        "the rebuild is announced\n{log}"
    );
    assert_eq!(ran_runs(&ws), before, "every run came back as it was");

    let build = ws.build_ok(&[]);
    for stage in STAGES {
        assert_eq!(build.status_of(stage), "restored", "{build}");
    }
    assert!(!build.stderr.contains("rebuilt"), "once is enough\n{build}");
    let again: Vec<String> = ["out/model.txt", "out/eval.txt", "out/score/metrics.json"]
        .iter()
        .map(|p| ws.read(p))
        .collect();
    assert_eq!(again, outs);
    ws.build_ok(&["--set", "train.epochs=5"]).assert_statuses(&[
        ("prepare", "fresh"),
        ("train", "restored"),
        ("eval", "restored"),
        ("score", "fresh"),
    ]);
    assert_eq!(times_ran_all(&ws), ran, "nothing trained again");

    let tree: Value = serde_json::from_str(&ws.run(&["provenance", "train", "--json"]).stdout)
        .expect("provenance --json");
    let text = tree.to_string();
    assert!(
        text.contains("\"epochs\":5") && text.contains("data/raw.txt"),
        "the lineage reaches back to the params and the raw data: {tree:#}"
    );
    ws.run(&["verify"]).assert_code(0);
}

#[test]
fn a_database_overwritten_with_garbage_is_kept_aside_and_rebuilt() {
    let ws = scored_chain();
    let ran = times_ran_all(&ws);
    ws.write("cache/vlmflow.db", "this is not a database\n");
    let build = ws.build_ok(&[]);
    assert!(
        build
            .stderr
            .contains("cache/vlmflow.db is not a SQLite database: rebuilt it"),
        "{build}"
    );
    assert!(
        build.stderr.contains("the old files are kept in"),
        "{build}"
    );
    for stage in STAGES {
        assert_eq!(build.status_of(stage), "restored", "{build}");
    }
    assert_eq!(times_ran_all(&ws), ran);
    let kept: Vec<String> = ws
        .files_under("cache/quarantine")
        .iter()
        .filter(|p| p.ends_with("vlmflow.db"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert_eq!(
        kept,
        vec!["this is not a database\n"],
        "the damaged file is kept"
    );
}

#[test]
fn verify_writes_missing_records_and_they_are_enough_to_rebuild() {
    let ws = scored_chain();
    std::fs::remove_dir_all(ws.path("cache/runs")).unwrap();
    let found = ws.run(&["verify"]);
    found.assert_code(1);
    assert_eq!(
        found.stdout.matches("has no intact record").count(),
        4,
        "{found}"
    );
    let repaired = ws.run(&["verify", "--repair"]);
    repaired.assert_code(1);
    assert_eq!(
        repaired
            .stdout
            .matches("repaired: wrote the record of run")
            .count(),
        4,
        "{repaired}"
    );
    ws.run(&["verify"]).assert_code(0);

    let ran = times_ran_all(&ws);
    remove_db(&ws);
    let build = ws.build_ok(&[]);
    assert!(build.stderr.contains("(4 runs"), "{build}");
    assert_eq!(times_ran_all(&ws), ran, "{build}");
}

#[test]
fn a_database_that_fails_its_integrity_check_is_rebuilt_by_verify_repair() {
    let ws = scored_chain();
    let ran = times_ran_all(&ws);
    let db_path = ws.path("cache/vlmflow.db");
    // Everything into the main file, then damage its pages past the header.
    vlmflow_store::db::Db::open(&db_path)
        .unwrap()
        .conn
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    let mut bytes = std::fs::read(&db_path).unwrap();
    assert!(bytes.len() > 8192, "{} bytes", bytes.len());
    for b in &mut bytes[4096 + 64..] {
        *b ^= 0x5a;
    }
    std::fs::write(&db_path, &bytes).unwrap();

    let found = ws.run(&["verify"]);
    found.assert_code(1);
    assert!(found.stdout.contains("database:"), "{found}");
    let repaired = ws.run(&["verify", "--repair"]);
    repaired.assert_code(1);
    assert!(
        repaired.stdout.contains(
            "cache/vlmflow.db failed its integrity check: rebuilt it from the run records"
        ),
        "{repaired}"
    );
    ws.run(&["verify"]).assert_code(0);
    let build = ws.build_ok(&[]);
    for stage in STAGES {
        assert_eq!(build.status_of(stage), "restored", "{build}");
    }
    assert_eq!(times_ran_all(&ws), ran);
}

#[test]
fn gc_keeps_every_record_and_a_swept_artifact_comes_back_as_a_rerun() {
    let ws = scored_chain();
    ws.build_ok(&["--set", "train.epochs=5"]);
    // Only what the workspace holds now is kept: the epochs=3 model is swept.
    ws.run(&["gc", "--keep-last", "0"]).assert_code(0);
    ws.run(&["verify"]).assert_code(0);

    remove_db(&ws);
    let rebuilt = ws.run(&["log"]);
    assert!(
        rebuilt.stderr.contains("(6 runs")
            && rebuilt
                .stderr
                .contains("1 recorded artifact(s) are no longer in the cache"),
        "{rebuilt}"
    );
    let ran = ws.times_ran("train");
    ws.build_ok(&[]);
    assert_eq!(
        ws.times_ran("train"),
        ran + 1,
        "the swept model is trained again"
    );
}

#[test]
fn a_run_killed_after_its_record_and_before_its_row_is_restored_not_run_again() {
    let ws = scored_chain();
    let ran = times_ran_all(&ws);
    // The database as a process killed between the record and the row leaves it: train's run is
    // still `running` and names nothing.
    let db = vlmflow_store::db::Db::open(&ws.path("cache/vlmflow.db")).unwrap();
    db.conn
        .execute_batch(
            "DELETE FROM stage_state WHERE stage = 'train';
             UPDATE runs SET status = 'running', artifact = NULL, record = NULL, finished_at = NULL
             WHERE stage = 'train';",
        )
        .unwrap();
    drop(db);
    let build = ws.build_ok(&[]);
    assert_eq!(build.status_of("train"), "restored", "{build}");
    assert_eq!(times_ran_all(&ws), ran, "{build}");
    let train = ws.log(Some("train"));
    let statuses: Vec<&str> = train
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["restored", "ran", "interrupted"], "{train:#?}");
    ws.run(&["verify"]).assert_code(0);
}
