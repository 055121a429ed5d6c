//! `verdict train`'s flags: one per training option, their help and defaults from the one
//! table of options (`jobs::train_config::OPTIONS`) that the TUI form and run config file use.

use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// A TOML file with any of the options below (flags given here win).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue a stopped or failed run from its last checkpoint.
    #[arg(long)]
    pub resume: Option<i64>,
    /// Replace --out if it exists.
    #[arg(long)]
    pub overwrite: bool,
    /// Print the predicted peak memory of a run with these options (every pair cut at
    /// --max-length: the most it can take) and the memory available, then exit. A run prints
    /// its own plan, for its data, before loading the weights and stops when it cannot fit.
    #[arg(long)]
    pub plan: bool,
    // The run's options: help and defaults from `jobs::train_config::OPTIONS` and
    // `TrainConfig::default()`, the table the TUI form and the run config file use too.
    #[arg(long, env = "VERDICT_MODEL", help = opt("model"))]
    pub model: Option<PathBuf>,
    #[arg(long, help = opt("out"))]
    pub out: Option<PathBuf>,
    #[arg(long, help = opt("method"))]
    pub method: Option<String>,
    #[arg(long, value_parser = parse_loss, help = opt("loss"))]
    pub loss: Option<crate::train::loss::LossType>,
    #[arg(long, help = opt("beta"))]
    pub beta: Option<f64>,
    #[arg(long, help = opt("label_smoothing"))]
    pub label_smoothing: Option<f64>,
    #[arg(long, help = opt("simpo_gamma"))]
    pub simpo_gamma: Option<f64>,
    #[arg(long, help = opt("sft_weight"))]
    pub sft_weight: Option<f64>,
    #[arg(long, help = opt("desirable_weight"))]
    pub desirable_weight: Option<f64>,
    #[arg(long, help = opt("undesirable_weight"))]
    pub undesirable_weight: Option<f64>,
    #[arg(long, help = opt("weight_by_agreement"))]
    pub weight_by_agreement: bool,
    #[arg(long, help = opt("learning_rate"))]
    pub learning_rate: Option<f64>,
    #[arg(long, help = opt("weight_decay"))]
    pub weight_decay: Option<f64>,
    #[arg(long, help = opt("warmup_steps"))]
    pub warmup_steps: Option<usize>,
    #[arg(long, value_parser = parse_schedule, help = opt("schedule"))]
    pub schedule: Option<crate::train::optim::Schedule>,
    #[arg(long, help = opt("max_grad_norm"))]
    pub max_grad_norm: Option<f64>,
    #[arg(long, help = opt("batch_size"))]
    pub batch_size: Option<usize>,
    #[arg(long, help = opt("grad_accum"))]
    pub grad_accum: Option<usize>,
    #[arg(long, help = opt("epochs"))]
    pub epochs: Option<usize>,
    #[arg(long, help = opt("max_steps"))]
    pub max_steps: Option<usize>,
    #[arg(long, help = opt("max_length"))]
    pub max_length: Option<usize>,
    #[arg(long, help = opt("seed"))]
    pub seed: Option<u64>,
    #[arg(long, help = opt("lora_rank"))]
    pub lora_rank: Option<usize>,
    #[arg(long, help = opt("lora_alpha"))]
    pub lora_alpha: Option<f64>,
    #[arg(long, help = opt("lora_targets"))]
    pub lora_targets: Option<String>,
    #[arg(long, help = opt("base_dtype"))]
    pub base_dtype: Option<crate::train::frozen::BaseDtype>,
    #[arg(long, help = opt("gradient_checkpointing"))]
    pub gradient_checkpointing: Option<crate::train::checkpointing::Checkpointing>,
    #[arg(long, help = opt("eval_every"))]
    pub eval_every: Option<usize>,
    #[arg(long, help = opt("save_every"))]
    pub save_every: Option<usize>,
    #[arg(long, help = opt("threads"))]
    pub threads: Option<usize>,
    #[arg(long, help = opt("device"))]
    pub device: Option<String>,
    #[arg(long, help = opt("sample_prompts"))]
    pub sample_prompts: Option<usize>,
    #[arg(long, help = opt("sample_max_tokens"))]
    pub sample_max_tokens: Option<usize>,
}

/// A training option's `--help` line, from the one table of options.
fn opt(key: &str) -> String {
    crate::jobs::train_config::flag_help(key)
}

fn parse_loss(s: &str) -> Result<crate::train::loss::LossType, String> {
    serde_json::from_value(serde_json::Value::from(s))
        .map_err(|_| format!("unknown loss {s}: sigmoid, ipo, hinge, robust or simpo"))
}

fn parse_schedule(s: &str) -> Result<crate::train::optim::Schedule, String> {
    serde_json::from_value(serde_json::Value::from(s))
        .map_err(|_| format!("unknown schedule {s}: constant, linear or cosine"))
}
