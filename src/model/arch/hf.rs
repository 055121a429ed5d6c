//! `ArchConfig` from an HF `config.json`, by transformers 5.24's rules: v4 keys
//! (`rope_theta`/`rope_scaling`) and v5's `rope_parameters`, each family's defaults, and an error
//! naming the file and key for anything that changes the math and that verdict does not implement.

use super::{Activation, ArchConfig, ArchError, Family, Rope, RopeKind};
use serde_json::{Map, Value};
use std::path::Path;

impl ArchConfig {
    /// Reads `config.json` text (from `path`, for messages).
    pub fn from_hf_json(path: &Path, text: &str) -> Result<ArchConfig, ArchError> {
        let err = |key: &str, reason: String| ArchError::Key { path: path.to_path_buf(), key: key.into(), reason };
        let v: Value =
            serde_json::from_str(text).map_err(|e| err("config.json", format!("is not valid JSON ({e})")))?;
        let obj = v.as_object().ok_or_else(|| err("config.json", "is not a JSON object".into()))?;
        // The class transformers instantiates, else (no `architectures`) the model type.
        let hint = obj
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(Value::as_str)
            .or_else(|| obj.get("model_type").and_then(Value::as_str))
            .unwrap_or("");
        let family = Family::from_hf(hint)
            .ok_or_else(|| ArchError::Unsupported { path: path.to_path_buf(), arch: hint.to_string() })?;
        let r = Reader { obj, err: &err };
        let hidden = r.usize_req("hidden_size")?;
        let heads = r.usize_req("num_attention_heads")?;
        let max_pos = r.usize_opt("max_position_embeddings")?.unwrap_or(match family {
            Family::Llama => 2048,
            Family::Mistral => 131_072,
            Family::Qwen2 | Family::Qwen3 => 32_768,
            Family::Gemma2 => 8192,
            Family::Gemma3 => 131_072,
            Family::Phi3 => 4096,
        });
        let head_dim = r.usize_opt("head_dim")?.unwrap_or(hidden / heads);
        let (rope, local_rope) = hf_rope(&r, family, max_pos)?;
        check_runs(&r, family, &rope, head_dim)?;
        let layers = r.usize_req("num_hidden_layers")?;
        let (sliding_window, sliding_layers) = sliding_window(&r, family, layers)?;
        let gemma2 = family == Family::Gemma2;
        Ok(ArchConfig {
            family,
            hidden_size: hidden,
            intermediate_size: r.usize_req("intermediate_size")?,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: r.usize_opt("num_key_value_heads")?.unwrap_or(heads),
            head_dim,
            vocab_size: r.usize_req("vocab_size")?,
            rms_norm_eps: r.f64_opt("rms_norm_eps")?.unwrap_or(if family == Family::Phi3 { 1e-5 } else { 1e-6 }),
            max_position_embeddings: max_pos,
            rope,
            tie_word_embeddings: r
                .bool_opt("tie_word_embeddings")?
                .unwrap_or(matches!(family, Family::Gemma2 | Family::Gemma3)),
            attention_bias: r.bool_opt("attention_bias")?.unwrap_or(false),
            sliding_window,
            sliding_layers,
            bos_token_id: r.usize_opt("bos_token_id").ok().flatten().map(|v| v as u32),
            eos_token_id: obj.get("eos_token_id").filter(|v| !v.is_null()).cloned(),
            pad_token_id: r.usize_opt("pad_token_id").ok().flatten().map(|v| v as u32),
            activation: activation(&r, family)?,
            attn_softcap: defaulted(&r, "attn_logit_softcapping", Some(50.0).filter(|_| gemma2))?,
            final_softcap: defaulted(&r, "final_logit_softcapping", Some(30.0).filter(|_| gemma2))?,
            query_pre_attn_scalar: defaulted(&r, "query_pre_attn_scalar", Some(256.0).filter(|_| family.gemma()))?,
            local_rope,
        })
    }
}

/// Typed reads of config.json keys; a present key of the wrong type is an error naming it.
struct Reader<'a> {
    obj: &'a Map<String, Value>,
    err: &'a dyn Fn(&str, String) -> ArchError,
}

impl Reader<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }
    fn usize_opt(&self, key: &str) -> Result<Option<usize>, ArchError> {
        self.get(key)
            .map(|v| {
                v.as_u64().map(|x| x as usize).ok_or_else(|| (self.err)(key, format!("is {v}, not a whole number")))
            })
            .transpose()
    }
    fn usize_req(&self, key: &str) -> Result<usize, ArchError> {
        self.usize_opt(key)?.ok_or_else(|| (self.err)(key, "is missing".into()))
    }
    fn f64_opt(&self, key: &str) -> Result<Option<f64>, ArchError> {
        self.get(key).map(|v| v.as_f64().ok_or_else(|| (self.err)(key, format!("is {v}, not a number")))).transpose()
    }
    fn bool_opt(&self, key: &str) -> Result<Option<bool>, ArchError> {
        self.get(key)
            .map(|v| v.as_bool().ok_or_else(|| (self.err)(key, format!("is {v}, not true or false"))))
            .transpose()
    }
}

/// The rope settings of a config.json, by transformers' precedence rules; for Gemma 3 also its
/// sliding layers' (v5 nests one dict per layer type; v4 has `rope_local_base_freq`).
fn hf_rope(r: &Reader, family: Family, max_pos: usize) -> Result<(Rope, Option<Rope>), ArchError> {
    let (dict_key, dict) = match (r.get("rope_scaling"), r.get("rope_parameters")) {
        (Some(d), _) => ("rope_scaling", Some(d)),
        (None, Some(d)) => ("rope_parameters", Some(d)),
        _ => ("rope_parameters", None),
    };
    let empty = Map::new();
    let p = match dict {
        Some(Value::Object(m)) => m,
        Some(other) => return Err((r.err)(dict_key, format!("is {other}, not an object"))),
        None => &empty,
    };
    if family != Family::Gemma3 {
        return Ok((rope_dict(r, dict_key, p, family.default_theta(), max_pos)?, None));
    }
    let nested = |kind: &str| match p.get(kind) {
        Some(Value::Object(m)) => Ok(Some(m)),
        None | Some(Value::Null) => Ok(None),
        Some(other) => Err((r.err)(&format!("{dict_key}.{kind}"), format!("is {other}, not an object"))),
    };
    match (nested("full_attention")?, nested("sliding_attention")?) {
        (None, None) => {
            let global = rope_dict(r, dict_key, p, family.default_theta(), max_pos)?;
            let local = Rope::plain(r.f64_opt("rope_local_base_freq")?.unwrap_or(10_000.0));
            Ok((global, Some(local)))
        }
        (full, sliding) => {
            let global =
                rope_dict(r, &format!("{dict_key}.full_attention"), full.unwrap_or(&empty), 1_000_000.0, max_pos)?;
            let local = rope_dict(
                r,
                &format!("{dict_key}.sliding_attention"),
                sliding.unwrap_or(&empty),
                r.f64_opt("rope_local_base_freq")?.unwrap_or(10_000.0),
                max_pos,
            )?;
            Ok((global, Some(local)))
        }
    }
}

/// One rope dict `p` (found under `dict_key`); `default_theta` when neither it nor the top
/// level names a theta.
fn rope_dict(
    r: &Reader,
    dict_key: &str,
    p: &Map<String, Value>,
    default_theta: f64,
    max_pos: usize,
) -> Result<Rope, ArchError> {
    let k = |name: &str| format!("{dict_key}.{name}");
    let sub = Reader { obj: p, err: r.err };
    let num = |name: &str| -> Result<Option<f64>, ArchError> {
        p.get(name)
            .filter(|v| !v.is_null())
            .map(|v| v.as_f64().ok_or_else(|| (r.err)(&k(name), format!("is {v}, not a number"))))
            .transpose()
    };
    let req = |name: &str| num(name)?.ok_or_else(|| (r.err)(&k(name), "is missing".into()));
    let theta = match num("rope_theta")? {
        Some(t) => t,
        None => r.f64_opt("rope_theta")?.unwrap_or(default_theta),
    };
    let partial = match num("partial_rotary_factor")? {
        Some(f) => f,
        None => r.f64_opt("partial_rotary_factor")?.unwrap_or(1.0),
    };
    let kind_name = p.get("rope_type").or_else(|| p.get("type")).and_then(Value::as_str).unwrap_or("default");
    let original = || -> Result<usize, ArchError> {
        Ok(match r.usize_opt("original_max_position_embeddings")? {
            Some(v) => v,
            None => sub
                .usize_opt("original_max_position_embeddings")
                .map_err(|_| (r.err)(&k("original_max_position_embeddings"), "is not a whole number".into()))?
                .unwrap_or(max_pos),
        })
    };
    let factors = |name: &str| -> Result<Vec<f64>, ArchError> {
        let list = p
            .get(name)
            .and_then(Value::as_array)
            .ok_or_else(|| (r.err)(&k(name), "is missing or not a list".into()))?;
        list.iter().map(|x| x.as_f64().ok_or_else(|| (r.err)(&k(name), format!("holds {x}, not a number")))).collect()
    };
    let (kind, keys): (RopeKind, &[&str]) = match kind_name {
        "default" => (RopeKind::Default, &[]),
        "linear" => (RopeKind::Linear { factor: req("factor")? }, &["factor"]),
        "dynamic" => (RopeKind::Dynamic { factor: req("factor")? }, &["factor", "original_max_position_embeddings"]),
        "llama3" => (
            RopeKind::Llama3 {
                factor: req("factor")?,
                low_freq_factor: req("low_freq_factor")?,
                high_freq_factor: req("high_freq_factor")?,
                original_max: original()?,
            },
            &["factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"],
        ),
        "yarn" => {
            let original_max = original()?;
            (
                RopeKind::Yarn {
                    factor: num("factor")?.unwrap_or(max_pos as f64 / original_max as f64),
                    original_max,
                    attention_factor: num("attention_factor")?,
                    beta_fast: num("beta_fast")?.filter(|b| *b != 0.0).unwrap_or(32.0),
                    beta_slow: num("beta_slow")?.filter(|b| *b != 0.0).unwrap_or(1.0),
                    mscale: num("mscale")?,
                    mscale_all_dim: num("mscale_all_dim")?,
                    truncate: p.get("truncate").and_then(Value::as_bool).unwrap_or(true),
                },
                &[
                    "factor",
                    "original_max_position_embeddings",
                    "attention_factor",
                    "beta_fast",
                    "beta_slow",
                    "mscale",
                    "mscale_all_dim",
                    "truncate",
                ],
            )
        }
        "longrope" => {
            let original_max = original()?;
            (
                RopeKind::LongRope {
                    short_factor: factors("short_factor")?,
                    long_factor: factors("long_factor")?,
                    factor: num("factor")?.unwrap_or(max_pos as f64 / original_max as f64),
                    attention_factor: num("attention_factor")?,
                    original_max,
                },
                &["short_factor", "long_factor", "factor", "attention_factor", "original_max_position_embeddings"],
            )
        }
        other => {
            let key = if p.contains_key("rope_type") { k("rope_type") } else { k("type") };
            return Err((r.err)(
                &key,
                format!(
                    "is `{other}`, a rotary scaling verdict does not implement (it implements default, linear, dynamic, yarn, llama3, longrope)"
                ),
            ));
        }
    };
    const ALWAYS: [&str; 4] = ["rope_type", "type", "rope_theta", "partial_rotary_factor"];
    if let Some(extra) =
        p.keys().find(|key| !ALWAYS.contains(&key.as_str()) && !keys.contains(&key.as_str()) && !p[*key].is_null())
    {
        return Err((r.err)(
            &k(extra),
            format!("is not a parameter of `{kind_name}` rotary scaling that verdict implements"),
        ));
    }
    Ok(Rope { theta, partial_rotary_factor: partial, kind })
}

/// Keys that change the math of a family and that verdict does not implement.
fn check_runs(r: &Reader, family: Family, rope: &Rope, head_dim: usize) -> Result<(), ArchError> {
    if r.bool_opt("mlp_bias")? == Some(true) {
        return Err((r.err)("mlp_bias", "is true: MLP biases are not implemented".into()));
    }
    if rope.partial_rotary_factor <= 0.0
        || rope.partial_rotary_factor > 1.0
        || !rope.rotary_dim(head_dim).is_multiple_of(2)
        || rope.rotary_dim(head_dim) == 0
    {
        return Err((r.err)(
            "partial_rotary_factor",
            format!(
                "is {}: it must leave an even number of rotated dimensions out of the head size {head_dim}",
                rope.partial_rotary_factor
            ),
        ));
    }
    if let RopeKind::LongRope { short_factor, .. } = &rope.kind
        && short_factor.len() != rope.rotary_dim(head_dim) / 2
    {
        return Err((r.err)(
            "rope_scaling.short_factor",
            format!("has {} values, not {} (half the rotary size)", short_factor.len(), rope.rotary_dim(head_dim) / 2),
        ));
    }
    if !family.gemma() {
        for key in ["attn_logit_softcapping", "final_logit_softcapping", "query_pre_attn_scalar"] {
            if r.get(key).is_some() {
                return Err((r.err)(
                    key,
                    format!(
                        "is set: soft-capping and query scaling are Gemma's, not implemented for {}",
                        family.name()
                    ),
                ));
            }
        }
    }
    if r.bool_opt("use_bidirectional_attention")? == Some(true) {
        return Err((r.err)("use_bidirectional_attention", "is true: verdict runs causal attention only".into()));
    }
    Ok(())
}

/// The MLP's activation: Gemma's `hidden_activation` (else `hidden_act`, else GELU-tanh), the
/// others' `hidden_act` (else silu).
fn activation(r: &Reader, family: Family) -> Result<Activation, ArchError> {
    let keys: &[&str] = if family.gemma() { &["hidden_activation", "hidden_act"] } else { &["hidden_act"] };
    let Some(key) = keys.iter().find(|k| r.get(k).is_some()) else {
        return Ok(if family.gemma() { Activation::GeluTanh } else { Activation::Silu });
    };
    match r.get(key).and_then(Value::as_str) {
        Some("silu" | "swish") => Ok(Activation::Silu),
        Some("gelu_pytorch_tanh" | "gelu_new") => Ok(Activation::GeluTanh),
        _ => Err((r.err)(
            key,
            format!("is {}; verdict implements silu and gelu_pytorch_tanh", r.get(key).cloned().unwrap_or_default()),
        )),
    }
}

/// A float key with transformers' class default when absent and `None` when null.
fn defaulted(r: &Reader, key: &str, default: Option<f64>) -> Result<Option<f64>, ArchError> {
    match r.obj.get(key) {
        None => Ok(default),
        Some(_) => r.f64_opt(key),
    }
}

/// The sliding window and the layers that attend over it, by the family's rules (Mistral:
/// `sliding_window`, 4096 when the key is absent, every layer; Qwen2/3: only with
/// `use_sliding_window`, from `max_window_layers` on; Gemma 2: every other layer from the first;
/// Gemma 3: all but every `sliding_window_pattern`-th; Phi-3: every layer). `layer_types`, where
/// config.json has it, says which layers.
fn sliding_window(r: &Reader, family: Family, layers: usize) -> Result<(Option<usize>, Vec<bool>), ArchError> {
    let window = match family {
        Family::Mistral => match r.obj.get("sliding_window") {
            None => Some(4096),
            Some(_) => r.usize_opt("sliding_window")?,
        },
        Family::Qwen2 | Family::Qwen3 => match r.bool_opt("use_sliding_window")?.unwrap_or(false) {
            true => Some(r.usize_opt("sliding_window")?.unwrap_or(4096)),
            false => None,
        },
        Family::Gemma2 | Family::Gemma3 => match r.obj.get("sliding_window") {
            None => Some(4096),
            Some(_) => r.usize_opt("sliding_window")?,
        },
        Family::Phi3 => r.usize_opt("sliding_window")?,
        Family::Llama => None,
    };
    let default: Vec<bool> = (0..layers)
        .map(|i| match family {
            Family::Mistral | Family::Phi3 => true,
            Family::Qwen2 | Family::Qwen3 => i >= r.usize_opt("max_window_layers").ok().flatten().unwrap_or(28),
            Family::Gemma2 => i % 2 == 0,
            Family::Gemma3 => {
                let pattern = r.usize_opt("sliding_window_pattern").ok().flatten().unwrap_or(6).max(1);
                (i + 1) % pattern != 0
            }
            Family::Llama => false,
        })
        .collect();
    let sliding = match r.get("layer_types").and_then(Value::as_array) {
        Some(types) => {
            if let Some(bad) =
                types.iter().find(|t| !matches!(t.as_str(), Some("full_attention" | "sliding_attention")))
            {
                return Err((r.err)(
                    "layer_types",
                    format!("holds {bad}, an attention variant verdict does not implement"),
                ));
            }
            if types.len() != layers {
                return Err((r.err)("layer_types", format!("has {} entries for {layers} layers", types.len())));
            }
            types.iter().map(|t| t.as_str() == Some("sliding_attention")).collect()
        }
        None => default,
    };
    // Qwen2/3 name sliding layers in `layer_types` even when `use_sliding_window` is false.
    let window = match (family, sliding.iter().any(|s| *s)) {
        (_, false) => None,
        (Family::Qwen2 | Family::Qwen3, true) => window.or(Some(4096)),
        (_, true) => window,
    };
    let sliding = if window.is_some() { sliding } else { vec![false; layers] };
    Ok((window, sliding))
}
