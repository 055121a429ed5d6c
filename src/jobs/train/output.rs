//! Phase 6, export: the trained model written to the run folder's `model/` (HF directory with
//! the LoRA merged, tokenizer files, GGUF from a GGUF base, the PEFT adapter for LoRA) and
//! registered in `models` as the run's output.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::model;
use crate::store::Store;
use crate::train::export;
use crate::train::lora::LoraConfig;
use crate::train::model::Model as Net;

use super::load::Trainable;
use super::steps::Checkpoints;
use super::write_hint;

/// Writes the model to `out/model` and registers it as the output of `run_id`. A write that
/// fails removes the half-written folder and says how to go on from the newest checkpoint.
pub(super) fn export_run(
    trained: &Trainable,
    tokenizer: &tokenizers::Tokenizer,
    info: &model::ModelInfo,
    source: &Path,
    out: &Path,
    checkpoints: &Checkpoints,
    store: &Store,
) -> anyhow::Result<PathBuf> {
    let Trainable { net, lora } = trained;
    let Checkpoints { run_id, last, .. } = *checkpoints;
    let final_dir = out.join("model");
    if let Err(e) = write_outputs(net, lora.as_ref(), tokenizer, info, source, &final_dir) {
        // Half a model folder is no model: remove it (and free what it took).
        let _ = std::fs::remove_dir_all(&final_dir);
        bail!("cannot write the trained model to {}: {e:#}; {}", final_dir.display(), write_hint(run_id, last));
    }
    let sha = model::file_hash::sha256_remembered(&final_dir.join("model.safetensors"))?;
    let model_id = store.register_model(
        &sha,
        &format!("{} (run {run_id})", info.display_name()),
        &final_dir.display().to_string(),
        "hf",
        &info.architecture,
        "F32",
    )?;
    store.set_run_output(run_id, model_id)?;
    Ok(final_dir)
}

/// The HF directory (LoRA merged), tokenizer files, and for LoRA the PEFT adapter.
fn write_outputs(
    net: &Net,
    lora_cfg: Option<&LoraConfig>,
    tokenizer: &tokenizers::Tokenizer,
    info: &model::ModelInfo,
    source: &Path,
    dir: &Path,
) -> anyhow::Result<()> {
    export::export_hf(net, dir)?;
    // GGUF (Q8_0, plus the source's own quantization) for `verdict generate` and llama.cpp.
    // A GGUF needs the source's tokenizer metadata: from an HF base the run says how to convert.
    if source.is_file() {
        // Tensor by tensor (`export::LazyTensors`): no f32 copy of the whole model beside it.
        let lazy = export::LazyTensors::of(net, export::Layout::Hf)?;
        crate::train::export_gguf::export_gguf_files(&lazy, source, dir)?;
    } else {
        tracing::info!(
            "no GGUF export: the base model is an HF folder (convert with llama.cpp's convert_hf_to_gguf.py)"
        );
    }
    tokenizer
        .save(dir.join("tokenizer.json"), false)
        .map_err(|e| anyhow::anyhow!("cannot write tokenizer.json: {e}"))?;
    let tokenizer_config = serde_json::json!({
        "chat_template": info.chat_template,
        "bos_token": info.special_tokens.bos,
        "eos_token": info.special_tokens.eot.clone().or(info.special_tokens.eos.clone()),
        "pad_token": info.special_tokens.pad,
        "unk_token": info.special_tokens.unk,
        "add_bos_token": false,
        "tokenizer_class": "PreTrainedTokenizerFast",
    });
    let path = dir.join("tokenizer_config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&tokenizer_config)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    if let Some(l) = lora_cfg {
        export::export_peft(net, l, &source.display().to_string(), &dir.join("adapter"))?;
    }
    Ok(())
}
