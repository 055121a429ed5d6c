//! Every family's tiny model saved by transformers 5 (`scripts/make_family_fixtures.py`,
//! tests/fixtures/families/): the families verdict runs give transformers' logits, for inference
//! and for the trainer; the others fail naming their architecture.

use super::arch::Family;
use super::tests_tiny::tiny_paths;
use super::*;
use candle_core::{DType, IndexOp};

/// Fixture folders, by family name.
const FIXTURES: [&str; 8] = ["llama", "llama3", "qwen2", "mistral", "qwen3", "gemma2", "gemma3", "phi3"];

struct Reference {
    tokens: Vec<u32>,
    logits: Tensor,
    next_token_logps: Vec<f32>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/families")
}

fn reference(name: &str) -> Reference {
    let text = std::fs::read_to_string(fixtures().join(name).join("reference.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
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

fn runs(name: &str) -> bool {
    let text = std::fs::read_to_string(fixtures().join(name).join("config.json")).unwrap();
    super::arch::ArchConfig::from_hf_json(Path::new(name), &text).unwrap().family.runs()
}

#[test]
fn families_verdict_runs_give_transformers_logits() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LoadOptions { device: DeviceChoice::Cpu, ..LoadOptions::default() };
    let mut checked = Vec::new();
    for name in FIXTURES.into_iter().filter(|n| runs(n)) {
        let want = reference(name);
        let model = Model::load(&with_tokenizer(dir.path(), name), &opts).unwrap();
        let got = model.logits(&want.tokens).unwrap();
        let d = llama::max_abs_diff(&got, &want.logits).unwrap();
        assert!(d < 1e-4, "{name}: logits differ from transformers' by {d}");
        let logp = candle_nn::ops::log_softmax(&got, 1).unwrap();
        for (t, want_lp) in want.next_token_logps.iter().enumerate() {
            let lp = logp.i((t, want.tokens[t + 1] as usize)).unwrap().to_scalar::<f32>().unwrap();
            assert!((lp - want_lp).abs() < 1e-4, "{name}: log-prob of token {} is {lp}, not {want_lp}", t + 1);
        }
        checked.push(name);
    }
    assert_eq!(checked, ["llama", "llama3", "qwen2", "mistral"]);
}

/// The trainer reads the same folders (transformers 5 configs) to the same logits.
#[test]
fn the_trainer_gives_transformers_logits() {
    use crate::train::model::{Input, Model as TrainModel};
    for name in FIXTURES.into_iter().filter(|n| runs(n)) {
        let want = reference(name);
        let (cfg, w) = crate::train::weights::load_hf_dir(&fixtures().join(name), DType::F32, &Device::Cpu).unwrap();
        cfg.check_supported().unwrap();
        let model = TrainModel::new(cfg, w, false).unwrap();
        let input = Input::right_padded(std::slice::from_ref(&want.tokens), 0, &Device::Cpu).unwrap();
        let got = model.forward(&input).unwrap().i(0).unwrap();
        let d = llama::max_abs_diff(&got, &want.logits).unwrap();
        assert!(d < 1e-4, "{name}: training logits differ from transformers' by {d}");
    }
}

/// Families verdict does not run yet fail on load with the architecture named, for inference
/// and for training.
#[test]
fn families_not_yet_run_are_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LoadOptions { device: DeviceChoice::Cpu, ..LoadOptions::default() };
    let mut refused = Vec::new();
    for name in FIXTURES.into_iter().filter(|n| !runs(n)) {
        let err = Model::load(&with_tokenizer(dir.path(), name), &opts).unwrap_err();
        let family = Family::from_hf(name).unwrap().name();
        assert!(matches!(err, ModelError::UnsupportedArchitecture { ref arch, .. } if arch == family), "{name}: {err}");
        assert!(err.to_string().contains(&format!("unsupported architecture `{family}`")), "{err}");
        let (cfg, _) = crate::train::weights::load_hf_dir(&fixtures().join(name), DType::F32, &Device::Cpu).unwrap();
        assert!(cfg.check_supported().unwrap_err().contains(family));
        refused.push(name);
    }
    assert_eq!(refused, ["qwen3", "gemma2", "gemma3", "phi3"]);
}
