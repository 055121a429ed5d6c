//! One decoder layer's forward (`Pass::layer`): norms, attention (fused on the CPU, composed
//! elsewhere), the MLP, the residuals, as every family arranges them. Split from `model.rs` so
//! a layer can run again on its own in the backward (`checkpointing.rs`): `Pass` owns all a
//! layer needs besides its weights and its input.

use std::sync::Arc;

use candle_core::{D, DType, Result, Tensor};

use super::attention::Heads;
use super::config::Config;
use super::model::{Layer, norm_weight, rms_norm, softcap, softmax_last};
use super::weight_grads::WeightGrads;
use crate::model::arch::{Activation, LayerAttention};

/// What a layer's attention takes besides q, k, v: batch shape, rotary tables
/// `[B, 1, T, rotary_dim/2]`, the mask `[B, 1, 1, T, T]` in the dtype scores are softmaxed in.
#[derive(Clone)]
pub struct AttentionInputs {
    pub b: usize,
    pub t: usize,
    pub cos: Tensor,
    pub sin: Tensor,
    pub bias: Tensor,
    pub att_dt: DType,
}

/// What every layer of one forward pass shares.
pub struct Pass {
    pub cfg: Config,
    /// LoRA adapters on (the policy) or off (the reference).
    pub on: bool,
    /// The fused CPU kernels.
    pub fused: bool,
    /// The compute dtype.
    pub dt: DType,
    /// Where trainable weights' gradients are written in place (`weight_grads.rs`).
    pub sink: Option<Arc<WeightGrads>>,
}

/// HF (non-interleaved) rotary embedding: pairs (i, i + r/2) of the first r = 2 * cos width
/// dimensions (all of them but with a partial rotary factor), the rest passed through. x is
/// [B, H, T, d], cos/sin [B, 1, T, r/2]. (The fused CPU attention applies it inside, `attention.rs`.)
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let r = 2 * cos.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, r / 2)?;
    let x2 = x.narrow(D::Minus1, r / 2, r / 2)?;
    let a = (x1.broadcast_mul(cos)? - x2.broadcast_mul(sin)?)?;
    let b = (x2.broadcast_mul(cos)? + x1.broadcast_mul(sin)?)?;
    if r == d {
        return Tensor::cat(&[a, b], D::Minus1);
    }
    Tensor::cat(&[a, b, x.narrow(D::Minus1, r, d - r)?], D::Minus1)
}

impl Pass {
    /// RMSNorm with the family's weight convention (Gemma's `1 + w`).
    pub fn norm(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        rms_norm(x, &norm_weight(w, self.cfg.family().gemma())?, self.cfg.rms_norm_eps, self.fused)
    }

    /// Per-head norm (Qwen3, Gemma 3): rows of head_dim.
    fn head_norm(&self, x: &Tensor, w: &Option<Tensor>, heads: usize) -> Result<Tensor> {
        let hd = self.cfg.head_dim();
        match w {
            Some(w) => {
                let rows = x.dim(0)?;
                self.norm(&x.reshape((rows * heads, hd))?, w)?.reshape((rows, heads * hd))
            }
            None => Ok(x.clone()),
        }
    }

    /// The layer `l` on hidden rows `x` `[B*T, H]`, the same shape out.
    pub fn layer(&self, l: &Layer, ctx: &AttentionInputs, x: &Tensor) -> Result<Tensor> {
        let (on, sink) = (self.on, self.sink.as_ref());
        let cfg = &self.cfg;
        let (nh, nkv) = (cfg.num_attention_heads, cfg.n_kv_heads());
        let h = self.norm(x, &l.input_norm)?;
        let (q, k, v) = (l.q.forward(&h, on, sink)?, l.k.forward(&h, on, sink)?, l.v.forward(&h, on, sink)?);
        let (q, k) = (self.head_norm(&q, &l.q_norm, nh)?, self.head_norm(&k, &l.k_norm, nkv)?);
        let y = if self.fused { self.fused_attention(&q, &k, &v, ctx)? } else { self.attention(&q, &k, &v, ctx)? };
        let a = l.o.forward(&y, on, sink)?;
        let (x, h) = match &l.pre_ffn_norm {
            Some(pre) => {
                let x = (x + self.norm(&a, &l.post_norm)?)?;
                let h = self.norm(&x, pre)?;
                (x, h)
            }
            None => {
                let x = (x + a)?;
                let h = self.norm(&x, &l.post_norm)?;
                (x, h)
            }
        };
        let (gate, up) = (l.gate.forward(&h, on, sink)?, l.up.forward(&h, on, sink)?);
        let ff = match cfg.activation {
            Activation::Silu => match super::swiglu::swiglu(&gate, &up).filter(|_| self.fused) {
                Some(ff) => ff?,
                None => (gate.silu()? * up)?,
            },
            Activation::GeluTanh => (gate.gelu()? * up)?,
        };
        let ff = l.down.forward(&ff, on, sink)?;
        match &l.post_ffn_norm {
            Some(post) => x + self.norm(&ff, post)?,
            None => x + ff,
        }
    }

    /// Attention from composed candle ops (every device): q, k, v `[B*T, heads * head_dim]` in,
    /// the same layout out.
    fn attention(&self, q: &Tensor, k: &Tensor, v: &Tensor, ctx: &AttentionInputs) -> Result<Tensor> {
        let AttentionInputs { b, t, .. } = *ctx;
        let cfg = &self.cfg;
        let (nh, nkv, hd) = (cfg.num_attention_heads, cfg.n_kv_heads(), cfg.head_dim());
        let rep = nh / nkv;
        let dt = self.dt;
        let heads =
            |x: &Tensor, n: usize| -> Result<Tensor> { x.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous() };
        let q = rope(&heads(q, nh)?, &ctx.cos, &ctx.sin)?;
        let k = rope(&heads(k, nkv)?, &ctx.cos, &ctx.sin)?;
        let v = heads(v, nkv)?;
        // Grouped-query attention without repeating k/v: the `rep` query heads that share a
        // kv head are stacked along the query axis.
        let q = q.reshape((b, nkv, rep * t, hd))?;
        let att = softcap(&(q.matmul(&k.t()?)? * cfg.attention_scale())?, cfg.attn_softcap)?;
        let att = att.reshape((b, nkv, rep, t, t))?;
        let att = softmax_last(&att.to_dtype(ctx.att_dt)?.broadcast_add(&ctx.bias)?)?;
        let att = att.to_dtype(dt)?.reshape((b, nkv, rep * t, t))?;
        let y = att.matmul(&v)?.reshape((b, nh, t, hd))?.transpose(1, 2)?;
        y.contiguous()?.reshape((b * t, nh * hd))
    }

    /// The same as one fused CPU op (`attention.rs`).
    fn fused_attention(&self, q: &Tensor, k: &Tensor, v: &Tensor, ctx: &AttentionInputs) -> Result<Tensor> {
        let AttentionInputs { b, t, .. } = *ctx;
        let cfg = &self.cfg;
        let hd = cfg.head_dim();
        let heads =
            Heads { batch: b, seq: t, q_heads: cfg.num_attention_heads, kv_heads: cfg.n_kv_heads(), head_dim: hd };
        // The fused kernel rotates whole heads and has no soft-capping.
        if ctx.cos.dim(D::Minus1)? * 2 != hd || cfg.attn_softcap.is_some() {
            return self.attention(q, k, v, ctx);
        }
        let (cos, sin) = (ctx.cos.reshape((b * t, hd / 2))?, ctx.sin.reshape((b * t, hd / 2))?);
        let bias = ctx.bias.reshape((b, t, t))?;
        match super::attention::attention(q, k, v, (&cos, &sin, &bias), heads, cfg.attention_scale()) {
            Some(y) => y,
            None => self.attention(q, k, v, ctx),
        }
    }
}
