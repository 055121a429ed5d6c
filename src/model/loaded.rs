//! What a loader hands back, and the stop-token rule shared by both formats.

use super::info::{ModelInfo, SpecialTokens};
use super::llama::Transformer;
use tokenizers::Tokenizer;

/// A freshly loaded model, before `Model` wraps it.
pub struct Loaded {
    pub net: Transformer,
    pub tokenizer: Tokenizer,
    pub info: ModelInfo,
}

/// End-of-turn tokens of the common chat formats. Instruct models end an answer with these
/// rather than EOS (SmolLM2's EOS *is* `<|im_end|>`, Llama 3's is not `<|eot_id|>`).
pub(super) const KNOWN_EOT: [&str; 5] = ["<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|eom_id|>"];

/// End-of-text tokens that also end a generation when they are special tokens of the
/// vocabulary (llama.cpp treats them as end-of-generation too).
pub(super) const END_OF_TEXT: [&str; 3] = ["<|endoftext|>", "<|end_of_text|>", "</s>"];

/// Fills `special.eot` when the file did not name one, and returns every id that stops
/// generation: EOS, end-of-turn, and `extra` (generation_config's eos ids, GGUF's eom).
pub fn stop_ids_for(tokenizer: &Tokenizer, special: &mut SpecialTokens, extra: &[u32]) -> Vec<u32> {
    if special.eot.is_none() {
        special.eot = KNOWN_EOT
            .iter()
            .find(|t| tokenizer.token_to_id(t).is_some() && Some(**t) != special.eos.as_deref())
            .map(|t| t.to_string());
    }
    let mut ids: Vec<u32> = [&special.eos, &special.eot]
        .into_iter()
        .flatten()
        .filter_map(|t| tokenizer.token_to_id(t))
        .chain(extra.iter().copied())
        .chain(special_ids(tokenizer, &END_OF_TEXT))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Ids of those of `tokens` that are special added tokens of `tokenizer`.
fn special_ids(tokenizer: &Tokenizer, tokens: &[&str]) -> Vec<u32> {
    tokenizer
        .get_added_tokens_decoder()
        .into_iter()
        .filter(|(_, t)| t.special && tokens.contains(&t.content.as_str()))
        .map(|(id, _)| id)
        .collect()
}
