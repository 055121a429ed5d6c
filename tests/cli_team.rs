//! A team without a server: three annotators label in their own databases, the lead
//! merges them, reads the agreement, adjudicates the disputes, and exports.

use std::path::{Path, PathBuf};

use verdict::store::{NewJudgment, OpenMode, Store, Verdict};

mod team_support;
use team_support::{ok, verdict};

/// One annotator's database: the samples, with this person's verdicts on the first
/// `n` sample pairs (`flip` of them the other way round from the import).
fn annotator_db(dir: &Path, name: &str, n: usize, flip: &[usize]) -> PathBuf {
    let db = dir.join(format!("{name}.db"));
    ok(&db, name, &["init", "--samples"]);
    let mut store = Store::open(&db, OpenMode::MustExist).unwrap();
    let me = store.annotator_id(name, "annotator").unwrap();
    let pairs = verdict::qa::resolved_pairs(&store).unwrap();
    for (i, pair) in pairs.iter().take(n).enumerate() {
        let verdict = if flip.contains(&i) { Verdict::Right } else { Verdict::Left };
        store
            .record_judgment(&NewJudgment {
                prompt_id: pair.prompt_id,
                left: pair.chosen,
                right: pair.rejected,
                annotator_id: me,
                verdict,
                reasons: if i % 3 == 0 { vec!["factual_error".into()] } else { vec![] },
                note: Some(format!("{name} on pair {i}")),
                seconds: Some(10.0 + i as f64),
                guideline_id: None,
            })
            .unwrap();
    }
    db
}

fn count(db: &Path, sql: &str) -> i64 {
    rusqlite::Connection::open(db).unwrap().query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn three_annotators_merged_adjudicated_exported() {
    let dir = tempfile::tempdir().unwrap();
    let amira = annotator_db(dir.path(), "amira", 10, &[]);
    let jonas = annotator_db(dir.path(), "jonas", 10, &[2, 5]);
    let mei = annotator_db(dir.path(), "mei", 10, &[2]);
    let team = dir.path().join("team.db");
    ok(&team, "lead", &["init", "--samples"]);
    for db in [&amira, &jonas, &mei] {
        let out = ok(&team, "lead", &["merge", db.to_str().unwrap()]);
        assert!(out.contains("10 judgments"), "{out}");
    }
    // Merging again adds nothing.
    let out = ok(&team, "lead", &["merge", jonas.to_str().unwrap()]);
    assert!(out.contains("0 prompts, 0 responses, 0 judgments"), "{out}");
    assert_eq!(count(&team, "SELECT count(*) FROM judgments"), 42 + 30);

    // Conflicting verdicts stay separate votes: pair 2 has amira vs jonas and mei.
    let disputes = ok(&team, "lead", &["disputes", "--json"]);
    let disputes: serde_json::Value = serde_json::from_str(&disputes).unwrap();
    let disputes = disputes.as_array().unwrap();
    assert_eq!(disputes.len(), 2, "pairs 2 and 5 are disputed");
    let votes = disputes[0]["votes"].as_array().unwrap();
    assert_eq!(votes.len(), 3);
    assert!(votes.iter().any(|v| v["note"] == "jonas on pair 2"), "{votes:?}");

    let agreement = ok(&team, "lead", &["agreement", "--json"]);
    let agreement: serde_json::Value = serde_json::from_str(&agreement).unwrap();
    assert_eq!(agreement["overall"]["overlap_units"], 10);
    assert_eq!(agreement["overall"]["raters"], 3);
    let alpha = agreement["overall"]["alpha_nominal"].as_f64().unwrap();
    assert!(alpha > 0.0 && alpha < 1.0, "{alpha}");
    let text = ok(&team, "lead", &["agreement"]);
    assert!(text.contains("Krippendorff") && text.contains("amira × jonas"), "{text}");

    let report = ok(&team, "lead", &["report", "--json"]);
    // Before adjudication jonas is outvoted on pair 5.
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let jonas_row = report.as_array().unwrap().iter().find(|r| r["name"] == "jonas").unwrap();
    assert_eq!(jonas_row["judgments"], 10);
    assert!(jonas_row["agreement_with_resolved"].as_f64().unwrap() < 1.0);

    // Only an adjudicator may decide; then the decision wins in the export.
    let (a, b) = (disputes[1]["response_a"].as_i64().unwrap(), disputes[1]["response_b"].as_i64().unwrap());
    let refused = verdict(&team, "lead", &["adjudicate", &a.to_string(), &b.to_string(), "--winner", &b.to_string()]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not an adjudicator"));
    ok(&team, "lead", &["annotator", "add", "lead", "--role", "adjudicator"]);
    ok(
        &team,
        "lead",
        &["adjudicate", &a.to_string(), &b.to_string(), "--winner", &b.to_string(), "--note", "B is right"],
    );
    let pairs = verdict::qa::resolved_pairs(&Store::open(&team, OpenMode::MustExist).unwrap()).unwrap();
    let decided = pairs.iter().find(|p| p.chosen.min(p.rejected) == a && p.chosen.max(p.rejected) == b).unwrap();
    assert_eq!(decided.chosen, b);
    assert_eq!(decided.via, verdict::qa::Resolution::Adjudicated);

    // Calibration: each annotator sees the disputes they voted in; the lead voted in none.
    let mine = ok(&team, "jonas", &["disputes", "--mine"]);
    assert!(mine.contains("adjudicated") && mine.contains("jonas"), "{mine}");
    assert!(ok(&team, "lead", &["disputes", "--mine"]).contains("no disputed pairs"));
    // An adjudicator can make any pair gold; annotators' accuracy on it is reported.
    let (ga, gb) = (decided.chosen.min(decided.rejected), decided.chosen.max(decided.rejected));
    let marked =
        ok(&team, "lead", &["gold", "mark", &ga.to_string(), &gb.to_string(), "--winner", &decided.chosen.to_string()]);
    assert!(marked.contains("now gold"), "{marked}");
    let report = ok(&team, "lead", &["report"]);
    assert!(report.contains("gold accuracy over time"), "{report}");

    let export = dir.path().join("team.jsonl");
    ok(&team, "lead", &["export", export.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&export).unwrap().lines().count(), pairs.len());
}

#[test]
fn bundles_travel_by_mail_and_merge_like_databases() {
    let dir = tempfile::tempdir().unwrap();
    let amira = annotator_db(dir.path(), "amira", 5, &[1]);
    let bundle = dir.path().join("amira.bundle.jsonl");
    ok(&amira, "amira", &["export", "--bundle", bundle.to_str().unwrap()]);
    let fresh = dir.path().join("fresh.db");
    let out = ok(&fresh, "lead", &["--no-samples", "import", bundle.to_str().unwrap()]);
    assert!(out.contains("(bundle)"), "{out}");
    assert_eq!(count(&fresh, "SELECT count(*) FROM judgments"), 42 + 5);
    let again = ok(&fresh, "lead", &["import", bundle.to_str().unwrap()]);
    assert!(again.contains("0 prompts, 0 responses, 0 judgments"), "{again}");
    let a = ok(&amira, "amira", &["export", "-"]);
    let b = ok(&fresh, "lead", &["export", "-"]);
    assert_eq!(a, b, "the bundle carries everything the export needs");
}

#[test]
fn another_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let team = dir.path().join("team.db");
    ok(&team, "lead", &["init"]);
    let old = dir.path().join("old.db");
    ok(&old, "lead", &["init"]);
    rusqlite::Connection::open(&old).unwrap().pragma_update(None, "user_version", 1).unwrap();
    let out = verdict(&team, "lead", &["merge", old.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("schema version 1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn assignments_put_a_share_of_prompts_in_two_queues() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("v.db");
    ok(&db, "lead", &["init", "--samples"]);
    for (name, langs) in [("amira", "ar,en"), ("jonas", "de,en,fr"), ("mei", "zh,ja,en,es")] {
        ok(&db, "lead", &["annotator", "add", name, "--languages", langs]);
    }
    let out = ok(&db, "lead", &["assign", "--overlap", "0.5", "--per-annotator", "30"]);
    assert!(out.contains("assignments written"), "{out}");
    let doubled =
        count(&db, "SELECT count(*) FROM (SELECT prompt_id FROM assignments GROUP BY prompt_id HAVING count(*) > 1)");
    assert!(doubled > 0, "some prompts go to two people");
    let wrong_language = count(
        &db,
        "SELECT count(*) FROM assignments s JOIN annotators a ON a.id = s.annotator_id JOIN prompts p ON p.id = s.prompt_id
         WHERE a.name = 'amira' AND p.language NOT IN ('ar', 'en')",
    );
    assert_eq!(wrong_language, 0);
    let list = ok(&db, "lead", &["annotator", "list"]);
    assert!(list.contains("jonas") && list.contains("de,en,fr"), "{list}");
}

#[test]
fn gold_items_are_scored_per_annotator() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("v.db");
    ok(&db, "lead", &["--no-samples", "init"]);
    let gold = dir.path().join("gold.jsonl");
    std::fs::write(
        &gold,
        "{\"prompt\":\"Can I share my PIN with the bank's fraud team?\",\"chosen\":\"No. The bank never asks for your PIN.\",\"rejected\":\"Yes, if they call you.\"}\n",
    )
    .unwrap();
    let out = ok(&db, "lead", &["gold", "import", gold.to_str().unwrap()]);
    assert!(out.contains("1 gold items added"), "{out}");
    assert_eq!(count(&db, "SELECT count(*) FROM judgments"), 0, "gold items carry no visible verdict");
    let mut store = Store::open(&db, OpenMode::MustExist).unwrap();
    let me = store.annotator_id("amira", "annotator").unwrap();
    let (chosen, rejected): (i64, i64) = (1, 2);
    store
        .record_judgment(&NewJudgment {
            prompt_id: 1,
            left: rejected,
            right: chosen,
            annotator_id: me,
            verdict: Verdict::Right,
            reasons: vec![],
            note: None,
            seconds: Some(5.0),
            guideline_id: None,
        })
        .unwrap();
    let report = ok(&db, "lead", &["report", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let amira = report.as_array().unwrap().iter().find(|r| r["name"] == "amira").unwrap();
    assert_eq!(amira["gold_items"], 1);
    assert_eq!(amira["gold_accuracy"], 1.0);
    assert_eq!(amira["left_rate"], 0.0);
}
