"""Errors caused by the user's config or data, and how an entry point reports them."""

from __future__ import annotations

import os
import sys

from omegaconf.errors import OmegaConfBaseException


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
