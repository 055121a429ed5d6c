//! The memory plan against the measured peak at a real size: `verdict train` on a random-weight
//! Qwen2.5-1.5B (the published config, made by scripts/make_sized_models.py), LoRA r16 on
//! q,k,v,o, its whole-process peak RSS (`wait4`) beside the predicted peak the run printed.
//! Ignored by default: it makes a 3 GB model folder (once, in ~/.cache/verdict/sized-models) and
//! trains for minutes. `cargo test --release --test train_memory_plan -- --ignored`;
//! `VERDICT_PLAN_CHECK_SIZE` picks another size of the script's, `VERDICT_TRL_VENV` the Python
//! (torch, transformers, safetensors) that makes the model.

use std::path::{Path, PathBuf};
use std::process::Command;

use verdict::model::testing_skip::{peer_python, report_skipped};

fn verdict(db: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_verdict")).arg("--db").arg(db).args(args).output().unwrap()
}

fn ok(db: &Path, args: &[&str]) -> String {
    let out = verdict(db, args);
    assert!(out.status.success(), "verdict {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The model folder for `size`, or why it cannot be made here.
fn sized_model(size: &str) -> Result<PathBuf, String> {
    let python = peer_python(
        "VERDICT_TRL_VENV",
        "benches/peers/.venv-trl",
        "import torch, transformers, safetensors",
        "torch, transformers and safetensors",
        "benches/peers/setup_trl.sh",
    )?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make_sized_models.py");
    let out = Command::new(python).arg(script).arg(size).output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("make_sized_models.py {size} failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Runs `cmd` to its end: its exit status, standard error and peak resident size in bytes.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn run_measured(cmd: &mut Command) -> (bool, String, u64) {
    let child = cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut stderr = child.stderr.unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).unwrap();
        s
    });
    let mut status = 0;
    // SAFETY: rusage is plain data written by the kernel; pid is our own child, reaped here once.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    let err = reader.join().unwrap();
    (libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, err, usage.ru_maxrss as u64 * 1024)
}

/// `1,234 MiB` as bytes.
fn parse_mib(text: &str) -> u64 {
    let digits: String = text.chars().take_while(|c| c.is_ascii_digit() || *c == ',').filter(|c| *c != ',').collect();
    digits.parse::<u64>().unwrap() << 20
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
#[ignore = "makes a 3 GB model and trains it for minutes: cargo test --release --test train_memory_plan -- --ignored"]
fn the_plan_is_within_15_percent_of_the_peak_of_a_1_5b_lora_run() {
    let test = "the_plan_is_within_15_percent_of_the_peak_of_a_1_5b_lora_run";
    let size = std::env::var("VERDICT_PLAN_CHECK_SIZE").unwrap_or_else(|_| "Qwen2.5-1.5B".into());
    let model = match sized_model(&size) {
        Ok(m) => m,
        Err(why) => return report_skipped(test, &why),
    };
    let dir = tempfile::tempdir().unwrap();
    // The sample data's first 4 train pairs (each gets a reference pass).
    let samples = dir.path().join("samples.db");
    ok(&samples, &["init", "--samples"]);
    let all = dir.path().join("all.jsonl");
    ok(&samples, &["export", all.to_str().unwrap(), "--format", "conversational"]);
    let text = std::fs::read_to_string(&all).unwrap();
    let is_train = |l: &&str| serde_json::from_str::<serde_json::Value>(l).unwrap()["split"] == "train";
    let train: Vec<&str> = text.lines().filter(is_train).take(4).collect();
    assert_eq!(train.len(), 4, "the sample data has train pairs");
    let pairs = dir.path().join("pairs.jsonl");
    std::fs::write(&pairs, train.join("\n") + "\n").unwrap();
    let db = dir.path().join("v.db");
    ok(&db, &["--no-samples", "import", pairs.to_str().unwrap()]);

    let out = dir.path().join("run");
    let (success, stderr, peak) = run_measured(
        Command::new(env!("CARGO_BIN_EXE_verdict"))
            .arg("--db")
            .arg(&db)
            .args(["train", "--model"])
            .arg(&model)
            .args(["--lora-rank", "16", "--lora-targets", "q,k,v,o", "--max-steps", "2", "--max-length", "512"])
            .args(["--eval-every", "0", "--threads", "2", "--out"])
            .arg(&out),
    );
    assert!(success, "verdict train failed:\n{stderr}");
    let line = stderr.lines().find(|l| l.contains("predicted peak")).unwrap_or_else(|| panic!("no plan in:\n{stderr}"));
    let plan = parse_mib(line.split("predicted peak").nth(1).unwrap().trim());
    let ratio = plan as f64 / peak as f64;
    eprintln!("{size} LoRA r16: peak RSS {} MiB, plan {} MiB, plan/peak {ratio:.2}", peak >> 20, plan >> 20);
    assert!((0.85..=1.15).contains(&ratio), "plan/peak {ratio:.2} outside 0.85-1.15:\n{stderr}");
}
