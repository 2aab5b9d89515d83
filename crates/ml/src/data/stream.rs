//! The training data stream: shuffled batches epoch after epoch, resumable at any step. The order
//! is a function of (seed, step) alone, so a run resumed from a checkpoint at step k sees exactly
//! the batches an uninterrupted run would have seen from step k on. A filtered stream (records a
//! trainer cannot use left out before batching) keeps that: its batches are always full.

use std::path::Path;
use std::sync::Arc;

use super::batch::{Batch, batches};
use super::prefetch::Prefetch;
use super::shards::ShardSet;
use super::{DataError, Result};

pub struct TrainStream {
    set: ShardSet,
    batch_size: usize,
    seed: u64,
    shuffle_buffer: usize,
    batches_per_epoch: u64,
    step: u64,
    keep: Option<Keep>,
    current: Option<Box<dyn Iterator<Item = Result<Batch>> + Send>>,
}

/// Which records (by index in the shard set) a filtered stream draws from.
pub type Keep = Arc<dyn Fn(u64) -> bool + Send + Sync>;

/// A stream's batches, read and decoded on a thread of their own (`TrainStream::prefetch`).
pub type Prefetched = Prefetch<Result<Batch>>;

/// How many batches the reading thread may hold ready: one being trained on is the caller's,
/// two more hide a slow read or decode.
const PREFETCH_DEPTH: usize = 2;

impl TrainStream {
    /// The same batches, in the same order, read and decoded ahead on a thread of their own.
    pub fn prefetch(self) -> Result<Prefetched> {
        Prefetch::new(self, PREFETCH_DEPTH).map_err(|source| super::DataError::Io {
            path: "a thread to read the training data".into(),
            source,
        })
    }

    /// Batches of `batch_size` (the last, incomplete batch of an epoch is dropped), from `start_step`.
    pub fn open(
        dir: &Path,
        batch_size: usize,
        seed: u64,
        shuffle_buffer: usize,
        start_step: u64,
    ) -> Result<TrainStream> {
        Self::open_filtered(dir, batch_size, seed, shuffle_buffer, start_step, None)
    }

    /// [`TrainStream::open`] over the records `keep` passes only (all with `None`).
    pub fn open_filtered(
        dir: &Path,
        batch_size: usize,
        seed: u64,
        shuffle_buffer: usize,
        start_step: u64,
        keep: Option<Keep>,
    ) -> Result<TrainStream> {
        let set = ShardSet::open(dir)?;
        let (kept, what) = match &keep {
            Some(keep) => (
                (0..set.len()).filter(|&i| keep(i)).count() as u64,
                "usable records",
            ),
            None => (set.len(), "records"),
        };
        let batches_per_epoch = kept / batch_size as u64;
        if batches_per_epoch == 0 {
            return Err(DataError::Invalid(format!(
                "{}: {kept} {what} are fewer than one batch of {batch_size}: lower batch_size or \
                 use more data",
                dir.display(),
            )));
        }
        Ok(TrainStream {
            set,
            batch_size,
            seed,
            shuffle_buffer,
            batches_per_epoch,
            step: start_step,
            keep,
            current: None,
        })
    }

    pub fn batches_per_epoch(&self) -> u64 {
        self.batches_per_epoch
    }

    fn start_epoch(&mut self) -> Result<()> {
        let epoch = self.step / self.batches_per_epoch;
        let records = self.set.shuffled(self.seed, epoch, self.shuffle_buffer);
        let keep = self.keep.clone();
        let records = records.filter(move |r| match (&keep, r) {
            (Some(keep), Ok(r)) => keep(r.index),
            _ => true,
        });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::shards::tests::record;
    use crate::data::shards::{ShardSpec, ShardWriter};

    #[test]
    fn a_filtered_stream_has_full_batches_of_kept_records_and_resumes_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ShardSpec::new(4, 8, 512, 1);
        let mut writer = ShardWriter::create(dir.path(), spec, 16).unwrap();
        for i in 0..100 {
            writer.write(&record(&spec, i)).unwrap();
        }
        writer.finish().unwrap();
        // Every third record is unusable: 67 kept, 6 batches of 10 per epoch.
        let keep: Keep = Arc::new(|i| i % 3 != 1);
        let open = |start| {
            TrainStream::open_filtered(dir.path(), 10, 5, 32, start, Some(keep.clone())).unwrap()
        };
        assert_eq!(open(0).batches_per_epoch(), 6);
        let all: Vec<Batch> = open(0).take(15).collect::<Result<_>>().unwrap();
        for b in &all {
            assert_eq!(b.size, 10);
            assert!(b.indices.iter().all(|&i| i % 3 != 1), "{:?}", b.indices);
        }
        let resumed: Vec<Vec<u64>> = open(8).take(7).map(|b| b.unwrap().indices).collect();
        let uninterrupted: Vec<Vec<u64>> = all[8..].iter().map(|b| b.indices.clone()).collect();
        assert_eq!(resumed, uninterrupted);
        let err = TrainStream::open_filtered(dir.path(), 10, 5, 32, 0, Some(Arc::new(|i| i < 5)))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("5 usable records are fewer than one batch of 10"),
            "{err}"
        );
    }
}
