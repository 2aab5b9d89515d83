use candle_core::{D, DType, Device, Result, Tensor};

use super::*;
use crate::data::chat::IGNORE;
use crate::models::lora::LoraConfig;
use crate::train::optim::{AdamW, AdamWConfig};
use crate::train::step::train_step;

/// A VLM small enough for unit tests (vocabulary 40).
pub(crate) fn tiny() -> VlmConfig {
    let mut lm = Qwen2Config::small(40);
    lm.hidden_size = 32;
    lm.intermediate_size = 64;
    lm.num_attention_heads = 4;
    lm.num_key_value_heads = 2;
    VlmConfig {
        vision: VisionConfig {
            image_size: 16,
            patch_size: 8,
            width: 24,
            layers: 1,
            heads: 2,
            arch: Default::default(),
            features: Default::default(),
        },
        projector: ProjectorConfig::Resampler {
            queries: 3,
            heads: 2,
            positions: true,
        },
        lm,
        lora: None,
    }
}

pub(crate) fn batch() -> Result<(Tensor, Tensor, Tensor)> {
    let dev = Device::Cpu;
    let images = Tensor::randn(0f32, 1.0, (2, 3, 16, 16), &dev)?;
    // [t t IMG IMG IMG t t t]: image placeholders (id 5) at columns 2..5.
    let ids = Tensor::new(
        &[[1u32, 2, 5, 5, 5, 7, 8, 9], [1, 2, 5, 5, 5, 9, 8, 7]],
        &dev,
    )?;
    let ig = IGNORE;
    let labels = Tensor::new(
        &[
            [ig, ig, ig, ig, ig, ig, 8, 9],
            [ig, ig, ig, ig, ig, ig, 8, 7],
        ],
        &dev,
    )?;
    Ok((images, ids, labels))
}

#[test]
fn image_embeddings_replace_the_placeholders_only() -> Result<()> {
    let p = ParamStore::new(0, &Device::Cpu);
    let vlm = Vlm::new(&p, &tiny())?;
    let (images, ids, _) = batch()?;
    let spliced = vlm.embed(&ids, Some((&images, 2)))?;
    let text = vlm.lm.embed(&ids)?;
    let img = vlm.image_embeddings(&images)?;
    let diff =
        |a: &Tensor, b: &Tensor| -> Result<f32> { (a - b)?.abs()?.max_all()?.to_scalar::<f32>() };
    assert_eq!(
        diff(&spliced.narrow(1, 0, 2)?, &text.narrow(1, 0, 2)?)?,
        0.0
    );
    assert_eq!(diff(&spliced.narrow(1, 2, 3)?, &img)?, 0.0);
    assert_eq!(
        diff(&spliced.narrow(1, 5, 3)?, &text.narrow(1, 5, 3)?)?,
        0.0
    );
    assert!(
        vlm.embed(&ids, Some((&images, 6))).is_err(),
        "overflow is refused"
    );
    Ok(())
}

#[test]
fn the_loss_scores_only_labelled_positions_against_the_next_token() -> Result<()> {
    let p = ParamStore::new(1, &Device::Cpu);
    let vlm = Vlm::new(&p, &tiny())?;
    let (images, ids, labels) = batch()?;
    let loss = vlm
        .loss(&ids, &labels, Some((&images, 2)))?
        .to_scalar::<f32>()?;
    // By hand: full logits, log-softmax, the label of column i+1 at column i.
    let logits = vlm
        .lm
        .forward_embeds(&vlm.embed(&ids, Some((&images, 2)))?, None)?;
    let log_p = softmax_ref(&logits)?.log()?;
    let lp: Vec<Vec<Vec<f32>>> = log_p.to_vec3()?;
    let targets: Vec<Vec<i64>> = labels.to_vec2()?;
    let mut sum = 0f32;
    let mut count = 0;
    for (row, t) in targets.iter().enumerate() {
        for col in 0..t.len() - 1 {
            if t[col + 1] != IGNORE {
                sum -= lp[row][col][t[col + 1] as usize];
                count += 1;
            }
        }
    }
    assert_eq!(count, 4);
    assert!(
        (loss - sum / count as f32).abs() < 1e-5,
        "{loss} vs {}",
        sum / count as f32
    );
    Ok(())
}

fn softmax_ref(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?;
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

#[test]
fn a_step_with_the_lm_frozen_trains_the_rest_and_leaves_the_lm_alone() -> Result<()> {
    let p = ParamStore::new(2, &Device::Cpu).with_frozen(is_lm);
    let vlm = Vlm::new(&p, &tiny())?;
    let (images, ids, labels) = batch()?;
    let before: Vec<(String, Tensor)> = p
        .vars()
        .into_iter()
        .map(|(n, v)| Ok((n, v.as_tensor().copy()?)))
        .collect::<Result<_>>()?;
    let trainable = p.trainable_vars();
    assert!(trainable.iter().all(|(n, _)| !is_lm(n)));
    assert!(trainable.iter().any(|(n, _)| is_projector(n)));
    let mut opt = AdamW::with_default_groups(trainable, AdamWConfig::default())?;
    // The frozen LM still passes gradients back to the projector and the vision tower.
    let grads = vlm.loss(&ids, &labels, Some((&images, 2)))?.backward()?;
    for (name, var) in opt.params() {
        assert!(
            grads.get(var.as_tensor()).is_some(),
            "{name} got no gradient"
        );
    }
    train_step(&mut opt, 1e-2, 1, Some(1.0), |_| {
        vlm.loss(&ids, &labels, Some((&images, 2)))
    })?;
    let now: std::collections::BTreeMap<_, _> = p.vars().into_iter().collect();
    for (name, old) in before {
        let changed = (now[&name].as_tensor() - &old)?
            .abs()?
            .max_all()?
            .to_dtype(DType::F32)?
            .to_scalar::<f32>()?
            > 0.0;
        if is_lm(&name) {
            assert!(!changed, "frozen {name} changed");
        } else if name.ends_with("weight") && !name.contains("norm") && !name.contains("ln") {
            assert!(changed, "{name} did not train");
        }
    }
    Ok(())
}

#[test]
fn a_merged_lora_model_computes_what_the_adapted_one_does() -> Result<()> {
    let cfg = VlmConfig {
        lora: Some(LoraConfig {
            rank: 2,
            alpha: 4.0,
            targets: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()],
        }),
        ..tiny()
    };
    let p = ParamStore::new(3, &Device::Cpu);
    let vlm = Vlm::new(&p, &cfg)?;
    // B starts at zero (the adapted model equals the base); give it values so merging matters.
    for (name, var) in p.vars() {
        if name.ends_with("lora_B") {
            var.set(&Tensor::randn(0f32, 0.5, var.shape(), &Device::Cpu)?)?;
        }
    }
    let (images, ids, _) = batch()?;
    let adapted = vlm
        .lm
        .forward_embeds(&vlm.embed(&ids, Some((&images, 2)))?, None)?;
    let (merged_params, merged) = vlm.merged(&p)?;
    assert!(merged.cfg.lora.is_none());
    assert!(
        merged_params
            .vars()
            .iter()
            .all(|(n, _)| !n.contains("lora"))
    );
    let folded = merged
        .lm
        .forward_embeds(&merged.embed(&ids, Some((&images, 2)))?, None)?;
    let diff = (adapted - folded)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert!(diff < 1e-4, "merged and adapted logits differ by {diff}");

    let base = Vlm::new(&ParamStore::new(3, &Device::Cpu), &tiny())?;
    let plain = base
        .lm
        .forward_embeds(&base.embed(&ids, Some((&images, 2)))?, None)?;
    let moved = (plain
        - vlm
            .lm
            .forward_embeds(&vlm.embed(&ids, Some((&images, 2)))?, None)?)?
    .abs()?
    .max_all()?
    .to_scalar::<f32>()?;
    assert!(moved > 1e-3, "the adapters change the output ({moved})");
    Ok(())
}
