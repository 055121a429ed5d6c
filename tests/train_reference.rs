//! `verdict logps` on the real default model against Hugging Face transformers: the summed
//! log-probs of the fixture pairs (TRL's tokenization, computed independently in Python by
//! scripts/make_logps_fixture.py) agree within 1e-3 relative, untruncated and cut to 128 tokens.
//! The model is fetched when missing; VERDICT_SKIP_MODEL=1 skips, printing `SKIPPED <test>: <why>`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/logps");
const RELATIVE_TOLERANCE: f64 = 1e-3;

fn verdict(db: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_verdict")).arg("--db").arg(db).args(args).output().unwrap()
}

fn ok(db: &Path, args: &[&str]) -> String {
    let out = verdict(db, args);
    assert!(out.status.success(), "verdict {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The default model (fetched into the cache when missing), or None when the run skips it.
fn default_model(db: &Path) -> Option<PathBuf> {
    if verdict::model::testing::skip_real_model_test(
        "logps_of_the_default_model_equal_transformers_on_the_fixture_pairs",
    ) {
        return None;
    }
    Some(PathBuf::from(ok(db, &["model", "fetch"]).trim()))
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= RELATIVE_TOLERANCE * want.abs().max(1e-6)
}

#[test]
fn logps_of_the_default_model_equal_transformers_on_the_fixture_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("v.db");
    let Some(model) = default_model(&db) else { return };
    let fixtures = Path::new(FIXTURES);
    let reference = json_lines(&std::fs::read_to_string(fixtures.join("reference.jsonl")).unwrap());
    let source = &reference[0]["source"];
    let sha = ok(&db, &["model", "info", model.to_str().unwrap()]);
    assert!(
        sha.contains(source["model_sha256"].as_str().unwrap()),
        "the fixture was made from another model file ({source}); `verdict model info` says:\n{sha}"
    );
    let pairs = fixtures.join("pairs.jsonl");
    let mut failures = Vec::new();
    let mut checked = 0;
    for max_length in [1024, 128] {
        let want: Vec<&Value> = reference[1..].iter().filter(|r| r["max_length"] == max_length).collect();
        assert!(want.len() >= 8, "fixture has {} pairs for max_length {max_length}", want.len());
        let got = json_lines(&ok(
            &db,
            &[
                "logps",
                "--model",
                model.to_str().unwrap(),
                "--max-length",
                &max_length.to_string(),
                pairs.to_str().unwrap(),
            ],
        ));
        assert_eq!(got.len(), want.len(), "one line per pair");
        for (g, w) in got.iter().zip(&want) {
            for side in ["chosen", "rejected"] {
                let label = format!("max_length {max_length}, {} {side}", w["id"]);
                let tokens = g[format!("tokens/{side}")].as_u64().unwrap();
                let want_tokens = w[format!("{side}_tokens_scored")].as_u64().unwrap();
                if tokens != want_tokens {
                    failures.push(format!("{label}: {tokens} response tokens scored, transformers {want_tokens}"));
                }
                let logp = g[format!("logps/{side}")].as_f64().unwrap();
                let want_logp = w[format!("{side}_logp")].as_f64().unwrap();
                if !close(logp, want_logp) {
                    failures.push(format!(
                        "{label}: log-prob {logp:.4} vs transformers {want_logp:.4} (relative difference {:.2e})",
                        (logp - want_logp).abs() / want_logp.abs()
                    ));
                }
                checked += 1;
            }
        }
    }
    assert!(failures.is_empty(), "{} of {checked} log-probs differ:\n{}", failures.len(), failures.join("\n"));
    // The truncated case really cuts responses short, so it checks the truncation rule.
    assert!(reference[1..].iter().any(|r| r["max_length"] == 128 && r["chosen_tokens_scored"] != r["chosen_tokens"]));
}
