//! Stage kinds: the only room where the engine and the ML code meet. A kind reads its params, asks
//! its context for inputs and upstream artifacts, does its work, and hands back outputs (files in
//! its out folder, or the declared outs of a command) and metrics through `StageContext`.
//!
//! The layout has one rule: each kind is a file or a folder at the top level (a folder holds that
//! kind's own helpers, e.g. `download/`'s sources), and what several kinds share is under
//! `shared/`. No kind imports another kind. `chat` is not a kind: it is the chat session `vlmflow
//! chat` drives (a bundle loaded, the model's side of each turn), here because it needs the ML code.

pub mod chat;
mod chat_export;
mod clip_train;
mod download;
mod finetune;
mod lm_train;
mod preprocess;
mod shared;
mod vlm_pretrain;
mod vqa_eval;
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
        &vqa_eval::VqaEval,
    ])
}

/// The candle device a stage asked for with `device = "…"` in the Stagefile or `--device`
/// (default: CPU).
pub(crate) fn device(ctx: &StageContext<'_>) -> anyhow::Result<candle_core::Device> {
    open_device(ctx.device).map_err(|e| anyhow::anyhow!("stage `{}`: {e}", ctx.stage))
}

/// The candle device named `cpu`, `cuda` (the first GPU) or `cuda:N`.
pub fn open_device(name: &str) -> anyhow::Result<candle_core::Device> {
    vlmflow_engine::device::check(name).map_err(anyhow::Error::msg)?;
    match name {
        "cpu" => Ok(candle_core::Device::Cpu),
        "cuda" => cuda_device(0),
        _ => {
            let index = &name["cuda:".len()..];
            let index = index
                .parse()
                .map_err(|_| anyhow::anyhow!("GPU index {index} in `{name}` is out of range"))?;
            cuda_device(index)
        }
    }
}

#[cfg(feature = "cuda")]
fn cuda_device(index: usize) -> anyhow::Result<candle_core::Device> {
    candle_core::Device::new_cuda(index).map_err(|e| {
        // The driver's error is the message; a backtrace (RUST_BACKTRACE) would bury it.
        let e = match e {
            candle_core::Error::WithBacktrace { inner, .. } => *inner,
            e => e,
        };
        anyhow::anyhow!(
            "no CUDA GPU {index} could be opened ({e}): is an NVIDIA driver installed and the GPU \
             visible (`nvidia-smi`)?"
        )
    })
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(_index: usize) -> anyhow::Result<candle_core::Device> {
    anyhow::bail!(
        "this vlmflow was built without the `cuda` feature: rebuild with \
         `cargo build --release --features cuda` (scripts/gpu/cuda-env.sh sets up nvcc)"
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

#[cfg(test)]
mod tests {
    use serde_json::json;
    use vlmflow_engine::kind::{ParamFault, ParamKey, ParamProblem};

    fn check(kind: &str, params: serde_json::Value) -> Vec<ParamProblem> {
        super::kinds().find(kind).unwrap().check_params(&params)
    }

    #[test]
    fn kinds_check_their_params_as_they_read_them() {
        assert!(check("download", json!({"count": 10, "seed": 1})).is_empty());
        let wrong = check("download", json!({"count": "many"}));
        let expected = "invalid type: string \"many\", expected u64";
        assert_eq!(wrong, [ParamProblem::invalid(&["count"], expected)]);
        let unknown = check("download", json!({"source": "synthetic", "image_sise": 8}));
        let ParamFault::Unknown { known } = &unknown[0].fault else {
            panic!("{unknown:?}")
        };
        assert!(known.contains(&"image_size".to_string()) && known.contains(&"source".into()));
        let source = check("download", json!({"source": "cifar"}));
        assert_eq!(source[0].path, [ParamKey::Key("source".into())]);

        let finetune = json!({"steps": 5, "lr": 0.1, "lora": {"rank": 4, "alpha": 8, "targets": [], "rnak": 1}});
        let nested = check("finetune", finetune);
        assert_eq!(nested[0].dotted(), "lora.rnak");
        let hyper = check(
            "vlm-pretrain",
            json!({"steps": "5", "lr": 0.1, "querys": 4}),
        );
        let dotted: Vec<String> = hyper.iter().map(ParamProblem::dotted).collect();
        assert_eq!(dotted, ["querys", "steps"]);
        assert!(check("lm-train", json!({"steps": 5, "lr": 0.1})).is_empty());
        assert!(check("chat-export", json!({})).is_empty());
        assert_eq!(check("chat-export", json!({"x": 1}))[0].dotted(), "x");
    }
}
