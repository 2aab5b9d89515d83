//! Text in: a byte-level BPE trained on the captions (or any `tokenizer.json`, GPT-2's or Qwen's),
//! encoding a text to ids with the end-of-text token appended.
//!
//! Training is deterministic: the same texts and config give a byte-identical `tokenizer.json`
//! (the BPE trainer breaks count ties by pair ids and the byte alphabet is fixed up front, so
//! neither hash-map order nor rayon's parallel word counting changes the result; a test checks).

use std::path::{Path, PathBuf};

use tokenizers::models::bpe::{BPE, BpeTrainer};
use tokenizers::models::{ModelWrapper, TrainerWrapper};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, DecoderWrapper, PreTokenizerWrapper};

use super::chat::{IM_END, IM_START, VISION_END, VISION_START};
use super::{DataError, Result};

/// End of text; also the padding token of tokenizers that have no `<|pad|>`.
pub const EOS: &str = "<|endoftext|>";
pub const PAD: &str = "<|pad|>";
/// A placeholder the VLM replaces with image embeddings.
pub const IMAGE: &str = "<|image|>";

/// What [`train_bpe`] needs besides the texts.
#[derive(Debug, Clone)]
pub struct BpeConfig {
    /// Total vocabulary: 256 byte tokens + special tokens + merges.
    pub vocab_size: usize,
    /// Pairs seen fewer times are never merged.
    pub min_frequency: u64,
    /// Special tokens, given the first ids in this order. Must include [`EOS`].
    pub special_tokens: Vec<String>,
}

impl Default for BpeConfig {
    fn default() -> Self {
        BpeConfig {
            vocab_size: 512,
            min_frequency: 2,
            special_tokens: [EOS, PAD, IMAGE, IM_START, IM_END, VISION_START, VISION_END]
                .map(String::from)
                .to_vec(),
        }
    }
}

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Where it came from, for error messages ("<trained>" before it is saved).
    origin: PathBuf,
    eos: u32,
    pad: u32,
    /// The pre-tokenizer adds a space before the text; decoding removes it again.
    prefix_space: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("origin", &self.origin)
            .field("vocab_size", &self.vocab_size())
            .field("eos", &self.eos)
            .field("pad", &self.pad)
            .finish()
    }
}

/// Train a byte-level BPE (GPT-2 style pre-tokenisation, a space added before each text).
pub fn train_bpe<I, S>(texts: I, config: &BpeConfig) -> Result<Tokenizer>
where
    I: Iterator<Item = S> + Send,
    S: AsRef<str> + Send,
{
    let origin = PathBuf::from("<trained>");
    let fail = |e: tokenizers::Error| DataError::Tokenizer {
        path: origin.clone(),
        message: e.to_string(),
    };
    if !config.special_tokens.iter().any(|t| t == EOS) {
        return Err(DataError::Invalid(format!(
            "tokenizer special tokens must include {EOS}"
        )));
    }
    let byte_level = ByteLevel::default().add_prefix_space(true);
    let mut inner = tokenizers::Tokenizer::new(ModelWrapper::BPE(BPE::default()));
    inner.with_pre_tokenizer(Some(PreTokenizerWrapper::ByteLevel(byte_level)));
    inner.with_decoder(Some(DecoderWrapper::ByteLevel(byte_level)));
    let trainer = BpeTrainer::builder()
        .vocab_size(config.vocab_size)
        .min_frequency(config.min_frequency)
        .show_progress(false)
        .special_tokens(
            config
                .special_tokens
                .iter()
                .map(|t| AddedToken::from(t.clone(), true))
                .collect(),
        )
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    inner
        .train(&mut TrainerWrapper::BpeTrainer(trainer), texts)
        .map_err(fail)?;
    Tokenizer::wrap(inner, origin)
}

impl Tokenizer {
    /// Load any `tokenizer.json`. The end-of-text token is the first of `<|endoftext|>`,
    /// `<|im_end|>`, `</s>`, `<eos>` that it has (change it with [`Tokenizer::with_eos`]).
    pub fn load(path: &Path) -> Result<Tokenizer> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| DataError::Tokenizer {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Tokenizer::wrap(inner, path.to_path_buf())
    }

    fn wrap(inner: tokenizers::Tokenizer, origin: PathBuf) -> Result<Tokenizer> {
        let Some(eos) = [EOS, "<|im_end|>", "</s>", "<eos>"]
            .iter()
            .find_map(|t| inner.token_to_id(t))
        else {
            return Err(DataError::Tokenizer {
                path: origin,
                message: format!(
                    "has no end-of-text token (looked for {EOS}, <|im_end|>, </s>, <eos>)"
                ),
            });
        };
        let pad = inner.token_to_id(PAD).unwrap_or(eos);
        let prefix_space = matches!(
            inner.get_pre_tokenizer(),
            Some(PreTokenizerWrapper::ByteLevel(b)) if b.add_prefix_space
        );
        Ok(Tokenizer {
            inner,
            origin,
            eos,
            pad,
            prefix_space,
        })
    }

    /// Use `token` as end-of-text (e.g. `<|im_end|>` for a chat model).
    pub fn with_eos(mut self, token: &str) -> Result<Tokenizer> {
        self.eos = self
            .token_to_id(token)
            .ok_or_else(|| self.error(format!("has no token {token}")))?;
        Ok(self)
    }

    /// Write `tokenizer.json` (pretty-printed; the same tokenizer always gives the same bytes).
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = self.to_json()?;
        std::fs::write(path, json).map_err(super::io_err(path))
    }

    pub fn to_json(&self) -> Result<String> {
        self.inner
            .to_string(true)
            .map_err(|e| self.error(e.to_string()))
    }

    pub fn eos_id(&self) -> u32 {
        self.eos
    }

    pub fn pad_id(&self) -> u32 {
        self.pad
    }

    /// The number of ids, special tokens included (an embedding table's row count).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Whether its byte-level pre-tokenizer puts a space before each piece of text (tokenizers
    /// trained here do; Qwen's does not).
    pub fn adds_prefix_space(&self) -> bool {
        self.prefix_space
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Ids of `text`, without end-of-text.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| self.error(format!("cannot encode {text:?}: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Ids of `text` followed by end-of-text.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode_plain(text)?;
        ids.push(self.eos);
        Ok(ids)
    }

    /// [`Tokenizer::encode`], or `None` when the ids (end-of-text included) exceed `max_tokens`:
    /// preprocessing drops such texts and counts them.
    pub fn encode_max(&self, text: &str, max_tokens: usize) -> Result<Option<Vec<u32>>> {
        let ids = self.encode(text)?;
        Ok((ids.len() <= max_tokens).then_some(ids))
    }

    /// Text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let text = self
            .inner
            .decode(ids, true)
            .map_err(|e| self.error(format!("cannot decode: {e}")))?;
        Ok(match text.strip_prefix(' ') {
            Some(rest) if self.prefix_space => rest.to_string(),
            _ => text,
        })
    }

    fn error(&self, message: String) -> DataError {
        DataError::Tokenizer {
            path: self.origin.clone(),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::shapes::ShapesConfig;

    fn shapes_texts(n: u64) -> Vec<String> {
        let cfg = ShapesConfig::default();
        (0..n)
            .flat_map(|i| {
                let s = cfg.sample(i);
                s.texts().map(str::to_string).collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn trains_on_shapes_round_trips_and_reloads() {
        let texts = shapes_texts(500);
        let tok = train_bpe(texts.iter(), &BpeConfig::default()).unwrap();
        assert_eq!(tok.token_to_id(EOS), Some(0));
        assert_eq!(tok.token_to_id(PAD), Some(1));
        assert_eq!(tok.token_to_id(IMAGE), Some(2));
        assert_eq!((tok.eos_id(), tok.pad_id()), (0, 1));
        // The shapes vocabulary is small: merges run out before 512.
        assert!(
            tok.vocab_size() > 259 && tok.vocab_size() <= 512,
            "{}",
            tok.vocab_size()
        );

        let text = "a photo of an orange triangle at the top left.";
        let ids = tok.encode(text).unwrap();
        assert_eq!(*ids.last().unwrap(), tok.eos_id());
        assert!(
            ids.len() <= 12,
            "common words become single tokens: {ids:?}"
        );
        assert_eq!(tok.decode(&ids).unwrap(), text);
        // Unseen text still round-trips: every byte has a token.
        let odd = "Zebra! ünïcode 🙂 42";
        assert_eq!(tok.decode(&tok.encode(odd).unwrap()).unwrap(), odd);

        assert!(tok.encode_max(text, ids.len()).unwrap().is_some());
        assert!(tok.encode_max(text, ids.len() - 1).unwrap().is_none());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        tok.save(&path).unwrap();
        let back = Tokenizer::load(&path).unwrap();
        for t in texts.iter().take(200) {
            assert_eq!(back.encode(t).unwrap(), tok.encode(t).unwrap());
        }
        assert_eq!(
            back.to_json().unwrap(),
            std::fs::read_to_string(&path).unwrap()
        );
    }

    #[test]
    fn training_is_deterministic() {
        let texts = shapes_texts(300);
        let a = train_bpe(texts.iter(), &BpeConfig::default()).unwrap();
        let b = train_bpe(texts.iter(), &BpeConfig::default()).unwrap();
        assert_eq!(a.to_json().unwrap(), b.to_json().unwrap());
        // Across processes too: set VLMFLOW_TOKENIZER_DUMP to compare two runs by hand.
        if let Some(path) = std::env::var_os("VLMFLOW_TOKENIZER_DUMP") {
            a.save(Path::new(&path)).unwrap();
        }
    }

    #[test]
    fn loads_a_qwen_style_tokenizer_json() {
        // The structure of Qwen2's tokenizer.json (NFC, regex split + byte level, added tokens),
        // with a vocabulary small enough to write by hand: bytes "a", "b", "Ġ" and one merge.
        let json = r#"{
          "version": "1.0", "truncation": null, "padding": null,
          "added_tokens": [
            {"id": 5, "content": "<|endoftext|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 6, "content": "<|im_start|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 7, "content": "<|im_end|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
          ],
          "normalizer": {"type": "NFC"},
          "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}
          ]},
          "post_processor": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
          "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
          "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": {"a": 0, "b": 1, "Ġ": 2, "ab": 3, "Ġa": 4},
            "merges": [["a", "b"], ["Ġ", "a"]]}
        }"#;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, json).unwrap();
        let tok = Tokenizer::load(&path).unwrap();
        assert_eq!((tok.eos_id(), tok.pad_id()), (5, 5));
        assert_eq!(tok.vocab_size(), 8);
        assert_eq!(tok.encode("ab a").unwrap(), vec![3, 4, 5]);
        assert_eq!(tok.decode(&[3, 4, 5]).unwrap(), "ab a");
        let chat = tok.with_eos("<|im_end|>").unwrap();
        assert_eq!(chat.encode("ab<|im_end|>").unwrap(), vec![3, 7, 7]);

        std::fs::write(&path, "{\"model\": 1}").unwrap();
        let err = Tokenizer::load(&path).unwrap_err().to_string();
        assert!(err.contains("tokenizer.json"), "{err}");
    }
}
