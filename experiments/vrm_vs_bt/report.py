"""The VRM-vs-BT experiment's report: the metrics of its tables, the markdown and the plots (``run.py`` runs the
models and calls these)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vrm.evaluation import metrics as m
from vrm.evaluation import report as E
from vrm.evaluation import synthetic_eval as se

#: The white-box proxy's column in the tables.
PROXY = "proxy"

#: Metrics of the tables: key -> (label, path into an eval.json).
METRICS: dict[str, tuple[str, tuple]] = {
    "test_accuracy": ("accuracy, test (in-distribution)", (E.SPLITS, "test", m.ACCURACY)),
    "shifted_accuracy": ("accuracy, shifted (opener reversed)", (E.SPLITS, "shifted", m.ACCURACY)),
    "test_ece": ("ECE, test", (E.SPLITS, "test", m.ECE)),
    "shifted_ece": ("ECE, shifted", (E.SPLITS, "shifted", m.ECE)),
    "test_acc_chosen_longer": ("acc. when chosen is longer, test", (E.SPLITS, "test", E.LENGTH, m.ACC_CHOSEN_LONGER)),
    "test_acc_chosen_shorter": ("acc. when chosen is shorter, test",
                                (E.SPLITS, "test", E.LENGTH, m.ACC_CHOSEN_SHORTER)),
    "test_spearman_reward_length": ("spearman(reward, length), test",
                                    (E.SPLITS, "test", E.LENGTH, m.SPEARMAN_REWARD_LENGTH)),
    "weight_recovery": ("weight recovery, test", (E.SPLITS, "test", m.WEIGHT_RECOVERY, m.WEIGHT_RECOVERY)),
    "reward_std_correct": ("reward std on correct pairs, test", (E.SPLITS, "test", E.UNCERTAINTY, m.STD_CORRECT)),
    "reward_std_wrong": ("reward std on wrong pairs, test", (E.SPLITS, "test", E.UNCERTAINTY, m.STD_WRONG)),
    "bon_true_at_1": ("best-of-N true reward, n=1", (E.BEST_OF_N, se.BON_TRUE, 0)),
    "bon_true_at_max": ("best-of-N true reward, n=max", (E.BEST_OF_N, se.BON_TRUE, -1)),
    "bon_opener_at_max": ("best-of-N picks with opener, n=max", (E.BEST_OF_N, se.BON_SPURIOUS, -1)),
    "bon_spearman": ("best-of-N spearman(own, true)", (E.BEST_OF_N, se.BON_SPEARMAN)),
}


def best_of_n_summary(runs: Sequence[Mapping[str, Any]], proxy: Mapping[str, Any]) -> dict[str, Any]:
    """Per scorer: mean and std over seeds of the true reward of the pick at each n; the oracle curve."""
    curves: dict[str, list[list[float]]] = {}
    for run in runs:
        if run.get("best_of_n"):
            curves.setdefault(run["variant"], []).append(run["best_of_n"][se.BON_TRUE])
    if proxy.get("best_of_n"):
        curves[PROXY] = [proxy["best_of_n"][se.BON_TRUE]]
    reference = proxy.get("best_of_n") or next((r["best_of_n"] for r in runs if r.get("best_of_n")), None)
    if reference is None:
        return {}
    return {
        "ns": reference[se.BON_NS], "oracle": reference[se.BON_ORACLE],
        "curves": {name: {"mean": np.mean(c, axis=0).tolist(),
                          "std": np.std(c, axis=0, ddof=1).tolist() if len(c) > 1 else None, "n": len(c)}
                   for name, c in curves.items()},
    }


# ---------------------------------------------------------------- reporting


def _cell(stats: Mapping[str, Any]) -> str:
    if stats["mean"] is None:
        return "n/a"
    return f"{stats['mean']:.3f}" + (f" ± {stats['std']:.3f}" if stats["std"] is not None else "")


def markdown(results: Mapping[str, Any]) -> str:
    """The results as markdown: the command, the budget, a metric x model table (mean ± std over seeds)."""
    budget = results["budget"]
    columns = list(results["summary"])
    lines = [
        f"# VRM vs BT on the synthetic benchmark ({budget['name']} budget)", "",
        f"Command: `{results['command']}`", "",
        f"Device: {results['device']}; total time {results['total_seconds'] / 60:.1f} min; seeds "
        f"{list(budget['seeds'])} (training seed; the data is the same for every run).", "",
        "Budget (Hydra overrides): data `" + " ".join(budget["data"]) + "`; training `" + " ".join(budget["train"])
        + "`; evaluation `" + " ".join(budget["eval"]) + "`"
        + (f"; extra `{' '.join(results['extra_overrides'])}`" if results["extra_overrides"] else "") + ".", "",
        "Variants: " + "; ".join(f"`{v}` = `{' '.join(o)}`" for v, o in results["variants"].items())
        + f"; `{PROXY}` = the white-box proxy reward (no training, one run).", "",
        "Cells: mean ± sample standard deviation over seeds.", "",
        "| metric | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for key, (label, _) in METRICS.items():
        lines.append(f"| {label} | " + " | ".join(_cell(results["summary"][c][key]) for c in columns) + " |")
    lines.append("| training time (s) | " + " | ".join(
        _cell(results["summary"][c]["train_seconds"]) if "train_seconds" in results["summary"][c] else "n/a"
        for c in columns) + " |")
    context = ", ".join(f"{key} {'n/a' if value is None else f'{value:.4g}'}"
                        for key, value in results["data_context"].items())
    lines += ["", f"Data (same for every scorer): {context}."]
    if results.get("best_of_n"):
        bon = results["best_of_n"]
        lines += ["", "Best-of-N: mean true reward of the pick (± std over seeds)", "",
                  "| scorer | " + " | ".join(f"n={n}" for n in bon["ns"]) + " |",
                  "|---|" + "---|" * len(bon["ns"])]
        for name, curve in bon["curves"].items():
            cells = [f"{m:.3f}" + (f" ± {s:.3f}" if curve["std"] is not None else "")
                     for m, s in zip(curve["mean"], curve["std"] or [0.0] * len(curve["mean"]))]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("| oracle | " + " | ".join(f"{v:.3f}" for v in bon["oracle"]) + " |")
    if results.get("plots"):
        lines += ["", "Plots: " + ", ".join(f"[{name}]({name})" for name in results["plots"]) + "."]
    return "\n".join(lines)


def write_plots(results: Mapping[str, Any], runs: Sequence[Mapping[str, Any]], results_dir: Path) -> list[str]:
    """accuracy.png (bars with seed dots), best_of_n.png (curves ± std) and the first VRM seed's own plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    columns = list(results["summary"])
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(columns), 4))
    width = 0.38
    for offset, (key, label) in enumerate((("test_accuracy", "test"), ("shifted_accuracy", "shifted"))):
        x = np.arange(len(columns)) + (offset - 0.5) * width
        stats = [results["summary"][c][key] for c in columns]
        means = [s["mean"] if s["mean"] is not None else np.nan for s in stats]
        errors = [s["std"] or 0.0 for s in stats]
        ax.bar(x, means, width, yerr=errors, capsize=3, label=label, alpha=0.8)
        for xi, s in zip(x, stats):
            values = [v for v in s["values"] if v is not None]
            ax.plot([xi] * len(values), values, "k.", markersize=4)
    ax.axhline(0.5, color="gray", linewidth=0.8, linestyle=":")
    ax.set_xticks(np.arange(len(columns)), columns, rotation=20, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("pairwise accuracy")
    ax.set_title("Accuracy, mean ± std over seeds (dots: seeds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(results_dir / "accuracy.png", dpi=120)
    plt.close(fig)
    written.append("accuracy.png")

    bon = results.get("best_of_n")
    if bon:
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        ns = np.array(bon["ns"])
        for name, curve in bon["curves"].items():
            mean = np.array(curve["mean"])
            (line,) = ax.plot(ns, mean, marker="o", label=name)
            if curve["std"] is not None:
                std = np.array(curve["std"])
                ax.fill_between(ns, mean - std, mean + std, alpha=0.15, color=line.get_color())
        ax.plot(ns, bon["oracle"], "k--", label="oracle")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.set_xlabel("n (candidates per prompt)")
        ax.set_ylabel("mean true reward of the pick")
        ax.set_title("Best-of-N on synthetic prompts (band: ± std over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(results_dir / "best_of_n.png", dpi=120)
        plt.close(fig)
        written.append("best_of_n.png")

    for variant, plot in (("vrm", "test_weights_by_subset.png"), ("vrm", "test_reliability.png"),
                          ("bt", "test_reliability.png")):
        run = next((r for r in runs if r["variant"] == variant), None)
        source = Path(run["eval_json"]).parent / plot if run else None
        if source is not None and source.exists():
            name = f"{variant}_seed{run['seed']}_{plot}"
            shutil.copyfile(source, results_dir / name)
            written.append(name)
    return written
