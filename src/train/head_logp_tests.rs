//! Chunked response log-probs against the whole-logits path: values and gradients, on the op
//! alone and through every loss a run trains with (DPO, SFT, KTO, ORPO).

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Result, Tensor, Var};

use super::*;
use crate::train::kto::{KtoConfig, UnpairedLogps, kto_loss};
use crate::train::logps::{SeqBatch, Truncation, sequence_logps};
use crate::train::loss::{DpoConfig, LossType, PairLogps, dpo_loss, sft_loss};
use crate::train::model::Model;
use crate::train::orpo::{OrpoLogps, orpo_loss};
use crate::train::weights::{random, tiny_config};

fn max_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    (a - b)?.abs()?.flatten_all()?.max(0)?.to_dtype(DType::F64)?.to_scalar::<f64>()
}

fn head(chunk: Option<usize>, softcap: Option<f64>, fused: bool) -> Head {
    Head { softcap, fused, sink: None, chunk }
}

#[test]
fn every_chunk_size_gives_the_whole_logits_values_and_gradients() -> Result<()> {
    let dev = Device::Cpu;
    let (n, h, v) = (7, 5, 13);
    let rows = Var::randn(0f64, 1., (n, h), &dev)?;
    let w = Var::randn(0f64, 1., (v, h), &dev)?;
    let t = Tensor::new(&[0u32, 12, 3, 3, 7, 1, 9], &dev)?;
    let g = Tensor::new(&[1.0f64, -2.0, 0.5, 3.0, 1.5, -0.25, 2.0], &dev)?;
    for (softcap, fused) in [(None, true), (None, false), (Some(2.5), true), (Some(2.5), false)] {
        let whole = response_logps(&head(None, softcap, fused), rows.as_tensor(), w.as_tensor(), &t)?;
        let gw = (&whole * &g)?.sum_all()?.backward()?;
        for chunk in [1, 2, 3, 6, 7, 50] {
            let c = response_logps(&head(Some(chunk), softcap, fused), rows.as_tensor(), w.as_tensor(), &t)?;
            let what = format!("chunk {chunk}, softcap {softcap:?}, fused {fused}");
            assert!(max_diff(&c, &whole)? < 1e-12, "{what}: values differ");
            let gc = (&c * &g)?.sum_all()?.backward()?;
            for (name, x) in [("rows", &rows), ("w", &w)] {
                let d = max_diff(gc.get(x.as_tensor()).expect(name), gw.get(x.as_tensor()).expect(name))?;
                assert!(d < 1e-12, "{what}: gradient of {name} differs by {d}");
            }
        }
    }
    Ok(())
}

#[test]
fn a_frozen_output_weight_gets_no_gradient_and_a_sunk_one_lands_in_the_sink() -> Result<()> {
    let dev = Device::Cpu;
    let rows = Var::randn(0f32, 1., (5, 4), &dev)?;
    let frozen = Tensor::randn(0f32, 1., (9, 4), &dev)?;
    let t = Tensor::new(&[1u32, 8, 0, 4, 4], &dev)?;
    let grads = response_logps(&head(Some(2), None, true), rows.as_tensor(), &frozen, &t)?.sum_all()?.backward()?;
    assert!(grads.get(&frozen).is_none() && grads.get(rows.as_tensor()).is_some());

    let w = Var::randn(0f32, 1., (9, 4), &dev)?;
    let plain = response_logps(&head(None, None, true), rows.as_tensor(), w.as_tensor(), &t)?.sum_all()?.backward()?;
    let sink = Arc::new(WeightGrads::default());
    let sunk_head = Head { sink: Some(sink.clone()), ..head(Some(2), None, true) };
    let mut sunk = response_logps(&sunk_head, rows.as_tensor(), w.as_tensor(), &t)?.sum_all()?.backward()?;
    assert!(sunk.get(w.as_tensor()).is_none(), "candle got the output weight's gradient");
    sink.drain_into(&mut sunk, &dev)?;
    let d = max_diff(sunk.get(w.as_tensor()).unwrap(), plain.get(w.as_tensor()).unwrap())?;
    assert!(d < 1e-5, "sunk gradient differs by {d}");
    Ok(())
}

/// The same model twice: logits in chunks of 2 positions, and whole.
fn models(arch: &str, tied: bool, lora: bool) -> Result<(Model, Model)> {
    let dev = Device::Cpu;
    let cfg = tiny_config(arch, tied);
    let mut moved: HashMap<String, Tensor> = HashMap::new();
    let mut make = || -> Result<Model> {
        let w: HashMap<String, Tensor> = random(&cfg, 11, &dev)?
            .into_iter()
            .map(|(k, t)| Ok((k, t.to_dtype(DType::F64)?)))
            .collect::<Result<_>>()?;
        let mut m = Model::new(cfg.clone(), w, !lora)?;
        if lora {
            let l = crate::train::lora::LoraConfig { rank: 4, alpha: 8.0, targets: vec!["q".into(), "v".into()] };
            crate::train::lora::attach(&mut m, &l, 3)?;
            // B starts at 0: move it (the same way in both models) so the adapters count.
            for (name, v) in m.trainable_vars() {
                if name.contains("lora_B") {
                    let b = match moved.get(&name) {
                        Some(b) => b.clone(),
                        None => Tensor::randn(0f64, 0.1, v.shape(), &dev)?,
                    };
                    v.set(&b)?;
                    moved.insert(name, b);
                }
            }
        }
        Ok(m)
    };
    let (mut chunked, mut whole) = (make()?, make()?);
    chunked.set_logits_chunk(Some(2));
    whole.set_logits_chunk(None);
    Ok((chunked, whole))
}

type LossFn<'a> = dyn Fn(&Model) -> Result<Tensor> + 'a;

/// Loss and gradients of every trainable variable, with the gradients sunk as a step does.
fn loss_and_grads(model: &Model, loss: &LossFn) -> Result<(f64, Vec<(String, Tensor)>)> {
    let sink = model.sink_weight_grads();
    let l = loss(model)?;
    let mut grads: GradStore = l.backward()?;
    sink.drain_into(&mut grads)?;
    let out = model
        .trainable_vars()
        .into_iter()
        .map(|(name, v)| {
            let g = grads.get(v.as_tensor()).cloned().unwrap_or(v.as_tensor().zeros_like()?);
            Ok((name, g))
        })
        .collect::<Result<_>>()?;
    Ok((l.to_dtype(DType::F64)?.to_scalar::<f64>()?, out))
}

#[test]
fn dpo_sft_kto_and_orpo_losses_and_gradients_equal_the_whole_logits_path() -> Result<()> {
    let dev = Device::Cpu;
    let pairs: [(&[u32], &[u32], &[u32]); 3] = [
        (&[1, 5, 9, 4], &[7, 8, 2, 40, 41], &[3, 2, 11, 12, 2]),
        (&[1, 4], &[13, 2, 14, 15, 16, 17], &[30, 2]),
        (&[1], &[20, 63], &[21, 22, 23]),
    ];
    let t = Truncation::default();
    let pair_batch = SeqBatch::pairs(&pairs, &t, 0, &dev)?;
    let seqs: Vec<(&[u32], &[u32])> = pairs.iter().map(|(p, c, _)| (*p, *c)).collect();
    let seq_batch = SeqBatch::new(&seqs, &t, 0, &dev)?;
    let n = pairs.len();
    let ones = vec![1.0f32; n];
    let refs: Vec<f32> = vec![-20.0, -15.5, -30.25];
    let losses: Vec<(&str, Box<LossFn>)> = vec![
        (
            "dpo",
            Box::new(|m: &Model| {
                let lp = sequence_logps(m, &pair_batch)?;
                let (c, r) = (lp.narrow(0, 0, n)?, lp.narrow(0, n, n)?);
                let cfg = DpoConfig { sft_weight: 0.5, ..DpoConfig::default() };
                let p = PairLogps {
                    chosen: &c,
                    rejected: &r,
                    ref_chosen: &refs,
                    ref_rejected: &refs,
                    chosen_len: &pair_batch.counts[..n],
                    rejected_len: &pair_batch.counts[n..],
                    weights: &[1.0, 2.0, 0.5],
                };
                Ok(dpo_loss(&cfg, &p)?.0)
            }),
        ),
        (
            "simpo",
            Box::new(|m: &Model| {
                let lp = sequence_logps(m, &pair_batch)?;
                let (c, r) = (lp.narrow(0, 0, n)?, lp.narrow(0, n, n)?);
                let cfg = DpoConfig { loss: LossType::Simpo, ..DpoConfig::default() };
                let p = PairLogps {
                    chosen: &c,
                    rejected: &r,
                    ref_chosen: &refs,
                    ref_rejected: &refs,
                    chosen_len: &pair_batch.counts[..n],
                    rejected_len: &pair_batch.counts[n..],
                    weights: &ones,
                };
                Ok(dpo_loss(&cfg, &p)?.0)
            }),
        ),
        ("sft", Box::new(|m: &Model| Ok(sft_loss(&sequence_logps(m, &seq_batch)?, &seq_batch.counts, &ones)?.0))),
        (
            "kto",
            Box::new(|m: &Model| {
                let lp = sequence_logps(m, &seq_batch)?;
                let u = UnpairedLogps {
                    logps: &lp,
                    ref_logps: &refs,
                    desirable: &[true, false, true],
                    kl_logps: &[-21.0, -16.0, -29.0],
                    ref_kl_logps: &refs,
                    weights: &ones,
                };
                Ok(kto_loss(&KtoConfig::default(), &u)?.0)
            }),
        ),
        (
            "orpo",
            Box::new(|m: &Model| {
                let lp = sequence_logps(m, &pair_batch)?;
                let (c, r) = (lp.narrow(0, 0, n)?, lp.narrow(0, n, n)?);
                // Every predicted token of the chosen rows: all but the first token as the response.
                let full: Vec<Vec<u32>> = seqs.iter().map(|(p, c)| [*p, *c].concat()).collect();
                let rows: Vec<(&[u32], &[u32])> = full.iter().map(|s| (&s[..1], &s[1..])).collect();
                let row_batch = SeqBatch::new(&rows, &t, 0, &dev)?;
                let row_lp = sequence_logps(m, &row_batch)?;
                let p = OrpoLogps {
                    chosen: &c,
                    rejected: &r,
                    chosen_len: &pair_batch.counts[..n],
                    rejected_len: &pair_batch.counts[n..],
                    chosen_row: &row_lp,
                    chosen_row_tokens: &row_batch.counts,
                    weights: &ones,
                };
                Ok(orpo_loss(0.1, &p)?.0)
            }),
        ),
    ];
    for (arch, tied, lora) in [("llama", true, false), ("qwen2", false, false), ("llama", true, true)] {
        let (chunked, whole) = models(arch, tied, lora)?;
        for (name, loss) in &losses {
            let (lc, gc) = loss_and_grads(&chunked, loss.as_ref())?;
            let (lw, gw) = loss_and_grads(&whole, loss.as_ref())?;
            let what = format!("{name} on {arch} (tied {tied}, lora {lora})");
            assert!((lc - lw).abs() < 1e-6, "{what}: loss {lc} vs {lw}");
            assert!(lc.is_finite() && lc != 0.0, "{what}: loss {lc}");
            assert_eq!(gc.len(), gw.len());
            for ((na, a), (_, b)) in gc.iter().zip(&gw) {
                let d = max_diff(a, b)?;
                assert!(d < 1e-6, "{what}: gradient of {na} differs by {d}");
            }
            let moved = gc.iter().any(|(_, g)| g.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap() > 1e-6);
            assert!(moved, "{what}: no gradient at all");
        }
    }
    Ok(())
}
