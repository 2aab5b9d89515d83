//! VLM and LM training-step throughput on CPU, in tokens per second (every sequence position
//! counted, labelled or not). Compare with `benches/vlm_step_torch.py`.
//!
//!     RAYON_NUM_THREADS=2 cargo bench --bench vlm_step             # both steps
//!     RAYON_NUM_THREADS=2 cargo bench --bench vlm_step -- vlm      # or `lm`
//!     RAYON_NUM_THREADS=2 cargo bench --bench vlm_step -- attention   # the LM's attention alone
//!
//! - `vlm`: the default finetune model: the `small` CLIP's ViT (32 px, 8-px patches, 128 wide,
//!   4 layers, 4 heads), frozen; a 16-query, 4-head resampler; `Qwen2Config::small(512)` (2
//!   layers, 128 wide, 4 query / 2 key-value heads, tied embeddings). A batch of 64 random
//!   images and 88-token sequences, the 16 image placeholders at column 4 and labels on 20
//!   positions per row (an answer and its `<|im_end|>`); projector and LM train, at the
//!   finetune stage's learning rates (1e-3, LM × 0.3) and weight decay (0).
//! - `lm`: the `lm-train` step: `Qwen2Config::small(512)` on 64 × 100 tokens, every position
//!   labelled, lr 2e-3, weight decay 0.05.
//! - `attention` (only when named): the `lm` step's two layers of causal grouped-query
//!   attention (`ops::grouped_attention`, the fused op) on random q, k, v, forward and backward,
//!   to see its share of the step.
//!
//! One step is what the stages run: `Vlm::loss` (or the LM's hidden states and
//! `next_token_loss`), backward, global-norm clipping to 1.0, AdamW, through
//! `ml::train::train_step`. A second, untimed-for-the-headline pass repeats the same operations
//! one by one to split a step into forward, backward and clip + AdamW.
//!
//! The `vlmflow` binary's settings are used: mimalloc, `CANDLE_NUM_THREADS=1` unless set.
//! Environment: `VLM_STEP_STEPS` (timed steps, default 10), `VLM_STEP_BATCH` (64),
//! `VLM_STEP_TOKENS` (88), `LM_STEP_TOKENS` (100).

use std::time::{Duration, Instant};

use candle_core::{Device, Result, Tensor};
use vlmflow_ml::data::chat::IGNORE;
use vlmflow_ml::models::lm_loss::next_token_loss;
use vlmflow_ml::models::projector::ProjectorConfig;
use vlmflow_ml::models::qwen2::{Qwen2, Qwen2Config};
use vlmflow_ml::models::vit::VisionConfig;
use vlmflow_ml::models::vlm::{Vlm, VlmConfig, is_vision};
use vlmflow_ml::ops::causal_mask;
use vlmflow_ml::ops::grouped_attention;
use vlmflow_ml::param_store::ParamStore;
use vlmflow_ml::rng::Rng;
use vlmflow_ml::train::optim::{AdamW, AdamWConfig, clip_grad_norm};
use vlmflow_ml::train::step::train_step;
use vlmflow_ml::train::vlm::{PartScales, part_groups};

#[global_allocator]
static ALLOCATOR: vlmflow::alloc::MiMalloc = vlmflow::alloc::MiMalloc;

const VOCAB: usize = 512;
const IMAGE_AT: usize = 4;
const LABELLED: usize = 20;
const MAX_GRAD_NORM: f64 = 1.0;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The default finetune model (`stages/vlm-pretrain.toml`, `stages/finetune.toml`).
fn vlm_config() -> VlmConfig {
    VlmConfig {
        vision: VisionConfig {
            image_size: 32,
            patch_size: 8,
            width: 128,
            layers: 4,
            heads: 4,
            arch: Default::default(),
            features: Default::default(),
        },
        projector: ProjectorConfig::Resampler {
            queries: 16,
            heads: 4,
            positions: true,
        },
        lm: Qwen2Config::small(VOCAB),
        lora: None,
    }
}

#[derive(Default)]
struct Phases {
    forward: Duration,
    backward: Duration,
    optimizer: Duration,
}

/// Times `steps` steps through `train_step` (after 2 warm-up steps), then `steps` more split
/// into phases, and prints both.
fn bench(
    name: &str,
    what: &str,
    tokens_per_step: usize,
    opt: &mut AdamW,
    lr: f64,
    steps: usize,
    loss_fn: &dyn Fn() -> Result<Tensor>,
) -> Result<()> {
    for _ in 0..2 {
        train_step(opt, lr, 1, Some(MAX_GRAD_NORM), |_| loss_fn())?;
    }
    let load_before = load();
    let start = Instant::now();
    let mut loss = 0.0;
    for _ in 0..steps {
        loss = train_step(opt, lr, 1, Some(MAX_GRAD_NORM), |_| loss_fn())?.loss;
    }
    let per = start.elapsed().as_secs_f64() / steps as f64;

    let params: Vec<_> = opt.params().cloned().collect();
    let mut ph = Phases::default();
    for _ in 0..steps {
        let t0 = Instant::now();
        let l = loss_fn()?;
        let t1 = Instant::now();
        let mut grads = l.backward()?;
        let t2 = Instant::now();
        clip_grad_norm(&mut grads, &params, MAX_GRAD_NORM)?;
        opt.set_lr(lr);
        opt.step(&grads)?;
        let t3 = Instant::now();
        ph.forward += t1 - t0;
        ph.backward += t2 - t1;
        ph.optimizer += t3 - t2;
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3 / steps as f64;
    let trained: usize = params.iter().map(|(_, v)| v.elem_count()).sum();
    println!("{name}: {what}; {trained} trained parameters");
    println!(
        "  {:.1} ms/step, {:.0} tokens/s; loss {loss:.3}; load average {load_before} before, {} after",
        per * 1e3,
        tokens_per_step as f64 / per,
        load(),
    );
    println!(
        "  phases (a second {steps} steps, one op at a time): forward {:.1} + backward {:.1} + clip/adamw {:.1} = {:.1} ms",
        ms(ph.forward),
        ms(ph.backward),
        ms(ph.optimizer),
        ms(ph.forward + ph.backward + ph.optimizer),
    );
    Ok(())
}

fn random_ids(rng: &mut Rng, n: usize) -> Vec<u32> {
    (0..n).map(|_| rng.below(VOCAB as u64) as u32).collect()
}

fn vlm(steps: usize, batch: usize, t: usize) -> Result<()> {
    let dev = Device::Cpu;
    let cfg = vlm_config();
    let q = cfg.image_tokens();
    if t < IMAGE_AT + q + LABELLED + 2 {
        candle_core::bail!("vlm_step: {t} tokens leave no room for the image and the answer");
    }
    let params = ParamStore::new(0, &dev).with_frozen(is_vision);
    let model = Vlm::new(&params, &cfg)?;
    // The finetune stage's groups: projector at lr, LM at 0.3 × lr (the vision tower is frozen).
    let scales = PartScales {
        vision: 0.1,
        projector: 1.0,
        lm: 0.3,
    };
    let mut opt = AdamW::new(
        part_groups(params.trainable_vars(), &scales, 0.05),
        AdamWConfig {
            lr: 1e-3,
            ..AdamWConfig::default()
        },
    )?;

    let mut rng = Rng::new(1);
    let s = cfg.vision.image_size;
    let px: Vec<f32> = (0..batch * 3 * s * s)
        .map(|_| rng.normal() as f32)
        .collect();
    let images = Tensor::from_vec(px, (batch, 3, s, s), &dev)?;
    let mut ids = random_ids(&mut rng, batch * t);
    let mut labels = vec![IGNORE; batch * t];
    // The answer: LABELLED positions ending 2 before the end (a pad or two after it).
    let answer = t - 2 - LABELLED..t - 2;
    for row in 0..batch {
        let r = &mut ids[row * t..(row + 1) * t];
        r[IMAGE_AT..IMAGE_AT + q].fill(VOCAB as u32 - 1); // the placeholder id
        for j in answer.clone() {
            labels[row * t + j] = i64::from(r[j]);
        }
    }
    let ids = Tensor::from_vec(ids, (batch, t), &dev)?;
    let labels = Tensor::from_vec(labels, (batch, t), &dev)?;
    let loss = || model.loss(&ids, &labels, Some((&images, IMAGE_AT)));
    bench(
        "vlm (finetune)",
        &format!(
            "batch {batch} × {t} tokens (image at {IMAGE_AT}..{}, {LABELLED} labelled), {} params, vision frozen",
            IMAGE_AT + q,
            params.num_params()
        ),
        batch * t,
        &mut opt,
        1e-3,
        steps,
        &loss,
    )
}

fn lm(steps: usize, batch: usize, t: usize) -> Result<()> {
    let dev = Device::Cpu;
    let params = ParamStore::new(0, &dev);
    let model = Qwen2::new(&params, &Qwen2Config::small(VOCAB))?;
    let mut opt = AdamW::with_default_groups(
        params.vars(),
        AdamWConfig {
            lr: 2e-3,
            weight_decay: 0.05,
            ..AdamWConfig::default()
        },
    )?;
    let mut rng = Rng::new(2);
    let ids = random_ids(&mut rng, batch * t);
    let labels: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
    let ids = Tensor::from_vec(ids, (batch, t), &dev)?;
    let labels = Tensor::from_vec(labels, (batch, t), &dev)?;
    let loss = || {
        let hidden = model.hidden_states(&model.embed(&ids)?, None)?;
        next_token_loss(&model, &hidden, &labels)
    };
    bench(
        "lm (lm-train)",
        &format!(
            "batch {batch} × {t} tokens, all labelled, {} params",
            params.num_params()
        ),
        batch * t,
        &mut opt,
        2e-3,
        steps,
        &loss,
    )
}

/// The `lm` step's attention (2 layers) alone: forward and backward of
/// `grouped_attention` at its shapes, inputs that need gradients, `sum` as the loss.
fn attention(steps: usize, batch: usize, t: usize) -> Result<()> {
    let dev = Device::Cpu;
    let cfg = Qwen2Config::small(VOCAB);
    let (h, kv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
    let (c, ckv) = (cfg.hidden_size, kv * cfg.head_dim());
    let mut rng = Rng::new(3);
    let mut var = |width: usize| {
        let v: Vec<f32> = (0..batch * t * width)
            .map(|_| rng.normal() as f32)
            .collect();
        candle_core::Var::from_vec(v, (batch, t, width), &dev)
    };
    let (q, k, v) = (var(c)?, var(ckv)?, var(ckv)?);
    let mask = causal_mask(t, &dev)?;
    let layers = cfg.num_hidden_layers;
    let (mut fwd, mut bwd) = (Duration::ZERO, Duration::ZERO);
    for i in 0..steps + 2 {
        let t0 = Instant::now();
        let y = grouped_attention(&q, &k, &v, h, kv, Some(&mask))?;
        let t1 = Instant::now();
        y.sum_all()?.backward()?;
        let t2 = Instant::now();
        if i >= 2 {
            fwd += t1 - t0;
            bwd += t2 - t1;
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3 * layers as f64 / steps as f64;
    println!(
        "attention (the lm step's {layers} layers): batch {batch} × {t} tokens, {h} heads / {kv} key-value heads, causal"
    );
    println!(
        "  forward {:.1} + backward {:.1} = {:.1} ms per step; load average {}",
        ms(fwd),
        ms(bwd),
        ms(fwd + bwd),
        load()
    );
    Ok(())
}

fn main() -> Result<()> {
    vlmflow::alloc::keep_freed_memory();
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: set before any other thread exists (as `src/main.rs` does).
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |name: &str| only.is_empty() || only.iter().any(|a| a == name);
    let (steps, batch) = (env("VLM_STEP_STEPS", 10), env("VLM_STEP_BATCH", 64));
    println!(
        "vlm_step: threads {} (candle {}), load average {}",
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into()),
        std::env::var("CANDLE_NUM_THREADS").unwrap_or_default(),
        load()
    );
    if wanted("vlm") {
        vlm(steps, batch, env("VLM_STEP_TOKENS", 88))?;
    }
    if wanted("lm") {
        lm(steps, batch, env("LM_STEP_TOKENS", 100))?;
    }
    if only.iter().any(|a| a == "attention") {
        attention(steps, batch, env("LM_STEP_TOKENS", 100))?;
    }
    Ok(())
}
