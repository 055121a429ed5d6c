//! The llama-family transformer used for inference (SmolLM2, Llama 3.x, Mistral, Qwen2.x).
//!
//! Written here rather than taken from candle-transformers because generation needs a KV cache
//! that lives outside the weights and can be cloned after one shared prefill (candle's
//! `quantized_llama` keeps its cache private), and because one implementation serves both GGUF
//! and safetensors weights, so the two formats of a model give the same logits.

use candle_core::quantized::QMatMul;
use candle_core::{D, DType, Device, Module, Tensor};

/// Hyper-parameters, from GGUF metadata or config.json.
#[derive(Debug, Clone)]
pub struct Config {
    pub hidden: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub rms_eps: f64,
    pub rope_theta: f64,
    pub context: usize,
    /// GGUF llama weights pair rotary dims (2i, 2i+1) because the converter permuted q/k; HF
    /// layout (and GGUF qwen2) pairs (i, i + d/2).
    pub rope_interleaved: bool,
}

impl Config {
    /// The network's shape from a family's configuration; `vocab` from the embedding matrix.
    pub fn new(arch: &super::arch::ArchConfig, vocab: usize, rope_interleaved: bool) -> Config {
        Config {
            hidden: arch.hidden_size,
            n_layers: arch.num_hidden_layers,
            n_heads: arch.num_attention_heads,
            n_kv_heads: arch.num_key_value_heads,
            head_dim: arch.head_dim,
            vocab,
            rms_eps: arch.rms_norm_eps,
            rope_theta: arch.rope.theta,
            context: arch.context(),
            rope_interleaved,
        }
    }
}

/// A linear layer: quantized or dense weights, optional bias (Qwen2 has q/k/v biases).
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Weight,
    pub bias: Option<Tensor>,
}

/// Who multiplies by the weights.
#[derive(Debug, Clone)]
pub enum Weight {
    /// candle: dense on any device, quantized on GPUs and where verdict's CPU kernel does not apply.
    Candle(QMatMul),
    /// verdict's AVX2 kernel for Q4_1 and Q8_0 on CPU (`model::q8_cpu`); holds the only copy.
    Cpu(std::sync::Arc<super::q8_cpu::Q8Matrix>),
}

impl Linear {
    /// Weights multiplied by candle.
    pub fn new(weight: QMatMul, bias: Option<Tensor>) -> Linear {
        Linear { weight: Weight::Candle(weight), bias }
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
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

#[derive(Debug, Clone)]
pub struct Layer {
    pub attn_norm: Tensor,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub ffn_norm: Tensor,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

/// The whole network. Immutable during generation: all state is in `KvCache`.
#[derive(Debug)]
pub struct Transformer {
    pub cfg: Config,
    /// Dense f32 token embeddings [vocab, hidden].
    pub embed: Tensor,
    pub layers: Vec<Layer>,
    pub norm: Tensor,
    pub lm_head: Linear,
    cos: Tensor,
    sin: Tensor,
}

/// Per-sequence attention cache. Cloning is cheap (tensors are reference counted) and safe:
/// appending builds new tensors with `cat`, never writes into storage a clone shares.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    pos: usize,
}

impl KvCache {
    pub fn new(n_layers: usize) -> Self {
        KvCache { layers: vec![None; n_layers], pos: 0 }
    }

    /// Number of positions already in the cache.
    pub fn len(&self) -> usize {
        self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }
}

impl Transformer {
    /// The rotation tables come from `rope` (its scaling and attention factor, `model::arch`),
    /// computed in f64 like the trainer's.
    pub fn new(
        cfg: Config,
        embed: Tensor,
        layers: Vec<Layer>,
        norm: Tensor,
        lm_head: Linear,
        rope: &super::arch::Rope,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let inv_freq = rope.inv_freq(cfg.head_dim);
        let scale = rope.attention_factor();
        let half = inv_freq.len();
        let (mut cos, mut sin) = (Vec::with_capacity(cfg.context * half), Vec::with_capacity(cfg.context * half));
        for p in 0..cfg.context {
            for f in &inv_freq {
                let a = p as f64 * f;
                cos.push((a.cos() * scale) as f32);
                sin.push((a.sin() * scale) as f32);
            }
        }
        let cos = Tensor::from_vec(cos, (cfg.context, half), device)?;
        let sin = Tensor::from_vec(sin, (cfg.context, half), device)?;
        Ok(Transformer { cos, sin, cfg, embed, layers, norm, lm_head })
    }

    /// The same architecture with other dense weights under Hugging Face names and layout
    /// (a training run's current weights), so a run can generate with what it has learned.
    pub fn with_hf_weights(&self, tensors: &std::collections::HashMap<String, Tensor>) -> candle_core::Result<Self> {
        let get = |name: &str| -> candle_core::Result<Tensor> {
            let t = tensors.get(name).ok_or_else(|| candle_core::Error::Msg(format!("weights lack {name}")))?;
            t.to_dtype(DType::F32)?.to_device(self.embed.device())
        };
        let linear = |prefix: &str| -> candle_core::Result<Linear> {
            let bias = match tensors.contains_key(&format!("{prefix}.bias")) {
                true => Some(get(&format!("{prefix}.bias"))?),
                false => None,
            };
            Ok(Linear::new(QMatMul::Tensor(get(&format!("{prefix}.weight"))?), bias))
        };
        let mut layers = Vec::with_capacity(self.cfg.n_layers);
        for i in 0..self.cfg.n_layers {
            let p = format!("model.layers.{i}");
            layers.push(Layer {
                attn_norm: get(&format!("{p}.input_layernorm.weight"))?,
                q: linear(&format!("{p}.self_attn.q_proj"))?,
                k: linear(&format!("{p}.self_attn.k_proj"))?,
                v: linear(&format!("{p}.self_attn.v_proj"))?,
                o: linear(&format!("{p}.self_attn.o_proj"))?,
                ffn_norm: get(&format!("{p}.post_attention_layernorm.weight"))?,
                gate: linear(&format!("{p}.mlp.gate_proj"))?,
                up: linear(&format!("{p}.mlp.up_proj"))?,
                down: linear(&format!("{p}.mlp.down_proj"))?,
            });
        }
        let embed = get("model.embed_tokens.weight")?;
        let lm_head = match tensors.contains_key("lm_head.weight") {
            true => Linear::new(QMatMul::Tensor(get("lm_head.weight")?), None),
            false => Linear::new(QMatMul::Tensor(embed.clone()), None),
        };
        // HF layout pairs rotary dims (i, i + d/2); the rotation tables do not depend on it.
        let cfg = Config { rope_interleaved: false, ..self.cfg.clone() };
        Ok(Transformer {
            cfg,
            embed,
            layers,
            norm: get("model.norm.weight")?,
            lm_head,
            cos: self.cos.clone(),
            sin: self.sin.clone(),
        })
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.cfg.n_layers)
    }

    /// Runs `tokens` (one sequence) through the network after what `cache` holds, appends to the
    /// cache, and returns the logits of every position, [seq, vocab], f32.
    pub fn forward_all(&self, tokens: &[u32], cache: &mut KvCache) -> candle_core::Result<Tensor> {
        let h = self.hidden_states(tokens, cache)?;
        self.lm_head.forward(&h)?.squeeze(0)?.to_dtype(DType::F32)
    }

    /// Like `forward_all` but computes the output projection for the last position only
    /// (the 49k-row vocabulary projection is the largest single matmul).
    pub fn forward_last(&self, tokens: &[u32], cache: &mut KvCache) -> candle_core::Result<Tensor> {
        let h = self.hidden_states(tokens, cache)?;
        let seq = h.dim(1)?;
        let last = h.narrow(1, seq - 1, 1)?.contiguous()?;
        self.lm_head.forward(&last)?.flatten_all()?.to_dtype(DType::F32)
    }

    fn hidden_states(&self, tokens: &[u32], cache: &mut KvCache) -> candle_core::Result<Tensor> {
        let seq = tokens.len();
        let start = cache.pos;
        if seq == 0 || start + seq > self.cfg.context {
            candle_core::bail!("{} positions do not fit the context of {}", start + seq, self.cfg.context);
        }
        let device = self.embed.device();
        let ids = Tensor::new(tokens, device)?;
        let mut x = self.embed.index_select(&ids, 0)?.unsqueeze(0)?;
        let mask = if seq > 1 { Some(causal_mask(seq, start, device)?) } else { None };
        let cos = self.cos.narrow(0, start, seq)?;
        let sin = self.sin.narrow(0, start, seq)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, self.cfg.rms_eps as f32)?;
            let h = self.attention(layer, &h, &mut cache.layers[i], mask.as_ref(), &cos, &sin)?;
            x = (x + h)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, self.cfg.rms_eps as f32)?;
            let act = (candle_nn::ops::silu(&layer.gate.forward(&h)?)? * layer.up.forward(&h)?)?;
            x = (x + layer.down.forward(&act)?)?;
        }
        cache.pos += seq;
        candle_nn::ops::rms_norm(&x, &self.norm, self.cfg.rms_eps as f32)
    }

    fn attention(
        &self,
        layer: &Layer,
        x: &Tensor,
        cache: &mut Option<(Tensor, Tensor)>,
        mask: Option<&Tensor>,
        cos: &Tensor,
        sin: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let c = &self.cfg;
        let (b, seq, _) = x.dims3()?;
        let heads = |t: Tensor, n: usize| t.reshape((b, seq, n, c.head_dim))?.transpose(1, 2)?.contiguous();
        let q = heads(layer.q.forward(x)?, c.n_heads)?;
        let k = heads(layer.k.forward(x)?, c.n_kv_heads)?;
        let v = heads(layer.v.forward(x)?, c.n_kv_heads)?;
        let rope = if c.rope_interleaved { candle_nn::rotary_emb::rope_i } else { candle_nn::rotary_emb::rope };
        let q = rope(&q, cos, sin)?;
        let k = rope(&k, cos, sin)?;
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
        let att = (q.matmul(&k.t()?)? * (1.0 / (c.head_dim as f64).sqrt()))?;
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

/// Additive causal mask [seq, start + seq]: 0 where position j may be seen from row i.
fn causal_mask(seq: usize, start: usize, device: &Device) -> candle_core::Result<Tensor> {
    let total = start + seq;
    let data: Vec<f32> =
        (0..seq).flat_map(|i| (0..total).map(move |j| if j <= start + i { 0.0 } else { f32::NEG_INFINITY })).collect();
    Tensor::from_vec(data, (seq, total), device)
}

/// Largest absolute difference between two tensors (for tests and fixture comparison).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> candle_core::Result<f32> {
    (a - b)?.abs()?.flatten_all()?.max(D::Minus1)?.to_scalar::<f32>()
}
