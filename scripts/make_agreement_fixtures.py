#!/usr/bin/env python3
"""Writes the reference fixtures for verdict's agreement statistics (src/qa/agreement/).

Usage: python3 scripts/make_agreement_fixtures.py

Creates the venv .venv-qa (git-ignored) with scikit-learn, krippendorff, statsmodels and irrCAC
if it is missing, re-runs itself inside it, and writes tests/fixtures/agreement/*.json. Every
expected value comes from an independent implementation, never from verdict:

  cohen_kappa        sklearn.metrics.cohen_kappa_score (two-rater data sets, and every rater pair)
  fleiss_kappa       statsmodels.stats.inter_rater.fleiss_kappa where every unit has the same
                     number of ratings; irrCAC's CAC.fleiss() (Gwet's generalization) otherwise
  alpha_nominal/     krippendorff.alpha(reliability_data, level_of_measurement=...)
  alpha_ordinal
  gwet_ac1           irrCAC's CAC.gwet(), checked here against Gwet's (2008) formula
  percent_agreement  irrCAC's p_a (mean over units of the share of agreeing rater pairs)

irrCAC (like verdict) is given only the units with two or more ratings: irrCAC would otherwise
count singly rated units in the category prevalences pi_k of Fleiss' and Gwet's chance terms,
whereas verdict ignores such units everywhere (as Krippendorff's alpha does).

Published values from worked examples are stored under "published" with their rounding:
Krippendorff (2011) "Computing Krippendorff's Alpha-Reliability" (4 coders x 12 units: nominal
0.743, ordinal 0.815), the Fleiss' kappa example of the English Wikipedia article "Fleiss' kappa"
(10 subjects x 14 raters: P-bar 0.378, kappa 0.210), and a 2x2 Cohen's kappa worked by hand
(0.4). Random data sets are made with numpy's default_rng and fixed seeds.

Fixture format: {"name", "description", "categories", "ratings": [[unit, rater, category]...],
"expected": {statistic: value or null}, "references": {statistic: implementation},
"pairwise": [{"rater_a", "rater_b", "shared_units", "kappa", "percent", "gwet_ac1"}], "published":
{statistic: value}, "published_tolerance"}.
"""
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-qa"
OUT = ROOT / "tests" / "fixtures" / "agreement"
PACKAGES = ["scikit-learn", "krippendorff", "statsmodels", "irrCAC", "numpy", "pandas"]


def ensure_venv():
    py = VENV / "bin" / "python"
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    if not py.exists():
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
    probe = "import sklearn, krippendorff, statsmodels, irrCAC, numpy, pandas"
    if subprocess.call([str(py), "-c", probe], stderr=subprocess.DEVNULL) != 0:
        subprocess.check_call([str(py), "-m", "pip", "install", "-q", *PACKAGES])
    sys.exit(subprocess.call([str(py), __file__, *sys.argv[1:]]))


ensure_venv()

import importlib.metadata as md  # noqa: E402

import krippendorff  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from irrCAC.raw import CAC  # noqa: E402
from sklearn.metrics import cohen_kappa_score  # noqa: E402
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa  # noqa: E402


def version(pkg):
    return md.version(pkg)


REF_SKLEARN = f"sklearn.metrics.cohen_kappa_score (scikit-learn {version('scikit-learn')})"
REF_STATSMODELS = (
    f"statsmodels.stats.inter_rater.fleiss_kappa (statsmodels {version('statsmodels')})"
)
REF_KRIPP = f"krippendorff.alpha (krippendorff {version('krippendorff')})"
REF_IRR_FLEISS = f"irrCAC.raw.CAC.fleiss (irrCAC {version('irrCAC')}), units with 2+ ratings"
REF_IRR_GWET = f"irrCAC.raw.CAC.gwet (irrCAC {version('irrCAC')}), units with 2+ ratings"
REF_IRR_PA = f"irrCAC.raw.CAC.gwet().pa (irrCAC {version('irrCAC')}), units with 2+ ratings"


# ---------------------------------------------------------------------------------------------
# Data sets


def simulate(seed, units, raters, prevalence, accuracy, adjacent, p_rate=1.0, min_raters=0):
    """Each unit has a true category drawn from `prevalence`; each rater rates it with
    probability `p_rate` and then reports the truth with probability `accuracy`, else an
    adjacent category with probability `adjacent` (ordinal noise), else a uniform category."""
    rng = np.random.default_rng(seed)
    q = len(prevalence)
    ratings = []
    for u in range(units):
        truth = int(rng.choice(q, p=prevalence))
        who = [r for r in range(raters) if rng.random() < p_rate]
        while len(who) < min_raters:
            extra = int(rng.integers(raters))
            if extra not in who:
                who.append(extra)
        for r in sorted(who):
            x = rng.random()
            if x < accuracy:
                c = truth
            elif x < accuracy + adjacent:
                c = truth + (1 if rng.random() < 0.5 else -1)
                c = min(max(c, 0), q - 1)
                if c == truth:
                    c = truth + 1 if truth == 0 else truth - 1
            else:
                c = int(rng.integers(q))
            ratings.append((u + 1000, 10 + r, int(c)))
    return ratings


def cohen_hand():
    # Two raters, 50 items, yes = 0 / no = 1:
    #                B yes  B no
    #        A yes     20     5   | 25
    #        A no      10    15   | 25
    #                  30    20   | 50
    # p_o = (20 + 15) / 50 = 0.7; p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5;
    # kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4 exactly.
    cells = [(0, 0, 20), (0, 1, 5), (1, 0, 10), (1, 1, 15)]
    ratings, unit = [], 0
    for a, b, count in cells:
        for _ in range(count):
            ratings += [(unit, 1, a), (unit, 2, b)]
            unit += 1
    return ratings


def krippendorff_2011():
    # Krippendorff (2011), section C: observers A-D, units 1-12, values 1-5 ("." = missing).
    data = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    ]
    return [
        (u + 1, obs, v - 1)  # values 1..5 -> categories 0..4
        for obs, row in enumerate(data)
        for u, v in enumerate(row)
        if v is not None
    ]


def fleiss_wikipedia():
    # English Wikipedia, "Fleiss' kappa", worked example: 10 subjects, 14 raters, 5 categories;
    # n_ij = raters who assigned subject i to category j. The raters are not identified there,
    # so rater ids here are arbitrary (pairwise figures are not meaningful for this set).
    table = [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
    ratings = []
    for i, row in enumerate(table):
        rater = 0
        for j, count in enumerate(row):
            for _ in range(count):
                ratings.append((i + 1, rater, j))
                rater += 1
    return ratings


# ---------------------------------------------------------------------------------------------
# Reference values


def by_unit(ratings):
    units = {}
    for u, r, c in ratings:
        units.setdefault(u, {})[r] = c
    return units


def reliability_matrix(ratings):
    units = sorted(by_unit(ratings))
    raters = sorted({r for _, r, _ in ratings})
    m = np.full((len(raters), len(units)), np.nan)
    ui = {u: i for i, u in enumerate(units)}
    ri = {r: i for i, r in enumerate(raters)}
    for u, r, c in ratings:
        m[ri[r], ui[u]] = c
    return m


def irr_frame(ratings):
    """Units x raters frame of the units with 2+ ratings, for irrCAC."""
    units = {u: rs for u, rs in by_unit(ratings).items() if len(rs) >= 2}
    raters = sorted({r for rs in units.values() for r in rs})
    rows = [[rs.get(r, np.nan) for r in raters] for _, rs in sorted(units.items())]
    return pd.DataFrame(rows, columns=[f"r{r}" for r in raters], dtype=float)


def gwet_textbook(ratings, q):
    """Gwet (2008) multi-rater AC1, straight from the formula, for a cross-check."""
    units = [rs for rs in by_unit(ratings).values() if len(rs) >= 2]
    pa, pi = 0.0, np.zeros(q)
    for rs in units:
        m = len(rs)
        n = np.bincount(list(rs.values()), minlength=q)
        pa += (n * (n - 1)).sum() / (m * (m - 1))
        pi += n / m
    pa /= len(units)
    pi /= len(units)
    pe = (pi * (1 - pi)).sum() / (q - 1)
    return (pa - pe) / (1 - pe), pa


def references(ratings, q, two_rater_cohen):
    expected, refs = {}, {}
    units = by_unit(ratings)
    multi = {u: rs for u, rs in units.items() if len(rs) >= 2}
    sizes = {len(rs) for rs in multi.values()}
    cats = {c for rs in multi.values() for c in rs.values()}
    frame = irr_frame(ratings)

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        cac = CAC(frame, categories=list(range(q)), digits=17)
        g = cac.gwet()["est"]
        cac = CAC(frame, categories=list(range(q)), digits=17)
        f = cac.fleiss()["est"]

    expected["percent_agreement"] = float(g["pa"])
    refs["percent_agreement"] = REF_IRR_PA

    ac1, pa = gwet_textbook(ratings, q)
    assert abs(ac1 - g["coefficient_value"]) < 1e-12, (ac1, g)
    assert abs(pa - g["pa"]) < 1e-12
    expected["gwet_ac1"] = float(g["coefficient_value"])
    refs["gwet_ac1"] = REF_IRR_GWET

    if len(cats) < 2:
        expected["fleiss_kappa"] = None
        refs["fleiss_kappa"] = "undefined: one category"
    elif len(sizes) == 1:
        table = np.zeros((len(multi), q))
        for i, rs in enumerate(multi.values()):
            for c in rs.values():
                table[i, c] += 1
        value = float(sm_fleiss_kappa(table, method="fleiss"))
        assert abs(value - f["coefficient_value"]) < 1e-12, (value, f)
        expected["fleiss_kappa"] = value
        refs["fleiss_kappa"] = REF_STATSMODELS + "; irrCAC agrees to 1e-12"
    else:
        expected["fleiss_kappa"] = float(f["coefficient_value"])
        refs["fleiss_kappa"] = REF_IRR_FLEISS

    rel = reliability_matrix(ratings)
    for level in ["nominal", "ordinal"]:
        key = f"alpha_{level}"
        if len(cats) < 2:
            expected[key] = None
            refs[key] = "undefined: one category"
            continue
        expected[key] = float(
            krippendorff.alpha(
                reliability_data=rel, level_of_measurement=level, value_domain=list(range(q))
            )
        )
        refs[key] = REF_KRIPP + f", level_of_measurement='{level}'"

    pairwise = []
    raters = sorted({r for _, r, _ in ratings})
    for i, a in enumerate(raters):
        for b in raters[i + 1:]:
            shared = [u for u, rs in sorted(units.items()) if a in rs and b in rs]
            if not shared:
                continue
            y1 = [units[u][a] for u in shared]
            y2 = [units[u][b] for u in shared]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                k = cohen_kappa_score(y1, y2, labels=list(range(q)))
            pair = [(u, r, c) for u in shared for r, c in ((a, units[u][a]), (b, units[u][b]))]
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                ac1 = CAC(irr_frame(pair), categories=list(range(q)), digits=17).gwet()["est"]
            pairwise.append(
                {
                    "rater_a": a,
                    "rater_b": b,
                    "shared_units": len(shared),
                    "kappa": None if np.isnan(k) else float(k),
                    "percent": float(np.mean(np.array(y1) == np.array(y2))),
                    "gwet_ac1": float(ac1["coefficient_value"]),
                }
            )
    if two_rater_cohen:
        assert len(raters) == 2 and len(pairwise) == 1
        expected["cohen_kappa"] = pairwise[0]["kappa"]
        refs["cohen_kappa"] = REF_SKLEARN + f", rater {raters[0]} vs rater {raters[1]}"
    refs["pairwise"] = (
        REF_SKLEARN + "; percent = share of equal labels (numpy); gwet_ac1 = " + REF_IRR_GWET
    )
    return expected, refs, pairwise


def write(name, description, ratings, q, published=None, pairwise=True):
    raters = {r for _, r, _ in ratings}
    expected, refs, pairs = references(ratings, q, two_rater_cohen=len(raters) == 2)
    doc = {
        "name": name,
        "description": description,
        "categories": q,
        "ratings": [list(r) for r in ratings],
        "expected": expected,
        "references": refs,
        "pairwise": pairs if pairwise else [],
    }
    if published:
        doc["published"] = published
        doc["published_tolerance"] = 5e-4
        for key, value in published.items():
            assert abs(expected[key] - value) <= 5e-4, (name, key, expected[key], value)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    text = json.dumps(doc, indent=1)
    # One rating per line.
    text = re.sub(r"\[\s+(\d+),\s+(\d+),\s+(\d+)\s+\]", r"[\1, \2, \3]", text)
    assert json.loads(text) == doc
    path.write_text(text + "\n")
    shown = {k: (None if v is None else round(v, 4)) for k, v in expected.items()}
    print(f"{path.relative_to(ROOT)}: {len(ratings)} ratings, {shown}")
    return expected


def main():
    write(
        "cohen_2x2_hand",
        "Two raters, 50 items, 2x2 table [[20, 5], [10, 15]]; kappa 0.4 worked by hand.",
        cohen_hand(),
        2,
        published={"cohen_kappa": 0.4, "percent_agreement": 0.7},
    )
    write(
        "krippendorff_2011",
        "Krippendorff (2011) 'Computing Krippendorff's Alpha-Reliability', section C: 4 observers "
        "x 12 units, values 1-5 stored as categories 0-4, missing values; unit 12 has one value.",
        krippendorff_2011(),
        5,
        published={"alpha_nominal": 0.743, "alpha_ordinal": 0.815},
    )
    write(
        "fleiss_wikipedia",
        "Worked example of the English Wikipedia article 'Fleiss' kappa': 10 subjects x 14 "
        "raters, 5 categories (P-bar 0.378, P-bar_e 0.213, kappa 0.210). Rater ids arbitrary.",
        fleiss_wikipedia(),
        5,
        published={"fleiss_kappa": 0.210, "percent_agreement": 0.378},
        pairwise=False,
    )
    write(
        "random_2raters_4cat",
        "Seed 7: 120 units, 2 raters, 4 categories (left, tie, right, both bad), no missing data.",
        simulate(7, 120, 2, [0.4, 0.15, 0.35, 0.1], accuracy=0.7, adjacent=0.15),
        4,
    )
    write(
        "random_3raters_3cat",
        "Seed 11: 90 units, 3 raters, 3 ordinal categories (left > tie > right), no missing "
        "data, mostly adjacent disagreements.",
        simulate(11, 90, 3, [0.45, 0.2, 0.35], accuracy=0.78, adjacent=0.17),
        3,
    )
    write(
        "random_5raters_missing_4cat",
        "Seed 23: 150 units, 5 raters each rating a unit with probability 0.5 (units with 0-5 "
        "ratings), 4 categories.",
        simulate(23, 150, 5, [0.35, 0.2, 0.35, 0.1], accuracy=0.6, adjacent=0.2, p_rate=0.5),
        4,
    )
    paradox = write(
        "rare_ties_paradox",
        "Seed 5: 200 units, 2 raters, 3 categories, one outcome dominates and ties are very "
        "rare: high percent agreement, low kappa, high AC1 (the kappa paradox).",
        simulate(5, 200, 2, [0.95, 0.02, 0.03], accuracy=0.9, adjacent=0.0),
        3,
    )
    assert paradox["percent_agreement"] > 0.85, paradox
    assert paradox["cohen_kappa"] < 0.45, paradox
    assert paradox["gwet_ac1"] > 0.85, paradox
    write(
        "binary_tag_4raters_missing",
        "Seed 31: 100 units, 4 raters each rating with probability 0.6 (at least 2 per unit), "
        "binary 'tag applies' (category 1 rare).",
        simulate(31, 100, 4, [0.8, 0.2], accuracy=0.8, adjacent=0.0, p_rate=0.6, min_raters=2),
        2,
    )


if __name__ == "__main__":
    main()
