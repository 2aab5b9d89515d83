//! Batches: records gathered for one training step, as plain vectors the model code turns into
//! tensors. Token rows are padded to the longest sequence of the batch.

use super::Result;
use super::shards::{Record, ShardSpec};

/// Records gathered for one step, as plain vectors (the model code makes tensors of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub size: usize,
    /// Tokens per row: the longest sequence in this batch; shorter rows are padded with `pad_id`.
    pub seq_len: usize,
    /// `size × channels × image_size × image_size` bytes, CHW per image.
    pub images: Vec<u8>,
    /// `size × seq_len` ids, row-major.
    pub tokens: Vec<u32>,
    pub lengths: Vec<u32>,
    pub prompt_lens: Vec<u32>,
    pub labels: Vec<i32>,
    /// Each row's record index in its shard set (see `Record::index`).
    pub indices: Vec<u64>,
}

impl Batch {
    pub fn from_records(spec: &ShardSpec, records: &[Record]) -> Batch {
        let seq_len = records.iter().map(|r| r.tokens.len()).max().unwrap_or(0);
        let mut batch = Batch {
            size: records.len(),
            seq_len,
            images: Vec::with_capacity(records.len() * spec.image_len()),
            tokens: Vec::with_capacity(records.len() * seq_len),
            lengths: Vec::with_capacity(records.len()),
            prompt_lens: Vec::with_capacity(records.len()),
            labels: Vec::with_capacity(records.len()),
            indices: Vec::with_capacity(records.len()),
        };
        for r in records {
            batch.images.extend_from_slice(&r.image);
            batch.tokens.extend_from_slice(&r.tokens);
            batch
                .tokens
                .extend(std::iter::repeat_n(spec.pad_id, seq_len - r.tokens.len()));
            batch.lengths.push(r.tokens.len() as u32);
            batch.prompt_lens.push(u32::from(r.prompt_len));
            batch.labels.push(r.label);
            batch.indices.push(r.index);
        }
        batch
    }
}

/// Group a record stream into batches of `batch_size`; the last, smaller one is kept unless
/// `drop_last`. An error ends the stream after being passed on.
pub fn batches<I>(records: I, spec: ShardSpec, batch_size: usize, drop_last: bool) -> Batches<I>
where
    I: Iterator<Item = Result<Record>>,
{
    assert!(batch_size > 0, "batch_size must be positive");
    Batches {
        records,
        spec,
        batch_size,
        drop_last,
        done: false,
    }
}

pub struct Batches<I> {
    records: I,
    spec: ShardSpec,
    batch_size: usize,
    drop_last: bool,
    done: bool,
}

impl<I: Iterator<Item = Result<Record>>> Iterator for Batches<I> {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.done {
            return None;
        }
        let mut rows = Vec::with_capacity(self.batch_size);
        while rows.len() < self.batch_size {
            match self.records.next() {
                Some(Ok(r)) => rows.push(r),
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                None => {
                    self.done = true;
                    break;
                }
            }
        }
        if rows.is_empty() || (self.drop_last && rows.len() < self.batch_size) {
            return None;
        }
        Some(Ok(Batch::from_records(&self.spec, &rows)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DataError;

    fn rec(n: usize, label: i32) -> Result<Record> {
        Ok(Record {
            image: vec![label as u8; 3 * 2 * 2],
            tokens: (1..=n as u32).collect(),
            prompt_len: 1,
            index: 0,
            label,
        })
    }

    #[test]
    fn batches_pad_to_the_longest_row_and_keep_or_drop_the_tail() {
        let spec = ShardSpec::new(2, 8, 512, 99);
        let records = || (0..7).map(|i| rec(1 + i % 4, i as i32));
        let all: Vec<Batch> = batches(records(), spec, 3, false)
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(
            all.iter().map(|b| b.size).collect::<Vec<_>>(),
            vec![3, 3, 1]
        );
        let first = &all[0];
        assert_eq!(first.seq_len, 3);
        assert_eq!(first.tokens, vec![1, 99, 99, 1, 2, 99, 1, 2, 3]);
        assert_eq!(first.lengths, vec![1, 2, 3]);
        assert_eq!(first.prompt_lens, vec![1, 1, 1]);
        assert_eq!(first.labels, vec![0, 1, 2]);
        assert_eq!(first.images.len(), 3 * 12);
        assert_eq!(first.images[12], 1);
        assert_eq!(batches(records(), spec, 3, true).count(), 2);
    }

    #[test]
    fn an_error_is_passed_on_and_ends_the_stream() {
        let spec = ShardSpec::new(2, 8, 512, 0);
        let records = vec![rec(1, 0), Err(DataError::Invalid("boom".into())), rec(1, 1)];
        let out: Vec<_> = batches(records.into_iter(), spec, 2, false).collect();
        assert_eq!(out.len(), 1);
        assert!(out[0].as_ref().is_err());
    }
}
