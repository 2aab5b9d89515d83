//! What the provenance database answers: `provenance`, `metrics`, `params diff`, `log`, `query`
//! and `dag`.

mod common;

use serde_json::{Value, json};

use common::{TRAIN_PARAMS, Ws, built_chain};

fn provenance(ws: &Ws, what: &str) -> Value {
    let run = ws.run(&["provenance", what, "--json"]);
    run.assert_code(0);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e})\n{run}"))
}

fn is_digest(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()))
}

/// eval ← train ← prepare ← data/raw.txt, as a lineage tree.
fn assert_chain_lineage(tree: &Value, train_lr: f64) {
    assert_eq!(tree["stage"], "eval", "{tree:#}");
    assert!(is_digest(&tree["artifact"]), "{tree:#}");
    assert_eq!(tree["params"], json!({"split": "val"}), "{tree:#}");
    let ups = tree["upstream"].as_array().expect("upstream list");
    assert_eq!(ups.len(), 1, "{tree:#}");
    let train = &ups[0];
    assert_eq!(train["stage"], "train", "{tree:#}");
    assert_eq!(train["status"], "ran", "{tree:#}");
    assert_eq!(
        train["params"],
        json!({"lr": train_lr, "epochs": 3}),
        "{tree:#}"
    );
    let ups = train["upstream"].as_array().expect("upstream list");
    assert_eq!(ups.len(), 1, "{tree:#}");
    let prepare = &ups[0];
    assert_eq!(prepare["stage"], "prepare", "{tree:#}");
    assert_eq!(prepare["params"], json!({"seed": 1}), "{tree:#}");
    let inputs = prepare["inputs"].as_array().expect("inputs");
    assert_eq!(inputs.len(), 1, "{tree:#}");
    assert_eq!(inputs[0][0], "data/raw.txt", "{tree:#}");
    assert!(is_digest(&inputs[0][1]), "{tree:#}");
    assert!(
        prepare["upstream"].as_array().is_some_and(Vec::is_empty),
        "{tree:#}"
    );
}

#[test]
fn provenance_of_an_out_lists_upstream_runs_params_and_input_digests() {
    let ws = built_chain();
    let by_path = provenance(&ws, "out/eval.txt");
    assert_chain_lineage(&by_path, 0.001);

    // The recorded input digest is the one in the database.
    let digest = ws.query("SELECT digest FROM run_inputs WHERE path = 'data/raw.txt'");
    assert_eq!(
        by_path["upstream"][0]["upstream"][0]["inputs"][0][1],
        digest[0]["digest"]
    );
    // The artifact is the one the eval run recorded.
    let artifact = ws.query("SELECT artifact FROM runs WHERE stage = 'eval'");
    assert_eq!(by_path["artifact"], artifact[0]["artifact"]);

    // By stage name, by run id, by artifact digest: the same lineage.
    assert_eq!(provenance(&ws, "eval"), by_path);
    let run_id = by_path["run"].as_i64().unwrap().to_string();
    assert_eq!(provenance(&ws, &run_id), by_path);
    let digest_prefix = by_path["artifact"].as_str().unwrap()[..12].to_string();
    assert_eq!(provenance(&ws, &digest_prefix), by_path);

    // The tree in words.
    let text = ws.run(&["provenance", "out/model.txt"]);
    text.assert_code(0);
    assert!(text.stdout.contains("train"), "{text}");
    assert!(text.stdout.contains("prepare"), "{text}");
    assert!(text.stdout.contains("data/raw.txt"), "{text}");
    assert!(text.stdout.contains(r#""lr":0.001"#), "{text}");

    let nothing = ws.run(&["provenance", "no/such/thing"]);
    nothing.assert_code(2);
}

#[test]
fn provenance_works_through_a_restore() {
    let ws = built_chain();
    let first_train = ws.log(Some("train"))[0]["run"].as_i64().unwrap();
    ws.params("train", "lr = 0.002\nepochs = 3\n");
    ws.build_ok(&[]);
    let second = provenance(&ws, "out/eval.txt");
    assert_chain_lineage(&second, 0.002);

    ws.params("train", TRAIN_PARAMS);
    ws.build_ok(&[]).assert_statuses(&[
        ("prepare", "fresh"),
        ("train", "restored"),
        ("eval", "restored"),
    ]);
    let tree = provenance(&ws, "out/eval.txt");
    assert_chain_lineage(&tree, 0.001);
    assert!(
        tree["restored_by"].is_i64(),
        "reached through the restore: {tree:#}"
    );
    assert_eq!(tree["upstream"][0]["run"], first_train, "{tree:#}");
    let train = provenance(&ws, "out/model.txt");
    assert_eq!(train["run"], first_train, "{train:#}");
    assert_eq!(train["params"]["lr"], 0.001);
}

#[test]
fn provenance_records_set_overrides() {
    let ws = built_chain();
    ws.build_ok(&["--set", "train.epochs=5"]);
    let tree = provenance(&ws, "train");
    assert_eq!(tree["params"]["epochs"], 5, "{tree:#}");
    assert_eq!(tree["overrides"], json!({"epochs": 5}), "{tree:#}");
}

const METRICS: &str = r#"
[stages.eval]
kind = "cmd"
cmd = "mkdir -p out/eval && cat $VLMFLOW_PARAMS > out/eval/metrics.json && printf report > out/eval/report.txt"
outs = ["out/eval"]
metrics = "out/eval/metrics.json"
params = { acc = 0.75, loss = [1.5, 1.0, 0.5], eval = { top5 = 0.9 }, split = "val" }
"#;

#[test]
fn metrics_of_the_current_runs() {
    let ws = Ws::new(METRICS);
    ws.build_ok(&[]).assert_statuses(&[("eval", "ran")]);
    let run = ws.run(&["metrics", "--json"]);
    run.assert_code(0);
    let all: Value = serde_json::from_str(&run.stdout).unwrap();
    let eval = &all[0];
    assert_eq!(eval["stage"], "eval", "{all:#}");
    assert_eq!(eval["metrics"]["acc"], 0.75, "{all:#}");
    assert_eq!(
        eval["metrics"]["loss"], 0.5,
        "a series shows its last value: {all:#}"
    );
    assert_eq!(eval["metrics"]["eval.top5"], 0.9, "{all:#}");
    assert!(
        eval["metrics"].get("split").is_none(),
        "a string is not a metric: {all:#}"
    );
    let series = ws.query("SELECT step, value FROM metrics WHERE name = 'loss' ORDER BY step");
    assert_eq!(
        series,
        vec![
            json!({"step": 0, "value": 1.5}),
            json!({"step": 1, "value": 1.0}),
            json!({"step": 2, "value": 0.5})
        ]
    );
    let text = ws.run(&["metrics"]);
    text.assert_code(0);
    assert!(text.stdout.contains("acc"), "{text}");
    assert!(text.stdout.contains("0.75"), "{text}");
}

#[test]
fn metrics_diff_and_params_diff_compare_two_runs() {
    let ws = Ws::new(METRICS);
    ws.build_ok(&[]);
    ws.build_ok(&["--set", "eval.acc=0.5"])
        .assert_statuses(&[("eval", "ran")]);
    let log = ws.log(Some("eval"));
    let (b, a) = (
        log[0]["run"].as_i64().unwrap(),
        log[1]["run"].as_i64().unwrap(),
    );
    let (a_s, b_s) = (a.to_string(), b.to_string());

    let run = ws.run(&["metrics", "--diff", &a_s, &b_s, "--json"]);
    run.assert_code(0);
    let diff: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(diff["a"], a);
    assert_eq!(diff["b"], b);
    let acc = diff["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["metric"] == "acc")
        .cloned()
        .unwrap_or_else(|| panic!("acc in {diff:#}"));
    assert_eq!(acc["a"], 0.75);
    assert_eq!(acc["b"], 0.5);
    assert_eq!(acc["change"], -0.25);
    let text = ws.run(&["metrics", "--diff", &a_s, &b_s]);
    text.assert_code(0);
    assert!(text.stdout.contains("acc"), "{text}");

    let run = ws.run(&["params", "diff", &a_s, &b_s, "--json"]);
    run.assert_code(0);
    let diff: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        diff["changes"],
        json!([{"name": "acc", "old": 0.75, "new": 0.5}]),
        "{diff:#}"
    );
    // STAGE~N names the stage's earlier runs.
    let run = ws.run(&["params", "diff", "eval~1", "eval", "--json"]);
    run.assert_code(0);
    let by_name: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(by_name, diff);
    let text = ws.run(&["params", "diff", &a_s, &b_s]);
    text.assert_code(0);
    assert!(
        text.stdout.contains("acc") && text.stdout.contains("0.75"),
        "{text}"
    );

    // Restoring the first artifact brings back its metrics.
    ws.build_ok(&[]).assert_statuses(&[("eval", "restored")]);
    let run = ws.run(&["metrics", "--json"]);
    let all: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(all[0]["metrics"]["acc"], 0.75, "{all:#}");
}

#[test]
fn query_answers_selects_and_refuses_writes() {
    let ws = built_chain();
    let rows = ws.query("SELECT stage, status FROM runs ORDER BY id");
    assert_eq!(
        rows,
        vec![
            json!({"stage": "prepare", "status": "ran"}),
            json!({"stage": "train", "status": "ran"}),
            json!({"stage": "eval", "status": "ran"}),
        ]
    );
    let text = ws.run(&["query", "SELECT stage FROM runs ORDER BY id"]);
    text.assert_code(0);
    assert!(text.stdout.contains("prepare"), "{text}");

    for write in [
        "DELETE FROM runs",
        "UPDATE runs SET status = 'failed'",
        "DROP TABLE runs",
        "INSERT INTO builds (started_at, argv, host, pid) VALUES (0, '[]', 'h', 1)",
    ] {
        let run = ws.run(&["query", write]);
        run.assert_code(2);
    }
    let bad = ws.run(&["query", "SELEKT 1"]);
    bad.assert_code(2);
    assert_eq!(ws.run_count(), 3, "nothing was written");
    ws.build_ok(&[]).assert_statuses(&[
        ("prepare", "fresh"),
        ("train", "fresh"),
        ("eval", "fresh"),
    ]);
}

#[test]
fn log_lists_runs_newest_first_with_changed_params() {
    let ws = built_chain();
    ws.params("train", "lr = 0.002\nepochs = 3\n");
    ws.build_ok(&[]);
    let log = ws.log(None);
    let stages: Vec<&str> = log.iter().map(|e| e["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["eval", "train", "eval", "train", "prepare"]);
    assert_eq!(
        log[1]["changed_params"],
        json!([{"name": "lr", "old": 0.001, "new": 0.002}]),
        "{log:#?}"
    );
    let text = ws.run(&["log", "train"]);
    text.assert_code(0);
    assert!(text.stdout.contains("params.lr 0.001 → 0.002"), "{text}");
    let limited = ws.run(&["log", "-n", "1", "--json"]);
    let limited: Vec<Value> = serde_json::from_str(&limited.stdout).unwrap();
    assert_eq!(limited.len(), 1);
}

#[test]
fn dag_prints_text_dot_and_mermaid() {
    let ws = common::chain();
    let text = ws.run(&["dag"]);
    text.assert_code(0);
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("prepare"), "{text}");
    assert!(
        lines[1].starts_with("train") && lines[1].contains("prepare"),
        "train needs prepare (through its input)\n{text}"
    );
    assert!(
        lines[2].starts_with("eval") && lines[2].contains("train"),
        "{text}"
    );
    assert_eq!(ws.run(&["dag", "--format", "text"]).stdout, text.stdout);

    let dot = ws.run(&["dag", "--format", "dot"]);
    dot.assert_code(0);
    assert!(dot.stdout.starts_with("digraph"), "{dot}");
    assert!(dot.stdout.contains(r#""prepare" -> "train""#), "{dot}");
    assert!(dot.stdout.contains(r#""train" -> "eval""#), "{dot}");
    assert!(dot.stdout.trim_end().ends_with('}'), "{dot}");

    let mermaid = ws.run(&["dag", "--format", "mermaid"]);
    mermaid.assert_code(0);
    assert!(mermaid.stdout.starts_with("graph"), "{mermaid}");
    assert!(mermaid.stdout.contains("prepare"), "{mermaid}");
    assert_eq!(
        mermaid.stdout.matches("-->").count(),
        2,
        "two edges\n{mermaid}"
    );
    assert!(!ws.exists("ran.log"), "dag runs nothing");

    let bad = ws.run(&["dag", "--format", "png"]);
    bad.assert_code(2);
}
