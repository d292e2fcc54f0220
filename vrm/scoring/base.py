"""The scoring interface shared by every reward scorer (VRM, BT, the white-box proxy)."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

from vrm.data.schema import Message, PreferencePair
from vrm.errors import QuerySplitError

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


#: Where the response starts in a full conversation text when the tokenizer has no chat template to derive it
#: from: Anthropic HH's turn marker, the layout of ``\n\nHuman: ...\n\nAssistant: ...`` transcripts.
DEFAULT_RESPONSE_MARKER = "\n\nAssistant:"


def split_query(query: str, marker: str, prompt: str | None = None) -> tuple[str, str]:
    """The one rule that splits a full conversation text (OpenRLHF's ``query``) into ``(head, response)``.

    ``head`` is everything up to and including the LAST occurrence of ``marker`` (the prompt, ending with the
    marker), ``response`` everything after it. When the caller also sends the ``prompt`` text and the query starts
    with it, the split is right after that prefix instead (exact, whatever the response contains).
    """
    if prompt and query.startswith(prompt):
        return prompt, query[len(prompt):]
    if not marker:
        raise QuerySplitError("the response marker is empty")
    at = query.rfind(marker)
    if at < 0:
        raise QuerySplitError(f"no response marker {marker!r} in the text (and no prompt prefix to split at)")
    end = at + len(marker)
    return query[:end], query[end:]


def plain_pair(head: str, response: str, marker: str) -> tuple[Prompt, str]:
    """``(prompt, response)`` of a split query for models without a chat template.

    The marker is dropped and both sides are stripped of surrounding whitespace; a head that is an Anthropic HH
    transcript (``\\n\\nHuman: ...\\n\\nAssistant: ...``) becomes its messages, as the ``hh_rlhf`` loader reads it.
    """
    from vrm.data.formats import parse_hh_transcript
    from vrm.data.validation import RowFault

    if marker and head.endswith(marker):
        head = head[:-len(marker)]
    prompt: Prompt = head.strip()
    if head.lstrip(" \n").startswith("Human:"):
        try:
            prompt = parse_hh_transcript("\n\n" + head.lstrip(" \n"), "query")
        except RowFault:
            pass
    return prompt, response.strip()


@dataclass(frozen=True)
class TextPair:
    """One (prompt, response) kept as text: what :class:`TextScorer` "encodes" to."""

    prompt: Prompt
    response: str


class TextScorer:
    """The encode-then-score interface of :class:`~vrm.scoring.scorer.RewardScorer` over a :class:`Scorer` that
    reads text (the white-box proxy), for ``vrm-score`` and ``vrm-serve``.

    ``encode_pair`` keeps the pair as it is; ``encode_query`` splits a full conversation text by
    :func:`split_query` at ``response_marker`` (default :data:`DEFAULT_RESPONSE_MARKER`: such scorers have no chat
    template) and :func:`plain_pair`; ``score_encoded`` gives rewards only, from ``scorer.score``.
    """

    def __init__(self, scorer: Scorer, response_marker: str | None = None):
        self.scorer = scorer
        self.name = scorer.name
        self.response_marker = response_marker or DEFAULT_RESPONSE_MARKER

    def encode_pair(self, prompt: Prompt, response: str) -> TextPair:
        return TextPair(prompt, response)

    def encode_query(self, query: str, prompt: str | None = None) -> TextPair:
        head, response = split_query(query, self.response_marker, prompt)
        return TextPair(*plain_pair(head, response, self.response_marker))

    def check_num_samples(self, num_samples: int) -> None:
        """Any ``num_samples`` is accepted (and ignored)."""

    def score_encoded(self, encoded: Sequence[TextPair], num_samples: int = 0, progress: bool = False, *,
                      question_types: Sequence[str | None] | None = None,
                      references: Sequence[str | None] | None = None) -> dict[str, list]:
        """``{"reward": [...]}``; ``num_samples`` and ``progress`` are accepted for the interface and ignored."""
        if not encoded:
            return {"reward": []}
        return {"reward": self.scorer.score([e.prompt for e in encoded], [e.response for e in encoded],
                                            question_types=question_types, references=references)}
