//! Team commands: annotators, assignments, gold, disputes and adjudication, agreement,
//! reports, merging databases.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};

use super::{AnnotatorCommand, Cli, GoldCommand};
use crate::data::import::parse_file;
use crate::domain::{ImportRecord, Outcome};
use crate::qa::{self, assign};
use crate::store::{GoldItem, OpenMode, Store};
use crate::table;

pub fn annotator(cli: &Cli, command: &AnnotatorCommand) -> anyhow::Result<ExitCode> {
    match command {
        AnnotatorCommand::Add { name, role, languages } => {
            let (store, _) = super::init::open_for_writing(cli)?;
            let languages: Vec<String> = languages
                .iter()
                .flat_map(|l| l.split(','))
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect();
            store.upsert_annotator(name, role.as_str(), &languages)?;
            println!(
                "{name}: {} ({})",
                role.as_str(),
                if languages.is_empty() { "any language".into() } else { languages.join(", ") }
            );
        }
        AnnotatorCommand::List => {
            let store = Store::open(&cli.db, OpenMode::MustExist)?;
            let rows: Vec<Vec<String>> = store
                .annotators()?
                .into_iter()
                .map(|a| vec![a.name, a.role, a.languages.join(","), a.judgments.to_string()])
                .collect();
            print!("{}", table::render(&["annotator", "role", "languages", "judgments"], &rows));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn assign_queues(cli: &Cli, overlap: f64, per_annotator: usize, language: &[String]) -> anyhow::Result<ExitCode> {
    if !(0.0..=1.0).contains(&overlap) {
        bail!("--overlap must be between 0 and 1 (0.2 = a fifth of the prompts labeled twice)");
    }
    let mut store = Store::open(&cli.db, OpenMode::MustExist)?;
    let labelers: Vec<assign::Labeler> = store
        .annotators()?
        .into_iter()
        .filter(|a| a.role == "annotator")
        .map(|a| assign::Labeler { id: a.id, languages: a.languages })
        .collect();
    if labelers.is_empty() {
        bail!("no annotators yet: add them with `verdict annotator add NAME --languages en,de`");
    }
    let tasks: Vec<assign::Task> = store
        .prompt_languages()?
        .into_iter()
        .filter(|(_, lang, candidates)| *candidates >= 2 && (language.is_empty() || language.contains(lang)))
        .map(|(prompt_id, language, _)| assign::Task { prompt_id, language })
        .collect();
    let plan = assign::plan(&labelers, &tasks, overlap, per_annotator);
    let written = store.set_assignments(&plan)?;
    let names: std::collections::HashMap<i64, String> =
        store.annotators()?.into_iter().map(|a| (a.id, a.name)).collect();
    for (id, prompts) in &plan {
        println!("{}: {} prompts", names[id], prompts.len());
    }
    println!("{written} assignments written; the TUI shows each annotator their assigned prompts first");
    Ok(ExitCode::SUCCESS)
}

pub fn gold(cli: &Cli, command: &GoldCommand) -> anyhow::Result<ExitCode> {
    let file = match command {
        GoldCommand::Import { file } => file,
        GoldCommand::Mark { first, second, winner, note } => {
            let store = Store::open(&cli.db, OpenMode::MustExist)?;
            require_adjudicator(&store, &cli.annotator_name())?;
            let (a, b, outcome) = parse_winner(*first, *second, winner)?;
            let added = store.add_gold_outcome(
                a,
                b,
                outcome,
                note.as_deref(),
                &format!("marked by {}", cli.annotator_name()),
            )?;
            println!("pair {a} {b}: {} gold ({})", if added { "now" } else { "already" }, describe(outcome, a, b));
            return Ok(ExitCode::SUCCESS);
        }
    };
    let parsed = parse_file(file, None)?;
    if let Some(first) = parsed.errors.first() {
        bail!("{first} ({} bad lines; nothing imported)", parsed.errors.len());
    }
    // Gold pairs enter as ordinary candidates (no import verdict), so annotators meet
    // them in their queues without knowing they are gold.
    let mut items = Vec::with_capacity(parsed.records.len());
    for record in &parsed.records {
        match record {
            ImportRecord::Pair { prompt, chosen, rejected, note, .. } => {
                items.push(GoldItem { prompt, chosen, rejected, note: note.as_deref() })
            }
            ImportRecord::Prompt(_) => {
                bail!("{}: gold items need `chosen` and `rejected`; nothing imported", file.display())
            }
        }
    }
    let (mut store, _) = super::init::open_for_writing(cli)?;
    let added = store.import_gold(&items, &file.display().to_string())?;
    println!("{added} gold items added ({} already gold)", parsed.records.len() - added);
    Ok(ExitCode::SUCCESS)
}

pub fn disputes(cli: &Cli, json: bool, mine: bool) -> anyhow::Result<ExitCode> {
    let store = Store::open(&cli.db, OpenMode::MustExist)?;
    let me = cli.annotator_name();
    let mut disputes = store.disputes()?;
    if mine {
        disputes.retain(|d| d.votes.iter().any(|v| v.annotator == me));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&disputes)?);
        return Ok(ExitCode::SUCCESS);
    }
    if disputes.is_empty() {
        println!("no disputed pairs");
    }
    for d in &disputes {
        let status = d.adjudicated.map(|o| format!("adjudicated: {}", o.as_str())).unwrap_or_else(|| "open".into());
        println!("pair {} {} (prompt {}) — {status}", d.response_a, d.response_b, d.prompt_id);
        for v in &d.votes {
            let reasons = if v.reasons.is_empty() { String::new() } else { format!(" [{}]", v.reasons.join(", ")) };
            let note = v.note.as_ref().map(|n| format!(" — {n}")).unwrap_or_default();
            println!("  {:<12} {}{reasons}{note}", v.annotator, describe(v.outcome, d.response_a, d.response_b));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(outcome: Outcome, a: i64, b: i64) -> String {
    match outcome {
        Outcome::A => format!("{a} better"),
        Outcome::B => format!("{b} better"),
        Outcome::Tie => "tie".into(),
        Outcome::BothBad => "both bad".into(),
    }
}

fn require_adjudicator(store: &Store, me: &str) -> anyhow::Result<()> {
    if store.annotator_role(me)?.as_deref() != Some("adjudicator") {
        bail!("{me} is not an adjudicator: `verdict annotator add {me} --role adjudicator` first, or pass --annotator");
    }
    Ok(())
}

/// (a, b, outcome) from two response ids and `--winner ID|tie|both_bad`.
fn parse_winner(first: i64, second: i64, winner: &str) -> anyhow::Result<(i64, i64, Outcome)> {
    let (a, b) = (first.min(second), first.max(second));
    let outcome = match winner {
        "tie" => Outcome::Tie,
        "both_bad" | "both-bad" => Outcome::BothBad,
        id => match id.parse::<i64>().context("--winner is a response id, `tie` or `both_bad`")? {
            w if w == a => Outcome::A,
            w if w == b => Outcome::B,
            w => bail!("--winner {w} is neither {first} nor {second}"),
        },
    };
    Ok((a, b, outcome))
}

pub fn adjudicate(cli: &Cli, first: i64, second: i64, winner: &str, note: Option<&str>) -> anyhow::Result<ExitCode> {
    let store = Store::open(&cli.db, OpenMode::MustExist)?;
    let me = cli.annotator_name();
    require_adjudicator(&store, &me)?;
    let (a, b, outcome) = parse_winner(first, second, winner)?;
    let adjudicator = store.annotator_id(&me, "adjudicator")?;
    store.adjudicate(a, b, outcome, adjudicator, note)?;
    println!("pair {a} {b}: {} (by {me}); export and training use this verdict", describe(outcome, a, b));
    Ok(ExitCode::SUCCESS)
}

pub fn agreement(cli: &Cli, json: bool) -> anyhow::Result<ExitCode> {
    let store = Store::open(&cli.db, OpenMode::MustExist)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&qa::report::overview(&store)?)?);
    } else {
        print!("{}", qa::text::agreement(&store)?);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn report(cli: &Cli, json: bool) -> anyhow::Result<ExitCode> {
    let store = Store::open(&cli.db, OpenMode::MustExist)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&qa::report::annotator_reports(&store)?)?);
    } else {
        print!("{}", qa::text::annotators(&store)?);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn merge(cli: &Cli, other: &Path) -> anyhow::Result<ExitCode> {
    let (mut store, _) = super::init::open_for_writing(cli)?;
    let s = store.merge_from(other)?;
    println!(
        "merged {}: {} prompts, {} responses, {} judgments, {} adjudications, {} gold, {} annotators, \
         {} assignments, {} blind votes, {} runs, {} single-answer ratings added",
        other.display(),
        s.prompts,
        s.responses,
        s.judgments,
        s.adjudications,
        s.gold,
        s.annotators,
        s.assignments,
        s.eval_votes,
        s.runs,
        s.thumbs
    );
    Ok(ExitCode::SUCCESS)
}
