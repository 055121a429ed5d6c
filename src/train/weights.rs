//! Loading weights for training: HF safetensors directories and GGUF files, both turned into
//! owned, dense, HF-named, HF-layout tensors (`Model::new` then makes them `Var`s or freezes them).
//!
//! GGUF: every tensor is dequantized, and names and layout are mapped to HF's by `gguf_layout`
//! (llama q/k rows un-permuted: without it the logits are off by tens; Gemma's `1 + w` norms back
//! to `w`; Phi-3's fused projections kept fused, as in its HF folder, for `split_fused`).

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Error, Result, Tensor};
use rand::{Rng, SeedableRng, rngs::StdRng};

use super::config::Config;
use super::gguf_layout;

pub type Weights = HashMap<String, Tensor>;

fn msg(s: String) -> Error {
    Error::Msg(s)
}

/// Reads `config.json` and every `*.safetensors` in `dir` (sharded or not), converted to `dtype`.
pub fn load_hf_dir(dir: &Path, dtype: DType, device: &Device) -> Result<(Config, Weights)> {
    let cfg_path = dir.join("config.json");
    let text =
        std::fs::read_to_string(&cfg_path).map_err(|e| msg(format!("cannot read {}: {e}", cfg_path.display())))?;
    let cfg = Config::from_hf_json(&cfg_path, &text).map_err(|e| msg(e.to_string()))?;
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(msg(format!("no *.safetensors in {}", dir.display())));
    }
    let mut w = Weights::new();
    for f in files {
        each_safetensor(&f, device, |k, t| {
            w.insert(k, t.to_dtype(dtype)?);
            Ok(())
        })?;
    }
    Ok((cfg, w))
}

/// A safetensors file opened, its JSON header (tensor name to dtype, shape and offsets) and
/// the header's length in bytes.
pub fn safetensors_header(path: &Path) -> Result<(std::fs::File, serde_json::Map<String, serde_json::Value>, u64)> {
    use std::io::Read;
    let bad = |why: String| msg(format!("{}: {why}", path.display()));
    let mut file = std::fs::File::open(path).map_err(|e| bad(format!("cannot open: {e}")))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|e| bad(format!("no safetensors header: {e}")))?;
    let header_len = u64::from_le_bytes(len);
    if header_len > 100 << 20 {
        return Err(bad(format!("a safetensors header of {header_len} bytes")));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(|e| bad(format!("truncated safetensors header: {e}")))?;
    let header = serde_json::from_slice(&header).map_err(|e| bad(format!("bad safetensors header: {e}")))?;
    Ok((file, header, header_len))
}

/// Every tensor of a `.safetensors` file, read one at a time in file order and handed to `f`
/// as stored (its dtype and shape). Only one tensor's bytes are in memory beside what `f`
/// keeps: `candle_core::safetensors::load` read the whole file and then copied every tensor out
/// of it, twice the file beside the converted weights (+6 GB while a 1.5B bf16 folder loaded).
pub fn each_safetensor(path: &Path, device: &Device, mut f: impl FnMut(String, Tensor) -> Result<()>) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let bad = |why: String| msg(format!("{}: {why}", path.display()));
    let (mut file, header, header_len) = safetensors_header(path)?;
    let mut entries = Vec::new();
    for (name, info) in header.into_iter().filter(|(n, _)| n != "__metadata__") {
        let field = |k: &str| info.get(k).ok_or_else(|| bad(format!("tensor {name} has no {k}")));
        let dtype = match field("dtype")?.as_str().unwrap_or("") {
            "F32" => DType::F32,
            "F16" => DType::F16,
            "BF16" => DType::BF16,
            "F64" => DType::F64,
            "U8" => DType::U8,
            "U32" => DType::U32,
            "I64" => DType::I64,
            other => return Err(bad(format!("tensor {name}: dtype {other} is not supported"))),
        };
        let nums = |k: &str| -> Result<Vec<usize>> {
            let v = field(k)?.as_array().ok_or_else(|| bad(format!("tensor {name}: {k} is not a list")))?;
            v.iter()
                .map(|x| x.as_u64().map(|x| x as usize).ok_or_else(|| bad(format!("tensor {name}: bad {k}"))))
                .collect()
        };
        let (shape, offsets) = (nums("shape")?, nums("data_offsets")?);
        let [start, end] = offsets[..] else { return Err(bad(format!("tensor {name}: data_offsets needs 2 numbers"))) };
        if end < start || end - start != shape.iter().product::<usize>() * dtype.size_in_bytes() {
            return Err(bad(format!("tensor {name}: data_offsets {start}..{end} do not fit shape {shape:?}")));
        }
        entries.push((start, end, name, dtype, shape));
    }
    entries.sort_by_key(|e| e.0);
    let data_start = 8 + header_len;
    let mut buf = Vec::new();
    for (start, end, name, dtype, shape) in entries {
        buf.resize(end - start, 0);
        file.seek(SeekFrom::Start(data_start + start as u64)).map_err(|e| bad(format!("tensor {name}: {e}")))?;
        file.read_exact(&mut buf).map_err(|e| bad(format!("tensor {name}: truncated file: {e}")))?;
        let t = Tensor::from_raw_buffer(&buf, dtype, &shape, device)?;
        f(name, t)?;
        // The buffer keeps the largest tensor's room; give back a large one at once.
        if buf.len() > 64 << 20 {
            buf = Vec::new();
        }
    }
    Ok(())
}

/// Phi-3's fused projections split into the separate ones the model holds: `qkv_proj` into
/// `q_proj`, `k_proj`, `v_proj` (rows in that order) and `gate_up_proj` into `gate_proj` and
/// `up_proj` (gate first), as transformers' `Phi3Attention`/`Phi3MLP` slice them.
pub fn split_fused(cfg: &Config, w: &mut Weights) -> Result<()> {
    let (qd, kvd) = (cfg.num_attention_heads * cfg.head_dim(), cfg.n_kv_heads() * cfg.head_dim());
    for i in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{i}");
        for kind in ["weight", "bias"] {
            if let Some(t) = w.remove(&format!("{p}.self_attn.qkv_proj.{kind}")) {
                for (name, start, len) in [("q_proj", 0, qd), ("k_proj", qd, kvd), ("v_proj", qd + kvd, kvd)] {
                    w.insert(format!("{p}.self_attn.{name}.{kind}"), t.narrow(0, start, len)?.contiguous()?);
                }
            }
            if let Some(t) = w.remove(&format!("{p}.mlp.gate_up_proj.{kind}")) {
                let n = t.dim(0)? / 2;
                w.insert(format!("{p}.mlp.gate_proj.{kind}"), t.narrow(0, 0, n)?.contiguous()?);
                w.insert(format!("{p}.mlp.up_proj.{kind}"), t.narrow(0, n, n)?.contiguous()?);
            }
        }
    }
    Ok(())
}

/// The HF config a GGUF's metadata describes, read by `model::arch` as inference reads it
/// (Llama 3.1+'s `rope_freqs` becomes `rope_scaling` llama3). `reader` reads `rope_freqs`.
pub fn gguf_config<R: std::io::Read + std::io::Seek>(
    path: &Path,
    content: &gguf_file::Content,
    reader: &mut R,
) -> Result<Config> {
    let meta = crate::model::gguf_meta::Meta(content.metadata.clone());
    let arch =
        crate::model::arch::ArchConfig::from_gguf(path, &meta, content, reader).map_err(|e| msg(e.to_string()))?;
    Ok(Config::from_arch(&arch))
}

/// Reads a GGUF file: config from metadata, every tensor dequantized to `dtype`, HF names/layout.
pub fn load_gguf(path: &Path, dtype: DType, device: &Device) -> Result<(Config, Weights)> {
    let mut f = std::fs::File::open(path).map_err(|e| msg(format!("cannot open {}: {e}", path.display())))?;
    let content = gguf_file::Content::read(&mut f).map_err(|e| e.with_path(path))?;
    let cfg = gguf_config(path, &content, &mut f)?;
    let family = cfg.family();
    let architecture = match content.metadata.get("general.architecture") {
        Some(gguf_file::Value::String(a)) => a.clone(),
        _ => String::new(),
    };
    let heads = (cfg.num_attention_heads, cfg.n_kv_heads());
    let mut w = Weights::new();
    let mut names: Vec<_> = content.tensor_infos.keys().cloned().collect();
    names.sort();
    for name in names {
        let Some(hf) = gguf_layout::hf_name(family, &name) else { continue };
        let t = content.tensor(&mut f, &name, &Device::Cpu)?.dequantize(&Device::Cpu)?;
        let t = gguf_layout::to_hf(family, &architecture, heads, &name, t)?;
        w.insert(hf, t.to_dtype(dtype)?.to_device(device)?);
    }
    Ok((cfg, w))
}

/// Random weights for a config (tests and benchmarks): normal(0, 0.02) matrices, unit norms,
/// small biases; deterministic in `seed`.
pub fn random(cfg: &Config, seed: u64, device: &Device) -> Result<Weights> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut normal = |shape: (usize, usize), std: f32| -> Result<Tensor> {
        // Box-Muller from the seeded generator: candle's CPU randn cannot be seeded.
        let n = shape.0 * shape.1;
        let v: Vec<f32> = (0..n)
            .map(|_| {
                let (u1, u2): (f32, f32) = (rng.random_range(1e-7..1.0), rng.random());
                std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
            })
            .collect();
        Tensor::from_vec(v, shape, device)
    };
    let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (qd, kvd) = (cfg.num_attention_heads * cfg.head_dim(), cfg.n_kv_heads() * cfg.head_dim());
    let mut w = Weights::new();
    w.insert("model.embed_tokens.weight".into(), normal((v, h), 0.5)?);
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        for (n, shape) in [
            ("self_attn.q_proj", (qd, h)),
            ("self_attn.k_proj", (kvd, h)),
            ("self_attn.v_proj", (kvd, h)),
            ("self_attn.o_proj", (h, qd)),
            ("mlp.gate_proj", (i, h)),
            ("mlp.up_proj", (i, h)),
            ("mlp.down_proj", (h, i)),
        ] {
            w.insert(format!("{p}.{n}.weight"), normal(shape, 0.1)?);
            let biased = (n == "self_attn.o_proj" && cfg.o_bias())
                || (n.starts_with("self_attn.") && n != "self_attn.o_proj" && cfg.qkv_bias());
            if biased {
                w.insert(format!("{p}.{n}.bias"), normal((1, shape.0), 0.1)?.flatten_all()?);
            }
        }
        w.insert(format!("{p}.input_layernorm.weight"), (normal((1, h), 0.1)? + 1.0)?.flatten_all()?);
        w.insert(format!("{p}.post_attention_layernorm.weight"), (normal((1, h), 0.1)? + 1.0)?.flatten_all()?);
    }
    w.insert("model.norm.weight".into(), (normal((1, h), 0.1)? + 1.0)?.flatten_all()?);
    if !cfg.tie_word_embeddings {
        w.insert("lm_head.weight".into(), normal((v, h), 0.1)?);
    }
    Ok(w)
}

/// A tiny llama config for tests: 2 layers, GQA (4 heads, 2 kv heads), vocab 64.
pub fn tiny_config(model_type: &str, tie: bool) -> Config {
    Config {
        model_type: model_type.into(),
        hidden_size: 32,
        intermediate_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: Some(2),
        head_dim: None,
        vocab_size: 64,
        rms_norm_eps: 1e-5,
        rope: crate::model::arch::Rope::plain(10_000.0),
        max_position_embeddings: 256,
        tie_word_embeddings: tie,
        attention_bias: false,
        sliding_window: None,
        bos_token_id: Some(1),
        eos_token_id: Some(2.into()),
        pad_token_id: None,
        sliding_layers: vec![false; 2],
        activation: crate::model::arch::Activation::Silu,
        attn_softcap: None,
        final_softcap: None,
        query_pre_attn_scalar: None,
        local_rope: None,
    }
}
