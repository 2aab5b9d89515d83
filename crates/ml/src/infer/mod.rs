//! What uses a trained model: text generation, the chat bundle (and its LLaVA form), and the evaluations (a VLM's
//! held-out loss and exact match, visual question answering as the benchmarks score it, a
//! CLIP's zero-shot classification).

pub mod bundle;
pub mod generate;
pub mod llava_export;
pub mod vlm_eval;
pub mod vqa;
pub mod zero_shot;
