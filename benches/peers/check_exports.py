#!/usr/bin/env python3
"""verdict's exports checked in the tools that read them (run by benches/peers/check_exports.sh).

A tiny LoRA run of verdict on the default model writes the HF folder (LoRA merged), the PEFT
adapter and two GGUFs (Q8_0 and the source's Q4_1); this script then checks, on the same pairs
and prompt:

  hf       transformers 5 loads the HF folder; its summed log-probs of the pairs' answers equal
           `verdict logps` on the same folder (max abs diff, nats per answer)
  peft     PeftModel.from_pretrained(base, adapter) on the base dequantized from the GGUF: its
           logits equal the merged HF folder's (max abs diff), and the adapter names its base
  llamacpp llama.cpp (llama-cpp-python, run in its own venv by --llamacpp) loads each GGUF and
           decodes greedily from the same prompt tokens; compared with `verdict generate
           --temperature 0` on the same file, token by token. The source GGUF is the control: a
           difference there is llama.cpp's kernels vs verdict's, not the export. At the first
           difference the top-logit margin (llama.cpp's top token minus verdict's, in llama.cpp's
           logits) says whether it is a near-tie
  trl      one TRL DPOTrainer step (policy: the tuned HF folder; reference: the base) on verdict's
           exported JSONL logs the loss `verdict logps --model tuned --ref base` gives
  ollama   the Modelfile verdict wrote: its TEMPLATE rendered by a small Go-template renderer
           (below) equals the Jinja template rendered by transformers on a few conversations

  python check_exports.py --verdict BIN --work DIR --llamacpp-python PY [--base GGUF]
Prints a report and, last, one JSON line with every figure.
"""
import argparse
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

PAIRS = 4  # pairs in the TRL step and the log-prob checks
MAX_LENGTH = 1024
BETA = 0.1
NEW_TOKENS = 48
PROMPT = "Explain how a refrigerator keeps food cold, step by step."


def sh(cmd, **kw):
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if out.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed:\n{out.stderr[-3000:]}")
    return out.stdout


# ---------------------------------------------------------------- llama.cpp (its own venv)

def llamacpp_main(args):
    """Greedy decode of each GGUF from the given prompt ids; prints JSON."""
    from llama_cpp import Llama
    import numpy as np
    spec = json.loads(Path(args.llamacpp).read_text())
    results = {}
    for name, path in spec["models"].items():
        llm = Llama(model_path=path, n_ctx=1024, logits_all=True, verbose=False,
                    n_threads=int(os.environ.get("THREADS", "2")), seed=0)
        prompt = spec["prompt_ids"]
        verdict_ids = spec["verdict_ids"][name]
        llm.reset()
        llm.eval(prompt)
        ids, margins = [], []
        stops = {llm.token_eos()} | set(spec["stop_ids"])
        first_diff = None
        for i in range(NEW_TOKENS):
            logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
            top = int(logits.argmax())
            if first_diff is None and i < len(verdict_ids) and verdict_ids[i] != top:
                v = verdict_ids[i]
                order = np.sort(logits)[::-1]
                first_diff = {"index": i, "llamacpp_token": top, "verdict_token": v,
                              "llamacpp_text": llm.detokenize([top]).decode("utf-8", "replace"),
                              "verdict_text": llm.detokenize([v]).decode("utf-8", "replace"),
                              "margin_top_minus_verdicts": float(logits[top] - logits[v]),
                              "margin_top1_minus_top2": float(order[0] - order[1])}
            if top in stops:
                break
            ids.append(top)
            llm.eval([top])
        text = llm.detokenize(ids).decode("utf-8", "replace")
        results[name] = {"ids": ids, "text": text, "first_difference": first_diff}
        del llm
    print(json.dumps(results))


# ---------------------------------------------------------------- Go template (Ollama)

def go_render(template, messages):
    """Enough of Go's text/template for the Modelfile verdict writes: text, {{ .Role }},
    {{ .Content }}, {{ range .Messages }}, {{ if eq .Role "x" }} / else if / else / end, trims.
    Written independently of verdict's Rust renderer."""
    tokens = re.split(r"(\{\{-?\s.*?\s-?\}\}|\{\{[^ ].*?\}\})", template, flags=re.S)
    items = []
    for tok in tokens:
        if tok.startswith("{{"):
            inner = tok[2:-2]
            ltrim, rtrim = inner.startswith("- "), inner.endswith(" -")
            inner = inner[1:] if ltrim else inner
            inner = inner[:-1] if rtrim else inner
            if ltrim and items and items[-1][0] == "text":
                items[-1] = ("text", items[-1][1].rstrip())
            items.append(("action", inner.strip(), rtrim))
        elif tok:
            if items and items[-1][0] == "action" and items[-1][2]:
                tok = tok.lstrip()
            items.append(("text", tok))

    def parse(pos):
        nodes = []
        while pos < len(items):
            item = items[pos]
            if item[0] == "text":
                nodes.append(("text", item[1]))
                pos += 1
                continue
            a = item[1]
            if a == "end" or a.startswith("else"):
                return nodes, pos
            if a.startswith("range "):
                body, pos = parse(pos + 1)
                nodes.append(("range", body))
                pos += 1
            elif a.startswith("if "):
                branches, cond = [], a[3:]
                while True:
                    body, pos = parse(pos + 1)
                    branches.append((cond, body))
                    a = items[pos][1]
                    if a == "end":
                        nodes.append(("if", branches, []))
                        break
                    if a == "else":
                        body, pos = parse(pos + 1)
                        nodes.append(("if", branches, body))
                        break
                    cond = a[len("else if "):]
                pos += 1
            elif a.startswith("/*"):
                pos += 1
            else:
                nodes.append(("field", a))
                pos += 1
        return nodes, pos

    def cond_true(cond, message):
        m = re.fullmatch(r'(eq|ne) \.Role "(.*)"', cond)
        if not m:
            raise ValueError(f"unsupported condition {cond}")
        return (message["role"] == m.group(2)) == (m.group(1) == "eq")

    def run(nodes, message, out):
        for node in nodes:
            if node[0] == "text":
                out.append(node[1])
            elif node[0] == "field":
                out.append(message[{".Role": "role", ".Content": "content"}[node[1]]])
            elif node[0] == "range":
                for msg in messages:
                    run(node[1], msg, out)
            else:
                for cond, body in node[1]:
                    if cond_true(cond, message):
                        run(body, message, out)
                        break
                else:
                    run(node[2], message, out)

    nodes, _ = parse(0)
    out = []
    run(nodes, None, out)
    return "".join(out)


def read_modelfile(path):
    text = path.read_text(encoding="utf-8")
    template = re.search(r'^TEMPLATE """(.*?)"""$', text, re.S | re.M).group(1)
    system = re.search(r'^SYSTEM """(.*?)"""$', text, re.S | re.M)
    stops = re.findall(r'^PARAMETER stop "(.*)"$', text, re.M)
    frm = re.search(r"^FROM (.*)$", text, re.M).group(1)
    return template, (system.group(1) if system else None), stops, frm


# ---------------------------------------------------------------- main (TRL venv)

def tokenize_pair(tok, messages, answer):
    """TRL's rule for conversational pairs (as scripts/make_logps_fixture.py)."""
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(messages + [{"role": "assistant", "content": answer}], tokenize=False)
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    f = tok(full, add_special_tokens=False)["input_ids"]
    assert f[:len(p)] == p, "prompt is not a prefix"
    return p, f[len(p):]


def summed_logps(model, tok, pairs):
    import torch
    out = []
    for r in pairs:
        row = []
        for side in ("chosen", "rejected"):
            p, resp = tokenize_pair(tok, r["prompt"], r[side][0]["content"])
            ids = (p + resp)[:MAX_LENGTH]
            with torch.no_grad():
                logits = model(torch.tensor([ids])).logits[0].to(torch.float64)
            logp = torch.log_softmax(logits, -1)
            row.append(sum(logp[t - 1, ids[t]].item() for t in range(len(p), len(ids))))
        out.append(row)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--verdict", type=Path)
    ap.add_argument("--work", type=Path)
    ap.add_argument("--base", type=Path, help="the GGUF the run trained on")
    ap.add_argument("--llamacpp-python", help="python of the llama.cpp venv")
    ap.add_argument("--llamacpp", help=argparse.SUPPRESS)  # internal: run the llama.cpp part
    args = ap.parse_args()
    if args.llamacpp:
        return llamacpp_main(args)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; the adapter names a Hub id
    import torch
    import transformers
    import trl
    import peft
    from transformers import AutoModelForCausalLM, AutoTokenizer
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    transformers.logging.set_verbosity_error()
    work, verdict = args.work, str(args.verdict)
    db = work / "v.db"
    run_model = work / "run" / "model"
    report = {"versions": {"transformers": transformers.__version__, "peft": peft.__version__,
                           "trl": trl.__version__, "torch": torch.__version__}}

    pairs = [json.loads(l) for l in open(work / "pairs.jsonl", encoding="utf-8")]
    pairs = [p for p in pairs if p.get("split", "train") == "train"][:PAIRS]
    subset = work / "subset.jsonl"
    subset.write_text("".join(json.dumps({k: p[k] for k in ("prompt", "chosen", "rejected")},
                                         ensure_ascii=False) + "\n" for p in pairs), encoding="utf-8")

    # --- hf: transformers on the HF folder vs verdict logps on the same folder
    tok = AutoTokenizer.from_pretrained(str(run_model))
    tuned = AutoModelForCausalLM.from_pretrained(str(run_model), dtype=torch.float32).eval()
    hf_logps = summed_logps(tuned, tok, pairs)
    v_tuned = [json.loads(l) for l in sh([verdict, "logps", "--model", str(run_model), "--ref", str(args.base),
                                          "--beta", str(BETA), "--max-length", str(MAX_LENGTH), str(subset)]).splitlines()]
    v_logps = [[r["logps/chosen"], r["logps/rejected"]] for r in v_tuned]
    diff = max(abs(a - b) for x, y in zip(hf_logps, v_logps) for a, b in zip(x, y))
    scale = max(abs(a) for x in hf_logps for a in x)
    report["hf"] = {"max_abs_diff_summed_logp": diff, "largest_summed_logp": scale,
                    "transformers": hf_logps, "verdict": v_logps}

    # --- peft: adapter on the dequantized base vs the merged folder
    base_dir = work / "base-f32"
    if not (base_dir / "config.json").exists():
        # The same float32 conversion the training benchmark uses (trl_dpo.py, beside this file).
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from trl_dpo import convert
        convert(args.base, base_dir)
    adapter = run_model / "adapter"
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    from peft import PeftModel
    base_model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    with_adapter = PeftModel.from_pretrained(base_model, str(adapter)).eval()
    ids = tok.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                  tokenize=True, return_dict=False)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    x = torch.tensor([list(ids)])
    with torch.no_grad():
        merged_logits = tuned(x).logits[0]
        peft_logits = with_adapter(x).logits[0]
    with torch.no_grad(), with_adapter.disable_adapter():
        base_logits = with_adapter(x).logits[0]
    report["peft"] = {"base_model_name_or_path": cfg["base_model_name_or_path"],
                      "max_abs_diff_logits_peft_vs_merged": float((peft_logits - merged_logits).abs().max()),
                      "max_abs_diff_logits_tuned_vs_base": float((merged_logits - base_logits).abs().max()),
                      "largest_logit": float(merged_logits.abs().max()), "prompt_tokens": len(ids)}

    # --- trl: one DPOTrainer step (policy tuned, reference base) on the exported JSONL
    import datasets
    from trl import DPOConfig, DPOTrainer
    datasets.disable_progress_bars()
    dataset = datasets.load_dataset("json", data_files=str(subset), split="train", cache_dir=str(work / "ds"))
    policy = AutoModelForCausalLM.from_pretrained(str(run_model), dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    config = DPOConfig(output_dir=str(work / "trl"), per_device_train_batch_size=len(pairs),
                       gradient_accumulation_steps=1, max_steps=1, learning_rate=1e-9, beta=BETA,
                       loss_type=["sigmoid"], max_length=MAX_LENGTH, truncation_mode="keep_start",
                       bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=True, seed=0,
                       logging_steps=1, save_strategy="no", eval_strategy="no", report_to="none",
                       dataloader_num_workers=0, disable_dropout=True)
    trainer = DPOTrainer(model=policy, ref_model=reference, args=config, train_dataset=dataset,
                         processing_class=tok)
    trainer.train()
    logged = next(h for h in trainer.state.log_history if "loss" in h)
    v_loss = sum(r["loss"] for r in v_tuned) / len(v_tuned)
    report["trl"] = {"trl_loss": logged["loss"], "verdict_loss": v_loss,
                     "abs_diff": abs(logged["loss"] - v_loss), "pairs": len(pairs),
                     "trl_logps_chosen": logged.get("logps/chosen"),
                     "verdict_logps_chosen": sum(r["logps/chosen"] for r in v_tuned) / len(v_tuned)}

    # --- llamacpp: greedy tokens from the same prompt, verdict vs llama.cpp, per GGUF
    models = {"source (control)": str(args.base)}
    for g in sorted(run_model.glob("model.*.gguf")):
        models[g.name] = str(g)
    prompt_file = work / "prompt.jsonl"
    prompt_file.write_text(json.dumps({"prompt": PROMPT}) + "\n")
    verdict_ids, verdict_text = {}, {}
    for name, path in models.items():
        gen_db = work / f"gen-{len(verdict_ids)}.db"
        sh([verdict, "--db", str(gen_db), "--no-samples", "import", str(prompt_file)])
        sh([verdict, "--db", str(gen_db), "generate", "--model", path, "--candidates", "1", "--temperature", "0",
            "--repeat-penalty", "1", "--max-new-tokens", str(NEW_TOKENS), "--threads", os.environ.get("THREADS", "2")])
        text = sqlite3.connect(gen_db).execute("SELECT content FROM responses WHERE origin = 'model'").fetchone()[0]
        verdict_text[name] = text
        verdict_ids[name] = tok(text, add_special_tokens=False)["input_ids"]
    stop_ids = [tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    spec = {"models": models, "prompt_ids": list(ids), "verdict_ids": verdict_ids, "stop_ids": stop_ids}
    spec_file = work / "llamacpp.json"
    spec_file.write_text(json.dumps(spec))
    llama = json.loads(sh([args.llamacpp_python, __file__, "--llamacpp", str(spec_file)]).splitlines()[-1])
    report["llamacpp"] = {}
    for name in models:
        got = llama[name]
        same = got["ids"][:len(verdict_ids[name])] == verdict_ids[name][:len(got["ids"])]
        report["llamacpp"][name] = {"same_tokens": same and len(got["ids"]) == len(verdict_ids[name]),
                                    "tokens_llamacpp": len(got["ids"]), "tokens_verdict": len(verdict_ids[name]),
                                    "first_difference": got["first_difference"],
                                    "llamacpp_text": got["text"], "verdict_text": verdict_text[name]}

    # --- ollama: the Modelfile's Go template vs the Jinja template
    modelfile = work / "ollama" / "Modelfile"
    if modelfile.exists():
        template, system, stops, frm = read_modelfile(modelfile)
        conversations = [
            [{"role": "user", "content": "Hello"}],
            [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Why is the sky blue?"}],
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
             {"role": "user", "content": "Zähl bis drei.\nBitte."}],
        ]
        agree = 0
        for conv in conversations:
            msgs = conv if conv[0]["role"] == "system" or system is None else [{"role": "system", "content": system}] + conv
            if go_render(template, msgs) == tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True):
                agree += 1
        report["ollama"] = {"conversations": len(conversations), "equal_to_jinja": agree, "from": frm,
                            "stops": stops, "system": system,
                            "gguf_present": (modelfile.parent / frm).exists()}
    else:
        report["ollama"] = {"missing": str(modelfile)}

    # --- report
    h, p, t = report["hf"], report["peft"], report["trl"]
    print(f"versions: {report['versions']}")
    print(f"hf:       transformers loads {run_model}; summed log-probs of {len(pairs)} pairs x 2 answers vs "
          f"verdict logps: max abs diff {h['max_abs_diff_summed_logp']:.2e} (largest |logp| {h['largest_summed_logp']:.1f})")
    print(f"peft:     base_model_name_or_path = {p['base_model_name_or_path']!r}; PeftModel on the dequantized base vs "
          f"merged folder: max abs logit diff {p['max_abs_diff_logits_peft_vs_merged']:.2e} (the adapter moves logits by "
          f"{p['max_abs_diff_logits_tuned_vs_base']:.3f}; largest |logit| {p['largest_logit']:.1f})")
    print(f"trl:      one DPOTrainer step on {t['pairs']} exported pairs: loss {t['trl_loss']:.6f}, verdict logps "
          f"{t['verdict_loss']:.6f} (diff {t['abs_diff']:.1e}); logps/chosen {t['trl_logps_chosen']} vs "
          f"{t['verdict_logps_chosen']:.4f}")
    for name, r in report["llamacpp"].items():
        d = r["first_difference"]
        what = "same greedy tokens" if r["same_tokens"] else (
            f"first difference at token {d['index']}: llama.cpp {d['llamacpp_text']!r} vs verdict {d['verdict_text']!r}, "
            f"margin {d['margin_top_minus_verdicts']:.4f} (top1-top2 {d['margin_top1_minus_top2']:.4f})" if d else
            "same tokens, different length")
        print(f"llamacpp: {name}: {r['tokens_llamacpp']} vs {r['tokens_verdict']} tokens, {what}")
    o = report["ollama"]
    if "missing" not in o:
        print(f"ollama:   Modelfile FROM {o['from']} (present: {o['gguf_present']}), stops {o['stops']}; Go template "
              f"= Jinja on {o['equal_to_jinja']}/{o['conversations']} conversations")
    print(json.dumps(report, ensure_ascii=False))


if __name__ == "__main__":
    main()
