#!/usr/bin/env python3
"""Loads verdict's exports of the family fixtures in transformers 5 (and PEFT) and compares their
logits with the ones verdict computed before exporting. Run by the Rust test
`train::export_tests_families::exported_families_reload_in_transformers_with_the_same_logits`.

    python scripts/check_family_exports.py SPEC.json

SPEC.json: {"cases": [{"name", "tokens", "logits" (verdict's, one row per token), and either
"folder" (an exported HF folder: AutoModelForCausalLM.from_pretrained) or "base" + "adapter"
(the base HF folder and verdict's PEFT adapter: PeftModel.from_pretrained)}]}.

Prints, last, one JSON line: {name: {"max_abs_diff", "architecture"}} per case; a case that fails
to load gets {"error": "..."} instead. Eager attention, float32, as the fixtures were made.
"""
import json
import sys
import traceback

import torch
from transformers import AutoModelForCausalLM


def logits_of(case):
    kw = dict(attn_implementation="eager", dtype=torch.float32)
    if "folder" in case:
        model = AutoModelForCausalLM.from_pretrained(case["folder"], **kw)
    else:
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(case["base"], **kw)
        model = PeftModel.from_pretrained(base, case["adapter"])
    model.eval()
    with torch.no_grad():
        out = model(torch.tensor([case["tokens"]])).logits[0].float()
    config = model.config if "folder" in case else model.base_model.model.config
    return out, config.architectures[0]


def main():
    spec = json.load(open(sys.argv[1]))
    result = {}
    for case in spec["cases"]:
        try:
            got, arch = logits_of(case)
            want = torch.tensor(case["logits"], dtype=torch.float32)
            if got.shape != want.shape:
                result[case["name"]] = {"error": f"logits shape {list(got.shape)}, verdict's {list(want.shape)}"}
                continue
            result[case["name"]] = {"max_abs_diff": (got - want).abs().max().item(), "architecture": arch}
        except Exception as e:  # reported per case, so one failure shows the others
            traceback.print_exc(file=sys.stderr)
            result[case["name"]] = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
