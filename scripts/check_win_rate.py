#!/usr/bin/env python3
"""Prints the reference values that src/qa/winrate.rs tests against.

Usage: python3 scripts/check_win_rate.py   (needs statsmodels and scipy; the venv .venv-qa that
scripts/make_agreement_fixtures.py creates has both)

Every interval comes from statsmodels.stats.proportion.proportion_confint(method="wilson"), an
implementation independent of verdict's. Ties and both-bad verdicts count as half a win, so the
number of successes may be a half-integer; statsmodels accepts a fractional count and applies the
same formula to it.
"""

from scipy.stats import norm
from statsmodels.stats.proportion import proportion_confint

# (label, successes, n, alpha): alpha = 1 - confidence, as statsmodels takes it.
CASES = [
    ("8 of 10 at 95%", 8, 10, 0.05),
    ("0 of 10 at 95%", 0, 10, 0.05),
    ("10 of 10 at 95%", 10, 10, 0.05),
    ("1 of 1 at 95%", 1, 1, 0.05),
    # 5 wins, 2 losses, 2 ties, 1 both-bad: 5 + 3 * 0.5 = 6.5 successes.
    ("6.5 of 10 at 95%", 6.5, 10, 0.05),
    # The per-language example of the tests: en 3 wins, 1 loss, 1 tie -> 3.5 of 5;
    # de 1 win, 2 losses, 1 both-bad -> 1.5 of 4; overall 5 of 9.
    ("3.5 of 5 at 95%", 3.5, 5, 0.05),
    ("1.5 of 4 at 95%", 1.5, 4, 0.05),
    ("5 of 9 at 95%", 5, 9, 0.05),
    # A general z: z = 1 is a 68.27% interval.
    ("8 of 10 at z=1", 8, 10, 2 * norm.sf(1.0)),
]

print(f"z for 95%: {norm.isf(0.025)!r}")
for label, successes, n, alpha in CASES:
    low, high = proportion_confint(successes, n, alpha=alpha, method="wilson")
    print(f"{label:>18}: rate {successes / n!r}  wilson [{low!r}, {high!r}]")
