"""A TRL reward function that scores exactly as ``vrm-score`` does.

``GRPOTrainer(reward_funcs=EXPORT)`` loads the export as a model and, for conversational prompts, renders
``prompt + completion`` with the export's chat template: that is the input contract, so it gets the trained reward.
For plain-text prompts TRL joins ``prompt + completion`` into one bare string, where no prompt/response boundary is
left to find; pass ``reward_funcs=[RewardFunction(EXPORT)]`` instead, which receives prompts and completions apart::

    from trl import GRPOConfig, GRPOTrainer
    from vrm.integrations.trl import RewardFunction

    trainer = GRPOTrainer(model=POLICY, reward_funcs=[RewardFunction("exports/my_vrm")], args=GRPOConfig(...),
                          train_dataset=prompts)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vrm.data.schema import Message
from vrm.scoring.scorer import DEFAULT_CONSERVATIVE_SAMPLES, RewardScorer


class RewardFunction:
    """``reward_funcs=[RewardFunction(EXPORT)]``: one ``vrm-score`` reward per (prompt, completion).

    ``conservative_lambda`` (a VRM export) makes it the conservative reward ``mean - lambda * std`` over
    ``conservative_samples`` posterior samples (``vrm-score --conservative-lambda``).

    Prompts are strings or message lists; completions are strings or message lists (TRL's conversational form:
    the assistant message, after any tool turns, which then join the prompt). ``device`` ``auto`` is the first CUDA
    device when there is one.
    """

    def __init__(self, model: str | Path | RewardScorer, batch_size: int = 32, device: str | torch.device = "auto",
                 dtype: str | torch.dtype | None = None, conservative_lambda: float | None = None,
                 conservative_samples: int = DEFAULT_CONSERVATIVE_SAMPLES):
        if isinstance(model, RewardScorer):
            if conservative_lambda is not None:
                raise ValueError("pass conservative_lambda to the RewardScorer itself, or give an export path")
            self.scorer = model
        else:
            self.scorer = RewardScorer.from_pretrained(model, batch_size=batch_size, device=device, dtype=dtype,
                                                       conservative_lambda=conservative_lambda,
                                                       conservative_samples=conservative_samples)
        #: What TRL logs the reward under (``rewards/<name>``).
        suffix = "" if self.scorer.conservative_lambda is None else f"_conservative{self.scorer.conservative_lambda:g}"
        self.__name__ = f"vrm_{self.scorer.name}{suffix}"

    def __call__(self, prompts: Sequence[str | Sequence[Message]], completions: Sequence[str | Sequence[Message]],
                 **kwargs: Any) -> list[float]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        pairs = [as_pair(p, c) for p, c in zip(prompts, completions)]
        return self.scorer.score([p for p, _ in pairs], [r for _, r in pairs])


def as_pair(prompt: str | Sequence[Message], completion: str | Sequence[Message]) -> tuple[Any, str]:
    """(prompt, response text) of one TRL example; a completion's earlier messages (tool turns) join the prompt."""
    if isinstance(completion, str):
        return prompt, completion
    messages = list(completion)
    if not messages or messages[-1].get("role") != "assistant":
        raise ValueError(f"a conversational completion must end with an assistant message; got roles "
                         f"{[m.get('role') for m in messages]}")
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    return [*prompt, *messages[:-1]], messages[-1]["content"]
