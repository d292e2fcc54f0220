"""Plots for reward-model evaluation. Each function writes one PNG and returns its path.

Uses matplotlib's non-interactive Agg backend, so it runs on headless machines and in tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot is imported (ruff exempts this call from E402)

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from vrm.evaluation.metrics import ReliabilityBins

_DPI = 120


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path


def _objective_labels(k: int, names: Sequence[str] | None) -> list[str]:
    if names is None:
        return [f"obj {i}" for i in range(k)]
    if len(names) != k:
        raise ValueError(f"objective_names must have {k} entries, got {len(names)}")
    return list(names)


def plot_reliability(bins: ReliabilityBins, path: str | Path, title: str = "Reliability diagram") -> Path:
    """Accuracy against confidence per bin (bars) beside the diagonal of perfect calibration."""
    occupied = bins.counts > 0
    if not occupied.any():
        raise ValueError("bins holds no pairs (all counts are 0)")
    fig, ax = plt.subplots(figsize=(5, 5))
    lefts, widths = bins.edges[:-1], np.diff(bins.edges)
    ax.bar(lefts[occupied], bins.accuracy[occupied], width=widths[occupied], align="edge",
           edgecolor="black", alpha=0.7, label="accuracy")
    ax.plot(bins.confidence[occupied], bins.confidence[occupied], "o", color="tab:red", label="mean confidence")
    ax.plot([bins.edges[0], bins.edges[-1]], [bins.edges[0], bins.edges[-1]], "k--", label="perfect calibration")
    for left, width, accuracy, count in zip(lefts[occupied], widths[occupied], bins.accuracy[occupied],
                                            bins.counts[occupied]):
        ax.annotate(f"n={count}", (left + width / 2, accuracy), ha="center", va="bottom", fontsize=7)
    ax.set_xlim(bins.edges[0], bins.edges[-1])
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("confidence max(p, 1 - p)")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(loc="upper left", framealpha=0.9)
    return _save(fig, path)


def plot_weight_heatmap(weights_by_category: Mapping[str, np.ndarray], path: str | Path, *,
                        objective_names: Sequence[str] | None = None,
                        title: str = "Mean objective weights per category",
                        true_weights_by_category: Mapping[str, np.ndarray] | None = None,
                        true_names: Sequence[str] | None = None) -> Path:
    """Heat map of objective weights: one row per category, one column per objective.

    With ``true_weights_by_category`` (the same categories) the true weights are drawn beside the learned ones on one
    colour scale, from 0 to the larger maximum of the two, so a near-uniform E[w|x] looks as flat as it is.
    """
    if not weights_by_category:
        raise ValueError("weights_by_category must not be empty")
    matrix, categories = _weight_matrix(weights_by_category, "weights_by_category")
    panels = [(matrix, _objective_labels(matrix.shape[1], objective_names), title)]
    if true_weights_by_category is not None:
        true_matrix, true_categories = _weight_matrix(true_weights_by_category, "true_weights_by_category")
        if true_categories != categories:
            raise ValueError(f"true_weights_by_category has categories {true_categories}, the learned weights "
                             f"{categories}")
        panels.append((true_matrix, _objective_labels(true_matrix.shape[1], true_names), "true weights"))
    vmax = max(float(p[0].max()) for p in panels)
    width = sum(1.0 + 0.7 * p[0].shape[1] for p in panels)
    ratios = [p[0].shape[1] for p in panels] + [0.25]  # the panels, then the one colour bar
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(width + 1.5, 1.5 + 0.45 * matrix.shape[0]), squeeze=False,
                             gridspec_kw={"width_ratios": ratios})
    for ax, (values, labels, panel_title) in zip(axes[0][:-1], panels):
        image = ax.imshow(values, cmap="viridis", aspect="auto", vmin=0.0, vmax=vmax)
        if values.size <= 200:
            for (row, col), value in np.ndenumerate(values):
                ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if value > vmax / 2 else "white")
        ax.set_xticks(range(values.shape[1]), labels, rotation=45, ha="right")
        ax.set_yticks(range(values.shape[0]), categories)
        ax.set_xlabel("objective")
        spread = float(np.mean(values.max(axis=1) - values.min(axis=1)))
        ax.set_title(f"{panel_title}\n(mean max-min per row {spread:.2f})", fontsize=9)
    axes[0][0].set_ylabel("category")
    fig.colorbar(image, cax=axes[0][-1], label="weight (one scale)")
    return _save(fig, path)


def _weight_matrix(weights_by_category: Mapping[str, np.ndarray], name: str) -> tuple[np.ndarray, list[str]]:
    rows = {category: np.asarray(weights, dtype=np.float64) for category, weights in weights_by_category.items()}
    shapes = {category: row.shape for category, row in rows.items()}
    if len(set(shapes.values())) != 1 or any(len(shape) != 1 or shape[0] == 0 for shape in shapes.values()):
        raise ValueError(f"{name} must map to non-empty 1-D arrays of one length K, got shapes {shapes}")
    return np.stack(list(rows.values())), list(rows)


def plot_score_distributions(scores: np.ndarray, path: str | Path, *,
                             objective_names: Sequence[str] | None = None,
                             title: str = "Per-objective score distributions") -> Path:
    """Box plot of each objective's scores over N responses; ``scores`` is ``(N, K)``."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(f"scores must be a non-empty (N, K) array, got shape {scores.shape}")
    labels = _objective_labels(scores.shape[1], objective_names)
    fig, ax = plt.subplots(figsize=(1.5 + 0.7 * scores.shape[1], 4))
    ax.boxplot([scores[:, k] for k in range(scores.shape[1])], showfliers=False)
    ax.set_xticks(range(1, scores.shape[1] + 1), labels, rotation=45, ha="right")
    ax.axhline(0.0, color="gray", linewidth=0.8)
    ax.set_xlabel("objective")
    ax.set_ylabel("score")
    ax.set_title(f"{title} (N={scores.shape[0]})")
    return _save(fig, path)


def plot_best_of_n(curves: Mapping[str, Mapping[int, float]], path: str | Path, *,
                   true_curve_name: str | None = None, ylabel: str = "mean true reward of the pick",
                   title: str = "Best-of-N") -> Path:
    """Best-of-N curves, one line per scorer, n on a log2 axis; ``true_curve_name`` is drawn as a black dashed
    reference line (e.g. the oracle that picks by the true reward)."""
    if not curves:
        raise ValueError("curves must not be empty")
    if true_curve_name is not None and true_curve_name not in curves:
        raise ValueError(f"true_curve_name {true_curve_name!r} is not among the curves {sorted(curves)}")
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        if not curve:
            raise ValueError(f"curve {name!r} is empty")
        ns = sorted(curve)
        style = {"color": "black", "linestyle": "--"} if name == true_curve_name else {}
        ax.plot(ns, [curve[n] for n in ns], marker="o", label=name, **style)
    ax.set_xscale("log", base=2)
    all_ns = sorted({n for curve in curves.values() for n in curve})
    ax.set_xticks(all_ns, [str(n) for n in all_ns])
    ax.set_xlabel("n (candidates per prompt)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_metric_vs_param(values: Sequence[float], metric: Sequence[float] | Mapping[str, Sequence[float]],
                         path: str | Path, xlabel: str, ylabel: str, *, title: str | None = None,
                         log_x: bool = False) -> Path:
    """A sweep summary: ``metric`` against the swept parameter ``values``.

    ``metric`` is one sequence aligned with ``values``, or a dict of such sequences (e.g. one per model),
    drawn as separate lines with a legend.
    """
    if len(values) == 0:
        raise ValueError("values must not be empty")
    lines = dict(metric) if isinstance(metric, Mapping) else {ylabel: metric}
    if not lines:
        raise ValueError("metric must not be empty")
    for name, ys in lines.items():
        if len(ys) != len(values):
            raise ValueError(f"metric {name!r} has {len(ys)} values, but values has {len(values)}")
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, ys in lines.items():
        ax.plot(values, ys, marker="o", label=name)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title or f"{ylabel} vs {xlabel}")
    ax.grid(alpha=0.3)
    if isinstance(metric, Mapping):
        ax.legend()
    return _save(fig, path)
