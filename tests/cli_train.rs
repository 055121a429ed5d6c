//! End-to-end tests of `verdict train`, `verdict runs` and `verdict logps` on the tiny
//! random model (the real model's numbers are checked in the train module's own tests).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::AtomicBool;

use verdict::jobs::train::{self, TrainConfig};

fn verdict(db: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_verdict")).arg("--db").arg(db).args(args).output().unwrap()
}

fn ok(db: &Path, args: &[&str]) -> String {
    let out = verdict(db, args);
    assert!(out.status.success(), "verdict {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

const PAIRS: &str = r#"{"prompt":"Block card?","chosen":"Yes, in the app.","rejected":"No idea.","split":"train"}
{"prompt":"PIN by phone?","chosen":"Never share it.","rejected":"Sure, tell us.","split":"train"}
{"prompt":"Karte weg?","chosen":"Sperren Sie sie.","rejected":"Egal.","split":"train"}
{"prompt":"卡丢了？","chosen":"请冻结。","rejected":"不知道。","split":"train"}
{"prompt":"Fee?","chosen":"See the fee schedule.","rejected":"It is free forever!","split":"test"}
"#;

fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (gguf, _) = verdict::model::testing::write_tiny_models(&dir.path().join("tiny")).unwrap();
    let db = dir.path().join("v.db");
    let pairs = dir.path().join("pairs.jsonl");
    std::fs::write(&pairs, PAIRS).unwrap();
    ok(&db, &["--no-samples", "import", pairs.to_str().unwrap()]);
    (dir, db, gguf)
}

fn metric(db: &Path, run: i64, name: &str) -> Vec<(i64, f64)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut statement =
        conn.prepare("SELECT step, value FROM run_metrics WHERE run_id = ?1 AND name = ?2 ORDER BY step").unwrap();
    statement.query_map((run, name), |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(|r| r.unwrap()).collect()
}

#[test]
fn a_dpo_run_records_trl_metrics_and_exports_a_model() {
    let (dir, db, gguf) = setup();
    let out_dir = dir.path().join("run1");
    let out = ok(
        &db,
        &[
            "train",
            "--model",
            gguf.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
            "--max-steps",
            "12",
            "--learning-rate",
            "1e-3",
            "--batch-size",
            "2",
            "--eval-every",
            "4",
            "--save-every",
            "6",
            "--max-length",
            "128",
        ],
    );
    assert!(out.contains("finished after 12 steps"), "{out}");
    for name in [
        "loss",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/accuracies",
        "rewards/margins",
        "logps/chosen",
        "logps/rejected",
        "grad_norm",
        "learning_rate",
        "tokens_per_second",
    ] {
        assert_eq!(metric(&db, 1, name).len(), 12, "{name}");
    }
    assert_eq!(metric(&db, 1, "eval_loss").len(), 3);
    let loss = metric(&db, 1, "loss");
    assert!((loss[0].1 - std::f64::consts::LN_2).abs() < 1e-3, "step 1 starts at ln 2: {}", loss[0].1);
    let margins = metric(&db, 1, "rewards/margins");
    assert!(margins.last().unwrap().1 > margins[0].1, "the margin grows: {margins:?}");
    for file in [
        "model/config.json",
        "model/model.safetensors",
        "model/tokenizer.json",
        "model/tokenizer_config.json",
        "model/model.Q8_0.gguf",
    ] {
        assert!(out_dir.join(file).is_file(), "{file}");
    }
    assert!(out_dir.join("checkpoints/checkpoint-12").is_dir() || out_dir.join("checkpoints/checkpoint-6").is_dir());
    // Answers to four fixed prompts at step 0 and at every evaluation, same seed each time.
    // (The tiny random model answers mostly newlines whatever its weights; that the answers
    // come from the current weights is the train module's `inference_model_with_training_weights`.)
    let conn = rusqlite::Connection::open(&db).unwrap();
    let samples: Vec<(i64, i64, String)> = conn
        .prepare("SELECT step, prompt_id, content FROM run_samples WHERE run_id = 1 ORDER BY prompt_id, step")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let steps: std::collections::BTreeSet<i64> = samples.iter().map(|s| s.0).collect();
    assert_eq!(steps.into_iter().collect::<Vec<_>>(), [0, 4, 8, 12]);
    assert_eq!(samples.len(), 16, "{samples:?}");
    assert!(samples.iter().all(|s| !s.2.is_empty()), "{samples:?}");
    let runs = ok(&db, &["runs"]);
    assert!(runs.contains("finished"), "{runs}");
    // The exported HF folder is a model verdict can load and generate with.
    let info = ok(&db, &["model", "info", out_dir.join("model").to_str().unwrap()]);
    assert!(info.contains("architecture:    llama"), "{info}");
    // And so is the GGUF export.
    let info = ok(&db, &["model", "info", out_dir.join("model/model.Q8_0.gguf").to_str().unwrap()]);
    assert!(info.contains("architecture:    llama"), "{info}");
    // An existing output folder is refused without --overwrite.
    let again = verdict(
        &db,
        &["train", "--model", gguf.to_str().unwrap(), "--out", out_dir.to_str().unwrap(), "--max-steps", "1"],
    );
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--overwrite"));
}

#[test]
fn a_stopped_run_resumes_to_the_same_metrics() {
    let (dir, db, gguf) = setup();
    let config = |out: &str| TrainConfig {
        model: Some(gguf.clone()),
        out: Some(dir.path().join(out)),
        max_steps: Some(6),
        learning_rate: 1e-3,
        max_length: 128,
        save_every: 3,
        ..TrainConfig::default()
    };
    let whole = train::run(&db, &config("whole"), None, false, &AtomicBool::new(false), &mut |_| {}).unwrap();
    assert_eq!(whole.status, "finished");
    // Stop after step 3 (the flag is checked before each step), then resume.
    let cancel = AtomicBool::new(false);
    let stopped = train::run(&db, &config("parts"), None, false, &cancel, &mut |e| {
        if let train::TrainEvent::Step { step: 3, .. } = e {
            cancel.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    })
    .unwrap();
    assert_eq!((stopped.status.as_str(), stopped.steps), ("stopped", 3));
    let resumed =
        train::run(&db, &config("parts"), Some(stopped.run_id), false, &AtomicBool::new(false), &mut |_| {}).unwrap();
    assert_eq!(resumed.status, "finished");
    let a = metric(&db, whole.run_id, "loss");
    let b = metric(&db, stopped.run_id, "loss");
    assert_eq!(a.len(), 6);
    assert_eq!(b.len(), 6);
    for ((_, x), (_, y)) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-5, "resumed loss {y} differs from uninterrupted {x}");
    }
}

#[test]
fn logps_prints_one_line_per_pair_and_no_pairs_is_a_clear_error() {
    let (dir, db, gguf) = setup();
    let pairs = dir.path().join("pairs.jsonl");
    let out = ok(
        &db,
        &["logps", "--model", gguf.to_str().unwrap(), "--ref", gguf.to_str().unwrap(), pairs.to_str().unwrap()],
    );
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 5);
    assert!(lines[0]["logps/chosen"].as_f64().unwrap() < 0.0);
    assert!(lines[0]["tokens/chosen"].as_u64().unwrap() > 0, "response tokens scored: {}", lines[0]);
    assert!((lines[0]["loss"].as_f64().unwrap() - std::f64::consts::LN_2).abs() < 1e-6, "policy = reference: ln 2");
    let empty = dir.path().join("empty.db");
    ok(&empty, &["--no-samples", "init"]);
    let out = verdict(
        &empty,
        &[
            "train",
            "--model",
            gguf.to_str().unwrap(),
            "--max-steps",
            "1",
            "--out",
            dir.path().join("x").to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no resolved pairs"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
