//! `verdict export --ollama DIR [--run N | --model F] [--quant T]`: finds the run's model folder
//! and base GGUF in the store, and calls `train::export_ollama`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use candle_core::quantized::GgmlDType;

use super::Cli;
use crate::store::{OpenMode, Store};
use crate::train::export_ollama::{OllamaSource, export_ollama};

/// The run's model folder and the base model it was trained from: run `run`, or the latest
/// finished run.
fn run_paths(cli: &Cli, run: Option<i64>) -> anyhow::Result<(i64, PathBuf, PathBuf)> {
    let store = Store::open(&cli.db, OpenMode::MustExist)?;
    let runs = store.runs()?;
    let row = match run {
        Some(id) => runs
            .into_iter()
            .find(|r| r.id == id)
            .with_context(|| format!("there is no run {id}; see `verdict runs`"))?,
        None => runs.into_iter().rev().find(|r| r.output_model_id.is_some()).context(
            "no training run has finished with a model yet: train one (`verdict train`), or pass --model FILE.gguf",
        )?,
    };
    let models = store.models()?;
    let path_of =
        |id: Option<i64>| id.and_then(|id| models.iter().find(|m| m.id == id)).map(|m| PathBuf::from(&m.path));
    let Some(model_dir) = path_of(row.output_model_id) else {
        bail!("run {} has no model (status {}): export a finished run, see `verdict runs`", row.id, row.status);
    };
    let base = path_of(row.base_model_id).with_context(|| format!("run {} records no base model", row.id))?;
    Ok((row.id, model_dir, base))
}

pub fn ollama(
    cli: &Cli,
    dir: &Path,
    run: Option<i64>,
    model: Option<&Path>,
    quant: Option<GgmlDType>,
) -> anyhow::Result<ExitCode> {
    let done = match model {
        Some(named) => {
            // A path, or a model found on disk by name: an Ollama blob has no .gguf extension,
            // so the file's magic says whether it is a GGUF.
            let file = &crate::model::resolve_model_path(Some(named), &super::fetch_progress)?;
            if file.is_dir() || !crate::model::is_gguf_file(file) {
                bail!(
                    "--model {} is not a GGUF file: Ollama imports GGUF; convert an HF folder with llama.cpp's \
                     convert_hf_to_gguf.py, or export a run with --run",
                    file.display()
                );
            }
            export_ollama(OllamaSource::Gguf(file), quant, dir)?
        }
        None => {
            let (id, model_dir, base) = run_paths(cli, run)?;
            if !base.is_file() {
                bail!(
                    "run {id} was trained from the HF folder {}: an Ollama export needs a GGUF base for the \
                     tokenizer metadata; convert {} with llama.cpp's convert_hf_to_gguf.py and pass --model",
                    base.display(),
                    model_dir.display()
                );
            }
            eprintln!("run {id}: {}", model_dir.display());
            export_ollama(OllamaSource::Run { model_dir: &model_dir, base: &base }, quant, dir)?
        }
    };
    let how = if done.quantized { "quantized from the trained weights" } else { "copied" };
    eprintln!("wrote {} ({how})", done.gguf.display());
    eprintln!(
        "wrote {}: chat template checked on {} conversations, {} stop tokens{}",
        done.modelfile.display(),
        done.chat.checked,
        done.chat.stops.len(),
        if done.chat.system.is_some() { ", the template's default system prompt as SYSTEM" } else { "" }
    );
    eprintln!("run it: ollama create NAME -f {}", done.modelfile.display());
    Ok(ExitCode::SUCCESS)
}
