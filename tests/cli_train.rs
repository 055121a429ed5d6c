//! End-to-end tests of `verdict train`, `verdict runs` and `verdict logps` on the tiny
//! random model (the real model's numbers are checked in the train module's own tests).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::AtomicBool;

use verdict::domain::RunStatus;
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

/// A run's status, error and stored config.
fn run_row(db: &Path, run: i64) -> (String, Option<String>, serde_json::Value) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let (status, error, config): (String, Option<String>, String) = conn
        .query_row("SELECT status, error, config FROM runs WHERE id = ?1", [run], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    (status, error, serde_json::from_str(&config).unwrap())
}

/// What a run prints before it trains: the device, the training set's label counts and the
/// memory plan (a heading each, then indented rows).
/// Runs `config` from the start and stops it (the cancel flag) once step `step` is done, as the
/// TUI's `s` and a Ctrl-C do.
fn run_stopped_at(db: &Path, config: &TrainConfig, step: usize) -> train::TrainSummary {
    let cancel = AtomicBool::new(false);
    train::run(db, config, None, false, &cancel, &mut |e| {
        if let train::TrainEvent::Step { step: s, .. } = e
            && s == step
        {
            cancel.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    })
    .unwrap()
}

/// The error a failed run printed: one line, the last one. What comes before it is the run's
/// own progress (device, plan, step lines), which a failure must not hide.
fn the_error_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let errors = lines.iter().filter(|l| l.starts_with("error")).count();
    assert_eq!(errors, 1, "one line of error, not: {stderr}");
    let last = lines.last().copied().unwrap_or_default();
    assert!(last.starts_with("error"), "the error is the last line, not: {stderr}");
    eprintln!("{last}");
    last.to_string()
}

/// Runs `verdict` expecting a failure; returns its message, which must be one line.
fn fails(db: &Path, args: &[&str]) -> String {
    let out = verdict(db, args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "verdict {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
    the_error_line(&stderr)
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
        "model_flops",
        "model_tflops_per_second",
        "mfu",
    ] {
        assert_eq!(metric(&db, 1, name).len(), 12, "{name}");
    }
    assert_eq!(metric(&db, 1, "eval_loss").len(), 3);
    // Every step's FLOPs are the same model's over batches of the same pairs: positive, and
    // the utilisation a fraction of the CPU's peak.
    assert!(metric(&db, 1, "model_flops").iter().all(|(_, v)| *v > 1e6), "{:?}", metric(&db, 1, "model_flops"));
    let mfu = metric(&db, 1, "mfu");
    assert!(mfu.iter().all(|(_, v)| *v > 0.0 && *v < 2.0), "{mfu:?}");
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
    // The refusal is a failed run that names the fix, recorded without the folder (it belongs
    // to run 1: resuming this record must never train into it).
    let again = fails(
        &db,
        &["train", "--model", gguf.to_str().unwrap(), "--out", out_dir.to_str().unwrap(), "--max-steps", "1"],
    );
    assert!(again.contains("exists and is not empty: pass --overwrite"), "{again}");
    let (status, error, config) = run_row(&db, 2);
    assert_eq!(status, "failed");
    assert!(error.unwrap().contains("--overwrite"));
    assert!(config["out"].is_null(), "{config}");
    assert_eq!(run_row(&db, 1).0, "finished");
}

/// A stopped run resumes to the metrics of an uninterrupted one, on the pairs it started with,
/// even after a label changed; while another process holds the run (its folder's LOCK), a resume
/// is refused and changes nothing.
#[test]
fn a_resumed_run_keeps_its_stored_pairs_and_a_held_run_is_refused() {
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
    let stopped = run_stopped_at(&db, &config("parts"), 3);
    assert_eq!((stopped.status, stopped.steps), (RunStatus::Stopped, 3));
    // After the stop, an adjudicator turns a train pair around.
    let store = verdict::store::Store::open(&db, verdict::store::OpenMode::MustExist).unwrap();
    let before = verdict::qa::resolved_pairs(&store).unwrap();
    let train_prompts: Vec<i64> =
        store.prompts().unwrap().iter().filter(|p| p.split == verdict::domain::Split::Train).map(|p| p.id).collect();
    let pair = before.iter().find(|p| train_prompts.contains(&p.prompt_id)).unwrap().clone();
    drop(store);
    ok(&db, &["annotator", "add", "lead", "--role", "adjudicator"]);
    let (chosen, rejected) = (pair.chosen.to_string(), pair.rejected.to_string());
    ok(&db, &["--annotator", "lead", "adjudicate", &chosen, &rejected, "--winner", &rejected]);
    let store = verdict::store::Store::open(&db, verdict::store::OpenMode::MustExist).unwrap();
    let after = verdict::qa::resolved_pairs(&store).unwrap();
    assert!(after.iter().any(|p| p.chosen == pair.rejected && p.rejected == pair.chosen), "the label changed");
    drop(store);
    // Another process trains it: refused, and the run is left as it was.
    let held = verdict::jobs::run_lock::RunLock::acquire(&dir.path().join("parts"), Some(stopped.run_id)).unwrap();
    let run = stopped.run_id.to_string();
    let message = fails(&db, &["train", "--resume", &run]);
    assert!(message.contains(&format!("run {run} is being trained by process")), "{message}");
    assert!(message.contains("LOCK"), "{message}");
    assert_eq!(run_row(&db, stopped.run_id).0, "stopped");
    drop(held);
    let resumed =
        train::run(&db, &config("parts"), Some(stopped.run_id), false, &AtomicBool::new(false), &mut |_| {}).unwrap();
    assert_eq!(resumed.status, RunStatus::Finished);
    let (a, b) = (metric(&db, whole.run_id, "loss"), metric(&db, stopped.run_id, "loss"));
    assert_eq!((a.len(), b.len()), (6, 6));
    for ((step, x), (_, y)) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-5, "step {step}: resumed loss {y}, the run it continues {x}");
    }
}

#[test]
fn a_killed_run_is_listed_as_failed_and_resumes_from_its_checkpoint() {
    let (dir, db, gguf) = setup();
    let out = dir.path().join("killed");
    let run_args = |steps: &str| {
        let (gguf, out) = (gguf.to_str().unwrap().to_string(), out.to_str().unwrap().to_string());
        ["train", "--model", &gguf, "--out", &out, "--max-steps", steps, "--save-every", "2", "--max-length", "128"]
            .map(String::from)
    };
    // SIGKILL once step 2's checkpoint is written: no handler runs, nothing is said.
    let mut child =
        Command::new(env!("CARGO_BIN_EXE_verdict")).arg("--db").arg(&db).args(run_args("40")).spawn().unwrap();
    let checkpoint = out.join("checkpoints");
    let started = std::time::Instant::now();
    while !std::fs::read_dir(&checkpoint).is_ok_and(|mut d| d.next().is_some()) {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it was killed");
        assert!(started.elapsed() < std::time::Duration::from_secs(120), "no checkpoint after two minutes");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(run_row(&db, 1).0, "running", "the row is as the process left it");
    // The next look at the runs says what happened, and how to go on.
    let listed = ok(&db, &["runs"]);
    let (status, error, _) = run_row(&db, 1);
    assert_eq!(status, "failed", "{listed}");
    let error = error.unwrap();
    assert!(error.contains("ended without a word after step") && error.contains("--resume 1"), "{error}");
    assert!(listed.contains("failed") && listed.contains("ended without a word"), "{listed}");
    // It resumes from its checkpoint, not from the start.
    let first_loss_steps = metric(&db, 1, "loss").len();
    let resumed = ok(&db, &["train", "--resume", "1"]);
    assert!(resumed.contains("finished after 40 steps"), "{resumed}");
    assert_eq!(run_row(&db, 1).0, "finished");
    let steps: Vec<i64> = metric(&db, 1, "loss").iter().map(|m| m.0).collect();
    assert!(first_loss_steps >= 2 && steps.len() == 40, "{first_loss_steps} steps before the kill, {}", steps.len());
}

#[test]
fn a_new_run_into_a_folder_another_run_holds_is_refused_and_the_folder_kept() {
    let (dir, db, gguf) = setup();
    let out = dir.path().join("busy");
    let held = verdict::jobs::run_lock::RunLock::acquire(&out, Some(7)).unwrap();
    std::fs::write(out.join("kept.txt"), "the other run's").unwrap();
    let (model, folder) = (gguf.to_str().unwrap(), out.to_str().unwrap());
    let message = fails(&db, &["train", "--model", model, "--out", folder, "--overwrite", "--max-steps", "1"]);
    assert!(message.contains("trains a run into") && message.contains("another --out"), "{message}");
    assert!(out.join("kept.txt").exists(), "--overwrite cleared a folder another run holds");
    let (status, _, config) = run_row(&db, 1);
    assert_eq!((status.as_str(), &config["out"]), ("failed", &serde_json::Value::Null), "recorded without the folder");
    drop(held);
    ok(&db, &["train", "--model", model, "--out", folder, "--overwrite", "--max-steps", "1", "--max-length", "128"]);
    assert!(!out.join("kept.txt").exists(), "--overwrite clears it once it is free");
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
    let message = fails(
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
    assert!(message.contains("no resolved pairs in the train split: label some pairs"), "{message}");
    let (status, error, _) = run_row(&empty, 1);
    assert_eq!((status.as_str(), error.as_deref()), ("failed", Some(message.trim_start_matches("error: "))));
}

/// The correctness check of the training engine: DPO over every train pair of the sample data
/// (`verdict init --samples`, resolved as training resolves them, none truncated), one pair a
/// step for two epochs, takes the train `rewards/accuracies` above 0.9 and grows the margin.
/// TRL logs a metric as its mean over the steps since the last log; over the second epoch's
/// steps that is the share of all train pairs whose chosen answer has the higher reward.
///
/// The model is random (hidden 32, one layer) with SmolLM2's BPE cut to 4,096 tokens, so
/// every pair fits in 1,200 tokens (the tiny byte-level model would need twice as many).
#[test]
fn dpo_on_the_sample_pairs_gets_train_accuracy_above_0_9_and_a_growing_margin() {
    use verdict::domain::{ImportRecord, Split};
    let dir = tempfile::tempdir().unwrap();
    let model = verdict::model::testing::write_smollm2_bpe_model(dir.path()).unwrap();
    let db = dir.path().join("samples.db");
    ok(&db, &["init", "--samples"]);
    let train_pairs = verdict::samples::records()
        .iter()
        .filter(|r| matches!(r, ImportRecord::Pair { prompt, .. } if prompt.split == Some(Split::Train)))
        .count();
    let steps = 2 * train_pairs;
    let started = std::time::Instant::now();
    let out = ok(
        &db,
        &[
            "train",
            "--model",
            model.to_str().unwrap(),
            "--out",
            dir.path().join("run").to_str().unwrap(),
            "--batch-size",
            "1",
            "--max-steps",
            &steps.to_string(),
            "--learning-rate",
            "3e-3",
            "--max-length",
            "1200",
        ],
    );
    eprintln!("{steps} DPO steps on the sample pairs: {:.1} s", started.elapsed().as_secs_f64());
    assert!(out.contains(&format!("finished after {steps} steps")), "{out}");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (pairs, truncated): (i64, i64) = conn
        .query_row("SELECT train_pairs, truncated FROM runs WHERE id = 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!((pairs as usize, truncated), (train_pairs, 0), "every sample train pair, whole");
    let epoch_mean = |name: &str, epoch: usize| {
        let series = metric(&db, 1, name);
        assert_eq!(series.len(), steps, "{name}");
        series[epoch * train_pairs..(epoch + 1) * train_pairs].iter().map(|(_, v)| v).sum::<f64>() / train_pairs as f64
    };
    let accuracy = epoch_mean("rewards/accuracies", 1);
    assert!(accuracy > 0.9, "train rewards/accuracies over the second epoch: {accuracy}");
    let margins = metric(&db, 1, "rewards/margins");
    assert!(margins[0].1.abs() < 1e-4, "step 1 is the reference itself: margin {}", margins[0].1);
    let (first, second) = (epoch_mean("rewards/margins", 0), epoch_mean("rewards/margins", 1));
    eprintln!(
        "second epoch: accuracy {accuracy:.3}; mean margin {first:.2} in the first epoch, {second:.2} in the second"
    );
    assert!(second > first && first > 0.0, "the margin grows: {first} in the first epoch, {second} in the second");
}

/// Where writes run out of room. A tmpfs mounted small where this process may mount one
/// (root with CAP_SYS_ADMIN, as in a VM or a privileged container): a real ENOSPC. Elsewhere
/// (CI runners) a file-size limit on the process, which makes the same writes fail with EFBIG.
enum SmallDisk {
    Tmpfs(PathBuf),
    /// `ulimit -f`: every file the process writes is limited, the database included.
    FileSizeLimit(u64),
}

impl SmallDisk {
    /// `at` becomes a tmpfs of `tmpfs_bytes`, or stays a folder and runs get `file_limit`.
    fn new(at: &Path, tmpfs_bytes: u64, file_limit: u64) -> SmallDisk {
        std::fs::create_dir_all(at).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={tmpfs_bytes}"), "tmpfs", at.to_str().unwrap()])
            .output()
            .is_ok_and(|o| o.status.success());
        if mounted { SmallDisk::Tmpfs(at.to_path_buf()) } else { SmallDisk::FileSizeLimit(file_limit) }
    }

    fn os_error(&self) -> &'static str {
        match self {
            SmallDisk::Tmpfs(_) => "No space left on device",
            SmallDisk::FileSizeLimit(_) => "File too large",
        }
    }

    /// Runs `verdict` where the disk is full, expecting it to fail; returns its one-line message.
    fn fails(&self, db: &Path, args: &[&str]) -> String {
        let message = match self {
            SmallDisk::Tmpfs(_) => fails(db, args),
            SmallDisk::FileSizeLimit(bytes) => {
                // The limit covers the database and its WAL too. verdict creates databases with
                // 16 KiB pages (40 pages even when nearly empty, and every commit appends whole
                // pages to the WAL); rewritten with 4 KiB pages they stay well under a limit the
                // tiny model's checkpoint files exceed. The page size is the file's, so verdict
                // keeps it.
                let conn = rusqlite::Connection::open(db).unwrap();
                conn.execute_batch("PRAGMA journal_mode = DELETE; PRAGMA page_size = 4096; VACUUM;").unwrap();
                drop(conn);
                let db_bytes = std::fs::metadata(db).unwrap().len();
                assert!(db_bytes + 64 * 1024 < *bytes, "the database ({db_bytes} B) must fit under the limit");
                // bash counts `ulimit -f` in KiB; with SIGXFSZ ignored a write past the limit
                // fails with EFBIG instead of killing the process.
                let out = Command::new("bash")
                    .args(["-c", &format!(r#"trap "" XFSZ; ulimit -f {}; exec "$0" "$@""#, bytes / 1024)])
                    .arg(env!("CARGO_BIN_EXE_verdict"))
                    .arg("--db")
                    .arg(db)
                    .args(args)
                    .output()
                    .unwrap();
                assert!(!out.status.success());
                let stderr = String::from_utf8_lossy(&out.stderr).to_string();
                the_error_line(&stderr)
            }
        };
        eprintln!("(the disk was full: {})", if matches!(self, SmallDisk::Tmpfs(_)) { "a tmpfs" } else { "ulimit -f" });
        message
    }

    /// Room again: the tmpfs grows (a file-size limit only ever applies inside `fails`).
    fn grow(&self) {
        if let SmallDisk::Tmpfs(at) = self {
            let grown = Command::new("mount").args(["-o", "remount,size=64m", at.to_str().unwrap()]).output().unwrap();
            assert!(grown.status.success());
        }
    }
}

impl Drop for SmallDisk {
    /// Unmounts, also when an assertion failed.
    fn drop(&mut self) {
        if let SmallDisk::Tmpfs(at) = self {
            let _ = Command::new("umount").arg(at).output();
        }
    }
}

/// A disk that fills up while a checkpoint is written: the run fails with the OS error, the
/// path and what to do; the half-written checkpoint is removed and never replaces the last
/// good one; `--resume` continues from that one once there is room.
#[test]
fn a_full_disk_fails_the_run_and_keeps_the_last_good_checkpoint() {
    let (dir, db, gguf) = setup();
    // A checkpoint of the tiny model: trainable.safetensors (~370 kB) and optimizer.safetensors
    // (twice that).
    let checkpoint_bytes = {
        let probe = dir.path().join("probe");
        let config = TrainConfig {
            model: Some(gguf.clone()),
            out: Some(probe.clone()),
            max_steps: Some(1),
            save_every: 1,
            max_length: 128,
            ..TrainConfig::default()
        };
        train::run(&db, &config, None, false, &AtomicBool::new(false), &mut |_| {}).unwrap();
        let files: Vec<u64> = std::fs::read_dir(probe.join("checkpoints/checkpoint-1"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .collect();
        files.iter().sum::<u64>()
    };
    // Room for one checkpoint and not two; or a limit the weights fit under and the optimizer
    // state does not.
    let disk = SmallDisk::new(&dir.path().join("disk"), checkpoint_bytes * 3 / 2, checkpoint_bytes / 2);
    let out = dir.path().join("disk/run");
    // Steps 1-2, then a stop: checkpoint-2 (written with room to spare).
    let config = TrainConfig {
        model: Some(gguf.clone()),
        out: Some(out.clone()),
        max_steps: Some(4),
        save_every: 3,
        learning_rate: 1e-3,
        max_length: 128,
        ..TrainConfig::default()
    };
    let stopped = run_stopped_at(&db, &config, 2);
    assert_eq!((stopped.status, stopped.steps), (RunStatus::Stopped, 2));
    let checkpoints = out.join("checkpoints");
    let good = std::fs::read(checkpoints.join("checkpoint-2/optimizer.safetensors")).unwrap();
    // Resume: step 3's checkpoint does not fit.
    let run = stopped.run_id.to_string();
    let message = disk.fails(&db, &["train", "--resume", &run]);
    for part in [
        "cannot write the checkpoint of step 3",
        "optimizer.safetensors",
        disk.os_error(),
        &format!("`verdict train --resume {run}` continues from its checkpoint at step 2"),
    ] {
        assert!(message.contains(part), "`{part}` missing from: {message}");
    }
    let (status, error, _) = run_row(&db, stopped.run_id);
    assert_eq!(status, "failed");
    assert!(error.unwrap().contains(disk.os_error()));
    let mut left: Vec<String> =
        std::fs::read_dir(&checkpoints).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    left.sort();
    assert_eq!(left, ["checkpoint-2"], "the half-written checkpoint is gone, the good one intact");
    assert_eq!(std::fs::read(checkpoints.join("checkpoint-2/optimizer.safetensors")).unwrap(), good);
    // With room again, the run goes on from step 2 to the end.
    disk.grow();
    let resumed = ok(&db, &["train", "--resume", &run]);
    assert!(resumed.contains("finished after 4 steps"), "{resumed}");
    assert_eq!(run_row(&db, stopped.run_id).0, "finished");
}

/// A disk that fills up while the trained model is written: the run is failed (not left
/// `running`), the partial model folder removed, and `--resume` writes the model from the
/// last checkpoint once there is room.
#[test]
fn a_full_disk_during_the_export_fails_the_run_and_resume_writes_the_model() {
    let (dir, db, gguf) = setup();
    // LoRA: checkpoints of ~30 kB; the merged model.safetensors takes ~370 kB.
    let disk = SmallDisk::new(&dir.path().join("disk"), 200_000, 320 * 1024);
    let out = dir.path().join("disk/run");
    let args = [
        "train",
        "--model",
        gguf.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--lora-rank",
        "2",
        "--max-steps",
        "2",
        "--save-every",
        "2",
        "--learning-rate",
        "1e-3",
        "--max-length",
        "128",
    ];
    let message = disk.fails(&db, &args);
    for part in [
        format!("cannot write the trained model to {}", out.join("model").display()),
        "model.safetensors".into(),
        disk.os_error().into(),
        "`verdict train --resume 1` continues from its checkpoint at step 2".into(),
    ] {
        assert!(message.contains(&part), "`{part}` missing from: {message}");
    }
    let (status, error, _) = run_row(&db, 1);
    assert_eq!(status, "failed");
    assert!(error.unwrap().contains(disk.os_error()));
    assert!(!out.join("model").exists(), "no half-written model folder");
    assert!(out.join("checkpoints/checkpoint-2/state.json").is_file());
    disk.grow();
    let resumed = ok(&db, &["train", "--resume", "1"]);
    assert!(resumed.contains("finished after 2 steps"), "{resumed}");
    assert!(out.join("model/model.safetensors").is_file());
    assert_eq!(run_row(&db, 1).0, "finished");
}

/// An output folder that cannot be created is an OS error naming the folder, and a failed run.
/// (Root ignores permissions, so the folder is put under a regular file: ENOTDIR for anyone.)
#[test]
fn an_unwritable_output_folder_fails_the_run_with_the_os_error() {
    let (dir, db, gguf) = setup();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a folder").unwrap();
    let out = file.join("run");
    let message = fails(&db, &["train", "--model", gguf.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(message.contains(&format!("cannot create the run folder {}", out.display())), "{message}");
    assert!(message.contains("Not a directory"), "{message}");
    let (status, error, _) = run_row(&db, 1);
    assert_eq!(status, "failed");
    assert!(error.unwrap().contains("Not a directory"));
}

/// Models training cannot handle are refused before any work, each with a failed run: an
/// architecture verdict does not run at all, and a llama whose rotary scaling verdict does not
/// implement.
#[test]
fn models_it_cannot_train_are_refused_with_a_failed_run() {
    let (dir, db, _) = setup();
    let (_, hf) = verdict::model::testing::write_tiny_models(&dir.path().join("tiny")).unwrap();
    let config_path = hf.join("config.json");
    let original: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    let cases = [
        (serde_json::json!({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}), "unsupported architecture"),
        (
            serde_json::json!({"rope_scaling": {"rope_type": "proportional", "factor": 4.0}}),
            "`rope_scaling.rope_type` is `proportional`, a rotary scaling verdict does not implement",
        ),
    ];
    for (run, (change, expected)) in cases.iter().enumerate() {
        let mut config = original.clone();
        for (key, value) in change.as_object().unwrap() {
            config[key] = value.clone();
        }
        std::fs::write(&config_path, config.to_string()).unwrap();
        let out = dir.path().join(format!("run{run}"));
        let message = fails(&db, &["train", "--model", hf.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        assert!(message.contains(expected), "{message}");
        let (status, error, _) = run_row(&db, run as i64 + 1);
        assert_eq!(status, "failed");
        assert!(error.unwrap().contains(expected));
    }
}

/// A NaN loss stops the run before the update, marks it failed, and keeps the checkpoints
/// written before it. The NaN comes from the data: an untied copy of the tiny model whose
/// embedding rows for the bytes of non-ASCII text are NaN, so only the Chinese pair gives NaN
/// log-probs, at the step where the shuffled order reaches it.
#[test]
fn a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint() {
    use candle_core::{Device, Tensor};
    let (dir, db, _) = setup();
    let (_, hf) = verdict::model::testing::write_tiny_models(&dir.path().join("tiny")).unwrap();
    let weights_path = hf.join("model.safetensors");
    let mut weights = candle_core::safetensors::load(&weights_path, &Device::Cpu).unwrap();
    let embed = weights["model.embed_tokens.weight"].clone();
    let (vocab, hidden) = embed.dims2().unwrap();
    let mut rows: Vec<f32> = embed.flatten_all().unwrap().to_vec1().unwrap();
    // Token 3 + b is byte b (three specials first); UTF-8 puts every non-ASCII character in
    // bytes 0x80 and up.
    for byte in 0x80..=0xff_usize {
        rows[(3 + byte) * hidden..(4 + byte) * hidden].fill(f32::NAN);
    }
    weights.insert("lm_head.weight".into(), embed);
    weights.insert("model.embed_tokens.weight".into(), Tensor::from_vec(rows, (vocab, hidden), &Device::Cpu).unwrap());
    candle_core::safetensors::save(&weights, &weights_path).unwrap();
    let config_path = hf.join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["tie_word_embeddings"] = false.into();
    std::fs::write(&config_path, config.to_string()).unwrap();

    let out = dir.path().join("run");
    let message = fails(
        &db,
        &[
            "train",
            "--model",
            hf.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--max-steps",
            "8",
            "--save-every",
            "1",
            "--learning-rate",
            "1e-3",
            "--max-length",
            "128",
            "--seed",
            "42",
        ],
    );
    let good_steps = metric(&db, 1, "loss").len();
    assert!(good_steps >= 1, "the seed puts the Chinese pair after the first step: {message}");
    let nan_step = good_steps + 1;
    for part in [format!("loss is NaN at step {nan_step}"), format!("the checkpoint of step {good_steps} is kept")] {
        assert!(message.contains(&part), "`{part}` missing from: {message}");
    }
    let (status, error, _) = run_row(&db, 1);
    assert_eq!(status, "failed");
    assert!(error.unwrap().contains("NaN"));
    let checkpoints = out.join("checkpoints");
    assert!(checkpoints.join(format!("checkpoint-{good_steps}/state.json")).is_file());
    assert!(!checkpoints.join(format!("checkpoint-{nan_step}")).exists());
    assert!(metric(&db, 1, "loss").iter().all(|(_, v)| v.is_finite()));
}

#[test]
fn a_run_config_with_an_unknown_key_names_the_file_line_and_key() {
    let (dir, db, _) = setup();
    let config = dir.path().join("run.toml");
    std::fs::write(&config, "max_steps = 3\nbogus_key = 1\n").unwrap();
    let message = fails(&db, &["train", "--config", config.to_str().unwrap()]);
    assert!(message.contains("run.toml: not a valid run config (line 2)"), "{message}");
    assert!(message.contains("unknown field `bogus_key`"), "{message}");
}

/// A run stores its training set's content hash and label counts at its start; `verdict runs`
/// and `verdict eval report` show them, and `verdict export --run N` writes exactly that set,
/// even after a label changed (while a plain export follows the new label).
#[test]
fn export_run_writes_the_set_the_run_trained_on_after_a_label_changed() {
    let (dir, db, gguf) = setup();
    let out_dir = dir.path().join("run1");
    let args = ["--model", gguf.to_str().unwrap(), "--out", out_dir.to_str().unwrap(), "--max-length", "128"];
    ok(&db, &[&["train", "--max-steps", "1"][..], &args].concat());
    let store = verdict::store::Store::open(&db, verdict::store::OpenMode::MustExist).unwrap();
    let set = store.run_set(1).unwrap().expect("the run recorded its set");
    let stored = store.run_examples(1).unwrap();
    assert_eq!(stored.len(), 5, "4 train pairs and 1 held out");
    assert_eq!(set.hash, verdict::qa::run_set::content_hash(&store, "dpo", &stored).unwrap());
    let counts = verdict::qa::run_set::count_lines(&set);
    assert!(!counts.is_empty() && counts.iter().all(|l| l.starts_with("win")), "{counts:?}");
    let labels: usize = counts.iter().map(|l| l.split_whitespace().nth(2).unwrap().parse::<usize>().unwrap()).sum();
    assert_eq!(labels, 5, "{counts:?}");
    let pair = verdict::qa::resolved_pairs(&store).unwrap()[0].clone();
    drop(store);
    let runs = ok(&db, &["runs"]);
    assert!(runs.contains(&set.hash[..12]), "{runs}");
    let report = ok(&db, &["eval", "report", "1"]);
    assert!(report.contains(&format!("training set: dpo, sha256 {}", set.hash)), "{report}");
    assert!(report.contains("win"), "{report}");

    let export = |name: &str, extra: &[&str]| {
        let path = dir.path().join(name);
        ok(&db, &[&["export", path.to_str().unwrap()][..], extra].concat());
        std::fs::read_to_string(path).unwrap()
    };
    let before = export("before.jsonl", &["--run", "1"]);
    assert_eq!(before.lines().count(), 5);
    assert_eq!(before, export("plain-before.jsonl", &[]), "before any change, the same as a plain export");
    // An adjudicator turns the first pair around.
    ok(&db, &["annotator", "add", "lead", "--role", "adjudicator"]);
    let (chosen, rejected) = (pair.chosen.to_string(), pair.rejected.to_string());
    ok(&db, &["--annotator", "lead", "adjudicate", &chosen, &rejected, "--winner", &rejected]);
    assert_eq!(export("after.jsonl", &["--run", "1"]), before, "the run's set is what it trained on");
    assert_ne!(export("plain-after.jsonl", &[]), before, "a plain export follows the new label");
    let unpaired = export("unpaired.jsonl", &["--run", "1", "--format", "unpaired"]);
    assert_eq!(unpaired.lines().count(), 10, "each pair as a desirable and an undesirable answer");
    let held_out = export("test.jsonl", &["--run", "1", "--split", "test"]);
    assert_eq!(held_out.lines().count(), 1);
    let message = fails(&db, &["export", dir.path().join("x.jsonl").to_str().unwrap(), "--run", "7"]);
    assert!(message.contains("run 7 has no training set to export: there is no such run"), "{message}");
}

/// Every method on the sample data (the tiny random model with SmolLM2's BPE, as the DPO test
/// above): before step 1 the run prints its training set's label counts for the method; each
/// stores its metrics under TRL's names; each separates the held-out (test split) examples
/// better at the end of the run than at its first evaluation: the reward margin between chosen
/// and rejected (KTO: desirable and undesirable) answers grows, and for SFT the held-out good
/// answers' NLL falls.
#[test]
fn each_method_separates_held_out_sample_examples_and_stores_trl_metric_names() {
    let dir = tempfile::tempdir().unwrap();
    let model = verdict::model::testing::write_smollm2_bpe_model(dir.path()).unwrap();
    let db = dir.path().join("samples.db");
    ok(&db, &["init", "--samples"]);
    // (method, learning rate, batch size, metric names only that method logs). KTO's rate is
    // lower: at 3e-3 its held-out margin is ~10 by step 5 and then drifts.
    let methods: [(&str, &str, &str, &[&str]); 5] = [
        ("dpo", "3e-3", "1", &["rewards/accuracies"]),
        ("kto", "3e-4", "2", &["kl"]),
        ("orpo", "3e-3", "1", &["nll_loss", "log_odds_ratio", "log_odds_chosen", "rewards/accuracies"]),
        ("simpo", "3e-3", "1", &["rewards/accuracies"]),
        ("sft", "3e-3", "1", &[]),
    ];
    for (run, (method, lr, batch, own)) in methods.iter().enumerate() {
        let run = run as i64 + 1;
        let started = std::time::Instant::now();
        let out = verdict(
            &db,
            &[
                "train",
                "--method",
                method,
                "--model",
                model.to_str().unwrap(),
                "--out",
                dir.path().join(method).to_str().unwrap(),
                "--batch-size",
                batch,
                "--max-steps",
                "34",
                "--eval-every",
                "5",
                "--sample-prompts",
                "0",
                "--learning-rate",
                lr,
                "--max-length",
                "1200",
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{method}: {stderr}");
        let heading = stderr.lines().find(|l| l.starts_with("training set (")).unwrap_or_default();
        assert!(heading.starts_with(&format!("training set ({method}): ")), "{method}: {stderr}");
        assert!(stderr.lines().any(|l| l.trim_start().starts_with("win ")), "{method}: counts per kind: {stderr}");
        // With stderr not a terminal the progress comes as plain lines (indicatif hid them all).
        assert!(stderr.lines().any(|l| l.starts_with(&format!("run {run}: "))), "{method}: run line: {stderr}");
        let last =
            stderr.lines().find(|l| l.starts_with("step 34/34: loss ")).unwrap_or_else(|| panic!("{method}: {stderr}"));
        assert!(last.contains(" tok/s · MFU ") && last.ends_with('%'), "{method}: {last}");
        assert_eq!(last.contains(" kl "), *method == "kto", "{method}: {last}");
        assert_eq!(last.contains(" nll "), *method == "orpo", "{method}: {last}");
        let eval_line = stderr
            .lines()
            .find(|l| l.starts_with("step 30: eval loss "))
            .unwrap_or_else(|| panic!("{method}: {stderr}"));
        assert_eq!(eval_line.contains("eval margin"), *method != "sft", "{method}: {eval_line}");
        assert!(!stderr.contains("NaN"), "{method}: {stderr}");
        let common: &[&str] = if *method == "sft" {
            &["loss"]
        } else {
            &["loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected"]
        };
        for name in common.iter().chain(own.iter()) {
            let logged = metric(&db, run, name).len();
            // KTO logs a class's means at the steps whose batch holds that class (as TRL).
            let per_class = *method == "kto" && name.contains('/');
            assert!(logged == 34 || (per_class && logged > 0), "{method}: {name} at {logged} of 34 steps");
        }
        let (name, better) = if *method == "sft" { ("eval_loss", -1.0) } else { ("eval_rewards/margins", 1.0) };
        let eval = metric(&db, run, name);
        assert_eq!(eval.len(), 6, "{method}: {name} at steps 5, 10, .., 30");
        let (first, last) = (eval[0].1, eval.last().unwrap().1);
        eprintln!(
            "{method}: held-out {name} {first:.4} at step 5 -> {last:.4} at step 30 ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
        assert!(better * (last - first) > 0.0, "{method}: {name} {eval:?}");
    }
    // KTO's rows are single answers: each train pair's two answers, one of each class.
    let store = verdict::store::Store::open(&db, verdict::store::OpenMode::MustExist).unwrap();
    let kto = store.run_examples(2).unwrap();
    assert!(kto.iter().all(|e| matches!(e.kind, verdict::store::RunAnswer::Unpaired { .. })));
    let pairs = store.run_examples(1).unwrap();
    assert_eq!(kto.len(), 2 * pairs.len(), "{} answers from {} pairs", kto.len(), pairs.len());
    assert!(store.run_examples(5).unwrap().iter().all(|e| e.kind == verdict::store::RunAnswer::Imitate));
}

/// A stopped KTO run resumes to the losses and KL estimates of an uninterrupted one.
#[test]
fn a_resumed_kto_run_continues_as_the_uninterrupted_one() {
    let (dir, db, gguf) = setup();
    let config = |out: &str| TrainConfig {
        method: "kto".into(),
        model: Some(gguf.clone()),
        out: Some(dir.path().join(out)),
        max_steps: Some(6),
        batch_size: 2,
        learning_rate: 1e-3,
        max_length: 128,
        save_every: 3,
        ..TrainConfig::default()
    };
    let whole = train::run(&db, &config("whole"), None, false, &AtomicBool::new(false), &mut |_| {}).unwrap();
    let stopped = run_stopped_at(&db, &config("parts"), 3);
    assert_eq!((stopped.status, stopped.steps), (RunStatus::Stopped, 3));
    let resumed =
        train::run(&db, &config("parts"), Some(stopped.run_id), false, &AtomicBool::new(false), &mut |_| {}).unwrap();
    assert_eq!(resumed.status, RunStatus::Finished);
    for name in ["loss", "kl"] {
        let (a, b) = (metric(&db, whole.run_id, name), metric(&db, stopped.run_id, name));
        assert_eq!((a.len(), b.len()), (6, 6), "{name}");
        for ((step, x), (_, y)) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5, "step {step}: resumed {name} {y}, the run it continues {x}");
        }
    }
    assert!(metric(&db, whole.run_id, "kl").iter().any(|(_, kl)| *kl > 0.0), "the KL estimate moves");
}

/// A DPO run trains on what the label compiler makes, which its stored set and counts describe:
/// with a rewrite of a rewrite, the newest answer is preferred over both older ones, so the
/// stored set, its counts and the pairs the run trained on are one more than the pairs
/// `qa::resolved_pairs` lists (the run trained on one fewer before).
#[test]
fn a_dpo_run_trains_exactly_its_stored_set_with_a_rewrite_of_a_rewrite() {
    let (dir, db, gguf) = setup();
    let mut store = verdict::store::Store::open(&db, verdict::store::OpenMode::MustExist).unwrap();
    let pair = verdict::qa::resolved_pairs(&store).unwrap()[0].clone();
    let first = store.add_rewrite(pair.chosen, "A careful first rewrite.", "ann").unwrap();
    store.add_rewrite(first, "A careful second rewrite.", "ann").unwrap();
    let resolved = verdict::qa::resolved_pairs(&store).unwrap();
    let compiled = verdict::qa::compile::compile_store(&store, verdict::qa::compile::Method::Dpo).unwrap();
    assert_eq!(compiled.pairs.len(), resolved.len() + 1, "the newest rewrite over its grandparent too");
    drop(store);
    let out = dir.path().join("run");
    let args = ["train", "--model", gguf.to_str().unwrap(), "--out", out.to_str().unwrap(), "--max-steps", "1"];
    ok(&db, &[&args[..], &["--max-length", "128"]].concat());
    let store = verdict::store::Store::open(&db, verdict::store::OpenMode::MustExist).unwrap();
    let stored = store.run_examples(1).unwrap();
    assert_eq!(stored.len(), compiled.pairs.len());
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (train, test): (i64, i64) = conn
        .query_row("SELECT train_pairs, test_pairs FROM runs WHERE id = 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!((train + test) as usize, stored.len(), "the run trained and evaluated exactly its stored set");
    let counted: usize = verdict::qa::run_set::count_lines(&store.run_set(1).unwrap().unwrap())
        .iter()
        .map(|l| l.split("-> ").nth(1).unwrap().split_whitespace().next().unwrap().parse::<usize>().unwrap())
        .sum();
    assert_eq!(counted, stored.len(), "the stored counts add up to the stored set");
}
