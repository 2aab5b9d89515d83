//! The language-modelling loss on labelled positions: the logits at column i are scored
//! against `labels[i + 1]`, wherever that label is not `IGNORE` (prompt, image, padding).

use candle_core::{DType, Result, Tensor};

use super::qwen2::Qwen2;
use crate::data::chat::IGNORE;
use crate::ops;

/// Mean next-token cross-entropy from the final hidden states `(N, T, C)` and labels `(N, T)`
/// (i64). Logits are computed only where a label is, which spares the vocabulary projection of
/// every image and prompt position (most of them, with a 150k-token vocabulary).
pub fn next_token_loss(lm: &Qwen2, hidden: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let (n, t, c) = hidden.dims3()?;
    let targets: Vec<i64> = labels.narrow(1, 1, t - 1)?.flatten_all()?.to_vec1()?;
    let (rows, picked): (Vec<u32>, Vec<u32>) = targets
        .iter()
        .enumerate()
        .filter(|(_, l)| **l != IGNORE)
        .map(|(i, &l)| (i as u32, l as u32))
        .unzip();
    if rows.is_empty() {
        candle_core::bail!("the batch has no position to learn (every label is ignored)");
    }
    let dev = hidden.device();
    let m = rows.len();
    let h = hidden
        .narrow(1, 0, t - 1)?
        .reshape((n * (t - 1), c))?
        .index_select(&Tensor::from_vec(rows, m, dev)?, 0)?;
    let logits = lm.logits(&h)?.unsqueeze(0)?;
    let targets = Tensor::from_vec(picked, (1, m), dev)?;
    let mask = Tensor::ones((1, m), DType::F32, dev)?;
    masked_cross_entropy(&logits, &targets, &mask)
}

/// Mean cross-entropy of `logits` `(N, T, V)` against `targets` `(N, T)` (u32) over positions
/// where `mask` `(N, T)` is 1 (a masked loss: padding, prompt tokens). Differentiable.
pub fn masked_cross_entropy(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let (n, t, v) = logits.dims3()?;
    let nll = ops::cross_entropy(&logits.reshape((n * t, v))?, &targets.flatten_all()?)?
        .reshape((n, t))?;
    let count = mask.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?;
    let mask = mask.to_dtype(nll.dtype())?;
    if count == 0.0 {
        candle_core::bail!("masked_cross_entropy: the mask selects no position");
    }
    (nll * mask)?.sum_all()? / count as f64
}
