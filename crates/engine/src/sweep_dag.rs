//! A sweep's trials as one pipeline to build: each trial's copy of the stages it builds, with the
//! copies that are the same in several trials (same stage, same params, same needed copies) kept
//! once. Scheduling that pipeline runs the trials side by side, shares the work they have in
//! common, and holds every stage to the same `-j` and resources as a build.

use std::collections::HashMap;

use serde_json::Value;

use super::params::canonical_json;
use super::stagefile::Pipeline;

pub struct SweepDag {
    /// The copies, in an order where each comes after the copies it needs.
    pub pipeline: Pipeline,
    /// Per copy: the `--set` overrides applied to it.
    pub overrides: Vec<Option<Value>>,
    /// Per copy: the trials (0-based) it is part of.
    pub members: Vec<Vec<usize>>,
    /// Per trial: (stage index in the Stagefile's pipeline, its copy) for every stage it builds.
    pub copies: Vec<Vec<(usize, usize)>>,
}

/// Join `trials` (each trial's pipeline and its overrides by stage) over the `selected` stages.
pub fn combine(trials: &[(Pipeline, Vec<Option<Value>>)], selected: &[bool]) -> SweepDag {
    let mut dag = SweepDag {
        pipeline: Pipeline {
            stages: Vec::new(),
            ..trials[0].0.clone()
        },
        overrides: Vec::new(),
        members: Vec::new(),
        copies: Vec::new(),
    };
    let mut seen: HashMap<(usize, String, Vec<usize>), usize> = HashMap::new();
    for (t, (pipeline, overrides)) in trials.iter().enumerate() {
        // Stage index → its copy in this trial. Stages are in dependency order, so a stage's needs
        // have their copies when it comes.
        let mut copy_of: Vec<Option<usize>> = vec![None; pipeline.stages.len()];
        let mut copies = Vec::new();
        for (i, stage) in pipeline.stages.iter().enumerate() {
            if !selected[i] {
                continue;
            }
            let needs: Vec<usize> = stage
                .needs
                .iter()
                .map(|&n| copy_of[n].expect("a selected stage's needs are selected"))
                .collect();
            let what = canonical_json(&serde_json::json!([stage.params, stage.device]));
            let copy = *seen.entry((i, what, needs.clone())).or_insert_with(|| {
                let mut copy = stage.clone();
                copy.needs = needs;
                dag.pipeline.stages.push(copy);
                dag.overrides.push(overrides[i].clone());
                dag.members.push(Vec::new());
                dag.pipeline.stages.len() - 1
            });
            dag.members[copy].push(t);
            copy_of[i] = Some(copy);
            copies.push((i, copy));
        }
        dag.copies.push(copies);
    }
    dag
}

impl SweepDag {
    /// What a copy's name is shown after: nothing for a copy every trial shares, else its trials
    /// (`#2 `, `#1-3 `, `#1,4 `).
    pub fn label(&self, copy: usize) -> String {
        let members = &self.members[copy];
        if members.len() == self.copies.len() && members.len() > 1 {
            return String::new();
        }
        let mut parts: Vec<String> = Vec::new();
        let mut i = 0;
        while i < members.len() {
            let mut j = i;
            while j + 1 < members.len() && members[j + 1] == members[j] + 1 {
                j += 1;
            }
            parts.push(match j - i {
                0 => format!("{}", members[i] + 1),
                _ => format!("{}-{}", members[i] + 1, members[j] + 1),
            });
            i = j + 1;
        }
        format!("#{} ", parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stagefile::{RunsOn, Stage};
    use serde_json::json;

    fn stage(name: &str, needs: Vec<usize>, params: Value) -> Stage {
        Stage {
            name: name.into(),
            kind: "cmd".into(),
            needs,
            inputs: vec![],
            outs: vec![format!("out/{name}")],
            cmd: None,
            params,
            params_file: None,
            metrics: None,
            resources: Default::default(),
            device: None,
            description: None,
            runs_on: RunsOn::Local,
        }
    }

    fn pipeline(lr: f64) -> (Pipeline, Vec<Option<Value>>) {
        let p = Pipeline {
            workspace: "/w".into(),
            stages: vec![
                stage("data", vec![], json!({})),
                stage("train", vec![0], json!({ "lr": lr })),
                stage("eval", vec![1], json!({})),
            ],
            resources: Default::default(),
            remote: None,
        };
        (p, vec![None, Some(json!({ "lr": lr })), None])
    }

    #[test]
    fn shared_stages_are_built_once_and_the_rest_per_trial() {
        let trials = [pipeline(1e-3), pipeline(5e-4), pipeline(1e-3)];
        let dag = combine(&trials, &[true, true, true]);
        // data once; train and eval for 1e-3 (trials 1 and 3) and for 5e-4.
        let names: Vec<&str> = dag
            .pipeline
            .stages
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, ["data", "train", "eval", "train", "eval"]);
        assert_eq!(dag.pipeline.stages[4].needs, [3]);
        assert_eq!(dag.members[1], [0, 2]);
        assert_eq!(dag.copies[1], [(0, 0), (1, 3), (2, 4)]);
        assert_eq!(dag.label(0), "");
        assert_eq!(dag.label(1), "#1,3 ");
        assert_eq!(dag.label(3), "#2 ");
        assert_eq!(dag.overrides[3], Some(json!({ "lr": 5e-4 })));
    }

    #[test]
    fn only_the_selected_stages_are_copied() {
        let dag = combine(&[pipeline(1e-3), pipeline(2e-3)], &[true, true, false]);
        assert_eq!(dag.pipeline.stages.len(), 3);
        assert_eq!(dag.copies[1], [(0, 0), (1, 2)]);
    }
}
