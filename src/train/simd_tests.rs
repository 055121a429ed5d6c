//! The `simd_fn!` kernels give the same bits with AVX-512, with AVX2 and with the baseline
//! build: each fused op (RMSNorm, SwiGLU, attention, log-softmax + gather, AdamW), forward and
//! backward, run at every level this CPU has. (Rust never fuses a multiply and an add on its
//! own, and the reductions keep the same partial sums at every width, so equality is exact.)

use candle_core::{DType, Device, Result, Tensor, Var};

use super::adamw_kernel::Update;
use super::attention::{Heads, attention};
use super::real::{Simd, simd_best};

/// `f()` at each level this CPU runs, best first, as f32 bits.
fn at_each_level(f: impl Fn() -> Result<Vec<Vec<f32>>>) -> Vec<(Simd, Vec<Vec<u32>>)> {
    let mut out = Vec::new();
    for (cap, level) in [(u8::MAX, simd_best()), (1, simd_best().min(Simd::Avx2)), (0, Simd::Baseline)] {
        if out.iter().any(|(l, _)| *l == level) {
            continue;
        }
        let r = crate::model::simd::with_simd_cap(cap, &f);
        let bits = r.unwrap().iter().map(|v| v.iter().map(|x| x.to_bits()).collect()).collect();
        out.push((level, bits));
    }
    out
}

fn assert_same(what: &str, runs: Vec<(Simd, Vec<Vec<u32>>)>) {
    let (best, want) = &runs[0];
    for (level, got) in &runs[1..] {
        for (i, (a, b)) in want.iter().zip(got).enumerate() {
            let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
            assert!(a == b, "{what}, output {i}: {best:?} and {level:?} differ in {} of {}", a.len() - same, a.len());
        }
    }
    eprintln!("{what}: {} levels agree ({:?})", runs.len(), runs.iter().map(|r| r.0).collect::<Vec<_>>());
}

fn vec(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()
}

/// Random inputs (made once, then shared by every level); the sizes are odd so every vector
/// width leaves a remainder.
fn randn(shape: (usize, usize)) -> Result<Tensor> {
    Tensor::randn(0f32, 1.5, shape, &Device::Cpu)
}

#[test]
fn rms_norm_and_swiglu_are_identical_at_every_level() {
    let (x, w) = (randn((7, 131)).unwrap(), randn((1, 131)).unwrap().flatten_all().unwrap());
    assert_same(
        "rms_norm",
        at_each_level(|| {
            let (xv, wv) = (Var::from_tensor(&x)?, Var::from_tensor(&w)?);
            let y = super::fused::rms_norm(xv.as_tensor(), wv.as_tensor(), 1e-5).unwrap()?;
            let g = (y.sqr()?.sum_all()? * 0.5)?.backward()?;
            Ok(vec![vec(&y)?, vec(g.get(xv.as_tensor()).unwrap())?, vec(g.get(wv.as_tensor()).unwrap())?])
        }),
    );
    let (gate, up) = (randn((5, 203)).unwrap(), randn((5, 203)).unwrap());
    assert_same(
        "swiglu",
        at_each_level(|| {
            let (gv, uv) = (Var::from_tensor(&gate)?, Var::from_tensor(&up)?);
            let y = super::swiglu::swiglu(gv.as_tensor(), uv.as_tensor()).unwrap()?;
            let g = (y.sqr()?.sum_all()? * 0.5)?.backward()?;
            Ok(vec![vec(&y)?, vec(g.get(gv.as_tensor()).unwrap())?, vec(g.get(uv.as_tensor()).unwrap())?])
        }),
    );
}

#[test]
fn attention_is_identical_at_every_level() {
    let shape = Heads { batch: 2, seq: 70, q_heads: 4, kv_heads: 2, head_dim: 10 };
    let (b, t) = (shape.batch, shape.seq);
    let q = randn((b * t, 4 * 10)).unwrap();
    let k = randn((b * t, 2 * 10)).unwrap();
    let v = randn((b * t, 2 * 10)).unwrap();
    let angles = randn((b * t, 5)).unwrap();
    let (cos, sin) = (angles.cos().unwrap(), angles.sin().unwrap());
    let causal: Vec<f32> = (0..b * t * t).map(|n| if (n % t) <= (n / t) % t { 0.0 } else { -1e9 }).collect();
    let bias = Tensor::from_vec(causal, (b, t, t), &Device::Cpu).unwrap();
    assert_same(
        "attention",
        at_each_level(|| {
            let (qv, kv, vv) = (Var::from_tensor(&q)?, Var::from_tensor(&k)?, Var::from_tensor(&v)?);
            let y =
                attention(qv.as_tensor(), kv.as_tensor(), vv.as_tensor(), (&cos, &sin, &bias), shape, 0.3).unwrap()?;
            let g = (y.sqr()?.sum_all()? * 0.5)?.backward()?;
            let grads = [&qv, &kv, &vv].map(|x| vec(g.get(x.as_tensor()).unwrap()));
            let [dq, dk, dv] = grads;
            Ok(vec![vec(&y)?, dq?, dk?, dv?])
        }),
    );
}

#[test]
fn target_logps_and_adamw_are_identical_at_every_level() {
    let logits = (randn((9, 1001)).unwrap() * 8.0).unwrap();
    let targets = Tensor::from_vec((0..9u32).map(|i| i * 97).collect::<Vec<_>>(), 9, &Device::Cpu).unwrap();
    assert_same(
        "target_logps",
        at_each_level(|| {
            let lv = Var::from_tensor(&logits)?;
            let lp = super::target_logp::target_logps(lv.as_tensor(), &targets)?;
            let g = (lp.sum_all()? * 0.05)?.backward()?;
            Ok(vec![vec(&lp)?, vec(g.get(lv.as_tensor()).unwrap())?])
        }),
    );
    let n = 100_003;
    let [p, g, m, v] = [(); 4].map(|()| vec(&randn((1, n)).unwrap()).unwrap());
    let v: Vec<f32> = v.iter().map(|x| x * x).collect();
    let up = Update {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
        grad_scale: 0.7,
        bc1: 0.1,
        bc2_sqrt: 0.0447,
    };
    assert_same(
        "adamw",
        at_each_level(|| {
            let (mut p, mut m, mut v) = (p.clone(), m.clone(), v.clone());
            up.apply(&mut p, &g, &mut m, &mut v);
            Ok(vec![p, m, v])
        }),
    );
}
