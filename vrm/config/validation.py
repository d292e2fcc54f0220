"""One validation of the numeric values of a config: a declarative table of rules per key (finite, integer, range, None
allowed or not), orderings between keys, and the few keys whose allowed values are not a range.

The types of the structured configs catch a word where a number belongs; these rules catch the numbers that have the
right type and no meaning (``model.tau=inf``, ``model.kl_warmup_steps=-5``, ``trainer.accumulate_grad_batches=0``,
``seed=-1``, ``model.concentration_min`` above ``model.concentration_max``). Each error names the key, the bad value
and what is allowed. It needs nothing but the config, so ``vrm-train`` and ``vrm-eval`` run it before torch loads.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

#: Seeds go to numpy's legacy ``np.random.seed`` (through Lightning's ``seed_everything``), which takes [0, 2**32 - 1].
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class Rule:
    """The allowed values of one numeric key: a (finite) number in ``[low, high]`` (``low_open``: ``(low, high]``),
    an integer when ``integer``, or None when ``optional``. ``note`` says what an edge value means."""

    key: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    integer: bool = False
    optional: bool = False
    #: 0 is in the range but means nothing (``trainer.max_epochs=0`` trains nothing and exits 0).
    nonzero: bool = False
    note: str = ""

    def allowed(self) -> str:
        kind = "" if self.integer else "a finite number "
        if self.low is not None and self.high is not None:
            bound = f"in {'(' if self.low_open else '['}{_num(self.low)}, {_num(self.high)}]"
        elif self.low is not None:
            bound = f"{'>' if self.low_open else '>='} {_num(self.low)}"
        elif self.high is not None:
            bound = f"<= {_num(self.high)}"
        else:
            bound = ""
        text = (kind + bound).strip() or "a finite number"
        text += ", not 0" if self.nonzero else ""
        return text + (" or null" if self.optional else "")

    def check(self, value: Any) -> str | None:
        """None when ``value`` is allowed, else the error message."""
        if value is None:
            return None if self.optional else f"{self.key}=null must be {self.allowed()}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            ok = False
        elif isinstance(value, int):  # exact, however large (float() of 10**400 overflows)
            ok = True
        else:
            ok = math.isfinite(value) and (not self.integer or value.is_integer())
        if ok and self.low is not None:
            ok = value > self.low if self.low_open else value >= self.low
        if ok and self.high is not None:
            ok = value <= self.high
        if ok and self.nonzero:
            ok = value != 0
        if ok:
            return None
        return f"{self.key}={value!r} must be {self.allowed()}" + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True)
class Ordering:
    """``low_key`` <= ``high_key`` (< when ``strict``); ``why`` says what breaks otherwise."""

    low_key: str
    high_key: str
    strict: bool = False
    why: str = ""

    def check(self, low: Any, high: Any) -> str | None:
        if low is None or high is None or (low < high if self.strict else low <= high):
            return None
        return (f"{self.low_key}={low!r} must be {'<' if self.strict else '<='} {self.high_key}={high!r}"
                + (f" ({self.why})" if self.why else ""))


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def seed_rule(key: str, optional: bool = True) -> Rule:
    return Rule(key, 0, MAX_SEED, integer=True, optional=optional, note="numpy's seed range")


def count(key: str, low: int = 1, high: int | None = None, optional: bool = False, note: str = "",
          nonzero: bool = False) -> Rule:
    return Rule(key, low, high, integer=True, optional=optional, note=note, nonzero=nonzero)


def positive(key: str, high: float | None = None, note: str = "") -> Rule:
    return Rule(key, 0, high, low_open=True, note=note)


def nonnegative(key: str, high: float | None = None, note: str = "") -> Rule:
    return Rule(key, 0, high, note=note)


def fraction(key: str, optional: bool = False) -> Rule:
    return Rule(key, 0, 1, optional=optional)


_ABSENT = object()


def select(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, throw_on_missing=False)


def check_rules(cfg: DictConfig, rules: Iterable[Rule], orderings: Sequence[Ordering] = (), prefix: str = "") -> None:
    """Raise ValueError naming the first key of ``cfg`` that breaks its rule (keys absent from ``cfg`` are skipped;
    ``prefix`` is prepended to the key in messages, e.g. ``scorer.`` for a scorer's own options)."""
    for rule in rules:
        value = OmegaConf.select(cfg, rule.key, default=_ABSENT, throw_on_missing=False)
        if value is _ABSENT:
            continue
        message = rule.check(value)
        if message:
            raise ValueError(prefix + message)
    for order in orderings:
        message = order.check(select(cfg, order.low_key), select(cfg, order.high_key))
        if message:
            raise ValueError(prefix + message)
