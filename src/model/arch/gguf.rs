//! `ArchConfig` from GGUF metadata (the keys llama.cpp's converter writes for each family), with
//! Llama 3.1+'s rope scaling recovered from the `rope_freqs` tensor and Phi-3's LongRoPE from
//! `rope_factors_short`/`rope_factors_long`.
//!
//! Where llama.cpp hard-codes a family's layout, so does this reading: Gemma 2's sliding layers
//! alternate from the first, Gemma 3's sliding layers have rope base 10000 and every sixth layer
//! is global (unless `gemma3.attention.sliding_window_pattern` lists them), and Gemma scales
//! scores by the head size (hidden / heads for the 27B models). One key llama.cpp does not read
//! is honoured: `{arch}.attention.scale`, which verdict's exports write for a Gemma whose
//! `query_pre_attn_scalar` differs from llama.cpp's rule.

use super::{Activation, ArchConfig, ArchError, Family, Rope, RopeKind};
use crate::model::gguf_meta::Meta;
use candle_core::Device;
use candle_core::quantized::gguf_file::Content;
use serde_json::Value;
use std::path::Path;

/// The small tensors that carry rotary settings in a GGUF.
const ROPE_TENSORS: [&str; 3] = ["rope_freqs.weight", "rope_factors_short.weight", "rope_factors_long.weight"];

impl ArchConfig {
    /// Reads a GGUF's architecture from its parsed header `content` (metadata `meta`, copied
    /// out of it); `reader` reads the rotary tensors it holds.
    pub fn from_gguf<R: std::io::Read + std::io::Seek>(
        path: &Path,
        meta: &Meta,
        content: &Content,
        reader: &mut R,
    ) -> Result<ArchConfig, ArchError> {
        let mut rope_tensors: std::collections::HashMap<&str, Vec<f32>> = std::collections::HashMap::new();
        for name in ROPE_TENSORS.into_iter().filter(|n| content.tensor_infos.contains_key(*n)) {
            let values = content
                .tensor(reader, name, &Device::Cpu)
                .and_then(|t| t.dequantize(&Device::Cpu)?.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1())
                .map_err(|e| ArchError::Key {
                    path: path.to_path_buf(),
                    key: name.into(),
                    reason: format!("cannot be read ({e}); the file may be truncated"),
                })?;
            rope_tensors.insert(name, values);
        }
        let vocab = content.tensor_infos.get("token_embd.weight").map(|t| t.shape.dims()[0]).unwrap_or(0);
        let has = |name: &str| content.tensor_infos.contains_key(name);
        let tensor = |name: &str| rope_tensors.get(name).cloned();
        ArchConfig::from_gguf_parts(path, meta, &has, vocab, &tensor)
    }

    /// `from_gguf` on the parts: `has_tensor` answers whether the file holds a tensor, `tensor`
    /// gives the values of the rotary tensors it holds (`ROPE_TENSORS`).
    fn from_gguf_parts(
        path: &Path,
        meta: &Meta,
        has_tensor: &dyn Fn(&str) -> bool,
        vocab_size: usize,
        tensor: &dyn Fn(&str) -> Option<Vec<f32>>,
    ) -> Result<ArchConfig, ArchError> {
        let rope_freqs = tensor("rope_freqs.weight");
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
        // Phi-3's converter writes LongRoPE's attention factor (read with the factor tensors).
        let has_longrope = has_tensor("rope_factors_short.weight");
        for k in [
            "rope.scaling.attn_factor",
            "rope.scaling.yarn_log_multiplier",
            "rope.scaling.yarn_ext_factor",
            "rope.scaling.yarn_attn_factor",
        ] {
            if meta.0.contains_key(&key(k)) && !(has_longrope && k == "rope.scaling.attn_factor") {
                return Err(err(&key(k), "changes the rotary scaling in a way verdict does not implement".into()));
            }
        }
        if let Some(factors) = rope_freqs.as_deref() {
            if rope.kind != RopeKind::Default {
                return Err(err(
                    "rope_freqs.weight",
                    format!("is present beside rope scaling `{scaling}`; verdict reads it as Llama 3's scaling only"),
                ));
            }
            rope.kind =
                llama3_from_factors(&rope, head_dim, factors).map_err(|reason| err("rope_freqs.weight", reason))?;
        }
        if let (Some(short), Some(long)) = (tensor("rope_factors_short.weight"), tensor("rope_factors_long.weight")) {
            rope.kind = longrope(&rope, meta, &key, max_pos, &short, &long)
                .map_err(|(k, reason): (String, String)| err(&k, reason))?;
        } else if has_tensor("rope_factors_short.weight") || has_tensor("rope_factors_long.weight") {
            return Err(err(
                "rope_factors_short.weight",
                "is present without rope_factors_long.weight (or the reverse): LongRoPE needs both".into(),
            ));
        }
        let layers = need("block_count")?;
        let window = need("attention.sliding_window").ok();
        let pattern = meta.ints(&key("attention.sliding_window_pattern"));
        let sliding_layers: Vec<bool> = match pattern {
            // One entry per layer (true: sliding), as the gguf package writes it.
            Some(p) if p.len() == layers && family.gemma() => p.iter().map(|v| *v != 0).collect(),
            Some(p) if family.gemma() => {
                return Err(err(
                    &key("attention.sliding_window_pattern"),
                    format!("has {} entries for {layers} layers", p.len()),
                ));
            }
            _ => (0..layers)
                .map(|i| match family {
                    Family::Gemma2 => i % 2 == 0,
                    // llama.cpp's Gemma 3 pattern: every sixth layer is global.
                    Family::Gemma3 => (i + 1) % 6 != 0,
                    _ => window.is_some(),
                })
                .collect(),
        };
        let gemma_scalar = match (family, layers, meta.float(&key("attention.scale"))) {
            // Written by verdict's export when the scalar is not llama.cpp's (scale = scalar^-1/2).
            (Family::Gemma2 | Family::Gemma3, _, Some(scale)) if scale > 0.0 => Some(round_scalar(scale.powi(-2))),
            // llama.cpp scales Gemma 2 27B (46 layers) and Gemma 3 27B (62) by hidden / heads.
            (Family::Gemma2, 46, _) | (Family::Gemma3, 62, _) => Some((hidden / heads) as f64),
            (Family::Gemma2 | Family::Gemma3, _, _) => Some(head_dim as f64),
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

/// Phi-3's LongRoPE from the converter's factor tensors, `rope.scaling.original_context_length`
/// and `rope.scaling.attn_factor` (kept only where it differs from the one transformers derives).
fn longrope(
    rope: &Rope,
    meta: &Meta,
    key: &dyn Fn(&str) -> String,
    max_pos: usize,
    short: &[f32],
    long: &[f32],
) -> Result<RopeKind, (String, String)> {
    if rope.kind != RopeKind::Default {
        return Err((key("rope.scaling.type"), "is set beside LongRoPE factor tensors".into()));
    }
    let original_max = meta
        .int(&key("rope.scaling.original_context_length"))
        .map(|v| v as usize)
        .ok_or_else(|| (key("rope.scaling.original_context_length"), "is missing beside LongRoPE factors".into()))?;
    let pairs = rope.rotary_dim(rope_head_dim(rope, meta, key)) / 2;
    for (name, v) in [("rope_factors_short.weight", short), ("rope_factors_long.weight", long)] {
        if v.len() != pairs {
            return Err((name.into(), format!("has {} values, not {pairs} (half the rotary size)", v.len())));
        }
    }
    let factors = |v: &[f32]| v.iter().map(|x| *x as f64).collect::<Vec<f64>>();
    let mut kind = RopeKind::LongRope {
        short_factor: factors(short),
        long_factor: factors(long),
        factor: max_pos as f64 / original_max as f64,
        attention_factor: None,
        original_max,
    };
    let derived = Rope { kind: kind.clone(), ..rope.clone() }.attention_factor();
    if let (Some(stored), RopeKind::LongRope { attention_factor, .. }) =
        (meta.float(&key("rope.scaling.attn_factor")), &mut kind)
        && (stored - derived).abs() > 1e-6 * derived
    {
        *attention_factor = Some(stored);
    }
    Ok(kind)
}

/// The head size `rope` rotates part of (`attention.key_length`, else hidden / heads).
fn rope_head_dim(rope: &Rope, meta: &Meta, key: &dyn Fn(&str) -> String) -> usize {
    let int = |k: &str| meta.int(&key(k)).map(|v| v as usize);
    match (int("attention.key_length"), int("embedding_length"), int("attention.head_count")) {
        (Some(d), _, _) => d,
        (None, Some(h), Some(n)) if n > 0 => h / n,
        _ => (2.0 * rope.partial_rotary_factor) as usize,
    }
}

/// A query scalar from its f32 scale: the whole number it was, when it was one.
fn round_scalar(x: f64) -> f64 {
    if (x - x.round()).abs() < 1e-3 * x { x.round() } else { x }
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}
