//! Loading Stagefiles from temporary workspaces: valid pipelines and each kind of mistake, asserted
//! on the rendered diagnostics (position and help), as the user sees them.

use std::fs;

use serde_json::json;
use tempfile::TempDir;

use super::*;

/// A built-in kind as the loader sees it: a name, any params.
pub(super) struct Fake(pub &'static str);

impl Kind for Fake {
    fn name(&self) -> &'static str {
        self.0
    }

    fn version(&self) -> &'static str {
        "1"
    }

    fn run(&self, _ctx: &crate::kind::StageContext<'_>) -> anyhow::Result<()> {
        unreachable!("the loader never runs a stage")
    }
}

/// `cmd` and two built-in kinds.
fn kinds() -> Kinds {
    Kinds::new(&[&Fake("clip-train"), &Fake("zero-shot-eval")])
}

/// A workspace holding `stagefile` and `files` (path, content); a path ending in "/" is a folder.
pub(super) fn workspace(stagefile: &str, files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(STAGEFILE), stagefile).unwrap();
    for (path, content) in files {
        let full = dir.path().join(path);
        if path.ends_with('/') {
            fs::create_dir_all(&full).unwrap();
        } else {
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            fs::write(&full, content).unwrap();
        }
    }
    dir
}

pub(super) fn load_ok(stagefile: &str, files: &[(&str, &str)]) -> Pipeline {
    let ws = workspace(stagefile, files);
    load(ws.path(), &kinds()).unwrap_or_else(|d| panic!("unexpected diagnostics:\n{d}"))
}

/// The rendered diagnostics; fails if the Stagefile loads.
pub(super) fn load_err(stagefile: &str, files: &[(&str, &str)]) -> String {
    let ws = workspace(stagefile, files);
    match load(ws.path(), &kinds()) {
        Ok(p) => panic!("expected diagnostics, loaded {} stages", p.stages.len()),
        Err(d) => d.to_string(),
    }
}

/// Assert that `rendered` holds a diagnostic with this message, position and help.
#[track_caller]
pub(super) fn assert_diag(rendered: &str, message: &str, at: &str, help: &str) {
    // The gutter before `-->` is as wide as the line number.
    let line_digits = at.split(':').nth(1).map_or(1, str::len);
    let gutter = " ".repeat(line_digits);
    let expected_head = format!("error: {message}\n{gutter}--> {at}\n");
    let start = rendered
        .find(&expected_head)
        .unwrap_or_else(|| panic!("no `{message}` at {at} in:\n{rendered}"));
    let block = rendered[start..].split("\n\n").next().unwrap();
    assert!(
        block.ends_with(&format!("= help: {help}")),
        "wrong help in:\n{block}"
    );
}

#[test]
fn valid_pipeline_orders_stages_and_turns_inputs_into_needs() {
    let stagefile = r#"
[resources]
gpus = 2

[stages.train]
kind = "clip-train"
inputs = ["./data/prepared//shards/", "extra"]
resources = { gpus = 1, ram = 1 }
device = "cuda"

[stages.prepare]
kind = "cmd"
description = "make shards"
cmd = "python3 prep.py"
needs = "download"
inputs = ["prep.py", "data/raw", "prep.py"]
outs = ["data/prepared"]
metrics = "data/prepared/metrics.json"

[stages.download]
kind = "cmd"
cmd = "echo raw > data/raw/x"
outs = "downloads"

[stages.eval]
kind = "zero-shot-eval"
needs = ["train", "prepare"]
outs = ["results/eval"]
[stages.eval.params]
top_k = 5
"#;
    let files = [
        ("prep.py", "print()"),
        ("data/raw/", ""),
        ("extra", ""),
        ("stages/train.toml", "lr = 1e-3\n[model]\nwidth = 64\n"),
        // A params file no stage uses is never parsed.
        ("stages/retired.toml", "not = [toml"),
    ];
    let p = load_ok(stagefile, &files);
    let names: Vec<&str> = p.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["download", "prepare", "train", "eval"]);
    let idx = |n| p.stage_index(n).unwrap();
    let (download, prepare, train, eval) = (&p.stages[0], &p.stages[1], &p.stages[2], &p.stages[3]);

    assert_eq!(prepare.needs, [idx("download")]);
    assert_eq!(prepare.inputs, ["prep.py", "data/raw"]);
    assert_eq!(
        prepare.metrics.as_deref(),
        Some("data/prepared/metrics.json")
    );
    assert_eq!(prepare.description.as_deref(), Some("make shards"));
    assert_eq!(download.outs, ["downloads"]);
    assert_eq!(download.params, json!({}));
    assert_eq!(download.params_file, None);

    // The input inside prepare's out became a need and left `inputs`.
    assert_eq!(train.needs, [idx("prepare")]);
    assert_eq!(train.inputs, ["extra"]);
    assert_eq!(train.outs, ["out/train"]);
    assert_eq!(train.cmd, None);
    assert_eq!(train.params, json!({"lr": 0.001, "model": {"width": 64}}));
    assert_eq!(train.params_file.as_deref(), Some("stages/train.toml"));
    assert_eq!(train.device.as_deref(), Some("cuda"));

    assert_eq!(eval.needs, [idx("prepare"), idx("train")]);
    assert_eq!(eval.params, json!({"top_k": 5}));
    assert_eq!(eval.params_file, None);

    let resources: Vec<(&str, u32)> = p.resources.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(resources, [("gpus", 2), ("ram", 1)]);
    assert_eq!(train.resources.get("gpus"), Some(&1));
}

#[test]
fn absolute_inputs_stay_absolute_and_params_files_convert_canonically() {
    let outside = tempfile::tempdir().unwrap();
    let data = outside.path().join("coco");
    fs::create_dir(&data).unwrap();
    let stagefile = format!(
        "[stages.fit]\nkind = \"clip-train\"\ninputs = [\"{}/\"]\nparams = \"cfg//fit.toml\"\n",
        data.display()
    );
    let params =
        "started = 1979-05-27T07:32:00Z\nlr = 3e-4\n[opt.betas]\nb1 = 0.9\nlist = [1, 2]\n";
    let p = load_ok(&stagefile, &[("cfg/fit.toml", params)]);
    let fit = &p.stages[0];
    assert_eq!(fit.inputs, [data.display().to_string()]);
    assert_eq!(fit.params_file.as_deref(), Some("cfg/fit.toml"));
    let expected = json!({
        "started": "1979-05-27T07:32:00Z", "lr": 3e-4, "opt": {"betas": {"b1": 0.9, "list": [1, 2]}}
    });
    assert_eq!(fit.params, expected);
}

#[test]
fn syntax_error_stops_at_the_parser_position() {
    let err = load_err("[stages.a]\nkind = \"cmd\ncmd = 1\n", &[]);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(" --> Stagefile:2:"), "{err}");
    assert!(err.contains("= help: fix the TOML syntax"), "{err}");
    assert_eq!(err.matches("error:").count(), 1);
}

#[test]
fn stage_defined_twice() {
    let text = r#"[stages.a]
kind = "cmd"

[stages.a]
kind = "cmd"
"#;
    let err = load_err(text, &[]);
    let help = "rename or merge one of them (the first is at line 1)";
    assert_diag(&err, "stage `a` is defined twice", "Stagefile:4:9", help);
}

#[test]
fn unknown_keys_suggest_the_closest_or_list_them() {
    let text = r#"[stages.prepare]
kind = "cmd"
cmdd = "python3 prep.py"
outs = ["o"]
colour = 1

[stage.x]
kind = "cmd"
"#;
    let err = load_err(text, &[]);
    let expected = "error: unknown key `cmdd` in stage `prepare`
 --> Stagefile:3:1
  |
3 | cmdd = \"python3 prep.py\"
  | ^^^^
  = help: did you mean `cmd`?";
    assert!(err.contains(expected), "{err}");
    let keys = "the keys of a stage are `kind`, `description`, `cmd`, `needs`, `inputs`, `outs`, \
                `params`, `metrics`, `resources`, `device`, `executor`, `slurm`";
    assert_diag(
        &err,
        "unknown key `colour` in stage `prepare`",
        "Stagefile:5:1",
        keys,
    );
    assert_diag(
        &err,
        "unknown top-level key `stage`",
        "Stagefile:7:2",
        "did you mean `stages`?",
    );
    // Collected in one pass, in file order; the missing `cmd` is reported too.
    assert_diag(
        &err,
        "stage `prepare` runs a command but has no `cmd`",
        "Stagefile:1:9",
        "add cmd = \"...\", the shell command that writes its outs",
    );
    assert!(err.find("Stagefile:1:9").unwrap() < err.find("Stagefile:3:1").unwrap());
}

#[test]
fn unknown_and_missing_kinds() {
    let text = r#"[stages.a]
kind = "clip-trian"
[stages.b]
kind = "banana"
[stages.c]
description = "no kind"
"#;
    let err = load_err(text, &[]);
    assert_diag(
        &err,
        "unknown kind `clip-trian`",
        "Stagefile:2:8",
        "did you mean `clip-train`?",
    );
    let kinds = "the kinds are `cmd`, `clip-train`, `zero-shot-eval`";
    assert_diag(&err, "unknown kind `banana`", "Stagefile:4:8", kinds);
    let help = "add kind = \"cmd\" or a built-in kind: `cmd`, `clip-train`, `zero-shot-eval`";
    assert_diag(&err, "stage `c` has no `kind`", "Stagefile:5:9", help);
}

#[test]
fn wrong_value_types() {
    let text = r#"[stages.a]
kind = "cmd"
cmd = "x"
outs = ["o"]
needs = 3
inputs = ["ok", 4]
description = ["d"]
"#;
    let err = load_err(text, &[("ok", "")]);
    let needs = "`needs` must be a string or an array of strings";
    assert_diag(
        &err,
        needs,
        "Stagefile:5:9",
        "write needs = [\"...\", \"...\"]",
    );
    let inputs = "`inputs` must be a string or an array of strings";
    assert_diag(
        &err,
        inputs,
        "Stagefile:6:17",
        "write inputs = [\"...\", \"...\"]",
    );
    let desc = "`description` must be a string";
    assert_diag(&err, desc, "Stagefile:7:15", "write description = \"...\"");
}

#[test]
fn kind_rules_for_commands_and_built_ins() {
    let text = r#"[stages.run]
kind = "cmd"
cmd = "make"

[stages.empty]
kind = "cmd"
cmd = "make"
outs = []

[stages.fit]
kind = "clip-train"
cmd = "python fit.py"
outs = ["a", "b"]
metrics = "m.json"
"#;
    let err = load_err(text, &[]);
    let no_outs = "list what its command writes, e.g. outs = [\"out/run\"]";
    assert_diag(&err, "stage `run` has no `outs`", "Stagefile:1:9", no_outs);
    let empty = "list what its command writes, e.g. outs = [\"out/empty\"]";
    assert_diag(&err, "stage `empty` has no `outs`", "Stagefile:8:8", empty);
    let cmd = "`cmd` is only for command stages; `fit` has kind `clip-train`";
    assert_diag(
        &err,
        cmd,
        "Stagefile:12:1",
        "remove `cmd`, or set kind = \"cmd\"",
    );
    let two = "a `clip-train` stage writes a single out";
    assert_diag(&err, two, "Stagefile:13:14", "keep one path in `outs`");
    let metrics = "`metrics` is only for command stages; `fit` has kind `clip-train`";
    let help = "remove `metrics`: built-in kinds record their metrics themselves";
    assert_diag(&err, metrics, "Stagefile:14:1", help);
}

#[test]
fn needs_must_name_other_stages() {
    let text = r#"[stages.download]
kind = "clip-train"
[stages.b]
kind = "clip-train"
needs = ["dowload", "b", "zzz"]
"#;
    let err = load_err(text, &[]);
    let unknown = "stage `b` needs `dowload`, which is not a stage";
    assert_diag(&err, unknown, "Stagefile:5:10", "did you mean `download`?");
    assert_diag(
        &err,
        "stage `b` needs itself",
        "Stagefile:5:21",
        "remove `b` from `needs`",
    );
    let far = "stage `b` needs `zzz`, which is not a stage";
    assert_diag(
        &err,
        far,
        "Stagefile:5:26",
        "define [stages.zzz], or remove it from `needs`",
    );
}

#[test]
fn cycles_are_shown_from_their_first_stage() {
    let text = r#"[stages.free]
kind = "clip-train"
[stages.a]
kind = "clip-train"
needs = ["b"]
[stages.b]
kind = "clip-train"
needs = ["free", "c"]
[stages.c]
kind = "cmd"
cmd = "x"
outs = ["c-out"]
inputs = ["out/a/model"]
"#;
    let err = load_err(text, &[]);
    let cycle = "dependency cycle: a → b → c → a";
    assert_diag(&err, cycle, "Stagefile:5:10", "remove one of these needs");
    assert_eq!(err.matches("error:").count(), 1, "{err}");
}

#[test]
fn params_mistakes() {
    let text = r#"[stages.a]
kind = "clip-train"
params = "stages/missing.toml"
[stages.b]
kind = "clip-train"
[stages.c]
kind = "clip-train"
params = 3
[stages.d]
kind = "clip-train"
params = { lr = nan }
[stages.e]
kind = "clip-train"
params = "../e.toml"
"#;
    let err = load_err(text, &[("stages/b.toml", "lr = 1e-3\nwarmup = \n")]);
    let help = "create stages/missing.toml or remove `params`";
    let missing = "params file `stages/missing.toml` does not exist";
    assert_diag(&err, missing, "Stagefile:3:10", help);
    assert!(err.contains(" --> stages/b.toml:2:"), "{err}");
    let not_table = "`params` must be a path to a TOML file or a table";
    let help = "write params = \"stages/c.toml\" or params = { lr = 1e-3 }";
    assert_diag(&err, not_table, "Stagefile:8:10", help);
    let finite = "params must be finite numbers";
    assert_diag(
        &err,
        finite,
        "Stagefile:11:17",
        "replace `nan` with a finite number",
    );
    let outside = "params file `../e.toml` must be a file inside the workspace";
    let help = "write a workspace-relative path such as `stages/<stage>.toml`";
    assert_diag(&err, outside, "Stagefile:14:10", help);
    // Params-file diagnostics come after the Stagefile's.
    assert!(err.find("stages/b.toml").unwrap() > err.find("Stagefile:11").unwrap());
}

#[test]
fn input_mistakes() {
    let text = r#"[stages.p]
kind = "cmd"
cmd = "x"
outs = ["data/prepared"]
inputs = ["data/prepared/x", "nope/file", "../up"]
[stages.q]
kind = "clip-train"
inputs = ["data", "."]
"#;
    let err = load_err(text, &[("data/", "")]);
    let own = "stage `p` reads its own out `data/prepared/x`";
    assert_diag(&err, own, "Stagefile:5:11", "remove it from `inputs`");
    let missing = "input `nope/file` of stage `p` does not exist";
    let help = "create it, fix the path, or add it to the outs of the stage that produces it";
    assert_diag(&err, missing, "Stagefile:5:30", help);
    let up = "input `../up` leaves the workspace";
    assert_diag(
        &err,
        up,
        "Stagefile:5:43",
        "use an absolute path for data outside the workspace",
    );
    let contains = "input `data` contains `data/prepared`, the out of stage `p`";
    let help = "list the paths separately, or depend on that stage with `needs`";
    assert_diag(&err, contains, "Stagefile:8:11", help);
    let whole = "input `.` is the whole workspace";
    assert_diag(
        &err,
        whole,
        "Stagefile:8:19",
        "list the files or folders the stage reads",
    );
}

#[test]
fn name_and_out_mistakes() {
    let text = r#"[stages."a.b"]
kind = "clip-train"
[stages.x]
kind = "cmd"
cmd = "c"
outs = ["shared", "/abs", "cache/x"]
metrics = "../m.json"
[stages.y]
kind = "cmd"
cmd = "c"
outs = ["shared/inner", "z", "z", "z/y"]
[stages.w]
kind = "clip-train"
outs = "shared"
"#;
    let err = load_err(text, &[]);
    let help = "a stage name starts with a letter or digit, then letters, digits, `_` or `-`";
    assert_diag(&err, "invalid stage name `a.b`", "Stagefile:1:9", help);
    let inside = "write a workspace-relative path such as `out/<stage>/...`";
    assert_diag(
        &err,
        "out `/abs` must be a path inside the workspace",
        "Stagefile:6:19",
        inside,
    );
    let reserved = "out `cache/x` would overwrite `cache`, which vlmflow owns";
    let help = "write outputs elsewhere in the workspace, e.g. `out/<stage>`";
    assert_diag(&err, reserved, "Stagefile:6:27", help);
    let metrics = "metrics file `../m.json` must be a path inside the workspace";
    assert_diag(&err, metrics, "Stagefile:7:11", inside);
    let apart = "give each stage its own out folder, apart from the others";
    let nested = "out `shared/inner` of stage `y` lies inside `shared`, the out of stage `x`";
    assert_diag(&err, nested, "Stagefile:11:9", apart);
    let twice = "out `z` of stage `y` is listed twice";
    assert_diag(&err, twice, "Stagefile:11:30", "remove one of them");
    let nested_own = "outs `z` and `z/y` of stage `y` overlap";
    assert_diag(&err, nested_own, "Stagefile:11:35", "keep only `z`");
    let equal = "out `shared` of stage `w` is also the out of stage `x`";
    assert_diag(&err, equal, "Stagefile:14:8", apart);
}

#[test]
fn resource_mistakes() {
    let text = r#"[resources]
gpus = 1
cpus = -2
[stages.a]
kind = "clip-train"
resources = { gpus = 2, ram = 1.5, disk = 3 }
"#;
    let err = load_err(text, &[]);
    let negative = "resource `cpus` must be a non-negative integer";
    assert_diag(&err, negative, "Stagefile:3:8", "write cpus = 1");
    let over = "stage `a` asks for 2 `gpus` but the capacity is 1";
    assert_diag(
        &err,
        over,
        "Stagefile:6:22",
        "lower it, or raise `gpus` under [resources]",
    );
    let float = "resource `ram` must be a non-negative integer";
    assert_diag(&err, float, "Stagefile:6:31", "write ram = 1");
    let implicit = "stage `a` asks for 3 `disk` but the capacity is 1";
    let help = "declare the capacity: add disk = 3 under [resources]";
    assert_diag(&err, implicit, "Stagefile:6:43", help);
}

/// A chain of `n` stages written last-first, each reading the previous one's out and a params file.
fn big_workspace(n: usize) -> TempDir {
    let mut text = String::from("[resources]\ngpus = 1\n");
    let mut files = vec![("src/".to_string(), String::new())];
    for i in (0..n).rev() {
        text.push_str(&format!(
            "\n[stages.s{i}]\nkind = \"cmd\"\ncmd = \"run {i}\"\nouts = [\"out/s{i}\"]\n\
             inputs = [\"src/\"{}]\nresources = {{ gpus = 1 }}\n",
            if i > 0 {
                format!(", \"out/s{}/data\"", i - 1)
            } else {
                String::new()
            }
        ));
        let params = format!("step = {i}\nlr = 1e-3\n[model]\nwidth = 64\nlayers = [1, 2, 3]\n");
        files.push((format!("stages/s{i}.toml"), params));
    }
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    workspace(&text, &refs)
}

#[test]
fn five_hundred_stages_load() {
    let ws = big_workspace(500);
    let p = load(ws.path(), &kinds()).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(p.stages.len(), 500);
    for (i, stage) in p.stages.iter().enumerate() {
        assert_eq!(stage.name, format!("s{i}"));
        assert_eq!(stage.needs, if i == 0 { vec![] } else { vec![i - 1] });
        assert_eq!(stage.inputs, ["src"]);
        assert_eq!(stage.params["step"], json!(i));
    }
}

#[test]
fn absolute_path_inside_the_workspace_is_tracked_as_relative() {
    let ws = workspace("", &[("data/raw/", "")]);
    let stagefile = format!(
        "[stages.p]\nkind = \"cmd\"\ncmd = \"x\"\nouts = [\"data/prepared\"]\n\
         [stages.q]\nkind = \"clip-train\"\ninputs = [\"{0}/data/raw\", \"{0}/data/prepared/a\"]\n",
        ws.path().display()
    );
    fs::write(ws.path().join(STAGEFILE), stagefile).unwrap();
    let p = load(ws.path(), &kinds()).unwrap_or_else(|d| panic!("{d}"));
    let q = &p.stages[p.stage_index("q").unwrap()];
    assert_eq!(q.inputs, ["data/raw"]);
    assert_eq!(q.needs, [p.stage_index("p").unwrap()]);
}

#[test]
fn a_cycle_through_an_input_points_at_the_input() {
    let text = r#"[stages.a]
kind = "clip-train"
inputs = ["out/b/x"]
[stages.b]
kind = "clip-train"
inputs = "out/a"
"#;
    let err = load_err(text, &[]);
    let cycle = "dependency cycle: a → b → a";
    assert_diag(&err, cycle, "Stagefile:3:11", "remove one of these needs");
}

#[test]
fn a_missing_stagefile_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let err = load(dir.path(), &kinds()).unwrap_err().to_string();
    assert!(err.starts_with("error: cannot read "), "{err}");
    let help = "= help: run vlmflow in a workspace (a folder with a Stagefile), or create one";
    assert!(err.ends_with(help), "{err}");
}
