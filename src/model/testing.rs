//! A tiny random-weight llama model written in both formats (GGUF and HF directory), for the
//! tests of this module and of the modules that use it. Same weights, same tokenizer, same
//! chat template (SmolLM2's) in both, so both must give the same logits.

use super::error::{ModelError, Result};
use super::gguf_meta::Meta;
use super::gguf_tokenizer::tokenizer_from_gguf;
pub use super::testing_gguf::permute_for_gguf;
use super::testing_gguf::{gguf_metadata, write_gguf};
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// SmolLM2-135M-Instruct's chat template, verbatim.
pub const SMOLLM2_CHAT_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Tiny model shape: hidden 64, 2 layers, 4 heads, 2 KV heads, MLP 128, context 256.
pub const TINY_CONTEXT: usize = 256;
pub(super) const HIDDEN: usize = 64;
pub(super) const LAYERS: usize = 2;
pub(super) const HEADS: usize = 4;
pub(super) const KV_HEADS: usize = 2;
pub(super) const FFN: usize = 128;
pub(super) const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
pub(super) const MERGES: [(&str, &str); 16] = [
    ("Ġ", "t"),
    ("h", "e"),
    ("i", "n"),
    ("Ġt", "he"),
    ("e", "r"),
    ("o", "n"),
    ("Ġ", "a"),
    ("r", "e"),
    ("a", "t"),
    ("e", "n"),
    ("Ġ", "s"),
    ("Ġ", "w"),
    ("o", "r"),
    ("l", "l"),
    ("i", "s"),
    ("Ġ", "h"),
];

/// Which architecture the tiny model has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TinyArch {
    Llama,
    /// Qwen2: q/k/v biases, and GGUF q/k not permuted (NEOX rotary).
    Qwen2,
}

impl TinyArch {
    pub(super) fn name(self) -> &'static str {
        match self {
            TinyArch::Llama => "llama",
            TinyArch::Qwen2 => "qwen2",
        }
    }
}

/// Writes the tiny llama model as `dir/tiny.gguf` and `dir/tiny-hf/` and returns their paths.
pub fn write_tiny_models(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    write_tiny_models_arch(dir, TinyArch::Llama)
}

/// Writes a tiny model of `arch` as `dir/tiny[-qwen2].gguf` and `dir/tiny[-qwen2]-hf/`.
pub fn write_tiny_models_arch(dir: &Path, arch: TinyArch) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let tokens = vocabulary();
    let vocab = tokens.len();
    let weights = random_weights(vocab, arch)?;
    let meta = gguf_metadata(&tokens, arch);
    let stem = if arch == TinyArch::Llama { "tiny".to_string() } else { format!("tiny-{}", arch.name()) };
    let gguf_path = dir.join(format!("{stem}.gguf"));
    write_gguf(&gguf_path, &meta, &weights, arch)?;

    let hf = dir.join(format!("{stem}-hf"));
    std::fs::create_dir_all(&hf).map_err(|e| ModelError::io(&hf, e))?;
    candle_core::safetensors::save(&weights, hf.join("model.safetensors"))?;
    let tokenizer = tokenizer_from_gguf(&Meta(meta.into_iter().collect()), &gguf_path)?;
    tokenizer.save(hf.join("tokenizer.json"), true).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    let (class, model_type) = match arch {
        TinyArch::Llama => ("LlamaForCausalLM", "llama"),
        TinyArch::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
    };
    let config = serde_json::json!({
        "architectures": [class], "model_type": model_type,
        "hidden_size": HIDDEN, "intermediate_size": FFN, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "vocab_size": vocab,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": TINY_CONTEXT,
        "tie_word_embeddings": true, "hidden_act": "silu", "torch_dtype": "float32",
        "bos_token_id": 1, "eos_token_id": 2,
    });
    let tok_config = serde_json::json!({
        "bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>",
        "pad_token": "<|im_end|>", "add_prefix_space": false, "model_max_length": TINY_CONTEXT,
        "chat_template": SMOLLM2_CHAT_TEMPLATE,
    });
    for (name, json) in [("config.json", config), ("tokenizer_config.json", tok_config)] {
        let text = serde_json::to_string_pretty(&json).expect("JSON values serialize");
        std::fs::write(hf.join(name), text).map_err(|e| ModelError::io(hf.join(name), e))?;
    }
    Ok((gguf_path, hf))
}

/// GPT-2's byte-to-character map: printable bytes stand for themselves, the rest are shifted
/// above U+0100 so every byte has a visible character.
pub fn byte_to_char(b: u8) -> char {
    let printable = |b: u8| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    if printable(b) {
        return b as char;
    }
    let shift = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + shift).expect("valid char")
}

/// Specials (ids 0-2, as in SmolLM2), the 256 byte tokens, then one token per merge.
fn vocabulary() -> Vec<String> {
    let mut tokens: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
    tokens.extend((0..=255u8).map(|b| byte_to_char(b).to_string()));
    tokens.extend(MERGES.iter().map(|(a, b)| format!("{a}{b}")));
    tokens
}

/// HF-named f32 weights, seeded so every run writes the same model.
fn random_weights(vocab: usize, arch: TinyArch) -> Result<HashMap<String, Tensor>> {
    let mut rng = StdRng::seed_from_u64(0x7e57);
    let mut tensor = |shape: &[usize], center: f32, spread: f32| -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| center + spread * (rng.random::<f32>() * 2.0 - 1.0)).collect();
        Ok(Tensor::from_vec(data, shape, &Device::Cpu)?)
    };
    let hd = HIDDEN / HEADS;
    let mut w = HashMap::new();
    w.insert("model.embed_tokens.weight".into(), tensor(&[vocab, HIDDEN], 0.0, 1.0)?);
    w.insert("model.norm.weight".into(), tensor(&[HIDDEN], 1.0, 0.1)?);
    for i in 0..LAYERS {
        let p = format!("model.layers.{i}");
        for (name, shape) in [
            ("self_attn.q_proj", [HEADS * hd, HIDDEN]),
            ("self_attn.k_proj", [KV_HEADS * hd, HIDDEN]),
            ("self_attn.v_proj", [KV_HEADS * hd, HIDDEN]),
            ("self_attn.o_proj", [HIDDEN, HEADS * hd]),
            ("mlp.gate_proj", [FFN, HIDDEN]),
            ("mlp.up_proj", [FFN, HIDDEN]),
            ("mlp.down_proj", [HIDDEN, FFN]),
        ] {
            let spread = 1.0 / (shape[1] as f32).sqrt();
            w.insert(format!("{p}.{name}.weight"), tensor(&shape, 0.0, spread * 1.7)?);
        }
        if arch == TinyArch::Qwen2 {
            for (name, n) in [("q_proj", HEADS * hd), ("k_proj", KV_HEADS * hd), ("v_proj", KV_HEADS * hd)] {
                w.insert(format!("{p}.self_attn.{name}.bias"), tensor(&[n], 0.0, 0.5)?);
            }
        }
        w.insert(format!("{p}.input_layernorm.weight"), tensor(&[HIDDEN], 1.0, 0.1)?);
        w.insert(format!("{p}.post_attention_layernorm.weight"), tensor(&[HIDDEN], 1.0, 0.1)?);
    }
    Ok(w)
}
