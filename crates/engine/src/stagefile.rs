//! Loading a workspace's `Stagefile` into a validated `Pipeline`: parse with spans, check every
//! key, resolve params files and needs, find cycles. Every mistake is a `Diagnostic` with
//! file:line:col.
//!
//! Loading runs in passes, each collecting diagnostics rather than stopping at the first:
//! 1. each stage table on its own (keys, types, kind rules, paths, inline params) → `RawStage`,
//!    then the params files, read in parallel, then every stage's params checked by its kind;
//! 2. across stages: outs that overlap, inputs produced by another stage (implicit needs), needs;
//! 3. resources against capacities, then the order (Kahn) or a cycle.

mod executor;
#[cfg(test)]
mod executor_tests;
#[cfg(test)]
mod fuzz_tests;
mod graph;
mod link;
mod params;
mod params_check;
mod paths;
mod syntax;
#[cfg(test)]
mod tests;
mod top_level;

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};

use super::diagnostic::{Diagnostic, Diagnostics, did_you_mean, list_choices};
use crate::kind::{Kind, Kinds};
use executor::ExecutorName;
pub use executor::RunsOn;
pub use params_check::check_overrides;
use paths::{Location, PathError};
use syntax::syntax_error;

/// A validated pipeline. `stages` is in a topological order (every stage after the stages it
/// needs), ties broken by order in the Stagefile.
#[derive(Clone, Debug)]
pub struct Pipeline {
    pub workspace: PathBuf,
    pub stages: Vec<Stage>,
    /// Capacities from the top-level `[resources]` table, e.g. `gpus = 1`, plus a capacity of 1 for
    /// each resource a stage asks for that the table does not declare.
    pub resources: BTreeMap<String, u32>,
    /// The shared cache's URL, from `[remote] url = "…"` (`vlmflow_store::remote`).
    pub remote: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Stage {
    pub name: String,
    pub kind: String,
    /// Indices into `Pipeline::stages`: explicit `needs` plus stages whose outs contain one of this
    /// stage's inputs. Sorted, no duplicates.
    pub needs: Vec<usize>,
    /// Workspace-relative normalized paths ("data/raw", no "./", no trailing "/") or absolute
    /// paths, excluding inputs that lie inside another stage's outs (those became `needs`). Each
    /// exists. In the order written, without duplicates; an absolute path inside the workspace is
    /// made relative.
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
    /// Here, or as a Slurm batch job (`executor`, `slurm`).
    pub runs_on: RunsOn,
}

impl Pipeline {
    pub fn stage_index(&self, name: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.name == name)
    }
}

const STAGEFILE: &str = "Stagefile";
const TOP_KEYS: [&str; 5] = ["executor", "remote", "resources", "slurm", "stages"];
const STAGE_KEYS: [&str; 12] = [
    "kind",
    "description",
    "cmd",
    "needs",
    "inputs",
    "outs",
    "params",
    "metrics",
    "resources",
    "device",
    "executor",
    "slurm",
];

/// Params JSON from TOML text, converted exactly as params files are; None if it is not valid TOML.
pub fn params_from_toml(text: &str) -> Option<serde_json::Value> {
    params::toml_text_to_json(text)
}

/// Read `<workspace>/Stagefile` and everything it points at.
pub fn load(workspace: &Path, kinds: &Kinds) -> Result<Pipeline, Diagnostics> {
    let path = workspace.join(STAGEFILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        let message = format!("cannot read {}: {e}", path.display());
        Diagnostic::error(message)
            .with_help("run vlmflow in a workspace (a folder with a Stagefile), or create one")
    })?;
    // Params files are most of the reading; fetch `stages/*.toml` while the Stagefile is parsed.
    let (doc, prefetched) = rayon::join(|| DeTable::parse(&text), || params::prefetch(workspace));
    let doc = doc.map_err(|e| syntax_error(Path::new(STAGEFILE), &text, &e))?;
    let mut loader = Loader::new(workspace, &text, kinds);
    let (capacities, stage_entries) = loader.top_level(doc.get_ref());
    let mut raws: Vec<RawStage> = stage_entries
        .into_iter()
        .map(|(key, value)| loader.stage(key, value))
        .collect();
    loader.read_params_files(&mut raws, &prefetched);
    loader.check_params(&raws, &prefetched);
    let outs = loader.index_outs(&raws);
    let (mut needs, inputs) = loader.link_inputs(&raws, &outs);
    loader.link_needs(&raws, &mut needs);
    let resources = loader.check_resources(&raws, capacities);
    let order = loader.order(&raws, &mut needs);
    let remote = loader.remote.take();
    let mut pipeline = loader.finish(raws, inputs, needs, order, resources)?;
    pipeline.remote = remote;
    Ok(pipeline)
}

/// A key of the parsed Stagefile and its value.
type Entry<'d> = (&'d Spanned<DeString<'d>>, &'d Spanned<DeValue<'d>>);

/// A stage as written (paths normalized), with the spans needed to locate later mistakes.
struct RawStage {
    name: String,
    name_span: Range<usize>,
    kind: Option<&'static dyn Kind>,
    needs: Vec<(String, Range<usize>)>,
    inputs: Vec<(Location, Range<usize>)>,
    outs: Vec<(String, Range<usize>)>,
    cmd: Option<String>,
    params: serde_json::Value,
    params_file: Option<String>,
    /// The span of an inline `params` table, to locate its mistakes.
    params_inline: Option<Range<usize>>,
    /// The params could not be read (a diagnostic says why): their kind does not check them.
    params_failed: bool,
    /// A params file still to read (see `Loader::read_params_files`).
    params_request: Option<params::FileRequest>,
    metrics: Option<String>,
    resources: Vec<(String, u32, Range<usize>)>,
    device: Option<String>,
    description: Option<String>,
    runs_on: RunsOn,
}

/// Where kind-dependent keys were written, so the kind rules can point at them.
#[derive(Default)]
struct Written {
    cmd: Option<Range<usize>>,
    metrics: Option<Range<usize>>,
    /// The `outs` value's span and, when it had the right type, how many entries it held.
    outs: Option<(Range<usize>, Option<usize>)>,
}

/// Every out, by path, and every folder that encloses an out: what inputs are checked against.
struct OutIndex<'r> {
    /// out path → the stage writing it.
    outs: HashMap<&'r str, usize>,
    /// folder enclosing an out → (stage, that out).
    enclosing: HashMap<&'r str, (usize, &'r str)>,
}

struct Loader<'a> {
    workspace: &'a Path,
    /// The workspace as an absolute, normalized path, to recognize absolute paths that lie in it.
    workspace_abs: String,
    text: &'a str,
    kinds: &'a Kinds,
    diags: Vec<Diagnostic>,
    remote: Option<String>,
    /// The top-level `executor`, for stages that do not name one.
    default_executor: Option<ExecutorName>,
    /// The top-level `[slurm]` table.
    slurm_defaults: crate::slurm::options::SlurmOptions,
}

impl<'a> Loader<'a> {
    fn new(workspace: &'a Path, text: &'a str, kinds: &'a Kinds) -> Self {
        let workspace_abs = paths::workspace_root(workspace);
        Loader {
            workspace,
            workspace_abs,
            text,
            kinds,
            diags: Vec::new(),
            remote: None,
            default_executor: None,
            slurm_defaults: Default::default(),
        }
    }

    fn error(&mut self, span: Range<usize>, message: impl Into<String>, help: impl Into<String>) {
        let d = Diagnostic::at(Path::new(STAGEFILE), self.text, span, message).with_help(help);
        self.diags.push(d);
    }

    // ---- pass 1: the document and each stage on its own ----

    fn stage(&mut self, key: &Spanned<DeString<'_>>, value: &Spanned<DeValue<'_>>) -> RawStage {
        let mut raw = RawStage {
            name: key.get_ref().to_string(),
            name_span: key.span(),
            kind: None,
            needs: Vec::new(),
            inputs: Vec::new(),
            outs: Vec::new(),
            cmd: None,
            params: serde_json::Value::Object(Default::default()),
            params_file: None,
            params_inline: None,
            params_failed: false,
            params_request: None,
            metrics: None,
            resources: Vec::new(),
            device: None,
            description: None,
            runs_on: RunsOn::Local,
        };
        let name_ok = valid_stage_name(&raw.name);
        if !name_ok {
            self.error(
                raw.name_span.clone(),
                format!("invalid stage name `{}`", raw.name),
                "a stage name starts with a letter or digit, then letters, digits, `_` or `-`",
            );
        }
        let Some(table) = value.get_ref().as_table() else {
            let help = format!("declare it as [stages.{}] followed by its keys", raw.name);
            self.error(
                value.span(),
                format!("stage `{}` must be a table", raw.name),
                help,
            );
            return raw;
        };
        let mut kind = None;
        let mut written = Written::default();
        let mut params = None;
        let (mut executor, mut slurm) = (None, None);
        for (k, v) in table.iter() {
            match k.get_ref().as_ref() {
                "kind" => kind = self.string("kind", v).map(|s| (s, v.span())),
                "description" => raw.description = self.string("description", v),
                "device" => raw.device = self.device(v),
                "cmd" => {
                    raw.cmd = self.string("cmd", v);
                    written.cmd = Some(k.span());
                }
                "needs" => raw.needs = self.strings("needs", v).unwrap_or_default(),
                "inputs" => raw.inputs = self.inputs(v),
                "outs" => {
                    let entries = self.strings("outs", v);
                    written.outs = Some((v.span(), entries.as_ref().map(Vec::len)));
                    raw.outs = self.outs(entries.unwrap_or_default());
                }
                "params" => params = Some(v),
                "metrics" => {
                    raw.metrics = self.metrics(v);
                    written.metrics = Some(k.span());
                }
                "resources" => raw.resources = self.resource_table(v),
                "executor" => executor = self.executor(v),
                "slurm" => slurm = Some((self.slurm_table(v), v.span())),
                other => self.unknown_stage_key(&raw.name, other, k.span()),
            }
        }
        self.kind_rules(&mut raw, kind, &written);
        raw.runs_on = self.runs_on(&raw.name, executor, slurm);
        if name_ok || params.is_some() {
            self.params(&mut raw, params);
        }
        raw
    }

    fn unknown_stage_key(&mut self, stage: &str, key: &str, span: Range<usize>) {
        let help = match did_you_mean(key, STAGE_KEYS) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("the keys of a stage are {}", list_choices(STAGE_KEYS)),
        };
        self.error(
            span,
            format!("unknown key `{key}` in stage `{stage}`"),
            help,
        );
    }

    fn string(&mut self, key: &str, value: &Spanned<DeValue<'_>>) -> Option<String> {
        if let Some(s) = value.get_ref().as_str() {
            return Some(s.to_string());
        }
        let help = format!("write {key} = \"...\"");
        self.error(value.span(), format!("`{key}` must be a string"), help);
        None
    }

    fn device(&mut self, value: &Spanned<DeValue<'_>>) -> Option<String> {
        let name = self.string("device", value)?;
        match crate::device::check(&name) {
            Ok(()) => Some(name),
            Err(message) => {
                let help = "write device = \"cpu\" or device = \"cuda\"".to_string();
                self.error(value.span(), message, help);
                None
            }
        }
    }

    /// A string or an array of strings (one string is a one-entry list); `None` on a wrong type.
    fn strings(
        &mut self,
        key: &str,
        value: &Spanned<DeValue<'_>>,
    ) -> Option<Vec<(String, Range<usize>)>> {
        let message = format!("`{key}` must be a string or an array of strings");
        let help = format!("write {key} = [\"...\", \"...\"]");
        let items = match value.get_ref() {
            DeValue::String(s) => return Some(vec![(s.to_string(), value.span())]),
            DeValue::Array(items) => items,
            _ => {
                self.error(value.span(), message, help);
                return None;
            }
        };
        let mut strings = Vec::with_capacity(items.len());
        for item in items.iter() {
            match item.get_ref().as_str() {
                Some(s) => strings.push((s.to_string(), item.span())),
                None => {
                    self.error(item.span(), message, help);
                    return None;
                }
            }
        }
        Some(strings)
    }

    fn inputs(&mut self, value: &Spanned<DeValue<'_>>) -> Vec<(Location, Range<usize>)> {
        let mut inputs = Vec::new();
        for (raw, span) in self.strings("inputs", value).unwrap_or_default() {
            match paths::normalize(&raw, &self.workspace_abs) {
                Ok(Location::Relative(p)) if p.is_empty() => self.error(
                    span,
                    format!("input `{raw}` is the whole workspace"),
                    "list the files or folders the stage reads",
                ),
                Ok(location) => inputs.push((location, span)),
                Err(PathError::LeavesWorkspace) => self.error(
                    span,
                    format!("input `{raw}` leaves the workspace"),
                    "use an absolute path for data outside the workspace",
                ),
            }
        }
        inputs
    }

    fn outs(&mut self, entries: Vec<(String, Range<usize>)>) -> Vec<(String, Range<usize>)> {
        let mut outs = Vec::new();
        for (raw, span) in entries {
            if let Some(path) = self.workspace_path("out", &raw, span.clone()) {
                match paths::reserved_root(&path) {
                    Some(reserved) => self.error(
                        span,
                        format!("out `{raw}` would overwrite `{reserved}`, which vlmflow owns"),
                        "write outputs elsewhere in the workspace, e.g. `out/<stage>`",
                    ),
                    None => outs.push((path, span)),
                }
            }
        }
        outs
    }

    fn metrics(&mut self, value: &Spanned<DeValue<'_>>) -> Option<String> {
        let raw = self.string("metrics", value)?;
        self.workspace_path("metrics file", &raw, value.span())
    }

    /// A path that must lie strictly inside the workspace (outs, metrics), normalized.
    fn workspace_path(&mut self, what: &str, raw: &str, span: Range<usize>) -> Option<String> {
        match paths::normalize(raw, &self.workspace_abs) {
            Ok(Location::Relative(p)) if !p.is_empty() => Some(p),
            _ => {
                let message = format!("{what} `{raw}` must be a path inside the workspace");
                let help = "write a workspace-relative path such as `out/<stage>/...`";
                self.error(span, message, help);
                None
            }
        }
    }

    /// A table of non-negative integers: `[resources]` capacities or a stage's requests.
    fn resource_table(&mut self, value: &Spanned<DeValue<'_>>) -> Vec<(String, u32, Range<usize>)> {
        let Some(table) = value.get_ref().as_table() else {
            let message = "`resources` must be a table of resource amounts";
            self.error(value.span(), message, "write resources = { gpus = 1 }");
            return Vec::new();
        };
        let mut resources = Vec::new();
        for (name, amount) in table.iter() {
            let n = amount.get_ref().as_integer();
            match n.and_then(|i| u32::from_str_radix(i.as_str(), i.radix()).ok()) {
                Some(n) => resources.push((name.get_ref().to_string(), n, amount.span())),
                None => self.error(
                    amount.span(),
                    format!(
                        "resource `{}` must be a non-negative integer",
                        name.get_ref()
                    ),
                    format!("write {} = 1", name.get_ref()),
                ),
            }
        }
        resources
    }

    /// Which keys a stage must or must not have depends on whether its kind runs a command.
    fn kind_rules(
        &mut self,
        raw: &mut RawStage,
        kind: Option<(String, Range<usize>)>,
        w: &Written,
    ) {
        raw.kind = self.resolve_kind(&raw.name, raw.name_span.clone(), kind);
        match raw.kind {
            Some(kind) if kind.runs_command() => self.command_rules(raw, w),
            Some(kind) => self.built_in_rules(raw, kind.name(), w),
            None => {}
        }
    }

    fn resolve_kind(
        &mut self,
        stage: &str,
        name_span: Range<usize>,
        kind: Option<(String, Range<usize>)>,
    ) -> Option<&'static dyn Kind> {
        let names: Vec<&'static str> = self.kinds.names().collect();
        let Some((kind, kind_span)) = kind else {
            let message = format!("stage `{stage}` has no `kind`");
            let help = format!(
                "add kind = \"cmd\" or a built-in kind: {}",
                list_choices(names)
            );
            self.error(name_span, message, help);
            return None;
        };
        let found = self.kinds.find(&kind);
        if found.is_none() {
            let help = match did_you_mean(&kind, names.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("the kinds are {}", list_choices(names)),
            };
            self.error(kind_span, format!("unknown kind `{kind}`"), help);
        }
        found
    }

    /// A command stage says what to run and what it writes.
    fn command_rules(&mut self, raw: &RawStage, w: &Written) {
        let name = &raw.name;
        if w.cmd.is_none() {
            let message = format!("stage `{name}` runs a command but has no `cmd`");
            let help = "add cmd = \"...\", the shell command that writes its outs";
            self.error(raw.name_span.clone(), message, help);
        }
        let missing_outs = match &w.outs {
            None => Some(raw.name_span.clone()),
            Some((span, Some(0))) => Some(span.clone()),
            Some(_) => None,
        };
        if let Some(span) = missing_outs {
            let message = format!("stage `{name}` has no `outs`");
            let help = format!("list what its command writes, e.g. outs = [\"out/{name}\"]");
            self.error(span, message, help);
        }
    }

    /// A built-in stage runs vlmflow's own code: no command, one out folder (by default
    /// `out/<stage>`), and metrics it records itself.
    fn built_in_rules(&mut self, raw: &mut RawStage, kind: &str, w: &Written) {
        let name = &raw.name;
        if let Some(span) = w.cmd.clone() {
            let message = format!("`cmd` is only for command stages; `{name}` has kind `{kind}`");
            self.error(span, message, "remove `cmd`, or set kind = \"cmd\"");
        }
        if let Some(span) = w.metrics.clone() {
            let message =
                format!("`metrics` is only for command stages; `{name}` has kind `{kind}`");
            let help = "remove `metrics`: built-in kinds record their metrics themselves";
            self.error(span, message, help);
        }
        if let Some((_, span)) = raw.outs.get(1) {
            let message = format!("a `{kind}` stage writes a single out");
            self.error(span.clone(), message, "keep one path in `outs`");
        }
        if raw.outs.is_empty() {
            raw.outs
                .push((format!("out/{name}"), raw.name_span.clone()));
        }
    }
}

/// `[A-Za-z0-9][A-Za-z0-9_-]*`: no dots, since `--set STAGE.PARAM=V` splits at the first one.
fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}
