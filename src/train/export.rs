//! Exporting a trained model: an HF directory (config.json + model.safetensors with HF names,
//! LoRA merged) and, for LoRA, the adapter in PEFT's format, naming its base by Hugging Face
//! id where `model::hub_id` can tell it.
//!
//! Files are written under a temporary name and renamed, so an interrupted export never leaves
//! a truncated model.safetensors behind. Tokenizer files and the chat template are the caller's
//! to copy (they come from the source model, not from training).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Result, Tensor};

use super::lora::LoraConfig;
use super::model::{Model, Proj};

fn io(e: std::io::Error, what: &Path) -> candle_core::Error {
    candle_core::Error::Msg(format!("{}: {e}", what.display()))
}

/// All weights under HF names, adapters merged in when `merge` (for export), otherwise the
/// base weights as they are; every tensor in the model's master dtype (frozen weights held in
/// bf16 for a GPU run come out f32, as `config.json`'s `torch_dtype` says).
pub fn hf_tensors(model: &Model, merge: bool) -> Result<Vec<(String, Tensor)>> {
    let dtype = model.master_dtype();
    hf_sources(model, Layout::Hf)?
        .into_iter()
        .map(|(name, source)| Ok((name, source.make(model, merge)?.to_dtype(dtype)?)))
        .collect()
}

/// Which names and shapes the tensors come under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The family's Hugging Face checkpoint: Phi-3's `qkv_proj` and `gate_up_proj` fused.
    Hf,
    /// One tensor per projection the trainer holds (`q_proj`, `k_proj`, ...), whatever the
    /// family: what verdict's inference model is assembled from (`model::Model::with_hf_weights`).
    Split,
}

/// The model's tensors, each made when it is asked for: adapters merged in, in the master
/// dtype, as `hf_tensors` gives them all at once. An export (`export_gguf::Trained`) or a
/// run's samples read them one at a time, so the model never exists a second time in f32.
pub struct LazyTensors<'a> {
    model: &'a Model,
    sources: Vec<(String, Source<'a>)>,
}

impl<'a> LazyTensors<'a> {
    pub fn of(model: &'a Model, layout: Layout) -> Result<LazyTensors<'a>> {
        Ok(LazyTensors { model, sources: hf_sources(model, layout)? })
    }

    /// The tensor named `name`, made now; `None` when the model has none of that name.
    pub fn get(&self, name: &str) -> Result<Option<Tensor>> {
        match self.sources.iter().find(|(n, _)| n == name) {
            Some((_, source)) => Ok(Some(source.make(self.model, true)?.to_dtype(self.model.master_dtype())?)),
            None => Ok(None),
        }
    }
}

impl super::export_gguf::Trained for LazyTensors<'_> {
    fn names(&self) -> Vec<String> {
        self.sources.iter().map(|(n, _)| n.clone()).collect()
    }

    fn tensor(&self, hf_name: &str) -> Result<Tensor> {
        self.get(hf_name)?.ok_or_else(|| candle_core::Error::Msg(format!("no trained tensor {hf_name}")))
    }
}

/// Where a tensor of the export comes from: held as it is, a projection's weight (dequantized
/// from a lean base, its adapter merged in) made when it is written, or several projections'
/// weights (or biases) stacked by rows into one fused tensor (Phi-3's `qkv_proj`).
enum Source<'a> {
    Ready(Tensor),
    Proj(&'a Proj),
    Fused(Vec<Source<'a>>),
}

impl Source<'_> {
    fn make(&self, model: &Model, merge: bool) -> Result<Tensor> {
        match self {
            Source::Ready(t) => Ok(t.clone()),
            Source::Proj(p) => match (&p.adapter, merge) {
                (Some(a), true) => a.merged(&p.weight.tensor(model.device())?),
                _ => p.weight.tensor(model.device()),
            },
            Source::Fused(parts) => {
                let made = parts.iter().map(|s| s.make(model, merge)).collect::<Result<Vec<_>>>()?;
                Tensor::cat(&made, 0)
            }
        }
    }

    fn shape(&self) -> Result<Vec<usize>> {
        match self {
            Source::Ready(t) => Ok(t.dims().to_vec()),
            Source::Proj(p) => Ok(<[usize; 2]>::from(p.weight.dims2()?).to_vec()),
            Source::Fused(parts) => {
                let mut shape = parts.first().map(|s| s.shape()).transpose()?.unwrap_or_default();
                if let Some(rows) = shape.first_mut() {
                    *rows = parts.iter().map(|s| Ok(s.shape()?[0])).sum::<Result<usize>>()?;
                }
                Ok(shape)
            }
        }
    }
}

fn hf_sources(model: &Model, layout: Layout) -> Result<Vec<(String, Source<'_>)>> {
    let mut out = vec![("model.embed_tokens.weight".to_string(), Source::Ready(model.embed.detach()))];
    // A module of one projection or (fused) of several: its weight, and its bias when every
    // part has one.
    fn push_module<'a>(out: &mut Vec<(String, Source<'a>)>, name: String, parts: &[&'a Proj]) {
        let fuse = |each: Vec<Source<'a>>| match each.len() {
            1 => each.into_iter().next().expect("one part"),
            _ => Source::Fused(each),
        };
        out.push((format!("{name}.weight"), fuse(parts.iter().map(|p| Source::Proj(p)).collect())));
        let biases: Option<Vec<Source<'a>>> =
            parts.iter().map(|p| p.bias.as_ref().map(|b| Source::Ready(b.detach()))).collect();
        if let Some(biases) = biases {
            out.push((format!("{name}.bias"), fuse(biases)));
        }
    }
    let fused = layout == Layout::Hf && model.cfg.family().fused_projections();
    for (i, l) in model.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        out.push((format!("{p}.input_layernorm.weight"), Source::Ready(l.input_norm.detach())));
        out.push((format!("{p}.post_attention_layernorm.weight"), Source::Ready(l.post_norm.detach())));
        for (n, w) in [
            ("self_attn.q_norm", &l.q_norm),
            ("self_attn.k_norm", &l.k_norm),
            ("pre_feedforward_layernorm", &l.pre_ffn_norm),
            ("post_feedforward_layernorm", &l.post_ffn_norm),
        ] {
            if let Some(w) = w {
                out.push((format!("{p}.{n}.weight"), Source::Ready(w.detach())));
            }
        }
        let modules: Vec<(&str, Vec<&Proj>)> = match fused {
            true => vec![
                ("self_attn.qkv_proj", vec![&l.q, &l.k, &l.v]),
                ("self_attn.o_proj", vec![&l.o]),
                ("mlp.gate_up_proj", vec![&l.gate, &l.up]),
                ("mlp.down_proj", vec![&l.down]),
            ],
            false => vec![
                ("self_attn.q_proj", vec![&l.q]),
                ("self_attn.k_proj", vec![&l.k]),
                ("self_attn.v_proj", vec![&l.v]),
                ("self_attn.o_proj", vec![&l.o]),
                ("mlp.gate_proj", vec![&l.gate]),
                ("mlp.up_proj", vec![&l.up]),
                ("mlp.down_proj", vec![&l.down]),
            ],
        };
        for (n, parts) in modules {
            push_module(&mut out, format!("{p}.{n}"), &parts);
        }
    }
    out.push(("model.norm.weight".to_string(), Source::Ready(model.norm.detach())));
    if let Some(h) = &model.lm_head {
        out.push(("lm_head.weight".to_string(), Source::Ready(h.detach())));
    }
    Ok(out)
}

fn save_atomic(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let tmp = path.with_extension("safetensors.tmp");
    if let Err(e) = candle_core::safetensors::save(tensors, &tmp) {
        // candle's message does not name the file; and a partial file only takes space.
        let _ = std::fs::remove_file(&tmp);
        return Err(candle_core::Error::Msg(format!("{}: {}", tmp.display(), super::error_text(&e))));
    }
    std::fs::rename(&tmp, path).map_err(|e| io(e, path))
}

/// `config.json` + `model.safetensors` loadable by `transformers` (adapters merged in).
/// Tensors are made and written one at a time (`safetensors_out`): the export holds one f32
/// tensor beside the model (a fused Phi-3 module: its parts and their stack).
pub fn export_hf(model: &Model, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io(e, dir))?;
    let path = dir.join("model.safetensors");
    let dtype = model.master_dtype();
    let mut entries = Vec::new();
    for (name, source) in hf_sources(model, Layout::Hf)? {
        let shape = source.shape()?;
        let make = Box::new(move || source.make(model, true)?.to_dtype(dtype));
        entries.push(super::safetensors_out::Entry { name, shape, dtype, make });
    }
    let tmp = path.with_extension("safetensors.tmp");
    if let Err(e) = super::safetensors_out::write(&tmp, &entries) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &path).map_err(|e| io(e, &path))?;
    let cfg = serde_json::to_string_pretty(&model.cfg.to_hf_json()).map_err(candle_core::Error::wrap)?;
    std::fs::write(dir.join("config.json"), cfg).map_err(|e| io(e, dir))
}

/// What `base_model_name_or_path` says for the base model `base` (a local path, or already an
/// id): its Hugging Face id when `model::hub_id` can tell it, else `base` as given; and the
/// adapter README's paragraph on loading the base.
fn base_model_entry(base: &str) -> (String, String) {
    let path = Path::new(base);
    let found = if path.exists() { crate::model::hub_id::identify(path).ok().flatten() } else { None };
    match found {
        Some(hub) => (
            hub.id.clone(),
            format!(
                "`base_model_name_or_path` is `{}`, the Hugging Face id of the model this adapter was \
                 trained on ({}; trained from the local file `{base}`).",
                hub.id, hub.evidence
            ),
        ),
        None if path.exists() => (
            base.to_string(),
            format!(
                "`base_model_name_or_path` is the local file `{base}`: its Hugging Face id is not known. \
                 Load the base yourself and pass it: the Hub id of the model it was converted from, or for a \
                 GGUF `AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)`, then \
                 `PeftModel.from_pretrained(base, \"<this folder>\")`."
            ),
        ),
        None => (base.to_string(), format!("`base_model_name_or_path` is `{base}`.")),
    }
}

fn adapter_readme(base_note: &str, id: &str) -> String {
    format!(
        "# LoRA adapter written by verdict\n\n{base_note}\n\n```python\nfrom transformers import \
         AutoModelForCausalLM\nfrom peft import PeftModel\n\nbase = \
         AutoModelForCausalLM.from_pretrained(\"{id}\")\nmodel = PeftModel.from_pretrained(base, \
         \"path/to/this/adapter\")\n```\n\nThe weights are float32, the base's as verdict trained on them \
         (a GGUF base dequantized).\n"
    )
}

/// A PEFT adapter's tensors (names without `base_model.model.`), its `target_modules`, and the
/// modules whose rank and alpha differ from the config's (Phi-3's fused projections).
struct PeftAdapters {
    tensors: Vec<(String, Tensor)>,
    targets: Vec<String>,
    rank_pattern: serde_json::Map<String, serde_json::Value>,
    alpha_pattern: serde_json::Map<String, serde_json::Value>,
}

/// Phi-3's adapters on the modules Phi-3 has: the trainer holds one adapter per part of the
/// fused `qkv_proj` and `gate_up_proj` (q, k, v; gate, up), and their sum is one adapter on the
/// fused module of rank `parts * r`: A stacks the parts' A, B is block-diagonal with the parts'
/// B (zero rows for a part without an adapter), so `B A` stacks each part's `B_i A_i` exactly.
/// Its alpha is `parts * alpha`, so PEFT's scale `alpha / r` stays the trainer's.
fn fused_adapters(model: &Model, lora: &LoraConfig) -> Result<PeftAdapters> {
    let mut out = PeftAdapters {
        tensors: Vec::new(),
        targets: Vec::new(),
        rank_pattern: serde_json::Map::new(),
        alpha_pattern: serde_json::Map::new(),
    };
    for (i, l) in model.layers.iter().enumerate() {
        let groups: [(&str, Vec<&Proj>); 4] = [
            ("self_attn.qkv_proj", vec![&l.q, &l.k, &l.v]),
            ("self_attn.o_proj", vec![&l.o]),
            ("mlp.gate_up_proj", vec![&l.gate, &l.up]),
            ("mlp.down_proj", vec![&l.down]),
        ];
        for (module, parts) in groups {
            let present: Vec<&super::lora::Adapter> = parts.iter().filter_map(|p| p.adapter.as_ref()).collect();
            if present.is_empty() {
                continue;
            }
            let (n, r) = (present.len(), lora.rank);
            let a = Tensor::cat(&present.iter().map(|a| a.a.detach()).collect::<Vec<_>>(), 0)?;
            let mut rows = Vec::with_capacity(parts.len());
            let mut j = 0;
            for p in &parts {
                let out_rows = p.weight.dims2()?.0;
                let zeros = |cols: usize| Tensor::zeros((out_rows, cols), a.dtype(), a.device());
                rows.push(match &p.adapter {
                    Some(ad) => {
                        let block = Tensor::cat(&[zeros(j * r)?, ad.b.detach(), zeros((n - 1 - j) * r)?], 1)?;
                        j += 1;
                        block
                    }
                    None => zeros(n * r)?,
                });
            }
            let b = Tensor::cat(&rows, 0)?.contiguous()?;
            let name = format!("model.layers.{i}.{module}");
            out.tensors.push((format!("{name}.lora_A.weight"), a.contiguous()?));
            out.tensors.push((format!("{name}.lora_B.weight"), b));
            let short = module.rsplit('.').next().unwrap_or(module).to_string();
            if n > 1 {
                out.rank_pattern.insert(short.clone(), (n * r).into());
                out.alpha_pattern.insert(short.clone(), (n as f64 * lora.alpha).into());
            }
            if !out.targets.contains(&short) {
                out.targets.push(short);
            }
        }
    }
    Ok(out)
}

/// PEFT adapter: `adapter_config.json` + `adapter_model.safetensors` (keys prefixed
/// `base_model.model.`) + a README, loadable with `PeftModel.from_pretrained(base, dir)`.
/// `base_model` is the base's path (written as its Hugging Face id when `model::hub_id` knows
/// it) or an id.
pub fn export_peft(model: &Model, lora: &LoraConfig, base_model: &str, dir: &Path) -> Result<()> {
    let vars = model.trainable_vars();
    if vars.is_empty() || !vars.iter().all(|(n, _)| n.contains(".lora_")) {
        candle_core::bail!("this model has no LoRA adapters to export");
    }
    std::fs::create_dir_all(dir).map_err(|e| io(e, dir))?;
    let adapters = if model.cfg.family().fused_projections() {
        fused_adapters(model, lora)?
    } else {
        let targets = lora.normalized_targets()?.iter().map(|t| format!("{t}_proj")).collect();
        let tensors = vars.into_iter().map(|(n, v)| (n, v.as_tensor().detach())).collect();
        PeftAdapters { tensors, targets, rank_pattern: serde_json::Map::new(), alpha_pattern: serde_json::Map::new() }
    };
    let tensors: HashMap<String, Tensor> =
        adapters.tensors.into_iter().map(|(n, t)| (format!("base_model.model.{n}"), t)).collect();
    save_atomic(&tensors, &dir.join("adapter_model.safetensors"))?;
    let (base_id, base_note) = base_model_entry(base_model);
    // A GGUF path is no base transformers can load by name.
    let load_as = if base_id.ends_with(".gguf") { "<the base model's Hugging Face id>" } else { base_id.as_str() };
    let readme = dir.join("README.md");
    std::fs::write(&readme, adapter_readme(&base_note, load_as)).map_err(|e| io(e, &readme))?;
    let targets = adapters.targets;
    let cfg = serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_id,
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": 0.0,
        "target_modules": targets,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "use_rslora": false,
        "use_dora": false,
        "modules_to_save": null,
        "rank_pattern": adapters.rank_pattern,
        "alpha_pattern": adapters.alpha_pattern,
    });
    let text = serde_json::to_string_pretty(&cfg).map_err(candle_core::Error::wrap)?;
    std::fs::write(dir.join("adapter_config.json"), text).map_err(|e| io(e, dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::model::Input;
    use crate::train::step::tests::tiny_model;
    use candle_core::{DType, Device};

    #[test]
    fn exported_hf_dir_reloads_with_the_same_logits() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let model = tiny_model(8, true)?;
        // Non-zero adapters, so merging matters.
        for (_, v) in model.trainable_vars() {
            v.set(&(v.as_tensor() + 0.05)?)?;
        }
        export_hf(&model, tmp.path())?;
        let (cfg, w) = crate::train::weights::load_hf_dir(tmp.path(), DType::F32, &Device::Cpu)?;
        let reloaded = Model::new(cfg, w, false)?;
        let input = Input::right_padded(&[vec![1, 5, 9, 13, 2]], 0, &Device::Cpu)?;
        let d = crate::train::model::tests::max_diff(&model.forward(&input)?, &reloaded.forward(&input)?)?;
        assert!(d < 1e-4, "exported model's logits differ by {d}");
        Ok(())
    }

    #[test]
    fn peft_adapter_has_peft_names_and_config() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let model = tiny_model(8, true)?;
        let lora = LoraConfig {
            rank: 4,
            alpha: 8.0,
            targets: vec!["q".into(), "k".into(), "v".into(), "o".into(), "up".into()],
        };
        export_peft(&model, &lora, "HuggingFaceTB/SmolLM2-135M-Instruct", tmp.path())?;
        let t = candle_core::safetensors::load(tmp.path().join("adapter_model.safetensors"), &Device::Cpu)?;
        assert_eq!(t.len(), 2 * 5 * 2, "A and B for 5 targets in 2 layers");
        let a = &t["base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"];
        assert_eq!(a.dims(), &[4, 32]);
        assert_eq!(t["base_model.model.model.layers.0.mlp.up_proj.lora_B.weight"].dims(), &[64, 4]);
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(tmp.path().join("adapter_config.json"))?).unwrap();
        assert_eq!(cfg["r"], 4);
        assert_eq!(cfg["target_modules"][4], "up_proj");
        assert_eq!(cfg["base_model_name_or_path"], "HuggingFaceTB/SmolLM2-135M-Instruct");
        Ok(())
    }

    /// A base GGUF whose id cannot be told stays a path, and the README says what to pass.
    #[test]
    fn an_unknown_base_stays_a_path_with_a_readme_saying_what_to_pass() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let (gguf, _) = crate::model::testing::write_tiny_models(tmp.path()).map_err(candle_core::Error::wrap)?;
        let model = tiny_model(8, true)?;
        let lora = LoraConfig { rank: 4, alpha: 8.0, targets: vec!["q".into()] };
        let out = tmp.path().join("adapter");
        export_peft(&model, &lora, &gguf.display().to_string(), &out)?;
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json"))?).unwrap();
        assert_eq!(cfg["base_model_name_or_path"], gguf.display().to_string());
        let readme = std::fs::read_to_string(out.join("README.md"))?;
        assert!(readme.contains("Hugging Face id is not known") && readme.contains("gguf_file="), "{readme}");
        Ok(())
    }

    /// The default model's path is written as its Hugging Face id.
    #[test]
    fn the_default_model_base_is_written_as_its_hub_id() -> Result<()> {
        let test = "train::export::tests::the_default_model_base_is_written_as_its_hub_id";
        let Some(path) = crate::model::testing::default_model_or_skip(test).map_err(candle_core::Error::wrap)? else {
            return Ok(());
        };
        let (id, note) = base_model_entry(&path.display().to_string());
        assert_eq!(id, "HuggingFaceTB/SmolLM2-135M-Instruct");
        assert!(note.contains("sha256") && note.contains(&path.display().to_string()), "{note}");
        Ok(())
    }
}

#[cfg(test)]
#[path = "export_tests_families.rs"]
mod tests_families;
