"""Pure metrics for evaluating reward models.

Every scorer gives one scalar reward per (prompt, response); a preference pair is scored by the reward of
its chosen and of its rejected response. The functions here take those rewards as 1-D arrays (or lists)
aligned by pair and return plain floats and dicts, ready for JSON. Inputs are validated at the border:
empty, non-finite, wrongly shaped or mismatched inputs raise ``ValueError`` naming the argument.

Conventions shared by all pairwise metrics:

- A pair is *correct* when ``chosen > rejected``. A tie (equal rewards) gets ``tie_credit`` (0.5 by default:
  a scorer that cannot tell the two apart is right half the time). RewardBench itself counts a tie as wrong
  (``tie_credit=0.0`` reproduces it).
- Accuracy over an empty group is ``nan`` (reported, not raised), so that per-group tables keep their rows.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.optimize import linear_sum_assignment
from scipy.special import expit

ArrayLike = Sequence[float] | np.ndarray

# Keys under which evaluation results report the metrics of this module (one source for every caller).
ACCURACY = "accuracy"
MEAN_MARGIN = "mean_margin"
ECE = "ece"
LENGTH_ONLY_ACCURACY = "length_only_accuracy"
WEIGHT_RECOVERY = "weight_recovery"

# Keys of :func:`length_bias`.
ACC_CHOSEN_LONGER = "accuracy_chosen_longer"
ACC_CHOSEN_SHORTER = "accuracy_chosen_shorter"
ACC_EQUAL_LENGTH = "accuracy_equal_length"
N_CHOSEN_LONGER = "n_chosen_longer"
N_CHOSEN_SHORTER = "n_chosen_shorter"
N_EQUAL_LENGTH = "n_equal_length"
SPEARMAN_REWARD_LENGTH = "spearman_reward_length"

# Keys of :func:`uncertainty_vs_error`.
STD_CORRECT = "reward_std_correct"
STD_WRONG = "reward_std_wrong"
N_CORRECT = "n_correct"
N_WRONG = "n_wrong"


# ---------------------------------------------------------------- validation helpers


def _vector(name: str, values: ArrayLike, *, allow_empty: bool = False) -> np.ndarray:
    """``values`` as a finite float64 vector, else ValueError naming ``name``."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if array.size == 0 and not allow_empty:
        raise ValueError(f"{name} must not be empty")
    if not np.all(np.isfinite(array)):
        bad = array[~np.isfinite(array)][0]
        raise ValueError(f"{name} must be finite, got {bad} at index {int(np.argmin(np.isfinite(array)))}")
    return array


def _matrix(name: str, values: ArrayLike) -> np.ndarray:
    """``values`` as a finite, non-empty float64 matrix, else ValueError naming ``name``."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite, got {int((~np.isfinite(array)).sum())} non-finite entries")
    return array


def _same_length(**arrays: np.ndarray | Sequence) -> None:
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"inputs must have the same length, got {lengths}")


def _tie_credit(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"tie_credit must be in [0, 1], got {value}")
    return value


def _pair_credit(chosen: np.ndarray, rejected: np.ndarray, tie_credit: float) -> np.ndarray:
    """Per pair: 1 if chosen > rejected, ``tie_credit`` if equal, 0 otherwise."""
    return np.where(chosen > rejected, 1.0, np.where(chosen == rejected, tie_credit, 0.0))


def _rewards(chosen: ArrayLike, rejected: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    chosen_arr, rejected_arr = _vector("chosen", chosen), _vector("rejected", rejected)
    _same_length(chosen=chosen_arr, rejected=rejected_arr)
    return chosen_arr, rejected_arr


# ---------------------------------------------------------------- pairwise accuracy and margin


def pairwise_accuracy(chosen: ArrayLike, rejected: ArrayLike, *, tie_credit: float = 0.5) -> float:
    """Fraction of pairs whose chosen response gets the higher reward; a tie counts ``tie_credit`` (0.5)."""
    chosen_arr, rejected_arr = _rewards(chosen, rejected)
    return float(_pair_credit(chosen_arr, rejected_arr, _tie_credit(tie_credit)).mean())


def mean_margin(chosen: ArrayLike, rejected: ArrayLike) -> float:
    """Mean of ``chosen - rejected`` over pairs."""
    chosen_arr, rejected_arr = _rewards(chosen, rejected)
    return float(np.mean(chosen_arr - rejected_arr))


def accuracy_by_group(chosen: ArrayLike, rejected: ArrayLike, groups: Sequence[Hashable], *,
                      tie_credit: float = 0.5) -> dict[Hashable, float]:
    """Pairwise accuracy within each group (e.g. subset), keyed in order of first appearance."""
    chosen_arr, rejected_arr = _rewards(chosen, rejected)
    _same_length(chosen=chosen_arr, groups=groups)
    credit = _pair_credit(chosen_arr, rejected_arr, _tie_credit(tie_credit))
    members: dict[Hashable, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    return {group: float(credit[indices].mean()) for group, indices in members.items()}


def pair_summary(chosen: ArrayLike, rejected: ArrayLike) -> dict[str, float]:
    """The headline pairwise metrics of a scorer: accuracy, mean margin and calibration error."""
    return {
        ACCURACY: pairwise_accuracy(chosen, rejected),
        MEAN_MARGIN: mean_margin(chosen, rejected),
        ECE: expected_calibration_error(chosen, rejected),
    }


# ---------------------------------------------------------------- calibration


@dataclass(frozen=True)
class ReliabilityBins:
    """A reliability diagram's data: per confidence bin, its mean confidence, accuracy and pair count.

    ``edges`` has ``n_bins + 1`` entries; bin ``b`` is ``(edges[b], edges[b + 1]]`` (the first also holds
    ``edges[0]``). Empty bins have ``nan`` confidence and accuracy.
    """

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    counts: np.ndarray


def _check_calibration_args(n_bins: int, temperature: float) -> None:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be positive and finite, got {temperature}")


def reliability_bins(chosen: ArrayLike, rejected: ArrayLike, n_bins: int = 10, *,
                     temperature: float = 1.0) -> ReliabilityBins:
    """Bin pairs by the confidence of the Bradley-Terry preference ``p = sigmoid((r+ - r-) / temperature)``.

    Every pair's label is "chosen wins", so a pair is read symmetrically: the model predicts the side it
    favours, with confidence ``max(p, 1 - p)`` in [0.5, 1], and is correct when that side is the chosen one.
    A tie (``r+ == r-``, confidence 0.5) is half correct, as in :func:`pairwise_accuracy`; this keeps the
    bins' overall accuracy equal to the pairwise accuracy. The bins split [0.5, 1] into ``n_bins`` equal widths.
    """
    chosen_arr, rejected_arr = _rewards(chosen, rejected)
    _check_calibration_args(n_bins, temperature)
    margin = chosen_arr - rejected_arr
    confidence = expit(np.abs(margin) / temperature)
    correct = _pair_credit(margin, np.zeros_like(margin), tie_credit=0.5)
    edges = np.linspace(0.5, 1.0, n_bins + 1)
    index = np.searchsorted(edges[1:-1], confidence, side="left")
    counts = np.bincount(index, minlength=n_bins)
    occupied = counts > 0
    mean_confidence = np.full(n_bins, np.nan)
    mean_accuracy = np.full(n_bins, np.nan)
    mean_confidence[occupied] = np.bincount(index, weights=confidence, minlength=n_bins)[occupied] / counts[occupied]
    mean_accuracy[occupied] = np.bincount(index, weights=correct, minlength=n_bins)[occupied] / counts[occupied]
    return ReliabilityBins(edges=edges, confidence=mean_confidence, accuracy=mean_accuracy, counts=counts)


def expected_calibration_error(chosen: ArrayLike, rejected: ArrayLike, n_bins: int = 10, *,
                               temperature: float = 1.0) -> float:
    """ECE of the Bradley-Terry preference probability: ``sum_b (n_b / N) |acc_b - conf_b|``.

    Bins, confidence and correctness as in :func:`reliability_bins`.
    """
    bins = reliability_bins(chosen, rejected, n_bins, temperature=temperature)
    occupied = bins.counts > 0
    gaps = np.abs(bins.accuracy[occupied] - bins.confidence[occupied])
    return float(np.sum(bins.counts[occupied] * gaps) / bins.counts.sum())


# ---------------------------------------------------------------- rank correlation and length bias


def spearman(a: ArrayLike, b: ArrayLike) -> float:
    """Spearman rank correlation of ``a`` and ``b``; ``nan`` when either is constant (it is undefined then)."""
    a_arr, b_arr = _vector("a", a), _vector("b", b)
    _same_length(a=a_arr, b=b_arr)
    if np.ptp(a_arr) == 0 or np.ptp(b_arr) == 0:
        return math.nan
    return float(stats.spearmanr(a_arr, b_arr).statistic)


def length_only_accuracy(len_chosen: ArrayLike, len_rejected: ArrayLike) -> float:
    """Accuracy of the baseline that prefers the longer response; equal lengths count 0.5."""
    len_chosen_arr, len_rejected_arr = _vector("len_chosen", len_chosen), _vector("len_rejected", len_rejected)
    _same_length(len_chosen=len_chosen_arr, len_rejected=len_rejected_arr)
    return float(_pair_credit(len_chosen_arr, len_rejected_arr, tie_credit=0.5).mean())


def length_bias(chosen: ArrayLike, rejected: ArrayLike, len_chosen: ArrayLike,
                len_rejected: ArrayLike) -> dict[str, float | int]:
    """How much a scorer's accuracy leans on length.

    Returns the pairwise accuracy (ties 0.5) on pairs where the chosen response is longer, shorter and of
    equal length (``nan`` for an empty group), the three pair counts, and the Spearman correlation of reward
    with length over all ``2N`` responses (``nan`` if rewards or lengths are constant). A scorer that follows
    length scores high where the chosen is longer and low where it is shorter.
    """
    chosen_arr, rejected_arr = _rewards(chosen, rejected)
    len_chosen_arr, len_rejected_arr = _vector("len_chosen", len_chosen), _vector("len_rejected", len_rejected)
    _same_length(chosen=chosen_arr, len_chosen=len_chosen_arr, len_rejected=len_rejected_arr)
    credit = _pair_credit(chosen_arr, rejected_arr, tie_credit=0.5)
    longer, shorter = len_chosen_arr > len_rejected_arr, len_chosen_arr < len_rejected_arr
    equal = ~(longer | shorter)

    def accuracy(mask: np.ndarray) -> float:
        return float(credit[mask].mean()) if mask.any() else math.nan

    return {
        ACC_CHOSEN_LONGER: accuracy(longer),
        ACC_CHOSEN_SHORTER: accuracy(shorter),
        ACC_EQUAL_LENGTH: accuracy(equal),
        N_CHOSEN_LONGER: int(longer.sum()),
        N_CHOSEN_SHORTER: int(shorter.sum()),
        N_EQUAL_LENGTH: int(equal.sum()),
        SPEARMAN_REWARD_LENGTH: spearman(np.concatenate([chosen_arr, rejected_arr]),
                                         np.concatenate([len_chosen_arr, len_rejected_arr])),
    }


# ---------------------------------------------------------------- objective (weight) recovery


def column_correlations(learned: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Pearson correlation of every learned column with every true column, ``(K_learned, K_true)``.

    A constant column correlates 0 with everything (its correlation is undefined, and it carries no signal).
    """
    def centred_unit(matrix: np.ndarray) -> np.ndarray:
        centred = matrix - matrix.mean(axis=0)
        centred[:, np.ptp(matrix, axis=0) == 0] = 0.0
        norms = np.linalg.norm(centred, axis=0)
        return np.divide(centred, norms, out=np.zeros_like(centred), where=norms > 0)

    return np.clip(centred_unit(learned).T @ centred_unit(true), -1.0, 1.0)


def match_objectives(learned: ArrayLike, true: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Match each true objective to a distinct learned one, maximising the total Pearson correlation.

    ``learned`` is ``(N, K_learned)`` and ``true`` is ``(N, K_true)`` over the same N examples, with
    ``K_learned >= K_true`` (objectives are identified only up to permutation). Correlation is signed: an
    anti-correlated objective is a bad match. Returns ``assignment`` (``(K_true,)``, the learned column
    matched to each true column) and ``correlations`` (``(K_true,)``, the correlation of each matched pair).
    """
    learned_arr, true_arr = _matrix("learned", learned), _matrix("true", true)
    if learned_arr.shape[0] != true_arr.shape[0]:
        raise ValueError(f"learned and true must have the same number of rows (examples), got "
                         f"{learned_arr.shape[0]} and {true_arr.shape[0]}")
    if learned_arr.shape[0] < 2:
        raise ValueError(f"need at least 2 examples to correlate, got {learned_arr.shape[0]}")
    if learned_arr.shape[1] < true_arr.shape[1]:
        raise ValueError(f"learned must have at least as many objectives as true, got {learned_arr.shape[1]} "
                         f"< {true_arr.shape[1]}")
    correlation = column_correlations(learned_arr, true_arr)  # (K_learned, K_true)
    learned_index, true_index = linear_sum_assignment(-correlation)
    assignment = np.empty(true_arr.shape[1], dtype=np.int64)
    assignment[true_index] = learned_index
    return assignment, correlation[assignment, np.arange(true_arr.shape[1])]


def weight_recovery(learned: ArrayLike, true: ArrayLike) -> float:
    """Mean correlation of the matched (learned, true) objective pairs of :func:`match_objectives`."""
    return float(np.mean(match_objectives(learned, true)[1]))


# ---------------------------------------------------------------- best-of-N and over-optimisation


def best_of_n(proxy_scores: ArrayLike, true_scores: ArrayLike,
              ns: Sequence[int] | None = None) -> dict[int, float]:
    """Mean true score of the candidate a proxy picks among the first ``n`` of each prompt.

    ``proxy_scores`` and ``true_scores`` are ``(P, N_max)``: P prompts, N_max candidates each, aligned. For
    each ``n`` the proxy picks, per prompt, the argmax of its score over candidates ``0..n-1`` (the first on
    ties); the value is the mean over prompts of the picked candidate's true score. ``ns`` defaults to the
    powers of two up to ``N_max``. Passing the proxy as ``true_scores`` too gives the proxy's own curve.
    """
    proxy, true = _matrix("proxy_scores", proxy_scores), _matrix("true_scores", true_scores)
    if proxy.shape != true.shape:
        raise ValueError(f"proxy_scores and true_scores must have the same shape, got {proxy.shape} and {true.shape}")
    n_max = proxy.shape[1]
    if ns is None:
        ns = [2**k for k in range(n_max.bit_length()) if 2**k <= n_max]
    if len(ns) == 0:
        raise ValueError("ns must not be empty")
    for n in ns:
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or not 1 <= n <= n_max:
            raise ValueError(f"ns must hold integers in [1, {n_max}], got {n!r}")
    rows = np.arange(proxy.shape[0])
    return {int(n): float(true[rows, np.argmax(proxy[:, :n], axis=1)].mean()) for n in sorted(set(ns))}


def overoptimisation_spearman(curve_proxy_means: Mapping[int, float] | ArrayLike,
                              curve_true_means: Mapping[int, float] | ArrayLike) -> float:
    """Spearman correlation between the proxy's and the true best-of-N curves along n.

    Near 1: optimising the proxy harder keeps improving the true reward. Lower, or negative: the proxy is
    over-optimised. Curves are dicts keyed by n (as :func:`best_of_n` returns, same keys required) or
    sequences aligned by position. ``nan`` if a curve is constant.
    """
    if isinstance(curve_proxy_means, Mapping) != isinstance(curve_true_means, Mapping):
        raise ValueError("curve_proxy_means and curve_true_means must both be dicts keyed by n or both sequences")
    if isinstance(curve_proxy_means, Mapping):
        if set(curve_proxy_means) != set(curve_true_means):
            raise ValueError(f"curves must have the same n, got {sorted(curve_proxy_means)} and "
                             f"{sorted(curve_true_means)}")
        ns = sorted(curve_proxy_means)
        curve_proxy_means = [curve_proxy_means[n] for n in ns]
        curve_true_means = [curve_true_means[n] for n in ns]
    proxy_arr, true_arr = _vector("curve_proxy_means", curve_proxy_means), _vector("curve_true_means", curve_true_means)
    _same_length(curve_proxy_means=proxy_arr, curve_true_means=true_arr)
    return spearman(proxy_arr, true_arr)


# ---------------------------------------------------------------- uncertainty


def uncertainty_vs_error(reward_std_chosen: ArrayLike, reward_std_rejected: ArrayLike,
                         correct: ArrayLike) -> dict[str, float | int]:
    """Mean reward uncertainty of correctly and wrongly ranked pairs.

    A pair's uncertainty is the mean of its two responses' reward standard deviations. ``correct`` is
    boolean (or 0/1) per pair. A useful uncertainty is higher on wrong pairs. A mean over no pairs is ``nan``.
    """
    std_chosen = _vector("reward_std_chosen", reward_std_chosen)
    std_rejected = _vector("reward_std_rejected", reward_std_rejected)
    correct_arr = _vector("correct", correct)
    _same_length(reward_std_chosen=std_chosen, reward_std_rejected=std_rejected, correct=correct_arr)
    for name, std in (("reward_std_chosen", std_chosen), ("reward_std_rejected", std_rejected)):
        if np.any(std < 0):
            raise ValueError(f"{name} must be non-negative, got {std.min()}")
    if not np.all((correct_arr == 0) | (correct_arr == 1)):
        raise ValueError(f"correct must be boolean or 0/1, got {sorted(set(correct_arr.tolist()) - {0.0, 1.0})}")
    pair_std = (std_chosen + std_rejected) / 2
    right = correct_arr == 1

    def mean(mask: np.ndarray) -> float:
        return float(pair_std[mask].mean()) if mask.any() else math.nan

    return {STD_CORRECT: mean(right), STD_WRONG: mean(~right), N_CORRECT: int(right.sum()), N_WRONG: int((~right).sum())}
