//! Every family's tiny model saved by transformers 5 (`scripts/make_family_fixtures.py`,
//! tests/fixtures/families/): the families verdict runs give transformers' logits, for inference
//! and for the trainer, and one full and one LoRA training step give PyTorch's loss and gradient
//! norm; an architecture verdict does not know fails naming it.

use super::tests_tiny::tiny_paths;
use super::*;
use candle_core::{DType, IndexOp};

/// Fixture folders, by family name.
const FIXTURES: [&str; 9] =
    ["llama", "llama3", "qwen2", "mistral", "qwen3", "gemma2", "gemma3", "phi3", "mistral_window"];

struct Reference {
    tokens: Vec<u32>,
    logits: Tensor,
    next_token_logps: Vec<f32>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/families")
}

fn reference_json(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join(name).join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The fixture's formats for the trainer: its HF folder and, where it has one, its GGUF
/// (mistral_window has none: its GGUF would be mistral's layout again).
fn train_sources(name: &str) -> Vec<(&'static str, PathBuf)> {
    let dir = fixtures().join(name);
    let gguf = dir.join("model.gguf");
    let mut out = vec![("HF", dir)];
    if gguf.is_file() {
        out.push(("GGUF", gguf));
    }
    out
}

/// The trainer's config and weights from a fixture source (`train_sources`).
fn train_load(path: &Path) -> (crate::train::config::Config, crate::train::weights::Weights) {
    let w = match path.is_dir() {
        true => crate::train::weights::load_hf_dir(path, DType::F32, &Device::Cpu),
        false => crate::train::weights::load_gguf(path, DType::F32, &Device::Cpu),
    };
    w.unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn reference(name: &str) -> Reference {
    let v = reference_json(name);
    let tokens: Vec<u32> = serde_json::from_value(v["tokens"].clone()).unwrap();
    let rows: Vec<Vec<f32>> = serde_json::from_value(v["logits"].clone()).unwrap();
    let (n, vocab) = (rows.len(), rows[0].len());
    let logits = Tensor::from_vec(rows.concat(), (n, vocab), &Device::Cpu).unwrap();
    Reference { tokens, logits, next_token_logps: serde_json::from_value(v["next_token_logps"].clone()).unwrap() }
}

/// The fixture folder with the tiny model's tokenizer beside it (the fixtures hold weights and
/// config only; the logits do not depend on the tokenizer).
fn with_tokenizer(dir: &Path, name: &str) -> PathBuf {
    let dst = dir.join(name);
    std::fs::create_dir_all(&dst).unwrap();
    for src in [fixtures().join(name), tiny_paths().1.clone()] {
        for entry in std::fs::read_dir(&src).unwrap() {
            let p = entry.unwrap().path();
            let file = p.file_name().unwrap();
            if !dst.join(file).exists() {
                std::fs::copy(&p, dst.join(file)).unwrap();
            }
        }
    }
    dst
}

/// Inference gives transformers' logits for every family, on the CPU path and with candle's
/// ops (what a GPU runs), for a whole prompt and when decoding one token at a time from the
/// cache (past the sliding windows of 8 positions).
#[test]
fn every_family_gives_transformers_logits() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LoadOptions { device: DeviceChoice::Cpu, ..LoadOptions::default() };
    for name in FIXTURES {
        let want = reference(name);
        let n = want.tokens.len();
        for candle_ops in [false, true] {
            let mut model = Model::load(&with_tokenizer(dir.path(), name), &opts).unwrap();
            if candle_ops {
                model.net.use_candle_ops();
            }
            let got = model.logits(&want.tokens).unwrap();
            let d = llama::max_abs_diff(&got, &want.logits).unwrap();
            eprintln!("{name} (candle ops {candle_ops}): logits within {d:.2e} of transformers'");
            assert!(d < 1e-4, "{name}: logits differ from transformers' by {d}");
            let logp = candle_nn::ops::log_softmax(&got, 1).unwrap();
            for (t, want_lp) in want.next_token_logps.iter().enumerate() {
                let lp = logp.i((t, want.tokens[t + 1] as usize)).unwrap().to_scalar::<f32>().unwrap();
                assert!((lp - want_lp).abs() < 1e-4, "{name}: log-prob of token {} is {lp}, not {want_lp}", t + 1);
            }
            let mut cache = model.net.new_cache_for(n);
            let first = model.net.forward_last(&want.tokens[..4], &mut cache).unwrap();
            let mut worst = llama::max_abs_diff(&first, &want.logits.i(3).unwrap()).unwrap();
            for t in 4..n {
                let row = model.net.forward_last(&want.tokens[t..t + 1], &mut cache).unwrap();
                worst = worst.max(llama::max_abs_diff(&row, &want.logits.i(t).unwrap()).unwrap());
            }
            assert!(worst < 1e-4, "{name} (candle ops {candle_ops}): decoding differs from transformers by {worst}");
        }
    }
}

/// The trainer reads the same folders (transformers 5 configs), and the same weights as GGUF,
/// to the same logits.
#[test]
fn the_trainer_gives_transformers_logits() {
    use crate::train::model::{Input, Model as TrainModel};
    let mut checked = 0;
    for name in FIXTURES {
        let want = reference(name);
        for (format, path) in train_sources(name) {
            let (cfg, w) = train_load(&path);
            cfg.check_supported().unwrap();
            let model = TrainModel::new(cfg, w, false).unwrap();
            let input = Input::right_padded(std::slice::from_ref(&want.tokens), 0, &Device::Cpu).unwrap();
            let got = model.forward(&input).unwrap().i(0).unwrap();
            let d = llama::max_abs_diff(&got, &want.logits).unwrap();
            eprintln!("{name} {format}: trainer logits within {d:.2e} of transformers'");
            assert!(d < 1e-4, "{name} {format}: training logits differ from transformers' by {d}");
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * FIXTURES.len() - 1, "every fixture's folder, and every GGUF but mistral_window's");
}

/// An architecture verdict does not know fails on load with its name, for inference and for
/// training.
#[test]
fn an_unknown_architecture_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LoadOptions { device: DeviceChoice::Cpu, ..LoadOptions::default() };
    let folder = with_tokenizer(dir.path(), "llama");
    let path = folder.join("config.json");
    let text = std::fs::read_to_string(&path).unwrap().replace("LlamaForCausalLM", "FalconForCausalLM");
    std::fs::write(&path, text).unwrap();
    let err = Model::load(&folder, &opts).unwrap_err();
    assert!(err.to_string().contains("unsupported architecture `FalconForCausalLM`"), "{err}");
    let err = crate::train::weights::load_hf_dir(&folder, DType::F32, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("FalconForCausalLM"), "{err}");
}

/// One SFT step on the fixture's two pairs, full and LoRA (rank 2 on every projection, with the
/// script's adapter weights), gives the loss and gradient norm PyTorch computes in float64 for
/// the same step, within 1e-4 relative: from the HF folder and from the GGUF.
#[test]
fn a_training_step_gives_pytorchs_loss_and_gradient_norm() {
    use crate::train::logps::Truncation;
    use crate::train::lora::{LoraConfig, TARGETS, attach};
    use crate::train::model::Model as TrainModel;
    use crate::train::optim::{AdamW, OptimConfig};
    use crate::train::step::{Method, PairIds, StepConfig, train_step};
    for name in FIXTURES {
        let step = reference_json(name)["sft_step"].clone();
        let pairs: Vec<PairIds> = step["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| PairIds {
                prompt: serde_json::from_value(p[0].clone()).unwrap(),
                chosen: serde_json::from_value(p[1].clone()).unwrap(),
                rejected: Vec::new(),
                weight: 1.0,
                desirable: None,
            })
            .collect();
        for ((format, path), mode) in train_sources(name).into_iter().flat_map(|s| [(s.clone(), "full"), (s, "lora")]) {
            let want = &step[mode];
            let dir = fixtures().join(name);
            let (cfg, w) = train_load(&path);
            let mut model = TrainModel::new(cfg, w, mode == "full").unwrap();
            if mode == "lora" {
                let lora = LoraConfig {
                    rank: want["rank"].as_u64().unwrap() as usize,
                    alpha: want["alpha"].as_f64().unwrap(),
                    targets: TARGETS.iter().map(|t| t.to_string()).collect(),
                };
                attach(&mut model, &lora, 0).unwrap();
                let saved = candle_core::safetensors::load(dir.join("lora.safetensors"), &Device::Cpu).unwrap();
                let vars = model.trainable_vars();
                assert_eq!(vars.len(), saved.len(), "{name}: one adapter per projection");
                for (n, var) in vars {
                    var.set(&saved[&n]).unwrap();
                }
            }
            let mut opt = AdamW::new(model.trainable_vars(), OptimConfig::default()).unwrap();
            let cfg = StepConfig { method: Method::Sft, truncation: Truncation::default(), pad_id: 0 };
            let m = train_step(&model, &[(&pairs, &[])], &cfg, &mut opt).unwrap();
            for key in ["loss", "grad_norm"] {
                let (got, want) = (m[key], want[key].as_f64().unwrap());
                let rel = (got - want).abs() / want.abs().max(1.0);
                eprintln!("{name} {format} {mode}: {key} {got:.6} vs PyTorch {want:.6} (relative {rel:.1e})");
                assert!(rel < 1e-4, "{name} {format} {mode}: {key} is {got}, PyTorch's {want}");
            }
        }
    }
}
