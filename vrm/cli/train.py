"""``vrm-train [overrides]``: train (:func:`vrm.training.train.train`), then export the best checkpoint when
``export_dir`` is set (:func:`vrm.scoring.export.export_checkpoint`)."""

from __future__ import annotations

import logging
import math

from omegaconf import DictConfig

from vrm.cli.app import hydra_command
from vrm.config.train import validate

log = logging.getLogger(__name__)


def train_and_export(cfg: DictConfig) -> dict[str, float]:
    """What ``vrm-train`` runs: fit and test, then export the best checkpoint to ``export_dir`` (if set)."""
    from vrm.training.train import recorded_best_checkpoint, train

    metrics = train(cfg)
    if cfg.get("export_dir") is not None:
        best = recorded_best_checkpoint(cfg.paths.output_dir)
        if not best:
            raise ValueError("export_dir is set but no checkpoint was saved (enable_checkpointing?)")
        from vrm.scoring.export import export_checkpoint

        export_checkpoint(best, cfg.export_dir, metrics)
        log.info("exported %s to %s", best, cfg.export_dir)
    return metrics


def run(cfg: DictConfig) -> float | None:
    """Train as configured; the value of ``optimized_metric`` (what a sweeper optimises). An impossible value fails
    before torch, transformers and Lightning are imported (seconds of start-up).

    Under a sweeper that counts failed trials (Optuna: ``hydra.sweeper.max_failure_rate``), a trial without a finite
    objective (no validation ran, the run diverged) raises :class:`TrialFailedError` with a one-line reason: the
    sweeper logs it, marks the trial failed and goes on, and the sweep summary lists it. Elsewhere (a single run, a
    grid sweep) the reason is a warning and the value None."""
    validate(cfg)
    from vrm.errors import NonFiniteLossError, TrialFailedError
    from vrm.training.train import missing_objective_reason

    try:
        metrics = train_and_export(cfg)
    except NonFiniteLossError as err:
        if sweeper_counts_failures():
            raise TrialFailedError(f"{type(err).__name__}: {err}") from err
        raise
    value = metrics.get(cfg.optimized_metric)
    if value is None or not math.isfinite(value):
        reason = missing_objective_reason(cfg, metrics)
        if sweeper_counts_failures():
            raise TrialFailedError(reason)
        log.warning(reason)
        return None
    return value


def sweeper_counts_failures() -> bool:
    """Whether this job runs under a sweeper that takes a failed job as a failed trial and goes on (Hydra's Optuna and
    Nevergrad sweepers, which have ``max_failure_rate``); Hydra's basic (grid) sweeper stops at the first failure."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return False
    hydra_cfg = HydraConfig.get()
    return hydra_cfg.mode == RunMode.MULTIRUN and "max_failure_rate" in (hydra_cfg.sweeper or {})


def main() -> None:
    hydra_command("train", run)
