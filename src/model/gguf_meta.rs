//! Typed access to GGUF metadata. `ModelWeights::from_gguf`-style loaders consume the GGUF
//! content, so the metadata is copied out first and read through these helpers.

use candle_core::quantized::gguf_file::Value;
use std::collections::HashMap;

/// A GGUF file's key/value metadata.
pub struct Meta(pub HashMap<String, Value>);

impl Meta {
    pub fn string(&self, key: &str) -> Option<&str> {
        match self.0.get(key)? {
            Value::String(s) => Some(s.as_str()),
            _ => None,
        }
    }

    /// Any integer type, widened (token types are I32 in practice, ids are U32).
    pub fn int(&self, key: &str) -> Option<i64> {
        self.0.get(key).and_then(value_int)
    }

    pub fn float(&self, key: &str) -> Option<f64> {
        match self.0.get(key)? {
            Value::F32(v) => Some(*v as f64),
            Value::F64(v) => Some(*v),
            other => value_int(other).map(|v| v as f64),
        }
    }

    pub fn strings(&self, key: &str) -> Option<Vec<String>> {
        match self.0.get(key)? {
            Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }

    /// The special tokens the file names by id (`tokenizer.ggml.*_token_id`), as text from its
    /// vocabulary `tokens`; `stop_ids` is left for the loader to fill.
    pub fn special_tokens(&self, tokens: &[String]) -> super::info::SpecialTokens {
        let token = |key: &str| self.int(key).and_then(|id| tokens.get(id as usize).cloned());
        super::info::SpecialTokens {
            bos: token("tokenizer.ggml.bos_token_id"),
            eos: token("tokenizer.ggml.eos_token_id"),
            eot: token("tokenizer.ggml.eot_token_id"),
            pad: token("tokenizer.ggml.padding_token_id"),
            unk: token("tokenizer.ggml.unknown_token_id"),
            stop_ids: Vec::new(),
        }
    }

    pub fn ints(&self, key: &str) -> Option<Vec<i64>> {
        match self.0.get(key)? {
            Value::Array(items) => items.iter().map(value_int).collect(),
            _ => None,
        }
    }

    pub fn floats(&self, key: &str) -> Option<Vec<f64>> {
        match self.0.get(key)? {
            Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    Value::F32(x) => Some(*x as f64),
                    Value::F64(x) => Some(*x),
                    other => value_int(other).map(|x| x as f64),
                })
                .collect(),
            _ => None,
        }
    }

    pub fn bool(&self, key: &str) -> Option<bool> {
        match self.0.get(key)? {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// `"{arch}.{suffix}"`, the way llama.cpp namespaces hyper-parameters.
    pub fn arch_int(&self, arch: &str, suffix: &str) -> Option<i64> {
        self.int(&format!("{arch}.{suffix}"))
    }

    pub fn arch_float(&self, arch: &str, suffix: &str) -> Option<f64> {
        self.float(&format!("{arch}.{suffix}"))
    }
}

fn value_int(v: &Value) -> Option<i64> {
    Some(match v {
        Value::U8(v) => *v as i64,
        Value::I8(v) => *v as i64,
        Value::U16(v) => *v as i64,
        Value::I16(v) => *v as i64,
        Value::U32(v) => *v as i64,
        Value::I32(v) => *v as i64,
        Value::U64(v) => *v as i64,
        Value::I64(v) => *v,
        Value::Bool(b) => *b as i64,
        _ => return None,
    })
}
