//! The command line: clap definitions and dispatch. Each command is a thin layer over
//! the library; the TUI calls the same functions.

mod data;
mod init;
mod stats;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::data::Format;
use crate::data::export::{ExportFormat, SplitFilter};

const EXAMPLES: &str = "\
Examples:
  verdict init --samples             create ./verdict.db with the demo data
  verdict import pairs.jsonl         load TRL preference pairs (or prompt lists)
  verdict stats                      what is in the database
  verdict export dpo.jsonl --split train --format conversational
";

/// verdict: label preference pairs, check their quality, and fine-tune a model on them.
#[derive(Debug, Parser)]
#[command(name = "verdict", version, after_help = EXAMPLES)]
pub struct Cli {
    /// The database file (created by `init` or on first run).
    #[arg(long, global = true, env = "VERDICT_DB", default_value = "verdict.db")]
    pub db: PathBuf,

    /// Who is labeling (default: your OS user name).
    #[arg(long, global = true, env = "VERDICT_ANNOTATOR")]
    pub annotator: Option<String>,

    /// A folder of guideline Markdown files to use instead of the built-in ones
    /// (default: `guidelines/` next to the database, if it has a default.md).
    #[arg(long, global = true, value_name = "DIR")]
    pub guidelines: Option<PathBuf>,

    /// On first run, do not seed the new database with the sample data.
    #[arg(long, global = true)]
    pub no_samples: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the database if needed and load the reviewer guidelines (idempotent).
    #[command(after_help = "Examples:\n  verdict init\n  verdict --db team.db init --samples")]
    Init {
        /// Also load the built-in sample prompts and pairs.
        #[arg(long)]
        samples: bool,
    },
    /// Load TRL preference JSONL (standard or conversational) or prompt lists.
    ///
    /// Every line is checked before anything is written: one bad line and nothing from
    /// any file is loaded, unless --skip-invalid is given. Importing the same data twice
    /// adds nothing.
    #[command(
        after_help = "Examples:\n  verdict import pairs.jsonl prompts.jsonl\n  verdict import --skip-invalid messy.jsonl\n  verdict import --format conversational chats.jsonl"
    )]
    Import {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The records' format (default: detected from each file's first record).
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Load the valid lines and report each skipped one.
        #[arg(long)]
        skip_invalid: bool,
    },
    /// Write the resolved preference pairs as TRL JSONL (`-` for standard output).
    #[command(
        after_help = "Examples:\n  verdict export pairs.jsonl\n  verdict export - --split test --format standard | head"
    )]
    Export {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "conversational")]
        format: ExportFormat,
        #[arg(long, value_enum, default_value = "all")]
        split: SplitFilter,
    },
    /// Counts of prompts, responses, judgments and resolved pairs, by language, domain,
    /// split and annotator.
    #[command(after_help = "Examples:\n  verdict stats\n  verdict stats --json | jq .total")]
    Stats {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

impl Cli {
    /// The annotator name in force.
    pub fn annotator_name(&self) -> String {
        self.annotator
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .or_else(|| std::env::var("USERNAME").ok())
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| "annotator".to_string())
    }
}

/// Parses the command line, runs it, and turns errors into one line on stderr.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        // A reader that stops early (`verdict export - | head`) is not an error.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", one_line(&error));
            ExitCode::from(2)
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        None => init::first_run(cli),
        Some(Command::Init { samples }) => init::init(cli, *samples),
        Some(Command::Import {
            files,
            format,
            skip_invalid,
        }) => data::import(cli, files, *format, *skip_invalid),
        Some(Command::Export {
            file,
            format,
            split,
        }) => data::export(cli, file, *format, *split),
        Some(Command::Stats { json }) => stats::stats(cli, *json),
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            || cause
                .downcast_ref::<serde_json::Error>()
                .is_some_and(|e| e.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
    })
}

/// An error and its causes on one line, without repeating a cause already in the message.
fn one_line(error: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}
