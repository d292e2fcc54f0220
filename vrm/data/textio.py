"""Users' text, read and checked by one rule everywhere: training files, ``vrm-score`` input, ``vrm-serve`` requests.

- :func:`open_text` decodes a text file: UTF-8 (a UTF-8 byte order mark is dropped), or UTF-16/UTF-32 when the
  file starts with their byte order mark. Invalid UTF-8 is kept with ``surrogateescape``, so that the line and the
  field holding it can be named (by :func:`check_text`) instead of a byte position of the whole file.
- :func:`json_lines` yields the non-blank lines of a JSON Lines file with their 1-based numbers, parsed (or the
  error that says why a line is not JSON).
- :func:`check_text` rejects a string that is not text: invalid UTF-8 read by :func:`open_text`, or a lone UTF-16
  surrogate, which JSON can write (``"\\ud800"``) but no tokenizer can encode.
- :func:`write_text_atomically` and :func:`write_jsonl_atomically` write output (``eval.json``, ``vrm-score``'s, the rejects file) so that a kill never
  leaves a part of it.
"""

from __future__ import annotations

import codecs
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TextIO

from vrm.errors import DataError

#: Byte order marks of the encodings other than UTF-8 that a text file is decoded with (longest first).
BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)
#: What JSON counts as whitespace (``str.strip()`` would also strip characters that are not).
JSON_WHITESPACE = " \t\r\n"
#: Code points ``surrogateescape`` gives the bytes 0x80-0xFF of invalid UTF-8.
_ESCAPED_BYTES = range(0xDC80, 0xDD00)


class UndecodableText(ValueError):
    """A string that cannot be encoded as UTF-8; the message says which character and why."""


def undecodable(value: str) -> str | None:
    """Why ``value`` is not text (its first invalid UTF-8 byte or lone surrogate), or None when it is."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        code = ord(value[err.start])
        if code in _ESCAPED_BYTES:
            return f"invalid UTF-8 byte 0x{code - 0xDC00:02x} at character {err.start}"
        return f"a lone surrogate \\u{code:04x} at character {err.start} (valid JSON, but not a character)"
    return None


def check_text(value: str) -> str:
    """``value``, or :class:`UndecodableText` saying why it is not text."""
    why = undecodable(value)
    if why is not None:
        raise UndecodableText(why)
    return value


def file_encoding(path: Path) -> str:
    """The encoding :func:`open_text` reads ``path`` with, from its byte order mark (UTF-8 without one)."""
    with path.open("rb") as f:
        head = f.read(4)
    return next((encoding for bom, encoding in BYTE_ORDER_MARKS if head.startswith(bom)), "utf-8-sig")


def open_text(path: Path, newline: str | None = None) -> TextIO:
    """``path`` opened for reading text by :func:`file_encoding` (invalid UTF-8 kept by ``surrogateescape``)."""
    encoding = file_encoding(path)
    errors = "surrogateescape" if encoding == "utf-8-sig" else "strict"
    return path.open(encoding=encoding, errors=errors, newline=newline)


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """The non-blank lines of a text file with their 1-based numbers; undecodable UTF-16/32 names the line."""
    line_no = 0
    with open_text(path) as f:
        try:
            for line_no, line in enumerate(f, start=1):
                if line.strip(JSON_WHITESPACE):
                    yield line_no, line
        except UnicodeDecodeError as err:
            raise DataError(f"invalid {err.encoding} text after line {line_no}: {err.reason}",
                            source=str(path), row=line_no + 1) from None


def parse_json_line(line: str) -> object:
    """One line of JSON Lines, parsed; a :class:`ValueError` says what is wrong (NUL bytes hint at UTF-16)."""
    try:
        return json.loads(line)
    except (ValueError, RecursionError) as err:
        hint = " (the line holds NUL bytes: is the file UTF-16 without a byte order mark?)" if "\0" in line else ""
        raise ValueError(f"{err}{hint}") from None


def json_lines(path: Path) -> Iterator[tuple[int, str, object | ValueError]]:
    """``(line number, line, parsed value)`` of every non-blank line; a line that is not JSON gives its error."""
    for line_no, line in text_lines(path):
        try:
            yield line_no, line, parse_json_line(line)
        except ValueError as err:
            yield line_no, line, err


def write_text_atomically(path: Path, content: str) -> None:
    """``content`` into a hidden temporary file beside ``path``, flushed to disk, then renamed onto it: ``path`` is
    the old file or the complete new one, never a part (a kill leaves at most the hidden file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl_atomically(path: Path, records: Iterable[Mapping], default: Callable[[object], str] = str) -> None:
    """One JSON object a line, written by :func:`write_text_atomically`. Non-ASCII characters are escaped, so lone
    surrogates are written as they were read; ``default`` turns values JSON does not know into text."""
    write_text_atomically(path, "".join(json.dumps(record, ensure_ascii=True, default=default) + "\n"
                                        for record in records))
