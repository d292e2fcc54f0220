"""Evaluation metrics and plots on tiny fixed inputs whose values are computed by hand in the comments."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vrm.evaluation import metrics as m
from vrm.evaluation import plots
from vrm.evaluation import rewardbench as rb

LN3, LN19 = math.log(3.0), math.log(19.0)  # sigmoid(ln 3) = 3/4, sigmoid(ln 19) = 19/20

# ---------------------------------------------------------------- pairwise accuracy, margin, groups

CHOSEN = [3.0, 1.0, 2.0, 5.0]
REJECTED = [1.0, 2.0, 2.0, 4.0]
# per pair: win, loss, tie, win; margins 2, -1, 0, 1


def test_pairwise_accuracy_counts_ties_as_half():
    # (1 + 0 + 0.5 + 1) / 4 = 0.625
    assert m.pairwise_accuracy(CHOSEN, REJECTED) == pytest.approx(0.625)


def test_pairwise_accuracy_rewardbench_tie_rule():
    # RewardBench counts a tie as wrong: (1 + 0 + 0 + 1) / 4 = 0.5
    assert m.pairwise_accuracy(CHOSEN, REJECTED, tie_credit=0.0) == pytest.approx(0.5)


def test_mean_margin():
    # (2 - 1 + 0 + 1) / 4 = 0.5
    assert m.mean_margin(CHOSEN, REJECTED) == pytest.approx(0.5)


def test_accuracy_by_group():
    # a: pairs 0 and 2 -> (1 + 0.5) / 2 = 0.75; b: pairs 1 and 3 -> (0 + 1) / 2 = 0.5
    result = m.accuracy_by_group(CHOSEN, REJECTED, ["a", "b", "a", "b"])
    assert list(result) == ["a", "b"]
    assert result == pytest.approx({"a": 0.75, "b": 0.5})


def test_pair_summary_keys():
    summary = m.pair_summary(CHOSEN, REJECTED)
    assert set(summary) == {m.ACCURACY, m.MEAN_MARGIN, m.ECE}
    assert summary[m.ACCURACY] == pytest.approx(0.625)


@pytest.mark.parametrize("func", [m.pairwise_accuracy, m.mean_margin, m.expected_calibration_error])
def test_pairwise_metrics_reject_bad_inputs(func):
    with pytest.raises(ValueError, match="chosen must not be empty"):
        func([], [])
    with pytest.raises(ValueError, match="same length"):
        func([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="rejected must be finite"):
        func([1.0, 2.0], [1.0, math.nan])
    with pytest.raises(ValueError, match="chosen must be 1-D"):
        func([[1.0, 2.0]], [1.0, 2.0])


def test_accuracy_by_group_rejects_misaligned_groups():
    with pytest.raises(ValueError, match="groups"):
        m.accuracy_by_group(CHOSEN, REJECTED, ["a", "b"])


def test_tie_credit_out_of_range():
    with pytest.raises(ValueError, match="tie_credit"):
        m.pairwise_accuracy(CHOSEN, REJECTED, tie_credit=2.0)


@settings(max_examples=50, derandomize=True, deadline=None)
@given(st.lists(st.tuples(st.integers(-3, 3), st.integers(-3, 3)), min_size=1, max_size=20))
def test_swapping_chosen_and_rejected_complements_accuracy(pairs):
    chosen, rejected = zip(*pairs)
    assert m.pairwise_accuracy(chosen, rejected) + m.pairwise_accuracy(rejected, chosen) == pytest.approx(1.0)


# ---------------------------------------------------------------- RewardBench

# Chat      = (1.0 * 100 + 0.5 * 28) / 128 = 114 / 128 = 0.890625
# Safety    = 0.25 (one subset)
# Reasoning = (0.6 * 447 + 0.9 * 164 + 0.5 * 164) / 775 = 497.8 / 775 = 0.642323 (the given counts, as the
#             rewardbench package weights; with its own math-prm count 984 it would be (math + mean(hep)) / 2 on a
#             full run)
# Chat Hard: no subset present, not reported.
RB_ACC = {"alpacaeval-easy": 1.0, "mt-bench-easy": 0.5, "donotanswer": 0.25,
          "math-prm": 0.6, "hep-cpp": 0.9, "hep-go": 0.5}
RB_COUNTS = {"alpacaeval-easy": 100, "mt-bench-easy": 28, "donotanswer": 136,
             "math-prm": 447, "hep-cpp": 164, "hep-go": 164}


def test_rewardbench_sections_hand_built():
    sections = rb.rewardbench_sections(RB_ACC, RB_COUNTS)
    assert list(sections) == [rb.RB_CHAT, rb.RB_SAFETY, rb.RB_REASONING]
    assert sections == pytest.approx({rb.RB_CHAT: 0.890625, rb.RB_SAFETY: 0.25, rb.RB_REASONING: 497.8 / 775})


def test_rewardbench_sections_match_upstream_formula_on_a_full_run():
    # Upstream: plain count weighting with EXAMPLE_COUNTS, where math-prm is stored as 984 = 6 * 164.
    rng = np.random.default_rng(0)
    accuracies = {subset: float(rng.uniform()) for subset in sorted(rb.REWARDBENCH_SUBSETS)}
    counts = rb.REWARDBENCH_EXAMPLE_COUNTS
    upstream = {
        section: sum(accuracies[s] * counts[s] for s in subsets) / sum(counts[s] for s in subsets)
        for section, subsets in rb.REWARDBENCH_SECTIONS.items()
    }
    assert rb.rewardbench_sections(accuracies) == pytest.approx(upstream)


def test_rewardbench_sections_reject_bad_inputs():
    with pytest.raises(ValueError, match="must not be empty"):
        rb.rewardbench_sections({}, RB_COUNTS)
    with pytest.raises(ValueError, match="not RewardBench's: \\['alpaca-easy'\\]"):
        rb.rewardbench_sections({"alpaca-easy": 0.5}, RB_COUNTS)
    with pytest.raises(ValueError, match="no entry for subset 'hep-rust'"):
        rb.rewardbench_sections({"hep-rust": 0.5}, RB_COUNTS)
    with pytest.raises(ValueError, match="1.5"):
        rb.rewardbench_sections({"hep-go": 1.5}, RB_COUNTS)
    with pytest.raises(ValueError, match="positive"):
        rb.rewardbench_sections({"hep-go": 0.5}, {"hep-go": 0})


def test_rewardbench_results_layout():
    results = rb.rewardbench_results("tiny-vrm", RB_ACC, RB_COUNTS)
    assert results[rb.RB_MODEL] == "tiny-vrm"
    assert results[rb.RB_MODEL_TYPE] == "Seq. Classifier"
    assert results[rb.RB_CHAT_TEMPLATE] is None
    assert results["hep-go"] == 0.5
    assert results[rb.RB_REASONING] == pytest.approx(497.8 / 775)
    assert rb.RB_SCORE not in results  # Chat Hard is missing
    json.dumps(results)


def test_rewardbench_results_score_is_mean_of_four_sections():
    # Chat 1.0, Chat Hard 0.5, Safety 0.0, Reasoning (0.5 * 984 + 1.0 * 164) / 1148 = 656 / 1148
    # -> Score (1.5 + 656 / 1148) / 4
    accuracies = {"alpacaeval-easy": 1.0, "mt-bench-hard": 0.5, "donotanswer": 0.0, "math-prm": 0.5, "hep-js": 1.0}
    results = rb.rewardbench_results("m", accuracies)
    assert results[rb.RB_SCORE] == pytest.approx((1.5 + 656 / 1148) / 4)


# ---------------------------------------------------------------- calibration

# margins 0, ln3, -ln3, ln19 -> confidence 0.5, 0.75, 0.75, 0.95; correct 0.5 (tie), 1, 0, 1
# 5 bins on [0.5, 1]: edges 0.5 0.6 0.7 0.8 0.9 1.0
#   bin 0: n=1, conf 0.5,  acc 0.5 -> gap 0
#   bin 2: n=2, conf 0.75, acc 0.5 -> gap 0.25
#   bin 4: n=1, conf 0.95, acc 1.0 -> gap 0.05
# ECE = (1 * 0 + 2 * 0.25 + 1 * 0.05) / 4 = 0.1375
ECE_CHOSEN = [0.0, LN3, 0.0, LN19]
ECE_REJECTED = [0.0, 0.0, LN3, 0.0]


def test_expected_calibration_error_hand_built():
    assert m.expected_calibration_error(ECE_CHOSEN, ECE_REJECTED, n_bins=5) == pytest.approx(0.1375)


def test_reliability_bins_hand_built():
    bins = m.reliability_bins(ECE_CHOSEN, ECE_REJECTED, n_bins=5)
    np.testing.assert_allclose(bins.edges, [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    np.testing.assert_array_equal(bins.counts, [1, 0, 2, 0, 1])
    np.testing.assert_allclose(bins.confidence, [0.5, np.nan, 0.75, np.nan, 0.95])
    np.testing.assert_allclose(bins.accuracy, [0.5, np.nan, 0.5, np.nan, 1.0])
    # the bins' overall accuracy is the pairwise accuracy: (0.5 + 1 + 0 + 1) / 4
    overall = np.nansum(bins.counts * bins.accuracy) / bins.counts.sum()
    assert overall == pytest.approx(m.pairwise_accuracy(ECE_CHOSEN, ECE_REJECTED)) == pytest.approx(0.625)


def test_calibration_temperature():
    # margin 2 ln3 at temperature 2 -> confidence 0.75, correct -> |1 - 0.75| = 0.25
    assert m.expected_calibration_error([2 * LN3], [0.0], temperature=2.0) == pytest.approx(0.25)


def test_calibration_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_bins"):
        m.reliability_bins(ECE_CHOSEN, ECE_REJECTED, n_bins=0)
    with pytest.raises(ValueError, match="temperature"):
        m.reliability_bins(ECE_CHOSEN, ECE_REJECTED, temperature=0.0)


# ---------------------------------------------------------------- Spearman and length bias


def test_spearman_hand_computed():
    # rank differences 0, -1, 1, 0 -> rho = 1 - 6 * 2 / (4 * (16 - 1)) = 0.8
    assert m.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)


def test_spearman_constant_input_is_nan_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(m.spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
        assert math.isnan(m.spearman([1.0, 2.0, 3.0], [0.1, 0.1, 0.1]))


def test_spearman_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="same length"):
        m.spearman([1.0, 2.0], [1.0, 2.0, 3.0])


LB_CHOSEN = [2.0, 1.0, 3.0, 0.0, 1.0]
LB_REJECTED = [1.0, 2.0, 1.0, 1.0, 1.0]  # credit per pair: 1, 0, 1, 0, 0.5
LEN_CHOSEN = [10, 10, 5, 7, 4]
LEN_REJECTED = [5, 5, 10, 7, 8]  # chosen longer: 0, 1; shorter: 2, 4; equal: 3


def test_length_bias_groups():
    # longer: (1 + 0) / 2 = 0.5; shorter: (1 + 0.5) / 2 = 0.75; equal: 0 / 1 = 0
    result = m.length_bias(LB_CHOSEN, LB_REJECTED, LEN_CHOSEN, LEN_REJECTED)
    assert result[m.ACC_CHOSEN_LONGER] == pytest.approx(0.5)
    assert result[m.ACC_CHOSEN_SHORTER] == pytest.approx(0.75)
    assert result[m.ACC_EQUAL_LENGTH] == pytest.approx(0.0)
    assert (result[m.N_CHOSEN_LONGER], result[m.N_CHOSEN_SHORTER], result[m.N_EQUAL_LENGTH]) == (2, 2, 1)


def test_length_bias_spearman_and_empty_group():
    # rewards 3, 1 | 2, 4 and lengths 30, 10 | 20, 40 rank identically -> rho = 1; no equal-length pair -> nan
    result = m.length_bias([3.0, 1.0], [2.0, 4.0], [30, 10], [20, 40])
    assert result[m.SPEARMAN_REWARD_LENGTH] == pytest.approx(1.0)
    assert math.isnan(result[m.ACC_EQUAL_LENGTH])
    assert result[m.N_EQUAL_LENGTH] == 0


def test_length_bias_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="same length"):
        m.length_bias(LB_CHOSEN, LB_REJECTED, LEN_CHOSEN[:3], LEN_REJECTED[:3])


def test_length_only_accuracy():
    # longer wins: 1, 1, 0, 0.5 (equal), 0 -> 2.5 / 5 = 0.5
    assert m.length_only_accuracy(LEN_CHOSEN, LEN_REJECTED) == pytest.approx(0.5)


# ---------------------------------------------------------------- objective matching


def test_match_objectives_hand_computed():
    # true 0 = [1, 2, 3], true 1 = [1, 0, 1]
    # learned 0 = [1, 0, 1]: corr 1 with true 1
    # learned 1 = [3, 2, 1]: corr -1 with true 0 (anti-correlated, must not be picked)
    # learned 2 = [1, 2, 4]: centred [-4/3, -1/3, 5/3] vs [-1, 0, 1]: 3 / (sqrt(42) / 3 * sqrt(2)) = 9 / sqrt(84)
    learned = np.array([[1, 3, 1], [0, 2, 2], [1, 1, 4]], dtype=float)
    true = np.array([[1, 1], [2, 0], [3, 1]], dtype=float)
    assignment, correlations = m.match_objectives(learned, true)
    np.testing.assert_array_equal(assignment, [2, 0])
    np.testing.assert_allclose(correlations, [9 / math.sqrt(84), 1.0])
    assert m.weight_recovery(learned, true) == pytest.approx((9 / math.sqrt(84) + 1.0) / 2)


def test_match_objectives_recovers_a_permutation():
    rng = np.random.default_rng(0)
    true = rng.dirichlet(np.ones(4), size=300)  # (N, K_true)
    permutation = np.array([3, 0, 4, 1])  # true column j lives in learned column permutation[j]
    learned = rng.normal(scale=0.05, size=(300, 5))  # column 2 stays pure noise
    learned[:, permutation] += true
    assignment, correlations = m.match_objectives(learned, true)
    np.testing.assert_array_equal(assignment, permutation)
    assert correlations.min() > 0.8


def test_match_objectives_constant_columns_correlate_zero():
    # 0.1 repeated is constant, though its float mean is not exactly 0.1
    assignment, correlations = m.match_objectives([[0.1], [0.1], [0.1]], [[1.0], [2.0], [3.0]])
    assert assignment.tolist() == [0]
    assert correlations.tolist() == [0.0]
    assert m.weight_recovery([[1.0], [2.0], [3.0]], [[7.0], [7.0], [7.0]]) == 0.0


def test_match_objectives_rejects_bad_shapes():
    with pytest.raises(ValueError, match="at least as many objectives"):
        m.match_objectives(np.ones((5, 2)), np.ones((5, 3)))
    with pytest.raises(ValueError, match="same number of rows"):
        m.match_objectives(np.ones((5, 3)), np.ones((4, 3)))
    with pytest.raises(ValueError, match="learned must be a non-empty 2-D array"):
        m.match_objectives(np.ones(5), np.ones((5, 1)))


# ---------------------------------------------------------------- best-of-N

BON_PROXY = [[0.1, 0.5, 0.5, 0.9],
             [0.7, 0.2, 0.8, 0.3]]
BON_TRUE = [[1.0, 2.0, 3.0, 0.0],
            [5.0, 1.0, 2.0, 4.0]]
# n=1: picks 0, 0 -> (1 + 5) / 2 = 3.0
# n=2: picks 1, 0 -> (2 + 5) / 2 = 3.5
# n=3: picks 1 (first of the tied 0.5s), 2 -> (2 + 2) / 2 = 2.0
# n=4: picks 3, 2 -> (0 + 2) / 2 = 1.0


def test_best_of_n_hand_computed():
    assert m.best_of_n(BON_PROXY, BON_TRUE, ns=[1, 2, 3, 4]) == pytest.approx({1: 3.0, 2: 3.5, 3: 2.0, 4: 1.0})


def test_best_of_n_default_ns_are_powers_of_two():
    assert list(m.best_of_n(BON_PROXY, BON_TRUE)) == [1, 2, 4]


def test_best_of_n_rejects_bad_inputs():
    with pytest.raises(ValueError, match="ns must hold integers in \\[1, 4\\], got 5"):
        m.best_of_n(BON_PROXY, BON_TRUE, ns=[5])
    with pytest.raises(ValueError, match="ns must hold"):
        m.best_of_n(BON_PROXY, BON_TRUE, ns=[0])
    with pytest.raises(ValueError, match="same shape"):
        m.best_of_n(BON_PROXY, [row[:3] for row in BON_TRUE])


def test_overoptimisation_spearman_hand_computed():
    # proxy curve: n=1 (0.1 + 0.7) / 2 = 0.4, n=2 (0.5 + 0.7) / 2 = 0.6, n=4 (0.9 + 0.8) / 2 = 0.85
    # true curve: 3.0, 3.5, 1.0; ranks 1 2 3 vs 2 3 1, d = -1 -1 2 -> rho = 1 - 6 * 6 / (3 * 8) = -0.5
    proxy_curve = m.best_of_n(BON_PROXY, BON_PROXY)
    assert proxy_curve == pytest.approx({1: 0.4, 2: 0.6, 4: 0.85})
    true_curve = m.best_of_n(BON_PROXY, BON_TRUE)
    assert m.overoptimisation_spearman(proxy_curve, true_curve) == pytest.approx(-0.5)
    assert m.overoptimisation_spearman([0.4, 0.6, 0.85], [3.0, 3.5, 1.0]) == pytest.approx(-0.5)


def test_overoptimisation_spearman_rejects_mismatched_curves():
    with pytest.raises(ValueError, match="same n"):
        m.overoptimisation_spearman({1: 0.0, 2: 1.0}, {1: 0.0, 4: 1.0})


# ---------------------------------------------------------------- uncertainty


def test_uncertainty_vs_error_hand_computed():
    # pair std = mean of the two: 0.2, 0.2, 0.6, 0.3; correct pairs 0, 1 -> 0.2; wrong pairs 2, 3 -> 0.45
    result = m.uncertainty_vs_error([0.1, 0.3, 0.5, 0.2], [0.3, 0.1, 0.7, 0.4], [True, True, False, False])
    assert result[m.STD_CORRECT] == pytest.approx(0.2)
    assert result[m.STD_WRONG] == pytest.approx(0.45)
    assert (result[m.N_CORRECT], result[m.N_WRONG]) == (2, 2)


def test_uncertainty_vs_error_edge_cases():
    assert math.isnan(m.uncertainty_vs_error([0.1], [0.1], [1])[m.STD_WRONG])
    with pytest.raises(ValueError, match="correct must be boolean"):
        m.uncertainty_vs_error([0.1], [0.1], [2])
    with pytest.raises(ValueError, match="reward_std_chosen must be non-negative"):
        m.uncertainty_vs_error([-0.1], [0.1], [1])


# ---------------------------------------------------------------- plots

PNG_MAGIC = b"\x89PNG"


def _is_png(path) -> bool:
    return path.stat().st_size > 0 and path.read_bytes()[:4] == PNG_MAGIC


def test_plots_write_png(tmp_path):
    rng = np.random.default_rng(0)
    written = [
        plots.plot_reliability(m.reliability_bins(ECE_CHOSEN, ECE_REJECTED, n_bins=5), tmp_path / "rel.png"),
        plots.plot_weight_heatmap({"code": rng.dirichlet(np.ones(4)), "chat": rng.dirichlet(np.ones(4))},
                                  tmp_path / "heat.png"),
        plots.plot_score_distributions(rng.normal(size=(50, 4)), tmp_path / "scores.png"),
        plots.plot_best_of_n({"vrm": {1: 0.1, 2: 0.3, 4: 0.4}, "oracle": {1: 0.1, 2: 0.5, 4: 0.8}},
                             tmp_path / "bon.png", true_curve_name="oracle"),
        plots.plot_metric_vs_param([0.01, 0.05, 0.2], {"vrm": [0.7, 0.72, 0.66], "bt": [0.69] * 3},
                                   tmp_path / "sweep" / "beta.png", "beta_w", "accuracy", log_x=True),
        plots.plot_metric_vs_param([1, 2, 3], [0.5, 0.6, 0.7], tmp_path / "single.png", "x", "y"),
    ]
    assert all(_is_png(path) for path in written)


def test_plots_reject_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="true_curve_name 'gold'"):
        plots.plot_best_of_n({"vrm": {1: 0.1}}, tmp_path / "bon.png", true_curve_name="gold")
    with pytest.raises(ValueError, match="shapes"):
        plots.plot_weight_heatmap({"a": np.ones(3), "b": np.ones(4)}, tmp_path / "heat.png")
    with pytest.raises(ValueError, match="categories"):  # learned and true weights side by side need the same rows
        plots.plot_weight_heatmap({"a": np.ones(3) / 3}, tmp_path / "heat.png", true_weights_by_category={"b": np.ones(2)})
    both = plots.plot_weight_heatmap({"a": np.ones(3) / 3}, tmp_path / "both.png",
                                     true_weights_by_category={"a": np.array([0.9, 0.1])}, true_names=["x", "y"])
    assert _is_png(both)
    with pytest.raises(ValueError, match="metric 'y' has 2 values"):
        plots.plot_metric_vs_param([1, 2, 3], [0.5, 0.6], tmp_path / "x.png", "x", "y")
