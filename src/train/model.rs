//! The trainable transformer of every family verdict runs (SmolLM2, Llama 3.x, Mistral,
//! Qwen2/3, Gemma 2/3, Phi-3): the llama layout plus each family's differences, as
//! `config.rs` reads them.
//!
//! Written for training rather than reused from candle-transformers: every op here has a
//! backward pass (candle's fused `softmax_last_dim`, `rms_norm`, `rope` and `QMatMul` silently
//! detach the graph), there is no KV cache, a whole right-padded batch goes through at once with
//! a causal + padding mask, and logits can be computed for selected positions only (DPO needs
//! them at response tokens, not at the prompt). Weights use HF names and layout.
//!
//! Precision (`precision.rs`): trainable weights are kept in the master dtype and cast to the
//! compute dtype where they are used (the cast is a graph node, so gradients reach the master
//! copy in its own dtype); with a 16-bit compute dtype, attention softmax and RMSNorm statistics
//! run in f32. On the CPU in f32 (and f64) the fused kernels (`fused.rs`, `attention.rs`, `swiglu.rs`,
//! `target_logp.rs`) replace the composed ops.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::backprop::GradStore;
use candle_core::{D, DType, Device, Result, Tensor, Var};
use candle_nn::VarMap;

use super::config::Config;
use super::frozen::ProjWeight;
pub use super::input::Input;
use super::layer::{AttentionInputs, Pass};
use super::linear::{linear, linear_into};
use super::lora::Adapter;
use super::lora_proj;
use super::precision::{Precision, is_half};
use super::weight_grads::{WeightGrads, embedding};
use crate::model::arch::LayerAttention;

/// A projection `x W^T (+ b)`, optionally with a LoRA adapter beside it.
#[derive(Debug, Clone)]
pub struct Proj {
    /// Dense, or a LoRA run's frozen base kept lean (`frozen.rs`).
    pub weight: ProjWeight,
    pub bias: Option<Tensor>,
    pub adapter: Option<Adapter>,
}

impl Proj {
    /// `grads`: where a trainable weight's gradient goes instead of candle's `GradStore`
    /// (`weight_grads.rs`), when the model sinks them.
    pub(super) fn forward(&self, x: &Tensor, adapter_on: bool, grads: Option<&Arc<WeightGrads>>) -> Result<Tensor> {
        let adapter = self.adapter.as_ref().filter(|_| adapter_on);
        // The base and its adapter as one node where it applies (CPU, f32 activations, a frozen
        // base dense in f32 or lean).
        let fused = adapter.filter(|a| lora_proj::applies(x, &self.weight, &a.a, &a.b));
        let mut y = match (&self.weight, grads, fused) {
            (w, _, Some(a)) => lora_proj::lora_proj(x, w, &a.a, &a.b, a.scale)?,
            (ProjWeight::Dense(w), Some(g), None) if w.is_variable() => linear_into(x, w, g)?,
            (w, _, None) => w.forward(x)?,
        };
        if let Some(b) = &self.bias {
            y = y.broadcast_add(&b.to_dtype(x.dtype())?)?;
        }
        match adapter {
            Some(a) if fused.is_none() => y + a.forward(x)?,
            _ => Ok(y),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Layer {
    pub input_norm: Tensor,
    pub q: Proj,
    pub k: Proj,
    pub v: Proj,
    pub o: Proj,
    /// HF's `post_attention_layernorm`: before the MLP, or (Gemma) on the attention output.
    pub post_norm: Tensor,
    pub gate: Proj,
    pub up: Proj,
    pub down: Proj,
    /// Qwen3's and Gemma 3's per-head q/k RMSNorm weights `[head_dim]`.
    pub q_norm: Option<Tensor>,
    pub k_norm: Option<Tensor>,
    /// Gemma's norms before and after the MLP.
    pub pre_ffn_norm: Option<Tensor>,
    pub post_ffn_norm: Option<Tensor>,
}

/// The network. Weights are plain tensors; for full fine-tuning each one is a `Var` (the same
/// storage) registered in `trainable`, for LoRA only the adapters are.
pub struct Model {
    pub cfg: Config,
    pub embed: Tensor,
    pub layers: Vec<Layer>,
    pub norm: Tensor,
    /// `None` when the output projection is tied to the embeddings.
    pub lm_head: Option<Tensor>,
    pub trainable: VarMap,
    adapter_on: AtomicBool,
    precision: Precision,
    /// The fused CPU kernels (RMSNorm, attention, SwiGLU, target log-probs) instead of composed
    /// candle ops.
    fused: bool,
    /// Trainable weights' gradients written in place while `sink_weight_grads` is held.
    weight_grads: Arc<WeightGrads>,
    sinking: AtomicBool,
    /// Response positions whose logits are computed at once (`head_logp.rs`); `None`: all.
    logits_chunk: Option<usize>,
    /// Each layer recomputed in the backward from its input (`checkpointing.rs`).
    checkpointing: bool,
    /// Gradients the recomputed layers found for trainable variables, until the step drains them.
    recomputed: Arc<super::checkpointing::Recomputed>,
}

/// Softmax over the last dim; the max is detached because its gradient cancels exactly, which
/// saves a masked backward over the whole tensor.
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// Log-softmax over the last dim, same detached max.
pub fn log_softmax_last(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let d = x.broadcast_sub(&max)?;
    d.broadcast_sub(&d.exp()?.sum_keepdim(D::Minus1)?.log()?)
}

/// RMSNorm: our fused op on CPU (`fused.rs`), else written out (candle's fused
/// `candle_nn::ops::rms_norm` has no backward pass). A 16-bit `x` is normalized in f32 and
/// cast back before the weight is applied, as `transformers`' `LlamaRMSNorm` does.
pub(super) fn rms_norm(x: &Tensor, w: &Tensor, eps: f64, fused: bool) -> Result<Tensor> {
    if fused && let Some(y) = super::fused::rms_norm(x, w, eps) {
        return y;
    }
    let w = w.to_dtype(x.dtype())?;
    let xs = if is_half(x.dtype()) { x.to_dtype(DType::F32)? } else { x.clone() };
    let r = (xs.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
    xs.broadcast_mul(&r)?.to_dtype(x.dtype())?.broadcast_mul(&w)
}

/// Gemma's RMSNorm weight, applied as `1 + w` (a graph node, so `w` gets the gradient).
pub(super) fn norm_weight(w: &Tensor, plus_one: bool) -> Result<Tensor> {
    if plus_one { w.affine(1.0, 1.0) } else { Ok(w.clone()) }
}

/// `tanh(x / cap) * cap` (Gemma 2's soft-capping).
pub(super) fn softcap(x: &Tensor, cap: Option<f64>) -> Result<Tensor> {
    match cap {
        Some(c) => (x / c)?.tanh()? * c,
        None => Ok(x.clone()),
    }
}

/// The mask `bias` `[B, 1, 1, T, T]` with keys `window` or more positions before the query
/// hidden as well (sliding-window attention: key j visible from query i if pos_i - pos_j < window).
fn windowed(input: &Input, window: usize) -> Result<Tensor> {
    let (b, t) = input.ids.dims2()?;
    let pos = input.positions.to_vec1::<u32>()?;
    let mut bias = input.bias.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    for r in 0..b {
        for i in 0..t {
            for j in 0..t {
                let (pi, pj) = (pos[r * t + i] as usize, pos[r * t + j] as usize);
                if pi >= pj + window {
                    bias[(r * t + i) * t + j] = -1e9;
                }
            }
        }
    }
    Tensor::from_vec(bias, (b, 1, 1, t, t), input.bias.device())?.to_dtype(input.bias.dtype())
}

fn take(w: &mut HashMap<String, Tensor>, name: &str) -> Result<Tensor> {
    w.remove(name).ok_or_else(|| candle_core::Error::Msg(format!("weights lack tensor `{name}`")))
}

impl Model {
    /// Builds the network from HF-named tensors, computing in the dtype they come in.
    /// `full`: every weight becomes trainable.
    pub fn new(cfg: Config, w: HashMap<String, Tensor>, full: bool) -> Result<Self> {
        let dtype = w.get("model.embed_tokens.weight").map_or(DType::F32, Tensor::dtype);
        Self::with_precision(cfg, w, full, Precision::uniform(dtype))
    }

    /// As `new`, with trainable weights converted to `precision.master` and frozen ones to
    /// `precision.compute` (see `precision.rs`); the fused CPU kernels are used when the model
    /// is on the CPU and computes in f32/f64.
    pub fn with_precision(cfg: Config, w: HashMap<String, Tensor>, full: bool, precision: Precision) -> Result<Self> {
        Self::with_lean_base(cfg, w, HashMap::new(), full, precision)
    }

    /// As `with_precision`, with the projections in `lean` (HF names, `...q_proj.weight`) taken
    /// as they are: a LoRA run's frozen base kept in bf16 or quantized (`frozen.rs`).
    pub fn with_lean_base(
        cfg: Config,
        mut w: HashMap<String, Tensor>,
        mut lean: HashMap<String, ProjWeight>,
        full: bool,
        precision: Precision,
    ) -> Result<Self> {
        if full && !lean.is_empty() {
            candle_core::bail!("a bf16 or quantized base is frozen: it trains only with LoRA");
        }
        cfg.check_supported().map_err(candle_core::Error::Msg)?;
        super::weights::split_fused(&cfg, &mut w)?;
        let trainable = VarMap::new();
        let mut get = |name: &str| -> Result<Tensor> {
            let t = take(&mut w, name)?;
            if !full {
                return Ok(t.to_dtype(precision.compute)?.detach());
            }
            let var = Var::from_tensor(&t.to_dtype(precision.master)?)?;
            let out = var.as_tensor().clone();
            trainable.data().lock().expect("varmap lock").insert(name.to_string(), var);
            Ok(out)
        };
        let mut proj = |get: &mut dyn FnMut(&str) -> Result<Tensor>, p: &str, bias: bool| -> Result<Proj> {
            let name = format!("{p}.weight");
            Ok(Proj {
                weight: match lean.remove(&name) {
                    Some(w) => w,
                    None => ProjWeight::Dense(get(&name)?),
                },
                bias: if bias { Some(get(&format!("{p}.bias"))?) } else { None },
                adapter: None,
            })
        };
        let embed = get("model.embed_tokens.weight")?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        let family = cfg.family();
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let (qkv_b, o_b) = (cfg.qkv_bias(), cfg.o_bias());
            let mut opt = |on: bool, name: &str| -> Result<Option<Tensor>> {
                if on { get(&format!("{p}.{name}.weight")).map(Some) } else { Ok(None) }
            };
            let (q_norm, k_norm) =
                (opt(family.qk_norm(), "self_attn.q_norm")?, opt(family.qk_norm(), "self_attn.k_norm")?);
            let pre_ffn_norm = opt(family.gemma(), "pre_feedforward_layernorm")?;
            let post_ffn_norm = opt(family.gemma(), "post_feedforward_layernorm")?;
            layers.push(Layer {
                q_norm,
                k_norm,
                pre_ffn_norm,
                post_ffn_norm,
                input_norm: get(&format!("{p}.input_layernorm.weight"))?,
                q: proj(&mut get, &format!("{p}.self_attn.q_proj"), qkv_b)?,
                k: proj(&mut get, &format!("{p}.self_attn.k_proj"), qkv_b)?,
                v: proj(&mut get, &format!("{p}.self_attn.v_proj"), qkv_b)?,
                o: proj(&mut get, &format!("{p}.self_attn.o_proj"), o_b)?,
                post_norm: get(&format!("{p}.post_attention_layernorm.weight"))?,
                gate: proj(&mut get, &format!("{p}.mlp.gate_proj"), false)?,
                up: proj(&mut get, &format!("{p}.mlp.up_proj"), false)?,
                down: proj(&mut get, &format!("{p}.mlp.down_proj"), false)?,
            });
        }
        let norm = get("model.norm.weight")?;
        let lm_head = if cfg.tie_word_embeddings { None } else { Some(get("lm_head.weight")?) };
        let logits_chunk = Some(super::head_logp::chunk_rows(cfg.vocab_size));
        let mut model = Self {
            cfg,
            embed,
            layers,
            norm,
            lm_head,
            trainable,
            adapter_on: AtomicBool::new(true),
            precision,
            fused: false,
            weight_grads: Arc::default(),
            sinking: AtomicBool::new(false),
            logits_chunk,
            checkpointing: false,
            recomputed: Arc::default(),
        };
        model.set_fused_kernels(true);
        Ok(model)
    }

    pub fn device(&self) -> &Device {
        self.embed.device()
    }

    /// The compute dtype: activations, and frozen weights as stored.
    pub fn dtype(&self) -> DType {
        self.precision.compute
    }

    /// The dtype trainable variables (and new LoRA adapters) are kept in.
    pub fn master_dtype(&self) -> DType {
        self.precision.master
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Whether the fused CPU kernels run (else the composed candle ops every device has).
    pub fn fused_kernels(&self) -> bool {
        self.fused
    }

    /// Forces the composed ops (`false`), the path a GPU takes, e.g. to check it against the
    /// fused kernels on the CPU. `true` uses the fused kernels where they apply: on the CPU,
    /// computing in f32 or f64.
    pub fn set_fused_kernels(&mut self, on: bool) {
        self.fused = on && self.device().is_cpu() && matches!(self.precision.compute, DType::F32 | DType::F64);
    }

    /// Until the guard drops, forward passes built on the fused CPU path write trainable weights'
    /// gradients in place (`weight_grads.rs`) and the guard's `drain_into` moves them into the
    /// `GradStore` of each backward; elsewhere, or without the guard, candle computes them.
    pub fn sink_weight_grads(&self) -> WeightGradSink<'_> {
        self.weight_grads.clear();
        self.recomputed.clear();
        self.sinking.store(true, Ordering::SeqCst);
        WeightGradSink { model: self }
    }

    fn grad_sink(&self) -> Option<&Arc<WeightGrads>> {
        (self.fused && self.sinking.load(Ordering::SeqCst)).then_some(&self.weight_grads)
    }

    /// Keep only each layer's input in the forward and run the layer again in the backward
    /// (`checkpointing.rs`): one layer's activations at a time instead of all of them.
    pub fn set_checkpointing(&mut self, on: bool) {
        self.checkpointing = on;
    }

    pub fn checkpointing(&self) -> bool {
        self.checkpointing
    }

    /// Switch LoRA adapters off (the reference model) or on (the policy). No-op without LoRA.
    pub fn set_adapter_enabled(&self, on: bool) {
        self.adapter_on.store(on, Ordering::SeqCst);
    }

    pub fn adapter_enabled(&self) -> bool {
        self.adapter_on.load(Ordering::SeqCst)
    }

    /// Whether LoRA adapters sit beside the projections (the base weights are then frozen).
    pub fn has_adapters(&self) -> bool {
        self.layers
            .iter()
            .any(|l| [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down].iter().any(|p| p.adapter.is_some()))
    }

    /// Trainable variables sorted by name: a deterministic order for the optimizer and checkpoints.
    pub fn trainable_vars(&self) -> Vec<(String, Var)> {
        let data = self.trainable.data().lock().expect("varmap lock");
        let mut v: Vec<_> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// cos/sin `[B, 1, T, rotary_dim/2]` for every token's position under `rope`.
    fn rope_tables(
        &self,
        rope: &crate::model::arch::Rope,
        input: &Input,
        b: usize,
        t: usize,
    ) -> Result<(Tensor, Tensor)> {
        let n = input.max_position + 1;
        let inv = rope.inv_freq_for(self.cfg.head_dim(), n);
        let scale = rope.attention_factor();
        let half = inv.len();
        let mut cos = Vec::with_capacity(n * half);
        let mut sin = Vec::with_capacity(n * half);
        for p in 0..n {
            for f in &inv {
                let a = p as f64 * f;
                cos.push((a.cos() * scale) as f32);
                sin.push((a.sin() * scale) as f32);
            }
        }
        let dev = self.device();
        let pick = |v: Vec<f32>| -> Result<Tensor> {
            Tensor::from_vec(v, (n, half), dev)?
                .index_select(&input.positions, 0)?
                .reshape((b, 1, t, half))?
                .to_dtype(self.dtype())
        };
        Ok((pick(cos)?, pick(sin)?))
    }

    /// Final-normed hidden states `[B, T, hidden]`.
    pub fn hidden(&self, input: &Input) -> Result<Tensor> {
        let (b, t) = input.ids.dims2()?;
        let cfg = &self.cfg;
        let dt = self.dtype();
        let gemma = cfg.family().gemma();
        // Attention scores are softmaxed in f32 when activations are 16-bit.
        let att_dt = if is_half(dt) { DType::F32 } else { dt };
        // One rope table and one mask per distinct (rope, window) among the layers.
        let mut contexts: Vec<((Option<usize>, bool), AttentionInputs)> = Vec::new();
        for i in 0..cfg.num_hidden_layers {
            let key = (cfg.layer_window(i), std::ptr::eq(cfg.layer_rope(i), &cfg.rope));
            if contexts.iter().any(|(k, _)| *k == key) {
                continue;
            }
            let (cos, sin) = self.rope_tables(cfg.layer_rope(i), input, b, t)?;
            let bias = match key.0 {
                Some(w) => windowed(input, w)?,
                None => input.bias.clone(),
            };
            contexts.push((key, AttentionInputs { b, t, cos, sin, bias: bias.to_dtype(att_dt)?, att_dt }));
        }
        let pass = Arc::new(Pass {
            cfg: cfg.clone(),
            on: self.adapter_enabled(),
            fused: self.fused,
            dt,
            sink: self.grad_sink().cloned(),
        });
        let ids = input.ids.flatten_all()?;
        let mut x = match pass.sink.as_ref().filter(|_| self.embed.is_variable()) {
            Some(g) => embedding(&self.embed, &ids, g)?,
            None => self.embed.index_select(&ids, 0)?.to_dtype(dt)?,
        }; // [B*T, H]
        if gemma {
            // Gemma scales embeddings by sqrt(hidden), rounded to the activations' dtype.
            let s = Tensor::new(&[(cfg.hidden_size as f64).sqrt()], x.device())?.to_dtype(dt)?;
            x = x.broadcast_mul(&s)?;
        }
        for (i, l) in self.layers.iter().enumerate() {
            let key = (cfg.layer_window(i), std::ptr::eq(cfg.layer_rope(i), &cfg.rope));
            let ctx = &contexts.iter().find(|(k, _)| *k == key).expect("a context per layer kind").1;
            x = match self.checkpointing {
                true => super::checkpointing::layer(&pass, l, ctx, &x, &self.recomputed)?,
                false => pass.layer(l, ctx, &x)?,
            };
        }
        pass.norm(&x, &self.norm)?.reshape((b, t, cfg.hidden_size))
    }

    /// How many response positions' logits are computed at once (`head_logp.rs`); `None`
    /// computes all `[N, vocab]` at once, the path before chunking (tests compare the two).
    pub fn set_logits_chunk(&mut self, rows: Option<usize>) {
        self.logits_chunk = rows;
    }

    /// `log_softmax(logits(rows))[n, targets[n]]` `[N]` for final-normed hidden rows `[N, hidden]`,
    /// the logits computed a chunk of rows at a time in the forward and the backward.
    pub fn response_logps(&self, rows: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let w = self.lm_head.as_ref().unwrap_or(&self.embed);
        let head = super::head_logp::Head {
            softcap: self.cfg.final_softcap,
            fused: self.fused,
            sink: self.grad_sink().cloned(),
            chunk: self.logits_chunk,
        };
        super::head_logp::response_logps(&head, rows, w, targets)
    }

    /// Logits for hidden rows `[N, hidden] -> [N, vocab]` (soft-capped where Gemma 2 does).
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let w = self.lm_head.as_ref().unwrap_or(&self.embed);
        let logits = match self.grad_sink().filter(|_| w.is_variable()) {
            Some(g) => linear_into(hidden, w, g)?,
            None => linear(hidden, &w.to_dtype(hidden.dtype())?)?,
        };
        softcap(&logits, self.cfg.final_softcap)
    }

    /// Logits at every position `[B, T, vocab]`.
    pub fn forward(&self, input: &Input) -> Result<Tensor> {
        self.logits(&self.hidden(input)?)
    }
}

/// Held while training steps sink weight gradients (`Model::sink_weight_grads`).
pub struct WeightGradSink<'a> {
    model: &'a Model,
}

impl WeightGradSink<'_> {
    /// Moves the gradients the last backward wrote in place, and those its recomputed layers
    /// found (`checkpointing.rs`), into `grads`.
    pub fn drain_into(&self, grads: &mut GradStore) -> Result<()> {
        self.model.recomputed.drain_into(grads)?;
        self.model.weight_grads.drain_into(grads, self.model.device())
    }
}

impl Drop for WeightGradSink<'_> {
    fn drop(&mut self) {
        self.model.sinking.store(false, Ordering::SeqCst);
        self.model.weight_grads.clear();
        self.model.recomputed.clear();
    }
}

#[cfg(test)]
#[path = "model_tests.rs"]
pub(crate) mod tests;
