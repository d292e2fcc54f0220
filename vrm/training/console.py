"""One line per message on the console during training.

Lightning prints each of its log lines twice under Hydra: the ``lightning`` package gives its logger a console
handler of its own (``INFO: ...`` on stderr) and the record also reaches the root logger, which Hydra's job logging
prints (and writes to the job's log file). And it prints two notices the project understands: an advertisement for
litlogger (and litmodels) in every run, and "Found N module(s) in eval mode" when the encoder is frozen, which is
meant. These are dropped at the logger or warning that emits them; every other line and warning stays.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

#: How Lightning's advertisements begin (litlogger when no LitLogger is attached, litmodels for checkpoints).
LIGHTNING_TIP = "💡 Tip: For seamless cloud"
#: The logger Lightning's ``rank_zero_info`` writes to.
RANK_ZERO_LOGGER = "lightning.pytorch.utilities.rank_zero"


class DropLightningTips(logging.Filter):
    """Drops Lightning's advertisements (:data:`LIGHTNING_TIP`), nothing else."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(LIGHTNING_TIP)


def one_line_per_message() -> None:
    """Once Lightning is imported: when the root logger prints (Hydra's job logging, an application's
    ``logging.basicConfig``), Lightning's own console handler steps aside so each line appears once, as Lightning's
    subpackages already do when the root logger has handlers at their import; and its tips are dropped."""
    if logging.getLogger().handlers:
        lightning_logger = logging.getLogger("lightning")
        for handler in list(lightning_logger.handlers):
            if type(handler) is logging.StreamHandler:
                lightning_logger.removeHandler(handler)
    rank_zero = logging.getLogger(RANK_ZERO_LOGGER)
    if not any(isinstance(f, DropLightningTips) for f in rank_zero.filters):
        rank_zero.addFilter(DropLightningTips())


def eval_mode_notice(count: int) -> str:
    """The start of Lightning's warning about modules in eval mode at the start of training."""
    return f"Found {count} module(s) in eval mode at the start of training."


@contextmanager
def frozen_encoder_notice_silenced(model: nn.Module, encoder: nn.Module | None) -> Iterator[None]:
    """Around ``trainer.fit``: silence Lightning's "Found N module(s) in eval mode" when those N modules are exactly
    the frozen encoder's (kept in eval mode on purpose: no dropout). Any other count (a head left in eval mode by
    mistake) still warns."""
    in_encoder = {id(m) for m in encoder.modules()} if encoder is not None else set()
    in_eval = [m for m in model.modules() if not m.training]
    if not in_eval or any(id(m) not in in_encoder for m in in_eval):
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=re.escape(eval_mode_notice(len(in_eval))))
        yield


def split_table(metrics: dict[str, float], splits: list[str], title: str = "Test metric") -> str:
    """The test results as one table: a row per metric, a column per split, each value once under its split's name
    (Lightning's own table puts every split's metrics under every "DataLoader i", as each test epoch logs them all)."""
    names: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        split, sep, name = key.partition("/")
        if sep and split in splits:
            names.setdefault(name, {})[split] = value
    rows = [[title, *splits]] + [[name, *(f"{values[s]:.4f}" if s in values else "" for s in splits)]
                                 for name, values in sorted(names.items())]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) if i == 0 else cell.rjust(width) for i, (cell, width)
                       in enumerate(zip(row, widths, strict=True))).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
