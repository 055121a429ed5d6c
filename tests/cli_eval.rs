//! End-to-end tests of `verdict eval` on the tiny random model: a two-step DPO run, both
//! models' answers to the test prompts, the implicit rewards of those answers checked against
//! the inference runtime's logits, and the blind-vote reports.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::AtomicBool;

use verdict::domain::Outcome;
use verdict::jobs::rewards::{RewardJob, implicit_rewards};
use verdict::model::{ChatMessage, DeviceChoice, LoadOptions, Model};
use verdict::store::{NewEvalVote, OpenMode, Store};

fn verdict(db: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_verdict")).arg("--db").arg(db).args(args).output().unwrap()
}

fn ok(db: &Path, args: &[&str]) -> String {
    let out = verdict(db, args);
    assert!(out.status.success(), "verdict {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The one-line error of a command that must fail.
fn fails(db: &Path, args: &[&str]) -> String {
    let out = verdict(db, args);
    assert!(!out.status.success(), "verdict {args:?} should fail: {}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    err
}

const DATA: &str = r#"{"prompt":"Block card?","chosen":"Yes, in the app.","rejected":"No idea.","split":"train","language":"en"}
{"prompt":"PIN by phone?","chosen":"Never share it.","rejected":"Sure, tell us.","split":"train","language":"en"}
{"prompt":"Karte weg?","chosen":"Sperren Sie sie.","rejected":"Egal.","split":"train","language":"de"}
{"prompt":"Fee?","chosen":"See the fee schedule.","rejected":"It is free forever!","split":"test","language":"en"}
"#;

const TEST_PROMPTS: &str = r#"{"prompt":"Wie hoch ist das Limit?","split":"test","language":"de"}
{"prompt":"Can I pay abroad?","split":"test","language":"en"}
{"prompt":"Gibt es Zinsen?","split":"test","language":"de"}
"#;

/// A database with train pairs and four test prompts, and a finished two-step run on the tiny model.
fn trained() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (gguf, _) = verdict::model::testing::write_tiny_models(&dir.path().join("tiny")).unwrap();
    let db = dir.path().join("v.db");
    let data = dir.path().join("data.jsonl");
    std::fs::write(&data, DATA).unwrap();
    let prompts = dir.path().join("prompts.jsonl");
    std::fs::write(&prompts, TEST_PROMPTS).unwrap();
    ok(&db, &["--no-samples", "import", data.to_str().unwrap(), prompts.to_str().unwrap()]);
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
            "2",
            "--learning-rate",
            "1e-3",
            "--max-length",
            "128",
            "--device",
            "cpu",
        ],
    );
    assert!(out.contains("finished after 2 steps"), "{out}");
    (dir, db)
}

fn count(db: &Path, sql: &str) -> i64 {
    rusqlite::Connection::open(db).unwrap().query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Σ log p(response token | prefix) from the inference runtime's full logits: another path than
/// the trainer's forward that `implicit_rewards` uses.
fn logp_by_inference(model: &Model, messages: &[ChatMessage], answer: &str) -> f64 {
    let (prompt, response) = verdict::train::tokenize::response_text(model, messages, answer).unwrap();
    let (prompt, response) = (model.encode(&prompt).unwrap(), model.encode(&response).unwrap());
    let ids: Vec<u32> = prompt.iter().chain(&response).copied().collect();
    let logits = model.logits(&ids).unwrap().to_vec2::<f32>().unwrap();
    (prompt.len()..ids.len())
        .map(|t| {
            let row = &logits[t - 1];
            let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
            let lse = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
            row[ids[t] as usize] as f64 - lse
        })
        .sum()
}

#[test]
fn answers_for_a_run_are_stored_once_per_model_and_prompt_and_their_rewards_are_real() {
    let (_dir, db) = trained();
    let out = ok(&db, &["eval", "answers", "--run", "1", "--limit", "3", "--max-new-tokens", "8", "--device", "cpu"]);
    assert!(out.contains("6 answers generated"), "{out}");
    assert_eq!(count(&db, "SELECT count(*) FROM model_answers WHERE seed = 42"), 6);
    assert_eq!(count(&db, "SELECT count(DISTINCT model_id) FROM model_answers"), 2);
    assert_eq!(count(&db, "SELECT count(DISTINCT prompt_id) FROM model_answers"), 3);
    // The three are the first test prompts.
    assert_eq!(
        count(&db, "SELECT count(*) FROM model_answers a JOIN prompts p ON p.id = a.prompt_id WHERE p.split = 'test'"),
        6
    );
    let again = ok(&db, &["eval", "answers", "--run", "1", "--limit", "3", "--max-new-tokens", "8", "--device", "cpu"]);
    assert!(again.contains("0 answers generated") && again.contains("6 already stored"), "{again}");

    // Implicit rewards with the run's β, against the inference runtime's logits.
    let job = RewardJob::for_run(&db, 1, 42).unwrap();
    assert_eq!(job.beta, 0.1);
    let rewards = implicit_rewards(&job, &AtomicBool::new(false), &mut |_| {}).unwrap().expect("not cancelled");
    assert_eq!(rewards.len(), 3);
    let store = Store::open(&db, OpenMode::MustExist).unwrap();
    let models = store.models().unwrap();
    let path = |id: i64| PathBuf::from(&models.iter().find(|m| m.id == id).unwrap().path);
    let opts = LoadOptions { device: DeviceChoice::Cpu, dequantize: true, requantize: false, threads: None };
    let base = Model::load(&path(job.base), &opts).unwrap();
    let tuned = Model::load(&path(job.tuned), &opts).unwrap();
    let prompts = store.prompts().unwrap();
    let mut moved = 0.0f64;
    for r in &rewards {
        let prompt = prompts.iter().find(|p| p.id == r.prompt_id).unwrap();
        let messages: Vec<ChatMessage> =
            prompt.messages.iter().map(|m| ChatMessage::new(&m.role, &m.content)).collect();
        let texts = store.response_texts(&[r.base_response, r.tuned_response]).unwrap();
        for (answer, got) in [(&texts[&r.base_response], r.base_answer), (&texts[&r.tuned_response], r.tuned_answer)] {
            let want =
                0.1 * (logp_by_inference(&tuned, &messages, answer) - logp_by_inference(&base, &messages, answer));
            assert!(
                (got - want).abs() < 1e-4,
                "prompt {}: reward {got} vs {want} by the inference runtime",
                r.prompt_id
            );
            moved += got.abs();
        }
    }
    assert!(moved > 1e-3, "two steps at lr 1e-3 change the log-probs: {rewards:?}");
    // Only the prompts asked for, and nothing for a seed without answers.
    let one = RewardJob { prompts: vec![rewards[1].prompt_id], ..job.clone() };
    let only = implicit_rewards(&one, &AtomicBool::new(false), &mut |_| {}).unwrap().unwrap();
    assert_eq!(only.len(), 1);
    assert!((only[0].tuned_answer - rewards[1].tuned_answer).abs() < 1e-6);
    let none = implicit_rewards(&RewardJob { seed: 7, ..job }, &AtomicBool::new(false), &mut |_| {}).unwrap().unwrap();
    assert!(none.is_empty());
}
