"""``vrm-demo``: the main job on the embedded default.

Trains a VRM and its Bradley-Terry baseline with the same data, encoder, seed and budget, evaluates
both on the in-distribution and the shifted test split, exports the VRM, and prints a summary table.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from pathlib import Path

from vrm.cli.app import call_reporting_errors
from vrm.config.compose import compose_config
from vrm.metric_names import ACC_BEST, SHIFTED_ACC, TEST_ACC

#: The models the demo compares, in table order.
MODELS = ("vrm", "bt")
#: Table columns: metric key -> header.
COLUMNS = {ACC_BEST: "val acc (best)", TEST_ACC: "test acc (in-dist.)", SHIFTED_ACC: "shifted acc"}


def summary_table(results: dict[str, dict[str, float]], seconds: dict[str, float]) -> str:
    """A markdown table of each model's accuracy per split and its training time."""
    header = "| model | " + " | ".join(COLUMNS.values()) + " | train+eval time |"
    rule = "|---" * (len(COLUMNS) + 2) + "|"
    rows = [header, rule]
    for model, metrics in results.items():
        cells = [f"{metrics[k]:.3f}" if k in metrics else "n/a" for k in COLUMNS]
        rows.append(f"| {model} | " + " | ".join(cells) + f" | {seconds[model]:.0f} s |")
    return "\n".join(rows)


def run_demo(out_dir: Path, overrides: list[str]) -> dict:
    from vrm.cli.train import train_and_export as train

    results, seconds = {}, {}
    export_dir = out_dir / "export" / "vrm"
    for model in MODELS:
        extra = [f"model={model}"] + ([f"export_dir={export_dir}"] if model == "vrm" else [])
        cfg = compose_config(overrides + extra, out_dir / model)
        start = time.perf_counter()
        results[model] = train(cfg)
        seconds[model] = time.perf_counter() - start
    summary = {"results": results, "seconds": seconds, "export_dir": str(export_dir), "overrides": overrides}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = summary_table(results, seconds)
    (out_dir / "summary.md").write_text(table + "\n")
    print("\n" + table)
    print(f"\nVRM export: {export_dir}\nrun folders, logs and checkpoints: {out_dir}")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="vrm-demo",
        description="Train a VRM and a Bradley-Terry baseline on the embedded synthetic benchmark with the "
                    "local MiniLM, evaluate both on the in-distribution and shifted test splits, export the "
                    "VRM and print a summary table. Extra arguments are Hydra overrides applied to both runs "
                    "(e.g. trainer.max_epochs=1 data.synthetic.num_train=400).")
    parser.add_argument("--out", default=None, help="output folder (default runs/demo/<timestamp>)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for vrm-train")
    args = parser.parse_args(argv)
    out = Path(args.out or Path("runs") / "demo" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
    call_reporting_errors(run_demo, out, args.overrides)
