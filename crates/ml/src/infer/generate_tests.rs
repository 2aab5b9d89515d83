//! Generation: the KV-cache path equals full recomputation token for token; sampling, stopping,
//! streaming and prompts given as embeddings.

use candle_core::{Device, IndexOp, Result, Tensor};

use super::*;
use crate::models::qwen2::Qwen2Config;
use crate::models::qwen2::tests::{lively_model, tiny_config};
use crate::rng::Rng;

fn prompts() -> Vec<Vec<u32>> {
    vec![
        vec![5, 9, 11, 2, 30],
        vec![7, 3],
        vec![12, 13, 14, 15, 16, 17, 18],
    ]
}

fn both(model: &Qwen2, prompt: Prompt, cfg: &SamplingConfig) -> Result<(Generated, Generated)> {
    let cached = generate(model, prompt, cfg, |_, _| {})?;
    let uncached = generate_uncached(model, prompt, cfg, |_, _| {})?;
    Ok((cached, uncached))
}

#[test]
fn cached_generation_equals_uncached_token_for_token() -> Result<()> {
    // Temperatures near 1 so that sampling really draws: check the draws are not all the argmax.
    let cfg = tiny_config(false);
    let (_, model) = lively_model(&cfg, 1)?;
    let rows = prompts();
    let greedy = SamplingConfig {
        max_new_tokens: 20,
        ..SamplingConfig::default()
    };
    let sampled = SamplingConfig {
        temperature: 1.0,
        top_p: 0.9,
        seed: 7,
        ..greedy.clone()
    };
    let hot = SamplingConfig {
        temperature: 1.5,
        seed: 8,
        ..greedy.clone()
    };
    let (g, g2) = both(&model, Prompt::Ids(&rows), &greedy)?;
    assert_eq!(g, g2);
    assert!(g.tokens.iter().all(|t| t.len() == 20) && g.stopped.iter().all(|s| !s));
    for s in [&sampled, &hot] {
        let (a, b) = both(&model, Prompt::Ids(&rows), s)?;
        assert_eq!(a, b, "sampled, seed {}", s.seed);
        assert_ne!(
            a.tokens, g.tokens,
            "sampling at temperature {} drew only argmaxes",
            s.temperature
        );
    }
    // The same seed draws the same tokens again; another seed does not.
    let again = generate(&model, Prompt::Ids(&rows), &sampled, |_, _| {})?;
    let other = generate(
        &model,
        Prompt::Ids(&rows),
        &SamplingConfig {
            seed: 99,
            ..sampled.clone()
        },
        |_, _| {},
    )?;
    assert_eq!(again, both(&model, Prompt::Ids(&rows), &sampled)?.0);
    assert_ne!(again.tokens, other.tokens);
    Ok(())
}

#[test]
fn a_batch_generates_what_each_row_generates_alone() -> Result<()> {
    let (_, model) = lively_model(&tiny_config(true), 2)?;
    let cfg = SamplingConfig {
        max_new_tokens: 12,
        ..SamplingConfig::default()
    };
    let rows = prompts();
    let batch = generate(&model, Prompt::Ids(&rows), &cfg, |_, _| {})?;
    for (r, row) in rows.iter().enumerate() {
        let alone = generate(
            &model,
            Prompt::Ids(std::slice::from_ref(row)),
            &cfg,
            |_, _| {},
        )?;
        assert_eq!(alone.tokens[0], batch.tokens[r], "row {r}");
    }
    Ok(())
}

#[test]
fn rows_stop_at_a_stop_token_which_is_not_kept_and_tokens_stream_in_order() -> Result<()> {
    let (_, model) = lively_model(&tiny_config(false), 3)?;
    let rows = prompts();
    let free = generate(
        &model,
        Prompt::Ids(&rows),
        &SamplingConfig {
            max_new_tokens: 10,
            ..SamplingConfig::default()
        },
        |_, _| {},
    )?;
    // Stop row 0 at its fourth token.
    let stop = free.tokens[0][3];
    let cfg = SamplingConfig {
        max_new_tokens: 10,
        stop_tokens: vec![stop],
        ..SamplingConfig::default()
    };
    let mut streamed = vec![vec![]; rows.len()];
    let (out, reference) = (
        generate(&model, Prompt::Ids(&rows), &cfg, |r, t| streamed[r].push(t))?,
        generate_uncached(&model, Prompt::Ids(&rows), &cfg, |_, _| {})?,
    );
    assert_eq!(out, reference);
    assert_eq!(out.tokens, streamed);
    let first = free.tokens[0].iter().position(|&t| t == stop).unwrap();
    assert_eq!(out.tokens[0], free.tokens[0][..first]);
    assert!(out.stopped[0]);
    for r in 1..rows.len() {
        // Other rows run on, cut at their own first stop token if they meet one.
        let end = free.tokens[r].iter().position(|&t| t == stop).unwrap_or(10);
        assert_eq!(out.tokens[r], free.tokens[r][..end], "row {r}");
        assert_eq!(out.stopped[r], end < 10);
    }
    Ok(())
}

#[test]
fn embedding_prompts_generate_like_their_ids_and_accept_spliced_vectors() -> Result<()> {
    let cfg = tiny_config(false);
    let (_, model) = lively_model(&cfg, 4)?;
    let rows = prompts();
    let s = SamplingConfig {
        max_new_tokens: 8,
        temperature: 0.8,
        seed: 3,
        ..SamplingConfig::default()
    };
    let embeds: Vec<Tensor> = rows
        .iter()
        .map(|r| {
            model
                .embed(&Tensor::new(r.as_slice(), &Device::Cpu)?.unsqueeze(0)?)?
                .i(0)
        })
        .collect::<Result<_>>()?;
    let by_ids = generate(&model, Prompt::Ids(&rows), &s, |_, _| {})?;
    assert_eq!(
        generate(&model, Prompt::Embeds(&embeds), &s, |_, _| {})?,
        by_ids
    );
    // An "image" of 3 arbitrary vectors before each prompt: both paths still agree.
    let image = crate::ops::tests::randn(&mut Rng::new(5), &[3, cfg.hidden_size], 0.5)?;
    let spliced: Vec<Tensor> = embeds
        .iter()
        .map(|e| Tensor::cat(&[&image, e], 0))
        .collect::<Result<_>>()?;
    let (a, b) = both(&model, Prompt::Embeds(&spliced), &s)?;
    assert_eq!(a, b);
    Ok(())
}

#[test]
fn top_p_keeps_the_smallest_likely_set() {
    // Probabilities ∝ e^{2, 1, 0, −5}: about 0.66, 0.24, 0.09, 0.0004.
    let logits = [2.0f32, 1.0, 0.0, -5.0];
    let draw = |top_p: f64| -> std::collections::BTreeSet<u32> {
        let cfg = SamplingConfig {
            temperature: 1.0,
            top_p,
            ..SamplingConfig::default()
        };
        let mut s = Sampler::new(&cfg).unwrap();
        (0..2000).map(|_| s.pick(&logits)).collect()
    };
    assert_eq!(draw(0.5), [0].into());
    assert_eq!(draw(0.8), [0, 1].into());
    assert_eq!(draw(0.95), [0, 1, 2].into());
    assert_eq!(draw(1.0), [0, 1, 2, 3].into());
    let greedy = Sampler::new(&SamplingConfig::default())
        .unwrap()
        .pick(&[0.0, 3.0, 3.0]);
    assert_eq!(greedy, 1, "ties go to the lowest id");
}

#[test]
fn bad_settings_and_prompts_are_errors() -> Result<()> {
    let model = Qwen2::new(
        &crate::param_store::ParamStore::new(0, &Device::Cpu),
        &Qwen2Config::small(16),
    )?;
    let rows = prompts()
        .into_iter()
        .map(|r| r.into_iter().map(|t| t % 16).collect())
        .collect::<Vec<Vec<u32>>>();
    for bad in [
        SamplingConfig {
            temperature: -1.0,
            ..SamplingConfig::default()
        },
        SamplingConfig {
            top_p: 0.0,
            ..SamplingConfig::default()
        },
        SamplingConfig {
            top_p: 1.5,
            ..SamplingConfig::default()
        },
    ] {
        assert!(
            generate(&model, Prompt::Ids(&rows), &bad, |_, _| {}).is_err(),
            "{bad:?}"
        );
    }
    let ok = SamplingConfig::default();
    assert!(generate(&model, Prompt::Ids(&[vec![]]), &ok, |_, _| {}).is_err());
    assert!(generate(&model, Prompt::Ids(&[]), &ok, |_, _| {}).is_err());
    let narrow = Tensor::zeros((2, 7), candle_core::DType::F32, &Device::Cpu)?;
    assert!(generate(&model, Prompt::Embeds(&[narrow]), &ok, |_, _| {}).is_err());
    let zero = SamplingConfig {
        max_new_tokens: 0,
        ..ok
    };
    assert_eq!(
        generate(&model, Prompt::Ids(&rows), &zero, |_, _| {})?.tokens,
        vec![Vec::<u32>::new(); 3]
    );
    Ok(())
}
