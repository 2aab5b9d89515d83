//! Training a CLIP from shards: the contrastive objective in the shared loop (`train_loop`).
//! Deterministic from its seed on CPU, resumable from the checkpoint folder it keeps, and silent
//! about everything else: progress, metrics and interrupts go through `Hooks`.

use std::path::Path;

use candle_core::{Device, Result, Tensor};
use serde::{Deserialize, Serialize};

use super::optim::AdamW;
use super::train_loop::{Hooks, Hyper, Objective, Trained, Trainer, micro_rows};
use crate::data::batch::Batch;
use crate::data::image::normalize_into;
use crate::data::stream::{Prefetched, TrainStream};
use crate::models::clip::{Clip, ClipConfig};
use crate::param_store::ParamStore;

/// Everything that shapes a training run (the stage's params, resolved).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainConfig {
    pub model: ClipConfig,
    #[serde(flatten)]
    pub hyper: Hyper,
    pub shuffle_buffer: usize,
}

/// Train on the shards in `train_dir`, keeping checkpoints in `checkpoint_dir` (resuming from the
/// one there, if any). `init_from` is a `model.safetensors` to start from instead of random weights.
pub fn train(
    cfg: &TrainConfig,
    train_dir: &Path,
    checkpoint_dir: &Path,
    init_from: Option<&Path>,
    device: &Device,
    hooks: &mut dyn Hooks,
) -> Result<Trained<Clip>> {
    let params = ParamStore::new(cfg.hyper.seed, device);
    let model = Clip::new(&params, &cfg.model)?;
    let opt = AdamW::with_default_groups(params.vars(), cfg.hyper.adamw())?;
    let trainer = Trainer {
        config: cfg,
        hyper: &cfg.hyper,
        checkpoint_dir,
        hooks,
    };
    let init = |hooks: &mut dyn Hooks| {
        if let Some(path) = init_from {
            params.load(path)?;
            hooks.log(&format!("initialised from {}", path.display()));
        }
        Ok(())
    };
    let finish = trainer.fit(&params, opt, init, |start| {
        let stream = TrainStream::open(
            train_dir,
            cfg.hyper.batch_size,
            cfg.hyper.seed,
            cfg.shuffle_buffer,
            start,
        )?
        .prefetch()?;
        Ok(Contrastive {
            model: &model,
            stream,
            image_size: cfg.model.vision.image_size,
            device,
            batch: None,
        })
    })?;
    Ok(Trained {
        params,
        model,
        finish,
    })
}

/// The contrastive objective over a stream of shard batches.
struct Contrastive<'a> {
    model: &'a Clip,
    stream: Prefetched,
    image_size: usize,
    device: &'a Device,
    batch: Option<BatchTensors>,
}

impl Objective for Contrastive<'_> {
    fn load_batch(&mut self, _step: u64) -> Result<usize> {
        let batch = self
            .stream
            .next()
            .ok_or_else(|| candle_core::Error::Msg("the data stream ended".into()))??;
        self.batch = Some(BatchTensors::new(&batch, self.image_size, self.device)?);
        Ok(batch.size)
    }

    fn micro_loss(&self, i: usize, n: usize) -> Result<Tensor> {
        let batch = self.batch.as_ref().expect("load_batch comes first");
        let (images, tokens, lengths) = batch.micro_batch(i, n)?;
        self.model.loss(&images, &tokens, &lengths)
    }

    fn report(&self) -> Vec<(&'static str, f64)> {
        let temperature = self.model.temperature().and_then(|t| t.to_scalar::<f32>());
        temperature.map_or_else(|_| vec![], |t| vec![("temperature", f64::from(t))])
    }
}

/// A batch as tensors: images normalised with the CLIP mean/std, tokens and their lengths.
pub struct BatchTensors {
    pub images: Tensor,
    pub tokens: Tensor,
    pub lengths: Tensor,
}

impl BatchTensors {
    pub fn new(batch: &Batch, image_size: usize, device: &Device) -> Result<BatchTensors> {
        let mut pixels = vec![0f32; batch.images.len()];
        normalize_into(&batch.images, &mut pixels);
        Ok(BatchTensors {
            images: Tensor::from_vec(pixels, (batch.size, 3, image_size, image_size), device)?,
            tokens: Tensor::from_vec(batch.tokens.clone(), (batch.size, batch.seq_len), device)?,
            lengths: Tensor::from_vec(batch.lengths.clone(), batch.size, device)?,
        })
    }

    /// Rows of micro-batch `i` of `n` (equal slices; the last takes the remainder).
    pub fn micro_batch(&self, i: usize, n: usize) -> Result<(Tensor, Tensor, Tensor)> {
        if n == 1 {
            return Ok((
                self.images.clone(),
                self.tokens.clone(),
                self.lengths.clone(),
            ));
        }
        let (start, len) = micro_rows(self.images.dim(0)?, i, n);
        Ok((
            self.images.narrow(0, start, len)?,
            self.tokens.narrow(0, start, len)?,
            self.lengths.narrow(0, start, len)?,
        ))
    }
}
