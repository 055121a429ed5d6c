#!/usr/bin/env python3
"""Writes logps.json into each tests/fixtures/families/<family>/: transformers' summed answer
log-probs of the multilingual pairs of tests/fixtures/logps/pairs.jsonl under that family's tiny model.

Usage: /work/venvs/trl/bin/python scripts/make_family_logps.py   (transformers 5.x, torch)

Each family's HF folder (made by scripts/make_family_fixtures.py) is loaded by transformers in
float32 with its own tokenizer and chat template. The pairs are tokenized by TRL's rule, as
verdict does (`tokenize_pair` below: prompt text and answer text tokenized separately), cut to
MAX_LENGTH tokens keeping the start (the tiny models' 256 positions; the longer pairs lose their
answers' ends, some all of them), and each response's log-probs summed in
float64. A family without a chat template (llama) gets no logps.json: verdict has no fallback
template and refuses, naming the missing template (the Rust test checks that). A pair the template
refuses (Gemma's raise on a system message) or renders with the prompt no prefix of the answered
chat (Mistral's system message moves into the last user turn) is stored with its `template_error`.

The Rust test (src/model/tests_families_logps.rs) runs `verdict logps`'s engine on the HF folder
and on model.gguf of each family and must match within 1e-3 relative.
"""

import datetime
import json
import pathlib
import sys

import jinja2
import torch
import transformers
import transformers.utils.chat_template_utils
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from make_logps_fixture import summed_logp  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
FAMILIES = ROOT / "tests" / "fixtures" / "families"
PAIRS = ROOT / "tests" / "fixtures" / "logps" / "pairs.jsonl"
MAX_LENGTH = 256
# The day the templates print: Llama 3's puts today's date (strftime_now) into the system turn,
# which would change the prompt tokens, and so the log-probs, from one day to the next. The Rust
# test renders with the same clock (FIXTURE_NOW: 2026-01-01 00:00 UTC).
FIXTURE_NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)



class _FixedDatetime(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return FIXTURE_NOW


# transformers' strftime_now calls `datetime.now()` as imported into this module.
transformers.utils.chat_template_utils.datetime = _FixedDatetime


def tokenize_pair(tok, messages, answer):
    """TRL 1.16's DPO tokenization of conversational data: the prompt text (chat template with the
    generation prompt) and the answer's text (the answered chat's rendering after the prompt's)
    are tokenized separately, no special tokens added. (With SentencePiece vocabularies the
    answer's first piece may differ from what tokenizing the whole chat gives.)"""
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(messages + [{"role": "assistant", "content": answer}], tokenize=False)
    if not full.startswith(prompt):
        raise ValueError(f"the prompt is not a prefix of the answered chat: {prompt!r}")
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    return ids(prompt), ids(full[len(prompt):])


def main():
    pairs = [json.loads(line) for line in PAIRS.read_text(encoding="utf-8").splitlines() if line.strip()]
    for folder in sorted(p for p in FAMILIES.iterdir() if (p / "config.json").is_file()):
        tok = AutoTokenizer.from_pretrained(str(folder))
        if not tok.chat_template:
            (folder / "logps.json").unlink(missing_ok=True)
            print(f"{folder.name}: no chat template, no logps.json")
            continue
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, attn_implementation="eager")
        model.eval()
        rows = []
        for p in pairs:
            try:
                prompt_ids, chosen_ids = tokenize_pair(tok, p["prompt"], p["chosen"][0]["content"])
                prompt_again, rejected_ids = tokenize_pair(tok, p["prompt"], p["rejected"][0]["content"])
            except (jinja2.exceptions.TemplateError, ValueError) as e:
                # Gemma's templates refuse a system message, Mistral's moves it into the last user
                # turn (so the prompt is no prefix of the answered chat): verdict must refuse too.
                rows.append({"id": p["id"], "template_error": str(e)})
                print(f"{folder.name} {p['id']}: no response tokens: {e}")
                continue
            assert prompt_ids == prompt_again
            chosen, chosen_kept = summed_logp(model, prompt_ids, chosen_ids, MAX_LENGTH)
            rejected, rejected_kept = summed_logp(model, prompt_ids, rejected_ids, MAX_LENGTH)
            rows.append({
                "id": p["id"], "chosen_logp": chosen, "rejected_logp": rejected,
                "prompt_tokens": len(prompt_ids),
                "chosen_tokens_scored": chosen_kept, "rejected_tokens_scored": rejected_kept,
            })
            print(f"{folder.name} {p['id']}: prompt {len(prompt_ids)}, chosen {chosen:.4f} ({chosen_kept}), "
                  f"rejected {rejected:.4f} ({rejected_kept})")
        out = {"transformers": transformers.__version__, "torch": torch.__version__, "max_length": MAX_LENGTH,
               "pairs": rows}
        (folder / "logps.json").write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        print("wrote", folder / "logps.json")


if __name__ == "__main__":
    main()
