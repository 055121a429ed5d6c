//! `Model::generate_many`: several prompts' candidates decoded in one batch, on the tiny model.

use super::tests_tiny::{tiny_gguf, tiny_q8_0};
use super::*;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

fn request(text: &str, candidates: usize, seed: u64, max_new_tokens: usize) -> Request {
    Request {
        messages: vec![ChatMessage::new("user", text)],
        params: GenerateParams {
            candidates,
            temperature: 1.0,
            top_p: 0.95,
            top_k: Some(50),
            max_new_tokens,
            seed,
            ..GenerateParams::default()
        },
    }
}

/// What `generate_many` reported: each request's result, the order they finished in, and the
/// most requests that were started and not yet done at one time.
struct Outcome {
    done: HashMap<usize, std::result::Result<Vec<Candidate>, String>>,
    order: Vec<usize>,
    most_in_flight: usize,
}

fn many(model: &mut Model, requests: &[Request], rows: usize, cancel: &AtomicBool) -> Outcome {
    let mut out = Outcome { done: HashMap::new(), order: Vec::new(), most_in_flight: 0 };
    let mut in_flight = std::collections::HashSet::new();
    model
        .generate_many(requests, rows, cancel, &mut |r, event| match event {
            RequestEvent::Progress(_) => {
                in_flight.insert(r);
                out.most_in_flight = out.most_in_flight.max(in_flight.len());
            }
            RequestEvent::Done(result) => {
                in_flight.remove(&r);
                out.order.push(r);
                assert!(out.done.insert(r, result.map_err(|e| e.to_string())).is_none(), "request {r} done twice");
            }
        })
        .expect("generation runs");
    out
}

fn alone(model: &mut Model, request: &Request) -> Vec<Candidate> {
    model.generate(&request.messages, &request.params, &AtomicBool::new(false), &mut |_| {}).expect("runs")
}

#[test]
fn prompts_decoded_together_give_each_candidate_it_gets_alone() {
    // Different prompt lengths, candidate counts and answer lengths, so prompts join the batch
    // while others are mid-answer. Q8_0 and dense f32 weights on verdict's kernels (batch
    // exact), and candle's ops (one row per pass) alike.
    let requests = vec![
        request("Say hello", 3, 11, 12),
        request("Écris une phrase sur la mer, s'il te plaît.", 1, 12, 5),
        request("写一句关于海的话。", 2, 13, 16),
        request("اكتب جملة عن البحر 🌊", 2, 14, 9),
        request("Hi", 4, 15, 7),
    ];
    let mut candle_ops = tiny_gguf();
    candle_ops.net.use_candle_ops();
    for (mut model, exact) in [(tiny_q8_0(), super::q8_cpu::supported()), (tiny_gguf(), true), (candle_ops, false)] {
        assert_eq!(model.net.batch_is_exact(), exact);
        let out = many(&mut model, &requests, 5, &AtomicBool::new(false));
        assert_eq!(out.done.len(), requests.len());
        assert!(out.most_in_flight >= 2, "several prompts decode together");
        for (i, r) in requests.iter().enumerate() {
            let together = out.done[&i].as_ref().expect("answered");
            assert_eq!(together.len(), r.params.candidates);
            assert_eq!(together, &alone(&mut model, r), "request {i}");
        }
    }
}

#[test]
fn the_row_limit_holds_and_a_request_larger_than_it_runs_alone() {
    let mut model = tiny_q8_0();
    let requests: Vec<Request> = (0..6).map(|i| request("Say hello", 2, 100 + i, 10)).collect();
    let out = many(&mut model, &requests, 4, &AtomicBool::new(false));
    assert_eq!(out.done.len(), 6);
    assert_eq!(out.most_in_flight, 2, "two requests of two candidates fill four rows");
    let out = many(&mut model, &requests, 1, &AtomicBool::new(false));
    assert_eq!(out.most_in_flight, 1, "one row: one request at a time, though it has two candidates");
    assert_eq!(out.order, (0..6).collect::<Vec<_>>());
}

#[test]
fn a_prompt_that_cannot_be_answered_fails_alone() {
    let mut model = tiny_q8_0();
    let too_long = "the weather ".repeat(200);
    let mut bad_params = request("Hi", 1, 3, 4);
    bad_params.params.top_p = 0.0;
    let requests = vec![request("Say hello", 2, 1, 6), request(&too_long, 1, 2, 4), bad_params, request("Hi", 1, 4, 6)];
    let out = many(&mut model, &requests, 8, &AtomicBool::new(false));
    assert!(out.done[&1].as_ref().unwrap_err().contains("context"), "{:?}", out.done[&1]);
    assert!(out.done[&2].as_ref().unwrap_err().contains("top-p"), "{:?}", out.done[&2]);
    assert_eq!(out.done[&0].as_ref().unwrap(), &alone(&mut model, &requests[0]));
    assert_eq!(out.done[&3].as_ref().unwrap(), &alone(&mut model, &requests[3]));
}

#[test]
fn cancel_ends_the_decoding_requests_and_starts_no_more() {
    let mut model = tiny_q8_0();
    let requests: Vec<Request> = (0..5).map(|i| request("Say hello", 2, 200 + i, 12)).collect();
    let cancel = AtomicBool::new(false);
    let mut done = Vec::new();
    let mut tokens = 0;
    model
        .generate_many(&requests, 4, &cancel, &mut |r, event| match event {
            RequestEvent::Progress(p) => {
                tokens += usize::from(p.tokens_generated > 0);
                if tokens == 3 {
                    cancel.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            RequestEvent::Done(result) => done.push((r, result.expect("answered"))),
        })
        .expect("runs");
    // Requests 0 and 1 were decoding (four rows) when the third token came: both end, their
    // live candidates cancelled; the last ones never start (nor are they reported).
    let ids: std::collections::HashSet<usize> = done.iter().map(|(r, _)| *r).collect();
    assert!(ids.contains(&0) && ids.contains(&1) && !ids.contains(&4), "{done:?}");
    let cancelled = done.iter().flat_map(|(_, c)| c).filter(|c| c.finish_reason == FinishReason::Cancelled).count();
    assert!(cancelled >= 1, "the candidates still decoding end cancelled: {done:?}");
    assert!(done.iter().all(|(_, c)| c.len() == 2), "a request's every candidate is reported: {done:?}");
}
