"""Monotonicity, the paper's test of a proxy reward: do the proxy and a gold reward rank policies alike?

The paper trains policies against the proxy, keeps checkpoints, and reports the Spearman correlation between each
checkpoint's mean proxy reward and mean gold reward over the same prompts. Here a "policy" is any set of responses
to a shared list of prompts (checkpoints, best-of-N selections, different models).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr

from vrm.scoring.base import Prompt, Scorer

#: A gold reward: a scorer, a function ``(prompts, responses) -> rewards``, or precomputed rewards per policy.
GoldReward = Scorer | Callable[[list[Prompt], list[str]], Sequence[float]] | Mapping[str, Sequence[float]]


def _as_vector(values: Sequence[float] | np.ndarray, label: str) -> np.ndarray:
    vector = np.asarray(values, dtype=float)
    if vector.ndim != 1:
        raise ValueError(f"{label} must be one-dimensional, got shape {vector.shape}")
    if not np.all(np.isfinite(vector)):
        raise ValueError(f"{label} has non-finite values: {vector.tolist()}")
    return vector


def monotonicity(proxy_means: Sequence[float] | np.ndarray, gold_means: Sequence[float] | np.ndarray) -> float:
    """Spearman rank correlation between the policies' mean proxy and mean gold rewards (ties get average ranks).

    Needs at least two policies and equal lengths. When either input is constant the ranking it gives is undefined
    and the result is NaN (returned, not raised, so a sweep in which every policy ties still reports; test it with
    ``math.isnan``). Non-finite means are an error.
    """
    proxy = _as_vector(proxy_means, "proxy_means")
    gold = _as_vector(gold_means, "gold_means")
    if proxy.shape != gold.shape:
        raise ValueError(f"proxy_means and gold_means differ in length: {proxy.size} != {gold.size}")
    if proxy.size < 2:
        raise ValueError(f"monotonicity needs at least 2 policies, got {proxy.size}")
    if np.ptp(proxy) == 0 or np.ptp(gold) == 0:
        return math.nan
    rho, _ = spearmanr(proxy, gold)
    return float(rho)


@dataclass(frozen=True)
class MonotonicityResult:
    """Per-policy mean rewards (in ``policies`` order) and their Spearman correlation (NaN if either is constant)."""

    policies: list[str]
    proxy_means: list[float]
    gold_means: list[float]
    spearman: float


def evaluate_policies(scorer: Scorer, gold: GoldReward, policies: Mapping[str, Sequence[tuple[Prompt, str]]], *,
                      question_types: Sequence[str] | None = None,
                      references: Sequence[str] | None = None) -> MonotonicityResult:
    """Score every policy's ``(prompt, response)`` pairs with the proxy and the gold reward, and compare rankings.

    All policies answer the same prompts in the same order; ``question_types`` and ``references`` are per prompt and
    go to ``scorer`` (and to ``gold`` when it is a :class:`Scorer`).
    """
    if len(policies) < 2:
        raise ValueError(f"monotonicity needs at least 2 policies, got {len(policies)}: {list(policies)}")
    names = list(policies)
    prompts = _shared_prompts(policies)
    if isinstance(gold, Mapping) and set(gold) != set(names):
        raise ValueError(f"gold rewards are given for {sorted(gold)} but the policies are {sorted(names)}")
    proxy_means, gold_means = [], []
    for name in names:
        responses = [response for _, response in policies[name]]
        proxy = scorer.score(prompts, responses, question_types=question_types, references=references)
        proxy_means.append(float(np.mean(_checked_rewards(proxy, len(prompts), f"proxy rewards of {name!r}"))))
        gold_rewards = _gold_rewards(gold, name, prompts, responses, question_types, references)
        gold_means.append(float(np.mean(_checked_rewards(gold_rewards, len(prompts), f"gold rewards of {name!r}"))))
    return MonotonicityResult(policies=names, proxy_means=proxy_means, gold_means=gold_means,
                              spearman=monotonicity(proxy_means, gold_means))


def _shared_prompts(policies: Mapping[str, Sequence[tuple[Prompt, str]]]) -> list[Prompt]:
    first, *others = policies
    prompts = [prompt for prompt, _ in policies[first]]
    if not prompts:
        raise ValueError(f"policy {first!r} has no responses")
    for name in others:
        pairs = policies[name]
        if len(pairs) != len(prompts):
            raise ValueError(f"policy {name!r} has {len(pairs)} responses, policy {first!r} has {len(prompts)}")
        for i, (prompt, _) in enumerate(pairs):
            if prompt != prompts[i]:
                raise ValueError(f"policy {name!r} answers a different prompt at index {i} than policy {first!r}")
    return prompts


def _gold_rewards(gold: GoldReward, name: str, prompts: list[Prompt], responses: list[str],
                  question_types: Sequence[str] | None, references: Sequence[str] | None) -> Sequence[float]:
    if isinstance(gold, Mapping):
        return gold[name]
    if isinstance(gold, Scorer):
        return gold.score(prompts, responses, question_types=question_types, references=references)
    return gold(prompts, responses)


def _checked_rewards(rewards: Sequence[float], expected: int, label: str) -> np.ndarray:
    vector = _as_vector(rewards, label)
    if vector.size != expected:
        raise ValueError(f"{label}: expected {expected} rewards (one per prompt), got {vector.size}")
    return vector
