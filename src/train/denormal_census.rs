//! Where subnormal floats arise in DPO training of the real default model (issue 14; the numbers
//! are in docs/training.md, "Denormals"). Not a check but an instrument, so ignored by default:
//!
//!   cargo test --release --lib train::denormal_census -- --ignored --nocapture
//!
//! One thread, IEEE subnormals kept (FTZ|DAZ off on this thread), full fine-tuning of
//! SmolLM2-135M on the first sample pairs, lr 5e-6. Per step it reports the MXCSR sticky flags
//! raised in each phase (DE: an operand was subnormal; UE: a result underflowed) and counts the
//! subnormals in the weight gradients; then in AdamW's moments and the weights, in the gradient
//! of the LM head's logits (the fused log-softmax's backward), and the attention probabilities
//! at masked positions (what the softmax's exponential gave them).

use candle_core::{D, DType, Device, Tensor, Var};

use super::loss::DpoConfig;
use super::optim::{AdamW, OptimConfig};
use super::step::{Method, PairIds, StepConfig, forward_loss, reference_logps};
use super::target_logp::target_logps;
use super::weights::load_gguf;
use super::{logps::Truncation, model::Model};
use crate::model::denormals::set_this_thread;

/// MXCSR status flags: denormal operand (bit 1) and underflow (bit 4), sticky until cleared.
#[cfg(target_arch = "x86_64")]
fn take_flags() -> (bool, bool) {
    let mut csr: u32 = 0;
    // SAFETY: stmxcsr/ldmxcsr on a live local; only the sticky status bits (0-5) are cleared.
    unsafe {
        std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags));
        let cleared = csr & !0x3f;
        std::arch::asm!("ldmxcsr [{}]", in(reg) &cleared, options(nostack, readonly, preserves_flags));
    }
    (csr & 0x2 != 0, csr & 0x10 != 0)
}

#[cfg(not(target_arch = "x86_64"))]
fn take_flags() -> (bool, bool) {
    (false, false)
}

fn flags(name: &str) -> String {
    let (de, ue) = take_flags();
    format!("{name}: DE {} UE {}", if de { "yes" } else { "no" }, if ue { "yes" } else { "no" })
}

/// (subnormal, nonzero, all) elements of an f32 tensor.
fn census(t: &Tensor) -> candle_core::Result<(usize, usize, usize)> {
    let v = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    Ok((v.iter().filter(|x| x.is_subnormal()).count(), v.iter().filter(|x| **x != 0.0).count(), v.len()))
}

fn show(what: &str, (sub, nonzero, all): (usize, usize, usize)) {
    eprintln!("  {what:<42} {sub:>10} subnormal of {nonzero:>11} nonzero ({all} in all)");
}

/// The kind of weight a parameter name is ("q_proj", "embed_tokens", ...).
fn kind(name: &str) -> &str {
    let last = name.trim_end_matches(".weight");
    last.rsplit('.').next().unwrap_or(last)
}

fn sample_pairs(model: &crate::model::Model, n: usize) -> Vec<PairIds> {
    crate::samples::PAIRS
        .lines()
        .take(n)
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("sample pair");
            let text = |k: &str| v[k].as_str().expect("a string field").to_string();
            let messages = [crate::model::ChatMessage::new("user", &text("prompt"))];
            super::tokenize::pair_ids(model, &messages, &text("chosen"), &text("rejected"), 1.0).expect("tokenized")
        })
        .collect()
}

#[test]
#[ignore = "an instrument (minutes, the real model): run it with --ignored --nocapture"]
fn denormal_census_of_real_training() -> anyhow::Result<()> {
    let path = crate::model::fetch::default_model_path()?;
    let path = if path.is_file() { path } else { crate::model::fetch::fetch_default(&|m| eprintln!("{m}"))? };
    crate::model::configure_threads(Some(1));
    anyhow::ensure!(candle_core::utils::get_num_threads() == 1, "run this test alone (it needs one thread)");
    set_this_thread(false);
    let opts = crate::model::LoadOptions { device: crate::model::DeviceChoice::Cpu, ..Default::default() };
    let infer = crate::model::Model::load(&path, &opts)?;
    let pairs = sample_pairs(&infer, 4);
    let pad_id = infer.info().special_tokens.stop_ids[0];
    drop(infer);
    let (cfg, w) = load_gguf(&path, DType::F32, &Device::Cpu)?;
    let model = Model::new(cfg, w, true)?;
    let truncation = Truncation { max_length: 256, keep_end: false };
    let refs = reference_logps(&model, &pairs, &truncation, pad_id, 1)?;
    let step_cfg = StepConfig { method: Method::Dpo(DpoConfig::default()), truncation, pad_id };
    let steps = pairs.len();
    let optim = OptimConfig { learning_rate: 5e-6, total_steps: steps, ..OptimConfig::default() };
    let mut opt = AdamW::new(model.trainable_vars(), optim)?;
    let vars = model.trainable_vars();
    eprintln!("denormal census: SmolLM2-135M, full fine-tune, {steps} steps of 1 pair, FTZ|DAZ off, 1 thread");
    take_flags();
    for (step, (pair, r)) in pairs.iter().zip(&refs).enumerate() {
        let (loss, _, batch) = forward_loss(&model, std::slice::from_ref(pair), std::slice::from_ref(r), &step_cfg)?;
        let fwd = flags("forward");
        let sink = model.sink_weight_grads();
        let mut grads = loss.backward()?;
        sink.drain_into(&mut grads)?;
        drop(sink);
        let bwd = flags("backward");
        let mut by_kind: Vec<(String, (usize, usize, usize))> = Vec::new();
        for (name, var) in &vars {
            let Some(g) = grads.get(var.as_tensor()) else { continue };
            let c = census(g)?;
            match by_kind.iter_mut().find(|(k, _)| k == kind(name)) {
                Some((_, t)) => *t = (t.0 + c.0, t.1 + c.1, t.2 + c.2),
                None => by_kind.push((kind(name).to_string(), c)),
            }
        }
        take_flags();
        opt.accumulate(&grads)?;
        opt.step()?;
        let upd = flags("AdamW");
        eprintln!("step {}: {} tokens; {fwd}; {bwd}; {upd}", step + 1, batch.model_tokens);
        for (k, c) in &by_kind {
            show(&format!("gradient of {k}"), *c);
        }
        if step == 0 {
            lm_head_grad_census(&model, &batch)?;
            masked_probs_census(&batch)?;
        }
    }
    let state = opt.state_tensors()?;
    let mut m = (0, 0, 0);
    let mut v = (0, 0, 0);
    for (name, t) in &state {
        let c = census(t)?;
        let acc = if name.ends_with(".exp_avg") { &mut m } else { &mut v };
        *acc = (acc.0 + c.0, acc.1 + c.1, acc.2 + c.2);
    }
    show("AdamW exp_avg (m) after the steps", m);
    show("AdamW exp_avg_sq (v) after the steps", v);
    let mut wc = (0, 0, 0);
    for (_, var) in &vars {
        let c = census(var.as_tensor())?;
        wc = (wc.0 + c.0, wc.1 + c.1, wc.2 + c.2);
    }
    show("weights after the steps", wc);
    Ok(())
}

/// The gradient of the response positions' logits through the fused log-softmax, with DPO's
/// first-step coefficient (beta * sigmoid(0) = 0.05 per token's log-prob).
fn lm_head_grad_census(model: &Model, batch: &super::batch::SeqBatch) -> candle_core::Result<()> {
    let hidden = model.hidden(&batch.input)?.detach();
    let h = hidden.dim(D::Minus1)?;
    let rows = hidden.reshape(((), h))?.index_select(&batch.from, 0)?;
    let logits = Var::from_tensor(&model.logits(&rows)?.detach())?;
    let lp = target_logps(logits.as_tensor(), &batch.targets)?;
    let grads = (lp.sum_all()? * 0.05)?.backward()?;
    let g = grads.get(logits.as_tensor()).expect("logits gradient");
    let (sub, nonzero, all) = census(g)?;
    let lsm = super::model::log_softmax_last(logits.as_tensor())?;
    let below = lsm.lt(-87.33f64)?.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?;
    show("LM-head logits gradient (step 1)", (sub, nonzero, all));
    eprintln!("  {:<42} {below:>10} of {all} have softmax below f32's normal range", "");
    Ok(())
}

/// Attention probabilities at masked positions inside the query blocks the fused attention
/// computes (64 rows, keys up to the block's last row): `exp(-1e9 - max)` there.
fn masked_probs_census(batch: &super::batch::SeqBatch) -> candle_core::Result<()> {
    let (b, t) = batch.input.ids.dims2()?;
    let bias = batch.input.bias.flatten_all()?.to_vec1::<f32>()?;
    let (mut masked, mut computed) = (0usize, 0usize);
    for r in 0..b {
        for i0 in (0..t).step_by(64) {
            let i1 = (i0 + 64).min(t);
            for i in i0..i1 {
                let row = &bias[(r * t + i) * t..(r * t + i) * t + i1];
                masked += row.iter().filter(|x| **x < -1e8).count();
                computed += i1;
            }
        }
    }
    let mut p = vec![0f32; 2];
    p[0] = super::real::exp_f32(-1e9);
    p[1] = p[0] / 2.0;
    eprintln!(
        "  attention probabilities (every layer, head):  {masked} of {computed} per head masked ({:.0}%); \
         exp at a masked score gives {:e}, {:e} after dividing by a row sum of 2",
        100.0 * masked as f64 / computed.max(1) as f64,
        p[0],
        p[1]
    );
    Ok(())
}
