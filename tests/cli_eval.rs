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
    // Started from the database's folder with a relative --out, as people do: the tuned model
    // is registered as `run1/model`, and the commands below (run from elsewhere) still find it.
    let train = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .current_dir(dir.path())
        .args(["--db", "v.db", "train", "--model", gguf.to_str().unwrap(), "--out", "run1", "--max-steps", "2"])
        .args(["--learning-rate", "1e-3", "--max-length", "128", "--beta", "0.25", "--device", "cpu"])
        .output()
        .unwrap();
    assert!(train.status.success(), "{}", String::from_utf8_lossy(&train.stderr));
    let out = String::from_utf8(train.stdout).unwrap();
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
    let (dir, db) = trained();
    let one_at_a_time = dir.path().join("one-at-a-time.db");
    std::fs::copy(&db, &one_at_a_time).unwrap();
    let out = ok(&db, &["eval", "answers", "--run", "1", "--limit", "3", "--max-new-tokens", "8", "--device", "cpu"]);
    assert!(out.contains("6 answers generated"), "{out}");
    // The three prompts decoded together (the default on the CPU) give each the answer it gets
    // alone.
    let args = ["eval", "answers", "--run", "1", "--limit", "3", "--max-new-tokens", "8", "--device", "cpu"];
    ok(&one_at_a_time, &[&args[..], &["--batch-rows", "1"]].concat());
    let answers = |db: &std::path::Path| -> Vec<(i64, i64, String)> {
        let conn = rusqlite::Connection::open(db).unwrap();
        let mut q = conn
            .prepare(
                "SELECT a.model_id, a.prompt_id, r.content FROM model_answers a \
                 JOIN responses r ON r.id = a.response_id ORDER BY a.model_id, a.prompt_id",
            )
            .unwrap();
        q.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect()
    };
    let together = answers(&db);
    assert_eq!(together.len(), 6);
    assert_eq!(together, answers(&one_at_a_time));
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

    // Implicit rewards with the run's β and max length (not the defaults, 0.1 and 1024),
    // against the inference runtime's logits.
    let job = RewardJob::for_run(&db, 1, 42).unwrap();
    assert_eq!((job.beta, job.max_length), (0.25, 128));
    let rewards = implicit_rewards(&job, &AtomicBool::new(false), &mut |_| {}).unwrap().expect("not cancelled");
    assert_eq!(rewards.len(), 3);
    let store = Store::open(&db, OpenMode::MustExist).unwrap();
    let registered = std::path::PathBuf::from(&store.models().unwrap()[1].path);
    assert!(registered.is_absolute() && registered.ends_with("run1/model"), "{}", registered.display());
    let path = |id: i64| store.model_path(id).unwrap();
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
                0.25 * (logp_by_inference(&tuned, &messages, answer) - logp_by_inference(&base, &messages, answer));
            assert!(
                (got - want).abs() < 1e-4,
                "prompt {}: reward {got} vs {want} by the inference runtime",
                r.prompt_id
            );
            moved += got.abs();
        }
    }
    assert!(moved > 1e-3, "two steps at lr 1e-3 change the log-probs: {rewards:?}");
    for r in rewards.iter().filter(|r| r.base_response == r.tuned_response) {
        assert_eq!(r.base_answer, r.tuned_answer, "one text, one reward");
    }
    // Only the prompts asked for, and nothing for a seed without answers.
    let one = RewardJob { prompts: vec![rewards[1].prompt_id], ..job.clone() };
    let only = implicit_rewards(&one, &AtomicBool::new(false), &mut |_| {}).unwrap().unwrap();
    assert_eq!(only.len(), 1);
    assert!((only[0].tuned_answer - rewards[1].tuned_answer).abs() < 1e-6);
    let none = implicit_rewards(&RewardJob { seed: 7, ..job }, &AtomicBool::new(false), &mut |_| {}).unwrap().unwrap();
    assert!(none.is_empty());
    // A config changed outside verdict is an error naming its row, not β = 0.1 and length 1024.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("UPDATE runs SET config = '{\"beta\": ' WHERE id = 1", [])
        .unwrap();
    let err = RewardJob::for_run(&db, 1, 42).unwrap_err().to_string();
    assert!(err.contains("table runs, row 1: column config"), "{err}");
}

/// Wilson's score interval at z = 1.96, written out here from the textbook formula.
fn wilson(successes: f64, n: f64) -> (f64, f64) {
    let z = 1.959_963_984_540_054;
    let p = successes / n;
    let center = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / (1.0 + z * z / n);
    (center - half, center + half)
}

fn close(value: &serde_json::Value, want: f64) -> bool {
    value.as_f64().is_some_and(|v| (v - want).abs() < 1e-9)
}

#[test]
fn report_gives_the_win_rate_of_the_blind_votes_and_arena_ranks_every_model() {
    let (dir, db) = trained();
    ok(&db, &["eval", "answers", "--run", "1", "--limit", "3", "--max-new-tokens", "6", "--device", "cpu"]);
    let none = ok(&db, &["eval", "report", "1"]);
    assert!(none.contains("no blind votes yet") && none.contains("eval answers --run 1"), "{none}");
    assert!(none.contains("final metrics") && none.contains("loss"), "{none}");
    assert_eq!(count(&db, "SELECT count(*) FROM evals"), 0, "nothing to store without votes");

    let mut store = Store::open(&db, OpenMode::MustExist).unwrap();
    let run = store.run(1).unwrap().unwrap();
    let (base, tuned) = (run.base_model_id.unwrap(), run.output_model_id.unwrap());
    let prompts: Vec<(i64, String)> = store
        .prompts()
        .unwrap()
        .into_iter()
        .filter(|p| p.split.as_str() == "test")
        .map(|p| (p.id, p.language))
        .take(3)
        .collect();
    assert_eq!(prompts.iter().map(|p| p.1.as_str()).collect::<Vec<_>>(), ["en", "de", "en"]);
    let ana = store.annotator_id("ana", "annotator").unwrap();
    let bo = store.annotator_id("bo", "annotator").unwrap();
    let vote = |store: &mut Store, who: i64, prompt: i64, a: i64, b: i64, outcome: Outcome| {
        let response = |m: i64| store.model_answer(m, prompt, 42).unwrap().expect("answered");
        let vote = NewEvalVote {
            annotator_id: who,
            prompt_id: prompt,
            model_a: a,
            model_b: b,
            response_a: response(a),
            response_b: response(b),
            a_on_left: prompt % 2 == 0,
            outcome,
            seconds: Some(4.0),
        };
        store.record_eval_vote(&vote).unwrap();
    };
    let (p_en, p_de, p_en2) = (prompts[0].0, prompts[1].0, prompts[2].0);
    // From the tuned model's side: en win, win, tie, win (after a superseded loss); de loss, both bad.
    vote(&mut store, ana, p_en, tuned, base, Outcome::A);
    vote(&mut store, bo, p_en, base, tuned, Outcome::B);
    vote(&mut store, ana, p_en2, tuned, base, Outcome::Tie);
    vote(&mut store, bo, p_en2, tuned, base, Outcome::B);
    vote(&mut store, bo, p_en2, base, tuned, Outcome::B);
    vote(&mut store, ana, p_de, base, tuned, Outcome::A);
    vote(&mut store, bo, p_de, tuned, base, Outcome::BothBad);

    let report: serde_json::Value = serde_json::from_str(&ok(&db, &["eval", "report", "1", "--json"])).unwrap();
    let overall = &report["win_rate"]["overall"];
    assert_eq!(
        (&overall["n"], &overall["wins"], &overall["losses"], &overall["ties"], &overall["both_bad"]),
        (&6.into(), &3.into(), &1.into(), &1.into(), &1.into()),
        "{report}"
    );
    let (low, high) = wilson(4.0, 6.0);
    assert!(close(&overall["rate"], 4.0 / 6.0), "{overall}");
    assert!(close(&overall["interval"]["low"], low) && close(&overall["interval"]["high"], high), "{overall}");
    let en = &report["win_rate"]["by_language"]["en"];
    let (low, high) = wilson(3.5, 4.0);
    assert!(
        close(&en["rate"], 3.5 / 4.0) && close(&en["interval"]["low"], low) && close(&en["interval"]["high"], high)
    );
    let de = &report["win_rate"]["by_language"]["de"];
    let (low, high) = wilson(0.5, 2.0);
    assert!(close(&de["rate"], 0.25) && close(&de["interval"]["low"], low) && close(&de["interval"]["high"], high));
    assert_eq!((report["tuned"]["id"].as_i64(), report["base"]["id"].as_i64()), (Some(tuned), Some(base)));
    assert!(report["metrics"].as_array().unwrap().iter().any(|m| m["name"] == "loss" && m["step"] == 2), "{report}");
    // Stored, once per run however often the report runs (ties hold the both-bad vote too).
    let text = ok(&db, &["eval", "report", "1"]);
    assert!(text.contains("win rate 0.667") && text.contains("6 blind votes"), "{text}");
    let evals = store.evals(Some(1)).unwrap();
    assert_eq!(evals.len(), 1);
    assert_eq!((evals[0].model_a, evals[0].model_b), (tuned, base));
    assert_eq!((evals[0].wins, evals[0].losses, evals[0].ties), (3, 1, 2));
    assert!((evals[0].win_rate - 4.0 / 6.0).abs() < 1e-12);
    assert!(evals[0].by_language.contains("\"de\""), "{}", evals[0].by_language);

    // Curves as PNG and SVG.
    let png = dir.path().join("curves.png");
    ok(&db, &["eval", "report", "1", "--plot", png.to_str().unwrap()]);
    assert_eq!(&std::fs::read(&png).unwrap()[..8], b"\x89PNG\r\n\x1a\n");
    let svg = dir.path().join("curves.svg");
    ok(&db, &["eval", "report", "1", "--plot", svg.to_str().unwrap()]);
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));

    // A third model in the arena: it beat the base twice and lost to the tuned model once.
    let other = store.register_model("sha-other", "other", "/nowhere/other.gguf", "gguf", "llama", "Q8_0").unwrap();
    store.add_model_answer(other, p_en, 42, "Fees are listed online.", "{}").unwrap();
    vote(&mut store, ana, p_en, other, base, Outcome::A);
    vote(&mut store, bo, p_en, base, other, Outcome::B);
    vote(&mut store, ana, p_en, tuned, other, Outcome::A);
    let arena: serde_json::Value = serde_json::from_str(&ok(&db, &["eval", "arena", "--json"])).unwrap();
    assert_eq!(arena["votes"], 9, "{arena}");
    let models = arena["models"].as_array().unwrap();
    let record = |id: i64| {
        let m = models.iter().find(|m| m["model_id"] == id).unwrap();
        (m["games"].as_i64().unwrap(), m["wins"].as_i64().unwrap(), m["losses"].as_i64().unwrap())
    };
    assert_eq!(record(base), (8, 1, 5));
    assert_eq!(record(tuned), (7, 4, 1));
    assert_eq!(record(other), (3, 2, 1));
    let ratings: Vec<f64> = models.iter().map(|m| m["rating"].as_f64().unwrap()).collect();
    assert!(ratings.windows(2).all(|w| w[0] >= w[1]), "best first: {ratings:?}");
    assert_eq!(models.last().unwrap()["model_id"], base, "the base lost most: {arena}");
    for m in models {
        assert!(m["ci_low"].as_f64() < m["rating"].as_f64() && m["rating"].as_f64() < m["ci_high"].as_f64(), "{m}");
    }
    let table = ok(&db, &["eval", "arena"]);
    assert!(table.contains("other") && table.contains("95% CI"), "{table}");
}

#[test]
fn bad_inputs_give_one_line_errors() {
    let (dir, db) = trained();
    let store = Store::open(&db, OpenMode::MustExist).unwrap();
    let base = store.run(1).unwrap().unwrap().base_model_id.unwrap();
    store.create_run("unfinished", "dpo", "{}", Some(base)).unwrap();
    assert!(fails(&db, &["eval", "report", "9"]).contains("no run 9"));
    assert!(fails(&db, &["eval", "report", "2"]).contains("run 2 has no tuned model"));
    assert!(fails(&db, &["eval", "answers", "--run", "2"]).contains("run 2 has no tuned model"));
    assert!(fails(&db, &["eval", "answers"]).contains("--run RUN"));
    assert!(fails(&db, &["eval", "answers", "--models", "1,77"]).contains("no model 77"));
    let gif = dir.path().join("curves.gif");
    assert!(fails(&db, &["eval", "report", "1", "--plot", gif.to_str().unwrap()]).contains(".png or .svg"));
    assert!(!gif.exists());
    assert!(fails(&db, &["eval", "arena"]).contains("no blind votes yet"));
}
