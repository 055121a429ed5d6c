//! Tests of the lean frozen base: the tiled product and its backward equal candle's on the same
//! (dequantized) weight, llama's row order is undone without touching the bytes, and LoRA steps
//! over a quantized or bf16 base give the losses of the f32 base within stated tolerances.

use std::collections::HashMap;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Var};

use super::*;
use crate::train::gguf_layout::unpermute_qk;
use crate::train::lean_load::{load_frozen, unpermute_order};
use crate::train::load::{Weights as Trains, load};
use crate::train::lora::{LoraConfig, attach};
use crate::train::model::Model;
use crate::train::model::tests::{max_diff, write_f32_gguf};
use crate::train::optim::{AdamW, OptimConfig};
use crate::train::precision::Precision;
use crate::train::step::tests::pairs;
use crate::train::step::{StepConfig, reference_logps, train_step};
use crate::train::weights::{random, tiny_config};

fn quantized(t: &Tensor, dtype: GgmlDType) -> Result<(ProjWeight, Tensor)> {
    let q = QTensor::quantize(t, dtype)?;
    let (n, k) = t.dims2()?;
    let rows = QuantRows::new(dtype, &q.data()?, n, k)?;
    Ok((ProjWeight::Quant(Arc::new(rows)), q.dequantize(&Device::Cpu)?))
}

#[test]
fn tiles_multiply_and_backpropagate_as_the_dense_weight() -> Result<()> {
    let dev = Device::Cpu;
    // 3000 rows of 512: three tiles of rows, the last one short. 300 rows of 8192 (wider than
    // tall, as a down projection): three tiles of columns, the last one short.
    for (n, k) in [(3000, 512), (300, 8192)] {
        let w = Tensor::randn(0f32, 0.1, (n, k), &dev)?;
        let x = Var::randn(0f32, 1., (2, 5, k), &dev)?;
        let bf = w.to_dtype(DType::BF16)?.to_dtype(DType::F32)?;
        let (q8, q8_dense) = quantized(&w, GgmlDType::Q8_0)?;
        let (q4, q4_dense) = quantized(&w, GgmlDType::Q4_1)?;
        for (lean, dense) in [(ProjWeight::half(&w)?, bf), (q8, q8_dense), (q4, q4_dense)] {
            match cut(n, k, lean.col_unit()) {
                Cut::Rows(rows) => assert!(k < n && rows < n, "{n}x{k}: {rows} rows a tile"),
                Cut::Cols(cols) => assert!(k > n && cols < k && (k - cols) % cols > 0, "{n}x{k}: {cols} columns"),
            }
            let y = lean.forward(x.as_tensor())?;
            let y_ref = linear(x.as_tensor(), &dense)?;
            assert!(max_diff(&y, &y_ref)? < 1e-4, "{lean:?}: forward differs by {}", max_diff(&y, &y_ref)?);
            let c = Tensor::randn(0f32, 1., y.shape(), &dev)?;
            let g = (&y * &c)?.sum_all()?.backward()?;
            let g_ref = (&y_ref * &c)?.sum_all()?.backward()?;
            let (a, b) = (g.get(x.as_tensor()).expect("dx"), g_ref.get(x.as_tensor()).expect("dx"));
            assert!(max_diff(a, b)? < 1e-4, "{lean:?}: dx differs by {}", max_diff(a, b)?);
            assert_eq!(lean.tensor(&dev)?.dims2()?, (n, k));
            assert!(max_diff(&lean.tensor(&dev)?, &dense)? == 0.0);
        }
    }
    let w = Tensor::randn(0f32, 0.1, (3000, 512), &dev)?;
    // Held bytes: bf16 half of f32, Q8_0 34/128, Q4_1 20/128.
    assert_eq!(ProjWeight::half(&w)?.bytes(), 3000 * 512 * 2);
    assert!(quantized(&w, GgmlDType::Q4_1)?.0.bytes() <= 3000 * 512 * 20 / 32 + 8);
    Ok(())
}

#[test]
fn llama_rows_are_reordered_as_unpermute_qk_does() -> Result<()> {
    let w = Tensor::randn(0f32, 1., (16, 32), &Device::Cpu)?;
    let order = unpermute_order(16, 2);
    let (lean, _) = quantized(&w, GgmlDType::F32)?;
    let ProjWeight::Quant(rows) = lean else { unreachable!() };
    let rows = Arc::into_inner(rows).expect("one owner").reorder(&order);
    let got = ProjWeight::Quant(Arc::new(rows)).tensor(&Device::Cpu)?;
    assert_eq!(max_diff(&got, &unpermute_qk(&w, 2)?)?, 0.0);
    Ok(())
}

/// Losses of 4 LoRA steps on the tiny model's 4 pairs.
fn lora_losses(mut model: Model) -> Result<Vec<f64>> {
    let lora = LoraConfig { rank: 4, alpha: 8.0, targets: vec!["q".into(), "k".into(), "v".into(), "o".into()] };
    attach(&mut model, &lora, 5)?;
    let data = pairs();
    let refs = reference_logps(&model, &data, &Default::default(), 0, 2)?;
    let mut opt = AdamW::new(
        model.trainable_vars(),
        OptimConfig {
            learning_rate: 5e-2,
            total_steps: 4,
            schedule: crate::train::optim::Schedule::Constant,
            ..Default::default()
        },
    )?;
    let cfg = StepConfig {
        method: crate::train::step::Method::Dpo(Default::default()),
        truncation: Default::default(),
        pad_id: 0,
    };
    (0..4).map(|_| Ok(train_step(&model, &[(&data[..], &refs[..])], &cfg, &mut opt)?["loss"])).collect()
}

#[test]
fn lora_over_a_quantized_or_bf16_base_trains_as_over_the_f32_one() -> Result<()> {
    let dev = Device::Cpu;
    let cfg = tiny_config("llama", true);
    let w = random(&cfg, 3, &dev)?;
    let f32p = Precision::uniform(DType::F32);
    // The same checkpoint as an F32 GGUF (permuted q/k) and one with Q8_0 projections.
    let tmp = tempfile::tempdir()?;
    let gguf = tmp.path().join("tiny.gguf");
    write_f32_gguf(&gguf, &cfg, &w)?;
    let f32_base = lora_losses(load(&gguf, &dev, Trains::Frozen, f32p)?)?;
    assert!(f32_base[3] < f32_base[1], "the run does not train: {f32_base:?}");
    // Kept as the GGUF stores them (here f32 blocks: the row order alone is exercised): equal.
    let as_stored = lora_losses(load_frozen(&gguf, &dev, BaseDtype::Quantized, f32p)?)?;
    for (a, b) in f32_base.iter().zip(&as_stored) {
        assert!((a - b).abs() < 1e-6, "f32 {f32_base:?} vs as stored {as_stored:?}");
    }
    // bf16: weights rounded to 8 bits of mantissa; the losses stay within 2e-3.
    let bf16 = lora_losses(load_frozen(&gguf, &dev, BaseDtype::Bf16, f32p)?)?;
    for (a, b) in f32_base.iter().zip(&bf16) {
        assert!((a - b).abs() < 2e-3, "f32 {f32_base:?} vs bf16 {bf16:?}");
    }
    // Q8_0 blocks: the same losses as an f32 base holding the dequantized Q8_0 values.
    let mut lean = HashMap::new();
    let mut dequantized = w.clone();
    for (name, t) in &w {
        if name.contains("_proj.") {
            let (q, d) = quantized(t, GgmlDType::Q8_0)?;
            lean.insert(name.clone(), q);
            dequantized.insert(name.clone(), d);
        }
    }
    let dense_rest: HashMap<_, _> =
        w.iter().filter(|(n, _)| !lean.contains_key(*n)).map(|(n, t)| (n.clone(), t.clone())).collect();
    let q8 = lora_losses(Model::with_lean_base(cfg.clone(), dense_rest, lean, false, f32p)?)?;
    let q8_dense = lora_losses(Model::new(cfg, dequantized, false)?)?;
    for (a, b) in q8_dense.iter().zip(&q8) {
        assert!((a - b).abs() < 1e-6, "dequantized {q8_dense:?} vs Q8_0 {q8:?}");
    }
    Ok(())
}

#[test]
fn a_lean_base_exports_merged_and_reloads_with_the_same_logits() -> Result<()> {
    let dev = Device::Cpu;
    let cfg = tiny_config("llama", false);
    let tmp = tempfile::tempdir()?;
    let gguf = tmp.path().join("tiny.gguf");
    write_f32_gguf(&gguf, &cfg, &random(&cfg, 4, &dev)?)?;
    for base in [BaseDtype::Quantized, BaseDtype::Bf16] {
        let mut model = load_frozen(&gguf, &dev, base, Precision::uniform(DType::F32))?;
        let lora = LoraConfig { rank: 2, alpha: 4.0, targets: vec!["q".into(), "v".into(), "down".into()] };
        attach(&mut model, &lora, 1)?;
        for (_, v) in model.trainable_vars() {
            v.set(&(v.as_tensor() + 0.05)?)?;
        }
        let dir = tmp.path().join(base.to_string());
        crate::train::export::export_hf(&model, &dir)?;
        let (cfg2, w) = crate::train::weights::load_hf_dir(&dir, DType::F32, &dev)?;
        let reloaded = Model::new(cfg2, w, false)?;
        let input = crate::train::input::Input::right_padded(&[vec![1, 5, 9, 13, 2]], 0, &dev)?;
        let d = max_diff(&model.forward(&input)?, &reloaded.forward(&input)?)?;
        assert!(d < 1e-4, "{base}: the exported model's logits differ by {d}");
    }
    Ok(())
}

#[test]
fn a_bf16_checkpoint_is_recognised_and_its_bf16_base_trains_as_its_f32_copy() -> Result<()> {
    let dev = Device::Cpu;
    let cfg = tiny_config("llama", true);
    let w = random(&cfg, 6, &dev)?;
    let tmp = tempfile::tempdir()?;
    let f32_dir = tmp.path().join("f32");
    crate::train::model::tests::write_hf_dir(&f32_dir, &cfg, &w)?;
    let as_bf16: HashMap<_, _> =
        w.iter().map(|(n, t)| Ok((n.clone(), t.to_dtype(DType::BF16)?))).collect::<Result<_>>()?;
    let bf16_dir = tmp.path().join("bf16");
    crate::train::model::tests::write_hf_dir(&bf16_dir, &cfg, &as_bf16)?;
    let gguf = tmp.path().join("tiny.gguf");
    write_f32_gguf(&gguf, &cfg, &w)?;
    assert!(crate::train::lean_load::stores_bf16_projections(&bf16_dir));
    assert!(!crate::train::lean_load::stores_bf16_projections(&f32_dir));
    assert!(!crate::train::lean_load::stores_bf16_projections(&gguf));
    assert!(!crate::train::lean_load::stores_bf16_projections(&tmp.path().join("missing")));
    // The bf16 base holds the stored values: the losses are the f32 copy's but for the order
    // in which the tiles sum the input gradient.
    let f32p = Precision::uniform(DType::F32);
    let widened = lora_losses(load(&bf16_dir, &dev, Trains::Frozen, f32p)?)?;
    let kept = lora_losses(load_frozen(&bf16_dir, &dev, BaseDtype::Bf16, f32p)?)?;
    assert!(widened[3] < widened[1], "the run does not train: {widened:?}");
    for (a, b) in widened.iter().zip(&kept) {
        assert!((a - b).abs() < 1e-5, "f32 copy {widened:?} vs bf16 base {kept:?}");
    }
    Ok(())
}
