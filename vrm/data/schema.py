"""The one canonical preference-pair schema every data source maps into.

A row of a canonical ``datasets.Dataset`` has exactly the columns of :data:`CANONICAL_FEATURES`
(adapters may carry extra columns, e.g. the synthetic benchmark's ground truth):

- ``prompt``: the conversation before the response, a list of ``{"role", "content"}`` messages.
  A plain-text prompt becomes one user message.
- ``chosen`` / ``rejected``: the preferred and the dispreferred response text.
- ``margin``: preference strength when the source gives one, else ``None``.
- ``aspects_chosen`` / ``aspects_rejected``: per-aspect ratings aligned with the dataset's aspect names
  (adapters report the names beside the dataset); ``None`` entries where a rating is missing; empty lists when unrated.
- ``subset``: the subset or source a pair came from ("" when none).
- ``question_type``: ``"open"`` or ``"closed"`` or "" when unknown (the proxy reward uses it).
- ``reference``: a reference answer ("" when none; closed-ended questions use it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import datasets

Message = dict[str, str]

CANONICAL_FEATURES = datasets.Features(
    {
        "prompt": datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")}),
        "chosen": datasets.Value("string"),
        "rejected": datasets.Value("string"),
        "margin": datasets.Value("float64"),
        "aspects_chosen": datasets.List(datasets.Value("float64")),
        "aspects_rejected": datasets.List(datasets.Value("float64")),
        "subset": datasets.Value("string"),
        "question_type": datasets.Value("string"),
        "reference": datasets.Value("string"),
    }
)

#: The column (and batch key) the data module adds: the index of a pair's ``subset`` among the training split's prompt
#: groups (:func:`prompt_groups_of`), -1 when its subset is not one of them.
PROMPT_GROUP = "prompt_group"
#: The most distinct ``subset`` values that still count as prompt groups (more look like ids, not kinds of prompt).
MAX_PROMPT_GROUPS = 64


def prompt_groups_of(subsets: Sequence[str]) -> list[str]:
    """The prompt groups of a training split: its distinct non-empty ``subset`` values, sorted; empty unless there are
    between 2 and :data:`MAX_PROMPT_GROUPS` of them (one group, or hundreds, carry no kind of prompt to share)."""
    names = sorted({s for s in subsets if s})
    return names if 2 <= len(names) <= MAX_PROMPT_GROUPS else []


#: Allowed values of ``question_type``.
QUESTION_TYPES = ("open", "closed", "")
#: Roles a prompt or conversation message may have (those of TRL's conversational datasets and chat templates).
MESSAGE_ROLES = ("system", "user", "assistant", "tool")


@dataclass
class PreferencePair:
    """One preference judgement: ``chosen`` was preferred over ``rejected`` as an answer to ``prompt``."""

    prompt: list[Message]
    chosen: str
    rejected: str
    margin: float | None = None
    aspects_chosen: list[float | None] = field(default_factory=list)
    aspects_rejected: list[float | None] = field(default_factory=list)
    subset: str = ""
    question_type: str = ""
    reference: str = ""

    @classmethod
    def from_text(cls, prompt: str, chosen: str, rejected: str, **kwargs) -> PreferencePair:
        return cls(prompt=[{"role": "user", "content": prompt}], chosen=chosen, rejected=rejected, **kwargs)

    def to_row(self) -> dict:
        return asdict(self)


def prompt_text(prompt: Sequence[Message] | str) -> str:
    """Plain-text rendering of a prompt: the content of a single user message, else ``role: content`` lines.

    This is the documented fallback used when a tokenizer has no chat template.
    """
    if isinstance(prompt, str):
        return prompt
    if len(prompt) == 1 and prompt[0]["role"] == "user":
        return prompt[0]["content"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)


def as_messages(prompt: Sequence[Message] | str) -> list[Message]:
    """A prompt as a message list (a plain string becomes one user message)."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": m["role"], "content": m["content"]} for m in prompt]
