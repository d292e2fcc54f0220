"""``vrm-score`` on a file of preference pairs.

A pairs file is read exactly as training reads ``data.format=jsonl`` files (:func:`vrm.data.loading.read_pair_file`:
JSON Lines, JSON, CSV or Parquet, TRL's explicit ``prompt``/``chosen``/``rejected`` or conversational layout, every
row checked and a bad one named by file, row and field). Both responses of each pair are scored; each output line is
the input row plus ``reward_chosen``, ``reward_rejected`` and ``reward_margin`` (chosen minus rejected; not
``margin``, which a pairs file may carry as its own preference strength), and, for a VRM, the other scorer outputs
with the same ``_chosen``/``_rejected`` suffixes, in input order.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from vrm.data.loading import read_pair_file
from vrm.data.sources import EXTENSIONS
from vrm.data.textio import json_lines
from vrm.data.validation import INVALID_VALUE
from vrm.errors import RowError, RowFault

SIDES = ("chosen", "rejected")
#: Output key of the reward difference of a pair.
MARGIN_KEY = "reward_margin"


def is_pairs_file(path: Path) -> bool:
    """Preference pairs rather than prompt/response lines: a JSON, CSV or Parquet file, or JSON Lines whose first
    row has ``chosen`` or ``rejected``."""
    if EXTENSIONS.get(path.suffix.lower(), "jsonl") != "jsonl":
        return True
    first = next(json_lines(path), None)
    return first is not None and isinstance(first[2], Mapping) and any(side in first[2] for side in SIDES)


#: Why an input key that the output adds is refused (``vrm-score --replace-columns`` allows it).
REPLACED_KEY = ("the input already has this key, which the output would replace with the model's value (the input's "
                "value would be lost): rename it, or pass --replace-columns")


def replaced_key(row: dict, keys) -> str | None:
    """The first of ``keys`` that ``row`` already holds, or None."""
    return next((key for key in keys if key in row), None)


#: Keys a scored pair gets (for a VRM with --num-samples, all of them); an input row holding one would lose it.
PAIR_OUTPUT_KEYS = (*(f"{key}_{side}" for key in ("reward", "objective_scores", "weights", "reward_std")
                      for side in SIDES), MARGIN_KEY)


def score_pairs_file(scorer, path: Path, num_samples: int = 0, progress: bool = True,
                     replace_columns: bool = True) -> list[dict]:
    """Each row of a pairs file with the rewards of both its responses and their margin, in file order; a row that
    already holds an output key is refused unless ``replace_columns``."""
    row_kind, rows = read_pair_file(path)
    for row_no, raw, _ in rows:
        clash = None if replace_columns else replaced_key(raw, PAIR_OUTPUT_KEYS)
        if clash is not None:
            raise RowError(RowFault(INVALID_VALUE, clash, REPLACED_KEY), source=str(path), row=row_no,
                           row_kind=row_kind)
    encoded = []
    for side in SIDES:
        for row_no, _, pair in rows:
            try:
                encoded.append(scorer.encode_pair(pair.prompt, getattr(pair, side)))
            except ValueError as err:
                fault = RowFault(INVALID_VALUE, side, f"cannot be tokenised: {err}")
                raise RowError(fault, source=str(path), row=row_no, row_kind=row_kind) from err
    pairs = [pair for _, _, pair in rows]
    details = scorer.score_encoded(encoded, num_samples=num_samples, progress=progress,
                                   question_types=[p.question_type or None for p in pairs] * 2,
                                   references=[p.reference or None for p in pairs] * 2)
    n = len(rows)
    records = []
    for i, (_, raw, _) in enumerate(rows):
        record = dict(raw)
        for key, values in details.items():
            record[f"{key}_chosen"], record[f"{key}_rejected"] = values[i], values[n + i]
        record[MARGIN_KEY] = record["reward_chosen"] - record["reward_rejected"]
        records.append(record)
    return records
