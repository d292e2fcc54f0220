"""Issue 20's tables of the robustness cells: the weights' recovery, spread and entropy and the cue's share of the reward's
variance beside the accuracies (written to ``latents.md`` by ``run.py``'s summary)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments.robustness.grids import (
    BT_METHODS,
    CURVE_METHODS_V2,
    DEFAULT_STRENGTH,
    DEFAULT_TRAIN,
    FROZEN_METHODS,
    METHODS,
)
from experiments.robustness.run import (
    fmt,
    mean_std,
    setting_name,
)

#: The cells folder of issue 20's own protocol (grids groups_issue, groups_search, groups_no_ratings).
ISSUE_FOLDER = "issue_protocol"
#: Methods added to the frozen curves after the second default: the prompt-group and prompt-cluster posteriors.
GROUPS_CURVE_METHODS = ("vrm_groups", "vrm_clusters")

#: The latent measures of a cell, read at the picked epoch: (split, key) -> column title.
LATENT_COLUMNS = {("test", "weight_recovery"): "weight recovery",
                  ("test", "own_objective_recovery"): "own-objective recovery", ("test", "spread"): "spread",
                  ("test", "entropy"): "entropy", ("test", "matched_to_own_objective"): "aspects on own objective",
                  ("shifted", "cue_share"): "cue share (shifted)", ("shifted", "truth_share"): "truth share (shifted)"}


def latent_table(cells: list[dict[str, Any]], folder: str, methods: Sequence[str], last_epoch: bool = False
                 ) -> list[str]:
    """Issue 20's table for one cells folder at one setting: per method the weights' recovery, spread and entropy (test
    prompts), the cue's and the truth's share of the reward differences' variance (shifted), iid and shifted accuracy
    (mean ± std over seeds), and the shifted difference to the best fair baseline, paired by seed; every number at the
    epoch picked by in-distribution validation (``last_epoch``: at the last epoch)."""
    rows: dict[str, dict[int, dict[str, float]]] = {}
    for cell in cells:
        if cell["cells"] != folder or cell["method"] not in methods:
            continue
        epochs = cell["epochs"]
        best = epochs[-1] if last_epoch else \
            epochs[max(range(len(epochs)), key=lambda i: (epochs[i]["validation"]["acc"], -i))]
        values = {title: best[split].get(key, float("nan")) for (split, key), title in LATENT_COLUMNS.items()}
        values.update(iid=best["test"]["acc"], shifted=best["shifted"]["acc"])
        values.update({f"true {k}": best["test"].get(f"true_{k}", float("nan")) for k in ("spread", "entropy")})
        rows.setdefault(cell["method"], {})[cell["seed"]] = values
    baselines = [m for m in rows if m in BT_METHODS]
    if not baselines:
        return []
    best_bt = max(baselines, key=lambda m: np.mean([v["shifted"] for v in rows[m].values()]))
    truth = {k: [v[f"true {k}"] for r in rows.values() for v in r.values() if np.isfinite(v[f"true {k}"])]
             for k in ("spread", "entropy")}
    lines = [f"Best fair baseline on shifted: `{best_bt}`."
             + (f" True weights on the same prompts: spread {np.mean(truth['spread']):.3f}, entropy "
                f"{np.mean(truth['entropy']):.3f}." if truth["spread"] else ""), "",
             "| method | " + " | ".join(LATENT_COLUMNS.values()) + " | iid acc | shifted acc | Δ shifted vs best BT "
             "(paired) | seeds |", "|---" * (len(LATENT_COLUMNS) + 5) + "|"]
    for method in [m for m in methods if m in rows]:
        seeds = sorted(rows[method])
        cols = [fmt(mean_std([rows[method][s][t] for s in seeds])) for t in LATENT_COLUMNS.values()]
        common = [s for s in seeds if s in rows[best_bt]]
        delta = mean_std([rows[method][s]["shifted"] - rows[best_bt][s]["shifted"] for s in common])
        lines.append(f"| {method} | " + " | ".join(cols) + f" | {fmt(mean_std([rows[method][s]['iid'] for s in seeds]))}"
                     f" | {fmt(mean_std([rows[method][s]['shifted'] for s in seeds]))} | "
                     + ("—" if method == best_bt else fmt(delta)) + f" | {len(seeds)} |")
    return lines


def write_latent_tables(cells: list[dict[str, Any]], path: Path, command: str) -> None:
    """``latents.md``: :func:`latent_table` of the issue-20 folders (search and fresh seeds) at the default setting,
    and of the frozen curves' default setting."""
    lines = ["# Latents that earn their place (issue 20)", "", f"Command: `{command}`", ""]
    for folder, title in (("latents", "search seeds 0-4"), ("latents_fresh_seeds", "fresh seeds 5-9")):
        at_default = [c for c in cells if (c["strength"], c["num_train"]) == (DEFAULT_STRENGTH, DEFAULT_TRAIN)]
        table = latent_table(at_default, folder, list(METHODS))
        if table:
            lines += [f"## `{folder}` ({title}; p = {DEFAULT_STRENGTH}, {DEFAULT_TRAIN} pairs)", "", *table, ""]
    issue = [c for c in cells if c["cells"] == ISSUE_FOLDER]
    for last, pick in ((False, "the epoch picked by validation accuracy"), (True, "the last epoch")):
        table = latent_table(issue, ISSUE_FOLDER, list(METHODS), last_epoch=last)
        if table:
            lines += [f"## `{ISSUE_FOLDER}`: the issue's own protocol (1,200 pairs, frozen MiniLM, 10 epochs; "
                      f"{pick})", "", *table, ""]
    for strength, num_train in sorted({(c["strength"], c["num_train"]) for c in cells if c["cells"] == "frozen"}):
        subset = [c for c in cells if (c["cells"], c["strength"], c["num_train"]) == ("frozen", strength, num_train)]
        table = latent_table(subset, "frozen", [*FROZEN_METHODS, *CURVE_METHODS_V2, *GROUPS_CURVE_METHODS])
        if table and any(m in {c["method"] for c in subset} for m in CURVE_METHODS_V2):
            lines += [f"## frozen curves, {setting_name(strength, num_train)}", "", *table, ""]
    path.write_text("\n".join(lines) + "\n")
