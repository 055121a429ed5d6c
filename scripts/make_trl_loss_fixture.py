#!/usr/bin/env python3
"""Writes tests/fixtures/trl_loss/batch.json: DPO-family losses and metrics that TRL itself
computes for a fixed batch, for `train::loss`'s test against TRL; and kto.json and orpo.json,
the same for KTO (`KTOTrainer._compute_loss`) and ORPO (`ORPOTrainer.get_batch_loss_metrics`),
for `train::kto` and `train::orpo`.

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
from trl import KTOTrainer
from trl.experimental.cpo import CPOTrainer
from trl.experimental.orpo import ORPOTrainer

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


def completion_grid(rows):
    """Rows of PROMPT prompt tokens then the given completion log-probs, as a trainer's batch
    holds them: (n, width, completion_mask, attention_mask, per-position log-probs)."""
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
    return n, width, completion_mask, attention_mask, log_probs


def dpo_metrics(pairs, loss_types, loss_weights, beta, label_smoothing):
    """Runs TRL's DPOTrainer._compute_loss on the batch; returns its loss and logged metrics."""
    rows = [p["chosen_token_logps"] for p in pairs] + [p["rejected_token_logps"] for p in pairs]
    n, width, completion_mask, attention_mask, log_probs = completion_grid(rows)
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


def make_unpaired():
    """KTO's rows: completions of unequal lengths, each desirable or not, with a reference sum, and
    the summed log-probs of the mismatched (prompt, completion) sequence of each row for the KL
    estimate, under the policy and the reference."""
    rng = random.Random(20261204)
    rows = []
    for n, desirable in zip([4, 9, 2, 6, 3], [True, False, True, True, False]):
        rows.append(
            {
                "token_logps": [round(-rng.uniform(0.02, 4.0), 6) for _ in range(n)],
                "desirable": desirable,
                "ref": round(-rng.uniform(0.5, 3.0) * n, 6),
                "kl_policy": round(-rng.uniform(5.0, 20.0), 6),
                "kl_ref": round(-rng.uniform(5.0, 20.0), 6),
            }
        )
    return rows


def kto_metrics(rows, beta, desirable_weight, undesirable_weight, kl_shift=0.0):
    """Runs TRL's KTOTrainer._compute_loss on the rows; returns its loss and logged metrics.
    `kl_shift` moves the policy's KL log-probs up, to exercise a positive KL estimate (TRL clamps
    a negative one to 0)."""
    n, width, completion_mask, attention_mask, log_probs = completion_grid([r["token_logps"] for r in rows])
    inputs = {
        "input_ids": torch.ones(n, width, dtype=torch.long),
        "attention_mask": attention_mask,
        "completion_mask": completion_mask,
        "label": torch.tensor([r["desirable"] for r in rows], dtype=torch.long),
        "ref_logps": torch.tensor([r["ref"] for r in rows], dtype=torch.float64),
        "ref_KL_logps": torch.tensor([r["kl_ref"] for r in rows], dtype=torch.float64),
    }
    kl_logps = torch.tensor([r["kl_policy"] + kl_shift for r in rows], dtype=torch.float64)

    def model(**kwargs):
        return SimpleNamespace(
            log_probs=log_probs,
            entropy=torch.zeros_like(log_probs),
            mean_logits=torch.zeros_like(log_probs),
        )

    model.training = True
    trainer = SimpleNamespace(
        model=model,
        accelerator=SimpleNamespace(device="cpu", gather_for_metrics=identity),
        aux_loss_enabled=False,
        precompute_ref_logps=True,
        calculate_KL=True,
        _compute_kl_logps=lambda model, batch: kl_logps,
        loss_type="kto",
        beta=beta,
        desirable_weight=desirable_weight,
        undesirable_weight=undesirable_weight,
        _metrics=defaultdict(lambda: defaultdict(list)),
        _total_train_tokens=0,
        _tp_size=1,
    )
    loss = KTOTrainer._compute_loss(trainer, model, inputs, False)
    logged = trainer._metrics["train"]
    out = {"loss": loss.item()}
    for key in ["kl", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected"]:
        out[key] = logged[key][-1]
    return out


def make_orpo_pairs():
    """ORPO's pairs: the per-token log-probs of each chosen and rejected response, and of the
    chosen row's prompt tokens (TRL's ORPO NLL runs over the whole chosen sequence)."""
    rng = random.Random(20261205)
    pairs = []
    for lc, lr in zip(CHOSEN_LENS, REJECTED_LENS):
        pairs.append(
            {
                "chosen_token_logps": [round(-rng.uniform(0.01, 2.0), 6) for _ in range(lc)],
                "rejected_token_logps": [round(-rng.uniform(0.01, 3.0), 6) for _ in range(lr)],
                # position 0 predicts nothing, so a prompt of PROMPT tokens adds PROMPT - 1 terms
                "chosen_prompt_logps": [round(-rng.uniform(0.5, 6.0), 6) for _ in range(PROMPT - 1)],
            }
        )
    return pairs


def orpo_metrics(pairs, beta):
    """ORPOTrainer.get_batch_loss_metrics with a stand-in `concatenated_forward` that returns the
    token-averaged response log-probs (`get_batch_logps`, average_log_prob=True) and TRL's
    cross-entropy over every token of the chosen rows, computed from a two-token vocabulary whose
    log-softmax at token 0 is exactly the given log-prob."""
    rows = [p["chosen_prompt_logps"] + p["chosen_token_logps"] for p in pairs]
    rows += [[0.0] * (PROMPT - 1) + p["rejected_token_logps"] for p in pairs]
    resp = [len(p["chosen_token_logps"]) for p in pairs] + [len(p["rejected_token_logps"]) for p in pairs]
    width = 1 + max(len(r) for r in rows)
    n = len(rows)
    logits = torch.zeros(n, width, 2, dtype=torch.float64)
    labels = torch.full((n, width), -100, dtype=torch.long)  # response tokens only
    all_labels = torch.full((n, width), -100, dtype=torch.long)  # every real token
    for i, r in enumerate(rows):
        for k, lp in enumerate(r):
            logits[i, k, 0] = lp
            logits[i, k, 1] = math.log(-math.expm1(lp)) if lp < 0 else -1e9
            all_labels[i, k + 1] = 0
            if k >= len(r) - resp[i]:
                labels[i, k + 1] = 0
    half = len(pairs)
    averaged = ORPOTrainer.get_batch_logps(logits, labels, average_log_prob=True)
    ce = torch.nn.CrossEntropyLoss()
    nll = ce(logits[:half, :-1, :].reshape(-1, 2), all_labels[:half, 1:].reshape(-1))

    def forward(model, batch):
        return (averaged[:half], averaged[half:], logits[:half, :-1, :], logits[half:, :-1, :], nll)

    trainer = SimpleNamespace(
        concatenated_forward=forward,
        aux_loss_enabled=False,
        beta=beta,
        accelerator=SimpleNamespace(device="cpu", gather_for_metrics=identity),
    )
    trainer.odds_ratio_loss = lambda c, r: ORPOTrainer.odds_ratio_loss(trainer, c, r)
    loss, metrics = ORPOTrainer.get_batch_loss_metrics(trainer, None, {}, "train")
    out = {"loss": loss.item()}
    for key in [
        "rewards/chosen",
        "rewards/rejected",
        "rewards/accuracies",
        "rewards/margins",
        "logps/chosen",
        "logps/rejected",
        "nll_loss",
        "log_odds_ratio",
        "log_odds_chosen",
    ]:
        out[key] = metrics[key]
    return out


def write(name, doc):
    out = OUT.parent / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out}")


def write_unpaired_fixtures():
    about = "written by scripts/make_trl_loss_fixture.py with trl " + trl.__version__ + ", torch " + torch.__version__
    rows = make_unpaired()
    kto_cases = []
    for beta, dw, uw, shift in [(0.1, 1.0, 1.0, 0.0), (0.1, 1.0, 1.0, 3.0), (0.5, 1.0, 1.5, 2.0)]:
        kto_cases.append(
            {"beta": beta, "desirable_weight": dw, "undesirable_weight": uw, "kl_shift": shift,
             "trl": kto_metrics(rows, beta, dw, uw, shift)}
        )
    write("kto.json", {"about": about, "rows": rows, "cases": kto_cases})
    pairs = make_orpo_pairs()
    orpo_cases = [{"beta": beta, "trl": orpo_metrics(pairs, beta)} for beta in [0.1, 1.0]]
    write("orpo.json", {"about": about, "prompt_tokens": PROMPT, "pairs": pairs, "cases": orpo_cases})
    for c in kto_cases + orpo_cases:
        print(c)


def main():
    write_unpaired_fixtures()
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
