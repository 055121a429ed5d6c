//! A training run's options (`TrainConfig`, whose `Default` is the one set of defaults) and the
//! two tables every face is derived from: `OPTIONS` (key, label, help, choices, whether the TUI's
//! new-run form shows it) gives the CLI flags' help, the form's fields and the run config file's
//! keys; `RULES` says what each may be, with a message naming the option and its allowed range.
//! A test (cli/train.rs) checks that `verdict train --help`, the TOML keys and the form's fields
//! are the same options with the same defaults.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::model;
use crate::train::checkpointing::Checkpointing;
use crate::train::frozen::BaseDtype;
use crate::train::loss::LossType;
use crate::train::optim::Schedule;

/// Everything a run is configured by; also what `--config run.toml` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// `dpo`, `kto`, `orpo`, `simpo` or `sft`.
    pub method: String,
    pub loss: LossType,
    pub beta: f64,
    pub label_smoothing: f64,
    pub simpo_gamma: f64,
    pub sft_weight: f64,
    /// KTO's class weights; unset: from the class balance of the train split.
    pub desirable_weight: Option<f64>,
    pub undesirable_weight: Option<f64>,
    pub weight_by_agreement: bool,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub warmup_steps: usize,
    pub schedule: Schedule,
    pub max_grad_norm: f64,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub epochs: usize,
    pub max_steps: Option<usize>,
    pub max_length: usize,
    pub seed: u64,
    pub lora_rank: Option<usize>,
    pub lora_alpha: f64,
    pub lora_targets: Vec<String>,
    /// How a LoRA run keeps its frozen base: `auto`, `f32`, `bf16`, `quantized` (a GGUF's own).
    pub base_dtype: BaseDtype,
    /// Recompute each layer in the backward: `auto` (when the memory plan needs it), `on`, `off`.
    pub gradient_checkpointing: Checkpointing,
    pub eval_every: usize,
    pub save_every: usize,
    pub model: Option<PathBuf>,
    pub out: Option<PathBuf>,
    pub threads: Option<usize>,
    /// `auto`, `cpu`, `cuda`, `cuda:N` or `metal`.
    pub device: String,
    /// How many test-split prompts get an answer generated at every evaluation (and before
    /// the first step), always with the same seed, so one can see how answers change.
    pub sample_prompts: usize,
    pub sample_max_tokens: usize,
}

impl Default for TrainConfig {
    fn default() -> TrainConfig {
        TrainConfig {
            method: "dpo".into(),
            loss: LossType::Sigmoid,
            beta: 0.1,
            label_smoothing: 0.0,
            simpo_gamma: 0.5,
            sft_weight: 0.0,
            desirable_weight: None,
            undesirable_weight: None,
            weight_by_agreement: false,
            learning_rate: 5e-6,
            weight_decay: 0.0,
            warmup_steps: 0,
            schedule: Schedule::Linear,
            max_grad_norm: 1.0,
            batch_size: 1,
            grad_accum: 1,
            epochs: 1,
            max_steps: None,
            max_length: 1024,
            seed: 42,
            lora_rank: None,
            lora_alpha: 16.0,
            lora_targets: vec!["q".into(), "k".into(), "v".into(), "o".into()],
            base_dtype: BaseDtype::Auto,
            gradient_checkpointing: Checkpointing::Auto,
            eval_every: 0,
            save_every: 0,
            model: None,
            out: None,
            threads: None,
            device: "auto".into(),
            sample_prompts: 4,
            sample_max_tokens: 96,
        }
    }
}

/// One option as the CLI, the run config file and the TUI form show it.
pub struct Opt {
    /// The TOML key and `TrainConfig` field; the flag is `--` + key with dashes.
    pub key: &'static str,
    /// The form's label.
    pub label: &'static str,
    /// One line for `verdict train --help` and beside the form's field.
    pub help: &'static str,
    /// The values a choice takes (the form cycles through them); empty: typed text.
    pub choices: &'static [&'static str],
    /// Shown in the TUI's new-run form (the rest are set by flag or run config file).
    pub in_form: bool,
}

const fn opt(key: &'static str, label: &'static str, help: &'static str, in_form: bool) -> Opt {
    Opt { key, label, help, choices: &[], in_form }
}

const fn choice(key: &'static str, label: &'static str, help: &'static str, choices: &'static [&'static str]) -> Opt {
    Opt { key, label, help, choices, in_form: true }
}

/// Every option of a run, the form's in the form's order first.
pub const OPTIONS: &[Opt] = &[
    choice(
        "method",
        "Method",
        "dpo: pairs + reference; kto: good/bad answers; orpo, simpo: no reference; sft",
        &["dpo", "kto", "orpo", "simpo", "sft"],
    ),
    choice("loss", "Loss", "DPO's loss; sigmoid is the DPO paper's", &["sigmoid", "ipo", "hinge", "robust", "simpo"]),
    opt("beta", "Beta", "pull toward the reference (0.01-0.5); ORPO: its odds-ratio weight", true),
    opt("label_smoothing", "Label smoothing", "share of labels assumed flipped", true),
    opt("learning_rate", "Learning rate", "1e-7 to 1e-5 for full, ~1e-4 for LoRA", true),
    opt("epochs", "Epochs", "passes over the train split", true),
    opt("max_steps", "Max steps", "empty: by epochs", true),
    opt("batch_size", "Batch size", "pairs per micro-batch", true),
    opt("grad_accum", "Gradient accumulation", "micro-batches per step", true),
    opt("max_length", "Max length", "tokens of prompt + answer; longer pairs are cut", true),
    opt("lora_rank", "LoRA rank", "train a LoRA adapter of this rank instead of every weight", true),
    choice("device", "Device", "auto: the GPU when there is one", &["auto", "cpu", "cuda"]),
    opt("model", "Base model", "empty: the default model", true),
    opt("eval_every", "Evaluate every", "steps; also stores sample answers", true),
    opt("save_every", "Checkpoint every", "steps; 0: only at stop and end", true),
    opt("threads", "CPU threads", "empty: cores - 1", true),
    opt("simpo_gamma", "SimPO gamma", "the target reward margin of the simpo loss", false),
    opt(
        "sft_weight",
        "SFT weight",
        "weight of an NLL term on the chosen answer (RPO); keeps its likelihood from falling",
        false,
    ),
    opt(
        "desirable_weight",
        "Desirable weight",
        "KTO's weight of a good answer (empty: the class balance, so both classes weigh the same in all)",
        false,
    ),
    opt(
        "undesirable_weight",
        "Undesirable weight",
        "KTO's weight of a bad answer (empty: the class balance, so both classes weigh the same in all)",
        false,
    ),
    opt("weight_by_agreement", "Weight by agreement", "pairs more annotators agreed on count more", false),
    opt("weight_decay", "Weight decay", "AdamW's decoupled weight decay", false),
    opt("warmup_steps", "Warm-up steps", "steps of linear learning-rate warm-up", false),
    opt("schedule", "Schedule", "learning-rate schedule: constant, linear or cosine", false),
    opt("max_grad_norm", "Max gradient norm", "clip the gradient to this norm (0: no clipping)", false),
    opt("seed", "Seed", "data order, LoRA init and sample answers", false),
    opt("lora_alpha", "LoRA alpha", "LoRA scale (alpha / rank)", false),
    opt("lora_targets", "LoRA targets", "comma separated among q,k,v,o,gate,up,down", false),
    Opt {
        key: "base_dtype",
        label: "Frozen base",
        help: "how LoRA keeps the frozen base: f32, bf16, or quantized as a GGUF stores it (auto: f32, bf16 when f32 does not fit)",
        choices: &["auto", "f32", "bf16", "quantized"],
        in_form: false,
    },
    Opt {
        key: "gradient_checkpointing",
        label: "Gradient checkpointing",
        help: "keep only each layer's input and recompute the layer in the backward (auto: when the run does not fit without)",
        choices: &["auto", "on", "off"],
        in_form: false,
    },
    opt("out", "Output folder", "where the run writes checkpoints and the tuned model (empty: runs/run-<time>)", false),
    opt(
        "sample_prompts",
        "Sample prompts",
        "test prompts that get an answer at each evaluation (same seed each time)",
        false,
    ),
    opt("sample_max_tokens", "Sample length", "the most tokens of each sample answer", false),
];

/// The rank the form's LoRA switch uses when turned on (the config's own default is no LoRA).
pub const FORM_LORA_RANK: usize = 16;

/// The table entry of an option.
pub fn option(key: &str) -> &'static Opt {
    OPTIONS.iter().find(|o| o.key == key).unwrap_or_else(|| panic!("{key} is not in train_config::OPTIONS"))
}

/// `--help`'s line for an option: its help and its default.
pub fn flag_help(key: &str) -> String {
    let shown = default_text(key);
    let default = if shown.is_empty() { String::new() } else { format!(" [default: {shown}]") };
    format!("{}{default}", option(key).help)
}

/// An option's default as typed text ("" when unset): what the form shows and `--help` says.
pub fn default_text(key: &str) -> String {
    TrainConfig::default().text(key)
}

impl TrainConfig {
    /// One option's value as typed text ("" when unset; lists comma separated; small numbers
    /// as `5e-6`).
    pub fn text(&self, key: &str) -> String {
        let value = serde_json::to_value(self).ok().and_then(|v| v.get(key).cloned()).unwrap_or_default();
        match value {
            serde_json::Value::Null => String::new(),
            serde_json::Value::String(s) => s,
            serde_json::Value::Array(items) => {
                items.iter().map(|i| i.as_str().unwrap_or_default().to_string()).collect::<Vec<_>>().join(",")
            }
            serde_json::Value::Number(n) if n.is_f64() => {
                let x = n.as_f64().unwrap_or_default();
                if x != 0.0 && x.abs() < 1e-3 { format!("{x:e}") } else { x.to_string() }
            }
            other => other.to_string(),
        }
    }
}

/// What one option may be: its key (the TOML key; the flag is `--` + key with dashes), the
/// allowed range as the user reads it, and why when the reason is not obvious.
pub struct Rule {
    pub key: &'static str,
    pub range: &'static str,
    pub why: &'static str,
    ok: fn(&TrainConfig) -> bool,
}

const fn rule(key: &'static str, range: &'static str, why: &'static str, ok: fn(&TrainConfig) -> bool) -> Rule {
    Rule { key, range, why, ok }
}

fn finite_at_least(x: f64, low: f64) -> bool {
    x.is_finite() && x >= low
}

const TARGETS: [&str; 7] = ["q", "k", "v", "o", "gate", "up", "down"];

/// Every option with a limit. Options not listed (seed, warmup_steps, eval_every, save_every,
/// sample_prompts, model, out, schedule) take any value their type holds.
pub const RULES: &[Rule] = &[
    rule("method", "dpo, kto, orpo, simpo or sft", "", |c| {
        matches!(c.method.as_str(), "dpo" | "kto" | "orpo" | "simpo" | "sft")
    }),
    rule(
        "loss",
        "sigmoid (its default) unless --method is dpo",
        "the loss is DPO's; --method simpo is the simpo loss",
        |c| c.method == "dpo" || c.loss == LossType::Sigmoid || (c.method == "simpo" && c.loss == LossType::Simpo),
    ),
    rule("beta", "a number > 0", "", |c| c.beta.is_finite() && c.beta > 0.0),
    rule(
        "label_smoothing",
        "in [0, 0.5)",
        "at 0.5 the robust loss divides by zero and from 0.5 up the loss trains towards the rejected answer",
        |c| c.label_smoothing.is_finite() && (0.0..0.5).contains(&c.label_smoothing),
    ),
    rule("simpo_gamma", "a number >= 0", "", |c| finite_at_least(c.simpo_gamma, 0.0)),
    rule("sft_weight", "a number >= 0", "", |c| finite_at_least(c.sft_weight, 0.0)),
    rule("desirable_weight", "a number > 0, or unset (the class balance)", "", |c| {
        c.desirable_weight.is_none_or(|w| w.is_finite() && w > 0.0)
    }),
    rule("undesirable_weight", "a number > 0, or unset (the class balance)", "", |c| {
        c.undesirable_weight.is_none_or(|w| w.is_finite() && w > 0.0)
    }),
    rule("learning_rate", "in (0, 1)", "DPO usually wants 1e-7 to 1e-5, LoRA ~1e-4", |c| {
        c.learning_rate > 0.0 && c.learning_rate < 1.0
    }),
    rule("weight_decay", "in [0, 1]", "", |c| (0.0..=1.0).contains(&c.weight_decay)),
    rule("max_grad_norm", "a number >= 0 (0: no clipping)", "", |c| finite_at_least(c.max_grad_norm, 0.0)),
    rule("batch_size", "a whole number >= 1", "", |c| c.batch_size >= 1),
    rule("grad_accum", "a whole number >= 1", "", |c| c.grad_accum >= 1),
    rule("epochs", "a whole number >= 1", "", |c| c.epochs >= 1),
    rule("max_steps", "a whole number >= 1, or unset (by epochs)", "", |c| c.max_steps != Some(0)),
    rule("max_length", "a whole number >= 16", "shorter cannot hold a prompt and an answer", |c| c.max_length >= 16),
    rule("lora_rank", "a whole number >= 1, or unset (full fine-tuning)", "", |c| c.lora_rank != Some(0)),
    rule(
        "base_dtype",
        "auto or f32 when every weight trains (no --lora-rank)",
        "bf16 and quantized keep a frozen base",
        |c| c.lora_rank.is_some() || matches!(c.base_dtype, BaseDtype::Auto | BaseDtype::F32),
    ),
    rule("lora_alpha", "a number > 0", "", |c| c.lora_alpha.is_finite() && c.lora_alpha > 0.0),
    rule("lora_targets", "one or more of q,k,v,o,gate,up,down", "", |c| {
        !c.lora_targets.is_empty() && c.lora_targets.iter().all(|t| TARGETS.contains(&t.as_str()))
    }),
    rule("threads", "a whole number >= 1, or unset (cores - 1)", "", |c| c.threads != Some(0)),
    rule("device", "auto, cpu, cuda, cuda:N or metal", "", |c| c.device.parse::<model::DeviceChoice>().is_ok()),
    rule("sample_max_tokens", "a whole number >= 1", "", |c| c.sample_max_tokens >= 1),
];

impl Rule {
    /// The flag spelling of the key.
    pub fn flag(&self) -> String {
        format!("--{}", self.key.replace('_', "-"))
    }

    /// "must be <range>, not <value> (<why>)": what the TUI form shows beside the field.
    fn short_message(&self, config: &TrainConfig) -> String {
        let value = serde_json::to_value(config).ok().and_then(|v| v.get(self.key).cloned()).unwrap_or_default();
        let value = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Array(items) => {
                items.iter().map(|i| i.as_str().unwrap_or_default().to_string()).collect::<Vec<_>>().join(",")
            }
            other => other.to_string(),
        };
        let why = if self.why.is_empty() { String::new() } else { format!(" ({})", self.why) };
        format!("must be {}, not {value}{why}", self.range)
    }

    /// The message with the option's flag and config key, for the CLI and a run config file.
    fn message(&self, config: &TrainConfig) -> String {
        format!("{} (`{}` in a run config) {}", self.flag(), self.key, self.short_message(config))
    }
}

/// The rule for an option, if it has one.
pub fn rule_for(key: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.key == key)
}

impl TrainConfig {
    /// Every option within its range, or the first one that is not, by name and range.
    pub fn check(&self) -> anyhow::Result<()> {
        match RULES.iter().find(|r| !(r.ok)(self)) {
            Some(rule) => anyhow::bail!("{}", rule.message(self)),
            None => Ok(()),
        }
    }

    /// Sets one option from text as typed (the TUI form): empty text unsets an optional value,
    /// `lora_targets` is comma separated. The error names the option and its range.
    pub fn set_text(&mut self, key: &str, text: &str) -> Result<(), String> {
        let mut value = serde_json::to_value(&*self).map_err(|e| e.to_string())?;
        let range = rule_for(key).map(|r| r.range).unwrap_or("a valid value");
        let bad = || format!("must be {range}, not {text}");
        let object = value.as_object_mut().ok_or_else(bad)?;
        let current = object.get(key).ok_or_else(|| format!("no option {key}"))?;
        let text = text.trim();
        let new = if key == "lora_targets" {
            serde_json::Value::from(text.split(',').map(|t| t.trim().to_string()).collect::<Vec<_>>())
        } else if text.is_empty() {
            serde_json::Value::Null
        } else if current.is_string() {
            serde_json::Value::from(text)
        } else if current.is_boolean() {
            serde_json::Value::from(text.parse::<bool>().map_err(|_| bad())?)
        } else if let Ok(n) = text.parse::<u64>() {
            serde_json::Value::from(n)
        } else if let Ok(x) = text.parse::<f64>() {
            serde_json::Value::from(x)
        } else if current.is_null() {
            // An option unset by default (the base model, the output folder) takes text.
            serde_json::Value::from(text)
        } else {
            return Err(bad());
        };
        object.insert(key.to_string(), new);
        *self = serde_json::from_value(value).map_err(|_| bad())?;
        Ok(())
    }

    /// Why one option's value is out of its range ("must be <range>, not <value>"), if it is.
    pub fn option_error(&self, key: &str) -> Option<String> {
        rule_for(key).filter(|r| !(r.ok)(self)).map(|r| r.short_message(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Options that are unset by default (a path) take typed text, as the TUI form sets them.
    #[test]
    fn an_option_unset_by_default_takes_a_path() {
        let mut c = TrainConfig::default();
        c.set_text("model", "/models/tiny.gguf").expect("a path");
        assert_eq!(c.model.as_deref(), Some(std::path::Path::new("/models/tiny.gguf")));
        c.set_text("max_steps", "30").expect("a count");
        assert_eq!(c.max_steps, Some(30));
        c.set_text("model", "").expect("empty is unset");
        assert_eq!(c.model, None);
    }

    #[test]
    fn the_defaults_pass_and_every_rule_names_its_option_and_range() {
        TrainConfig::default().check().expect("defaults are valid");
        for (key, text) in [
            ("label_smoothing", "0.5"),
            ("label_smoothing", "0.7"),
            ("label_smoothing", "-0.1"),
            ("beta", "0"),
            ("learning_rate", "0"),
            ("batch_size", "0"),
            ("max_length", "8"),
            ("lora_targets", "q,x"),
            ("device", "tpu"),
        ] {
            let mut c = TrainConfig::default();
            c.set_text(key, text).expect("typed value");
            let error = c.check().expect_err(key).to_string();
            let rule = rule_for(key).expect("rule");
            assert!(error.contains(&rule.flag()) && error.contains(rule.range), "{key}={text}: {error}");
            let short = c.option_error(key).expect("the form's message");
            assert!(error.ends_with(&short) && short.contains(rule.range), "{short}");
        }
        let mut c = TrainConfig::default();
        c.set_text("label_smoothing", "0.49").expect("number");
        c.check().expect("0.49 is allowed");
        assert!(c.set_text("beta", "abc").expect_err("not a number").contains("a number > 0"));
    }

    #[test]
    fn a_run_config_file_is_checked_by_the_same_table() {
        let c: TrainConfig = toml::from_str("loss = \"robust\"\nlabel_smoothing = 0.5\n").expect("toml");
        let error = c.check().expect_err("0.5").to_string();
        assert!(error.contains("--label-smoothing") && error.contains("[0, 0.5)"), "{error}");
    }
}
