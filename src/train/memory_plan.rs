//! The memory a training run will take at its peak, predicted from the model's shapes and the
//! run's options before the trainable weights load: weights, gradients and AdamW's moments for
//! what trains, the activations a step keeps for its backward, the chunked logits, and the
//! process's own workspace. `verdict train --plan` prints it; a run whose plan exceeds the
//! memory available is refused with what would make it fit.
//!
//! The model of a step (CPU, f32; measured against `benches/train_memory.sh`, docs/training.md
//! "Memory"): every weight is one f32 tensor (frozen ones too); each trainable one adds its
//! gradient and two AdamW moments (16 bytes a parameter in all); a decoder layer keeps, per token
//! that goes through the model, its two residual inputs and norms, q, k, v, the attention output,
//! gate, up and their product, and with LoRA the adapters' outputs (the CPU's attention keeps no
//! softmax: its backward recomputes it, `attention.rs`; the composed attention a GPU runs keeps
//! one value per head per key); the logits live a chunk of positions at a time (`head_logp.rs`).

use super::config::Config;
use super::frozen::BaseDtype;
use super::head_logp::chunk_rows;

/// Bytes of the process beside the model: the binary, the tokenizer, SQLite, thread stacks,
/// the matrix products' packing buffers (measured with the tiny model: ~130 MiB).
pub const WORKSPACE_BYTES: u64 = 130 << 20;

/// The tokens one micro-batch puts through the model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Workload {
    /// Rows of the micro-batch (a DPO pair is one packed row; SFT one row per answer).
    pub rows: usize,
    /// The longest row, in tokens (rows are right-padded to it).
    pub row_tokens: usize,
    /// Response tokens scored in the micro-batch (the positions whose logits are needed).
    pub response_tokens: usize,
}

impl Workload {
    /// The worst case the options allow, before any example is tokenized (the TUI's form): every
    /// pair of the micro-batch long enough to be cut at `max_length` for both answers. Packed,
    /// a DPO row holds the prompt once and both answers: at most `2 * max_length` tokens.
    pub fn worst(batch_size: usize, max_length: usize, paired: bool) -> Workload {
        let row_tokens = if paired { 2 * max_length } else { max_length };
        Workload { rows: batch_size.max(1), row_tokens, response_tokens: batch_size.max(1) * row_tokens }
    }
}

/// What trains and where.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PlanOptions {
    /// LoRA rank and targets (`q`, `k`, ...); `None`: every weight trains.
    pub lora: Option<(usize, Vec<String>)>,
    /// How a LoRA run keeps the frozen projections (`frozen.rs`; `Auto` counts as f32).
    pub base: BaseDtype,
    /// Bytes of the projections as a GGUF stores them (`None` for an HF folder): what a
    /// quantized base holds.
    pub quantized_bytes: Option<u64>,
    /// Each layer recomputed in the backward (`checkpointing.rs`).
    pub checkpointing: bool,
    /// The attention keeps its softmax for the backward (the composed ops a GPU runs); the
    /// CPU's fused attention recomputes it instead.
    pub softmax_kept: bool,
    /// Whether the run generates sample answers at its evaluations.
    pub samples: bool,
    /// Bytes of the model's weight files as stored (their bytes per parameter size the tensor
    /// in flight while the weights load).
    pub source_bytes: u64,
}

/// One line of the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub name: &'static str,
    pub bytes: u64,
}

/// The predicted peak, part by part.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryPlan {
    pub parts: Vec<Part>,
    /// Parameters of the model and of what trains.
    pub params: u64,
    pub trainable: u64,
    /// The two other phases' peaks: loading (the weights as they train beside the largest
    /// tensor in flight) and writing the tuned model (its f32 tensors beside their serialized
    /// bytes).
    pub loading: u64,
    pub writing: u64,
    /// Generating the sample answers between steps (0 when the run makes none).
    pub sampling: u64,
}

/// Parameters of the model, of its seven projections per layer (weights only), and each
/// projection's `in + out` (what a LoRA adapter of rank 1 on it has).
fn params_of(cfg: &Config) -> (u64, u64, [u64; 7]) {
    let (h, i, v) = (cfg.hidden_size as u64, cfg.intermediate_size as u64, cfg.vocab_size as u64);
    let qd = (cfg.num_attention_heads * cfg.head_dim()) as u64;
    let kvd = (cfg.n_kv_heads() * cfg.head_dim()) as u64;
    // (in, out) of q, k, v, o, gate, up, down as `lora::TARGETS` orders them, folded into in*out.
    let shapes = [(h, qd), (h, kvd), (h, kvd), (qd, h), (h, i), (h, i), (i, h)];
    let per_layer: u64 = shapes.iter().map(|(a, b)| a * b).sum::<u64>()
        + if cfg.qkv_bias() { qd + 2 * kvd } else { 0 }
        + if cfg.o_bias() { h } else { 0 }
        + 2 * h;
    let heads = if cfg.tie_word_embeddings { 1 } else { 2 };
    let total = heads * v * h + cfg.num_hidden_layers as u64 * per_layer + h;
    let mut in_out = [0u64; 7];
    for (slot, (a, b)) in in_out.iter_mut().zip(shapes) {
        *slot = a + b;
    }
    let projections = cfg.num_hidden_layers as u64 * shapes.iter().map(|(a, b)| a * b).sum::<u64>();
    (total, projections, in_out)
}

/// The plan for a model, options and micro-batch.
pub fn plan(cfg: &Config, opts: &PlanOptions, work: &Workload) -> MemoryPlan {
    const F32: u64 = 4;
    let (params, projections, in_out) = params_of(cfg);
    let layers = cfg.num_hidden_layers as u64;
    let (h, i, v) = (cfg.hidden_size as u64, cfg.intermediate_size as u64, cfg.vocab_size as u64);
    let qd = (cfg.num_attention_heads * cfg.head_dim()) as u64;
    let kvd = (cfg.n_kv_heads() * cfg.head_dim()) as u64;
    let (trainable, adapter_outputs) = match &opts.lora {
        None => (params, 0),
        Some((rank, targets)) => {
            let mut n = 0;
            let mut outs = 0;
            for (k, name) in super::lora::TARGETS.iter().enumerate() {
                if targets.iter().any(|t| t.trim().trim_end_matches("_proj") == *name) {
                    n += *rank as u64 * in_out[k];
                    // y + s * (x A^T) B^T: the adapter's product, its scaled copy and the sum.
                    let out = [qd, kvd, kvd, h, i, i, h][k];
                    outs += 3 * out;
                }
            }
            (n * layers, outs)
        }
    };
    let tokens = (work.rows * work.row_tokens) as u64;
    // Kept per token per layer: residual in and after attention, 2 norms, q, k, v, attention
    // output, o's output and the MLP's down output, gate, up and their product; LoRA's outputs;
    // where it is kept, the softmax over the row's keys per head.
    let softmax = match opts.softmax_kept {
        true => cfg.num_attention_heads as u64 * work.row_tokens as u64,
        false => 0,
    };
    let per_token = 6 * h + 2 * qd + 2 * kvd + 3 * i + softmax + adapter_outputs;
    // Checkpointed, a layer keeps only its input; the layer run again in the backward holds its
    // activations and their gradients, one layer at a time. Measured at 0.5B full (512 tokens,
    // 7,761 MiB against 8,583 without) and 1.5B LoRA (1,700-token rows, 4,771 MiB against a plan
    // of 4,856).
    let activations = match opts.checkpointing {
        false => layers * tokens * per_token * F32,
        true => layers * tokens * h * F32 + 2 * tokens * per_token * F32,
    };
    // A LoRA run's frozen projections in bf16 or as the GGUF stores them; the rest in f32.
    let (weights_name, lean) = match (&opts.lora, opts.base) {
        (Some(_), BaseDtype::Bf16) => ("weights (bf16 base)", Some(projections * 2)),
        (Some(_), BaseDtype::Quantized) => {
            ("weights (quantized base)", Some(opts.quantized_bytes.unwrap_or(projections * 2)))
        }
        _ => ("weights (f32)", None),
    };
    let weights = match lean {
        Some(bytes) => (params - projections) * F32 + bytes,
        None => params * F32,
    };
    // The chunk's logits, its softmax gradient and the chunk's scaled gradient.
    let chunk = chunk_rows(cfg.vocab_size).min(work.response_tokens.max(1)) as u64;
    let logits = 3 * chunk * v * F32;
    let parts = vec![
        Part { name: weights_name, bytes: weights },
        Part { name: "gradients", bytes: trainable * F32 },
        Part { name: "AdamW moments", bytes: 2 * trainable * F32 },
        Part { name: "activations", bytes: activations },
        Part { name: "logits (chunked)", bytes: logits },
        Part { name: "workspace", bytes: WORKSPACE_BYTES },
    ];
    // Loading goes tensor by tensor (`weights::each_safetensor`; a GGUF's one at a time): the
    // weights as they will train, plus the largest tensor in flight, the embedding: its bytes as
    // stored, and the tensor made of them when it is not what stays (a bf16 folder's, a GGUF's).
    let stored = match params {
        0 => 4.0,
        p => opts.source_bytes as f64 / p as f64,
    };
    let in_flight = (v * h) as f64 * if stored < 4.0 { 2.0 * stored } else { stored };
    let loading = weights + in_flight as u64 + WORKSPACE_BYTES;
    // Writing: the HF folder goes out one tensor at a time (`safetensors_out`), holding at most
    // one merged or dequantized module beside the model (Phi-3's fused gate_up: its two
    // projections and their stack); a GGUF base's GGUF export too (`export::LazyTensors`: the
    // module and its GGUF-layout copy in flight), but its quantized tensors (Q8_0, the larger
    // of its two files) pile up until the file is written.
    let module = if cfg.family().fused_projections() { 2 * h * i * F32 } else { h * i * F32 };
    let making = if cfg.family().fused_projections() { 2 * module } else { module };
    let writing = weights
        + making
        + WORKSPACE_BYTES
        + match opts.quantized_bytes {
            Some(_) => module + params * 34 / 32,
            None => 0,
        };
    // Sample answers, between steps (`jobs/train/evaluate.rs`): beside the weights and the
    // optimizer's moments, the model assembled from them with its matrices as Q8_0 (34 bytes
    // per 32 weights; the f32 embedding is shared), one merged f32 projection and its Q8_0
    // copy in flight.
    let sampling = match opts.samples {
        true => weights + 2 * trainable * F32 + params * 34 / 32 + 2 * h * i * F32 + WORKSPACE_BYTES,
        false => 0,
    };
    MemoryPlan { parts, params, trainable, loading, writing, sampling }
}

impl MemoryPlan {
    /// The peak of a training step: every part at once.
    pub fn step_peak(&self) -> u64 {
        self.parts.iter().map(|p| p.bytes).sum()
    }

    /// The predicted peak in bytes: the largest of the step, loading, writing and sampling.
    pub fn peak(&self) -> u64 {
        self.step_peak().max(self.loading).max(self.writing).max(self.sampling)
    }

    /// The plan as lines for a terminal: one per part, then the peak.
    pub fn render(&self) -> String {
        let mut out = format!(
            "memory plan: {:.0}M parameters, {:.1}M trained\n",
            self.params as f64 / 1e6,
            self.trainable as f64 / 1e6
        );
        for p in &self.parts {
            out.push_str(&format!("  {:<28} {:>10}\n", p.name, mib(p.bytes)));
        }
        out.push_str(&format!("  {:<28} {:>10}\n", "a training step", mib(self.step_peak())));
        out.push_str(&format!("  {:<28} {:>10}\n", "loading the weights", mib(self.loading)));
        out.push_str(&format!("  {:<28} {:>10}\n", "writing the tuned model", mib(self.writing)));
        if self.sampling > 0 {
            out.push_str(&format!("  {:<28} {:>10}\n", "sample answers (Q8_0)", mib(self.sampling)));
        }
        out.push_str(&format!("  {:<28} {:>10}\n", "predicted peak", mib(self.peak())));
        out
    }
}

/// `1,234 MiB`.
pub fn mib(bytes: u64) -> String {
    let m = bytes >> 20;
    let s = m.to_string();
    let mut out = String::new();
    for (k, c) in s.chars().enumerate() {
        if k > 0 && (s.len() - k).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    format!("{out} MiB")
}

/// The config of a model file or folder without loading its weights (a GGUF's metadata, an HF
/// folder's `config.json`).
pub fn read_config(path: &std::path::Path) -> candle_core::Result<Config> {
    let msg = |e: String| candle_core::Error::Msg(e);
    if path.is_dir() {
        let cfg_path = path.join("config.json");
        let text =
            std::fs::read_to_string(&cfg_path).map_err(|e| msg(format!("cannot read {}: {e}", cfg_path.display())))?;
        return Config::from_hf_json(&cfg_path, &text).map_err(|e| msg(e.to_string()));
    }
    let mut f = std::fs::File::open(path).map_err(|e| msg(format!("cannot open {}: {e}", path.display())))?;
    let content = candle_core::quantized::gguf_file::Content::read(&mut f).map_err(|e| e.with_path(path))?;
    super::weights::gguf_config(path, &content, &mut f)
}

/// Bytes of a model's weight files (a GGUF, or an HF folder's `*.safetensors`): what the
/// inference loader keeps for sample answers, quantized as stored.
pub fn file_bytes(path: &std::path::Path) -> u64 {
    if path.is_file() {
        return std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    }
    std::fs::read_dir(path)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
                .filter_map(|e| e.metadata().ok().map(|m| m.len()))
                .sum()
        })
        .unwrap_or(0)
}

/// Bytes of a GGUF's projection weights as stored (what `--base-dtype quantized` keeps), or
/// `None` for an HF folder or a file that cannot be read.
pub fn quantized_bytes(path: &std::path::Path) -> Option<u64> {
    if !path.is_file() {
        return None;
    }
    let mut f = std::fs::File::open(path).ok()?;
    let content = candle_core::quantized::gguf_file::Content::read(&mut f).ok()?;
    let bytes = content
        .tensor_infos
        .iter()
        .filter(|(name, _)| {
            let module = name.strip_suffix(".weight").and_then(|n| n.rsplit('.').next()).unwrap_or("");
            name.starts_with("blk.")
                && ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"].contains(&module)
        })
        .map(|(_, info)| {
            let d = info.ggml_dtype;
            (info.shape.elem_count() / d.block_size() * d.type_size()) as u64
        })
        .sum();
    Some(bytes)
}

/// Memory the system can give a new allocation now (`MemAvailable` of /proc/meminfo), or `None`
/// where it cannot tell.
pub fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// One change of options, returning what to tell the user, or `None` when it does not apply.
type Change = dyn Fn(&mut PlanOptions, &mut Workload) -> Option<String>;

/// What would bring a plan under `available` bytes: the changes the options offer, taken one
/// after another (sample answers off, gradient checkpointing, which changes only the time, LoRA,
/// a bf16 frozen base, a quantized base where the GGUF has one, one pair per micro-batch, rows
/// half and a quarter as long) until the plan fits, as one piece of advice with the peak it
/// gives; empty when even all of them do not fit.
pub fn advice(cfg: &Config, opts: &PlanOptions, work: &Workload, available: u64) -> Vec<String> {
    let (mut o, mut w) = (opts.clone(), *work);
    let mut steps: Vec<String> = Vec::new();
    let mut changes: Vec<Box<Change>> = vec![
        Box::new(|o, _| {
            o.samples.then(|| {
                o.samples = false;
                "no sample answers (`--eval-every 0`)".to_string()
            })
        }),
        Box::new(|o, _| {
            (!o.checkpointing).then(|| {
                o.checkpointing = true;
                "`--gradient-checkpointing on`".to_string()
            })
        }),
        Box::new(|o, _| {
            o.lora.is_none().then(|| {
                o.lora = Some((16, vec!["q".into(), "k".into(), "v".into(), "o".into()]));
                "LoRA (`--lora-rank 16`)".to_string()
            })
        }),
        Box::new(|o, _| {
            matches!(o.base, BaseDtype::Auto | BaseDtype::F32).then(|| {
                o.base = BaseDtype::Bf16;
                "the frozen base in bf16 (`--base-dtype bf16`)".to_string()
            })
        }),
        Box::new(|o, _| {
            (o.quantized_bytes.is_some() && o.base != BaseDtype::Quantized).then(|| {
                o.base = BaseDtype::Quantized;
                "the frozen base as the GGUF quantized it (`--base-dtype quantized`)".to_string()
            })
        }),
        Box::new(|_, w| {
            (w.rows > 1).then(|| {
                let n = w.rows;
                *w = Workload { rows: 1, response_tokens: w.response_tokens / n, ..*w };
                format!("`--batch-size 1 --grad-accum {n}` (the same pairs per step)")
            })
        }),
    ];
    for label in ["`--max-length` half as long", "`--max-length` a quarter as long"] {
        changes.push(Box::new(move |_, w| {
            (w.row_tokens >= 64).then(|| {
                *w = Workload { row_tokens: w.row_tokens / 2, response_tokens: w.response_tokens / 2, ..*w };
                label.to_string()
            })
        }));
    }
    for change in &changes {
        if let Some(step) = change(&mut o, &mut w) {
            steps.push(step);
            let peak = plan(cfg, &o, &w).peak();
            if peak <= available {
                return vec![format!("{} (predicted peak {})", steps.join(" + "), mib(peak))];
            }
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qwen05() -> Config {
        let text = r#"{"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896,
            "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
            "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "tie_word_embeddings": true,
            "hidden_act": "silu"}"#;
        Config::from_hf_json(std::path::Path::new("config.json"), text).expect("config")
    }

    #[test]
    fn parameters_are_counted_as_the_published_model_has_them() {
        // Qwen2.5-0.5B: 494,032,768 parameters (transformers' num_parameters, tied embeddings).
        let p = plan(
            &qwen05(),
            &PlanOptions { lora: None, samples: false, source_bytes: 0, ..Default::default() },
            &Workload::worst(1, 512, true),
        );
        assert_eq!(p.params, 494_032_768);
        // LoRA r16 on q,k,v,o: 24 layers x 16 x ((896+896) + 2 (896+128) + (896+896)).
        let lora = PlanOptions {
            lora: Some((16, vec!["q".into(), "k".into(), "v".into(), "o".into()])),
            samples: false,
            source_bytes: 0,
            ..Default::default()
        };
        let p = plan(&qwen05(), &lora, &Workload::worst(1, 512, true));
        assert_eq!(p.trainable, 24 * 16 * (1792 + 2 * 1024 + 1792));
    }

    #[test]
    fn full_fine_tuning_costs_sixteen_bytes_a_parameter_and_lora_far_less() {
        let w = Workload { rows: 1, row_tokens: 370, response_tokens: 300 };
        let full =
            plan(&qwen05(), &PlanOptions { lora: None, samples: false, source_bytes: 0, ..Default::default() }, &w);
        let state: u64 = full
            .parts
            .iter()
            .filter(|p| p.name != "activations" && p.name != "logits (chunked)" && p.name != "workspace")
            .map(|p| p.bytes)
            .sum();
        assert_eq!(state, 16 * full.params);
        let lora = PlanOptions {
            lora: Some((16, vec!["q".into(), "v".into()])),
            samples: false,
            source_bytes: 0,
            ..Default::default()
        };
        assert!(plan(&qwen05(), &lora, &w).peak() < full.peak() / 2);
        // Chunked logits stay one chunk's worth however many response tokens a batch has.
        let long = Workload { rows: 8, row_tokens: 370, response_tokens: 2400 };
        let logits = |p: &MemoryPlan| p.parts.iter().find(|p| p.name == "logits (chunked)").unwrap().bytes;
        assert_eq!(logits(&plan(&qwen05(), &lora, &long)), logits(&full));
    }

    #[test]
    fn a_lean_base_and_checkpointing_shrink_their_parts_and_the_advice_offers_them() {
        let cfg = qwen05();
        let w = Workload { rows: 1, row_tokens: 1024, response_tokens: 900 };
        let qkvo = vec!["q".into(), "k".into(), "v".into(), "o".into()];
        let lora = |base, checkpointing| PlanOptions {
            lora: Some((16, qkvo.clone())),
            base,
            checkpointing,
            quantized_bytes: Some(200 << 20),
            ..Default::default()
        };
        let part = |p: &MemoryPlan, prefix: &str| p.parts.iter().find(|x| x.name.starts_with(prefix)).unwrap().bytes;
        let f32_base = plan(&cfg, &lora(BaseDtype::F32, false), &w);
        // The 24 layers' seven projections, 357,826,560 parameters, at 2 bytes instead of 4.
        let bf16 = plan(&cfg, &lora(BaseDtype::Bf16, false), &w);
        assert_eq!(part(&f32_base, "weights") - part(&bf16, "weights"), 357_826_560 * 2);
        let quantized = plan(&cfg, &lora(BaseDtype::Quantized, false), &w);
        assert_eq!(part(&f32_base, "weights") - part(&quantized, "weights"), 357_826_560 * 4 - (200 << 20));
        // Checkpointed: each layer's input for 24 layers plus one layer's activations twice.
        let ckpt = plan(&cfg, &lora(BaseDtype::F32, true), &w);
        assert!(part(&ckpt, "activations") * 5 < part(&f32_base, "activations"));
        // A full run that fits only with all of them is told so, in that order.
        let full = PlanOptions { quantized_bytes: Some(200 << 20), ..Default::default() };
        let needed = plan(&cfg, &lora(BaseDtype::Bf16, true), &w).peak();
        let advice = advice(&cfg, &full, &w, needed);
        assert_eq!(advice.len(), 1);
        let a = &advice[0];
        let at = |s: &str| a.find(s).unwrap_or_else(|| panic!("{s} missing from {a}"));
        assert!(at("--gradient-checkpointing on") < at("--lora-rank") && at("--lora-rank") < at("--base-dtype bf16"));
        assert!(!a.contains("quantized") && !a.contains("--batch-size"), "{a}");
    }

    #[test]
    fn a_plan_that_does_not_fit_gets_advice_that_does() {
        let cfg = qwen05();
        let opts = PlanOptions { lora: None, samples: false, source_bytes: 0, ..Default::default() };
        let w = Workload { rows: 4, row_tokens: 1024, response_tokens: 3000 };
        let available = 5u64 << 30;
        assert!(plan(&cfg, &opts, &w).peak() > available);
        let advice = advice(&cfg, &opts, &w, available);
        assert!(advice.iter().any(|a| a.contains("--lora-rank")), "{advice:?}");
        assert_eq!(mib(3 << 30), "3,072 MiB");
    }

    #[test]
    fn loading_holds_the_weights_and_one_tensor_in_flight_not_the_whole_file() {
        let cfg = qwen05();
        let (v, h) = (151_936u64, 896u64);
        let lora = |base| PlanOptions {
            lora: Some((16, vec!["q".into(), "k".into(), "v".into(), "o".into()])),
            base,
            // A bf16 folder: 2 bytes a parameter.
            source_bytes: 2 * 494_032_768,
            ..Default::default()
        };
        let w = Workload::worst(1, 512, true);
        let part = |p: &MemoryPlan| p.parts[0].bytes;
        // The bf16 embedding read (its bytes and the tensor made of them) beside the weights.
        for base in [BaseDtype::F32, BaseDtype::Bf16] {
            let p = plan(&cfg, &lora(base), &w);
            assert_eq!(p.loading, part(&p) + 2 * 2 * v * h + WORKSPACE_BYTES, "{base:?}");
        }
        // An f32 folder's tensor is what stays: only its read buffer is extra.
        let f32_folder = PlanOptions { source_bytes: 4 * 494_032_768, ..lora(BaseDtype::F32) };
        let p = plan(&cfg, &f32_folder, &w);
        assert_eq!(p.loading, part(&p) + 4 * v * h + WORKSPACE_BYTES);
    }

    #[test]
    fn checkpointing_counts_for_lora_and_for_full_fine_tuning() {
        let cfg = qwen05();
        let w = Workload { rows: 1, row_tokens: 470, response_tokens: 300 };
        let acts = |lora: Option<(usize, Vec<String>)>, checkpointing| {
            let p = plan(&cfg, &PlanOptions { lora, checkpointing, ..Default::default() }, &w);
            p.parts.iter().find(|p| p.name == "activations").unwrap().bytes
        };
        assert!(acts(None, true) * 5 < acts(None, false));
        let lora = || Some((16, vec!["q".to_string(), "v".to_string()]));
        assert!(acts(lora(), true) * 5 < acts(lora(), false));
    }

    #[test]
    fn only_a_kept_softmax_counts_one_value_per_head_per_key() {
        // Qwen2.5-0.5B, one packed row of 1,024 tokens: 14 heads x 1,024 keys x 1,024 tokens x
        // 24 layers x 4 bytes more where the attention keeps its softmax (a GPU's composed ops).
        let w = Workload { rows: 1, row_tokens: 1024, response_tokens: 900 };
        let acts = |softmax_kept| {
            let p = plan(&qwen05(), &PlanOptions { softmax_kept, ..Default::default() }, &w);
            p.parts.iter().find(|p| p.name == "activations").unwrap().bytes
        };
        assert_eq!(acts(true) - acts(false), 14 * 1024 * 1024 * 24 * 4);
    }
}
