//! Checkpoints: trainable weights + optimizer state + step + the caller's state (data order).
//!
//! A checkpoint is a directory `checkpoint-<step>/` written under a temporary name and renamed
//! when complete, so a crash or `kill -9` mid-write leaves the previous checkpoint intact and
//! never a half-written one under the real name.

use std::path::{Path, PathBuf};

use candle_core::{Device, Result, Tensor};

use super::model::Model;
use super::optim::AdamW;

const WEIGHTS: &str = "trainable.safetensors";
const OPTIM: &str = "optimizer.safetensors";
const STATE: &str = "state.json";

fn io(e: std::io::Error, what: &Path) -> candle_core::Error {
    candle_core::Error::Msg(format!("{}: {e}", what.display()))
}

/// Writes `<dir>/checkpoint-<step>/`; `extra` is the caller's state (data order RNG, epoch, ...).
/// A write that fails (a full disk, a folder made read-only) names the file and removes what it
/// wrote; an earlier checkpoint of the same step stays as it was.
pub fn save(dir: &Path, model: &Model, opt: &AdamW, extra: &serde_json::Value) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| io(e, dir))?;
    let final_dir = dir.join(format!("checkpoint-{}", opt.step));
    let tmp = dir.join(format!(".tmp-checkpoint-{}", opt.step));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io(e, &tmp))?;
    }
    if let Err(e) = write_files(&tmp, model, opt, extra) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(|e| io(e, &final_dir))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(|e| io(e, &final_dir))?;
    Ok(final_dir)
}

fn write_files(tmp: &Path, model: &Model, opt: &AdamW, extra: &serde_json::Value) -> Result<()> {
    // candle's safetensors errors do not say which file: add it.
    let named = |path: &Path, e: candle_core::Error| {
        candle_core::Error::Msg(format!("{}: {}", path.display(), super::error_text(&e)))
    };
    std::fs::create_dir_all(tmp).map_err(|e| io(e, tmp))?;
    let weights: std::collections::HashMap<String, Tensor> =
        model.trainable_vars().into_iter().map(|(n, v)| (n, v.as_tensor().detach())).collect();
    let path = tmp.join(WEIGHTS);
    candle_core::safetensors::save(&weights, &path).map_err(|e| named(&path, e))?;
    let path = tmp.join(OPTIM);
    opt.save(&path).map_err(|e| named(&path, e))?;
    let state = serde_json::json!({ "step": opt.step, "extra": extra });
    let path = tmp.join(STATE);
    std::fs::write(&path, state.to_string()).map_err(|e| io(e, &path))
}

/// The checkpoint with the highest step in `dir`, if any.
pub fn latest(dir: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let step: usize = name.strip_prefix("checkpoint-")?.parse().ok()?;
            e.path().join(STATE).exists().then_some((step, e.path()))
        })
        .max_by_key(|(s, _)| *s)
        .map(|(_, p)| p)
}

/// Restores trainable weights and optimizer state into a model/optimizer built the same way as
/// the run's; returns the caller's `extra` state.
pub fn load(ckpt: &Path, model: &Model, opt: &mut AdamW) -> Result<serde_json::Value> {
    let mut weights = candle_core::safetensors::load(ckpt.join(WEIGHTS), &Device::Cpu)?;
    for (name, var) in model.trainable_vars() {
        let t = weights.remove(&name).ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "checkpoint {} lacks `{name}`: was it made with another model or LoRA config?",
                ckpt.display()
            ))
        })?;
        var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
    }
    opt.load(&ckpt.join(OPTIM))?;
    let text = std::fs::read_to_string(ckpt.join(STATE)).map_err(|e| io(e, ckpt))?;
    let state: serde_json::Value = serde_json::from_str(&text).map_err(candle_core::Error::wrap)?;
    Ok(state.get("extra").cloned().unwrap_or(serde_json::Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::logps::Truncation;
    use crate::train::loss::{DpoConfig, Metrics};
    use crate::train::optim::OptimConfig;
    use crate::train::step::tests::{pairs, tiny_model};
    use crate::train::step::{Method, StepConfig, reference_logps, train_step};

    fn run(lora: bool, steps: usize, stop_at: Option<usize>, dir: &Path) -> Result<Vec<Metrics>> {
        let model = tiny_model(5, lora)?;
        let data = pairs();
        let refs = reference_logps(&model, &data, &Truncation::default(), 0, 4)?;
        let ocfg = OptimConfig { learning_rate: 1e-2, total_steps: steps, warmup_steps: 1, ..Default::default() };
        let mut opt = AdamW::new(model.trainable_vars(), ocfg)?;
        let cfg =
            StepConfig { method: Method::Dpo(DpoConfig::default()), truncation: Truncation::default(), pad_id: 0 };
        let mut out = Vec::new();
        if stop_at.is_none()
            && let Some(c) = latest(dir)
        {
            load(&c, &model, &mut opt)?;
        }
        while opt.step < steps {
            if Some(opt.step) == stop_at {
                save(dir, &model, &opt, &serde_json::json!({"epoch": 0}))?;
                return Ok(out);
            }
            let mut m = train_step(&model, &[(&data, &refs)], &cfg, &mut opt)?;
            m.remove("tokens_per_second");
            m.remove("model_tflops_per_second");
            out.push(m);
        }
        Ok(out)
    }

    #[test]
    fn resume_gives_the_same_metrics() -> Result<()> {
        for lora in [false, true] {
            let tmp = tempfile::tempdir()?;
            let straight = run(lora, 6, None, &tmp.path().join("none"))?;
            let mut resumed = run(lora, 6, Some(3), tmp.path())?;
            assert!(latest(tmp.path()).is_some_and(|p| p.ends_with("checkpoint-3")));
            resumed.extend(run(lora, 6, None, tmp.path())?);
            assert_eq!(straight, resumed, "lora={lora}");
        }
        Ok(())
    }
}
