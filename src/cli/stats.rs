//! `verdict stats`.

use std::process::ExitCode;

use super::Cli;
use crate::store::{OpenMode, Stats, StatsRow, Store};
use crate::table;

pub fn stats(cli: &Cli, json: bool) -> anyhow::Result<ExitCode> {
    let store = Store::open(&cli.db, OpenMode::MustExist)?;
    let stats = crate::qa::stats(&store)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        print_table(&stats);
        let thumbs = crate::qa::thumbs::summary(&store)?;
        if !thumbs.is_empty() {
            print!("\n{thumbs}");
        }
    }
    Ok(ExitCode::SUCCESS)
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
