//! CONTRACT STUB — helper A replaces this file.
//! Loading a workspace's `Stagefile` into a validated `Pipeline`: parse with spans, check every key,
//! resolve params files and needs, find cycles. Every mistake is a `Diagnostic` with file:line:col.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::diagnostic::Diagnostics;

/// What the engine knows of a kind while loading: its name and whether it runs a shell command.
#[derive(Clone, Copy, Debug)]
pub struct KindSpec {
    pub name: &'static str,
    /// `cmd`: requires `cmd = "..."` and at least one `outs` entry. Built-in kinds forbid `cmd`,
    /// and their outs default to `["out/<stage>"]` (at most one path may be given).
    pub runs_command: bool,
}

/// A validated pipeline. `stages` is in a topological order (every stage after the stages it needs),
/// ties broken by order in the Stagefile.
#[derive(Clone, Debug)]
pub struct Pipeline {
    pub workspace: PathBuf,
    pub stages: Vec<Stage>,
    /// Capacities from the top-level `[resources]` table, e.g. `gpus = 1`.
    pub resources: BTreeMap<String, u32>,
}

#[derive(Clone, Debug)]
pub struct Stage {
    pub name: String,
    pub kind: String,
    /// Indices into `Pipeline::stages`: explicit `needs` plus stages whose outs contain one of this
    /// stage's inputs. Sorted, no duplicates.
    pub needs: Vec<usize>,
    /// Workspace-relative normalized paths ("data/raw", no "./", no trailing "/") or absolute paths,
    /// excluding inputs that lie inside another stage's outs (those became `needs`). Each exists.
    pub inputs: Vec<String>,
    /// Workspace-relative normalized paths. Never overlapping another stage's outs.
    pub outs: Vec<String>,
    pub cmd: Option<String>,
    /// The params as JSON (an object; `{}` when the stage has none). TOML datetimes become strings.
    pub params: serde_json::Value,
    /// The params file, workspace-relative, when params came from a file.
    pub params_file: Option<String>,
    /// Workspace-relative path of a JSON metrics file the command writes.
    pub metrics: Option<String>,
    /// Resources the stage holds while it runs, e.g. {"gpus": 1}.
    pub resources: BTreeMap<String, u32>,
    pub device: Option<String>,
    pub description: Option<String>,
}

impl Pipeline {
    pub fn stage_index(&self, _name: &str) -> Option<usize> {
        unimplemented!()
    }
}

/// Read `<workspace>/Stagefile` and everything it points at.
pub fn load(_workspace: &Path, _kinds: &[KindSpec]) -> Result<Pipeline, Diagnostics> {
    unimplemented!()
}
