//! Single-answer review through the binary, as a team would use it: two annotators rate
//! answers good or bad in their own databases, the lead merges them (twice: nothing more is
//! added), reads the agreement, adjudicates the disputed answer, and exports the ratings as
//! KTO's unpaired rows.

use std::path::{Path, PathBuf};

mod team_support;
use team_support::{ok, verdict};

/// One annotator's database: the samples, with this person's ratings of answers 1 to 4.
fn rated(dir: &Path, name: &str, ratings: [&str; 4]) -> PathBuf {
    let db = dir.join(format!("{name}.db"));
    ok(&db, name, &["init", "--samples"]);
    for (answer, rating) in (1..=4).zip(ratings) {
        let answer = answer.to_string();
        let mut args = vec!["thumbs", "rate", answer.as_str(), rating];
        if rating == "bad" {
            args.extend(["--reason", "factual_error"]);
        }
        ok(&db, name, &args);
    }
    db
}

#[test]
fn two_annotators_rate_answers_the_lead_merges_adjudicates_and_exports_them() {
    let dir = tempfile::tempdir().unwrap();
    // 3 of 4 answers agree: Cohen's kappa (0.75 - 0.5) / (1 - 0.5) = 0.5.
    let amira = rated(dir.path(), "amira", ["good", "good", "bad", "bad"]);
    let jonas = rated(dir.path(), "jonas", ["good", "good", "bad", "good"]);
    let lead = dir.path().join("lead.db");
    ok(&lead, "lead", &["init", "--samples"]);
    for db in [&amira, &jonas] {
        let merged = ok(&lead, "lead", &["merge", db.to_str().unwrap()]);
        assert!(merged.contains(" 4 single-answer ratings added"), "{merged}");
        let again = ok(&lead, "lead", &["merge", db.to_str().unwrap()]);
        assert!(again.contains(" 0 single-answer ratings added"), "merging twice adds nothing: {again}");
    }

    let report = ok(&lead, "lead", &["thumbs", "report"]);
    assert!(report.contains("8 single-answer ratings (5 good, 3 bad) of 4 answers"), "{report}");
    assert!(report.contains("Cohen's kappa amira × jonas: 0.500 on 4 shared answers"), "{report}");
    assert!(report.contains("answer 4 (prompt 2): amira bad, jonas good — open"), "{report}");
    let stats = ok(&lead, "lead", &["stats"]);
    assert!(stats.contains("8 single-answer ratings"), "{stats}");
    let json: serde_json::Value = serde_json::from_str(&ok(&lead, "lead", &["stats", "--json"])).unwrap();
    let t = &json["thumbs"];
    assert_eq!((&t["ratings"], &t["good"], &t["bad"], &t["answers"]), (&8.into(), &5.into(), &3.into(), &4.into()));
    assert_eq!(t["by_tag"][0]["key"], "factual_error", "{t}");
    assert_eq!(json["total"]["prompts"], 105, "the existing keys stay");

    // Only adjudicators settle a disputed answer; the message says how to become one.
    let refused = verdict(&lead, "lead", &["thumbs", "adjudicate", "4", "bad"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--role adjudicator"));
    ok(&lead, "lead", &["annotator", "add", "lead", "--role", "adjudicator"]);
    ok(&lead, "lead", &["thumbs", "adjudicate", "4", "bad", "--note", "the fee is wrong"]);
    let report = ok(&lead, "lead", &["thumbs", "report"]);
    assert!(report.contains("— adjudicated bad"), "{report}");

    // Answer 3 won its imported pair (a desirable row) and both annotators rated it bad on its
    // own: the unpaired export has it both ways, the thumbs row from the ratings.
    let conn = rusqlite::Connection::open(&lead).unwrap();
    let third: String = conn.query_row("SELECT content FROM responses WHERE id = 3", [], |r| r.get(0)).unwrap();
    let export = ok(&lead, "lead", &["export", "-", "--format", "unpaired"]);
    let labels: Vec<bool> = export
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["completion"] == third.as_str())
        .map(|v| v["label"].as_bool().unwrap())
        .collect();
    assert!(labels.contains(&false), "answer 3 rated bad is an undesirable row: {labels:?}");

    // A rating that is neither good nor bad, or a tag the guidelines lack, is refused with what to do.
    let bad = verdict(&lead, "lead", &["thumbs", "rate", "1", "meh"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("use `good` or `bad`"));
    let bad = verdict(&lead, "lead", &["thumbs", "rate", "1", "good", "--reason", "vibes"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not in the guidelines"));
}
