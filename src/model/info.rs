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

impl ModelInfo {
    /// The name a person knows the model by, for the runs list and the status line.
    pub fn display_name(&self) -> String {
        display_name(&self.path, self.format, self.name.as_deref())
    }
}

/// A GGUF file's own name ("SmolLM2-135M-Instruct.Q4_1"): it is what the user downloaded and
/// chose, while `general.name` is often a converter's leftover ("Smollm2 135M 8k Lc100K Mix1
/// Ep2"); `general.name` only for a file named by its hash (Ollama's `sha256-…` blobs). An HF
/// folder: config.json's hub name ("HuggingFaceTB/SmolLM2-135M-Instruct"), else the folder's.
fn display_name(path: &std::path::Path, format: ModelFormat, name: Option<&str>) -> String {
    let own = match format {
        ModelFormat::Gguf => path.file_stem(),
        ModelFormat::Hf => path.file_name(),
    }
    .map(|n| n.to_string_lossy().to_string())
    .filter(|n| !n.is_empty());
    let hashed = |n: &str| n.starts_with("sha256") || (n.len() >= 32 && n.chars().all(|c| c.is_ascii_hexdigit()));
    let name = name.map(str::trim).filter(|n| !n.is_empty());
    match (format, own, name) {
        (ModelFormat::Gguf, Some(own), _) if !hashed(&own) => own,
        (ModelFormat::Hf, _, Some(name)) if !name.starts_with(['/', '.', '~']) => name.to_string(),
        (_, Some(own), Some(name)) if hashed(&own) => name.to_string(),
        (_, Some(own), _) => own,
        (_, None, Some(name)) => name.to_string(),
        (_, None, None) => "model".into(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_model_is_called_by_its_file_or_hub_name() {
        let gguf = |path: &str, name| display_name(Path::new(path), ModelFormat::Gguf, name);
        assert_eq!(
            gguf("/c/SmolLM2-135M-Instruct.Q4_1.gguf", Some("Smollm2 135M 8k Lc100K Mix1 Ep2")),
            "SmolLM2-135M-Instruct.Q4_1"
        );
        let blob = "/o/blobs/sha256-6a0746a1ec1aef3e7ec53868f220ff6e389f6f8ef87a01d77c96807de94ca2aa";
        assert_eq!(gguf(blob, Some("Qwen3 8B")), "Qwen3 8B");
        let hf = |path: &str, name| display_name(Path::new(path), ModelFormat::Hf, name);
        assert_eq!(hf("/m/smol", Some("HuggingFaceTB/SmolLM2-135M-Instruct")), "HuggingFaceTB/SmolLM2-135M-Instruct");
        assert_eq!(hf("/runs/3/model", Some("/tmp/xyz")), "model");
        assert_eq!(hf("/m/qwen-0.5b", None), "qwen-0.5b");
    }
}
