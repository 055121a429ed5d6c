#!/usr/bin/env python3
"""Writes tests/fixtures/trl_loss/batch.json: DPO-family losses and metrics that TRL itself
computes for a fixed batch, for `train::loss`'s test against TRL.

The batch: 3 pairs of unequal lengths, per-token log-probs drawn from a fixed seed (the inputs),
reference sums. TRL's own code computes the outputs: `DPOTrainer._compute_loss` (TRL 1.16) runs
on a stand-in model whose forward returns those per-token log-probs, for sigmoid + the `sft`
term (`loss_type=["sigmoid", "sft"]`, `loss_weights=[1, w]`: what `rpo_alpha` became), ipo and
robust; simpo comes from the CPOTrainer (`get_batch_logps` with average_log_prob, `cpo_loss`).

Run: /work/venvs/trl/bin/python scripts/make_trl_loss_fixture.py  (torch, trl 1.16)
"""

import json
import math
import random
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import torch
import trl
from trl import DPOTrainer
from trl.experimental.cpo import CPOTrainer

OUT = Path(__file__).resolve().parent.parent / "tests/fixtures/trl_loss/batch.json"
PROMPT = 3  # prompt tokens per row
CHOSEN_LENS = [4, 9, 2]
REJECTED_LENS = [6, 3, 7]


def make_pairs():
    rng = random.Random(20261203)
    pairs = []
    for lc, lr in zip(CHOSEN_LENS, REJECTED_LENS):
        pairs.append(
            {
                "chosen_token_logps": [round(-rng.uniform(0.02, 4.0), 6) for _ in range(lc)],
                "rejected_token_logps": [round(-rng.uniform(0.02, 4.0), 6) for _ in range(lr)],
                "ref_chosen": round(-rng.uniform(0.5, 3.0) * lc, 6),
                "ref_rejected": round(-rng.uniform(0.5, 3.0) * lr, 6),
            }
        )
    return pairs


def identity(x):
    return x


def dpo_metrics(pairs, loss_types, loss_weights, beta, label_smoothing):
    """Runs TRL's DPOTrainer._compute_loss on the batch; returns its loss and logged metrics."""
    rows = [p["chosen_token_logps"] for p in pairs] + [p["rejected_token_logps"] for p in pairs]
    width = PROMPT + max(len(r) for r in rows)
    n = len(rows)
    completion_mask = torch.zeros(n, width, dtype=torch.long)
    attention_mask = torch.zeros(n, width, dtype=torch.long)
    log_probs = torch.zeros(n, width - 1, dtype=torch.float64)
    for i, r in enumerate(rows):
        attention_mask[i, : PROMPT + len(r)] = 1
        completion_mask[i, PROMPT : PROMPT + len(r)] = 1
        for k, lp in enumerate(r):
            # position t predicts token t + 1
            log_probs[i, PROMPT + k - 1] = lp
    inputs = {
        "input_ids": torch.ones(n, width, dtype=torch.long),
        "attention_mask": attention_mask,
        "completion_mask": completion_mask,
        "ref_chosen_logps": torch.tensor([p["ref_chosen"] for p in pairs], dtype=torch.float64),
        "ref_rejected_logps": torch.tensor([p["ref_rejected"] for p in pairs], dtype=torch.float64),
    }

    def model(**kwargs):
        return SimpleNamespace(
            log_probs=log_probs,
            entropy=torch.zeros_like(log_probs),
            mean_logits=torch.zeros_like(log_probs),
            is_top1=torch.zeros_like(log_probs, dtype=torch.bool),
        )

    model.training = True
    trainer = SimpleNamespace(
        model=model,
        accelerator=SimpleNamespace(device="cpu", gather=identity, gather_for_metrics=identity),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=loss_types,
        loss_weights=loss_weights,
        beta=beta,
        label_smoothing=label_smoothing,
        use_weighting=False,
        _metrics=defaultdict(lambda: defaultdict(list)),
        _total_train_tokens=0,
        _tp_size=1,
    )
    loss = DPOTrainer._compute_loss(trainer, model, inputs, False)
    logged = trainer._metrics["train"]
    out = {"loss": loss.item()}
    for key in ["rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected"]:
        out[key] = logged[key][-1]
    return out


def simpo_metrics(pairs, beta, gamma, label_smoothing):
    """CPOTrainer's simpo: token-averaged log-probs from `get_batch_logps`, then `cpo_loss`."""

    def averaged(seqs):
        width = PROMPT + max(len(s) for s in seqs)
        # Two-token vocabulary whose log-softmax at token 0 is exactly the given log-prob.
        logits = torch.zeros(len(seqs), width, 2, dtype=torch.float64)
        labels = torch.full((len(seqs), width), -100, dtype=torch.long)
        for i, s in enumerate(seqs):
            for k, lp in enumerate(s):
                logits[i, PROMPT + k - 1, 0] = lp
                logits[i, PROMPT + k - 1, 1] = math.log(-math.expm1(lp))
                labels[i, PROMPT + k] = 0
        return CPOTrainer.get_batch_logps(logits, labels, average_log_prob=True)

    chosen = averaged([p["chosen_token_logps"] for p in pairs])
    rejected = averaged([p["rejected_token_logps"] for p in pairs])
    trainer = SimpleNamespace(
        alpha=0.0,
        loss_type="simpo",
        beta=beta,
        simpo_gamma=gamma,
        label_smoothing=label_smoothing,
        accelerator=SimpleNamespace(device="cpu"),
    )
    losses, cr, rr = CPOTrainer.cpo_loss(trainer, chosen, rejected)
    return {
        "loss": losses.mean().item(),
        "rewards/chosen": cr.mean().item(),
        "rewards/rejected": rr.mean().item(),
        "rewards/margins": (cr - rr).mean().item(),
        "rewards/accuracies": (cr > rr).double().mean().item(),
        "logps/chosen": chosen.mean().item(),
        "logps/rejected": rejected.mean().item(),
    }


def main():
    pairs = make_pairs()
    cases = []
    for loss, beta, e, sft in [("sigmoid", 0.1, 0.0, 0.0), ("sigmoid", 0.1, 0.0, 0.7), ("ipo", 0.2, 0.0, 0.0), ("robust", 0.3, 0.1, 0.0)]:
        types, weights = ([loss, "sft"], [1.0, sft]) if sft else ([loss], [1.0])
        case = {"loss": loss, "beta": beta, "label_smoothing": e, "sft_weight": sft, "simpo_gamma": 0.5}
        case["trl"] = dpo_metrics(pairs, types, weights, beta, e)
        cases.append(case)
    case = {"loss": "simpo", "beta": 2.0, "label_smoothing": 0.0, "sft_weight": 0.0, "simpo_gamma": 0.5}
    case["trl"] = simpo_metrics(pairs, 2.0, 0.5, 0.0)
    cases.append(case)
    doc = {
        "about": "written by scripts/make_trl_loss_fixture.py with trl " + trl.__version__ + ", torch " + torch.__version__,
        "pairs": pairs,
        "cases": cases,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {OUT}")
    for c in cases:
        print(c["loss"], c["sft_weight"], c["trl"])


if __name__ == "__main__":
    main()
