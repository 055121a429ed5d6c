//! Builds a `tokenizers::Tokenizer` from a GGUF file's `tokenizer.ggml.*` metadata.
//!
//! candle's own `Tokenizer::from_gguf` gives SmolLM2 wrong ids: its `pre = "smollm"` falls back
//! to a byte-level pre-tokenizer that adds a prefix space. Here the pre-tokenizer follows the
//! Hugging Face tokenizer.json of each `pre` family, so ids equal transformers' (a fixture test).

use super::error::{ModelError, Result};
use super::gguf_meta::Meta;
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

const REGEX_LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const REGEX_QWEN2: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Builds the tokenizer; `path` only names the file in errors.
pub fn tokenizer_from_gguf(meta: &Meta, path: &Path) -> Result<Tokenizer> {
    let missing = |reason: String| ModelError::MissingTokenizer { path: path.to_path_buf(), reason };
    let kind = meta.string("tokenizer.ggml.model").ok_or_else(|| missing("no tokenizer.ggml.model".into()))?;
    if kind != "gpt2" {
        return Err(missing(format!(
            "GGUF tokenizer model `{kind}` is not supported (only byte-level BPE, `gpt2`); \
             put the model's tokenizer.json next to the GGUF file"
        )));
    }
    let tokens = meta.strings("tokenizer.ggml.tokens").ok_or_else(|| missing("no tokenizer.ggml.tokens".into()))?;
    let merges: Vec<(String, String)> = meta
        .strings("tokenizer.ggml.merges")
        .ok_or_else(|| missing("no tokenizer.ggml.merges".into()))?
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| missing(format!("malformed merge `{m}`")))
        })
        .collect::<Result<_>>()?;
    let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| missing(format!("invalid BPE vocabulary: {e}")))?;
    let mut tokenizer = Tokenizer::new(bpe);

    let pre = meta.string("tokenizer.ggml.pre").unwrap_or("gpt2");
    let (pre_tokenizer, nfc) = pre_tokenizer_for(pre).map_err(missing)?;
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    if nfc {
        tokenizer.with_normalizer(Some(NFC)).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    }
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));

    // Control tokens (<|im_start|>, <|endoftext|>, …) must match as single tokens in rendered
    // chat text and never be split by BPE: they go in as special added tokens.
    let types = meta.ints("tokenizer.ggml.token_type").unwrap_or_default();
    let mut special = Vec::new();
    let mut user = Vec::new();
    for (i, ty) in types.iter().enumerate() {
        let Some(tok) = tokens.get(i) else { break };
        match *ty {
            TOKEN_TYPE_CONTROL => special.push(AddedToken::from(tok.clone(), true).normalized(false)),
            TOKEN_TYPE_USER_DEFINED => user.push(AddedToken::from(tok.clone(), false).normalized(false)),
            _ => {}
        }
    }
    tokenizer.add_special_tokens(special).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    tokenizer.add_tokens(user).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    Ok(tokenizer)
}

/// The pre-tokenizer of each llama.cpp `pre` family, as its tokenizer.json declares it, and
/// whether the family normalizes to NFC first.
fn pre_tokenizer_for(pre: &str) -> std::result::Result<(PreTokenizerWrapper, bool), String> {
    let split = |regex: &str| -> std::result::Result<PreTokenizerWrapper, String> {
        let split = Split::new(SplitPattern::Regex(regex.into()), SplitDelimiterBehavior::Isolated, false)
            .map_err(|e| e.to_string())?;
        Ok(Sequence::new(vec![split.into(), ByteLevel::new(false, true, false).into()]).into())
    };
    Ok(match pre {
        // SmolLM / StarCoder vocabularies: every digit its own token, then GPT-2 byte level.
        "smollm" | "starcoder" | "refact" | "codeshell" => {
            (Sequence::new(vec![Digits::new(true).into(), ByteLevel::new(false, true, true).into()]).into(), false)
        }
        "gpt2" | "default" | "gpt-2" => (ByteLevel::new(false, true, true).into(), false),
        "llama3" | "llama-bpe" | "llama-v3" | "smaug-bpe" | "dbrx" => (split(REGEX_LLAMA3)?, false),
        "qwen2" | "deepseek-r1-qwen" => (split(REGEX_QWEN2)?, true),
        other => {
            return Err(format!(
                "GGUF pre-tokenizer `{other}` is not supported; put the model's tokenizer.json next to the GGUF file"
            ));
        }
    })
}
