use super::*;
use crate::train::model::softmax_last;
use candle_core::{D, DType, Device, Var};

const HEADS: Heads = Heads { batch: 2, seq: 5, q_heads: 4, kv_heads: 2, head_dim: 6 };
/// Longer than one block of query rows.
const LONG: Heads = Heads { batch: 2, seq: 150, q_heads: 2, kv_heads: 1, head_dim: 4 };

/// The same attention from candle ops, heads-first, each query head reading its kv head.
fn composed(
    shape: Heads,
    (q, k, v): (&Tensor, &Tensor, &Tensor),
    (cos, sin, bias): (&Tensor, &Tensor, &Tensor),
    scale: f64,
) -> Result<Tensor> {
    let Heads { batch: b, seq: t, q_heads: nh, kv_heads: nkv, head_dim: hd } = shape;
    let heads = |x: &Tensor, n: usize| x.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous();
    let (cos, sin) = (cos.reshape((b, 1, t, hd / 2))?, sin.reshape((b, 1, t, hd / 2))?);
    let rope = |x: &Tensor| -> Result<Tensor> {
        let (x1, x2) = (x.narrow(D::Minus1, 0, hd / 2)?, x.narrow(D::Minus1, hd / 2, hd / 2)?);
        let a = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
        let c = (x2.broadcast_mul(&cos)? + x1.broadcast_mul(&sin)?)?;
        Tensor::cat(&[a, c], D::Minus1)
    };
    let (q, k, v) = (rope(&heads(q, nh)?)?, rope(&heads(k, nkv)?)?, heads(v, nkv)?);
    let kv = |x: &Tensor| -> Result<Tensor> {
        let per_head: Vec<Tensor> = (0..nh).map(|h| x.narrow(1, h / (nh / nkv), 1)).collect::<Result<_>>()?;
        Tensor::cat(&per_head, 1)
    };
    let att = (q.matmul(&kv(&k)?.t()?)? * scale)?.broadcast_add(&bias.reshape((b, 1, t, t))?)?;
    let y = softmax_last(&att)?.matmul(&kv(&v)?)?;
    y.transpose(1, 2)?.contiguous()?.reshape((b * t, nh * hd))
}

/// A causal mask for row 0 and a packed-pair mask for row 1: a prompt of 2/5 of the row, then
/// the chosen part, then the rejected part (from 3/5), which sees the prompt and itself.
fn mask(t: usize, dev: &Device) -> Result<Tensor> {
    let (shared, split) = (2 * t / 5, 3 * t / 5);
    let mut m = vec![-1e9f64; 2 * t * t];
    for i in 0..t {
        for j in 0..=i {
            m[i * t + j] = 0.0;
            if i < split || j < shared || j >= split {
                m[t * t + i * t + j] = 0.0;
            }
        }
    }
    Tensor::from_vec(m, (2, t, t), dev)
}

#[test]
fn fused_attention_matches_composed_ops_with_gradients() -> Result<()> {
    let dev = Device::Cpu;
    for heads in [HEADS, LONG] {
        let Heads { batch: b, seq: t, q_heads: nh, kv_heads: nkv, head_dim: hd } = heads;
        let q = Var::randn(0f64, 1., (b * t, nh * hd), &dev)?;
        let k = Var::randn(0f64, 1., (b * t, nkv * hd), &dev)?;
        let v = Var::randn(0f64, 1., (b * t, nkv * hd), &dev)?;
        let angles = Tensor::randn(0f64, 2., (b * t, hd / 2), &dev)?;
        let (cos, sin, bias) = (angles.cos()?, angles.sin()?, mask(t, &dev)?);
        let scale = 1.0 / (hd as f64).sqrt();
        let qkv = (q.as_tensor(), k.as_tensor(), v.as_tensor());
        let fused = attention(qkv.0, qkv.1, qkv.2, (&cos, &sin, &bias), heads, scale).unwrap()?;
        let plain = composed(heads, qkv, (&cos, &sin, &bias), scale)?;
        let diff =
            |a: &Tensor, b: &Tensor| -> Result<f64> { (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>() };
        assert!(diff(&fused, &plain)? < 1e-12, "{heads:?}: forward differs by {}", diff(&fused, &plain)?);
        let c = Tensor::randn(0f64, 1., (b * t, nh * hd), &dev)?;
        let g1 = (&fused * &c)?.sum_all()?.backward()?;
        let g2 = (&plain * &c)?.sum_all()?.backward()?;
        for (name, x) in [("q", &q), ("k", &k), ("v", &v)] {
            let d = diff(g1.get(x.as_tensor()).unwrap(), g2.get(x.as_tensor()).unwrap())?;
            assert!(d < 1e-10, "{heads:?}: gradient of {name} differs by {d}");
        }
        // A second backward through the same graph recomputes the softmax it no longer holds.
        let again = (&fused * &c)?.sum_all()?.backward()?;
        assert!(diff(again.get(q.as_tensor()).unwrap(), g1.get(q.as_tensor()).unwrap())? < 1e-12);
    }
    Ok(())
}

#[test]
fn f32_attention_stays_close_to_f64() -> Result<()> {
    let dev = Device::Cpu;
    let Heads { batch: b, seq: t, q_heads: nh, kv_heads: nkv, head_dim: hd } = HEADS;
    let q = Tensor::randn(0f64, 2., (b * t, nh * hd), &dev)?;
    let k = Tensor::randn(0f64, 2., (b * t, nkv * hd), &dev)?;
    let v = Tensor::randn(0f64, 1., (b * t, nkv * hd), &dev)?;
    let angles = Tensor::randn(0f64, 2., (b * t, hd / 2), &dev)?;
    let (cos, sin, bias) = (angles.cos()?, angles.sin()?, mask(t, &dev)?);
    let f64_out = attention(&q, &k, &v, (&cos, &sin, &bias), HEADS, 0.4).unwrap()?;
    let f = |x: &Tensor| x.to_dtype(DType::F32);
    let f32_out = attention(&f(&q)?, &f(&k)?, &f(&v)?, (&f(&cos)?, &f(&sin)?, &f(&bias)?), HEADS, 0.4).unwrap()?;
    let d = (f32_out.to_dtype(DType::F64)? - f64_out)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
    assert!(d < 1e-5, "f32 attention differs from f64 by {d}");
    Ok(())
}

#[test]
fn masked_probabilities_are_exact_zeros_not_subnormals() {
    // IEEE mode on this thread (FTZ would hide subnormals); restored after.
    let before = crate::model::denormals::this_thread_flushes();
    crate::model::denormals::set_this_thread(false);
    // A causal row of 8 keys where the last 3 are hidden, scores around 0: the row sum is about
    // 5, so the old exp's 1.25e-38 at a hidden key became 2.5e-39, a subnormal.
    let mut p = vec![0.1f32, -0.2, 0.3, 0.0, 0.05, 0.0, 0.0, 0.0];
    let mask = [0.0f32, 0.0, 0.0, 0.0, 0.0, -1e9, -1e9, -1e9];
    softmax_rows(&mut p, &mask, 8, 8);
    crate::model::denormals::set_this_thread(before);
    assert_eq!(&p[5..], &[0.0; 3], "{p:?}");
    assert!(p.iter().all(|x| !x.is_subnormal()));
    assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
}
