//! Step tests of the methods beside DPO on the tiny random model: ORPO's NLL covers the whole
//! chosen row, KTO's KL term is the mismatched answers' log-ratio, both separate fixed examples,
//! and KTO's per-class metrics combine over micro-batches as over one batch.

use super::tests::{pairs, tiny_model};
use super::*;
use crate::train::kto::KtoConfig;
use crate::train::optim::OptimConfig;

fn cfg(method: Method) -> StepConfig {
    StepConfig { method, truncation: Truncation::default(), pad_id: 0 }
}

/// KTO rows from the fixed pairs: each chosen answer desirable, each rejected one undesirable,
/// every row's mismatched answer the chosen answer of the next pair (another prompt).
fn kto_rows() -> Vec<PairIds> {
    let p = pairs();
    let n = p.len();
    let mut rows = Vec::new();
    for (i, pair) in p.iter().enumerate() {
        let other = p[(i + 1) % n].chosen.clone();
        for (answer, desirable) in [(&pair.chosen, true), (&pair.rejected, false)] {
            rows.push(PairIds {
                prompt: pair.prompt.clone(),
                chosen: answer.clone(),
                rejected: other.clone(),
                weight: 1.0,
                desirable: Some(desirable),
            });
        }
    }
    rows
}

#[test]
fn orpo_nll_is_over_the_prompt_and_the_answer_of_each_chosen_row() -> Result<()> {
    let model = tiny_model(4, false)?;
    let data = pairs();
    let (_, m, _) = forward_loss(&model, &data, &[], &cfg(Method::Orpo { beta: 0.1 }))?;
    // The same rows as plain sequences whose "response" is the whole row.
    let whole: Vec<Vec<u32>> = data.iter().map(|p| [p.prompt.as_slice(), p.chosen.as_slice()].concat()).collect();
    let seqs: Vec<(&[u32], &[u32])> = whole.iter().map(|w| (&[][..], w.as_slice())).collect();
    let batch = SeqBatch::new(&seqs, &Truncation::default(), 0, model.device())?;
    let rows = sequence_logps(&model, &batch)?.to_vec1::<f32>()?;
    let tokens: usize = whole.iter().map(|w| w.len() - 1).sum();
    let want = -rows.iter().map(|&x| f64::from(x)).sum::<f64>() / tokens as f64;
    assert!((m["nll_loss"] - want).abs() < 1e-4 * want.abs(), "nll_loss {} vs the rows' {want}", m["nll_loss"]);
    for name in ["log_odds_ratio", "log_odds_chosen", "rewards/margins", "logps/chosen"] {
        assert!(m.contains_key(name), "ORPO logs TRL's {name}: {m:?}");
    }
    assert!(!Method::Orpo { beta: 0.1 }.needs_reference(), "no reference pass for ORPO");
    Ok(())
}

#[test]
fn kto_kl_term_is_the_mismatched_answers_log_ratio_to_the_reference() -> Result<()> {
    let model = tiny_model(6, false)?;
    let rows = kto_rows();
    let refs = reference_logps(&model, &rows, &Truncation::default(), 0, 3)?;
    let step = cfg(Method::Kto(KtoConfig::default()));
    let mut opt =
        AdamW::new(model.trainable_vars(), OptimConfig { learning_rate: 1e-2, total_steps: 4, ..Default::default() })?;
    let first = train_step(&model, &[(&rows, &refs)], &step, &mut opt)?;
    assert_eq!(first["kl"], 0.0, "before any update the policy is the reference");
    for _ in 0..3 {
        train_step(&model, &[(&rows, &refs)], &step, &mut opt)?;
    }
    let (_, m, _) = forward_loss(&model, &rows, &refs, &step)?;
    // The policy's log-probs of prompt i followed by the other prompt's answer, from scratch.
    let now = reference_logps(&model, &rows, &Truncation::default(), 0, 3)?;
    let mean = now.iter().zip(&refs).map(|(a, r)| f64::from(a.rejected - r.rejected)).sum::<f64>() / rows.len() as f64;
    assert!((m["kl"] - mean.max(0.0)).abs() < 1e-4, "kl {} vs the mismatched pairs' {mean}", m["kl"]);
    Ok(())
}

/// `steps` full-batch steps of `method` on `data`; the metrics of each.
fn train(method: Method, data: &[PairIds], steps: usize) -> Result<Vec<Metrics>> {
    let model = tiny_model(7, false)?;
    let step = cfg(method);
    let refs = if step.method.needs_reference() {
        reference_logps(&model, data, &Truncation::default(), 0, 4)?
    } else {
        Vec::new()
    };
    let mut opt = AdamW::new(
        model.trainable_vars(),
        OptimConfig { learning_rate: 1e-2, total_steps: steps, ..Default::default() },
    )?;
    (0..steps).map(|_| train_step(&model, &[(data, &refs)], &step, &mut opt)).collect()
}

#[test]
fn kto_and_orpo_separate_fixed_examples() -> Result<()> {
    let kto = train(Method::Kto(KtoConfig::default()), &kto_rows(), 30)?;
    let orpo = train(Method::Orpo { beta: 0.5 }, &pairs(), 30)?;
    for (name, ms) in [("kto", &kto), ("orpo", &orpo)] {
        let (first, last) = (&ms[0], ms.last().expect("steps"));
        eprintln!(
            "{name}: margin {:.3} -> {:.3}, loss {:.3} -> {:.3}",
            first["rewards/margins"], last["rewards/margins"], first["loss"], last["loss"]
        );
        assert!(last["rewards/margins"] > first["rewards/margins"] + 0.05, "{name}: {first:?} -> {last:?}");
        assert!(last["loss"] < first["loss"], "{name}: loss {} -> {}", first["loss"], last["loss"]);
    }
    assert!(kto[0]["rewards/margins"].abs() < 1e-6, "KTO starts at the reference");
    assert!(orpo.last().unwrap()["log_odds_chosen"] > orpo[0]["log_odds_chosen"]);
    Ok(())
}

#[test]
fn kto_class_metrics_over_micro_batches_equal_one_batch() -> Result<()> {
    let model = tiny_model(8, false)?;
    // Sorted by class: the first micro-batches hold only desirable answers, the last only
    // undesirable ones, so a plain average by share of rows would halve each class's mean.
    let mut rows = kto_rows();
    rows.sort_by_key(|r| !r.desirable.unwrap());
    let refs: Vec<RefLogps> = reference_logps(&model, &rows, &Truncation::default(), 0, 4)?
        .into_iter()
        .enumerate()
        .map(|(i, r)| RefLogps { chosen: r.chosen + 0.1 * i as f32, rejected: r.rejected })
        .collect();
    let step = cfg(Method::Kto(KtoConfig::default()));
    let whole = evaluate(&model, &rows, &refs, &step, rows.len())?;
    let chunked = evaluate(&model, &rows, &refs, &step, 3)?;
    for name in ["rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected"] {
        assert!(
            (whole[name] - chunked[name]).abs() < 1e-4 * whole[name].abs().max(1.0),
            "{name}: one batch {} vs micro-batches {}",
            whole[name],
            chunked[name]
        );
    }
    Ok(())
}
