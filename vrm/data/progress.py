"""Progress of the steps that take more than a few seconds: a tqdm bar on stderr (as Lightning, TRL and datasets show
theirs), or, for a step that cannot count its work, a line when it starts and one with its elapsed time.

On a terminal the bar redraws every tenth of a second; elsewhere (a log file, CI) at most every
:data:`PLAIN_INTERVAL` seconds, so a long step writes a few lines, not thousands. ``TQDM_DISABLE=1`` turns the bars
off (tqdm reads it).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm

log = logging.getLogger(__name__)

#: Seconds between redraws of a bar when stderr is not a terminal.
PLAIN_INTERVAL = 30.0


def progress_bar(total: int | None, desc: str, unit: str = "it", disable: bool = False) -> tqdm:
    """A bar on stderr for ``total`` units of work (None: unknown); call ``update(n)`` and ``close()``."""
    tty = sys.stderr.isatty()
    off = {"disable": True} if disable else {}  # passed only when True, so that TQDM_DISABLE=1 works
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, mininterval=0.1 if tty else PLAIN_INTERVAL,
                dynamic_ncols=tty, **off)


@contextmanager
def timed_step(what: str, logger: logging.Logger = log) -> Iterator[None]:
    """``what...`` at the start and ``what: done in 12.3 s`` at the end (logged at INFO)."""
    logger.info("%s...", what)
    start = time.perf_counter()
    yield
    logger.info("%s: done in %.1f s", what, time.perf_counter() - start)
