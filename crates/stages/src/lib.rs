//! Stage kinds: the only room where the engine and the ML code meet. A kind reads its params, asks
//! its context for inputs and upstream artifacts, does its work, and hands back outputs (files in
//! its out folder, or the declared outs of a command) and metrics through `StageContext`.

pub mod chat;
mod chat_export;
mod clip_train;
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

use std::path::Path;

use vlmflow_engine::kind::{Kind, Kinds, StageContext};

/// Every built-in kind, for the binary to hand the engine.
pub fn kinds() -> Kinds {
    Kinds::new(&[
        &download::Download,
        &preprocess::Preprocess,
        &clip_train::ClipTrain,
        &zero_shot::ZeroShotEval,
        &lm_train::LmTrain,
        &vlm_pretrain::VlmPretrain,
        &finetune::Finetune,
        &chat_export::ChatExport,
    ])
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
