#!/usr/bin/env python3
"""Prints the reference Bradley-Terry ratings that src/qa/arena.rs tests against.

Usage: python3 scripts/check_bradley_terry.py   (needs numpy, scipy and statsmodels; the venv
.venv-qa that scripts/make_agreement_fixtures.py creates has all three)

The model verdict fits, restated for an independent fit here:
  P(i beats j) = sigmoid(theta_i - theta_j); a tie (and a both-bad verdict) is half a win each way.
  Prior: every model is credited with `prior_games` tie games against a fixed reference player of
  strength theta = 0, so a model that won every comparison still gets a finite rating.
  Ratings: 1000 + 400 / ln(10) * (theta_i - mean(theta)), the Elo scale (400 points = 10:1 odds).
  Intervals: rating +- z * standard error, where the covariance of the centered log-strengths is
  P H^-1 P, H the observed information (negative Hessian of the log posterior) at the fit and
  P = I - 11'/k the centering projection.

Two independent fits, which must agree:
  1. statsmodels GLM, Binomial family (logit link), no intercept: one row e_i - e_j per ordered
     outcome with its count as var_weight (a tie is y = 0.5), one row e_i with y = 0.5 and weight
     prior_games per model; cov_params() is H^-1.
  2. scipy.optimize.minimize (BFGS) of the negative log posterior written out by hand, with the
     Hessian from finite differences of the analytic gradient.
"""

import math

import numpy as np
import statsmodels.api as sm
from scipy.optimize import minimize
from scipy.stats import norm

Z95 = norm.isf(0.025)
SCALE = 400.0 / math.log(10.0)

# (model_a, model_b, a wins, b wins, ties, both bad)
CASES = {
    "four_models": [
        ("dpo-a", "base", 14, 4, 3, 1),
        ("dpo-b", "base", 11, 7, 2, 2),
        ("sft", "base", 9, 8, 4, 0),
        ("dpo-a", "dpo-b", 6, 5, 3, 1),
        ("dpo-a", "sft", 8, 3, 1, 0),
        ("dpo-b", "sft", 5, 5, 2, 1),
    ],
    # champ won every comparison: finite only thanks to the prior.
    "undefeated": [
        ("champ", "base", 5, 0, 0, 0),
        ("champ", "sft", 3, 0, 0, 0),
        ("base", "sft", 4, 4, 2, 0),
    ],
}


def rows(case, models, prior_games):
    index = {m: i for i, m in enumerate(models)}
    X, y, w = [], [], []
    for a, b, wins_a, wins_b, ties, both_bad in case:
        x = np.zeros(len(models))
        x[index[a]], x[index[b]] = 1.0, -1.0
        for outcome, count in ((1.0, wins_a), (0.0, wins_b), (0.5, ties + both_bad)):
            if count:
                X.append(x), y.append(outcome), w.append(float(count))
    for m in models:
        x = np.zeros(len(models))
        x[index[m]] = 1.0
        X.append(x), y.append(0.5), w.append(prior_games)
    return np.array(X), np.array(y), np.array(w)


def fit_statsmodels(X, y, w):
    result = sm.GLM(y, X, family=sm.families.Binomial(), var_weights=w).fit(tol=1e-14, maxiter=200)
    return result.params, result.cov_params()


def fit_scipy(X, y, w):
    def negative_log_posterior(theta):
        eta = X @ theta
        # y log s(eta) + (1 - y) log s(-eta), with log s(x) = -log(1 + exp(-x))
        return np.sum(w * (y * np.logaddexp(0.0, -eta) + (1.0 - y) * np.logaddexp(0.0, eta)))

    def gradient(theta):
        eta = X @ theta
        return X.T @ (w * (1.0 / (1.0 + np.exp(-eta)) - y))

    theta = minimize(negative_log_posterior, np.zeros(X.shape[1]), jac=gradient, method="BFGS",
                     options={"gtol": 1e-12, "maxiter": 10_000}).x
    h = 1e-6
    hessian = np.array([(gradient(theta + h * e) - gradient(theta - h * e)) / (2 * h)
                        for e in np.eye(len(theta))])
    return theta, np.linalg.inv((hessian + hessian.T) / 2)


def ratings(theta, cov, z):
    k = len(theta)
    P = np.eye(k) - np.ones((k, k)) / k
    centered = P @ theta
    se = np.sqrt(np.diag(P @ cov @ P))
    rating = 1000.0 + SCALE * centered
    return rating, rating - z * SCALE * se, rating + z * SCALE * se


for name, case in CASES.items():
    models = sorted({m for row in case for m in row[:2]})
    X, y, w = rows(case, models, prior_games=1.0)
    (theta_sm, cov_sm), (theta_sp, cov_sp) = fit_statsmodels(X, y, w), fit_scipy(X, y, w)
    r_sm, lo_sm, hi_sm = ratings(theta_sm, cov_sm, Z95)
    r_sp, lo_sp, hi_sp = ratings(theta_sp, cov_sp, Z95)
    print(f"{name} (prior_games 1, z {Z95!r}); statsmodels GLM, then |difference| from scipy BFGS")
    for i in np.argsort(-r_sm):
        print(f"  {models[i]:>6}: rating {r_sm[i]!r} ci [{lo_sm[i]!r}, {hi_sm[i]!r}]"
              f"  (scipy diff {abs(r_sm[i] - r_sp[i]):.1e}, {abs(lo_sm[i] - lo_sp[i]):.1e})")
