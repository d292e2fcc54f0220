"""The RLHF grid's summary, rebuilt from the cells present: results.json, results.md and the plots."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

METRICS = ("start_gold", "peak_gold", "final_gold", "sqrt_kl_at_peak", "final_sqrt_kl", "final_proxy",
           "final_cue_rate", "final_unparseable", "spearman_proxy_gold", "reward_share")


def mean_std(values: Sequence[float | None]) -> dict[str, Any]:
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return {"mean": float(np.mean(values)) if values else None,
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else None, "n": len(values), "values": values}


def fmt(stat: dict[str, Any] | None, digits: int = 3) -> str:
    if not stat or stat["mean"] is None:
        return "n/a"
    return f"{stat['mean']:.{digits}f}" + (f" ± {stat['std']:.{digits}f}" if stat["std"] is not None else "")


def summarise_rl(cells: list[dict[str, Any]]) -> dict[str, Any]:
    by_reward: dict[str, list[dict[str, Any]]] = {}
    for cell in cells:
        if cell["cell"].startswith("rl/"):
            by_reward.setdefault(cell["reward"], []).append(cell)
    out = {}
    for reward, members in by_reward.items():
        members.sort(key=lambda c: c["seed"])
        out[reward] = {"seeds": [c["seed"] for c in members],
                       **{m: mean_std([c["summary"].get(m) for c in members]) for m in METRICS}}
    return out


def summarise_bon(cells: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for cell in cells:
        if not cell["cell"].startswith("bon/"):
            continue
        entry = out.setdefault(cell["reward"], {"seeds": [], "curves": []})
        entry["seeds"].append(cell["seed"])
        entry["curves"].append(cell["curve"])
    for entry in out.values():
        points = zip(*entry.pop("curves"))
        entry["curve"] = [{"n": p[0]["n"], "sqrt_kl": p[0]["sqrt_kl"],
                           **{k: mean_std([q[k] for q in p]) for k in ("gold", "reward", "cue_rate")}}
                          for p in points]
        golds = [pt["gold"]["mean"] for pt in entry["curve"]]
        best = int(np.argmax(golds))
        entry["peak_gold"], entry["peak_n"] = golds[best], entry["curve"][best]["n"]
        entry["final_gold"] = golds[-1]
    return out


def write_markdown(summary: dict[str, Any], path: Path, command: str) -> None:
    rl, bon, rms = summary["rl"], summary["best_of_n"], summary["reward_models"]
    lines = ["# Reward hacking under optimisation (GRPO against each reward, synthetic gold tracked)", "",
             f"Command: `{command}`", "",
             "Mean ± sample std over seeds (each seed: the reward model's data draw and training, and the RL run). "
             "Held-out prompts; gold = the synthetic world's true reward of the attributes the text expresses "
             "(docs/rlhf.md); √KL to the SFT policy; Spearman = rank correlation of the optimised reward with the gold "
             "along the trajectory (the proxy-reward paper's monotonicity criterion); reward share = share of the "
             "GRPO steps' time spent in the reward call.", "",
             "| reward | seeds | start gold | peak gold | final gold | √KL at peak | final √KL | final cue rate | "
             "final unparseable | Spearman(reward, gold) | reward share |", "|---" * 11 + "|"]
    for reward, e in rl.items():
        lines.append(f"| {reward} | {e['seeds']} | " + " | ".join(
            fmt(e[m]) for m in ("start_gold", "peak_gold", "final_gold", "sqrt_kl_at_peak", "final_sqrt_kl",
                                "final_cue_rate", "final_unparseable", "spearman_proxy_gold", "reward_share")) + " |")
    if bon:
        lines += ["", "## Best-of-N from the SFT policy (same held-out prompts; KL = log N - (N-1)/N)", "",
                  "| reward | seeds | " + " | ".join(f"N={p['n']}" for p in next(iter(bon.values()))["curve"])
                  + " | cue rate at largest N |", "|---" * (3 + len(next(iter(bon.values()))["curve"])) + "|"]
        for reward, e in bon.items():
            lines.append(f"| {reward} | {e['seeds']} | " + " | ".join(fmt(p["gold"]) for p in e["curve"])
                         + f" | {fmt(e['curve'][-1]['cue_rate'])} |")
    if rms:
        lines += ["", "## Reward models (frozen MiniLM, cue on the chosen response with p = 0.95)", "",
                  "| model | seed | val acc (best) | source of overrides | seconds |", "|---|---|---|---|---|"]
        for r in rms:
            acc = r["metrics"].get("val/acc_best")
            lines.append(f"| {r['model']} | {r['seed']} | {acc:.3f} | {r['source']} | {r['seconds']:.0f} |"
                         if acc is not None else f"| {r['model']} | {r['seed']} | n/a | {r['source']} | "
                                                 f"{r['seconds']:.0f} |")
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def plot(cells: list[dict[str, Any]], summary: dict[str, Any], results: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rl_cells = [c for c in cells if c["cell"].startswith("rl/")]
    if not rl_cells:
        return
    rewards = list(dict.fromkeys(c["reward"] for c in sorted(rl_cells, key=lambda c: c["cell"])))
    colours = {r: plt.cm.tab10(i % 10) for i, r in enumerate(rewards)}
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    ax_kl, ax_steps, ax_proxy, ax_cue = axes.flat
    for cell in rl_cells:
        rows, colour = cell["rows"], colours[cell["reward"]]
        label = cell["reward"] if cell["seed"] == min(c["seed"] for c in rl_cells if c["reward"] == cell["reward"]) \
            else None
        ax_kl.plot([r["sqrt_kl"] for r in rows], [r["gold"] for r in rows], "-o", ms=3, color=colour, label=label,
                   alpha=0.8)
        ax_steps.plot([r["step"] for r in rows], [r["gold"] for r in rows], "-", color=colour, label=label)
        proxy = np.array([r["proxy"] for r in rows], dtype=float)
        spread = proxy.std() or 1.0
        ax_proxy.plot([r["step"] for r in rows], (proxy - proxy[0]) / spread, "-", color=colour, label=label)
        ax_cue.plot([r["step"] for r in rows], [r["cue_rate"] for r in rows], "-", color=colour, label=label)
    for reward, entry in summary["best_of_n"].items():
        if reward in colours:
            ax_kl.plot([p["sqrt_kl"] for p in entry["curve"]], [p["gold"]["mean"] for p in entry["curve"]], "--",
                       color=colours[reward], alpha=0.7)
    ax_kl.set(xlabel="√KL to the SFT policy (RL: solid, best-of-N: dashed)", ylabel="gold reward (held out)",
              title="gold against √KL")
    ax_steps.set(xlabel="GRPO step", ylabel="gold reward", title="gold against steps")
    ax_proxy.set(xlabel="GRPO step", ylabel="optimised reward, standardised (start = 0)",
                 title="the optimised reward against steps")
    ax_cue.set(xlabel="GRPO step", ylabel="share of responses with the cue", title="cue rate", ylim=(-0.02, 1.02))
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    ax_steps.legend(fontsize=7)
    fig.tight_layout()
    tmp = results / ".gold_vs_kl.png"
    fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    os.replace(tmp, results / "gold_vs_kl.png")


def summarise(cells: list[dict[str, Any]], results: Path, command: str) -> dict[str, Any]:
    results.mkdir(parents=True, exist_ok=True)
    rms = [{k: c[k] for k in ("model", "seed", "source", "metrics", "seconds")} for c in cells
           if c["cell"].startswith("rm/")]
    summary = {"command": command, "rl": summarise_rl(cells), "best_of_n": summarise_bon(cells), "reward_models": rms}
    tmp = results / "results.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1) + "\n")
    os.replace(tmp, results / "results.json")
    write_markdown(summary, results / "results.md", command)
    plot(cells, summary, results)
    return summary
