//! The GPU's code path, checked on the CPU: the composed candle ops and the tensor-op AdamW
//! (what a CUDA device runs) against the fused CPU kernels, and bf16 mixed precision against f32.

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor};

use super::Precision;
use crate::train::logps::Truncation;
use crate::train::lora::{LoraConfig, attach};
use crate::train::loss::{DpoConfig, Metrics};
use crate::train::model::Model;
use crate::train::optim::{AdamW, OptimConfig, Schedule};
use crate::train::step::tests::pairs;
use crate::train::step::{Method, RefLogps, StepConfig, forward_loss, reference_logps, train_step};
use crate::train::weights::{random, tiny_config};

fn model(seed: u64, lora: bool, precision: Precision, fused: bool) -> Result<Model> {
    let cfg = tiny_config("llama", true);
    let mut m = Model::with_precision(cfg.clone(), random(&cfg, seed, &Device::Cpu)?, !lora, precision)?;
    if lora {
        let targets = ["q", "k", "v", "o", "up"].map(String::from).to_vec();
        attach(&mut m, &LoraConfig { rank: 4, alpha: 8.0, targets }, seed)?;
        // LoRA's B starts at zero; move it so the adapters take part in the comparison.
        for (name, var) in m.trainable_vars() {
            if name.contains("lora_B") {
                var.set(&(var.as_tensor().ones_like()? * 0.05)?)?;
            }
        }
    }
    m.set_fused_kernels(fused);
    assert_eq!(m.fused_kernels(), fused && !precision.is_half());
    Ok(m)
}

fn step_cfg() -> StepConfig {
    StepConfig { method: Method::Dpo(DpoConfig::default()), truncation: Truncation::default(), pad_id: 0 }
}

fn max_abs(a: &Tensor, b: &Tensor) -> Result<f64> {
    let d = (a.to_dtype(DType::F64)? - b.to_dtype(DType::F64)?)?.abs()?;
    d.flatten_all()?.max(0)?.to_scalar::<f64>()
}

fn max_abs_of(a: &Tensor) -> Result<f64> {
    a.to_dtype(DType::F64)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()
}

/// Reference log-probs, one loss (against `loss_refs`, else this model's own reference shifted)
/// with the gradient of every trainable weight, then `steps` optimizer steps (two micro-batches
/// each); the weights at the end.
struct Run {
    refs: Vec<RefLogps>,
    loss: f64,
    grads: HashMap<String, Tensor>,
    metrics: Vec<Metrics>,
    weights: HashMap<String, Tensor>,
}

fn run(model: &Model, fused_adamw: bool, steps: usize, lr: f64, loss_refs: Option<&[RefLogps]>) -> Result<Run> {
    let data = pairs();
    let cfg = step_cfg();
    let refs = reference_logps(model, &data, &cfg.truncation, 0, 2)?;
    let shifted: Vec<RefLogps> = match loss_refs {
        Some(r) => r.to_vec(),
        None => refs.iter().map(|r| RefLogps { chosen: r.chosen + 0.3, rejected: r.rejected - 0.2 }).collect(),
    };
    let (loss, m, _) = forward_loss(model, &data, &shifted, &cfg)?;
    let g = loss.backward()?;
    let grads = model
        .trainable_vars()
        .into_iter()
        .map(|(n, v)| (n, g.get(v.as_tensor()).expect("every trainable weight has a gradient").clone()))
        .collect();
    let ocfg =
        OptimConfig { learning_rate: lr, total_steps: steps, schedule: Schedule::Constant, ..Default::default() };
    let mut opt = AdamW::with_kernel(model.trainable_vars(), ocfg, fused_adamw)?;
    let micro = [(&data[..2], &refs[..2]), (&data[2..], &refs[2..])];
    let metrics = (0..steps).map(|_| train_step(model, &micro, &cfg, &mut opt)).collect::<Result<Vec<_>>>()?;
    let weights = model.trainable_vars().into_iter().map(|(n, v)| (n, v.as_tensor().copy().unwrap())).collect();
    Ok(Run { refs, loss: m["loss"], grads, metrics, weights })
}

#[test]
fn composed_ops_and_tensor_adamw_match_the_fused_cpu_kernels() -> Result<()> {
    for lora in [false, true] {
        let f32 = Precision::uniform(DType::F32);
        let fused = run(&model(21, lora, f32, true)?, true, 3, 1e-3, None)?;
        let composed = run(&model(21, lora, f32, false)?, false, 3, 1e-3, None)?;
        for (a, b) in fused.refs.iter().zip(&composed.refs) {
            assert!((a.chosen - b.chosen).abs() < 1e-4 && (a.rejected - b.rejected).abs() < 1e-4, "{a:?} {b:?}");
        }
        assert!((fused.loss - composed.loss).abs() < 1e-6, "lora={lora}: {} vs {}", fused.loss, composed.loss);
        assert_eq!(fused.grads.len(), composed.grads.len());
        for (name, g) in &fused.grads {
            let (d, scale) = (max_abs(g, &composed.grads[name])?, max_abs_of(g)?);
            assert!(scale > 0.0, "lora={lora}: {name} has a zero gradient");
            assert!(d <= 1e-4 * scale + 1e-7, "lora={lora}: gradient of {name} differs by {d} (max {scale})");
        }
        for (a, b) in fused.metrics.iter().zip(&composed.metrics) {
            assert!((a["loss"] - b["loss"]).abs() < 1e-5, "lora={lora}: step loss {} vs {}", a["loss"], b["loss"]);
            assert!((a["grad_norm"] / b["grad_norm"] - 1.0).abs() < 1e-4, "lora={lora}: grad norm");
        }
        // Three Adam steps move a weight by up to 3e-3; the two paths agree to a few % of that.
        for (name, w) in &fused.weights {
            let d = max_abs(w, &composed.weights[name])?;
            assert!(d < 1e-4, "lora={lora}: weight {name} differs by {d} after 3 steps");
        }
    }
    Ok(())
}

#[test]
fn bf16_mixed_precision_tracks_f32_and_keeps_small_updates() -> Result<()> {
    for lora in [false, true] {
        let m32 = model(22, lora, Precision::uniform(DType::F32), true)?;
        let m16 = model(22, lora, Precision::mixed_bf16(), true)?;
        // bf16 compute cannot use the fused kernels; trainable weights stay f32, frozen ones bf16.
        assert!(!m16.fused_kernels());
        assert!(m16.trainable_vars().iter().all(|(_, v)| v.dtype() == DType::F32));
        let frozen = m16.layers[0].q.weight.dtype();
        assert_eq!(frozen, if lora { DType::BF16 } else { DType::F32 });

        let a = run(&m32, true, 1, 1e-6, None)?;
        // The same loss for both: the f32 model's shifted reference log-probs.
        let loss_refs: Vec<RefLogps> =
            a.refs.iter().map(|r| RefLogps { chosen: r.chosen + 0.3, rejected: r.rejected - 0.2 }).collect();
        let b = run(&m16, true, 1, 1e-6, Some(&loss_refs))?;
        for (x, y) in a.refs.iter().zip(&b.refs) {
            // Summed log-probs of 2-5 tokens over a 64-token vocabulary; bf16 keeps ~3 digits.
            for (p, q) in [(x.chosen, y.chosen), (x.rejected, y.rejected)] {
                assert!((p - q).abs() < 0.05 + 0.01 * p.abs(), "lora={lora}: logp {p} (f32) vs {q} (bf16)");
            }
        }
        assert!((a.loss - b.loss).abs() < 0.02, "lora={lora}: loss {} vs {}", a.loss, b.loss);
        for (name, g) in &a.grads {
            let (d, scale) = (max_abs(g, &b.grads[name])?, max_abs_of(g)?);
            assert!(d < 0.1 * scale + 1e-6, "lora={lora}: bf16 gradient of {name} off by {d} (max {scale})");
        }
        // A 1e-6 step changes the f32 master weights (a bf16 weight would not move at all).
        let before = model(22, lora, Precision::mixed_bf16(), true)?;
        for (name, v) in before.trainable_vars() {
            let moved = max_abs(v.as_tensor(), &b.weights[&name])?;
            assert!(moved > 1e-7, "lora={lora}: {name} did not move ({moved})");
        }
    }
    Ok(())
}

#[test]
fn bf16_dpo_training_separates_the_pairs() -> Result<()> {
    for (lora, lr) in [(false, 1e-2), (true, 2e-2)] {
        let m = model(7, lora, Precision::mixed_bf16(), true)?;
        let r = run(&m, true, 30, lr, None)?;
        let (first, last) = (&r.metrics[0], r.metrics.last().expect("steps"));
        assert_eq!(last["rewards/accuracies"], 1.0, "lora={lora}: {last:?}");
        assert!(
            last["loss"] < 0.5 && last["loss"] < first["loss"],
            "lora={lora}: {} -> {}",
            first["loss"],
            last["loss"]
        );
    }
    Ok(())
}
