//! What uses a trained model: text generation, the chat bundle, and the evaluations (a VLM's
//! held-out loss and exact match, a CLIP's zero-shot classification).

pub mod bundle;
pub mod generate;
pub mod vlm_eval;
pub mod zero_shot;
