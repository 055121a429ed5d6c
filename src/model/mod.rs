//! Local model runtime: loading llama-family models (GGUF, Hugging Face safetensors), their
//! tokenizer (tokenizer.json or GGUF metadata) and chat template (minijinja), and reproducible
//! candidate generation with one shared prefill. Knows nothing of the store or the UI.

pub mod arch;
mod chat_template;
mod cpu_ops;
pub mod denormals;
mod dense_cpu;
pub mod discover;
mod error;
pub mod fetch;
pub mod file_hash;
pub mod generate;
pub mod gguf_meta;
mod gguf_tokenizer;
mod go_template;
mod hf_files;
pub mod hub_id;
mod info;
mod jinja_compat;
pub mod llama;
mod load_gguf;
mod load_hf;
mod loaded;
pub mod ollama;
mod options;
pub mod overview;
mod pyjson;
pub mod q8_cpu;
pub mod sampling;
pub mod simd;
pub mod team;
pub mod testing;
mod testing_gguf;
pub mod testing_skip;

#[cfg(test)]
mod tests_arch;
#[cfg(test)]
mod tests_chat_templates;
#[cfg(test)]
mod tests_errors;
#[cfg(test)]
mod tests_families;
#[cfg(test)]
mod tests_families_gguf;
#[cfg(test)]
mod tests_families_logps;
#[cfg(test)]
mod tests_generate_many;
#[cfg(test)]
mod tests_reference;
#[cfg(test)]
mod tests_tiny;
#[cfg(test)]
mod tests_tokenizers;

pub use chat_template::{ChatMessage, ChatTemplate, json_value};
pub use error::{ModelError, Result};
pub use generate::{
    Candidate, DEFAULT_BATCH_ROWS, FinishReason, GenerateParams, GenerationProgress, Request, RequestEvent,
};
pub use info::{ModelFormat, ModelInfo, SpecialTokens};
pub use options::{DeviceChoice, LoadOptions, configure_threads, default_threads, device_label};

use candle_core::{Device, Tensor};
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

/// Whether `path` is a file starting with GGUF's magic (`GGUF`), whatever its name: Ollama's
/// blobs are `sha256-<hex>`.
pub fn is_gguf_file(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == b"GGUF"
}

/// The model to use: `explicit` (`--model`), else `VERDICT_MODEL`, else the default model,
/// fetched on first use. A value that is no existing path is looked up by name among the models
/// found on disk (`discover`: `qwen3:8b` from Ollama, `org/name` from the Hugging Face cache). `progress` gets the download's steps in words (one line each): the
/// CLI prints them, a job turns them into its events; nothing here prints.
pub fn resolve_model_path(explicit: Option<&Path>, progress: &dyn Fn(&str)) -> Result<PathBuf> {
    resolve_with(explicit, std::env::var_os("VERDICT_MODEL").map(PathBuf::from), progress)
}

/// `resolve_model_path` with the environment and progress output passed in (for tests).
pub fn resolve_with(explicit: Option<&Path>, env: Option<PathBuf>, progress: &dyn Fn(&str)) -> Result<PathBuf> {
    resolve_in(explicit, env, &discover::Roots::from_env(), progress)
}

/// `resolve_with` searching `roots` for names. A value written as a path (absolute, or starting
/// with `.` or `~`) is only a path.
pub fn resolve_in(
    explicit: Option<&Path>,
    env: Option<PathBuf>,
    roots: &discover::Roots,
    progress: &dyn Fn(&str),
) -> Result<PathBuf> {
    let Some(p) = explicit.map(Path::to_path_buf).or(env.filter(|p| !p.as_os_str().is_empty())) else {
        return fetch::fetch_default(progress);
    };
    let text = p.to_string_lossy();
    if p.exists() || p.is_absolute() || text.starts_with('.') || text.starts_with('~') {
        return if p.exists() { Ok(p) } else { Err(ModelError::NotFound(p)) };
    }
    let found = discover::discover(roots);
    match discover::find(&text, &found) {
        Ok(f) => Ok(f.path.clone()),
        Err(candidates) => {
            Err(ModelError::UnknownModel { name: text.into_owned(), candidates, searched: roots.describe() })
        }
    }
}

/// A loaded model, ready to tokenize, render chats and generate.
pub struct Model {
    info: ModelInfo,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    net: llama::Transformer,
    arch: arch::ArchConfig,
    device: Device,
}

/// A model's tokenizer, chat template and architecture without its weights (`Model::frame`):
/// what a training run keeps to generate its samples with its own weights, so the base's
/// weights are not held a second time for the whole run.
#[derive(Clone)]
pub struct Frame {
    info: ModelInfo,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    skeleton: llama::Skeleton,
    arch: arch::ArchConfig,
    device: Device,
}

impl Frame {
    /// The model with weights under HF names, one tensor per projection, each made by `get`
    /// when it is needed (`llama::Skeleton::with_hf_weights`): how a training run generates
    /// samples from its current weights.
    pub fn with_hf_weights(
        &self,
        get: &dyn Fn(&str) -> candle_core::Result<Option<Tensor>>,
        form: llama::WeightForm,
    ) -> Result<Model> {
        Ok(Model {
            info: self.info.clone(),
            tokenizer: self.tokenizer.clone(),
            template: self.template.clone(),
            net: self.skeleton.with_hf_weights(get, form)?,
            arch: self.arch.clone(),
            device: self.device.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("info", &self.info).finish_non_exhaustive()
    }
}

impl Model {
    /// Loads a GGUF file or a Hugging Face directory.
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Model> {
        if !path.exists() {
            return Err(ModelError::NotFound(path.to_path_buf()));
        }
        let device = opts.device.device()?;
        if device.is_cpu() {
            configure_threads(opts.threads);
        }
        let loaded = if path.is_dir() { load_hf::load(path, &device)? } else { load_gguf::load(path, opts, &device)? };
        Model::assemble(path, loaded, device)
    }

    /// The model from what a loader read: the chat template checked against its tokens.
    fn assemble(path: &Path, loaded: loaded::Loaded, device: Device) -> Result<Model> {
        let source = &loaded.info.chat_template_source;
        // "/m/tokenizer_config.json" for a folder's file, "/m/x.gguf (GGUF tokenizer.chat_template)".
        let origin = match path.is_dir() && !source.contains(' ') {
            true => path.join(source).display().to_string(),
            false => format!("{} ({source})", path.display()),
        };
        let template = ChatTemplate::from_model(&loaded.info.chat_template, &loaded.info.special_tokens, &origin)?;
        Ok(Model {
            info: loaded.info,
            tokenizer: loaded.tokenizer,
            template,
            net: loaded.net,
            arch: loaded.arch,
            device,
        })
    }

    /// What a training run needs of the model: tokenizer, chat template, info and architecture.
    /// An HF folder's weights are left unread (`load_hf::load_with`; the run's samples bring
    /// their own, `with_hf_weights`); a GGUF's load as stored (quantized, as `load` with
    /// `dequantize: false`).
    pub fn load_frame(path: &Path, opts: &LoadOptions) -> Result<Model> {
        if !path.is_dir() {
            return Model::load(path, opts);
        }
        let device = opts.device.device()?;
        if device.is_cpu() {
            configure_threads(opts.threads);
        }
        Model::assemble(path, load_hf::load_with(path, &device, false)?, device)
    }

    /// This model without its weights: what it takes to assemble it again around other
    /// weights (`Frame::with_hf_weights`).
    pub fn frame(&self) -> Frame {
        Frame {
            info: self.info.clone(),
            tokenizer: self.tokenizer.clone(),
            template: self.template.clone(),
            skeleton: self.net.skeleton(),
            arch: self.arch.clone(),
            device: self.device.clone(),
        }
    }

    /// The rotary settings the model runs with.
    pub fn rope(&self) -> &arch::Rope {
        &self.arch.rope
    }

    /// The family's configuration as read from the file.
    pub fn arch(&self) -> &arch::ArchConfig {
        &self.arch
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The chat rendered with the model's own template, as HF `apply_chat_template(…, tokenize=False)`.
    pub fn render_chat(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.template.render(messages, add_generation_prompt)
    }

    /// Token ids of `text`, special tokens in it (`<|im_start|>`) matched as single tokens and
    /// nothing added (HF `add_special_tokens=False`, right for rendered chat text).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.tokenizer.encode(text, false).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids, false).map_err(|e| ModelError::Tokenizer(e.to_string()))
    }

    /// Logits of every position of `tokens` from an empty context, [len, vocab] f32 — for
    /// checks against reference implementations and the training code's forward.
    pub fn logits(&self, tokens: &[u32]) -> Result<Tensor> {
        self.check_fits(tokens.len(), 0)?;
        let mut cache = self.net.new_cache();
        Ok(self.net.forward_all(tokens, &mut cache)?)
    }

    pub(crate) fn check_fits(&self, prompt_tokens: usize, max_new_tokens: usize) -> Result<()> {
        if prompt_tokens == 0 {
            return Err(ModelError::InvalidParams("no input tokens: the text encodes to nothing".into()));
        }
        if prompt_tokens >= self.info.context_length {
            return Err(ModelError::PromptTooLong { prompt_tokens, max_new_tokens, context: self.info.context_length });
        }
        Ok(())
    }
}
