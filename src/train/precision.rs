//! Which number formats a training run keeps its weights in and computes in, per device.
//!
//! On the CPU everything is f32: the fused kernels (`fused.rs`, `target_logp.rs`,
//! `adamw_kernel.rs`) are written for it, and candle's CPU bf16 matmul is slower than f32.
//! On a GPU the default is mixed precision the way `torch.autocast` does it: trainable weights
//! (full fine-tuning, LoRA adapters) stay f32 "master" variables, so the optimizer's small
//! updates are not rounded away (a bf16 weight of 0.02 moves only in steps of about 1e-4,
//! a hundred times TRL's default learning rate), and each forward pass casts them to bf16 for
//! the matrix products. Frozen weights (LoRA's base, a reference-only model) are stored in bf16
//! directly: they never change, so they need no master copy. Softmax, RMSNorm statistics and
//! the log-softmax over the vocabulary run in f32 (as `transformers` does in bf16).

use std::str::FromStr;

use candle_core::{DType, Device};

/// What the user asked for (`auto` picks by device).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrecisionChoice {
    #[default]
    Auto,
    F32,
    Bf16,
}

impl FromStr for PrecisionChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "f32" | "fp32" | "float32" => Ok(Self::F32),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            other => Err(format!("unknown dtype `{other}`: use auto, f32 or bf16")),
        }
    }
}

impl std::fmt::Display for PrecisionChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        })
    }
}

/// The dtypes of one run: trainable variables in `master`, activations and frozen weights in
/// `compute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Precision {
    pub master: DType,
    pub compute: DType,
}

impl Precision {
    /// One dtype for everything (the CPU default, and what `Model::new` assumes).
    pub fn uniform(dtype: DType) -> Self {
        Self { master: dtype, compute: dtype }
    }

    /// f32 master weights, bf16 compute.
    pub fn mixed_bf16() -> Self {
        Self { master: DType::F32, compute: DType::BF16 }
    }

    /// What `choice` means on `device`: `auto` is bf16 mixed precision on a GPU, f32 on the CPU.
    pub fn for_device(device: &Device, choice: PrecisionChoice) -> Self {
        match choice {
            PrecisionChoice::F32 => Self::uniform(DType::F32),
            PrecisionChoice::Bf16 => Self::mixed_bf16(),
            PrecisionChoice::Auto if device.is_cpu() => Self::uniform(DType::F32),
            PrecisionChoice::Auto => Self::mixed_bf16(),
        }
    }

    /// Whether activations are a 16-bit float (softmax, norms and log-probs then run in f32).
    pub fn is_half(&self) -> bool {
        is_half(self.compute)
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.master == self.compute {
            write!(f, "{}", dtype_name(self.compute))
        } else {
            write!(f, "{} compute, {} weights", dtype_name(self.compute), dtype_name(self.master))
        }
    }
}

pub(crate) fn is_half(dtype: DType) -> bool {
    matches!(dtype, DType::BF16 | DType::F16)
}

fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::F64 => "f64",
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        _ => "other",
    }
}

/// The compute dtype a training run uses on `device` by default (`auto`): bf16 on a GPU, f32 on
/// the CPU.
pub fn training_dtype(device: &Device) -> DType {
    Precision::for_device(device, PrecisionChoice::Auto).compute
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_f32_on_the_cpu_and_choices_parse() {
        assert_eq!(Precision::for_device(&Device::Cpu, PrecisionChoice::Auto), Precision::uniform(DType::F32));
        assert_eq!(training_dtype(&Device::Cpu), DType::F32);
        let forced = Precision::for_device(&Device::Cpu, "BF16".parse().unwrap());
        assert_eq!((forced.master, forced.compute), (DType::F32, DType::BF16));
        assert!(forced.is_half());
        assert_eq!(forced.to_string(), "bf16 compute, f32 weights");
        assert!("fp8".parse::<PrecisionChoice>().unwrap_err().contains("auto, f32 or bf16"));
        assert_eq!("float32".parse::<PrecisionChoice>(), Ok(PrecisionChoice::F32));
    }
}

#[cfg(test)]
#[path = "precision_tests.rs"]
mod path_tests;
