#!/usr/bin/env python3
"""Writes tests/fixtures/families/: one tiny random-weight model per family, in the family's real
layout, saved by transformers 5 as a Hugging Face folder, with the logits transformers computes.

Usage: /work/venvs/trl/bin/python scripts/make_family_fixtures.py   (transformers 5.x, torch)

Each folder holds config.json and model.safetensors exactly as `save_pretrained` writes them (so
config.json has transformers 5's `rope_parameters`, not a top-level `rope_theta`) and
reference.json: the token ids, transformers' logits for them (eager attention, float32) and the
log-prob of each next token; and one training step's loss and gradient norm (SFT on two
prompt/response pairs cut from the tokens: the mean negative log-prob of the response tokens),
computed in float64, for the full model and with LoRA adapters (rank 2, alpha 4, on every
projection; A and B drawn here and saved as lora.safetensors under verdict's names, with B
non-zero so the adapters change the logits). The Rust tests (src/model/tests_families.rs) load
every folder and must match the logits within 1e-4, and the step's loss and gradient norm within
1e-4. Weights are drawn larger than transformers' init (std 0.2, norms 1 +- 0.2) so the logits
spread over several nats and a wrong rotary table, norm or bias shows.

Settings chosen to exercise each family's math: Gemma 2's query_pre_attn_scalar differs from the
head size, Phi-3 rotates half of each head with LongRoPE short factors, `mistral_window` and the
Gemma layers attend over 8 positions of the 28.

Each folder also holds model.gguf: the same weights written as llama.cpp's converter writes that
family (scripts/family_gguf.py), f32, so verdict's GGUF logits must match the same reference.
`--gguf-only` rewrites just the GGUF files from the saved folders.

Shape: hidden 32, 2 layers, 4 query heads of 16 (q width 64, not the hidden size), 2 KV heads,
MLP 64, vocabulary 96, 256 positions; about 110 KB a family.
"""

import json
import pathlib
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from family_gguf import GGUF_FAMILIES, write_gguf  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "families"
VOCAB = 96
TOKENS = [1, 5, 9, 3, 7, 2, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 4, 6, 8, 10, 12, 14, 16, 18, 95, 60, 61, 62]

COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)

# name -> (config class, extra settings). Rope thetas differ from 10000 on purpose.
FAMILIES = {
    "llama": (transformers.LlamaConfig, dict(rope_theta=100000.0, tie_word_embeddings=True)),
    "llama3": (
        transformers.LlamaConfig,
        dict(
            rope_theta=500000.0,
            rope_scaling=dict(
                rope_type="llama3",
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=64,
            ),
        ),
    ),
    "qwen2": (
        transformers.Qwen2Config,
        dict(rope_theta=1000000.0, use_sliding_window=False, sliding_window=32768, max_window_layers=2),
    ),
    "mistral": (transformers.MistralConfig, dict(rope_theta=1000000.0, sliding_window=None)),
    "qwen3": (transformers.Qwen3Config, dict(rope_theta=1000000.0, tie_word_embeddings=True)),
    "gemma2": (
        transformers.Gemma2Config,
        dict(query_pre_attn_scalar=24, sliding_window=8, final_logit_softcapping=30.0, attn_logit_softcapping=50.0),
    ),
    "gemma3": (
        transformers.Gemma3TextConfig,
        dict(query_pre_attn_scalar=16, sliding_window=8, layer_types=["sliding_attention", "full_attention"]),
    ),
    "phi3": (
        transformers.Phi3Config,
        dict(
            original_max_position_embeddings=64,
            pad_token_id=0,
            # transformers checks the factors' count against hidden / heads, not head_dim.
            head_dim=8,
            rope_parameters=dict(
                rope_type="longrope",
                rope_theta=10000.0,
                partial_rotary_factor=0.5,
                short_factor=[1.0, 2.5],
                long_factor=[1.0, 4.0],
            ),
        ),
    ),
    "mistral_window": (transformers.MistralConfig, dict(rope_theta=1000000.0, sliding_window=8)),
}

# The training step's pairs: (prompt, response) cut from TOKENS.
STEP_PAIRS = [(TOKENS[:6], TOKENS[6:20]), (TOKENS[:3], TOKENS[20:28])]
LORA_RANK, LORA_ALPHA = 2, 4.0


def projections(model):
    """(module, [(verdict's adapter name, output rows)]) for every projection; Phi-3's fused
    ones carry one adapter per part, as verdict splits them."""
    cfg = model.config
    hd = cfg.head_dim
    qd, kvd = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
    out = []
    for i, layer in enumerate(model.model.layers):
        p = f"model.layers.{i}"
        att, mlp = layer.self_attn, layer.mlp
        if hasattr(att, "qkv_proj"):
            out.append((att.qkv_proj, [(f"{p}.self_attn.{n}_proj", r) for n, r in (("q", qd), ("k", kvd), ("v", kvd))]))
        else:
            for n in "qkv":
                m = getattr(att, f"{n}_proj")
                out.append((m, [(f"{p}.self_attn.{n}_proj", m.out_features)]))
        out.append((att.o_proj, [(f"{p}.self_attn.o_proj", att.o_proj.out_features)]))
        if hasattr(mlp, "gate_up_proj"):
            half = mlp.gate_up_proj.out_features // 2
            out.append((mlp.gate_up_proj, [(f"{p}.mlp.gate_proj", half), (f"{p}.mlp.up_proj", half)]))
        else:
            for n in ("gate", "up"):
                m = getattr(mlp, f"{n}_proj")
                out.append((m, [(f"{p}.mlp.{n}_proj", m.out_features)]))
        out.append((mlp.down_proj, [(f"{p}.mlp.down_proj", mlp.down_proj.out_features)]))
    return out


def sft_loss(model):
    """Mean negative log-prob of the response tokens of STEP_PAIRS (one row each)."""
    total, count = 0.0, 0
    for prompt, response in STEP_PAIRS:
        ids = torch.tensor([prompt + response])
        logp = torch.log_softmax(model(ids).logits[0].double(), dim=-1)
        for t in range(len(prompt), len(prompt) + len(response)):
            total = total - logp[t - 1, ids[0, t]]
            count += 1
    return total / count


def grad_norm(params):
    return torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params if p.grad is not None)).item()


def train_steps(folder, seed):
    """The full and the LoRA step's loss and gradient norm, in float64."""
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", dtype=torch.float64)
    model.eval()
    loss = sft_loss(model)
    loss.backward()
    full = {"loss": loss.item(), "grad_norm": grad_norm(model.parameters())}
    model.zero_grad()
    for p in model.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    adapters, saved = [], {}
    for module, parts in projections(model):
        pieces = []
        for name, rows in parts:
            a = (0.3 * torch.randn(LORA_RANK, module.in_features, generator=g)).double().requires_grad_(True)
            b = (0.3 * torch.randn(rows, LORA_RANK, generator=g)).double().requires_grad_(True)
            saved[f"{name}.lora_A.weight"] = a.detach().float().contiguous()
            saved[f"{name}.lora_B.weight"] = b.detach().float().contiguous()
            # verdict computes in float32 from these float32 values: the reference starts from them too.
            a.data, b.data = a.data.float().double(), b.data.float().double()
            pieces.append((a, b))
            adapters += [a, b]
        scale = LORA_ALPHA / LORA_RANK

        def hook(_m, inputs, output, pieces=pieces, scale=scale):
            x = inputs[0]
            return output + torch.cat([(x @ a.T) @ b.T for a, b in pieces], dim=-1) * scale

        module.register_forward_hook(hook)
    loss = sft_loss(model)
    loss.backward()
    lora = {"loss": loss.item(), "grad_norm": grad_norm(adapters), "rank": LORA_RANK, "alpha": LORA_ALPHA}
    save_file(saved, folder / "lora.safetensors")
    return {"pairs": [[p, r] for p, r in STEP_PAIRS], "full": full, "lora": lora}


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and "norm" in name:
                # Gemma's norms multiply by (1 + w): centre those on 0, the others on 1.
                centre = 0.0 if "gemma" in type(model).__name__.lower() else 1.0
                p.copy_(centre + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))


def main():
    if "--gguf-only" in sys.argv:
        for name in [n for n in FAMILIES if n in GGUF_FAMILIES]:
            write_gguf(OUT / name, name, OUT / name / "model.gguf")
        return
    torch.manual_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    for i, (name, (cls, extra)) in enumerate(FAMILIES.items()):
        settings = {**COMMON, **extra}
        cfg = cls(**settings)
        cfg._attn_implementation = "eager"
        model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.float32)
        model.eval()
        randomize(model, 1000 + i)
        if getattr(cfg, "tie_word_embeddings", False):
            model.tie_weights()
        folder = OUT / name
        model.save_pretrained(folder)
        # Reload what was saved, as a user's transformers would, and compute the reference.
        again = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32)
        again.eval()
        ids = torch.tensor([TOKENS])
        with torch.no_grad():
            logits = again(ids).logits[0].float()
        logp = torch.log_softmax(logits, dim=-1)
        next_logps = [logp[t, TOKENS[t + 1]].item() for t in range(len(TOKENS) - 1)]
        reference = {
            "family": name,
            "architecture": again.config.architectures[0],
            "transformers": transformers.__version__,
            "tokens": TOKENS,
            "logits": [[round(x, 6) for x in row] for row in logits.tolist()],
            "next_token_logps": [round(x, 6) for x in next_logps],
            "sft_step": train_steps(folder, 2000 + i),
        }
        (folder / "reference.json").write_text(json.dumps(reference) + "\n")
        for extra_file in ["generation_config.json"]:
            (folder / extra_file).unlink(missing_ok=True)
        if name in GGUF_FAMILIES:  # mistral_window's GGUF would be mistral's layout again
            write_gguf(folder, name, folder / "model.gguf")
        spread = (logits.max() - logits.min()).item()
        print(f"{name}: {again.config.architectures[0]}, logits spread {spread:.1f}", file=sys.stderr)


if __name__ == "__main__":
    main()
