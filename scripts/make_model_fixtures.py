#!/usr/bin/env python3
"""Writes the reference fixtures for verdict's model module from Hugging Face transformers.

Usage: python3 scripts/make_model_fixtures.py [PATH_TO_GGUF]

The GGUF defaults to $VERDICT_MODEL, else the default model in verdict's cache
($VERDICT_CACHE_DIR/models or ~/.cache/verdict/models/SmolLM2-135M-Instruct.Q4_1.gguf; fetch it
with `verdict model fetch`). The script creates the venv .venv-ref (git-ignored) with
transformers, tokenizers, gguf, jinja2 and torch, re-runs itself inside it, and writes into
tests/fixtures/model/:

  smollm2_tokens.json     token ids of test strings (tokenizer loaded from the GGUF by transformers)
  smollm2_chat.json       apply_chat_template(tokenize=False) outputs
  smollm2_logits.json     logits of a short chat prompt, the GGUF dequantized to float32
  smollm2_tokenizer/      the tokenizer as transformers saves it (tokenizer.json & co.)

Note: PyPI's torch wheel for Linux pulls the CUDA runtime wheels (~3 GB); it runs on CPU here.
"""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-ref"
OUT = ROOT / "tests" / "fixtures" / "model"
PACKAGES = ["transformers>=4.46", "tokenizers", "gguf>=0.10", "jinja2", "numpy", "torch", "accelerate"]


def ensure_venv():
    py = VENV / "bin" / "python"
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    if not py.exists():
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
    probe = "import transformers, tokenizers, gguf, jinja2, torch, accelerate"
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


STRINGS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "¿Dónde está la biblioteca? Mañana será otro día, señor.",
    "Grüße aus München! Die Straße ist größer als erwartet.",
    "L'été dernier, nous sommes allés à la plage près de Nice.",
    "我们今天去公园散步，天气非常好。",
    "東京タワーは日本の有名な観光地です。ひらがなとカタカナ。",
    "مرحبا بالعالم! كيف حالك اليوم؟",
    "Emoji: 😀🎉👍🏽 and family 👨‍👩‍👧‍👦 and flag 🇫🇷 and heart ❤️",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "fn main() { println!(\"{}\", vec![1, 2, 3].iter().sum::<i32>()); }",
    "    leading spaces and\ttabs\t\tand  double  spaces   ",
    "line one\n\nline three\r\nwindows line\n\n\n",
    "1234567890 3.14159 2026-11-27 +1 (555) 010-9999",
    "Numbers: 1,000,000 and 42nd and 0x1F and 1e-5",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "It's don't won't I'm you're we've they'll she'd",
    "ALL CAPS TEXT AND MiXeD cAsE",
    "https://example.com/path?query=1&x=y#frag",
    "Русский текст: привет, мир!",
    "한국어 문장입니다. Ελληνικά κείμενα.",
    "",
    " ",
    "a" * 50,
    "Tabs\tand\u00a0non-breaking\u2009spaces\u200bzero-width",
]

CHATS = [
    {"name": "user_only", "messages": [{"role": "user", "content": "What is the capital of France?"}]},
    {"name": "with_system", "messages": [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Name three colors."}]},
    {"name": "multi_turn", "messages": [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke about cats."}]},
    {"name": "multi_turn_system_unicode", "messages": [
        {"role": "system", "content": "Réponds en français."},
        {"role": "user", "content": "¿Qué tal? 😀"},
        {"role": "assistant", "content": "Très bien, merci !\n\nEt toi ?"},
        {"role": "user", "content": "  spaces  \n"}]},
]

LOGIT_PROMPT = [{"role": "user", "content": "What is the capital of France?"}]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dump(name, obj):
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / name, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote", OUT / name)


def main():
    ensure_venv()
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = model_path()
    if not gguf.is_file():
        sys.exit(f"{gguf} not found: fetch it with `verdict model fetch` or pass a path")
    source = {"model_file": gguf.name, "model_sha256": sha256(gguf),
              "transformers": transformers.__version__, "torch": torch.__version__}
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tok.save_pretrained(str(OUT / "smollm2_tokenizer"))

    cases = [{"text": s, "ids": tok(s, add_special_tokens=False)["input_ids"]} for s in STRINGS]
    dump("smollm2_tokens.json", {"source": source, "cases": cases})

    chats = []
    for chat in CHATS:
        for gen in (True, False):
            text = tok.apply_chat_template(chat["messages"], tokenize=False, add_generation_prompt=gen)
            ids = tok(text, add_special_tokens=False)["input_ids"]
            chats.append({"name": chat["name"], "messages": chat["messages"],
                          "add_generation_prompt": gen, "text": text, "ids": ids})
    dump("smollm2_chat.json", {"source": source, "cases": chats})

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    model.eval()
    text = tok.apply_chat_template(LOGIT_PROMPT, tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
        greedy = model.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False)[0][len(ids):].tolist()
    positions = sorted({0, len(ids) // 2, len(ids) - 2, len(ids) - 1})
    probe_ids = [0, 1, 2, 100, 1000, 10000, 30000, 49151]
    summaries = []
    for p in positions:
        row = logits[p]
        top = torch.topk(row, 10)
        summaries.append({
            "position": p,
            "top_ids": top.indices.tolist(),
            "top_logits": [round(v, 5) for v in top.values.tolist()],
            "probe_ids": probe_ids,
            "probe_logits": [round(row[i].item(), 5) for i in probe_ids],
            "mean": round(row.mean().item(), 6),
            "std": round(row.std().item(), 6),
        })
    dump("smollm2_logits.json", {
        "source": source,
        "note": "GGUF dequantized to float32 by transformers; logits of every listed position",
        "prompt": LOGIT_PROMPT, "ids": ids, "positions": summaries,
        "greedy_16": greedy, "greedy_16_text": tok.decode(greedy),
    })


if __name__ == "__main__":
    main()
