//! AdamW tests against a hand-written torch.optim.AdamW, both kernels, schedules, state I/O.

use super::*;
use candle_core::backprop::GradStore;

/// torch.optim.AdamW on plain f64 vectors.
fn reference(p: &mut [f64], grads: &[Vec<f64>], lrs: &[f64], wd: f64) {
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
    let (mut m, mut v) = (vec![0.0; p.len()], vec![0.0; p.len()]);
    for (t, (g, lr)) in grads.iter().zip(lrs).enumerate() {
        let t = (t + 1) as i32;
        for i in 0..p.len() {
            p[i] *= 1.0 - lr * wd;
            m[i] = b1 * m[i] + (1.0 - b1) * g[i];
            v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
            let denom = (v[i] / (1.0 - b2.powi(t))).sqrt() + eps;
            p[i] -= lr / (1.0 - b1.powi(t)) * m[i] / denom;
        }
    }
}

/// Gradients of `sum(w * c)` are `c`: a GradStore with chosen values.
fn grads_of(var: &Var, c: &[f32]) -> Result<GradStore> {
    let ct = Tensor::from_slice(c, c.len(), &Device::Cpu)?;
    (var.as_tensor() * ct)?.sum_all()?.backward()
}

#[test]
fn both_kernels_match_hand_computed_adamw() -> Result<()> {
    let p0 = [1.0f32, -2.0, 3.0, 0.5];
    let gs = [vec![0.1f32, 0.2, -0.3, 0.0], vec![-0.05, 0.4, 0.1, 1.0]];
    let cfg = OptimConfig {
        learning_rate: 0.1,
        weight_decay: 0.01,
        warmup_steps: 0,
        total_steps: 2,
        schedule: Schedule::Constant,
        max_grad_norm: 0.0,
        ..Default::default()
    };
    let mut want: Vec<f64> = p0.iter().map(|&x| x as f64).collect();
    let g64: Vec<Vec<f64>> = gs.iter().map(|g| g.iter().map(|&x| x as f64).collect()).collect();
    reference(&mut want, &g64, &[0.1, 0.1], 0.01);
    for fused in [true, false] {
        let var = Var::from_slice(&p0, 4, &Device::Cpu)?;
        let mut opt = AdamW::with_kernel(vec![("w".into(), var.clone())], cfg.clone(), fused)?;
        for g in &gs {
            opt.accumulate(&grads_of(&var, g)?)?;
            opt.step()?;
        }
        let got = var.as_tensor().to_vec1::<f32>()?;
        for (a, b) in got.iter().zip(&want) {
            assert!((*a as f64 - b).abs() < 3e-6 * (1.0 + b.abs()), "fused={fused}: {got:?} vs {want:?}");
        }
    }
    Ok(())
}

#[test]
fn clipping_reports_the_norm_before_clipping() -> Result<()> {
    let var = Var::from_slice(&[0.0f32, 0.0], 2, &Device::Cpu)?;
    let cfg =
        OptimConfig { learning_rate: 1.0, max_grad_norm: 1.0, schedule: Schedule::Constant, ..Default::default() };
    let mut opt = AdamW::new(vec![("w".into(), var.clone())], cfg)?;
    opt.accumulate(&grads_of(&var, &[3.0, 4.0])?)?;
    let s = opt.step()?;
    assert!((s.grad_norm - 5.0).abs() < 1e-6);
    // Adam's first step moves each coordinate by ~lr regardless of scale.
    let got = var.as_tensor().to_vec1::<f32>()?;
    assert!((got[0] + 1.0).abs() < 1e-4 && (got[1] + 1.0).abs() < 1e-4, "{got:?}");
    Ok(())
}

#[test]
fn accumulation_sums_gradients() -> Result<()> {
    let var = Var::from_slice(&[1.0f32, 1.0], 2, &Device::Cpu)?;
    let mut opt = AdamW::new(vec![("w".into(), var.clone())], OptimConfig::default())?;
    opt.accumulate(&grads_of(&var, &[0.5, 1.0])?)?;
    opt.accumulate(&grads_of(&var, &[0.5, 1.0])?)?;
    assert!((opt.grad_norm()? - (1.0f64 + 4.0).sqrt()).abs() < 1e-6);
    Ok(())
}

#[test]
fn the_norm_of_a_large_gradient_summed_in_parts_matches_f64() -> Result<()> {
    // Several parts of the parallel sum of squares, the last one short; and AdamW's update over
    // as many parts must move every element (a part skipped would stay put).
    let n = 3 * (1 << 16) + 1234;
    let c: Vec<f32> = (0..n).map(|i| ((i % 977) as f32 - 488.0) * 1e-3).collect();
    let var = Var::from_slice(&vec![1.0f32; n], n, &Device::Cpu)?;
    let cfg = OptimConfig { learning_rate: 0.1, max_grad_norm: 0.0, ..Default::default() };
    let mut opt = AdamW::new(vec![("w".into(), var.clone())], cfg)?;
    opt.accumulate(&grads_of(&var, &c)?)?;
    let want = c.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
    let got = opt.grad_norm()?;
    assert!((got / want - 1.0).abs() < 1e-6, "{got} vs {want}");
    opt.step()?;
    let w = var.as_tensor().to_vec1::<f32>()?;
    for (i, (&w, &g)) in w.iter().zip(&c).enumerate() {
        // The first AdamW step moves each weight by about lr against its gradient's sign.
        let moved = 1.0 - w;
        assert!(g == 0.0 || (moved * g.signum() - 0.1).abs() < 1e-3, "element {i}: {w} for gradient {g}");
    }
    Ok(())
}

#[test]
fn schedules_follow_transformers() {
    let c = OptimConfig {
        learning_rate: 1.0,
        warmup_steps: 2,
        total_steps: 10,
        schedule: Schedule::Linear,
        ..Default::default()
    };
    let lrs: Vec<f64> = (0..11).map(|k| c.lr_at(k)).collect();
    assert_eq!(&lrs[..3], &[0.0, 0.5, 1.0]);
    assert!((lrs[6] - 0.5).abs() < 1e-12);
    assert_eq!(lrs[10], 0.0);
    let c = OptimConfig { schedule: Schedule::Cosine, ..c };
    assert!((c.lr_at(6) - 0.5).abs() < 1e-12);
    assert!(c.lr_at(10).abs() < 1e-12);
}

#[test]
fn saved_state_resumes_identically() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cfg = OptimConfig { learning_rate: 0.05, weight_decay: 0.1, total_steps: 4, ..Default::default() };
    let gs = [[0.3f32, -0.2, 0.9], [0.1, 0.1, -0.4], [-0.7, 0.2, 0.05], [0.2, 0.2, 0.2]];
    let run = |split: Option<usize>| -> Result<Vec<f32>> {
        let var = Var::from_slice(&[0.1f32, 0.2, 0.3], 3, &Device::Cpu)?;
        let mut opt = AdamW::new(vec![("w".into(), var.clone())], cfg.clone())?;
        for (i, g) in gs.iter().enumerate() {
            if Some(i) == split {
                opt.save(&tmp.path().join("opt.safetensors"))?;
                let w = var.as_tensor().copy()?;
                let var2 = Var::from_tensor(&w)?;
                let mut opt2 = AdamW::new(vec![("w".into(), var2.clone())], cfg.clone())?;
                opt2.load(&tmp.path().join("opt.safetensors"))?;
                assert_eq!(opt2.step, i);
                for g in &gs[i..] {
                    opt2.accumulate(&grads_of(&var2, g)?)?;
                    opt2.step()?;
                }
                return var2.as_tensor().to_vec1::<f32>();
            }
            opt.accumulate(&grads_of(&var, g)?)?;
            opt.step()?;
        }
        var.as_tensor().to_vec1::<f32>()
    };
    assert_eq!(run(None)?, run(Some(2))?);
    Ok(())
}
