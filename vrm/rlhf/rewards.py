"""The rewards of ``vrm-rlhf``: what the policy is optimised against (:data:`~vrm.config.rlhf.REWARD_KINDS`) and the
gold that is only tracked, each a TRL reward function ``f(prompts, completions, **columns) -> list[float]``."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from vrm.config.rlhf import GOLD_KINDS, REWARD_KINDS, GoldConfig, RLHFRewardConfig
from vrm.data.synthetic_gold import gold_of, parse_prompt, parse_response

RewardFn = Callable[..., list[float]]


class TimedReward:
    """A TRL reward function around ``fn``: strips the prompt separator (the reward sees the prompt as a user wrote
    it), sorts the batch by length for the call (padding stays small) and restores the order, and counts the
    seconds spent in it (``seconds``, ``calls``), for the share of a step spent in the reward."""

    def __init__(self, fn: RewardFn, name: str, separator: str = ""):
        self.fn, self.separator = fn, separator
        self.__name__ = name
        self.seconds, self.calls = 0.0, 0

    def strip(self, prompt: str) -> str:
        if isinstance(prompt, str) and self.separator and prompt.endswith(self.separator):
            return prompt[:-len(self.separator)]
        return prompt

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        start = time.perf_counter()
        order = sorted(range(len(completions)), key=lambda i: -len(str(completions[i])))
        rewards = self.fn([self.strip(prompts[i]) for i in order], [completions[i] for i in order])
        out = [0.0] * len(order)
        for i, r in zip(order, rewards):
            out[i] = float(r)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


@dataclass(frozen=True)
class GoldReading:
    """The synthetic gold's reading of one completion."""

    gold: float
    cue: bool
    unparseable_fraction: float


class SyntheticGold:
    """The synthetic world's gold (:mod:`vrm.data.synthetic_gold`) on benchmark prompts."""

    def __init__(self, cue_cost: float = 0.0):
        self.cue_cost = cue_cost

    def read(self, prompt: str, completion: str) -> GoldReading:
        category, topic = parse_prompt(prompt)
        parsed = parse_response(category, topic, completion)
        return GoldReading(gold_of(category, parsed, self.cue_cost), parsed.cue, parsed.unparseable_fraction)

    def __call__(self, prompts: Sequence[str], completions: Sequence[str], **kwargs: Any) -> list[float]:
        return [self.read(p, c).gold for p, c in zip(prompts, completions)]


def check_reward_config(cfg: RLHFRewardConfig, where: str = "reward") -> None:
    """Refuse a bad combination at start, naming the key."""
    if cfg.kind not in REWARD_KINDS:
        raise ValueError(f"{where}.kind={cfg.kind!r} is not one of {REWARD_KINDS}")
    if cfg.kind in ("export", "conservative") and not cfg.path:
        raise ValueError(f"{where}.kind={cfg.kind} needs {where}.path (an export folder written by vrm-export)")
    if cfg.kind in ("gold", "proxy") and cfg.path:
        raise ValueError(f"{where}.path is set but {where}.kind={cfg.kind} reads no export")
    if cfg.kind == "conservative" and not cfg.conservative_lambda >= 0:
        raise ValueError(f"{where}.conservative_lambda={cfg.conservative_lambda} must be >= 0")


def check_gold_config(cfg: GoldConfig) -> None:
    if cfg.kind not in GOLD_KINDS:
        raise ValueError(f"gold.kind={cfg.kind!r} is not one of {GOLD_KINDS}")
    if cfg.kind == "export" and not cfg.path:
        raise ValueError("gold.kind=export needs gold.path (an export folder: the gold reward model)")


def build_reward(cfg: RLHFRewardConfig, gold: GoldConfig, device: str = "auto") -> tuple[RewardFn, str]:
    """(reward function, name) of the reward config."""
    check_reward_config(cfg)
    if cfg.kind == "gold":
        return build_gold(gold), "gold"
    if cfg.kind == "proxy":
        return proxy_reward(cfg.batch_size, device), "proxy"
    from vrm.integrations.trl import RewardFunction

    lam = cfg.conservative_lambda if cfg.kind == "conservative" else None
    fn = RewardFunction(cfg.path, batch_size=cfg.batch_size, device=cfg.device if cfg.device != "auto" else device,
                        conservative_lambda=lam, conservative_samples=cfg.conservative_samples)
    return fn, fn.__name__


def build_gold(cfg: GoldConfig, device: str = "auto") -> RewardFn:
    check_gold_config(cfg)
    if cfg.kind == "synthetic":
        return SyntheticGold(cfg.cue_cost)
    from vrm.integrations.trl import RewardFunction

    return RewardFunction(cfg.path, device=device)


def proxy_reward(batch_size: int, device: str) -> RewardFn:
    """The white-box proxy reward of ``conf/scorer/proxy.yaml``."""
    from omegaconf import OmegaConf

    from vrm.config.compose import CONFIG_DIR
    from vrm.proxy import ProxyRewardScorer

    cfg = OmegaConf.load(CONFIG_DIR / "scorer" / "proxy.yaml")
    cfg.batch_size = batch_size
    if device != "auto":
        cfg.device = device
    scorer = ProxyRewardScorer.from_config(cfg)

    def proxy(prompts: Sequence[str], completions: Sequence[str], **kwargs: Any) -> list[float]:
        return scorer.score(list(prompts), list(completions))

    return proxy
