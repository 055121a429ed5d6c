#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizers/: one small vocabulary per GGUF pre-tokenizer type the model
families use, each as a Hugging Face tokenizer (tokenizer.json + tokenizer_config.json, saved by
transformers 5) and as a vocabulary-only GGUF (tokenizer.gguf, the `tokenizer.ggml.*` keys
llama.cpp's converter writes), with the ids transformers gives for the test strings.

Usage: /work/venvs/trl/bin/python scripts/make_tokenizer_fixtures.py   (transformers 5, tokenizers,
sentencepiece, gguf)

No package on the registries ships these families' real vocabularies without the hub, so each
vocabulary is trained here on the test strings with the family's own pieces:
  llama-bpe  Llama 3: byte-level BPE, Llama 3's split regex, <|begin_of_text|> added in front.
  qwen2      Qwen 2/2.5/3: byte-level BPE, NFC, Qwen's split regex (one digit a token), no BOS.
  llama-spm  Llama 2, Mistral, Phi-3: SentencePiece BPE with byte fallback and a prefix space,
             converted by transformers' LlamaTokenizer; <s> in front.
  gemma      Gemma 2/3: SentencePiece BPE with byte fallback, no prefix space, <bos> in front.
reference.json holds, per string, transformers' ids with `add_special_tokens` on and off.
"""

import json
import pathlib
import sys
import tempfile

import gguf
import sentencepiece as spm
import tokenizers
import transformers
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "tokenizers"

REGEX_LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
REGEX_QWEN2 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

EXTRA = [
    "Der schnelle braune Fuchs springt über den faulen Hund. Die Größe der Straße überrascht.",
    "El rápido zorro marrón salta sobre el perro perezoso. ¿Qué hora es? Mañana.",
    "Le renard brun rapide saute par-dessus le chien paresseux. C'était l'été à Nice.",
    "我们今天去公园散步，天气非常好。我们明天去学校。今天天气很好。",
    "東京タワーは日本の有名な観光地です。ひらがなとカタカナ。日本語の文章です。",
    "مرحبا بالعالم! كيف حالك اليوم؟ العالم جميل اليوم.",
    "Emoji 😀🎉👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ and more text with the quick brown fox.",
    "def main():\n    return fib(10) + fib(20)\n\nfn main() { println!(\"hi\"); }\n",
]


def test_strings():
    cases = json.loads((ROOT / "tests" / "fixtures" / "model" / "smollm2_tokens.json").read_text())["cases"]
    return [c["text"] for c in cases]


def corpus():
    return (test_strings() + EXTRA) * 20


def byte_level(name, regex, nfc, specials, bos):
    tok = tokenizers.Tokenizer(models.BPE())
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=specials[1] if bos else specials[0],
        add_bos_token=bool(bos),
    )
    return fast


def sentencepiece(name, prefix, bos_piece, eos_piece, user_defined, cls):
    tmp = pathlib.Path(tempfile.mkdtemp())
    (tmp / "corpus.txt").write_text("\n".join(corpus()) + "\n")
    spm.SentencePieceTrainer.train(
        input=str(tmp / "corpus.txt"),
        model_prefix=str(tmp / "sp"),
        vocab_size=1200,
        model_type="bpe",
        byte_fallback=True,
        add_dummy_prefix=prefix,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        split_digits=True,
        hard_vocab_limit=False,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        bos_piece=bos_piece,
        eos_piece=eos_piece,
        user_defined_symbols=user_defined,
        allow_whitespace_only_pieces=True,
        minloglevel=2,
    )
    folder = tmp / "hf"
    folder.mkdir()
    (folder / "tokenizer.model").write_bytes((tmp / "sp.model").read_bytes())
    fast = cls.from_pretrained(folder, add_bos_token=True, add_eos_token=False)
    return fast, tmp / "sp.model"


def gguf_from_byte_level(fast, pre, add_bos, path):
    tj = json.loads(fast.backend_tokenizer.to_str())
    vocab = {**tj["model"]["vocab"], **{t["content"]: t["id"] for t in tj["added_tokens"]}}
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    specials = {t["id"] for t in tj["added_tokens"] if t["special"]}
    types = [gguf.TokenType.CONTROL if i in specials else gguf.TokenType.NORMAL for i in range(len(tokens))]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(f"verdict-tokenizer-{pre}")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    if fast.bos_token_id is not None:
        w.add_bos_token_id(fast.bos_token_id)
    w.add_eos_token_id(fast.eos_token_id)
    w.add_add_bos_token(add_bos)
    w.add_add_eos_token(False)
    finish(w)


def gguf_from_sentencepiece(model_file, add_space_prefix, path):
    """llama.cpp's convert_hf_to_gguf.py `_create_vocab_sentencepiece`: pieces, scores and types."""
    from sentencepiece import sentencepiece_model_pb2

    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(pathlib.Path(model_file).read_bytes())
    # SentencePiece's piece types are numbered as GGUF's token types (1 normal … 6 byte).
    tokens = [p.piece for p in proto.pieces]
    scores = [p.score for p in proto.pieces]
    types = [p.type for p in proto.pieces]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("verdict-tokenizer-spm")
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(sp.unk_id())
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(add_space_prefix)
    finish(w)


def finish(w):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    made = {
        "llama-bpe": (
            byte_level(
                "llama-bpe",
                REGEX_LLAMA3,
                False,
                ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
                "<|begin_of_text|>",
            ),
            None,
        ),
        "qwen2": (byte_level("qwen2", REGEX_QWEN2, True, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], None), None),
        "llama-spm": sentencepiece("llama-spm", True, "<s>", "</s>", [], transformers.LlamaTokenizer),
        "gemma": sentencepiece(
            "gemma", False, "<bos>", "<eos>", ["<start_of_turn>", "<end_of_turn>"], transformers.GemmaTokenizer
        ),
    }
    for name, (fast, sp_model) in made.items():
        folder = OUT / name
        folder.mkdir(parents=True, exist_ok=True)
        fast.save_pretrained(folder)
        for extra in ["tokenizer.model", "special_tokens_map.json"]:
            (folder / extra).unlink(missing_ok=True)
        config = json.loads((folder / "tokenizer_config.json").read_text())
        config.pop("vocab_file", None)  # a temporary path
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        again = transformers.AutoTokenizer.from_pretrained(folder)
        if sp_model is None:
            gguf_from_byte_level(again, name, again.bos_token_id is not None and name == "llama-bpe", folder / "tokenizer.gguf")
        else:
            gguf_from_sentencepiece(sp_model, name != "gemma", folder / "tokenizer.gguf")
        cases = []
        for text in test_strings():
            cases.append(
                {
                    "text": text,
                    "ids": again(text)["input_ids"],
                    "ids_no_specials": again(text, add_special_tokens=False)["input_ids"],
                }
            )
        reference = {"type": name, "transformers": transformers.__version__, "vocab": len(again), "cases": cases}
        (folder / "reference.json").write_text(json.dumps(reference, ensure_ascii=False, indent=0) + "\n")
        size = sum(f.stat().st_size for f in folder.iterdir())
        print(f"{name}: {type(again).__name__}, {len(again)} tokens, {size // 1024} KB", file=sys.stderr)


if __name__ == "__main__":
    main()
