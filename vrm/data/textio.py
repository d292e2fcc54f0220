"""Users' text, read and checked by one rule everywhere: training files, ``vrm-score`` input, ``vrm-serve`` requests.

- :func:`open_text` decodes a text file: UTF-8 (a UTF-8 byte order mark is dropped), or UTF-16/UTF-32 when the
  file starts with their byte order mark. Invalid UTF-8 is kept with ``surrogateescape``, so that the line and the
  field holding it can be named (by :func:`check_text`) instead of a byte position of the whole file.
- :func:`json_lines` yields the non-blank lines of a JSON Lines file with their 1-based numbers, parsed (or the
  error that says why a line is not JSON).
- :func:`check_text` rejects a string that is not text: invalid UTF-8 read by :func:`open_text`, or a lone UTF-16
  surrogate, which JSON can write (``"\\ud800"``) but no tokenizer can encode.
- :func:`input_file` checks a path to read (a regular, readable file; else what it is: a folder, a FIFO, a device, a
  symbolic link loop) and records it as an input, which no output may replace (:mod:`vrm.data.files`). Compressed
  or Parquet bytes in a text file, and a UTF-16 byte order mark before UTF-8 text, are named; extra UTF-8 marks are
  skipped. Lines longer than :data:`vrm.data.limits.MAX_LINE_CHARS` are never read whole; a JSON object with a key
  twice is refused (:func:`unique_keys`).
- :func:`write_jsonl_atomically` writes JSON Lines output (``vrm-score``'s, the rejects file), as
  :func:`vrm.data.files.write_text_atomically` writes other text (``eval.json``), so that a kill never leaves a
  part of it.
"""

from __future__ import annotations

import codecs
import errno
import json
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TextIO

from vrm.data.files import atomic_write, kind_of, note_input
from vrm.data.limits import MAX_LINE_CHARS, MAX_TEXT_CHARS
from vrm.errors import DataError

#: Byte order marks of the encodings other than UTF-8 that a text file is decoded with (longest first).
BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)
#: Binary files a text reader may be handed (by their first bytes): what they are and what to do.
BINARY_FORMATS = (
    (b"\x1f\x8b", "gzip-compressed", "decompress it first (gunzip)"),
    (b"BZh", "bzip2-compressed", "decompress it first (bunzip2)"),
    (b"\xfd7zXZ\x00", "xz-compressed", "decompress it first (unxz)"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed", "decompress it first (unzstd)"),
    (b"PK\x03\x04", "zip", "extract the data file from it first"),
    (b"PAR1", "Parquet", "name it .parquet, so that it is read as Parquet"),
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


def input_file(path: str | Path, what: str = "file") -> Path:
    """``path`` as a file to read: a regular file (or a link to one) that exists; anything else is a
    :class:`DataError` saying what it is (a folder, a FIFO, a device, a symbolic link loop, no such file). It is
    recorded as an input (:func:`vrm.data.files.note_input`), which no output of this process may replace."""
    name = str(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        broken = " (a symbolic link to a missing file)" if os.path.islink(path) else ""
        raise DataError(f"no such {what}{broken}", source=name) from None
    except OSError as err:
        why = "a symbolic link loop" if err.errno == errno.ELOOP else err.strerror or str(err)
        raise DataError(f"cannot be opened: {why}", source=name) from None
    if not stat.S_ISREG(mode):
        raise DataError(f"is {kind_of(mode)}, not a regular {what}; give the path of a {what}", source=name)
    if not os.access(path, os.R_OK):
        raise DataError("cannot be read: permission denied", source=name)
    note_input(path)
    return Path(path)


def read_failure(path: Path, err: OSError) -> DataError:
    """A read that failed after the file was opened (``/proc/self/mem``: EIO), naming the file."""
    return DataError(f"cannot be read: {err.strerror or err}", source=str(path))


def file_encoding(path: Path) -> str:
    """The encoding :func:`open_text` reads ``path`` with, from its byte order mark (UTF-8 without one).

    A UTF-16/32 mark followed by text that is plainly UTF-8 (no NUL byte, which every UTF-16 JSON or CSV file has
    in its ASCII punctuation) is refused with what to do: a tool wrote the wrong mark."""
    try:
        with path.open("rb") as f:
            head = f.read(4096)
    except OSError as err:
        raise read_failure(path, err) from None
    for magic, kind, what_to_do in BINARY_FORMATS:
        if head.startswith(magic):
            raise DataError(f"is a {kind} file, not text: {what_to_do}", source=str(path))
    encoding = next((encoding for bom, encoding in BYTE_ORDER_MARKS if head.startswith(bom)), "utf-8-sig")
    if encoding != "utf-8-sig":
        bom = next(bom for bom, _ in BYTE_ORDER_MARKS if head.startswith(bom))
        rest = head[len(bom):]
        if rest and b"\0" not in rest and _is_utf8(rest):
            raise DataError(f"starts with a {encoding.upper()} byte order mark ({bom.hex(' ')}) but the text after it "
                            f"is UTF-8: remove the first {len(bom)} bytes (or save the file as {encoding.upper()})",
                            source=str(path))
    return encoding


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        return err.start >= len(data) - 3  # a character cut by the 4096-byte window
    return True


def open_text(path: Path, newline: str | None = None) -> TextIO:
    """``path`` opened for reading text by :func:`file_encoding` (invalid UTF-8 kept by ``surrogateescape``); any
    number of UTF-8 byte order marks at its start is skipped (a file saved twice by a tool that adds one)."""
    path = input_file(path)
    encoding = file_encoding(path)
    errors = "surrogateescape" if encoding == "utf-8-sig" else "strict"
    f = path.open(encoding=encoding, errors=errors, newline=newline)
    try:
        if encoding == "utf-8-sig":
            start = f.tell()
            while f.read(1) == "\ufeff":
                start = f.tell()
            f.seek(start)
    except OSError as err:
        f.close()
        raise read_failure(path, err) from None
    return f


class LineTooLong(ValueError):
    """A line over :data:`vrm.data.limits.MAX_LINE_CHARS` characters (it is not read whole)."""


def text_lines(path: Path) -> Iterator[tuple[int, str | LineTooLong]]:
    """The non-blank lines of a text file with their 1-based numbers; undecodable UTF-16/32 names the line. A line
    over :data:`MAX_LINE_CHARS` gives a :class:`LineTooLong` in its place (the rest of it is skipped unread)."""
    line_no = 0
    with open_text(path) as f:
        try:
            while line := f.readline(MAX_LINE_CHARS + 1):
                line_no += 1
                if len(line) > MAX_LINE_CHARS and not line.endswith(("\n", "\r")):
                    while (rest := f.readline(1 << 20)) and not rest.endswith(("\n", "\r")):
                        pass
                    yield line_no, LineTooLong(f"the line is over {MAX_LINE_CHARS} characters, the limit of a row "
                                               "(vrm.data.limits.MAX_LINE_CHARS); a text may hold at most "
                                               f"{MAX_TEXT_CHARS}")
                elif line.strip(JSON_WHITESPACE):
                    yield line_no, line
        except UnicodeDecodeError as err:
            raise DataError(f"invalid {err.encoding} text after line {line_no}: {err.reason}",
                            source=str(path), row=line_no + 1) from None
        except OSError as err:
            raise read_failure(path, err) from None


def unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """``object_pairs_hook`` of every JSON read: an object with a key twice is refused (JSON would keep the last
    silently; a CSV header with a column twice is refused too)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise ValueError(f"duplicate key {duplicate[:80]!r} in one object (JSON would keep only its last value)")
    return obj


def parse_json(text: str) -> object:
    """A JSON text parsed with :func:`unique_keys`."""
    return json.loads(text, object_pairs_hook=unique_keys)


def parse_json_line(line: str) -> object:
    """One line of JSON Lines, parsed; a :class:`ValueError` says what is wrong (NUL bytes hint at UTF-16)."""
    try:
        return parse_json(line)
    except (ValueError, RecursionError) as err:
        hint = " (the line holds NUL bytes: is the file UTF-16 without a byte order mark?)" if "\0" in line else ""
        raise ValueError(f"{err}{hint}") from None


def json_lines(path: Path) -> Iterator[tuple[int, str, object | ValueError]]:
    """``(line number, line, parsed value)`` of every non-blank line; a line that is not JSON gives its error."""
    for line_no, line in text_lines(path):
        if isinstance(line, LineTooLong):
            yield line_no, "", line
            continue
        try:
            yield line_no, line, parse_json_line(line)
        except ValueError as err:
            yield line_no, line, err


def write_jsonl_atomically(path: Path, records: Iterable[Mapping], default: Callable[[object], str] = str,
                           inputs: Iterable[str | Path] = (), what: str = "output") -> None:
    """One JSON object a line, written by :func:`vrm.data.files.atomic_write` (the output rule: never onto an input,
    a device or a FIFO; ``path`` is the old file or the complete new one, never a part; the umask's permissions).
    Non-ASCII characters are escaped, so lone surrogates are written as they were read; ``default`` turns values
    JSON does not know into text."""
    with atomic_write(path, inputs=inputs, what=what) as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=True, default=default) + "\n")
