"""``vrm-score``'s library part: read the input (prompt/response lines, each bad line named, or a file of preference
pairs: :mod:`vrm.scoring.inputs`), score it, write the output atomically."""

from __future__ import annotations

from pathlib import Path

from vrm.errors import InputLineError
from vrm.scoring.base import QuerySplitError


def _text(value, path: Path, line: int, field: str) -> str:
    """A string that is text (no invalid UTF-8, no lone surrogate: :func:`vrm.data.textio.undecodable`) within the
    text limit (:mod:`vrm.data.limits`)."""
    from vrm.data.limits import too_long
    from vrm.data.textio import undecodable

    if not isinstance(value, str):
        raise InputLineError(path, line, field, "must be a string")
    why = too_long(value)
    if why is not None:
        raise InputLineError(path, line, field, f"too long: {why}")
    why = undecodable(value)
    if why is not None:
        raise InputLineError(path, line, field, f"undecodable text: {why}")
    return value


def _messages(value, path: Path, line: int, field: str) -> list[dict]:
    from vrm.data.limits import MAX_MESSAGES
    from vrm.data.schema import MESSAGE_ROLES

    if not isinstance(value, list) or not value:
        raise InputLineError(path, line, field, "must be a non-empty list of {\"role\", \"content\"} messages")
    if len(value) > MAX_MESSAGES:
        raise InputLineError(path, line, field, f"too long: {len(value)} messages, over the limit of {MAX_MESSAGES} "
                                                "(vrm.data.limits.MAX_MESSAGES)")
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise InputLineError(path, line, f"{field}[{i}]", "must be an object with 'role' and 'content'")
        for key in ("role", "content"):
            _text(message.get(key), path, line, f"{field}[{i}].{key}")
        if message["role"] not in MESSAGE_ROLES:
            raise InputLineError(path, line, f"{field}[{i}].role", f"unknown role {message['role'][:40]!r}; expected "
                                                                   f"one of {list(MESSAGE_ROLES)}")
    return value


def _encode_row(row: dict, scorer, path: Path, line: int):
    """The encoded sequence of one input object (``prompt``+``response``, ``messages`` or ``query``)."""
    from vrm.data.schema import QUESTION_TYPES

    if row.get("question_type") not in (None, *QUESTION_TYPES):
        raise InputLineError(path, line, "question_type", f"must be one of {list(QUESTION_TYPES)}")
    if not isinstance(row.get("reference", ""), str | None):
        raise InputLineError(path, line, "reference", "must be a string (a reference answer)")
    if row.get("reference") is not None:
        _text(row["reference"], path, line, "reference")
    if "query" in row:
        if not isinstance(row["query"], str):
            raise InputLineError(path, line, "query", "must be a string (a full conversation text)")
        _text(row["query"], path, line, "query")
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
        prompt = _text(prompt, path, line, "prompt") if isinstance(prompt, str) else _messages(prompt, path, line,
                                                                                               "prompt")
        if "response" not in row:
            raise InputLineError(path, line, "response", "missing")
        response, field = _text(row["response"], path, line, "response"), "prompt"
    try:
        return scorer.encode_pair(prompt, response)
    except ValueError as err:
        raise InputLineError(path, line, field, f"cannot be tokenised: {err}") from err


def read_score_input(path: Path, scorer, replace_columns: bool = True) -> tuple[list[dict], list]:
    """Every non-blank line of a JSON Lines file and its encoded sequence; the first bad line raises (the file is
    decoded as training files are: :func:`vrm.data.textio.json_lines`)."""
    from vrm.data.textio import LineTooLong, json_lines
    from vrm.scoring.inputs import REPLACED_KEY, replaced_key

    rows, encoded = [], []
    for line, _, row in json_lines(path):
        if isinstance(row, LineTooLong):
            raise InputLineError(path, line, None, str(row))
        if isinstance(row, ValueError):
            raise InputLineError(path, line, None, f"not valid JSON ({row})")
        if not isinstance(row, dict):
            raise InputLineError(path, line, None, f"must be a JSON object, not {type(row).__name__}")
        clash = None if replace_columns else replaced_key(row, OUTPUT_KEYS)
        if clash is not None:
            raise InputLineError(path, line, clash, REPLACED_KEY)
        encoded.append(_encode_row(row, scorer, path, line))
        rows.append(row)
    return rows, encoded


#: The keys ``vrm-score`` adds to a prompt/response line.
OUTPUT_KEYS = ("reward", "objective_scores", "weights", "reward_std")




def score_file(scorer, input_path: Path, output_path: Path, num_samples: int = 0, progress: bool = True,
               replace_columns: bool = False) -> int:
    """Score a JSON Lines file of prompt/response lines, or a file of preference pairs
    (:mod:`vrm.scoring.inputs`), into a JSON Lines file (each input row plus its rewards); returns the rows.

    A line's ``question_type`` and ``reference`` go to the scorer (the proxy uses them). The output follows the
    output rule (:mod:`vrm.data.files`): never onto the input, a device or a FIFO. An input key that the output
    would replace (``reward``) is refused unless ``replace_columns``.
    """
    from vrm.data.files import check_output
    from vrm.data.textio import write_jsonl_atomically
    from vrm.scoring.inputs import is_pairs_file, score_pairs_file

    check_output(output_path, [input_path], "--output")
    if is_pairs_file(input_path):
        records = score_pairs_file(scorer, input_path, num_samples, progress, replace_columns)
    else:
        rows, encoded = read_score_input(input_path, scorer, replace_columns)
        details = scorer.score_encoded(encoded, num_samples=num_samples, progress=progress,
                                       question_types=[row.get("question_type") for row in rows],
                                       references=[row.get("reference") for row in rows])
        records = [{**row, **{key: values[i] for key, values in details.items()}} for i, row in enumerate(rows)]
    write_jsonl_atomically(output_path, records, inputs=[input_path], what="--output")
    return len(records)
