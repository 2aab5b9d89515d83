//! Writing shards: records appended to `shard-NNNNN.bin`, a new file every N records, the header
//! written last (its count is known only then).

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{FORMAT, HEADER_LEN, Header, Record, ShardSpec, VERSION, encode_record, shard_name};
use crate::data::{DataError, Result, io_err};

/// Writes records into `dir`, starting a new shard every `records_per_shard` records.
pub struct ShardWriter {
    dir: PathBuf,
    spec: ShardSpec,
    per_shard: u64,
    current: Option<(PathBuf, BufWriter<File>, u64)>,
    shards: usize,
    records: u64,
    buf: Vec<u8>,
}

/// What a [`ShardWriter`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardsWritten {
    pub shards: usize,
    pub records: u64,
}

impl ShardWriter {
    pub fn create(dir: &Path, spec: ShardSpec, records_per_shard: u64) -> Result<ShardWriter> {
        spec.check().map_err(DataError::Invalid)?;
        if records_per_shard == 0 {
            return Err(DataError::Invalid(
                "records_per_shard must be positive".into(),
            ));
        }
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        Ok(ShardWriter {
            dir: dir.to_path_buf(),
            spec,
            per_shard: records_per_shard,
            current: None,
            shards: 0,
            records: 0,
            buf: Vec::with_capacity(spec.record_len()),
        })
    }

    pub fn write(&mut self, record: &Record) -> Result<()> {
        encode_record(&self.spec, record, &mut self.buf)?;
        if self.current.as_ref().is_some_and(|c| c.2 == self.per_shard) {
            self.close_current()?;
        }
        if self.current.is_none() {
            self.open_next()?;
        }
        let (path, out, count) = self.current.as_mut().expect("a shard is open");
        out.write_all(&self.buf).map_err(io_err(&*path))?;
        *count += 1;
        self.records += 1;
        Ok(())
    }

    /// Finish the last shard. A writer given no records still writes one empty shard, so the
    /// folder always says what its records would look like.
    pub fn finish(mut self) -> Result<ShardsWritten> {
        if self.current.is_none() && self.shards == 0 {
            self.open_next()?;
        }
        self.close_current()?;
        Ok(ShardsWritten {
            shards: self.shards,
            records: self.records,
        })
    }

    fn open_next(&mut self) -> Result<()> {
        let path = self.dir.join(shard_name(self.shards));
        let mut out =
            BufWriter::with_capacity(1 << 18, File::create(&path).map_err(io_err(&path))?);
        out.write_all(&[b' '; HEADER_LEN]).map_err(io_err(&path))?;
        self.current = Some((path, out, 0));
        self.shards += 1;
        Ok(())
    }

    fn close_current(&mut self) -> Result<()> {
        let Some((path, out, count)) = self.current.take() else {
            return Ok(());
        };
        let header = Header {
            format: FORMAT.into(),
            version: VERSION,
            count,
            spec: self.spec,
        };
        let mut line = serde_json::to_vec(&header).expect("header serialises");
        line.resize(HEADER_LEN - 1, b' ');
        line.push(b'\n');
        let mut file = out
            .into_inner()
            .map_err(|e| io_err(&path)(e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(io_err(&path))?;
        file.write_all(&line).map_err(io_err(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::record;
    use super::super::{ShardSet, read_header};
    use super::*;

    #[test]
    fn rolls_to_a_new_shard_every_n_records() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ShardSpec::new(8, 6, 512, 1);
        let mut writer = ShardWriter::create(dir.path(), spec, 10).unwrap();
        for i in 0..25 {
            writer.write(&record(&spec, i)).unwrap();
        }
        let written = writer.finish().unwrap();
        assert_eq!(
            written,
            ShardsWritten {
                shards: 3,
                records: 25
            }
        );
        let counts: Vec<u64> = (0..3)
            .map(|i| read_header(&dir.path().join(shard_name(i))).unwrap().count)
            .collect();
        assert_eq!(counts, vec![10, 10, 5]);
        let first = std::fs::read(dir.path().join("shard-00000.bin")).unwrap();
        let line = std::str::from_utf8(&first[..HEADER_LEN]).unwrap();
        assert!(line.starts_with("{\"format\":\"vlmflow-shard\",\"version\":1,\"count\":10,"));
        assert!(line.ends_with(" \n"));
        assert_eq!(first.len(), HEADER_LEN + 10 * spec.record_len());
    }

    #[test]
    fn an_empty_writer_leaves_one_empty_shard_and_bad_records_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ShardSpec::new(8, 6, 512, 1);
        let written = ShardWriter::create(dir.path(), spec, 10)
            .unwrap()
            .finish()
            .unwrap();
        assert_eq!(
            written,
            ShardsWritten {
                shards: 1,
                records: 0
            }
        );
        let set = ShardSet::open(dir.path()).unwrap();
        assert_eq!((set.len(), set.spec()), (0, spec));

        let mut writer = ShardWriter::create(dir.path(), spec, 10).unwrap();
        let mut bad = record(&spec, 1);
        bad.tokens = vec![1; 7];
        let err = writer.write(&bad).unwrap_err().to_string();
        assert!(err.contains("more than max_tokens 6"), "{err}");
        assert!(ShardWriter::create(dir.path(), spec, 0).is_err());
    }
}
