"""Load preference data of any supported format into canonical splits, validating every row.

``load_preference_data(cfg)`` reads the source of ``cfg.format`` (the user's own files, a public dataset through
``datasets.load_dataset``, or the synthetic benchmark), maps each raw row to canonical pairs with the format's
adapter (:mod:`vrm.data.formats`), checks every row (:mod:`vrm.data.validation`), carves missing validation/test
splits from train (seeded, whole source rows at a time so one prompt's pairs stay together), caps each split to
``cfg.max_rows`` (its first rows) and reports what happened in a :class:`LoadReport`.

Where the raw rows come from (files and datasets, and how their rows are numbered): :mod:`vrm.data.sources`.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np

from vrm.config.data import DataConfig
from vrm.data.formats import (
    FORMATS,
    PAIRINGS,
    RANK_BY,
    TIE,
    TIE_RULES,
    Format,
    NoPair,
    RowContext,
    get_format,
    resolve_format,
)
from vrm.data.rewardbench2_items import BestOfNItem
from vrm.data.schema import CANONICAL_FEATURES, PreferencePair
from vrm.data.sources import (
    NO_ROWS,
    RawSource,
    closest,
    dataset_sources,
    local_source,
    local_sources,
    subset_names,
)
from vrm.data.validation import (
    INVALID_VALUE,
    WRONG_TYPE,
    BadRowPolicy,
    RowFault,
    check_pair,
    type_name,
)
from vrm.errors import DataError

log = logging.getLogger(__name__)

#: Split names, in the order they are reported.
SPLITS = ("train", "validation", "test", "shifted")


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
    """Canonical splits (:data:`CANONICAL_FEATURES` columns), the names of their aspect ratings, and the report.

    For a best-of-N format (RewardBench 2), ``items`` holds each split's items; the split's pairs are exactly
    ``[item.pair_indices() for item in items]`` in that order (``data.max_rows`` then counts items, not pairs).
    """

    splits: dict[str, datasets.Dataset]
    aspect_names: list[str]
    report: LoadReport
    items: dict[str, list[BestOfNItem]] = field(default_factory=dict)


def load_preference_data(cfg: DataConfig, output_dir: str | Path | None = None) -> PreferenceData:
    """Load ``cfg``'s preference data; rejected rows (``data.on_bad_row=skip``) go to ``output_dir/rejects.jsonl``."""
    if cfg.format == "synthetic":
        return _load_synthetic(cfg)
    spec = resolve_format(cfg.format, subset_names(cfg.subset))
    _check_config(cfg, spec)
    policy = BadRowPolicy(cfg.on_bad_row)
    report = LoadReport(spec.name)
    sources = local_sources(cfg) if spec.name == "jsonl" else dataset_sources(cfg, spec)
    ctx = RowContext(pairing=cfg.pairing, rank_by=cfg.rank_by, seed=cfg.split_seed)
    aspects = _AspectCheck(list(spec.aspect_names) or list(cfg.aspect_names) or None)
    selected = subset_names(cfg.subset) if spec.subset_by == "filter" else []
    seen_subsets: set[str] = set()
    pairs: dict[str, list[tuple[tuple[str, int], PreferencePair]]] = defaultdict(list)
    items: dict[tuple[str, int], BestOfNItem] = {}
    tally = _SourceTally(report, policy)
    for source in sources:
        report.sources.setdefault(source.split, []).append(source.name)
        report.layouts[source.name] = source.layout or spec.layout
        split_pairs = pairs[source.split]  # a split whose rows were all rejected is still there, empty
        with tally(source.name):
            converted, source_items = _convert(source, spec, ctx, policy, report, aspects)
            items.update(((source.name, row_no), item) for row_no, item in source_items)
            for row_no, pair in converted:
                seen_subsets.add(pair.subset)
                if selected and pair.subset not in selected:
                    _exclude(report, "not in data.subset")
                elif pair.margin == 0 and spec.ties_have_side and cfg.ties == "skip":
                    _exclude(report, TIE)
                else:
                    split_pairs.append(((source.name, row_no), pair))
    _check_selected(selected, seen_subsets)
    report.skipped = dict(policy.counts)
    rejects = policy.write_rejects(output_dir)
    report.rejects_path = None if rejects is None else str(rejects)
    _carve_splits(pairs, cfg, report)
    splits, split_items = {}, {}
    for split in SPLITS:
        if split in pairs:
            if spec.best_of_n:
                kept = _cap_items(pairs[split], cfg.max_rows, report, split)
                split_items[split] = [items[group] for group in kept]
            elif cfg.max_rows is not None and len(pairs[split]) > cfg.max_rows:
                report.capped[split] = len(pairs[split])
                pairs[split] = pairs[split][:cfg.max_rows]
            rows = [pair.to_row() for _, pair in pairs[split]]
            splits[split] = _to_dataset(rows)
            report.rows[split] = len(rows)
    _log(report)
    for split, ds in splits.items():
        if len(ds) == 0:
            raise tally.empty_split_error(split, cfg)
    return PreferenceData(splits, aspects.names or [], report, split_items)


def _exclude(report: LoadReport, reason: str) -> None:
    report.excluded[reason] = report.excluded.get(reason, 0) + 1


def _check_selected(selected: list[str], seen: set[str]) -> None:
    """Every name in ``data.subset`` is the subset of some pair of the data."""
    valid = sorted(s for s in seen if s)
    for name in selected:
        if name not in seen:
            listing = f"its subsets are {valid}" if valid else "its pairs carry no subset"
            raise DataError(f"data.subset {name!r} matches no pair of the data; {listing}{closest(name, valid)}")


def _cap_items(split_pairs: list[tuple[tuple[str, int], PreferencePair]], max_rows: int | None,
               report: LoadReport, split: str) -> list[tuple[str, int]]:
    """The items (groups) of a best-of-N split, the first ``max_rows`` of them; ``split_pairs`` is cut to match."""
    groups = list(dict.fromkeys(group for group, _ in split_pairs))
    if max_rows is not None and len(groups) > max_rows:
        report.capped[split] = len(groups)
        groups = groups[:max_rows]
        keep = set(groups)
        split_pairs[:] = [(group, pair) for group, pair in split_pairs if group in keep]
    return groups


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


def _check_config(cfg: DataConfig, spec: Format) -> None:
    if cfg.ties not in TIE_RULES:
        raise DataError(f"data.ties must be one of {TIE_RULES}, got {cfg.ties!r}")
    if cfg.ties == "keep" and not spec.ties_have_side:
        raise DataError(f"data.ties=keep: data.format={spec.name} scores responses without naming a chosen side, "
                        "so a tie has no direction to keep; use data.ties=skip")
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
    """Rows read, and bad rows skipped and pairs left out per reason, per source: why a split has no pair."""

    def __init__(self, report: LoadReport, policy: BadRowPolicy):
        self.report, self.policy = report, policy
        self.counts: dict[str, tuple[int, Counter[str], Counter[str]]] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        read, skipped, excluded = self.report.rows_read, Counter(self.policy.counts), Counter(self.report.excluded)
        yield
        self.counts[name] = (self.report.rows_read - read, Counter(self.policy.counts) - skipped,
                             Counter(self.report.excluded) - excluded)

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
            read = sum(self.counts[n][0] for n in names)
            skipped = sum((self.counts[n][1] for n in names), Counter())
            excluded = sum((self.counts[n][2] for n in names), Counter())
            if read == 0:
                why = NO_ROWS
            else:
                why = f"none of its {read} rows gave a pair"
                if skipped:
                    why += (f"; {skipped.total()} were skipped as bad rows (data.on_bad_row=skip): {_counts(skipped)}"
                            + (f"; see {report.rejects_path}" if report.rejects_path else ""))
                if excluded:
                    why += f"; left out: {_counts(excluded)}"
        return DataError(f"the {split} split has no pairs: {why}", source=", ".join(names) or None)


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
             aspects: _AspectCheck) -> tuple[list[tuple[int, PreferencePair]], list[tuple[int, object]]]:
    """(row number, pair) of every good row of ``source`` (bad rows go to ``policy``), and the (row number, item)s
    that a format pairing across rows or items returned."""
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
    return out, items


def read_pair_file(path: str | Path) -> tuple[str, list[tuple[int, object, PreferencePair]]]:
    """One file of your own pairs as training reads it (``data.format=jsonl``: the reader of its extension, the TRL
    layout detected from its rows, every row checked): its row kind (``line`` or ``row index``) and ``(row number,
    raw row, pair)`` of each row in file order. The first bad row raises a :class:`RowError` naming file, row and
    field; a file without rows a :class:`DataError` naming it."""
    source = local_source("train", str(path), "jsonl")
    if not source.rows:
        raise DataError(NO_ROWS, source=str(path))
    raws = {row.row_no: row.raw for row in source.rows}
    pairs, _ = _convert(source, get_format("jsonl"), RowContext(), BadRowPolicy("error"), LoadReport("jsonl"),
                        _AspectCheck(None))
    return source.row_kind, [(row_no, raws[row_no], pair) for row_no, pair in pairs]


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
