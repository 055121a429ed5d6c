//! A model's architecture as transformers 5 reads it, from an HF `config.json` (`hf.rs`: v4 keys
//! `rope_theta`/`rope_scaling` and v5's `rope_parameters`) or from GGUF metadata (`gguf.rs`): the
//! one place both the inference loaders and the trainer get a family's hyper-parameters from.
//!
//! The rules follow `transformers.modeling_rope_utils` (5.24): `rope_scaling` if present, else
//! `rope_parameters`; `rope_theta` inside it wins over the top-level key, then the family's
//! default; `rope_type` (or `type`) defaults to `default`; llama3/yarn/longrope take
//! `original_max_position_embeddings` from the top level (Phi-3), else from the rope dict, else
//! `max_position_embeddings`. A key that changes the math and that verdict does not implement is
//! an error naming the file and the key, never a silent default.

mod family;
mod gguf;
mod hf;
mod rope;

pub use family::{Activation, Family, RUNS};
pub use rope::{Rope, RopeKind};

use serde_json::Value;
use std::path::PathBuf;

/// A configuration verdict cannot read, or cannot run as its file describes it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ArchError {
    #[error("{path}: unsupported architecture `{arch}`; verdict runs {RUNS}")]
    Unsupported { path: PathBuf, arch: String },
    #[error("{path}: `{key}` {reason}")]
    Key { path: PathBuf, key: String, reason: String },
}

/// A family's hyper-parameters, whichever file they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchConfig {
    pub family: Family,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    pub max_position_embeddings: usize,
    pub rope: Rope,
    pub tie_word_embeddings: bool,
    /// q/k/v/o biases (Llama's `attention_bias`); Qwen2 has q/k/v biases regardless.
    pub attention_bias: bool,
    /// The window of the layers that attend over a sliding window (`sliding_layers`), when some do.
    pub sliding_window: Option<usize>,
    /// Per layer: whether it attends over `sliding_window` only (Mistral: all; Gemma: alternate).
    pub sliding_layers: Vec<bool>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<Value>,
    /// The padding id (the embedding row transformers keeps at zero gradient), when named.
    pub pad_token_id: Option<u32>,
    pub activation: Activation,
    /// Gemma 2's attention score soft-capping: `tanh(s / c) * c` before the mask.
    pub attn_softcap: Option<f64>,
    /// Gemma 2's final logit soft-capping.
    pub final_softcap: Option<f64>,
    /// Gemma's: scores are scaled by `query_pre_attn_scalar^-1/2` instead of `head_dim^-1/2`.
    pub query_pre_attn_scalar: Option<f64>,
    /// Gemma 3's rotary settings for its sliding layers (`rope` is the global layers').
    pub local_rope: Option<Rope>,
}

impl ArchConfig {
    /// The positions verdict runs: `max_position_embeddings`, capped where the math would
    /// change beyond (LongRoPE's switch to long factors).
    pub fn context(&self) -> usize {
        self.rope.context_limit().map_or(self.max_position_embeddings, |l| l.min(self.max_position_embeddings))
    }

    /// Whether q/k/v projections carry a bias.
    pub fn qkv_bias(&self) -> bool {
        self.family == Family::Qwen2 || self.attention_bias
    }
}

/// Per-layer attention settings, from the fields inference (`ArchConfig`) and training
/// (`train::Config`) both carry: which layers attend over a sliding window, each layer's rotary
/// settings and the score scale. Bring it into scope to call `layer_window`, `layer_rope`,
/// `attention_scale`.
pub trait LayerAttention {
    /// The global (non-sliding) layers' rotary settings.
    fn global_rope(&self) -> &Rope;
    /// The sliding layers' own rotary settings (Gemma 3's), when they have them.
    fn sliding_rope(&self) -> Option<&Rope>;
    /// The window of the sliding layers, when some layers slide.
    fn window(&self) -> Option<usize>;
    /// Per layer: whether it attends over `window` only.
    fn sliding(&self) -> &[bool];
    /// Gemma's `query_pre_attn_scalar` when set, else the head size.
    fn score_scalar(&self) -> f64;

    /// The window layer `i` attends over (`None`: all earlier positions).
    fn layer_window(&self, i: usize) -> Option<usize> {
        self.window().filter(|_| self.sliding().get(i).copied().unwrap_or(false))
    }

    /// The rotary settings of layer `i` (Gemma 3's sliding layers have their own).
    fn layer_rope(&self, i: usize) -> &Rope {
        match self.sliding_rope() {
            Some(local) if self.layer_window(i).is_some() => local,
            _ => self.global_rope(),
        }
    }

    /// The factor attention scores are multiplied by (`score_scalar^-1/2`).
    fn attention_scale(&self) -> f64 {
        1.0 / self.score_scalar().sqrt()
    }
}

impl LayerAttention for ArchConfig {
    fn global_rope(&self) -> &Rope {
        &self.rope
    }
    fn sliding_rope(&self) -> Option<&Rope> {
        self.local_rope.as_ref()
    }
    fn window(&self) -> Option<usize> {
        self.sliding_window
    }
    fn sliding(&self) -> &[bool] {
        &self.sliding_layers
    }
    fn score_scalar(&self) -> f64 {
        self.query_pre_attn_scalar.unwrap_or(self.head_dim as f64)
    }
}
