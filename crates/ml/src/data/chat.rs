//! The chat template: how a conversation about an image becomes token ids and loss labels.
//!
//! ChatML, as Qwen2 uses it, with the image between delimiter tokens at the start of the first
//! user turn:
//!
//! ```text
//! <|im_start|>system\n{system}<|im_end|>\n              (only when a system prompt is set)
//! <|im_start|>user\n<|vision_start|>{image × n}<|vision_end|>{question}<|im_end|>\n
//! <|im_start|>assistant\n{answer}<|im_end|>\n
//! <|im_start|>user\n{question}<|im_end|>\n …
//! ```
//!
//! Every image position holds a placeholder id that the VLM replaces with projected image
//! embeddings. Labels are [`IGNORE`] everywhere except on the assistant's answers and the
//! `<|im_end|>` that closes each of them: the model learns to answer and to stop, not to
//! predict the user's words or the image.

use serde::{Deserialize, Serialize};

use super::tokenizer::{IMAGE, Tokenizer};
use super::{DataError, Result};

pub const IM_START: &str = "<|im_start|>";
pub const IM_END: &str = "<|im_end|>";
pub const VISION_START: &str = "<|vision_start|>";
pub const VISION_END: &str = "<|vision_end|>";
/// Qwen2.5's image placeholder; tokenizers trained here use [`IMAGE`].
pub const IMAGE_PAD: &str = "<|image_pad|>";
/// The label of positions without loss (PyTorch's `ignore_index`).
pub const IGNORE: i64 = -100;

/// The instruction of the caption objective (vlm-pretrain).
pub const CAPTION_PROMPT: &str = "Provide a brief description of the given image.";

/// One exchange: the user's message and the assistant's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    pub user: String,
    pub assistant: String,
}

/// A conversation as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokenized {
    pub ids: Vec<u32>,
    /// Next-token targets aligned with `ids`: `labels[i]` is the id the model should predict
    /// *at* position i (already equal to `ids[i]`; the shift happens in the loss).
    pub labels: Vec<i64>,
    /// Where the image placeholders start, when there is an image.
    pub image_at: Option<usize>,
}

/// The template's special ids, resolved once against a tokenizer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatTemplate {
    pub im_start: u32,
    pub im_end: u32,
    pub vision_start: u32,
    pub vision_end: u32,
    pub image: u32,
    /// How many embeddings an image takes (the projector's output tokens).
    pub image_tokens: usize,
    pub system: Option<String>,
}

impl ChatTemplate {
    /// Resolve the template's special tokens in `tokenizer`; an error names the missing one.
    pub fn new(tokenizer: &Tokenizer, image_tokens: usize, system: Option<String>) -> Result<Self> {
        let id = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| tokenizer.token_to_id(n))
                .ok_or_else(|| {
                    DataError::Invalid(format!(
                        "the tokenizer has no {} token, which the chat template needs \
                         (train it here, or use a Qwen2.5 tokenizer.json)",
                        names.join(" or ")
                    ))
                })
        };
        Ok(ChatTemplate {
            im_start: id(&[IM_START])?,
            im_end: id(&[IM_END])?,
            vision_start: id(&[VISION_START])?,
            vision_end: id(&[VISION_END])?,
            image: id(&[IMAGE, IMAGE_PAD])?,
            image_tokens,
            system,
        })
    }

    /// A whole conversation for training; the image (if any) opens the first user turn.
    pub fn encode(&self, tok: &Tokenizer, turns: &[Turn], with_image: bool) -> Result<Tokenized> {
        let mut out = Builder::default();
        self.header(tok, &mut out)?;
        for (i, turn) in turns.iter().enumerate() {
            self.user_turn(tok, &mut out, &turn.user, with_image && i == 0)?;
            out.special(self.im_start, false);
            out.text(tok, "assistant\n", false)?;
            out.text(tok, &turn.assistant, true)?;
            out.special(self.im_end, true);
            out.text(tok, "\n", false)?;
        }
        Ok(out.finish())
    }

    /// The prompt for generation: `history` (already answered), then `question`, then the
    /// assistant's header, ready for the model to continue. The image opens the first turn.
    pub fn prompt(
        &self,
        tok: &Tokenizer,
        history: &[Turn],
        question: &str,
        with_image: bool,
    ) -> Result<Tokenized> {
        let mut out = Builder::default();
        self.header(tok, &mut out)?;
        for (i, turn) in history.iter().enumerate() {
            self.user_turn(tok, &mut out, &turn.user, with_image && i == 0)?;
            out.special(self.im_start, false);
            out.text(tok, "assistant\n", false)?;
            out.text(tok, &turn.assistant, false)?;
            out.special(self.im_end, false);
            out.text(tok, "\n", false)?;
        }
        self.user_turn(tok, &mut out, question, with_image && history.is_empty())?;
        out.special(self.im_start, false);
        out.text(tok, "assistant\n", false)?;
        Ok(out.finish())
    }

    fn header(&self, tok: &Tokenizer, out: &mut Builder) -> Result<()> {
        if let Some(system) = &self.system {
            out.special(self.im_start, false);
            out.text(tok, "system\n", false)?;
            out.text(tok, system, false)?;
            out.special(self.im_end, false);
            out.text(tok, "\n", false)?;
        }
        Ok(())
    }

    fn user_turn(&self, tok: &Tokenizer, out: &mut Builder, text: &str, image: bool) -> Result<()> {
        out.special(self.im_start, false);
        out.text(tok, "user\n", false)?;
        if image {
            out.special(self.vision_start, false);
            out.image_at = Some(out.ids.len());
            for _ in 0..self.image_tokens {
                out.special(self.image, false);
            }
            out.special(self.vision_end, false);
        }
        out.text(tok, text, false)?;
        out.special(self.im_end, false);
        out.text(tok, "\n", false)
    }
}

#[derive(Default)]
struct Builder {
    ids: Vec<u32>,
    labels: Vec<i64>,
    image_at: Option<usize>,
}

impl Builder {
    fn special(&mut self, id: u32, learn: bool) {
        self.ids.push(id);
        self.labels.push(if learn { i64::from(id) } else { IGNORE });
    }

    fn text(&mut self, tok: &Tokenizer, text: &str, learn: bool) -> Result<()> {
        for id in tok.encode_plain(text)? {
            self.special(id, learn);
        }
        Ok(())
    }

    fn finish(self) -> Tokenized {
        Tokenized {
            ids: self.ids,
            labels: self.labels,
            image_at: self.image_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::tokenizer::{BpeConfig, train_bpe};

    fn tokenizer() -> Tokenizer {
        let texts = ["What colour is the shape?", "red", "a red circle."];
        train_bpe(texts.iter(), &BpeConfig::default()).unwrap()
    }

    #[test]
    fn labels_cover_answers_and_their_end_only() {
        let tok = tokenizer();
        let chat = ChatTemplate::new(&tok, 3, None).unwrap();
        let turns = [
            Turn {
                user: "What colour is the shape?".into(),
                assistant: "red".into(),
            },
            Turn {
                user: "Is it?".into(),
                assistant: "yes".into(),
            },
        ];
        let t = chat.encode(&tok, &turns, true).unwrap();
        assert_eq!(t.ids.len(), t.labels.len());
        // <|im_start|> "user\n" <|vision_start|> image×3 <|vision_end|> …
        let user = tok.encode_plain("user\n").unwrap();
        let at = 1 + user.len() + 1;
        assert_eq!(t.image_at, Some(at));
        assert_eq!(t.ids[at - 1], chat.vision_start);
        assert_eq!(&t.ids[at..at + 3], &[chat.image; 3]);
        assert_eq!(t.ids[at + 3], chat.vision_end);

        // The learned positions, read back, are exactly the two answers each with its end.
        let learned: Vec<u32> = t
            .labels
            .iter()
            .filter(|&&l| l != IGNORE)
            .map(|&l| l as u32)
            .collect();
        let mut expected = tok.encode_plain("red").unwrap();
        expected.push(chat.im_end);
        expected.extend(tok.encode_plain("yes").unwrap());
        expected.push(chat.im_end);
        assert_eq!(learned, expected);
        for (i, &l) in t.labels.iter().enumerate() {
            if l != IGNORE {
                assert_eq!(l, i64::from(t.ids[i]), "labels are the ids themselves");
            }
        }
        // Only the first turn carries the image.
        assert_eq!(t.ids.iter().filter(|&&id| id == chat.image).count(), 3);
    }

    #[test]
    fn a_prompt_is_the_training_sequence_up_to_the_answer() {
        let tok = tokenizer();
        let chat = ChatTemplate::new(&tok, 2, Some("Be brief.".into())).unwrap();
        let turn = Turn {
            user: "What colour is the shape?".into(),
            assistant: "red".into(),
        };
        let full = chat
            .encode(&tok, std::slice::from_ref(&turn), true)
            .unwrap();
        let prompt = chat.prompt(&tok, &[], &turn.user, true).unwrap();
        assert_eq!(&full.ids[..prompt.ids.len()], &prompt.ids[..]);
        assert_eq!(
            full.ids[prompt.ids.len()],
            tok.encode_plain("red").unwrap()[0]
        );
        assert!(prompt.labels.iter().all(|&l| l == IGNORE));
        assert_eq!(prompt.image_at, full.image_at);

        // A follow-up question: history first, the image stays in the first turn.
        let follow = chat.prompt(&tok, &[turn], "And?", true).unwrap();
        assert_eq!(&follow.ids[..full.ids.len()], &full.ids[..]);
        assert_eq!(follow.image_at, full.image_at);
    }

    #[test]
    fn a_tokenizer_without_the_chat_tokens_is_refused_by_name() {
        let config = BpeConfig {
            special_tokens: vec!["<|endoftext|>".into()],
            ..BpeConfig::default()
        };
        let tok = train_bpe(["a b"].iter(), &config).unwrap();
        let err = ChatTemplate::new(&tok, 1, None).unwrap_err().to_string();
        assert!(err.contains(IM_START), "{err}");
    }
}
