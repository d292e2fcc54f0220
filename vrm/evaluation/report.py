"""What ``vrm-eval`` writes: the keys of ``eval.json``, its plain-JSON form and the printed markdown summary."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vrm.evaluation import metrics as m
from vrm.evaluation import rewardbench as rb
from vrm.evaluation.synthetic_eval import (
    BON_NS,
    BON_ORACLE,
    BON_OWN,
    BON_SPEARMAN,
    BON_SPURIOUS,
    BON_TRUE,
    ENTROPY,
    OWN_RECOVERY,
    SPREAD,
    TRUE_ENTROPY,
    TRUE_SPREAD,
)
from vrm.evaluation.variance import CUE_SHARE, TRUTH_SHARE

EVAL_JSON = "eval.json"

# Keys of eval.json (top level).
MODEL = "model"
SCORER = "scorer"
DATA = "data"
SPLITS = "splits"
MISSING_SPLITS = "missing_splits"
BEST_OF_N = "best_of_n"
CONFIG = "config"
# Keys of each split's results (besides the metrics module's ACCURACY, MEAN_MARGIN, ECE, WEIGHT_RECOVERY).
N_PAIRS = "n_pairs"
BY_SUBSET = "accuracy_by_subset"
REWARDBENCH = "rewardbench"
REWARDBENCH2 = "rewardbench2"
CALIBRATION = "calibration"
LENGTH = "length"
LENGTH_UNIT = "unit"
UNCERTAINTY = "uncertainty"
OBJECTIVES = "objectives"
WEIGHTS_BY_SUBSET = "weights_by_subset"
TRUE_WEIGHTS_BY_SUBSET = "true_weights_by_subset"
#: The synthetic splits' variance decomposition of the reward differences (vrm.evaluation.variance).
CUE_VARIANCE = "cue_variance"
SCORE_MEAN = "score_mean"
SCORE_STD = "score_std"
TRUE_REWARD_ACCURACY = "true_reward_accuracy"
SPURIOUS = "spurious_opener"
ACC_OPENER_ON_CHOSEN = "accuracy_opener_on_chosen"
ACC_OPENER_ON_REJECTED = "accuracy_opener_on_rejected"
PLOTS = "plots"
# Plot names (files are <split>_<name>.png, and best_of_n.png).
PLOT_RELIABILITY = "reliability"
PLOT_WEIGHTS = "weights_by_subset"
PLOT_SCORES = "objective_scores"


def to_json(value: Any) -> Any:
    """Plain JSON values: numpy to Python, non-finite floats to None, keys to strings."""
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


def _cell(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def format_report(results: Mapping[str, Any]) -> str:
    """A markdown summary of :func:`evaluate`'s results (JSON form)."""
    splits = results[SPLITS]
    lines = [f"## {results[MODEL]} ({results[SCORER]}) on {results[DATA]['format']} data", ""]
    header = ["split", "pairs", "accuracy", "ECE", "acc chosen longer", "acc chosen shorter", "spearman(r, len)",
              "length-only acc"]
    rows = []
    for split, r in splits.items():
        length = r[LENGTH]
        rows.append([split, r[N_PAIRS], r[m.ACCURACY], r[m.ECE], length[m.ACC_CHOSEN_LONGER],
                     length[m.ACC_CHOSEN_SHORTER], length[m.SPEARMAN_REWARD_LENGTH], length[m.LENGTH_ONLY_ACCURACY]])
    lines += _table(header, rows)

    synthetic = [s for s, r in splits.items() if TRUE_REWARD_ACCURACY in r]
    if synthetic:
        header = ["split", "true-reward acc", "acc opener on chosen", "acc opener on rejected", "weight recovery",
                  "own-objective recovery", "weight spread (true)", "weight entropy (true)",
                  "cue share of reward variance", "truth share"]
        rows = []
        for s in synthetic:
            recovery, variance = splits[s].get(m.WEIGHT_RECOVERY, {}), splits[s].get(CUE_VARIANCE, {})
            pair = [f"{_cell(recovery.get(a))} ({_cell(recovery.get(b))})" if recovery else None
                    for a, b in ((SPREAD, TRUE_SPREAD), (ENTROPY, TRUE_ENTROPY))]
            rows.append([s, splits[s][TRUE_REWARD_ACCURACY], splits[s][SPURIOUS][ACC_OPENER_ON_CHOSEN],
                         splits[s][SPURIOUS][ACC_OPENER_ON_REJECTED], recovery.get(m.WEIGHT_RECOVERY),
                         recovery.get(OWN_RECOVERY), *pair,
                         variance.get(CUE_SHARE), variance.get(TRUTH_SHARE)])
        lines += ["", "Synthetic benchmark (weight recovery: correlation with the true weights after matching the "
                  "objectives; own-objective: objective i against aspect i, no matching; weight spread: mean "
                  "per-prompt max - min of E[w|x]; cue share: the variance of the reward differences only the cue "
                  "explains, vrm.evaluation.variance):", ""] + _table(header, rows)

    uncertain = [s for s, r in splits.items() if UNCERTAINTY in r]
    if uncertain:
        header = ["split", "reward std (correct pairs)", "reward std (wrong pairs)", "correct", "wrong"]
        rows = [[s, splits[s][UNCERTAINTY][m.STD_CORRECT], splits[s][UNCERTAINTY][m.STD_WRONG],
                 splits[s][UNCERTAINTY][m.N_CORRECT], splits[s][UNCERTAINTY][m.N_WRONG]] for s in uncertain]
        lines += ["", "Uncertainty (higher on wrong pairs is useful):", ""] + _table(header, rows)

    subsets = list(dict.fromkeys(g for r in splits.values() for g in r.get(BY_SUBSET, {})))
    if subsets:
        header = ["subset"] + list(splits)
        rows = [[g] + [r.get(BY_SUBSET, {}).get(g) for r in splits.values()] for g in subsets]
        lines += ["", "Accuracy per subset:", ""] + _table(header, rows)

    for split, r in splits.items():
        if REWARDBENCH in r:
            sections = [s for s in rb.REWARDBENCH_SECTIONS if s in r[REWARDBENCH]]
            sections += [rb.RB_SCORE] if rb.RB_SCORE in r[REWARDBENCH] else []
            lines += ["", f"RewardBench sections ({split}):", ""]
            lines += _table(sections, [[r[REWARDBENCH][s] for s in sections]])
        if REWARDBENCH2 in r:
            scores = {k: v for k, v in r[REWARDBENCH2].items() if k not in (rb.RB_MODEL, rb.RB_MODEL_TYPE,
                                                                             rb.RB_CHAT_TEMPLATE)}
            lines += ["", f"RewardBench 2 ({split}; Ties by its own rule, Score = mean of the six):", ""]
            lines += _table(list(scores), [list(scores.values())])

    if BEST_OF_N in results:
        bon = results[BEST_OF_N]
        header = ["n"] + [str(n) for n in bon[BON_NS]]
        rows = [["true reward of pick"] + bon[BON_TRUE], ["own score of pick"] + bon[BON_OWN],
                ["picks with opener"] + bon[BON_SPURIOUS], ["oracle"] + bon[BON_ORACLE]]
        lines += ["", f"Best-of-N (spearman own vs true: {_cell(bon[BON_SPEARMAN])}):", ""] + _table(header, rows)
    return "\n".join(lines)
