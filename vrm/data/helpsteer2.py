"""nvidia/HelpSteer2 as its dataset card lays it out: the per-response ratings and the ``preference/`` data.

- Per-response data (``train.jsonl.gz``, ``validation.jsonl.gz``): one row per response with five 0-4 ratings;
  consecutive rows with the same prompt are the responses to it. Every two of them with different helpfulness make
  a pair (the more helpful one chosen, margin = the helpfulness difference, the five ratings carried as aspects);
  equal helpfulness is a tie, which has no chosen side, so it is always left out and counted.
- Preference data (``preference/preference.jsonl.gz``, ``data.subset=preference`` or ``data=helpsteer2_preference``):
  one row per response pair, ``response_1``, ``response_2`` and ``preference_strength`` from -3 (response 1 much
  better) to 3 (response 2 much better); margin = ``|preference_strength|``; 0 is a tie (left out and counted). Its
  ``split`` column (``train``, ``val``) names the split, all rows being in one file.

About 29% of the prompts are multi-turn: the earlier turns sit inside the prompt string, each after an
``<extra_id_1>User`` or ``<extra_id_1>Assistant`` line (the first user turn has no marker), and the response field
holds the last assistant turn. :func:`parse_helpsteer2_prompt` turns them into real messages.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from vrm.data.schema import Message, PreferencePair
from vrm.data.validation import (
    EMPTY,
    INVALID_VALUE,
    WRONG_TYPE,
    RowFault,
    number,
    require,
    text_field,
    type_name,
)
from vrm.errors import NoPair

HELPSTEER2_ASPECTS = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
#: Why a pair was left out when its two responses are scored alike (every format's tie, ``data.ties``).
TIE = "tie: both responses scored alike"
#: The ``preference/`` data's ``split`` column -> canonical split.
PREFERENCE_SPLITS = {"train": "train", "val": "validation", "validation": "validation"}

_TURN = re.compile(r"\n?<extra_id_1>(User|Assistant)\n?")
_ROLES = {"User": "user", "Assistant": "assistant"}


def parse_helpsteer2_prompt(prompt: str, field: str = "prompt") -> list[Message]:
    """``"u1\\n<extra_id_1>Assistant\\na1\\n<extra_id_1>User\\nu2"`` -> user, assistant, user messages.

    Turns must alternate, start and end with the user (the response is the next assistant turn) and be non-empty.
    """
    parts = _TURN.split(prompt)
    turns = [("user", parts[0])] + [(_ROLES[who], content) for who, content in zip(parts[1::2], parts[2::2])]
    for i, (role, content) in enumerate(turns):
        if not content.strip():
            raise RowFault(EMPTY, field, f"turn {i + 1} ({role}) is empty")
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            raise RowFault(INVALID_VALUE, field, f"turn {i + 1} is marked {role}, expected {expected} "
                                                 "(turns must alternate, starting with the user)")
    if turns[-1][0] != "user":
        raise RowFault(INVALID_VALUE, field, "the last turn must be the user's (the response answers it)")
    return [{"role": role, "content": content.strip()} for role, content in turns]


@dataclass(frozen=True)
class RatedResponse:
    prompt: str
    response: str
    ratings: tuple[float, ...]  # aligned with HELPSTEER2_ASPECTS
    messages: tuple[tuple[str, str], ...]  # the parsed prompt, as (role, content)


def helpsteer2_row(row: Mapping, row_no: int, ctx: object) -> list[RatedResponse]:
    prompt = text_field(row, "prompt")
    turns = tuple((m["role"], m["content"]) for m in parse_helpsteer2_prompt(prompt))
    return [RatedResponse(prompt, text_field(row, "response"),
                          tuple(number(require(row, a), a) for a in HELPSTEER2_ASPECTS), turns)]


def helpsteer2_pairs(items: list[tuple[int, RatedResponse]],
                     excluded: Counter[str]) -> list[tuple[int, PreferencePair]]:
    """Pair the responses of each run of consecutive rows sharing a prompt, the more helpful one chosen."""
    pairs = []
    for _, run in itertools.groupby(items, key=lambda item: item[1].prompt):
        run = list(run)
        if len(run) < 2:
            excluded["helpsteer2: prompt with a single response"] += 1
        for (row_a, a), (_, b) in itertools.combinations(run, 2):
            if a.ratings[0] == b.ratings[0]:
                excluded[TIE] += 1
                continue
            chosen, rejected = (a, b) if a.ratings[0] > b.ratings[0] else (b, a)
            pairs.append((row_a, PreferencePair(
                [{"role": role, "content": content} for role, content in a.messages], chosen.response,
                rejected.response, margin=chosen.ratings[0] - rejected.ratings[0],
                aspects_chosen=list(chosen.ratings), aspects_rejected=list(rejected.ratings))))
    return pairs


def helpsteer2_preference_row(row: Mapping, row_no: int, ctx: object) -> list[PreferencePair]:
    prompt = parse_helpsteer2_prompt(text_field(row, "prompt"))
    first, second = text_field(row, "response_1"), text_field(row, "response_2")
    strength = require(row, "preference_strength")
    if isinstance(strength, bool) or not isinstance(strength, int | float) or strength != int(strength):
        raise RowFault(WRONG_TYPE, "preference_strength", f"expected an integer from -3 to 3, got "
                                                          f"{type_name(strength)} {strength!r}")
    if not -3 <= strength <= 3:
        raise RowFault(INVALID_VALUE, "preference_strength", f"expected an integer from -3 to 3, got {strength}")
    if strength == 0:
        raise NoPair(TIE)
    chosen, rejected = (first, second) if strength < 0 else (second, first)
    return [PreferencePair(prompt, chosen, rejected, margin=float(abs(strength)))]


def preference_split(row: Mapping) -> str:
    """The canonical split a ``preference/`` row belongs to, from its ``split`` column."""
    value = text_field(row, "split")
    if value not in PREFERENCE_SPLITS:
        raise RowFault(INVALID_VALUE, "split", f"expected one of {sorted(PREFERENCE_SPLITS)}, got {value[:40]!r}")
    return PREFERENCE_SPLITS[value]
