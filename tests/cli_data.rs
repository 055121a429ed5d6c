//! End-to-end tests of the `verdict` binary's data commands on temporary databases.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        Sandbox { dir: tempfile::tempdir().unwrap() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    /// Runs verdict with `--db <sandbox>/<db>` in the sandbox folder.
    fn run(&self, db: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_verdict"))
            .current_dir(self.dir.path())
            .env_remove("VERDICT_DB")
            .env("VERDICT_ANNOTATOR", "tester")
            .arg("--db")
            .arg(self.path(db))
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, db: &str, args: &[&str]) -> String {
        let out = self.run(db, args);
        assert!(out.status.success(), "verdict {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn stats(&self, db: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(db, &["stats", "--json"])).unwrap()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

const PAIRS: &str = concat!(
    r#"{"prompt":"How do I block my card?","chosen":"Open the app and tap Block card, or call us.","rejected":"You cannot.","language":"en","domain":"banking","split":"train"}"#,
    "\n",
    r#"{"prompt":"我的卡被吞了😩","chosen":"请联系我们冻结银行卡。","rejected":"没办法。","language":"zh","domain":"banking"}"#,
    "\n",
    r#"{"prompt":"カードをなくしました。","chosen":"すぐにカードを停止いたします。","rejected":"知りません。","language":"ja","split":"test"}"#,
    "\n",
    r#"{"prompt":"فقدت بطاقتي","chosen":"يرجى الاتصال بنا لإيقاف البطاقة فوراً.","rejected":"لا أعرف.","language":"ar","reasons":["incomplete"]}"#,
    "\n",
);

#[test]
fn init_is_idempotent_and_seeds_samples_once() {
    let sb = Sandbox::new();
    sb.ok("v.db", &["init", "--samples"]);
    let first = sb.stats("v.db");
    assert!(first["total"]["prompts"].as_u64().unwrap() >= 100);
    assert!(first["total"]["pairs"].as_u64().unwrap() >= 40);
    let again = sb.ok("v.db", &["init", "--samples"]);
    assert!(again.contains("0 prompts, 0 responses, 0 judgments added"), "{again}");
    assert_eq!(sb.stats("v.db"), first);
}

#[test]
fn first_run_seeds_a_new_database_unless_told_not_to() {
    let sb = Sandbox::new();
    let out = sb.ok("demo.db", &[]);
    assert!(out.contains("seeded it with the sample data"), "{out}");
    assert!(sb.stats("demo.db")["total"]["pairs"].as_u64().unwrap() >= 40);
    sb.ok("empty.db", &["--no-samples"]);
    assert_eq!(sb.stats("empty.db")["total"]["prompts"], 0);
}

#[test]
fn reimporting_adds_nothing() {
    let sb = Sandbox::new();
    let file = sb.write("pairs.jsonl", PAIRS);
    let out = sb.ok("v.db", &["import", file.to_str().unwrap()]);
    assert!(out.contains("added 4 prompts, 8 responses, 4 judgments"), "{out}");
    let out = sb.ok("v.db", &["import", file.to_str().unwrap()]);
    assert!(out.contains("added 0 prompts, 0 responses, 0 judgments; 4 records were already present"), "{out}");
    let stats = sb.stats("v.db");
    assert_eq!(stats["total"]["pairs"], 4);
    let languages: Vec<&str> =
        stats["by_language"].as_array().unwrap().iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(languages, ["ar", "en", "ja", "zh"]);
}

fn round_trip(format: &str, source_db: &str, sb: &Sandbox) {
    let first = sb.path(&format!("first-{format}.jsonl"));
    let second = sb.path(&format!("second-{format}.jsonl"));
    sb.ok(source_db, &["export", first.to_str().unwrap(), "--format", format]);
    sb.ok(&format!("fresh-{format}.db"), &["--no-samples", "import", first.to_str().unwrap()]);
    sb.ok(&format!("fresh-{format}.db"), &["export", second.to_str().unwrap(), "--format", format]);
    let (a, b) = (std::fs::read(&first).unwrap(), std::fs::read(&second).unwrap());
    assert!(a.len() > 1000, "{format} export is suspiciously small");
    assert!(a == b, "{format} round trip differs");
}

#[test]
fn export_import_export_is_byte_identical() {
    let sb = Sandbox::new();
    sb.ok("v.db", &["init", "--samples"]);
    sb.ok("v.db", &["import", sb.write("more.jsonl", PAIRS).to_str().unwrap()]);
    round_trip("conversational", "v.db", &sb);
    round_trip("standard", "v.db", &sb);
}

#[test]
fn export_filters_by_split_and_keeps_metadata() {
    let sb = Sandbox::new();
    sb.ok("v.db", &["import", sb.write("pairs.jsonl", PAIRS).to_str().unwrap()]);
    let out = sb.run("v.db", &["export", "-", "--split", "test", "--format", "standard"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.iter().any(|l| l["language"] == "ja"));
    assert!(lines.iter().all(|l| l["split"] == "test"));
    let arabic = sb.ok("v.db", &["export", "-", "--format", "conversational"]);
    let arabic: serde_json::Value =
        serde_json::from_str(arabic.lines().find(|l| l.contains("\"ar\"")).unwrap()).unwrap();
    assert_eq!(arabic["chosen"][0]["role"], "assistant");
    assert_eq!(arabic["reasons"][0], "incomplete");
}

#[test]
fn unpaired_export_writes_each_answer_of_a_win_with_its_label_in_trls_layout() {
    let sb = Sandbox::new();
    sb.ok("v.db", &["--no-samples", "import", sb.write("pairs.jsonl", PAIRS).to_str().unwrap()]);
    let out = sb.run("v.db", &["export", "-", "--format", "unpaired"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out.stdout.clone()).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let pairs = PAIRS.lines().count();
    assert_eq!(lines.len(), 2 * pairs, "one desirable and one undesirable answer per win");
    assert!(stderr(&out).contains(&format!("wrote {} answers", 2 * pairs)), "{}", stderr(&out));
    for source in PAIRS.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()) {
        let of = |answer: &serde_json::Value| {
            lines.iter().find(|l| l["completion"] == *answer).unwrap_or_else(|| panic!("{answer} missing")).clone()
        };
        let (chosen, rejected) = (of(&source["chosen"]), of(&source["rejected"]));
        assert_eq!((chosen["label"].as_bool(), rejected["label"].as_bool()), (Some(true), Some(false)));
        assert_eq!(chosen["prompt"], source["prompt"]);
        assert_eq!(chosen["language"], source["language"]);
    }
    let conversational = sb.ok("v.db", &["export", "-", "--format", "unpaired-conversational"]);
    let first: serde_json::Value = serde_json::from_str(conversational.lines().next().unwrap()).unwrap();
    assert_eq!(first["prompt"][0]["role"], "user");
    assert_eq!(first["completion"][0]["role"], "assistant");
}

/// Asserts the import fails with one error line naming `needle`, and writes nothing.
fn assert_refused(sb: &Sandbox, file: &Path, needle: &str) {
    sb.ok("v.db", &["--no-samples", "init"]);
    let before = sb.stats("v.db");
    let out = sb.run("v.db", &["import", file.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{} was accepted", file.display());
    assert!(err.contains(needle), "expected {needle:?} in:\n{err}");
    assert!(err.lines().count() <= 3, "too chatty:\n{err}");
    assert_eq!(sb.stats("v.db"), before, "{} changed the database", file.display());
}

#[test]
fn bad_lines_name_file_line_and_field_and_write_nothing() {
    let sb = Sandbox::new();
    let good = r#"{"prompt":"q","chosen":"a","rejected":"b","language":"en"}"#;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("notjson.jsonl", format!("{good}\nthis is not json\n").into_bytes(), "notjson.jsonl:2: not valid JSON"),
        (
            "missing.jsonl",
            format!("{good}\n{{\"prompt\":\"q\",\"chosen\":\"a\"}}\n").into_bytes(),
            "missing.jsonl:2: missing field `rejected`",
        ),
        (
            "type.jsonl",
            format!("{good}\n{{\"prompt\":\"q\",\"chosen\":1,\"rejected\":\"b\"}}\n").into_bytes(),
            "type.jsonl:2: field `chosen`: expected a string",
        ),
        (
            "empty.jsonl",
            format!("{{\"prompt\":\"  \",\"chosen\":\"a\",\"rejected\":\"b\"}}\n{good}\n").into_bytes(),
            "empty.jsonl:1: field `prompt` is empty",
        ),
        (
            "latin1.jsonl",
            [good.as_bytes(), b"\n{\"prompt\":\"caf\xe9\",\"chosen\":\"a\",\"rejected\":\"b\"}\n"].concat(),
            "latin1.jsonl:2: not valid UTF-8",
        ),
        ("truncated.jsonl", format!("{good}\n{}", &good[..30]).into_bytes(), "truncated.jsonl:2: not valid JSON"),
    ];
    for (name, content, needle) in cases {
        let file = sb.write(name, content);
        assert_refused(&sb, &file, needle);
    }
}

#[test]
fn missing_file_directory_and_huge_line_are_one_line_errors() {
    let sb = Sandbox::new();
    assert_refused(&sb, &sb.path("nowhere.jsonl"), "nowhere.jsonl: no such file");
    std::fs::create_dir(sb.path("folder")).unwrap();
    assert_refused(&sb, &sb.path("folder"), "is a directory");
    let mut huge = vec![b'{'; 100 * 1024 * 1024];
    huge.push(b'\n');
    assert_refused(&sb, &sb.write("huge.jsonl", huge), "huge.jsonl:1: line is longer than the 16 MiB limit");
}

#[test]
fn a_failed_import_does_not_create_the_database() {
    let sb = Sandbox::new();
    let out = sb.run("new.db", &["import", sb.write("bad.jsonl", "nope\n").to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(!sb.path("new.db").exists());
}

#[test]
fn skip_invalid_loads_the_good_lines_and_reports_the_rest() {
    let sb = Sandbox::new();
    let file = sb.write("mixed.jsonl", format!("{PAIRS}not json\n{{\"prompt\":\"q\"}}\n"));
    let out = sb.run("v.db", &["--no-samples", "import", "--skip-invalid", file.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "partial import exits 1");
    assert!(err.contains("skipped") && err.contains("mixed.jsonl:5: not valid JSON"), "{err}");
    assert!(err.contains("mixed.jsonl:6:"), "{err}");
    assert_eq!(sb.stats("v.db")["total"]["pairs"], 4);
}

#[test]
fn a_file_that_is_not_a_database_is_refused_untouched() {
    let sb = Sandbox::new();
    let notes = sb.write("notes.txt", "meeting notes\n".repeat(500));
    let out = sb.run("notes.txt", &["stats"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("is not a verdict database") && err.lines().count() == 1, "{err}");
    assert_eq!(std::fs::read_to_string(notes).unwrap(), "meeting notes\n".repeat(500));
    let out = sb.run("missing.db", &["stats"]);
    assert!(stderr(&out).contains("run `verdict init` first"), "{}", stderr(&out));
    assert!(!sb.path("missing.db").exists());
}

#[test]
fn a_newer_schema_is_refused_with_a_clear_message() {
    let sb = Sandbox::new();
    sb.ok("v.db", &["--no-samples", "init"]);
    let conn = rusqlite::Connection::open(sb.path("v.db")).unwrap();
    conn.pragma_update(None, "user_version", 999).unwrap();
    drop(conn);
    let out = sb.run("v.db", &["stats"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("written by a newer verdict"), "{}", stderr(&out));
}

#[test]
fn conversational_and_prompt_list_files_are_detected() {
    let sb = Sandbox::new();
    let conv = sb.write(
        "conv.jsonl",
        r#"{"prompt":[{"role":"system","content":"Sie siezen."},{"role":"user","content":"Wie hoch ist die Überziehungsgebühr?"}],"chosen":[{"role":"assistant","content":"Die Gebühr finden Sie im Preisverzeichnis."}],"rejected":[{"role":"assistant","content":"Keine Ahnung, schau halt nach."}]}"#.to_owned() + "\n",
    );
    let prompts = sb.write("prompts.jsonl", "{\"prompt\":\"¿Cómo puedo cambiar el PIN de mi tarjeta de débito?\"}\n{\"prompt\":\"Comment puis-je changer le code secret de ma carte bancaire ?\",\"tags\":[\"pin\"]}\n");
    let out = sb.ok("v.db", &["--no-samples", "import", conv.to_str().unwrap(), prompts.to_str().unwrap()]);
    assert!(out.contains("(conversational)") && out.contains("(prompts)"), "{out}");
    let stats = sb.stats("v.db");
    assert_eq!(stats["total"]["prompts"], 3);
    let languages: Vec<&str> =
        stats["by_language"].as_array().unwrap().iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(languages, ["de", "es", "fr"]);
    let standard = sb.run("v.db", &["export", "-", "--format", "standard"]);
    assert!(stderr(&standard).contains("left out 1 pairs"), "{}", stderr(&standard));
}

/// TRL's unpaired layout (what `--format unpaired` writes) imports as single-answer ratings by
/// the import pseudo-annotator, so export -> import -> export is byte-identical in both unpaired
/// layouts and a second import adds nothing; a bad line is named by its number and nothing is
/// written.
#[test]
fn unpaired_export_import_export_is_byte_identical_and_bad_lines_are_named() {
    let sb = Sandbox::new();
    sb.ok("v.db", &["init", "--samples"]);
    round_trip("unpaired", "v.db", &sb);
    round_trip("unpaired-conversational", "v.db", &sb);
    let first = sb.path("first-unpaired.jsonl");
    let lines = std::fs::read_to_string(&first).unwrap().lines().count();
    let stats = sb.stats("fresh-unpaired.db");
    assert_eq!(stats["thumbs"]["ratings"], lines, "one rating per line: {}", stats["thumbs"]);
    let again = sb.ok("fresh-unpaired.db", &["import", first.to_str().unwrap()]);
    assert!(again.contains("added 0 prompts, 0 responses, 0 judgments, 0 ratings"), "{again}");
    let bad = sb.write(
        "bad-unpaired.jsonl",
        concat!(
            "{\"prompt\":\"Block my card?\",\"completion\":\"Yes, in the app.\",\"label\":true}\n",
            "{\"prompt\":\"Block my card?\",\"completion\":\"No idea.\",\"label\":\"no\"}\n",
        ),
    );
    assert_refused(&sb, &bad, "bad-unpaired.jsonl:2: field `label`: expected true or false, found a string");
}
