"""Row validation and the bad-row policy.

Adapters check the fields they read with the helpers below and raise :class:`RowFault` (what is wrong, in which
field). The loader adds where the row is and hands the fault to :class:`BadRowPolicy`, which either raises a
:class:`RowError` (``data.on_bad_row=error``) or counts the row per reason and keeps it for the rejects file
(``data.on_bad_row=skip``). No row is dropped or coerced without one of the two.
"""

from __future__ import annotations

import logging
import math
import unicodedata
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from vrm.data.limits import MAX_MESSAGES, too_long
from vrm.data.schema import MESSAGE_ROLES, QUESTION_TYPES, Message, PreferencePair
from vrm.data.textio import undecodable, write_jsonl_atomically
from vrm.errors import DataError, RowError, RowFault

log = logging.getLogger(__name__)

# What can be wrong with a row; the keys of the skip counts.
MISSING = "missing field"
WRONG_TYPE = "wrong type"
EMPTY = "empty text"
IDENTICAL = "identical chosen and rejected"
UNDECODABLE = "undecodable text"
INVALID_JSON = "invalid JSON"
INVALID_VALUE = "invalid value"
TOO_LONG = "too long"

#: Values of ``data.on_bad_row``.
ON_BAD_ROW = ("error", "skip")
#: File name of the rejected rows in the output folder.
REJECTS_FILE = "rejects.jsonl"
#: What a row number means: a 1-based line of a text file, or a 0-based index into a table.
LINE, ROW_INDEX = "line", "row index"


def type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def require(row: Mapping, key: str, field: str | None = None) -> object:
    """``row[key]``; a missing key and a null value are both a missing field."""
    value = row.get(key)
    if value is None:
        raise RowFault(MISSING, field or key)
    return value


def check_decodable(value: str, field: str) -> str:
    """Reject text that cannot be UTF-8 encoded (:func:`vrm.data.textio.undecodable`: invalid bytes, lone
    surrogates)."""
    why = undecodable(value)
    if why is not None:
        raise RowFault(UNDECODABLE, field, why)
    return value


def invisible(value: str) -> bool:
    """Whether ``value`` has no visible character: whitespace, and format and control characters (zero-width
    spaces, joiners, byte order marks), which tokenizers drop, leaving no token."""
    return all(ch.isspace() or unicodedata.category(ch) in ("Cf", "Cc") for ch in value)


def text(value: object, field: str, *, allow_empty: bool = False) -> str:
    """A decodable string within the text limit (:mod:`vrm.data.limits`), with a visible character unless
    ``allow_empty``."""
    if not isinstance(value, str):
        raise RowFault(WRONG_TYPE, field, f"expected a string, got {type_name(value)}")
    long = too_long(value)
    if long is not None:
        raise RowFault(TOO_LONG, field, long)
    check_decodable(value, field)
    if not allow_empty and invisible(value):
        raise RowFault(EMPTY, field, "" if not value.strip() else "only invisible characters (zero-width spaces "
                                                                   "or other format characters), no token to score")
    return value


def text_field(row: Mapping, key: str, field: str | None = None) -> str:
    return text(require(row, key, field), field or key)


def optional_text(row: Mapping, key: str) -> str:
    """An optional string column ("" when absent or null)."""
    value = row.get(key)
    return "" if value is None else text(value, key, allow_empty=True)


def number(value: object, field: str, *, parse_text: bool = False) -> float:
    """A finite number (a bool is not one); numeric text too when ``parse_text`` (sources that store ratings as text)."""
    if parse_text and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise RowFault(WRONG_TYPE, field, f"expected a number, got text {value[:40]!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RowFault(WRONG_TYPE, field, f"expected a number, got {type_name(value)}")
    try:
        result = float(value)
    except OverflowError:
        result = math.inf
    if not math.isfinite(result):
        raise RowFault(INVALID_VALUE, field, f"expected a finite number, got {result}")
    return result


def optional_number(row: Mapping, key: str) -> float | None:
    value = row.get(key)
    return None if value is None else number(value, key)


def ratings(value: object, field: str) -> list[float | None]:
    """A list of per-aspect ratings, ``None`` where a rating is missing."""
    if not isinstance(value, list):
        raise RowFault(WRONG_TYPE, field, f"expected a list of numbers, got {type_name(value)}")
    return [None if v is None else number(v, f"{field}[{i}]") for i, v in enumerate(value)]


def messages(value: object, field: str) -> list[Message]:
    """A list of ``{"role", "content"}`` messages: a role of :data:`MESSAGE_ROLES`, non-empty content (other keys
    are ignored)."""
    if not isinstance(value, list):
        raise RowFault(WRONG_TYPE, field, f"expected a list of messages, got {type_name(value)}")
    if len(value) > MAX_MESSAGES:
        raise RowFault(TOO_LONG, field, f"{len(value)} messages, over the limit of {MAX_MESSAGES} "
                                        "(vrm.data.limits.MAX_MESSAGES)")
    out = []
    for i, message in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(message, Mapping):
            raise RowFault(WRONG_TYPE, where, f"expected a {{role, content}} message, got {type_name(message)}")
        role = text_field(message, "role", f"{where}.role")
        if role not in MESSAGE_ROLES:
            raise RowFault(INVALID_VALUE, f"{where}.role", f"unknown role {role[:40]!r}; expected one of "
                                                           f"{list(MESSAGE_ROLES)}")
        out.append({"role": role, "content": text_field(message, "content", f"{where}.content")})
    return out


def check_pair(pair: PreferencePair) -> PreferencePair:
    """Invariants of a canonical pair, whatever the source: texts present and decodable, chosen != rejected."""
    if not isinstance(pair.prompt, list) or not pair.prompt:
        raise RowFault(EMPTY, "prompt", "no prompt messages")
    messages(pair.prompt, "prompt")
    text(pair.chosen, "chosen")
    text(pair.rejected, "rejected")
    if pair.chosen.strip() == pair.rejected.strip():
        raise RowFault(IDENTICAL, "rejected")
    if pair.margin is not None:
        number(pair.margin, "margin")
    for name in ("aspects_chosen", "aspects_rejected"):
        ratings(getattr(pair, name), name)
    if len(pair.aspects_chosen) != len(pair.aspects_rejected):
        raise RowFault(INVALID_VALUE, "aspects_rejected", f"{len(pair.aspects_rejected)} ratings for "
                                                          f"{len(pair.aspects_chosen)} in aspects_chosen")
    for name in ("subset", "reference"):
        text(getattr(pair, name), name, allow_empty=True)
    if pair.question_type not in QUESTION_TYPES:
        raise RowFault(INVALID_VALUE, "question_type", f"expected one of {QUESTION_TYPES}, got {pair.question_type!r}")
    return pair


class BadRowPolicy:
    """``data.on_bad_row``: raise on the first bad row (``error``) or count it per reason and keep it (``skip``)."""

    def __init__(self, on_bad_row: str):
        if on_bad_row not in ON_BAD_ROW:
            raise DataError(f"data.on_bad_row must be one of {ON_BAD_ROW}, got {on_bad_row!r}")
        self.on_bad_row = on_bad_row
        self.counts: Counter[str] = Counter()
        self.rejects: list[dict] = []

    def reject(self, fault: RowFault, *, source: str, row: int, row_kind: str, raw: object) -> None:
        error = RowError(fault, source=source, row=row, row_kind=row_kind)
        if self.on_bad_row == "error":
            raise error from fault
        self.counts[fault.kind] += 1
        self.rejects.append({"file": source, "row": row, "row_kind": row_kind, "field": fault.field,
                             "reason": fault.message, "raw": raw})

    def write_rejects(self, output_dir: str | Path | None) -> Path | None:
        """Write the rejected rows, one JSON object a line, to ``output_dir/rejects.jsonl`` (if any were rejected)."""
        if not self.rejects:
            return None
        if output_dir is None:
            log.warning("%d rejected rows not written: no output folder was given", len(self.rejects))
            return None
        path = Path(output_dir) / REJECTS_FILE
        write_jsonl_atomically(path, self.rejects, default=repr)  # undecodable rows kept as they were read
        return path
