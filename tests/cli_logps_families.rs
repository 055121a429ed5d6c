//! `verdict logps` run as a user runs it, on every family's tiny model, from its Hugging Face
//! folder and from its GGUF: the summed answer log-probs it prints for the multilingual pairs of
//! tests/fixtures/logps/pairs.jsonl against transformers' (tests/fixtures/families/*/logps.json,
//! made by scripts/make_family_logps.py on 2026-01-01, the day `SOURCE_DATE_EPOCH` pins for
//! Llama 3's template, which prints the date). The engine is checked pair by pair in
//! `model::tests_families_logps`; this is the binary: argument parsing, file reading, output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const FAMILIES: [&str; 8] = ["llama3", "qwen2", "mistral", "qwen3", "gemma2", "gemma3", "phi3", "mistral_window"];
/// 2026-01-01 00:00 UTC: the day the fixtures' templates were rendered on.
const FIXTURE_EPOCH: &str = "1767225600";
/// Within 1e-3 relative; Phi-3's pairs (over 64 positions) check its LongRoPE long factors.
const RELATIVE_TOLERANCE: f64 = 1e-3;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn logps(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_verdict"))
        .arg("logps")
        .args(args)
        .env("SOURCE_DATE_EPOCH", FIXTURE_EPOCH)
        .env_remove("VERDICT_MODEL")
        .output()
        .unwrap()
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn verdict_logps_prints_transformers_log_probs_for_every_family_and_format() {
    let tmp = tempfile::tempdir().unwrap();
    let all_pairs = std::fs::read_to_string(fixtures().join("logps/pairs.jsonl")).unwrap();
    let mut failures = Vec::new();
    let mut checked = 0;
    for family in FAMILIES {
        let dir = fixtures().join("families").join(family);
        let want = json(&dir.join("logps.json"));
        let rows: Vec<&Value> = want["pairs"].as_array().unwrap().iter().collect();
        // The pairs whose template transformers renders (the rest are refused: below).
        let scorable: Vec<&Value> = rows.iter().copied().filter(|r| r.get("template_error").is_none()).collect();
        let file = tmp.path().join(format!("{family}.jsonl"));
        let lines: Vec<&str> = all_pairs
            .lines()
            .filter(|l| {
                let id = serde_json::from_str::<Value>(l).unwrap()["id"].as_str().unwrap().to_string();
                scorable.iter().any(|r| r["id"] == id.as_str())
            })
            .collect();
        std::fs::write(&file, lines.join("\n") + "\n").unwrap();
        let max_length = want["max_length"].as_u64().unwrap().to_string();
        let mut sources = vec![("HF", dir.clone())];
        if dir.join("model.gguf").is_file() {
            sources.push(("GGUF", dir.join("model.gguf")));
        }
        for (format, model) in sources {
            let out = logps(&["--model", model.to_str().unwrap(), "--max-length", &max_length, file.to_str().unwrap()]);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{family} {format}: {}", String::from_utf8_lossy(&out.stderr));
            let printed: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            assert_eq!(printed.len(), scorable.len(), "{family} {format}: one line per pair: {stdout}");
            let mut worst = 0.0f64;
            for (got, want) in printed.iter().zip(&scorable) {
                for side in ["chosen", "rejected"] {
                    let label = format!("{family} {format} {} {side}", want["id"]);
                    let tokens = got[format!("tokens/{side}")].as_u64().unwrap();
                    let want_tokens = want[format!("{side}_tokens_scored")].as_u64().unwrap();
                    if tokens != want_tokens {
                        failures.push(format!("{label}: {tokens} tokens scored, transformers {want_tokens}"));
                    }
                    let (g, w) = (
                        got[format!("logps/{side}")].as_f64().unwrap(),
                        want[format!("{side}_logp")].as_f64().unwrap(),
                    );
                    let relative = (g - w).abs() / w.abs().max(1e-6);
                    worst = worst.max(relative);
                    if relative > RELATIVE_TOLERANCE {
                        failures.push(format!("{label}: {g:.4} vs transformers {w:.4} ({relative:.2e})"));
                    }
                    checked += 1;
                }
            }
            eprintln!("{family} {format}: within {worst:.2e} relative of transformers ({} pairs)", printed.len());
        }
        // With every pair, a family whose template refuses one fails, naming the model.
        if scorable.len() < rows.len() {
            let everything = fixtures().join("logps/pairs.jsonl");
            let out =
                logps(&["--model", dir.to_str().unwrap(), "--max-length", &max_length, everything.to_str().unwrap()]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{family}: scored a pair its template refuses");
            assert!(
                stderr.contains("pair ") && stderr.contains(&format!("families/{family}")),
                "{family}: the error names the pair and the model: {stderr}"
            );
        }
    }
    assert!(failures.is_empty(), "{} of {checked} log-probs differ:\n{}", failures.len(), failures.join("\n"));
    assert!(checked >= 2 * (2 * FAMILIES.len() - 1) * 5, "{checked} log-probs checked");
}

/// `--ref` takes what `--model` takes: the reference's log-probs come out beside the policy's,
/// with the DPO loss; the same model as its own reference has zero rewards and loss ln 2.
#[test]
fn a_reference_adds_rewards_and_the_dpo_loss() {
    let dir = fixtures().join("families/qwen3");
    let file = fixtures().join("logps/pairs.jsonl");
    let out = logps(&[
        "--model",
        dir.to_str().unwrap(),
        "--ref",
        dir.join("model.gguf").to_str().unwrap(),
        "--max-length",
        "256",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert!(v["rewards/chosen"].as_f64().unwrap().abs() < 1e-3, "{v}");
        assert!((v["loss"].as_f64().unwrap() - std::f64::consts::LN_2).abs() < 1e-3, "{v}");
    }
}
