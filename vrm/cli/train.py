"""``vrm-train [overrides]``: the Hydra entry point of :func:`vrm.training.train.train`."""

from __future__ import annotations

from omegaconf import DictConfig

from vrm.cli.app import hydra_command


def run(cfg: DictConfig) -> float | None:
    """Train as configured; the value of ``optimized_metric`` (what a sweeper optimises)."""
    from vrm.training.train import train

    metrics = train(cfg)
    return metrics.get(cfg.optimized_metric)


def main() -> None:
    hydra_command("train", run)
