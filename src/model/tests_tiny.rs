//! Tests on the tiny random-weight model in both formats.

use super::testing::{TINY_CONTEXT, write_tiny_models};
use super::*;
use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;

/// The tiny models, written once per test process.
pub(crate) fn tiny_paths() -> &'static (PathBuf, PathBuf) {
    static PATHS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    PATHS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir").keep();
        write_tiny_models(&dir).expect("tiny models written")
    })
}

fn cpu() -> LoadOptions {
    LoadOptions { device: DeviceChoice::Cpu, ..LoadOptions::default() }
}

pub(crate) fn tiny_gguf() -> Model {
    Model::load(&tiny_paths().0, &cpu()).expect("tiny GGUF loads")
}

fn tiny_hf() -> Model {
    Model::load(&tiny_paths().1, &cpu()).expect("tiny HF dir loads")
}

fn user(text: &str) -> Vec<ChatMessage> {
    vec![ChatMessage::new("user", text)]
}

fn sampled(candidates: usize, seed: u64) -> GenerateParams {
    GenerateParams {
        candidates,
        temperature: 1.0,
        top_p: 0.95,
        top_k: Some(50),
        max_new_tokens: 12,
        seed,
        ..GenerateParams::default()
    }
}

fn run(model: &mut Model, params: &GenerateParams) -> Vec<Candidate> {
    model.generate(&user("Say hello"), params, &AtomicBool::new(false), &mut |_| {}).expect("generation runs")
}

#[test]
fn both_formats_load_with_the_same_facts() {
    let (g, h) = (tiny_gguf(), tiny_hf());
    for m in [&g, &h] {
        assert_eq!(m.info().architecture, "llama");
        assert_eq!(m.info().context_length, TINY_CONTEXT);
        assert_eq!(m.info().vocab_size, 275);
        assert_eq!(m.info().layers, 2);
        assert_eq!(m.info().special_tokens.eos.as_deref(), Some("<|im_end|>"));
        assert_eq!(m.info().special_tokens.stop_ids, vec![0, 2]);
        assert_eq!(m.info().sha256.len(), 64);
    }
    assert_eq!(g.info().format, ModelFormat::Gguf);
    assert_eq!(h.info().format, ModelFormat::Hf);
    assert_eq!(g.info().parameters, h.info().parameters);
    assert_eq!(g.info().quantization, "F32");
    assert_eq!(g.info().chat_template, h.info().chat_template);
    assert_eq!(g.info().name.as_deref(), Some("verdict-tiny"));
}

#[test]
fn gguf_and_hf_give_the_same_logits() {
    let (g, h) = (tiny_gguf(), tiny_hf());
    let ids = g.encode(&g.render_chat(&user("the weather in winter"), true).unwrap()).unwrap();
    assert!(ids.len() > 20);
    let (a, b) = (g.logits(&ids).unwrap(), h.logits(&ids).unwrap());
    assert_eq!(a.dims(), &[ids.len(), 275]);
    let diff = llama::max_abs_diff(&a, &b).unwrap();
    assert!(diff < 1e-4, "GGUF and HF logits differ by {diff}");
    // And the logits are not degenerate (the test would pass trivially on zeros).
    let spread = llama::max_abs_diff(&a.narrow(0, 0, 1).unwrap(), &a.narrow(0, 1, 1).unwrap()).unwrap();
    assert!(spread > 0.1);
}

#[test]
fn qwen2_gguf_and_hf_give_the_same_logits() {
    let dir = tempfile::tempdir().unwrap();
    let (gguf, hf) = testing::write_tiny_models_arch(dir.path(), testing::TinyArch::Qwen2).unwrap();
    let (g, h) = (Model::load(&gguf, &cpu()).unwrap(), Model::load(&hf, &cpu()).unwrap());
    assert_eq!((g.info().architecture.as_str(), h.info().architecture.as_str()), ("qwen2", "qwen2"));
    let ids = g.encode("the rain in winter is at the sea").unwrap();
    let diff = llama::max_abs_diff(&g.logits(&ids).unwrap(), &h.logits(&ids).unwrap()).unwrap();
    // Equal logits mean both loaders apply the q/k/v biases and the same (NEOX) rotary layout.
    assert!(diff < 1e-4, "qwen2 GGUF and HF logits differ by {diff}");
}

#[test]
fn cached_decoding_matches_a_full_forward() {
    let g = tiny_gguf();
    let ids = g.encode("in the winter the rain is at the sea").unwrap();
    let full = g.logits(&ids).unwrap();
    let mut cache = g.net.new_cache();
    let n = ids.len();
    g.net.forward_last(&ids[..n - 2], &mut cache).unwrap();
    g.net.forward_last(&ids[n - 2..n - 1], &mut cache).unwrap();
    let last = g.net.forward_last(&ids[n - 1..], &mut cache).unwrap();
    let diff = llama::max_abs_diff(&last, &full.get(n - 1).unwrap()).unwrap();
    assert!(diff < 1e-4, "incremental decode differs by {diff}");
}

#[test]
fn the_cpu_path_gives_candles_logits_for_prefill_and_decode() {
    let paths =
        super::testing::write_tiny_models_arch(&tempfile::tempdir().unwrap().keep(), super::testing::TinyArch::Qwen2)
            .unwrap();
    for path in [&tiny_paths().0, &tiny_paths().1, &paths.0, &paths.1] {
        let fast = Model::load(path, &cpu()).unwrap();
        let mut plain = Model::load(path, &cpu()).unwrap();
        plain.net.use_candle_ops();
        let ids = fast.encode("in the winter the rain is at the sea").unwrap();
        let n = ids.len();
        let diff = llama::max_abs_diff(&fast.logits(&ids).unwrap(), &plain.logits(&ids).unwrap()).unwrap();
        assert!(diff < 1e-4, "{}: prefill logits differ by {diff}", path.display());
        let (mut a, mut b) = (fast.net.new_cache_for(4), plain.net.new_cache());
        for at in [0..n - 2, n - 2..n - 1, n - 1..n] {
            let x = fast.net.forward_last(&ids[at.clone()], &mut a).unwrap();
            let y = plain.net.forward_last(&ids[at], &mut b).unwrap();
            let diff = llama::max_abs_diff(&x, &y).unwrap();
            assert!(diff < 1e-4, "{}: decode logits differ by {diff}", path.display());
        }
    }
}

/// The tiny GGUF with every matrix in Q8_0 on verdict's CPU kernel, as the default model runs.
pub(crate) fn tiny_q8_0() -> Model {
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    let mut g = tiny_gguf();
    let quantize = |l: &mut llama::Linear| {
        if let llama::Weight::Candle(QMatMul::Tensor(t)) = &l.weight {
            let q = QTensor::quantize(t, GgmlDType::Q8_0).unwrap();
            if let Some(m) = super::q8_cpu::Q8Matrix::from_qtensor(&q).unwrap() {
                l.weight = llama::Weight::Cpu(std::sync::Arc::new(m));
            }
        }
    };
    for layer in &mut g.net.layers {
        for l in
            [&mut layer.q, &mut layer.k, &mut layer.v, &mut layer.o, &mut layer.gate, &mut layer.up, &mut layer.down]
        {
            quantize(l);
        }
    }
    quantize(&mut g.net.lm_head);
    g
}

#[test]
fn a_batch_of_sequences_gives_each_its_own_logits_exactly() {
    // Exactly with verdict's quantized kernel (each row's sums in the same order whatever the
    // batch); within rounding with candle's dense product, whose blocking depends on the rows.
    let g = tiny_q8_0();
    if !super::q8_cpu::supported() {
        return;
    }
    let ids = g.encode("in the winter the rain is at the sea").unwrap();
    // Three sequences at different lengths: each alone, then all three as one batch.
    let mut prefix = g.net.new_cache();
    g.net.forward_last(&ids[..3], &mut prefix).unwrap();
    let mut alone = Vec::new();
    for (tokens, cache) in [(&ids[3..4], Some(&prefix)), (&ids[..5], None), (&ids[3..6], Some(&prefix))] {
        let mut c = cache.cloned().unwrap_or_else(|| g.net.new_cache());
        alone.push(g.net.forward_last(tokens, &mut c).unwrap().to_vec1::<f32>().unwrap());
    }
    let (mut c0, mut c1, mut c2) = (prefix.clone(), g.net.new_cache(), prefix.clone());
    let mut seqs = [
        llama::Seq { tokens: &ids[3..4], cache: &mut c0 },
        llama::Seq { tokens: &ids[..5], cache: &mut c1 },
        llama::Seq { tokens: &ids[3..6], cache: &mut c2 },
    ];
    let batch = g.net.forward_last_batch(&mut seqs).unwrap();
    assert_eq!(batch, alone);
    assert_eq!((c0.len(), c1.len(), c2.len()), (4, 5, 6));
}

#[test]
fn tokenizer_round_trips_and_matches_across_formats() {
    let (g, h) = (tiny_gguf(), tiny_hf());
    let text = "<|im_start|>user\nthe 2026 winter: ünïcödé 日本 🙂<|im_end|>\n";
    let ids = g.encode(text).unwrap();
    assert_eq!(ids, h.encode(text).unwrap());
    assert_eq!(ids[0], 1, "<|im_start|> is one token");
    assert_eq!(ids.iter().filter(|&&i| i == 2).count(), 1, "<|im_end|> is one token");
    assert_eq!(g.decode(&ids).unwrap(), text);
    // Digits are split one by one and " the" merges (SmolLM's pre-tokenizer).
    let digits = g.encode("2026").unwrap();
    assert_eq!(digits.len(), 4);
    assert_eq!(g.encode(" the").unwrap().len(), 1);
}

#[test]
fn chat_template_renders_like_smollm2() {
    let g = tiny_gguf();
    let sys = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n";
    assert_eq!(
        g.render_chat(&user("Hi"), true).unwrap(),
        format!("{sys}<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    );
    let chat = vec![
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Hi"),
        ChatMessage::new("assistant", "Hello!"),
        ChatMessage::new("user", "Bye"),
    ];
    assert_eq!(
        g.render_chat(&chat, false).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
    );
}

#[test]
fn greedy_generation_is_deterministic() {
    let mut g = tiny_gguf();
    let params = GenerateParams { candidates: 2, temperature: 0.0, max_new_tokens: 10, ..GenerateParams::default() };
    let a = run(&mut g, &params);
    let b = run(&mut g, &params);
    assert_eq!(a, b);
    assert_eq!(a[0].text, a[1].text, "greedy candidates agree");
    assert!(a[0].completion_tokens > 0);
    // The HF format decodes greedily to the same text.
    assert_eq!(run(&mut tiny_hf(), &params)[0].text, a[0].text);
}

#[test]
fn a_candidate_regenerated_alone_from_its_seed_is_identical() {
    // Dense f32 weights and Q8_0 on verdict's kernels (all candidates in one pass), and candle's
    // ops (each candidate's step its own pass).
    let mut candle_ops = tiny_gguf();
    candle_ops.net.use_candle_ops();
    for (mut g, batched) in [(tiny_gguf(), true), (tiny_q8_0(), super::q8_cpu::supported()), (candle_ops, false)] {
        assert_eq!(g.net.batch_is_exact(), batched);
        let batch = run(&mut g, &sampled(3, 1234));
        assert_eq!(batch.len(), 3);
        assert_eq!(batch[0].seed, 1234);
        let texts: std::collections::HashSet<_> = batch.iter().map(|c| c.text.clone()).collect();
        assert!(texts.len() > 1, "sampled candidates differ: {batch:?}");
        for cand in &batch {
            let alone = run(&mut g, &sampled(1, cand.seed));
            assert_eq!(alone.len(), 1);
            assert_eq!(&alone[0], cand);
        }
    }
}

#[test]
fn greedy_candidates_decoded_as_one_batch_equal_one_at_a_time() {
    let mut g = tiny_q8_0();
    let greedy = |candidates| GenerateParams { candidates, temperature: 0.0, max_new_tokens: 16, ..sampled(1, 5) };
    let alone = run(&mut g, &greedy(1));
    assert!(alone[0].completion_tokens > 0);
    let batch = run(&mut g, &greedy(4));
    assert_eq!(batch.len(), 4);
    for cand in &batch {
        assert_eq!((&cand.text, cand.completion_tokens), (&alone[0].text, alone[0].completion_tokens));
    }
}

#[test]
fn cancel_stops_every_candidate_and_keeps_the_finished_ones() {
    let mut g = tiny_gguf();
    let cancel = AtomicBool::new(false);
    let mut reports = Vec::new();
    let params = GenerateParams { max_new_tokens: 8, ..sampled(3, 9) };
    let out = g
        .generate(&user("Hi"), &params, &cancel, &mut |p| {
            if p.candidate == 1 && p.candidate_tokens == 2 {
                cancel.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            reports.push(p);
        })
        .unwrap();
    // The candidates decode side by side: when candidate 1 has 2 tokens, candidate 0 has 2
    // (or had stopped) and candidate 2 has 1; none decodes further.
    assert_eq!(out.len(), 3, "{out:?}");
    assert_eq!(out[1].finish_reason, FinishReason::Cancelled);
    assert_eq!(out[1].completion_tokens, 2);
    assert!(out[0].completion_tokens <= 2, "{out:?}");
    assert!(out[2].finish_reason != FinishReason::Cancelled || out[2].completion_tokens == 1, "{out:?}");
    assert!(reports[0].prefill_tokens_per_sec > 0.0);
    assert!(reports.last().unwrap().decode_tokens_per_sec > 0.0);
}

#[test]
fn length_limit_and_context_errors() {
    let mut g = tiny_gguf();
    let out = run(
        &mut g,
        &GenerateParams { candidates: 1, temperature: 0.0, max_new_tokens: 3, ..GenerateParams::default() },
    );
    assert!(out[0].completion_tokens <= 3);
    if out[0].completion_tokens == 3 {
        assert_eq!(out[0].finish_reason, FinishReason::Length);
    }
    let long = "the weather ".repeat(200);
    let err = g.generate(&user(&long), &sampled(1, 1), &AtomicBool::new(false), &mut |_| {}).unwrap_err();
    assert!(matches!(err, ModelError::PromptTooLong { .. }), "{err}");
    assert!(err.to_string().contains("context window is 256"));
    let bad = GenerateParams { top_p: 0.0, ..sampled(1, 1) };
    assert!(matches!(run_err(&mut g, &bad), ModelError::InvalidParams(_)));
}

fn run_err(model: &mut Model, params: &GenerateParams) -> ModelError {
    model.generate(&user("x"), params, &AtomicBool::new(false), &mut |_| {}).unwrap_err()
}

#[test]
fn model_can_move_to_a_worker_thread() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<Model>();
    let mut model = tiny_gguf();
    let handle = std::thread::spawn(move || run(&mut model, &sampled(1, 3)).len());
    assert_eq!(handle.join().unwrap(), 1);
}

#[test]
fn flushing_denormals_keeps_the_logits() {
    // The same forward pass on this thread with IEEE subnormals and with FTZ|DAZ.
    let g = tiny_gguf();
    let ids = g.encode("Hello, how are you today?").unwrap();
    let before = denormals::this_thread_flushes();
    denormals::set_this_thread(false);
    let ieee = g.logits(&ids).unwrap();
    denormals::set_this_thread(true);
    let flushed = g.logits(&ids);
    denormals::set_this_thread(before);
    let diff = llama::max_abs_diff(&ieee, &flushed.unwrap()).unwrap();
    assert!(diff < 1e-5, "max |logit difference| {diff}");
}

#[test]
fn an_answer_cut_inside_a_character_keeps_only_whole_characters() {
    let g = tiny_gguf();
    let ids = g.encode("OK 日本").unwrap();
    // One token short: 本 (three bytes) loses its last byte.
    let cut = &ids[..ids.len() - 1];
    assert!(g.decode(cut).unwrap().ends_with('\u{FFFD}'), "the plain decode shows a broken tail");
    assert_eq!(g.decode_whole_characters(cut, true).unwrap(), "OK 日");
    assert_eq!(g.decode_whole_characters(&ids, true).unwrap(), "OK 日本");
    // An answer that ended by itself is kept as the model wrote it.
    assert!(g.decode_whole_characters(cut, false).unwrap().ends_with('\u{FFFD}'));
}
