//! Training the VLM (vlm-pretrain and finetune): images from the shards, sequences from the
//! split's caption records in the LM's chat template, the loss on labelled positions only.
//! What trains is decided by the caller (a frozen-name rule on the `ParamStore`); each part
//! (vision, projector, language model) gets its own learning-rate multiplier.

use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Result, Tensor};
use serde::{Deserialize, Serialize};

use super::lm::batch_tensors;
use super::optim::{AdamW, ParamGroup, no_decay};
use super::train_loop::{Hooks, Hyper, Objective, Trained, Trainer, micro_rows};
use crate::data::batch::Batch;
use crate::data::conversations::Sequences;
use crate::data::image::normalize_into;
use crate::data::stream::{Keep, Prefetched, TrainStream};
use crate::models::vlm::{Vlm, VlmConfig, is_lm, is_projector, is_vision};
use crate::param_store::ParamStore;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VlmTrainConfig {
    pub model: VlmConfig,
    #[serde(flatten)]
    pub hyper: Hyper,
    pub shuffle_buffer: usize,
    pub lr_scale: PartScales,
}

/// Learning-rate multipliers of the three parts (the projector usually trains fastest).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartScales {
    pub vision: f64,
    pub projector: f64,
    pub lm: f64,
}

/// Train on the shards in `train_dir` and their `sequences`. `params` carries the frozen rule;
/// `init` loads pretrained weights into it when there is no checkpoint to resume from.
#[allow(clippy::too_many_arguments)]
pub fn train(
    cfg: &VlmTrainConfig,
    params: ParamStore,
    train_dir: &Path,
    sequences: &Sequences,
    pad_id: u32,
    checkpoint_dir: &Path,
    hooks: &mut dyn Hooks,
    init: impl FnOnce(&ParamStore, &mut dyn Hooks) -> Result<()>,
) -> Result<Trained<Vlm>> {
    let device = params.device().clone();
    let model = Vlm::new(&params, &cfg.model)?;
    let adamw = cfg.hyper.adamw();
    let groups = part_groups(
        params.trainable_vars(),
        &cfg.lr_scale,
        cfg.hyper.weight_decay,
    );
    if groups.is_empty() {
        candle_core::bail!("nothing to train: every parameter is frozen");
    }
    let opt = AdamW::new(groups, adamw)?;
    let trainer = Trainer {
        config: cfg,
        hyper: &cfg.hyper,
        checkpoint_dir,
        hooks,
    };
    let finish = trainer.fit(
        &params,
        opt,
        |hooks| init(&params, hooks),
        |start| {
            // Only records with a sequence (some have no question–answer pairs, some are too long):
            // every batch is full, and a resumed run sees the batches an uninterrupted one would.
            let usable: Vec<bool> = sequences.by_index.iter().map(Option::is_some).collect();
            let keep: Keep = Arc::new(move |i| usable.get(i as usize).copied().unwrap_or(false));
            let stream = TrainStream::open_filtered(
                train_dir,
                cfg.hyper.batch_size,
                cfg.hyper.seed,
                cfg.shuffle_buffer,
                start,
                Some(keep),
            )?
            .prefetch()?;
            Ok(Conversations {
                model: &model,
                stream,
                sequences,
                pad_id,
                device: &device,
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

/// Optimizer groups: each part at its learning-rate scale, split into decay and no-decay.
pub fn part_groups(
    trainable: Vec<(String, candle_core::Var)>,
    scales: &PartScales,
    weight_decay: f64,
) -> Vec<ParamGroup> {
    type Part = (&'static str, fn(&str) -> bool, f64);
    let parts: [Part; 3] = [
        ("vision", is_vision, scales.vision),
        ("projector", is_projector, scales.projector),
        ("lm", is_lm, scales.lm),
    ];
    let mut groups = Vec::new();
    for (part, belongs, scale) in parts {
        let (nd, d): (Vec<_>, Vec<_>) = trainable
            .iter()
            .filter(|(n, _)| belongs(n))
            .cloned()
            .partition(|(n, _)| no_decay(n));
        for (suffix, wd, params) in [("decay", weight_decay, d), ("no_decay", 0.0, nd)] {
            if !params.is_empty() {
                groups.push(ParamGroup {
                    name: format!("{part}.{suffix}"),
                    lr_scale: scale,
                    weight_decay: wd,
                    params,
                });
            }
        }
    }
    groups
}

/// A batch ready for the model: the rows that have a sequence, with their images.
pub struct VlmBatch {
    pub images: Tensor,
    pub ids: Tensor,
    pub labels: Tensor,
    pub image_at: usize,
}

impl VlmBatch {
    /// `None` when no row of `batch` has a sequence.
    pub fn new(
        batch: &Batch,
        sequences: &Sequences,
        image_size: usize,
        pad_id: u32,
        device: &Device,
    ) -> Result<Option<VlmBatch>> {
        let image_len = 3 * image_size * image_size;
        let mut pixels = Vec::new();
        let mut rows = Vec::new();
        for (row, &index) in batch.indices.iter().enumerate() {
            if let Some(seq) = sequences.get(index) {
                let start = pixels.len();
                pixels.resize(start + image_len, 0.0);
                let bytes = &batch.images[row * image_len..(row + 1) * image_len];
                normalize_into(bytes, &mut pixels[start..]);
                rows.push(seq);
            }
        }
        let Some(image_at) = rows.first().and_then(|s| s.image_at) else {
            return Ok(None);
        };
        if rows.iter().any(|s| s.image_at != Some(image_at)) {
            candle_core::bail!("sequences place their image at different columns");
        }
        let n = rows.len();
        let (ids, labels) = batch_tensors(&rows, pad_id, device)?;
        Ok(Some(VlmBatch {
            images: Tensor::from_vec(pixels, (n, 3, image_size, image_size), device)?,
            ids,
            labels,
            image_at,
        }))
    }

    pub fn rows(&self) -> usize {
        self.ids.dim(0).unwrap_or(0)
    }

    /// The loss of micro-batch `i` of `n`.
    pub fn loss(&self, model: &Vlm, i: usize, n: usize) -> Result<Tensor> {
        let (start, len) = micro_rows(self.rows(), i, n);
        let images = self.images.narrow(0, start, len)?;
        model.loss(
            &self.ids.narrow(0, start, len)?,
            &self.labels.narrow(0, start, len)?,
            Some((&images, self.image_at)),
        )
    }
}

struct Conversations<'a> {
    model: &'a Vlm,
    stream: Prefetched,
    sequences: &'a Sequences,
    pad_id: u32,
    device: &'a Device,
    batch: Option<VlmBatch>,
}

impl Objective for Conversations<'_> {
    fn load_batch(&mut self, _step: u64) -> Result<usize> {
        let image_size = self.model.cfg.vision.image_size;
        let batch = self
            .stream
            .next()
            .ok_or_else(|| candle_core::Error::Msg("the data stream ended".into()))??;
        let b = VlmBatch::new(&batch, self.sequences, image_size, self.pad_id, self.device)?
            .ok_or_else(|| candle_core::Error::Msg("a batch without sequences".into()))?;
        let rows = b.rows();
        self.batch = Some(b);
        Ok(rows)
    }

    fn micro_loss(&self, i: usize, n: usize) -> Result<Tensor> {
        let batch = self.batch.as_ref().expect("load_batch comes first");
        batch.loss(self.model, i, n)
    }
}
