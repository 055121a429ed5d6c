//! Training: the trainable transformer, LoRA, log-probs, DPO/SFT/KTO/ORPO losses, AdamW, the step.
//!
//! Nothing here touches the store or draws: data comes in as token ids, metrics go out as
//! values the caller records, checkpoints go to a directory.

pub mod adamw_kernel;
pub mod attention;
pub mod batch;
pub mod checkpoint;
pub mod checkpointing;
pub mod config;
#[cfg(test)]
mod denormal_census;
pub mod export;
pub mod export_gguf;
pub mod export_ollama;
pub mod flops;
pub mod frozen;
pub mod fused;
pub mod gguf_layout;
pub mod head_logp;
pub mod heap;
pub mod input;
pub mod kto;
pub mod layer;
pub mod lean_load;
pub mod linear;
pub mod load;
pub mod logps;
pub mod lora;
pub mod lora_proj;
pub mod loss;
pub mod memory_plan;
pub mod model;
pub mod optim;
pub mod orpo;
pub mod precision;
pub mod real;
pub mod safetensors_out;
pub mod score;
#[cfg(test)]
mod simd_tests;
pub mod step;
pub mod swiglu;
pub mod target_logp;
pub mod tokenize;
pub mod weight_grads;
pub mod weights;

/// A candle error as one message: candle appends a backtrace (after a newline) to errors made
/// while `RUST_BACKTRACE` is set, which does not belong in a run's recorded error.
pub fn error_text(error: &candle_core::Error) -> String {
    match error {
        candle_core::Error::WithBacktrace { inner, .. } => error_text(inner),
        other => other.to_string(),
    }
}
