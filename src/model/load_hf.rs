//! Loading a Hugging Face model directory: config.json, *.safetensors (one file or shards),
//! tokenizer.json, tokenizer_config.json (special tokens, chat template), and optionally
//! chat_template.jinja and generation_config.json. Weights run as dense f32 on CPU.

use super::arch::ArchConfig;
use super::error::{ModelError, Result};
use super::hf_files::{TokenizerConfig, safetensors_files, weights_sha256};
use super::info::{ModelFormat, ModelInfo, SpecialTokens, dominant_type};
use super::llama::{Config, Layer, Linear, Transformer};
use super::loaded::{Loaded, stop_ids_for};
use candle_core::quantized::QMatMul;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use std::path::Path;

/// Loads the HF directory `dir` (it exists and is a directory).
pub fn load(dir: &Path, device: &Device) -> Result<Loaded> {
    load_with(dir, device, true)
}

/// `load`, or with `weights` false everything but the weights: the network has the config's
/// shapes and rotation tables but no layers, and its embedding is a `[vocab, 1]` placeholder
/// (no tensor data is read). A training run needs no more (`Model::load_frame`): the f32 copy
/// of every weight beside the mapped file was 3x the file's size at the run's start.
pub fn load_with(dir: &Path, device: &Device, weights: bool) -> Result<Loaded> {
    let bad = |reason: String| ModelError::BadHfDir { path: dir.to_path_buf(), reason };
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| bad(format!("cannot read config.json ({e})")))?;
    let cfg = ArchConfig::from_hf_json(&cfg_path, &text)?;
    if !cfg.family.runs() {
        return Err(ModelError::UnsupportedArchitecture { path: dir.to_path_buf(), arch: cfg.family.name().into() });
    }
    let arch = cfg.family.name().to_string();
    let tok_path = dir.join("tokenizer.json");
    if !tok_path.is_file() {
        return Err(ModelError::MissingTokenizer {
            path: dir.to_path_buf(),
            reason: "tokenizer.json is missing".into(),
        });
    }
    let tokenizer = tokenizers::Tokenizer::from_file(&tok_path)
        .map_err(|e| ModelError::MissingTokenizer { path: tok_path.clone(), reason: e.to_string() })?;
    let tok_cfg = TokenizerConfig::read(dir)?;

    let files = safetensors_files(dir)?;
    // SAFETY: the files are memory-mapped read-only; verdict never writes a model it has loaded.
    let st = unsafe { MmapedSafetensors::multi(&files) }.map_err(|e| bad(format!("cannot read safetensors: {e}")))?;
    let mut stored = Vec::new();
    let mut parameters = 0u64;
    for (_, view) in st.tensors() {
        let n: usize = view.shape().iter().product();
        parameters += n as u64;
        if view.shape().len() == 2 {
            stored.push((format!("{:?}", view.dtype()).to_uppercase(), n as u64));
        }
    }
    let get = |name: &str| -> Result<Tensor> {
        let t = st.load(name, device).map_err(|e| bad(format!("tensor {name}: {e}")))?;
        Ok(t.to_dtype(DType::F32)?)
    };
    let has = |name: &str| st.get(name).is_ok();
    // Gemma's norms multiply by `1 + w`: the layers get the weight as applied.
    let gemma = cfg.family.gemma();
    let norm_w = |name: &str| -> Result<Tensor> {
        let w = get(name)?;
        Ok(if gemma { w.affine(1.0, 1.0)? } else { w })
    };
    let opt_norm =
        |name: String| -> Result<Option<Tensor>> { if has(&name) { norm_w(&name).map(Some) } else { Ok(None) } };
    // `rows` picks rows of a fused matrix (Phi-3's qkv_proj and gate_up_proj).
    let linear_rows = |weight: &str, rows: Option<(usize, usize)>, with_bias: bool| -> Result<Linear> {
        let pick = |t: Tensor| -> Result<Tensor> {
            Ok(match rows {
                Some((start, len)) => t.narrow(0, start, len)?.contiguous()?,
                None => t,
            })
        };
        let bias_name = weight.replace(".weight", ".bias");
        let bias = if with_bias || has(&bias_name) { Some(pick(get(&bias_name)?)?) } else { None };
        Ok(Linear::new(QMatMul::Tensor(pick(get(weight)?)?), bias))
    };
    let linear = |prefix: &str, with_bias: bool| linear_rows(&format!("{prefix}.weight"), None, with_bias);
    let qkv_bias = cfg.qkv_bias();
    let (qd, kvd) = (cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim);
    let ff = cfg.intermediate_size;
    let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
    for i in (0..cfg.num_hidden_layers).filter(|_| weights) {
        let p = format!("model.layers.{i}");
        let [q, k, v, gate, up] = if cfg.family.fused_projections() {
            let qkv = format!("{p}.self_attn.qkv_proj.weight");
            let gate_up = format!("{p}.mlp.gate_up_proj.weight");
            [
                linear_rows(&qkv, Some((0, qd)), false)?,
                linear_rows(&qkv, Some((qd, kvd)), false)?,
                linear_rows(&qkv, Some((qd + kvd, kvd)), false)?,
                linear_rows(&gate_up, Some((0, ff)), false)?,
                linear_rows(&gate_up, Some((ff, ff)), false)?,
            ]
        } else {
            [
                linear(&format!("{p}.self_attn.q_proj"), qkv_bias)?,
                linear(&format!("{p}.self_attn.k_proj"), qkv_bias)?,
                linear(&format!("{p}.self_attn.v_proj"), qkv_bias)?,
                linear(&format!("{p}.mlp.gate_proj"), false)?,
                linear(&format!("{p}.mlp.up_proj"), false)?,
            ]
        };
        let post_attention = norm_w(&format!("{p}.post_attention_layernorm.weight"))?;
        let (post_attn_norm, ffn_norm) = match opt_norm(format!("{p}.pre_feedforward_layernorm.weight"))? {
            Some(pre) => (Some(post_attention), pre),
            None => (None, post_attention),
        };
        layers.push(Layer {
            attn_norm: norm_w(&format!("{p}.input_layernorm.weight"))?,
            q,
            k,
            v,
            o: linear(&format!("{p}.self_attn.o_proj"), false)?,
            ffn_norm,
            gate,
            up,
            down: linear(&format!("{p}.mlp.down_proj"), false)?,
            q_norm: opt_norm(format!("{p}.self_attn.q_norm.weight"))?,
            k_norm: opt_norm(format!("{p}.self_attn.k_norm.weight"))?,
            post_attn_norm,
            post_ffn_norm: opt_norm(format!("{p}.post_feedforward_layernorm.weight"))?,
        });
    }
    let embed_name = "model.embed_tokens.weight";
    let embed = match weights {
        true => get(embed_name)?,
        false => {
            let rows = st.get(embed_name).map_err(|e| bad(format!("tensor {embed_name}: {e}")))?.shape()[0];
            Tensor::zeros((rows, 1), DType::F32, device)?
        }
    };
    let lm_head = if weights && has("lm_head.weight") && !cfg.tie_word_embeddings {
        Linear::new(QMatMul::Tensor(get("lm_head.weight")?), None)
    } else {
        Linear::new(QMatMul::Tensor(embed.clone()), None)
    };
    let norm = norm_w("model.norm.weight")?;
    let vocab = embed.dim(0)?;
    let context = cfg.context();
    let net_cfg = Config::new(&cfg, vocab, false);
    let net = Transformer::new(net_cfg, embed, layers, norm, lm_head, &cfg.rope, device)?;
    let name = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("_name_or_path").and_then(|n| n.as_str()).map(str::to_string))
        .filter(|s| !s.is_empty());

    let mut special = SpecialTokens {
        bos: tok_cfg.bos_token.clone(),
        eos: tok_cfg.eos_token.clone(),
        eot: None,
        pad: tok_cfg.pad_token.clone(),
        unk: tok_cfg.unk_token.clone(),
        stop_ids: Vec::new(),
    };
    special.stop_ids = stop_ids_for(&tokenizer, &mut special, &tok_cfg.generation_eos_ids);
    let info = ModelInfo {
        path: dir.to_path_buf(),
        format: ModelFormat::Hf,
        architecture: arch,
        name,
        parameters,
        quantization: dominant_type(&stored),
        // Safetensors weights (f32, f16 or bf16) run as dense f32.
        run_quantization: "F32".into(),
        context_length: context,
        vocab_size: vocab,
        hidden_size: cfg.hidden_size,
        layers: cfg.num_hidden_layers,
        special_tokens: special,
        chat_template: tok_cfg.chat_template.clone().unwrap_or_default(),
        chat_template_source: tok_cfg.chat_template_source.clone(),
        sha256: weights_sha256(&files)?,
    };
    Ok(Loaded { net, tokenizer, info, arch: cfg })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LoadOptions, Model};

    #[test]
    fn a_frame_reads_no_weight_and_runs_the_weights_it_is_given_as_the_full_load_does() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/families/llama");
        let full = load(&dir, &Device::Cpu).unwrap();
        let frame = load_with(&dir, &Device::Cpu, false).unwrap();
        // No layer and a one-column embedding: a training run's start held the f32 copy of every
        // weight beside the mapped file (3x the file at 1.5B) for nothing.
        assert!(frame.net.layers.is_empty());
        assert_eq!(frame.net.embed.dims(), &[full.net.embed.dim(0).unwrap(), 1]);
        assert_eq!(frame.info.sha256, full.info.sha256);
        assert_eq!(frame.info.parameters, full.info.parameters);
        assert_eq!(frame.net.cfg.n_layers, full.net.cfg.n_layers);
        // The samples of a run: the frame with the run's weights computes what the model does.
        let tensors: std::collections::HashMap<String, Tensor> =
            candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap().into_iter().collect();
        let opts = LoadOptions { device: crate::model::DeviceChoice::Cpu, ..Default::default() };
        let get = |name: &str| Ok(tensors.get(name).cloned());
        let frame = Model::load_frame(&dir, &opts).unwrap().frame();
        let from_frame = frame.with_hf_weights(&get, crate::model::llama::WeightForm::AsGiven).unwrap();
        let tokens = [1u32, 5, 9, 2];
        let want = Model::load(&dir, &opts).unwrap().logits(&tokens).unwrap();
        let got = from_frame.logits(&tokens).unwrap();
        let diff = (want - got).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "logits differ by {diff}");
    }
}
