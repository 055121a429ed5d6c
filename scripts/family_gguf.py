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
The vocabulary is the family's tokenizer fixture (tests/fixtures/tokenizers: SentencePiece
`llama` for llama, mistral, gemma and phi3, byte-level BPE `gpt2` with llama-bpe or qwen2
pre-tokenization for llama3 and qwen), the same one the folder's tokenizer.json holds, and the
folder's chat_template.jinja becomes `tokenizer.chat_template`.
"""

import json
import math
import pathlib

import gguf
import numpy as np
from safetensors.numpy import load_file

TOKENIZERS = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "tokenizers"

# fixture family -> its tokenizer fixture (tests/fixtures/tokenizers/)
FAMILY_TOKENIZERS = {
    "llama": "llama-spm",
    "llama3": "llama-bpe",
    "qwen2": "qwen2",
    "mistral": "llama-spm",
    "qwen3": "qwen2",
    "gemma2": "gemma",
    "gemma3": "gemma",
    "phi3": "llama-spm",
    "mistral_window": "llama-spm",
}

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


def write_vocabulary(w, family, cfg, folder):
    """The `tokenizer.ggml.*` keys of the family's tokenizer fixture (tests/fixtures/tokenizers/,
    written the way llama.cpp's converter writes that kind), the tokens transformers adds past the
    SentencePiece pieces (Gemma's <pad>, <mask>) appended as control tokens so the list covers the
    embedding rows, and the folder's chat template."""
    reader = gguf.GGUFReader(str(TOKENIZERS / FAMILY_TOKENIZERS[family] / "tokenizer.gguf"))
    get = lambda key: reader.fields[key].contents() if key in reader.fields else None  # noqa: E731
    tokens, types = list(get("tokenizer.ggml.tokens")), list(get("tokenizer.ggml.token_type"))
    scores = get("tokenizer.ggml.scores")
    added = json.loads((folder / "tokenizer.json").read_text())["added_tokens"]
    for t in sorted((t for t in added if t["id"] >= len(tokens)), key=lambda t: t["id"]):
        assert t["id"] == len(tokens), f"{family}: added token ids leave a gap"
        tokens.append(t["content"])
        types.append(gguf.TokenType.CONTROL)
        if scores is not None:
            scores = list(scores) + [0.0]
    assert len(tokens) == cfg["vocab_size"], f"{family}: {len(tokens)} tokens for vocab {cfg['vocab_size']}"
    w.add_tokenizer_model(get("tokenizer.ggml.model"))
    w.add_tokenizer_pre(get("tokenizer.ggml.pre"))
    w.add_token_list(tokens)
    w.add_token_types(types)
    if scores is not None:
        w.add_token_scores(scores)
    if get("tokenizer.ggml.merges") is not None:
        w.add_token_merges(get("tokenizer.ggml.merges"))
    for key, add in [
        ("tokenizer.ggml.unknown_token_id", w.add_unk_token_id),
        ("tokenizer.ggml.bos_token_id", w.add_bos_token_id),
        ("tokenizer.ggml.eos_token_id", w.add_eos_token_id),
        ("tokenizer.ggml.add_bos_token", w.add_add_bos_token),
        ("tokenizer.ggml.add_eos_token", w.add_add_eos_token),
        ("tokenizer.ggml.add_space_prefix", w.add_add_space_prefix),
    ]:
        if get(key) is not None:
            add(get(key))
    w.add_pad_token_id(cfg["pad_token_id"])
    template = folder / "chat_template.jinja"
    if template.exists():
        w.add_chat_template(template.read_text())


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

    write_vocabulary(w, family, cfg, folder)

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
