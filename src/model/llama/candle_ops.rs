//! The candle-ops execution of `llama::Transformer` (GPUs, and the CPU after
//! `use_candle_ops`): one sequence as tensors, its keys and values grown with `cat` in its
//! `KvCache`. `host.rs` is the same network on plain f32 rows; a family feature goes into both.

use candle_core::{D, Device, Module, Tensor};

use super::{Config, KvCache, Layer, Linear, Transformer, Weight};

impl Linear {
    pub(super) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = match &self.weight {
            Weight::Cpu(q) => q.matmul(x)?,
            Weight::Candle(w) => w.forward(x)?,
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

impl Transformer {
    /// The GPU execution (and the CPU's after `use_candle_ops`): candle's ops, one sequence.
    pub(super) fn forward_tensors(&self, tokens: &[u32], cache: &mut KvCache) -> candle_core::Result<Tensor> {
        let seq = tokens.len();
        let start = cache.pos;
        self.check_fits(seq, start)?;
        let device = self.embed.device();
        let ids = Tensor::new(tokens, device)?;
        let mut x = self.embed.index_select(&ids, 0)?.unsqueeze(0)?;
        if let Some(s) = self.cfg.embed_scale {
            x = (x * (s as f32) as f64)?;
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let window = self.cfg.windows[i];
            let mask = match (seq > 1, window) {
                (false, None) => None,
                _ => Some(causal_mask(seq, start, window, device)?),
            };
            let (cos, sin) = &self.tables[usize::from(self.cfg.local(i))];
            let (cos, sin) = (cos.narrow(0, start, seq)?, sin.narrow(0, start, seq)?);
            x = layer.forward_tensors(&self.cfg, x, &mut cache.tensors[i], mask.as_ref(), &cos, &sin)?;
        }
        cache.pos += seq;
        candle_nn::ops::rms_norm(&x, &self.norm, self.cfg.rms_eps as f32)
    }
}

impl Layer {
    /// One layer with candle's ops on `x` [1, seq, hidden].
    fn forward_tensors(
        &self,
        c: &Config,
        x: Tensor,
        cache: &mut Option<(Tensor, Tensor)>,
        mask: Option<&Tensor>,
        cos: &Tensor,
        sin: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let eps = c.rms_eps as f32;
        let post = |t: Tensor, w: &Option<Tensor>| match w {
            Some(w) => candle_nn::ops::rms_norm(&t, w, eps),
            None => Ok(t),
        };
        let h = candle_nn::ops::rms_norm(&x, &self.attn_norm, eps)?;
        let h = post(self.attention(c, &h, cache, mask, cos, sin)?, &self.post_attn_norm)?;
        let x = (x + h)?;
        let h = candle_nn::ops::rms_norm(&x, &self.ffn_norm, eps)?;
        let gate = self.gate.forward(&h)?;
        let gate = match c.activation {
            super::super::arch::Activation::Silu => candle_nn::ops::silu(&gate)?,
            super::super::arch::Activation::GeluTanh => gate.gelu()?,
        };
        let act = (gate * self.up.forward(&h)?)?;
        x + post(self.down.forward(&act)?, &self.post_ffn_norm)?
    }

    fn attention(
        &self,
        c: &Config,
        x: &Tensor,
        cache: &mut Option<(Tensor, Tensor)>,
        mask: Option<&Tensor>,
        cos: &Tensor,
        sin: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let layer = self;
        let (b, seq, _) = x.dims3()?;
        let heads = |t: Tensor, n: usize, norm: &Option<Tensor>| {
            let t = t.reshape((b, seq, n, c.head_dim))?;
            let t = match norm {
                Some(w) => candle_nn::ops::rms_norm(&t.contiguous()?, w, c.rms_eps as f32)?,
                None => t,
            };
            t.transpose(1, 2)?.contiguous()
        };
        let q = heads(layer.q.forward(x)?, c.n_heads, &layer.q_norm)?;
        let k = heads(layer.k.forward(x)?, c.n_kv_heads, &layer.k_norm)?;
        let v = heads(layer.v.forward(x)?, c.n_kv_heads, &None)?;
        let rope_fn = if c.rope_interleaved { candle_nn::rotary_emb::rope_i } else { candle_nn::rotary_emb::rope };
        let rope = |t: &Tensor| -> candle_core::Result<Tensor> {
            if c.rotary_dim == c.head_dim {
                return rope_fn(t, cos, sin);
            }
            let rot = rope_fn(&t.narrow(D::Minus1, 0, c.rotary_dim)?.contiguous()?, cos, sin)?;
            Tensor::cat(&[rot, t.narrow(D::Minus1, c.rotary_dim, c.head_dim - c.rotary_dim)?], D::Minus1)?.contiguous()
        };
        let q = rope(&q)?;
        let k = rope(&k)?;
        let (k, v) = match cache.take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
            None => (k, v),
        };
        *cache = Some((k.clone(), v.clone()));
        let total = k.dim(2)?;
        // Grouped-query attention without copying K/V per head: the query heads that share a
        // KV head are stacked along the row axis, [b, kv, groups*seq, hd] x [b, kv, hd, total].
        let groups = c.n_heads / c.n_kv_heads;
        let q = q.reshape((b, c.n_kv_heads, groups * seq, c.head_dim))?;
        let att = (q.matmul(&k.t()?)? * c.attn_scale)?;
        let att = match c.attn_softcap {
            Some(cap) => ((att / cap)?.tanh()? * cap)?,
            None => att,
        };
        let att = match mask {
            Some(m) => att.reshape((b, c.n_kv_heads, groups, seq, total))?.broadcast_add(m)?.reshape((
                b,
                c.n_kv_heads,
                groups * seq,
                total,
            ))?,
            None => att,
        };
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let y = att.matmul(&v)?; // [b, kv, groups*seq, hd]
        let y =
            y.reshape((b, c.n_heads, seq, c.head_dim))?.transpose(1, 2)?.reshape((b, seq, c.n_heads * c.head_dim))?;
        layer.o.forward(&y)
    }
}

/// Additive causal mask [seq, start + seq]: 0 where position j may be seen from row i (and,
/// with a sliding window, is fewer than `window` positions back).
fn causal_mask(seq: usize, start: usize, window: Option<usize>, device: &Device) -> candle_core::Result<Tensor> {
    let total = start + seq;
    let w = window.unwrap_or(usize::MAX);
    let data: Vec<f32> = (0..seq)
        .flat_map(|i| {
            (0..total).map(move |j| if j <= start + i && start + i - j < w { 0.0 } else { f32::NEG_INFINITY })
        })
        .collect();
    Tensor::from_vec(data, (seq, total), device)
}
