//! Training: the optimizer and learning-rate schedule, one step, checkpoints, the loop the
//! trainers share, the three trainers (CLIP, language model, VLM), and loss curves.

pub mod checkpoint;
pub mod clip;
pub mod lm;
pub mod optim;
pub mod plot;
pub mod schedule;
pub mod step;
pub mod train_loop;
pub mod vlm;

#[cfg(test)]
mod precision_tests;
