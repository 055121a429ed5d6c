//! The CPU execution of `llama::Transformer`: plain f32 rows of every sequence at once through
//! verdict's kernels (`q8_cpu`; `dense_cpu` for f32 weights in decode steps) and fused loops
//! (`cpu_ops`), with each sequence's keys and values written in place into its `KvCache` buffers. `candle_ops.rs` is the same network
//! in candle's ops; a family feature goes into both.

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Module, Tensor};

use super::{Config, HostKv, Layer, Linear, Seq, Transformer, Weight, softcap};

impl Transformer {
    /// The CPU execution: all sequences' new rows together through each layer. Returns the
    /// logits of every row (`all`) or of each sequence's last row, one `Vec` per row.
    pub(super) fn forward_host(&self, host: &Host, seqs: &mut [Seq], all: bool) -> candle_core::Result<Vec<Vec<f32>>> {
        let c = &self.cfg;
        let mut ids = Vec::new();
        // Per row: its sequence and its position.
        let mut rows: Vec<(usize, usize)> = Vec::new();
        for (s, seq) in seqs.iter().enumerate() {
            self.check_fits(seq.tokens.len(), seq.cache.pos)?;
            ids.extend_from_slice(seq.tokens);
            rows.extend((0..seq.tokens.len()).map(|r| (s, seq.cache.pos + r)));
        }
        let ids = Tensor::new(ids.as_slice(), &Device::Cpu)?;
        let mut x: Vec<f32> = self.embed.index_select(&ids, 0)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        if let Some(s) = c.embed_scale {
            let s = s as f32;
            x.iter_mut().for_each(|v| *v *= s);
        }
        for (i, layer) in self.layers.iter().enumerate() {
            layer.forward_host(c, host, i, &mut x, &rows, seqs)?;
        }
        for seq in seqs.iter_mut() {
            seq.cache.pos += seq.tokens.len();
        }
        let wanted: Vec<usize> = match all {
            true => (0..rows.len()).collect(),
            false => (0..rows.len()).filter(|&r| r + 1 == rows.len() || rows[r + 1].0 != rows[r].0).collect(),
        };
        let picked: Vec<f32> =
            wanted.iter().flat_map(|&r| x[r * c.hidden..(r + 1) * c.hidden].iter().copied()).collect();
        let mut normed = vec![0f32; picked.len()];
        super::super::cpu_ops::rms_norm_rows(&picked, &host.norm, c.rms_eps as f32, &mut normed);
        let mut logits = self.lm_head.forward_host(&HostRows::new(&normed, wanted.len(), rows.len() == seqs.len()))?;
        softcap(&mut logits, c.final_softcap);
        Ok(logits.chunks_exact(c.vocab).map(|r| r.to_vec()).collect())
    }
}

impl Linear {
    /// `x @ Wᵀ + b` for the `x.m` rows of `x`, on the CPU.
    fn forward_host(&self, x: &HostRows) -> candle_core::Result<Vec<f32>> {
        let mut y = match &self.weight {
            Weight::Cpu(q) => q.matmul_rows(x.quantized()),
            // A decode step's rows: each one's sums in an order that does not depend on the
            // others (candle's product blocks them by row count).
            Weight::Candle(QMatMul::Tensor(w)) if x.decode && super::super::dense_cpu::applies(w) => {
                super::super::dense_cpu::matmul_rows(w, x.x, x.m)?
            }
            Weight::Candle(w) => {
                let t = Tensor::from_slice(x.x, (x.m, x.x.len() / x.m.max(1)), &Device::Cpu)?;
                w.forward(&t)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?
            }
        };
        if let Some(b) = &self.bias {
            let b: Vec<f32> = b.to_dtype(DType::F32)?.to_vec1()?;
            for row in y.chunks_exact_mut(b.len()) {
                super::super::cpu_ops::add_in_place(row, &b);
            }
        }
        Ok(y)
    }
}

/// Activation rows on the CPU, quantized at most once however many matrices read them.
struct HostRows<'a> {
    x: &'a [f32],
    m: usize,
    /// One row per sequence (a decode step): dense weights multiply them with
    /// `dense_cpu`, whose results do not depend on how many sequences decode together.
    decode: bool,
    quantized: std::cell::OnceCell<super::super::q8_cpu::QuantizedRows>,
}

impl<'a> HostRows<'a> {
    fn new(x: &'a [f32], m: usize, decode: bool) -> Self {
        HostRows { x, m, decode, quantized: std::cell::OnceCell::new() }
    }

    fn quantized(&self) -> &super::super::q8_cpu::QuantizedRows {
        self.quantized.get_or_init(|| super::super::q8_cpu::QuantizedRows::new(self.x, self.x.len() / self.m.max(1)))
    }
}

/// Host copies of what the CPU path reads besides the matrices.
#[derive(Debug)]
pub(super) struct Host {
    /// (cos, sin) [context, rotary_dim / 2], as `Transformer::tables`.
    tables: Vec<(Vec<f32>, Vec<f32>)>,
    norms: Vec<HostNorms>,
    norm: Vec<f32>,
}

/// One layer's norm weights on the host.
#[derive(Debug)]
struct HostNorms {
    attn: Vec<f32>,
    ffn: Vec<f32>,
    q: Option<Vec<f32>>,
    k: Option<Vec<f32>>,
    post_attn: Option<Vec<f32>>,
    post_ffn: Option<Vec<f32>>,
}

impl Host {
    pub(super) fn new(layers: &[Layer], norm: &Tensor, tables: &[(Tensor, Tensor)]) -> candle_core::Result<Host> {
        let v = |t: &Tensor| t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>();
        let o = |t: &Option<Tensor>| t.as_ref().map(v).transpose();
        let norms = layers
            .iter()
            .map(|l| {
                Ok(HostNorms {
                    attn: v(&l.attn_norm)?,
                    ffn: v(&l.ffn_norm)?,
                    q: o(&l.q_norm)?,
                    k: o(&l.k_norm)?,
                    post_attn: o(&l.post_attn_norm)?,
                    post_ffn: o(&l.post_ffn_norm)?,
                })
            })
            .collect::<candle_core::Result<_>>()?;
        let tables = tables.iter().map(|(c, s)| Ok((v(c)?, v(s)?))).collect::<candle_core::Result<_>>()?;
        Ok(Host { tables, norms, norm: v(norm)? })
    }
}

impl Layer {
    /// One layer over the rows `x` ([rows, hidden], updated in place) of several sequences:
    /// `rows[r]` = (sequence, position) of row r; a sequence's rows are consecutive.
    fn forward_host(
        &self,
        c: &Config,
        host: &Host,
        index: usize,
        x: &mut [f32],
        rows: &[(usize, usize)],
        seqs: &mut [Seq],
    ) -> candle_core::Result<()> {
        use super::super::cpu_ops::{add_in_place, attend, gelu_tanh_glu, rms_norm_rows, rope_row, swiglu};
        let (m, hd) = (rows.len(), c.head_dim);
        // Every sequence has at least one new row, so as many rows as sequences is one each.
        let decode = m == seqs.len();
        let norms = &host.norms[index];
        let eps = c.rms_eps as f32;
        let mut h = vec![0f32; x.len()];
        rms_norm_rows(x, &norms.attn, eps, &mut h);
        let input = HostRows::new(&h, m, decode);
        let mut q = self.q.forward_host(&input)?;
        let mut k = self.k.forward_host(&input)?;
        let v = self.v.forward_host(&input)?;
        for (t, w) in [(&mut q, &norms.q), (&mut k, &norms.k)] {
            if let Some(w) = w {
                let src = t.clone();
                rms_norm_rows(&src, w, eps, t);
            }
        }
        let (rot, half) = (c.rotary_dim, c.rotary_dim / 2);
        let (qw, kw) = (c.n_heads * hd, c.n_kv_heads * hd);
        let (cos_t, sin_t) = &host.tables[usize::from(c.local(index))];
        for (r, &(_, pos)) in rows.iter().enumerate() {
            let (cos, sin) = (&cos_t[pos * half..(pos + 1) * half], &sin_t[pos * half..(pos + 1) * half]);
            for (t, w) in [(&mut q, qw), (&mut k, kw)] {
                let row = &mut t[r * w..(r + 1) * w];
                if rot == hd {
                    rope_row(row, hd, cos, sin, c.rope_interleaved);
                } else {
                    for head in row.chunks_exact_mut(hd) {
                        rope_row(&mut head[..rot], rot, cos, sin, c.rope_interleaved);
                    }
                }
            }
        }
        // Each sequence's new keys and values go after what its cache holds.
        let mut first = 0;
        for seq in seqs.iter_mut() {
            let n = seq.tokens.len();
            let kv = &mut seq.cache.host[index];
            kv.k.truncate(seq.cache.pos * kw);
            kv.v.truncate(seq.cache.pos * kw);
            kv.k.extend_from_slice(&k[first * kw..(first + n) * kw]);
            kv.v.extend_from_slice(&v[first * kw..(first + n) * kw]);
            first += n;
        }
        // Every (row, query head) attends to its sequence's positions up to its own; the query
        // heads that share a KV head read the same cache rows.
        let caches: Vec<&HostKv> = seqs.iter().map(|s| &s.cache.host[index]).collect();
        let groups = c.n_heads / c.n_kv_heads;
        let scale = c.attn_scale as f32;
        let (window, cap) = (c.windows[index], c.attn_softcap.map(|v| v as f32));
        let mut y = vec![0f32; m * qw];
        let one = |(j, out): (usize, &mut [f32]), scores: &mut Vec<f32>| {
            let (r, head) = (j / c.n_heads, j % c.n_heads);
            let (s, pos) = rows[r];
            // A sliding window sees the positions (pos - window, pos].
            let lo = window.map_or(0, |w| (pos + 1).saturating_sub(w));
            let (kv, at) = (caches[s], lo * kw + (head / groups) * hd);
            scores.resize(pos + 1 - lo, 0.0);
            let q = &q[r * qw + head * hd..r * qw + (head + 1) * hd];
            attend(q, &kv.k[at..], &kv.v[at..], kw, pos + 1 - lo, scale, cap, scores, out)
        };
        let work: usize = rows.iter().map(|r| r.1 + 1).sum::<usize>() * c.n_heads * hd;
        let team = super::super::team::width();
        if m <= super::super::q8_cpu::DECODE_ROWS && team > 1 && work >= 1 << 14 {
            // Decoding: the heads split over the decode team, awake between the token's products.
            let heads = m * c.n_heads;
            let per = heads.div_ceil(team);
            let outs: Vec<std::sync::Mutex<&mut [f32]>> = y.chunks_mut(per * hd).map(std::sync::Mutex::new).collect();
            super::super::team::run(outs.len(), &|part| {
                let mut out = outs[part].lock().expect("a stretch of heads");
                let mut scores = Vec::new();
                for (i, head) in out.chunks_mut(hd).enumerate() {
                    one((part * per + i, head), &mut scores);
                }
            });
        } else if candle_core::utils::get_num_threads() > 1 && work >= 1 << 16 {
            use rayon::prelude::*;
            y.par_chunks_mut(hd).enumerate().for_each_init(Vec::new, |scores, job| one(job, scores));
        } else {
            let mut scores = Vec::new();
            y.chunks_mut(hd).enumerate().for_each(|job| one(job, &mut scores));
        }
        let post = |mut t: Vec<f32>, w: &Option<Vec<f32>>| {
            if let Some(w) = w {
                let src = t.clone();
                rms_norm_rows(&src, w, eps, &mut t);
            }
            t
        };
        add_in_place(x, &post(self.o.forward_host(&HostRows::new(&y, m, decode))?, &norms.post_attn));
        rms_norm_rows(x, &norms.ffn, eps, &mut h);
        let input = HostRows::new(&h, m, decode);
        let mut gate = self.gate.forward_host(&input)?;
        match c.activation {
            super::super::arch::Activation::Silu => swiglu(&mut gate, &self.up.forward_host(&input)?),
            super::super::arch::Activation::GeluTanh => gelu_tanh_glu(&mut gate, &self.up.forward_host(&input)?),
        }
        add_in_place(x, &post(self.down.forward_host(&HostRows::new(&gate, m, decode))?, &norms.post_ffn));
        Ok(())
    }
}
