//! The model families verdict knows (`Family`: names in config.json and GGUF, the features
//! each has) and the MLP activations they use.

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

    /// Every family verdict runs.
    pub const ALL: [Family; 7] =
        [Family::Llama, Family::Mistral, Family::Qwen2, Family::Qwen3, Family::Gemma2, Family::Gemma3, Family::Phi3];

    /// From config.json's `architectures[0]`, else its `model_type`.
    pub fn from_hf(hint: &str) -> Option<Family> {
        match hint {
            "gemma3_text" | "Gemma3ForConditionalGeneration" => Some(Family::Gemma3),
            _ => Self::ALL.into_iter().find(|f| f.name() == hint || f.hf_class() == hint),
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
    pub(super) fn default_theta(self) -> f64 {
        match self {
            Family::Gemma3 => 1_000_000.0,
            _ => 10_000.0,
        }
    }
}
