//! Step tests on a tiny random model: DPO training separates 4 fixed pairs (full and LoRA),
//! runs are deterministic, step 0 is ln 2, and an end-to-end finite-difference check.

use super::*;
use crate::train::lora::{LoraConfig, attach};
use crate::train::loss::LossType;
use crate::train::optim::{OptimConfig, Schedule};
use crate::train::weights::{random, tiny_config};
use candle_core::{Device, Var};

pub(crate) fn pairs() -> Vec<PairIds> {
    let p = |prompt: &[u32], c: &[u32], r: &[u32]| PairIds {
        prompt: prompt.to_vec(),
        chosen: c.to_vec(),
        rejected: r.to_vec(),
        weight: 1.0,
        desirable: None,
    };
    vec![
        p(&[1, 10, 11], &[20, 21, 2], &[30, 31, 32, 2]),
        p(&[1, 12], &[22, 23, 24, 2], &[33, 2]),
        p(&[1, 13, 14, 15], &[25, 2], &[34, 35, 2]),
        p(&[1, 16], &[26, 27, 2], &[36, 37, 38, 39, 2]),
    ]
}

pub(crate) fn tiny_model(seed: u64, lora: bool) -> Result<Model> {
    let cfg = tiny_config("llama", true);
    let w = random(&cfg, seed, &Device::Cpu)?;
    let mut m = Model::new(cfg, w, !lora)?;
    if lora {
        attach(
            &mut m,
            &LoraConfig {
                rank: 4,
                alpha: 8.0,
                targets: vec!["q".into(), "k".into(), "v".into(), "o".into(), "up".into()],
            },
            seed,
        )?;
    }
    Ok(m)
}

fn step_cfg() -> StepConfig {
    StepConfig { method: Method::Dpo(DpoConfig::default()), truncation: Truncation::default(), pad_id: 0 }
}

/// Trains `steps` full-batch steps; returns the metrics of each.
fn train(seed: u64, lora: bool, steps: usize, lr: f64) -> Result<Vec<Metrics>> {
    let model = tiny_model(seed, lora)?;
    let data = pairs();
    let refs = reference_logps(&model, &data, &Truncation::default(), 0, 2)?;
    let ocfg = OptimConfig {
        learning_rate: lr,
        total_steps: steps,
        warmup_steps: 2,
        schedule: Schedule::Cosine,
        ..Default::default()
    };
    let mut opt = AdamW::new(model.trainable_vars(), ocfg)?;
    let cfg = step_cfg();
    // Two micro-batches of two pairs: exercises gradient accumulation.
    (0..steps)
        .map(|_| train_step(&model, &[(&data[..2], &refs[..2]), (&data[2..], &refs[2..])], &cfg, &mut opt))
        .collect()
}

#[test]
fn dpo_separates_fixed_pairs_full_and_lora() -> Result<()> {
    for (lora, lr) in [(false, 1e-2), (true, 2e-2)] {
        let ms = train(7, lora, 30, lr)?;
        let first = &ms[0];
        let last = ms.last().expect("steps");
        assert!((first["loss"] - std::f64::consts::LN_2).abs() < 1e-5, "lora={lora}: step 0 loss {}", first["loss"]);
        assert_eq!(first["rewards/accuracies"], 0.0);
        assert_eq!(last["rewards/accuracies"], 1.0, "lora={lora}: {last:?}");
        assert!(
            last["rewards/margins"] > first["rewards/margins"] + 0.1,
            "lora={lora}: margin {} -> {}",
            first["rewards/margins"],
            last["rewards/margins"]
        );
        assert!(last["loss"] < 0.5, "lora={lora}: loss {}", last["loss"]);
        for k in [
            "grad_norm",
            "learning_rate",
            "tokens_per_second",
            "logps/chosen",
            "logps/rejected",
            "rewards/chosen",
            "rewards/rejected",
        ] {
            assert!(last.contains_key(k), "missing {k}");
        }
        assert_eq!(last["num_tokens"], 48.0, "prompt + response tokens of all 8 rows");
    }
    Ok(())
}

#[test]
fn same_seed_same_metrics() -> Result<()> {
    let strip = |ms: Vec<Metrics>| -> Vec<Vec<(String, f64)>> {
        // Everything but what the clock measures.
        let timed = |k: &str| k == "tokens_per_second" || k == "model_tflops_per_second";
        ms.into_iter().map(|m| m.into_iter().filter(|(k, _)| !timed(k)).collect()).collect()
    };
    assert_eq!(strip(train(3, true, 4, 1e-2)?), strip(train(3, true, 4, 1e-2)?));
    assert_eq!(strip(train(3, false, 4, 1e-2)?), strip(train(3, false, 4, 1e-2)?));
    Ok(())
}

#[test]
fn sft_lowers_the_chosen_nll() -> Result<()> {
    let model = tiny_model(9, false)?;
    let data = pairs();
    let cfg = StepConfig { method: Method::Sft, ..step_cfg() };
    let mut opt =
        AdamW::new(model.trainable_vars(), OptimConfig { learning_rate: 1e-2, total_steps: 20, ..Default::default() })?;
    let ms: Vec<Metrics> =
        (0..20).map(|_| train_step(&model, &[(&data, &[])], &cfg, &mut opt)).collect::<Result<_>>()?;
    assert!(ms[19]["loss"] < ms[0]["loss"] * 0.5, "{} -> {}", ms[0]["loss"], ms[19]["loss"]);
    Ok(())
}

#[test]
fn end_to_end_finite_difference_on_one_weight() -> Result<()> {
    // f64 model so central differences are accurate.
    let cfg = tiny_config("llama", true);
    let w: std::collections::HashMap<_, _> = random(&cfg, 11, &Device::Cpu)?
        .into_iter()
        .map(|(k, t)| Ok((k, t.to_dtype(DType::F64)?)))
        .collect::<Result<_>>()?;
    let model = Model::new(cfg, w, true)?;
    let data = pairs();
    let refs: Vec<RefLogps> = reference_logps(&model, &data, &Truncation::default(), 0, 4)?
        .into_iter()
        .map(|r| RefLogps { chosen: r.chosen + 0.3, rejected: r.rejected - 0.2 })
        .collect();
    for loss in [LossType::Sigmoid, LossType::Ipo, LossType::Robust, LossType::Simpo] {
        let cfg = StepConfig {
            method: Method::Dpo(DpoConfig { loss, label_smoothing: 0.1, sft_weight: 0.5, ..Default::default() }),
            ..step_cfg()
        };
        for name in ["model.layers.1.self_attn.k_proj.weight", "model.embed_tokens.weight"] {
            let var: Var = model.trainable_vars().into_iter().find(|(n, _)| n == name).expect("var").1;
            let (l, _, _) = forward_loss(&model, &data, &refs, &cfg)?;
            let g = l.backward()?;
            let idx = 37; // embed row 1 (the BOS every prompt starts with), k_proj row 1
            let analytic = g.get(var.as_tensor()).expect("grad").flatten_all()?.to_vec1::<f64>()?[idx];
            let orig = var.as_tensor().flatten_all()?.to_vec1::<f64>()?;
            let at = |delta: f64| -> Result<f64> {
                let mut v = orig.clone();
                v[idx] += delta;
                var.set(&Tensor::from_vec(v, var.shape().clone(), &Device::Cpu)?)?;
                Ok(forward_loss(&model, &data, &refs, &cfg)?.1["loss"])
            };
            let h = 1e-5;
            let numeric = (at(h)? - at(-h)?) / (2.0 * h);
            at(0.0)?;
            assert!(analytic.abs() > 1e-8, "{loss:?} {name}: zero gradient");
            assert!(
                (numeric - analytic).abs() < 1e-6 * (1.0 + analytic.abs()),
                "{loss:?} {name}: numeric {numeric} analytic {analytic}"
            );
        }
    }
    Ok(())
}

/// Every trainable value of the model, by name.
fn params(model: &Model) -> Result<Vec<(String, Vec<f32>)>> {
    model.trainable_vars().into_iter().map(|(n, v)| Ok((n, v.as_tensor().flatten_all()?.to_vec1::<f32>()?))).collect()
}

fn max_difference(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) -> f32 {
    a.iter().zip(b).flat_map(|((_, x), (_, y))| x.iter().zip(y).map(|(p, q)| (p - q).abs())).fold(0.0, f32::max)
}

/// One optimizer step at batch size 1: one micro-batch per pair (gradient accumulation).
fn one_step_per_pair(data: &[PairIds], cfg: &StepConfig) -> Result<Vec<(String, Vec<f32>)>> {
    let model = tiny_model(5, false)?;
    let refs = reference_logps(&model, data, &Truncation::default(), 0, 1)?;
    let mut opt =
        AdamW::new(model.trainable_vars(), OptimConfig { learning_rate: 1e-3, total_steps: 1, ..Default::default() })?;
    let micro: Vec<(&[PairIds], &[RefLogps])> = (0..data.len())
        .map(|i| (&data[i..=i], if matches!(cfg.method, Method::Sft) { &refs[..0] } else { &refs[i..=i] }))
        .collect();
    train_step(&model, &micro, cfg, &mut opt)?;
    params(&model)
}

#[test]
fn a_pair_of_weight_zero_leaves_the_model_unchanged() -> Result<()> {
    let before = params(&tiny_model(5, false)?)?;
    for cfg in [step_cfg(), StepConfig { method: Method::Sft, ..step_cfg() }] {
        let mut data = pairs();
        data.truncate(1);
        data[0].weight = 0.0;
        let after = one_step_per_pair(&data, &cfg)?;
        assert_eq!(max_difference(&before, &after), 0.0, "{:?}: a weight-0 pair moved the model", cfg.method);
    }
    Ok(())
}

#[test]
fn a_pair_of_weight_two_counts_as_the_pair_seen_twice() -> Result<()> {
    let before = params(&tiny_model(5, false)?)?;
    for cfg in [step_cfg(), StepConfig { method: Method::Sft, ..step_cfg() }] {
        let data = pairs();
        // Batch size 1, three micro-batches: [p0 weight 2, p1, p3 weight 0] against [p0, p0, p1].
        let mut weighted = vec![data[0].clone(), data[1].clone(), data[3].clone()];
        weighted[0].weight = 2.0;
        weighted[2].weight = 0.0;
        let twice = vec![data[0].clone(), data[0].clone(), data[1].clone()];
        if matches!(cfg.method, Method::Sft) {
            // SFT divides by the step's tokens: the weight-0 stand-in must be as long as p0.
            assert_eq!(
                loss_items(&weighted[2..], &cfg),
                loss_items(&data[..1], &cfg),
                "equal token counts in both steps"
            );
        }
        let (a, b) = (one_step_per_pair(&weighted, &cfg)?, one_step_per_pair(&twice, &cfg)?);
        assert!(max_difference(&before, &a) > 1e-4, "{:?}: the step changed nothing", cfg.method);
        assert!(
            max_difference(&a, &b) < 1e-6,
            "{:?}: weight 2 != seen twice by {}",
            cfg.method,
            max_difference(&a, &b)
        );
    }
    Ok(())
}

#[test]
fn chunked_evaluation_equals_one_batch() -> Result<()> {
    let model = tiny_model(13, false)?;
    let mut data = pairs();
    for (p, w) in data.iter_mut().zip([1.0, 0.5, 2.0, 0.0]) {
        p.weight = w;
    }
    let refs: Vec<RefLogps> = reference_logps(&model, &data, &Truncation::default(), 0, 4)?
        .into_iter()
        .map(|r| RefLogps { chosen: r.chosen + 0.4, rejected: r.rejected - 0.1 })
        .collect();
    let methods = [LossType::Sigmoid, LossType::Ipo, LossType::Hinge, LossType::Robust, LossType::Simpo]
        .map(|loss| Method::Dpo(DpoConfig { loss, label_smoothing: 0.1, ..Default::default() }));
    for method in methods.into_iter().chain([Method::Sft]) {
        let cfg = StepConfig { method, ..step_cfg() };
        let refs: &[RefLogps] = if matches!(cfg.method, Method::Sft) { &[] } else { &refs };
        let whole = evaluate(&model, &data, refs, &cfg, data.len())?;
        for size in [1, 3] {
            let chunked = evaluate(&model, &data, refs, &cfg, size)?;
            assert_eq!(whole.keys().collect::<Vec<_>>(), chunked.keys().collect::<Vec<_>>());
            for (k, v) in &whole {
                assert!(
                    (v - chunked[k]).abs() < 1e-5 * (1.0 + v.abs()),
                    "{:?} batch {size}: {k} {v} unchunked, {} chunked",
                    cfg.method,
                    chunked[k]
                );
            }
        }
    }
    Ok(())
}
