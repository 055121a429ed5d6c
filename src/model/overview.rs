//! What `verdict model list` shows of a model without loading its weights: family, size, rope,
//! context, chat template, whether verdict runs and trains it.

use super::arch::ArchConfig;
use super::error::{ModelError, Result};
use super::gguf_meta::Meta;
use candle_core::quantized::gguf_file;
use std::path::Path;

/// A model file or folder at a glance.
#[derive(Debug, Clone)]
pub struct Overview {
    pub arch: ArchConfig,
    /// Bytes of weights on disk.
    pub bytes: u64,
    /// The chat format the template writes (`chatml`, `llama3`, `gemma`…), `none` without one.
    pub template: String,
}

/// Reads `path`'s configuration (config.json, or the GGUF header) and its template.
pub fn overview(path: &Path) -> Result<Overview> {
    if path.is_dir() {
        let cfg_path = path.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| ModelError::io(&cfg_path, e))?;
        let arch = ArchConfig::from_hf_json(&cfg_path, &text)?;
        let bytes = super::hf_files::safetensors_files(path)?
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum();
        let template = super::hf_files::TokenizerConfig::read(path)?.chat_template.unwrap_or_default();
        return Ok(Overview { arch, bytes, template: template_kind(&template).into() });
    }
    let bad = |reason: String| ModelError::BadGguf { path: path.to_path_buf(), reason };
    let mut file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let content = gguf_file::Content::read(&mut file).map_err(|e| bad(e.to_string()))?;
    let meta = Meta(content.metadata.clone());
    let arch = ArchConfig::from_gguf(path, &meta, &content, &mut file)?;
    let bytes = std::fs::metadata(path).map_err(|e| ModelError::io(path, e))?.len();
    let template = meta.string("tokenizer.chat_template").unwrap_or("");
    Ok(Overview { arch, bytes, template: template_kind(template).into() })
}

/// Names a chat template by the markers it writes.
pub fn template_kind(template: &str) -> &'static str {
    const KINDS: [(&str, &str); 6] = [
        ("<|im_start|>", "chatml"),
        ("<|start_header_id|>", "llama3"),
        ("<start_of_turn>", "gemma"),
        ("<|user|>", "phi3"),
        ("[INST]", "mistral"),
        ("<|User|>", "deepseek"),
    ];
    if template.trim().is_empty() {
        return "none";
    }
    KINDS.iter().find(|(marker, _)| template.contains(marker)).map_or("other", |(_, kind)| kind)
}

/// `1.2 GB`, `350 MB`, `80 KB`.
pub fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.1} GB", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.0} MB", n as f64 / 1e6),
        n => format!("{:.0} KB", n as f64 / 1e3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overview_reads_both_formats_without_weights() {
        let dir = tempfile::tempdir().unwrap();
        let (gguf, hf) = super::super::testing::write_tiny_models(dir.path()).unwrap();
        for path in [gguf, hf] {
            let o = overview(&path).unwrap();
            assert_eq!(o.arch.family.name(), "llama");
            assert_eq!(o.template, "chatml");
            assert_eq!(o.arch.rope.describe(), "default (theta 10000)");
            assert!(o.bytes > 0);
        }
        assert_eq!(template_kind("{{ '<start_of_turn>user' }}"), "gemma");
        assert_eq!(template_kind(""), "none");
    }
}
