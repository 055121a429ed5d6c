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
