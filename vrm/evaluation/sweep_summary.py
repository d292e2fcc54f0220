"""A Hydra callback that summarises a multirun (Optuna or grid): best trial, table of trials, plots.

At the end of ``vrm-train -m ...`` it reads every job folder of the sweep (``<sweep dir>/<job num>/``):
the overrides Hydra saved in ``.hydra/overrides.yaml`` and the metrics ``train()`` wrote to
``metrics.json`` (vrm.metric_names.METRICS_FILE), and writes into the sweep folder
``sweep_summary.json``, ``sweep_summary.md`` and ``<metric>_vs_<param>.png`` for each swept parameter. A job
that fails (a trial with no objective: :class:`vrm.errors.TrialFailedError`) leaves its one-line reason in
``trial_failure.txt``, and the summary (without plots) is rewritten after every job, so a sweep the sweeper ends
early (Optuna when no trial completed) still has one listing its failed trials.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from vrm.config import DEFAULT_OPTIMIZED_METRIC
from vrm.data.files import write_text_atomically
from vrm.metric_names import METRICS_FILE

log = logging.getLogger(__name__)

SUMMARY_JSON, SUMMARY_MD = "sweep_summary.json", "sweep_summary.md"
#: A failed job's reason, in its job folder.
FAILURE_FILE = "trial_failure.txt"


@dataclass
class Trial:
    number: int
    overrides: list[str]
    params: dict[str, Any] = field(default_factory=dict)
    value: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    #: Why the job failed (its exception, one line), when it did.
    failure: str | None = None


def parse_value(text: str) -> Any:
    """An override's value as YAML reads it (``4`` -> 4, ``0.01`` -> 0.01, ``abc`` -> 'abc')."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    params = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if sep:
            params[key.lstrip("+~")] = parse_value(value)
    return params


def read_trials(sweep_dir: Path, metric: str) -> list[Trial]:
    """One :class:`Trial` per numbered job folder; a job without metrics (failed) has value None."""
    trials = []
    for job_dir in sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)):
        overrides_file = job_dir / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
        trial = Trial(int(job_dir.name), list(overrides or []), parse_overrides(overrides or []))
        metrics_file = job_dir / METRICS_FILE
        if metrics_file.is_file():
            trial.metrics = json.loads(metrics_file.read_text())
            value = trial.metrics.get(metric)
            trial.value = float(value) if value is not None and math.isfinite(value) else None
        failure_file = job_dir / FAILURE_FILE
        if failure_file.is_file():
            trial.failure = failure_file.read_text().strip()
        trials.append(trial)
    return trials


def swept_params(trials: list[Trial], declared: list[str] | None = None) -> list[str]:
    """The sweeper's declared parameters, then the other override keys whose value differs between trials (swept on
    the command line: ``key=choice(0,2)``)."""
    keys = sorted({k for t in trials for k in t.params})
    varying = [k for k in keys if len({repr(t.params.get(k)) for t in trials}) > 1]
    declared = [k for k in declared or [] if k in keys]
    return declared + [k for k in varying if k not in declared]


def best_trial(trials: list[Trial], direction: str) -> Trial | None:
    done = [t for t in trials if t.value is not None]
    if not done:
        return None
    return (max if direction == "maximize" else min)(done, key=lambda t: t.value)


def markdown(summary: dict[str, Any]) -> str:
    metric, params, best = summary["metric"], summary["params"], summary["best"]
    lines = [f"# Sweep summary: {metric} ({summary['direction']})", ""]
    if best is None:
        lines += ["No trial finished.", ""]
    else:
        lines += [f"Best trial: **{best['number']}**, {metric} = {best['value']:.4f}", "",
                  "Overrides: `" + " ".join(best["overrides"]) + "`", ""]
    lines += ["| trial | " + " | ".join(params) + f" | {metric} |",
              "|" + "---|" * (len(params) + 2)]
    for t in summary["trials"]:
        failure = t.get("failure")
        value = f"{t['value']:.4f}" if t["value"] is not None else \
            "failed" + (f": {failure}".replace("|", "\\|") if failure else "")
        lines.append(f"| {t['number']} | " + " | ".join(str(t["params"].get(p)) for p in params) + f" | {value} |")
    return "\n".join(lines) + "\n"


def plot_params(trials: list[Trial], params: list[str], metric: str, out_dir: Path) -> list[str]:
    """One PNG of the metric against each numeric swept parameter (finished trials, sorted by value)."""
    from vrm.evaluation.plots import plot_metric_vs_param

    files = []
    for param in params:
        points = sorted((t.params[param], t.value) for t in trials
                        if t.value is not None and isinstance(t.params.get(param), int | float)
                        and not isinstance(t.params.get(param), bool))
        if not points:
            continue
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        log_x = min(xs) > 0 and max(xs) / min(xs) >= 100
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{metric}_vs_{param}") + ".png"
        plot_metric_vs_param(xs, ys, out_dir / name, xlabel=param, ylabel=metric, log_x=log_x)
        files.append(name)
    return files


def summarize_sweep(sweep_dir: str | Path, metric: str = DEFAULT_OPTIMIZED_METRIC, direction: str = "maximize",
                    declared_params: list[str] | None = None, plots: bool = True) -> dict[str, Any]:
    """Write ``sweep_summary.json``, ``sweep_summary.md`` and (``plots``) the plots into ``sweep_dir``; return the
    summary."""
    sweep_dir = Path(sweep_dir)
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction={direction!r} is not one of ('maximize', 'minimize')")
    trials = read_trials(sweep_dir, metric)
    params = swept_params(trials, declared_params)
    best = best_trial(trials, direction)
    summary = {"metric": metric, "direction": direction, "params": params,
               "best": asdict(best) if best else None, "trials": [asdict(t) for t in trials],
               "num_trials": len(trials), "num_failed": sum(t.value is None for t in trials)}
    summary["plots"] = plot_params(trials, params, metric, sweep_dir) if plots else []
    write_text_atomically(sweep_dir / SUMMARY_JSON, json.dumps(summary, indent=2, default=str) + "\n")
    write_text_atomically(sweep_dir / SUMMARY_MD, markdown(summary))
    if not plots:
        return summary
    log.info("sweep summary of %d trials in %s (best: %s)", len(trials), sweep_dir,
             None if best is None else f"trial {best.number}, {metric}={best.value:.4f}")
    return summary


class SweepSummaryCallback(Callback):
    """``hydra.callbacks.sweep_summary``: calls :func:`summarize_sweep` at the end of every multirun."""

    def __init__(self, direction: str | None = None):
        self.direction = direction
        self.sweep_dir: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_dir = str(config.hydra.sweep.dir)  # resolved once, before any job runs

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        """In a multirun: a failed job's reason into its folder, then the summary so far (no plots)."""
        from hydra.core.utils import JobStatus
        from hydra.types import RunMode

        if config.hydra.mode != RunMode.MULTIRUN:
            return
        job_dir = Path(config.hydra.runtime.output_dir)
        if job_return.status == JobStatus.FAILED:
            err = job_return._return_value  # JobReturn.return_value would raise it
            reason = " ".join(f"{type(err).__name__}: {err}".split())
            write_text_atomically(job_dir / FAILURE_FILE, reason + "\n")
        self._summarize(config, Path(self.sweep_dir) if self.sweep_dir else job_dir.parent, plots=False)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._summarize(config, Path(self.sweep_dir or str(config.hydra.sweep.dir)), plots=True)

    def _summarize(self, config: DictConfig, sweep_dir: Path, plots: bool) -> None:
        sweeper = config.hydra.get("sweeper") or {}
        direction = self.direction or sweeper.get("direction") or "maximize"
        params = sweeper.get("params") or {}
        if not sweep_dir.is_dir():
            log.warning("no sweep folder %s: nothing to summarise", sweep_dir)
            return
        summarize_sweep(sweep_dir, config.get("optimized_metric") or DEFAULT_OPTIMIZED_METRIC, str(direction),
                        declared_params=list(params) or None, plots=plots)
