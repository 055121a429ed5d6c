//! Rotary position embeddings: the scaling kinds transformers implements (`RopeKind`), their
//! inverse frequencies and attention factor, and how they are written back to config.json.

use serde_json::Value;

/// How rotary frequencies are scaled (transformers' `rope_type`).
#[derive(Debug, Clone, PartialEq)]
pub enum RopeKind {
    Default,
    /// Frequencies divided by `factor`.
    Linear {
        factor: f64,
    },
    /// Dynamic NTK: identical to default up to `max_position_embeddings`, which verdict's context
    /// does not exceed.
    Dynamic {
        factor: f64,
    },
    Yarn {
        factor: f64,
        original_max: usize,
        attention_factor: Option<f64>,
        beta_fast: f64,
        beta_slow: f64,
        mscale: Option<f64>,
        mscale_all_dim: Option<f64>,
        truncate: bool,
    },
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max: usize,
    },
    /// Phi-3's: `short_factor` up to `original_max` positions, `long_factor` for a pass over more
    /// (`inv_freq_for`; generation's context stops at `original_max`).
    LongRope {
        short_factor: Vec<f64>,
        long_factor: Vec<f64>,
        factor: f64,
        attention_factor: Option<f64>,
        original_max: usize,
    },
}

/// Rotary position embedding settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    pub theta: f64,
    pub partial_rotary_factor: f64,
    pub kind: RopeKind,
}

impl Rope {
    pub fn plain(theta: f64) -> Rope {
        Rope { theta, partial_rotary_factor: 1.0, kind: RopeKind::Default }
    }

    /// `default`, `llama3`…, as transformers names it.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            RopeKind::Default => "default",
            RopeKind::Linear { .. } => "linear",
            RopeKind::Dynamic { .. } => "dynamic",
            RopeKind::Yarn { .. } => "yarn",
            RopeKind::Llama3 { .. } => "llama3",
            RopeKind::LongRope { .. } => "longrope",
        }
    }

    /// Rotated dimensions of a head.
    pub fn rotary_dim(&self, head_dim: usize) -> usize {
        (head_dim as f64 * self.partial_rotary_factor) as usize
    }

    /// Inverse frequencies of the rotary pairs (transformers' `ROPE_INIT_FUNCTIONS`, in f64).
    pub fn inv_freq(&self, head_dim: usize) -> Vec<f64> {
        let dim = self.rotary_dim(head_dim);
        let base: Vec<f64> = (0..dim).step_by(2).map(|i| 1.0 / self.theta.powf(i as f64 / dim as f64)).collect();
        match &self.kind {
            RopeKind::Default | RopeKind::Dynamic { .. } => base,
            RopeKind::Linear { factor } => base.into_iter().map(|f| f / factor).collect(),
            RopeKind::LongRope { short_factor, .. } => base.iter().zip(short_factor).map(|(f, s)| f / s).collect(),
            RopeKind::Llama3 { factor, low_freq_factor: low, high_freq_factor: high, original_max } => {
                let old = *original_max as f64;
                let (low_wl, high_wl) = (old / low, old / high);
                base.into_iter()
                    .map(|f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wl {
                            f
                        } else if wavelen > low_wl {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low) / (high - low);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
            RopeKind::Yarn { factor, original_max, beta_fast, beta_slow, truncate, .. } => {
                let correction = |rot: f64| {
                    (dim as f64 * (*original_max as f64 / (rot * 2.0 * std::f64::consts::PI)).ln())
                        / (2.0 * self.theta.ln())
                };
                let (mut low, mut high) = (correction(*beta_fast), correction(*beta_slow));
                if *truncate {
                    (low, high) = (low.floor(), high.ceil());
                }
                let (low, mut high) = (low.max(0.0), high.min(dim as f64 - 1.0));
                if low == high {
                    high += 0.001;
                }
                base.into_iter()
                    .enumerate()
                    .map(|(i, f)| {
                        let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                        let extrapolation = 1.0 - ramp;
                        (f / factor) * (1.0 - extrapolation) + f * extrapolation
                    })
                    .collect()
            }
        }
    }

    /// `inv_freq` for a forward pass over positions `0..len`: LongRoPE takes its long factors
    /// for the whole pass once `len` exceeds `original_max` (transformers'
    /// `longrope_frequency_update`, which looks at the largest position of the batch).
    pub fn inv_freq_for(&self, head_dim: usize, len: usize) -> Vec<f64> {
        match &self.kind {
            RopeKind::LongRope { long_factor, original_max, .. } if len > *original_max => {
                let base = Rope { kind: RopeKind::Default, ..self.clone() }.inv_freq(head_dim);
                base.iter().zip(long_factor).map(|(f, l)| f / l).collect()
            }
            _ => self.inv_freq(head_dim),
        }
    }

    /// The factor cos and sin are multiplied by (YaRN's and LongRoPE's attention scaling).
    pub fn attention_factor(&self) -> f64 {
        let mscale = |scale: f64, m: f64| if scale <= 1.0 { 1.0 } else { 0.1 * m * scale.ln() + 1.0 };
        match &self.kind {
            RopeKind::Yarn { attention_factor: Some(a), .. } | RopeKind::LongRope { attention_factor: Some(a), .. } => {
                *a
            }
            RopeKind::Yarn { factor, mscale: Some(m), mscale_all_dim: Some(all), .. } if *m != 0.0 && *all != 0.0 => {
                mscale(*factor, *m) / mscale(*factor, *all)
            }
            RopeKind::Yarn { factor, .. } => mscale(*factor, 1.0),
            RopeKind::LongRope { factor, original_max, .. } if *factor > 1.0 => {
                (1.0 + factor.ln() / (*original_max as f64).ln()).sqrt()
            }
            _ => 1.0,
        }
    }

    /// Positions beyond which transformers would switch frequencies (LongRoPE's long factors).
    pub fn context_limit(&self) -> Option<usize> {
        match &self.kind {
            RopeKind::LongRope { original_max, .. } => Some(*original_max),
            _ => None,
        }
    }

    /// The v4 `rope_scaling` dict for an exported config.json (`None` for default).
    pub fn hf_scaling(&self) -> Option<Value> {
        let mut v = match &self.kind {
            RopeKind::Default => return None,
            RopeKind::Linear { factor } | RopeKind::Dynamic { factor } => serde_json::json!({"factor": factor}),
            RopeKind::Llama3 { factor, low_freq_factor, high_freq_factor, original_max } => serde_json::json!({
                "factor": factor, "low_freq_factor": low_freq_factor, "high_freq_factor": high_freq_factor,
                "original_max_position_embeddings": original_max,
            }),
            RopeKind::Yarn {
                factor,
                original_max,
                attention_factor,
                beta_fast,
                beta_slow,
                mscale,
                mscale_all_dim,
                truncate,
            } => {
                let mut v = serde_json::json!({"factor": factor, "original_max_position_embeddings": original_max,
                    "beta_fast": beta_fast, "beta_slow": beta_slow, "truncate": truncate});
                for (k, x) in
                    [("attention_factor", attention_factor), ("mscale", mscale), ("mscale_all_dim", mscale_all_dim)]
                {
                    if let Some(x) = x {
                        v[k] = (*x).into();
                    }
                }
                v
            }
            RopeKind::LongRope { short_factor, long_factor, factor, attention_factor, original_max } => {
                let mut v = serde_json::json!({"short_factor": short_factor, "long_factor": long_factor,
                    "factor": factor, "original_max_position_embeddings": original_max});
                if let Some(a) = attention_factor {
                    v["attention_factor"] = (*a).into();
                }
                v
            }
        };
        v["rope_type"] = self.type_name().into();
        Some(v)
    }

    /// LongRoPE's original context, which Phi-3's config.json also carries at the top level.
    pub fn original_max(&self) -> Option<usize> {
        match &self.kind {
            RopeKind::LongRope { original_max, .. } => Some(*original_max),
            _ => None,
        }
    }

    /// transformers 5's `rope_parameters` dict: type, theta, partial rotary factor, scaling.
    pub fn hf_parameters(&self) -> Value {
        let mut v = self.hf_scaling().unwrap_or_else(|| serde_json::json!({"rope_type": "default"}));
        v["rope_theta"] = self.theta.into();
        if self.partial_rotary_factor != 1.0 {
            v["partial_rotary_factor"] = self.partial_rotary_factor.into();
        }
        v
    }

    /// One line for `verdict model info`.
    pub fn describe(&self) -> String {
        let mut s = format!("{} (theta {})", self.type_name(), self.theta);
        match &self.kind {
            RopeKind::Linear { factor } | RopeKind::Dynamic { factor } => s += &format!(", factor {factor}"),
            RopeKind::Llama3 { factor, low_freq_factor, high_freq_factor, original_max } => {
                s += &format!(
                    ", factor {factor}, low/high freq factor {low_freq_factor}/{high_freq_factor}, original context {original_max}"
                )
            }
            RopeKind::Yarn { factor, original_max, .. } => {
                s += &format!(
                    ", factor {factor}, original context {original_max}, attention factor {:.4}",
                    self.attention_factor()
                )
            }
            RopeKind::LongRope { original_max, .. } => s += &format!(", short factors up to {original_max} positions"),
            RopeKind::Default => {}
        }
        if self.partial_rotary_factor != 1.0 {
            s += &format!(", partial rotary factor {}", self.partial_rotary_factor);
        }
        s
    }
}
