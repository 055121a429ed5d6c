//! A model's architecture as transformers 5 reads it, from an HF `config.json` (v4 keys
//! `rope_theta`/`rope_scaling` and v5's `rope_parameters`) or from GGUF metadata: the one place
//! both the inference loaders and the trainer get a family's hyper-parameters from.
//!
//! The rules follow `transformers.modeling_rope_utils` (5.24): `rope_scaling` if present, else
//! `rope_parameters`; `rope_theta` inside it wins over the top-level key, then the family's
//! default; `rope_type` (or `type`) defaults to `default`; llama3/yarn/longrope take
//! `original_max_position_embeddings` from the top level (Phi-3), else from the rope dict, else
//! `max_position_embeddings`. A key that changes the math and that verdict does not implement is
//! an error naming the file and the key, never a silent default.

use super::gguf_meta::Meta;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// A configuration verdict cannot read, or cannot run as its file describes it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ArchError {
    #[error("{path}: unsupported architecture `{arch}`; verdict runs {RUNS}")]
    Unsupported { path: PathBuf, arch: String },
    #[error("{path}: `{key}` {reason}")]
    Key { path: PathBuf, key: String, reason: String },
}

/// The model families verdict knows by name (it runs those where `runs()` is true).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    Gemma2,
    Gemma3,
    Phi3,
}

/// The families verdict runs, for messages.
pub const RUNS: &str = "llama (SmolLM2, Llama 3.x), mistral, qwen2, qwen3, gemma2, gemma3 and phi3";

/// The MLP's activation (`hidden_act`, Gemma's `hidden_activation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Silu,
    /// `gelu_pytorch_tanh`: GELU with the tanh approximation.
    GeluTanh,
}

impl Activation {
    /// transformers' name.
    pub fn hf_name(self) -> &'static str {
        match self {
            Activation::Silu => "silu",
            Activation::GeluTanh => "gelu_pytorch_tanh",
        }
    }
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
            Family::Gemma2 => "gemma2",
            Family::Gemma3 => "gemma3",
            Family::Phi3 => "phi3",
        }
    }

    /// Whether verdict implements this family's forward (inference and training): all it knows.
    pub fn runs(self) -> bool {
        true
    }

    /// Qwen3's and Gemma 3's RMSNorm of every query and key head before the rotary embedding.
    pub fn qk_norm(self) -> bool {
        matches!(self, Family::Qwen3 | Family::Gemma3)
    }

    /// Gemma's: RMSNorm weights applied as `1 + w`, embeddings scaled by `sqrt(hidden)`, and
    /// norms after attention and around the MLP (`pre_/post_feedforward_layernorm`).
    pub fn gemma(self) -> bool {
        matches!(self, Family::Gemma2 | Family::Gemma3)
    }

    /// Phi-3's fused `qkv_proj` and `gate_up_proj` (split at load, fused again on export).
    pub fn fused_projections(self) -> bool {
        self == Family::Phi3
    }

    /// The `model_type` an exported config.json names (Gemma 3's text-only model is
    /// `gemma3_text`; `gemma3` is the multimodal one).
    pub fn hf_model_type(self) -> &'static str {
        match self {
            Family::Gemma3 => "gemma3_text",
            other => other.name(),
        }
    }

    /// The transformers class an exported directory names.
    pub fn hf_class(self) -> &'static str {
        match self {
            Family::Llama => "LlamaForCausalLM",
            Family::Mistral => "MistralForCausalLM",
            Family::Qwen2 => "Qwen2ForCausalLM",
            Family::Qwen3 => "Qwen3ForCausalLM",
            Family::Gemma2 => "Gemma2ForCausalLM",
            Family::Gemma3 => "Gemma3ForCausalLM",
            Family::Phi3 => "Phi3ForCausalLM",
        }
    }

    /// From config.json's `architectures[0]`, else its `model_type`.
    pub fn from_hf(hint: &str) -> Option<Family> {
        const ALL: [Family; 7] = [
            Family::Llama,
            Family::Mistral,
            Family::Qwen2,
            Family::Qwen3,
            Family::Gemma2,
            Family::Gemma3,
            Family::Phi3,
        ];
        match hint {
            "gemma3_text" | "Gemma3ForConditionalGeneration" => Some(Family::Gemma3),
            _ => ALL.into_iter().find(|f| f.name() == hint || f.hf_class() == hint),
        }
    }

    /// From GGUF `general.architecture` (llama.cpp writes Mistral models as `llama`).
    pub fn from_gguf(arch: &str) -> Option<Family> {
        match arch {
            "llama" => Some(Family::Llama),
            "qwen2" => Some(Family::Qwen2),
            "qwen3" => Some(Family::Qwen3),
            "gemma2" => Some(Family::Gemma2),
            "gemma3" => Some(Family::Gemma3),
            "phi3" => Some(Family::Phi3),
            _ => None,
        }
    }

    /// The family's rope_theta when config.json names none (transformers' `default_theta`).
    fn default_theta(self) -> f64 {
        match self {
            Family::Gemma3 => 1_000_000.0,
            _ => 10_000.0,
        }
    }
}

/// How rotary frequencies are scaled (transformers' `rope_type`).
#[derive(Debug, Clone, PartialEq)]
pub enum RopeKind {
    Default,
    /// Frequencies divided by `factor`.
    Linear {
        factor: f64,
    },
    /// Dynamic NTK: identical to default up to `max_position_embeddings`, which verdict's context
    /// does not exceed.
    Dynamic {
        factor: f64,
    },
    Yarn {
        factor: f64,
        original_max: usize,
        attention_factor: Option<f64>,
        beta_fast: f64,
        beta_slow: f64,
        mscale: Option<f64>,
        mscale_all_dim: Option<f64>,
        truncate: bool,
    },
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max: usize,
    },
    /// Phi-3's: `short_factor` up to `original_max` positions (verdict's context stops there).
    LongRope {
        short_factor: Vec<f64>,
        long_factor: Vec<f64>,
        factor: f64,
        attention_factor: Option<f64>,
        original_max: usize,
    },
}

/// Rotary position embedding settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    pub theta: f64,
    pub partial_rotary_factor: f64,
    pub kind: RopeKind,
}

impl Rope {
    pub fn plain(theta: f64) -> Rope {
        Rope { theta, partial_rotary_factor: 1.0, kind: RopeKind::Default }
    }

    /// `default`, `llama3`…, as transformers names it.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            RopeKind::Default => "default",
            RopeKind::Linear { .. } => "linear",
            RopeKind::Dynamic { .. } => "dynamic",
            RopeKind::Yarn { .. } => "yarn",
            RopeKind::Llama3 { .. } => "llama3",
            RopeKind::LongRope { .. } => "longrope",
        }
    }

    /// Rotated dimensions of a head.
    pub fn rotary_dim(&self, head_dim: usize) -> usize {
        (head_dim as f64 * self.partial_rotary_factor) as usize
    }

    /// Inverse frequencies of the rotary pairs (transformers' `ROPE_INIT_FUNCTIONS`, in f64).
    pub fn inv_freq(&self, head_dim: usize) -> Vec<f64> {
        let dim = self.rotary_dim(head_dim);
        let base: Vec<f64> = (0..dim).step_by(2).map(|i| 1.0 / self.theta.powf(i as f64 / dim as f64)).collect();
        match &self.kind {
            RopeKind::Default | RopeKind::Dynamic { .. } => base,
            RopeKind::Linear { factor } => base.into_iter().map(|f| f / factor).collect(),
            RopeKind::LongRope { short_factor, .. } => base.iter().zip(short_factor).map(|(f, s)| f / s).collect(),
            RopeKind::Llama3 { factor, low_freq_factor: low, high_freq_factor: high, original_max } => {
                let old = *original_max as f64;
                let (low_wl, high_wl) = (old / low, old / high);
                base.into_iter()
                    .map(|f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wl {
                            f
                        } else if wavelen > low_wl {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low) / (high - low);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
            RopeKind::Yarn { factor, original_max, beta_fast, beta_slow, truncate, .. } => {
                let correction = |rot: f64| {
                    (dim as f64 * (*original_max as f64 / (rot * 2.0 * std::f64::consts::PI)).ln())
                        / (2.0 * self.theta.ln())
                };
                let (mut low, mut high) = (correction(*beta_fast), correction(*beta_slow));
                if *truncate {
                    (low, high) = (low.floor(), high.ceil());
                }
                let (low, mut high) = (low.max(0.0), high.min(dim as f64 - 1.0));
                if low == high {
                    high += 0.001;
                }
                base.into_iter()
                    .enumerate()
                    .map(|(i, f)| {
                        let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                        let extrapolation = 1.0 - ramp;
                        (f / factor) * (1.0 - extrapolation) + f * extrapolation
                    })
                    .collect()
            }
        }
    }

    /// The factor cos and sin are multiplied by (YaRN's and LongRoPE's attention scaling).
    pub fn attention_factor(&self) -> f64 {
        let mscale = |scale: f64, m: f64| if scale <= 1.0 { 1.0 } else { 0.1 * m * scale.ln() + 1.0 };
        match &self.kind {
            RopeKind::Yarn { attention_factor: Some(a), .. } | RopeKind::LongRope { attention_factor: Some(a), .. } => {
                *a
            }
            RopeKind::Yarn { factor, mscale: Some(m), mscale_all_dim: Some(all), .. } if *m != 0.0 && *all != 0.0 => {
                mscale(*factor, *m) / mscale(*factor, *all)
            }
            RopeKind::Yarn { factor, .. } => mscale(*factor, 1.0),
            RopeKind::LongRope { factor, original_max, .. } if *factor > 1.0 => {
                (1.0 + factor.ln() / (*original_max as f64).ln()).sqrt()
            }
            _ => 1.0,
        }
    }

    /// Positions beyond which transformers would switch frequencies (LongRoPE's long factors).
    pub fn context_limit(&self) -> Option<usize> {
        match &self.kind {
            RopeKind::LongRope { original_max, .. } => Some(*original_max),
            _ => None,
        }
    }

    /// The v4 `rope_scaling` dict for an exported config.json (`None` for default).
    pub fn hf_scaling(&self) -> Option<Value> {
        let mut v = match &self.kind {
            RopeKind::Default => return None,
            RopeKind::Linear { factor } | RopeKind::Dynamic { factor } => serde_json::json!({"factor": factor}),
            RopeKind::Llama3 { factor, low_freq_factor, high_freq_factor, original_max } => serde_json::json!({
                "factor": factor, "low_freq_factor": low_freq_factor, "high_freq_factor": high_freq_factor,
                "original_max_position_embeddings": original_max,
            }),
            RopeKind::Yarn {
                factor,
                original_max,
                attention_factor,
                beta_fast,
                beta_slow,
                mscale,
                mscale_all_dim,
                truncate,
            } => {
                let mut v = serde_json::json!({"factor": factor, "original_max_position_embeddings": original_max,
                    "beta_fast": beta_fast, "beta_slow": beta_slow, "truncate": truncate});
                for (k, x) in
                    [("attention_factor", attention_factor), ("mscale", mscale), ("mscale_all_dim", mscale_all_dim)]
                {
                    if let Some(x) = x {
                        v[k] = (*x).into();
                    }
                }
                v
            }
            RopeKind::LongRope { short_factor, long_factor, factor, attention_factor, original_max } => {
                let mut v = serde_json::json!({"short_factor": short_factor, "long_factor": long_factor,
                    "factor": factor, "original_max_position_embeddings": original_max});
                if let Some(a) = attention_factor {
                    v["attention_factor"] = (*a).into();
                }
                v
            }
        };
        v["rope_type"] = self.type_name().into();
        Some(v)
    }

    /// LongRoPE's original context, which Phi-3's config.json also carries at the top level.
    pub fn original_max(&self) -> Option<usize> {
        match &self.kind {
            RopeKind::LongRope { original_max, .. } => Some(*original_max),
            _ => None,
        }
    }

    /// transformers 5's `rope_parameters` dict: type, theta, partial rotary factor, scaling.
    pub fn hf_parameters(&self) -> Value {
        let mut v = self.hf_scaling().unwrap_or_else(|| serde_json::json!({"rope_type": "default"}));
        v["rope_theta"] = self.theta.into();
        if self.partial_rotary_factor != 1.0 {
            v["partial_rotary_factor"] = self.partial_rotary_factor.into();
        }
        v
    }

    /// One line for `verdict model info`.
    pub fn describe(&self) -> String {
        let mut s = format!("{} (theta {})", self.type_name(), self.theta);
        match &self.kind {
            RopeKind::Linear { factor } | RopeKind::Dynamic { factor } => s += &format!(", factor {factor}"),
            RopeKind::Llama3 { factor, low_freq_factor, high_freq_factor, original_max } => {
                s += &format!(
                    ", factor {factor}, low/high freq factor {low_freq_factor}/{high_freq_factor}, original context {original_max}"
                )
            }
            RopeKind::Yarn { factor, original_max, .. } => {
                s += &format!(
                    ", factor {factor}, original context {original_max}, attention factor {:.4}",
                    self.attention_factor()
                )
            }
            RopeKind::LongRope { original_max, .. } => s += &format!(", short factors up to {original_max} positions"),
            RopeKind::Default => {}
        }
        if self.partial_rotary_factor != 1.0 {
            s += &format!(", partial rotary factor {}", self.partial_rotary_factor);
        }
        s
    }
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

    /// The window layer `i` attends over (`None`: all earlier positions).
    pub fn layer_window(&self, i: usize) -> Option<usize> {
        self.sliding_window.filter(|_| self.sliding_layers.get(i).copied().unwrap_or(false))
    }

    /// The rotary settings of layer `i` (Gemma 3's sliding layers have their own).
    pub fn layer_rope(&self, i: usize) -> &Rope {
        match &self.local_rope {
            Some(local) if self.layer_window(i).is_some() => local,
            _ => &self.rope,
        }
    }

    /// The factor attention scores are multiplied by.
    pub fn attention_scale(&self) -> f64 {
        1.0 / self.query_pre_attn_scalar.unwrap_or(self.head_dim as f64).sqrt()
    }

    /// Whether q/k/v projections carry a bias.
    pub fn qkv_bias(&self) -> bool {
        self.family == Family::Qwen2 || self.attention_bias
    }

    /// Reads `config.json` text (from `path`, for messages).
    pub fn from_hf_json(path: &Path, text: &str) -> Result<ArchConfig, ArchError> {
        let err = |key: &str, reason: String| ArchError::Key { path: path.to_path_buf(), key: key.into(), reason };
        let v: Value =
            serde_json::from_str(text).map_err(|e| err("config.json", format!("is not valid JSON ({e})")))?;
        let obj = v.as_object().ok_or_else(|| err("config.json", "is not a JSON object".into()))?;
        // The class transformers instantiates, else (no `architectures`) the model type.
        let hint = obj
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(Value::as_str)
            .or_else(|| obj.get("model_type").and_then(Value::as_str))
            .unwrap_or("");
        let family = Family::from_hf(hint)
            .ok_or_else(|| ArchError::Unsupported { path: path.to_path_buf(), arch: hint.to_string() })?;
        let r = Reader { obj, err: &err };
        let hidden = r.usize_req("hidden_size")?;
        let heads = r.usize_req("num_attention_heads")?;
        let max_pos = r.usize_opt("max_position_embeddings")?.unwrap_or(match family {
            Family::Llama => 2048,
            Family::Mistral => 131_072,
            Family::Qwen2 | Family::Qwen3 => 32_768,
            Family::Gemma2 => 8192,
            Family::Gemma3 => 131_072,
            Family::Phi3 => 4096,
        });
        let head_dim = r.usize_opt("head_dim")?.unwrap_or(hidden / heads);
        let (rope, local_rope) = hf_rope(&r, family, max_pos)?;
        check_runs(&r, family, &rope, head_dim)?;
        let layers = r.usize_req("num_hidden_layers")?;
        let (sliding_window, sliding_layers) = sliding_window(&r, family, layers)?;
        let gemma2 = family == Family::Gemma2;
        Ok(ArchConfig {
            family,
            hidden_size: hidden,
            intermediate_size: r.usize_req("intermediate_size")?,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: r.usize_opt("num_key_value_heads")?.unwrap_or(heads),
            head_dim,
            vocab_size: r.usize_req("vocab_size")?,
            rms_norm_eps: r.f64_opt("rms_norm_eps")?.unwrap_or(if family == Family::Phi3 { 1e-5 } else { 1e-6 }),
            max_position_embeddings: max_pos,
            rope,
            tie_word_embeddings: r
                .bool_opt("tie_word_embeddings")?
                .unwrap_or(matches!(family, Family::Gemma2 | Family::Gemma3)),
            attention_bias: r.bool_opt("attention_bias")?.unwrap_or(false),
            sliding_window,
            sliding_layers,
            bos_token_id: r.usize_opt("bos_token_id").ok().flatten().map(|v| v as u32),
            eos_token_id: obj.get("eos_token_id").filter(|v| !v.is_null()).cloned(),
            pad_token_id: r.usize_opt("pad_token_id").ok().flatten().map(|v| v as u32),
            activation: activation(&r, family)?,
            attn_softcap: defaulted(&r, "attn_logit_softcapping", Some(50.0).filter(|_| gemma2))?,
            final_softcap: defaulted(&r, "final_logit_softcapping", Some(30.0).filter(|_| gemma2))?,
            query_pre_attn_scalar: defaulted(&r, "query_pre_attn_scalar", Some(256.0).filter(|_| family.gemma()))?,
            local_rope,
        })
    }

    /// Reads GGUF metadata; `has_tensor` answers whether the file holds a tensor, `rope_freqs`
    /// is the content of `rope_freqs.weight` when it has one (Llama 3.1+'s frequency factors).
    pub fn from_gguf(
        path: &Path,
        meta: &Meta,
        has_tensor: &dyn Fn(&str) -> bool,
        vocab_size: usize,
        rope_freqs: Option<&[f32]>,
    ) -> Result<ArchConfig, ArchError> {
        let err = |key: &str, reason: String| ArchError::Key { path: path.to_path_buf(), key: key.into(), reason };
        let arch = meta.string("general.architecture").unwrap_or("");
        let family = Family::from_gguf(arch)
            .ok_or_else(|| ArchError::Unsupported { path: path.to_path_buf(), arch: arch.to_string() })?;
        let key = |suffix: &str| format!("{arch}.{suffix}");
        let need = |suffix: &str| {
            meta.int(&key(suffix)).map(|v| v as usize).ok_or_else(|| err(&key(suffix), "is missing".into()))
        };
        let hidden = need("embedding_length")?;
        let heads = need("attention.head_count")?;
        let head_dim = need("attention.key_length").unwrap_or(hidden / heads);
        let max_pos = need("context_length").unwrap_or(4096);
        let theta = meta.float(&key("rope.freq_base")).unwrap_or(family.default_theta());
        let rotary = need("rope.dimension_count").unwrap_or(head_dim);
        let mut rope = Rope { theta, partial_rotary_factor: rotary as f64 / head_dim as f64, kind: RopeKind::Default };
        let scaling = meta.string(&key("rope.scaling.type")).unwrap_or("none");
        let factor = meta.float(&key("rope.scaling.factor"));
        let original = meta.int(&key("rope.scaling.original_context_length")).map(|v| v as usize);
        rope.kind = match scaling {
            "none" => RopeKind::Default,
            "linear" => RopeKind::Linear { factor: factor.unwrap_or(1.0) },
            "yarn" => {
                let factor = factor.ok_or_else(|| err(&key("rope.scaling.factor"), "is missing for yarn".into()))?;
                RopeKind::Yarn {
                    factor,
                    original_max: original.unwrap_or(max_pos),
                    attention_factor: None,
                    beta_fast: meta.float(&key("rope.scaling.yarn_beta_fast")).unwrap_or(32.0),
                    beta_slow: meta.float(&key("rope.scaling.yarn_beta_slow")).unwrap_or(1.0),
                    mscale: None,
                    mscale_all_dim: None,
                    truncate: true,
                }
            }
            other => {
                return Err(err(
                    &key("rope.scaling.type"),
                    format!("`{other}` is not implemented by verdict (it runs none, linear, yarn)"),
                ));
            }
        };
        for k in [
            "rope.scaling.attn_factor",
            "rope.scaling.yarn_log_multiplier",
            "rope.scaling.yarn_ext_factor",
            "rope.scaling.yarn_attn_factor",
        ] {
            if meta.0.contains_key(&key(k)) {
                return Err(err(&key(k), "changes the rotary scaling in a way verdict does not implement".into()));
            }
        }
        if let Some(factors) = rope_freqs {
            if rope.kind != RopeKind::Default {
                return Err(err(
                    "rope_freqs.weight",
                    format!("is present beside rope scaling `{scaling}`; verdict reads it as Llama 3's scaling only"),
                ));
            }
            rope.kind =
                llama3_from_factors(&rope, head_dim, factors).map_err(|reason| err("rope_freqs.weight", reason))?;
        }
        if has_tensor("rope_factors_short.weight") || has_tensor("rope_factors_long.weight") {
            return Err(err(
                "rope_factors_short.weight",
                "holds LongRoPE factors, which verdict reads from config.json only: load the Hugging Face folder"
                    .into(),
            ));
        }
        let layers = need("block_count")?;
        let window = need("attention.sliding_window").ok();
        let sliding_layers: Vec<bool> = (0..layers)
            .map(|i| match family {
                Family::Gemma2 => i % 2 == 0,
                // llama.cpp's Gemma 3 pattern: every sixth layer is global.
                Family::Gemma3 => (i + 1) % 6 != 0,
                _ => window.is_some(),
            })
            .collect();
        let gemma_scalar = match (family, layers) {
            // llama.cpp scales Gemma 2 27B (46 layers) and Gemma 3 27B (62) by hidden / heads.
            (Family::Gemma2, 46) | (Family::Gemma3, 62) => Some((hidden / heads) as f64),
            (Family::Gemma2 | Family::Gemma3, _) => Some(head_dim as f64),
            _ => None,
        };
        let token = |k: &str| meta.int(k).map(|v| v as u32);
        let softcap = |k: &str| meta.float(&key(k)).filter(|c| *c > 0.0);
        Ok(ArchConfig {
            family,
            hidden_size: hidden,
            intermediate_size: need("feed_forward_length")?,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: need("attention.head_count_kv").unwrap_or(heads),
            head_dim,
            vocab_size,
            rms_norm_eps: meta.float(&key("attention.layer_norm_rms_epsilon")).unwrap_or(1e-5),
            max_position_embeddings: max_pos,
            rope,
            tie_word_embeddings: !has_tensor("output.weight"),
            attention_bias: family != Family::Qwen2 && has_tensor("blk.0.attn_q.bias"),
            sliding_window: window.filter(|_| sliding_layers.iter().any(|s| *s)),
            sliding_layers: if window.is_some() { sliding_layers } else { vec![false; layers] },
            bos_token_id: token("tokenizer.ggml.bos_token_id"),
            eos_token_id: token("tokenizer.ggml.eos_token_id").map(Value::from),
            pad_token_id: token("tokenizer.ggml.padding_token_id"),
            activation: if family.gemma() { Activation::GeluTanh } else { Activation::Silu },
            attn_softcap: softcap("attn_logit_softcapping"),
            final_softcap: softcap("final_logit_softcapping"),
            query_pre_attn_scalar: gemma_scalar,
            local_rope: (family == Family::Gemma3).then(|| Rope::plain(10_000.0)),
        })
    }
}

/// Typed reads of config.json keys; a present key of the wrong type is an error naming it.
struct Reader<'a> {
    obj: &'a Map<String, Value>,
    err: &'a dyn Fn(&str, String) -> ArchError,
}

impl Reader<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }
    fn usize_opt(&self, key: &str) -> Result<Option<usize>, ArchError> {
        self.get(key)
            .map(|v| {
                v.as_u64().map(|x| x as usize).ok_or_else(|| (self.err)(key, format!("is {v}, not a whole number")))
            })
            .transpose()
    }
    fn usize_req(&self, key: &str) -> Result<usize, ArchError> {
        self.usize_opt(key)?.ok_or_else(|| (self.err)(key, "is missing".into()))
    }
    fn f64_opt(&self, key: &str) -> Result<Option<f64>, ArchError> {
        self.get(key).map(|v| v.as_f64().ok_or_else(|| (self.err)(key, format!("is {v}, not a number")))).transpose()
    }
    fn bool_opt(&self, key: &str) -> Result<Option<bool>, ArchError> {
        self.get(key)
            .map(|v| v.as_bool().ok_or_else(|| (self.err)(key, format!("is {v}, not true or false"))))
            .transpose()
    }
}

/// The rope settings of a config.json, by transformers' precedence rules; for Gemma 3 also its
/// sliding layers' (v5 nests one dict per layer type; v4 has `rope_local_base_freq`).
fn hf_rope(r: &Reader, family: Family, max_pos: usize) -> Result<(Rope, Option<Rope>), ArchError> {
    let (dict_key, dict) = match (r.get("rope_scaling"), r.get("rope_parameters")) {
        (Some(d), _) => ("rope_scaling", Some(d)),
        (None, Some(d)) => ("rope_parameters", Some(d)),
        _ => ("rope_parameters", None),
    };
    let empty = Map::new();
    let p = match dict {
        Some(Value::Object(m)) => m,
        Some(other) => return Err((r.err)(dict_key, format!("is {other}, not an object"))),
        None => &empty,
    };
    if family != Family::Gemma3 {
        return Ok((rope_dict(r, dict_key, p, family.default_theta(), max_pos)?, None));
    }
    let nested = |kind: &str| match p.get(kind) {
        Some(Value::Object(m)) => Ok(Some(m)),
        None | Some(Value::Null) => Ok(None),
        Some(other) => Err((r.err)(&format!("{dict_key}.{kind}"), format!("is {other}, not an object"))),
    };
    match (nested("full_attention")?, nested("sliding_attention")?) {
        (None, None) => {
            let global = rope_dict(r, dict_key, p, family.default_theta(), max_pos)?;
            let local = Rope::plain(r.f64_opt("rope_local_base_freq")?.unwrap_or(10_000.0));
            Ok((global, Some(local)))
        }
        (full, sliding) => {
            let global =
                rope_dict(r, &format!("{dict_key}.full_attention"), full.unwrap_or(&empty), 1_000_000.0, max_pos)?;
            let local = rope_dict(
                r,
                &format!("{dict_key}.sliding_attention"),
                sliding.unwrap_or(&empty),
                r.f64_opt("rope_local_base_freq")?.unwrap_or(10_000.0),
                max_pos,
            )?;
            Ok((global, Some(local)))
        }
    }
}

/// One rope dict `p` (found under `dict_key`); `default_theta` when neither it nor the top
/// level names a theta.
fn rope_dict(
    r: &Reader,
    dict_key: &str,
    p: &Map<String, Value>,
    default_theta: f64,
    max_pos: usize,
) -> Result<Rope, ArchError> {
    let k = |name: &str| format!("{dict_key}.{name}");
    let sub = Reader { obj: p, err: r.err };
    let num = |name: &str| -> Result<Option<f64>, ArchError> {
        p.get(name)
            .filter(|v| !v.is_null())
            .map(|v| v.as_f64().ok_or_else(|| (r.err)(&k(name), format!("is {v}, not a number"))))
            .transpose()
    };
    let req = |name: &str| num(name)?.ok_or_else(|| (r.err)(&k(name), "is missing".into()));
    let theta = match num("rope_theta")? {
        Some(t) => t,
        None => r.f64_opt("rope_theta")?.unwrap_or(default_theta),
    };
    let partial = match num("partial_rotary_factor")? {
        Some(f) => f,
        None => r.f64_opt("partial_rotary_factor")?.unwrap_or(1.0),
    };
    let kind_name = p.get("rope_type").or_else(|| p.get("type")).and_then(Value::as_str).unwrap_or("default");
    let original = || -> Result<usize, ArchError> {
        Ok(match r.usize_opt("original_max_position_embeddings")? {
            Some(v) => v,
            None => sub
                .usize_opt("original_max_position_embeddings")
                .map_err(|_| (r.err)(&k("original_max_position_embeddings"), "is not a whole number".into()))?
                .unwrap_or(max_pos),
        })
    };
    let factors = |name: &str| -> Result<Vec<f64>, ArchError> {
        let list = p
            .get(name)
            .and_then(Value::as_array)
            .ok_or_else(|| (r.err)(&k(name), "is missing or not a list".into()))?;
        list.iter().map(|x| x.as_f64().ok_or_else(|| (r.err)(&k(name), format!("holds {x}, not a number")))).collect()
    };
    let (kind, keys): (RopeKind, &[&str]) = match kind_name {
        "default" => (RopeKind::Default, &[]),
        "linear" => (RopeKind::Linear { factor: req("factor")? }, &["factor"]),
        "dynamic" => (RopeKind::Dynamic { factor: req("factor")? }, &["factor", "original_max_position_embeddings"]),
        "llama3" => (
            RopeKind::Llama3 {
                factor: req("factor")?,
                low_freq_factor: req("low_freq_factor")?,
                high_freq_factor: req("high_freq_factor")?,
                original_max: original()?,
            },
            &["factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"],
        ),
        "yarn" => {
            let original_max = original()?;
            (
                RopeKind::Yarn {
                    factor: num("factor")?.unwrap_or(max_pos as f64 / original_max as f64),
                    original_max,
                    attention_factor: num("attention_factor")?,
                    beta_fast: num("beta_fast")?.filter(|b| *b != 0.0).unwrap_or(32.0),
                    beta_slow: num("beta_slow")?.filter(|b| *b != 0.0).unwrap_or(1.0),
                    mscale: num("mscale")?,
                    mscale_all_dim: num("mscale_all_dim")?,
                    truncate: p.get("truncate").and_then(Value::as_bool).unwrap_or(true),
                },
                &[
                    "factor",
                    "original_max_position_embeddings",
                    "attention_factor",
                    "beta_fast",
                    "beta_slow",
                    "mscale",
                    "mscale_all_dim",
                    "truncate",
                ],
            )
        }
        "longrope" => {
            let original_max = original()?;
            (
                RopeKind::LongRope {
                    short_factor: factors("short_factor")?,
                    long_factor: factors("long_factor")?,
                    factor: num("factor")?.unwrap_or(max_pos as f64 / original_max as f64),
                    attention_factor: num("attention_factor")?,
                    original_max,
                },
                &["short_factor", "long_factor", "factor", "attention_factor", "original_max_position_embeddings"],
            )
        }
        other => {
            let key = if p.contains_key("rope_type") { k("rope_type") } else { k("type") };
            return Err((r.err)(
                &key,
                format!(
                    "is `{other}`, a rotary scaling verdict does not implement (it implements default, linear, dynamic, yarn, llama3, longrope)"
                ),
            ));
        }
    };
    const ALWAYS: [&str; 4] = ["rope_type", "type", "rope_theta", "partial_rotary_factor"];
    if let Some(extra) =
        p.keys().find(|key| !ALWAYS.contains(&key.as_str()) && !keys.contains(&key.as_str()) && !p[*key].is_null())
    {
        return Err((r.err)(
            &k(extra),
            format!("is not a parameter of `{kind_name}` rotary scaling that verdict implements"),
        ));
    }
    Ok(Rope { theta, partial_rotary_factor: partial, kind })
}

/// Keys that change the math of a family and that verdict does not implement.
fn check_runs(r: &Reader, family: Family, rope: &Rope, head_dim: usize) -> Result<(), ArchError> {
    if r.bool_opt("mlp_bias")? == Some(true) {
        return Err((r.err)("mlp_bias", "is true: MLP biases are not implemented".into()));
    }
    if rope.partial_rotary_factor <= 0.0
        || rope.partial_rotary_factor > 1.0
        || !rope.rotary_dim(head_dim).is_multiple_of(2)
        || rope.rotary_dim(head_dim) == 0
    {
        return Err((r.err)(
            "partial_rotary_factor",
            format!(
                "is {}: it must leave an even number of rotated dimensions out of the head size {head_dim}",
                rope.partial_rotary_factor
            ),
        ));
    }
    if let RopeKind::LongRope { short_factor, .. } = &rope.kind
        && short_factor.len() != rope.rotary_dim(head_dim) / 2
    {
        return Err((r.err)(
            "rope_scaling.short_factor",
            format!("has {} values, not {} (half the rotary size)", short_factor.len(), rope.rotary_dim(head_dim) / 2),
        ));
    }
    if !family.gemma() {
        for key in ["attn_logit_softcapping", "final_logit_softcapping", "query_pre_attn_scalar"] {
            if r.get(key).is_some() {
                return Err((r.err)(
                    key,
                    format!(
                        "is set: soft-capping and query scaling are Gemma's, not implemented for {}",
                        family.name()
                    ),
                ));
            }
        }
    }
    if r.bool_opt("use_bidirectional_attention")? == Some(true) {
        return Err((r.err)("use_bidirectional_attention", "is true: verdict runs causal attention only".into()));
    }
    Ok(())
}

/// The MLP's activation: Gemma's `hidden_activation` (else `hidden_act`, else GELU-tanh), the
/// others' `hidden_act` (else silu).
fn activation(r: &Reader, family: Family) -> Result<Activation, ArchError> {
    let keys: &[&str] = if family.gemma() { &["hidden_activation", "hidden_act"] } else { &["hidden_act"] };
    let Some(key) = keys.iter().find(|k| r.get(k).is_some()) else {
        return Ok(if family.gemma() { Activation::GeluTanh } else { Activation::Silu });
    };
    match r.get(key).and_then(Value::as_str) {
        Some("silu" | "swish") => Ok(Activation::Silu),
        Some("gelu_pytorch_tanh" | "gelu_new") => Ok(Activation::GeluTanh),
        _ => Err((r.err)(
            key,
            format!("is {}; verdict implements silu and gelu_pytorch_tanh", r.get(key).cloned().unwrap_or_default()),
        )),
    }
}

/// A float key with transformers' class default when absent and `None` when null.
fn defaulted(r: &Reader, key: &str, default: Option<f64>) -> Result<Option<f64>, ArchError> {
    match r.obj.get(key) {
        None => Ok(default),
        Some(_) => r.f64_opt(key),
    }
}

/// The sliding window and the layers that attend over it, by the family's rules (Mistral:
/// `sliding_window`, 4096 when the key is absent, every layer; Qwen2/3: only with
/// `use_sliding_window`, from `max_window_layers` on; Gemma 2: every other layer from the first;
/// Gemma 3: all but every `sliding_window_pattern`-th; Phi-3: every layer). `layer_types`, where
/// config.json has it, says which layers.
fn sliding_window(r: &Reader, family: Family, layers: usize) -> Result<(Option<usize>, Vec<bool>), ArchError> {
    let window = match family {
        Family::Mistral => match r.obj.get("sliding_window") {
            None => Some(4096),
            Some(_) => r.usize_opt("sliding_window")?,
        },
        Family::Qwen2 | Family::Qwen3 => match r.bool_opt("use_sliding_window")?.unwrap_or(false) {
            true => Some(r.usize_opt("sliding_window")?.unwrap_or(4096)),
            false => None,
        },
        Family::Gemma2 | Family::Gemma3 => match r.obj.get("sliding_window") {
            None => Some(4096),
            Some(_) => r.usize_opt("sliding_window")?,
        },
        Family::Phi3 => r.usize_opt("sliding_window")?,
        Family::Llama => None,
    };
    let default: Vec<bool> = (0..layers)
        .map(|i| match family {
            Family::Mistral | Family::Phi3 => true,
            Family::Qwen2 | Family::Qwen3 => i >= r.usize_opt("max_window_layers").ok().flatten().unwrap_or(28),
            Family::Gemma2 => i % 2 == 0,
            Family::Gemma3 => {
                let pattern = r.usize_opt("sliding_window_pattern").ok().flatten().unwrap_or(6).max(1);
                (i + 1) % pattern != 0
            }
            Family::Llama => false,
        })
        .collect();
    let sliding = match r.get("layer_types").and_then(Value::as_array) {
        Some(types) => {
            if let Some(bad) =
                types.iter().find(|t| !matches!(t.as_str(), Some("full_attention" | "sliding_attention")))
            {
                return Err((r.err)(
                    "layer_types",
                    format!("holds {bad}, an attention variant verdict does not implement"),
                ));
            }
            if types.len() != layers {
                return Err((r.err)("layer_types", format!("has {} entries for {layers} layers", types.len())));
            }
            types.iter().map(|t| t.as_str() == Some("sliding_attention")).collect()
        }
        None => default,
    };
    // Qwen2/3 name sliding layers in `layer_types` even when `use_sliding_window` is false.
    let window = match (family, sliding.iter().any(|s| *s)) {
        (_, false) => None,
        (Family::Qwen2 | Family::Qwen3, true) => window.or(Some(4096)),
        (_, true) => window,
    };
    let sliding = if window.is_some() { sliding } else { vec![false; layers] };
    Ok((window, sliding))
}

/// Llama 3's scaling parameters from llama.cpp's `rope_freqs` (one divisor per frequency,
/// 1 for short wavelengths, `factor` for long ones, smoothly between). Only the ratios of
/// (original context, low, high) matter to the math, so `low_freq_factor` is taken as 1, which
/// gives Meta's (8192, 1, 4) back for Llama 3.1; the result must reproduce every factor.
fn llama3_from_factors(rope: &Rope, head_dim: usize, factors: &[f32]) -> Result<RopeKind, String> {
    let base = Rope::plain(rope.theta).inv_freq(head_dim);
    if factors.len() != base.len() {
        return Err(format!("has {} values, not {} (half the head size)", factors.len(), base.len()));
    }
    let factor = factors.iter().cloned().fold(1.0f32, f32::max) as f64;
    if factor <= 1.0 {
        return Err("holds no factor above 1; it is not Llama 3 rope scaling".into());
    }
    // In the band, s = (1/f - 1/factor) / (1 - 1/factor) = a / wavelength - b.
    let band: Vec<(f64, f64)> = base
        .iter()
        .zip(factors)
        .filter(|(_, f)| (**f as f64) > 1.0 + 1e-6 && (**f as f64) < factor * (1.0 - 1e-6))
        .map(|(b, f)| (b / (2.0 * std::f64::consts::PI), (1.0 / *f as f64 - 1.0 / factor) / (1.0 - 1.0 / factor)))
        .collect();
    if band.len() < 2 {
        return llama3_from_few_factors(rope, head_dim, &base, factors, factor);
    }
    let n = band.len() as f64;
    let (mx, my) = (band.iter().map(|p| p.0).sum::<f64>() / n, band.iter().map(|p| p.1).sum::<f64>() / n);
    let a = band.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>()
        / band.iter().map(|p| (p.0 - mx).powi(2)).sum::<f64>();
    let b = a * mx - my;
    if a <= 0.0 || b <= 0.0 {
        return Err("does not follow Llama 3's smooth scaling".into());
    }
    let kind = RopeKind::Llama3 {
        factor,
        low_freq_factor: 1.0,
        high_freq_factor: round6(1.0 + 1.0 / b),
        original_max: (a / b).round() as usize,
    };
    let check = Rope { kind: kind.clone(), ..rope.clone() }.inv_freq(head_dim);
    let worst =
        base.iter().zip(factors).zip(&check).map(|((b, f), c)| ((b / *f as f64) / c - 1.0).abs()).fold(0.0, f64::max);
    if worst > 1e-4 {
        return Err(format!("does not follow Llama 3's scaling (the best fit is off by {worst:.1e} relative)"));
    }
    Ok(kind)
}

/// Llama 3 parameters for factors with fewer than two smoothly scaled frequencies (small heads):
/// they do not determine the parameters, so this takes `low_freq_factor` 1 and the first
/// `original_max` (powers of two first) that reproduces every factor. Any such choice gives the
/// same frequencies, which is all the math uses.
fn llama3_from_few_factors(
    rope: &Rope,
    head_dim: usize,
    base: &[f64],
    factors: &[f32],
    factor: f64,
) -> Result<RopeKind, String> {
    let wavelength = |f: f64| 2.0 * std::f64::consts::PI / f;
    let is_band = |f: f32| (f as f64) > 1.0 + 1e-6 && (f as f64) < factor * (1.0 - 1e-6);
    let band = base.iter().zip(factors).find(|(_, f)| is_band(**f)).map(|(b, f)| (wavelength(*b), *f as f64));
    let unscaled = base
        .iter()
        .zip(factors)
        .filter(|(_, f)| (**f as f64) <= 1.0 + 1e-6)
        .map(|(b, _)| wavelength(*b))
        .fold(0.0, f64::max);
    let scaled = base
        .iter()
        .zip(factors)
        .filter(|(_, f)| (**f as f64) >= factor * (1.0 - 1e-6))
        .map(|(b, _)| wavelength(*b))
        .fold(f64::INFINITY, f64::min);
    let powers = (0..40).map(|p| 1usize << p);
    let candidates = powers.chain(1..=scaled.min(1e7) as usize);
    for old in candidates.filter(|&o| (o as f64) < scaled) {
        let high = match band {
            // s = (old/λ - 1) / (high - 1), and s = (1/f - 1/factor) / (1 - 1/factor).
            Some((wl, f)) => {
                let s = (1.0 / f - 1.0 / factor) / (1.0 - 1.0 / factor);
                if old as f64 <= wl {
                    continue;
                }
                1.0 + (old as f64 / wl - 1.0) / s
            }
            None => 4.0,
        };
        if old as f64 / high <= unscaled {
            continue;
        }
        let kind = RopeKind::Llama3 { factor, low_freq_factor: 1.0, high_freq_factor: round6(high), original_max: old };
        let check = Rope { kind: kind.clone(), ..rope.clone() }.inv_freq(head_dim);
        let worst = base
            .iter()
            .zip(factors)
            .zip(&check)
            .map(|((b, f), c)| ((b / *f as f64) / c - 1.0).abs())
            .fold(0.0, f64::max);
        if worst <= 1e-6 {
            return Ok(kind);
        }
    }
    Err("does not follow Llama 3's scaling (no original context length reproduces its factors)".into())
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}
