"""Benchmark: a frozen-encoder hyperparameter sweep with the feature cache against the same sweep without.

Both sweeps run the same N trials (hyperparameters drawn once from the ``hparams_search=vrm_optuna``
search space), on the same data, encoder, seed and budget, one after the other in this process, each
through ``vrm.training.train.train`` exactly as a ``vrm-train -m`` job runs it. Without the cache every
trial encodes every text in every epoch; with it the first trial fills the cache (a fresh
``$VRM_CACHE``) and every trial trains the heads from the cached representations.

Reports per-trial wall time (whole ``train()`` call) and fit time (``trainer.fit`` only), their ratios
uncached / cached, and the total sweep ratio (cache fill included). Writes
``experiments/results/bench_sweep_cache.{json,md}`` (``--quick``: ``bench_sweep_cache_quick.{json,md}``) with the
exact command.

    python experiments/bench_sweep_cache.py            # 20 trials, MiniLM, default synthetic data
    python experiments/bench_sweep_cache.py --quick    # 3 trials, MiniLM, 128 training pairs
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import lightning as L  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
NAME = "bench_sweep_cache"
#: The search space of conf/hparams_search/vrm_optuna.yaml, sampled uniformly (log-uniform for the betas).
CHOICES = {"model.num_objectives": (4, 8, 16), "model.feature_dim": (8, 16, 32), "model.num_samples": (1, 2, 4, 8)}
LOG_INTERVALS = {"model.beta_w": (0.001, 0.2), "model.beta_z": (0.001, 0.2)}


class FitTimer(L.Callback):
    """Records the wall time of each ``trainer.fit`` (instantiated by train() from ``callbacks.fit_timer``)."""

    durations: list[float] = []

    def on_fit_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_fit_end(self, trainer, pl_module) -> None:
        FitTimer.durations.append(time.perf_counter() - self._start)


def sample_trials(n: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    trials = []
    for _ in range(n):
        overrides = [f"{k}={rng.choice(v)}" for k, v in CHOICES.items()]
        overrides += [f"{k}={10 ** rng.uniform(*map(math.log10, v)):.5g}" for k, v in LOG_INTERVALS.items()]
        trials.append(overrides)
    return trials


def base_overrides(args: argparse.Namespace) -> list[str]:
    # As a trial of hparams_search=vrm_optuna runs: frozen encoder, no checkpoints (conf/hparams_search/vrm_optuna.yaml).
    overrides = [f"encoder={args.encoder}", "encoder.train_mode=frozen", f"trainer.max_epochs={args.epochs}",
                 "callbacks=none", "trainer.enable_checkpointing=false",
                 "+callbacks.fit_timer._target_=__main__.FitTimer", "logger=none", "test=false",
                 "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
    if args.num_train is not None:
        overrides += [f"data.synthetic.num_train={args.num_train}", f"data.synthetic.num_validation={args.num_train // 4}"]
    return overrides


def run_sweep(trials: list[list[str]], overrides: list[str], work: Path, label: str) -> list[dict]:
    from vrm.config.compose import compose_config
    from vrm.training.train import train

    rows = []
    for i, trial in enumerate(trials):
        cfg = compose_config(overrides + trial, work / label / str(i))
        start = time.perf_counter()
        metrics = train(cfg)
        wall = time.perf_counter() - start
        rows.append({"trial": i, "overrides": trial, "wall_s": wall, "fit_s": FitTimer.durations[-1],
                     "val_acc_best": metrics.get("val/acc_best")})
        print(f"[{label}] trial {i}: {wall:.2f} s (fit {rows[-1]['fit_s']:.2f} s), "
              f"val/acc_best={rows[-1]['val_acc_best']:.4f}", flush=True)
    return rows


def summarise(cached: list[dict], uncached: list[dict]) -> dict:
    warm = cached[1:] or cached  # the first cached trial fills the cache
    mean = statistics.fmean
    return {
        "uncached_trial_wall_s": mean(r["wall_s"] for r in uncached),
        "cached_trial_wall_s": mean(r["wall_s"] for r in warm),
        "cache_fill_trial_wall_s": cached[0]["wall_s"],
        "uncached_fit_s": mean(r["fit_s"] for r in uncached),
        "cached_fit_s": mean(r["fit_s"] for r in warm),
        "uncached_total_s": sum(r["wall_s"] for r in uncached),
        "cached_total_s": sum(r["wall_s"] for r in cached),
    } | {
        "trial_wall_ratio": mean(r["wall_s"] for r in uncached) / mean(r["wall_s"] for r in warm),
        "fit_ratio": mean(r["fit_s"] for r in uncached) / mean(r["fit_s"] for r in warm),
        "total_ratio": sum(r["wall_s"] for r in uncached) / sum(r["wall_s"] for r in cached),
    }


def markdown(result: dict) -> str:
    s = result["summary"]
    lines = [f"# Frozen-encoder sweep: feature cache vs none ({result['num_trials']} trials, {result['encoder']})", "",
             f"Command: `{result['command']}`", "",
             "| | without cache | with cache | ratio |", "|---|---|---|---|",
             f"| per trial, whole train() (s) | {s['uncached_trial_wall_s']:.2f} | {s['cached_trial_wall_s']:.2f} "
             f"| {s['trial_wall_ratio']:.1f}x |",
             f"| per trial, trainer.fit only (s) | {s['uncached_fit_s']:.2f} | {s['cached_fit_s']:.3f} "
             f"| {s['fit_ratio']:.1f}x |",
             f"| whole sweep incl. cache fill (s) | {s['uncached_total_s']:.1f} | {s['cached_total_s']:.1f} "
             f"| {s['total_ratio']:.1f}x |", "",
             f"Cache-filling first trial: {s['cache_fill_trial_wall_s']:.2f} s. Goal: >= 50x per trial. "
             f"Machine: {result['machine']}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=None, help="trials per sweep (20; 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="3 trials on 128 training pairs")
    parser.add_argument("--encoder", default="minilm", help="encoder config (minilm, tiny_bert, ...)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--num-train", type=int, default=None, help="synthetic training pairs (default: config's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampled hyperparameters")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.quick:
        args.trials = args.trials or 3
        args.num_train = args.num_train or 128
    args.trials = args.trials or 20
    if args.trials < 2:
        raise ValueError(f"--trials={args.trials} must be >= 2 (the first cached trial fills the cache)")

    trials = sample_trials(args.trials, args.seed)
    overrides = base_overrides(args)
    with tempfile.TemporaryDirectory(prefix="vrm_bench_") as tmp:
        work = Path(tmp)
        os.environ["VRM_CACHE"] = str(work / "cache")  # fresh: the cached sweep pays its own fill
        uncached = run_sweep(trials, overrides + ["encoder.feature_cache=false"], work, "uncached")
        cached = run_sweep(trials, overrides + ["encoder.feature_cache=true"], work, "cached")
    summary = summarise(cached, uncached)
    threads = os.environ.get("OMP_NUM_THREADS")
    command = shlex.join(["python", "experiments/bench_sweep_cache.py", *(argv or sys.argv[1:])])
    result = {"command": (f"OMP_NUM_THREADS={threads} " if threads else "") + command,
              "num_trials": args.trials, "encoder": args.encoder, "epochs": args.epochs, "num_train": args.num_train,
              "overrides": overrides, "machine": f"{os.cpu_count()} CPU cores (shared), torch CPU",
              "summary": summary, "cached": cached, "uncached": uncached}
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"{NAME}_quick" if args.quick else NAME  # a smoke check never overwrites the full figures
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(markdown(result))
    print(markdown(result))
    print(f"per-trial speed-up: {summary['trial_wall_ratio']:.1f}x (fit only {summary['fit_ratio']:.1f}x, "
          f"whole sweep {summary['total_ratio']:.1f}x)")
    return result


if __name__ == "__main__":
    main()
