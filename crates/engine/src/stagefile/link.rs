//! Passes across stages: outs that overlap, inputs that another stage produces (implicit needs),
//! needs by name, resources against capacities, then the order or a cycle, and the `Pipeline`.
//! Path lookups walk each path's ancestors through hash maps, so the work grows with the number of
//! paths times their depth, never with the square of the number of stages.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use super::graph::{self, Edge};
use super::paths::{self, Location};
use super::{Loader, OutIndex, Pipeline, RawStage, Stage};
use crate::diagnostic::{Diagnostic, Diagnostics, did_you_mean};

/// Inputs that survive linking, per stage: not produced by another stage, existing on disk.
pub(super) type KeptInputs = Vec<Vec<String>>;

impl Loader<'_> {
    /// Index every out, reporting two outs that are equal or nested.
    pub(super) fn index_outs<'r>(&mut self, raws: &'r [RawStage]) -> OutIndex<'r> {
        let mut index = OutIndex {
            outs: HashMap::new(),
            enclosing: HashMap::new(),
        };
        for (stage, raw) in raws.iter().enumerate() {
            for (out, span) in &raw.outs {
                let inside =
                    paths::self_and_ancestors(out).find_map(|p| index.outs.get_key_value(p));
                let clash = match inside {
                    Some((&other_out, &other)) => Some((other, other_out)),
                    None => index.enclosing.get(out.as_str()).map(|&(s, o)| (s, o)),
                };
                if let Some((other, other_out)) = clash {
                    let (message, help) = overlap_message(raws, (stage, out), (other, other_out));
                    self.error(span.clone(), message, help);
                    continue;
                }
                index.outs.insert(out, stage);
                for folder in paths::ancestors(out) {
                    index.enclosing.entry(folder).or_insert((stage, out));
                }
            }
        }
        index
    }

    /// Turn inputs inside another stage's out into needs; check the remaining ones exist.
    pub(super) fn link_inputs(
        &mut self,
        raws: &[RawStage],
        index: &OutIndex<'_>,
    ) -> (Vec<Vec<Edge>>, KeptInputs) {
        let mut needs = vec![Vec::new(); raws.len()];
        let mut kept = vec![Vec::new(); raws.len()];
        // Many stages read the same sources or data set: ask the file system once per path.
        let mut exists: HashMap<&str, bool> = HashMap::new();
        for (stage, raw) in raws.iter().enumerate() {
            let mut seen = HashSet::new();
            for (location, span) in &raw.inputs {
                let path = location.as_str();
                if !seen.insert(path) {
                    continue;
                }
                let span = span.clone();
                match input_role(index, location) {
                    InputRole::ProducedBy(producer) if producer == stage => {
                        let message = format!("stage `{}` reads its own out `{path}`", raw.name);
                        self.error(span, message, "remove it from `inputs`");
                    }
                    InputRole::ProducedBy(producer) => {
                        needs[stage].push(Edge { to: producer, span })
                    }
                    InputRole::Encloses(other, out) => {
                        let other = &raws[other].name;
                        let message =
                            format!("input `{path}` contains `{out}`, the out of stage `{other}`");
                        let help =
                            "list the paths separately, or depend on that stage with `needs`";
                        self.error(span, message, help);
                    }
                    InputRole::Source => {
                        let workspace = self.workspace;
                        if *exists
                            .entry(path)
                            .or_insert_with(|| workspace.join(path).exists())
                        {
                            kept[stage].push(path.to_string());
                        } else {
                            let message =
                                format!("input `{path}` of stage `{}` does not exist", raw.name);
                            let help = "create it, fix the path, \
                                        or add it to the outs of the stage that produces it";
                            self.error(span, message, help);
                        }
                    }
                }
            }
        }
        (needs, kept)
    }

    /// Resolve `needs` names to stages.
    pub(super) fn link_needs(&mut self, raws: &[RawStage], needs: &mut [Vec<Edge>]) {
        let by_name: HashMap<&str, usize> = raws
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.as_str(), i))
            .collect();
        for (stage, raw) in raws.iter().enumerate() {
            for (name, span) in &raw.needs {
                match by_name.get(name.as_str()) {
                    Some(&other) if other == stage => {
                        let message = format!("stage `{name}` needs itself");
                        self.error(
                            span.clone(),
                            message,
                            format!("remove `{name}` from `needs`"),
                        );
                    }
                    Some(&other) => needs[stage].push(Edge {
                        to: other,
                        span: span.clone(),
                    }),
                    None => {
                        let names = raws.iter().map(|r| r.name.as_str());
                        let help = match did_you_mean(name, names) {
                            Some(s) => format!("did you mean `{s}`?"),
                            None => format!("define [stages.{name}], or remove it from `needs`"),
                        };
                        let message =
                            format!("stage `{}` needs `{name}`, which is not a stage", raw.name);
                        self.error(span.clone(), message, help);
                    }
                }
            }
        }
    }

    /// Capacities: the declared ones plus 1 for each resource only stages mention; no stage may ask
    /// for more than the capacity.
    pub(super) fn check_resources(
        &mut self,
        raws: &[RawStage],
        mut capacities: BTreeMap<String, u32>,
    ) -> BTreeMap<String, u32> {
        let declared: HashSet<String> = capacities.keys().cloned().collect();
        for raw in raws {
            for (resource, amount, span) in &raw.resources {
                let capacity = *capacities.entry(resource.clone()).or_insert(1);
                if *amount <= capacity {
                    continue;
                }
                let message = format!(
                    "stage `{}` asks for {amount} `{resource}` but the capacity is {capacity}",
                    raw.name
                );
                let help = if declared.contains(resource) {
                    format!("lower it, or raise `{resource}` under [resources]")
                } else {
                    format!("declare the capacity: add {resource} = {amount} under [resources]")
                };
                self.error(span.clone(), message, help);
            }
        }
        capacities
    }

    /// A topological order of Stagefile indices, or a diagnostic for one cycle.
    pub(super) fn order(&mut self, raws: &[RawStage], needs: &mut [Vec<Edge>]) -> Vec<usize> {
        needs.iter_mut().for_each(graph::dedup_edges);
        match graph::topo_order(needs) {
            Ok(order) => order,
            Err(cycle) => {
                let mut names: Vec<&str> =
                    cycle.iter().map(|(s, _)| raws[*s].name.as_str()).collect();
                names.push(names[0]);
                let message = format!("dependency cycle: {}", names.join(" → "));
                let span = cycle[0].1.span.clone();
                self.error(span, message, "remove one of these needs");
                Vec::new()
            }
        }
    }

    /// The pipeline, or every diagnostic collected, sorted by file and position.
    pub(super) fn finish(
        mut self,
        raws: Vec<RawStage>,
        mut inputs: KeptInputs,
        needs: Vec<Vec<Edge>>,
        order: Vec<usize>,
        resources: BTreeMap<String, u32>,
    ) -> Result<Pipeline, Diagnostics> {
        if !self.diags.is_empty() {
            // The Stagefile first, then params files; stable, so one position keeps its pass order.
            let stagefile = Path::new(super::STAGEFILE);
            self.diags.sort_by_cached_key(|d: &Diagnostic| {
                let in_stagefile = d.file.as_deref() == Some(stagefile);
                (!in_stagefile, d.file.clone(), d.line, d.col)
            });
            return Err(Diagnostics(self.diags));
        }
        let mut position = vec![0; raws.len()];
        for (pos, &stage) in order.iter().enumerate() {
            position[stage] = pos;
        }
        let mut raws: Vec<Option<RawStage>> = raws.into_iter().map(Some).collect();
        let stages = order
            .iter()
            .map(|&i| {
                let raw = raws[i]
                    .take()
                    .expect("each stage appears once in the order");
                let mut stage_needs: Vec<usize> = needs[i].iter().map(|e| position[e.to]).collect();
                stage_needs.sort_unstable();
                stage_needs.dedup();
                into_stage(raw, stage_needs, std::mem::take(&mut inputs[i]))
            })
            .collect();
        Ok(Pipeline {
            workspace: self.workspace.to_path_buf(),
            stages,
            resources,
            remote: None,
        })
    }
}

/// What an input is to the other stages.
enum InputRole<'r> {
    /// It is, or lies inside, the out of this stage.
    ProducedBy(usize),
    /// It encloses the out (given) of this stage, so it would be read while that stage writes.
    Encloses(usize, &'r str),
    /// Nobody writes it: a source file or data set, tracked by content.
    Source,
}

fn input_role<'r>(index: &OutIndex<'r>, location: &Location) -> InputRole<'r> {
    let Location::Relative(path) = location else {
        return InputRole::Source;
    };
    if let Some(&producer) = paths::self_and_ancestors(path).find_map(|p| index.outs.get(p)) {
        return InputRole::ProducedBy(producer);
    }
    match index.enclosing.get(path.as_str()) {
        Some(&(stage, out)) => InputRole::Encloses(stage, out),
        None => InputRole::Source,
    }
}

fn into_stage(raw: RawStage, needs: Vec<usize>, inputs: Vec<String>) -> Stage {
    Stage {
        kind: raw.kind.map(|k| k.name().to_string()).unwrap_or_default(),
        needs,
        inputs,
        outs: raw.outs.into_iter().map(|(p, _)| p).collect(),
        cmd: raw.cmd,
        params: raw.params,
        params_file: raw.params_file,
        metrics: raw.metrics,
        resources: raw.resources.into_iter().map(|(r, n, _)| (r, n)).collect(),
        device: raw.device,
        description: raw.description,
        runs_on: raw.runs_on,
        name: raw.name,
    }
}

/// Message and help for out `mine` of `stage` clashing with `theirs` of `other`.
fn overlap_message(
    raws: &[RawStage],
    mine: (usize, &str),
    theirs: (usize, &str),
) -> (String, String) {
    let ((stage, out), (other, other_out)) = (mine, theirs);
    let (name, other_name) = (&raws[stage].name, &raws[other].name);
    if stage == other && out == other_out {
        let message = format!("out `{out}` of stage `{name}` is listed twice");
        return (message, "remove one of them".to_string());
    }
    if stage == other {
        let message = format!("outs `{other_out}` and `{out}` of stage `{name}` overlap");
        let keep = if out.len() < other_out.len() {
            out
        } else {
            other_out
        };
        return (message, format!("keep only `{keep}`"));
    }
    let relation = if out == other_out {
        "is also".to_string()
    } else if out.len() > other_out.len() {
        format!("lies inside `{other_out}`,")
    } else {
        format!("contains `{other_out}`,")
    };
    let message =
        format!("out `{out}` of stage `{name}` {relation} the out of stage `{other_name}`");
    (
        message,
        "give each stage its own out folder, apart from the others".to_string(),
    )
}
