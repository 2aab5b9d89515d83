//! Agreement with Hugging Face `transformers`: the folders under `tests/fixtures/qwen2_reference/`
//! were written by `scripts/reference/qwen2_reference.py` (a tiny random `Qwen2ForCausalLM`,
//! `save_pretrained`, and its float64 logits for fixed inputs). Here the same folders go through
//! our loader and our forward, and the logits must agree within 1e-4 (f32).

use std::path::PathBuf;

use candle_core::{DType, Device, IndexOp, Result, Tensor};

use super::qwen2_load::load_hf_folder;
use crate::infer::generate::{Prompt, SamplingConfig, generate, generate_uncached};
use crate::ops::with_composite;

const TOL: f32 = 1e-4;

fn case_dir(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/qwen2_reference")
        .join(case)
}

fn expected(case: &str) -> Result<std::collections::HashMap<String, Tensor>> {
    candle_core::safetensors::load(case_dir(case).join("expected.safetensors"), &Device::Cpu)
}

/// Max |a − b|, infinite if either holds a NaN (which `f32::max` and candle's `max` would skip).
pub(crate) fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    assert_eq!(a.dims(), b.dims());
    let d = (a - b)?.abs()?.flatten_all()?.to_vec1::<f32>()?;
    Ok(d.into_iter().fold(
        0f32,
        |m, x| if x.is_nan() { f32::INFINITY } else { m.max(x) },
    ))
}

fn ids(t: &Tensor) -> Result<Tensor> {
    t.to_dtype(DType::U32)
}

/// Max |ours − transformers| over the three logits cases, fused kernels or composite ops.
fn worst_logit_diff(case: &str, composite: bool) -> Result<f32> {
    let hf = load_hf_folder(&case_dir(case), &Device::Cpu)?;
    let m = &hf.model;
    let want = expected(case)?;
    let run = || -> Result<f32> {
        let mut worst = 0f32;
        let logits = m.forward_ids(&ids(&want["ids"])?, None)?;
        worst = worst.max(max_diff(&logits, &want["logits"])?);
        let logits = m.forward_embeds(&want["embeds"], None)?;
        worst = worst.max(max_diff(&logits, &want["embeds_logits"])?);
        // Left-padded batch: compare the real positions only.
        let pad: Vec<usize> = want["pad_left"]
            .to_vec1::<i64>()?
            .iter()
            .map(|&p| p as usize)
            .collect();
        let logits = m.forward_ids(&ids(&want["pad_ids"])?, Some(&pad))?;
        for (r, &p) in pad.iter().enumerate() {
            let t = logits.dim(1)? - p;
            let ours = logits.i(r)?.narrow(0, p, t)?;
            worst = worst.max(max_diff(&ours, &want["pad_logits"].i(r)?.narrow(0, p, t)?)?);
        }
        Ok(worst)
    };
    if composite {
        with_composite(run)
    } else {
        run()
    }
}

#[test]
fn logits_match_transformers_untied_f32() -> Result<()> {
    for composite in [false, true] {
        let d = worst_logit_diff("untied", composite)?;
        println!("untied, composite {composite}: max |Δ logits| = {d:e}");
        assert!(d <= TOL, "untied (composite {composite}): {d}");
    }
    Ok(())
}

#[test]
fn logits_match_transformers_tied_bf16_weights() -> Result<()> {
    for composite in [false, true] {
        let d = worst_logit_diff("tied_bf16", composite)?;
        println!("tied_bf16, composite {composite}: max |Δ logits| = {d:e}");
        assert!(d <= TOL, "tied_bf16 (composite {composite}): {d}");
    }
    Ok(())
}

#[test]
fn greedy_generation_matches_transformers() -> Result<()> {
    for case in ["untied", "tied_bf16"] {
        let hf = load_hf_folder(&case_dir(case), &Device::Cpu)?;
        let want = expected(case)?;
        let prompt: Vec<u32> = want["prompt"].i(0)?.to_dtype(DType::U32)?.to_vec1()?;
        let greedy: Vec<u32> = want["greedy"].i(0)?.to_dtype(DType::U32)?.to_vec1()?;
        let cfg = SamplingConfig {
            max_new_tokens: greedy.len(),
            ..SamplingConfig::default()
        };
        let rows = [prompt];
        let cached = generate(&hf.model, Prompt::Ids(&rows), &cfg, |_, _| {})?;
        let uncached = generate_uncached(&hf.model, Prompt::Ids(&rows), &cfg, |_, _| {})?;
        assert_eq!(cached.tokens[0], greedy, "{case}, with cache");
        assert_eq!(uncached.tokens[0], greedy, "{case}, without cache");
    }
    Ok(())
}

#[test]
fn folder_extras_are_read() -> Result<()> {
    // config.json says eos 2 (untied) or [2, 3] (tied); generation_config.json repeats it.
    let untied = load_hf_folder(&case_dir("untied"), &Device::Cpu)?;
    assert_eq!(untied.stop_token_ids, [2]);
    let tied = load_hf_folder(&case_dir("tied_bf16"), &Device::Cpu)?;
    assert_eq!(tied.stop_token_ids, [2, 3]);
    assert!(tied.model.config().tie_word_embeddings);
    assert_eq!(
        tied.model.config().rope_theta,
        1e6,
        "read from transformers 5's rope_parameters"
    );
    assert!(tied.tokenizer.is_none() && tied.chat_template.is_none());
    Ok(())
}
