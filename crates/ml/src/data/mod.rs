//! Data pipelines: plain functions over paths and values, no engine, no cache.
//!
//! - [`rng`]: a tiny deterministic PRNG, so every sample is a function of `(seed, index)`.
//! - [`shapes`]: the procedural "shapes" dataset (images, captions, question–answer pairs).
//! - [`image`]: decode, resize and centre-crop images to CHW bytes; CLIP normalisation.
//! - [`tokenizer`]: train a byte-level BPE, load any `tokenizer.json`, encode with EOS.
//! - [`shards`]: fixed-size records in `shard-NNNNN.bin` files, streamed, shuffled, batched.
//! - [`batch`]: records grouped into batches of plain vectors.
//! - [`split`]: a deterministic train/validation split by hash of the sample key.
//! - [`captions`]: read CSV/TSV/JSONL caption files, write JSONL.
//! - [`chat`]: the ChatML template: conversations with an image → ids and loss labels.
//! - [`conversations`]: training sequences (text, caption, answers) of a split, tokenized.
//! - [`coco`]: COCO captions files (`captions_*.json`), told from JSON Lines by content.
//! - [`llava`]: LLaVA-Instruct / SVIT conversation files (image + human/gpt turns).
//! - [`cifar`]: CIFAR-10/100 binary batches, from the extracted folder or the `.tar.gz`.
//! - [`braces`]: brace expansion of shard patterns (`shard-{00000..00099}.tar`).
//! - [`webdataset`]: stream the samples (image + caption) of WebDataset tar shards.
//! - [`url_list`]: read CSV/TSV/JSONL lists of image URLs and captions.
//! - [`fetch`]: get one URL over HTTP(S) with a timeout, retries and a size limit.
//! - [`thumbnail`]: decode a fetched image, shrink it, re-encode it as PNG or JPEG.

pub mod batch;
pub mod braces;
pub mod captions;
pub mod chat;
pub mod cifar;
pub mod coco;
pub mod conversations;
mod delimited;
pub mod fetch;
pub mod image;
pub mod llava;
pub mod prefetch;
pub mod shapes;
pub mod shards;
pub mod split;
pub mod stream;
pub mod thumbnail;
pub mod tokenizer;
pub mod url_list;
pub mod webdataset;

use std::path::{Path, PathBuf};

/// Errors of the data pipelines. Each names the file it concerns (and the line, where there is one).
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cannot decode image: {source}")]
    Image {
        path: PathBuf,
        #[source]
        source: ::image::ImageError,
    },
    /// A file whose content is not what its format says: `path:line: message` when `line` is known.
    #[error("{}: {message}", at(path, *line))]
    Format {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
    #[error("tokenizer {path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// Training and evaluation run in candle's `Result`: there a data error is its message.
impl From<DataError> for candle_core::Error {
    fn from(e: DataError) -> Self {
        candle_core::Error::Msg(e.to_string())
    }
}

fn at(path: &Path, line: Option<usize>) -> String {
    match line {
        Some(line) => format!("{}:{line}", path.display()),
        None => path.display().to_string(),
    }
}

/// Attach a path to an io::Error.
pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DataError {
    let path = path.into();
    move |source| DataError::Io { path, source }
}

/// A buffered reader of the file at `path`, gunzipped when its name ends in `.gz` or `.tgz`
/// (tar shards and archives come both ways).
pub(crate) fn open_maybe_gzipped(path: &Path) -> Result<Box<dyn std::io::Read>> {
    let file = std::io::BufReader::new(std::fs::File::open(path).map_err(io_err(path))?);
    let gzipped = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz") || e.eq_ignore_ascii_case("tgz"));
    Ok(if gzipped {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    })
}

/// A format error in `path` (at `line`, 1-based, when known).
pub(crate) fn format_err(
    path: impl Into<PathBuf>,
    line: Option<usize>,
    message: impl Into<String>,
) -> DataError {
    DataError::Format {
        path: path.into(),
        line,
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    //! The pieces together, as the preprocess and training stages will use them.
    use super::shapes::ShapesConfig;
    use super::shards::{Record, ShardSet, ShardSpec, ShardWriter};
    use super::split::{Split, split_of};
    use super::tokenizer::{BpeConfig, train_bpe};
    use super::{batch, image};

    #[test]
    fn shapes_to_tokenizer_to_shards_to_batches() {
        let cfg = ShapesConfig::default();
        let samples: Vec<_> = (0..64).map(|i| cfg.sample(i)).collect();
        let tok = train_bpe(
            samples.iter().flat_map(|s| s.texts()),
            &BpeConfig::default(),
        )
        .unwrap();
        let spec = ShardSpec::new(32, 16, tok.vocab_size(), tok.pad_id());
        let dir = tempfile::tempdir().unwrap();
        let mut writer = ShardWriter::create(dir.path(), spec, 20).unwrap();
        let mut train = 0;
        for (i, s) in samples.iter().enumerate() {
            if split_of(format!("shapes/{i}").as_bytes(), 100) == Split::Validation {
                continue;
            }
            let png = super::shapes::render_png_bytes(&s.image);
            let chw = image::decode_chw(&png, "sample.png".as_ref(), 32).unwrap();
            let tokens = tok.encode_max(&s.caption, 16).unwrap().unwrap();
            let label = s.class_index() as i32;
            writer
                .write(&Record {
                    image: chw,
                    tokens,
                    prompt_len: 0,
                    index: 0,
                    label,
                })
                .unwrap();
            train += 1;
        }
        assert_eq!(writer.finish().unwrap().records, train);

        let set = ShardSet::open(dir.path()).unwrap();
        let all: Vec<_> = batch::batches(set.shuffled(0, 0, 16), set.spec(), 8, false)
            .collect::<super::Result<_>>()
            .unwrap();
        assert_eq!(all.iter().map(|b| b.size as u64).sum::<u64>(), train);
        let b = &all[0];
        let mut pixels = vec![0f32; b.images.len()];
        image::normalize_into(&b.images[..3 * 32 * 32], &mut pixels[..3 * 32 * 32]);
        assert!(
            pixels[0] > 0.5,
            "a light background normalises above the mean"
        );
        let first = &b.tokens[..b.lengths[0] as usize];
        assert_eq!(*first.last().unwrap(), tok.eos_id());
        let caption = tok.decode(first).unwrap();
        assert!(samples.iter().any(|s| s.caption == caption), "{caption}");
    }
}
