//! ORPO (odds-ratio preference optimisation): one stage instead of SFT then DPO, and no
//! reference model, so no reference pass and no reference memory. As TRL 1.16's
//! `trl.experimental.orpo.ORPOTrainer` computes it:
//!
//! with `a_c`, `a_r` the chosen and rejected answers' token-averaged log-probs,
//! `log_odds = (a_c - a_r) - (log(1 - e^a_c) - log(1 - e^a_r))`, the loss is
//! `nll - b * mean(logsigmoid(log_odds))`, where `nll` is the mean negative log-prob over every
//! token of the chosen rows — prompt and answer, as TRL's ORPO computes it (TRL's comment: "orpo
//! chosen nll loss is computed over the full prompt and response").
//! Metrics use TRL's names: `rewards/*` are `b a`, `logps/*` the averaged log-probs, plus
//! `nll_loss`, `log_odds_ratio` (mean logsigmoid) and `log_odds_chosen` (mean log odds).
//!
//! Per-pair weights scale each pair's terms (its odds term and its chosen tokens' NLL); the
//! count of pairs (tokens for the NLL) normalizes, as in `loss`.

use candle_core::{Result, Tensor};

use super::loss::{Metrics, logsigmoid};

/// One batch of pairs for ORPO.
pub struct OrpoLogps<'a> {
    /// Summed log-probs of the chosen and rejected answers (carry the graph).
    pub chosen: &'a Tensor,
    pub rejected: &'a Tensor,
    pub chosen_len: &'a [usize],
    pub rejected_len: &'a [usize],
    /// Summed log-probs of every predicted token of each chosen row, prompt included (carries
    /// the graph), and how many tokens that is (the row's length minus one).
    pub chosen_row: &'a Tensor,
    pub chosen_row_tokens: &'a [usize],
    /// Per-pair weights (all 1.0 for an unweighted mean).
    pub weights: &'a [f32],
}

/// `log(1 - e^x)` for `x <= 0`, accurate on both sides of `-ln 2` (TRL's `log1mexp` branches
/// there too). candle has no `expm1`, so near 0 it uses `e^x - 1 = 2t / (1 - t)` with
/// `t = tanh(x/2)`, which keeps the digits that `e^x - 1` would cancel. Each branch gets its
/// input clamped to its own side so the branch not taken stays finite (and so does its gradient).
fn log1mexp(x: &Tensor) -> Result<Tensor> {
    let split = -std::f64::consts::LN_2;
    let far = x.minimum(split)?;
    let far_value = (far.exp()?.neg()? + 1.0)?.log()?;
    let near = x.maximum(split)?;
    let t = (&near * 0.5)?.tanh()?;
    let minus_expm1 = ((&t * -2.0)? / (t.neg()? + 1.0)?)?;
    let near_value = minus_expm1.log()?;
    x.lt(split)?.where_cond(&far_value, &near_value)
}

fn scalar(t: &Tensor) -> Result<f64> {
    t.detach().to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()
}

fn host(t: &Tensor) -> Result<Vec<f64>> {
    t.detach().to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 }
}

/// The ORPO loss (scalar tensor) and TRL-named metrics; `beta` is TRL's `beta` (λ in the paper).
pub fn orpo_loss(beta: f64, p: &OrpoLogps) -> Result<(Tensor, Metrics)> {
    let n = p.weights.len();
    let like = p.chosen;
    let floats = |v: Vec<f32>| Tensor::from_slice(&v, n, like.device())?.to_dtype(like.dtype());
    let w = floats(p.weights.to_vec())?;
    let len_c = floats(p.chosen_len.iter().map(|&l| l.max(1) as f32).collect())?;
    let len_r = floats(p.rejected_len.iter().map(|&l| l.max(1) as f32).collect())?;
    let avg_c = (p.chosen / &len_c)?;
    let avg_r = (p.rejected / &len_r)?;
    let log_odds = ((&avg_c - &avg_r)? - (log1mexp(&avg_c)? - log1mexp(&avg_r)?)?)?;
    let ratio = logsigmoid(&log_odds)?;
    let odds_term = ((&ratio * &w)?.sum_all()? / n.max(1) as f64)?;
    let row_tokens: usize = p.chosen_row_tokens.iter().sum();
    let nll = ((p.chosen_row.neg()? * &w)?.sum_all()? / row_tokens.max(1) as f64)?;
    let loss = (&nll - (odds_term * beta)?)?;

    let (ac, ar) = (host(&avg_c)?, host(&avg_r)?);
    let (rc, rr): (Vec<f64>, Vec<f64>) = (ac.iter().map(|a| a * beta).collect(), ar.iter().map(|a| a * beta).collect());
    let mut m = Metrics::new();
    m.insert("loss".into(), scalar(&loss)?);
    m.insert("rewards/chosen".into(), mean(&rc));
    m.insert("rewards/rejected".into(), mean(&rr));
    let won: Vec<f64> = rc.iter().zip(&rr).map(|(c, r)| if c > r { 1.0 } else { 0.0 }).collect();
    m.insert("rewards/accuracies".into(), mean(&won));
    m.insert("rewards/margins".into(), mean(&rc.iter().zip(&rr).map(|(c, r)| c - r).collect::<Vec<_>>()));
    m.insert("logps/chosen".into(), mean(&ac));
    m.insert("logps/rejected".into(), mean(&ar));
    m.insert("nll_loss".into(), scalar(&nll)?);
    m.insert("log_odds_ratio".into(), mean(&host(&ratio)?));
    m.insert("log_odds_chosen".into(), mean(&host(&log_odds)?));
    Ok((loss, m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn numbers(v: &serde_json::Value) -> Vec<f64> {
        v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
    }

    #[test]
    fn loss_and_metrics_equal_what_trl_computes_for_the_same_batch() -> Result<()> {
        // Written by scripts/make_trl_loss_fixture.py, which runs TRL's own
        // ORPOTrainer.get_batch_loss_metrics and odds_ratio_loss.
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/trl_loss/orpo.json");
        let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).unwrap();
        let pairs = doc["pairs"].as_array().unwrap();
        let (mut c, mut r, mut row, mut lc, mut lr, mut lrow) = (vec![], vec![], vec![], vec![], vec![], vec![]);
        for p in pairs {
            let (chosen, rejected) = (numbers(&p["chosen_token_logps"]), numbers(&p["rejected_token_logps"]));
            let prompt = numbers(&p["chosen_prompt_logps"]);
            c.push(chosen.iter().sum::<f64>());
            r.push(rejected.iter().sum::<f64>());
            row.push(prompt.iter().sum::<f64>() + chosen.iter().sum::<f64>());
            lc.push(chosen.len());
            lr.push(rejected.len());
            lrow.push(prompt.len() + chosen.len());
        }
        let t = |v: &[f64]| Tensor::new(v, &Device::Cpu);
        let (c, r, row) = (t(&c)?, t(&r)?, t(&row)?);
        for case in doc["cases"].as_array().unwrap() {
            let beta = case["beta"].as_f64().unwrap();
            let (_, m) = orpo_loss(
                beta,
                &OrpoLogps {
                    chosen: &c,
                    rejected: &r,
                    chosen_len: &lc,
                    rejected_len: &lr,
                    chosen_row: &row,
                    chosen_row_tokens: &lrow,
                    weights: &vec![1.0; pairs.len()],
                },
            )?;
            let trl = case["trl"].as_object().unwrap();
            assert_eq!(m.len(), trl.len(), "same metric names: {:?} vs {:?}", m.keys(), trl.keys());
            for (name, want) in trl {
                let (got, want) = (m[name], want.as_f64().unwrap());
                // TRL computes the odds ratio in f32.
                assert!(
                    (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                    "beta {beta} {name}: verdict {got}, TRL {want}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn log1mexp_is_accurate_on_both_sides_and_its_gradient_is_finite() -> Result<()> {
        let ln2 = std::f64::consts::LN_2;
        let xs = [-40.0f64, -3.0, -ln2 - 1e-9, -ln2 + 1e-9, -0.1, -1e-3, -1e-7];
        let x = Var::new(&xs, &Device::Cpu)?;
        let y = log1mexp(x.as_tensor())?;
        for (&xi, yi) in xs.iter().zip(y.to_vec1::<f64>()?) {
            let want = if xi < -std::f64::consts::LN_2 { (-xi.exp()).ln_1p() } else { (-xi.exp_m1()).ln() };
            assert!((yi - want).abs() <= 1e-12 * want.abs().max(1e-300) + 1e-15, "log1mexp({xi}) = {yi}, want {want}");
        }
        let grad = y.sum_all()?.backward()?.get(x.as_tensor()).unwrap().to_vec1::<f64>()?;
        for (&xi, g) in xs.iter().zip(grad) {
            // d/dx log(1 - e^x) = -e^x / (1 - e^x) = -1 / (e^-x - 1)
            let want = -1.0 / (-xi).exp_m1();
            assert!(g.is_finite() && (g - want).abs() <= 1e-6 * want.abs().max(1.0), "at {xi}: {g} vs {want}");
        }
        Ok(())
    }

    #[test]
    fn finite_differences_agree_with_the_gradient() -> Result<()> {
        let weights = [1.0f32, 0.5, 2.0];
        let (lc, lr, rows) = ([4usize, 9, 2], [6usize, 3, 7], [6usize, 11, 4]);
        let loss_at = |c: &[f64], r: &[f64], row: &[f64]| -> Result<(Tensor, Var, Var, Var)> {
            let (vc, vr, vrow) = (Var::new(c, &Device::Cpu)?, Var::new(r, &Device::Cpu)?, Var::new(row, &Device::Cpu)?);
            let (loss, _) = orpo_loss(
                0.3,
                &OrpoLogps {
                    chosen: vc.as_tensor(),
                    rejected: vr.as_tensor(),
                    chosen_len: &lc,
                    rejected_len: &lr,
                    chosen_row: vrow.as_tensor(),
                    chosen_row_tokens: &rows,
                    weights: &weights,
                },
            )?;
            Ok((loss, vc, vr, vrow))
        };
        let (c, r, row) = ([-3.0, -20.0, -0.5], [-9.0, -4.0, -10.0], [-8.0, -31.0, -6.0]);
        let (loss, vc, vr, vrow) = loss_at(&c, &r, &row)?;
        let grads = loss.backward()?;
        let analytic: Vec<Vec<f64>> = [&vc, &vr, &vrow]
            .iter()
            .map(|v| grads.get(v.as_tensor()).unwrap().to_vec1::<f64>())
            .collect::<Result<_>>()?;
        let value = |c: &[f64], r: &[f64], row: &[f64]| -> Result<f64> { scalar(&loss_at(c, r, row)?.0) };
        for (which, base) in [&c, &r, &row].into_iter().enumerate() {
            for i in 0..3 {
                let (mut up, mut down) = (base.to_vec(), base.to_vec());
                up[i] += 1e-6;
                down[i] -= 1e-6;
                let args = |v: &[f64]| match which {
                    0 => (v.to_vec(), r.to_vec(), row.to_vec()),
                    1 => (c.to_vec(), v.to_vec(), row.to_vec()),
                    _ => (c.to_vec(), r.to_vec(), v.to_vec()),
                };
                let ((uc, ur, urow), (dc, dr, drow)) = (args(&up), args(&down));
                let numeric = (value(&uc, &ur, &urow)? - value(&dc, &dr, &drow)?) / 2e-6;
                let a = analytic[which][i];
                assert!((numeric - a).abs() < 1e-6, "input {which}[{i}]: analytic {a}, numeric {numeric}");
            }
        }
        Ok(())
    }
}
