//! dsv3-model: the DeepSeek-V3 / V2 model graph, written once against the backend trait.

pub(crate) mod blocks;
pub mod builtin;
pub mod cache;
pub mod chat;
pub mod checkpoint;
pub mod config;
pub(crate) mod exec;
pub mod expert_stats;
pub mod files;
pub mod finite;
pub mod fuzzing;
pub mod generate;
pub mod golden;
pub mod graph;
pub mod inspect;
pub mod layout;
pub mod memory;
pub mod numeric;
pub mod placement;
pub mod plan;
pub mod progress;
pub mod tokenizer;
pub mod values;
pub mod weights;
pub(crate) mod workspace;
