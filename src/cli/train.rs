//! `verdict train`, `verdict runs` and `verdict logps`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::Context;

use super::{Cli, TrainArgs};
use crate::domain::RunStatus;
use crate::jobs::train::{self, TrainConfig, TrainEvent};
use crate::store::{OpenMode, Store};
use crate::table;

/// The run config: defaults, then `--config run.toml`, then the flags given.
pub fn config_from_args(args: &TrainArgs) -> anyhow::Result<TrainConfig> {
    let mut c: TrainConfig = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            toml::from_str(&text).map_err(|e: toml::de::Error| {
                // toml's Display draws the line over several rows; the CLI prints one line per cause.
                let line = e.span().map(|span| text[..span.start].matches('\n').count() + 1);
                let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
                anyhow::anyhow!("{}: not a valid run config{at}: {}", path.display(), e.message().trim())
            })?
        }
        None => TrainConfig::default(),
    };
    macro_rules! set {
        ($($field:ident),*) => { $( if let Some(v) = &args.$field { c.$field = v.clone(); } )* };
    }
    set!(
        method,
        loss,
        beta,
        label_smoothing,
        simpo_gamma,
        sft_weight,
        learning_rate,
        weight_decay,
        warmup_steps,
        schedule,
        max_grad_norm,
        batch_size,
        grad_accum,
        epochs,
        max_length,
        seed,
        lora_alpha,
        base_dtype,
        gradient_checkpointing,
        eval_every,
        save_every,
        device,
        sample_prompts,
        sample_max_tokens
    );
    if args.max_steps.is_some() {
        c.max_steps = args.max_steps;
    }
    if args.lora_rank.is_some() {
        c.lora_rank = args.lora_rank;
    }
    if let Some(targets) = &args.lora_targets {
        c.lora_targets = targets.split(',').map(|t| t.trim().to_string()).collect();
    }
    if args.weight_by_agreement {
        c.weight_by_agreement = true;
    }
    if args.model.is_some() {
        c.model = args.model.clone();
    }
    if args.out.is_some() {
        c.out = args.out.clone();
    }
    if args.threads.is_some() {
        c.threads = args.threads;
    }
    if args.desirable_weight.is_some() {
        c.desirable_weight = args.desirable_weight;
    }
    if args.undesirable_weight.is_some() {
        c.undesirable_weight = args.undesirable_weight;
    }
    c.check()?;
    Ok(c)
}

pub fn train_command(cli: &Cli, args: &TrainArgs) -> anyhow::Result<ExitCode> {
    let config = config_from_args(args)?;
    if args.plan {
        // What the run would train on, when there is a database to compile it from.
        if let Ok(store) = Store::open(&cli.db, OpenMode::MustExist) {
            let method = crate::qa::compile::Method::parse(&config.method).context("the method was checked")?;
            for line in crate::qa::compile::compile_store(&store, method)?.summary_lines() {
                println!("{line}");
            }
        }
        print!("{}", crate::jobs::train::memory::plan_text(&config, &|line| eprintln!("{line}"))?);
        return Ok(ExitCode::SUCCESS);
    }
    // Say where it runs: `auto` takes the GPU when the binary has CUDA and one answers.
    let device: crate::model::DeviceChoice = config.device.parse().map_err(anyhow::Error::msg)?;
    let device = device.device()?;
    if device.is_cpu() {
        // What the speed depends on, for bug reports and benchmarks (benches/compare_train.sh).
        let threads = config.threads.filter(|n| *n > 0).unwrap_or_else(crate::model::default_threads);
        eprintln!(
            "device: cpu ({} kernels, denormals {}, {threads} thread{}{})",
            crate::train::real::simd_best().label(),
            match crate::model::denormals::state_label() {
                "on" => "flushed to zero",
                "off" => "kept (--no-flush-denormals)",
                _ => "kept (no flush mode on this CPU)",
            },
            if threads == 1 { "" } else { "s" },
            peak_text(crate::train::flops::peak(&device, threads))
        );
    } else {
        eprintln!(
            "device: {}{}",
            crate::model::device_label(&device),
            peak_text(crate::train::flops::peak(&device, 1))
        );
    }
    let job = {
        let (db, config, resume, overwrite) = (cli.db.clone(), config.clone(), args.resume, args.overwrite);
        crate::jobs::spawn("train", move |cancel, events| train::run(&db, &config, resume, overwrite, cancel, events))
    };
    {
        let cancel = job.cancel_flag();
        let _ = ctrlc::set_handler(move || {
            if cancel.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\nstopping at the end of this step and writing a checkpoint (Ctrl-C again to quit now)");
        });
    }
    let bar = super::progress::Progress::new("step", "{spinner} step {pos}/{len} [{bar:30}] {msg} · ETA {eta}");
    let summary = job.wait(|event| match event {
        TrainEvent::Preparing(line) => bar.suspend(|| super::fetch_progress(&line)),
        TrainEvent::Started { run_id, train_pairs, test_pairs, steps, truncated, weights } => {
            bar.println(format!(
                "run {run_id}: {train_pairs} train pairs, {test_pairs} test pairs, {steps} steps{}",
                if truncated > 0 {
                    format!(", {truncated} pairs longer than --max-length are truncated")
                } else {
                    String::new()
                }
            ));
            if config.weight_by_agreement || weights.min != weights.max {
                bar.println(format!("pair weights (mean 1 over the labeled pairs): {weights}"));
            }
            bar.set_length(steps as u64);
        }
        TrainEvent::ReferenceDone { computed, cached } => {
            bar.println(format!("reference log-probs: {computed} computed, {cached} from the cache"))
        }
        TrainEvent::Step { step, metrics } => {
            bar.set(step as u64, step_summary(&metrics));
        }
        TrainEvent::Eval { step, metrics } => {
            bar.println(format!("step {step}: {}", eval_summary(&metrics)));
        }
        TrainEvent::Checkpoint { step, path } => bar.println(format!("step {step}: checkpoint {}", path.display())),
        TrainEvent::Samples { step, count } => {
            bar.println(format!("step {step}: {count} sample answers stored (the TUI's runs screen shows them)"))
        }
    })?;
    bar.finish();
    match &summary.output {
        Some(dir) => {
            println!("run {} finished after {} steps; model in {}", summary.run_id, summary.steps, dir.display())
        }
        None => println!(
            "run {} {} at step {}; continue with `verdict train --resume {}`",
            summary.run_id, summary.status, summary.steps, summary.run_id
        ),
    }
    Ok(if summary.status == RunStatus::Finished { ExitCode::SUCCESS } else { ExitCode::from(130) })
}

/// `, peak 157 GFLOP/s`: what the steps' MFU is measured against, when it is known.
fn peak_text(peak: Option<crate::train::flops::Peak>) -> String {
    match peak {
        Some(p) if p.flops_per_second >= 1e12 => format!(", peak {:.0} TFLOP/s", p.flops_per_second / 1e12),
        Some(p) => format!(", peak {:.0} GFLOP/s", p.flops_per_second / 1e9),
        None => String::new(),
    }
}

/// What a step line shows, in this order: label, metric name, decimals. A method logs only some
/// (SFT no margin or accuracy, KTO its `kl`, ORPO its `nll_loss`); only those present are shown.
const STEP_METRICS: [(&str, &str, usize); 7] = [
    ("loss", "loss", 4),
    ("margin", "rewards/margins", 3),
    ("acc", "rewards/accuracies", 2),
    ("kl", "kl", 4),
    ("nll", "nll_loss", 4),
    ("tok/s", "tokens_per_second", 0),
    ("MFU", "mfu", 1),
];

/// `loss 0.6931 · margin 0.012 · acc 0.50 · 412 tok/s · MFU 3.1%`, with the metrics this step logged.
fn step_summary(metrics: &[(String, f64)]) -> String {
    summary(metrics, "")
}

/// `eval loss 0.6931 · eval margin 0.012 · eval acc 0.50`, with the metrics this evaluation logged.
fn eval_summary(metrics: &[(String, f64)]) -> String {
    summary(metrics, "eval_")
}

fn summary(metrics: &[(String, f64)], prefix: &str) -> String {
    let label = if prefix.is_empty() { "" } else { "eval " };
    STEP_METRICS
        .iter()
        .filter_map(|(name, key, decimals)| {
            let key = format!("{prefix}{key}");
            let value = metrics.iter().find(|(n, _)| *n == key).map(|(_, v)| *v)?;
            value.is_finite().then(|| match *name {
                "tok/s" => format!("{value:.decimals$} tok/s"),
                "MFU" => format!("MFU {:.decimals$}%", 100.0 * value),
                _ => format!("{label}{name} {value:.decimals$}"),
            })
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

pub fn runs_command(cli: &Cli, json: bool) -> anyhow::Result<ExitCode> {
    let store = Store::open(&cli.db, OpenMode::MustExist)?;
    crate::jobs::train::settle_crashed(&store)?;
    let runs = store.runs()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(ExitCode::SUCCESS);
    }
    let show = |x: Option<f64>| x.map(|v| format!("{v:.4}")).unwrap_or_else(|| "–".into());
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.name.clone(),
                r.method.clone(),
                r.status.to_string(),
                r.base_model.clone().unwrap_or_default(),
                r.last_step.map(|s| s.to_string()).unwrap_or_else(|| "–".into()),
                show(r.last_loss),
                show(r.eval_accuracy),
                r.set_hash
                    .as_deref()
                    .map(|h| h[..h.len().min(crate::qa::run_set::SHORT)].to_string())
                    .unwrap_or_else(|| "–".into()),
                r.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            &["id", "name", "method", "status", "base", "step", "loss", "eval acc.", "training set", "error"],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}

/// `verdict logps`: summed log-probs of each pair's answers under a model (and a reference),
/// one JSON line per pair (`train::score`).
pub fn logps_command(
    model_path: Option<&Path>,
    reference: Option<&Path>,
    file: &Path,
    beta: f64,
    max_length: usize,
) -> anyhow::Result<ExitCode> {
    use crate::domain::ImportRecord;
    use crate::model::ChatMessage;
    use crate::train::score::{Pair, logps_lines};
    let parsed = crate::data::import::parse_file(file, None)?;
    if let Some(first) = parsed.errors.first() {
        anyhow::bail!("{first}");
    }
    let pairs = parsed
        .records
        .iter()
        .map(|record| {
            let ImportRecord::Pair { prompt, chosen, rejected, .. } = record else {
                anyhow::bail!("{}: every line needs `chosen` and `rejected`", file.display());
            };
            Ok(Pair {
                messages: prompt.messages.iter().map(|m| ChatMessage::new(&m.role, &m.content)).collect(),
                chosen: chosen.clone(),
                rejected: rejected.clone(),
            })
        })
        .collect::<anyhow::Result<Vec<Pair>>>()?;
    let policy_path = crate::model::resolve_model_path(model_path, &super::fetch_progress)?;
    // The reference is named like --model: a path, or a model found on disk (`verdict model list`).
    let reference = reference.map(|r| crate::model::resolve_model_path(Some(r), &super::fetch_progress)).transpose()?;
    for line in logps_lines(&policy_path, reference.as_deref(), &pairs, beta, max_length)? {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use clap::CommandFactory;

    use super::{eval_summary, step_summary};

    fn metrics(pairs: &[(&str, f64)]) -> Vec<(String, f64)> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn a_steps_progress_line_shows_what_its_method_logs() {
        let dpo = metrics(&[
            ("loss", 0.69314),
            ("rewards/margins", 0.0123),
            ("rewards/accuracies", 0.5),
            ("tokens_per_second", 411.6),
            ("rewards/chosen", 0.1),
            ("mfu", 0.03149),
        ]);
        assert_eq!(step_summary(&dpo), "loss 0.6931 · margin 0.012 · acc 0.50 · 412 tok/s · MFU 3.1%");
        let kto = metrics(&[("loss", 0.5), ("kl", 0.01234), ("rewards/margins", 0.2), ("tokens_per_second", 90.0)]);
        assert_eq!(step_summary(&kto), "loss 0.5000 · margin 0.200 · kl 0.0123 · 90 tok/s");
        let orpo = metrics(&[("loss", 3.85), ("nll_loss", 3.7), ("tokens_per_second", 90.0)]);
        assert_eq!(step_summary(&orpo), "loss 3.8500 · nll 3.7000 · 90 tok/s");
        // SFT's evaluation has no pairs to compare: no accuracy, and never a NaN.
        let sft_eval = metrics(&[("eval_loss", 2.5), ("eval_rewards/accuracies", f64::NAN)]);
        assert_eq!(eval_summary(&sft_eval), "eval loss 2.5000");
        let dpo_eval = metrics(&[("eval_loss", 0.6), ("eval_rewards/margins", 0.1), ("eval_rewards/accuracies", 0.75)]);
        assert_eq!(eval_summary(&dpo_eval), "eval loss 0.6000 · eval margin 0.100 · eval acc 0.75");
    }

    use crate::jobs::train::TrainConfig;
    use crate::jobs::train_config::{FORM_LORA_RANK, OPTIONS, default_text, flag_help};

    /// `verdict train`'s run options (not --config, --resume, --overwrite, --plan, the global ones) with
    /// their help text.
    fn cli_options() -> BTreeMap<String, String> {
        let cli = super::super::Cli::command();
        let train = cli.find_subcommand("train").expect("a train command");
        train
            .get_arguments()
            .filter(|a| !a.is_global_set())
            .filter_map(|a| Some((a.get_long()?.replace('-', "_"), a.get_help()?.to_string())))
            .filter(|(key, _)| !matches!(key.as_str(), "config" | "resume" | "overwrite" | "plan"))
            .collect()
    }

    /// The CLI's flags, the run config file's keys and the TUI form's fields are one set of
    /// options with one set of defaults: the form showed max length 512, evaluation every 10
    /// and a checkpoint every 20 steps as "defaults" while a run without them used 1024, 0, 0.
    #[test]
    fn the_cli_the_run_config_and_the_form_are_one_table_with_one_set_of_defaults() {
        let table: Vec<&str> = OPTIONS.iter().map(|o| o.key).collect();
        let mut sorted = table.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), table.len(), "a key twice in OPTIONS");

        let cli = cli_options();
        assert_eq!(cli.keys().map(String::as_str).collect::<Vec<_>>(), sorted, "--help against OPTIONS");
        for (key, help) in &cli {
            assert_eq!(help, &flag_help(key), "--{key}'s help comes from the table");
        }

        let toml_keys = serde_json::to_value(TrainConfig::default()).unwrap();
        let mut toml_keys: Vec<&str> = toml_keys.as_object().unwrap().keys().map(String::as_str).collect();
        toml_keys.sort_unstable();
        assert_eq!(toml_keys, sorted, "run config keys against OPTIONS");
        // Every key of the table reads back from a run config file.
        for o in OPTIONS {
            let value = serde_json::to_value(TrainConfig::default()).unwrap()[o.key].clone();
            if !value.is_null() {
                let text = toml::to_string(&toml::Table::from_iter([(
                    o.key.to_string(),
                    toml::Value::try_from(value).unwrap(),
                )]))
                .unwrap();
                let read: TrainConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
                assert_eq!(read, TrainConfig::default(), "{text}");
            }
        }

        let store = crate::store::Store::open_in_memory().unwrap();
        let form = crate::tui::form::TrainForm::new(&store, None).unwrap();
        let in_form: Vec<&str> = OPTIONS.iter().filter(|o| o.in_form).map(|o| o.key).collect();
        let fields: Vec<&str> = form.fields.iter().map(|f| f.key).filter(|k| *k != "lora").collect();
        assert_eq!(fields, in_form, "the form's fields, in the table's order");
        for field in form.fields.iter().filter(|f| f.key != "lora") {
            let expected = if field.key == "lora_rank" { FORM_LORA_RANK.to_string() } else { default_text(field.key) };
            assert_eq!(field.text(), expected, "the form's default of {}", field.key);
        }
        for (key, shown) in
            [("max_length", "1024"), ("eval_every", "0"), ("save_every", "0"), ("learning_rate", "5e-6")]
        {
            assert_eq!(form.fields.iter().find(|f| f.key == key).unwrap().text(), shown, "{key}");
        }
        // The form's untouched fields make the default run.
        let mut config = TrainConfig::default();
        for field in &form.fields {
            if !matches!(field.key, "lora" | "lora_rank") {
                config.set_text(field.key, &field.text()).unwrap();
            }
        }
        assert_eq!(config, TrainConfig::default());
    }
}
