//! One loader of the trainer's network from a path, used by training (`jobs::train`), the
//! implicit rewards (`jobs::rewards`) and `verdict logps`: an HF folder or a GGUF file, its
//! weights dequantized to f32 on the device, refused with the path and the reason when the
//! trainer cannot compute the model.

use std::path::Path;

use candle_core::{DType, Device, Error, Result};

use super::model::Model;
use super::precision::Precision;
use super::weights;

/// Whether the loaded weights train.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    /// Every weight trains (full fine-tuning).
    Trainable,
    /// Frozen: a LoRA run attaches its own adapters, scoring needs none.
    Frozen,
}

/// The network of the model at `path` (an HF folder or a GGUF file) on `device`, computing in
/// `precision` (`Precision::uniform(DType::F32)` to score exactly as the trainer's f32 path).
pub fn load(path: &Path, device: &Device, weights: Weights, precision: Precision) -> Result<Model> {
    let (cfg, tensors) = if path.is_dir() {
        weights::load_hf_dir(path, DType::F32, device)?
    } else {
        weights::load_gguf(path, DType::F32, device)?
    };
    if let Err(why) = cfg.check_supported() {
        return Err(Error::Msg(format!("{}: cannot train this model: {why}", path.display())));
    }
    Model::with_precision(cfg, tensors, weights == Weights::Trainable, precision)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn llama() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/families/llama")
    }

    #[test]
    fn a_folder_loads_with_every_weight_trainable_or_none() -> Result<()> {
        let f32 = Precision::uniform(DType::F32);
        let full = load(&llama(), &Device::Cpu, Weights::Trainable, f32)?;
        let frozen = load(&llama(), &Device::Cpu, Weights::Frozen, f32)?;
        // Embeddings, 2 layers of 9 tensors, the final norm (tied output).
        assert_eq!(full.trainable_vars().len(), 1 + 2 * 9 + 1);
        assert!(frozen.trainable_vars().is_empty());
        let gguf = load(&llama().join("model.gguf"), &Device::Cpu, Weights::Frozen, f32)?;
        assert_eq!(gguf.cfg.model_type, "llama");
        Ok(())
    }

    #[test]
    fn a_model_the_trainer_cannot_compute_is_refused_naming_the_path_and_why() {
        let dir = tempfile::tempdir().unwrap();
        for file in ["config.json", "model.safetensors"] {
            std::fs::copy(llama().join(file), dir.path().join(file)).unwrap();
        }
        let config = dir.path().join("config.json");
        let text = std::fs::read_to_string(&config)
            .unwrap()
            .replace("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3");
        std::fs::write(&config, text).unwrap();
        let Err(error) = load(dir.path(), &Device::Cpu, Weights::Frozen, Precision::uniform(DType::F32)) else {
            panic!("a model with 4 heads over 3 key/value heads was loaded");
        };
        let error = error.to_string();
        assert!(error.starts_with(&format!("{}: cannot train this model: ", dir.path().display())), "{error}");
        assert!(error.contains("num_attention_heads must be a multiple of num_key_value_heads"), "{error}");
    }
}
