//! Training-step throughput on a CUDA GPU, for the two shapes of issue 11; compare with the
//! PyTorch twins `benches/clip_step_torch.py` and `benches/vlm_step_torch.py` on the same GPU.
//!
//!     cargo bench --features cuda --bench gpu                  # both, on GPU 0
//!     cargo bench --features cuda --bench gpu -- clip --json out.jsonl
//!     VLMFLOW_CUDA_KERNELS=1 cargo bench --features cuda --bench gpu   # also time the kernels
//!     VLMFLOW_CUDA_KERNELS=1 cargo bench --features cuda --bench gpu -- --kernels-only
//!
//! - `clip`: `ClipConfig::vit_b16` (224-px images, 16-px patches, ViT 768 × 12 layers × 12 heads;
//!   text 512 × 12 × 8 over 49,408 tokens, 77-token captions; embed 512), batch 128
//!   (`GPU_BENCH_CLIP_BATCH`), everything trained. Samples/s.
//! - `finetune`: the ViT-B/16 vision tower (frozen), a resampler of 64 queries × 14 heads, and a
//!   Qwen2.5-0.5B-shaped LM (151,936 tokens, 896 wide, 24 layers, 14 query / 2 key-value heads,
//!   4,864 MLP, tied embeddings), random weights; batch 8 (`GPU_BENCH_FINETUNE_BATCH`) × 512
//!   tokens, the 64 image tokens at column 4, labels on the 128 positions before the last 2;
//!   projector and LM trained. Tokens/s, every position counted.
//!
//! One step is what the stages run (`train_step`: loss, backward, global-norm clipping to 1.0,
//! AdamW). Each variant (f32 or bf16; composite ops, and with `VLMFLOW_CUDA_KERNELS=1` also the
//! kernels) runs 3 warm-up steps, then `GPU_BENCH_STEPS` (20) steps each timed by CUDA events on
//! the device's stream; the median and the 10th and 90th percentiles are reported. Inputs are
//! random normal images and random token ids.
//!
//! MFU counts the matmul FLOPs of a step (forward 2 per multiply-add, backward twice that, a
//! frozen leading tower forward only; attention's two T×T products in full, as PaLM's appendix
//! B counts them) against `GPU_BENCH_PEAK_TFLOPS` (790, issue 11's bf16 figure for the H200).
//! Memory is what `cuMemGetInfo` says is in use, sampled after each timed forward, less what was
//! in use before the model was built.

use candle_core::cuda_backend::cudarc::driver::sys::CUevent_flags;
use candle_core::{Device, Result, Tensor};
use serde_json::json;
use vlmflow_ml::data::chat::IGNORE;
use vlmflow_ml::models::clip::{Clip, ClipConfig};
use vlmflow_ml::models::projector::ProjectorConfig;
use vlmflow_ml::models::qwen2::Qwen2Config;
use vlmflow_ml::models::vit::VisionConfig;
use vlmflow_ml::models::vlm::{Vlm, VlmConfig, is_vision};
use vlmflow_ml::ops::{self, Precision, backend};
use vlmflow_ml::param_store::ParamStore;
use vlmflow_ml::rng::Rng;
use vlmflow_ml::train::optim::{AdamW, AdamWConfig};
use vlmflow_ml::train::step::train_step;
use vlmflow_ml::train::vlm::{PartScales, part_groups};

#[global_allocator]
static ALLOCATOR: vlmflow::alloc::MiMalloc = vlmflow::alloc::MiMalloc;

const WARMUP: usize = 3;
const CLIP_VOCAB: usize = 49_408;
const IMAGE_AT: usize = 4;
const LABELLED: usize = 128;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One configuration's result, printed and written as a JSON line.
struct Measured {
    bench: &'static str,
    model: &'static str,
    precision: Precision,
    ops: &'static str,
    batch: usize,
    tokens: usize,
    /// Sorted step times.
    ms: Vec<f64>,
    flops_per_step: f64,
    memory_bytes: usize,
    loss: f64,
}

impl Measured {
    fn percentile(&self, p: f64) -> f64 {
        self.ms[((self.ms.len() - 1) as f64 * p).round() as usize]
    }

    fn json(&self, peak_tflops: f64, gpu: &str) -> serde_json::Value {
        let median = self.percentile(0.5);
        let per_s = 1e3 / median;
        let mut j = json!({
            "bench": self.bench, "impl": "vlmflow", "model": self.model, "device": "cuda",
            "gpu": gpu, "dtype": self.precision, "ops": self.ops, "batch": self.batch,
            "tokens": self.tokens, "steps": self.ms.len(), "ms_median": median,
            "ms_p10": self.percentile(0.1), "ms_p90": self.percentile(0.9),
            "flops_per_step": self.flops_per_step,
            "mfu": self.flops_per_step * per_s / (peak_tflops * 1e12),
            "peak_mem_bytes": self.memory_bytes, "loss": self.loss,
        });
        let rate = if self.bench == "clip" {
            ("samples_per_s", self.batch as f64 * per_s)
        } else {
            ("tokens_per_s", (self.batch * self.tokens) as f64 * per_s)
        };
        j[rate.0] = json!(rate.1);
        j
    }
}

/// Device memory in use now, in bytes.
fn memory_in_use(dev: &Device) -> Result<usize> {
    let stream = dev.as_cuda_device()?.cuda_stream();
    let (free, total) = stream
        .context()
        .mem_get_info()
        .map_err(|e| candle_core::Error::Msg(format!("cuMemGetInfo: {e:?}")))?;
    Ok(total - free)
}

/// Times `steps` training steps of `loss` (after the warm-up) with events on `dev`'s stream;
/// memory (less `baseline`) is sampled after each timed forward.
fn time_steps(
    dev: &Device,
    opt: &mut AdamW,
    lr: f64,
    steps: usize,
    loss: &dyn Fn() -> Result<Tensor>,
    baseline: usize,
) -> Result<(Vec<f64>, usize, f64)> {
    let stream = dev.as_cuda_device()?.cuda_stream();
    let event = || {
        stream
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(|e| candle_core::Error::Msg(format!("cuEventRecord: {e:?}")))
    };
    for _ in 0..WARMUP {
        train_step(opt, lr, 1, Some(1.0), |_| loss())?;
    }
    let (mut ms, mut memory, mut last) = (vec![], 0, 0.0);
    for _ in 0..steps {
        let start = event()?;
        let stats = train_step(opt, lr, 1, Some(1.0), |_| {
            let l = loss()?;
            memory = memory.max(memory_in_use(dev)?.saturating_sub(baseline));
            Ok(l)
        })?;
        let end = event()?;
        let elapsed = start
            .elapsed_ms(&end)
            .map_err(|e| candle_core::Error::Msg(format!("cuEventElapsedTime: {e:?}")))?;
        ms.push(f64::from(elapsed));
        last = stats.loss;
    }
    ms.sort_by(f64::total_cmp);
    Ok((ms, memory, last))
}

/// The variants to time: each precision with the composite ops, and with the kernels when on
/// (`--kernels-only`: those alone, so that a kernel that breaks the CUDA context cannot cost the
/// composite numbers: `scripts/gpu/run` times the two in separate processes).
fn variants() -> Vec<(Precision, &'static str)> {
    let kernels_only = std::env::args().any(|a| a == "--kernels-only");
    let mut v = vec![];
    for p in [Precision::F32, Precision::Bf16] {
        if !kernels_only {
            v.push((p, "composite"));
        }
        if backend::cuda_kernels_enabled() {
            v.push((p, "kernels"));
        }
    }
    v
}

fn run_variant(
    precision: Precision,
    ops_name: &'static str,
    f: impl FnOnce() -> Result<(Vec<f64>, usize, f64)>,
) -> Result<(Vec<f64>, usize, f64)> {
    let f = || ops::with_precision(precision, f);
    if ops_name == "composite" {
        ops::with_composite(f)
    } else {
        f()
    }
}

/// Forward multiply-adds of one pre-norm transformer layer stack over `t` tokens of `width`
/// with an MLP of `mlp` (times 2 for FLOPs), per sample.
fn transformer_flops(
    layers: usize,
    width: usize,
    kv_width: usize,
    mlp_mats: usize,
    mlp: usize,
    t: usize,
) -> f64 {
    let (w, t) = (width as f64, t as f64);
    let projections = w * (w + 2.0 * kv_width as f64) + w * w; // q, k, v, out
    let mlp = mlp_mats as f64 * w * mlp as f64;
    let attention = 2.0 * t * t * w; // q kᵀ and the weighted sum of v
    layers as f64 * 2.0 * (t * (projections + mlp) + attention)
}

fn vit_flops(v: &VisionConfig) -> f64 {
    let patches = (v.image_size / v.patch_size).pow(2);
    let patch_embed = 2.0 * patches as f64 * (3 * v.patch_size * v.patch_size * v.width) as f64;
    patch_embed + transformer_flops(v.layers, v.width, v.width, 2, 4 * v.width, patches + 1)
}

fn clip(dev: &Device, steps: usize, record: &mut dyn FnMut(&Measured) -> Result<()>) -> Result<()> {
    let batch = env("GPU_BENCH_CLIP_BATCH", 128);
    let cfg = ClipConfig::vit_b16(CLIP_VOCAB);
    let baseline = memory_in_use(dev)?;
    let params = ParamStore::new(0, dev);
    let model = Clip::new(&params, &cfg)?;
    let mut rng = Rng::new(1);
    let (s, t) = (cfg.vision.image_size, cfg.text.max_len);
    let px: Vec<f32> = (0..batch * 3 * s * s)
        .map(|_| rng.normal() as f32)
        .collect();
    let images = Tensor::from_vec(px, (batch, 3, s, s), dev)?;
    let ids: Vec<u32> = (0..batch * t)
        .map(|_| rng.below(CLIP_VOCAB as u64) as u32)
        .collect();
    let tokens = Tensor::from_vec(ids, (batch, t), dev)?;
    let lens: Vec<u32> = (0..batch)
        .map(|_| 4 + rng.below(t as u64 - 3) as u32)
        .collect();
    let lengths = Tensor::from_vec(lens, batch, dev)?;
    let text = &cfg.text;
    let forward = batch as f64
        * (vit_flops(&cfg.vision)
            + transformer_flops(text.layers, text.width, text.width, 2, 4 * text.width, t)
            + 2.0 * ((cfg.vision.width + text.width) * cfg.embed_dim) as f64);
    let loss = || model.loss(&images, &tokens, &lengths);
    for (precision, ops_name) in variants() {
        let mut opt = AdamW::with_default_groups(params.vars(), AdamWConfig::default())?;
        let (ms, memory_bytes, loss) = run_variant(precision, ops_name, || {
            time_steps(dev, &mut opt, 1e-4, steps, &loss, baseline)
        })?;
        record(&Measured {
            bench: "clip",
            model: "vit-b16",
            precision,
            ops: ops_name,
            batch,
            tokens: t,
            ms,
            flops_per_step: 3.0 * forward,
            memory_bytes,
            loss,
        })?;
    }
    Ok(())
}

/// Qwen2.5-0.5B's shape (its `config.json`), random weights.
fn qwen2_5_0_5b() -> Qwen2Config {
    let mut lm = Qwen2Config::small(151_936);
    lm.hidden_size = 896;
    lm.intermediate_size = 4_864;
    lm.num_hidden_layers = 24;
    lm.num_attention_heads = 14;
    lm.num_key_value_heads = 2;
    lm.rope_theta = 1_000_000.0;
    lm.rms_norm_eps = 1e-6;
    lm.tie_word_embeddings = true;
    lm
}

fn finetune(
    dev: &Device,
    steps: usize,
    record: &mut dyn FnMut(&Measured) -> Result<()>,
) -> Result<()> {
    let (batch, t) = (env("GPU_BENCH_FINETUNE_BATCH", 8), 512);
    let cfg = VlmConfig {
        vision: ClipConfig::vit_b16(CLIP_VOCAB).vision,
        projector: ProjectorConfig::Resampler {
            queries: 64,
            heads: 14,
            positions: true,
        },
        lm: qwen2_5_0_5b(),
        lora: None,
    };
    let baseline = memory_in_use(dev)?;
    let params = ParamStore::new(0, dev).with_frozen(is_vision);
    let model = Vlm::new(&params, &cfg)?;
    let q = cfg.image_tokens();
    let vocab = cfg.lm.vocab_size;
    let mut rng = Rng::new(1);
    let s = cfg.vision.image_size;
    let px: Vec<f32> = (0..batch * 3 * s * s)
        .map(|_| rng.normal() as f32)
        .collect();
    let images = Tensor::from_vec(px, (batch, 3, s, s), dev)?;
    let mut ids: Vec<u32> = (0..batch * t)
        .map(|_| rng.below(vocab as u64 - 1) as u32)
        .collect();
    let mut labels = vec![IGNORE; batch * t];
    for row in 0..batch {
        let r = &mut ids[row * t..(row + 1) * t];
        r[IMAGE_AT..IMAGE_AT + q].fill(vocab as u32 - 1);
        for j in t - 2 - LABELLED..t - 2 {
            labels[row * t + j] = i64::from(r[j]);
        }
    }
    let ids = Tensor::from_vec(ids, (batch, t), dev)?;
    let labels = Tensor::from_vec(labels, (batch, t), dev)?;

    let lm = &cfg.lm;
    let (w, heads) = (lm.hidden_size, lm.num_attention_heads);
    let kv_width = lm.num_key_value_heads * (w / heads);
    let lm_forward = transformer_flops(
        lm.num_hidden_layers,
        w,
        kv_width,
        3,
        lm.intermediate_size,
        t,
    ) + 2.0 * (t * w * vocab) as f64;
    let patches = (s / cfg.vision.patch_size).pow(2) + 1;
    let resampler_forward = 2.0
        * (2.0 * (q * w * w) as f64 // query and output projections
            + 2.0 * (patches * cfg.vision.width * w) as f64 // keys and values
            + 2.0 * (q * patches * w) as f64);
    // The frozen tower runs forward only; what is trained runs forward and backward (3×).
    let flops = batch as f64 * (vit_flops(&cfg.vision) + 3.0 * (lm_forward + resampler_forward));
    let scales = PartScales {
        vision: 0.0,
        projector: 1.0,
        lm: 0.3,
    };
    let loss = || model.loss(&ids, &labels, Some((&images, IMAGE_AT)));
    for (precision, ops_name) in variants() {
        let adam = AdamWConfig {
            lr: 1e-4,
            ..AdamWConfig::default()
        };
        let mut opt = AdamW::new(part_groups(params.trainable_vars(), &scales, 0.05), adam)?;
        let (ms, memory_bytes, loss) = run_variant(precision, ops_name, || {
            time_steps(dev, &mut opt, 1e-4, steps, &loss, baseline)
        })?;
        record(&Measured {
            bench: "finetune",
            model: "qwen2.5-0.5b",
            precision,
            ops: ops_name,
            batch,
            tokens: t,
            ms,
            flops_per_step: flops,
            memory_bytes,
            loss,
        })?;
    }
    Ok(())
}

fn report(m: &Measured) {
    let median = m.percentile(0.5);
    let rate = if m.bench == "clip" {
        format!("{:.0} samples/s", m.batch as f64 * 1e3 / median)
    } else {
        format!("{:.0} tokens/s", (m.batch * m.tokens) as f64 * 1e3 / median)
    };
    println!(
        "{} {} {:?} {}: {median:.1} ms/step (p10 {:.1}, p90 {:.1}), {rate}, {:.1} TFLOP/s, {:.2} GiB, loss {:.3}",
        m.bench,
        m.model,
        m.precision,
        m.ops,
        m.percentile(0.1),
        m.percentile(0.9),
        m.flops_per_step / median / 1e9,
        m.memory_bytes as f64 / (1u64 << 30) as f64,
        m.loss
    );
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json_path = args
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| args.get(i + 1))
        .cloned();
    // `cargo bench` adds `--bench`; the benches to run are the words without a dash.
    let named: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with('-') && Some(*a) != json_path.as_ref())
        .map(String::as_str)
        .collect();
    let wants = |b: &str| named.is_empty() || named.contains(&b);
    let dev = vlmflow_stages::open_device("cuda")
        .map_err(|e| candle_core::Error::Msg(format!("the GPU benchmark needs a GPU: {e}")))?;
    let steps = env("GPU_BENCH_STEPS", 20);
    let peak_tflops = env("GPU_BENCH_PEAK_TFLOPS", 790.0);
    let gpu = std::env::var("GPU_NAME").unwrap_or_else(|_| "cuda:0".into());
    // Each result is written as soon as it is measured, so a run cut short keeps what it had.
    let mut record = |m: &Measured| -> Result<()> {
        report(m);
        if let Some(path) = &json_path {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            writeln!(file, "{}", m.json(peak_tflops, &gpu))?;
        }
        Ok(())
    };
    if let Some(path) = &json_path {
        std::fs::write(path, "")?;
    }
    if wants("clip") {
        clip(&dev, steps, &mut record)?;
    }
    if wants("finetune") {
        finetune(&dev, steps, &mut record)?;
    }
    Ok(())
}
