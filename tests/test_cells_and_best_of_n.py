"""The shared experiment cell runner (a key -> one JSON file, skipped when present) and best-of-N's curve (KL =
log n - (n-1)/n; the chosen candidate of each group of n), against hand computations."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments import cells  # noqa: E402


def test_cells_are_written_once_and_resumed(tmp_path):
    calls = []

    def make(key):
        def compute():
            calls.append(key)
            return {"value": len(calls)}
        return key, compute

    plan = [make("grid/a/seed0"), make("grid/b/seed0")]
    assert cells.run_cells(plan, tmp_path) == 2
    assert (tmp_path / "grid" / "a" / "seed0.json").is_file()
    assert cells.run_cells([*plan, make("grid/c/seed1")], tmp_path) == 1  # only the new cell runs
    assert calls == ["grid/a/seed0", "grid/b/seed0", "grid/c/seed1"]
    loaded = cells.load_cells(tmp_path)
    assert [c["cell"] for c in loaded] == ["grid/a/seed0", "grid/b/seed0", "grid/c/seed1"]
    assert [c["value"] for c in loaded] == [1, 2, 3]
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_failing_cell_leaves_no_file_and_bad_keys_are_refused(tmp_path):
    def boom():
        raise RuntimeError("cell failed")

    with pytest.raises(RuntimeError):
        cells.run_cells([("x/seed0", boom)], tmp_path)
    assert not cells.is_done(tmp_path, "x/seed0")
    for key in ("", "../x", "a//b"):
        with pytest.raises(ValueError, match="cell key"):
            cells.cell_path(tmp_path, key)
    with pytest.raises(ValueError, match="duplicate"):
        cells.run_cells([("a", dict), ("a", dict)], tmp_path)


def test_best_of_n_curve_by_hand():
    from vrm.rlhf.best_of_n import best_of_n_curve, best_of_n_kl

    assert best_of_n_kl(1) == 0.0 and best_of_n_kl(4) == pytest.approx(math.log(4) - 0.75)
    rewards = [[0.1, 0.9, 0.5, 0.2], [0.3, 0.2, 0.1, 0.8]]
    golds = [[1.0, 0.0, 0.5, 0.25], [0.2, 0.4, 0.6, 0.8]]
    curve = best_of_n_curve(rewards, golds, {"cue": [[0, 1, 0, 0], [0, 0, 0, 1]]})
    assert [p["n"] for p in curve] == [1, 2, 4]
    assert curve[0]["gold"] == pytest.approx((1.0 + 0.0 + 0.5 + 0.25 + 0.2 + 0.4 + 0.6 + 0.8) / 8)
    # n = 2: groups (0.1, 0.9) -> gold 0.0, (0.5, 0.2) -> 0.5, (0.3, 0.2) -> 0.2, (0.1, 0.8) -> 0.8
    assert curve[1]["gold"] == pytest.approx((0.0 + 0.5 + 0.2 + 0.8) / 4)
    assert curve[2]["gold"] == pytest.approx((0.0 + 0.8) / 2) and curve[2]["cue"] == pytest.approx(1.0)
    assert curve[2]["sqrt_kl"] == pytest.approx(math.sqrt(math.log(4) - 0.75))
