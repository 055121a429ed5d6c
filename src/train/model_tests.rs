//! Model tests: gradients reach every weight; logits equal candle-transformers' inference
//! models (`llama` on safetensors, `quantized_llama` on an F32 GGUF) on the same weights.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, IndexOp, Result, Tensor};

use crate::train::config::Config;
use crate::train::gguf_layout::{self, permute_qk};
use crate::train::model::{Input, Model};
use crate::train::weights::{self, tiny_config};

/// Largest absolute difference between two tensors.
pub fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
}

fn assert_all_grads_nonzero(model: &Model, input: &Input) -> Result<()> {
    let loss = model.forward(input)?.sqr()?.mean_all()?;
    let grads = loss.backward()?;
    let vars = model.trainable_vars();
    assert!(!vars.is_empty());
    for (name, v) in vars {
        let g = grads.get(v.as_tensor()).unwrap_or_else(|| panic!("{name} got no gradient"));
        let n = g.abs()?.sum_all()?.to_scalar::<f32>()?;
        assert!(n > 0.0, "{name} has an all-zero gradient");
    }
    Ok(())
}

#[test]
fn every_weight_gets_a_gradient() -> Result<()> {
    let dev = Device::Cpu;
    for (kind, tie) in [("llama", true), ("llama", false), ("qwen2", false)] {
        let cfg = tiny_config(kind, tie);
        let w = weights::random(&cfg, 1, &dev)?;
        let n_tensors = w.len();
        let model = Model::new(cfg, w, true)?;
        assert_eq!(model.trainable_vars().len(), n_tensors, "{kind}: every tensor is a Var");
        let input = Input::right_padded(&[vec![1, 5, 7, 9, 3], vec![1, 8, 2]], 0, &dev)?;
        assert_all_grads_nonzero(&model, &input)?;
    }
    Ok(())
}

#[test]
fn padding_does_not_change_real_positions() -> Result<()> {
    let dev = Device::Cpu;
    let cfg = tiny_config("llama", true);
    let model = Model::new(cfg.clone(), weights::random(&cfg, 2, &dev)?, false)?;
    let short = vec![1u32, 8, 2];
    let alone = model.forward(&Input::right_padded(std::slice::from_ref(&short), 0, &dev)?)?;
    let padded = model.forward(&Input::right_padded(&[vec![1, 5, 7, 9, 3, 4], short], 0, &dev)?)?;
    let d = max_diff(&alone.i(0)?, &padded.i(1)?.narrow(0, 0, 3)?)?;
    assert!(d < 1e-5, "padding changed logits by {d}");
    Ok(())
}

/// Writes `w` as an HF directory (config.json + model.safetensors).
pub fn write_hf_dir(dir: &std::path::Path, cfg: &Config, w: &HashMap<String, Tensor>) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("config.json"), cfg.to_hf_json().to_string())?;
    candle_core::safetensors::save(w, dir.join("model.safetensors"))
}

#[test]
fn logits_equal_candle_transformers_llama() -> Result<()> {
    use candle_transformers::models::llama as ct;
    let dev = Device::Cpu;
    let tmp = tempfile::tempdir()?;
    for tie in [true, false] {
        let cfg = tiny_config("llama", tie);
        let w = weights::random(&cfg, 4, &dev)?;
        let dir = tmp.path().join(format!("tie{tie}"));
        write_hf_dir(&dir, &cfg, &w)?;
        let (cfg2, w2) = weights::load_hf_dir(&dir, DType::F32, &dev)?;
        let ours = Model::new(cfg2, w2, true)?;

        let ct_cfg: ct::LlamaConfig = serde_json::from_value(cfg.to_hf_json()).map_err(candle_core::Error::wrap)?;
        let ct_cfg = ct_cfg.into_config(false);
        let files = [dir.join("model.safetensors")];
        let vb = unsafe { candle_nn::VarBuilder::from_mmaped_safetensors(&files, DType::F32, &dev)? };
        let theirs = ct::Llama::load(vb, &ct_cfg)?;
        let ids = vec![1u32, 17, 33, 5, 60, 2, 9];
        for len in [3, ids.len()] {
            let mut cache = ct::Cache::new(false, DType::F32, &ct_cfg, &dev)?;
            let want = theirs.forward(&Tensor::new(&ids[..len], &dev)?.unsqueeze(0)?, 0, &mut cache)?;
            // Ours in a padded batch: row 1 is the prefix of length `len`, row 0 the full ids.
            let got = ours.forward(&Input::right_padded(&[ids.clone(), ids[..len].to_vec()], 0, &dev)?)?;
            let d = max_diff(&got.i((1, len - 1))?, &want.i(0)?)?;
            assert!(d < 1e-4, "tie={tie} len={len}: logits differ by {d}");
        }
    }
    Ok(())
}

/// Writes `w` as an F32 GGUF the way llama.cpp's converter lays it out (GGUF names, permuted q/k).
pub fn write_f32_gguf(path: &std::path::Path, cfg: &Config, w: &HashMap<String, Tensor>) -> Result<()> {
    let mut qt = Vec::new();
    for (name, t) in w {
        let mut t = t.clone();
        if name.ends_with("q_proj.weight") {
            t = permute_qk(&t, cfg.num_attention_heads)?;
        } else if name.ends_with("k_proj.weight") {
            t = permute_qk(&t, cfg.n_kv_heads())?;
        }
        qt.push((
            gguf_layout::gguf_name(crate::model::arch::Family::Llama, name).expect("known tensor"),
            QTensor::quantize(&t, GgmlDType::F32)?,
        ));
    }
    let u = |x: usize| Value::U32(x as u32);
    let md = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.embedding_length", u(cfg.hidden_size)),
        ("llama.feed_forward_length", u(cfg.intermediate_size)),
        ("llama.block_count", u(cfg.num_hidden_layers)),
        ("llama.attention.head_count", u(cfg.num_attention_heads)),
        ("llama.attention.head_count_kv", u(cfg.n_kv_heads())),
        ("llama.rope.dimension_count", u(cfg.head_dim())),
        ("llama.context_length", u(cfg.max_position_embeddings)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(cfg.rms_norm_eps as f32)),
        ("llama.rope.freq_base", Value::F32(cfg.rope.theta as f32)),
    ];
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = qt.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::fs::File::create(path)?;
    gguf_file::write(&mut f, &md_refs, &t_refs)
}

#[test]
fn gguf_loads_to_the_same_weights_and_logits_as_quantized_llama() -> Result<()> {
    use candle_transformers::models::quantized_llama::ModelWeights;
    let dev = Device::Cpu;
    let tmp = tempfile::tempdir()?;
    for tie in [true, false] {
        let cfg = tiny_config("llama", tie);
        let w = weights::random(&cfg, 5, &dev)?;
        let path = tmp.path().join(format!("tie{tie}.gguf"));
        write_f32_gguf(&path, &cfg, &w)?;
        let (cfg2, w2) = weights::load_gguf(&path, DType::F32, &dev)?;
        assert_eq!(cfg2.tie_word_embeddings, tie);
        assert_eq!(cfg2.head_dim(), cfg.head_dim());
        for (name, t) in &w {
            let d = max_diff(t, &w2[name])?;
            assert!(d == 0.0, "{name} differs after the GGUF round trip by {d}");
        }
        let ours = Model::new(cfg2, w2, false)?;
        let mut f = std::fs::File::open(&path)?;
        let content = gguf_file::Content::read(&mut f)?;
        let mut theirs = ModelWeights::from_gguf(content, &mut f, &dev)?;
        let ids = vec![1u32, 17, 33, 5, 60, 2];
        let want = theirs.forward(&Tensor::new(ids.as_slice(), &dev)?.unsqueeze(0)?, 0)?;
        let got = ours.forward(&Input::right_padded(std::slice::from_ref(&ids), 0, &dev)?)?;
        let d = max_diff(&got.i((0, ids.len() - 1))?, &want.i(0)?)?;
        assert!(d < 1e-4, "tie={tie}: logits differ from quantized_llama by {d}");
    }
    Ok(())
}

/// The inference model rebuilt from training weights (how a run generates its samples) gives
/// the inference model's own logits, for a GGUF llama (q/k un-permuted on load) and qwen2.
#[test]
fn inference_model_with_training_weights_gives_the_same_logits() -> anyhow::Result<()> {
    use crate::model::testing::{TinyArch, write_tiny_models_arch};
    use crate::model::{LoadOptions, Model as InferenceModel};
    let dir = tempfile::tempdir()?;
    for arch in [TinyArch::Llama, TinyArch::Qwen2] {
        let (gguf, _) = write_tiny_models_arch(dir.path(), arch)?;
        let opts = LoadOptions { dequantize: true, requantize: false, ..LoadOptions::default() };
        let inference = InferenceModel::load(&gguf, &opts)?;
        let (cfg, w) = weights::load_gguf(&gguf, DType::F32, &Device::Cpu)?;
        let trained = Model::new(cfg, w, true)?;
        let lazy = crate::train::export::LazyTensors::of(&trained, crate::train::export::Layout::Split)?;
        let rebuilt =
            inference.frame().with_hf_weights(&|name| lazy.get(name), crate::model::llama::WeightForm::AsGiven)?;
        let tokens = [1u32, 5, 9, 3, 7, 2];
        let d = max_diff(&inference.logits(&tokens)?, &rebuilt.logits(&tokens)?)?;
        assert!(d < 1e-4, "{arch:?}: logits differ by {d}");
    }
    Ok(())
}

/// Training from a Llama 3.1+ GGUF keeps its rope scaling (`rope_freqs`): the trainer's config
/// is the inference loader's, its logits equal inference's, and the exported config.json says
/// llama3. (It set `rope_scaling: None`, so reference log-probs and policy ran another model.)
#[test]
fn training_from_a_llama3_gguf_keeps_its_rope_scaling() -> anyhow::Result<()> {
    use crate::model::arch::RopeKind;
    use crate::model::testing::{with_llama3_rope_freqs, write_tiny_models};
    use crate::model::{LoadOptions, Model as InferenceModel};
    let dir = tempfile::tempdir()?;
    let (plain, _) = write_tiny_models(dir.path())?;
    let gguf = dir.path().join("llama3.gguf");
    with_llama3_rope_freqs(&plain, &gguf, 4.0, 1.0, 8.0, 256)?;
    let opts = LoadOptions { dequantize: true, requantize: false, ..LoadOptions::default() };
    let inference = InferenceModel::load(&gguf, &opts)?;
    let (cfg, w) = weights::load_gguf(&gguf, DType::F32, &Device::Cpu)?;
    let want = RopeKind::Llama3 { factor: 4.0, low_freq_factor: 1.0, high_freq_factor: 8.0, original_max: 256 };
    assert_eq!(cfg.rope.kind, want);
    assert_eq!(&cfg.rope, inference.rope());
    let exported = cfg.to_hf_json();
    assert_eq!(exported["rope_scaling"]["rope_type"], "llama3");
    assert_eq!(Config::from_json(&exported.to_string())?, cfg);
    let trained = Model::new(cfg, w, false)?;
    let tokens: Vec<u32> = (0..40).map(|i| (i * 7 % 60 + 1) as u32).collect();
    let got = trained.forward(&Input::right_padded(std::slice::from_ref(&tokens), 0, &Device::Cpu)?)?.i(0)?;
    let d = max_diff(&got, &inference.logits(&tokens)?)?;
    assert!(d < 1e-4, "training and inference logits differ by {d}");
    Ok(())
}
