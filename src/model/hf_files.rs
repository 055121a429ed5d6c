//! Reading the JSON side files of a Hugging Face model directory.

use super::error::{ModelError, Result};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// tokenizer_config.json (+ chat_template.jinja, generation_config.json), as far as used here.
#[derive(Debug, Default)]
pub struct TokenizerConfig {
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub pad_token: Option<String>,
    pub unk_token: Option<String>,
    pub chat_template: Option<String>,
    pub chat_template_source: String,
    pub generation_eos_ids: Vec<u32>,
}

impl TokenizerConfig {
    pub fn read(dir: &Path) -> Result<Self> {
        let json = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Value::Null);
        // A token is written either as a string or as an AddedToken object.
        let token = |k: &str| match json.get(k) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Object(o)) => o.get("content").and_then(Value::as_str).map(str::to_string),
            _ => None,
        };
        let mut cfg = TokenizerConfig {
            bos_token: token("bos_token"),
            eos_token: token("eos_token"),
            pad_token: token("pad_token"),
            unk_token: token("unk_token"),
            chat_template_source: "none (no chat template in tokenizer_config.json)".into(),
            ..Default::default()
        };
        // Newer transformers save the template as its own file, which then takes precedence.
        let jinja = dir.join("chat_template.jinja");
        if jinja.is_file() {
            cfg.chat_template = Some(std::fs::read_to_string(&jinja).map_err(|e| ModelError::io(&jinja, e))?);
            cfg.chat_template_source = "chat_template.jinja".into();
        } else {
            match json.get("chat_template") {
                Some(Value::String(s)) => cfg.chat_template = Some(s.clone()),
                // A list of named templates: the one named "default", else the first.
                Some(Value::Array(list)) => {
                    let pick = list
                        .iter()
                        .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                        .or_else(|| list.first());
                    cfg.chat_template =
                        pick.and_then(|t| t.get("template")).and_then(Value::as_str).map(str::to_string);
                }
                _ => {}
            }
            if cfg.chat_template.is_some() {
                cfg.chat_template_source = "tokenizer_config.json".into();
            }
        }
        if let Some(gen_cfg) = read_json(&dir.join("generation_config.json"))? {
            cfg.generation_eos_ids = match gen_cfg.get("eos_token_id") {
                Some(Value::Number(n)) => n.as_u64().map(|v| vec![v as u32]).unwrap_or_default(),
                Some(Value::Array(a)) => a.iter().filter_map(Value::as_u64).map(|v| v as u32).collect(),
                _ => Vec::new(),
            };
        }
        Ok(cfg)
    }
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| ModelError::BadHfDir { path: path.to_path_buf(), reason: format!("invalid JSON ({e})") })
}

/// model.safetensors, or every `*.safetensors` shard, sorted by name.
pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ModelError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ModelError::BadHfDir { path: dir.to_path_buf(), reason: "no *.safetensors weights".into() });
    }
    Ok(files)
}

/// The model id: sha256 of model.safetensors, or for shards the sha256 of their hex hashes
/// concatenated in name order.
pub fn weights_sha256(files: &[PathBuf]) -> Result<String> {
    if let [one] = files {
        return super::file_hash::sha256_remembered(one);
    }
    let mut hasher = Sha256::new();
    for f in files {
        hasher.update(super::file_hash::sha256_remembered(f)?.as_bytes());
    }
    Ok(hex::encode(hasher.finalize()))
}
