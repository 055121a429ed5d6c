//! Tests of config reading (`model::arch`): transformers 5's `rope_parameters`, llama.cpp's
//! `rope_freqs`, and the keys verdict refuses rather than runs wrong.

use super::arch::{ArchConfig, ArchError, Family, LayerAttention, Rope, RopeKind};
use super::tests_tiny::tiny_paths;
use super::*;
use std::path::Path;

fn cpu() -> LoadOptions {
    LoadOptions { device: DeviceChoice::Cpu, ..LoadOptions::default() }
}

/// A copy of the tiny HF model whose config.json is `edit`ed.
fn tiny_hf_with(dir: &Path, name: &str, edit: impl Fn(&mut serde_json::Map<String, serde_json::Value>)) -> PathBuf {
    let src = &tiny_paths().1;
    let dst = dir.join(name);
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
    }
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dst.join("config.json")).unwrap()).unwrap();
    edit(cfg.as_object_mut().unwrap());
    std::fs::write(dst.join("config.json"), cfg.to_string()).unwrap();
    dst
}

fn max_diff(a: &Model, b: &Model, tokens: &[u32]) -> f32 {
    llama::max_abs_diff(&a.logits(tokens).unwrap(), &b.logits(tokens).unwrap()).unwrap()
}

const TOKENS: [u32; 24] = [1, 5, 9, 3, 7, 2, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 4, 6, 8, 10, 12, 14, 16, 18];

/// A folder saved by transformers 5 has `rope_parameters` and no top-level `rope_theta`: it must
/// run with its own theta (it ran with 10000, 11% off on SmolLM2's log-probs).
#[test]
fn transformers5_rope_parameters_give_the_v4_logits() {
    let dir = tempfile::tempdir().unwrap();
    let v4 = tiny_hf_with(dir.path(), "v4", |c| {
        c.insert("rope_theta".into(), 500_000.0.into());
    });
    let v5 = tiny_hf_with(dir.path(), "v5", |c| {
        c.remove("rope_theta");
        c.insert("rope_parameters".into(), serde_json::json!({"rope_theta": 500_000.0, "rope_type": "default"}));
    });
    let (v4, v5) = (Model::load(&v4, &cpu()).unwrap(), Model::load(&v5, &cpu()).unwrap());
    let base = Model::load(&tiny_paths().1, &cpu()).unwrap();
    assert!(max_diff(&v4, &base, &TOKENS) > 1e-3, "theta must matter at these positions");
    assert_eq!(max_diff(&v4, &v5, &TOKENS), 0.0);
}

/// A rope type or parameter verdict does not implement is an error naming the file and key.
#[test]
fn unimplemented_rope_settings_are_errors_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, serde_json::Value, &str); 4] = [
        (
            "rope_parameters",
            serde_json::json!({"rope_type": "proportional", "rope_theta": 1e4}),
            "`rope_parameters.rope_type` is `proportional`",
        ),
        ("rope_scaling", serde_json::json!({"type": "su", "factor": 2.0}), "`rope_scaling.type` is `su`"),
        (
            "rope_scaling",
            serde_json::json!({"rope_type": "linear", "factor": 2.0, "mrope_section": [1]}),
            "`rope_scaling.mrope_section`",
        ),
        ("partial_rotary_factor", serde_json::json!(1.5), "`partial_rotary_factor` is 1.5"),
    ];
    for (i, (key, value, want)) in cases.into_iter().enumerate() {
        let hf = tiny_hf_with(dir.path(), &format!("m{i}"), |c| {
            c.insert(key.into(), value.clone());
        });
        let err = Model::load(&hf, &cpu()).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ModelError::Config(_)), "{text}");
        assert!(text.contains(want) && text.contains(&hf.join("config.json").display().to_string()), "{text}");
    }
}

/// Linear scaling divides every frequency; llama3 keeps short wavelengths and divides long ones
/// (transformers' formulas); yarn's attention factor is 0.1 ln(factor) + 1.
#[test]
fn rope_kinds_follow_transformers() {
    let plain = Rope::plain(10_000.0).inv_freq(16);
    let linear = Rope { kind: RopeKind::Linear { factor: 4.0 }, ..Rope::plain(10_000.0) }.inv_freq(16);
    assert!(plain.iter().zip(&linear).all(|(p, l)| (p / l - 4.0).abs() < 1e-12));
    let llama3 = Rope {
        kind: RopeKind::Llama3 { factor: 4.0, low_freq_factor: 1.0, high_freq_factor: 8.0, original_max: 256 },
        ..Rope::plain(10_000.0)
    };
    let f = llama3.inv_freq(16);
    assert_eq!((f[0], f[1]), (plain[0], plain[1]));
    assert!((plain[7] / f[7] - 4.0).abs() < 1e-12);
    let cfg = ArchConfig::from_hf_json(
        Path::new("c.json"),
        r#"{"architectures":["Qwen2ForCausalLM"],"hidden_size":64,"intermediate_size":8,"num_hidden_layers":1,
        "num_attention_heads":4,"vocab_size":10,"max_position_embeddings":32768,
        "rope_scaling":{"type":"yarn","factor":4.0,"original_max_position_embeddings":8192}}"#,
    )
    .unwrap();
    assert_eq!(cfg.family, Family::Qwen2);
    assert!((cfg.rope.attention_factor() - (0.1 * 4f64.ln() + 1.0)).abs() < 1e-12);
    // LongRoPE divides by the short factors up to its original context, by the long ones for a
    // pass over more positions (the whole pass, as transformers' longrope_frequency_update).
    let longrope = Rope {
        kind: RopeKind::LongRope {
            short_factor: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
            long_factor: vec![10.0; 8],
            factor: 4.0,
            attention_factor: None,
            original_max: 64,
        },
        ..Rope::plain(10_000.0)
    };
    let short = longrope.inv_freq_for(16, 64);
    assert_eq!(short, longrope.inv_freq(16));
    assert!((plain[3] / short[3] - 4.0).abs() < 1e-12);
    let long = longrope.inv_freq_for(16, 65);
    assert!(plain.iter().zip(&long).all(|(p, l)| (p / l - 10.0).abs() < 1e-12));
}

/// Sliding windows apply to the layers each family's rules say (Mistral: 4096 when config.json
/// names none, every layer; Qwen2: only with `use_sliding_window`, from `max_window_layers` on;
/// Gemma 2: every other layer), and no longer cap the context: verdict masks them.
#[test]
fn sliding_windows_apply_to_the_layers_the_family_says() {
    let base = r#""hidden_size":64,"intermediate_size":8,"num_hidden_layers":4,"num_attention_heads":4,"vocab_size":10,"max_position_embeddings":32768"#;
    let read = |extra: &str| ArchConfig::from_hf_json(Path::new("c.json"), &format!("{{{base},{extra}}}")).unwrap();
    let windows = |c: &ArchConfig| (0..4).map(|i| c.layer_window(i)).collect::<Vec<_>>();
    let mistral = read(r#""model_type":"mistral""#);
    assert_eq!((mistral.context(), windows(&mistral)), (32768, vec![Some(4096); 4]));
    assert_eq!(windows(&read(r#""model_type":"mistral","sliding_window":null"#)), vec![None; 4]);
    assert_eq!(windows(&read(r#""model_type":"qwen2","sliding_window":1024"#)), vec![None; 4]);
    let qwen2 = read(r#""model_type":"qwen2","sliding_window":1024,"use_sliding_window":true,"max_window_layers":2"#);
    assert_eq!(windows(&qwen2), vec![None, None, Some(1024), Some(1024)]);
    let gemma2 = read(r#""model_type":"gemma2","sliding_window":512"#);
    assert_eq!(windows(&gemma2), vec![Some(512), None, Some(512), None]);
    let err = ArchConfig::from_hf_json(
        Path::new("c.json"),
        &format!("{{{base},\"model_type\":\"qwen2\",\"layer_types\":[\"chunked_attention\"]}}"),
    )
    .unwrap_err();
    assert!(matches!(err, ArchError::Key { ref key, .. } if key == "layer_types"), "{err}");
}

/// llama.cpp stores Llama 3.1+'s scaling as `rope_freqs`; inference reads it back as the llama3
/// parameters, and the logits change from the unscaled file's.
#[test]
fn gguf_rope_freqs_are_read_as_llama3_scaling() {
    let dir = tempfile::tempdir().unwrap();
    let scaled = dir.path().join("llama3.gguf");
    testing::with_llama3_rope_freqs(&tiny_paths().0, &scaled, 4.0, 1.0, 8.0, 256).unwrap();
    let opts = LoadOptions { dequantize: true, requantize: false, ..cpu() };
    let (plain, llama3) = (Model::load(&tiny_paths().0, &opts).unwrap(), Model::load(&scaled, &opts).unwrap());
    assert!(max_diff(&plain, &llama3, &TOKENS) > 1e-3);
    let rope = llama3.rope();
    assert_eq!(
        rope.kind,
        RopeKind::Llama3 { factor: 4.0, low_freq_factor: 1.0, high_freq_factor: 8.0, original_max: 256 }
    );
}
