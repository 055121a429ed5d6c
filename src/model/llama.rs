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
//! verdict's kernels (`q8_cpu` for quantized weights, `dense_cpu` for f32 ones in decode steps)
//! and fused loops (`cpu_ops`), with the KV cache in
//! buffers reserved up front and any number of sequences at once (the candidates of a prompt
//! decode as one batch, so every weight is read once per step for all of them); on GPUs,
//! `forward_tensors` runs candle's ops. A family feature goes into both (`Layer::forward_host`
//! in `llama/host.rs` and `Layer::forward_tensors` in `llama/candle_ops.rs`); `tests_tiny`
//! checks that they agree. This file holds the weights, the KV cache and the entry points.

mod candle_ops;
mod host;

use super::arch::LayerAttention;
use candle_core::quantized::QMatMul;
use candle_core::{D, DType, Device, Tensor};
use host::Host;

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

/// What `Transformer::with_hf_weights` makes of the weights it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightForm {
    /// As given (in f32): the exact model.
    AsGiven,
    /// Matrices quantized to Q8_0 (norms, biases and the embedding stay f32): the form a
    /// training run samples with, a quarter of the f32 bytes and decoded by verdict's kernel.
    Q8_0,
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

/// A network's configuration and rotation tables without its weights (`Transformer::skeleton`):
/// what a training run keeps to generate its samples with its own weights, instead of a second
/// copy of the base's.
#[derive(Debug, Clone)]
pub struct Skeleton {
    cfg: Config,
    tables: Vec<(Tensor, Tensor)>,
    /// Whether the network runs `forward_host` (on the CPU, unless `use_candle_ops`).
    host: bool,
    device: Device,
}

impl Skeleton {
    /// The network with dense weights under Hugging Face names, one projection
    /// per matrix (`q_proj`, `k_proj`, ...: Phi-3's too): a training run's current weights, so
    /// it can generate with what it has learned. `get` makes each tensor when it is needed
    /// (`None`: the model has none of that name), so `form` decides what the model holds:
    /// the tensors as given, or its matrices as Q8_0 (a quarter of their f32 bytes, made one
    /// at a time, and read by verdict's CPU kernel).
    pub fn with_hf_weights(
        &self,
        get: &dyn Fn(&str) -> candle_core::Result<Option<Tensor>>,
        form: WeightForm,
    ) -> candle_core::Result<Transformer> {
        let has = |name: &str| -> candle_core::Result<Option<Tensor>> {
            match get(name)? {
                Some(t) => Ok(Some(t.to_dtype(DType::F32)?.to_device(&self.device)?)),
                None => Ok(None),
            }
        };
        let get = |name: &str| -> candle_core::Result<Tensor> {
            has(name)?.ok_or_else(|| candle_core::Error::Msg(format!("weights lack {name}")))
        };
        let matrix = |w: Tensor| -> candle_core::Result<Weight> {
            if form == WeightForm::Q8_0 && w.dim(1)? % 32 == 0 {
                let q = candle_core::quantized::QTensor::quantize(&w, candle_core::quantized::GgmlDType::Q8_0)?;
                if let Some(m) = super::q8_cpu::Q8Matrix::from_qtensor(&q)? {
                    return Ok(Weight::Cpu(std::sync::Arc::new(m)));
                }
                return Ok(Weight::Candle(QMatMul::from_arc(std::sync::Arc::new(q))?));
            }
            Ok(Weight::Candle(QMatMul::Tensor(w)))
        };
        let linear = |prefix: &str| -> candle_core::Result<Linear> {
            let weight = matrix(get(&format!("{prefix}.weight"))?)?;
            Ok(Linear { weight, bias: has(&format!("{prefix}.bias"))? })
        };
        let gemma = self.cfg.embed_scale.is_some();
        let norm_w = |name: &str| -> candle_core::Result<Tensor> {
            let w = get(name)?;
            if gemma { w.affine(1.0, 1.0) } else { Ok(w) }
        };
        let opt_norm = |name: String| -> candle_core::Result<Option<Tensor>> {
            match has(&name)? {
                Some(w) if gemma => w.affine(1.0, 1.0).map(Some),
                w => Ok(w),
            }
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
        let lm_head = Linear { weight: matrix(has("lm_head.weight")?.unwrap_or_else(|| embed.clone()))?, bias: None };
        // HF layout pairs rotary dims (i, i + d/2); the rotation tables do not depend on it.
        let cfg = Config { rope_interleaved: false, ..self.cfg.clone() };
        let norm = norm_w("model.norm.weight")?;
        let host = match self.host {
            true => Some(Host::new(&layers, &norm, &self.tables)?),
            false => None,
        };
        Ok(Transformer { cfg, embed, layers, norm, lm_head, tables: self.tables.clone(), host })
    }
}

/// One sequence of a batched forward pass: its new tokens and its cache.
pub struct Seq<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
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

    /// What this network is besides its weights, to assemble another around other weights.
    pub fn skeleton(&self) -> Skeleton {
        Skeleton {
            cfg: self.cfg.clone(),
            tables: self.tables.clone(),
            host: self.host.is_some(),
            device: self.embed.device().clone(),
        }
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
    /// whatever the rows beside it: `q8_cpu` for Q8_0 and Q4_1, `dense_cpu` for f32 in decode
    /// steps), not with candle's quantized products (blocked by row count).
    pub fn batch_is_exact(&self) -> bool {
        let cpu = |l: &Linear| match &l.weight {
            Weight::Cpu(_) => true,
            Weight::Candle(QMatMul::Tensor(w)) => super::dense_cpu::applies(w),
            Weight::Candle(_) => false,
        };
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
