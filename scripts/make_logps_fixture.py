#!/usr/bin/env python3
"""Writes the reference log-prob fixture for `verdict logps` from Hugging Face transformers.

Usage: python3 scripts/make_logps_fixture.py [PATH_TO_GGUF]

The GGUF defaults to $VERDICT_MODEL, else the default model in verdict's cache
($VERDICT_CACHE_DIR/models or ~/.cache/verdict/models/SmolLM2-135M-Instruct.Q4_1.gguf; fetch it
with `verdict model fetch`). When this interpreter lacks torch, transformers or gguf, the script
creates the venv $VERDICT_REF_VENV (default .venv-ref, git-ignored), installs them and re-runs
itself there.

The model is loaded by transformers from the GGUF, dequantized to float32. Each pair is
tokenized by TRL's rule for conversational data (TRL 1.16's DPOTrainer), written out here
independently of verdict's Rust code:

  prompt ids   = apply_chat_template(messages, add_generation_prompt=True), no special tokens added
  answered ids = apply_chat_template(messages + [assistant: answer]), same
  response ids = answered ids after their common prefix with the prompt ids
                 (for ChatML: the answer, "<|im_end|>" and "\\n"; no extra EOS)
  prompt ++ response cut to max_length keeping the start; log-prob = sum over the surviving
  response tokens of log_softmax(logits[t-1])[t], in float64 from float32 logits.

Writes into tests/fixtures/logps/:

  pairs.jsonl      the pairs, TRL conversational format (taken from sample_data/pairs.jsonl;
                   one with a system message, one with an earlier exchange)
  reference.jsonl  one line per (max_length, pair): chosen_logp, rejected_logp and the
                   prompt/response token counts, for max_length 1024 (no truncation) and 128
"""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("VERDICT_REF_VENV") or ROOT / ".venv-ref")
OUT = ROOT / "tests" / "fixtures" / "logps"
PACKAGES = ["transformers>=4.46", "tokenizers", "gguf>=0.10", "jinja2", "numpy", "torch", "accelerate"]
MAX_LENGTHS = [1024, 128]

# (sample pair id, messages placed before the pair's user prompt)
PAIRS = [
    ("pair-bank-en-01", []),  # emoji in the prompt
    ("pair-bank-es-01", []),
    ("pair-bank-de-01", []),
    ("pair-bank-fr-01", []),
    ("pair-bank-zh-02", []),
    ("pair-health-ja-02", []),
    ("pair-bank-ar-02", []),
    ("pair-health-en-01", [
        {"role": "system", "content": "You are the patient communication assistant of Riverside Clinic. "
                                      "Reply in the patient's language, kindly and briefly."}]),
    ("pair-ins-fr-02", [
        {"role": "user", "content": "Bonjour !"},
        {"role": "assistant", "content": "Bonjour, comment puis-je vous aider aujourd'hui ?"}]),
]


def ensure_deps():
    probe = "import torch, transformers, gguf, jinja2"
    if subprocess.call([sys.executable, "-c", probe], stderr=subprocess.DEVNULL) == 0:
        return
    py = VENV / "bin" / "python"
    if Path(sys.prefix).resolve() == VENV.resolve():
        sys.exit(f"{VENV} lacks one of torch, transformers, gguf, jinja2")
    if not py.exists():
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
    if subprocess.call([str(py), "-c", probe], stderr=subprocess.DEVNULL) != 0:
        subprocess.check_call([str(py), "-m", "pip", "install", "-q", *PACKAGES])
    os.execv(str(py), [str(py), __file__, *sys.argv[1:]])


def model_path():
    if len(sys.argv) > 1:
        return Path(sys.argv[1])
    if os.environ.get("VERDICT_MODEL"):
        return Path(os.environ["VERDICT_MODEL"])
    cache = os.environ.get("VERDICT_CACHE_DIR") or str(Path.home() / ".cache" / "verdict")
    return Path(cache) / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_pairs():
    samples = {}
    with open(ROOT / "sample_data" / "pairs.jsonl", encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            samples[record["id"]] = record
    pairs = []
    for pair_id, before in PAIRS:
        s = samples[pair_id]
        assert isinstance(s["prompt"], str), pair_id
        pairs.append({
            "id": pair_id,
            "prompt": before + [{"role": "user", "content": s["prompt"]}],
            "chosen": [{"role": "assistant", "content": s["chosen"]}],
            "rejected": [{"role": "assistant", "content": s["rejected"]}],
            "language": s["language"],
        })
    return pairs


def common_prefix_length(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def tokenize_pair(tok, messages, answer):
    """TRL's rule, as its DPOTrainer applies it: tokenize the prompt (with the generation prompt)
    and the answered chat; the response is the answered chat's ids after their common prefix.
    Checked against the text-level reading (rendered answered chat minus rendered prompt,
    tokenized on its own), which is what verdict does: the fixture is only valid where both agree."""
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(messages + [{"role": "assistant", "content": answer}], tokenize=False)
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    full_ids = tok(full, add_special_tokens=False)["input_ids"]
    shared = common_prefix_length(prompt_ids, full_ids)
    if shared != len(prompt_ids) or not full.startswith(prompt):
        raise SystemExit(f"the prompt is not a prefix of the answered chat: {prompt!r}")
    response_ids = full_ids[shared:]
    by_text = tok(full[len(prompt):], add_special_tokens=False)["input_ids"]
    if by_text != response_ids:
        raise SystemExit(f"tokens merge across the prompt/answer boundary: {full[len(prompt):][:40]!r}")
    return prompt_ids, response_ids


def summed_logp(model, prompt_ids, response_ids, max_length):
    """Sum of log p(response token | everything before it) after keep-start truncation."""
    import torch
    ids = (prompt_ids + response_ids)[:max_length]
    kept = len(ids) - len(prompt_ids)
    if kept <= 0:
        return 0.0, 0
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].to(torch.float64)
    logp = torch.log_softmax(logits, dim=-1)
    positions = range(len(prompt_ids), len(ids))
    total = sum(logp[t - 1, ids[t]].item() for t in positions)
    return total, kept


def main():
    ensure_deps()
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    gguf = model_path()
    if not gguf.is_file():
        sys.exit(f"{gguf} not found: fetch it with `verdict model fetch` or pass a path")
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    model.eval()
    source = {"model_file": gguf.name, "model_sha256": sha256(gguf),
              "transformers": transformers.__version__, "torch": torch.__version__,
              "rule": "TRL 1.16 conversational: chat template with generation prompt, response = rest of the "
                      "answered chat, no special tokens added, keep_start truncation, summed response log-probs"}

    pairs = load_pairs()
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "pairs.jsonl", "w", encoding="utf-8") as f:
        for p in pairs:
            f.write(json.dumps({k: p[k] for k in ("id", "prompt", "chosen", "rejected", "language")},
                               ensure_ascii=False) + "\n")
    print("wrote", OUT / "pairs.jsonl")

    lines = [{"source": source}]
    for max_length in MAX_LENGTHS:
        for index, p in enumerate(pairs):
            prompt_ids, chosen_ids = tokenize_pair(tok, p["prompt"], p["chosen"][0]["content"])
            prompt_again, rejected_ids = tokenize_pair(tok, p["prompt"], p["rejected"][0]["content"])
            assert prompt_ids == prompt_again
            chosen, chosen_kept = summed_logp(model, prompt_ids, chosen_ids, max_length)
            rejected, rejected_kept = summed_logp(model, prompt_ids, rejected_ids, max_length)
            lines.append({
                "max_length": max_length, "index": index, "id": p["id"],
                "chosen_logp": chosen, "rejected_logp": rejected,
                "prompt_tokens": len(prompt_ids),
                "chosen_tokens": len(chosen_ids), "rejected_tokens": len(rejected_ids),
                "chosen_tokens_scored": chosen_kept, "rejected_tokens_scored": rejected_kept,
            })
            print(f"max_length {max_length} {p['id']}: prompt {len(prompt_ids)}, chosen {chosen:.4f} "
                  f"({chosen_kept}/{len(chosen_ids)} tokens), rejected {rejected:.4f} "
                  f"({rejected_kept}/{len(rejected_ids)} tokens)")
    with open(OUT / "reference.jsonl", "w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    print("wrote", OUT / "reference.jsonl")


if __name__ == "__main__":
    main()
