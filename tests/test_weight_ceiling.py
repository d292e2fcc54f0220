"""The weight-recovery diagnostic (experiments/robustness/weight_ceiling.py): its fits checked on hand-built data."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def load():
    path = ROOT / "experiments" / "robustness" / "weight_ceiling.py"
    spec = importlib.util.spec_from_file_location("robustness_weight_ceiling", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def bt_pairs(rng, weights, groups, scale=8.0):
    """Binary attributes of two responses per pair and a Bradley-Terry label on ``scale * w_group^T (a - b)``; returns
    chosen-minus-rejected attributes ``(N, K)``."""
    a, b = rng.integers(0, 2, (2, len(groups), weights.shape[1])).astype(float)
    p_a = 1 / (1 + np.exp(-scale * ((weights[groups] * (a - b)).sum(-1))))
    a_wins = rng.random(len(groups)) < p_a
    return np.where(a_wins[:, None], a - b, b - a)


def test_per_group_fit_recovers_opposite_weights():
    wc = load()
    rng = np.random.default_rng(0)
    true = np.array([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]])  # two prompt groups with opposite weights
    groups = np.repeat([0, 1], 1500)
    fitted = wc.fit_weights(bt_pairs(rng, true, groups), groups, num_groups=2)
    np.testing.assert_allclose(fitted.sum(-1), 1.0, atol=1e-9)
    assert np.abs(fitted - true).max() < 0.08
    assert fitted[0].argmax() == 0 and fitted[1].argmax() == 2


def test_prompt_fit_reads_the_group_from_the_prompt_features():
    wc = load()
    rng = np.random.default_rng(1)
    true = np.array([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]])
    groups = np.repeat([0, 1], 1500)
    h_x = np.stack([groups * 2.0 - 1.0, rng.normal(size=len(groups))], axis=1)  # feature 0 says the group
    weights_of = wc.fit_prompt_weights(bt_pairs(rng, true, groups), h_x, l2=1e-3)
    fitted = weights_of(np.array([[-1.0, 0.0], [1.0, 0.0]]))
    assert fitted[0].argmax() == 0 and fitted[1].argmax() == 2
    assert np.abs(fitted - true).max() < 0.1


def test_pair_log_likelihood_of_uninformative_weights_is_log_half():
    wc = load()
    g_diff = np.array([[1.0, -1.0], [2.0, -2.0]])
    assert wc.pair_log_likelihood(np.full((2, 2), 0.5), g_diff) == pytest.approx(-math.log(2), abs=1e-9)


def test_out_of_fold_predictions_never_see_their_own_target():
    wc = load()
    rng = np.random.default_rng(2)
    features = rng.normal(size=(60, 80))  # more features than rows: an in-sample fit would reproduce any target
    noise = rng.normal(size=(60, 1))
    predicted = wc.out_of_fold(features, noise, "linear", seed=0)
    assert np.corrcoef(predicted[:, 0], noise[:, 0])[0, 1] < 0.5
    few = features[:, :10]  # and a target the features determine is predicted
    signal = few[:, :1] * 2.0
    predicted = wc.out_of_fold(few, signal, "linear", seed=0)
    assert np.corrcoef(predicted[:, 0], signal[:, 0])[0, 1] > 0.9
