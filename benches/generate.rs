//! Generation benchmark: the default model (SmolLM2-135M-Instruct Q4_1 GGUF, fetched if missing)
//! on 8 fixed chat prompts in several languages, rendered through the model's own chat template.
//!
//! Run with `cargo bench --bench generate`. Reports medians over runs of
//! - prefill tok/s: prompt tokens / time from the `generate` call to the first sampled token
//!   (chat rendering, tokenization, the prompt's forward pass and one sample);
//! - decode tok/s, one stream: (tokens − 1) / time from the first to the last sampled token
//!   (one forward pass and one sample per token);
//! - candidates/min with 4 candidates per prompt (one shared prefill, then 4 decodes): 32
//!   candidates / wall time of the 8 `generate` calls;
//! - candidates/min as `verdict generate` runs them: the same 8 × 4 candidates (same seeds, so
//!   the same tokens) in one `generate_many` call, prompts decoding together up to the model's
//!   batch rows (`VERDICT_BENCH_ROWS` overrides), a prompt joining as rows free up.
//!
//! max_new_tokens 64 (`VERDICT_BENCH_MAX_TOKENS` sets another: at 256 most answers end on their own,
//! at different lengths, so rows of a batch finish apart), temperature 0.8, top-p 0.9, repeat
//! penalty 1.1 over the last 64 tokens,
//! fixed seeds (so every run generates the same tokens). Stopping at end-of-turn stays on, so
//! the mean completion length is printed next to candidates/min.
//!
//! Environment: `VERDICT_BENCH_THREADS` (default 1), `VERDICT_BENCH_RUNS` (default 3),
//! `VERDICT_BENCH_REQUANTIZE` (default 1, verdict's default: Q5_0/Q5_1 run as Q8_0, and Q4_1 too on a CPU
//! without AVX2; Q4_1 runs as stored where `model::q8_cpu` has a kernel for it; 0 keeps every type as stored),
//! `VERDICT_BENCH_DEQUANTIZE` (1: every matrix dequantized to f32, as `verdict eval answers` runs a GGUF base;
//! dense f32 decode steps run on `model::dense_cpu`),
//! `VERDICT_MODEL` (another model), `VERDICT_BENCH_ROWS` (rows of the batched job), `VERDICT_BENCH_EXPORT` (a path: writes the rendered prompts
//! and their token ids as JSON, for `benches/peers/llamacpp_generate.py --check`).
//! The last line of output is one JSON object, `{"engine":"verdict",...}`.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use verdict::model::{
    self, ChatMessage, DeviceChoice, GenerateParams, GenerationProgress, LoadOptions, Model, Request, RequestEvent,
};

/// (language, user message). Kept identical to `benches/peers/llamacpp_generate.py`.
const PROMPTS: [(&str, &str); 8] = [
    ("en", "Explain how a refrigerator keeps food cold, step by step."),
    ("en", "Write a short story about a lighthouse keeper who finds a message in a bottle."),
    ("es", "Explica las diferencias entre la energía solar y la energía eólica."),
    ("de", "Beschreibe, wie man zu Hause einen Sauerteig ansetzt und pflegt."),
    ("fr", "Quels sont les avantages et les inconvénients du télétravail ?"),
    ("zh", "请详细解释一下光合作用的过程。"),
    ("ja", "日本の四季について詳しく説明してください。"),
    ("code", "Write a Python function that checks whether a string is a palindrome, and explain how it works."),
];
const CANDIDATES: usize = 4;
const TEMPERATURE: f64 = 0.8;
const TOP_P: f64 = 0.9;
const REPEAT_PENALTY: f32 = 1.1;
const REPEAT_LAST_N: usize = 64;
const SINGLE_SEED: u64 = 1000;
const MULTI_SEED: u64 = 2000;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

/// New tokens at most per answer: 64, or `VERDICT_BENCH_MAX_TOKENS` (the same variable sets the
/// llama.cpp side's, `benches/peers/llamacpp_generate.py`).
fn max_new_tokens() -> usize {
    env_usize("VERDICT_BENCH_MAX_TOKENS", 64).max(1)
}

fn params(candidates: usize, seed: u64) -> GenerateParams {
    GenerateParams {
        candidates,
        temperature: TEMPERATURE,
        top_p: TOP_P,
        top_k: None,
        repeat_penalty: REPEAT_PENALTY,
        repeat_last_n: REPEAT_LAST_N,
        max_new_tokens: max_new_tokens(),
        seed,
    }
}

fn messages(text: &str) -> Vec<ChatMessage> {
    vec![ChatMessage::new("user", text)]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One run's aggregates over the 8 prompts.
#[derive(Debug, Clone, Default)]
struct Run {
    prompt_tokens: usize,
    prefill: Duration,
    /// The model's own prefill figure (the forward pass alone), summed as time.
    prefill_forward: Duration,
    decode_tokens: usize,
    decode: Duration,
    single_completion_tokens: usize,
    multi_candidates: usize,
    multi_completion_tokens: usize,
    multi: Duration,
    job_candidates: usize,
    job: Duration,
}

impl Run {
    fn prefill_tps(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill.as_secs_f64()
    }
    fn prefill_forward_tps(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_forward.as_secs_f64()
    }
    fn decode_tps(&self) -> f64 {
        self.decode_tokens as f64 / self.decode.as_secs_f64()
    }
    fn cands_per_min(&self) -> f64 {
        self.multi_candidates as f64 * 60.0 / self.multi.as_secs_f64()
    }
    fn job_cands_per_min(&self) -> f64 {
        self.job_candidates as f64 * 60.0 / self.job.as_secs_f64()
    }
    fn multi_tokens_per_sec(&self) -> f64 {
        self.multi_completion_tokens as f64 / self.multi.as_secs_f64()
    }
}

fn run_once(model: &mut Model, rows: usize) -> Run {
    let cancel = AtomicBool::new(false);
    let mut run = Run::default();
    for (i, (_, text)) in PROMPTS.iter().enumerate() {
        let msgs = messages(text);
        // One stream: prefill and decode speed from the times of the per-token callbacks.
        let mut token_times: Vec<Instant> = Vec::with_capacity(max_new_tokens() + 1);
        let mut forward_tps = 0.0;
        let t0 = Instant::now();
        let out = model
            .generate(&msgs, &params(1, SINGLE_SEED + i as u64), &cancel, &mut |p: GenerationProgress| {
                if p.candidate_tokens == 0 {
                    forward_tps = p.prefill_tokens_per_sec;
                } else {
                    token_times.push(Instant::now());
                }
            })
            .expect("generate (1 candidate)");
        let c = &out[0];
        run.prompt_tokens += c.prompt_tokens;
        run.single_completion_tokens += c.completion_tokens;
        if let Some(first) = token_times.first() {
            run.prefill += *first - t0;
            run.prefill_forward += Duration::from_secs_f64(c.prompt_tokens as f64 / forward_tps);
        }
        if token_times.len() >= 2 {
            run.decode_tokens += token_times.len() - 1;
            run.decode += *token_times.last().unwrap() - token_times[0];
        }

        // 4 candidates, one shared prefill.
        let t0 = Instant::now();
        let out = model
            .generate(&msgs, &params(CANDIDATES, MULTI_SEED + i as u64), &cancel, &mut |_| {})
            .expect("generate (4 candidates)");
        run.multi += t0.elapsed();
        run.multi_candidates += out.len();
        run.multi_completion_tokens += out.iter().map(|c| c.completion_tokens).sum::<usize>();
    }
    // The same 32 candidates as one job, prompts decoding side by side.
    let requests: Vec<Request> = PROMPTS
        .iter()
        .enumerate()
        .map(|(i, (_, text))| Request { messages: messages(text), params: params(CANDIDATES, MULTI_SEED + i as u64) })
        .collect();
    let t0 = Instant::now();
    let mut tokens = 0;
    model
        .generate_many(&requests, rows, &cancel, &mut |_, event| {
            if let RequestEvent::Done(result) = event {
                let out = result.expect("generate_many");
                run.job_candidates += out.len();
                tokens += out.iter().map(|c| c.completion_tokens).sum::<usize>();
            }
        })
        .expect("generate_many");
    run.job = t0.elapsed();
    assert_eq!(tokens, run.multi_completion_tokens, "the job generates the same candidates as the calls");
    run
}

fn export_prompts(model: &Model, path: &str) {
    let items: Vec<serde_json::Value> = PROMPTS
        .iter()
        .map(|(lang, text)| {
            let rendered = model.render_chat(&messages(text), true).expect("render chat");
            let ids = model.encode(&rendered).expect("encode");
            serde_json::json!({ "lang": lang, "user": text, "rendered": rendered, "ids": ids })
        })
        .collect();
    std::fs::write(path, serde_json::to_string_pretty(&items).unwrap()).expect("write VERDICT_BENCH_EXPORT");
    eprintln!("wrote the rendered prompts to {path}");
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let threads = env_usize("VERDICT_BENCH_THREADS", 1).max(1);
    let runs = env_usize("VERDICT_BENCH_RUNS", 3).max(1);
    let requantize = env_usize("VERDICT_BENCH_REQUANTIZE", 1) != 0;
    let dequantize = env_usize("VERDICT_BENCH_DEQUANTIZE", 0) != 0;

    let path = model::resolve_model_path(None, &|m| eprintln!("{m}"))
        .expect("model (run `verdict model fetch` or set VERDICT_MODEL)");
    let t = Instant::now();
    let opts = LoadOptions { device: DeviceChoice::Cpu, threads: Some(threads), requantize, dequantize };
    let mut model = Model::load(&path, &opts).expect("load model");
    let load_s = t.elapsed().as_secs_f64();
    let info = model.info().clone();
    println!(
        "verdict generate bench: {} ({} as stored, runs as {}), {} thread(s), {} runs, loaded in {:.2} s",
        path.display(),
        info.quantization,
        info.run_quantization,
        threads,
        runs,
        load_s
    );
    if let Ok(p) = std::env::var("VERDICT_BENCH_EXPORT") {
        export_prompts(&model, &p);
    }

    // Warm-up (page in the weights, start candle's thread pool).
    let cancel = AtomicBool::new(false);
    let mut warm = params(1, 1);
    warm.max_new_tokens = 8;
    model.generate(&messages(PROMPTS[0].1), &warm, &cancel, &mut |_| {}).expect("warm-up");

    let rows = env_usize("VERDICT_BENCH_ROWS", model.batch_rows()).max(1);
    let mut all = Vec::with_capacity(runs);
    for r in 0..runs {
        let run = run_once(&mut model, rows);
        println!(
            "run {}: prefill {:7.1} tok/s (forward only {:7.1}) | decode {:6.1} tok/s | {} x {} candidates in {:6.2} s = {:6.1} cand/min ({:.1} tok/cand, {:.1} tok/s) | as one job, {} rows: {:6.2} s = {:6.1} cand/min",
            r + 1,
            run.prefill_tps(),
            run.prefill_forward_tps(),
            run.decode_tps(),
            PROMPTS.len(),
            CANDIDATES,
            run.multi.as_secs_f64(),
            run.cands_per_min(),
            run.multi_completion_tokens as f64 / run.multi_candidates as f64,
            run.multi_tokens_per_sec(),
            rows,
            run.job.as_secs_f64(),
            run.job_cands_per_min(),
        );
        all.push(run);
    }

    let m = |f: fn(&Run) -> f64| median(all.iter().map(f).collect());
    let prefill = m(Run::prefill_tps);
    let prefill_fwd = m(Run::prefill_forward_tps);
    let decode = m(Run::decode_tps);
    let cpm = m(Run::cands_per_min);
    let job_cpm = m(Run::job_cands_per_min);
    let multi_tps = m(Run::multi_tokens_per_sec);
    let first = &all[0];
    let tok_per_cand = first.multi_completion_tokens as f64 / first.multi_candidates as f64;
    let single_tok = first.single_completion_tokens as f64 / PROMPTS.len() as f64;
    println!(
        "median of {runs}: prefill {prefill:.1} tok/s ({} prompt tokens over 8 prompts), decode {decode:.1} tok/s (1 stream, {single_tok:.1} tok/answer), {cpm:.1} candidates/min ({CANDIDATES} per prompt, {tok_per_cand:.1} tok/cand), {job_cpm:.1} as one job ({rows} rows)",
        first.prompt_tokens
    );
    let json = serde_json::json!({
        "engine": "verdict",
        "model": path.display().to_string(),
        "stored_as": info.quantization,
        "run_as": info.run_quantization,
        "threads": threads,
        "flush_denormals": model::denormals::this_thread_flushes(),
        "runs": runs,
        "prompts": PROMPTS.len(),
        "prompt_tokens": first.prompt_tokens,
        "max_new_tokens": max_new_tokens(),
        "temperature": TEMPERATURE,
        "candidates_per_prompt": CANDIDATES,
        "prefill_tok_s": round1(prefill),
        "prefill_forward_tok_s": round1(prefill_fwd),
        "decode_tok_s": round1(decode),
        "cands_per_min": round1(cpm),
        "job_cands_per_min": round1(job_cpm),
        "batch_rows": rows,
        "multi_tok_s": round1(multi_tps),
        "tokens_per_candidate": round1(tok_per_cand),
        "tokens_per_single": round1(single_tok),
        "per_run": all.iter().map(|r| serde_json::json!({
            "prefill_tok_s": round1(r.prefill_tps()),
            "decode_tok_s": round1(r.decode_tps()),
            "cands_per_min": round1(r.cands_per_min()),
            "job_cands_per_min": round1(r.job_cands_per_min()),
        })).collect::<Vec<_>>(),
    });
    println!("{json}");
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
