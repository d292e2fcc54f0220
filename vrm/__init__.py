"""VRM: variational reward models.

Importing ``vrm`` registers the exported model with transformers' Auto classes, so
``AutoModelForSequenceClassification.from_pretrained(export_dir)`` works without ``trust_remote_code``.

The registration needs transformers and torch, which take most of a console script's start-up (seconds). So that
``vrm-train --help`` and a config error answer without them, ``import vrm`` registers at once only when transformers
is already imported; otherwise as soon as transformers is first imported, by whoever imports it (an import hook),
before any Auto class can be used.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["VRMConfig", "VRMForSequenceClassification", "RewardScorer"]
__version__ = "0.1.0"

_TRANSFORMERS, _MODELING = "transformers", "vrm.models.modeling_vrm"


def register_auto_classes() -> None:
    """Register :class:`VRMConfig` and :class:`VRMForSequenceClassification` with the Auto classes (idempotent)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from vrm.models.modeling_vrm import VRMConfig, VRMForSequenceClassification

    AutoConfig.register(VRMConfig.model_type, VRMConfig, exist_ok=True)
    AutoModelForSequenceClassification.register(VRMConfig, VRMForSequenceClassification, exist_ok=True)


class _ThenCall:
    """A module's own loader, calling ``then()`` once the module has run (everything else goes to the loader)."""

    def __init__(self, loader: Any, then: Callable[[], None]):
        self.loader, self.then = loader, then

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.loader.exec_module(module)
        module.__spec__.loader = module.__loader__ = self.loader
        self.then()


class _RegisterWhenImported(importlib.abc.MetaPathFinder):
    """Registers the Auto classes as soon as both transformers and ``vrm.models.modeling_vrm`` are imported:
    after modeling_vrm (which imports transformers), or after transformers, by importing modeling_vrm then."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in (_TRANSFORMERS, _MODELING):
            return None
        for finder in sys.meta_path:
            spec = None if finder is self else finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None:
            spec.loader = _ThenCall(spec.loader, _after_modeling if fullname == _MODELING else _after_transformers)
        return spec


def _after_transformers() -> None:
    if _MODELING not in sys.modules:  # else modeling_vrm is the one importing transformers: it registers when done
        importlib.import_module(_MODELING)


def _after_modeling() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _RegisterWhenImported)]
    register_auto_classes()


if _TRANSFORMERS in sys.modules:
    register_auto_classes()
elif not any(isinstance(finder, _RegisterWhenImported) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWhenImported())


def __getattr__(name: str):
    if name in ("VRMConfig", "VRMForSequenceClassification"):
        from vrm.models import modeling_vrm

        return getattr(modeling_vrm, name)
    if name == "RewardScorer":
        from vrm.scoring.scorer import RewardScorer

        return RewardScorer
    raise AttributeError(f"module 'vrm' has no attribute {name!r}")
