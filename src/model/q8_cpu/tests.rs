//! Tests of the Q8_0/Q4_1 CPU kernels: against candle's product, every SIMD level and batch size
//! against the plain sum, a row in a batch against the same row alone, and other types left to candle.

use super::*;
use candle_core::quantized::QMatMul;
use candle_core::{Module, Tensor};

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn matches_candles_q8_0_product_for_decode_and_prefill_shapes() {
    if !supported() {
        eprintln!("no AVX2 here: the kernel is not used, nothing to check");
        return;
    }
    // 130 rows: two full tasks and one of two rows (its group of four filled up with zero rows).
    for (rows, cols, m, dtype) in [
        (72, 96, 1, GgmlDType::Q8_0),
        (130, 64, 7, GgmlDType::Q8_0),
        (576, 576, 3, GgmlDType::Q8_0),
        (72, 128, 1, GgmlDType::Q4_1),
        (130, 64, 7, GgmlDType::Q4_1),
        (576, 1536, 2, GgmlDType::Q4_1),
    ] {
        let w = Tensor::from_vec(random(rows * cols, 1), (rows, cols), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, dtype).unwrap();
        let mine = Q8Matrix::from_qtensor(&q).unwrap().expect("a Q8_0 matrix on the CPU");
        let x = Tensor::from_vec(random(m * cols, 2), (1, m, cols), &Device::Cpu).unwrap();
        let ours = mine.matmul(&x).unwrap();
        let candles = QMatMul::from_qtensor(q).unwrap().forward(&x).unwrap();
        assert_eq!(ours.dims(), candles.dims());
        let (a, b) = (
            ours.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            candles.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        for (i, (a, b)) in a.iter().zip(&b).enumerate() {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{dtype:?} {rows}x{cols}, m {m}, element {i}: {a} vs {b}");
        }
    }
}

/// The levels this CPU runs.
fn levels() -> Vec<Level> {
    let mut l = vec![Level::Avx2];
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512vnni") && std::is_x86_feature_detected!("avx512vl") {
        l.push(Level::Vnni);
    }
    l
}

#[test]
fn every_level_and_batch_size_equals_the_plain_sum() {
    if !supported() {
        return;
    }
    let cols = 128;
    let (wq, wd) = quantize_rows(&random(4 * cols, 3), cols);
    let (xq, xd) = quantize_rows(&random(4 * cols, 4), cols);
    let x = |i: usize| (&xq[i * cols..(i + 1) * cols], &xd[i * 4..(i + 1) * 4]);
    // The four weight rows as a group stores them: block by block, the rows side by side.
    let blocks = cols / BLOCK;
    let mut quants = Vec::new();
    let mut q8_scales = Vec::new();
    for b in 0..blocks {
        for k in 0..GROUP {
            quants.extend_from_slice(&wq[k * cols + b * BLOCK..k * cols + (b + 1) * BLOCK]);
            q8_scales.push(wd[k * blocks + b]);
        }
    }
    let w = Q8Group { quants: &quants, scales: &q8_scales };
    // Q4_1: nibbles 0-15 of every kind, scales and minimums of both signs.
    let nibbles: Vec<u8> = (0..4 * cols / 2).map(|i| (i * 37 % 256) as u8).collect();
    let (scales, mins) = (random(16, 6), random(16, 7));
    let xsum: Vec<f32> =
        xq.chunks(BLOCK).zip(&xd).map(|(q, d)| d * q.iter().map(|&v| v as i32).sum::<i32>() as f32).collect();
    let sums = |i: usize| &xsum[i * 4..(i + 1) * 4];
    let w4 = Q4Group { nibbles: &nibbles, scales: &scales, mins: &mins };
    let one_q8 = dot_q8::<1>(Level::Avx2, w, [x(0)])[0];
    let one_q4 = dot_q4_1::<1>(Level::Avx2, w4, [x(0)], [sums(0)])[0];
    for r in 0..4 {
        let want = scalar_dot_q8(w, r, x(0));
        let plain: f32 = (0..blocks)
            .map(|b| {
                let ints: i32 =
                    (0..BLOCK).map(|j| wq[r * cols + b * BLOCK + j] as i32 * xq[b * BLOCK + j] as i32).sum();
                wd[r * blocks + b] * xd[b] * ints as f32
            })
            .sum();
        assert!((want - plain).abs() <= 1e-5 * (1.0 + plain.abs()), "the group holds row {r} as stored");
        assert!((one_q8[r] - want).abs() <= 1e-5 * (1.0 + want.abs()), "q8_0 row {r}: {} vs {want}", one_q8[r]);
        let want = scalar_dot_q4_1(w4, r, x(0), sums(0));
        assert!((one_q4[r] - want).abs() <= 1e-5 * (1.0 + want.abs()), "q4_1 row {r}: {} vs {want}", one_q4[r]);
    }
    // Every level, one activation row or four: the same floats, bit for bit.
    for level in levels() {
        assert_eq!(dot_q8::<1>(level, w, [x(0)])[0], one_q8, "{level:?}");
        assert_eq!(dot_q4_1::<1>(level, w4, [x(0)], [sums(0)])[0], one_q4, "{level:?}");
        let four = dot_q8::<4>(level, w, [x(0), x(1), x(2), x(3)]);
        let four4 = dot_q4_1::<4>(level, w4, [x(0), x(1), x(2), x(3)], [sums(0), sums(1), sums(2), sums(3)]);
        for i in 0..4 {
            assert_eq!(four[i], dot_q8::<1>(Level::Avx2, w, [x(i)])[0], "{level:?} x row {i}");
            assert_eq!(four4[i], dot_q4_1::<1>(Level::Avx2, w4, [x(i)], [sums(i)])[0], "{level:?} x row {i}");
        }
    }
}

#[test]
fn a_row_multiplied_in_a_batch_equals_it_alone() {
    if !supported() {
        return;
    }
    for dtype in [GgmlDType::Q8_0, GgmlDType::Q4_1] {
        let (rows, cols) = (70, 96);
        let w = Tensor::from_vec(random(rows * cols, 8), (rows, cols), &Device::Cpu).unwrap();
        let mine = Q8Matrix::from_qtensor(&QTensor::quantize(&w, dtype).unwrap()).unwrap().unwrap();
        let xs = random(7 * cols, 9);
        let batch = mine.matmul_rows(&QuantizedRows::new(&xs, cols));
        for i in 0..7 {
            let alone = mine.matmul_rows(&QuantizedRows::new(&xs[i * cols..(i + 1) * cols], cols));
            assert_eq!(&batch[i * rows..(i + 1) * rows], &alone[..], "{dtype:?} row {i}");
        }
    }
}

#[test]
fn other_types_keep_candles_path() {
    let w = Tensor::from_vec(random(64 * 256, 5), (64, 256), &Device::Cpu).unwrap();
    for dtype in [GgmlDType::Q4_0, GgmlDType::Q4K, GgmlDType::F32] {
        let q = QTensor::quantize(&w, dtype).unwrap();
        assert!(Q8Matrix::from_qtensor(&q).unwrap().is_none(), "{dtype:?}");
    }
}

#[test]
fn activations_quantize_as_candle_rounds_them() {
    // The plain form: round half away from zero, a saturating cast.
    let plain = |xs: &[f32]| -> Vec<i8> {
        let mut q = Vec::new();
        for b in xs.chunks_exact(BLOCK) {
            let scale = b.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
            let inverse = if scale != 0.0 { 1.0 / scale } else { 0.0 };
            q.extend(b.iter().map(|&v| (v * inverse).round() as i8));
        }
        q
    };
    // Random blocks, a block of zeros, and values that land on halves (k + 0.5 times the scale:
    // amax 127 makes the scale exactly 1).
    let mut xs = random(64 * BLOCK, 9);
    xs.extend([0f32; BLOCK]);
    xs.extend((0..BLOCK).map(|i| if i == 0 { 127.0 } else { (i as f32 - 16.0) * 3.5 }));
    xs.extend((0..BLOCK).map(|i| if i == 0 { -127.0 } else { -(i as f32) - 0.5 }));
    for cap in [0, 1, u8::MAX] {
        let (q, d) = crate::model::simd::with_simd_cap(cap, || quantize_rows(&xs, BLOCK));
        assert_eq!(q, plain(&xs), "SIMD cap {cap}");
        assert_eq!(d[64..], [0.0, 1.0, 1.0], "scales of the zero and the halves blocks");
    }
}
