//! Loading a LoRA run's frozen base lean (`frozen.rs`): the seven projections of every layer
//! kept in bf16 or as the GGUF quantized them, one tensor at a time, so no f32 copy of the
//! whole model exists while loading either; embeddings, norms and biases come in the compute
//! dtype as `train::load` gives them.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Error, Result, Tensor};

use super::frozen::{BaseDtype, ProjWeight, QuantRows};
use super::load::{Weights as Trains, load};
use super::model::Model;
use super::precision::Precision;
use super::{gguf_layout, weights};

const PROJECTIONS: [&str; 7] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

/// Whether an HF name is one of a layer's seven projection weights.
pub fn is_projection(name: &str) -> bool {
    let Some(rest) = name.strip_suffix(".weight") else { return false };
    let module = rest.rsplit('.').next().unwrap_or("");
    name.starts_with("model.layers.") && PROJECTIONS.contains(&module)
}

/// Whether the model at `path` stores every projection weight in bf16 (an HF folder's
/// safetensors, or a GGUF): a frozen base kept in bf16 then holds exactly the stored values, in
/// half the memory of f32. `false` when a file cannot be read (loading it will say why).
pub fn stores_bf16_projections(path: &Path) -> bool {
    let dtypes: Vec<bool> = if path.is_dir() {
        let Ok(dir) = std::fs::read_dir(path) else { return false };
        let files =
            dir.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "safetensors"));
        let mut seen = Vec::new();
        for f in files {
            let Ok((_, header, _)) = weights::safetensors_header(&f) else { return false };
            seen.extend(
                header
                    .iter()
                    .filter(|(name, _)| is_projection(name))
                    .map(|(_, info)| info.get("dtype").and_then(|d| d.as_str()) == Some("BF16")),
            );
        }
        seen
    } else {
        let Ok(mut f) = std::fs::File::open(path) else { return false };
        let Ok(content) = gguf_file::Content::read(&mut f) else { return false };
        let Ok(cfg) = weights::gguf_config(path, &content, &mut f) else { return false };
        let family = cfg.family();
        content
            .tensor_infos
            .iter()
            .filter(|(name, _)| gguf_layout::hf_name(family, name).is_some_and(|hf| is_projection(&hf)))
            .map(|(_, info)| info.ggml_dtype == candle_core::quantized::GgmlDType::BF16)
            .collect()
    };
    !dtypes.is_empty() && dtypes.iter().all(|&b| b)
}

/// The frozen network of the model at `path` with its projections kept as `base` says
/// (`F32`/`Auto`: as `train::load` does; `Bf16`; `Quantized`: a GGUF's blocks as stored).
pub fn load_frozen(path: &Path, device: &Device, base: BaseDtype, precision: Precision) -> Result<Model> {
    if matches!(base, BaseDtype::F32 | BaseDtype::Auto) || !device.is_cpu() && base == BaseDtype::Bf16 {
        // Off the CPU, frozen weights are already stored in the (bf16) compute dtype.
        return load(path, device, Trains::Frozen, precision);
    }
    if base == BaseDtype::Quantized && !device.is_cpu() {
        return Err(Error::Msg(
            "a quantized frozen base trains on the CPU only for now: on a GPU use --base-dtype bf16".into(),
        ));
    }
    let (cfg, dense, lean) = if path.is_dir() {
        if base == BaseDtype::Quantized {
            return Err(Error::Msg(format!(
                "{}: --base-dtype quantized needs a GGUF file (an HF folder holds no quantized weights): \
                 use --base-dtype bf16, or a GGUF of the model",
                path.display()
            )));
        }
        hf_dir(path, precision, device)?
    } else {
        gguf(path, base, precision, device)?
    };
    if let Err(why) = cfg.check_supported() {
        return Err(Error::Msg(format!("{}: cannot train this model: {why}", path.display())));
    }
    Model::with_lean_base(cfg, dense, lean, false, precision)
}

type Parts = (super::config::Config, HashMap<String, Tensor>, HashMap<String, ProjWeight>);

/// An HF folder, tensor by tensor: projections to bf16, the rest to the compute dtype.
fn hf_dir(dir: &Path, precision: Precision, device: &Device) -> Result<Parts> {
    let cfg = super::memory_plan::read_config(dir)?;
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    let (mut dense, mut lean) = (HashMap::new(), HashMap::new());
    for f in files {
        super::weights::each_safetensor(&f, device, |name, t| {
            if is_projection(&name) {
                lean.insert(name, ProjWeight::half(&t)?);
            } else {
                dense.insert(name, t.to_dtype(precision.compute)?);
            }
            Ok(())
        })?;
    }
    Ok((cfg, dense, lean))
}

/// HF row `r` of a llama q/k weight is GGUF row `order[r]` (the inverse of llama.cpp's
/// permutation, as `gguf_layout::unpermute_qk` applies it to a tensor).
pub fn unpermute_order(out: usize, n_head: usize) -> Vec<usize> {
    let half = out / n_head / 2;
    (0..out)
        .map(|r| {
            let (h, rem) = (r / (2 * half), r % (2 * half));
            let (j, i) = (rem / half, rem % half);
            h * 2 * half + i * 2 + j
        })
        .collect()
}

/// A GGUF, tensor by tensor: projections kept as stored (`Quantized`) or turned into bf16.
fn gguf(path: &Path, base: BaseDtype, precision: Precision, device: &Device) -> Result<Parts> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::Msg(format!("cannot open {}: {e}", path.display())))?;
    let content = gguf_file::Content::read(&mut f).map_err(|e| e.with_path(path))?;
    let cfg = weights::gguf_config(path, &content, &mut f)?;
    let family = cfg.family();
    let architecture = match content.metadata.get("general.architecture") {
        Some(gguf_file::Value::String(a)) => a.clone(),
        _ => String::new(),
    };
    let heads = (cfg.num_attention_heads, cfg.n_kv_heads());
    // llama.cpp permutes q/k rows of the files it writes as `llama` (`gguf_layout::to_hf`).
    let permuted = architecture == "llama";
    let (mut dense, mut lean) = (HashMap::new(), HashMap::new());
    let mut names: Vec<_> = content.tensor_infos.keys().cloned().collect();
    names.sort();
    for name in names {
        let Some(hf) = gguf_layout::hf_name(family, &name) else { continue };
        let q = content.tensor(&mut f, &name, &Device::Cpu)?;
        let rows_of = match name.rsplit('.').nth(1) {
            Some("attn_q") if permuted => Some(heads.0),
            Some("attn_k") if permuted => Some(heads.1),
            _ => None,
        };
        if !is_projection(&hf) {
            let t = gguf_layout::to_hf(family, &architecture, heads, &name, q.dequantize(&Device::Cpu)?)?;
            dense.insert(hf, t.to_dtype(precision.compute)?.to_device(device)?);
            continue;
        }
        let (out, cols) = q.shape().dims2()?;
        let weight = if base == BaseDtype::Quantized {
            let rows = QuantRows::new(q.dtype(), &q.data()?, out, cols)?;
            let rows = match rows_of {
                Some(n) => rows.reorder(&unpermute_order(out, n)),
                None => rows,
            };
            ProjWeight::Quant(std::sync::Arc::new(rows))
        } else {
            let t = gguf_layout::to_hf(family, &architecture, heads, &name, q.dequantize(&Device::Cpu)?)?;
            ProjWeight::half(&t)?
        };
        lean.insert(hf, weight);
    }
    Ok((cfg, dense, lean))
}
