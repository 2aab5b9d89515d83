//! Training the language model on text alone (the offline default's `lm-train`): the chat-formatted
//! captions and question–answer turns of the data, every token learned, so that the LM knows
//! the language and the template before it is frozen under the VLM.

use std::path::Path;

use candle_core::{Device, Result, Tensor};
use serde::{Deserialize, Serialize};

use super::optim::AdamW;
use super::train_loop::{Hooks, Hyper, Objective, Trained, Trainer, micro_rows};
use crate::data::conversations::{Sequences, pad_batch};
use crate::models::lm_loss::next_token_loss;
use crate::models::qwen2::Qwen2;
use crate::models::qwen2_config::Qwen2Config;
use crate::param_store::ParamStore;
use crate::rng::Rng;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LmTrainConfig {
    pub model: Qwen2Config,
    #[serde(flatten)]
    pub hyper: Hyper,
}

/// Train a fresh model on `train` (resuming from `checkpoint_dir` when it holds a checkpoint).
pub fn train(
    cfg: &LmTrainConfig,
    train: &Sequences,
    pad_id: u32,
    checkpoint_dir: &Path,
    device: &Device,
    hooks: &mut dyn Hooks,
) -> Result<Trained<Qwen2>> {
    let params = ParamStore::new(cfg.hyper.seed, device);
    let model = Qwen2::new(&params, &cfg.model)?;
    let opt = AdamW::with_default_groups(params.vars(), cfg.hyper.adamw())?;
    let trainer = Trainer {
        config: cfg,
        hyper: &cfg.hyper,
        checkpoint_dir,
        hooks,
    };
    let finish = trainer.fit(
        &params,
        opt,
        |_| Ok(()),
        |_start| {
            Ok(TextObjective {
                model: &model,
                order: SequenceOrder::new(train, cfg.hyper.batch_size, cfg.hyper.seed)?,
                sequences: train,
                pad_id,
                device,
                batch: None,
            })
        },
    )?;
    Ok(Trained {
        params,
        model,
        finish,
    })
}

/// Mean next-token loss over every usable sequence of `sequences`, in batches of `batch_size`.
pub fn evaluate(
    model: &Qwen2,
    sequences: &Sequences,
    pad_id: u32,
    batch_size: usize,
    device: &Device,
) -> Result<f64> {
    let rows: Vec<_> = sequences.by_index.iter().flatten().collect();
    let (mut sum, mut batches) = (0.0, 0usize);
    for chunk in rows.chunks(batch_size.max(1)) {
        let (ids, labels) = batch_tensors(chunk, pad_id, device)?;
        let hidden = model.hidden_states(&model.embed(&ids)?, None)?;
        sum += next_token_loss(model, &hidden, &labels)?.to_scalar::<f32>()? as f64;
        batches += 1;
    }
    Ok(if batches == 0 {
        f64::NAN
    } else {
        sum / batches as f64
    })
}

/// Right-padded `(ids, labels)` tensors of `rows`.
pub fn batch_tensors(
    rows: &[&crate::data::chat::Tokenized],
    pad_id: u32,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let (ids, labels, len) = pad_batch(rows, pad_id);
    Ok((
        Tensor::from_vec(ids, (rows.len(), len), device)?,
        Tensor::from_vec(labels, (rows.len(), len), device)?,
    ))
}

/// Which sequences make step s's batch: a seeded permutation per epoch, so the order is a
/// function of (seed, step) and a resumed run sees what an uninterrupted one would have.
pub struct SequenceOrder {
    usable: Vec<u64>,
    batch_size: usize,
    seed: u64,
    epoch: Option<(u64, Vec<u64>)>,
}

impl SequenceOrder {
    pub fn new(sequences: &Sequences, batch_size: usize, seed: u64) -> Result<Self> {
        let usable: Vec<u64> = (0..sequences.by_index.len() as u64)
            .filter(|&i| sequences.get(i).is_some())
            .collect();
        if batch_size == 0 || usable.len() < batch_size {
            candle_core::bail!(
                "{} usable sequences are fewer than one batch of {batch_size}: lower batch_size or use more data",
                usable.len()
            );
        }
        Ok(Self {
            usable,
            batch_size,
            seed,
            epoch: None,
        })
    }

    /// Record indices of step `step`'s batch.
    pub fn batch(&mut self, step: u64) -> &[u64] {
        let per_epoch = (self.usable.len() / self.batch_size) as u64;
        let epoch = step / per_epoch;
        if self.epoch.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut order = self.usable.clone();
            Rng::new(self.seed).fork(epoch).shuffle(&mut order);
            self.epoch = Some((epoch, order));
        }
        let at = (step % per_epoch) as usize * self.batch_size;
        &self.epoch.as_ref().expect("set above").1[at..at + self.batch_size]
    }
}

struct TextObjective<'a> {
    model: &'a Qwen2,
    order: SequenceOrder,
    sequences: &'a Sequences,
    pad_id: u32,
    device: &'a Device,
    batch: Option<(Tensor, Tensor)>,
}

impl Objective for TextObjective<'_> {
    fn load_batch(&mut self, step: u64) -> Result<usize> {
        let rows: Vec<_> = self
            .order
            .batch(step)
            .iter()
            .filter_map(|&i| self.sequences.get(i))
            .collect();
        self.batch = Some(batch_tensors(&rows, self.pad_id, self.device)?);
        Ok(rows.len())
    }

    fn micro_loss(&self, i: usize, n: usize) -> Result<Tensor> {
        let (ids, labels) = self.batch.as_ref().expect("load_batch comes first");
        let (start, len) = micro_rows(ids.dim(0)?, i, n);
        let (ids, labels) = (ids.narrow(0, start, len)?, labels.narrow(0, start, len)?);
        let hidden = self.model.hidden_states(&self.model.embed(&ids)?, None)?;
        next_token_loss(self.model, &hidden, &labels)
    }
}
