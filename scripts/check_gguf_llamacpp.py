"""Runs GGUF files in llama.cpp (llama-cpp-python) and prints each one's logits, for
src/train/export_gguf_tests_families.rs: `python check_gguf_llamacpp.py spec.json`.

spec.json: {"cases": [{"name": ..., "gguf": path, "tokens": [ids]}]}. The last line of stdout is
a JSON object: name -> {"logits": [[...] per token]} or {"error": text}. The KV cache is f32
(type_k = type_v = 0), so an f32 GGUF's logits are not rounded through llama.cpp's default f16
cache.
"""

import json
import sys

from llama_cpp import Llama


def main():
    spec = json.loads(open(sys.argv[1]).read())
    out = {}
    for case in spec["cases"]:
        try:
            model = Llama(model_path=case["gguf"], logits_all=True, verbose=False, n_ctx=256, n_threads=1,
                          type_k=0, type_v=0)
            model.eval(case["tokens"])
            out[case["name"]] = {"logits": [list(map(float, row)) for row in model.scores[: len(case["tokens"])]]}
            model.close()
        except Exception as e:  # a file llama.cpp refuses is a result, not a crash
            out[case["name"]] = {"error": str(e)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
