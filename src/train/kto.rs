//! KTO (Kahneman–Tversky optimisation) on unpaired answers: each answer is desirable or not on
//! its own, as TRL 1.16's `KTOTrainer` computes it (loss type `kto`).
//!
//! With `r = logp - ref_logp` (summed over the answer's tokens) and the batch's KL estimate
//! `z = max(0, mean(kl_logp - ref_kl_logp))` over mismatched (prompt, answer) pairs (a constant:
//! TRL computes it without gradient), a desirable answer costs `w_d (1 - sigmoid(b (r - z)))` and an
//! undesirable one `w_u (1 - sigmoid(b (z - r)))`; the loss is the mean over the batch's answers.
//! Metrics use TRL's names: `kl`, `rewards/*` (`b r`, mean per class), `logps/*` (sums, mean per
//! class), `rewards/margins` only when both classes are present.
//!
//! Per-answer weights scale each term, the count of answers normalizes (as in `loss`).

use candle_core::{Result, Tensor};

use super::loss::{Metrics, logsigmoid};

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KtoConfig {
    pub beta: f64,
    /// TRL's `desirable_weight`.
    pub desirable_weight: f64,
    /// TRL's `undesirable_weight`.
    pub undesirable_weight: f64,
}

impl Default for KtoConfig {
    fn default() -> Self {
        Self { beta: 0.1, desirable_weight: 1.0, undesirable_weight: 1.0 }
    }
}

impl KtoConfig {
    /// Class weights for an imbalanced set, as TRL's docs recommend: the weighted counts of the
    /// two classes equal (`w_d * desirable / (w_u * undesirable) = 1`, inside TRL's accepted range
    /// of 1 to 4/3), with the larger class at weight 1. Either count 0 keeps both weights at 1.
    pub fn balanced(beta: f64, desirable: usize, undesirable: usize) -> KtoConfig {
        let (d, u) = (desirable as f64, undesirable as f64);
        let (desirable_weight, undesirable_weight) = if desirable == 0 || undesirable == 0 {
            (1.0, 1.0)
        } else if d >= u {
            (1.0, d / u)
        } else {
            (u / d, 1.0)
        };
        KtoConfig { beta, desirable_weight, undesirable_weight }
    }
}

/// One batch of unpaired answers.
pub struct UnpairedLogps<'a> {
    /// The policy's summed answer log-probs, one per answer (carries the graph).
    pub logps: &'a Tensor,
    pub ref_logps: &'a [f32],
    pub desirable: &'a [bool],
    /// The policy's and the reference's summed log-probs of the mismatched pairs (constants).
    pub kl_logps: &'a [f32],
    pub ref_kl_logps: &'a [f32],
    /// Per-answer weights (all 1.0 for an unweighted mean).
    pub weights: &'a [f32],
}

/// The batch's KL estimate: the mean policy/reference log-ratio of the mismatched pairs,
/// clamped at 0 (TRL clamps it the same way).
pub fn kl_estimate(kl_logps: &[f32], ref_kl_logps: &[f32]) -> f64 {
    if kl_logps.is_empty() {
        return 0.0;
    }
    let sum: f64 = kl_logps.iter().zip(ref_kl_logps).map(|(&p, &r)| f64::from(p) - f64::from(r)).sum();
    (sum / kl_logps.len() as f64).max(0.0)
}

/// The KTO loss (scalar tensor) and TRL-named metrics.
pub fn kto_loss(cfg: &KtoConfig, u: &UnpairedLogps) -> Result<(Tensor, Metrics)> {
    let n = u.desirable.len();
    let z = kl_estimate(u.kl_logps, u.ref_kl_logps);
    let reference = Tensor::from_slice(u.ref_logps, n, u.logps.device())?.to_dtype(u.logps.dtype())?;
    let ratio = (u.logps - &reference)?;
    // The sign and class weight of each answer's term: sigmoid(s * b * (r - z)) with s = +1 for a
    // desirable answer and -1 for an undesirable one.
    let sign: Vec<f32> = u.desirable.iter().map(|&d| if d { 1.0 } else { -1.0 }).collect();
    let scale: Vec<f32> = u
        .desirable
        .iter()
        .zip(u.weights)
        .map(|(&d, &w)| w * if d { cfg.desirable_weight } else { cfg.undesirable_weight } as f32)
        .collect();
    let sign = Tensor::from_slice(&sign, n, u.logps.device())?.to_dtype(u.logps.dtype())?;
    let scale = Tensor::from_slice(&scale, n, u.logps.device())?.to_dtype(u.logps.dtype())?;
    let z_term = (((&ratio - z)? * cfg.beta)? * sign)?;
    // 1 - sigmoid(x) = sigmoid(-x) = exp(logsigmoid(-x)): finite value and gradient for any x.
    let losses = logsigmoid(&z_term.neg()?)?.exp()?;
    let loss = ((losses * scale)?.sum_all()? / n.max(1) as f64)?;

    let host = |t: &Tensor| t.detach().to_dtype(candle_core::DType::F64)?.to_vec1::<f64>();
    let (ratios, logps) = (host(&ratio)?, host(u.logps)?);
    let class_mean = |values: &[f64], want: bool| {
        let picked: Vec<f64> = values.iter().zip(u.desirable).filter(|&(_, &d)| d == want).map(|(&v, _)| v).collect();
        (!picked.is_empty()).then(|| picked.iter().sum::<f64>() / picked.len() as f64)
    };
    let mut m = Metrics::new();
    m.insert("loss".into(), loss.detach().to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?);
    m.insert("kl".into(), z);
    let rewards: Vec<f64> = ratios.iter().map(|r| r * cfg.beta).collect();
    let (chosen, rejected) = (class_mean(&rewards, true), class_mean(&rewards, false));
    for (name, value) in [
        ("rewards/chosen", chosen),
        ("rewards/rejected", rejected),
        ("logps/chosen", class_mean(&logps, true)),
        ("logps/rejected", class_mean(&logps, false)),
        ("rewards/margins", chosen.zip(rejected).map(|(c, r)| c - r)),
    ] {
        if let Some(v) = value {
            m.insert(name.into(), v);
        }
    }
    Ok((loss, m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn fixture() -> serde_json::Value {
        // Written by scripts/make_trl_loss_fixture.py, which runs TRL's own KTOTrainer._compute_loss.
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/trl_loss/kto.json");
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
    }

    fn column(rows: &[serde_json::Value], key: &str) -> Vec<f64> {
        rows.iter().map(|r| r[key].as_f64().unwrap()).collect()
    }

    #[test]
    fn loss_kl_and_metrics_equal_what_trl_computes_for_the_same_batch() -> Result<()> {
        let doc = fixture();
        let rows = doc["rows"].as_array().unwrap();
        let sums: Vec<f64> = rows
            .iter()
            .map(|r| r["token_logps"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).sum())
            .collect();
        let desirable: Vec<bool> = rows.iter().map(|r| r["desirable"].as_bool().unwrap()).collect();
        let f32s = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
        let reference = f32s(column(rows, "ref"));
        let kl_ref = f32s(column(rows, "kl_ref"));
        let cases = doc["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 3);
        let mut clamped_and_positive = (false, false);
        for case in cases {
            let shift = case["kl_shift"].as_f64().unwrap();
            let kl_policy = f32s(column(rows, "kl_policy").iter().map(|x| x + shift).collect());
            let cfg = KtoConfig {
                beta: case["beta"].as_f64().unwrap(),
                desirable_weight: case["desirable_weight"].as_f64().unwrap(),
                undesirable_weight: case["undesirable_weight"].as_f64().unwrap(),
            };
            let logps = Tensor::new(sums.as_slice(), &Device::Cpu)?;
            let (_, m) = kto_loss(
                &cfg,
                &UnpairedLogps {
                    logps: &logps,
                    ref_logps: &reference,
                    desirable: &desirable,
                    kl_logps: &kl_policy,
                    ref_kl_logps: &kl_ref,
                    weights: &vec![1.0; rows.len()],
                },
            )?;
            let trl = case["trl"].as_object().unwrap();
            assert_eq!(m.len(), trl.len(), "same metric names: {:?} vs {:?}", m.keys(), trl.keys());
            for (name, want) in trl {
                let (got, want) = (m[name], want.as_f64().unwrap());
                assert!((got - want).abs() <= 1e-5 * want.abs().max(1.0), "{name}: verdict {got}, TRL {want}");
            }
            if m["kl"] == 0.0 {
                clamped_and_positive.0 = true;
            } else {
                clamped_and_positive.1 = true;
            }
        }
        assert_eq!(clamped_and_positive, (true, true), "the fixture covers a clamped and a positive KL");
        Ok(())
    }

    /// Three answers (the third of weight 0) with a KL estimate of exactly 0.
    fn three_answers(logps: &Tensor) -> Result<(Tensor, Metrics)> {
        kto_loss(
            &KtoConfig::default(),
            &UnpairedLogps {
                logps,
                ref_logps: &[-10.0, -12.0, -8.0],
                desirable: &[true, false, true],
                kl_logps: &[-20.0, -21.0, -19.0],
                ref_kl_logps: &[-20.5, -20.0, -19.5],
                weights: &[1.0, 1.0, 0.0],
            },
        )
    }

    #[test]
    fn the_gradient_pushes_desirable_answers_up_and_undesirable_ones_down() -> Result<()> {
        let logps = Var::new(&[-10.0f64, -12.0, -8.0], &Device::Cpu)?;
        let (loss, _) = three_answers(logps.as_tensor())?;
        let grad = loss.backward()?.get(logps.as_tensor()).unwrap().to_vec1::<f64>()?;
        assert!(grad[0] < 0.0, "descending raises a desirable answer: {grad:?}");
        assert!(grad[1] > 0.0, "descending lowers an undesirable answer: {grad:?}");
        assert_eq!(grad[2], 0.0, "weight 0 contributes nothing");
        // Finite differences on the first answer.
        let at =
            |x: f64| -> Result<f64> { Ok(three_answers(&Tensor::new(&[x, -12.0, -8.0], &Device::Cpu)?)?.1["loss"]) };
        let numeric = (at(-10.0 + 1e-5)? - at(-10.0 - 1e-5)?) / 2e-5;
        assert!((numeric - grad[0]).abs() < 1e-7, "analytic {} vs numeric {numeric}", grad[0]);
        Ok(())
    }

    #[test]
    fn balanced_weights_equalise_the_classes() {
        let c = KtoConfig::balanced(0.1, 30, 10);
        assert_eq!((c.desirable_weight, c.undesirable_weight), (1.0, 3.0));
        let c = KtoConfig::balanced(0.1, 5, 20);
        assert_eq!((c.desirable_weight, c.undesirable_weight), (4.0, 1.0));
        let c = KtoConfig::balanced(0.1, 0, 7);
        assert_eq!((c.desirable_weight, c.undesirable_weight), (1.0, 1.0));
    }
}
