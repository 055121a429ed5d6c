//! A tiny random-weight llama model written in both formats (GGUF and HF directory), for the
//! tests of this module and of the modules that use it. Same weights, same tokenizer, same
//! chat template (SmolLM2's) in both, so both must give the same logits.

use super::error::{ModelError, Result};
use super::gguf_meta::Meta;
use super::gguf_tokenizer::tokenizer_from_gguf;
use super::testing_gguf::{gguf_metadata, write_gguf};
pub use super::testing_gguf::{permute_for_gguf, with_llama3_rope_freqs};
pub use super::testing_skip::{default_model_or_skip, report_skipped, skip_real_model_test};
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

/// A random model's dimensions.
#[derive(Debug, Clone, Copy)]
struct Shape {
    hidden: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    ffn: usize,
}

const TINY_SHAPE: Shape = Shape { hidden: HIDDEN, layers: LAYERS, heads: HEADS, kv_heads: KV_HEADS, ffn: FFN };

/// One layer with one head, hidden 32: a DPO step on this model costs what its output
/// projection and the attention over long rows cost, not its depth.
const SMOLLM2_BPE_SHAPE: Shape = Shape { hidden: 32, layers: 1, heads: 1, kv_heads: 1, ffn: 64 };

/// The tokens of SmolLM2's vocabulary `write_smollm2_bpe_model` keeps.
pub const SMOLLM2_BPE_VOCAB: usize = 4096;

/// SmolLM2-135M-Instruct's tokenizer as transformers saves it (tokenizer.json & co., written
/// by scripts/make_model_fixtures.py).
pub fn smollm2_tokenizer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/model/smollm2_tokenizer")
}

/// Writes `dir/smollm2-bpe-hf/`: a small random llama (hidden 32, one layer, tied
/// embeddings) whose tokenizer is SmolLM2's byte-level BPE cut to its first 4,096 tokens (its
/// specials, every byte, and the merges that build the rest), with SmolLM2's chat template.
///
/// Why not the tiny model: its 16 merges make nearly a token per byte, so the sample pairs
/// need 195 prompt and 485 answer tokens on average and no `--max-length` that trains them
/// whole runs fast. Why not all 49,152 tokens: a step's log-softmax over the vocabulary
/// would cost seven times as much. With 4,096 the sample pairs take 119 prompt and 323
/// answer tokens (the default model's tokenizer: 81 and 211), at most 1,085 in all.
pub fn write_smollm2_bpe_model(dir: &Path) -> Result<PathBuf> {
    let hf = dir.join("smollm2-bpe-hf");
    std::fs::create_dir_all(&hf).map_err(|e| ModelError::io(&hf, e))?;
    let source = smollm2_tokenizer_dir().join("tokenizer.json");
    let text = std::fs::read_to_string(&source).map_err(|e| ModelError::io(&source, e))?;
    let mut tokenizer: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| ModelError::Tokenizer(format!("{}: {e}", source.display())))?;
    cut_bpe_vocabulary(&mut tokenizer, SMOLLM2_BPE_VOCAB)?;
    let path = hf.join("tokenizer.json");
    std::fs::write(&path, tokenizer.to_string()).map_err(|e| ModelError::io(&path, e))?;
    let shape = SMOLLM2_BPE_SHAPE;
    let weights = random_weights(SMOLLM2_BPE_VOCAB, TinyArch::Llama, &shape)?;
    candle_core::safetensors::save(&weights, hf.join("model.safetensors"))?;
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": shape.hidden, "intermediate_size": shape.ffn, "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads, "num_key_value_heads": shape.kv_heads,
        "vocab_size": SMOLLM2_BPE_VOCAB, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
        "max_position_embeddings": 2048, "tie_word_embeddings": true, "hidden_act": "silu",
        "torch_dtype": "float32", "bos_token_id": 1, "eos_token_id": 2,
    });
    let tok_config = serde_json::json!({
        "bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>",
        "pad_token": "<|im_end|>", "add_prefix_space": false, "model_max_length": 2048,
        "chat_template": SMOLLM2_CHAT_TEMPLATE,
    });
    for (name, json) in [("config.json", config), ("tokenizer_config.json", tok_config)] {
        let text = serde_json::to_string_pretty(&json).expect("JSON values serialize");
        std::fs::write(hf.join(name), text).map_err(|e| ModelError::io(hf.join(name), e))?;
    }
    Ok(hf)
}

/// A merge's two halves, written `["a", "b"]` (newer tokenizers) or `"a b"` (older ones).
fn merge_halves(merge: &serde_json::Value) -> Option<(&str, &str)> {
    match merge {
        serde_json::Value::Array(parts) => Some((parts.first()?.as_str()?, parts.get(1)?.as_str()?)),
        serde_json::Value::String(text) => text.split_once(' '),
        _ => None,
    }
}

/// Keeps the tokens of a BPE tokenizer.json with ids below `size`, and the merges among them
/// (a merge is kept when both halves and the result are): the tokenizer a BPE trained with
/// fewer merges would have been.
fn cut_bpe_vocabulary(tokenizer: &mut serde_json::Value, size: usize) -> Result<()> {
    let bad = |what: &str| ModelError::Tokenizer(format!("not a BPE tokenizer.json: {what}"));
    let model = tokenizer.get_mut("model").ok_or_else(|| bad("no model"))?;
    let vocab = model.get_mut("vocab").and_then(|v| v.as_object_mut()).ok_or_else(|| bad("no vocab"))?;
    vocab.retain(|_, id| id.as_u64().is_some_and(|id| (id as usize) < size));
    let kept: std::collections::HashSet<String> = vocab.keys().cloned().collect();
    let merges = model.get_mut("merges").and_then(|m| m.as_array_mut()).ok_or_else(|| bad("no merges"))?;
    merges.retain(|merge| {
        merge_halves(merge)
            .is_some_and(|(a, b)| kept.contains(a) && kept.contains(b) && kept.contains(&format!("{a}{b}")))
    });
    if let Some(added) = tokenizer.get_mut("added_tokens").and_then(|a| a.as_array_mut()) {
        added.retain(|t| t.get("id").and_then(|id| id.as_u64()).is_some_and(|id| (id as usize) < size));
    }
    Ok(())
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
    let weights = random_weights(vocab, arch, &TINY_SHAPE)?;
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
fn random_weights(vocab: usize, arch: TinyArch, shape: &Shape) -> Result<HashMap<String, Tensor>> {
    let mut rng = StdRng::seed_from_u64(0x7e57);
    let mut tensor = |dims: &[usize], center: f32, spread: f32| -> Result<Tensor> {
        let n: usize = dims.iter().product();
        let data: Vec<f32> = (0..n).map(|_| center + spread * (rng.random::<f32>() * 2.0 - 1.0)).collect();
        Ok(Tensor::from_vec(data, dims, &Device::Cpu)?)
    };
    let Shape { hidden, layers, heads, kv_heads, ffn } = *shape;
    let hd = hidden / heads;
    let mut w = HashMap::new();
    w.insert("model.embed_tokens.weight".into(), tensor(&[vocab, hidden], 0.0, 1.0)?);
    w.insert("model.norm.weight".into(), tensor(&[hidden], 1.0, 0.1)?);
    for i in 0..layers {
        let p = format!("model.layers.{i}");
        for (name, dims) in [
            ("self_attn.q_proj", [heads * hd, hidden]),
            ("self_attn.k_proj", [kv_heads * hd, hidden]),
            ("self_attn.v_proj", [kv_heads * hd, hidden]),
            ("self_attn.o_proj", [hidden, heads * hd]),
            ("mlp.gate_proj", [ffn, hidden]),
            ("mlp.up_proj", [ffn, hidden]),
            ("mlp.down_proj", [hidden, ffn]),
        ] {
            let spread = 1.0 / (dims[1] as f32).sqrt();
            w.insert(format!("{p}.{name}.weight"), tensor(&dims, 0.0, spread * 1.7)?);
        }
        if arch == TinyArch::Qwen2 {
            for (name, n) in [("q_proj", heads * hd), ("k_proj", kv_heads * hd), ("v_proj", kv_heads * hd)] {
                w.insert(format!("{p}.self_attn.{name}.bias"), tensor(&[n], 0.0, 0.5)?);
            }
        }
        w.insert(format!("{p}.input_layernorm.weight"), tensor(&[hidden], 1.0, 0.1)?);
        w.insert(format!("{p}.post_attention_layernorm.weight"), tensor(&[hidden], 1.0, 0.1)?);
    }
    Ok(w)
}
