"""The gold reward of any text in the synthetic world: parse a response back to the attributes it expresses.

:func:`~vrm.data.synthetic_text.render_response` writes a response from its attribute levels; :func:`parse_response`
reads them back from any text, generated or rendered, so that a policy's samples get their true reward
(:func:`gold_reward`) as in Gao et al. (2022)'s gold-reward protocol.

The gold rule
-------------
Text is cut into words and punctuation marks (spacing does not matter) and read left to right; at each place the
longest sentence of the text bank that starts there is taken (greedy); a token that starts no known sentence is
**unparseable**. Each recognised sentence expresses one attribute at one level (an answer sentence also names a
topic, a specific detail sentence a category), or is a cue (a stock opener or a filler sentence).

- An attribute is 1 only when **exactly one** sentence expresses it and that sentence is at level 1. No sentence
  for it (left out, or cut off by truncation), two or more (repeated or contradictory text) all score 0:
  repetition never pays.
- ``on_topic`` is 1 when the single answer sentence names the prompt's topic and a specific detail sentence, if
  there is one, comes from the prompt's category.
- ``cue`` is whether any cue sentence is present (it is not an attribute).
- The gold reward is ``(1 - unparseable_fraction) * true_reward(category, attributes) - cue_cost * cue``, where
  ``unparseable_fraction`` is the share of the response's tokens that no sentence covers: a reader gets value only
  from text it can read, so garbage dilutes the reward and an empty response scores 0. A truncated last sentence is
  unparseable and its attribute is missing. ``cue_cost`` (default 0, as in the benchmark's labels) is a documented
  sycophancy cost of the cue, a knob for testbeds where a cue-loving reward must visibly lower the gold.

A rendered benchmark response always parses with no unparseable token and its exact attributes and cue
(``tests/test_synthetic_gold.py``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from vrm.data.synthetic import ATTRIBUTES, CATEGORIES, true_reward
from vrm.data.synthetic_text import (
    _POLITE_END,
    _POLITE_START,
    _SENTENCES,
    FILLER_SENTENCES,
    SPURIOUS_OPENERS,
    TEXT,
)

_TOKEN = re.compile(r"\w+|[^\w\s]")
#: A sentence's role: (attribute or "cue", level, topic or None, category of a specific detail or None).
_Role = tuple[str, int, str | None, str | None]


def words(text: str) -> tuple[str, ...]:
    """The tokens the parser reads: words and single punctuation marks, lower-cased (spacing is ignored)."""
    return tuple(t.lower() for t in _TOKEN.findall(text))


@dataclass(frozen=True)
class ParsedResponse:
    """What the gold reads in a response: attribute levels (aligned with ``ATTRIBUTES``), the cue, and how much of it
    was readable."""

    attributes: tuple[int, ...]
    cue: bool
    num_tokens: int
    unparseable_tokens: int
    sentences: tuple[str, ...]

    @property
    def unparseable_fraction(self) -> float:
        return 1.0 if self.num_tokens == 0 else self.unparseable_tokens / self.num_tokens


@functools.lru_cache(maxsize=1)
def _bank() -> dict[str, list[tuple[tuple[str, ...], _Role]]]:
    """First token -> [(sentence tokens, role)], longest first."""
    entries: list[tuple[str, _Role]] = []
    topics = [(c, t) for c, text in TEXT.items() for t in text.topics]
    for level, templates in enumerate(_SENTENCES["answers"]):
        entries += [(s.format(topic=t), ("answers", level, t, c)) for s in templates for c, t in topics]
    for level, sentences in enumerate(_SENTENCES["safe"]):
        entries += [(s, ("safe", level, None, None)) for s in sentences]
    entries += [(s, ("detail", 0, None, None)) for s in _SENTENCES["detail"][0]]
    entries += [(s, ("detail", 1, None, c)) for c, text in TEXT.items() for s in text.details]
    for pool in (_POLITE_START, _POLITE_END):
        for level, sentences in enumerate(pool):
            entries += [(s, ("polite", level, None, None)) for s in sentences]
    entries += [(s, ("cue", 1, None, None)) for s in (*SPURIOUS_OPENERS, *FILLER_SENTENCES)]
    bank: dict[str, list[tuple[tuple[str, ...], _Role]]] = {}
    for sentence, role in entries:
        tokens = words(sentence)
        bank.setdefault(tokens[0], []).append((tokens, role))
    for options in bank.values():
        options.sort(key=lambda item: -len(item[0]))
    return bank


@functools.lru_cache(maxsize=1)
def _prompts() -> dict[tuple[str, ...], tuple[str, str]]:
    """Prompt tokens -> (category, topic), for every template and topic of the benchmark."""
    return {words(template.format(topic=topic)): (category, topic)
            for category, text in TEXT.items() for template in text.templates for topic in text.topics}


def parse_prompt(prompt: str) -> tuple[str, str]:
    """(category, topic) of a benchmark prompt; a prompt that is none raises ``ValueError`` naming it."""
    found = _prompts().get(words(prompt))
    if found is None:
        raise ValueError(f"not a synthetic benchmark prompt (no category/topic template matches): {prompt!r}")
    return found


def parse_response(category: str, topic: str, response: str) -> ParsedResponse:
    """The attributes and cue that ``response`` expresses for a prompt of ``category`` on ``topic`` (module rules)."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown synthetic category {category!r}; expected one of {tuple(CATEGORIES)}")
    tokens = words(response)
    bank = _bank()
    roles: list[_Role] = []
    sentences: list[str] = []
    unparseable = i = 0
    while i < len(tokens):
        match = next(((s, role) for s, role in bank.get(tokens[i], ()) if tokens[i:i + len(s)] == s), None)
        if match is None:
            unparseable += 1
            i += 1
            continue
        roles.append(match[1])
        sentences.append(" ".join(match[0]))
        i += len(match[0])
    by_attribute = {name: [r for r in roles if r[0] == name] for name in ("answers", "polite", "safe", "detail")}

    def single(name: str) -> _Role | None:
        return by_attribute[name][0] if len(by_attribute[name]) == 1 else None

    answer, detail = single("answers"), single("detail")
    on_topic = answer is not None and answer[2] == topic and (detail is None or detail[1] == 0
                                                               or detail[3] == category)
    levels = {"on_topic": int(on_topic)}
    for name in ("answers", "polite", "safe", "detail"):
        role = single(name)
        levels[name] = int(role is not None and role[1] == 1)
    return ParsedResponse(tuple(levels[a] for a in ATTRIBUTES), any(r[0] == "cue" for r in roles), len(tokens),
                          unparseable, tuple(sentences))


def gold_reward(category: str, topic: str, response: str, cue_cost: float = 0.0) -> float:
    """``(1 - unparseable_fraction) * true_reward - cue_cost * cue`` of a response (see the module docstring)."""
    parsed = parse_response(category, topic, response)
    return gold_of(category, parsed, cue_cost)


def gold_of(category: str, parsed: ParsedResponse, cue_cost: float = 0.0) -> float:
    return (1.0 - parsed.unparseable_fraction) * true_reward(category, parsed.attributes) - cue_cost * parsed.cue


class GoldReward:
    """The gold as a TRL reward function: ``reward_funcs=[GoldReward()]`` on benchmark prompts (plain strings)."""

    __name__ = "gold"

    def __init__(self, cue_cost: float = 0.0):
        self.cue_cost = cue_cost

    def __call__(self, prompts: Sequence[str], completions: Sequence[str], **kwargs) -> list[float]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        return [gold_reward(*parse_prompt(p), c, self.cue_cost) for p, c in zip(prompts, completions)]
