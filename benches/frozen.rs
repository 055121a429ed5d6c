//! The frozen base's projections in a LoRA step: the product `x W^T` and its input gradient
//! `g W` with `W` kept in bf16 (or quantized) and widened a tile at a time (`train::frozen`),
//! against the same products over an f32 copy of `W` (the `--base-dtype f32` path, and what TRL
//! + PEFT compute). Shapes are Qwen2.5-1.5B's (hidden 1536, 2 KV heads of 128, MLP 8960), or
//! Llama-3.2-3B's with `VERDICT_BENCH_SIZE=3b` (hidden 3072, 8 KV heads of 128, MLP 8192); the
//! input is `tokens` rows, a packed pair at max length 512 by default.
//!
//! Run with `cargo bench --bench frozen`. Environment: `VERDICT_BENCH_THREADS` (default 2),
//! `VERDICT_BENCH_TOKENS` (default 450), `VERDICT_BENCH_RUNS` (default 5), `VERDICT_BENCH_SIZE`
//! (`1.5b`, the default, or `3b`), `VERDICT_BENCH_ONLY`
//! (the shapes whose name contains it: `q`, `k`, `gate`, `down`). Prints, per shape and
//! base, the median milliseconds of forward + backward (the bases taking turns) and the ratio
//! against f32; the last line
//! sums one layer's seven projections.

use std::time::Instant;

use candle_core::quantized::GgmlDType;
use candle_core::{Device, Result, Tensor, Var};
use verdict::train::frozen::{ProjWeight, QuantRows};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Milliseconds of one `y = x W^T; (y * g).sum().backward()` (forward and the input's gradient:
/// a frozen weight has none of its own).
fn time_once(w: &ProjWeight, x: &Var, g: &Tensor) -> Result<f64> {
    let start = Instant::now();
    let y = w.forward(x.as_tensor())?;
    let grads = (y * g)?.sum_all()?.backward()?;
    assert!(grads.get(x.as_tensor()).is_some());
    Ok(start.elapsed().as_secs_f64() * 1e3)
}

/// Median milliseconds of each weight's product, the weights taking turns run after run (after
/// one warm-up each), so a slow spell of a shared machine falls on all of them alike.
fn medians(weights: &[&ProjWeight], x: &Var, g: &Tensor, runs: usize) -> Result<Vec<f64>> {
    let mut times = vec![Vec::with_capacity(runs); weights.len()];
    for run in 0..=runs {
        for (w, t) in weights.iter().zip(&mut times) {
            let ms = time_once(w, x, g)?;
            if run > 0 {
                t.push(ms);
            }
        }
    }
    Ok(times
        .into_iter()
        .map(|mut t| {
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        })
        .collect())
}

/// The CPU's model name and the vector extensions that pick the kernels.
fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let name = info.lines().find_map(|l| l.strip_prefix("model name")).map(|l| l.trim_start_matches([' ', '\t', ':']));
    let flags = info.lines().find_map(|l| l.strip_prefix("flags")).unwrap_or("");
    let vector: Vec<&str> =
        flags.split_whitespace().filter(|f| f.starts_with("avx") || *f == "fma" || f.starts_with("amx")).collect();
    format!("{} ({})", name.unwrap_or("unknown"), vector.join(" "))
}

fn main() -> Result<()> {
    let threads = env("VERDICT_BENCH_THREADS", 2);
    let tokens = env("VERDICT_BENCH_TOKENS", 450);
    let runs = env("VERDICT_BENCH_RUNS", 5).max(1);
    // The pools as `verdict train --threads` starts them (denormals flushed, its default).
    verdict::model::configure_threads(Some(threads));
    println!("cpu: {}", cpu_model());
    println!(
        "{threads} threads, {tokens} tokens, median of {runs}, denormals {}",
        verdict::model::denormals::state_label()
    );
    let dev = Device::Cpu;
    let size = std::env::var("VERDICT_BENCH_SIZE").unwrap_or_else(|_| "1.5b".into());
    let shapes = match size.to_ascii_lowercase().as_str() {
        "1.5b" => {
            [("q, o", 1536, 1536, 2), ("k, v", 256, 1536, 2), ("gate, up", 8960, 1536, 2), ("down", 1536, 8960, 1)]
        }
        "3b" => {
            [("q, o", 3072, 3072, 2), ("k, v", 1024, 3072, 2), ("gate, up", 8192, 3072, 2), ("down", 3072, 8192, 1)]
        }
        other => panic!("VERDICT_BENCH_SIZE={other}: use 1.5b or 3b"),
    };
    println!("shapes of {size}");
    let mut layer = [0f64; 3];
    let only = std::env::var("VERDICT_BENCH_ONLY").ok();
    for (name, out, inner, count) in shapes {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let w = (Tensor::randn(0f32, 0.02, (out, inner), &dev)?).contiguous()?;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (tokens, inner), &dev)?)?;
        let g = Tensor::randn(0f32, 1.0, (tokens, out), &dev)?;
        let bytes: Vec<u8> = {
            let q = candle_core::quantized::QTensor::quantize(&w, GgmlDType::Q8_0)?;
            q.data()?.to_vec()
        };
        let bases = [
            ("f32", ProjWeight::Dense(w.clone())),
            ("bf16", ProjWeight::half(&w)?),
            ("Q8_0", ProjWeight::Quant(std::sync::Arc::new(QuantRows::new(GgmlDType::Q8_0, &bytes, out, inner)?))),
        ];
        let weights: Vec<&ProjWeight> = bases.iter().map(|(_, w)| w).collect();
        let ms = medians(&weights, &x, &g, runs)?;
        for (i, (base, _)) in bases.iter().enumerate() {
            layer[i] += ms[i] * count as f64;
            println!("{name:>9} {out:>5}x{inner:<5} {base:>5}: {:8.1} ms  {:.2}x f32", ms[i], ms[i] / ms[0]);
        }
    }
    println!(
        "one layer (q,k,v,o,gate,up,down): f32 {:.0} ms, bf16 {:.0} ms ({:.2}x), Q8_0 {:.0} ms ({:.2}x)",
        layer[0],
        layer[1],
        layer[1] / layer[0],
        layer[2],
        layer[2] / layer[0]
    );
    Ok(())
}
