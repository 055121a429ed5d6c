//! AdamW with decoupled weight decay, warm-up then linear/cosine decay, gradient-norm clipping
//! and gradient accumulation; its state saves to and loads from safetensors.
//!
//! On the CPU with f32 weights the update is one fused in-place pass per parameter
//! (`adamw_kernel`); elsewhere (GPU, bf16) the same formula runs as tensor ops.
//! The schedule is `transformers`' `get_{linear,cosine}_schedule_with_warmup`: update number k
//! (from 0) uses `lr * lambda(k)`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Result, Tensor, Var};

use super::adamw_kernel::{InPlace, Update, sum_sq_cpu};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    Constant,
    Linear,
    Cosine,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OptimConfig {
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub warmup_steps: usize,
    /// Optimizer steps in the whole run (the decay reaches 0 there).
    pub total_steps: usize,
    pub schedule: Schedule,
    /// Clip the global gradient norm to this; 0 disables clipping.
    pub max_grad_norm: f64,
}

impl Default for OptimConfig {
    /// TRL's DPOConfig defaults (lr 1e-6, no decay, linear schedule, clip at 1.0).
    fn default() -> Self {
        Self {
            learning_rate: 1e-6,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            warmup_steps: 0,
            total_steps: 1,
            schedule: Schedule::Linear,
            max_grad_norm: 1.0,
        }
    }
}

impl OptimConfig {
    /// Learning rate for update number `k` (0-based).
    pub fn lr_at(&self, k: usize) -> f64 {
        let (w, total) = (self.warmup_steps, self.total_steps.max(1));
        let factor = if k < w {
            k as f64 / w.max(1) as f64
        } else {
            let progress = (k - w) as f64 / total.saturating_sub(w).max(1) as f64;
            match self.schedule {
                Schedule::Constant => 1.0,
                Schedule::Linear => (1.0 - progress).max(0.0),
                Schedule::Cosine => (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0),
            }
        };
        self.learning_rate * factor
    }
}

enum Moments {
    Host(Vec<f32>, Vec<f32>),
    Dev(Tensor, Tensor),
}

struct Param {
    name: String,
    var: Var,
    moments: Moments,
    grad: Option<Tensor>,
}

/// What one optimizer step reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Global gradient norm before clipping (TRL's `grad_norm`).
    pub grad_norm: f64,
    pub learning_rate: f64,
}

pub struct AdamW {
    pub cfg: OptimConfig,
    params: Vec<Param>,
    /// Optimizer steps taken.
    pub step: usize,
}

impl AdamW {
    /// `vars` in a fixed order (e.g. `Model::trainable_vars`). Uses the fused CPU kernel when
    /// every variable is an f32 CPU tensor.
    pub fn new(vars: Vec<(String, Var)>, cfg: OptimConfig) -> Result<Self> {
        let fused = vars.iter().all(|(_, v)| v.device().is_cpu() && v.dtype() == DType::F32);
        Self::with_kernel(vars, cfg, fused)
    }

    /// As `new`, choosing the fused kernel or the tensor-op path explicitly.
    pub fn with_kernel(vars: Vec<(String, Var)>, cfg: OptimConfig, fused: bool) -> Result<Self> {
        let params = vars
            .into_iter()
            .map(|(name, var)| {
                let moments = if fused {
                    let n = var.elem_count();
                    Moments::Host(vec![0.0; n], vec![0.0; n])
                } else {
                    let z = var.zeros_like()?.to_dtype(DType::F32)?;
                    Moments::Dev(z.clone(), z)
                };
                Ok(Param { name, var, moments, grad: None })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { cfg, params, step: 0 })
    }

    /// Adds this backward pass's gradients to the pending ones (for gradient accumulation the
    /// caller scales each micro-batch loss by 1/accumulation).
    pub fn accumulate(&mut self, grads: &GradStore) -> Result<()> {
        for p in &mut self.params {
            if let Some(g) = grads.get(p.var.as_tensor()) {
                let g = g.detach();
                p.grad = Some(match p.grad.take() {
                    None => g,
                    Some(acc) => (acc + g)?,
                });
            }
        }
        Ok(())
    }

    /// Global L2 norm of the pending gradients.
    pub fn grad_norm(&self) -> Result<f64> {
        let mut total = 0.0;
        for g in self.params.iter().filter_map(|p| p.grad.as_ref()) {
            total += match sum_sq_cpu(g) {
                Some(s) => s,
                None => g.to_dtype(DType::F32)?.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?,
            };
        }
        Ok(total.sqrt())
    }

    /// Clips, updates every parameter that has a pending gradient, clears them.
    pub fn step(&mut self) -> Result<StepStats> {
        let grad_norm = self.grad_norm()?;
        let lr = self.cfg.lr_at(self.step);
        let c = &self.cfg;
        let grad_scale = if c.max_grad_norm > 0.0 && grad_norm > c.max_grad_norm {
            c.max_grad_norm / (grad_norm + 1e-6)
        } else {
            1.0
        };
        let t = (self.step + 1) as i32;
        let (bc1, bc2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        let up = Update {
            lr: lr as f32,
            beta1: c.beta1 as f32,
            beta2: c.beta2 as f32,
            eps: c.eps as f32,
            weight_decay: c.weight_decay as f32,
            grad_scale: grad_scale as f32,
            bc1: bc1 as f32,
            bc2_sqrt: bc2.sqrt() as f32,
        };
        for p in &mut self.params {
            let Some(g) = p.grad.take() else { continue };
            match &mut p.moments {
                Moments::Host(m, v) => {
                    let g = g.contiguous()?;
                    let op =
                        InPlace { update: up, m: RefCell::new(m.as_mut_slice()), v: RefCell::new(v.as_mut_slice()) };
                    p.var.as_tensor().inplace_op2(&g, &op)?;
                }
                Moments::Dev(m, v) => {
                    let g = (g.to_dtype(DType::F32)? * grad_scale)?;
                    *m = ((&*m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
                    *v = ((&*v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
                    let denom = ((v.sqrt()? / bc2.sqrt())? + c.eps)?;
                    let w = p.var.as_tensor().to_dtype(DType::F32)?;
                    let new = ((w * (1.0 - lr * c.weight_decay))? - ((&*m / denom)? * (lr / bc1))?)?;
                    p.var.set(&new.to_dtype(p.var.dtype())?)?;
                }
            }
        }
        self.step += 1;
        Ok(StepStats { grad_norm, learning_rate: lr })
    }

    /// Drops pending gradients (e.g. after a NaN loss).
    pub fn zero_grad(&mut self) {
        self.params.iter_mut().for_each(|p| p.grad = None);
    }

    /// State as tensors: `{name}.exp_avg`, `{name}.exp_avg_sq` (torch's names) and `step`.
    pub fn state_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for p in &self.params {
            let (m, v) = match &p.moments {
                Moments::Host(m, v) => {
                    let shape = p.var.shape().clone();
                    (Tensor::from_slice(m, shape.clone(), &Device::Cpu)?, Tensor::from_slice(v, shape, &Device::Cpu)?)
                }
                Moments::Dev(m, v) => (m.clone(), v.clone()),
            };
            out.insert(format!("{}.exp_avg", p.name), m);
            out.insert(format!("{}.exp_avg_sq", p.name), v);
        }
        out.insert("step".into(), Tensor::new(&[self.step as i64], &Device::Cpu)?);
        Ok(out)
    }

    /// Restores state written by `state_tensors` (same parameter names and shapes).
    pub fn load_state(&mut self, mut st: HashMap<String, Tensor>) -> Result<()> {
        let mut take =
            |k: String| st.remove(&k).ok_or_else(|| candle_core::Error::Msg(format!("optimizer state lacks `{k}`")));
        for p in &mut self.params {
            let m = take(format!("{}.exp_avg", p.name))?.to_dtype(DType::F32)?;
            let v = take(format!("{}.exp_avg_sq", p.name))?.to_dtype(DType::F32)?;
            if m.dims() != p.var.dims() || v.dims() != p.var.dims() {
                candle_core::bail!("optimizer state for `{}` has the wrong shape", p.name);
            }
            p.moments = match &p.moments {
                Moments::Host(..) => Moments::Host(m.flatten_all()?.to_vec1()?, v.flatten_all()?.to_vec1()?),
                Moments::Dev(..) => Moments::Dev(m.to_device(p.var.device())?, v.to_device(p.var.device())?),
            };
        }
        self.step = take("step".into())?.to_vec1::<i64>()?[0] as usize;
        Ok(())
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        candle_core::safetensors::save(&self.state_tensors()?, path)
    }

    pub fn load(&mut self, path: &Path) -> Result<()> {
        self.load_state(candle_core::safetensors::load(path, &Device::Cpu)?)
    }
}

#[cfg(test)]
#[path = "optim_tests.rs"]
mod tests;
