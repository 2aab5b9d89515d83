//! Generation speed with and without the KV cache: greedy, batch 1, a 16-token prompt, 256 new
//! tokens (no stop token), on the `small` Qwen2 (2 layers, 128 wide, vocabulary 512) and a mid
//! size (4 layers, 256 wide, 8 query / 2 key-value heads, vocabulary 8192).
//!
//!     cargo bench --bench generate                 # both configs
//!     cargo bench --bench generate -- small        # one of them
//!
//! Without the cache each new token recomputes the whole sequence (quadratic in its length);
//! with it, one position per step. Runs alternate between the two paths so that load from other
//! processes falls on both alike; the best of `GEN_REPS` (default 3) runs is reported. Set
//! `GEN_TOKENS` for another length. The binary's own settings are used: mimalloc and
//! `CANDLE_NUM_THREADS=1` (see `src/main.rs`).

use std::time::{Duration, Instant};

use candle_core::{Device, Result};
use vlmflow_ml::infer::generate::{Generated, Prompt, SamplingConfig, generate, generate_uncached};
use vlmflow_ml::models::qwen2::{Qwen2, Qwen2Config};
use vlmflow_ml::param_store::ParamStore;
use vlmflow_ml::rng::Rng;

#[global_allocator]
static ALLOCATOR: vlmflow::alloc::MiMalloc = vlmflow::alloc::MiMalloc;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn mid() -> Qwen2Config {
    Qwen2Config {
        hidden_size: 256,
        intermediate_size: 1024,
        num_hidden_layers: 4,
        num_attention_heads: 8,
        num_key_value_heads: 2,
        ..Qwen2Config::small(8192)
    }
}

fn timed(f: impl FnOnce() -> Result<Generated>) -> Result<(Duration, Generated)> {
    let start = Instant::now();
    let out = f()?;
    Ok((start.elapsed(), out))
}

fn bench(name: &str, cfg: &Qwen2Config, new_tokens: usize, reps: usize) -> Result<()> {
    let params = ParamStore::new(0, &Device::Cpu);
    let model = Qwen2::new(&params, cfg)?;
    let mut rng = Rng::new(1);
    let prompt = vec![
        (0..16)
            .map(|_| rng.below(cfg.vocab_size as u64) as u32)
            .collect::<Vec<u32>>(),
    ];
    let sampling = SamplingConfig {
        max_new_tokens: new_tokens,
        ..SamplingConfig::default()
    };
    let run = |cached: bool| {
        timed(|| {
            let p = Prompt::Ids(&prompt);
            if cached {
                generate(&model, p, &sampling, |_, _| {})
            } else {
                generate_uncached(&model, p, &sampling, |_, _| {})
            }
        })
    };
    run(true)?; // warm up: page faults, thread pools
    let (mut best_c, mut best_u) = (Duration::MAX, Duration::MAX);
    let mut same = true;
    for _ in 0..reps {
        let (tc, a) = run(true)?;
        let (tu, b) = run(false)?;
        assert_eq!(a.tokens[0].len(), new_tokens, "generation stopped early");
        same &= a == b;
        best_c = best_c.min(tc);
        best_u = best_u.min(tu);
    }
    let rate = |d: Duration| new_tokens as f64 / d.as_secs_f64();
    println!(
        "{name}: {} params, 16-token prompt, {new_tokens} new tokens, best of {reps}",
        params.num_params()
    );
    println!(
        "  with KV cache    {:8.1} ms  {:8.1} tokens/s",
        best_c.as_secs_f64() * 1e3,
        rate(best_c)
    );
    println!(
        "  without cache    {:8.1} ms  {:8.1} tokens/s",
        best_u.as_secs_f64() * 1e3,
        rate(best_u)
    );
    println!(
        "  speed-up {:.1}×; same tokens on both paths: {}",
        best_u.as_secs_f64() / best_c.as_secs_f64(),
        if same { "yes" } else { "NO" }
    );
    Ok(())
}

fn main() -> Result<()> {
    vlmflow::alloc::keep_freed_memory();
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: set before any other thread exists.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
    let (new_tokens, reps) = (env("GEN_TOKENS", 256), env("GEN_REPS", 3));
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |name: &str| only.is_empty() || only.iter().any(|a| a == name);
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        println!("load average {} on {cores} cores", load.trim());
    }
    if wanted("small") {
        bench("small", &Qwen2Config::small(512), new_tokens, reps)?;
    }
    if wanted("mid") {
        bench("mid", &mid(), new_tokens, reps)?;
    }
    Ok(())
}
