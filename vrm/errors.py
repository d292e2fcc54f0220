"""Every exception type of the project, and how an entry point reports a user's error.

The bottom floor: nothing here imports a ``vrm`` module, so any room can raise these.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from omegaconf.errors import OmegaConfBaseException


# -- data ------------------------------------------------------------------------------------------
class DataError(ValueError):
    """A preference row or file is malformed. The message names the file, the row, the field and the fault."""

    def __init__(self, message: str, *, source: str | None = None, row: int | None = None,
                 field: str | None = None):
        where = ", ".join(
            part for part in (
                f"file {source}" if source else None,
                f"row {row}" if row is not None else None,
                f"field '{field}'" if field else None,
            ) if part
        )
        super().__init__(f"{where}: {message}" if where else message)
        self.source, self.row, self.field, self.reason = source, row, field, message


class RowFault(Exception):
    """What is wrong with a raw row (``kind`` is one of the reasons above); the loader adds where the row is."""

    def __init__(self, kind: str, field: str | None, detail: str = ""):
        super().__init__(f"{field}: {kind}: {detail}")
        self.kind, self.field = kind, field
        self.message = f"{kind}: {detail}" if detail else kind


class RowError(DataError):
    """A bad row, named by file, row (``row_kind``: 1-based ``line`` or 0-based ``row index``), field and fault."""

    def __init__(self, fault: RowFault, *, source: str, row: int, row_kind: str):
        super().__init__(fault.message, source=source, row=row, field=fault.field)
        self.kind, self.row_kind = fault.kind, row_kind
        field_part = f", field '{fault.field}'" if fault.field else ""
        self.args = (f"file {source}, {row_kind} {row}{field_part}: {fault.message}",)


class NoPair(Exception):
    """A well-formed row that yields no pair; ``reason`` is counted in the load report."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# -- models and training ---------------------------------------------------------------------------
class EncoderLoadError(RuntimeError):
    """The encoder or tokenizer a config names cannot be loaded; the message names the path."""


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or Inf; the message names the step and the batch."""


class NonFiniteModelError(NonFiniteLossError):
    """A model's weights or a run's metrics are NaN or Inf (after training, or a checkpoint given to an export); the
    message names the parameters or metrics, and the run exits non-zero instead of exporting them."""


class TrialFailedError(RuntimeError):
    """A sweep trial that has no objective to report (no validation ran, the run diverged); raised only under a
    sweeper that counts failed trials (Optuna's ``max_failure_rate``), which logs this one-line reason, marks the trial
    failed and goes on."""


# -- scoring ---------------------------------------------------------------------------------------
class QuerySplitError(ValueError):
    """A full conversation text cannot be split into prompt and response."""


class UnsafeCheckpointError(ValueError):
    """An exported folder holds pickled weights; only safetensors are loaded."""


class ExportError(ValueError):
    """The checkpoint cannot be exported as asked; the message says why and what to do instead."""


class InputLineError(ValueError):
    """A bad line of a ``vrm-score`` input file; the message names the file, the line and the field."""

    def __init__(self, path: Path, line: int, field: str | None, why: str):
        where = f"file {path}, line {line}" + (f", field '{field}'" if field else "")
        super().__init__(f"{where}: {why}")


class OutputError(ValueError):
    """An output path that breaks the output rule (:mod:`vrm.data.files`): a device, a FIFO, a folder, an input."""


class FolderInUseError(RuntimeError):
    """Another process writes into the same folder (a run folder, an export); the message names it and its pid."""


class IntegrityError(ExportError):
    """An export's file does not match the sha256 its ``vrm_manifest.json`` recorded; the message names the file."""


class MissingReferenceError(ValueError):
    """A closed-ended example has no reference answer to measure relevance against."""


class MissingExtraError(ImportError):
    """A configured option needs a package of an optional extra that is not installed; the message names the
    option, the package and the ``pip install`` line."""


# -- reporting -------------------------------------------------------------------------------------
def user_error_types() -> tuple[type[BaseException], ...]:
    """Errors caused by the user's config or data: reported in one line, not a traceback."""
    return (DataError, EncoderLoadError, NonFiniteLossError, FileNotFoundError, ValueError, OmegaConfBaseException,
            FolderInUseError, OSError, MissingExtraError)


def report_and_exit(err: BaseException) -> None:
    """One clear line on stderr and exit 1 (the full trace with HYDRA_FULL_ERROR=1)."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise err
    print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
    print("(set HYDRA_FULL_ERROR=1 for the full traceback)", file=sys.stderr)
    sys.exit(1)
