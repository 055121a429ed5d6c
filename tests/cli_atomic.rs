//! All-or-nothing writes, end to end on the real binary: one `verdict import` (bundles and
//! JSONL files together) and one `verdict gold import` are each one transaction. A bad
//! record in the last file leaves the database as it was, and so does `kill -9` part-way:
//! reopened afterwards, the database holds the state before the command or after it,
//! never a mix of the two.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn command(db: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_verdict"));
    command.env_remove("VERDICT_DB").env("VERDICT_ANNOTATOR", "lead").arg("--db").arg(db).args(args);
    command
}

fn run(db: &Path, args: &[&str]) -> Output {
    command(db, args).output().unwrap()
}

fn ok(db: &Path, args: &[&str]) -> String {
    let out = run(db, args);
    assert!(out.status.success(), "verdict {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn fails(db: &Path, args: &[&str]) -> String {
    let out = run(db, args);
    assert!(!out.status.success(), "verdict {args:?} should fail: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stderr).unwrap()
}

/// Row counts of every table an import or a gold import writes.
fn counts(db: &Path) -> Vec<i64> {
    // Opened by the store, as the next verdict command would: a killed writer's WAL is
    // recovered (or discarded) here.
    drop(verdict::store::Store::open(db, verdict::store::OpenMode::MustExist).unwrap());
    let conn = rusqlite::Connection::open(db).unwrap();
    ["prompts", "responses", "judgments", "annotators", "adjudications", "gold", "prompt_uids", "response_uids"]
        .iter()
        .map(|t| conn.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0)).unwrap())
        .collect()
}

/// `n` distinct preference pairs, one JSON line each.
fn pairs(prefix: &str, n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "{{\"prompt\":\"{prefix} question {i}: how do I close account {i}?\",\"chosen\":\"Go to settings, then close account {i}.\",\"rejected\":\"No idea about {i}.\",\"language\":\"en\"}}\n"
            )
        })
        .collect()
}

/// A database with some pairs already in it, and a bundle exported from another one.
fn setup(dir: &Path) -> (PathBuf, PathBuf) {
    let source = dir.join("amira.db");
    let data = dir.join("amira.jsonl");
    std::fs::write(&data, pairs("amira", 30)).unwrap();
    ok(&source, &["--no-samples", "import", data.to_str().unwrap()]);
    let bundle = dir.join("amira.bundle.jsonl");
    ok(&source, &["export", "--bundle", bundle.to_str().unwrap()]);
    let db = dir.join("lead.db");
    let mine = dir.join("lead.jsonl");
    std::fs::write(&mine, pairs("lead", 5)).unwrap();
    ok(&db, &["--no-samples", "import", mine.to_str().unwrap()]);
    (db, bundle)
}

#[test]
fn a_bad_record_in_the_last_file_or_bundle_leaves_the_database_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let (db, bundle) = setup(dir.path());
    let before = counts(&db);

    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, format!("{}{{\"prompt\":\"q\",\"chosen\":\"a\"}}\n", pairs("more", 3))).unwrap();
    let err = fails(&db, &["import", bundle.to_str().unwrap(), bad.to_str().unwrap()]);
    assert!(err.contains("bad.jsonl:4") && err.contains("nothing was imported"), "{err}");
    assert_eq!(counts(&db), before, "the bundle before the bad file was not merged either");

    // A bad row at the end of the second bundle.
    let text = std::fs::read_to_string(&bundle).unwrap();
    let bad_bundle = dir.path().join("bad.bundle.jsonl");
    std::fs::write(&bad_bundle, format!("{text}{{\"table\":\"prompts\",\"row\":{{\"messages\":\"[]\"}}}}\n")).unwrap();
    let other = dir.path().join("other.jsonl");
    std::fs::write(&other, pairs("other", 3)).unwrap();
    let err = fails(&db, &["import", other.to_str().unwrap(), bundle.to_str().unwrap(), bad_bundle.to_str().unwrap()]);
    assert!(err.contains("bad.bundle.jsonl:") && err.contains("nothing was imported"), "{err}");
    assert_eq!(counts(&db), before);

    // A gold file whose last record is not a pair.
    let gold = dir.path().join("gold.jsonl");
    std::fs::write(&gold, format!("{}{{\"prompt\":\"only a prompt\"}}\n", pairs("gold", 3))).unwrap();
    let err = fails(&db, &["gold", "import", gold.to_str().unwrap()]);
    assert!(err.contains("nothing imported"), "{err}");
    assert_eq!(counts(&db), before);

    // The same files without the bad records load whole.
    let out = ok(&db, &["import", other.to_str().unwrap(), bundle.to_str().unwrap()]);
    assert!(out.contains("(bundle): 30 prompts") && out.contains("added 3 prompts"), "{out}");
    assert_eq!(counts(&db)[0], before[0] + 33);
}

/// Runs `args` to the end on a copy of `db` (the state after), then again on fresh copies
/// killed at a spread of moments during the run; each killed copy, reopened, must hold
/// the state before or the state after.
fn killed_part_way_is_before_or_after(dir: &Path, db: &Path, args: &[&str]) {
    let before = counts(db);
    let copy = |name: &str| {
        let path = dir.join(name);
        std::fs::copy(db, &path).unwrap();
        path
    };
    let full = copy("full.db");
    let start = Instant::now();
    ok(&full, args);
    let took = start.elapsed();
    let after = counts(&full);
    assert_ne!(before, after, "the command writes something");
    let mut seen = (0, 0);
    for k in 1..=9 {
        let target = copy(&format!("killed-{k}.db"));
        let mut child = command(&target, args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(took.mul_f64(k as f64 / 10.0));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let got = counts(&target);
        assert!(
            got == before || got == after,
            "kill at {k}/10 of {took:?}: {got:?} is neither {before:?} nor {after:?}"
        );
        if got == before {
            seen.0 += 1
        } else {
            seen.1 += 1
        }
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", target.display()));
        }
    }
    eprintln!("{args:?}: full run {took:?}; killed runs left {} unchanged, {} complete", seen.0, seen.1);
}

#[test]
fn kill_9_during_an_import_of_a_bundle_and_a_big_file_leaves_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (db, bundle) = setup(dir.path());
    let big = dir.path().join("big.jsonl");
    std::fs::write(&big, pairs("big", 40_000)).unwrap();
    killed_part_way_is_before_or_after(dir.path(), &db, &["import", bundle.to_str().unwrap(), big.to_str().unwrap()]);
}

#[test]
fn kill_9_during_a_gold_import_leaves_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = setup(dir.path());
    let gold = dir.path().join("gold.jsonl");
    std::fs::write(&gold, pairs("gold", 5_000)).unwrap();
    killed_part_way_is_before_or_after(dir.path(), &db, &["gold", "import", gold.to_str().unwrap()]);
    // Every gold item is marked: none waits in a queue as an ordinary pair.
    let full = dir.path().join("full.db");
    let conn = rusqlite::Connection::open(&full).unwrap();
    let unmarked: i64 = conn
        .query_row(
            "SELECT count(*) FROM prompts p WHERE p.messages LIKE '%gold question%' AND NOT EXISTS
               (SELECT 1 FROM gold g JOIN responses r ON r.id = g.response_a WHERE r.prompt_id = p.id)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(unmarked, 0);
}
