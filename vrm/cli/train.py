"""``vrm-train [overrides]``: train (:func:`vrm.training.train.train`), then export the best checkpoint when
``export_dir`` is set (:func:`vrm.scoring.export.export_checkpoint`)."""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from vrm.cli.app import hydra_command

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
    """Train as configured; the value of ``optimized_metric`` (what a sweeper optimises)."""
    return train_and_export(cfg).get(cfg.optimized_metric)


def main() -> None:
    hydra_command("train", run)
