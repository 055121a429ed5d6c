//! The Hugging Face id of a local base model, for the files that name their base model (a PEFT
//! adapter's `base_model_name_or_path`): PEFT and transformers load an id from the Hub, while a
//! local GGUF path is of no use to them.
//!
//! Evidence, strongest first: the file's sha256 among the models verdict knows (the default
//! model); the GGUF's own source (`general.source.huggingface.repository`, or a
//! `general.source.repo_url`/`general.source.url` on huggingface.co); a single
//! `general.base_model.0.*` only when its name is the file's own `general.name` (it usually names
//! the model this one was fine-tuned *from*: the default GGUF's would be the base SmolLM2, not
//! Instruct); a folder inside the Hub cache (`models--ORG--NAME/snapshots/REV`). Otherwise none.

use super::error::{ModelError, Result};
use super::gguf_meta::Meta;
use std::path::Path;

/// GGUF files verdict knows by content: (sha256, size in bytes, Hugging Face id of the weights).
/// The size lets a large unknown file skip hashing.
const KNOWN_FILES: &[(&str, u64, &str)] =
    &[(super::fetch::DEFAULT_MODEL_SHA256, 98_362_432, "HuggingFaceTB/SmolLM2-135M-Instruct")];

/// A Hugging Face id found for a local model, and how it was found (for the user to check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubId {
    pub id: String,
    pub evidence: String,
}

/// The Hugging Face id of the model at `path` (a GGUF file or an HF folder), when it can be told.
pub fn identify(path: &Path) -> Result<Option<HubId>> {
    if path.is_dir() {
        return Ok(from_hub_cache_path(path));
    }
    let size = std::fs::metadata(path).map_err(|e| ModelError::io(path, e))?.len();
    if KNOWN_FILES.iter().any(|(_, s, _)| *s == size) {
        let sha = super::file_hash::sha256_remembered(path)?;
        if let Some(id) = known_by_sha(&sha) {
            return Ok(Some(HubId { id: id.to_string(), evidence: format!("sha256 {sha} is {id}'s GGUF") }));
        }
    }
    let mut file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let Ok(content) = candle_core::quantized::gguf_file::Content::read(&mut file) else { return Ok(None) };
    Ok(from_gguf_meta(&Meta(content.metadata)))
}

/// The id of a file known by its sha256.
pub fn known_by_sha(sha256: &str) -> Option<&'static str> {
    KNOWN_FILES.iter().find(|(sha, _, _)| sha.eq_ignore_ascii_case(sha256)).map(|(_, _, id)| *id)
}

/// `ORG/NAME` from a huggingface.co model URL (`https://huggingface.co/ORG/NAME[/…]`).
fn id_from_url(url: &str) -> Option<String> {
    let rest = url.trim().strip_prefix("https://").or_else(|| url.trim().strip_prefix("http://"))?;
    let rest = rest.strip_prefix("www.").unwrap_or(rest);
    let rest = rest.strip_prefix("huggingface.co/").or_else(|| rest.strip_prefix("hf.co/"))?;
    let mut parts = rest.split('/').filter(|p| !p.is_empty());
    let (org, name) = (parts.next()?, parts.next()?);
    let valid = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    (org != "datasets" && org != "spaces" && valid(org) && valid(name)).then(|| format!("{org}/{name}"))
}

/// A model name compared loosely: lowercase letters and digits only.
fn loose(name: &str) -> String {
    name.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect()
}

/// The id a GGUF's metadata gives for the model it holds (not for the model it was tuned from).
pub fn from_gguf_meta(meta: &Meta) -> Option<HubId> {
    if let Some(repo) = meta.string("general.source.huggingface.repository") {
        let id = repo.trim().trim_matches('/');
        if id.split('/').count() == 2 {
            let evidence = "GGUF general.source.huggingface.repository".to_string();
            return Some(HubId { id: id.to_string(), evidence });
        }
    }
    for key in ["general.source.repo_url", "general.source.url"] {
        if let Some(id) = meta.string(key).and_then(id_from_url) {
            return Some(HubId { id, evidence: format!("GGUF {key}") });
        }
    }
    // A base model is the model this one was made from; it is this model only when it has the
    // file's own name (e.g. a plain conversion that listed itself).
    let own_name = meta.string("general.name").map(loose).filter(|n| !n.is_empty())?;
    if meta.int("general.base_model.count") != Some(1) {
        return None;
    }
    let base_name = meta.string("general.base_model.0.name").map(loose)?;
    if base_name != own_name {
        return None;
    }
    let id = meta.string("general.base_model.0.repo_url").and_then(id_from_url).or_else(|| {
        let org = meta.string("general.base_model.0.organization")?;
        let name = meta.string("general.base_model.0.name")?;
        Some(format!("{}/{}", org.trim(), name.trim().replace(' ', "-")))
    })?;
    Some(HubId { id, evidence: "GGUF general.base_model.0 (named like the file itself)".to_string() })
}

/// `ORG/NAME` for a folder in the Hugging Face cache (`…/models--ORG--NAME/snapshots/REV`).
pub fn from_hub_cache_path(path: &Path) -> Option<HubId> {
    let mut parts = path.components().rev().map(|c| c.as_os_str().to_string_lossy());
    let _rev = parts.next()?;
    if parts.next()? != "snapshots" {
        return None;
    }
    let repo = parts.next()?;
    let (org, name) = repo.strip_prefix("models--")?.split_once("--")?;
    Some(HubId { id: format!("{org}/{name}"), evidence: "a Hugging Face cache folder".to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::gguf_file::Value;

    fn meta(pairs: &[(&str, &str)]) -> Meta {
        let mut m: std::collections::HashMap<String, Value> =
            pairs.iter().map(|(k, v)| (k.to_string(), Value::String(v.to_string()))).collect();
        if pairs.iter().any(|(k, _)| k.starts_with("general.base_model.0")) {
            m.insert("general.base_model.count".into(), Value::U32(1));
        }
        Meta(m)
    }

    #[test]
    fn the_gguf_source_names_the_model_and_a_differently_named_base_does_not() {
        let source = meta(&[("general.source.url", "https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct/tree/main")]);
        assert_eq!(from_gguf_meta(&source).unwrap().id, "Qwen/Qwen2.5-0.5B-Instruct");
        // What a converted SmolLM2-135M-Instruct would carry: its base is the base SmolLM2.
        let tuned = meta(&[
            ("general.name", "SmolLM2 135M Instruct"),
            ("general.base_model.0.name", "SmolLM2 135M"),
            ("general.base_model.0.organization", "HuggingFaceTB"),
            ("general.base_model.0.repo_url", "https://huggingface.co/HuggingFaceTB/SmolLM2-135M"),
        ]);
        assert_eq!(from_gguf_meta(&tuned), None);
        let same = meta(&[
            ("general.name", "SmolLM2 135M"),
            ("general.base_model.0.name", "SmolLM2-135M"),
            ("general.base_model.0.repo_url", "https://huggingface.co/HuggingFaceTB/SmolLM2-135M"),
        ]);
        assert_eq!(from_gguf_meta(&same).unwrap().id, "HuggingFaceTB/SmolLM2-135M");
        assert_eq!(from_gguf_meta(&meta(&[("general.source.url", "https://example.com/m")])), None);
        assert_eq!(from_gguf_meta(&meta(&[("general.source.url", "https://huggingface.co/datasets/a/b")])), None);
    }

    #[test]
    fn hub_cache_folders_and_known_hashes_give_ids() {
        let dir = Path::new("/h/.cache/huggingface/hub/models--HuggingFaceTB--SmolLM2-135M-Instruct/snapshots/abc123");
        assert_eq!(from_hub_cache_path(dir).unwrap().id, "HuggingFaceTB/SmolLM2-135M-Instruct");
        assert_eq!(from_hub_cache_path(Path::new("/models/my-model")), None);
        assert_eq!(
            known_by_sha(&super::super::fetch::DEFAULT_MODEL_SHA256.to_uppercase()),
            Some("HuggingFaceTB/SmolLM2-135M-Instruct")
        );
        assert_eq!(known_by_sha("00"), None);
    }

    /// The default model (its own metadata names no Hub id) is known by its sha256.
    #[test]
    fn the_default_model_is_identified_by_its_hash() {
        let test = "model::hub_id::tests::the_default_model_is_identified_by_its_hash";
        let Some(path) = crate::model::testing::default_model_or_skip(test).unwrap() else { return };
        let found = identify(&path).unwrap().expect("the default model is known");
        assert_eq!(found.id, "HuggingFaceTB/SmolLM2-135M-Instruct", "{}", found.evidence);
    }
}
