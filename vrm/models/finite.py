"""Finding NaN and Inf in a model's weights and in a run's metrics, so that a diverged model is named and refused
rather than tested, exported or served as if it were fine."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from vrm.errors import NonFiniteModelError

#: How many offending names a message lists before it says "and N more".
NAMES_SHOWN = 5


def _listed(names: list[str]) -> str:
    more = f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else ""
    return ", ".join(names[:NAMES_SHOWN]) + more


def nonfinite_tensors(named: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """Names of the floating-point tensors that hold a NaN or an Inf."""
    return [name for name, t in named
            if torch.is_floating_point(t) and not bool(torch.isfinite(t.detach()).all())]


def check_finite_parameters(model: nn.Module, what: str, hint: str = "") -> None:
    """NonFiniteModelError naming the parameters and buffers of ``model`` that hold NaN or Inf (``what``: whose)."""
    bad = nonfinite_tensors([*model.named_parameters(), *model.named_buffers()])
    if bad:
        raise NonFiniteModelError(f"{what} has non-finite (NaN or Inf) weights in {len(bad)} tensors: {_listed(bad)}"
                                  + (f"; {hint}" if hint else ""))


def check_finite_metrics(metrics: Mapping[str, float], what: str, hint: str = "") -> None:
    """NonFiniteModelError naming the metrics that are NaN or Inf."""
    bad = [f"{k}={v}" for k, v in sorted(metrics.items()) if not math.isfinite(v)]
    if bad:
        raise NonFiniteModelError(f"{what}: non-finite metrics {_listed(bad)}" + (f"; {hint}" if hint else ""))
