//! The model module's error type: every variant says what went wrong and what to do about it.

use std::path::PathBuf;

/// Errors from loading models, tokenizing, rendering chat templates and generating.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "model path {0} does not exist: pass --model with an existing GGUF file or Hugging Face directory, or set VERDICT_MODEL"
    )]
    NotFound(PathBuf),

    #[error(
        "--model {name} is neither an existing file or folder nor one model's name: {candidates} (searched {searched}). \
         Pass a GGUF file or Hugging Face folder, or a name `verdict model list` shows"
    )]
    UnknownModel { name: String, candidates: String, searched: String },

    #[error(
        "{path} is not a usable GGUF file ({reason}): the file may be truncated or of another format; download it again or pass a different --model"
    )]
    BadGguf { path: PathBuf, reason: String },

    #[error(
        "{path}: {reason}; a Hugging Face model directory needs config.json, *.safetensors, tokenizer.json and tokenizer_config.json"
    )]
    BadHfDir { path: PathBuf, reason: String },

    #[error(
        "{path}: unsupported architecture `{arch}`; verdict runs llama-family models (SmolLM2, Llama 3.x, Mistral) and Qwen2.x (docs/models.md lists the families)"
    )]
    UnsupportedArchitecture { path: PathBuf, arch: String },

    #[error(
        "{0}; verdict cannot run this model as configured: use a model without that setting, or one of the configurations listed in docs/models.md"
    )]
    Config(super::arch::ArchError),

    #[error(
        "{path}: no tokenizer found ({reason}); use a GGUF with tokenizer.ggml.* metadata or a directory with tokenizer.json"
    )]
    MissingTokenizer { path: PathBuf, reason: String },

    #[error("tokenizer error: {0}")]
    Tokenizer(String),

    #[error(
        "chat template error: {0}; check the model's chat template (tokenizer_config.json or GGUF tokenizer.chat_template)"
    )]
    ChatTemplate(String),

    #[error(
        "the prompt has {prompt_tokens} tokens but the model's context window is {context} (with {max_new_tokens} new tokens requested); shorten the prompt or lower --max-new-tokens"
    )]
    PromptTooLong { prompt_tokens: usize, max_new_tokens: usize, context: usize },

    #[error("invalid generation parameters: {0}")]
    InvalidParams(String),

    #[error(
        "device {0} is not available in this build: rebuild with --features cuda or --features metal, or use --device cpu"
    )]
    DeviceUnavailable(String),

    #[error(
        "cannot open {device}: {reason}. Check that `nvidia-smi` lists the GPU and that the CUDA libraries are found (LD_LIBRARY_PATH, see docs/gpu.md), or use --device cpu"
    )]
    DeviceFailed { device: String, reason: String },

    #[error("could not fetch the default model: {0}")]
    Fetch(String),

    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Result alias for the model module.
pub type Result<T> = std::result::Result<T, ModelError>;

impl From<super::arch::ArchError> for ModelError {
    fn from(e: super::arch::ArchError) -> Self {
        match e {
            super::arch::ArchError::Unsupported { path, arch } => ModelError::UnsupportedArchitecture { path, arch },
            other => ModelError::Config(other),
        }
    }
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io { path: path.into(), source }
    }
}
