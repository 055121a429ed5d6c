//! How each family's tensors are named and laid out in a GGUF as llama.cpp's converter writes
//! them, against transformers' names and layout: the one table both `weights::load_gguf` (GGUF →
//! HF) and `export_gguf` (HF → GGUF) use.
//!
//! The differences from the HF folder: llama's q/k rows are permuted for interleaved rotary
//! (Mistral is written as `llama` too); Gemma's RMSNorm weights are stored as `1 + w` (every
//! `*norm.weight`, the q/k norms of Gemma 3 included) and its four layer norms have their own
//! names; Phi-3 keeps its fused `qkv_proj` (`attn_qkv`) and `gate_up_proj` (`ffn_up`, gate rows
//! first).

use crate::model::arch::Family;
use candle_core::{Result, Tensor};

/// (GGUF module, HF module) of a layer's tensors, for `family`.
fn layer_modules(family: Family) -> Vec<(&'static str, &'static str)> {
    let mut t = vec![
        ("attn_norm", "input_layernorm"),
        ("attn_output", "self_attn.o_proj"),
        ("ffn_down", "mlp.down_proj"),
        ("attn_q_norm", "self_attn.q_norm"),
        ("attn_k_norm", "self_attn.k_norm"),
    ];
    if family.fused_projections() {
        t.extend([("attn_qkv", "self_attn.qkv_proj"), ("ffn_up", "mlp.gate_up_proj")]);
    } else {
        t.extend([
            ("attn_q", "self_attn.q_proj"),
            ("attn_k", "self_attn.k_proj"),
            ("attn_v", "self_attn.v_proj"),
            ("ffn_gate", "mlp.gate_proj"),
            ("ffn_up", "mlp.up_proj"),
        ]);
    }
    if family.gemma() {
        t.extend([
            ("post_attention_norm", "post_attention_layernorm"),
            ("ffn_norm", "pre_feedforward_layernorm"),
            ("post_ffw_norm", "post_feedforward_layernorm"),
        ]);
    } else {
        t.push(("ffn_norm", "post_attention_layernorm"));
    }
    t
}

const FIXED: [(&str, &str); 3] = [
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];

/// GGUF name → HF name (`None` for tensors the trainer does not hold, e.g. `rope_freqs`).
pub fn hf_name(family: Family, gguf: &str) -> Option<String> {
    if let Some((_, hf)) = FIXED.iter().find(|(g, _)| *g == gguf) {
        return Some(hf.to_string());
    }
    let (layer, tail) = gguf.strip_prefix("blk.")?.split_once('.')?;
    let (module, kind) = tail.rsplit_once('.')?;
    let (_, hf) = layer_modules(family).into_iter().find(|(g, _)| *g == module)?;
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// HF name → GGUF name, the inverse of `hf_name`.
pub fn gguf_name(family: Family, hf: &str) -> Option<String> {
    if let Some((g, _)) = FIXED.iter().find(|(_, h)| *h == hf) {
        return Some(g.to_string());
    }
    let (layer, tail) = hf.strip_prefix("model.layers.")?.split_once('.')?;
    let (module, kind) = tail.rsplit_once('.')?;
    let (g, _) = layer_modules(family).into_iter().find(|(_, h)| *h == module)?;
    Some(format!("blk.{layer}.{g}.{kind}"))
}

/// Whether the GGUF stores the file's `architecture` with llama.cpp's q/k permutation.
fn permuted(architecture: &str) -> bool {
    architecture == "llama"
}

/// Whether a GGUF tensor is one of Gemma's norms, stored as `1 + w`.
fn plus_one(family: Family, gguf: &str) -> bool {
    family.gemma() && gguf.ends_with("norm.weight")
}

/// A GGUF tensor `t` named `gguf` in HF layout: q/k rows un-permuted (`architecture` llama),
/// Gemma's norms back to `w`.
pub fn to_hf(family: Family, architecture: &str, heads: (usize, usize), gguf: &str, t: Tensor) -> Result<Tensor> {
    if permuted(architecture) && gguf.contains(".attn_q.") {
        rows(&t, |m| unpermute_qk(m, heads.0))
    } else if permuted(architecture) && gguf.contains(".attn_k.") {
        rows(&t, |m| unpermute_qk(m, heads.1))
    } else if plus_one(family, gguf) {
        t.affine(1.0, -1.0)
    } else {
        Ok(t)
    }
}

/// The inverse of `to_hf`: an HF tensor in the GGUF layout of the tensor named `gguf`.
pub fn to_gguf(family: Family, architecture: &str, heads: (usize, usize), gguf: &str, t: Tensor) -> Result<Tensor> {
    if permuted(architecture) && gguf.contains(".attn_q.") {
        rows(&t, |m| permute_qk(m, heads.0))
    } else if permuted(architecture) && gguf.contains(".attn_k.") {
        rows(&t, |m| permute_qk(m, heads.1))
    } else if plus_one(family, gguf) {
        t.affine(1.0, 1.0)
    } else {
        Ok(t)
    }
}

/// `f` on a matrix, or on a bias (1-D) as a one-column matrix.
fn rows(t: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    if t.rank() == 1 { f(&t.unsqueeze(1)?)?.squeeze(1) } else { f(t) }
}

/// llama.cpp's q/k permutation, GGUF → HF: rows (head, i, pair) → (head, pair, i).
pub fn unpermute_qk(w: &Tensor, n_head: usize) -> Result<Tensor> {
    let (out, inp) = w.dims2()?;
    w.reshape((n_head, out / n_head / 2, 2, inp))?.transpose(1, 2)?.reshape((out, inp))
}

/// The inverse, HF → GGUF (for writing GGUF files).
pub fn permute_qk(w: &Tensor, n_head: usize) -> Result<Tensor> {
    let (out, inp) = w.dims2()?;
    w.reshape((n_head, 2, out / n_head / 2, inp))?.transpose(1, 2)?.reshape((out, inp))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every family's HF names map to GGUF names and back, and Gemma's norms and Phi-3's fused
    /// projections get llama.cpp's names (the ones gguf's TensorNameMap gives, fixture files).
    #[test]
    fn names_round_trip_per_family() {
        for family in Family::ALL {
            for (g, h) in layer_modules(family) {
                let hf = format!("model.layers.3.{h}.weight");
                let gguf = gguf_name(family, &hf).unwrap();
                assert_eq!(gguf, format!("blk.3.{g}.weight"));
                assert_eq!(hf_name(family, &gguf).as_deref(), Some(hf.as_str()), "{family:?}");
            }
        }
        assert_eq!(
            gguf_name(Family::Gemma2, "model.layers.0.post_attention_layernorm.weight").unwrap(),
            "blk.0.post_attention_norm.weight"
        );
        assert_eq!(
            gguf_name(Family::Llama, "model.layers.0.post_attention_layernorm.weight").unwrap(),
            "blk.0.ffn_norm.weight"
        );
        assert_eq!(hf_name(Family::Phi3, "blk.1.ffn_up.weight").unwrap(), "model.layers.1.mlp.gate_up_proj.weight");
        assert_eq!(hf_name(Family::Llama, "rope_freqs.weight"), None);
    }

    #[test]
    fn layouts_invert() {
        let dev = candle_core::Device::Cpu;
        let t = Tensor::arange(0f32, 64.0, &dev).unwrap().reshape((8, 8)).unwrap();
        for (family, arch, name) in [
            (Family::Llama, "llama", "blk.0.attn_k.weight"),
            (Family::Gemma2, "gemma2", "blk.0.post_ffw_norm.weight"),
            (Family::Qwen2, "qwen2", "blk.0.attn_q.weight"),
        ] {
            let g = to_gguf(family, arch, (4, 2), name, t.clone()).unwrap();
            let back = to_hf(family, arch, (4, 2), name, g.clone()).unwrap();
            let d = (back - &t).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert_eq!(d, 0.0, "{name}");
            let changed = (g - &t).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert_eq!(changed > 0.0, arch != "qwen2", "{name}");
        }
    }
}
