//! The model's blocks: each owns its weights and the index of the device (`crate::exec::Exec`) they live
//! on, loads itself from the checkpoint's HF names, and runs its part of a forward step. A later model
//! family needs new blocks, not a new graph.

pub(crate) mod attention;
pub(crate) mod moe;
