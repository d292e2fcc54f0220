"""Best-of-N from the starting policy, on the axes of the RL curves (Gao et al. 2022): for n = 1, 2, 4, ..., the gold
of the candidate the reward ranks first among n samples, against sqrt(KL) with KL = log n - (n - 1) / n.

The ``n_max`` samples of each prompt are cut into ``n_max / n`` disjoint groups of ``n``, so every sample is used at
every n and the value is the mean over groups and prompts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from vrm.rlhf.tracking import mean, sample


def best_of_n_kl(n: int) -> float:
    """The analytic KL of best-of-n to the sampling policy: log n - (n - 1) / n."""
    return math.log(n) - (n - 1) / n


def draw_candidates(model, tokenizer, prompts: Sequence[str], n_max: int, max_new_tokens: int, seed: int,
                    temperature: float = 1.0) -> list[dict[str, Any]]:
    """``n_max`` samples per prompt from ``model``: [{prompt, texts}] (drawn in a forked RNG from ``seed``)."""
    if n_max < 1 or n_max & (n_max - 1):
        raise ValueError(f"n_max={n_max} must be a power of two")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        texts, _, owners = sample(model, tokenizer, prompts, n_max, max_new_tokens, temperature)
    out = [{"prompt": p, "texts": []} for p in prompts]
    for owner, text in zip(owners, texts):
        out[owner]["texts"].append(text)
    return out


def best_of_n_curve(rewards: Sequence[Sequence[float]], golds: Sequence[Sequence[float]],
                    extras: dict[str, Sequence[Sequence[float]]] | None = None) -> list[dict[str, float]]:
    """Per n (powers of two up to the samples per prompt): gold, reward and any ``extras`` (e.g. cue) of the chosen
    candidates, with KL and sqrt(KL). ``rewards[i][j]`` is the reward of prompt i's sample j."""
    n_max = len(rewards[0])
    extras = extras or {}
    curve = []
    n = 1
    while n <= n_max:
        chosen: dict[str, list[float]] = {"gold": [], "reward": [], **{k: [] for k in extras}}
        for i, row in enumerate(rewards):
            for start in range(0, n_max - n + 1, n):
                best = max(range(start, start + n), key=lambda j: row[j])
                chosen["gold"].append(golds[i][best])
                chosen["reward"].append(row[best])
                for key, values in extras.items():
                    chosen[key].append(values[i][best])
        kl = best_of_n_kl(n)
        curve.append({"n": n, "kl": kl, "sqrt_kl": math.sqrt(kl), **{k: mean(v) for k, v in chosen.items()}})
        n *= 2
    return curve
