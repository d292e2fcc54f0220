"""What every entry point shares: the Hydra wrapper and the one-line report of a user's error."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from vrm.config import register_configs
from vrm.config.compose import config_dir
from vrm.errors import report_and_exit, user_error_types


def hydra_command(config_name: str, task: Callable[[Any], Any]) -> None:
    """Run ``task(cfg)`` on ``conf/<config_name>.yaml`` plus the command line, as ``@hydra.main`` does."""
    import hydra

    try:
        conf = config_dir()
    except FileNotFoundError as err:
        sys.exit(f"error: {err}")
    register_configs()

    @hydra.main(version_base="1.3", config_path=str(conf), config_name=config_name)
    def _main(cfg: Any) -> Any:
        return call_reporting_errors(task, cfg)

    _main()


def call_reporting_errors(task: Callable[..., Any], *args: Any,
                          extra: tuple[type[BaseException], ...] = ()) -> Any:
    """``task(*args)``; a user's error (or one of ``extra``) becomes one line on stderr and exit status 1."""
    try:
        return task(*args)
    except (*extra, *user_error_types()) as err:
        report_and_exit(err)
