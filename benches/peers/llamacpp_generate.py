#!/usr/bin/env python3
"""llama.cpp peer of benches/generate.rs (run it with the venv of setup_llamacpp.sh).

Same GGUF, same 8 chat prompts, same sampling settings, same thread count, n_ctx 2048. The prompt
text is rendered with the GGUF's own chat template by llama-cpp-python's Jinja2ChatFormatter (what
`create_chat_completion` does internally) and generated with `create_completion` on that text, so
that per-token timing hooks are available; `--check FILE` (the JSON the verdict bench writes with
VERDICT_BENCH_EXPORT) verifies that the rendered text and the prompt token ids are identical to
verdict's, which makes the prefill figures comparable token for token.

Figures (medians over runs), defined as in benches/generate.rs:
- prefill tok/s: prompt tokens / time from the create_completion call to the first sampled token
  (tokenization, prompt decode, one sample); the KV cache is reset first, so the whole prompt runs;
- decode tok/s, one stream: (tokens - 1) / time from the first to the last sampled token
  (timestamps from a stopping_criteria hook, which llama-cpp-python calls right after each sample);
- candidates/min, 4 candidates per prompt = 4 create_completion calls, reported two ways:
  `reprefill` (KV cache reset before every call: 4 independent completions, each prefilling the
  prompt) and `prefix_cache` (llama-cpp-python's default: `Llama.generate` keeps the KV cache of
  the longest common token prefix with the previous call, so candidates 2-4 re-evaluate only the
  last prompt token -- in effect a shared prefill).
llama.cpp's own perf counters (compute only, no Python) are printed alongside.
The last line of output is one JSON object, {"engine":"llama.cpp",...}.
"""

import argparse
import json
import os
import statistics
import sys
import time

import llama_cpp
from llama_cpp import Llama, StoppingCriteriaList
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

# Kept identical to PROMPTS in benches/generate.rs.
PROMPTS = [
    ("en", "Explain how a refrigerator keeps food cold, step by step."),
    ("en", "Write a short story about a lighthouse keeper who finds a message in a bottle."),
    ("es", "Explica las diferencias entre la energía solar y la energía eólica."),
    ("de", "Beschreibe, wie man zu Hause einen Sauerteig ansetzt und pflegt."),
    ("fr", "Quels sont les avantages et les inconvénients du télétravail ?"),
    ("zh", "请详细解释一下光合作用的过程。"),
    ("ja", "日本の四季について詳しく説明してください。"),
    ("code", "Write a Python function that checks whether a string is a palindrome, and explain how it works."),
]
CANDIDATES = 4
# 64 unless VERDICT_BENCH_MAX_TOKENS says otherwise (the verdict bench reads the same variable).
MAX_NEW_TOKENS = max(1, int(os.environ.get("VERDICT_BENCH_MAX_TOKENS", "64")))
TEMPERATURE = 0.8
TOP_P = 0.9
REPEAT_PENALTY = 1.1
REPEAT_LAST_N = 64
SINGLE_SEED = 1000
MULTI_SEED = 2000


def default_model():
    env = os.environ.get("VERDICT_MODEL")
    if env:
        return env
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(cache, "verdict", "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


class Clock:
    """A stopping criterion that never stops and records when each token was sampled.

    `Llama.generate` calls it right after every sample (the end-of-turn token included), and
    `_create_completion` calls it once more after the loop: `sampled()` drops that last call.
    """

    def __init__(self):
        self.times = []

    def __call__(self, input_ids, logits):
        self.times.append(time.perf_counter())
        return False

    def sampled(self, out):
        times = self.times[:-1]
        expected = out["usage"]["completion_tokens"] + (out["choices"][0]["finish_reason"] == "stop")
        if len(times) != expected:
            print(f"warning: {len(times)} sample timestamps for {expected} sampled tokens", file=sys.stderr)
        return times


def perf(llm):
    return llama_cpp.llama_perf_context(llm._ctx.ctx)


def perf_reset(llm):
    llama_cpp.llama_perf_context_reset(llm._ctx.ctx)


def complete(llm, prompt, seed, clock=None):
    return llm.create_completion(
        prompt,
        max_tokens=MAX_NEW_TOKENS,
        temperature=TEMPERATURE,
        top_p=TOP_P,
        top_k=0,  # off, as verdict's top_k None
        min_p=0.0,  # off (llama-cpp-python's default is 0.05)
        typical_p=1.0,
        repeat_penalty=REPEAT_PENALTY,
        seed=seed,
        stopping_criteria=StoppingCriteriaList([clock]) if clock is not None else None,
    )


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=default_model())
    ap.add_argument("--threads", type=int, default=int(os.environ.get("VERDICT_BENCH_THREADS", "1")))
    ap.add_argument("--runs", type=int, default=int(os.environ.get("VERDICT_BENCH_RUNS", "3")))
    ap.add_argument("--check", help="rendered prompts and ids written by the verdict bench (VERDICT_BENCH_EXPORT)")
    args = ap.parse_args()
    if not os.path.exists(args.model):
        sys.exit(f"model not found: {args.model} (run `verdict model fetch`, or pass --model)")

    t = time.perf_counter()
    llm = Llama(
        model_path=args.model,
        n_ctx=2048,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        last_n_tokens_size=REPEAT_LAST_N,
        verbose=False,
    )
    load_s = time.perf_counter() - t

    meta = llm.metadata
    fmt = Jinja2ChatFormatter(
        template=meta["tokenizer.chat_template"],
        eos_token=llm.detokenize([llm.token_eos()]).decode("utf-8", errors="ignore"),
        bos_token=llm.detokenize([llm.token_bos()]).decode("utf-8", errors="ignore"),
        add_generation_prompt=True,
    )
    rendered = [fmt(messages=[{"role": "user", "content": text}]).prompt for _, text in PROMPTS]
    ids = [llm.tokenize(r.encode("utf-8"), add_bos=False, special=True) for r in rendered]
    add_bos = llm._model.add_bos_token()
    print(
        f"llama.cpp generate bench: llama-cpp-python {llama_cpp.__version__}, {args.model}, "
        f"{args.threads} thread(s), {args.runs} runs, loaded in {load_s:.2f} s, add_bos={add_bos}"
    )
    checked = None
    if args.check:
        ref = json.load(open(args.check, encoding="utf-8"))
        text_same = sum(r["rendered"] == mine for r, mine in zip(ref, rendered))
        ids_same = sum(r["ids"] == mine for r, mine in zip(ref, ids))
        checked = {"rendered_identical": text_same, "ids_identical": ids_same, "of": len(PROMPTS)}
        print(f"check against verdict: rendered text identical {text_same}/8, prompt token ids identical {ids_same}/8")
        if text_same != len(PROMPTS) or ids_same != len(PROMPTS):
            for i, (r, mine, mids) in enumerate(zip(ref, rendered, ids)):
                if r["rendered"] != mine or r["ids"] != mids:
                    print(f"  prompt {i}: verdict {len(r['ids'])} tokens, llama.cpp {len(mids)} tokens", file=sys.stderr)
                    print(f"    verdict:   {r['rendered']!r}", file=sys.stderr)
                    print(f"    llama.cpp: {mine!r}", file=sys.stderr)

    # Warm-up.
    llm.reset()
    llm.create_completion(rendered[0], max_tokens=8, temperature=TEMPERATURE, seed=1)

    runs = []
    for r in range(args.runs):
        run = dict(prompt_tokens=0, prefill_s=0.0, decode_tokens=0, decode_s=0.0, single_tokens=0,
                   c_prefill_tokens=0, c_prefill_ms=0.0, c_decode_tokens=0, c_decode_ms=0.0)
        for mode in ("reprefill", "prefix_cache"):
            run[mode] = dict(s=0.0, candidates=0, tokens=0)
        for i, prompt in enumerate(rendered):
            # One stream, from an empty KV cache.
            llm.reset()
            perf_reset(llm)
            clock = Clock()
            t0 = time.perf_counter()
            out = complete(llm, prompt, SINGLE_SEED + i, clock)
            p = perf(llm)
            usage = out["usage"]
            run["prompt_tokens"] += usage["prompt_tokens"]
            run["single_tokens"] += usage["completion_tokens"]
            times = clock.sampled(out)
            if times:
                run["prefill_s"] += times[0] - t0
            if len(times) >= 2:
                run["decode_tokens"] += len(times) - 1
                run["decode_s"] += times[-1] - times[0]
            run["c_prefill_tokens"] += p.n_p_eval
            run["c_prefill_ms"] += p.t_p_eval_ms
            run["c_decode_tokens"] += p.n_eval
            run["c_decode_ms"] += p.t_eval_ms

            # 4 candidates: independent completions, then with the prefix cache.
            for mode in ("reprefill", "prefix_cache"):
                m = run[mode]
                llm.reset()
                t0 = time.perf_counter()
                for c in range(CANDIDATES):
                    if mode == "reprefill":
                        llm.reset()
                    out = complete(llm, prompt, MULTI_SEED + 16 * i + c)
                    m["candidates"] += 1
                    m["tokens"] += out["usage"]["completion_tokens"]
                m["s"] += time.perf_counter() - t0
        run["prefill_tok_s"] = run["prompt_tokens"] / run["prefill_s"]
        run["decode_tok_s"] = run["decode_tokens"] / run["decode_s"]
        run["c_prefill_tok_s"] = run["c_prefill_tokens"] / (run["c_prefill_ms"] / 1000)
        run["c_decode_tok_s"] = run["c_decode_tokens"] / (run["c_decode_ms"] / 1000)
        for mode in ("reprefill", "prefix_cache"):
            m = run[mode]
            m["cands_per_min"] = m["candidates"] * 60 / m["s"]
            m["tok_per_cand"] = m["tokens"] / m["candidates"]
            m["tok_s"] = m["tokens"] / m["s"]
        print(
            f"run {r + 1}: prefill {run['prefill_tok_s']:7.1f} tok/s (compute only {run['c_prefill_tok_s']:7.1f}) | "
            f"decode {run['decode_tok_s']:6.1f} tok/s (compute only {run['c_decode_tok_s']:6.1f}) | "
            f"4 cand/prompt: reprefill {run['reprefill']['cands_per_min']:6.1f} cand/min "
            f"({run['reprefill']['tok_per_cand']:.1f} tok/cand), prefix cache {run['prefix_cache']['cands_per_min']:6.1f} cand/min "
            f"({run['prefix_cache']['tok_per_cand']:.1f} tok/cand)"
        )
        runs.append(run)

    med = lambda f: median([f(x) for x in runs])  # noqa: E731
    res = {
        "engine": "llama.cpp",
        "version": llama_cpp.__version__,
        "system_info": llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
        "model": args.model,
        "threads": args.threads,
        "runs": args.runs,
        "prompts": len(PROMPTS),
        "prompt_tokens": runs[0]["prompt_tokens"],
        "max_new_tokens": MAX_NEW_TOKENS,
        "temperature": TEMPERATURE,
        "candidates_per_prompt": CANDIDATES,
        "prefill_tok_s": round(med(lambda x: x["prefill_tok_s"]), 1),
        "prefill_compute_tok_s": round(med(lambda x: x["c_prefill_tok_s"]), 1),
        "decode_tok_s": round(med(lambda x: x["decode_tok_s"]), 1),
        "decode_compute_tok_s": round(med(lambda x: x["c_decode_tok_s"]), 1),
        "cands_per_min": round(med(lambda x: x["reprefill"]["cands_per_min"]), 1),
        "cands_per_min_prefix_cache": round(med(lambda x: x["prefix_cache"]["cands_per_min"]), 1),
        "multi_tok_s": round(med(lambda x: x["reprefill"]["tok_s"]), 1),
        "multi_tok_s_prefix_cache": round(med(lambda x: x["prefix_cache"]["tok_s"]), 1),
        "tokens_per_candidate": round(runs[0]["reprefill"]["tok_per_cand"], 1),
        "tokens_per_candidate_prefix_cache": round(runs[0]["prefix_cache"]["tok_per_cand"], 1),
        "tokens_per_single": round(runs[0]["single_tokens"] / len(PROMPTS), 1),
        "check": checked,
        "per_run": [
            {
                "prefill_tok_s": round(x["prefill_tok_s"], 1),
                "decode_tok_s": round(x["decode_tok_s"], 1),
                "cands_per_min": round(x["reprefill"]["cands_per_min"], 1),
                "cands_per_min_prefix_cache": round(x["prefix_cache"]["cands_per_min"], 1),
            }
            for x in runs
        ],
    }
    print(
        f"median of {args.runs}: prefill {res['prefill_tok_s']} tok/s ({res['prompt_tokens']} prompt tokens over 8 prompts), "
        f"decode {res['decode_tok_s']} tok/s (1 stream, {res['tokens_per_single']} tok/answer), "
        f"{res['cands_per_min']} candidates/min re-prefilling, {res['cands_per_min_prefix_cache']} with the prefix cache"
    )
    print(json.dumps(res, ensure_ascii=False))


if __name__ == "__main__":
    main()
