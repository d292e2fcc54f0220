"""Evaluations that need the synthetic benchmark's ground truth: weight recovery and best-of-N over-optimisation.

- **Weight recovery**: the learned objectives are identified only up to permutation, so each true objective
  (:data:`~vrm.data.synthetic.ATTRIBUTES`) is matched to a distinct learned one by
  :func:`~vrm.evaluation.metrics.match_objectives`; the score is the mean matched correlation of ``E[w | x]``
  with the category's true weights, over pairs.
- **Best-of-N**: for prompts drawn as in the benchmark, the generator (:func:`~vrm.data.synthetic.sample_candidates`)
  draws ``n_max`` candidates whose true rewards are known; a scorer picks the best of the first ``n``; the curve is
  the mean true reward of its pick as ``n`` grows, beside its own score of the pick and the oracle's curve. When
  a scorer is over-optimised its own score keeps rising while the true reward stalls or falls:
  :func:`~vrm.evaluation.metrics.overoptimisation_spearman` of the two curves measures it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vrm.data.progress import timed_step
from vrm.data.synthetic import ATTRIBUTES, sample_candidates, sample_prompts
from vrm.evaluation.metrics import (
    WEIGHT_RECOVERY,
    best_of_n,
    column_correlations,
    match_objectives,
    overoptimisation_spearman,
)
from vrm.scoring.base import Scorer
from vrm.scoring.scorer import RewardScorer

log = logging.getLogger(__name__)

# Keys of :func:`weight_recovery_report`.
MATCHED_OBJECTIVE = "matched_objective"
MATCHED_CORRELATION = "matched_correlation"
#: Mean per-prompt (max - min) of the learned and of the true weights, mean entropy of each, and the fraction of the
#: rated aspects matched to their own objective (the i-th aspect to objective i, where the aspect loss ties them).
SPREAD, TRUE_SPREAD = "spread", "true_spread"
ENTROPY, TRUE_ENTROPY = "entropy", "true_entropy"
OWN_OBJECTIVE = "matched_to_own_objective"
#: The mean correlation of objective i with true objective i, no matching (the aspect loss ties them): the recovery
#: the objectives' own names claim. It equals the weight recovery when every aspect is matched to its own objective,
#: and is lower where the matching swaps two (two true weight columns nearly collinear make that easy).
OWN_RECOVERY = "own_objective_recovery"

# Keys of :func:`best_of_n_report` (curves are lists aligned with ``ns``).
BON_NS = "ns"
BON_TRUE = "true_reward_of_pick"
BON_OWN = "own_score_of_pick"
BON_SPURIOUS = "spurious_rate_of_pick"
BON_ORACLE = "oracle_true_reward"
BON_SPEARMAN = "spearman_own_vs_true"
BON_PROMPTS = "num_prompts"
#: Name of the oracle curve (picks by the true reward) in best-of-N plots.
ORACLE = "oracle"


def weight_recovery_report(learned: np.ndarray, true: np.ndarray,
                           true_names: Sequence[str] = ATTRIBUTES) -> dict:
    """Weight recovery of learned weights ``(N, K)`` against true weights ``(N, K_true)`` over the same N prompts.

    Returns the mean matched correlation (:data:`~vrm.evaluation.metrics.WEIGHT_RECOVERY`), and per true
    objective the learned objective matched to it and their correlation.
    """
    learned, true = np.asarray(learned, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if true.ndim != 2 or true.shape[1] != len(true_names):
        raise ValueError(f"true must be (N, {len(true_names)}) for objectives {tuple(true_names)}, got {true.shape}")
    assignment, correlations = match_objectives(learned, true)
    return {
        WEIGHT_RECOVERY: float(np.mean(correlations)),
        MATCHED_OBJECTIVE: {name: int(k) for name, k in zip(true_names, assignment)},
        MATCHED_CORRELATION: {name: float(c) for name, c in zip(true_names, correlations)},
        SPREAD: weight_spread(learned), TRUE_SPREAD: weight_spread(true),
        ENTROPY: mean_entropy(learned), TRUE_ENTROPY: mean_entropy(true),
        OWN_OBJECTIVE: float(np.mean(assignment == np.arange(len(assignment)))),
        OWN_RECOVERY: own_objective_recovery(learned, true),
    }


def own_objective_recovery(learned: np.ndarray, true: np.ndarray) -> float:
    """Mean Pearson correlation of learned column i with true column i over ``i < K_true`` (``learned`` ``(N, K)``,
    ``K >= K_true``); a constant column correlates 0."""
    k = true.shape[1]
    return float(np.mean(np.diag(column_correlations(learned[:, :k], true))))


def weight_spread(weights: np.ndarray) -> float:
    """Mean over rows of (max - min) of a ``(N, K)`` array of weight vectors: 0 for uniform weights."""
    weights = np.asarray(weights, dtype=np.float64)
    return float(np.mean(weights.max(axis=1) - weights.min(axis=1)))


def mean_entropy(weights: np.ndarray) -> float:
    """Mean Shannon entropy (nats) of the rows of ``(N, K)`` weight vectors (ln K for uniform weights)."""
    weights = np.asarray(weights, dtype=np.float64)
    return float(np.mean(-(weights * np.log(np.clip(weights, 1e-12, None))).sum(axis=1)))


@dataclass(frozen=True)
class BestOfNSet:
    """Prompts and their generated candidates: ``responses[p][i]`` with ``true_rewards[p, i]``, ``(P, N_max)``."""

    prompts: list[dict]
    responses: list[list[str]]
    true_rewards: np.ndarray
    spurious: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.true_rewards.shape


def make_best_of_n_set(num_prompts: int, n_max: int, seed: int, spurious_prob: float = 0.5) -> BestOfNSet:
    """``num_prompts`` benchmark prompts with ``n_max`` candidates each; a pure function of its arguments."""
    for name, value in (("num_prompts", num_prompts), ("n_max", n_max)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"best_of_n.{name} must be a positive integer, got {value!r}")
    prompts = sample_prompts(num_prompts, seed)
    rng = np.random.default_rng(seed)  # one stream across prompts, so each prompt gets its own draws
    candidates = [sample_candidates(info, n_max, rng, spurious_prob=spurious_prob) for info in prompts]
    return BestOfNSet(
        prompts=prompts,
        responses=[[c["response"] for c in cands] for cands in candidates],
        true_rewards=np.array([[c["true_reward"] for c in cands] for cands in candidates], dtype=np.float64),
        spurious=np.array([[c["spurious"] for c in cands] for cands in candidates], dtype=bool),
    )


def score_best_of_n(scorer: Scorer, bon: BestOfNSet) -> np.ndarray:
    """The scorer's reward of every candidate, ``(P, N_max)``, in one batched call."""
    num_prompts, n_max = bon.shape
    prompts = [[{"role": "user", "content": info["prompt"]}] for info in bon.prompts for _ in range(n_max)]
    responses = [response for row in bon.responses for response in row]
    if isinstance(scorer, RewardScorer):  # a bar; another scorer: a line with the elapsed time
        rewards = scorer.score_details(prompts, responses, progress=True, desc="best-of-N")["reward"]
    else:
        with timed_step(f"best-of-N: {len(responses)} candidates with the {scorer.name} scorer", log):
            rewards = scorer.score(prompts, responses, question_types=["open"] * len(responses),
                                   references=[""] * len(responses))
    return np.asarray(rewards, dtype=np.float64).reshape(num_prompts, n_max)


def best_of_n_report(scores: np.ndarray, bon: BestOfNSet, ns: Sequence[int] | None = None) -> dict:
    """Best-of-N curves of a scorer whose candidate scores are ``scores`` ``(P, N_max)``.

    Per ``n`` (powers of two up to ``N_max`` by default): the mean true reward of the scorer's pick, the mean
    of its own score of the pick, the fraction of picks that carry the spurious opener, and the oracle's mean
    true reward; plus the Spearman correlation of the own-score curve with the true-reward curve.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != bon.shape:
        raise ValueError(f"scores must have the best-of-N set's shape {bon.shape}, got {scores.shape}")
    true_curve = best_of_n(scores, bon.true_rewards, ns)
    own_curve = best_of_n(scores, scores, ns)
    spurious_curve = best_of_n(scores, bon.spurious.astype(np.float64), ns)
    oracle_curve = best_of_n(bon.true_rewards, bon.true_rewards, ns)
    ns_sorted = sorted(true_curve)
    return {
        BON_PROMPTS: int(scores.shape[0]),
        BON_NS: ns_sorted,
        BON_TRUE: [true_curve[n] for n in ns_sorted],
        BON_OWN: [own_curve[n] for n in ns_sorted],
        BON_SPURIOUS: [spurious_curve[n] for n in ns_sorted],
        BON_ORACLE: [oracle_curve[n] for n in ns_sorted],
        BON_SPEARMAN: overoptimisation_spearman(own_curve, true_curve) if len(ns_sorted) > 1 else float("nan"),
    }
