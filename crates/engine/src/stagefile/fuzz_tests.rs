//! Property tests of the Stagefile loader: whatever the text, it returns a pipeline or diagnostics
//! that render — it never panics. Generated Stagefiles mix good and bad parts (unknown kinds,
//! cycles, missing inputs, overlapping outs, odd params, unicode and spaces in names and paths);
//! mutated ones start from a good Stagefile and break its syntax at random places.

use std::fs;

use proptest::prelude::*;
use toml::{Table, Value};

use super::tests::{Fake, workspace};
use super::*;

fn kinds() -> Kinds {
    Kinds::new(&[&Fake("clip-train"), &Fake("zero-shot-eval")])
}

/// Loads and renders; a loaded pipeline must hold together.
fn load_checked(dir: &Path) {
    match load(dir, &kinds()) {
        Ok(pipeline) => {
            let n = pipeline.stages.len();
            let mut outs = std::collections::HashSet::new();
            for (i, stage) in pipeline.stages.iter().enumerate() {
                assert!(stage.needs.iter().all(|&j| j < n && j != i), "{stage:?}");
                for out in &stage.outs {
                    assert!(outs.insert(out.clone()), "two stages declare {out}");
                }
            }
        }
        Err(diagnostics) => {
            let text = diagnostics.to_string();
            assert!(!text.trim().is_empty(), "an error says something");
        }
    }
}

/// Mostly names from a small pool, so that `needs` and outs meet; sometimes anything.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(vec!["prepare", "train", "eval"]).prop_map(String::from),
        1 => prop::sample::select(vec!["données", "a b", "日本"]).prop_map(String::from),
        1 => "[a-z][a-z0-9-]{0,6}",
        1 => "\\PC{0,6}",
    ]
}

/// Existing files, outs of the pooled stages (inputs may name them), and odd paths.
fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => Just("data/a.txt".to_string()),
        1 => Just("data/dir".to_string()),
        2 => Just("données/é t.txt".to_string()),
        6 => (name(), prop::sample::select(vec!["x.txt", "sub dir", "é"]))
            .prop_map(|(stage, file)| format!("out/{stage}/{file}")),
        1 => "(\\.\\./|/|\\./)?[a-z]{0,4}(/[a-zé ]{0,4}){0,2}",
        1 => "\\PC{0,8}",
    ]
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(Value::Integer),
        any::<f64>().prop_map(Value::Float),
        any::<bool>().prop_map(Value::Boolean),
        "\\PC{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map(name(), inner, 0..3)
                .prop_map(|m| Value::Table(m.into_iter().collect())),
        ]
    })
}

fn stage() -> impl Strategy<Value = Table> {
    (
        prop_oneof![
            6 => Just("cmd"),
            1 => Just("clip-train"),
            1 => Just("zero-shot-eval"),
            1 => Just("nope"),
            1 => Just("")
        ],
        prop::option::weighted(0.8, "\\PC{0,12}"),
        prop::collection::vec(name(), 0..3),
        prop::collection::vec(path(), 0..3),
        prop::collection::vec(path(), 1..3),
        prop::collection::btree_map(name(), value(), 0..3),
        prop::option::weighted(0.1, (name(), value())),
    )
        .prop_map(|(kind, cmd, needs, inputs, outs, params, extra)| {
            let mut t = Table::new();
            t.insert("kind".into(), Value::String(kind.into()));
            if let Some(cmd) = cmd {
                t.insert("cmd".into(), Value::String(cmd));
            }
            let strings = |v: Vec<String>| Value::Array(v.into_iter().map(Value::String).collect());
            t.insert("needs".into(), strings(needs));
            t.insert("inputs".into(), strings(inputs));
            t.insert("outs".into(), strings(outs));
            t.insert("params".into(), Value::Table(params.into_iter().collect()));
            if let Some((key, v)) = extra {
                t.insert(key, v);
            }
            t
        })
}

fn stagefile() -> impl Strategy<Value = String> {
    prop::collection::btree_map(name(), stage(), 0..6).prop_map(|stages| {
        let mut top = Table::new();
        top.insert(
            "stages".into(),
            Value::Table(
                stages
                    .into_iter()
                    .map(|(k, v)| (k, Value::Table(v)))
                    .collect(),
            ),
        );
        toml::to_string(&top).expect("a table renders as TOML")
    })
}

const FILES: &[(&str, &str)] = &[
    ("data/a.txt", "a"),
    ("data/dir/", ""),
    ("données/é t.txt", "é"),
    ("stages/train.toml", "lr = 0.1\n"),
    ("stages/prepare.toml", "seed = [\n"),
];

const GOOD: &str = r#"
[resources]
gpus = 1

[stages.prepare]
kind = "cmd"
cmd = "cat data/a.txt > out/p.txt"
inputs = ["data/a.txt"]
outs = ["out/p.txt"]

[stages.train]
kind = "clip-train"
needs = ["prepare"]
resources = { gpus = 1 }
params = { steps = 3 }

[stages.eval]
kind = "zero-shot-eval"
needs = ["train", "prepare"]
"#;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn generated_stagefiles_load_or_explain(text in stagefile()) {
        let dir = workspace(&text, FILES);
        load_checked(dir.path());
    }

    #[test]
    fn any_dag_loads_with_its_edges_and_a_back_edge_is_a_cycle(
        n in 1usize..60,
        edges in prop::collection::vec((0usize..60, 0usize..60), 0..120),
    ) {
        // Stage i may need any j < i: always a DAG.
        let needs = |i: usize| -> std::collections::BTreeSet<usize> {
            edges.iter().filter(|&&(a, b)| a % n == i && b % n < i).map(|&(_, b)| b % n).collect()
        };
        let render = |extra: Option<(usize, usize)>| {
            let mut text = String::new();
            for i in 0..n {
                let mut need: Vec<String> = needs(i).iter().map(|j| format!("\"s{j}\"")).collect();
                if let Some((_, to)) = extra.filter(|&(from, _)| from == i) {
                    need.push(format!("\"s{to}\""));
                }
                text.push_str(&format!(
                    "[stages.s{i}]\nkind = \"cmd\"\ncmd = \"true\"\nouts = [\"out/s {i}/é\"]\nneeds = [{}]\n\n",
                    need.join(", ")
                ));
            }
            text
        };
        let dir = workspace(&render(None), FILES);
        let pipeline = load(dir.path(), &kinds()).map_err(|d| TestCaseError::fail(d.to_string()))?;
        prop_assert_eq!(pipeline.stages.len(), n);
        for stage in &pipeline.stages {
            let i: usize = stage.name[1..].parse().unwrap();
            let got: std::collections::BTreeSet<String> =
                stage.needs.iter().map(|&j| pipeline.stages[j].name.clone()).collect();
            let want: std::collections::BTreeSet<String> =
                needs(i).iter().map(|j| format!("s{j}")).collect();
            prop_assert_eq!(got, want);
        }
        // A back edge: s0 needing a stage that (transitively) needs s0 closes a cycle, which the
        // loader must name.
        if let Some(deep) = (1..n).rev().find(|&i| reaches(&needs, i, 0)) {
            let dir = workspace(&render(Some((0, deep))), FILES);
            match load(dir.path(), &kinds()) {
                Ok(_) => prop_assert!(false, "a cycle loaded"),
                Err(e) => prop_assert!(e.to_string().contains("cycle"), "{}", e),
            }
        }
    }

    #[test]
    fn mutated_stagefiles_load_or_explain(
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0usize..4, "\\PC{0,3}"), 1..4)
    ) {
        let mut text: Vec<char> = GOOD.chars().collect();
        for (at, removed, inserted) in edits {
            let at = at.index(text.len() + 1);
            let end = (at + removed).min(text.len());
            text.splice(at..end, inserted.chars());
        }
        let text: String = text.into_iter().collect();
        let dir = workspace(&text, FILES);
        load_checked(dir.path());
    }

    #[test]
    fn arbitrary_bytes_load_or_explain(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let dir = workspace("", FILES);
        fs::write(dir.path().join(STAGEFILE), bytes).unwrap();
        load_checked(dir.path());
    }
}

/// Whether stage `from` needs `to`, directly or through other stages.
fn reaches(
    needs: &dyn Fn(usize) -> std::collections::BTreeSet<usize>,
    from: usize,
    to: usize,
) -> bool {
    needs(from)
        .into_iter()
        .any(|j| j == to || reaches(needs, j, to))
}
