//! Phase 3, the reference pass: the frozen base model's log-probs of every chosen and rejected
//! answer (KTO: of each answer and its mismatched answer), computed once per (model, pair,
//! template) and cached in the store (`ref_logps`), so a second run on the same pairs, or a
//! resume, skips it. ORPO, SimPO and SFT have no reference and skip this phase.

use crate::domain::sha256_hex;
use crate::model::ModelInfo;
use crate::store::Store;
use crate::train::model::Model as Net;
use crate::train::step::{self, RefLogps, StepConfig};

use super::TrainConfig;
use super::examples::Tokenized;

/// The cache's key for the tokenization: the chat template and the truncation length.
pub(super) struct Cache<'a> {
    pub info: &'a ModelInfo,
    pub template_hash: String,
}

impl<'a> Cache<'a> {
    pub fn new(info: &'a ModelInfo, config: &TrainConfig) -> Cache<'a> {
        Cache { info, template_hash: sha256_hex(&["template", &info.chat_template, &config.max_length.to_string()]) }
    }
}

/// The reference log-probs of `set`, in its order, and how many were computed (not cached).
/// Methods without a reference (SFT, ORPO, SimPO) get zeros and compute nothing: no pass, and
/// no memory for one.
pub(super) fn logps(
    store: &mut Store,
    cache: &Cache,
    net: &Net,
    set: &Tokenized,
    step_cfg: &StepConfig,
    batch_size: usize,
) -> anyhow::Result<(Vec<RefLogps>, usize)> {
    if !step_cfg.method.needs_reference() {
        return Ok((vec![RefLogps { chosen: 0.0, rejected: 0.0 }; set.ids.len()], 0));
    }
    let sha = &cache.info.sha256;
    let cached = store.ref_logps(sha, &cache.template_hash)?;
    let missing: Vec<usize> = (0..set.ids.len()).filter(|&i| !cached.contains_key(&set.keys[i])).collect();
    let todo: Vec<_> = missing.iter().map(|&i| set.ids[i].clone()).collect();
    let computed = step::reference_logps(net, &todo, &step_cfg.truncation, step_cfg.pad_id, batch_size)?;
    let fresh: Vec<(String, f64, f64)> = missing
        .iter()
        .zip(&computed)
        .map(|(&i, r)| (set.keys[i].clone(), r.chosen as f64, r.rejected as f64))
        .collect();
    // A non-finite value (a model with broken weights) is used by this run, where its
    // loss stops training, but never cached for the next one.
    let finite: Vec<(String, f64, f64)> =
        fresh.iter().filter(|(_, c, r)| c.is_finite() && r.is_finite()).cloned().collect();
    store.save_ref_logps(sha, &cache.template_hash, &finite)?;
    let mut all = cached;
    all.extend(fresh.into_iter().map(|(k, c, r)| (k, (c, r))));
    let refs = set
        .keys
        .iter()
        .map(|key| {
            let (c, r) = all[key];
            RefLogps { chosen: c as f32, rejected: r as f32 }
        })
        .collect();
    Ok((refs, missing.len()))
}
