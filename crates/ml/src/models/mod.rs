//! Model definitions, one file each, readable top to bottom.

pub mod clip;
pub mod hf_vision;
pub mod hf_vision_config;
pub mod hf_weights;
pub mod llava_layout;
pub mod lm_loss;
pub mod lora;
pub mod pos_resize;
pub mod projector;
pub mod qwen2;
pub mod qwen2_config;
pub mod qwen2_load;
pub mod text;
pub mod transformer;
pub mod vit;
pub mod vlm;
pub mod vlm_folder;

#[cfg(test)]
pub(crate) mod clip_tests;
#[cfg(test)]
pub(crate) mod qwen2_reference_tests;
#[cfg(test)]
mod vision_reference_tests;
