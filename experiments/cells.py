"""A small resumable grid runner shared by the experiments: a cell key -> one JSON file.

A cell is ``(key, compute)``: ``compute()`` returns the cell's JSON record, written atomically to ``<root>/<key>.json``;
a cell whose file exists is skipped, so rerunning the same command resumes where it stopped, and the summary is
rebuilt from whichever cells are present (:func:`load_cells`). Progress (done, left, elapsed, a rough estimate of what
is left from the cells run so far) goes to stdout.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

Cell = tuple[str, Callable[[], dict[str, Any]]]


def cell_path(root: Path, key: str) -> Path:
    """``<root>/<key>.json``; a key is a relative path of plain names (``grid/method/setting_seed0``)."""
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"cell key {key!r} must be a relative path of plain names")
    return root.joinpath(*parts[:-1], parts[-1] + ".json")


def write_json_atomically(path: Path, record: Any) -> None:
    """Write ``record`` as JSON to ``path`` through a temporary file and a rename (never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1, allow_nan=False, default=_finite) + "\n")
    os.replace(tmp, path)


def _finite(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def is_done(root: Path, key: str) -> bool:
    return cell_path(root, key).is_file()


def run_cells(cells: Iterable[Cell], root: Path, label: str = "cells") -> int:
    """Compute and store every missing cell, in order; returns how many were computed now."""
    cells = list(cells)
    keys = [key for key, _ in cells]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate cell keys: {sorted({k for k in keys if keys.count(k) > 1})}")
    todo = [(key, compute) for key, compute in cells if not is_done(root, key)]
    print(f"[{label}] {len(cells) - len(todo)} of {len(cells)} cells present, {len(todo)} to run", flush=True)
    start = time.perf_counter()
    for i, (key, compute) in enumerate(todo):
        print(f"[{label}] {i + 1}/{len(todo)} {key}", flush=True)
        cell_start = time.perf_counter()
        record = compute()
        record = {**record, "cell": key, "cell_seconds": time.perf_counter() - cell_start}
        write_json_atomically(cell_path(root, key), record)
        elapsed = time.perf_counter() - start
        left = elapsed / (i + 1) * (len(todo) - i - 1)
        print(f"[{label}] done {key} in {record['cell_seconds']:.0f} s; elapsed {_clock(elapsed)}, "
              f"about {_clock(left)} left", flush=True)
    return len(todo)


def load_cells(root: Path, under: str = "") -> list[dict[str, Any]]:
    """Every stored cell under ``<root>/<under>``, in key order."""
    base = root / under if under else root
    return [json.loads(p.read_text()) for p in sorted(base.rglob("*.json")) if not p.name.startswith(".")]


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def keys_of(cells: Sequence[Cell]) -> list[str]:
    return [key for key, _ in cells]
