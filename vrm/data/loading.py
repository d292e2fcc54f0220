"""Load preference data of any supported format into canonical splits, validating every row.

``load_preference_data(cfg)`` reads the source of ``cfg.format`` (the user's own files, a public dataset through
``datasets.load_dataset``, or the synthetic benchmark), maps each raw row to canonical pairs with the format's
adapter (:mod:`vrm.data.formats`), checks every row (:mod:`vrm.data.validation`), carves missing validation/test
splits from train (seeded, whole source rows at a time so one prompt's pairs stay together), caps each split to
``cfg.max_rows`` (its first rows) and reports what happened in a :class:`LoadReport`.

Row numbers in errors and rejects: JSON Lines and CSV files count 1-based lines (a CSV's header is line 1); JSON
arrays, Parquet files and ``datasets`` splits count 0-based row indices. Local files are read with the standard library
and pyarrow, not the ``datasets`` JSON/CSV builders, so that a malformed row is named rather than coerced or failing
the whole file; text is decoded by :func:`vrm.data.textio.open_text` (UTF-8, or UTF-16/32 with a byte order mark;
invalid UTF-8 kept by ``surrogateescape``) so invalid UTF-8 is reported in the line and field that hold it.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vrm.data.config import DataConfig
from vrm.data.formats import (
    FORMATS,
    PAIRINGS,
    RANK_BY,
    Format,
    NoPair,
    RowContext,
    detect_file_layout,
    get_format,
)
from vrm.data.schema import CANONICAL_FEATURES, DataError, PreferencePair
from vrm.data.textio import JSON_WHITESPACE, json_lines, open_text
from vrm.data.validation import (
    INVALID_JSON,
    INVALID_VALUE,
    LINE,
    ROW_INDEX,
    WRONG_TYPE,
    BadRowPolicy,
    RowFault,
    check_pair,
    type_name,
)

log = logging.getLogger(__name__)

#: Split names, in the order they are reported.
SPLITS = ("train", "validation", "test", "shifted")
#: Splits that can be given as local files (``data.train`` ...).
FILE_SPLITS = ("train", "validation", "test")
#: File extension -> local reader (an unknown extension falls back to the reader named by ``data.format``).
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
#: ``datasets`` builder that reads a local file of a public dataset's layout.
BUILDERS = {"jsonl": "json", "json": "json", "csv": "csv", "parquet": "parquet"}
#: Why a file gave no pair when it has no rows at all.
NO_ROWS = "no rows: the file is empty or holds only blank lines"


@dataclass
class LoadReport:
    """What loading did: sources and their layouts, rows per split, bad rows skipped and pairs left out by design."""

    format: str
    #: split -> the files or dataset splits it was read from.
    sources: dict[str, list[str]] = field(default_factory=dict)
    #: source -> layout (the detected TRL layout of a local file; the format's layout otherwise).
    layouts: dict[str, str] = field(default_factory=dict)
    rows_read: int = 0
    #: bad rows skipped (``data.on_bad_row=skip``), per reason.
    skipped: dict[str, int] = field(default_factory=dict)
    #: well-formed rows or pairs that yield no pair, per reason (ties, a subset not selected, ...).
    excluded: dict[str, int] = field(default_factory=dict)
    #: split -> the split it was carved from by ``data.split_seed``.
    carved: dict[str, str] = field(default_factory=dict)
    #: split -> its size before ``data.max_rows``.
    capped: dict[str, int] = field(default_factory=dict)
    #: final pairs per split.
    rows: dict[str, int] = field(default_factory=dict)
    rejects_path: str | None = None

    def summary(self) -> str:
        lines = [f"data format {self.format}: {self.rows_read} rows read"]
        for split, names in self.sources.items():
            lines.append(f"  {split} <- " + ", ".join(f"{n} ({self.layouts.get(n, self.format)})" for n in names))
        for split, parent in self.carved.items():
            lines.append(f"  {split} carved from {parent} by data.split_seed")
        lines.append("  pairs: " + ", ".join(f"{split} {n}" for split, n in self.rows.items()))
        if self.capped:
            lines.append("  capped by data.max_rows: " + ", ".join(
                f"{split} {n} -> {self.rows[split]}" for split, n in self.capped.items()))
        if self.skipped:
            where = f"; rejects in {self.rejects_path}" if self.rejects_path else ""
            lines.append(f"  skipped {sum(self.skipped.values())} bad rows: {_counts(self.skipped)}{where}")
        if self.excluded:
            lines.append(f"  left out: {_counts(self.excluded)}")
        return "\n".join(lines)


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items()))


@dataclass
class PreferenceData:
    """Canonical splits (:data:`CANONICAL_FEATURES` columns), the names of their aspect ratings, and the report."""

    splits: dict[str, datasets.Dataset]
    aspect_names: list[str]
    report: LoadReport


def load_preference_data(cfg: DataConfig, output_dir: str | Path | None = None) -> PreferenceData:
    """Load ``cfg``'s preference data; rejected rows (``data.on_bad_row=skip``) go to ``output_dir/rejects.jsonl``."""
    if cfg.format == "synthetic":
        return _load_synthetic(cfg)
    spec = get_format(cfg.format)
    _check_config(cfg)
    policy = BadRowPolicy(cfg.on_bad_row)
    report = LoadReport(spec.name)
    sources = _local_sources(cfg) if spec.name == "jsonl" else _dataset_sources(cfg, spec)
    ctx = RowContext(pairing=cfg.pairing, rank_by=cfg.rank_by, seed=cfg.split_seed)
    aspects = _AspectCheck(list(spec.aspect_names) or list(cfg.aspect_names) or None)
    selected = _subsets(cfg.subset) if spec.subset_by == "filter" else []
    pairs: dict[str, list[tuple[tuple[str, int], PreferencePair]]] = defaultdict(list)
    tally = _SourceTally(report, policy)
    for source in sources:
        report.sources.setdefault(source.split, []).append(source.name)
        report.layouts[source.name] = source.layout or spec.layout
        split_pairs = pairs[source.split]  # a split whose rows were all rejected is still there, empty
        with tally(source.name):
            for row_no, pair in _convert(source, spec, ctx, policy, report, aspects):
                if selected and pair.subset not in selected:
                    report.excluded["not in data.subset"] = report.excluded.get("not in data.subset", 0) + 1
                    continue
                split_pairs.append(((source.name, row_no), pair))
    report.skipped = dict(policy.counts)
    rejects = policy.write_rejects(output_dir)
    report.rejects_path = None if rejects is None else str(rejects)
    _carve_splits(pairs, cfg, report)
    splits = {}
    for split in SPLITS:
        if split in pairs:
            rows = [pair.to_row() for _, pair in pairs[split]]
            if cfg.max_rows is not None and len(rows) > cfg.max_rows:
                report.capped[split] = len(rows)
                rows = rows[:cfg.max_rows]
            splits[split] = _to_dataset(rows)
            report.rows[split] = len(rows)
    _log(report)
    for split, ds in splits.items():
        if len(ds) == 0:
            raise tally.empty_split_error(split, cfg)
    return PreferenceData(splits, aspects.names or [], report)


def _load_synthetic(cfg: DataConfig) -> PreferenceData:
    from vrm.data.synthetic import make_splits

    report = LoadReport("synthetic")
    splits = make_splits(cfg.synthetic)
    for split, ds in splits.items():
        report.sources[split] = ["synthetic"]
        report.rows_read += len(ds)
        if cfg.max_rows is not None and len(ds) > cfg.max_rows:
            report.capped[split] = len(ds)
            splits[split] = ds.select(range(cfg.max_rows))
        report.rows[split] = len(splits[split])
    _log(report)
    return PreferenceData(splits, [], report)


def _check_config(cfg: DataConfig) -> None:
    if cfg.pairing not in PAIRINGS:
        raise DataError(f"data.pairing must be one of {PAIRINGS}, got {cfg.pairing!r}")
    if cfg.rank_by not in RANK_BY:
        raise DataError(f"data.rank_by must be one of {RANK_BY}, got {cfg.rank_by!r}")
    fractions = (cfg.validation_fraction, cfg.test_fraction)
    if not all(0 <= f < 1 for f in fractions) or sum(fractions) >= 1:
        raise DataError(f"data.validation_fraction and data.test_fraction must be in [0, 1) with a sum below 1, "
                        f"got {fractions}")
    if cfg.max_rows is not None and cfg.max_rows < 0:
        raise DataError(f"data.max_rows must be None or >= 0, got {cfg.max_rows}")


def _log(report: LoadReport) -> None:
    log.info("%s", report.summary())
    if report.skipped:
        log.warning("skipped %d bad rows (%s)%s", sum(report.skipped.values()), _counts(report.skipped),
                    f"; see {report.rejects_path}" if report.rejects_path else "")


class _SourceTally:
    """Rows read, skipped as bad and left out per source, to say why a split ended with no pair."""

    def __init__(self, report: LoadReport, policy: BadRowPolicy):
        self.report, self.policy = report, policy
        self.counts: dict[str, tuple[int, int, int]] = {}

    def _totals(self) -> tuple[int, int, int]:
        return (self.report.rows_read, sum(self.policy.counts.values()), sum(self.report.excluded.values()))

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        before = self._totals()
        yield
        self.counts[name] = tuple(after - start for after, start in zip(self._totals(), before))

    def empty_split_error(self, split: str, cfg: DataConfig) -> DataError:
        report = self.report
        parent = report.carved.get(split)
        names = report.sources.get(parent or split, [])
        if cfg.max_rows == 0:
            why = "data.max_rows=0 keeps no pair"
        elif parent is not None:
            why = (f"{report.rows.get(parent, 0)} pairs in {parent} are too few to carve a {split} split from "
                   f"(data.{split}_fraction={getattr(cfg, split + '_fraction')}): give data.{split}=FILE, more rows, "
                   f"or data.{split}_fraction=0")
        else:
            read, skipped, excluded = (sum(self.counts[n][i] for n in names) for i in range(3))
            if read == 0:
                why = NO_ROWS
            else:
                why = f"none of its {read} rows gave a pair"
                if skipped:
                    why += (f"; {skipped} were skipped as bad rows (data.on_bad_row=skip): {_counts(report.skipped)}"
                            + (f"; see {report.rejects_path}" if report.rejects_path else ""))
                if excluded:
                    why += f"; left out: {_counts(report.excluded)}"
        return DataError(f"the {split} split has no pairs: {why}", source=", ".join(names) or None)


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
    if isinstance(value, ValueError):
        return RawRow(row_no, line.rstrip("\r\n"), RowFault(INVALID_JSON, None, str(value)))
    return RawRow(row_no, value)


def _read_jsonl(path: Path) -> tuple[str, list[RawRow]]:
    rows = [_json_row(*line) for line in json_lines(path)]
    if rows and rows[0].fault is not None:
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
        value = json.loads(content)
    except (ValueError, RecursionError):
        return
    raise DataError(f"holds {_describe_json(value)}, not JSON Lines; expected one row object a line (JSON Lines), "
                    "or a JSON array of row objects in a .json file", source=str(path))


def _read_json(path: Path) -> tuple[str, list[RawRow]]:
    """A JSON array of row objects, or one row object; a file that is not one JSON value is read as JSON Lines."""
    with open_text(path) as f:
        content = f.read()
    try:
        value = json.loads(content)
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


def _read_csv(path: Path) -> tuple[str, list[RawRow]]:
    rows = []
    with open_text(path, newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader, [])
            if len(set(header)) != len(header):
                raise DataError(f"duplicate column names in the header {header}", source=str(path), row=1)
            start = reader.line_num + 1
            for record in reader:
                row_no, start = start, reader.line_num + 1
                if not record:
                    continue
                if len(record) != len(header):
                    fault = RowFault(INVALID_VALUE, None, f"{len(record)} cells, the header has {len(header)}")
                    rows.append(RawRow(row_no, record, fault))
                else:
                    rows.append(RawRow(row_no, _csv_cells(dict(zip(header, record)))))
        except csv.Error as err:
            raise DataError(f"malformed CSV: {err}", source=str(path), row=reader.line_num) from None
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
    if not Path(path).is_file():
        raise DataError("no such file", source=path)
    return Path(path)


def _local_sources(cfg: DataConfig) -> list[RawSource]:
    files = {split: getattr(cfg, split) for split in FILE_SPLITS if getattr(cfg, split)}
    if not files:
        raise DataError(f"data.format={cfg.format} reads your own files: set data.train=PATH "
                        "(and data.validation=PATH, data.test=PATH if you have them)")
    return [_local_source(split, name, cfg.format) for split, name in files.items()]


def _local_source(split: str, name: str, fmt: str) -> RawSource:
    path = _existing_file(name)
    row_kind, rows = READERS[_file_kind(path, fmt)](path)
    layout = detect_file_layout(row.raw for row in rows if row.fault is None)
    return RawSource(split, name, row_kind, rows, layout)


def read_pair_file(path: str | Path) -> tuple[str, list[tuple[int, object, PreferencePair]]]:
    """One file of your own pairs as training reads it (``data.format=jsonl``: the reader of its extension, the TRL
    layout detected from its rows, every row checked): its row kind (``line`` or ``row index``) and ``(row number,
    raw row, pair)`` of each row in file order. The first bad row raises a :class:`RowError` naming file, row and
    field; a file without rows a :class:`DataError` naming it."""
    source = _local_source("train", str(path), "jsonl")
    if not source.rows:
        raise DataError(NO_ROWS, source=str(path))
    raws = {row.row_no: row.raw for row in source.rows}
    pairs = _convert(source, get_format("jsonl"), RowContext(), BadRowPolicy("error"), LoadReport("jsonl"),
                     _AspectCheck(None))
    return source.row_kind, [(row_no, raws[row_no], pair) for row_no, pair in pairs]


def _load_dataset(*args, source: str, **kwargs) -> datasets.Dataset | datasets.DatasetDict:
    try:
        return datasets.load_dataset(*args, **kwargs)
    except Exception as err:  # the loader's own errors (missing dataset, unreadable file) name no row: say where
        raise DataError(f"datasets.load_dataset failed: {type(err).__name__}: {err}", source=source) from err


def _dataset_rows(ds: datasets.Dataset) -> Iterator[RawRow]:
    return (RawRow(i, row) for i, row in enumerate(ds))


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


def _dataset_sources(cfg: DataConfig, spec: Format) -> list[RawSource]:
    """A public dataset: local files per split, one local file, or ``load_dataset(data.path)`` (hub name or folder)."""
    files = {split: getattr(cfg, split) for split in FILE_SPLITS if getattr(cfg, split)}
    if files:
        return [_file_source(split, name) for split, name in files.items()]
    if not cfg.path:
        raise DataError(f"data.format={spec.name} needs data.path: a hub name, a local folder or a local file")
    if Path(cfg.path).is_file():
        return [_file_source(next(iter(spec.splits)), cfg.path)]
    data_dirs = _subsets(cfg.subset) if spec.subset_by == "data_dir" else []
    sources = []
    for data_dir in data_dirs or [None]:
        where = cfg.path if data_dir is None else f"{cfg.path}/{data_dir}"
        dd = _load_dataset(cfg.path, source=where, data_dir=data_dir)
        for split, name in _match_splits(spec, dd, where).items():
            sources.append(RawSource(split, f"{where} [{name}]", ROW_INDEX, _dataset_rows(dd[name]),
                                     subset=data_dir or ""))
    return sources


def _subsets(subset: str | None) -> list[str]:
    return [] if not subset else [s.strip() for s in str(subset).split(",") if s.strip()]


# -- rows to pairs ----------------------------------------------------------------------------------------------------
class _AspectCheck:
    """Every rated pair carries one rating per aspect name; without names, the first rated pair fixes how many."""

    def __init__(self, names: list[str] | None):
        self.names = names

    def __call__(self, pair: PreferencePair) -> PreferencePair:
        for name in ("aspects_chosen", "aspects_rejected"):
            count = len(getattr(pair, name))
            if count and self.names is None:
                self.names = [f"aspect_{i}" for i in range(count)]
            if count and count != len(self.names):
                raise RowFault(INVALID_VALUE, name, f"{count} ratings, expected {len(self.names)} "
                                                    f"({', '.join(self.names)})")
        return pair


def _convert(source: RawSource, spec: Format, ctx: RowContext, policy: BadRowPolicy, report: LoadReport,
             aspects: _AspectCheck) -> list[tuple[int, PreferencePair]]:
    """(row number, pair) of every good row of ``source``; bad rows go to ``policy``."""
    ctx = RowContext(source.layout or ctx.layout, ctx.pairing, ctx.rank_by, ctx.seed)
    excluded: Counter[str] = Counter(report.excluded)
    out: list[tuple[int, PreferencePair]] = []
    items, raws = [], {}

    def reject(fault: RowFault, row_no: int, raw: object) -> None:
        policy.reject(fault, source=source.name, row=row_no, row_kind=source.row_kind, raw=raw)

    for row in source.rows:
        report.rows_read += 1
        try:
            if row.fault is not None:
                raise row.fault
            if not isinstance(row.raw, Mapping):
                raise RowFault(WRONG_TYPE, None, f"expected an object, got {type_name(row.raw)}")
            converted = spec.convert(row.raw, row.row_no, ctx)
            if spec.combine is None:
                out.extend((row.row_no, aspects(check_pair(pair))) for pair in converted)
            else:
                items.extend((row.row_no, item) for item in converted)
                raws[row.row_no] = row.raw
        except RowFault as fault:
            reject(fault, row.row_no, row.raw)
        except NoPair as no_pair:
            excluded[no_pair.reason] += 1
    if spec.combine is not None:
        for row_no, pair in spec.combine(items, excluded):
            try:
                out.append((row_no, aspects(check_pair(pair))))
            except RowFault as fault:
                reject(fault, row_no, raws[row_no])
    report.excluded = dict(excluded)
    for _, pair in out:
        pair.subset = pair.subset or source.subset
    return out


# -- splits -----------------------------------------------------------------------------------------------------------
def _carve_splits(pairs: dict[str, list], cfg: DataConfig, report: LoadReport) -> None:
    """Carve the missing validation/test splits from train: whole source rows, drawn by ``data.split_seed``."""
    fractions = {"validation": cfg.validation_fraction, "test": cfg.test_fraction}
    missing = [split for split, fraction in fractions.items() if split not in pairs and fraction > 0]
    if "train" not in pairs or not missing:
        return
    groups = list(dict.fromkeys(group for group, _ in pairs["train"]))
    order = np.random.default_rng(cfg.split_seed).permutation(len(groups))
    assignment, start = {}, 0
    for split in missing:
        size = round(len(groups) * fractions[split])
        if size == 0 and len(groups) > len(missing):  # at least one row each while train keeps one
            size = 1
        assignment.update((groups[k], split) for k in order[start:start + size])
        start += size
        report.carved[split] = "train"
    carved = defaultdict(list)
    for group, pair in pairs["train"]:
        carved[assignment.get(group, "train")].append((group, pair))
    for split in ["train", *missing]:
        pairs[split] = carved[split]


def _to_dataset(rows: list[dict]) -> datasets.Dataset:
    return datasets.Dataset.from_dict({name: [row[name] for row in rows] for name in CANONICAL_FEATURES},
                                      features=CANONICAL_FEATURES)


__all__ = ["FORMATS", "LoadReport", "PreferenceData", "load_preference_data", "read_pair_file"]
