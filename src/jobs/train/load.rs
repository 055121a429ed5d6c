//! Phase 2, load: the base model twice — once by the inference loader (its tokenizer and chat
//! template tokenize the examples; the samples run its architecture with the run's weights; an
//! HF folder's own weights are not read) and once as trainable tensors, with LoRA attached when
//! the run asks for it.

use std::path::Path;

use candle_core::Device;

use crate::model::{self, LoadOptions};
use crate::store::Store;
use crate::train::load::Weights;
use crate::train::lora::{self, LoraConfig};
use crate::train::model::Model as Net;
use crate::train::precision::Precision;

use super::TrainConfig;

/// The base model as `verdict generate` loads it, registered in `models` as the run's base:
/// a GGUF's weights as stored (quantized: a fifth of f32), an HF folder's not at all
/// (`Model::load_frame`).
pub(super) fn inference(
    store: &Store,
    run_id: i64,
    config: &TrainConfig,
    model_path: &Path,
) -> anyhow::Result<model::Model> {
    let inference = model::Model::load_frame(
        model_path,
        &LoadOptions {
            threads: config.threads,
            dequantize: false,
            requantize: false,
            device: config.device.parse().map_err(|e| anyhow::anyhow!("--device: {e}"))?,
        },
    )?;
    let info = inference.info();
    let base_id = store.register_model(
        &info.sha256,
        &info.display_name(),
        &model_path.display().to_string(),
        if model_path.is_dir() { "hf" } else { "gguf" },
        &info.architecture,
        &info.quantization,
    )?;
    store.set_run_base_model(run_id, base_id)?;
    Ok(inference)
}

/// The network that trains, and its LoRA settings when only adapters train.
pub(super) struct Trainable {
    pub net: Net,
    pub lora: Option<LoraConfig>,
}

/// The base model's weights as f32 tensors on `device` (`train::load`), refused when the
/// trainer cannot train the family or could not export the result correctly.
pub(super) fn trainable(
    model_path: &Path,
    config: &TrainConfig,
    device: &Device,
    memory: &super::memory::Checked,
) -> anyhow::Result<Trainable> {
    let lora_cfg = config.lora_rank.map(|rank| LoraConfig {
        rank,
        alpha: config.lora_alpha,
        targets: config.lora_targets.clone(),
    });
    // f32 on the CPU (with the fused kernels); bf16 compute over f32 master weights on a GPU.
    let precision = Precision::for_device(device, Default::default());
    tracing::info!(device = %model::device_label(device), %precision, "training");
    let mut net = match lora_cfg {
        None => crate::train::load::load(model_path, device, Weights::Trainable, precision)?,
        // The frozen base in f32, bf16 or quantized as the plan settled (`train::frozen`).
        Some(_) => crate::train::lean_load::load_frozen(model_path, device, memory.base, precision)?,
    };
    net.set_checkpointing(memory.checkpointing);
    if let Some(l) = &lora_cfg {
        lora::attach(&mut net, l, config.seed)?;
    }
    Ok(Trainable { net, lora: lora_cfg })
}
