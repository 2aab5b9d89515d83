//! Stage kinds: the only room where the engine and the ML code meet. A kind reads its params, asks
//! its context for inputs and upstream artifacts, does its work, and hands back outputs (files in
//! its out folder, or the declared outs of a command) and metrics through `StageContext`.

mod chat_export;
mod clip_train;
mod cmd;
mod download;
mod finetune;
mod lm_train;
mod params;
mod preprocess;
mod train_rules;
mod training;
mod vlm_pretrain;
mod vlm_train;
mod vlm_vision;
mod zero_shot;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::Value;

use crate::engine::stagefile::KindSpec;

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
    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()>;
}

static KINDS: &[&dyn Kind] = &[
    &cmd::Cmd,
    &download::Download,
    &preprocess::Preprocess,
    &clip_train::ClipTrain,
    &zero_shot::ZeroShotEval,
    &lm_train::LmTrain,
    &vlm_pretrain::VlmPretrain,
    &finetune::Finetune,
    &chat_export::ChatExport,
];

pub fn all() -> &'static [&'static dyn Kind] {
    KINDS
}

pub fn find(name: &str) -> Option<&'static dyn Kind> {
    KINDS.iter().copied().find(|k| k.name() == name)
}

/// What the Stagefile loader needs to know of the kinds.
pub fn kind_specs() -> Vec<KindSpec> {
    KINDS
        .iter()
        .map(|k| KindSpec {
            name: k.name(),
            runs_command: k.runs_command(),
        })
        .collect()
}

/// The candle device a stage asked for with `device = "…"` in the Stagefile (default: CPU).
pub(crate) fn device(ctx: &StageContext<'_>) -> anyhow::Result<candle_core::Device> {
    match ctx.device {
        "cpu" => Ok(candle_core::Device::Cpu),
        "cuda" => cuda_device(ctx),
        other => anyhow::bail!(
            "stage `{}`: unknown device `{other}`: expected \"cpu\" or \"cuda\"",
            ctx.stage
        ),
    }
}

#[cfg(feature = "cuda")]
fn cuda_device(_ctx: &StageContext<'_>) -> anyhow::Result<candle_core::Device> {
    Ok(candle_core::Device::new_cuda(0)?)
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(ctx: &StageContext<'_>) -> anyhow::Result<candle_core::Device> {
    anyhow::bail!(
        "stage `{}` asks for device = \"cuda\", but this vlmflow was built without the `cuda` feature: \
         rebuild with `cargo build --release --features cuda` on a machine with nvcc",
        ctx.stage
    )
}

/// Read a JSON file of an upstream artifact; errors name the file.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    use anyhow::Context;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not the JSON expected", path.display()))
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
    /// without run ids or times: what an exported bundle records as its provenance.
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
        crate::engine::interrupt::requested()
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
