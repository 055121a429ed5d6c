//! `verdict export --ollama DIR`: a GGUF and an Ollama Modelfile beside it (`model::ollama`
//! writes the text: `FROM`, the chat template as a Go template, `SYSTEM`, stop tokens), so a
//! tuned model runs in Ollama with the template it was trained on: `ollama create NAME -f
//! DIR/Modelfile`.

use std::path::{Path, PathBuf};

use candle_core::quantized::GgmlDType;
use candle_core::{Device, Error, Result};

use super::export_gguf::{GgufQuant, export_gguf, type_name};
use crate::model::ollama::{self, OllamaChat};

/// The model to export.
#[derive(Debug, Clone, Copy)]
pub enum OllamaSource<'a> {
    /// A finished run's model folder (`model.safetensors`, `model.<TYPE>.gguf`) and the GGUF it
    /// was trained from (for its metadata when the folder lacks the wanted type).
    Run { model_dir: &'a Path, base: &'a Path },
    /// A GGUF file, used as it is.
    Gguf(&'a Path),
}

/// What was written.
#[derive(Debug)]
pub struct OllamaExport {
    pub gguf: PathBuf,
    pub modelfile: PathBuf,
    pub chat: OllamaChat,
    /// Whether the GGUF was quantized here (rather than copied).
    pub quantized: bool,
}

/// The GGUF types `--quant` accepts, by llama.cpp's name in lower case (`q8_0`, `q4_k`, `f16`).
pub fn parse_quant(name: &str) -> std::result::Result<GgmlDType, String> {
    use GgmlDType::*;
    let types = [F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2K, Q3K, Q4K, Q5K, Q6K];
    types.into_iter().find(|t| type_name(*t).eq_ignore_ascii_case(name)).ok_or_else(|| {
        let names: Vec<String> = types.iter().map(|t| type_name(*t).to_lowercase()).collect();
        format!("unknown GGUF type {name:?}; one of {}", names.join(", "))
    })
}

fn io(e: std::io::Error, what: &Path) -> Error {
    Error::Msg(format!("{}: {e}", what.display()))
}

/// Copies `from` to `to` through a temporary file, so a failed copy leaves nothing half-written.
fn copy_atomic(from: &Path, to: &Path) -> Result<()> {
    let tmp = to.with_extension("gguf.tmp");
    let result = std::fs::copy(from, &tmp).and_then(|_| std::fs::rename(&tmp, to));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| io(e, to))
}

/// Writes `dir/model.<TYPE>.gguf` and `dir/Modelfile`. For a run, `quant` picks the type
/// (default Q8_0): the run's own file of that type is copied, else its trained weights
/// (`model.safetensors`) are quantized to it. A GGUF file is copied as it is (`quant` must be
/// None: re-quantizing an already quantized file would lose precision).
pub fn export_ollama(source: OllamaSource, quant: Option<GgmlDType>, dir: &Path) -> Result<OllamaExport> {
    std::fs::create_dir_all(dir).map_err(|e| io(e, dir))?;
    let (gguf, quantized) = match source {
        OllamaSource::Gguf(path) => {
            if let Some(t) = quant {
                candle_core::bail!(
                    "--quant {} re-quantizes a training run's weights; for a GGUF file use llama.cpp's llama-quantize \
                     first, or export with --run",
                    type_name(t).to_lowercase()
                );
            }
            let name = path.file_name().ok_or_else(|| Error::Msg(format!("{} is not a file", path.display())))?;
            // Ollama's own blobs are `sha256-<hex>`: the copy gets a name that says what it is.
            let is_gguf_name = Path::new(name).extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
            let out = if is_gguf_name { dir.join(name) } else { dir.join("model.gguf") };
            copy_atomic(path, &out)?;
            (out, false)
        }
        OllamaSource::Run { model_dir, base } => {
            let t = quant.unwrap_or(GgmlDType::Q8_0);
            let name = format!("model.{}.gguf", type_name(t));
            let out = dir.join(&name);
            let written = model_dir.join(&name);
            if written.is_file() {
                copy_atomic(&written, &out)?;
                (out, false)
            } else {
                let weights = model_dir.join("model.safetensors");
                // Mapped, and read one tensor at a time as the GGUF is written.
                // SAFETY: the run's own output file, which nothing writes while it is exported.
                let mapped = unsafe { candle_core::safetensors::MmapedSafetensors::new(&weights) }
                    .map_err(|e| Error::Msg(format!("{}: {}", weights.display(), super::error_text(&e))))?;
                export_gguf(&MappedTensors(mapped), base, GgufQuant::Uniform(t), &out)?;
                (out, true)
            }
        }
    };
    let chat = ollama::from_gguf(&gguf).map_err(|e| Error::Msg(format!("{}: {e}", gguf.display())))?;
    let name = gguf.file_name().expect("a file").to_string_lossy().to_string();
    let modelfile = dir.join("Modelfile");
    std::fs::write(&modelfile, ollama::modelfile(&name, &chat)).map_err(|e| io(e, &modelfile))?;
    Ok(OllamaExport { gguf, modelfile, chat, quantized })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quant_names_parse_in_either_case_and_unknown_ones_list_the_choices() {
        assert_eq!(parse_quant("q8_0"), Ok(GgmlDType::Q8_0));
        assert_eq!(parse_quant("Q4_K"), Ok(GgmlDType::Q4K));
        let err = parse_quant("q3").unwrap_err();
        assert!(err.contains("q8_0") && err.contains("q6_k"), "{err}");
    }

    /// A run folder: its trained weights quantized to a type it lacks, and the Modelfile beside.
    #[test]
    fn a_run_folder_exports_a_quantized_gguf_with_a_modelfile() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let (gguf, hf) = crate::model::testing::write_tiny_models(tmp.path()).map_err(Error::wrap)?;
        let out = tmp.path().join("ollama");
        let done = export_ollama(OllamaSource::Run { model_dir: &hf, base: &gguf }, Some(GgmlDType::Q4_0), &out)?;
        assert!(done.quantized);
        assert_eq!(done.gguf, out.join("model.Q4_0.gguf"));
        let text = std::fs::read_to_string(&done.modelfile)?;
        assert!(text.contains("FROM ./model.Q4_0.gguf\n") && text.contains("PARAMETER stop \"<|im_end|>\""), "{text}");
        // The file loads and its template is the source's.
        let model =
            crate::model::Model::load(&done.gguf, &crate::model::LoadOptions::default()).map_err(Error::wrap)?;
        assert_eq!(model.info().chat_template, crate::model::testing::SMOLLM2_CHAT_TEMPLATE);

        let copied = export_ollama(OllamaSource::Gguf(&gguf), None, &tmp.path().join("copy"))?;
        assert!(!copied.quantized);
        assert_eq!(std::fs::read(&copied.gguf)?, std::fs::read(&gguf)?);
        let err = export_ollama(OllamaSource::Gguf(&gguf), Some(GgmlDType::Q8_0), &tmp.path().join("x")).unwrap_err();
        assert!(err.to_string().contains("llama-quantize"), "{err}");
        Ok(())
    }
}

/// A run's `model.safetensors`, mapped: `export_gguf` reads one tensor at a time from it.
struct MappedTensors(candle_core::safetensors::MmapedSafetensors);

impl super::export_gguf::Trained for MappedTensors {
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.0.tensors().into_iter().map(|(n, _)| n).collect();
        names.sort();
        names
    }

    fn tensor(&self, hf_name: &str) -> Result<candle_core::Tensor> {
        self.0.load(hf_name, &Device::Cpu)
    }
}
