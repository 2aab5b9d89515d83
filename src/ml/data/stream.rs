//! The training data stream: shuffled batches epoch after epoch, resumable at any step. The order
//! is a function of (seed, step) alone, so a run resumed from a checkpoint at step k sees exactly
//! the batches an uninterrupted run would have seen from step k on.

use std::path::Path;

use super::batch::{Batch, batches};
use super::shards::ShardSet;
use super::{DataError, Result};

pub struct TrainStream {
    set: ShardSet,
    batch_size: usize,
    seed: u64,
    shuffle_buffer: usize,
    batches_per_epoch: u64,
    step: u64,
    current: Option<Box<dyn Iterator<Item = Result<Batch>> + Send>>,
}

impl TrainStream {
    /// Batches of `batch_size` (the last, incomplete batch of an epoch is dropped), from `start_step`.
    pub fn open(
        dir: &Path,
        batch_size: usize,
        seed: u64,
        shuffle_buffer: usize,
        start_step: u64,
    ) -> Result<TrainStream> {
        let set = ShardSet::open(dir)?;
        let batches_per_epoch = set.len() / batch_size as u64;
        if batches_per_epoch == 0 {
            return Err(DataError::Invalid(format!(
                "{}: {} records are fewer than one batch of {batch_size}: lower batch_size or use more data",
                dir.display(),
                set.len()
            )));
        }
        Ok(TrainStream {
            set,
            batch_size,
            seed,
            shuffle_buffer,
            batches_per_epoch,
            step: start_step,
            current: None,
        })
    }

    pub fn batches_per_epoch(&self) -> u64 {
        self.batches_per_epoch
    }

    fn start_epoch(&mut self) -> Result<()> {
        let epoch = self.step / self.batches_per_epoch;
        let records = self.set.shuffled(self.seed, epoch, self.shuffle_buffer);
        let mut iter = batches(records, self.set.spec(), self.batch_size, true);
        // Resuming mid-epoch: skip the batches already trained on.
        for _ in 0..self.step % self.batches_per_epoch {
            iter.next().transpose()?;
        }
        self.current = Some(Box::new(iter));
        Ok(())
    }
}

impl Iterator for TrainStream {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        let new_epoch = self.current.is_none() || self.step.is_multiple_of(self.batches_per_epoch);
        if new_epoch && let Err(e) = self.start_epoch() {
            return Some(Err(e));
        }
        let batch = self.current.as_mut()?.next();
        self.step += 1;
        batch
    }
}
