//! The trainable model's hyper-parameters, read from an HF `config.json` or GGUF metadata
//! through `model::arch` (the same reading inference uses) and written back as `config.json`.
//!
//! One struct serves every family (`model::arch::Family`): the differences are q/k/v biases
//! (Qwen2 always, Llama when `attention_bias` is set), tied embeddings, the rotary scaling,
//! Qwen3's and Gemma 3's q/k norms, Gemma's norms, activation, soft-capping and query scale,
//! sliding-window layers, and Phi-3's fused projections (split at load, `weights.rs`).

use crate::model::arch::{Activation, ArchConfig, Family, LayerAttention, Rope};
use serde::Serialize;

/// The subset of an HF `config.json` the transformer needs. `to_hf_json` adds the keys
/// `transformers` requires to load an exported directory.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    pub model_type: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    /// Theta, scaling and attention factor; written as v4 `rope_theta` + `rope_scaling`.
    #[serde(skip)]
    pub rope: Rope,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Llama's switch for q/k/v/o biases; Qwen2 has q/k/v biases regardless.
    pub attention_bias: bool,
    /// Mistral's/Qwen2's window, written back as found (verdict's context stops at it).
    pub sliding_window: Option<usize>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<serde_json::Value>,
    /// Written out even when absent: Phi-3's default (32000) is no row of a smaller vocabulary.
    pub pad_token_id: Option<u32>,
    /// Per layer: whether it attends over `sliding_window` only.
    #[serde(skip)]
    pub sliding_layers: Vec<bool>,
    #[serde(skip)]
    pub activation: Activation,
    /// Gemma 2's soft-capping of attention scores and of the final logits.
    #[serde(skip)]
    pub attn_softcap: Option<f64>,
    #[serde(skip)]
    pub final_softcap: Option<f64>,
    #[serde(skip)]
    pub query_pre_attn_scalar: Option<f64>,
    /// Gemma 3's sliding layers' rotary settings.
    #[serde(skip)]
    pub local_rope: Option<Rope>,
}

impl Config {
    /// Reads `config.json` text; `path` names the file in errors.
    pub fn from_hf_json(path: &std::path::Path, text: &str) -> Result<Self, crate::model::arch::ArchError> {
        ArchConfig::from_hf_json(path, text).map(|a| Config::from_arch(&a))
    }

    /// `from_hf_json` for text without a file (tests).
    pub fn from_json(text: &str) -> Result<Self, crate::model::arch::ArchError> {
        Config::from_hf_json(std::path::Path::new("config.json"), text)
    }

    pub fn from_arch(a: &ArchConfig) -> Config {
        Config {
            model_type: a.family.name().into(),
            hidden_size: a.hidden_size,
            intermediate_size: a.intermediate_size,
            num_hidden_layers: a.num_hidden_layers,
            num_attention_heads: a.num_attention_heads,
            num_key_value_heads: Some(a.num_key_value_heads),
            head_dim: Some(a.head_dim),
            vocab_size: a.vocab_size,
            rms_norm_eps: a.rms_norm_eps,
            rope: a.rope.clone(),
            max_position_embeddings: a.max_position_embeddings,
            tie_word_embeddings: a.tie_word_embeddings,
            attention_bias: a.attention_bias,
            sliding_window: a.sliding_window,
            bos_token_id: a.bos_token_id,
            eos_token_id: a.eos_token_id.clone(),
            pad_token_id: a.pad_token_id,
            sliding_layers: a.sliding_layers.clone(),
            activation: a.activation,
            attn_softcap: a.attn_softcap,
            final_softcap: a.final_softcap,
            query_pre_attn_scalar: a.query_pre_attn_scalar,
            local_rope: a.local_rope.clone(),
        }
    }

    /// The family `model_type` names (llama for a name verdict does not know).
    pub fn family(&self) -> Family {
        Family::from_hf(&self.model_type).unwrap_or(Family::Llama)
    }

    pub fn n_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// Whether q/k/v projections carry a bias (Qwen2 always does).
    pub fn qkv_bias(&self) -> bool {
        self.model_type == "qwen2" || self.attention_bias
    }

    /// Whether the output projection carries a bias (Llama with `attention_bias` only).
    pub fn o_bias(&self) -> bool {
        self.model_type != "qwen2" && self.attention_bias
    }

    /// Architectures this trainer implements; anything else is refused with a clear message.
    pub fn check_supported(&self) -> Result<(), String> {
        match Family::from_hf(&self.model_type) {
            Some(_) => {}
            None => {
                return Err(format!(
                    "model_type `{}` cannot be trained: verdict trains {}",
                    self.model_type,
                    crate::model::arch::RUNS
                ));
            }
        }
        if !self.num_attention_heads.is_multiple_of(self.n_kv_heads()) {
            return Err("num_attention_heads must be a multiple of num_key_value_heads".into());
        }
        Ok(())
    }

    /// Rotary inverse frequencies, scaled as the configuration says (`model::arch::Rope`).
    pub fn inv_freq(&self) -> Vec<f64> {
        self.rope.inv_freq(self.head_dim())
    }

    /// The factor cos and sin are multiplied by (1 but for YaRN and LongRoPE).
    pub fn rope_attention_factor(&self) -> f64 {
        self.rope.attention_factor()
    }

    /// `config.json` for an exported directory: our fields plus what `transformers` expects,
    /// in v4 keys (`rope_theta`, `rope_scaling`), which transformers 4 and 5 both read, and each
    /// family's own keys for the math the trainer ran: Gemma's activation, soft-capping, query
    /// scale, sliding layers and local rope base; Phi-3's partial rotary factor and original
    /// context; Qwen's sliding layers.
    pub fn to_hf_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("config serializes");
        let obj = v.as_object_mut().expect("object");
        obj.retain(|_, x| !x.is_null());
        let family = self.family();
        obj.insert("model_type".into(), family.hf_model_type().into());
        obj.insert("architectures".into(), serde_json::json!([family.hf_class()]));
        obj.insert("hidden_act".into(), self.activation.hf_name().into());
        obj.insert("torch_dtype".into(), "float32".into());
        obj.insert("num_key_value_heads".into(), self.n_kv_heads().into());
        obj.insert("head_dim".into(), self.head_dim().into());
        obj.insert("pad_token_id".into(), self.pad_token_id.into());
        obj.insert("rope_theta".into(), self.rope.theta.into());
        if let Some(scaling) = self.rope.hf_scaling() {
            obj.insert("rope_scaling".into(), scaling);
        }
        if self.rope.partial_rotary_factor != 1.0 {
            obj.insert("partial_rotary_factor".into(), self.rope.partial_rotary_factor.into());
        }
        if let Some(original) = self.rope.original_max() {
            // Phi-3 reads it from the top level (transformers then derives the LongRoPE factor).
            obj.insert("original_max_position_embeddings".into(), original.into());
        }
        let layer_types = || -> serde_json::Value {
            (0..self.num_hidden_layers)
                .map(|i| if self.layer_window(i).is_some() { "sliding_attention" } else { "full_attention" })
                .collect()
        };
        match family {
            Family::Mistral if self.sliding_window.is_none() => {
                // Mistral's default window is 4096: "none" must be written out.
                obj.insert("sliding_window".into(), serde_json::Value::Null);
            }
            Family::Qwen2 | Family::Qwen3 => {
                obj.insert("use_sliding_window".into(), self.sliding_window.is_some().into());
                obj.insert("layer_types".into(), layer_types());
            }
            Family::Gemma2 | Family::Gemma3 => {
                obj.insert("hidden_activation".into(), self.activation.hf_name().into());
                // Null is written out: Gemma 2's defaults are 50 and 30.
                obj.insert("attn_logit_softcapping".into(), self.attn_softcap.into());
                obj.insert("final_logit_softcapping".into(), self.final_softcap.into());
                // transformers' field is an int (a float fails its validation).
                let scalar = self.query_pre_attn_scalar.map(|s| match s.fract() == 0.0 && s.abs() < 1e15 {
                    true => serde_json::Value::from(s as i64),
                    false => s.into(),
                });
                obj.insert("query_pre_attn_scalar".into(), scalar.into());
                obj.insert("sliding_window".into(), self.sliding_window.into());
                obj.insert("layer_types".into(), layer_types());
                if let Some(local) = &self.local_rope {
                    obj.insert("rope_local_base_freq".into(), local.theta.into());
                    if local.kind != crate::model::arch::RopeKind::Default || local.partial_rotary_factor != 1.0 {
                        // v4 keys cannot scale the local rope: transformers 5's nested form can.
                        obj.remove("rope_scaling");
                        obj.remove("rope_theta");
                        obj.insert(
                            "rope_parameters".into(),
                            serde_json::json!({
                                "full_attention": self.rope.hf_parameters(),
                                "sliding_attention": local.hf_parameters(),
                            }),
                        );
                    }
                }
            }
            _ => {}
        }
        v
    }
}

/// The per-layer window, rope and score scale, by the same rules inference uses.
impl LayerAttention for Config {
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
        self.query_pre_attn_scalar.unwrap_or(self.head_dim() as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_smollm2_config_and_defaults() {
        let c = Config::from_json(
            r#"{"model_type":"llama","hidden_size":576,"intermediate_size":1536,
            "num_hidden_layers":30,"num_attention_heads":9,"num_key_value_heads":3,
            "vocab_size":49152,"rms_norm_eps":1e-5,"rope_theta":100000,
            "tie_word_embeddings":true,"max_position_embeddings":8192,"extra":1}"#,
        )
        .unwrap();
        assert_eq!(c.head_dim(), 64);
        assert_eq!(c.n_kv_heads(), 3);
        assert!(!c.qkv_bias());
        assert!(c.check_supported().is_ok());
        assert_eq!(c.inv_freq().len(), 32);
        assert_eq!(c.rope.theta, 100000.0);
        let back = Config::from_json(&c.to_hf_json().to_string()).unwrap();
        assert_eq!(back, c);
    }

    /// transformers 5 writes `rope_parameters` instead of a top-level `rope_theta`; reading
    /// only the v4 key trained SmolLM2 with theta 10000 instead of 100000.
    #[test]
    fn reads_transformers5_rope_parameters() {
        let c = Config::from_json(
            r#"{"model_type":"llama","hidden_size":64,"intermediate_size":128,
            "num_hidden_layers":1,"num_attention_heads":4,"vocab_size":10,
            "rope_parameters":{"rope_theta":100000.0,"rope_type":"llama3","factor":8.0,
            "low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}}"#,
        )
        .unwrap();
        assert_eq!(c.rope.theta, 100000.0);
        assert_eq!(c.rope.type_name(), "llama3");
        let back = Config::from_json(&c.to_hf_json().to_string()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn refuses_other_architectures() {
        let gpt2 = r#"{"model_type":"gpt2","hidden_size":8,"intermediate_size":8,
            "num_hidden_layers":1,"num_attention_heads":2,"vocab_size":10}"#;
        assert!(Config::from_json(gpt2).unwrap_err().to_string().contains("gpt2"));
        let gemma2 = gpt2.replace("gpt2", "gemma2");
        assert!(Config::from_json(&gemma2).unwrap().check_supported().is_ok());
    }
}
