"""VRM vs Bradley-Terry on the synthetic benchmark, over seeds, with ablations and best-of-N.

Every variant (:data:`VARIANTS`) trains once per seed with the same data, encoder and budget (:data:`BUDGETS`,
the one place the budget is set); each trained model is exported and evaluated with
:func:`vrm.evaluation.evaluate.evaluate` (in-distribution ``test`` and ``shifted`` accuracy, calibration, length
bias, weight recovery, uncertainty, best-of-N on the same candidate set), and the white-box proxy is evaluated
once beside them. Results go to ``experiments/results/vrm_vs_bt/`` (``--quick``: ``.../vrm_vs_bt_quick/``):
``results.json``, ``results.md`` (mean and standard deviation over seeds per metric, and the exact command) and
the plots. Run folders (checkpoints, exports, each ``eval.json``) go under ``runs/`` and a finished run is
reused when the same command is run again.

    python experiments/vrm_vs_bt/run.py                          # full: 5 seeds x 5 variants, default budget
    python experiments/vrm_vs_bt/run.py --quick                  # 2 seeds, a small budget (a CPU check)
    python experiments/vrm_vs_bt/run.py trainer.accelerator=auto # extra overrides go to every training run
                                                                 # (data.* ones to the evaluations too)
    python experiments/vrm_vs_bt/run.py --jobs 5 trainer.accelerator=auto   # 5 runs at a time (a GPU machine)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vrm.evaluation import metrics as m
from vrm.evaluation import report as E
from vrm.evaluation.report import to_json

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments import cells as cell_runner  # noqa: E402  (the shared cell files: one JSON per run, atomic)
from experiments.vrm_vs_bt.report import METRICS, PROXY, best_of_n_summary, markdown, write_plots  # noqa: E402

#: The compared models: name -> training overrides. All VRM ablations keep every other option at its default.
VARIANTS: dict[str, tuple[str, ...]] = {
    "bt": ("model=bt",),
    "vrm": ("model=vrm",),
    "vrm_no_weight_latent": ("model=vrm", "model.use_weight_latent=false"),
    "vrm_no_feature_latent": ("model=vrm", "model.use_feature_latent=false"),
    "vrm_pair_posterior": ("model=vrm", "model.weight_posterior=pair", "model.weight_prior=learned"),
}
#: How the trained models are scored: on the GPU when there is one, with this many samples for the reward std.
MODEL_SCORER = ("scorer=model", "scorer.device=auto", "scorer.uncertainty_samples=32")


@dataclass(frozen=True)
class Budget:
    """Seeds and Hydra overrides of one budget: ``data`` goes to training and evaluation alike, ``eval`` to every
    evaluation (the trained models' and the proxy's)."""

    name: str
    seeds: tuple[int, ...]
    data: tuple[str, ...]
    train: tuple[str, ...]
    eval: tuple[str, ...]


#: The budgets. ``full`` is the default training run made explicit (data/synthetic.yaml, trainer/default.yaml; a
#: test checks that they agree).
#: Training skips its own test pass (``test=false``): the evaluation scores the same splits.
BUDGETS: dict[str, Budget] = {
    "full": Budget(
        name="full", seeds=(0, 1, 2, 3, 4),
        data=("data=synthetic", "data.synthetic.seed=0", "data.synthetic.num_train=1200",
              "data.synthetic.num_validation=200", "data.synthetic.num_test=400", "data.synthetic.num_shifted=400"),
        train=("encoder=minilm", "trainer=default", "trainer.max_epochs=2", "data.batch_size=16", "logger=csv",
               "trainer.enable_progress_bar=false", "test=false"),
        eval=("best_of_n.num_prompts=64", "best_of_n.n_max=64"),
    ),
    "quick": Budget(
        name="quick", seeds=(0, 1),
        data=("data=synthetic", "data.synthetic.seed=0", "data.synthetic.num_train=320",
              "data.synthetic.num_validation=64", "data.synthetic.num_test=200", "data.synthetic.num_shifted=200"),
        train=("encoder=minilm", "trainer=default", "trainer.max_epochs=1", "data.batch_size=16", "logger=none",
               "trainer.enable_progress_bar=false", "test=false"),
        eval=("best_of_n.num_prompts=16", "best_of_n.n_max=32"),
    ),
}



def lookup(evaluation: Mapping[str, Any], path: Sequence) -> float | None:
    """The value at ``path`` in an eval.json (None where absent or not finite)."""
    value: Any = evaluation
    for key in path:
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            return None
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def flat_metrics(evaluation: Mapping[str, Any]) -> dict[str, float | None]:
    return {key: lookup(evaluation, path) for key, (_, path) in METRICS.items()}


def summarise(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean and sample standard deviation over the seeds that have the metric."""
    present = [v for v in values if v is not None]
    return {
        "mean": float(np.mean(present)) if present else None,
        "std": float(np.std(present, ddof=1)) if len(present) > 1 else None,
        "n": len(present),
        "values": list(values),
    }


# ---------------------------------------------------------------- running


def data_extras(extra: Sequence[str]) -> list[str]:
    """The extra overrides that change the data, which the evaluations must see too."""
    return [o for o in extra if o.lstrip("+~").startswith("data.") or o.lstrip("+~").startswith("data=")]


def train_overrides(budget: Budget, variant: str, seed: int, extra: Sequence[str], export_dir: Path) -> list[str]:
    return [*budget.data, *budget.train, *VARIANTS[variant], f"seed={seed}", *extra, f"export_dir={export_dir}"]


def eval_overrides(budget: Budget, extra: Sequence[str], scorer: Sequence[str]) -> list[str]:
    return [*budget.data, *data_extras(extra), *budget.eval, *scorer]


def evaluate_with(overrides: list[str], out_dir: Path) -> dict[str, Any]:
    from vrm.config.compose import compose_config
    from vrm.config.eval import register_eval_configs
    from vrm.evaluation.evaluate import evaluate

    register_eval_configs()
    return evaluate(compose_config(overrides, out_dir, config_name="eval"))


def run_paths(budget: Budget, variant: str, seed: int, extra: Sequence[str],
              runs_dir: Path) -> tuple[Path, list[str], list[str]]:
    """A run's folder, its training overrides and its evaluation overrides."""
    run_dir = cell_runner.cell_path(runs_dir, f"{variant}/seed{seed}/run").parent
    export_dir = run_dir / "export"
    return (run_dir, train_overrides(budget, variant, seed, extra, export_dir),
            eval_overrides(budget, extra, [*MODEL_SCORER, f"model_path={export_dir}"]))


def finished_record(record_path: Path, train: Sequence[str] | None, evals: Sequence[str]) -> dict[str, Any] | None:
    """The record of a run made with the same overrides, if there is one."""
    if not record_path.exists():
        return None
    record = json.loads(record_path.read_text())
    same = record.get("train_overrides") == (None if train is None else list(train))
    return record if same and record["eval_overrides"] == list(evals) else None


def run_one(budget: Budget, variant: str, seed: int, extra: Sequence[str], runs_dir: Path, *,
            keep_checkpoints: bool = False) -> dict[str, Any]:
    """Train, export and evaluate one (variant, seed); reuse its record when the same overrides ran before."""
    from vrm.cli.train import train_and_export as train
    from vrm.config.compose import compose_config

    run_dir, overrides, evals = run_paths(budget, variant, seed, extra, runs_dir)
    record_path = run_dir / "run.json"
    record = finished_record(record_path, overrides, evals)
    if record is not None:
        print(f"[{variant} seed {seed}] reusing {record_path}")
        return record
    print(f"[{variant} seed {seed}] training: {' '.join(overrides)}", flush=True)
    start = time.perf_counter()
    train_metrics = train(compose_config(overrides, run_dir / "train"))
    train_seconds = time.perf_counter() - start
    if not keep_checkpoints:
        shutil.rmtree(run_dir / "train" / "checkpoints", ignore_errors=True)
    start = time.perf_counter()
    evaluation = evaluate_with(evals, run_dir / "eval")
    record = {
        "variant": variant, "seed": seed, "train_overrides": overrides, "eval_overrides": evals,
        "train_metrics": train_metrics, "train_seconds": train_seconds,
        "eval_seconds": time.perf_counter() - start, "eval_json": str(run_dir / "eval" / "eval.json"),
        "metrics": flat_metrics(evaluation), "best_of_n": evaluation.get(E.BEST_OF_N),
    }
    record = to_json(record)
    cell_runner.write_json_atomically(record_path, record)
    return record


def run_in_subprocesses(budget: Budget, tasks: Sequence[tuple[str, int]], extra: Sequence[str], runs_dir: Path,
                        jobs: int, *, keep_checkpoints: bool = False) -> None:
    """Run the unfinished (variant, seed) tasks in up to ``jobs`` child processes of this script at a time, each
    with its share of the CPU threads and its output in its run folder's ``run.log``."""
    def finished(variant: str, seed: int) -> bool:
        run_dir, train, evals = run_paths(budget, variant, seed, extra, runs_dir)
        return finished_record(run_dir / "run.json", train, evals) is not None

    todo = [(v, s) for v, s in tasks if not finished(v, s)]
    threads = max(1, (os.cpu_count() or 1) // jobs)

    def launch(task: tuple[str, int]) -> int:
        variant, seed = task
        log_path = runs_dir / variant / f"seed{seed}" / "run.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, str(Path(__file__).resolve()), "--single", f"{variant}:{seed}",
                   "--budget-json", json.dumps(asdict(budget)), "--runs-dir", str(runs_dir),
                   *(["--keep-checkpoints"] if keep_checkpoints else []), "--", *extra]
        print(f"[{variant} seed {seed}] started; log {log_path}", flush=True)
        with log_path.open("w") as log:
            code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                                  env={**os.environ, "OMP_NUM_THREADS": str(threads)}).returncode
        print(f"[{variant} seed {seed}] finished with exit code {code}", flush=True)
        return code

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        codes = list(pool.map(launch, todo))
    failed = [f"{v} seed {s}" for (v, s), code in zip(todo, codes) if code != 0]
    if failed:
        raise RuntimeError(f"runs failed: {failed}; see run.log in their folders under {runs_dir}")


def run_proxy(budget: Budget, extra: Sequence[str], runs_dir: Path) -> dict[str, Any]:
    """The white-box proxy on the same splits and best-of-N set (deterministic: one run); reused like a run."""
    out_dir = runs_dir / PROXY
    overrides = eval_overrides(budget, extra, ["scorer=proxy"])
    record_path = out_dir / "run.json"
    record = finished_record(record_path, None, overrides)
    if record is not None:
        print(f"[{PROXY}] reusing {record_path}")
        return record
    evaluation = evaluate_with(overrides, out_dir)
    record = to_json({"eval_overrides": overrides, "eval_json": str(out_dir / "eval.json"),
                      "metrics": flat_metrics(evaluation), "best_of_n": evaluation.get(E.BEST_OF_N),
                      "data_context": data_context(evaluation)})
    cell_runner.write_json_atomically(record_path, record)
    return record


def data_context(evaluation: Mapping[str, Any]) -> dict[str, float | None]:
    """Properties of the data itself: the true reward's accuracy (the ceiling) and the length-only baseline."""
    context = {}
    for split in ("test", "shifted"):
        context[f"{split}_true_reward_accuracy"] = lookup(evaluation, (E.SPLITS, split, E.TRUE_REWARD_ACCURACY))
        context[f"{split}_length_only_accuracy"] = lookup(evaluation, (E.SPLITS, split, E.LENGTH,
                                                                       m.LENGTH_ONLY_ACCURACY))
        context[f"{split}_pairs"] = lookup(evaluation, (E.SPLITS, split, E.N_PAIRS))
    return context


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}"
    return f"cpu ({torch.get_num_threads()} threads)"


def run_experiment(budget: Budget, variants: Sequence[str], extra: Sequence[str], results_dir: Path,
                   runs_dir: Path, command: str, *, jobs: int = 1, keep_checkpoints: bool = False) -> dict[str, Any]:
    """Every (variant, seed) and the proxy; writes results.json, results.md and the plots into ``results_dir``.

    ``jobs`` > 1 trains and evaluates that many runs at a time in child processes (on one GPU, or CPU cores).
    """
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    start = time.perf_counter()
    # Seed-major, so that an interrupted run has every variant for its first seeds (and resumes from there).
    tasks = [(v, seed) for seed in budget.seeds for v in variants]
    if jobs > 1:
        run_in_subprocesses(budget, tasks, extra, runs_dir, jobs, keep_checkpoints=keep_checkpoints)
    runs = [run_one(budget, v, seed, extra, runs_dir, keep_checkpoints=keep_checkpoints) for v, seed in tasks]
    proxy = run_proxy(budget, extra, runs_dir)
    summary = {v: {k: summarise([r["metrics"][k] for r in runs if r["variant"] == v]) for k in METRICS}
               for v in variants}
    summary[PROXY] = {k: summarise([proxy["metrics"][k]]) for k in METRICS}
    for v in variants:
        summary[v]["train_seconds"] = summarise([r["train_seconds"] for r in runs if r["variant"] == v])
    results = {
        "command": command, "device": device_name(), "budget": asdict(budget), "variants": {v: VARIANTS[v]
                                                                                              for v in variants},
        "extra_overrides": list(extra), "jobs": jobs, "total_seconds": time.perf_counter() - start,
        "data_context": proxy["data_context"], "summary": summary, "runs": runs, "proxy": proxy,
        "best_of_n": best_of_n_summary(runs, proxy),
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    results["plots"] = write_plots(results, runs, results_dir)
    results = to_json(results)
    (results_dir / "results.json").write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
    (results_dir / "results.md").write_text(markdown(results) + "\n")
    print("\n" + markdown(results))
    print(f"\nwrote {results_dir}")
    return results


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the quick budget (2 seeds, 320 pairs, 1 epoch)")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (0..N-1; default: the budget's)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {list(VARIANTS)}")
    parser.add_argument("--results-dir", default=None, help="default experiments/results/vrm_vs_bt[_quick]")
    parser.add_argument("--runs-dir", default=None, help="default runs/vrm_vs_bt[_quick]")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time, in child processes (default 1)")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep each run's .ckpt files (large)")
    parser.add_argument("--single", default=None, help=argparse.SUPPRESS)  # VARIANT:SEED, a --jobs child
    parser.add_argument("--budget-json", default=None, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every training run (data.* ones also "
                                                     "for the evaluations), e.g. trainer.accelerator=auto")
    args = parser.parse_args(argv)
    if args.single is not None:  # one run of a parent's --jobs, with the parent's budget
        variant, seed = args.single.rsplit(":", 1)
        budget = Budget(**{k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(args.budget_json).items()})
        run_one(budget, variant, int(seed), args.overrides, Path(args.runs_dir), keep_checkpoints=args.keep_checkpoints)
        return
    budget = BUDGETS["quick" if args.quick else "full"]
    if args.seeds is not None:
        budget = Budget(budget.name, tuple(range(args.seeds)), budget.data, budget.train, budget.eval)
    suffix = "_quick" if args.quick else ""
    results_dir = Path(args.results_dir or ROOT / "experiments" / "results" / f"vrm_vs_bt{suffix}")
    runs_dir = Path(args.runs_dir or ROOT / "runs" / f"vrm_vs_bt{suffix}")
    command = shlex.join(["python", "experiments/vrm_vs_bt/run.py", *argv])
    from vrm.errors import report_and_exit, user_error_types

    try:
        run_experiment(budget, [v for v in args.variants.split(",") if v], args.overrides, results_dir, runs_dir,
                       command, jobs=args.jobs, keep_checkpoints=args.keep_checkpoints)
    except user_error_types() as err:
        report_and_exit(err)


if __name__ == "__main__":
    main()
