//! The GGUF half of the tiny test model: llama.cpp metadata and tensor names, q/k permuted
//! the way llama.cpp's converter does for llama.

use super::error::{ModelError, Result};
use super::testing::{
    FFN, HEADS, HIDDEN, KV_HEADS, LAYERS, MERGES, SMOLLM2_CHAT_TEMPLATE, SPECIALS, TINY_CONTEXT, TinyArch,
};
use candle_core::Tensor;
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use std::collections::HashMap;
use std::path::Path;

/// llama.cpp's convert permutes q/k rows so rotary pairs are adjacent (interleaved):
/// HF → GGUF is `reshape(n_head, 2, hd/2, in).transpose(1, 2)`.
pub fn permute_for_gguf(w: &Tensor, n_head: usize) -> Result<Tensor> {
    let (out, inp) = w.dims2()?;
    let hd = out / n_head;
    Ok(w.reshape((n_head, 2, hd / 2, inp))?.transpose(1, 2)?.contiguous()?.reshape((out, inp))?)
}

pub(super) fn gguf_metadata(tokens: &[String], arch: TinyArch) -> Vec<(String, Value)> {
    let u32v = |v: usize| Value::U32(v as u32);
    let a = arch.name();
    let types: Vec<Value> = (0..tokens.len()).map(|i| Value::I32(if i < SPECIALS.len() { 3 } else { 1 })).collect();
    vec![
        ("general.architecture".into(), Value::String(a.into())),
        ("general.name".into(), Value::String("verdict-tiny".into())),
        (format!("{a}.block_count"), u32v(LAYERS)),
        (format!("{a}.context_length"), u32v(TINY_CONTEXT)),
        (format!("{a}.embedding_length"), u32v(HIDDEN)),
        (format!("{a}.feed_forward_length"), u32v(FFN)),
        (format!("{a}.attention.head_count"), u32v(HEADS)),
        (format!("{a}.attention.head_count_kv"), u32v(KV_HEADS)),
        (format!("{a}.rope.freq_base"), Value::F32(10000.0)),
        (format!("{a}.rope.dimension_count"), u32v(HIDDEN / HEADS)),
        (format!("{a}.attention.layer_norm_rms_epsilon"), Value::F32(1e-5)),
        (format!("{a}.vocab_size"), u32v(tokens.len())),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("smollm".into())),
        ("tokenizer.ggml.tokens".into(), Value::Array(tokens.iter().map(|t| Value::String(t.clone())).collect())),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        (
            "tokenizer.ggml.merges".into(),
            Value::Array(MERGES.iter().map(|(a, b)| Value::String(format!("{a} {b}"))).collect()),
        ),
        ("tokenizer.ggml.bos_token_id".into(), u32v(1)),
        ("tokenizer.ggml.eos_token_id".into(), u32v(2)),
        ("tokenizer.ggml.unknown_token_id".into(), u32v(0)),
        ("tokenizer.ggml.padding_token_id".into(), u32v(2)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
        ("tokenizer.chat_template".into(), Value::String(SMOLLM2_CHAT_TEMPLATE.into())),
    ]
}

/// Writes the weights under llama.cpp's tensor names as F32, q/k permuted for llama.
pub(super) fn write_gguf(
    path: &Path,
    meta: &[(String, Value)],
    w: &HashMap<String, Tensor>,
    arch: TinyArch,
) -> Result<()> {
    let hf = |n: &str| w.get(n).cloned().ok_or_else(|| ModelError::Tokenizer(format!("missing {n}")));
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let mut put = |name: String, t: Tensor| -> Result<()> {
        tensors.push((name, QTensor::quantize(&t, GgmlDType::F32)?));
        Ok(())
    };
    put("token_embd.weight".into(), hf("model.embed_tokens.weight")?)?;
    put("output_norm.weight".into(), hf("model.norm.weight")?)?;
    for i in 0..LAYERS {
        let (p, b) = (format!("model.layers.{i}"), format!("blk.{i}"));
        let (q, k) = (hf(&format!("{p}.self_attn.q_proj.weight"))?, hf(&format!("{p}.self_attn.k_proj.weight"))?);
        match arch {
            TinyArch::Llama => {
                put(format!("{b}.attn_q.weight"), permute_for_gguf(&q, HEADS)?)?;
                put(format!("{b}.attn_k.weight"), permute_for_gguf(&k, KV_HEADS)?)?;
            }
            TinyArch::Qwen2 => {
                put(format!("{b}.attn_q.weight"), q)?;
                put(format!("{b}.attn_k.weight"), k)?;
                for (g, h) in [("attn_q", "q_proj"), ("attn_k", "k_proj"), ("attn_v", "v_proj")] {
                    put(format!("{b}.{g}.bias"), hf(&format!("{p}.self_attn.{h}.bias"))?)?;
                }
            }
        }
        for (g, h) in [
            ("attn_v", "self_attn.v_proj"),
            ("attn_output", "self_attn.o_proj"),
            ("ffn_gate", "mlp.gate_proj"),
            ("ffn_up", "mlp.up_proj"),
            ("ffn_down", "mlp.down_proj"),
            ("attn_norm", "input_layernorm"),
            ("ffn_norm", "post_attention_layernorm"),
        ] {
            put(format!("{b}.{g}.weight"), hf(&format!("{p}.{h}.weight"))?)?;
        }
    }
    let mut file = std::fs::File::create(path).map_err(|e| ModelError::io(path, e))?;
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut file, &meta_refs, &tensor_refs)?;
    Ok(())
}

/// Copies the GGUF `src` to `dst` with a `rope_freqs.weight` tensor added, as llama.cpp's
/// converter writes it for a Llama 3.1+ `rope_scaling` (one divisor per rotary frequency).
pub fn with_llama3_rope_freqs(src: &Path, dst: &Path, factor: f64, low: f64, high: f64, original: usize) -> Result<()> {
    let mut reader = std::fs::File::open(src).map_err(|e| ModelError::io(src, e))?;
    let content = gguf_file::Content::read(&mut reader).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    let meta = super::gguf_meta::Meta(content.metadata.clone());
    let arch = meta.string("general.architecture").unwrap_or("llama").to_string();
    let theta = meta.arch_float(&arch, "rope.freq_base").unwrap_or(10_000.0);
    let head_dim = meta.arch_int(&arch, "rope.dimension_count").unwrap_or(0) as usize;
    let plain = super::arch::Rope::plain(theta);
    let scaled = super::arch::Rope {
        kind: super::arch::RopeKind::Llama3 {
            factor,
            low_freq_factor: low,
            high_freq_factor: high,
            original_max: original,
        },
        ..plain.clone()
    };
    let factors: Vec<f32> =
        plain.inv_freq(head_dim).iter().zip(scaled.inv_freq(head_dim)).map(|(b, s)| (b / s) as f32).collect();
    let n = factors.len();
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    for name in content.tensor_infos.keys() {
        tensors.push((name.clone(), content.tensor(&mut reader, name, &candle_core::Device::Cpu)?));
    }
    let freqs = Tensor::from_vec(factors, n, &candle_core::Device::Cpu)?;
    tensors.push(("rope_freqs.weight".into(), QTensor::quantize(&freqs, GgmlDType::F32)?));
    let mut file = std::fs::File::create(dst).map_err(|e| ModelError::io(dst, e))?;
    let meta_refs: Vec<(&str, &Value)> = content.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut file, &meta_refs, &tensor_refs)?;
    Ok(())
}
