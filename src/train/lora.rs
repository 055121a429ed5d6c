//! LoRA adapters: `y = x W^T + (alpha / r) (x A^T) B^T` beside frozen base weights.
//!
//! Only A and B are `Var`s (in the model's trainable map, under PEFT's names without the
//! `base_model.model.` prefix); the base weights stay plain tensors, so backward never computes
//! their gradients. Switching the adapters off (`Model::set_adapter_enabled(false)`) gives the
//! base model back, which is the DPO reference: no second copy of the model is held.

use candle_core::{Result, Tensor, Var};
use rand::{Rng, SeedableRng, rngs::StdRng};

use super::frozen::ProjWeight;
use super::linear::linear;
use super::model::{Model, Proj};

/// The projections an adapter can be attached to (PEFT `target_modules` without `_proj`).
pub const TARGETS: [&str; 7] = ["q", "k", "v", "o", "gate", "up", "down"];

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    /// Among `TARGETS`; `q_proj` style names are accepted too.
    pub targets: Vec<String>,
}

impl LoraConfig {
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// Target names normalized to `TARGETS` spelling; an unknown one is an error that lists them.
    pub fn normalized_targets(&self) -> Result<Vec<&'static str>> {
        let mut out = Vec::new();
        for t in &self.targets {
            let short = t.trim().trim_end_matches("_proj");
            let Some(k) = TARGETS.iter().find(|k| **k == short) else {
                candle_core::bail!("unknown LoRA target `{t}`; choose among {}", TARGETS.join(","));
            };
            if !out.contains(k) {
                out.push(*k);
            }
        }
        Ok(out)
    }
}

/// One adapter: A `[r, in]`, B `[out, r]` (tensors of `Var`s), scale `alpha / r`.
#[derive(Debug, Clone)]
pub struct Adapter {
    pub a: Tensor,
    pub b: Tensor,
    pub scale: f64,
}

impl Adapter {
    /// The adapter's output for `x`, computed in `x`'s dtype (the adapters' own dtype may be
    /// the f32 master one, see `precision.rs`).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (a, b) = (self.a.to_dtype(x.dtype())?, self.b.to_dtype(x.dtype())?);
        linear(&linear(x, &a)?, &b)? * self.scale
    }

    /// `W + scale * B A`, detached, in the adapter's dtype (f32 when a 16-bit base was trained
    /// with f32 adapters): the weight an exported merged model carries.
    pub fn merged(&self, w: &Tensor) -> Result<Tensor> {
        let delta = (self.b.detach().matmul(&self.a.detach())? * self.scale)?;
        (w.detach().to_dtype(delta.dtype())? + delta)?.detach().contiguous()
    }
}

fn projections(model: &mut Model) -> Vec<(String, &'static str, &mut Proj)> {
    let mut out = Vec::new();
    for (i, l) in model.layers.iter_mut().enumerate() {
        let p = format!("model.layers.{i}");
        out.push((format!("{p}.self_attn.q_proj"), "q", &mut l.q));
        out.push((format!("{p}.self_attn.k_proj"), "k", &mut l.k));
        out.push((format!("{p}.self_attn.v_proj"), "v", &mut l.v));
        out.push((format!("{p}.self_attn.o_proj"), "o", &mut l.o));
        out.push((format!("{p}.mlp.gate_proj"), "gate", &mut l.gate));
        out.push((format!("{p}.mlp.up_proj"), "up", &mut l.up));
        out.push((format!("{p}.mlp.down_proj"), "down", &mut l.down));
    }
    out
}

/// Attaches fresh adapters to a frozen model (built with `full = false`). A is drawn like PEFT's
/// default (kaiming-uniform, bound `1/sqrt(in)`) from `seed`; B is zero, so the adapted model
/// starts equal to the base.
pub fn attach(model: &mut Model, cfg: &LoraConfig, seed: u64) -> Result<()> {
    if !model.trainable.all_vars().is_empty() {
        candle_core::bail!("LoRA needs a frozen base model (build it with full = false)");
    }
    if cfg.rank == 0 {
        candle_core::bail!("LoRA rank must be at least 1");
    }
    let targets = cfg.normalized_targets()?;
    let mut rng = StdRng::seed_from_u64(seed);
    let dtype = model.master_dtype();
    let device = model.device().clone();
    let trainable = model.trainable.clone();
    for (name, kind, proj) in projections(model) {
        if !targets.contains(&kind) {
            continue;
        }
        let (out_f, in_f) = proj.weight.dims2()?;
        let bound = 1.0 / (in_f as f32).sqrt();
        let a: Vec<f32> = (0..cfg.rank * in_f).map(|_| rng.random_range(-bound..bound)).collect();
        let a = Var::from_tensor(&Tensor::from_vec(a, (cfg.rank, in_f), &device)?.to_dtype(dtype)?)?;
        let b = Var::zeros((out_f, cfg.rank), dtype, &device)?;
        let adapter = Adapter { a: a.as_tensor().clone(), b: b.as_tensor().clone(), scale: cfg.scale() };
        let mut data = trainable.data().lock().expect("varmap lock");
        data.insert(format!("{name}.lora_A.weight"), a);
        data.insert(format!("{name}.lora_B.weight"), b);
        proj.adapter = Some(adapter);
    }
    Ok(())
}

/// Folds every adapter into its base weight and removes the adapters (and their variables).
pub fn merge(model: &mut Model) -> Result<()> {
    let trainable = model.trainable.clone();
    let device = model.device().clone();
    for (name, _, proj) in projections(model) {
        if let Some(a) = proj.adapter.take() {
            proj.weight = ProjWeight::Dense(a.merged(&proj.weight.tensor(&device)?)?);
            let mut data = trainable.data().lock().expect("varmap lock");
            data.remove(&format!("{name}.lora_A.weight"));
            data.remove(&format!("{name}.lora_B.weight"));
        }
    }
    Ok(())
}
