//! `verdict thumbs`: single-answer review from the command line: rate an answer good or bad,
//! mark gold answers, adjudicate disputed ones, and the QA report of every rating.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;

use super::Cli;
use crate::qa;
use crate::store::{NewThumb, OpenMode, Store, Thumb};

#[derive(Debug, Subcommand)]
pub enum ThumbsCommand {
    /// Counts by language and reason tag, agreement (good/bad), gold accuracy and disputed answers.
    #[command(after_help = "Examples:\n  verdict thumbs report\n  verdict thumbs report --json | jq .agreement")]
    Report {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Rate one answer good or bad as the annotator in force (what `+`/`-` do in the TUI's
    /// single-answer review); a second rating of the same answer replaces the first.
    #[command(
        after_help = "Examples:\n  verdict --annotator ana thumbs rate 17 good\n  verdict thumbs rate 18 bad --reason factual_error --note \"wrong year\""
    )]
    Rate {
        /// The answer's response id.
        response: i64,
        /// `good` or `bad` (also `+`/`-`, `up`/`down`).
        rating: String,
        /// A reason tag from the guidelines (repeatable).
        #[arg(long)]
        reason: Vec<String>,
        #[arg(long)]
        note: Option<String>,
    },
    /// Take back your most recent rating (the answer gets back the rating it had before).
    Undo,
    /// Mark an answer as gold with its right rating (adjudicators only).
    #[command(after_help = "Examples:\n  verdict --annotator lead thumbs gold 17 bad --note \"invents a statute\"")]
    Gold {
        response: i64,
        rating: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Set the final rating of a disputed answer (adjudicators only).
    #[command(after_help = "Examples:\n  verdict thumbs report\n  verdict --annotator lead thumbs adjudicate 17 good")]
    Adjudicate {
        response: i64,
        rating: String,
        #[arg(long)]
        note: Option<String>,
    },
}

fn rating(text: &str) -> anyhow::Result<Thumb> {
    Thumb::parse(text).with_context(|| format!("rating {text:?}: use `good` or `bad`"))
}

fn check_response(store: &Store, response: i64) -> anyhow::Result<()> {
    if store.response_texts(&[response])?.is_empty() {
        bail!("there is no response {response}: `verdict export` or the TUI shows the ids");
    }
    Ok(())
}

fn require_adjudicator(store: &Store, me: &str) -> anyhow::Result<i64> {
    if store.annotator_role(me)?.as_deref() != Some("adjudicator") {
        bail!("{me} is not an adjudicator: `verdict annotator add {me} --role adjudicator` first, or pass --annotator");
    }
    Ok(store.annotator_id(me, "adjudicator")?)
}

pub fn thumbs(cli: &Cli, command: &ThumbsCommand) -> anyhow::Result<ExitCode> {
    match command {
        ThumbsCommand::Report { json } => {
            let store = Store::open(&cli.db, OpenMode::MustExist)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&qa::thumbs::overview(&store)?)?);
            } else {
                let text = qa::thumbs::text(&store)?;
                if text.is_empty() {
                    println!("no single-answer ratings yet: rate answers with `+`/`-` in the TUI (`o` on a prompt)");
                }
                print!("{text}");
            }
        }
        ThumbsCommand::Rate { response, rating: text, reason, note } => {
            let (mut store, _) = super::init::open_for_writing(cli)?;
            check_response(&store, *response)?;
            let me = cli.annotator_name();
            let annotator_id = store.annotator_id(&me, "annotator")?;
            let rating = rating(text)?;
            let known: Vec<String> = store.reason_taxonomy()?.into_iter().map(|r| r.key).collect();
            if let Some(unknown) = reason.iter().find(|r| !known.is_empty() && !known.contains(r)) {
                bail!("reason {unknown:?} is not in the guidelines; use one of: {}", known.join(", "));
            }
            store.record_thumb(&NewThumb {
                response_id: *response,
                annotator_id,
                rating,
                reasons: reason.clone(),
                note: note.clone(),
                seconds: None,
                guideline_id: store.guideline_text(None)?.map(|(id, _)| id),
            })?;
            println!("answer {response}: {} (by {me})", rating.as_str());
        }
        ThumbsCommand::Undo => {
            let mut store = Store::open(&cli.db, OpenMode::MustExist)?;
            let me = cli.annotator_name();
            let annotator_id = store.annotator_id(&me, "annotator")?;
            match store.undo_last_thumb(annotator_id)? {
                None => println!("{me} has no rating to undo"),
                Some(undo) => {
                    let now = undo.restored.map(|t| t.rating.as_str()).unwrap_or("unrated");
                    println!(
                        "answer {}: {} taken back, now {now}",
                        undo.withdrawn.response_id,
                        undo.withdrawn.rating.as_str()
                    );
                }
            }
        }
        ThumbsCommand::Gold { response, rating: text, note } => {
            let store = Store::open(&cli.db, OpenMode::MustExist)?;
            require_adjudicator(&store, &cli.annotator_name())?;
            check_response(&store, *response)?;
            let rating = rating(text)?;
            let added = store.add_thumb_gold(*response, rating, note.as_deref(), "cli")?;
            println!("answer {response}: {} gold ({})", if added { "now" } else { "already" }, rating.as_str());
        }
        ThumbsCommand::Adjudicate { response, rating: text, note } => {
            let store = Store::open(&cli.db, OpenMode::MustExist)?;
            let me = cli.annotator_name();
            let adjudicator = require_adjudicator(&store, &me)?;
            check_response(&store, *response)?;
            let rating = rating(text)?;
            store.adjudicate_thumb(*response, rating, adjudicator, note.as_deref())?;
            println!("answer {response}: {} (by {me}); export and training use this rating", rating.as_str());
        }
    }
    Ok(ExitCode::SUCCESS)
}
