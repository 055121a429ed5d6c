//! The transformer used for inference, for every family verdict runs (SmolLM2, Llama 3.x,
//! Mistral, Qwen2/3, Gemma 2/3, Phi-3): the llama layout plus the families' differences (q/k
//! norms, Gemma's norms, scales and soft-capping, sliding windows, partial rotary), as
//! `model::arch` reads them.
//!
//! Written here rather than taken from candle-transformers because generation needs a KV cache
//! that lives outside the weights and can be cloned after one shared prefill (candle's
//! `quantized_llama` keeps its cache private), and because one implementation serves both GGUF
//! and safetensors weights, so the two formats of a model give the same logits.
//!
//! Two executions of the same layers: on the CPU, `forward_host` runs plain f32 rows through
//! verdict's quantized kernels (`q8_cpu`) and fused loops (`cpu_ops`), with the KV cache in
//! buffers reserved up front and any number of sequences at once (the candidates of a prompt
//! decode as one batch, so every weight is read once per step for all of them); on GPUs,
//! `forward_tensors` runs candle's ops. A family feature goes into both (`Layer::forward_host`
//! and `Layer::forward_tensors`); `tests_tiny` checks that they agree.

use super::arch::LayerAttention;
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
    /// Rotated dimensions of each head (less than `head_dim` with a partial rotary factor).
    pub rotary_dim: usize,
    /// Per layer: the window of positions it attends over (`None`: all earlier ones).
    pub windows: Vec<Option<usize>>,
    /// Gemma 3's rotary settings of its sliding layers.
    pub local_rope: Option<super::arch::Rope>,
    /// What attention scores are multiplied by.
    pub attn_scale: f64,
    /// Gemma 2's soft-capping of attention scores and of the logits.
    pub attn_softcap: Option<f64>,
    pub final_softcap: Option<f64>,
    /// Gemma's embedding scale (`sqrt(hidden)`).
    pub embed_scale: Option<f64>,
    pub activation: super::arch::Activation,
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
            rotary_dim: arch.rope.rotary_dim(arch.head_dim),
            windows: (0..arch.num_hidden_layers).map(|i| arch.layer_window(i)).collect(),
            local_rope: arch.local_rope.clone(),
            attn_scale: arch.attention_scale(),
            attn_softcap: arch.attn_softcap,
            final_softcap: arch.final_softcap,
            embed_scale: arch.family.gemma().then(|| (arch.hidden_size as f64).sqrt()),
            activation: arch.activation,
        }
    }

    /// Whether layer `i` rotates with the local table (Gemma 3's sliding layers).
    fn local(&self, i: usize) -> bool {
        self.local_rope.is_some() && self.windows[i].is_some()
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

impl Linear {
    /// `x @ Wᵀ + b` for the `x.m` rows of `x`, on the CPU.
    fn forward_host(&self, x: &HostRows) -> candle_core::Result<Vec<f32>> {
        let mut y = match &self.weight {
            Weight::Cpu(q) => q.matmul_rows(x.quantized()),
            Weight::Candle(w) => {
                let t = Tensor::from_slice(x.x, (x.m, x.x.len() / x.m.max(1)), &Device::Cpu)?;
                w.forward(&t)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?
            }
        };
        if let Some(b) = &self.bias {
            let b: Vec<f32> = b.to_dtype(DType::F32)?.to_vec1()?;
            for row in y.chunks_exact_mut(b.len()) {
                super::cpu_ops::add_in_place(row, &b);
            }
        }
        Ok(y)
    }
}

/// Activation rows on the CPU, quantized at most once however many matrices read them.
struct HostRows<'a> {
    x: &'a [f32],
    m: usize,
    quantized: std::cell::OnceCell<super::q8_cpu::QuantizedRows>,
}

impl<'a> HostRows<'a> {
    fn new(x: &'a [f32], m: usize) -> Self {
        HostRows { x, m, quantized: std::cell::OnceCell::new() }
    }

    fn quantized(&self) -> &super::q8_cpu::QuantizedRows {
        self.quantized.get_or_init(|| super::q8_cpu::QuantizedRows::new(self.x, self.x.len() / self.m.max(1)))
    }
}

/// One layer. Norm weights are as applied (Gemma's `1 + w` already added).
#[derive(Debug, Clone)]
pub struct Layer {
    pub attn_norm: Tensor,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    /// The norm before the MLP (HF's `post_attention_layernorm`; Gemma's `pre_feedforward_layernorm`).
    pub ffn_norm: Tensor,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
    /// Qwen3's and Gemma 3's per-head q/k norms.
    pub q_norm: Option<Tensor>,
    pub k_norm: Option<Tensor>,
    /// Gemma's norms on the attention output and on the MLP output.
    pub post_attn_norm: Option<Tensor>,
    pub post_ffn_norm: Option<Tensor>,
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
    /// Rotation tables [context, rotary_dim / 2]: the global ones, then (Gemma 3) the local ones.
    tables: Vec<(Tensor, Tensor)>,
    /// Present when the weights are on the CPU: the forward pass then runs `forward_host`.
    host: Option<Host>,
}

/// Per-sequence attention cache. On the CPU, each layer's keys and values are rows of
/// `n_kv_heads * head_dim` values in buffers reserved for the whole sequence up front
/// (`Transformer::new_cache_for`), written in place; cloning copies them (a candidate's own
/// cache after the shared prefill). Elsewhere it holds candle tensors grown with `cat`.
#[derive(Debug)]
pub struct KvCache {
    host: Vec<HostKv>,
    tensors: Vec<Option<(Tensor, Tensor)>>,
    pos: usize,
}

#[derive(Debug, Default)]
struct HostKv {
    k: Vec<f32>,
    v: Vec<f32>,
}

impl Clone for KvCache {
    /// Keeps the reserved room, so the clone appends without reallocating either.
    fn clone(&self) -> Self {
        let copy = |v: &Vec<f32>| {
            let mut c = Vec::with_capacity(v.capacity());
            c.extend_from_slice(v);
            c
        };
        KvCache {
            host: self.host.iter().map(|l| HostKv { k: copy(&l.k), v: copy(&l.v) }).collect(),
            tensors: self.tensors.clone(),
            pos: self.pos,
        }
    }
}

impl KvCache {
    pub fn new(n_layers: usize) -> Self {
        KvCache { host: (0..n_layers).map(|_| HostKv::default()).collect(), tensors: vec![None; n_layers], pos: 0 }
    }

    /// Number of positions already in the cache.
    pub fn len(&self) -> usize {
        self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }
}

/// One sequence of a batched forward pass: its new tokens and its cache.
pub struct Seq<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
}

/// Host copies of what the CPU path reads besides the matrices.
#[derive(Debug)]
struct Host {
    /// (cos, sin) [context, rotary_dim / 2], as `Transformer::tables`.
    tables: Vec<(Vec<f32>, Vec<f32>)>,
    norms: Vec<HostNorms>,
    norm: Vec<f32>,
}

/// One layer's norm weights on the host.
#[derive(Debug)]
struct HostNorms {
    attn: Vec<f32>,
    ffn: Vec<f32>,
    q: Option<Vec<f32>>,
    k: Option<Vec<f32>>,
    post_attn: Option<Vec<f32>>,
    post_ffn: Option<Vec<f32>>,
}

impl Host {
    fn new(layers: &[Layer], norm: &Tensor, tables: &[(Tensor, Tensor)]) -> candle_core::Result<Host> {
        let v = |t: &Tensor| t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>();
        let o = |t: &Option<Tensor>| t.as_ref().map(v).transpose();
        let norms = layers
            .iter()
            .map(|l| {
                Ok(HostNorms {
                    attn: v(&l.attn_norm)?,
                    ffn: v(&l.ffn_norm)?,
                    q: o(&l.q_norm)?,
                    k: o(&l.k_norm)?,
                    post_attn: o(&l.post_attn_norm)?,
                    post_ffn: o(&l.post_ffn_norm)?,
                })
            })
            .collect::<candle_core::Result<_>>()?;
        let tables = tables.iter().map(|(c, s)| Ok((v(c)?, v(s)?))).collect::<candle_core::Result<_>>()?;
        Ok(Host { tables, norms, norm: v(norm)? })
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
        let table = |rope: &super::arch::Rope| -> candle_core::Result<(Tensor, Tensor)> {
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
            Ok((
                Tensor::from_vec(cos, (cfg.context, half), device)?,
                Tensor::from_vec(sin, (cfg.context, half), device)?,
            ))
        };
        let mut tables = vec![table(rope)?];
        if let Some(local) = &cfg.local_rope {
            tables.push(table(local)?);
        }
        let host = match device {
            Device::Cpu => Some(Host::new(&layers, &norm, &tables)?),
            _ => None,
        };
        Ok(Transformer { tables, cfg, embed, layers, norm, lm_head, host })
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
        let gemma = self.cfg.embed_scale.is_some();
        let norm_w = |name: &str| -> candle_core::Result<Tensor> {
            let w = get(name)?;
            if gemma { w.affine(1.0, 1.0) } else { Ok(w) }
        };
        let opt_norm = |name: String| -> candle_core::Result<Option<Tensor>> {
            if tensors.contains_key(&name) { norm_w(&name).map(Some) } else { Ok(None) }
        };
        let mut layers = Vec::with_capacity(self.cfg.n_layers);
        for i in 0..self.cfg.n_layers {
            let p = format!("model.layers.{i}");
            let (post_attn_norm, ffn_norm) = match opt_norm(format!("{p}.pre_feedforward_layernorm.weight"))? {
                Some(pre) => (Some(norm_w(&format!("{p}.post_attention_layernorm.weight"))?), pre),
                None => (None, norm_w(&format!("{p}.post_attention_layernorm.weight"))?),
            };
            layers.push(Layer {
                attn_norm: norm_w(&format!("{p}.input_layernorm.weight"))?,
                q: linear(&format!("{p}.self_attn.q_proj"))?,
                k: linear(&format!("{p}.self_attn.k_proj"))?,
                v: linear(&format!("{p}.self_attn.v_proj"))?,
                o: linear(&format!("{p}.self_attn.o_proj"))?,
                ffn_norm,
                gate: linear(&format!("{p}.mlp.gate_proj"))?,
                up: linear(&format!("{p}.mlp.up_proj"))?,
                down: linear(&format!("{p}.mlp.down_proj"))?,
                q_norm: opt_norm(format!("{p}.self_attn.q_norm.weight"))?,
                k_norm: opt_norm(format!("{p}.self_attn.k_norm.weight"))?,
                post_attn_norm,
                post_ffn_norm: opt_norm(format!("{p}.post_feedforward_layernorm.weight"))?,
            });
        }
        let embed = get("model.embed_tokens.weight")?;
        let lm_head = match tensors.contains_key("lm_head.weight") {
            true => Linear::new(QMatMul::Tensor(get("lm_head.weight")?), None),
            false => Linear::new(QMatMul::Tensor(embed.clone()), None),
        };
        // HF layout pairs rotary dims (i, i + d/2); the rotation tables do not depend on it.
        let cfg = Config { rope_interleaved: false, ..self.cfg.clone() };
        let norm = norm_w("model.norm.weight")?;
        let host = match &self.host {
            Some(_) => Some(Host::new(&layers, &norm, &self.tables)?),
            None => None,
        };
        Ok(Transformer { cfg, embed, layers, norm, lm_head, tables: self.tables.clone(), host })
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.cfg.n_layers)
    }

    /// A cache with room for `positions` positions, so appending never reallocates.
    pub fn new_cache_for(&self, positions: usize) -> KvCache {
        let mut cache = self.new_cache();
        if self.host.is_some() {
            let room = positions.min(self.cfg.context) * self.cfg.n_kv_heads * self.cfg.head_dim;
            for l in &mut cache.host {
                l.k.reserve_exact(room);
                l.v.reserve_exact(room);
            }
        }
        cache
    }

    /// Whether `forward_last_batch` gives each sequence exactly the logits it gets alone: on
    /// the CPU path with every matrix on verdict's kernels (each row's sums in the same order
    /// whatever the rows beside it), not with candle's products (blocked by row count).
    pub fn batch_is_exact(&self) -> bool {
        let cpu = |l: &Linear| matches!(l.weight, Weight::Cpu(_));
        self.host.is_some()
            && cpu(&self.lm_head)
            && self.layers.iter().all(|l| [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down].into_iter().all(cpu))
    }

    /// Runs candle's ops from now on, even on the CPU (to compare the two executions).
    pub fn use_candle_ops(&mut self) {
        self.host = None;
    }

    /// Runs `tokens` (one sequence) through the network after what `cache` holds, appends to the
    /// cache, and returns the logits of every position, [seq, vocab], f32.
    pub fn forward_all(&self, tokens: &[u32], cache: &mut KvCache) -> candle_core::Result<Tensor> {
        if let Some(host) = &self.host {
            let logits = self.forward_host(host, &mut [Seq { tokens, cache }], true)?;
            return Tensor::from_vec(logits.concat(), (tokens.len(), self.cfg.vocab), &Device::Cpu);
        }
        let h = self.forward_tensors(tokens, cache)?;
        let logits = self.lm_head.forward(&h)?.squeeze(0)?.to_dtype(DType::F32)?;
        match self.cfg.final_softcap {
            Some(c) => (logits / c)?.tanh()? * c,
            None => Ok(logits),
        }
    }

    /// Like `forward_all` but computes the output projection for the last position only
    /// (the 49k-row vocabulary projection is the largest single matmul).
    pub fn forward_last(&self, tokens: &[u32], cache: &mut KvCache) -> candle_core::Result<Tensor> {
        let logits = self.forward_last_batch(&mut [Seq { tokens, cache }])?.concat();
        Tensor::from_vec(logits, self.cfg.vocab, self.embed.device())
    }

    /// `forward_last` for several sequences at once: on the CPU their rows go through every
    /// weight matrix together (each weight read once for all); each sequence attends to its
    /// own cache. Returns each sequence's last-position logits.
    pub fn forward_last_batch(&self, seqs: &mut [Seq]) -> candle_core::Result<Vec<Vec<f32>>> {
        if let Some(host) = &self.host {
            return self.forward_host(host, seqs, false);
        }
        let mut out = Vec::with_capacity(seqs.len());
        for s in seqs.iter_mut() {
            let h = self.forward_tensors(s.tokens, s.cache)?;
            let seq = h.dim(1)?;
            let last = h.narrow(1, seq - 1, 1)?.contiguous()?;
            let mut logits: Vec<f32> = self.lm_head.forward(&last)?.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
            softcap(&mut logits, self.cfg.final_softcap);
            out.push(logits);
        }
        Ok(out)
    }

    fn check_fits(&self, seq: usize, start: usize) -> candle_core::Result<()> {
        if seq == 0 || start + seq > self.cfg.context {
            candle_core::bail!("{} positions do not fit the context of {}", start + seq, self.cfg.context);
        }
        Ok(())
    }

    /// The CPU execution: all sequences' new rows together through each layer. Returns the
    /// logits of every row (`all`) or of each sequence's last row, one `Vec` per row.
    fn forward_host(&self, host: &Host, seqs: &mut [Seq], all: bool) -> candle_core::Result<Vec<Vec<f32>>> {
        let c = &self.cfg;
        let mut ids = Vec::new();
        // Per row: its sequence and its position.
        let mut rows: Vec<(usize, usize)> = Vec::new();
        for (s, seq) in seqs.iter().enumerate() {
            self.check_fits(seq.tokens.len(), seq.cache.pos)?;
            ids.extend_from_slice(seq.tokens);
            rows.extend((0..seq.tokens.len()).map(|r| (s, seq.cache.pos + r)));
        }
        let ids = Tensor::new(ids.as_slice(), &Device::Cpu)?;
        let mut x: Vec<f32> = self.embed.index_select(&ids, 0)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        if let Some(s) = c.embed_scale {
            let s = s as f32;
            x.iter_mut().for_each(|v| *v *= s);
        }
        for (i, layer) in self.layers.iter().enumerate() {
            layer.forward_host(c, host, i, &mut x, &rows, seqs)?;
        }
        for seq in seqs.iter_mut() {
            seq.cache.pos += seq.tokens.len();
        }
        let wanted: Vec<usize> = match all {
            true => (0..rows.len()).collect(),
            false => (0..rows.len()).filter(|&r| r + 1 == rows.len() || rows[r + 1].0 != rows[r].0).collect(),
        };
        let picked: Vec<f32> =
            wanted.iter().flat_map(|&r| x[r * c.hidden..(r + 1) * c.hidden].iter().copied()).collect();
        let mut normed = vec![0f32; picked.len()];
        super::cpu_ops::rms_norm_rows(&picked, &host.norm, c.rms_eps as f32, &mut normed);
        let mut logits = self.lm_head.forward_host(&HostRows::new(&normed, wanted.len()))?;
        softcap(&mut logits, c.final_softcap);
        Ok(logits.chunks_exact(c.vocab).map(|r| r.to_vec()).collect())
    }

    /// The GPU execution (and the CPU's after `use_candle_ops`): candle's ops, one sequence.
    fn forward_tensors(&self, tokens: &[u32], cache: &mut KvCache) -> candle_core::Result<Tensor> {
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
    /// One layer over the rows `x` ([rows, hidden], updated in place) of several sequences:
    /// `rows[r]` = (sequence, position) of row r; a sequence's rows are consecutive.
    fn forward_host(
        &self,
        c: &Config,
        host: &Host,
        index: usize,
        x: &mut [f32],
        rows: &[(usize, usize)],
        seqs: &mut [Seq],
    ) -> candle_core::Result<()> {
        use super::cpu_ops::{add_in_place, attend, gelu_tanh_glu, rms_norm_rows, rope_row, swiglu};
        let (m, hd) = (rows.len(), c.head_dim);
        let norms = &host.norms[index];
        let eps = c.rms_eps as f32;
        let mut h = vec![0f32; x.len()];
        rms_norm_rows(x, &norms.attn, eps, &mut h);
        let input = HostRows::new(&h, m);
        let mut q = self.q.forward_host(&input)?;
        let mut k = self.k.forward_host(&input)?;
        let v = self.v.forward_host(&input)?;
        for (t, w) in [(&mut q, &norms.q), (&mut k, &norms.k)] {
            if let Some(w) = w {
                let src = t.clone();
                rms_norm_rows(&src, w, eps, t);
            }
        }
        let (rot, half) = (c.rotary_dim, c.rotary_dim / 2);
        let (qw, kw) = (c.n_heads * hd, c.n_kv_heads * hd);
        let (cos_t, sin_t) = &host.tables[usize::from(c.local(index))];
        for (r, &(_, pos)) in rows.iter().enumerate() {
            let (cos, sin) = (&cos_t[pos * half..(pos + 1) * half], &sin_t[pos * half..(pos + 1) * half]);
            for (t, w) in [(&mut q, qw), (&mut k, kw)] {
                let row = &mut t[r * w..(r + 1) * w];
                if rot == hd {
                    rope_row(row, hd, cos, sin, c.rope_interleaved);
                } else {
                    for head in row.chunks_exact_mut(hd) {
                        rope_row(&mut head[..rot], rot, cos, sin, c.rope_interleaved);
                    }
                }
            }
        }
        // Each sequence's new keys and values go after what its cache holds.
        let mut first = 0;
        for seq in seqs.iter_mut() {
            let n = seq.tokens.len();
            let kv = &mut seq.cache.host[index];
            kv.k.truncate(seq.cache.pos * kw);
            kv.v.truncate(seq.cache.pos * kw);
            kv.k.extend_from_slice(&k[first * kw..(first + n) * kw]);
            kv.v.extend_from_slice(&v[first * kw..(first + n) * kw]);
            first += n;
        }
        // Every (row, query head) attends to its sequence's positions up to its own; the query
        // heads that share a KV head read the same cache rows.
        let caches: Vec<&HostKv> = seqs.iter().map(|s| &s.cache.host[index]).collect();
        let groups = c.n_heads / c.n_kv_heads;
        let scale = c.attn_scale as f32;
        let (window, cap) = (c.windows[index], c.attn_softcap.map(|v| v as f32));
        let mut y = vec![0f32; m * qw];
        let one = |(j, out): (usize, &mut [f32]), scores: &mut Vec<f32>| {
            let (r, head) = (j / c.n_heads, j % c.n_heads);
            let (s, pos) = rows[r];
            // A sliding window sees the positions (pos - window, pos].
            let lo = window.map_or(0, |w| (pos + 1).saturating_sub(w));
            let (kv, at) = (caches[s], lo * kw + (head / groups) * hd);
            scores.resize(pos + 1 - lo, 0.0);
            let q = &q[r * qw + head * hd..r * qw + (head + 1) * hd];
            attend(q, &kv.k[at..], &kv.v[at..], kw, pos + 1 - lo, scale, cap, scores, out)
        };
        let work: usize = rows.iter().map(|r| r.1 + 1).sum::<usize>() * c.n_heads * hd;
        if candle_core::utils::get_num_threads() > 1 && work >= 1 << 16 {
            use rayon::prelude::*;
            y.par_chunks_mut(hd).enumerate().for_each_init(Vec::new, |scores, job| one(job, scores));
        } else {
            let mut scores = Vec::new();
            y.chunks_mut(hd).enumerate().for_each(|job| one(job, &mut scores));
        }
        let post = |mut t: Vec<f32>, w: &Option<Vec<f32>>| {
            if let Some(w) = w {
                let src = t.clone();
                rms_norm_rows(&src, w, eps, &mut t);
            }
            t
        };
        add_in_place(x, &post(self.o.forward_host(&HostRows::new(&y, m))?, &norms.post_attn));
        rms_norm_rows(x, &norms.ffn, eps, &mut h);
        let input = HostRows::new(&h, m);
        let mut gate = self.gate.forward_host(&input)?;
        match c.activation {
            super::arch::Activation::Silu => swiglu(&mut gate, &self.up.forward_host(&input)?),
            super::arch::Activation::GeluTanh => gelu_tanh_glu(&mut gate, &self.up.forward_host(&input)?),
        }
        add_in_place(x, &post(self.down.forward_host(&HostRows::new(&gate, m))?, &norms.post_ffn));
        Ok(())
    }

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
            super::arch::Activation::Silu => candle_nn::ops::silu(&gate)?,
            super::arch::Activation::GeluTanh => gate.gelu()?,
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

/// `tanh(x / cap) * cap` in place (Gemma 2's final logit soft-capping).
fn softcap(x: &mut [f32], cap: Option<f64>) {
    if let Some(c) = cap {
        let c = c as f32;
        x.iter_mut().for_each(|v| *v = (*v / c).tanh() * c);
    }
}

/// Largest absolute difference between two tensors (for tests and fixture comparison).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> candle_core::Result<f32> {
    (a - b)?.abs()?.flatten_all()?.max(D::Minus1)?.to_scalar::<f32>()
}
