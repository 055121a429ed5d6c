//! The trainable model's hyper-parameters, read from (and written back as) an HF `config.json`.
//!
//! One struct serves Llama/SmolLM2 and Qwen2: the differences are q/k/v biases (Qwen2 always,
//! Llama when `attention_bias` is set), tied embeddings, and Llama 3's rope scaling.

use serde::{Deserialize, Serialize};

/// Llama 3.x `rope_scaling` (`rope_type: "llama3"`); other kinds are refused at load time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    #[serde(default, alias = "type")]
    pub rope_type: Option<String>,
    #[serde(default = "one")]
    pub factor: f64,
    #[serde(default = "one")]
    pub low_freq_factor: f64,
    #[serde(default = "four")]
    pub high_freq_factor: f64,
    #[serde(default = "ctx8k")]
    pub original_max_position_embeddings: usize,
}

fn one() -> f64 {
    1.0
}
fn four() -> f64 {
    4.0
}
fn ctx8k() -> usize {
    8192
}
fn theta() -> f64 {
    10_000.0
}
fn eps() -> f64 {
    1e-6
}
fn ctx() -> usize {
    2048
}
fn llama() -> String {
    "llama".into()
}

/// The subset of an HF `config.json` the transformer needs. Unknown keys are ignored on read;
/// `to_hf_json` adds the keys `transformers` requires to load an exported directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    #[serde(default = "llama")]
    pub model_type: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    pub vocab_size: usize,
    #[serde(default = "eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    #[serde(default = "ctx")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Llama's switch for q/k/v/o biases; Qwen2 has q/k/v biases regardless.
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
}

impl Config {
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
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
        match self.model_type.as_str() {
            "llama" | "qwen2" | "mistral" => {}
            other => {
                return Err(format!(
                    "model_type `{other}` cannot be trained: verdict trains llama, mistral and qwen2 models"
                ));
            }
        }
        if let Some(rs) = &self.rope_scaling {
            let kind = rs.rope_type.as_deref().unwrap_or("default");
            if kind != "llama3" && kind != "default" {
                return Err(format!("rope_scaling type `{kind}` is not supported for training"));
            }
        }
        if !self.num_attention_heads.is_multiple_of(self.n_kv_heads()) {
            return Err("num_attention_heads must be a multiple of num_key_value_heads".into());
        }
        Ok(())
    }

    /// Rotary inverse frequencies, with Llama 3's smooth low-frequency scaling when configured
    /// (same formula as `transformers`' `_compute_llama3_parameters`).
    pub fn inv_freq(&self) -> Vec<f64> {
        let d = self.head_dim();
        let base: Vec<f64> = (0..d).step_by(2).map(|i| 1.0 / self.rope_theta.powf(i as f64 / d as f64)).collect();
        let Some(rs) = self.rope_scaling.as_ref().filter(|r| r.rope_type.as_deref() == Some("llama3")) else {
            return base;
        };
        let old = rs.original_max_position_embeddings as f64;
        let low_wavelen = old / rs.low_freq_factor;
        let high_wavelen = old / rs.high_freq_factor;
        base.into_iter()
            .map(|f| {
                let wavelen = 2.0 * std::f64::consts::PI / f;
                if wavelen < high_wavelen {
                    f
                } else if wavelen > low_wavelen {
                    f / rs.factor
                } else {
                    let smooth = (old / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
                    (1.0 - smooth) * f / rs.factor + smooth * f
                }
            })
            .collect()
    }

    /// `config.json` for an exported directory: our fields plus what `transformers` expects.
    pub fn to_hf_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("config serializes");
        let obj = v.as_object_mut().expect("object");
        obj.retain(|_, x| !x.is_null());
        let arch = match self.model_type.as_str() {
            "qwen2" => "Qwen2ForCausalLM",
            "mistral" => "MistralForCausalLM",
            _ => "LlamaForCausalLM",
        };
        obj.insert("architectures".into(), serde_json::json!([arch]));
        obj.insert("hidden_act".into(), "silu".into());
        obj.insert("torch_dtype".into(), "float32".into());
        obj.insert("num_key_value_heads".into(), self.n_kv_heads().into());
        obj.insert("head_dim".into(), self.head_dim().into());
        v
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
        let back = Config::from_json(&c.to_hf_json().to_string()).unwrap();
        assert_eq!(back.head_dim(), 64);
    }

    #[test]
    fn refuses_other_architectures() {
        let c = Config::from_json(
            r#"{"model_type":"gpt2","hidden_size":8,"intermediate_size":8,
            "num_hidden_layers":1,"num_attention_heads":2,"vocab_size":10}"#,
        )
        .unwrap();
        assert!(c.check_supported().unwrap_err().contains("gpt2"));
    }
}
