//! Every family's tiny model written as GGUF the way llama.cpp's converter writes it
//! (`scripts/family_gguf.py`, tests/fixtures/families/*/model.gguf, f32): verdict reads the same
//! configuration from the GGUF as from the transformers folder (Phi-3's LongRoPE from its factor
//! tensors, Gemma 3's sliding layers from `sliding_window_pattern`, Gemma 2's query scalar from
//! `attention.scale`), and every family gives transformers' logits from the GGUF too (Gemma's
//! `1 + w` norms, Phi-3's fused `attn_qkv`/`ffn_up` split by rows).

use super::overview::overview;
use super::*;
use crate::model::arch::{ArchConfig, Family};

const FIXTURES: [&str; 8] = ["llama", "llama3", "qwen2", "mistral", "qwen3", "gemma2", "gemma3", "phi3"];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/families").join(name)
}

/// The fields of `a` and `b` that differ, rope compared by its inverse frequencies (the GGUF
/// stores Llama 3's scaling as f32 factors, so its parameters come back within rounding).
fn differences(a: &ArchConfig, b: &ArchConfig) -> Vec<String> {
    let mut out = Vec::new();
    let (fa, fb) = (a.rope.inv_freq(a.head_dim), b.rope.inv_freq(b.head_dim));
    let rel = fa.iter().zip(&fb).map(|(x, y)| ((x - y) / x).abs()).fold(0.0, f64::max);
    if a.rope.type_name() != b.rope.type_name() || fa.len() != fb.len() || rel > 1e-6 || a.rope.theta != b.rope.theta {
        out.push(format!("rope: {:?} vs {:?} (inverse frequencies differ by {rel:e} relative)", a.rope, b.rope));
    }
    let (mut a, mut b) = (a.clone(), b.clone());
    b.rope = a.rope.clone();
    // GGUF stores the epsilon as f32.
    if (a.rms_norm_eps - b.rms_norm_eps).abs() <= 1e-6 * a.rms_norm_eps {
        b.rms_norm_eps = a.rms_norm_eps;
    }
    // llama.cpp writes Mistral as architecture `llama`.
    if a.family == Family::Mistral && b.family == Family::Llama {
        b.family = Family::Mistral;
    }
    a.eos_token_id = a.eos_token_id.map(|v| serde_json::json!(v.as_u64()));
    b.eos_token_id = b.eos_token_id.map(|v| serde_json::json!(v.as_u64()));
    if a != b {
        out.push(format!("{a:?}\n vs {b:?}"));
    }
    out
}

#[test]
fn every_family_gguf_reads_to_the_config_of_its_transformers_folder() {
    let mut wrong = Vec::new();
    for name in FIXTURES {
        let hf = overview(&fixture(name)).unwrap();
        let gguf = overview(&fixture(name).join("model.gguf")).unwrap();
        for d in differences(&hf.arch, &gguf.arch) {
            wrong.push(format!("{name}: GGUF and config.json disagree: {d}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn gguf_families_verdict_runs_give_transformers_logits() {
    let opts = LoadOptions { device: DeviceChoice::Cpu, ..LoadOptions::default() };
    let mut checked = Vec::new();
    for name in FIXTURES {
        let text = std::fs::read_to_string(fixture(name).join("reference.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let tokens: Vec<u32> = serde_json::from_value(v["tokens"].clone()).unwrap();
        let rows: Vec<Vec<f32>> = serde_json::from_value(v["logits"].clone()).unwrap();
        let want = Tensor::from_vec(rows.concat(), (rows.len(), rows[0].len()), &Device::Cpu).unwrap();
        let model = Model::load(&fixture(name).join("model.gguf"), &opts).unwrap();
        let got = model.logits(&tokens).unwrap();
        let d = llama::max_abs_diff(&got, &want).unwrap();
        assert!(d < 1e-4, "{name}: GGUF logits differ from transformers' by {d}");
        eprintln!("{name}: GGUF logits within {d:e} of transformers'");
        checked.push(name);
    }
    assert_eq!(checked, FIXTURES);
}
