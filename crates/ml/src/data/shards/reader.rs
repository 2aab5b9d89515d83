//! Reading shards: a folder opened as a [`ShardSet`], streamed in order or through a seeded
//! shuffle buffer, one record in memory at a time (plus the buffer).

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{HEADER_LEN, Record, ShardSpec, decode_record, read_header};
use crate::data::{Result, format_err, io_err};
use crate::rng::Rng;

/// The shards of one folder, their headers read and their sizes checked.
#[derive(Debug, Clone)]
pub struct ShardSet {
    spec: ShardSpec,
    shards: Vec<Shard>,
}

/// One shard file: its record count and the set-wide index of its first record.
#[derive(Debug, Clone)]
struct Shard {
    path: PathBuf,
    count: u64,
    first: u64,
}

impl ShardSet {
    pub fn open(dir: &Path) -> Result<ShardSet> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io_err(dir))?
            .map(|e| e.map(|e| e.path()).map_err(io_err(dir)))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("shard-") && n.ends_with(".bin"))
            })
            .collect();
        paths.sort();
        let mut spec = None;
        let mut shards = Vec::with_capacity(paths.len());
        let mut first = 0;
        for path in paths {
            let header = read_header(&path)?;
            match spec {
                None => spec = Some(header.spec),
                Some(s) if s != header.spec => {
                    return Err(format_err(
                        &path,
                        None,
                        format!(
                            "record shape {:?} differs from the other shards' {s:?}",
                            header.spec
                        ),
                    ));
                }
                Some(_) => {}
            }
            shards.push(Shard {
                path,
                count: header.count,
                first,
            });
            first += header.count;
        }
        let Some(spec) = spec else {
            return Err(format_err(dir, None, "no shard-*.bin files in this folder"));
        };
        Ok(ShardSet { spec, shards })
    }

    pub fn spec(&self) -> ShardSpec {
        self.spec
    }

    /// Records in all shards.
    pub fn len(&self) -> u64 {
        self.shards.iter().map(|s| s.count).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.shards.iter().map(|s| s.path.as_path())
    }

    /// Every record, shard by shard, in order.
    pub fn iter(&self) -> Records {
        Records::new(self.spec, self.shards.clone())
    }

    /// Every record once, in an order fixed by `(seed, epoch)`: shards in a shuffled order,
    /// streamed through a shuffle buffer of `buffer` records.
    pub fn shuffled(&self, seed: u64, epoch: u64, buffer: usize) -> Shuffled {
        let mut rng = Rng::new(seed).fork(epoch);
        let mut shards = self.shards.clone();
        rng.shuffle(&mut shards);
        Shuffled {
            records: Records::new(self.spec, shards),
            buffer: Vec::with_capacity(buffer.max(1)),
            capacity: buffer.max(1),
            rng,
        }
    }
}

/// Records of a list of shards, in that order.
pub struct Records {
    spec: ShardSpec,
    shards: std::vec::IntoIter<Shard>,
    /// The open shard, its reader, and the index of the next record in it.
    current: Option<(Shard, BufReader<File>, u64)>,
    buf: Vec<u8>,
    failed: bool,
}

impl Records {
    fn new(spec: ShardSpec, shards: Vec<Shard>) -> Records {
        Records {
            spec,
            shards: shards.into_iter(),
            current: None,
            buf: vec![0; spec.record_len()],
            failed: false,
        }
    }

    fn next_record(&mut self) -> Result<Option<Record>> {
        loop {
            if let Some((shard, reader, next)) = &mut self.current
                && *next < shard.count
            {
                let path = &shard.path;
                reader.read_exact(&mut self.buf).map_err(|e| {
                    format_err(path, None, format!("truncated or unreadable record: {e}"))
                })?;
                let record = decode_record(&self.spec, &self.buf, shard.first + *next)
                    .map_err(|m| format_err(path, None, m))?;
                *next += 1;
                return Ok(Some(record));
            }
            let Some(shard) = self.shards.next() else {
                return Ok(None);
            };
            let path = shard.path.clone();
            let header = read_header(&path)?;
            if header.spec != self.spec || header.count != shard.count {
                return Err(format_err(
                    &path,
                    None,
                    "changed since the shard set was opened",
                ));
            }
            let mut file = File::open(&path).map_err(io_err(&path))?;
            file.seek(SeekFrom::Start(HEADER_LEN as u64))
                .map_err(io_err(&path))?;
            self.current = Some((shard, BufReader::with_capacity(1 << 18, file), 0));
        }
    }
}

impl Iterator for Records {
    type Item = Result<Record>;

    /// The first error ends the stream.
    fn next(&mut self) -> Option<Result<Record>> {
        if self.failed {
            return None;
        }
        let next = self.next_record().transpose();
        self.failed = matches!(next, Some(Err(_)));
        next
    }
}

/// A shuffle buffer over [`Records`]: each incoming record replaces a random one in the buffer,
/// which is emitted; at the end the buffer drains in random order. The first error ends it.
pub struct Shuffled {
    records: Records,
    buffer: Vec<Record>,
    capacity: usize,
    rng: Rng,
}

impl Iterator for Shuffled {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        while self.buffer.len() < self.capacity {
            match self.records.next() {
                Some(Ok(record)) => self.buffer.push(record),
                Some(Err(e)) => {
                    self.buffer.clear(); // the first error ends the stream
                    return Some(Err(e));
                }
                None => break,
            }
        }
        if self.buffer.is_empty() {
            return None;
        }
        let j = self.rng.below(self.buffer.len() as u64) as usize;
        Some(Ok(self.buffer.swap_remove(j)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::record;
    use super::super::{ShardWriter, shard_name};
    use super::*;

    fn write_shards(dir: &Path, n: u32, per_shard: u64) -> (ShardSpec, Vec<Record>) {
        let spec = ShardSpec::new(4, 8, 512, 1);
        let records: Vec<Record> = (0..n).map(|i| record(&spec, i)).collect();
        let mut writer = ShardWriter::create(dir, spec, per_shard).unwrap();
        for r in &records {
            writer.write(r).unwrap();
        }
        writer.finish().unwrap();
        (spec, records)
    }

    #[test]
    fn sequential_read_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let (spec, records) = write_shards(dir.path(), 57, 10);
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let set = ShardSet::open(dir.path()).unwrap();
        assert_eq!((set.len(), set.spec(), set.paths().count()), (57, spec, 6));
        let back: Vec<Record> = set.iter().collect::<Result<_>>().unwrap();
        assert_eq!(back, records);
    }

    #[test]
    fn shuffle_is_a_deterministic_permutation_per_seed_and_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let (_, records) = write_shards(dir.path(), 200, 32);
        let set = ShardSet::open(dir.path()).unwrap();
        let labels_of = |seed, epoch, buffer| -> Vec<(i32, Vec<u32>)> {
            set.shuffled(seed, epoch, buffer)
                .map(|r| r.map(|r| (r.label, r.tokens)))
                .collect::<Result<_>>()
                .unwrap()
        };
        let a = labels_of(1, 0, 64);
        assert_eq!(a, labels_of(1, 0, 64));
        assert_ne!(a, labels_of(1, 1, 64));
        assert_ne!(a, labels_of(2, 0, 64));
        let mut sorted = a.clone();
        sorted.sort();
        let mut expected: Vec<_> = records
            .iter()
            .map(|r| (r.label, r.tokens.clone()))
            .collect();
        expected.sort();
        assert_eq!(sorted, expected);
        assert_ne!(
            a,
            records
                .iter()
                .map(|r| (r.label, r.tokens.clone()))
                .collect::<Vec<_>>()
        );
        assert_eq!(labels_of(3, 0, 1).len(), 200);
    }

    #[test]
    fn truncated_or_corrupt_shards_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (spec, _) = write_shards(dir.path(), 30, 10);
        let victim = dir.path().join(shard_name(1));
        let bytes = std::fs::read(&victim).unwrap();

        // Truncated before opening: open fails.
        std::fs::write(&victim, &bytes[..bytes.len() - 5]).unwrap();
        let err = ShardSet::open(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("shard-00001.bin") && err.contains("truncated"),
            "{err}"
        );

        // Truncated after opening: the stream yields the error once, then ends.
        std::fs::write(&victim, &bytes).unwrap();
        let set = ShardSet::open(dir.path()).unwrap();
        std::fs::write(&victim, &bytes[..HEADER_LEN + spec.record_len() * 3]).unwrap();
        let results: Vec<_> = set.iter().collect();
        assert_eq!(results.len(), 11);
        let err = results.last().unwrap().as_ref().unwrap_err().to_string();
        assert!(err.contains("shard-00001.bin"), "{err}");
        let shuffled: Vec<_> = set.shuffled(0, 0, 4).collect();
        assert!(shuffled.last().unwrap().is_err());
        assert_eq!(shuffled.iter().filter(|r| r.is_err()).count(), 1);

        // A record whose length field is impossible.
        let mut corrupt = bytes.clone();
        let len_at = HEADER_LEN + spec.image_len() + 2 * spec.max_tokens as usize;
        corrupt[len_at] = 200;
        std::fs::write(&victim, &corrupt).unwrap();
        let set = ShardSet::open(dir.path()).unwrap();
        let err = set.iter().find_map(|r| r.err()).unwrap().to_string();
        assert!(
            err.contains("shard-00001.bin") && err.contains("200 tokens"),
            "{err}"
        );

        // A shard of another shape.
        std::fs::write(&victim, &bytes).unwrap();
        let other = ShardSpec::new(8, 8, 512, 1);
        let mut w = ShardWriter::create(&dir.path().join("x"), other, 10).unwrap();
        w.write(&record(&other, 0)).unwrap();
        w.finish().unwrap();
        std::fs::rename(
            dir.path().join("x").join(shard_name(0)),
            dir.path().join(shard_name(7)),
        )
        .unwrap();
        let err = ShardSet::open(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("shard-00007.bin") && err.contains("differs"),
            "{err}"
        );

        let empty = tempfile::tempdir().unwrap();
        let err = ShardSet::open(empty.path()).unwrap_err().to_string();
        assert!(err.contains("no shard-*.bin"), "{err}");
    }
}
