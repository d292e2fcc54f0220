"""Robustness to a planted cue on synthetic benchmark v2: BT, fair BT baselines, VRM and its ablations.

Every model trains through the project's own ``train()`` on configs composed from ``conf/`` (as ``vrm-train`` would),
with the MiniLM encoder frozen (``encoder.train_mode=frozen``: the feature cache makes each run a heads-only run) or
fully fine-tuned. An :class:`~epoch_eval.EpochEval` callback scores validation, test and shifted after every epoch, so
one run gives both checkpoint choices: the epoch of best in-distribution validation accuracy (what a user picks) and
the epoch of best cue-balanced validation accuracy (reported separately). Seeds set the data draw
(``data.synthetic.seed``) and the training seed alike.

Grids (:data:`GRIDS`): ``strength`` (frozen; cue strength p in train/validation/test, 1 - p on shifted),
``size`` (frozen; training pairs at the default p), ``finetune`` (full fine-tuning at the default p), ``search``
and ``confirm`` (VRM variants, on seeds 0-4 and then on fresh seeds 5-9). Each (grid, method, setting, seed) cell
writes ``experiments/results/robustness/cells/<grid>/<method>/<setting>_seed<S>.json`` and is skipped when that file
exists, so the command resumes where it stopped. The summary (``results.json``, ``results.md``, plots) is rebuilt
from all present cells at the end, or alone with ``--summarise``.

    python experiments/robustness/run.py                       # strength, size and finetune grids
    python experiments/robustness/run.py --grid strength       # one grid
    python experiments/robustness/run.py --quick               # a smoke run (results under robustness_quick/)
    python experiments/robustness/run.py --summarise           # tables and plots from the cells present
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the callback is instantiated by Hydra as experiments.robustness.epoch_eval.EpochEval
    sys.path.insert(0, str(ROOT))

from experiments import cells as cell_runner  # noqa: E402  (the shared resumable cell runner)
from experiments.robustness.grids import (  # noqa: E402  (the methods and grids)
    BT_METHODS,
    DEFAULT_GRIDS,
    DEFAULT_STRENGTH,
    DEFAULT_TRAIN,
    GRIDS,
    METHODS,
    QUICK,
    Grid,
)

CALLBACK = "experiments.robustness.epoch_eval.EpochEval"

#: Overrides every run shares: no checkpoints, logger, Lightning validation or test pass (the callback scores).
COMMON = ("data=synthetic", "logger=none", "callbacks=none", "trainer.enable_checkpointing=false",
          "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "trainer.limit_val_batches=0",
          "trainer.num_sanity_val_steps=0", "test=false")


def setting_name(strength: float, num_train: int) -> str:
    return f"p{strength:g}_n{num_train}"


def cell_key(grid: Grid, method: str, strength: float, num_train: int, seed: int) -> str:
    return f"{grid.cells}/{method}/{setting_name(strength, num_train)}_seed{seed}"


def cell_path(results: Path, grid: Grid, method: str, strength: float, num_train: int, seed: int) -> Path:
    return cell_runner.cell_path(results / "cells", cell_key(grid, method, strength, num_train, seed))


def cell_overrides(grid: Grid, method: str, strength: float, num_train: int, seed: int, out: Path) -> list[str]:
    val, test, shifted = grid.eval_sizes
    data = [f"data.synthetic.seed={seed}", f"data.synthetic.cue_strength={strength}",
            f"data.synthetic.num_train={num_train}", f"data.synthetic.num_validation={val}",
            f"data.synthetic.num_test={test}", f"data.synthetic.num_shifted={shifted}"]
    return [*COMMON, *data, *grid.train, *METHODS[method], f"seed={seed}",
            f"+callbacks.epoch_eval._target_={CALLBACK}", f"+callbacks.epoch_eval.out={out}"]


def run_cell(grid: Grid, method: str, strength: float, num_train: int, seed: int, runs: Path) -> dict[str, Any]:
    """Train one cell through train(); its record: per-epoch scores, data truth, overrides and time."""
    from vrm.config.compose import compose_config
    from vrm.training.train import train

    history = runs / grid.cells / method / f"{setting_name(strength, num_train)}_seed{seed}"
    overrides = cell_overrides(grid, method, strength, num_train, seed, history / "epochs.json")
    print(f"[{grid.name}] {method} {setting_name(strength, num_train)} seed {seed}", flush=True)
    start = time.perf_counter()
    train(compose_config(overrides, history))
    seconds = time.perf_counter() - start
    record = json.loads((history / "epochs.json").read_text())
    record.update(cells=grid.cells, method=method, strength=strength, num_train=num_train, seed=seed,
                  seconds=seconds, overrides=overrides)
    print(f"    {seconds:.1f} s; picked by val: {json.dumps(selected(record, 'acc'))}", flush=True)
    return record


def share_bt_features(done: set[Path]) -> None:
    """Give BT runs the h(x, y) that VRM runs cached: a VRM cache file (needs_prompt) holds the same response
    features as the BT file of the same key with needs_prompt false, so write that file instead of encoding again."""
    from safetensors import safe_open

    from vrm.training.feature_cache import (
        H_CHOSEN,
        H_REJECTED,
        feature_cache_dir,
        feature_key,
        load_features,
        save_features,
    )

    for path in sorted(feature_cache_dir().glob("*.safetensors")):
        if path in done:
            continue
        done.add(path)
        with safe_open(str(path), "pt") as handle:
            parts = json.loads((handle.metadata() or {}).get("key_parts", "{}"))
        if not parts.get("needs_prompt"):
            continue
        parts["needs_prompt"] = False
        twin = feature_cache_dir() / f"{feature_key(parts)}.safetensors"
        features = None if twin.exists() else load_features(path)
        if features is not None:
            save_features(twin, {k: features[k] for k in (H_CHOSEN, H_REJECTED)},
                          metadata={"key_parts": json.dumps(parts, sort_keys=True, default=str)})
        done.add(twin)


def run_grid(grid: Grid, results: Path, runs: Path) -> None:
    """Every missing cell of ``grid`` (:func:`experiments.cells.run_cells`); per (setting, seed) the VRM methods
    first, so BT reuses their features."""
    shared: set[Path] = set()
    frozen = "encoder.train_mode=frozen" in grid.train

    def compute(method: str, strength: float, num_train: int, seed: int) -> dict[str, Any]:
        if frozen and method in BT_METHODS:
            share_bt_features(shared)
        return run_cell(grid, method, strength, num_train, seed, runs)

    plan = [(cell_key(grid, method, strength, num_train, seed),
             lambda m=method, p=strength, n=num_train, s=seed: compute(m, p, n, s))
            for strength, num_train, seeds in grid.settings for seed in seeds
            for method in sorted(grid.methods, key=lambda name: name in BT_METHODS)]
    cell_runner.run_cells(plan, results / "cells", label=f"robustness {grid.name}")


# ---------------------------------------------------------------- summary


def selected(record: dict[str, Any], criterion: str) -> dict[str, float]:
    """Test and shifted scores at the first epoch of best validation ``criterion`` (acc or acc_cue_balanced)."""
    epochs = record["epochs"]
    best = max(range(len(epochs)), key=lambda i: (epochs[i]["validation"][criterion], -i))
    e = epochs[best]
    return {"epoch": e["epoch"], "val_acc": e["validation"]["acc"],
            "val_acc_cue_balanced": e["validation"]["acc_cue_balanced"],
            "test_acc": e["test"]["acc"], "test_ece": e["test"]["ece"],
            "shifted_acc": e["shifted"]["acc"], "shifted_ece": e["shifted"]["ece"]}


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    values = [float(v) for v in values if v is not None and math.isfinite(v)]
    return {"mean": float(np.mean(values)) if values else None,
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else None, "n": len(values), "values": values}


def load_cells(results: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((results / "cells").glob("*/*/*.json"))]


def summarise_cells(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Per (grid, setting, method): mean and std over seeds of the scores picked by each criterion, and the data."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for cell in sorted(cells, key=lambda c: c["seed"]):
        key = (cell["cells"], setting_name(cell["strength"], cell["num_train"]), cell["method"])
        groups.setdefault(key, []).append(cell)
    summary: dict[str, Any] = {}
    order = list(METHODS)

    def position(item: tuple[tuple[str, str, str], list[dict[str, Any]]]) -> tuple:
        (cells_name, _, method), members = item
        return cells_name, members[0]["strength"], members[0]["num_train"], order.index(method)

    for (cells_name, setting, method), members in sorted(groups.items(), key=position):
        entry: dict[str, Any] = {"strength": members[0]["strength"], "num_train": members[0]["num_train"],
                                 "seeds": [c["seed"] for c in members],
                                 "seconds": mean_std([c["seconds"] for c in members])}
        for criterion, label in (("acc", "by_val"), ("acc_cue_balanced", "by_cue_balanced_val")):
            picks = [selected(c, criterion) for c in members]
            entry[label] = {k: mean_std([p[k] for p in picks]) for k in picks[0]}
        entry["data"] = {split: {k: mean_std([c["data"][split][k] for c in members])
                                 for k in ("oracle_acc", "cue_rule_acc")} for split in members[0]["data"]}
        summary.setdefault(cells_name, {}).setdefault(setting, {})[method] = entry
    return summary


def fmt(stat: dict[str, Any] | None) -> str:
    if not stat or stat["mean"] is None:
        return "n/a"
    return f"{stat['mean']:.3f}" + (f" ± {stat['std']:.3f}" if stat["std"] is not None else "")


def grid_table(settings: dict[str, Any], metric: str, pick: str = "by_val") -> list[str]:
    """Methods (rows) x settings (columns) of one metric, plus the oracle and cue-rule rows."""
    names = list(settings)
    methods = [m for m in METHODS if sum(m in settings[s] for s in names) > 1]  # on the curve, not one point
    lines = ["| method | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for method in methods:
        cells = [fmt(settings[s][method][pick][metric]) if method in settings[s] else "" for s in names]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    split = metric.split("_")[0]
    if metric.endswith("_acc"):
        for row in ("oracle_acc", "cue_rule_acc"):
            cells = [fmt(next(iter(settings[s].values()))["data"][split][row]) for s in names]
            lines.append(f"| *{row.replace('_acc', '')} ({split})* | " + " | ".join(cells) + " |")
    return lines


def default_table(entries: dict[str, Any]) -> list[str]:
    """One setting: every method's scores (both picks), time."""
    cols = [("by_val", "test_acc"), ("by_val", "shifted_acc"), ("by_val", "test_ece"), ("by_val", "shifted_ece"),
            ("by_cue_balanced_val", "test_acc"), ("by_cue_balanced_val", "shifted_acc")]
    lines = ["| method | iid acc | shifted acc | iid ECE | shifted ECE | iid acc (balanced-val pick) | "
             "shifted acc (balanced-val pick) | seconds/run |", "|---" * 8 + "|"]
    for method, e in entries.items():
        lines.append(f"| {method} | " + " | ".join(fmt(e[p][k]) for p, k in cols)
                     + f" | {e['seconds']['mean']:.0f} |")
    data = next(iter(entries.values()))["data"]
    lines.append("")
    lines.append("Data (mean over seeds): " + "; ".join(
        f"{split}: oracle {fmt(d['oracle_acc'])}, cue rule {fmt(d['cue_rule_acc'])}" for split, d in data.items()))
    return lines


def paired_differences(entries: dict[str, Any]) -> list[str]:
    """Each non-baseline method minus the best fair baseline (the BT method of highest mean shifted accuracy), paired
    by seed (a seed is one data draw, shared by every method): mean ± std of the per-seed differences."""
    baselines = [m for m in entries if m in BT_METHODS]
    if not baselines:
        return []
    best = max(baselines, key=lambda m: entries[m]["by_val"]["shifted_acc"]["mean"])
    lines = [f"Paired by seed against the best fair baseline here, `{best}` (difference of the means ± std of the "
             "per-seed differences):", "", "| method | Δ shifted acc | Δ iid acc | seeds |", "|---|---|---|---|"]
    for method, e in entries.items():
        if method == best:
            continue
        common = [i for i, seed in enumerate(e["seeds"]) if seed in entries[best]["seeds"]]
        deltas = {}
        for metric in ("shifted_acc", "test_acc"):
            ours = e["by_val"][metric]["values"]
            theirs = dict(zip(entries[best]["seeds"], entries[best]["by_val"][metric]["values"]))
            deltas[metric] = mean_std([ours[i] - theirs[e["seeds"][i]] for i in common])
        lines.append(f"| {method} | {fmt(deltas['shifted_acc'])} | {fmt(deltas['test_acc'])} | {len(common)} |")
    return lines


def write_markdown(summary: dict[str, Any], grids: dict[str, Grid], path: Path, command: str) -> None:
    lines = ["# Robustness to a planted cue (synthetic benchmark v2)", "", f"Command: `{command}`", "",
             "Cells: mean ± sample std over seeds (each seed draws its own data and initialisation). Checkpoints: the "
             "epoch of best in-distribution validation accuracy unless a column says *balanced-val pick* (the epoch "
             "of best cue-balanced validation accuracy). Oracle = the true reward's accuracy on the labels; cue rule "
             "= always prefer the response with the cue.", ""]
    for name, settings in summary.items():
        members = [g for g in grids.values() if g.cells == name]
        lines += [f"## Cells `{name}` (grids {', '.join(g.name for g in members)})", ""]
        for grid in members:
            seeds = "; ".join(f"{setting_name(p, n)}: seeds {list(s)}" for p, n, s in grid.settings)
            lines += [f"Grid `{grid.name}`: training overrides `{' '.join(grid.train)}`; validation/test/shifted "
                      f"pairs {grid.eval_sizes}; planned {seeds}." + (f" {grid.notes}." if grid.notes else ""), ""]
        for curve, subset in curves(settings).items():
            for metric, title in (("shifted_acc", "shifted accuracy"), ("test_acc", "in-distribution accuracy"),
                                  ("shifted_ece", "shifted ECE")):
                lines += [f"### {title} against {curve}", "", *grid_table(subset, metric), ""]
        for setting, entries in settings.items():
            seeds = sorted({seed for e in entries.values() for seed in e["seeds"]})
            lines += [f"### {setting}", "", f"Seeds present: {seeds}.", "", *default_table(entries), ""]
            if len(entries) > 1:
                lines += [*paired_differences(entries), ""]
    path.write_text("\n".join(lines) + "\n")


def plot_curve(settings: dict[str, Any], x_key: str, x_label: str, path: Path, log_x: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(settings, key=lambda s: next(iter(settings[s].values()))[x_key])
    xs = [next(iter(settings[s].values()))[x_key] for s in names]
    methods = [m for m in METHODS if all(m in settings[s] for s in names)]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for ax, metric, title in ((axes[0], "shifted_acc", "shifted (cue reversed)"),
                              (axes[1], "test_acc", "in distribution (test)")):
        for method in methods:
            stats = [settings[s][method]["by_val"][metric] for s in names]
            ax.errorbar(xs, [st["mean"] for st in stats], yerr=[st["std"] or 0 for st in stats], marker="o",
                        capsize=3, label=method, linestyle="--" if method.startswith("bt") else "-")
        split = metric.split("_")[0]
        for row, style in (("oracle_acc", "k:"), ("cue_rule_acc", "r:")):
            ax.plot(xs, [next(iter(settings[s].values()))["data"][split][row]["mean"] for s in names], style,
                    label=row.replace("_acc", ""))
        ax.set_title(f"accuracy, {title}")
        ax.set_xlabel(x_label)
        if log_x:
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("pairwise accuracy")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def curves(settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The settings of the strength curve (at the default training size) and of the size curve (at the default
    strength), where they have more than one point."""
    def at(key: str, value: float) -> dict[str, Any]:
        return {s: e for s, e in settings.items() if next(iter(e.values()))[key] == value}

    found = {"cue strength": at("num_train", DEFAULT_TRAIN), "training pairs": at("strength", DEFAULT_STRENGTH)}
    return {name: subset for name, subset in found.items() if len(subset) > 1}


def summarise(results: Path, grids: dict[str, Grid], command: str) -> dict[str, Any]:
    from experiments.robustness.latent_tables import write_latent_tables

    cells = load_cells(results)
    write_latent_tables(cells, results / "latents.md", command)
    summary = summarise_cells(cells)
    (results / "results.json").write_text(json.dumps({"command": command, "summary": summary}, indent=1) + "\n")
    write_markdown(summary, grids, results / "results.md", command)
    found = curves(summary.get("frozen", {}))
    if "cue strength" in found:
        plot_curve(found["cue strength"], "strength", "cue strength p (train/test; shifted 1 - p)",
                   results / "accuracy_vs_cue_strength.png")
    if "training pairs" in found:
        plot_curve(found["training pairs"], "num_train", f"training pairs (p = {DEFAULT_STRENGTH})",
                   results / "accuracy_vs_train_size.png", log_x=True)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", action="append", choices=sorted(GRIDS), help="grids to run (default: "
                        + ", ".join(DEFAULT_GRIDS) + ")")
    parser.add_argument("--quick", action="store_true", help="a smoke run: one seed, 200 pairs, 2 epochs")
    parser.add_argument("--summarise", action="store_true", help="only rebuild the summary from the cells present")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    grids = {"quick": QUICK} if args.quick else GRIDS
    results = ROOT / "experiments" / "results" / ("robustness_quick" if args.quick else "robustness")
    runs = ROOT / "runs" / ("robustness_quick" if args.quick else "robustness")
    command = "python experiments/robustness/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if not args.summarise:
        for name in (["quick"] if args.quick else args.grid or DEFAULT_GRIDS):
            run_grid(grids[name], results, runs)
    summarise(results, grids, command.strip())
    print(f"results: {results / 'results.md'}")


if __name__ == "__main__":
    main()
