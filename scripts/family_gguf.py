"""Writes a tiny family's Hugging Face folder (config.json + model.safetensors) as a GGUF file, the
way llama.cpp's convert_hf_to_gguf.py does for that family: its architecture name and metadata
keys, its tensor names (the `gguf` package's TensorNameMap), q/k rows permuted for llama,
Gemma's norms stored as 1 + w, Llama 3's rope scaling as a `rope_freqs` tensor, Phi-3's fused
projections kept fused and its LongRoPE as `rope_factors_short`/`rope_factors_long` tensors with
`rope.scaling.attn_factor`. Weights stay float32, so verdict's logits from the GGUF must equal
transformers' from the folder.

One key goes beyond the converter: a Gemma whose `query_pre_attn_scalar` is not the one llama.cpp
assumes (the head size; hidden / heads for the 27B models) gets `{arch}.attention.scale` =
scalar^-1/2, which verdict reads (llama.cpp does not: it would run such a model with its own
scale). The gemma2 fixture sets 24 with a head size of 16 on purpose, to test the scalar.

Used by make_family_fixtures.py (`--gguf-only` rewrites just the GGUF files from the folders).
The vocabulary is the family's kind at the fixture's size (96 tokens): SentencePiece (`llama`)
for llama, mistral, gemma and phi3, byte-level BPE (`gpt2`) for llama3 and qwen; the logits do not
depend on it. The tokenizer fixtures (tests/fixtures/tokenizers) carry real-sized vocabularies.
"""

import json
import math
import pathlib

import gguf
import numpy as np
from safetensors.numpy import load_file

# fixture family -> (GGUF architecture, tokenizer model, pre-tokenizer, add_bos)
GGUF_FAMILIES = {
    "llama": ("llama", "llama", "default", True),
    "llama3": ("llama", "gpt2", "llama-bpe", True),
    "qwen2": ("qwen2", "gpt2", "qwen2", False),
    "mistral": ("llama", "llama", "default", True),
    "qwen3": ("qwen3", "gpt2", "qwen2", False),
    "gemma2": ("gemma2", "llama", "default", True),
    "gemma3": ("gemma3", "llama", "default", True),
    "phi3": ("phi3", "llama", "default", False),
}


def permute(w, n_head, n_head_kv=None):
    """convert_hf_to_gguf.py's LlamaModel.permute: rotary halves -> interleaved pairs."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_rope_factors(cfg):
    """convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors for rope_type llama3."""
    rope = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
    if rope.get("rope_type") != "llama3":
        return None
    base = rope.get("rope_theta", cfg.get("rope_theta", 10000.0))
    dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor = rope.get("factor", 8.0)
    low, high = rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old = rope.get("original_max_position_embeddings", 8192)
    low_wl, high_wl = old / low, old / high
    out = []
    for f in freqs:
        wl = 2 * math.pi / f
        if wl < high_wl:
            out.append(1.0)
        elif wl > low_wl:
            out.append(factor)
        else:
            smooth = (old / wl - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def tiny_vocab(kind, size, bos, eos, pad):
    """A vocabulary of `size` tokens in the tokenizer `kind`'s form: (tokens, types, scores, merges)."""
    specials = {pad: "<pad>" if kind == "gpt2" else "<unk>", bos: "<s>", eos: "</s>"}
    # llama.cpp needs merges for `gpt2` and a newline token for `llama` (SentencePiece).
    merged = ["Ġt", "Ġa", "he", "in"]
    if kind == "gpt2":
        # GPT-2's byte-to-unicode table: printable ASCII maps to itself, the space to "Ġ", "\n" to "Ċ".
        chars = ["Ġ", "Ċ"] + [chr(c) for c in range(33, 127)]
    else:
        chars = ["▁", "<0x0A>"] + [chr(c) for c in range(33, 127)]
    chars = chars[: size - len(specials) - len(merged)] + merged
    tokens, types, scores = [], [], []
    it = iter(chars)
    for i in range(size):
        if i in specials:
            tokens.append(specials[i])
            types.append(gguf.TokenType.CONTROL if i != pad or kind == "gpt2" else gguf.TokenType.UNKNOWN)
        else:
            tokens.append(next(it))
            types.append(gguf.TokenType.BYTE if tokens[-1] == "<0x0A>" else gguf.TokenType.NORMAL)
        scores.append(-float(i))
    return tokens, types, scores, [f"{m[:-1]} {m[-1]}" for m in merged]


def write_gguf(folder: pathlib.Path, family: str, out: pathlib.Path):
    arch, tok_kind, pre, add_bos = GGUF_FAMILIES[family]
    cfg = json.loads((folder / "config.json").read_text())
    tensors = load_file(str(folder / "model.safetensors"))
    n_layers, heads = cfg["num_hidden_layers"], cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads", heads)
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    rope = cfg.get("rope_parameters") or {}
    # Gemma 3: the global layers' theta; llama.cpp fixes the sliding layers' at 10000.
    rope = rope.get("full_attention", rope)
    theta = rope.get("rope_theta", cfg.get("rope_theta"))

    w = gguf.GGUFWriter(str(out), arch)
    w.add_name(f"verdict-family-{family}")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_block_count(n_layers)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_dimension_count(int(head_dim * rope.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0))))
    if theta is not None:
        w.add_rope_freq_base(theta)
    w.add_vocab_size(cfg["vocab_size"])
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    if family == "phi3":
        orig = cfg.get("original_max_position_embeddings", cfg["max_position_embeddings"])
        w.add_rope_scaling_orig_ctx_len(orig)
        if rope.get("rope_type") == "longrope":
            # convert_hf_to_gguf.py's Phi3MiniModel: the attention factor from max / original.
            scale = cfg["max_position_embeddings"] / orig
            w.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(scale) / math.log(orig)) if scale > 1.0 else 1.0)
    if family.startswith("gemma"):
        if cfg.get("sliding_window"):
            w.add_sliding_window(cfg["sliding_window"])
        llama_cpp_scalar = cfg["hidden_size"] // heads if n_layers in (46, 62) else head_dim
        if cfg.get("query_pre_attn_scalar", llama_cpp_scalar) != llama_cpp_scalar:
            w.add_float32(f"{arch}.attention.scale", cfg["query_pre_attn_scalar"] ** -0.5)
        if cfg.get("attn_logit_softcapping"):
            w.add_attn_logit_softcapping(cfg["attn_logit_softcapping"])
        if cfg.get("final_logit_softcapping"):
            w.add_final_logit_softcapping(cfg["final_logit_softcapping"])
        if family == "gemma3" and cfg.get("layer_types"):
            # llama.cpp hard-codes every sixth layer global for gemma3; the key states the layout.
            w.add_sliding_window_pattern([t == "sliding_attention" for t in cfg["layer_types"]])

    tokens, types, scores, merges = tiny_vocab(tok_kind, cfg["vocab_size"], cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"])
    if family == "phi3":
        # llama.cpp sets attributes on Phi-3's `<|endoftext|>` by text and fails to load without it.
        tokens[-1], types[-1] = "<|endoftext|>", gguf.TokenType.CONTROL
    w.add_tokenizer_model(tok_kind)
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    if tok_kind == "llama":
        w.add_token_scores(scores)
        w.add_unk_token_id(0)
    else:
        w.add_token_merges(merges)
    w.add_bos_token_id(cfg["bos_token_id"])
    w.add_eos_token_id(cfg["eos_token_id"])
    w.add_pad_token_id(cfg["pad_token_id"])
    w.add_add_bos_token(add_bos)
    w.add_add_eos_token(False)

    names = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, arch.upper()), n_layers)
    factors = llama3_rope_factors(cfg)
    if factors is not None:
        w.add_tensor("rope_freqs.weight", factors)
    if family == "phi3" and rope.get("rope_type") == "longrope":
        w.add_tensor("rope_factors_long.weight", np.array(rope["long_factor"], dtype=np.float32))
        w.add_tensor("rope_factors_short.weight", np.array(rope["short_factor"], dtype=np.float32))
    for hf_name in sorted(tensors):
        data = tensors[hf_name].astype(np.float32)
        if arch == "llama" and hf_name.endswith("q_proj.weight"):
            data = permute(data, heads, heads)
        if arch == "llama" and hf_name.endswith("k_proj.weight"):
            data = permute(data, heads, kv_heads)
        if family.startswith("gemma") and hf_name.endswith("norm.weight"):
            data = data + 1.0  # Gemma multiplies by (1 + w); llama.cpp stores the sum.
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise SystemExit(f"{family}: no GGUF name for tensor {hf_name}")
        w.add_tensor(name, np.ascontiguousarray(data))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
