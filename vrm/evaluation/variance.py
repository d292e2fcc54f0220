"""How much of a reward's variance a planted cue explains beyond the true attributes (a variance decomposition).

On the synthetic benchmark every pair carries its responses' true attributes and which response has the cue. Within a
pair only the difference of the two rewards matters (a prompt's offset cancels in every comparison), so the
decomposition is of the within-pair reward differences ``d = r(y+) - r(y-)`` over a split's pairs, fitted by least
squares (with an intercept) on two groups of regressors:

- ``truth``: the differences of the five true attributes and of the true reward;
- ``cue``: the difference of the cue indicators (+1 cue on the chosen response, -1 on the rejected, 0 neither).

``truth_share`` is the R^2 of the truth alone; ``cue_share`` is what the cue adds to it (R^2 of both minus R^2 of the
truth: the variance only the cue explains); ``unexplained`` is the rest. Variance the two explain together goes to the
truth, so a reward that is a function of the true attributes has a cue share of 0 even where the cue is correlated with
them (on the ``shifted`` split the cue sits mostly on the worse response), and a cue share above 0 measures how much
of the reward follows the cue where the truth does not.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

#: Keys of :func:`cue_variance_report`.
CUE_SHARE, TRUTH_SHARE, UNEXPLAINED = "cue_share", "truth_share", "unexplained"


def r_squared(target: ArrayLike, design: ArrayLike) -> float:
    """R^2 of the least-squares fit of ``target`` (N,) on ``design`` ((N,) or (N, p)) plus an intercept."""
    y = np.asarray(target, dtype=np.float64)
    x = np.asarray(design, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    if y.ndim != 1 or len(y) < 2 or x.ndim != 2 or x.shape[0] != len(y):
        raise ValueError(f"need a target of N >= 2 values and a design of N rows, got {y.shape} and {x.shape}")
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(x))):
        raise ValueError("target and design must be finite")
    centred = y - y.mean()
    total = float(centred @ centred)
    if total == 0.0:
        return 0.0
    full = np.column_stack([np.ones(len(y)), x])
    coef, *_ = np.linalg.lstsq(full, y, rcond=None)
    residual = y - full @ coef
    return min(1.0, max(0.0, 1.0 - float(residual @ residual) / total))


def cue_variance_report(reward_chosen: ArrayLike, reward_rejected: ArrayLike, cue_chosen: ArrayLike,
                        cue_rejected: ArrayLike, attributes_chosen: ArrayLike, attributes_rejected: ArrayLike,
                        true_reward_chosen: ArrayLike, true_reward_rejected: ArrayLike) -> dict[str, float]:
    """Shares of the within-pair reward differences' variance: the truth's, the cue's beyond it, the rest."""
    diff = np.subtract(reward_chosen, reward_rejected, dtype=np.float64)
    cue = np.subtract(np.asarray(cue_chosen, dtype=np.float64), np.asarray(cue_rejected, dtype=np.float64))
    attributes = np.subtract(np.asarray(attributes_chosen, dtype=np.float64),
                             np.asarray(attributes_rejected, dtype=np.float64))
    truth = np.column_stack([attributes, np.subtract(true_reward_chosen, true_reward_rejected, dtype=np.float64)])
    truth_r2 = r_squared(diff, truth)
    both_r2 = r_squared(diff, np.column_stack([truth, cue]))
    return {TRUTH_SHARE: truth_r2, CUE_SHARE: max(0.0, both_r2 - truth_r2), UNEXPLAINED: max(0.0, 1.0 - both_r2)}


def split_cue_variance(reward_chosen: ArrayLike, reward_rejected: ArrayLike, rows) -> dict[str, float]:
    """:func:`cue_variance_report` of rewards against a synthetic split's ground-truth columns (a datasets split or
    a sequence of row dicts with ``spurious_*``, ``attributes_*`` and ``true_reward_*``)."""
    def column(name: str) -> Sequence:
        return [row[name] for row in rows] if isinstance(rows, (list, tuple)) else rows[name]

    return cue_variance_report(reward_chosen, reward_rejected, column("spurious_chosen"), column("spurious_rejected"),
                               column("attributes_chosen"), column("attributes_rejected"),
                               column("true_reward_chosen"), column("true_reward_rejected"))
