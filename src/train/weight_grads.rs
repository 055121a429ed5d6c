//! Gradients of trainable weights written in place by the CPU backward, beside candle's
//! `GradStore` rather than through it.
//!
//! For every weight gradient an op returns, candle's backward zeroes a weight-sized tensor and
//! adds the gradient into it: three weight-sized allocations and two extra passes per weight
//! per step, a third of the backward's memory traffic when every weight trains (and the tied
//! embedding, 113 MB for SmolLM2, gets it twice plus a zeroed copy for the lookup's scatter).
//! The ops that read a trainable weight (`linear::linear_into`, `embedding` here) instead write
//! its gradient into one buffer per weight (the first product into fresh memory, later ones
//! accumulating in place) and return none to candle; `drain_into` then hands the buffers to the
//! `GradStore` under the weights' ids, so the optimizer sees the usual map. Used on the CPU in
//! f32/f64 while `Model::sink_weight_grads` is on (`step::train_step`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, CustomOp2, Device, Layout, Result, Shape, Tensor, TensorId};

use super::real::{Mat, Real, matmul_threaded, with_slice};

/// The pending weight gradients of one backward pass, by weight.
#[derive(Default)]
pub struct WeightGrads {
    grads: Mutex<HashMap<TensorId, (CpuStorage, Shape)>>,
}

impl WeightGrads {
    /// Adds `scale * lhs (n x m) rhs (m x k)` into the gradient of `weight` (`[n, k]`).
    ///
    /// # Safety
    /// `lhs` and `rhs` must address live `n x m` and `m x k` matrices of `T`.
    pub unsafe fn add_product<T: Real>(
        &self,
        weight: &Tensor,
        (n, m, k): (usize, usize, usize),
        lhs: Mat<T>,
        rhs: Mat<T>,
    ) -> Result<()> {
        let mut grads = self.grads.lock().expect("weight grads lock");
        let entry = grads.remove(&weight.id());
        let (mut buf, accumulate) = match entry.and_then(|(s, _)| T::into_vec(s)) {
            Some(v) if v.len() == n * k => (v, true),
            _ => (vec![T::ZERO; n * k], false),
        };
        // SAFETY: buf holds n x k; the caller vouches for lhs and rhs.
        unsafe { matmul_threaded((n, k, m), buf.as_mut_ptr(), k, accumulate, lhs, rhs, T::ONE) };
        grads.insert(weight.id(), (T::storage(buf), weight.shape().clone()));
        Ok(())
    }

    /// Adds row `i` of `rows` (`[ids.len(), width]`) into row `ids[i]` of `weight`'s gradient.
    pub fn add_rows<T: Real>(&self, weight: &Tensor, ids: &[u32], rows: &[T]) -> Result<()> {
        let (vocab, width) = weight.dims2()?;
        let mut grads = self.grads.lock().expect("weight grads lock");
        let entry = grads.remove(&weight.id());
        let mut buf = match entry.and_then(|(s, _)| T::into_vec(s)) {
            Some(v) if v.len() == vocab * width => v,
            _ => vec![T::ZERO; vocab * width],
        };
        for (&id, row) in ids.iter().zip(rows.chunks(width)) {
            let dst = buf.get_mut(id as usize * width..(id as usize + 1) * width).ok_or_else(|| {
                candle_core::Error::Msg(format!("token id {id} is outside the vocabulary of {vocab}"))
            })?;
            for (d, &r) in dst.iter_mut().zip(row) {
                *d += r;
            }
        }
        grads.insert(weight.id(), (T::storage(buf), weight.shape().clone()));
        Ok(())
    }

    /// Moves every pending gradient into `store` (adding to one already there).
    pub fn drain_into(&self, store: &mut GradStore, device: &Device) -> Result<()> {
        let pending: Vec<_> = self.grads.lock().expect("weight grads lock").drain().collect();
        for (id, (storage, shape)) in pending {
            let grad = match storage {
                CpuStorage::F32(v) => Tensor::from_vec(v, shape, device)?,
                CpuStorage::F64(v) => Tensor::from_vec(v, shape, device)?,
                _ => candle_core::bail!("weight gradients are f32 or f64"),
            };
            if let Some(other) = store.insert_id(id, grad.clone()) {
                store.insert_id(id, (other + grad)?);
            }
        }
        Ok(())
    }

    /// Drops pending gradients (a backward that failed half-way).
    pub fn clear(&self) {
        self.grads.lock().expect("weight grads lock").clear();
    }
}

/// Rows `ids` of `embed`, the gradient scattered into `grads`.
struct Embedding {
    grads: Arc<WeightGrads>,
}

impl CustomOp2 for Embedding {
    fn name(&self) -> &'static str {
        "verdict-embedding"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, width) = l1.shape().dims2()?;
        let (a, _) =
            l1.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("embedding not contiguous".into()))?;
        let (b0, b1) = l2.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("ids not contiguous".into()))?;
        let CpuStorage::U32(ids) = s2 else { candle_core::bail!("embedding: ids must be u32") };
        let ids = &ids[b0..b1];
        fn gather<T: Real>(table: &[T], ids: &[u32], width: usize) -> Result<Vec<T>> {
            let mut out = Vec::with_capacity(ids.len() * width);
            for &id in ids {
                let row = table
                    .get(id as usize * width..(id as usize + 1) * width)
                    .ok_or_else(|| candle_core::Error::Msg(format!("token id {id} is outside the vocabulary")))?;
                out.extend_from_slice(row);
            }
            Ok(out)
        }
        let out = match s1 {
            CpuStorage::F32(t) => CpuStorage::F32(gather(&t[a..], ids, width)?),
            CpuStorage::F64(t) => CpuStorage::F64(gather(&t[a..], ids, width)?),
            _ => candle_core::bail!("embedding: f32 or f64 only"),
        };
        Ok((out, Shape::from((ids.len(), width))))
    }

    fn bwd(
        &self,
        embed: &Tensor,
        ids: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let ids = ids.contiguous()?.to_vec1::<u32>()?;
        match embed.dtype() {
            candle_core::DType::F32 => with_slice::<f32, _>(&grad, "grad", |g| self.grads.add_rows(embed, &ids, g))??,
            candle_core::DType::F64 => with_slice::<f64, _>(&grad, "grad", |g| self.grads.add_rows(embed, &ids, g))??,
            dt => candle_core::bail!("embedding: f32 or f64 only, not {dt:?}"),
        }
        Ok((None, None))
    }
}

/// `embed[ids]` (`ids` flat u32), its gradient added into `grads` for `embed`.
pub fn embedding(embed: &Tensor, ids: &Tensor, grads: &Arc<WeightGrads>) -> Result<Tensor> {
    embed.contiguous()?.apply_op2(&ids.flatten_all()?.contiguous()?, Embedding { grads: grads.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Var};

    #[test]
    fn embedding_and_linear_write_the_gradients_candle_would() -> Result<()> {
        let dev = Device::Cpu;
        let embed = Var::randn(0f64, 1., (7, 4), &dev)?;
        let ids = Tensor::new(&[3u32, 1, 3, 6], &dev)?;
        let c = Tensor::randn(0f64, 1., (4, 7), &dev)?;
        // Tied: the lookup and an output projection by the same weight.
        let plain = {
            let x = embed.as_tensor().index_select(&ids, 0)?;
            let y = super::super::linear::linear(&x, embed.as_tensor())?;
            (y * &c)?.sum_all()?.backward()?
        };
        let sunk = Arc::new(WeightGrads::default());
        let mut store = {
            let x = embedding(embed.as_tensor(), &ids, &sunk)?;
            let y = super::super::linear::linear_into(&x, embed.as_tensor(), &sunk)?;
            (y * &c)?.sum_all()?.backward()?
        };
        assert!(store.get(embed.as_tensor()).is_none(), "candle computed the weight gradient itself");
        sunk.drain_into(&mut store, &dev)?;
        let d = (store.get(embed.as_tensor()).unwrap() - plain.get(embed.as_tensor()).unwrap())?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f64>()?;
        assert!(d < 1e-12, "gradients differ by {d}");
        assert_eq!(store.get(embed.as_tensor()).unwrap().dtype(), DType::F64);
        Ok(())
    }

    #[test]
    fn a_training_models_sunk_gradients_equal_candles() -> Result<()> {
        use crate::train::logps::{SeqBatch, Truncation, sequence_logps};
        use crate::train::model::Model;
        use crate::train::weights::{random, tiny_config};
        let dev = Device::Cpu;
        let pairs: [(&[u32], &[u32], &[u32]); 2] =
            [(&[1, 5, 9], &[7, 8, 2], &[3, 2, 11]), (&[1, 4], &[13, 2], &[30, 31, 2])];
        for (arch, tied) in [("llama", true), ("qwen2", false)] {
            let cfg = tiny_config(arch, tied);
            let w = random(&cfg, 5, &dev)?
                .into_iter()
                .map(|(k, t)| Ok((k, t.to_dtype(DType::F64)?)))
                .collect::<Result<std::collections::HashMap<_, _>>>()?;
            let model = Model::new(cfg, w, true)?;
            let batch = SeqBatch::pairs(&pairs, &Truncation::default(), 0, &dev)?;
            let plain = sequence_logps(&model, &batch)?.sum_all()?.backward()?;
            let sink = model.sink_weight_grads();
            let mut sunk = sequence_logps(&model, &batch)?.sum_all()?.backward()?;
            sink.drain_into(&mut sunk)?;
            drop(sink);
            for (name, v) in model.trainable_vars() {
                let (a, b) = (sunk.get(v.as_tensor()).expect(&name), plain.get(v.as_tensor()).expect(&name));
                let d = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
                assert!(d < 1e-12, "{arch}: gradient of {name} differs by {d}");
            }
        }
        Ok(())
    }
}
