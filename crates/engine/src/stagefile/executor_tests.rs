//! `executor` and Slurm resources in the Stagefile: defaults, a stage's own table over them, and
//! each mistake located.

use super::RunsOn;
use super::tests::{load_err, load_ok};
use crate::slurm::SlurmOptions;

const TWO_STAGES: &str = r#"
[stages.prep]
kind = "cmd"
cmd = "mkdir -p out && echo 1 > out/prep"
outs = ["out/prep"]

[stages.train]
kind = "cmd"
cmd = "cat out/prep > out/train"
inputs = ["out/prep"]
outs = ["out/train"]
"#;

#[test]
fn a_stage_runs_locally_unless_it_or_the_workspace_says_slurm() {
    let p = load_ok(TWO_STAGES, &[]);
    assert!(p.stages.iter().all(|s| s.runs_on == RunsOn::Local));

    let one = TWO_STAGES.replace(
        "outs = [\"out/train\"]",
        "outs = [\"out/train\"]\nexecutor = \"slurm\"\nslurm = { gpus = 1, time = \"10:00:00\", mem = \"16G\" }",
    );
    let p = load_ok(&one, &[]);
    assert_eq!(p.stages[0].runs_on, RunsOn::Local);
    let RunsOn::Slurm(options) = &p.stages[1].runs_on else {
        panic!("train runs on Slurm");
    };
    assert_eq!(
        options.sbatch_args(),
        ["--gres=gpu:1", "--mem=16G", "--time=10:00:00"]
    );
}

#[test]
fn the_workspace_default_and_its_slurm_table_apply_to_every_stage_but_a_local_one() {
    let all = format!(
        "executor = \"slurm\"\n\n[slurm]\npartition = \"gpu\"\ncpus = 4\nsbatch = [\"--qos=high\"]\n{}",
        TWO_STAGES
            .replace(
                "outs = [\"out/prep\"]",
                "outs = [\"out/prep\"]\nexecutor = \"local\""
            )
            .replace(
                "outs = [\"out/train\"]",
                "outs = [\"out/train\"]\nslurm = { cpus = 8, mem = 2048 }"
            )
    );
    let p = load_ok(&all, &[]);
    assert_eq!(p.stages[0].runs_on, RunsOn::Local);
    let expected = SlurmOptions {
        cpus: Some(8),
        mem: Some("2048".into()),
        partition: Some("gpu".into()),
        sbatch: vec!["--qos=high".into()],
        ..Default::default()
    };
    assert_eq!(p.stages[1].runs_on, RunsOn::Slurm(expected));
}

#[test]
fn slurm_mistakes_are_located_with_what_to_write() {
    let bad = TWO_STAGES.replace(
        "outs = [\"out/train\"]",
        "outs = [\"out/train\"]\nexecutor = \"slurm\"\nslurm = { gpu = 1, time = \"1h\", mem = \"16GB\", cpus = 0, sbatch = [\"qos high\"] }",
    );
    let err = load_err(&bad, &[]);
    for expected in [
        "unknown Slurm key `gpu`",
        "did you mean `gpus`?",
        "Slurm `time` must be a time limit",
        "Slurm `mem` must be an amount",
        "Slurm `cpus` must be an integer of at least 1",
        "`qos high` is not an sbatch option",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert!(err.contains("Stagefile:13:"), "located:\n{err}");

    let typo = format!("executor = \"slrum\"\n{TWO_STAGES}");
    let err = load_err(&typo, &[]);
    assert!(
        err.contains("`executor` must be \"local\" or \"slurm\"") && err.contains("Stagefile:1:12"),
        "{err}"
    );

    let forgotten = TWO_STAGES.replace(
        "outs = [\"out/train\"]",
        "outs = [\"out/train\"]\nslurm = { gpus = 1 }",
    );
    let err = load_err(&forgotten, &[]);
    assert!(
        err.contains("stage `train` has Slurm resources but runs locally")
            && err.contains("add executor = \"slurm\""),
        "{err}"
    );
}
