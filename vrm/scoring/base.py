"""The scoring interface shared by every reward scorer (VRM, BT, the white-box proxy)."""

from __future__ import annotations

import abc
from collections.abc import Sequence

from vrm.data.schema import Message, PreferencePair

Prompt = str | Sequence[Message]


class Scorer(abc.ABC):
    """Anything that turns (prompt, response) into a scalar reward.

    ``score`` takes parallel lists. Optional per-example metadata that some scorers use
    (``question_types``, ``references``: see :class:`vrm.data.schema.PreferencePair`) is passed as
    keyword lists of the same length; scorers that do not use it ignore it.
    """

    name: str = "scorer"

    @abc.abstractmethod
    def score(self, prompts: Sequence[Prompt], responses: Sequence[str], *,
              question_types: Sequence[str] | None = None,
              references: Sequence[str] | None = None) -> list[float]:
        """One reward per (prompt, response)."""

    def score_pairs(self, pairs: Sequence[PreferencePair]) -> tuple[list[float], list[float]]:
        """Rewards of the chosen and of the rejected response of each pair."""
        n = len(pairs)
        prompts = [p.prompt for p in pairs] * 2
        responses = [p.chosen for p in pairs] + [p.rejected for p in pairs]
        rewards = self.score(prompts, responses,
                             question_types=[p.question_type for p in pairs] * 2,
                             references=[p.reference for p in pairs] * 2)
        return rewards[:n], rewards[n:]
