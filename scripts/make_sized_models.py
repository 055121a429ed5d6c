#!/usr/bin/env python3
"""Random-weight models of real configurations, for memory and speed benchmarks.

    scripts/make_sized_models.py SIZE [--cache DIR]   # prints the folder it made (or found)
    scripts/make_sized_models.py --list

SIZE is one of the names below (Qwen2.5-0.5B, Llama-3.2-1B, Qwen2.5-1.5B, ...). The folder is an
HF model directory (config.json, model.safetensors in bf16, tokenizer files) under
`--cache` (default ~/.cache/verdict/sized-models), made on demand and never committed. Only the
shapes are real: the config is the published one, the weights are normal(0, 0.02) with unit
norms, drawn from a fixed seed. transformers builds the model on the meta device (no memory) to
list the parameters it expects, so the names and shapes are exactly what transformers (and TRL +
PEFT) load. The tokenizer is SmolLM2's (tests/fixtures/model/smollm2_tokenizer, 49,152 tokens,
ChatML template): its ids are all below every config's vocabulary size, and the logits still
span the config's whole vocabulary (151,936 for Qwen2.5, 128,256 for Llama 3.2), which is what
the memory of a training step depends on.

Run with the TRL venv's python (torch, transformers, safetensors): /work/venvs/trl/bin/python.
"""

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER = ROOT / "tests/fixtures/model/smollm2_tokenizer"

# The published config.json of each model (Hugging Face, as of 2026), keys that change shapes
# or numerics kept verbatim.
CONFIGS = {
    "Qwen2.5-0.5B": {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": True,
        "hidden_act": "silu",
        "sliding_window": 32768,
        "max_window_layers": 24,
        "use_sliding_window": False,
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151643,
        "torch_dtype": "bfloat16",
    },
    "Llama-3.2-1B": {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-05,
        "rope_theta": 500000.0,
        "rope_scaling": {
            "factor": 32.0,
            "high_freq_factor": 4.0,
            "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3",
        },
        "tie_word_embeddings": True,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 128000,
        "eos_token_id": 128001,
        "torch_dtype": "bfloat16",
    },
    "Qwen2.5-1.5B": {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": True,
        "hidden_act": "silu",
        "sliding_window": 131072,
        "max_window_layers": 28,
        "use_sliding_window": False,
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151643,
        "torch_dtype": "bfloat16",
    },
}
# Llama-3.2-3B: the 1B's layout, wider and deeper.
CONFIGS["Llama-3.2-3B"] = {
    **CONFIGS["Llama-3.2-1B"],
    "hidden_size": 3072,
    "num_hidden_layers": 28,
    "num_attention_heads": 24,
    "head_dim": 128,
}
# Llama-3.1-8B: the published config (hidden 4096, 32 layers, 8 kv heads, untied 128k head).
CONFIGS["Llama-3.1-8B"] = {
    **CONFIGS["Llama-3.2-1B"],
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "head_dim": 128,
    "rope_scaling": {**CONFIGS["Llama-3.2-1B"]["rope_scaling"], "factor": 8.0},
    "tie_word_embeddings": False,
}

# Weights above this many bytes are written as shards of about this size with an index, as the
# hub stores them, so making an 8B model holds one shard in memory, not 16 GB.
SHARD_BYTES = 4 << 30


def make(size: str, cache: Path) -> Path:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    out = cache / f"{size}-random"
    made = (out / "model.safetensors").exists() or (out / "model.safetensors.index.json").exists()
    if made and (out / "config.json").exists():
        return out
    tmp = cache / f".{size}-random.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cfg_dict = dict(CONFIGS[size])
    config = AutoConfig.for_model(**cfg_dict)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    gen = torch.Generator().manual_seed(20261203)
    params = []
    seen = set()
    for name, p in model.state_dict(keep_vars=True).items():
        if config.tie_word_embeddings and name == "lm_head.weight":
            continue
        if id(p) in seen:
            continue
        seen.add(id(p))
        params.append((name, p.shape))
    total = sum(2 * torch.Size(shape).numel() for _, shape in params)
    shards = [[]]
    for name, shape in params:
        if total > SHARD_BYTES and sum(2 * torch.Size(s).numel() for _, s in shards[-1]) >= SHARD_BYTES:
            shards.append([])
        shards[-1].append((name, shape))
    weight_map = {}
    for i, shard in enumerate(shards):
        tensors = {}
        for name, shape in shard:
            if name.endswith("norm.weight"):
                t = torch.ones(shape, dtype=torch.bfloat16)
            elif name.endswith(".bias"):
                t = torch.zeros(shape, dtype=torch.bfloat16)
            else:
                t = (torch.randn(shape, generator=gen, dtype=torch.float32) * 0.02).to(torch.bfloat16)
            tensors[name] = t.contiguous()
        file = "model.safetensors" if len(shards) == 1 else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(tensors, str(tmp / file), metadata={"format": "pt"})
        weight_map.update({name: file for name in tensors})
        del tensors
    if len(shards) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    (tmp / "config.json").write_text(json.dumps(cfg_dict, indent=2))
    for f in ("tokenizer.json", "chat_template.jinja"):
        shutil.copy(TOKENIZER / f, tmp / f)
    tok_cfg = json.loads((TOKENIZER / "tokenizer_config.json").read_text())
    tok_cfg.setdefault("chat_template", (TOKENIZER / "chat_template.jinja").read_text())
    (tmp / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("size", nargs="?", choices=sorted(CONFIGS))
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache/verdict/sized-models")
    ap.add_argument("--list", action="store_true", help="print the sizes this script knows")
    a = ap.parse_args()
    if a.list or not a.size:
        print("\n".join(CONFIGS))
        return
    print(make(a.size, a.cache))


if __name__ == "__main__":
    sys.exit(main())
