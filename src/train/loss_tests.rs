//! Loss tests: step-0 values and finite-difference gradients for every loss type.

use super::*;
use candle_core::{DType, Device, Var};

const ALL: [LossType; 5] = [LossType::Sigmoid, LossType::Ipo, LossType::Hinge, LossType::Robust, LossType::Simpo];

struct Case {
    pc: Vec<f64>,
    pr: Vec<f64>,
    rc: Vec<f32>,
    rr: Vec<f32>,
    lc: Vec<usize>,
    lr: Vec<usize>,
    w: Vec<f32>,
}

fn case() -> Case {
    Case {
        pc: vec![-12.0, -30.5, -7.25],
        pr: vec![-14.0, -29.0, -9.5],
        rc: vec![-12.5, -31.0, -7.0],
        rr: vec![-13.0, -30.0, -9.0],
        lc: vec![4, 9, 3],
        lr: vec![5, 8, 4],
        w: vec![1.0, 0.5, 2.0],
    }
}

fn loss_at(cfg: &DpoConfig, c: &Case, pc: &[f64], pr: &[f64]) -> Result<(Tensor, Metrics, Var, Var)> {
    let dev = Device::Cpu;
    let vc = Var::from_slice(pc, pc.len(), &dev)?;
    let vr = Var::from_slice(pr, pr.len(), &dev)?;
    let (l, m) = dpo_loss(
        cfg,
        &PairLogps {
            chosen: vc.as_tensor(),
            rejected: vr.as_tensor(),
            ref_chosen: &c.rc,
            ref_rejected: &c.rr,
            chosen_len: &c.lc,
            rejected_len: &c.lr,
            weights: &c.w,
        },
    )?;
    Ok((l, m, vc, vr))
}

#[test]
fn step_zero_policy_equals_reference() -> Result<()> {
    let c = case();
    let cfg = DpoConfig::default();
    let pc: Vec<f64> = c.rc.iter().map(|&x| x as f64).collect();
    let pr: Vec<f64> = c.rr.iter().map(|&x| x as f64).collect();
    let (_, m, _, _) = loss_at(&cfg, &c, &pc, &pr)?;
    // ln 2 per pair, each scaled by its weight, over the number of pairs (not the weights' sum).
    let expected = std::f64::consts::LN_2 * c.w.iter().map(|&w| f64::from(w)).sum::<f64>() / c.w.len() as f64;
    assert!((m["loss"] - expected).abs() < 1e-12, "loss {}", m["loss"]);
    assert_eq!(m["rewards/chosen"], 0.0);
    assert_eq!(m["rewards/rejected"], 0.0);
    assert_eq!(m["rewards/margins"], 0.0);
    assert_eq!(m["rewards/accuracies"], 0.0, "strict > like TRL");
    Ok(())
}

#[test]
fn finite_difference_gradients_of_every_loss() -> Result<()> {
    let c = case();
    for loss in ALL {
        for (e, sft) in [(0.0, 0.0), (0.1, 0.3)] {
            if loss == LossType::Hinge && e > 0.0 {
                continue; // hinge ignores label smoothing
            }
            let cfg = DpoConfig { loss, beta: 0.3, label_smoothing: e, simpo_gamma: 0.5, sft_weight: sft };
            let (l, _, vc, vr) = loss_at(&cfg, &c, &c.pc, &c.pr)?;
            let g = l.backward()?;
            let gc = g.get(vc.as_tensor()).expect("grad chosen").to_vec1::<f64>()?;
            let gr = g.get(vr.as_tensor()).expect("grad rejected").to_vec1::<f64>()?;
            let h = 1e-6;
            for i in 0..c.pc.len() {
                for (side, analytic) in [(0, gc[i]), (1, gr[i])] {
                    let (mut pc_p, mut pr_p, mut pc_m, mut pr_m) =
                        (c.pc.clone(), c.pr.clone(), c.pc.clone(), c.pr.clone());
                    if side == 0 {
                        pc_p[i] += h;
                        pc_m[i] -= h;
                    } else {
                        pr_p[i] += h;
                        pr_m[i] -= h;
                    }
                    let lp = loss_at(&cfg, &c, &pc_p, &pr_p)?.1["loss"];
                    let lm = loss_at(&cfg, &c, &pc_m, &pr_m)?.1["loss"];
                    let numeric = (lp - lm) / (2.0 * h);
                    assert!(
                        (numeric - analytic).abs() < 1e-6 * (1.0 + numeric.abs()),
                        "{loss:?} e={e} sft={sft} pair {i} side {side}: numeric {numeric} analytic {analytic}"
                    );
                }
            }
        }
    }
    Ok(())
}

#[test]
fn at_step_zero_the_gradient_is_half_beta_as_in_trl() -> Result<()> {
    // The first step of a run has policy = reference exactly, so h = 0, where
    // d/dh -logsigmoid(b h) = -b sigmoid(-b h) = -b/2. A kink in the formula's pieces at 0 once gave -b.
    let c = case();
    let pc: Vec<f64> = c.rc.iter().map(|&x| x as f64).collect();
    let pr: Vec<f64> = c.rr.iter().map(|&x| x as f64).collect();
    for loss in [LossType::Sigmoid, LossType::Robust] {
        let cfg = DpoConfig { loss, beta: 0.3, ..DpoConfig::default() };
        let (l, _, vc, vr) = loss_at(&cfg, &c, &pc, &pr)?;
        let g = l.backward()?;
        let gc = g.get(vc.as_tensor()).unwrap().to_vec1::<f64>()?;
        let gr = g.get(vr.as_tensor()).unwrap().to_vec1::<f64>()?;
        for i in 0..pc.len() {
            let want = -0.3 / 2.0 * f64::from(c.w[i]) / pc.len() as f64;
            assert!((gc[i] - want).abs() < 1e-12, "{loss:?} chosen {i}: {} vs {want}", gc[i]);
            assert!((gr[i] + want).abs() < 1e-12, "{loss:?} rejected {i}: {} vs {}", gr[i], -want);
        }
    }
    Ok(())
}

#[test]
fn loss_values_match_hand_computation() -> Result<()> {
    // One pair, beta 0.5: h = (-1 - -3) - (-2 - -2) = 2, z = 1.
    let dev = Device::Cpu;
    let pc = Tensor::new(&[-1.0f64], &dev)?;
    let pr = Tensor::new(&[-3.0f64], &dev)?;
    let p = PairLogps {
        chosen: &pc,
        rejected: &pr,
        ref_chosen: &[-2.0],
        ref_rejected: &[-2.0],
        chosen_len: &[2],
        rejected_len: &[4],
        weights: &[1.0],
    };
    let ls = |x: f64| -(1.0 + (-x).exp()).ln();
    let run = |loss, e| -> Result<f64> {
        let cfg = DpoConfig { loss, beta: 0.5, label_smoothing: e, simpo_gamma: 0.5, sft_weight: 0.0 };
        Ok(dpo_loss(&cfg, &p)?.1["loss"])
    };
    assert!((run(LossType::Sigmoid, 0.0)? - -ls(1.0)).abs() < 1e-12);
    assert!((run(LossType::Sigmoid, 0.1)? - (-0.9 * ls(1.0) - 0.1 * ls(-1.0))).abs() < 1e-12);
    assert!((run(LossType::Robust, 0.1)? - (-0.9 * ls(1.0) + 0.1 * ls(-1.0)) / 0.8).abs() < 1e-12);
    assert!((run(LossType::Hinge, 0.0)? - 0.0).abs() < 1e-12);
    // ipo: h = (1/2) - (-1/4) = 0.75, (0.75 - 1)^2
    assert!((run(LossType::Ipo, 0.0)? - 0.0625).abs() < 1e-12);
    // simpo: 0.5 * (-0.5 - -0.75) - 0.5 = -0.375
    assert!((run(LossType::Simpo, 0.0)? - -ls(-0.375)).abs() < 1e-12);
    let m = dpo_loss(&DpoConfig { beta: 0.5, ..Default::default() }, &p)?.1;
    assert_eq!(m["rewards/accuracies"], 1.0);
    assert!((m["rewards/margins"] - 1.0).abs() < 1e-12);
    Ok(())
}

#[test]
fn sft_loss_is_token_mean_nll() -> Result<()> {
    let dev = Device::Cpu;
    let lp = Tensor::new(&[-6.0f32, -2.0], &dev)?;
    let (l, m) = sft_loss(&lp, &[3, 1], &[1.0, 1.0])?;
    assert!((l.to_dtype(DType::F64)?.to_scalar::<f64>()? - 2.0).abs() < 1e-6);
    assert_eq!(m["num_tokens"], 4.0);
    Ok(())
}

#[test]
fn losses_and_metrics_equal_what_trl_computes_for_the_same_batch() -> Result<()> {
    // tests/fixtures/trl_loss/batch.json is written by scripts/make_trl_loss_fixture.py, which
    // runs TRL 1.16's own loss code on per-token log-probs (3 pairs of unequal lengths).
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/trl_loss/batch.json");
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json");
    let tokens = |p: &serde_json::Value, k: &str| -> Vec<f64> {
        p[k].as_array().expect("array").iter().map(|x| x.as_f64().expect("number")).collect()
    };
    let pairs = doc["pairs"].as_array().expect("pairs");
    let chosen: Vec<Vec<f64>> = pairs.iter().map(|p| tokens(p, "chosen_token_logps")).collect();
    let rejected: Vec<Vec<f64>> = pairs.iter().map(|p| tokens(p, "rejected_token_logps")).collect();
    let dev = Device::Cpu;
    let pc = Tensor::new(chosen.iter().map(|t| t.iter().sum()).collect::<Vec<f64>>(), &dev)?;
    let pr = Tensor::new(rejected.iter().map(|t| t.iter().sum()).collect::<Vec<f64>>(), &dev)?;
    let rc: Vec<f32> = pairs.iter().map(|p| p["ref_chosen"].as_f64().expect("ref") as f32).collect();
    let rr: Vec<f32> = pairs.iter().map(|p| p["ref_rejected"].as_f64().expect("ref") as f32).collect();
    let (lc, lr): (Vec<usize>, Vec<usize>) =
        (chosen.iter().map(Vec::len).collect(), rejected.iter().map(Vec::len).collect());
    assert!(lc.iter().chain(&lr).collect::<std::collections::BTreeSet<_>>().len() > 3, "unequal lengths");
    let w = vec![1.0; pairs.len()];
    let p = PairLogps {
        chosen: &pc,
        rejected: &pr,
        ref_chosen: &rc,
        ref_rejected: &rr,
        chosen_len: &lc,
        rejected_len: &lr,
        weights: &w,
    };
    let cases = doc["cases"].as_array().expect("cases");
    assert!(cases.iter().any(|c| c["sft_weight"].as_f64() > Some(0.0)), "the sft term is covered");
    for case in cases {
        let f = |k: &str| case[k].as_f64().expect(k);
        let cfg = DpoConfig {
            loss: serde_json::from_value(case["loss"].clone()).expect("loss type"),
            beta: f("beta"),
            label_smoothing: f("label_smoothing"),
            simpo_gamma: f("simpo_gamma"),
            sft_weight: f("sft_weight"),
        };
        // The reference sums are f32 in verdict: compare at f32 precision of sums ~30.
        let (_, m) = dpo_loss(&cfg, &p)?;
        for (key, want) in case["trl"].as_object().expect("trl metrics") {
            let want = want.as_f64().expect("number");
            let got = m[key.as_str()];
            assert!((got - want).abs() < 1e-5, "{:?} sft {}: {key} is {got}, TRL {want}", cfg.loss, cfg.sft_weight);
        }
    }
    Ok(())
}
