//! `verdict model fetch|list|info` and `verdict generate`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use super::{Cli, GenerateArgs, ModelCommand};
use crate::jobs::generate::{self, GenerateEvent, GenerateJob};
use crate::model::{self, DeviceChoice, GenerateParams, LoadOptions, Model};
use crate::store::{OpenMode, Store, TargetFilter};
use crate::table;

pub fn model_command(cli: &Cli, command: &ModelCommand) -> anyhow::Result<ExitCode> {
    match command {
        ModelCommand::Fetch => {
            let path = model::fetch::fetch_default(&super::fetch_progress)?;
            println!("{}", path.display());
        }
        ModelCommand::List => {
            let default = model::fetch::default_model_path()?;
            println!(
                "default: {} ({})",
                default.display(),
                if default.is_file() { "fetched" } else { "not fetched yet: `verdict model fetch`" }
            );
            let mut paths = vec![default.clone()];
            if let Ok(store) = Store::open(&cli.db, OpenMode::MustExist) {
                paths.extend(store.models()?.into_iter().map(|m| PathBuf::from(m.path)));
            }
            print_overviews(&paths);
            print_found(&model::discover::Roots::from_env());
            if let Ok(store) = Store::open(&cli.db, OpenMode::MustExist) {
                let rows: Vec<Vec<String>> = store
                    .models()?
                    .into_iter()
                    .map(|m| {
                        vec![
                            m.id.to_string(),
                            m.name,
                            m.format,
                            m.quantization.unwrap_or_default(),
                            m.responses.to_string(),
                            m.sha256[..12].to_string(),
                            m.path,
                        ]
                    })
                    .collect();
                if !rows.is_empty() {
                    print!(
                        "\n{}",
                        table::render(&["id", "name", "format", "ran as", "responses", "sha256", "path"], &rows)
                    );
                }
            }
        }
        ModelCommand::Info { path, device } => {
            let path = model::resolve_model_path(path.as_deref(), &super::fetch_progress)?;
            let opts = LoadOptions { device: *device, ..LoadOptions::default() };
            let model = Model::load(&path, &opts)?;
            print_info(model.info(), model.arch());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One row per model on disk (the default, the store's): family, size, rope, context, template.
fn print_overviews(paths: &[PathBuf]) {
    let mut seen = std::collections::HashSet::new();
    let rows: Vec<Vec<String>> = paths
        .iter()
        .filter(|p| p.exists() && seen.insert((*p).clone()))
        .map(|p| match model::overview::overview(p) {
            Ok(o) => vec![
                o.arch.family.name().to_string(),
                model::overview::human_bytes(o.bytes),
                o.arch.rope.describe(),
                o.arch.context().to_string(),
                o.template,
                if o.arch.family.runs() { "yes" } else { "no" }.to_string(),
                p.display().to_string(),
            ],
            Err(e) => {
                vec!["?".into(), "".into(), e.to_string(), "".into(), "".into(), "no".into(), p.display().to_string()]
            }
        })
        .collect();
    if !rows.is_empty() {
        print!("\n{}", table::render(&["family", "size", "rope", "context", "template", "runs", "path"], &rows));
    }
}

/// The models other tools keep on disk, by the name `--model` takes.
fn print_found(roots: &model::discover::Roots) {
    let found = model::discover::discover(roots);
    if found.is_empty() {
        println!(
            "\nno models found in the Hugging Face cache, llama.cpp's cache, Ollama or LM Studio (searched {})",
            roots.describe()
        );
        return;
    }
    let rows: Vec<Vec<String>> = found
        .iter()
        .map(|f| {
            let (family, size) = match model::overview::overview(&f.path) {
                Ok(o) => (o.arch.family.name().to_string(), model::overview::human_bytes(o.bytes)),
                Err(e) => (format!("? ({})", e.to_string().chars().take(60).collect::<String>()), String::new()),
            };
            vec![f.source.label().to_string(), f.name.clone(), family, size, f.path.display().to_string()]
        })
        .collect();
    println!("\nfound on disk (pass the name as --model):");
    print!("{}", table::render(&["source", "name", "family", "size", "path"], &rows));
}

fn print_info(info: &model::ModelInfo, arch: &model::arch::ArchConfig) {
    let s = &info.special_tokens;
    let show = |t: &Option<String>| t.clone().unwrap_or_else(|| "–".into());
    println!("path:            {}", info.path.display());
    println!("name:            {}", info.name.as_deref().unwrap_or("–"));
    println!("format:          {:?}", info.format);
    println!("architecture:    {}", info.architecture);
    println!("runs:            generate, logps and training (full and LoRA) as family {}", arch.family.name());
    println!("rope:            {}", arch.rope.describe());
    if let Some(window) = arch.sliding_window {
        println!("sliding window:  {window} (verdict's context stops there)");
    }
    println!("tied embeddings: {}", if arch.tie_word_embeddings { "yes" } else { "no" });
    println!("chat format:     {}", model::overview::template_kind(&info.chat_template));
    println!("parameters:      {} ({:.1} M)", info.parameters, info.parameters as f64 / 1e6);
    println!("layers, hidden:  {}, {}", info.layers, info.hidden_size);
    println!("quantization:    {} stored, runs as {}", info.quantization, info.run_quantization);
    match arch.max_position_embeddings {
        n if n != info.context_length => println!("context length:  {} ({n} configured)", info.context_length),
        _ => println!("context length:  {}", info.context_length),
    }
    println!("vocabulary:      {}", info.vocab_size);
    println!(
        "special tokens:  bos {} · eos {} · end of turn {} · pad {}",
        show(&s.bos),
        show(&s.eos),
        show(&s.eot),
        show(&s.pad)
    );
    println!("stop token ids:  {:?}", s.stop_ids);
    println!("sha256:          {}", info.sha256);
    println!("chat template ({}):\n{}", info.chat_template_source, info.chat_template);
}

pub fn generate_command(cli: &Cli, args: &GenerateArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open(&cli.db, OpenMode::MustExist)?;
    drop(store);
    let model_path = model::resolve_model_path(args.model.as_deref(), &super::fetch_progress)?;
    let job = job_from_args(&cli.db, model_path, args);
    let job = crate::jobs::spawn("generate", move |cancel, events| generate::run(&job, cancel, events));
    {
        let cancel = job.cancel_flag();
        // First Ctrl-C: finish the token in flight and keep what is done. Second: quit now.
        let _ = ctrlc::set_handler(move || {
            if cancel.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\nstopping after the current token; finished candidates are kept (Ctrl-C again to quit now)");
        });
    }
    let bar = super::progress::Progress::new("prompt", "{spinner} {pos}/{len} prompts [{bar:30}] {msg} · ETA {eta}");
    let summary = job.wait(|event| match event {
        GenerateEvent::Started { model, run_quantization, prompts } => {
            bar.println(format!("{model} (runs as {run_quantization}): {prompts} prompts need candidates"));
            bar.set_length(prompts as u64);
        }
        GenerateEvent::Progress { tokens_per_sec, tokens, .. } => {
            bar.set_message(format!("{tokens} tokens · {tokens_per_sec:.1} tok/s"));
        }
        GenerateEvent::PromptDone { .. } => bar.inc(1),
        GenerateEvent::PromptFailed { prompt_id, error } => bar.println(format!("prompt {prompt_id}: {error}")),
    })?;
    bar.finish();
    println!(
        "{} ({} duplicates and {} empty not stored, {} prompts failed) · {} tokens in {:.1} s ({:.1} tok/s){}",
        summary.headline(),
        summary.duplicates,
        summary.empty,
        summary.failed,
        summary.tokens,
        summary.seconds,
        summary.tokens as f64 / summary.seconds.max(1e-9),
        if summary.cancelled { " · stopped early" } else { "" }
    );
    Ok(if summary.cancelled { ExitCode::from(130) } else { ExitCode::SUCCESS })
}

pub fn job_from_args(db: &Path, model: PathBuf, args: &GenerateArgs) -> GenerateJob {
    GenerateJob {
        db: db.to_path_buf(),
        model,
        load: LoadOptions { device: args.device, threads: args.threads, ..LoadOptions::default() },
        params: GenerateParams {
            candidates: args.candidates,
            temperature: args.temperature,
            top_p: args.top_p,
            top_k: args.top_k,
            repeat_penalty: args.repeat_penalty,
            repeat_last_n: 64,
            max_new_tokens: args.max_new_tokens,
            seed: args.seed,
        },
        filter: TargetFilter {
            prompt_ids: args.prompt.clone(),
            language: args.language.clone(),
            domain: args.domain.clone(),
            split: args.split.clone(),
            below: args.candidates,
            limit: args.limit,
        },
        batch_rows: args.batch_rows,
    }
}

/// The device option's parser for clap.
pub fn parse_device(s: &str) -> Result<DeviceChoice, String> {
    s.parse::<DeviceChoice>().map_err(|e| e.to_string())
}
