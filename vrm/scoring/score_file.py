"""``vrm-score``'s library part: read a JSON Lines input file (each bad line named), score it, write the output."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from vrm.errors import InputLineError
from vrm.scoring.base import QuerySplitError


def _messages(value, path: Path, line: int, field: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise InputLineError(path, line, field, "must be a non-empty list of {\"role\", \"content\"} messages")
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise InputLineError(path, line, f"{field}[{i}]", "must be an object with 'role' and 'content'")
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                raise InputLineError(path, line, f"{field}[{i}].{key}", "must be a string")
    return value


def _encode_row(row: dict, scorer, path: Path, line: int):
    """The encoded sequence of one input object (``prompt``+``response``, ``messages`` or ``query``)."""
    from vrm.data.schema import QUESTION_TYPES

    if row.get("question_type") not in (None, *QUESTION_TYPES):
        raise InputLineError(path, line, "question_type", f"must be one of {list(QUESTION_TYPES)}")
    if not isinstance(row.get("reference", ""), str | None):
        raise InputLineError(path, line, "reference", "must be a string (a reference answer)")
    if "query" in row:
        if not isinstance(row["query"], str):
            raise InputLineError(path, line, "query", "must be a string (a full conversation text)")
        try:
            return scorer.encode_query(row["query"])
        except QuerySplitError as err:
            raise InputLineError(path, line, "query", str(err)) from err
    if "messages" in row:
        messages = _messages(row["messages"], path, line, "messages")
        if len(messages) < 2 or messages[-1]["role"] != "assistant":
            raise InputLineError(path, line, "messages", "must end with the assistant response after at least one "
                                                         "other message")
        prompt, response, field = messages[:-1], messages[-1]["content"], "messages"
    else:
        if "prompt" not in row:
            raise InputLineError(path, line, "prompt", "missing: give 'prompt' and 'response', 'messages', or "
                                                       "'query'")
        prompt = row["prompt"]
        if not isinstance(prompt, str):
            prompt = _messages(prompt, path, line, "prompt")
        if not isinstance(row.get("response"), str):
            raise InputLineError(path, line, "response", "missing" if "response" not in row else "must be a string")
        response, field = row["response"], "prompt"
    try:
        return scorer.encode_pair(prompt, response)
    except ValueError as err:
        raise InputLineError(path, line, field, f"cannot be tokenised: {err}") from err


def read_score_input(path: Path, scorer) -> tuple[list[dict], list]:
    """Every non-blank line of a JSON Lines file and its encoded sequence; the first bad line raises."""
    rows, encoded = [], []
    with path.open(encoding="utf-8") as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as err:
                raise InputLineError(path, line, None, f"not valid JSON ({err.msg} at column {err.colno})") from err
            if not isinstance(row, dict):
                raise InputLineError(path, line, None, f"must be a JSON object, not {type(row).__name__}")
            encoded.append(_encode_row(row, scorer, path, line))
            rows.append(row)
    return rows, encoded


def score_file(scorer, input_path: Path, output_path: Path, num_samples: int = 0, progress: bool = True) -> int:
    """Score a JSON Lines file into another (each input object plus ``reward`` and VRM's extras); returns lines.

    A line's ``question_type`` and ``reference`` go to the scorer (the proxy uses them).
    """
    rows, encoded = read_score_input(input_path, scorer)
    details = scorer.score_encoded(encoded, num_samples=num_samples, progress=progress,
                                   question_types=[row.get("question_type") for row in rows],
                                   references=[row.get("reference") for row in rows])
    output_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output_path.name}.", dir=output_path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for i, row in enumerate(rows):
                out.write(json.dumps({**row, **{key: values[i] for key, values in details.items()}}) + "\n")
        os.replace(tmp, output_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(rows)
