"""Where raw rows come from: the user's own files (read row by row, each bad row named) and public datasets
(``datasets.load_dataset``: a hub name, a local folder or a local file), as :class:`RawSource` objects per split.

Row numbers: JSON Lines and CSV files count 1-based lines (a CSV's header is line 1); JSON arrays, Parquet files
and ``datasets`` splits count 0-based row indices. Local files are read with the standard library and pyarrow, not
the ``datasets`` JSON/CSV builders, so that a malformed row is named rather than coerced or failing the whole file;
text is decoded by :func:`vrm.data.textio.open_text` (UTF-8, or UTF-16/32 with a byte order mark; invalid UTF-8
kept by ``surrogateescape``) so invalid UTF-8 is reported in the line and field that hold it.
"""

from __future__ import annotations

import csv
import difflib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

from vrm.config.data import DataConfig
from vrm.data.formats import (
    Format,
    detect_file_layout,
)
from vrm.data.limits import MAX_LINE_CHARS
from vrm.data.textio import (
    JSON_WHITESPACE,
    LineTooLong,
    input_file,
    json_lines,
    open_text,
    parse_json,
    read_failure,
)
from vrm.data.validation import (
    INVALID_JSON,
    INVALID_VALUE,
    LINE,
    ROW_INDEX,
    TOO_LONG,
    RowFault,
    type_name,
)
from vrm.errors import DataError

#: Splits that can be given as local files (``data.train`` ...).
FILE_SPLITS = ("train", "validation", "test")
#: File extension -> local reader (an unknown extension falls back to the reader named by ``data.format``).
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
#: ``datasets`` builder that reads a local file of a public dataset's layout.
BUILDERS = {"jsonl": "json", "json": "json", "csv": "csv", "parquet": "parquet"}
#: Why a file gave no pair when it has no rows at all.
NO_ROWS = "no rows: the file is empty or holds only blank lines"


# -- raw rows ---------------------------------------------------------------------------------------------------------
@dataclass
class RawRow:
    row_no: int
    raw: object
    #: Set when the reader already knows the row is bad (a line that is not JSON, a CSV row of the wrong width).
    fault: RowFault | None = None


@dataclass
class RawSource:
    split: str
    name: str
    row_kind: str
    rows: Iterable[RawRow]
    layout: str | None = None
    #: The ``data_dir`` it was loaded from, the subset of its pairs that have none.
    subset: str = ""


def _json_row(row_no: int, line: str, value: object) -> RawRow:
    if isinstance(value, LineTooLong):
        return RawRow(row_no, None, RowFault(TOO_LONG, None, str(value)))
    if isinstance(value, ValueError):
        return RawRow(row_no, line.rstrip("\r\n"), RowFault(INVALID_JSON, None, str(value)))
    return RawRow(row_no, value)


def _read_jsonl(path: Path) -> tuple[str, list[RawRow]]:
    rows = [_json_row(*line) for line in json_lines(path)]
    if rows and rows[0].fault is not None and rows[0].fault.kind == INVALID_JSON:
        with open_text(path) as f:
            _refuse_one_json_value(f.read(), path)
    return LINE, rows


def _describe_json(value: object) -> str:
    if isinstance(value, dict):
        lists = [key for key, item in value.items() if isinstance(item, list)]
        hint = f" (are the rows its list under {lists[0]!r}? put that list at the top level)" if lists else ""
        return f"one JSON object with keys {list(value)[:10]}{hint}"
    if isinstance(value, list):
        return f"one JSON array of {len(value)} items"
    return f"one JSON {type_name(value)}"


def _refuse_one_json_value(content: str, path: Path) -> None:
    """A file that is one JSON value over several lines (a pretty-printed object or array) is not JSON Lines."""
    try:
        value = parse_json(content)
    except (ValueError, RecursionError):
        return
    raise DataError(f"holds {_describe_json(value)}, not JSON Lines; expected one row object a line (JSON Lines), "
                    "or a JSON array of row objects in a .json file", source=str(path))


def _read_json(path: Path) -> tuple[str, list[RawRow]]:
    """A JSON array of row objects, or one row object; a file that is not one JSON value is read as JSON Lines."""
    with open_text(path) as f:
        try:
            content = f.read()
        except OSError as err:
            raise read_failure(path, err) from None
    try:
        value = parse_json(content)
    except (ValueError, RecursionError) as err:
        if content.lstrip(JSON_WHITESPACE).startswith("["):
            raise DataError(f"invalid JSON array: {err}", source=str(path)) from None
        return _read_jsonl(path)
    if isinstance(value, dict) and "chosen" in value:
        value = [value]
    if not isinstance(value, list):
        raise DataError(f"holds {_describe_json(value)}; expected a JSON array of row objects ([{{...}}, ...]) "
                        "or JSON Lines (one row object a line)", source=str(path))
    return ROW_INDEX, [RawRow(i, raw) for i, raw in enumerate(value)]


def _csv_cells(record: dict[str, str]) -> dict[str, object]:
    """CSV cells are text: an empty ``margin``/``aspects_*`` cell is absent, ``margin`` is read as a number and
    ``aspects_*`` as a JSON list; a cell that does not parse stays text and fails validation as the wrong type."""
    row: dict[str, object] = dict(record)
    for key, parse in (("margin", float), ("aspects_chosen", json.loads), ("aspects_rejected", json.loads)):
        if key in row:
            try:
                row[key] = parse(record[key]) if record[key].strip() else None
            except (ValueError, RecursionError):
                pass
    return row


def _swallowed_lines(record: list[str], width: int) -> int:
    """How many whole lines inside one cell of ``record`` read as rows of their own (``width`` cells each): the
    sign of an unclosed quote that swallowed them; 0 for a cell that merely spans lines."""
    for cell in record:
        inner = cell.split("\n")[1:-1]
        if inner and all(len(next(csv.reader([line]), [])) == width for line in inner):
            return len(inner)
    return 0


def _read_csv(path: Path) -> tuple[str, list[RawRow]]:
    rows = []
    csv.field_size_limit(MAX_LINE_CHARS)
    with open_text(path, newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader, [])
            if len(set(header)) != len(header):
                raise DataError(f"duplicate column names in the header {header}", source=str(path), row=1)
            other = next((sep for sep in (";", "\t", "|") if len(header) == 1 and sep in header[0]), None)
            if other is not None:
                raise DataError(f"the header is one column, {header[0][:80]!r}: the file is separated by {other!r}, "
                                "not by commas; save it as comma-separated CSV (or as JSON Lines)", source=str(path),
                                row=1)
            start = reader.line_num + 1
            for record in reader:
                row_no, start = start, reader.line_num + 1
                if not record:
                    continue
                swallowed = _swallowed_lines(record, len(header)) if reader.line_num > row_no else 0
                if swallowed:
                    raise DataError(f"a quote opened on line {row_no} is not closed before line {reader.line_num}: "
                                    f"{swallowed} lines in between, each a row of its own, were read as one cell; "
                                    "close the quote (a quote inside a cell is written twice: \"\")",
                                    source=str(path), row=row_no)
                if len(record) != len(header):
                    fault = RowFault(INVALID_VALUE, None, f"{len(record)} cells, the header has {len(header)}")
                    rows.append(RawRow(row_no, record, fault))
                else:
                    rows.append(RawRow(row_no, _csv_cells(dict(zip(header, record)))))
        except csv.Error as err:
            raise DataError(f"malformed CSV: {err}", source=str(path), row=reader.line_num) from None
        except OSError as err:
            raise read_failure(path, err) from None
    return LINE, rows


def _parquet_column(column: pa.ChunkedArray, name: str, path: Path) -> list:
    """A column as Python values; invalid UTF-8 in a string cell is kept (``surrogateescape``) for validation."""
    try:
        return column.to_pylist()
    except UnicodeDecodeError:
        values = []
        for i, scalar in enumerate(column):
            try:
                values.append(scalar.as_py())
            except UnicodeDecodeError:
                if not (pa.types.is_string(scalar.type) or pa.types.is_large_string(scalar.type)):
                    raise DataError("undecodable text inside a nested value", source=str(path), row=i,
                                    field=name) from None
                values.append(scalar.as_buffer().to_pybytes().decode("utf-8", "surrogateescape"))
        return values


def _read_parquet(path: Path) -> tuple[str, list[RawRow]]:
    input_file(path)
    try:
        table = pq.read_table(path)
    except (OSError, ValueError, pa.ArrowException) as err:
        raise DataError(f"unreadable Parquet file: {err}", source=str(path)) from None
    columns = {name: _parquet_column(table.column(name), name, path) for name in table.column_names}
    return ROW_INDEX, [RawRow(i, {name: values[i] for name, values in columns.items()})
                       for i in range(table.num_rows)]


READERS = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv, "parquet": _read_parquet}


def _file_kind(path: Path, fmt: str) -> str:
    kind = EXTENSIONS.get(path.suffix.lower(), fmt)
    if kind not in READERS:
        raise DataError(f"unknown file type {path.suffix!r}; expected one of {sorted(EXTENSIONS)}", source=str(path))
    return kind


def _existing_file(path: str) -> Path:
    return input_file(path)


def local_sources(cfg: DataConfig) -> list[RawSource]:
    files = {split: getattr(cfg, split) for split in FILE_SPLITS if getattr(cfg, split)}
    if not files:
        raise DataError(f"data.format={cfg.format} reads your own files: set data.train=PATH "
                        "(and data.validation=PATH, data.test=PATH if you have them)")
    return [local_source(split, name, cfg.format) for split, name in files.items()]


def local_source(split: str, name: str, fmt: str) -> RawSource:
    """One local file as a source of ``split``: the reader of its extension (else of ``fmt``), its TRL layout."""
    path = _existing_file(name)
    row_kind, rows = READERS[_file_kind(path, fmt)](path)
    layout = detect_file_layout(row.raw for row in rows if row.fault is None)
    return RawSource(split, name, row_kind, rows, layout)


def _load_dataset(*args, source: str, **kwargs) -> datasets.Dataset | datasets.DatasetDict:
    try:
        return datasets.load_dataset(*args, **kwargs)
    except Exception as err:  # the loader's own errors (missing dataset, unreadable file) name no row: say where
        raise DataError(f"datasets.load_dataset failed: {type(err).__name__}: {err}", source=source) from err


def _dataset_rows(ds: datasets.Dataset) -> Iterator[RawRow]:
    return (RawRow(i, row) for i, row in enumerate(ds))


def _by_row_split(spec: Format, source: RawSource) -> list[RawSource]:
    """A source whose rows name their split (``spec.split_of_row``) as one source per split; a row naming a bad
    split stays in ``source``'s split, carrying its fault."""
    if spec.split_of_row is None:
        return [source]
    parts: dict[str, list[RawRow]] = {}
    for row in source.rows:
        split = source.split
        if row.fault is None and isinstance(row.raw, dict):
            try:
                split = spec.split_of_row(row.raw)
            except RowFault as fault:
                row = RawRow(row.row_no, row.raw, fault)
        parts.setdefault(split, []).append(row)
    return [RawSource(split, f"{source.name} (split={split})" if split != source.split else source.name,
                      source.row_kind, rows, source.layout, source.subset) for split, rows in parts.items()]


def _file_source(split: str, name: str) -> RawSource:
    path = _existing_file(name)
    kind = _file_kind(path, "jsonl")
    try:
        ds = _load_dataset(BUILDERS[kind], source=name, data_files=str(path), split="train")
    except DataError:
        if kind not in ("jsonl", "json"):
            raise
        # datasets infers one schema per file and fails on rows that disagree (a column of mixed types, rows with
        # no columns at all): read the file row by row instead, so each bad row is named like any other.
        row_kind, rows = READERS[kind](path)
        return RawSource(split, name, row_kind, rows)
    return RawSource(split, name, ROW_INDEX, _dataset_rows(ds))


def closest(name: str, valid: Iterable[str]) -> str:
    """``; did you mean 'x'?`` for the valid name closest to ``name`` (empty when none is close)."""
    match = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else ""


def _check_data_dirs(path: str, data_dirs: list[str]) -> None:
    """Every ``data.subset`` name is a folder of a local copy (a hub name is checked by ``load_dataset``)."""
    root = Path(path)
    if not root.is_dir():
        return
    valid = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    for name in data_dirs:
        if name not in valid:
            raise DataError(f"data.subset {name!r} is not a data_dir of this dataset; its data_dirs are "
                            f"{valid}{closest(name, valid)}", source=path)


def _match_splits(spec: Format, dd: datasets.DatasetDict, source: str) -> dict[str, str]:
    """Canonical split -> split of ``dd``: the source's own name, else the canonical name; a lone split is the first."""
    found = {}
    for split, own in spec.splits.items():
        match = next((name for name in (own, split) if name in dd), None)
        if match is not None:
            found[split] = match
    if not found and len(dd) == 1:
        found[next(iter(spec.splits))] = next(iter(dd))
    if not found:
        raise DataError(f"none of the splits {list(dd)} is one of {dict(spec.splits)}", source=source)
    return found


def dataset_sources(cfg: DataConfig, spec: Format) -> list[RawSource]:
    """A public dataset: local files per split, one local file, or ``load_dataset(data.path)`` (hub name or folder)."""
    files = {split: getattr(cfg, split) for split in FILE_SPLITS if getattr(cfg, split)}
    if files:
        return [_file_source(split, name) for split, name in files.items()]
    if not cfg.path:
        raise DataError(f"data.format={spec.name} needs data.path: a hub name, a local folder or a local file")
    if Path(cfg.path).is_file():
        return _by_row_split(spec, _file_source(next(iter(spec.splits)), cfg.path))
    data_dirs = subset_names(cfg.subset) if spec.subset_by == "data_dir" else []
    _check_data_dirs(cfg.path, data_dirs)
    sources = []
    for data_dir in data_dirs or [spec.default_data_dir]:
        where = cfg.path if data_dir is None else f"{cfg.path}/{data_dir}"
        dd = _load_dataset(cfg.path, source=where, data_dir=data_dir)
        for split, name in _match_splits(spec, dd, where).items():
            source = RawSource(split, f"{where} [{name}]", ROW_INDEX, _dataset_rows(dd[name]),
                               subset="" if data_dir == spec.default_data_dir else data_dir)
            sources.extend(_by_row_split(spec, source))
    return sources


def subset_names(subset: str | None) -> list[str]:
    return [] if not subset else [s.strip() for s in str(subset).split(",") if s.strip()]
