//! Gradient accumulation, and training steps resumed exactly from a checkpoint.

use candle_core::{Device, Result, Tensor};

use super::*;
use crate::models::clip::{Clip, ClipConfig};
use crate::models::clip_tests::{random_pairs, tiny_config};
use crate::param_store::ParamStore;
use crate::rng::Rng;
use crate::train::checkpoint::{Checkpoint, TrainState};
use crate::train::optim::AdamWConfig;
use crate::train::schedule::WarmupCosine;

struct Run {
    params: ParamStore,
    model: Clip,
    opt: AdamW,
}

fn build(seed: u64, cfg: &ClipConfig) -> Result<Run> {
    let params = ParamStore::new(seed, &Device::Cpu);
    let model = Clip::new(&params, cfg)?;
    let opt = AdamW::with_default_groups(params.vars(), AdamWConfig::default())?;
    Ok(Run { params, model, opt })
}

type Data = (Tensor, Tensor, Tensor);

/// Steps `state.step..until`: each step shuffles the 16 pairs with the run's RNG and trains on
/// the first 8 as two micro-batches of 4.
fn train(run: &mut Run, state: &mut TrainState, data: &Data, until: u64) -> Result<()> {
    let sched = WarmupCosine {
        peak_lr: 2e-3,
        min_lr: 1e-4,
        warmup_steps: 2,
        total_steps: 6,
    };
    while state.step < until {
        let mut order: Vec<u32> = (0..16).collect();
        state.rng.shuffle(&mut order);
        let lr = sched.lr(state.step);
        let model = &run.model;
        train_step(&mut run.opt, lr, 2, Some(1.0), |i| {
            let idx = Tensor::new(&order[i * 4..(i + 1) * 4], &Device::Cpu)?;
            let pick = |t: &Tensor| t.index_select(&idx, 0);
            model.loss(&pick(&data.0)?, &pick(&data.1)?, &pick(&data.2)?)
        })?;
        state.step += 1;
        state.data_position += 8;
    }
    Ok(())
}

fn fresh_state(cfg: &ClipConfig) -> TrainState {
    TrainState {
        step: 0,
        config: serde_json::to_value(cfg).unwrap(),
        rng: Rng::new(11),
        data_position: 0,
        losses: vec![],
    }
}

#[test]
fn resume_from_checkpoint_is_bit_identical() -> Result<()> {
    let cfg = tiny_config();
    let data = random_pairs(&cfg, 16, 5)?;
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");

    let mut straight = build(0, &cfg)?;
    let mut s1 = fresh_state(&cfg);
    train(&mut straight, &mut s1, &data, 6)?;

    let mut first = build(0, &cfg)?;
    let mut s2 = fresh_state(&cfg);
    train(&mut first, &mut s2, &data, 2)?;
    Checkpoint::save(&ckpt, &first.opt, &s2)?;
    train(&mut first, &mut s2, &data, 3)?;
    // Saving again replaces the folder atomically; the step-3 checkpoint is the one resumed.
    Checkpoint::save(&ckpt, &first.opt, &s2)?;
    drop(first);

    // Another seed: every value must come from the checkpoint.
    let saved = Checkpoint::read_state(&ckpt)?;
    let cfg2: ClipConfig = serde_json::from_value(saved.config.clone()).unwrap();
    let mut resumed = build(99, &cfg2)?;
    let mut s3 = Checkpoint::load(&ckpt, &resumed.params, &mut resumed.opt)?;
    assert_eq!((s3.step, s3.data_position), (3, 24));
    train(&mut resumed, &mut s3, &data, 6)?;

    assert_eq!(s1, s3);
    for ((name, a), (_, b)) in straight.params.vars().iter().zip(resumed.params.vars()) {
        let (a, b) = (
            a.flatten_all()?.to_vec1::<f32>()?,
            b.flatten_all()?.to_vec1::<f32>()?,
        );
        assert!(a == b, "{name} differs after resume");
    }
    assert!(!dir.path().join("ckpt.tmp").exists() && !dir.path().join("ckpt.old").exists());
    Ok(())
}

#[test]
fn accumulated_micro_batches_equal_one_batch() -> Result<()> {
    // Mean of the per-half gradients of a mean loss = gradient of the mean over the whole,
    // for any per-sample loss (CLIP's is not per-sample, so use a plain one here).
    let cfg = tiny_config();
    let run = build(0, &cfg)?;
    let (img, _, _) = random_pairs(&cfg, 8, 6)?;
    let loss = |x: &Tensor| run.model.vision.forward(x)?.sqr()?.mean_all();
    let params = run.params.vars();
    let (l_acc, g_acc) = accumulate_grads(&params, 2, |i| loss(&img.narrow(0, i * 4, 4)?))?;
    let (l_one, g_one) = accumulate_grads(&params, 1, |_| loss(&img))?;
    assert!((l_acc - l_one).abs() < 1e-6);
    let mut checked = 0;
    for (name, var) in &params {
        if let (Some(a), Some(b)) = (g_acc.get(var), g_one.get(var)) {
            let d = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d < 1e-6, "{name}: {d}");
            checked += 1;
        }
    }
    assert!(checked > 10);
    Ok(())
}
