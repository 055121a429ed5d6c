//! `verdict logps`'s engine (`train::score::score`) on every family's tiny model, from its HF
//! folder and from its GGUF, against the summed answer log-probs transformers gives for the
//! multilingual pairs of tests/fixtures/logps/pairs.jsonl with the family's own tokenizer and
//! chat template (tests/fixtures/families/*/logps.json, scripts/make_family_logps.py): within
//! 1e-3 relative, with the same number of response tokens scored after truncation.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::model::ChatMessage;
use crate::train::score::{Pair, score};

/// Families with a chat template (llama's fixture has none: see the last test).
const FAMILIES: [&str; 8] = ["llama3", "qwen2", "mistral", "qwen3", "gemma2", "gemma3", "phi3", "mistral_window"];
const RELATIVE_TOLERANCE: f64 = 1e-3;
/// The day the fixtures' templates print (Llama 3's prints today's date into the system turn):
/// 2026-01-01 00:00 UTC, as scripts/make_family_logps.py renders them.
const FIXTURE_NOW: i64 = 1_767_225_600;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The fixture pairs by id, as `verdict logps` reads them (prompt messages, chosen, rejected).
fn pairs() -> Vec<(String, Pair)> {
    let text = std::fs::read_to_string(fixtures().join("logps/pairs.jsonl")).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let messages = v["prompt"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| ChatMessage::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
                .collect();
            let answer = |side: &str| v[side][0]["content"].as_str().unwrap().to_string();
            (
                v["id"].as_str().unwrap().to_string(),
                Pair { messages, chosen: answer("chosen"), rejected: answer("rejected") },
            )
        })
        .collect()
}

/// The family's HF folder and, where it has one, its GGUF (mistral_window has none).
fn sources(name: &str) -> Vec<(&'static str, PathBuf)> {
    let dir = fixtures().join("families").join(name);
    let gguf = dir.join("model.gguf");
    let mut out = vec![("HF", dir)];
    if gguf.is_file() {
        out.push(("GGUF", gguf));
    }
    out
}

fn relative(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs().max(1e-6)
}

#[test]
fn every_family_gives_transformers_logps_on_multilingual_pairs_from_hf_and_gguf() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for name in FAMILIES {
        let want = json(&fixtures().join("families").join(name).join("logps.json"));
        let max_length = want["max_length"].as_u64().unwrap() as usize;
        let rows = want["pairs"].as_array().unwrap();
        for (format, path) in sources(name) {
            let all = pairs();
            assert_eq!(all.len(), rows.len(), "{name}: logps.json has one row per fixture pair");
            let (mut scored, mut refused) = (Vec::new(), Vec::new());
            for ((id, pair), row) in all.into_iter().zip(rows) {
                assert_eq!(row["id"].as_str().unwrap(), id);
                match row.get("template_error") {
                    Some(_) => refused.push((id, pair)),
                    None => scored.push((pair, row)),
                }
            }
            let batch: Vec<Pair> = scored.iter_mut().map(|(p, _)| std::mem::replace(p, empty())).collect();
            let got = crate::model::jinja_compat::with_fixed_now(FIXTURE_NOW, || score(&path, &batch, max_length))
                .unwrap_or_else(|e| panic!("{name} {format}: {e:#}"));
            let mut worst = 0.0f64;
            for (g, (_, w)) in got.iter().zip(&scored) {
                for (side, logp, tokens) in
                    [("chosen", g.chosen, g.chosen_tokens), ("rejected", g.rejected, g.rejected_tokens)]
                {
                    let label = format!("{name} {format} {} {side}", w["id"]);
                    let want_tokens = w[format!("{side}_tokens_scored")].as_u64().unwrap() as usize;
                    if tokens != want_tokens {
                        failures.push(format!("{label}: {tokens} response tokens scored, transformers {want_tokens}"));
                    }
                    let want_logp = w[format!("{side}_logp")].as_f64().unwrap();
                    let rel = relative(logp as f64, want_logp);
                    worst = worst.max(rel);
                    // Phi-3's pairs run past its LongRoPE original context (64): the long factors.
                    if rel > RELATIVE_TOLERANCE {
                        failures
                            .push(format!("{label}: log-prob {logp:.4} vs transformers {want_logp:.4} ({rel:.2e})"));
                    }
                    checked += 1;
                }
            }
            for (id, pair) in refused {
                // transformers' template raises, or renders no separable response: verdict refuses too.
                let r = crate::model::jinja_compat::with_fixed_now(FIXTURE_NOW, || {
                    score(&path, std::slice::from_ref(&pair), max_length)
                });
                assert!(r.is_err(), "{name} {format} {id}: scored a pair transformers' template refuses");
            }
            eprintln!("{name} {format}: logps within {worst:.2e} relative of transformers' ({} pairs)", got.len());
        }
    }
    assert!(failures.is_empty(), "{} of {checked} log-probs differ:\n{}", failures.len(), failures.join("\n"));
    assert!(checked >= 2 * (2 * FAMILIES.len() - 1) * 7, "{checked} log-probs checked");
}

fn empty() -> Pair {
    Pair { messages: Vec::new(), chosen: String::new(), rejected: String::new() }
}

/// The llama fixture has no chat template (neither in tokenizer_config.json nor in the GGUF):
/// verdict has no fallback, so `verdict logps` refuses it, saying what is missing.
#[test]
fn a_family_without_a_chat_template_is_refused_saying_so() {
    let (_, pair) = pairs().swap_remove(0);
    for (format, path) in sources("llama") {
        let err =
            score(&path, std::slice::from_ref(&pair), 256).err().unwrap_or_else(|| panic!("llama {format} scored"));
        assert!(format!("{err:#}").contains("no chat template"), "llama {format}: {err:#}");
    }
}
