"""Padding in training: real tokens / processed tokens of the training loader, default order vs length-grouped.

On a preference file whose prompt and response lengths follow HH-RLHF's (``experiments/hh_lengths.py``, which
names the published statistics), the training split goes through the real data module (``vrm.training.build``,
MiniLM's tokenizer, ``data.max_length``) for one epoch in each batch order and counts, per batch of 2B rows
(B chosen, B rejected):

- **real tokens**: the attention mask's ones;
- **processed by a padded pass**: 2B x the batch's longest row (what one encoder pass computes);
- **processed with length_chunks=N**: what the encoder computes when it splits each batch into at most N
  length-sorted passes, each trimmed to its longest row (``vrm.models.pooling.length_groups``, the same cut the
  model makes; MiniLM's config sets 3).

The ratio real / processed is printed side by side for ``data.group_by_length=false`` (a random order) and
``true`` (transformers' ``LengthGroupedSampler`` order, resumable: ``vrm.training.resumable``). No timing: the
ratio is a count, the same on any machine.

    python experiments/bench_padding.py                       # 2000 pairs, max_length 512, batch 16
    python experiments/bench_padding.py --pairs 500 --batch-size 8 --max-length 256
    OMP_NUM_THREADS=1 python experiments/bench_padding.py --quality-seeds 0 1 2   # does the order change results?

``--quality-seeds`` trains the default run (VRM, MiniLM fine-tuned; 600 training pairs, 2 epochs) in both orders
per seed, one process per run, appending each finished run to ``bench_padding_quality.jsonl`` (a rerun skips the
runs already there), and prints the metrics side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # measure this checkout's vrm, whichever copy is pip-installed
sys.path.insert(0, str(Path(__file__).resolve().parent))  # hh_lengths

import torch  # noqa: E402
from hh_lengths import write_hh_length_pairs  # noqa: E402

RESULTS = ROOT / "experiments" / "results"
#: The issue's goal for the better order: real / processed tokens.
GOAL = 0.9
CHUNKS = (1, 2, 3)


def padding_counts(loader, chunks=CHUNKS) -> dict[str, Any]:
    """Real tokens and processed tokens (per ``length_chunks`` value) of one pass over ``loader``."""
    from vrm.models.pooling import length_groups

    real, processed, batches = 0, dict.fromkeys(chunks, 0), 0
    for batch in loader:
        mask = batch["attention_mask"]
        real += int(mask.sum())
        batches += 1
        for n in chunks:
            groups = length_groups(mask, n)
            processed[n] += mask.numel() if groups is None else sum(len(rows) * (cols.stop - cols.start)
                                                                    for rows, cols in groups)
    return {"batches": batches, "real_tokens": real, "processed_tokens": processed,
            "ratio": {n: real / processed[n] for n in chunks}}


def train_loader(train_file: Path, group_by_length: bool, batch_size: int, max_length: int, workdir: Path,
                 seed: int = 0):
    """The training loader ``vrm-train`` would use (tiny encoder: the model is not run, only the data module)."""
    from vrm.config.compose import compose_config
    from vrm.training.build import build

    cfg = compose_config(["encoder=tiny_bert", "model=bt", "data=jsonl", f"data.train={train_file}",
                          "data.validation_fraction=0", "data.test_fraction=0", f"data.batch_size={batch_size}",
                          f"data.max_length={max_length}", f"data.group_by_length={str(group_by_length).lower()}",
                          f"seed={seed}"], workdir)
    run = build(cfg, workdir)
    return run.datamodule.train_dataloader()


def fixture_stats(split, max_length: int) -> dict[str, float]:
    """Mean tokens (MiniLM's tokenizer, special tokens included, after truncation) of the tokenised fixture."""
    chosen = [len(x) for x in split["chosen_input_ids"]]
    rejected = [len(x) for x in split["rejected_input_ids"]]
    prompt = split["chosen_prompt_length"]
    n = len(chosen)
    return {"mean_prompt_tokens": sum(prompt) / n, "mean_response_tokens": (sum(chosen) + sum(rejected)
                                                                             - 2 * sum(prompt)) / (2 * n),
            "mean_example_tokens": (sum(chosen) + sum(rejected)) / (2 * n),
            # What no batch order can beat with one padded pass: a pair's two rows pad to the longer one.
            "pair_bound": (sum(chosen) + sum(rejected)) / (2 * sum(map(max, chosen, rejected))),
            "truncated_fraction": sum(max(c, r) >= max_length for c, r in zip(chosen, rejected)) / n}


def measure(pairs: int, batch_size: int, max_length: int, seed: int, workdir: Path) -> dict[str, Any]:
    train_file = write_hh_length_pairs(workdir / "hh_lengths.jsonl", pairs, seed)
    rows, stats = {}, None
    for grouped in (False, True):
        loader = train_loader(train_file, grouped, batch_size, max_length, workdir / f"run_{grouped}", seed)
        stats = stats or fixture_stats(loader.dataset, max_length)
        rows["group_by_length" if grouped else "default"] = padding_counts(loader)
    return {"fixture": stats, "orders": rows}


# -- does the order change the results? ----------------------------------------------------------
#: The quality check's run: the default run (VRM, MiniLM fine-tuned, synthetic benchmark) on half its pairs.
QUALITY_OVERRIDES = ["data.synthetic.num_train=600", "trainer.max_epochs=2", "logger=none"]
QUALITY_METRICS = ("val/acc_best", "test/acc", "shifted/acc")


def quality(seeds: list[int], log: Path, extra: list[str]) -> list[dict[str, Any]]:
    """``vrm-train`` with ``data.group_by_length`` false and true for each seed, one fresh process per run; each
    finished run is appended to ``log`` (JSON lines), and a run already there is not run again (resumable)."""
    import subprocess

    done = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    for seed in seeds:
        for grouped in ("false", "true"):
            overrides = [*QUALITY_OVERRIDES, *extra, f"seed={seed}", f"data.group_by_length={grouped}"]
            if any(r["overrides"] == overrides for r in done):
                continue
            with tempfile.TemporaryDirectory(prefix="bench_padding_quality_") as tmp:
                command = [sys.executable, "-c", "from vrm.cli.train import main; main()", *overrides,
                           f"hydra.run.dir={tmp}/run"]
                env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
                run = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True)
                if run.returncode != 0:
                    raise RuntimeError(f"{shlex.join(command)} failed:\n{run.stderr[-3000:]}")
                metrics = json.loads((Path(tmp) / "run" / "metrics.json").read_text())
            row = {"overrides": overrides, "seed": seed, "group_by_length": grouped == "true",
                   **{k: metrics[k] for k in QUALITY_METRICS}}
            done.append(row)
            with log.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    return done


def quality_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| seed | " + " | ".join(f"{m} default / grouped" for m in QUALITY_METRICS) + " |",
             "|---|" + "---|" * len(QUALITY_METRICS)]
    by_seed: dict[int, dict[bool, dict]] = {}
    for r in rows:
        by_seed.setdefault(r["seed"], {})[r["group_by_length"]] = r
    for seed, pair in sorted(by_seed.items()):
        if len(pair) == 2:
            lines.append(f"| {seed} | " + " | ".join(f"{pair[False][m]:.3f} / {pair[True][m]:.3f}"
                                                     for m in QUALITY_METRICS) + " |")
    return "\n".join(lines) + "\n"


def markdown(result: dict[str, Any]) -> str:
    lines = [f"Command: `{result['command']}`", "",
             f"{result['pairs']} HH-RLHF-length pairs, batches of {result['batch_size']} pairs "
             f"({2 * result['batch_size']} rows), data.max_length={result['max_length']}, MiniLM's tokenizer. "
             f"Goal: >= {GOAL}.", "",
             "Fixture (MiniLM tokens, after truncation): prompt {mean_prompt_tokens:.1f}, response "
             "{mean_response_tokens:.1f}, example {mean_example_tokens:.1f} tokens on average; {truncated_fraction:.1%} "
             "of the pairs reach max_length; a pair's two rows pad to the longer one, so one padded pass can reach at "
             "most {pair_bound:.3f}.".format(**result["fixture"]), "",
             "| order | real tokens | real / processed, one padded pass | length_chunks=2 | length_chunks=3 |",
             "|---|---|---|---|---|"]
    for name, r in result["orders"].items():
        ratio = r["ratio"]
        lines.append(f"| {name} | {r['real_tokens']:,} | {ratio[1]:.3f} | {ratio[2]:.3f} | {ratio[3]:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (bench_padding.{json,md})")
    parser.add_argument("--quality-seeds", type=int, nargs="+", default=None,
                        help="instead: train the default run (on 600 pairs) with data.group_by_length false and true "
                             "for each seed, appending to OUT/bench_padding_quality.jsonl (resumable), and print "
                             "the metrics side by side")
    parser.add_argument("--quality-override", action="append", default=[], help="an extra vrm-train override")
    args = parser.parse_args(argv)
    if args.quality_seeds is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        rows = quality(args.quality_seeds, args.out / "bench_padding_quality.jsonl", args.quality_override)
        print(quality_markdown(rows))
        return {"quality": rows}
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench_padding_") as tmp:
        os.environ.setdefault("VRM_CACHE", str(Path(tmp) / "cache"))
        measured = measure(args.pairs, args.batch_size, args.max_length, args.seed, Path(tmp))
    result = {"command": shlex.join(["python", "experiments/bench_padding.py",
                                     *(argv if argv is not None else sys.argv[1:])]),
              "pairs": args.pairs, "batch_size": args.batch_size, "max_length": args.max_length, "seed": args.seed,
              "goal": GOAL, **measured}
    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown(result)
    for name, text in (("bench_padding.json", json.dumps(result, indent=2) + "\n"), ("bench_padding.md", table)):
        tmp_path = args.out / f".{name}.tmp-{os.getpid()}"
        tmp_path.write_text(text)
        os.replace(tmp_path, args.out / name)
    print(table)
    return result


if __name__ == "__main__":
    main()
