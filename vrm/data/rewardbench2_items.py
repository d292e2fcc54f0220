"""allenai/reward-bench-2 as its dataset card lays it out: one best-of-N item per row, in one ``test`` split.

A row has ``id``, ``prompt``, ``chosen`` (a list: one correct answer, several in the Ties subset), ``rejected`` (a
list: three incorrect answers, any number in Ties), ``num_correct``, ``num_incorrect``, ``total_completions``,
``models``, ``subset`` (Factuality, Precise IF, Math, Safety, Focus, Ties) and ``additional_metadata``. Ties ids are
``ref:<n>`` and ``tied:<n>`` (the same prompt scored with one reference answer and with all its correct answers).

Each item becomes a :class:`BestOfNItem` (kept for RewardBench 2's own scoring, :mod:`vrm.evaluation.rewardbench2`)
and the pairs of every correct answer with every incorrect one (correct-major), so that pairwise metrics and
``vrm-train``'s test stage read it like any other preference data.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vrm.data.schema import PreferencePair
from vrm.data.validation import (
    INVALID_VALUE,
    WRONG_TYPE,
    RowFault,
    check_pair,
    number,
    require,
    text,
    text_field,
    type_name,
)

#: RewardBench 2's subsets, in its leaderboard's order.
REWARDBENCH2_SUBSETS = ("Factuality", "Precise IF", "Math", "Safety", "Focus", "Ties")
TIES = "Ties"


@dataclass(frozen=True)
class BestOfNItem:
    """One RewardBench 2 row: the completions in the package's order (``chosen`` then ``rejected``)."""

    id: str
    prompt: str
    chosen: tuple[str, ...]
    rejected: tuple[str, ...]
    subset: str

    @property
    def completions(self) -> tuple[str, ...]:
        return self.chosen + self.rejected

    def pair_indices(self) -> list[tuple[int, int]]:
        """(chosen, rejected) indices into :attr:`completions` of its pairs, correct-major."""
        return [(i, len(self.chosen) + j) for i in range(len(self.chosen)) for j in range(len(self.rejected))]


def _texts(row: Mapping, key: str) -> tuple[str, ...]:
    value = require(row, key)
    if not isinstance(value, list | tuple) or not value:
        raise RowFault(WRONG_TYPE, key, f"expected a non-empty list of strings, got {type_name(value)}")
    return tuple(text(item, f"{key}[{i}]") for i, item in enumerate(value))


def _count(row: Mapping, key: str, expected: int) -> None:
    value = number(require(row, key), key)
    if value != expected:
        raise RowFault(INVALID_VALUE, key, f"{value:g} but the row has {expected}")


def rewardbench2_row(row: Mapping, row_no: int, ctx: object) -> list[BestOfNItem]:
    chosen, rejected = _texts(row, "chosen"), _texts(row, "rejected")
    _count(row, "num_correct", len(chosen))
    _count(row, "total_completions", len(chosen) + len(rejected))
    subset = text_field(row, "subset")
    item_id = require(row, "id")
    if not isinstance(item_id, str | int) or isinstance(item_id, bool):
        raise RowFault(WRONG_TYPE, "id", f"expected a string, got {type_name(item_id)}")
    item_id = str(item_id)
    if subset == TIES and (item_id.partition(":")[0] not in ("ref", "tied") or not item_id.partition(":")[2].isdigit()):
        raise RowFault(INVALID_VALUE, "id", f"a Ties id must be ref:<n> or tied:<n>, got {item_id[:40]!r}")
    item = BestOfNItem(item_id, text_field(row, "prompt"), chosen, rejected, subset)
    for _, pair in _item_pairs(0, item):  # a bad pair fails the whole item, so that items and pairs stay aligned
        check_pair(pair)
    return [item]


def _item_pairs(row_no: int, item: BestOfNItem) -> list[tuple[int, PreferencePair]]:
    completions = item.completions
    return [(row_no, PreferencePair.from_text(item.prompt, completions[i], completions[j], subset=item.subset))
            for i, j in item.pair_indices()]


def rewardbench2_pairs(items: Sequence[tuple[int, BestOfNItem]],
                       excluded: Counter[str]) -> list[tuple[int, PreferencePair]]:
    """Every correct answer against every incorrect one, item by item."""
    return [pair for row_no, item in items for pair in _item_pairs(row_no, item)]
