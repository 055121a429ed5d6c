//! What a loaded model is: the facts `verdict model info` prints and the store records.

use std::path::PathBuf;

/// On-disk format of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    Gguf,
    Hf,
}

impl std::fmt::Display for ModelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelFormat::Gguf => "gguf",
            ModelFormat::Hf => "hf",
        })
    }
}

/// Special tokens: their text (as the chat template sees them) and the ids generation stops at.
#[derive(Debug, Clone, Default)]
pub struct SpecialTokens {
    pub bos: Option<String>,
    pub eos: Option<String>,
    /// End-of-turn token when it differs from EOS (`<|im_end|>`, `<|eot_id|>`).
    pub eot: Option<String>,
    pub pad: Option<String>,
    pub unk: Option<String>,
    /// Every id that ends a generation (EOS, end-of-turn, generation_config's eos ids).
    pub stop_ids: Vec<u32>,
}

/// Facts about a loaded model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// The file (GGUF) or directory (HF) loaded.
    pub path: PathBuf,
    pub format: ModelFormat,
    /// `llama` or `qwen2`.
    pub architecture: String,
    /// `general.name` or config.json's `_name_or_path`, when present.
    pub name: Option<String>,
    pub parameters: u64,
    /// Weight type of most matrix elements as stored (`Q4_1`, `F32`, `BF16`…).
    pub quantization: String,
    /// Weight type as run, after any load-time requantization (`Q8_0` for a Q5_0/Q5_1 file on
    /// CPU, and for Q4_1 where the CPU lacks AVX2).
    pub run_quantization: String,
    pub context_length: usize,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub layers: usize,
    pub special_tokens: SpecialTokens,
    /// The Jinja chat template text.
    pub chat_template: String,
    /// Where the template came from (`GGUF tokenizer.chat_template`, `tokenizer_config.json`).
    pub chat_template_source: String,
    /// sha256 of the weights file (GGUF file; HF model.safetensors, or of the shards' hashes).
    pub sha256: String,
}

/// Names the most common weight type among matrices, weighted by element count.
pub(crate) fn dominant_type(counts: &[(String, u64)]) -> String {
    let mut totals: Vec<(String, u64)> = Vec::new();
    for (ty, n) in counts {
        match totals.iter_mut().find(|(t, _)| t == ty) {
            Some((_, total)) => *total += n,
            None => totals.push((ty.clone(), *n)),
        }
    }
    totals.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    totals.first().map(|(t, _)| t.clone()).unwrap_or_else(|| "unknown".into())
}
