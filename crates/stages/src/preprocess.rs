//! The `preprocess` kind: turn a `download` artifact (images + captions.jsonl) into training
//! shards: images decoded, resized and centre-cropped to `image_size` (stored as u8; the CLIP
//! normalisation is applied when batches are loaded), captions tokenized with a BPE trained here
//! on the captions (or a `tokenizer.json` the user points at), captions over `max_tokens` dropped,
//! a deterministic train/validation split (by hash of the image name, unless a record says its
//! `split`, as CIFAR's do). Corrupt images are skipped and counted.
//!
//! Each split folder also holds `captions.jsonl`, the caption record (caption, label,
//! question–answer pairs) of every shard record in shard order: the VLM stages tokenize that
//! text with their own language model's tokenizer and chat template.

use std::path::Path;

use anyhow::{Context, bail};
use rayon::prelude::*;
use serde::Deserialize;
use serde_json::Value;

use super::{Kind, StageContext};
use crate::shared::kind_params;
use vlmflow_engine::kind::ParamProblem;
use vlmflow_ml::data::captions::{CaptionRecord, read_jsonl, write_jsonl};
use vlmflow_ml::data::chat::CAPTION_PROMPT;
use vlmflow_ml::data::image::load_chw;
use vlmflow_ml::data::shards::{Record, ShardSpec, ShardWriter};
use vlmflow_ml::data::split::{Split, split_of};
use vlmflow_ml::data::tokenizer::{BpeConfig, Tokenizer, train_bpe};

pub struct Preprocess;

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct PreprocessParams {
    #[serde(default = "default_image_size")]
    image_size: u32,
    #[serde(default = "default_max_tokens")]
    max_tokens: usize,
    /// "train" for a BPE trained on the captions, or a workspace path of a tokenizer.json.
    #[serde(default = "default_tokenizer")]
    tokenizer: String,
    #[serde(default = "default_vocab_size")]
    vocab_size: usize,
    /// Per mille of the data held out for validation (and zero-shot evaluation), chosen by hash
    /// of the image name; records whose `split` is given in captions.jsonl go where it says.
    #[serde(default = "default_val_permille")]
    val_permille: u32,
    #[serde(default = "default_records_per_shard")]
    records_per_shard: u64,
}

fn default_image_size() -> u32 {
    32
}
fn default_max_tokens() -> usize {
    32
}
fn default_tokenizer() -> String {
    "train".into()
}
fn default_vocab_size() -> usize {
    512
}
fn default_val_permille() -> u32 {
    50
}
fn default_records_per_shard() -> u64 {
    4096
}

/// Images decoded per parallel chunk; bounds memory while keeping both cores busy.
const CHUNK: usize = 2048;

impl Kind for Preprocess {
    fn name(&self) -> &'static str {
        "preprocess"
    }

    fn version(&self) -> &'static str {
        "3"
    }

    fn check_params(&self, params: &Value) -> Vec<ParamProblem> {
        kind_params::check::<PreprocessParams>(params)
    }

    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        let p: PreprocessParams = kind_params::read(ctx)?;
        let source = ctx.find_upstream("download stage", |_| true)?;
        let captions_path = source.join("captions.jsonl");
        let records = read_jsonl(&captions_path).with_context(|| {
            format!(
                "stage `{}` reads the captions of its upstream artifact",
                ctx.stage
            )
        })?;
        let tokenizer = self.tokenizer(ctx, &p, &records)?;
        tokenizer.save(&ctx.out_dir.join("tokenizer.json"))?;
        let classes = read_classes(source)?;

        let spec = ShardSpec::new(
            p.image_size,
            p.max_tokens as u32,
            tokenizer.vocab_size(),
            tokenizer.pad_id(),
        );
        let mut train = ShardWriter::create(&ctx.out_dir.join("train"), spec, p.records_per_shard)?;
        let mut validation =
            ShardWriter::create(&ctx.out_dir.join("validation"), spec, p.records_per_shard)?;
        let (mut train_texts, mut validation_texts) = (Vec::new(), Vec::new());
        let (mut corrupt, mut too_long) = (0u64, 0u64);
        for (chunk_index, chunk) in records.chunks(CHUNK).enumerate() {
            let prepared: Vec<Prepared> = chunk
                .par_iter()
                .map(|r| prepare(r, source, &p, &tokenizer, &classes))
                .collect::<anyhow::Result<_>>()?;
            for (record, prepared) in chunk.iter().zip(prepared) {
                match prepared {
                    Prepared::Corrupt(why) => {
                        corrupt += 1;
                        ctx.log(&format!("skipped {}: {why}", record.image));
                    }
                    Prepared::TooLong => too_long += 1,
                    Prepared::Ok(r) => match record
                        .split
                        .unwrap_or_else(|| split_of(record.image.as_bytes(), p.val_permille))
                    {
                        Split::Train => {
                            train.write(&r)?;
                            train_texts.push(record.clone());
                        }
                        Split::Validation => {
                            validation.write(&r)?;
                            validation_texts.push(record.clone());
                        }
                    },
                }
            }
            let done = ((chunk_index + 1) * CHUNK).min(records.len()) as u64;
            ctx.progress(done, Some(records.len() as u64), "decoding and tokenizing");
        }
        let (train, validation) = (train.finish()?, validation.finish()?);
        write_jsonl(&ctx.out_dir.join("train/captions.jsonl"), &train_texts)?;
        write_jsonl(
            &ctx.out_dir.join("validation/captions.jsonl"),
            &validation_texts,
        )?;
        // A validation-only dataset (CIFAR's test split) is fine: zero-shot evaluation reads it.
        if train.records + validation.records == 0 {
            bail!(
                "stage `{}`: no usable record out of {} ({corrupt} corrupt images, {too_long} captions over \
                 max_tokens = {}): check the data, or raise max_tokens",
                ctx.stage,
                records.len(),
                p.max_tokens
            );
        }
        let meta = serde_json::json!({
            "params": p,
            "classes": classes,
            "train_records": train.records,
            "validation_records": validation.records,
        });
        std::fs::write(
            ctx.out_dir.join("meta.json"),
            serde_json::to_string_pretty(&meta)?,
        )?;
        ctx.metric("records_train", None, train.records as f64);
        ctx.metric("records_validation", None, validation.records as f64);
        ctx.metric("skipped_corrupt", None, corrupt as f64);
        ctx.metric("dropped_too_long", None, too_long as f64);
        Ok(())
    }
}

impl Preprocess {
    fn tokenizer(
        &self,
        ctx: &StageContext<'_>,
        p: &PreprocessParams,
        records: &[CaptionRecord],
    ) -> anyhow::Result<Tokenizer> {
        if p.tokenizer != "train" {
            let path = ctx.workspace.join(&p.tokenizer);
            return Tokenizer::load(&path).map_err(Into::into);
        }
        // Captions, the question–answer text and the chat template's words share one
        // vocabulary (the template's once per record, so that they are merged like the rest).
        let texts = records.iter().flat_map(|r| {
            [r.caption.as_str(), TEMPLATE_WORDS, CAPTION_PROMPT]
                .into_iter()
                .chain(
                    r.qa.iter()
                        .flat_map(|q| [q.question.as_str(), q.answer.as_str()]),
                )
        });
        let config = BpeConfig {
            vocab_size: p.vocab_size,
            ..BpeConfig::default()
        };
        Ok(train_bpe(texts, &config)?)
    }
}

/// The words the chat template adds around every conversation (see `ml::data::chat`), spaced
/// as the byte-level tokenizer sees them there (" user" after the prefix space).
const TEMPLATE_WORDS: &str = "system user assistant";

enum Prepared {
    Ok(Record),
    Corrupt(String),
    TooLong,
}

fn prepare(
    record: &CaptionRecord,
    source: &Path,
    p: &PreprocessParams,
    tokenizer: &Tokenizer,
    classes: &[String],
) -> anyhow::Result<Prepared> {
    let image = match load_chw(&source.join(&record.image), p.image_size) {
        Ok(image) => image,
        Err(e) => return Ok(Prepared::Corrupt(e.to_string())),
    };
    let Some(tokens) = tokenizer.encode_max(&record.caption, p.max_tokens)? else {
        return Ok(Prepared::TooLong);
    };
    let label = record
        .label
        .as_ref()
        .and_then(|l| classes.iter().position(|c| c == l))
        .map_or(-1, |i| i as i32);
    Ok(Prepared::Ok(Record {
        image,
        tokens,
        prompt_len: 0,
        index: 0,
        label,
    }))
}

/// The class names of the data, where it has classes (`classes.json` of the download artifact).
fn read_classes(source: &Path) -> anyhow::Result<Vec<String>> {
    let path = source.join("classes.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is not a JSON list of names", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}
