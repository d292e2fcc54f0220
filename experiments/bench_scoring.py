"""Scoring throughput: ``RewardScorer`` against a raw transformers forward on the same texts, side by side.

For each head (BT and VRM) a model on the configured encoder (default: the local all-MiniLM-L6-v2; its heads are
randomly initialised, which does not change the cost) is exported with :func:`vrm.scoring.export.export_model`
and loaded twice from the folder:

- ``scorer``: ``RewardScorer.from_pretrained(folder).score(prompts, responses)`` (tokenises each pair by the training
  rule, sorts by length, batches, runs in inference mode);
- ``raw``: what a user would write with transformers alone: ``AutoModelForSequenceClassification`` (after
  ``import vrm``) and the folder's tokenizer called on each batch of (prompt, response) text pairs in input order
  (``padding=True``), then ``model(**inputs).logits`` under ``torch.inference_mode``. For a BERT-like encoder this
  is exactly our tokenisation rule ([CLS] prompt [SEP] response [SEP], segment ids marking the prompt), so both
  give the same rewards, which is checked;
- ``raw_sorted``: the same raw forward on the pairs pre-sorted by token length (sorting not timed), so its batches
  pad exactly as the scorer's do: the ratio against it is the scorer's own overhead (per-pair tokenisation by the
  training rule, bookkeeping), without the gain from sorting.

They are timed in alternating rounds on the same pairs, batch size and threads; the reported throughput is the
median round. Texts come from the synthetic benchmark, each response joined from 1 to 8 of its responses so that
lengths vary as real ones do (about 20 to 300 tokens). Results go to ``experiments/results/bench_scoring/``
(``--quick``: ``.../bench_scoring_quick/``): ``results.json``, ``results.md`` (with the exact command) and
``throughput.png``. The goal is a ratio scorer / raw of at least 0.95; both ratios are reported and checked.

    python experiments/bench_scoring.py            # 512 pairs, 5 rounds
    python experiments/bench_scoring.py --quick    # 48 pairs, 2 rounds (a CPU check)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
GOAL = 0.95
HEADS = ("bt", "vrm")


def make_pairs(n: int, seed: int) -> tuple[list[str], list[str]]:
    """``n`` (prompt, response) texts from the synthetic benchmark, responses of 1 to 8 joined responses."""
    from vrm.config.data import SyntheticConfig
    from vrm.data.synthetic import make_split

    rows = make_split(SyntheticConfig(seed=seed, num_test=max(n, 64)), "test")
    rng = random.Random(seed)
    pool = [r for row in rows for r in (row["chosen"], row["rejected"])]
    prompts = [rows[i % len(rows)]["prompt"][0]["content"] for i in range(n)]
    responses = [" ".join(rng.sample(pool, rng.randint(1, 8))) for _ in range(n)]
    return prompts, responses


def build_export(head: str, encoder: str, max_length: int, folder: Path, overrides: list[str] = ()) -> Path:
    """A model with ``head`` on ``encoder`` (and any further config ``overrides``) exported to ``folder``."""
    from vrm.config.compose import compose_config
    from vrm.models.encoder import load_encoder
    from vrm.scoring.export import export_model
    from vrm.training.build import build_module

    cfg = compose_config([f"model={head}", f"encoder={encoder}", f"data.max_length={max_length}", "logger=none",
                          *overrides], folder / "run")
    torch.manual_seed(0)
    enc = load_encoder(cfg.encoder)
    net = build_module(cfg, enc).net
    return export_model(net, enc.tokenizer, folder / "export")


def raw_rewards(model, tokenizer, prompts: list[str], responses: list[str], batch_size: int,
                max_length: int) -> list[float]:
    out: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            inputs = tokenizer(prompts[start:start + batch_size], responses[start:start + batch_size], padding=True,
                               truncation=True, max_length=max_length, return_tensors="pt").to(model.device)
            out += model(**inputs).logits[:, 0].float().tolist()
    return out


def bench_head(head: str, args: argparse.Namespace, prompts: list[str], responses: list[str]) -> dict:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import vrm  # noqa: F401 - registers the Auto classes for the raw path
    from vrm.scoring.scorer import RewardScorer

    # The GPU check (experiments/gpu_check.py) passes a device, a dtype and encoder overrides; this script, none.
    device, dtype = getattr(args, "device", "cpu"), getattr(args, "dtype", None)
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_export(head, args.encoder, args.max_length, Path(tmp), getattr(args, "overrides", ()))
        scorer = RewardScorer.from_pretrained(folder, batch_size=args.batch_size, device=device, dtype=dtype)
        model = AutoModelForSequenceClassification.from_pretrained(
            folder, use_safetensors=True, **({"dtype": getattr(torch, dtype)} if dtype else {})).to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
    lengths = [len(scorer.encode_pair(p, r).input_ids) for p, r in zip(prompts, responses)]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    sorted_prompts, sorted_responses = [prompts[i] for i in order], [responses[i] for i in order]
    runs = {"scorer": lambda: scorer.score(prompts, responses),
            "raw": lambda: raw_rewards(model, tokenizer, prompts, responses, args.batch_size, args.max_length),
            "raw_sorted": lambda: raw_rewards(model, tokenizer, sorted_prompts, sorted_responses, args.batch_size,
                                              args.max_length)}
    rewards = {name: run() for name, run in runs.items()}  # warm-up, and the rewards to compare
    rewards["raw_sorted"] = [r for _, r in sorted(zip(order, rewards["raw_sorted"]))]
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    pps = {name: len(prompts) / statistics.median(times) for name, times in seconds.items()}
    return {"head": head, "pairs_per_second": pps, "ratio": pps["scorer"] / pps["raw"],
            "ratio_vs_sorted": pps["scorer"] / pps["raw_sorted"], "round_seconds": seconds,
            "max_abs_reward_difference": max(abs(a - b) for name in ("raw", "raw_sorted")
                                             for a, b in zip(rewards["scorer"], rewards[name])),
            "tokens_per_pair": {"min": min(lengths), "mean": statistics.fmean(lengths), "max": max(lengths)}}


def markdown(results: dict) -> str:
    lines = ["# Scoring throughput: RewardScorer vs a raw transformers forward", "",
             f"Command: `{results['command']}`", "",
             f"{results['num_pairs']} pairs, encoder `{results['encoder']}`, batch size {results['batch_size']}, "
             f"{results['threads']} CPU thread(s), median of {results['rounds']} alternating rounds; "
             f"{results['device']}. Goal: ratio >= {GOAL}.", "",
             "| head | scorer pairs/s | raw pairs/s | raw (length-sorted) pairs/s | ratio scorer/raw "
             "| ratio scorer/raw sorted | max reward difference | tokens/pair (mean) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results["heads"]:
        pps = r["pairs_per_second"]
        lines.append(f"| {r['head']} | {pps['scorer']:.1f} | {pps['raw']:.1f} | {pps['raw_sorted']:.1f} | "
                     f"{r['ratio']:.3f} | {r['ratio_vs_sorted']:.3f} | {r['max_abs_reward_difference']:.1e} | "
                     f"{r['tokens_per_pair']['mean']:.0f} |")
    lines += ["", f"Lowest ratio scorer/raw: **{results['min_ratio']:.3f}**; against the length-sorted raw forward "
              f"(the scorer's own overhead): **{results['min_ratio_vs_sorted']:.3f}**. Goal {GOAL}: "
              f"{'met' if results['meets_goal'] else 'missed'}.", "", "![throughput](throughput.png)"]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads = [r["head"] for r in results["heads"]]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for offset, name in ((-0.27, "scorer"), (0.0, "raw"), (0.27, "raw_sorted")):
        ax.bar([i + offset for i in range(len(heads))], [r["pairs_per_second"][name] for r in results["heads"]],
               width=0.27, label=name)
    ax.set_xticks(range(len(heads)), heads)
    ax.set_ylabel("pairs per second")
    ax.set_title(f"RewardScorer vs raw forward ({results['encoder']})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="48 pairs and 2 rounds (a CPU check)")
    parser.add_argument("--encoder", default="minilm", help="encoder config group (conf/encoder/; default minilm)")
    parser.add_argument("--num-pairs", type=int, default=None, help="pairs to score (default 512; 48 with --quick)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 5; 2 with --quick)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=512, help="tokens per pair (data.max_length)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.num_pairs = args.num_pairs or (48 if args.quick else 512)
    args.rounds = args.rounds or (2 if args.quick else 5)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)

    prompts, responses = make_pairs(args.num_pairs, args.seed)
    heads = [bench_head(head, args, prompts, responses) for head in HEADS]
    command = "python experiments/bench_scoring.py" + "".join(f" {shlex.quote(a)}" for a in (argv or sys.argv[1:]))
    results = {"command": command, "encoder": args.encoder, "num_pairs": args.num_pairs, "rounds": args.rounds,
               "batch_size": args.batch_size, "threads": args.threads, "max_length": args.max_length,
               "device": f"CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}",
               "heads": heads, "min_ratio": min(h["ratio"] for h in heads),
               "min_ratio_vs_sorted": min(h["ratio_vs_sorted"] for h in heads), "goal": GOAL}
    results["meets_goal"] = min(results["min_ratio"], results["min_ratio_vs_sorted"]) >= GOAL
    out = RESULTS / ("bench_scoring_quick" if args.quick else "bench_scoring")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, out / "throughput.png")
    (out / "results.md").write_text(markdown(results) + "\n")
    print(markdown(results))
    for h in heads:
        print(f"{h['head']}: scorer/raw pairs per second = {h['ratio']:.3f} "
              f"(vs the length-sorted raw forward: {h['ratio_vs_sorted']:.3f})")
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
