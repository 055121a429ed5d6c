#!/usr/bin/env python3
"""TRL's DPOTrainer on the CPU, timed per optimizer step: the peer of `verdict train` in
benches/compare_train.sh. Run it with the venv from benches/peers/setup_trl.sh.

  python trl_dpo.py --model M.gguf --pairs pairs.jsonl --mode full|lora --steps 6 \
      --batch-size 1 --max-length 256 --threads 2 [--no-precompute-ref]

The model is the GGUF dequantized to float32 by transformers (as verdict trains it), saved once
as a transformers folder (--hf-dir; `--convert-only` makes it) because transformers will not
train a model loaded with `gguf_file`. The pairs are `verdict export --format conversational` output; only the train split is
used, as `verdict train` does. Settings follow verdict's defaults where TRL's differ: float32
(TRL defaults to bf16), no gradient checkpointing (TRL defaults to it; verdict keeps every
activation), no dropout, linear schedule without warm-up, AdamW betas 0.9/0.999, clipping at 1.0.
LoRA: r and alpha as given (verdict's default alpha is 16), on q,k,v,o by default, no dropout.

By default (what verdict does) the reference log-probs of the whole train set are computed
once before training and no reference model is kept. With --no-precompute-ref, TRL's own
default: full fine-tuning keeps a second copy of the model and runs its forward every step;
LoRA runs the base (adapters off) every step.

Prints one JSON line: the median seconds per optimizer step over the steps after the first
(on_step_begin to on_step_end: forward, backward, clipping, AdamW; the batch is collated
before) and the medians of those phases; the median interval between step ends (adds
collation and logging); tokens per step (non-padding tokens of the chosen and rejected rows,
the prompt counted in each, as verdict's `num_tokens`); the peak RSS of the process
(ru_maxrss) and during training alone (VmHWM after resetting it when training starts; Linux).
"""
import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, type=Path, help="GGUF file")
    p.add_argument("--hf-dir", type=Path,
                   help="the GGUF converted to a float32 transformers folder (made here when missing)")
    p.add_argument("--convert-only", action="store_true", help="write --hf-dir and exit")
    p.add_argument("--pairs", type=Path, help="conversational JSONL from `verdict export`")
    p.add_argument("--mode", choices=["full", "lora"], default="full")
    p.add_argument("--steps", type=int, default=6, help="optimizer steps; the first is a warm-up")
    p.add_argument("--batch-size", type=int, default=1, help="pairs per optimizer step")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--learning-rate", type=float, default=5e-6)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--lora-alpha", type=float, default=16.0)
    p.add_argument("--lora-targets", default="q,k,v,o")
    p.add_argument("--no-precompute-ref", dest="precompute_ref", action="store_false",
                   help="TRL's default: reference forward every step (full: a second model copy)")
    return p.parse_args()


def vm_hwm_kb():
    """The process's peak resident set since start or the last reset, in KiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_vm_hwm():
    """Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def convert(gguf, hf_dir):
    """transformers dequantizes the GGUF to float32; saved as safetensors, the model loads as a
    plain (trainable) model: transformers refuses to train one loaded with `gguf_file`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The tensors are plain float32 now; drop the GGUF marks so the folder loads as unquantized.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    hf_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(hf_dir))
    tokenizer.save_pretrained(str(hf_dir))
    print(f"converted {gguf} to {hf_dir}", file=sys.stderr)


def main():
    args = parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    started = time.perf_counter()

    import datasets
    import torch
    import transformers
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()

    work = Path(tempfile.mkdtemp(prefix="verdict-trl-"))
    hf_dir = args.hf_dir or work / "model"
    if not (hf_dir / "config.json").is_file():
        convert(args.model, hf_dir)
    if args.convert_only:
        return
    if args.pairs is None:
        sys.exit("--pairs is required")
    rows = []
    with open(args.pairs, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r.get("split", "train") == "train":
                rows.append({"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]})
    if not rows:
        sys.exit(f"{args.pairs}: no train pairs")
    train_file = work / "train.jsonl"
    train_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    # A file-backed dataset: TRL caches precomputed reference log-probs next to it.
    dataset = datasets.load_dataset("json", data_files=str(train_file), split="train",
                                    cache_dir=str(work / "datasets"))

    tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32)
    # Without precomputed reference log-probs, TRL loads the reference model itself from the
    # same folder (full fine-tune) or switches the adapters off (LoRA).
    ref_model = None
    peft_config = None
    if args.mode == "lora":
        from peft import LoraConfig
        names = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj",
                 "gate": "gate_proj", "up": "up_proj", "down": "down_proj"}
        peft_config = LoraConfig(r=args.lora_rank, lora_alpha=args.lora_alpha, lora_dropout=0.0, bias="none",
                                 target_modules=[names[t.strip()] for t in args.lora_targets.split(",")],
                                 task_type="CAUSAL_LM")

    config = DPOConfig(
        output_dir=str(work / "out"),
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        max_steps=args.steps,
        learning_rate=args.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        max_grad_norm=1.0,
        beta=args.beta,
        loss_type=["sigmoid"],
        max_length=args.max_length,
        truncation_mode="keep_start",
        precompute_ref_log_probs=args.precompute_ref,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        seed=args.seed,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        dataloader_num_workers=0,
        disable_dropout=True,
    )

    tokens_per_batch = []
    base_collator = DataCollatorForPreference(
        pad_token_id=tokenizer.pad_token_id, max_length=args.max_length, truncation_mode="keep_start")

    def counting_collator(examples):
        batch = base_collator(examples)
        tokens_per_batch.append(int(batch["attention_mask"].sum()))
        return batch

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.begin = None
            self.step_seconds = []
            self.step_ends = []
            self.train_started = None
            self.hwm_reset = False
            self.forward_seconds, self.backward_seconds, self.clip_seconds, self.optimizer_seconds = [], [], [], []

        def on_train_begin(self, *_, **__):
            tokens_per_batch.clear()  # the precompute pass used the collator too
            self.train_started = time.perf_counter()
            self.hwm_reset = reset_vm_hwm()

        def on_step_begin(self, *_, **__):
            self.begin = time.perf_counter()

        def on_pre_optimizer_step(self, *_, **__):
            self.pre_optimizer = time.perf_counter()
            self.clip_seconds.append(self.pre_optimizer - self.backward_done)

        def on_optimizer_step(self, *_, **__):
            self.optimizer_seconds.append(time.perf_counter() - self.pre_optimizer)

        def on_step_end(self, *_, **__):
            now = time.perf_counter()
            self.step_seconds.append(now - self.begin)
            self.step_ends.append(now)

    class TimedDPOTrainer(DPOTrainer):
        """Splits each step into forward (+ loss), backward, clipping and AdamW."""

        def compute_loss(self, *a, **k):
            start = time.perf_counter()
            out = super().compute_loss(*a, **k)
            if self.model.training:
                timer.forward_seconds.append(time.perf_counter() - start)
            return out

        def training_step(self, *a, **k):
            start = time.perf_counter()
            out = super().training_step(*a, **k)
            timer.backward_done = time.perf_counter()
            timer.backward_seconds.append(timer.backward_done - start - timer.forward_seconds[-1])
            return out

    timer = StepTimer()
    before_trainer = time.perf_counter()
    trainer = TimedDPOTrainer(model=model, ref_model=ref_model, args=config, train_dataset=dataset,
                         processing_class=tokenizer, peft_config=peft_config, data_collator=counting_collator,
                         callbacks=[timer])
    setup_seconds = time.perf_counter() - before_trainer  # tokenization (+ reference pass when precomputed)
    trainer.train()
    train_hwm = vm_hwm_kb() if timer.hwm_reset else None
    finished = time.perf_counter()

    measured = timer.step_seconds[1:] or timer.step_seconds
    intervals = [b - a for a, b in zip(timer.step_ends, timer.step_ends[1:])]
    tokens = tokens_per_batch[1:len(timer.step_seconds)] or tokens_per_batch[:1]
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    print(json.dumps({
        "tool": "trl",
        "versions": {"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__},
        "mode": args.mode,
        "precompute_ref_log_probs": args.precompute_ref,
        "threads": args.threads,
        "torch_threads": torch.get_num_threads(),
        "optimizer": str(config.optim),
        "train_pairs": len(rows),
        "steps": len(timer.step_seconds),
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "trainable_parameters": trainable,
        "seconds_per_step": statistics.median(measured),
        "seconds_per_step_all": [round(s, 3) for s in timer.step_seconds],
        "phases_seconds": {name: statistics.median(v[1:] or v) for name, v in [
            ("forward", timer.forward_seconds), ("backward", timer.backward_seconds),
            ("clip", timer.clip_seconds), ("adamw", timer.optimizer_seconds)] if v},
        "step_interval_seconds": statistics.median(intervals) if intervals else None,
        "tokens_per_step": statistics.median(tokens) if tokens else None,
        "tokens_per_step_all": tokens_per_batch[:len(timer.step_seconds)],
        "setup_seconds": round(setup_seconds, 2),
        "train_seconds": round(finished - timer.train_started, 2),
        "total_seconds": round(finished - started, 2),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_rss_train_mb": train_hwm / 1024 if train_hwm else None,
        "losses": [round(v, 5) for v in losses],
    }))


if __name__ == "__main__":
    main()
