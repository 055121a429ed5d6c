//! Token ids against transformers for each GGUF pre-tokenizer type the families use
//! (`scripts/make_tokenizer_fixtures.py`, tests/fixtures/tokenizers/): the tokenizer.json verdict
//! loads from a Hugging Face folder and the one it builds from a GGUF's `tokenizer.ggml.*` keys
//! both give transformers' ids on the multilingual test strings, with and without BOS/EOS.

use super::gguf_meta::Meta;
use super::gguf_tokenizer::tokenizer_from_gguf;
use candle_core::quantized::gguf_file;
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

const TYPES: [&str; 4] = ["llama-bpe", "qwen2", "llama-spm", "gemma"];

fn folder(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizers").join(name)
}

fn gguf_tokenizer(path: &Path) -> Tokenizer {
    let mut file = std::fs::File::open(path).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    tokenizer_from_gguf(&Meta(content.metadata), path).unwrap()
}

/// "type via source: text: got … want …" for every case whose ids differ.
fn mismatches(name: &str, source: &str, tok: &Tokenizer) -> Vec<String> {
    let text = std::fs::read_to_string(folder(name).join("reference.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for case in v["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        for (with_specials, key) in [(true, "ids"), (false, "ids_no_specials")] {
            let want: Vec<u32> = serde_json::from_value(case[key].clone()).unwrap();
            let got = tok.encode(text, with_specials).unwrap().get_ids().to_vec();
            if got != want {
                out.push(format!(
                    "{name} via {source}, specials {with_specials}: {text:?}: got {got:?}, want {want:?}"
                ));
            }
        }
    }
    out
}

#[test]
fn hf_and_gguf_tokenizers_give_transformers_ids_for_every_pre_tokenizer_type() {
    let mut wrong = Vec::new();
    for name in TYPES {
        let hf = Tokenizer::from_file(folder(name).join("tokenizer.json")).unwrap();
        wrong.extend(mismatches(name, "tokenizer.json", &hf));
        wrong.extend(mismatches(name, "GGUF", &gguf_tokenizer(&folder(name).join("tokenizer.gguf"))));
    }
    assert!(wrong.is_empty(), "{} mismatches:\n{}", wrong.len(), wrong.join("\n"));
}

/// Decoding gives the text back (SentencePiece's "▁" and byte pieces, byte-level's table).
#[test]
fn gguf_tokenizers_decode_back_to_the_text() {
    for name in TYPES {
        let tok = gguf_tokenizer(&folder(name).join("tokenizer.gguf"));
        for text in
            ["Grüße aus München!", "我们今天去公园散步，天气非常好。", "Emoji: 😀🎉👍🏽", "two  spaces\tand\na tab"]
        {
            let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
            assert_eq!(tok.decode(&ids, false).unwrap(), text, "{name}");
        }
    }
}

/// The family fixtures (tests/fixtures/families/*) carry their family's vocabulary in both
/// formats: the GGUF's `tokenizer.ggml.*` give the folder's tokenizer.json ids on the
/// multilingual strings, and the GGUF's chat template is the folder's chat_template.jinja.
#[test]
fn family_fixtures_carry_the_same_vocabulary_and_template_in_both_formats() {
    let families = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/families");
    let text = std::fs::read_to_string(folder("qwen2").join("reference.json")).unwrap();
    let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
    let strings: Vec<&str> =
        reference["cases"].as_array().unwrap().iter().map(|c| c["text"].as_str().unwrap()).collect();
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&families).unwrap() {
        let dir = entry.unwrap().path();
        let gguf = dir.join("model.gguf");
        if !gguf.exists() {
            continue;
        }
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let hf = Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
        let mut file = std::fs::File::open(&gguf).unwrap();
        let content = gguf_file::Content::read(&mut file).unwrap();
        let meta = Meta(content.metadata);
        let from_gguf = tokenizer_from_gguf(&meta, &gguf).unwrap();
        assert!(hf.get_vocab_size(true) > 500, "{name}: a real-sized vocabulary");
        let (mut ids, mut bytes) = (0, 0);
        for text in &strings {
            for specials in [true, false] {
                let want = hf.encode(*text, specials).unwrap().get_ids().to_vec();
                let got = from_gguf.encode(*text, specials).unwrap().get_ids().to_vec();
                assert_eq!(got, want, "{name}, specials {specials}: {text:?}");
                ids += want.len();
                bytes += text.len();
            }
        }
        // Multilingual text becomes pieces, not one id a byte (the 96-token stand-in's way).
        assert!(ids * 2 < bytes, "{name}: {ids} ids for {bytes} bytes");
        let template = std::fs::read_to_string(dir.join("chat_template.jinja")).ok();
        assert_eq!(meta.string("tokenizer.chat_template").map(str::to_string), template, "{name}");
        checked.push(name);
    }
    checked.sort();
    assert_eq!(checked, ["gemma2", "gemma3", "llama", "llama3", "mistral", "phi3", "qwen2", "qwen3"]);
}
