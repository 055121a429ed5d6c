//! `ArchConfig` from GGUF metadata (the keys llama.cpp's converter writes for each family), with
//! Llama 3.1+'s rope scaling recovered from the `rope_freqs` tensor.

use super::{Activation, ArchConfig, ArchError, Family, Rope, RopeKind};
use crate::model::gguf_meta::Meta;
use serde_json::Value;
use std::path::Path;

impl ArchConfig {
    /// Reads GGUF metadata; `has_tensor` answers whether the file holds a tensor, `rope_freqs`
    /// is the content of `rope_freqs.weight` when it has one (Llama 3.1+'s frequency factors).
    pub fn from_gguf(
        path: &Path,
        meta: &Meta,
        has_tensor: &dyn Fn(&str) -> bool,
        vocab_size: usize,
        rope_freqs: Option<&[f32]>,
    ) -> Result<ArchConfig, ArchError> {
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
        for k in [
            "rope.scaling.attn_factor",
            "rope.scaling.yarn_log_multiplier",
            "rope.scaling.yarn_ext_factor",
            "rope.scaling.yarn_attn_factor",
        ] {
            if meta.0.contains_key(&key(k)) {
                return Err(err(&key(k), "changes the rotary scaling in a way verdict does not implement".into()));
            }
        }
        if let Some(factors) = rope_freqs {
            if rope.kind != RopeKind::Default {
                return Err(err(
                    "rope_freqs.weight",
                    format!("is present beside rope scaling `{scaling}`; verdict reads it as Llama 3's scaling only"),
                ));
            }
            rope.kind =
                llama3_from_factors(&rope, head_dim, factors).map_err(|reason| err("rope_freqs.weight", reason))?;
        }
        if has_tensor("rope_factors_short.weight") || has_tensor("rope_factors_long.weight") {
            return Err(err(
                "rope_factors_short.weight",
                "holds LongRoPE factors, which verdict reads from config.json only: load the Hugging Face folder"
                    .into(),
            ));
        }
        let layers = need("block_count")?;
        let window = need("attention.sliding_window").ok();
        let sliding_layers: Vec<bool> = (0..layers)
            .map(|i| match family {
                Family::Gemma2 => i % 2 == 0,
                // llama.cpp's Gemma 3 pattern: every sixth layer is global.
                Family::Gemma3 => (i + 1) % 6 != 0,
                _ => window.is_some(),
            })
            .collect();
        let gemma_scalar = match (family, layers) {
            // llama.cpp scales Gemma 2 27B (46 layers) and Gemma 3 27B (62) by hidden / heads.
            (Family::Gemma2, 46) | (Family::Gemma3, 62) => Some((hidden / heads) as f64),
            (Family::Gemma2 | Family::Gemma3, _) => Some(head_dim as f64),
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

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}
