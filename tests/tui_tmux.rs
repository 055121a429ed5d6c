//! End-to-end tests of the real TUI binary driven through tmux, as a person would:
//! keys in, screen out, then the database is checked.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

struct Session {
    name: String,
    _dir: tempfile::TempDir,
    db: PathBuf,
    env: String,
}

impl Session {
    /// Starts `verdict --db <tmp>/v.db` in a detached 160x48 tmux session.
    fn start(tag: &str, editor: Option<&Path>) -> Session {
        Session::start_with(tag, editor, "")
    }

    /// Like `start`, with extra `NAME=value` settings for the program's environment.
    fn start_with(tag: &str, editor: Option<&Path>, env: &str) -> Session {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("v.db");
        let name = format!("verdict-{tag}-{}", std::process::id());
        let session = Session { name, db, _dir: dir, env: env.to_string() };
        session.launch(editor);
        session
    }

    fn launch(&self, editor: Option<&Path>) {
        let home = self.db.parent().unwrap();
        let mut env = format!("HOME={} VERDICT_ANNOTATOR=e2e {} ", home.display(), self.env);
        if let Some(editor) = editor {
            env.push_str(&format!("EDITOR={} ", editor.display()));
        }
        let command = format!("env -u VISUAL {env} {} --db {}", env!("CARGO_BIN_EXE_verdict"), self.db.display());
        let status = Command::new("tmux")
            .args(["new-session", "-d", "-s", &self.name, "-x", "160", "-y", "48", &command])
            .status()
            .expect("tmux is needed for the end-to-end TUI tests (apt-get install tmux)");
        assert!(status.success());
        self.wait_for(" · v.db · ");
    }

    fn keys(&self, keys: &[&str]) {
        for key in keys {
            let status = Command::new("tmux").args(["send-keys", "-t", &self.name, key]).status().unwrap();
            assert!(status.success());
            // Give the program a frame to react, as a person's typing would.
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux").args(["capture-pane", "-p", "-t", &self.name]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn wait_for(&self, text: &str) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "never saw {text:?}; screen:\n{screen}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn pid(&self) -> u32 {
        let out = Command::new("tmux").args(["display", "-p", "-t", &self.name, "#{pane_pid}"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }

    fn query(&self, sql: &str) -> Vec<Vec<String>> {
        let conn = rusqlite::Connection::open(&self.db).unwrap();
        let mut statement = conn.prepare(sql).unwrap();
        let columns = statement.column_count();
        let rows = statement
            .query_map([], |r| {
                (0..columns)
                    .map(|i| r.get::<_, rusqlite::types::Value>(i).map(|v| format!("{v:?}")))
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .unwrap();
        rows.map(|r| r.unwrap()).collect()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["kill-session", "-t", &self.name]).status();
    }
}

#[test]
fn label_three_pairs_with_a_reason_and_a_rewrite() {
    let dir = tempfile::tempdir().unwrap();
    let editor = dir.path().join("editor.sh");
    std::fs::write(&editor, "#!/bin/sh\nprintf '\\nRewritten by the end-to-end test.' >> \"$1\"\n").unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&editor).status().unwrap();

    let s = Session::start("label", Some(&editor));
    s.keys(&["Enter"]);
    s.wait_for("Prompt pair-bank-en-01");
    s.keys(&["f", "1"]);
    s.wait_for("Prompt pair-bank-en-02");
    s.keys(&["2"]);
    s.wait_for("Prompt pair-bank-es-01");
    s.keys(&["e"]);
    s.wait_for("rewrite saved");
    s.keys(&["q"]);

    let judgments = s.query(
        "SELECT j.reasons, j.outcome FROM judgments j JOIN annotators a ON a.id = j.annotator_id
         WHERE a.name = 'e2e' ORDER BY j.id",
    );
    assert_eq!(judgments.len(), 3, "{judgments:?}");
    assert_eq!(judgments[0][0], "Text(\"[\\\"factual_error\\\"]\")");
    let rewrites = s.query("SELECT content, author, parent_id FROM responses WHERE origin = 'human'");
    assert_eq!(rewrites.len(), 1);
    assert!(rewrites[0][0].ends_with("Rewritten by the end-to-end test.\")"), "{:?}", rewrites[0]);
    assert_eq!(rewrites[0][1], "Text(\"e2e\")");
}

#[test]
fn kill_9_loses_nothing_and_restart_returns_to_the_same_pair() {
    let s = Session::start("kill", None);
    s.keys(&["Enter"]);
    s.wait_for("Prompt pair-bank-en-01");
    s.keys(&["o", "2"]);
    s.wait_for("Prompt pair-bank-en-02");
    let pid = s.pid();
    let status = Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(300));
    let _ = Command::new("tmux").args(["kill-session", "-t", &s.name]).status();

    let judgments =
        s.query("SELECT j.reasons FROM judgments j JOIN annotators a ON a.id = j.annotator_id WHERE a.name = 'e2e'");
    assert_eq!(judgments, vec![vec!["Text(\"[\\\"tone\\\"]\")".to_string()]]);
    let integrity = s.query("PRAGMA integrity_check");
    assert_eq!(integrity[0][0], "Text(\"ok\")");

    s.launch(None);
    s.wait_for("Prompt pair-bank-en-02");
    s.keys(&["q"]);
}

#[test]
fn a_large_queue_draws_before_it_is_read_and_a_restart_returns_to_the_same_pair() {
    // More prompts than the first frame reads (200): the rest of the queue loads on a thread.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("v.db");
    let pairs = dir.path().join("big.jsonl");
    let lines: String = (1..=1000)
        .map(|i| {
            format!(
                "{{\"prompt\": \"Big question {i:04}: which fee applies?\", \"chosen\": \"The monthly fee, {i}.\", \
                 \"rejected\": \"No idea, {i}.\"}}\n"
            )
        })
        .collect();
    std::fs::write(&pairs, lines).unwrap();
    let imported = Command::new(env!("CARGO_BIN_EXE_verdict")).arg("--db").arg(&db).arg("import").arg(&pairs).output();
    let imported = imported.unwrap();
    assert!(imported.status.success(), "{}", String::from_utf8_lossy(&imported.stderr));
    let s = Session { name: format!("verdict-big-{}", std::process::id()), db, _dir: dir, env: String::new() };
    s.launch(None);
    // Straight away: the search narrows the whole queue, whether or not it has arrived yet.
    s.keys(&["/", "question 0750", "Enter"]);
    s.wait_for("Queue · 1 of 1000");
    s.keys(&["Enter"]);
    s.wait_for("Big question 0750");
    s.keys(&["1"]);
    s.wait_for("You have judged every pair");
    let status = Command::new("kill").args(["-9", &s.pid().to_string()]).status().unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(300));
    let _ = Command::new("tmux").args(["kill-session", "-t", &s.name]).status();
    let judgments =
        s.query("SELECT count(*) FROM judgments j JOIN annotators a ON a.id = j.annotator_id WHERE a.name = 'e2e'");
    assert_eq!(judgments[0][0], "Integer(1)");

    s.launch(None);
    // Back at that prompt, at its place in the whole queue, with today's count.
    let screen = s.wait_for("Big question 0750");
    assert!(screen.contains("You have judged every pair"), "{screen}");
    assert!(screen.contains(" 750/1000 · today 1 "), "{screen}");
    s.keys(&["Escape"]);
    let screen = s.wait_for("Queue · 1000 of 1000");
    let row = screen.lines().find(|l| l.contains("Big question 0750")).unwrap_or_default();
    assert!(row.contains("✓") && row.contains("1/2"), "done, mine 1 of 2 in all: {row}");
    // The status filter over the whole queue leaves out the prompt just finished.
    s.keys(&["S"]);
    s.wait_for("Queue · 999 of 1000");
    s.keys(&["q"]);
}

impl Session {
    /// A second verdict process on this session's database, as another annotator.
    fn second(&self, tag: &str, annotator: &str) -> Session {
        let name = format!("verdict-{tag}-{}", std::process::id());
        let session = Session {
            name,
            db: self.db.clone(),
            _dir: tempfile::tempdir().unwrap(),
            env: format!("VERDICT_ANNOTATOR={annotator}"),
        };
        session.launch(None);
        session
    }
}

#[test]
fn two_annotators_in_two_processes_see_each_others_work() {
    let amira = Session::start("two-a", None);
    let bob = amira.second("two-b", "bob");
    bob.wait_for(" bob · v.db");
    // The first prompt has the imported judgment: 0 of mine, 1 in all, for both.
    assert!(bob.screen().contains("0/1"), "{}", bob.screen());
    amira.keys(&["Enter"]);
    amira.wait_for("Prompt pair-bank-en-01");
    amira.keys(&["1"]);
    amira.wait_for("Prompt pair-bank-en-02");
    bob.keys(&["Enter"]);
    bob.wait_for("Prompt pair-bank-en-01");
    bob.keys(&["2"]);
    bob.wait_for("Prompt pair-bank-en-02");
    // Back in the queue, a refresh shows the other's judgment on the first prompt.
    for (session, _) in [(&amira, "e2e"), (&bob, "bob")] {
        session.keys(&["Escape"]);
        session.keys(&["R"]);
        let screen = session.wait_for("refreshed");
        let first_row = screen.lines().find(|l| l.contains("Northwind Bank's fraud team")).unwrap_or_default();
        assert!(first_row.contains("1/3"), "mine 1 of 3 in all: {first_row}");
    }
    let votes = amira.query(
        "SELECT a.name, j.outcome FROM judgments j JOIN annotators a ON a.id = j.annotator_id
         WHERE a.name IN ('e2e', 'bob') ORDER BY j.id",
    );
    assert_eq!(votes.len(), 2, "{votes:?}");
    let integrity = bob.query("PRAGMA integrity_check");
    assert_eq!(integrity[0][0], "Text(\"ok\")");
}

/// The last step with a loss of run 1.
fn last_step(session: &Session) -> i64 {
    integer(&session.query("SELECT coalesce(max(step), 0) FROM run_metrics WHERE run_id = 1 AND name = 'loss'")[0][0])
}

/// The number in `query`'s rendering of an integer, `Integer(12)`.
fn integer(value: &str) -> i64 {
    value.trim_start_matches("Integer(").trim_end_matches(')').parse().unwrap_or_else(|_| panic!("{value}"))
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(120), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn start_a_run_from_the_tui_watch_it_stop_it_and_resume_it() {
    let models = tempfile::tempdir().unwrap();
    let (gguf, _) = verdict::model::testing::write_tiny_models(models.path()).unwrap();
    let session = Session::start_with("train", None, &format!("VERDICT_MODEL={}", gguf.display()));
    session.keys(&["T", "n"]);
    session.wait_for("New training run");
    // Max steps (7th field): 3000, far more than the test waits for; evaluate every 25 steps.
    session.keys(&["j", "j", "j", "j", "j", "j", "Enter", "3000", "Enter"]);
    session.keys(&["j", "j", "j", "j", "j", "j", "j", "j", "Enter", "BSpace", "BSpace", "25", "Enter"]);
    session.keys(&["S"]);
    session.wait_for("running");
    session.keys(&["Enter"]);
    session.wait_for("Reward margin");
    wait_until("ten steps", || last_step(&session) >= 10);
    let screen = session.wait_for("step ");
    assert!(screen.contains("Loss") && !screen.contains("no steps yet"), "{screen}");
    session.keys(&["s"]);
    session.wait_for("stopped");
    let stopped_at = last_step(&session);
    let checkpoints = session.query("SELECT max(step) FROM checkpoints WHERE run_id = 1");
    assert_eq!(integer(&checkpoints[0][0]), stopped_at, "a checkpoint at the stop");
    // Resume: the run continues from its checkpoint, in the same run.
    session.keys(&["r"]);
    wait_until("steps after the resume", || last_step(&session) >= stopped_at + 10);
    let status = session.query("SELECT status FROM runs WHERE id = 1");
    assert_eq!(status[0][0], "Text(\"running\")");
    // Quitting stops the run with a checkpoint rather than leaving it `running`.
    session.keys(&["q"]);
    wait_until("the run to stop", || {
        session.query("SELECT status FROM runs WHERE id = 1")[0][0] == "Text(\"stopped\")"
    });
    let runs = session.query("SELECT count(*) FROM runs");
    assert_eq!(integer(&runs[0][0]), 1, "a resume is the same run");
}

#[test]
fn a_panic_restores_the_terminal_and_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("v.db");
    let state = dir.path().join("stty.txt");
    let name = format!("verdict-panic-{}", std::process::id());
    // verdict runs in a shell so the terminal can be inspected after it dies.
    let script = format!(
        "HOME={home} XDG_DATA_HOME={home}/.local/share VERDICT_ANNOTATOR=e2e VERDICT_PANIC_ON_KEY=f12 {bin} --db {db}; \
         stty -a > {state}; echo AFTER-PANIC; sleep 60",
        home = dir.path().display(),
        bin = env!("CARGO_BIN_EXE_verdict"),
        db = db.display(),
        state = state.display()
    );
    let status = Command::new("tmux")
        .args(["new-session", "-d", "-s", &name, "-x", "120", "-y", "30", "sh", "-c", &script])
        .status()
        .unwrap();
    assert!(status.success());
    let session = Session { name, _dir: tempfile::tempdir().unwrap(), db, env: String::new() };
    session.wait_for(" · v.db · ");
    session.keys(&["F12"]);
    session.wait_for("AFTER-PANIC");
    let stty = std::fs::read_to_string(&state).unwrap();
    // Raw mode off: canonical input and echo are back.
    assert!(stty.split_whitespace().any(|w| w == "icanon"), "{stty}");
    assert!(stty.split_whitespace().any(|w| w == "echo"), "{stty}");
    let screen = session.screen();
    assert!(screen.contains("diagnostic panic"), "the panic message is printed on the normal screen: {screen}");
    let log = std::fs::read_to_string(dir.path().join(".local/share/verdict/verdict.log")).unwrap();
    assert!(log.contains("panic: ") && log.contains("diagnostic panic"), "{log}");
}

#[test]
fn single_answer_review_stores_a_good_and_a_bad_rating_with_a_reason() {
    let s = Session::start("thumbs", None);
    s.keys(&["o"]);
    s.wait_for("Answer 1/2");
    s.keys(&["f", "+"]);
    s.wait_for("Answer 2/2");
    s.keys(&["-"]);
    s.wait_for("rated bad");
    s.keys(&["q"]);

    let ratings = s.query(
        "SELECT t.rating, t.reasons FROM thumbs t JOIN annotators a ON a.id = t.annotator_id
         WHERE a.name = 'e2e' ORDER BY t.id",
    );
    assert_eq!(
        ratings,
        [
            vec!["Text(\"good\")".to_string(), "Text(\"[\\\"factual_error\\\"]\")".to_string()],
            vec!["Text(\"bad\")".to_string(), "Text(\"[]\")".to_string()],
        ]
    );
}
