//! `verdict stats`.

use std::process::ExitCode;

use super::Cli;
use crate::store::{OpenMode, Stats, StatsRow, Store};
use crate::table;

pub fn stats(cli: &Cli, json: bool) -> anyhow::Result<ExitCode> {
    let store = Store::open(&cli.db, OpenMode::MustExist)?;
    let stats = crate::qa::stats(&store)?;
    if json {
        let mut value = serde_json::to_value(&stats)?;
        value["thumbs"] = thumbs_json(&store)?;
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print_table(&stats);
        let thumbs = crate::qa::thumbs::summary(&store)?;
        if !thumbs.is_empty() {
            print!("\n{thumbs}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The single-answer ratings' counts, as the text output's lines have them: totals, and by
/// language and reason tag (zeros and empty lists when nobody rated an answer).
fn thumbs_json(store: &Store) -> anyhow::Result<serde_json::Value> {
    let o = crate::qa::thumbs::overview(store)?;
    let sum = |f: fn(&crate::qa::thumbs::Counts) -> usize| o.by_language.iter().map(f).sum::<usize>();
    let (good, bad) = (sum(|c| c.good), sum(|c| c.bad));
    Ok(serde_json::json!({
        "ratings": good + bad,
        "good": good,
        "bad": bad,
        "answers": sum(|c| c.answers),
        "disputed": sum(|c| c.disputed),
        "by_language": o.by_language,
        "by_tag": o.by_tag,
    }))
}

pub fn print_table(stats: &Stats) {
    let t = &stats.total;
    println!(
        "{} prompts, {} responses, {} active judgments, {} resolved pairs ({} guideline versions)",
        t.prompts, t.responses, t.judgments, t.pairs, stats.guideline_versions
    );
    section("language", &stats.by_language);
    section("domain", &stats.by_domain);
    section("split", &stats.by_split);
    if !stats.by_annotator.is_empty() {
        let rows: Vec<Vec<String>> = stats
            .by_annotator
            .iter()
            .map(|r| vec![r.key.clone(), r.judgments.to_string(), r.pairs.to_string()])
            .collect();
        print!("\n{}", table::render(&["annotator", "judgments", "agree with resolved"], &rows));
    }
}

fn section(name: &str, rows: &[StatsRow]) {
    if rows.is_empty() {
        return;
    }
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.key.clone(),
                r.prompts.to_string(),
                r.responses.to_string(),
                r.judgments.to_string(),
                r.pairs.to_string(),
            ]
        })
        .collect();
    print!("\n{}", table::render(&[name, "prompts", "responses", "judgments", "pairs"], &rows));
}
