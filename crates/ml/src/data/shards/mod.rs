//! Shards: what preprocessing writes and training streams, without decoding images again.
//!
//! A folder holds `shard-00000.bin`, `shard-00001.bin`, …; each file is a 256-byte header (one
//! JSON line padded with spaces: format, version, count and the [`ShardSpec`]) followed by
//! `count` fixed-size little-endian records:
//!
//! | field | bytes |
//! | --- | --- |
//! | image, u8 CHW | channels × image_size² |
//! | token ids, padded with `pad_id` | max_tokens × token_bytes (2 when the vocabulary fits u16, else 4) |
//! | token count | u16 |
//! | prompt length (tokens before the loss starts; 0 for captions) | u16 |
//! | label (class index, or -1) | i32 |
//!
//! Fixed-size records make a truncated file visible from its size alone, and reading is one
//! `read_exact` a record. Readers stream: [`ShardSet::iter`] in order, [`ShardSet::shuffled`]
//! through a bounded buffer (memory stays `buffer` records); [`super::batch`] groups them.

mod reader;
mod writer;

pub use reader::{Records, ShardSet, Shuffled};
pub use writer::{ShardWriter, ShardsWritten};

use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{DataError, Result, format_err, io_err};

pub const HEADER_LEN: usize = 256;
pub const FORMAT: &str = "vlmflow-shard";
pub const VERSION: u32 = 1;

/// The shape of every record in a set of shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSpec {
    pub image_size: u32,
    pub channels: u32,
    pub max_tokens: u32,
    pub token_bytes: u32,
    pub pad_id: u32,
}

impl ShardSpec {
    /// RGB images of `image_size`², token ids of a `vocab_size` vocabulary, at most `max_tokens`.
    pub fn new(image_size: u32, max_tokens: u32, vocab_size: usize, pad_id: u32) -> Self {
        ShardSpec {
            image_size,
            channels: 3,
            max_tokens,
            token_bytes: if vocab_size <= 1 << 16 { 2 } else { 4 },
            pad_id,
        }
    }

    pub fn image_len(&self) -> usize {
        (self.channels * self.image_size * self.image_size) as usize
    }

    pub fn record_len(&self) -> usize {
        self.image_len() + (self.max_tokens * self.token_bytes) as usize + 2 + 2 + 4
    }

    fn check(&self) -> std::result::Result<(), String> {
        if ![2, 4].contains(&self.token_bytes) {
            return Err(format!(
                "token_bytes must be 2 or 4, not {}",
                self.token_bytes
            ));
        }
        if self.max_tokens == 0 || self.max_tokens > u32::from(u16::MAX) {
            return Err(format!(
                "max_tokens must be in 1..=65535, not {}",
                self.max_tokens
            ));
        }
        if self.image_size == 0 || self.channels == 0 {
            return Err("image_size and channels must be positive".into());
        }
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
    count: u64,
    #[serde(flatten)]
    spec: ShardSpec,
}

/// One image with one token sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// CHW bytes, `spec.image_len()` of them.
    pub image: Vec<u8>,
    /// Token ids, end-of-text included, at most `spec.max_tokens`.
    pub tokens: Vec<u32>,
    /// How many leading tokens are prompt (no loss on them): a question's length, 0 for captions.
    pub prompt_len: u16,
    /// A class index, or -1.
    pub label: i32,
    /// Where the record sits in its shard set (shards in name order), so that data kept beside
    /// the shards (`texts.jsonl`) can be looked up. Set when read; writing ignores it.
    pub index: u64,
}

pub fn shard_name(index: usize) -> String {
    format!("shard-{index:05}.bin")
}

fn encode_record(spec: &ShardSpec, record: &Record, buf: &mut Vec<u8>) -> Result<()> {
    let invalid = |m: String| Err(DataError::Invalid(format!("shard record: {m}")));
    if record.image.len() != spec.image_len() {
        return invalid(format!(
            "image has {} bytes, expected {}",
            record.image.len(),
            spec.image_len()
        ));
    }
    let n = record.tokens.len();
    if n > spec.max_tokens as usize {
        return invalid(format!(
            "{n} tokens, more than max_tokens {}",
            spec.max_tokens
        ));
    }
    if usize::from(record.prompt_len) > n {
        return invalid(format!(
            "prompt_len {} exceeds {n} tokens",
            record.prompt_len
        ));
    }
    buf.clear();
    buf.extend_from_slice(&record.image);
    let pad = std::iter::repeat_n(spec.pad_id, spec.max_tokens as usize - n);
    for id in record.tokens.iter().copied().chain(pad) {
        if spec.token_bytes == 2 {
            let Ok(id) = u16::try_from(id) else {
                return invalid(format!("token id {id} does not fit 2 bytes"));
            };
            buf.extend_from_slice(&id.to_le_bytes());
        } else {
            buf.extend_from_slice(&id.to_le_bytes());
        }
    }
    buf.extend_from_slice(&(n as u16).to_le_bytes());
    buf.extend_from_slice(&record.prompt_len.to_le_bytes());
    buf.extend_from_slice(&record.label.to_le_bytes());
    Ok(())
}

fn decode_record(
    spec: &ShardSpec,
    bytes: &[u8],
    index: u64,
) -> std::result::Result<Record, String> {
    let image_len = spec.image_len();
    let token_end = image_len + (spec.max_tokens * spec.token_bytes) as usize;
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    let n = usize::from(u16_at(token_end));
    let prompt_len = u16_at(token_end + 2);
    let label = i32::from_le_bytes(bytes[token_end + 4..token_end + 8].try_into().expect("4"));
    if n > spec.max_tokens as usize || usize::from(prompt_len) > n {
        return Err(format!(
            "record claims {n} tokens ({prompt_len} prompt), max {}",
            spec.max_tokens
        ));
    }
    let w = spec.token_bytes as usize;
    let tokens = bytes[image_len..image_len + n * w]
        .chunks_exact(w)
        .map(|c| match c {
            [a, b] => u32::from(u16::from_le_bytes([*a, *b])),
            _ => u32::from_le_bytes(c.try_into().expect("4 bytes")),
        })
        .collect();
    Ok(Record {
        image: bytes[..image_len].to_vec(),
        tokens,
        prompt_len,
        label,
        index,
    })
}

fn read_header(path: &Path) -> Result<Header> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let size = file.metadata().map_err(io_err(path))?.len();
    let mut bytes = [0u8; HEADER_LEN];
    file.read_exact(&mut bytes).map_err(|_| {
        format_err(
            path,
            None,
            format!("truncated: {size} bytes, shorter than the header"),
        )
    })?;
    let header: Header = serde_json::from_slice(bytes.trim_ascii())
        .map_err(|e| format_err(path, None, format!("not a {FORMAT} file: {e}")))?;
    if header.format != FORMAT || header.version != VERSION {
        return Err(format_err(
            path,
            None,
            format!(
                "{} version {} is not {FORMAT} version {VERSION}",
                header.format, header.version
            ),
        ));
    }
    header.spec.check().map_err(|m| format_err(path, None, m))?;
    let expected = HEADER_LEN as u64 + header.count * header.spec.record_len() as u64;
    if size != expected {
        return Err(format_err(
            path,
            None,
            format!(
                "truncated or corrupt: {size} bytes, expected {expected} for {} records",
                header.count
            ),
        ));
    }
    Ok(header)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A record whose every field depends on `i`: image bytes, 1..=max_tokens tokens, label.
    pub(crate) fn record(spec: &ShardSpec, i: u32) -> Record {
        let n = 1 + (i % spec.max_tokens) as usize;
        Record {
            image: (0..spec.image_len())
                .map(|b| (b as u32 * 7 + i) as u8)
                .collect(),
            tokens: (0..n as u32).map(|t| (i * 31 + t) % 60_000).collect(),
            prompt_len: (n / 2) as u16,
            label: i as i32 % 30 - 1,
            index: u64::from(i),
        }
    }

    #[test]
    fn spec_sizes_and_token_width() {
        let small = ShardSpec::new(32, 24, 512, 1);
        assert_eq!(small.token_bytes, 2);
        assert_eq!(small.image_len(), 3 * 32 * 32);
        assert_eq!(small.record_len(), 3072 + 48 + 8);
        let qwen = ShardSpec::new(32, 24, 151_665, 151_643);
        assert_eq!(qwen.token_bytes, 4);
        assert_eq!(qwen.record_len(), 3072 + 96 + 8);
        assert!(
            ShardSpec {
                max_tokens: 0,
                ..small
            }
            .check()
            .is_err()
        );
        assert!(
            ShardSpec {
                token_bytes: 3,
                ..small
            }
            .check()
            .is_err()
        );
    }

    #[test]
    fn records_encode_and_decode() {
        for spec in [
            ShardSpec::new(4, 5, 512, 1),
            ShardSpec::new(4, 5, 200_000, 9),
        ] {
            let mut buf = Vec::new();
            for i in 0..12 {
                let mut r = record(&spec, i);
                if spec.token_bytes == 4 {
                    r.tokens[0] = 150_000 + i;
                }
                encode_record(&spec, &r, &mut buf).unwrap();
                assert_eq!(buf.len(), spec.record_len());
                assert_eq!(decode_record(&spec, &buf, u64::from(i)).unwrap(), r);
            }
        }
        let spec = ShardSpec::new(4, 5, 512, 1);
        let mut buf = Vec::new();
        let mut r = record(&spec, 0);
        r.tokens = vec![70_000];
        let err = encode_record(&spec, &r, &mut buf).unwrap_err().to_string();
        assert!(err.contains("does not fit 2 bytes"), "{err}");
        r.tokens = vec![1; 6];
        assert!(encode_record(&spec, &r, &mut buf).is_err());
        r.tokens = vec![1];
        r.image.pop();
        assert!(encode_record(&spec, &r, &mut buf).is_err());
    }

    #[test]
    fn bad_headers_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&str, &[u8]); 3] = [
            ("shard-00000.bin", b"short"),
            ("shard-00001.bin", &[b'x'; HEADER_LEN]),
            ("shard-00002.bin", &[b' '; HEADER_LEN + 10]),
        ];
        for (name, bytes) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let err = read_header(&path).unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
    }
}
