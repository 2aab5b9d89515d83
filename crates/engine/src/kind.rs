//! The contract a kind implements, and the registry of kinds the binary hands the engine. The engine
//! calls kinds only through this: it never knows what a kind does (DESIGN.md, "the one rule").

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::Value;

/// One kind of stage. Implementations must be deterministic functions of what the key covers
/// (params, inputs, upstream artifacts, implementation version).
pub trait Kind: Send + Sync {
    fn name(&self) -> &'static str;
    /// Bump whenever a change to the implementation changes what it produces: every stage of this
    /// kind then reruns, and `status` says "implementation of <kind> changed".
    fn version(&self) -> &'static str;
    /// A command kind writes its declared outs into the workspace itself; other kinds write into
    /// `StageContext::out_dir`.
    fn runs_command(&self) -> bool {
        false
    }
    /// Whether the kind computes on a device (CPU or GPU), so that `vlmflow build --device` moves
    /// its stages. A stage of another kind moves only if its Stagefile entry names a device.
    fn uses_device(&self) -> bool {
        false
    }
    /// Whether the kind reads `StageContext::lineage`. The lineage is a tree of every run upstream,
    /// so it is built only for kinds that record it (an exported bundle): on a wide DAG it is large.
    fn reads_lineage(&self) -> bool {
        false
    }
    /// The mistakes in a stage's params, checked when the Stagefile loads, before anything runs:
    /// what reading them when the stage runs would refuse. The default accepts any params (`cmd`
    /// hands them to its command as they are).
    fn check_params(&self, _params: &Value) -> Vec<ParamProblem> {
        Vec::new()
    }
    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()>;
}

/// The kinds a build can use, handed to the engine by the binary. `cmd` is always among them.
#[derive(Clone)]
pub struct Kinds {
    list: Vec<&'static dyn Kind>,
}

impl Kinds {
    /// The given kinds, plus `cmd` unless the list already has a kind of that name.
    pub fn new(list: &[&'static dyn Kind]) -> Kinds {
        let mut all = list.to_vec();
        if !all.iter().any(|k| k.name() == "cmd") {
            all.insert(0, &crate::cmd_kind::Cmd);
        }
        Kinds { list: all }
    }

    /// Only `cmd`: what the engine's own tests build with.
    pub fn cmd_only() -> Kinds {
        Kinds::new(&[])
    }

    pub fn find(&self, name: &str) -> Option<&'static dyn Kind> {
        self.list.iter().copied().find(|k| k.name() == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &'static dyn Kind> + '_ {
        self.list.iter().copied()
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.iter().map(|k| k.name())
    }
}

/// One mistake in a stage's params, as a kind reports it: where it is and what is wrong. The
/// Stagefile loader locates it in the params file or inline table.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamProblem {
    /// From the top of the params to the mistake: the unknown key itself, the table lacking a
    /// key, or the key whose value is wrong. Empty for the params as a whole.
    pub path: Vec<ParamKey>,
    pub fault: ParamFault,
}

/// One step into the params: a table's key or a list's position.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamKey {
    Key(String),
    Index(usize),
}

#[derive(Clone, Debug, PartialEq)]
pub enum ParamFault {
    /// The last key of the path is no param of its table; `known` are the names that are.
    Unknown { known: Vec<String> },
    /// The table at the path lacks the required `key`.
    Missing { key: String },
    /// The value at the path is refused, in serde's words (`invalid type: string "many",
    /// expected u64`) or the kind's.
    Invalid(String),
}

impl ParamProblem {
    /// A refused value at `path` (keys from the top of the params).
    pub fn invalid(path: &[&str], message: impl Into<String>) -> Self {
        ParamProblem {
            path: path.iter().map(|k| ParamKey::Key(k.to_string())).collect(),
            fault: ParamFault::Invalid(message.into()),
        }
    }

    /// The path as written in TOML's dotted form: `lora.rank`, `templates[1]`.
    pub fn dotted(&self) -> String {
        let mut out = String::new();
        for key in &self.path {
            match key {
                ParamKey::Key(k) if out.is_empty() => out.push_str(k),
                ParamKey::Key(k) => {
                    out.push('.');
                    out.push_str(k);
                }
                ParamKey::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }
}

/// Live progress of a running stage, shown as a bar on a terminal and as periodic lines elsewhere.
pub trait Progress: Send + Sync {
    fn update(&self, position: u64, length: Option<u64>, message: &str);
}

/// Where a running stage's metrics go: the engine writes them to the run database as they come.
pub trait MetricsSink: Send + Sync {
    fn record(&self, name: &str, step: Option<i64>, value: f64);
}

/// The narrow window a kind sees of the engine.
pub struct StageContext<'a> {
    pub stage: &'a str,
    pub workspace: &'a Path,
    pub params: &'a Value,
    /// The params as a JSON file (what `$VLMFLOW_PARAMS` names for commands).
    pub params_file: &'a Path,
    pub cmd: Option<&'a str>,
    pub device: &'a str,
    /// Where a built-in kind writes its artifact; it becomes `outs[0]` once the run succeeds.
    pub out_dir: &'a Path,
    /// Survives an interrupted run with the same key, so a long run can resume from it. Not created
    /// by the engine: a kind that checkpoints creates it; it is removed when the run succeeds.
    pub checkpoint_dir: &'a Path,
    /// Needed stage → the workspace path where its artifact is materialized.
    pub upstream: BTreeMap<String, PathBuf>,
    /// Needed stage → the lineage of its artifact (runs, params, inputs, metrics, recursively),
    /// without run ids or times: what an exported bundle records as its provenance. Empty unless
    /// the kind `reads_lineage`.
    pub lineage: BTreeMap<String, Value>,
    pub inputs: &'a [String],
    pub metrics_file: Option<&'a Path>,
    pub(crate) log: Mutex<std::fs::File>,
    pub(crate) log_path: &'a Path,
    pub(crate) metrics: &'a dyn MetricsSink,
    pub(crate) progress: &'a dyn Progress,
}

impl StageContext<'_> {
    /// Append a line to the run's log.
    pub fn log(&self, line: &str) {
        if let Ok(mut f) = self.log.lock() {
            let _ = writeln!(f, "{line}");
        }
    }

    /// Record a metric: `step` None for a final value, Some(step) for a series (loss per step).
    pub fn metric(&self, name: &str, step: Option<i64>, value: f64) {
        self.metrics.record(name, step, value);
    }

    pub fn progress(&self, position: u64, length: Option<u64>, message: &str) {
        self.progress.update(position, length, message);
    }

    /// True once the user asked the build to stop (Ctrl-C, SIGTERM): save a checkpoint and return.
    pub fn interrupted(&self) -> bool {
        crate::interrupt::requested()
    }

    /// The upstream artifact of a needed stage.
    pub fn upstream(&self, stage: &str) -> anyhow::Result<&Path> {
        self.upstream
            .get(stage)
            .map(PathBuf::as_path)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "stage `{}` does not need `{stage}`: add it to `needs` in the Stagefile",
                    self.stage
                )
            })
    }

    /// The one needed stage whose artifact passes `test` (e.g. holds a `meta.json`), described
    /// as `what` in the error when there is none or more than one.
    pub fn find_upstream(&self, what: &str, test: impl Fn(&Path) -> bool) -> anyhow::Result<&Path> {
        let found: Vec<&Path> = self
            .upstream
            .values()
            .map(PathBuf::as_path)
            .filter(|p| test(p))
            .collect();
        match found.as_slice() {
            [one] => Ok(one),
            _ => anyhow::bail!(
                "stage `{}` needs exactly one {what} in `needs`; found {}: fix `needs` in the Stagefile",
                self.stage,
                found.len()
            ),
        }
    }

    /// The log file itself, for kinds that hand it to a child process.
    pub fn log_file(&self) -> std::io::Result<std::fs::File> {
        self.log
            .lock()
            .map_err(|_| std::io::Error::other("log poisoned"))?
            .try_clone()
    }

    pub fn log_path(&self) -> &Path {
        self.log_path
    }
}
