"""Console entry points: thin wrappers that parse, compose and call."""

from __future__ import annotations

import logging
import os
import sys

from omegaconf.errors import OmegaConfBaseException

from vrm.config import register_configs
from vrm.training.compose import config_dir

log = logging.getLogger("vrm")


def user_error_types() -> tuple[type[BaseException], ...]:
    """Errors caused by the user's config or data: reported in one line, not a traceback."""
    from vrm.data.schema import DataError
    from vrm.models.encoder import EncoderLoadError
    from vrm.training.module import NonFiniteLossError

    return (DataError, EncoderLoadError, NonFiniteLossError, FileNotFoundError, ValueError, OmegaConfBaseException)


def report_and_exit(err: BaseException) -> None:
    """One clear line on stderr and exit 1 (the full trace with HYDRA_FULL_ERROR=1)."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise err
    print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
    print("(set HYDRA_FULL_ERROR=1 for the full traceback)", file=sys.stderr)
    sys.exit(1)


def train_main() -> None:
    """``vrm-train [overrides]``: Hydra entry point of :func:`vrm.training.train.train`."""
    import hydra
    from omegaconf import DictConfig

    try:
        conf = config_dir()
    except FileNotFoundError as err:
        sys.exit(f"error: {err}")
    register_configs()

    @hydra.main(version_base="1.3", config_path=str(conf), config_name="train")
    def _main(cfg: DictConfig) -> float | None:
        from vrm.training.train import train

        try:
            metrics = train(cfg)
        except user_error_types() as err:
            report_and_exit(err)
        value = metrics.get(cfg.optimized_metric)
        return value

    _main()


def export_main(argv: list[str] | None = None) -> None:
    """``vrm-export CHECKPOINT OUT_DIR [--with-code | --plain]`` (see :func:`vrm.scoring.cli.export_main`)."""
    from vrm.scoring.cli import export_main as scoring_export_main

    scoring_export_main(argv)
