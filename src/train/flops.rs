//! Model FLOPs of a training step and the device's peak, for the FLOP/s and the model FLOPs
//! utilisation (MFU) stored with every step.
//!
//! The count is the model's, PaLM-style (Chowdhery et al. 2022, appendix B): the matmuls of
//! the projections, the attention scores and their weighted sums, and the output projection,
//! at two FLOPs per multiply-add — not the hardware's (a checkpointed layer's recomputation,
//! norms, rotary and softmax are left out), so MFU compares runs and tools fairly whatever
//! they recompute. Only the positions verdict computes count: a packed pair's prompt once, the
//! output projection at the response positions alone (`head_logp.rs`).
//!
//! The backward costs twice the forward for what needs gradients of both its input and its
//! weights (full fine-tuning) and once for a frozen projection with LoRA (the input's gradient
//! only; the rank-16 adapters add under 1% and are left out).

use super::config::Config;

/// What one forward pass computes, counted when its batch is built (`batch.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Work {
    /// Tokens through the decoder layers.
    pub tokens: usize,
    /// (query, key) pairs attended, over all rows: `n (n + 1) / 2` for a causal row of `n`.
    pub attended: usize,
    /// Positions whose logits are computed.
    pub head_rows: usize,
}

/// Forward FLOPs of the decoder layers' projections per token.
fn projection_flops_per_token(cfg: &Config) -> f64 {
    let (h, i) = (cfg.hidden_size as f64, cfg.intermediate_size as f64);
    let (heads, kv_heads, head_dim) = (cfg.num_attention_heads as f64, cfg.n_kv_heads() as f64, cfg.head_dim() as f64);
    // q and o: h x heads*d; k and v: h x kv_heads*d; gate, up and down: h x i.
    let per_layer = h * head_dim * (2.0 * heads + 2.0 * kv_heads) + 3.0 * h * i;
    2.0 * per_layer * cfg.num_hidden_layers as f64
}

/// Forward FLOPs of the attention itself (scores and weighted values) per (query, key) pair.
fn attention_flops_per_pair(cfg: &Config) -> f64 {
    let head_dim = cfg.head_dim() as f64;
    // q·k and p·v: two multiply-adds per head dimension, each layer, each query head.
    4.0 * head_dim * cfg.num_attention_heads as f64 * cfg.num_hidden_layers as f64
}

/// FLOPs of one forward pass over `work`.
pub fn forward(cfg: &Config, work: &Work) -> f64 {
    projection_flops_per_token(cfg) * work.tokens as f64
        + attention_flops_per_pair(cfg) * work.attended as f64
        + 2.0 * (cfg.hidden_size * cfg.vocab_size) as f64 * work.head_rows as f64
}

/// FLOPs of a forward and backward pass over `work`: `full` when the base weights train,
/// otherwise (LoRA) only the activations' gradients flow back through them.
pub fn training(cfg: &Config, work: &Work, full: bool) -> f64 {
    let weights = projection_flops_per_token(cfg) * work.tokens as f64
        + 2.0 * (cfg.hidden_size * cfg.vocab_size) as f64 * work.head_rows as f64;
    let attention = attention_flops_per_pair(cfg) * work.attended as f64;
    // Attention has no weights: its backward is the gradients of q, k and v, twice its forward.
    weights * if full { 3.0 } else { 2.0 } + attention * 3.0
}

/// The device's peak dense FLOP/s for what training computes, and where the number comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Peak {
    pub flops_per_second: f64,
    pub source: String,
}

/// FLOPs per cycle and core of f32 fused multiply-adds: two FMA pipes of the vector width,
/// except on AMD's Zen 4, which runs AVX-512 on 256-bit pipes (family 25: Zen 3 and Zen 4).
pub fn f32_flops_per_cycle(simd: crate::model::simd::Simd, vendor: &str, family: u32) -> f64 {
    use crate::model::simd::Simd;
    match simd {
        Simd::Avx512 if vendor == "AuthenticAMD" && family < 26 => 32.0,
        Simd::Avx512 => 64.0,
        Simd::Avx2 => 32.0,
        Simd::Baseline => 16.0,
    }
}

/// `vendor_id`, `cpu family` and `cpu MHz` of the first processor in /proc/cpuinfo's text.
fn cpuinfo_fields(text: &str) -> (String, u32, Option<f64>) {
    let field = |name: &str| {
        text.lines()
            .find(|l| l.split(':').next().map(str::trim) == Some(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let vendor = field("vendor_id").unwrap_or_default();
    let family = field("cpu family").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mhz = field("cpu MHz").and_then(|v| v.parse().ok());
    (vendor, family, mhz)
}

/// The CPU's f32 peak with `threads` cores busy: cores x clock x FLOPs per cycle. The clock is
/// the kernel's `cpu MHz` (the base clock on most virtual machines; turbo can exceed it, so
/// an MFU near 1 is possible). None where /proc/cpuinfo says nothing (not Linux).
pub fn cpu_peak(threads: usize) -> Option<Peak> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let (vendor, family, mhz) = cpuinfo_fields(&text);
    let simd = crate::model::simd::simd_best();
    let per_cycle = f32_flops_per_cycle(simd, &vendor, family);
    let mhz = mhz?;
    Some(Peak {
        flops_per_second: threads as f64 * mhz * 1e6 * per_cycle,
        source: format!(
            "{threads} core{} x {:.2} GHz x {per_cycle:.0} f32 FLOPs/cycle ({})",
            if threads == 1 { "" } else { "s" },
            mhz / 1000.0,
            simd.label()
        ),
    })
}

/// Dense bf16 tensor-core peaks of the GPUs people train on, by a part of their name, in
/// TFLOP/s (the vendors' data sheets, without sparsity).
const GPU_PEAKS: &[(&str, f64)] = &[
    ("H200", 989.0),
    ("H100", 989.0),
    ("GH200", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10", 125.0),
    ("RTX 4090", 165.0),
    ("RTX 3090", 71.0),
    ("V100", 125.0),
];

/// The peak of a GPU by its name (`nvidia-smi`'s), when it is in the table.
pub fn gpu_peak_by_name(name: &str) -> Option<Peak> {
    GPU_PEAKS.iter().find(|(part, _)| name.contains(part)).map(|(_, tflops)| Peak {
        flops_per_second: tflops * 1e12,
        source: format!("{name}: {tflops:.0} dense bf16 TFLOP/s"),
    })
}

/// The peak for the run's device: `VERDICT_PEAK_TFLOPS` when set (any device the table does
/// not know), else the CPU's or the GPU's. None when it cannot be told: MFU is then not stored.
pub fn peak(device: &candle_core::Device, threads: usize) -> Option<Peak> {
    if let Some(tflops) = std::env::var("VERDICT_PEAK_TFLOPS").ok().and_then(|v| v.parse::<f64>().ok()) {
        return Some(Peak { flops_per_second: tflops * 1e12, source: format!("VERDICT_PEAK_TFLOPS={tflops}") });
    }
    if device.is_cpu() {
        return cpu_peak(threads);
    }
    let out = std::process::Command::new("nvidia-smi").args(["--query-gpu=name", "--format=csv,noheader"]).output();
    let name = String::from_utf8(out.ok()?.stdout).ok()?;
    gpu_peak_by_name(name.lines().next()?.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::simd::Simd;

    /// Qwen2.5-0.5B's published configuration (the keys the count reads).
    fn qwen25_05b() -> Config {
        Config::from_json(
            r#"{"model_type":"qwen2","hidden_size":896,"intermediate_size":4864,
            "num_hidden_layers":24,"num_attention_heads":14,"num_key_value_heads":2,
            "vocab_size":151936,"rms_norm_eps":1e-6,"rope_theta":1000000.0,
            "tie_word_embeddings":true,"max_position_embeddings":32768}"#,
        )
        .unwrap()
    }

    #[test]
    fn a_forward_costs_two_flops_per_weight_and_token_plus_attention() {
        let cfg = qwen25_05b();
        // Qwen2.5-0.5B's decoder projections hold 357,826,560 weights (24 layers x (896 x 64 x
        // (2 x 14 + 2 x 2) + 3 x 896 x 4864)), biases aside.
        let one_token = Work { tokens: 1, attended: 0, head_rows: 0 };
        assert_eq!(forward(&cfg, &one_token), 2.0 * 357_826_560.0);
        // The output projection at one response position: 896 x 151,936 multiply-adds.
        let head = Work { tokens: 0, attended: 0, head_rows: 1 };
        assert_eq!(forward(&cfg, &head), 2.0 * 896.0 * 151_936.0);
        // One (query, key) pair: q·k and p·v over 14 heads of 64, in 24 layers.
        let pair = Work { tokens: 0, attended: 1, head_rows: 0 };
        assert_eq!(forward(&cfg, &pair), 4.0 * 64.0 * 14.0 * 24.0);
    }

    #[test]
    fn full_fine_tuning_costs_three_forwards_and_lora_two_plus_attention() {
        let cfg = qwen25_05b();
        let work = Work { tokens: 300, attended: 45_150, head_rows: 200 };
        let f = forward(&cfg, &work);
        assert!((training(&cfg, &work, true) - 3.0 * f).abs() < 1e-6 * f);
        let attention = forward(&cfg, &Work { tokens: 0, attended: 45_150, head_rows: 0 });
        let lora = training(&cfg, &work, false);
        assert!((lora - (2.0 * (f - attention) + 3.0 * attention)).abs() < 1e-6 * f);
        assert!(lora < training(&cfg, &work, true));
    }

    #[test]
    fn the_cpu_peak_follows_the_vector_pipes() {
        assert_eq!(f32_flops_per_cycle(Simd::Avx512, "GenuineIntel", 6), 64.0);
        // Zen 4 (family 25) splits AVX-512 over 256-bit pipes; Zen 5 (26) has full-width ones.
        assert_eq!(f32_flops_per_cycle(Simd::Avx512, "AuthenticAMD", 25), 32.0);
        assert_eq!(f32_flops_per_cycle(Simd::Avx512, "AuthenticAMD", 26), 64.0);
        assert_eq!(f32_flops_per_cycle(Simd::Avx2, "AuthenticAMD", 23), 32.0);
        let text = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n\
                    cpu MHz\t\t: 2445.424\nprocessor\t: 1\ncpu MHz\t\t: 1000.0\n";
        assert_eq!(cpuinfo_fields(text), ("AuthenticAMD".to_string(), 25, Some(2445.424)));
    }

    #[test]
    fn gpus_are_known_by_their_names() {
        let h200 = gpu_peak_by_name("NVIDIA H200").unwrap();
        assert_eq!(h200.flops_per_second, 989e12);
        // L40S before L40 and L4: the first entry contained in the name wins.
        assert_eq!(gpu_peak_by_name("NVIDIA L40S").unwrap().flops_per_second, 362e12);
        assert_eq!(gpu_peak_by_name("NVIDIA L4").unwrap().flops_per_second, 121e12);
        assert!(gpu_peak_by_name("Some Future GPU").is_none());
    }
}
