//! CLIP training-step throughput on CPU: the `small` config, batch 64 (or ViT-B/16's shape,
//! batch 8), forward + backward + clip + AdamW, in samples per second. Compare with
//! `benches/clip_step_torch.py`.
//!
//!     RAYON_NUM_THREADS=2 cargo bench --bench clip_step
//!     RAYON_NUM_THREADS=2 cargo bench --bench clip_step -- vit-b16          # ~150M parameters
//!     VLMFLOW_ALLOC=system RAYON_NUM_THREADS=2 cargo bench --bench clip_step   # glibc malloc
//!     RAYON_NUM_THREADS=2 cargo bench --bench clip_step -- --composite        # no fused ops
//!
//! Unless set, `CANDLE_NUM_THREADS=1` is used and mimalloc keeps freed memory, as in the
//! `vlmflow` binary: see `main` and `src/alloc.rs`. `CANDLE_NUM_THREADS=2` shows candle's default.
//!
//! Measured 2026-11-24 on the 2-core dev machine (AMD EPYC with AVX-512, idle; 2 threads, 16
//! tokens; one run each but the first and last rows, whose ranges are the README's):
//!
//! | setup                                                | ms/step | samples/s   |
//! | ---------------------------------------------------- | ------- | ----------- |
//! | PyTorch 2.15 eager, `clip_step_torch.py`             | 63–73   | 873–1,012   |
//! | fused ops + mimalloc (this bench's default)          | 56–70   | 921–1,135   |
//! | fused ops + glibc malloc                             | 81      | 793         |
//! | fused ops + mimalloc, candle's own pool (2 threads)  | 77      | 834         |
//! | composite ops only + mimalloc                        | 303     | 211         |
//!
//! `vit-b16` is `ClipConfig::vit_b16` (224-px images, 16-px patches, ViT 768 wide × 12 layers,
//! text 512 wide × 12 layers, embed 512) with CLIP's 49,408-token vocabulary and 77-token
//! captions: see the README's Performance section for its numbers.
//!
//! Environment: `CLIP_STEP_STEPS` (timed steps, default 10; 3 for `vit-b16`), `CLIP_STEP_BATCH`
//! (default 64; 8), `CLIP_STEP_TOKENS` (padded caption length, default 16; 77),
//! `CLIP_STEP_VOCAB` (default 64; 49,408).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use candle_core::{Device, Result, Tensor};
use mimalloc::MiMalloc;
use vlmflow_ml::models::clip::{Clip, ClipConfig};
use vlmflow_ml::ops;
use vlmflow_ml::param_store::ParamStore;
use vlmflow_ml::rng::Rng;
use vlmflow_ml::train::optim::{AdamW, AdamWConfig, clip_grad_norm};

/// mimalloc unless `VLMFLOW_ALLOC=system`, decided once at the first allocation (read with
/// libc's `getenv`, which does not allocate) and never changed, so every block is freed by the
/// allocator that made it. glibc's malloc hands freed pages back to the OS each step and pays
/// for it in page faults (CANDLE-NOTES.md); mimalloc keeps them.
struct Switch;

static CHOICE: AtomicU8 = AtomicU8::new(0); // 0 undecided, 1 mimalloc, 2 system

fn use_system() -> bool {
    let mut c = CHOICE.load(Ordering::Relaxed);
    if c == 0 {
        // SAFETY: a NUL-terminated literal; the result is only read, before any thread starts.
        let v = unsafe { libc::getenv(c"VLMFLOW_ALLOC".as_ptr()) };
        let system = !v.is_null() && unsafe { std::ffi::CStr::from_ptr(v) }.to_bytes() == b"system";
        c = if system { 2 } else { 1 };
        CHOICE.store(c, Ordering::Relaxed);
    }
    c == 2
}

unsafe impl GlobalAlloc for Switch {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        unsafe {
            if use_system() {
                System.alloc(l)
            } else {
                MiMalloc.alloc(l)
            }
        }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe {
            if use_system() {
                System.dealloc(p, l)
            } else {
                MiMalloc.dealloc(p, l)
            }
        }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        unsafe {
            if use_system() {
                System.alloc_zeroed(l)
            } else {
                MiMalloc.alloc_zeroed(l)
            }
        }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        unsafe {
            if use_system() {
                System.realloc(p, l, n)
            } else {
                MiMalloc.realloc(p, l, n)
            }
        }
    }
}

#[global_allocator]
static ALLOC: Switch = Switch;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Default)]
struct Phases {
    forward: Duration,
    backward: Duration,
    optimizer: Duration,
}

fn main() -> Result<()> {
    // CANDLE_NUM_THREADS=1 (as `src/main.rs`): candle's elementwise pool spin-waits, and on 2
    // cores it fights the matmul threads (~25% of a step); the heavy elementwise work is in our
    // fused ops, which use rayon.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: set before any other thread exists.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
    if !use_system() {
        vlmflow::alloc::keep_freed_memory();
    }
    let composite = std::env::args().any(|a| a == "--composite");
    // `cargo bench` passes `--bench`: the model is the one argument without a leading dash.
    let model_name = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_else(|| "small".into());
    // (config, steps, batch, tokens, vocabulary) defaults per model.
    let (config, d_steps, d_batch, d_tokens, d_vocab): (fn(usize) -> ClipConfig, _, _, _, _) =
        match model_name.as_str() {
            "small" => (ClipConfig::small, 10, 64, 16, 64),
            "vit-b16" => (ClipConfig::vit_b16, 3, 8, 77, 49_408),
            other => candle_core::bail!("clip_step: unknown model `{other}`: small or vit-b16"),
        };
    let (steps, batch, t, vocab) = (
        env("CLIP_STEP_STEPS", d_steps),
        env("CLIP_STEP_BATCH", d_batch),
        env("CLIP_STEP_TOKENS", d_tokens),
        env("CLIP_STEP_VOCAB", d_vocab),
    );
    let cfg = config(vocab);
    let dev = Device::Cpu;
    let params = ParamStore::new(0, &dev);
    let model = Clip::new(&params, &cfg)?;
    let mut opt = AdamW::with_default_groups(params.vars(), AdamWConfig::default())?;
    let vars = params.vars();

    let mut rng = Rng::new(1);
    let s = cfg.vision.image_size;
    let px: Vec<f32> = (0..batch * 3 * s * s)
        .map(|_| rng.normal() as f32)
        .collect();
    let images = Tensor::from_vec(px, (batch, 3, s, s), &dev)?;
    let toks: Vec<u32> = (0..batch * t)
        .map(|_| rng.below(vocab as u64) as u32)
        .collect();
    let tokens = Tensor::from_vec(toks, (batch, t), &dev)?;
    let lens: Vec<u32> = (0..batch)
        .map(|_| 4 + rng.below(t as u64 - 3) as u32)
        .collect();
    let lengths = Tensor::from_vec(lens, batch, &dev)?;

    let mut step = |ph: &mut Phases| -> Result<f32> {
        let t0 = Instant::now();
        let loss = model.loss(&images, &tokens, &lengths)?;
        let t1 = Instant::now();
        let mut grads = loss.backward()?;
        let t2 = Instant::now();
        clip_grad_norm(&mut grads, &vars, 1.0)?;
        opt.step(&grads)?;
        let t3 = Instant::now();
        ph.forward += t1 - t0;
        ph.backward += t2 - t1;
        ph.optimizer += t3 - t2;
        loss.to_scalar::<f32>()
    };
    let mut run = |n: usize| -> Result<(Phases, Duration, f32)> {
        let mut ph = Phases::default();
        let start = Instant::now();
        let mut loss = 0.0;
        for _ in 0..n {
            loss = if composite {
                ops::with_composite(|| step(&mut ph))?
            } else {
                step(&mut ph)?
            };
        }
        Ok((ph, start.elapsed(), loss))
    };
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load_before = load_before.trim();
    run(if steps > 3 { 2 } else { 1 })?; // warm up: first-touch page faults, rayon pools
    let (ph, total, loss) = run(steps)?;
    let per = total.as_secs_f64() / steps as f64;
    let ms = |d: Duration| d.as_secs_f64() * 1e3 / steps as f64;
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!(
            "load average {} (before the timed steps: {load_before})",
            load.trim()
        );
    }
    println!(
        "clip_step {model_name}: batch {batch}, {t} tokens, vocabulary {vocab}, {} params, alloc {}, ops {}, threads {} (candle {})",
        params.num_params(),
        if use_system() { "system" } else { "mimalloc" },
        if composite { "composite" } else { "fused" },
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into()),
        std::env::var("CANDLE_NUM_THREADS").unwrap_or_default(),
    );
    println!(
        "  {:.1} ms/step ({:.prec$} samples/s) = forward {:.1} + backward {:.1} + clip/adamw {:.1} ms; loss {loss:.3}",
        per * 1e3,
        batch as f64 / per,
        ms(ph.forward),
        ms(ph.backward),
        ms(ph.optimizer),
        prec = if batch as f64 / per < 100.0 { 2 } else { 0 },
    );
    Ok(())
}
