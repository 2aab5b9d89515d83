//! What the kinds share and no kind is: reading and checking params, recognising upstream
//! artifacts and declared inputs, training hooks, `train` rules, and the VLM folder both VLM kinds
//! write.

pub(crate) mod inputs;
pub(crate) mod kind_params;
pub(crate) mod train_rules;
pub(crate) mod training;
pub(crate) mod vlm_common;
