//! Before the trainable weights load: the memory plan for this run's data and options
//! (`train::memory_plan`), printed, and the run refused when it cannot fit in the memory the
//! system has available, with what would make it fit. `auto` options are settled here: a LoRA
//! run keeps its frozen base in bf16, and then recomputes its layers in the backward, only when
//! the plan does not fit without.

use std::path::Path;

use candle_core::Device;

use super::examples::Prepared;
use super::{TrainConfig, TrainEvent};
use crate::train::checkpointing::Checkpointing;
use crate::train::config::Config;
use crate::train::frozen::BaseDtype;
use crate::train::lean_load;
use crate::train::logps::{Truncation, build_row};
use crate::train::memory_plan::{self, PlanOptions, Workload};

/// The options' part of a plan: what trains, how, and whether it generates samples; `auto`
/// options as their cheaper-in-time choice (f32 base, no checkpointing). A bf16 base is 12-14%
/// slower a step than an f32 one (its tiles are widened to f32 in every product: Qwen2.5-0.5B
/// and Llama-3.2-3B on an Intel Xeon, docs/performance.md), so `auto` takes it only to fit.
pub fn options(config: &TrainConfig, model_path: &Path) -> PlanOptions {
    PlanOptions {
        lora: config.lora_rank.map(|r| (r, config.lora_targets.clone())),
        base: match config.base_dtype {
            BaseDtype::Auto => BaseDtype::F32,
            b => b,
        },
        quantized_bytes: memory_plan::quantized_bytes(model_path),
        checkpointing: config.gradient_checkpointing == Checkpointing::On,
        samples: config.eval_every > 0 && config.sample_prompts > 0,
        source_bytes: memory_plan::file_bytes(model_path),
        // The CPU's (what `--plan` describes); `check` says otherwise for a GPU.
        softmax_kept: false,
    }
}

/// The `auto` options settled against `available` bytes (none known: as `options` set them):
/// a LoRA run's base in bf16, then checkpointing (LoRA or full), each only while the plan does
/// not fit.
pub fn settle(config: &TrainConfig, cfg: &Config, opts: &mut PlanOptions, work: &Workload, available: Option<u64>) {
    let Some(available) = available else { return };
    let fits = |o: &PlanOptions| memory_plan::plan(cfg, o, work).peak() <= available;
    if !fits(opts) && opts.lora.is_some() && config.base_dtype == BaseDtype::Auto {
        opts.base = BaseDtype::Bf16;
    }
    if !fits(opts) && config.gradient_checkpointing == Checkpointing::Auto {
        opts.checkpointing = true;
    }
}

/// What `settle` chose, as a line for the user (empty when it kept the defaults).
fn settled_note(config: &TrainConfig, opts: &PlanOptions, model_path: &Path) -> String {
    let mut chose = Vec::new();
    if config.base_dtype == BaseDtype::Auto && opts.base == BaseDtype::Bf16 {
        chose.push(match lean_load::stores_bf16_projections(model_path) {
            true => "the frozen base in bf16 (as the model stores it: the same values)",
            false => "the frozen base in bf16",
        });
    }
    if config.gradient_checkpointing == Checkpointing::Auto && opts.checkpointing {
        chose.push("gradient checkpointing");
    }
    match chose.is_empty() {
        true => String::new(),
        false => format!("memory: {} (auto: it does not fit without)", chose.join(" and ")),
    }
}

/// The plan for `config` before any data is tokenized, for `verdict train --plan` and the TUI's
/// new-run form: the worst case the options allow (`Workload::worst`), the memory available on
/// this machine, and what would make it fit when it does not. `progress` hears about a first
/// download of the default model (the caller prints it; nothing here does).
pub fn plan_text(config: &TrainConfig, progress: &dyn Fn(&str)) -> anyhow::Result<String> {
    let model_path = crate::model::resolve_model_path(config.model.as_deref(), progress)?;
    let cfg = memory_plan::read_config(&model_path)?;
    let mut opts = options(config, &model_path);
    let work = Workload::worst(config.batch_size, config.max_length, config.method != "sft");
    settle(config, &cfg, &mut opts, &work, memory_plan::available_bytes());
    let plan = memory_plan::plan(&cfg, &opts, &work);
    let note = settled_note(config, &opts, &model_path);
    let mut out = format!(
        "{} ({} rows of {} tokens per micro-batch: every pair cut at --max-length {})\n",
        model_path.display(),
        work.rows,
        work.row_tokens,
        config.max_length
    );
    if !note.is_empty() {
        out.push_str(&format!("{note}\n"));
    }
    out.push_str(&plan.render());
    match memory_plan::available_bytes() {
        Some(a) if plan.peak() > a => {
            let advice = memory_plan::advice(&cfg, &opts, &work, a);
            out.push_str(&format!("  available now                {:>10}: does not fit", memory_plan::mib(a)));
            if !advice.is_empty() {
                out.push_str(&format!("; fits with {}", advice.join("; or ")));
            }
            out.push('\n');
        }
        Some(a) => out.push_str(&format!("  available now                {:>10}: fits\n", memory_plan::mib(a))),
        None => {}
    }
    Ok(out)
}

/// The largest micro-batch the run's train pairs make: the `batch_size` longest rows as
/// `train::batch` packs them (a DPO pair in one row, SFT one row per chosen answer).
fn workload(prepared: &Prepared, config: &TrainConfig) -> Workload {
    let t = Truncation { max_length: config.max_length, keep_end: false };
    let sft = config.method == "sft";
    let mut rows: Vec<(usize, usize)> = prepared
        .train
        .ids
        .iter()
        .map(|p| {
            let c = build_row(&p.prompt, &p.chosen, &t);
            if sft {
                return (c.ids.len(), c.ids.len() - c.response_start);
            }
            let r = build_row(&p.prompt, &p.rejected, &t);
            let shared = c.response_start.min(r.response_start);
            let responses = (c.ids.len() - c.response_start) + (r.ids.len() - r.response_start);
            (c.ids.len() + r.ids.len() - shared, responses)
        })
        .collect();
    rows.sort_unstable_by(|a, b| b.cmp(a));
    let batch = &rows[..config.batch_size.min(rows.len()).max(1).min(rows.len())];
    Workload {
        rows: batch.len().max(1),
        row_tokens: batch.first().map_or(1, |r| r.0),
        response_tokens: batch.iter().map(|r| r.1).sum(),
    }
}

/// The plan a run goes by and the options it settled (`settle`).
pub(super) struct Checked {
    pub base: BaseDtype,
    pub checkpointing: bool,
}

/// The run's plan, sent as lines to the user; an error when it exceeds the memory available on
/// the CPU (a GPU's free memory is not asked: the plan is printed and the run goes on).
pub(super) fn check(
    config: &TrainConfig,
    model_path: &Path,
    device: &Device,
    prepared: &Prepared,
    events: &mut dyn FnMut(TrainEvent),
) -> anyhow::Result<Checked> {
    let cfg = memory_plan::read_config(model_path)?;
    let mut opts = options(config, model_path);
    opts.softmax_kept = !device.is_cpu();
    let work = workload(prepared, config);
    let available = if device.is_cpu() { memory_plan::available_bytes() } else { None };
    settle(config, &cfg, &mut opts, &work, available);
    let plan = memory_plan::plan(&cfg, &opts, &work);
    let note = settled_note(config, &opts, model_path);
    if !note.is_empty() {
        events(TrainEvent::Preparing(note));
    }
    for line in plan.render().lines() {
        events(TrainEvent::Preparing(line.to_string()));
    }
    if let Some(available) = available.filter(|a| plan.peak() > *a) {
        let advice = memory_plan::advice(&cfg, &opts, &work, available);
        let fix = if advice.is_empty() {
            "a machine with more memory, or a smaller model".to_string()
        } else {
            advice.join("; or ")
        };
        anyhow::bail!(
            "this run needs about {} of memory at its peak but {} is available: it would fail in the \
             allocator. What fits: {fix} (`verdict train --plan` shows the plan)",
            memory_plan::mib(plan.peak()),
            memory_plan::mib(available)
        );
    }
    Ok(Checked { base: opts.base, checkpointing: opts.checkpointing })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Qwen2.5-1.5B's published config.
    fn qwen15() -> Config {
        let text = r#"{"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 1536,
            "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
            "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 131072,
            "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "tie_word_embeddings": true,
            "hidden_act": "silu"}"#;
        Config::from_hf_json(Path::new("config.json"), text).expect("config")
    }

    #[test]
    fn a_1_5b_lora_run_at_length_1024_settles_on_a_bf16_base_and_checkpointing_to_fit_8_gib() {
        let cfg = qwen15();
        let config = TrainConfig {
            lora_rank: Some(16),
            lora_targets: ["q", "k", "v", "o"].map(String::from).to_vec(),
            max_length: 1024,
            eval_every: 0,
            ..TrainConfig::default()
        };
        let mut opts = PlanOptions {
            lora: config.lora_rank.map(|r| (r, config.lora_targets.clone())),
            base: BaseDtype::F32,
            source_bytes: 3_087_467_144,
            ..Default::default()
        };
        let work = Workload::worst(1, 1024, true);
        let eight = 8u64 << 30;
        assert!(memory_plan::plan(&cfg, &opts, &work).peak() > eight);
        settle(&config, &cfg, &mut opts, &work, Some(eight));
        assert_eq!((opts.base, opts.checkpointing), (BaseDtype::Bf16, true));
        assert!(memory_plan::plan(&cfg, &opts, &work).peak() <= eight);
        assert!(
            settled_note(&config, &opts, Path::new("no-such-model"))
                .contains("the frozen base in bf16 and gradient checkpointing")
        );
        // Asked for explicitly, an option is not changed.
        let fixed = TrainConfig { gradient_checkpointing: Checkpointing::Off, ..config.clone() };
        let mut o = PlanOptions { base: BaseDtype::F32, checkpointing: false, ..opts.clone() };
        settle(&fixed, &cfg, &mut o, &work, Some(eight));
        assert_eq!((o.base, o.checkpointing), (BaseDtype::Bf16, false));
    }
}
